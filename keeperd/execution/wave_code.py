"""keeperd's wave executor (contracts/KeeperWave.sol): its code, its address, its calls.

A keeper whose address is delegated (EIP-7702) to KeeperWave sends a wave of liquidations as
one transaction to itself: `execute` makes each call in turn, a failing one (a race lost)
not undoing the rest, and says in one event which succeeded. The node takes one transaction
for many and the wave's calls find the pool's state warm (bench/README.md, "seventh pass":
about half a liquidation's gas, and the node's work a liquidation 0.28 ms from ~0.46).

The code is deployed once per chain by the deterministic deployment proxy (present at the
same address on Ethereum, the OP Stack chains, Arbitrum and anvil), salted with SALT; its
address is a function of these bytes alone (CREATE2), so keeperd knows it without asking:
no RPC answer names the address the key delegates to, and whatever code is at that address
is this code (CREATE2 cannot put other code there; since Cancun nothing can replace it).
Compiled without the source hash (solc `bytecodeHash: none`), so an edited comment in the
source leaves the address as it was; tests/unit/test_wave_code.py compiles the source with the
pinned solc and compares.

Pure: the encoding of a wave, the reading of its receipt's events. The commands that deploy
and delegate are execution/wave_setup.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address

# Arachnid's deterministic deployment proxy: its input is salt (32 bytes) || creation code.
DEPLOYER = "0x4e59b44847b379578588920cA78FbF26c0B4956C"
# keccak("keeperd KeeperWave")
SALT = bytes.fromhex("91d952bf882c7c76b0efe2208ca323d74dd63956a7182510004eea6974388af0")
# KeeperWave's creation code: solc 0.8.19, optimizer 200 runs, paris, no source hash.
CREATION_CODE = bytes.fromhex(
    "608060405234801561001057600080fd5b5061084e806100206000396000f3fe60806040526004361061004b"
    "5760003560e01c806301ffc9a714610054578063150b7a02146100895780633f707e6b146100ce578063bc19"
    "7c81146100fc578063f23a6e611461012b57005b3661005257005b005b34801561006057600080fd5b506100"
    "7461006f366004610438565b610158565b60405190151581526020015b60405180910390f35b348015610095"
    "57600080fd5b506100b56100a43660046104ce565b630a85bd0160e11b95945050505050565b604051600160"
    "0160e01b03199091168152602001610080565b3480156100da57600080fd5b506100ee6100e9366004610582"
    "565b6101aa565b604051908152602001610080565b34801561010857600080fd5b506100b561011736600461"
    "05c4565b63bc197c8160e01b98975050505050505050565b34801561013757600080fd5b506100b561014636"
    "600461067f565b63f23a6e6160e01b9695505050505050565b60006301ffc9a760e01b6001600160e01b0319"
    "831614806101895750630a85bd0160e11b6001600160e01b03198316145b806101a45750630271189760e51b"
    "6001600160e01b03198316145b92915050565b60003330146101cc576040516314e1dbf760e11b8152600401"
    "60405180910390fd5b818015806101db575061010081115b156102005760405163f79b572f60e01b81526004"
    "810182905260240160405180910390fd5b60005b8181101561034e573685858381811061021e5761021e6106"
    "f7565b9050602002810190610230919061070d565b9050614e20610244603f6020840135610743565b610252"
    "906020840135610765565b61025c9190610765565b5a10156102945760405182907fc3f52f7fa2c46e77814c"
    "8294eebdb37c53c0c79bedba0accf693aa13b95dc12890600090a25061033e565b6000806102be6102a76020"
    "850185610778565b60208501356102b96040870187610793565b61038f565b91509150811561030157604051"
    "6001851b969096179584907f2d6be90154d25c8b41c03d02076ce8e85f4b8babbabe8ade1050a15d5bc4829e"
    "90600090a261033a565b837f5c0dee5d32a1e145396705da49c1e64a2b1d63387f78c2697100f655567f5de9"
    "8260405161033191906107da565b60405180910390a25b5050505b61034781610828565b9050610203565b50"
    "60408051838152602081018390527f1d56d433cc4946e6288a6adf1b4dbf8506671ba3cd7f5e5a7a4c27051f"
    "8e6e51910160405180910390a15092915050565b60006060856001600160a01b03163b6000036103d7575050"
    "6040805180820190915260118152701b9bc818dbd91948185d081d185c99d95d607a1b602082015260009061"
    "042f565b60405183858237600080858360008b8bf192503d6101008111156103fa57506101005b8192508083"
    "52806000602085013e601f01601f1916820160200160405250811561042f5750604080516020810190915260"
    "0081525b94509492505050565b60006020828403121561044a57600080fd5b81356001600160e01b03198116"
    "811461046257600080fd5b9392505050565b80356001600160a01b038116811461048057600080fd5b919050"
    "565b60008083601f84011261049757600080fd5b50813567ffffffffffffffff8111156104af57600080fd5b"
    "6020830191508360208285010111156104c757600080fd5b9250929050565b60008060008060006080868803"
    "12156104e657600080fd5b6104ef86610469565b94506104fd60208701610469565b93506040860135925060"
    "6086013567ffffffffffffffff81111561052057600080fd5b61052c88828901610485565b96999598509396"
    "5092949392505050565b60008083601f84011261054f57600080fd5b50813567ffffffffffffffff81111561"
    "056757600080fd5b6020830191508360208260051b85010111156104c757600080fd5b600080602083850312"
    "1561059557600080fd5b823567ffffffffffffffff8111156105ac57600080fd5b6105b88582860161053d56"
    "5b90969095509350505050565b60008060008060008060008060a0898b0312156105e057600080fd5b6105e9"
    "89610469565b97506105f760208a01610469565b9650604089013567ffffffffffffffff8082111561061457"
    "600080fd5b6106208c838d0161053d565b909850965060608b013591508082111561063957600080fd5b6106"
    "458c838d0161053d565b909650945060808b013591508082111561065e57600080fd5b5061066b8b828c0161"
    "0485565b999c989b5096995094979396929594505050565b60008060008060008060a0878903121561069857"
    "600080fd5b6106a187610469565b95506106af60208801610469565b94506040870135935060608701359250"
    "608087013567ffffffffffffffff8111156106d957600080fd5b6106e589828a01610485565b979a96995094"
    "97509295939492505050565b634e487b7160e01b600052603260045260246000fd5b60008235605e19833603"
    "01811261072357600080fd5b9190910192915050565b634e487b7160e01b600052601160045260246000fd5b"
    "60008261076057634e487b7160e01b600052601260045260246000fd5b500490565b808201808211156101a4"
    "576101a461072d565b60006020828403121561078a57600080fd5b61046282610469565b6000808335601e19"
    "8436030181126107aa57600080fd5b83018035915067ffffffffffffffff8211156107c557600080fd5b6020"
    "019150368190038213156104c757600080fd5b600060208083528351808285015260005b8181101561080757"
    "8581018301518582016040015282016107eb565b506000604082860101526040601f19601f83011685010192"
    "50505092915050565b60006001820161083a5761083a61072d565b506001019056fea164736f6c6343000813"
    "000a")
# keccak of the code deployed
RUNTIME_CODE_HASH = "0xf6eb439fd4e8706fcacbaea9bbe72d6ec1802a1a047340928cce7b056f621425"
# wave_address(): CREATE2 by DEPLOYER of SALT and CREATION_CODE
WAVE_ADDRESS = "0x142641c0b425005215416cba6a08CcFeeA5c6312"

# KeeperWave's addresses before its code last changed (each change moves the address): a key
# still delegated to one is allowed (it is keeperd's own code) and sends one transaction a
# liquidation until `keeperd wave delegate` moves it to WAVE_ADDRESS. None has shipped yet.
PAST_WAVE_ADDRESSES: tuple[str, ...] = ()
KNOWN_WAVE_ADDRESSES = frozenset({WAVE_ADDRESS, *PAST_WAVE_ADDRESSES})

MAX_CALLS = 256  # the contract's bound: a bit each in WaveExecuted's `succeeded`
EXECUTE = keccak(b"execute((address,uint256,bytes)[])")[:4]
WAVE_EXECUTED = "0x" + keccak(b"WaveExecuted(uint256,uint256)").hex()
CALL_SUCCEEDED = "0x" + keccak(b"CallSucceeded(uint256)").hex()
CALL_FAILED = "0x" + keccak(b"CallFailed(uint256,bytes)").hex()
CALL_STARVED = "0x" + keccak(b"CallStarved(uint256)").hex()


def wave_address(deployer: str = DEPLOYER, salt: bytes = SALT,
                 creation_code: bytes = CREATION_CODE) -> str:
    """The CREATE2 address of the code (EIP-1014)."""
    digest = keccak(b"\xff" + bytes.fromhex(deployer[2:]) + salt + keccak(creation_code))
    return to_checksum_address(digest[12:])


def deployment_input() -> bytes:
    """The deployment transaction's data, sent to DEPLOYER."""
    return SALT + CREATION_CODE


def is_wave_code(code: str) -> bool:
    """Whether an `eth_getCode` answer is KeeperWave's deployed code (an empty or other code:
    not)."""
    if not isinstance(code, str) or not code.startswith("0x") or len(code) <= 2:
        return False
    try:
        return "0x" + keccak(bytes.fromhex(code[2:])).hex() == RUNTIME_CODE_HASH
    except ValueError:
        return False


@dataclass(frozen=True)
class WaveCall:
    """One call of a wave: the transaction it would have been alone (its target, its data,
    the gas limit it was simulated with)."""

    target: str
    gas: int
    data: bytes


def encode_execute(calls: Sequence[WaveCall], keeper: str | None = None) -> bytes:
    """`execute(calls)`'s calldata, for a transaction from the keeper to itself. A call to
    the keeper's own address is refused: it would run a wave inside the wave."""
    if not 0 < len(calls) <= MAX_CALLS:
        raise ValueError(f"a wave holds 1 to {MAX_CALLS} calls, not {len(calls)}")
    if keeper is not None and any(c.target.lower() == keeper.lower() for c in calls):
        raise ValueError("a wave's call to the keeper's own address")
    return EXECUTE + encode(["(address,uint256,bytes)[]"],
                            [[(c.target, c.gas, c.data) for c in calls]])


def wave_gas_limit(calls: Sequence[WaveCall]) -> int:
    """A wave's limit: each call's own (the contract gives each exactly that, or skips it), the
    share EIP-150 keeps back from each call (1/63 of the next call's limit, returned after),
    and per call what the loop, the copy and the events cost (under the contract's
    CALL_RESERVE of 20,000, which it requires left besides), and the transaction's own
    21,000 and calldata (a bound: 16 gas a byte) — and never under EIP-7623's floor for the
    calldata (Prague, where EIP-7702 came: 10 gas a zero byte, 40 any other, besides the
    21,000), which a wave of calls with large data and little gas would fall below."""
    largest = max((c.gas for c in calls), default=0)
    data = sum(len(c.data) + 96 for c in calls) + 68
    limit = (21_000 + 16 * data + sum(c.gas for c in calls) + largest // 63
             + 25_000 * len(calls) + 10_000)
    encoded = encode_execute(calls) if calls else b""
    zeros = encoded.count(0)
    floor = 21_000 + 10 * zeros + 40 * (len(encoded) - zeros)
    return max(limit, floor)


@dataclass(frozen=True)
class WaveOutcome:
    """What a mined wave's receipt says, from the keeper's own events (only code at the
    keeper's address can emit them): which calls succeeded, why the others failed, and
    each call's own logs (those before its marker: the protocol's liquidation event)."""

    calls: int
    succeeded: frozenset[int]
    failed: Mapping[int, bytes]
    starved: frozenset[int]
    logs: Mapping[int, list[Mapping[str, Any]]]

    def ok(self, index: int) -> bool:
        return index in self.succeeded


def read_wave_logs(logs: Iterable[Mapping[str, Any]], keeper: str) -> WaveOutcome | None:
    try:
        return _read_wave_logs(logs, keeper)
    except (ValueError, TypeError, AttributeError, DecodingError):  # (a receipt that does
        return None  # not decode: no outcome)


def _read_wave_logs(logs: Iterable[Mapping[str, Any]], keeper: str) -> WaveOutcome | None:
    """The wave's outcome from its receipt's logs, or None when the keeper's address emitted
    no single WaveExecuted: the transaction ran no KeeperWave (a delegation gone or never
    made, a wave that reverted). Markers of any other address are ignored, whatever their
    topics: they are only another call's logs. A call whose success bit is set but whose
    marker is missing is not counted a success (the two must agree)."""
    keeper = keeper.lower()
    executed: list[Mapping[str, Any]] = []
    failed: dict[int, bytes] = {}
    starved: set[int] = set()
    marked: set[int] = set()
    per_call: dict[int, list[Mapping[str, Any]]] = {}
    current: list[Mapping[str, Any]] = []
    for log in logs:
        if log.get("removed"):  # (a log of a block no longer on the chain: not this receipt's)
            continue
        topics = [str(t).lower() for t in log.get("topics") or []]
        if str(log.get("address", "")).lower() != keeper or not topics:
            current.append(log)
            continue
        if topics[0] == WAVE_EXECUTED:
            executed.append(log)
            continue
        if topics[0] not in (CALL_SUCCEEDED, CALL_FAILED, CALL_STARVED) or len(topics) != 2:
            current.append(log)
            continue
        index = int(topics[1], 16)
        if topics[0] == CALL_SUCCEEDED:
            marked.add(index)
        elif topics[0] == CALL_FAILED:
            failed[index] = decode(["bytes"], _data(log))[0]
        else:
            starved.add(index)
        per_call[index], current = current, []
    if len(executed) != 1:
        return None
    bits, calls = decode(["uint256", "uint256"], _data(executed[0]))
    succeeded = frozenset(i for i in range(min(calls, MAX_CALLS))
                          if bits >> i & 1 and i in marked)
    return WaveOutcome(calls, succeeded, failed, frozenset(starved), per_call)


def _data(log: Mapping[str, Any]) -> bytes:
    data = str(log.get("data", "0x"))
    return bytes.fromhex(data[2:] if data.startswith("0x") else data)
