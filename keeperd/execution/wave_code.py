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
    "608060405234801561001057600080fd5b50610854806100206000396000f3fe60806040526004361061004e"
    "5760003560e01c806301ffc9a71461005a578063150b7a021461008f5780633f707e6b146100d4578063bc19"
    "7c8114610102578063f23a6e611461013157600080fd5b3661005557005b600080fd5b348015610066576000"
    "80fd5b5061007a61007536600461043e565b61015e565b60405190151581526020015b60405180910390f35b"
    "34801561009b57600080fd5b506100bb6100aa3660046104d4565b630a85bd0160e11b95945050505050565b"
    "6040516001600160e01b03199091168152602001610086565b3480156100e057600080fd5b506100f46100ef"
    "366004610588565b6101b0565b604051908152602001610086565b34801561010e57600080fd5b506100bb61"
    "011d3660046105ca565b63bc197c8160e01b98975050505050505050565b34801561013d57600080fd5b5061"
    "00bb61014c366004610685565b63f23a6e6160e01b9695505050505050565b60006301ffc9a760e01b600160"
    "0160e01b03198316148061018f5750630a85bd0160e11b6001600160e01b03198316145b806101aa57506302"
    "71189760e51b6001600160e01b03198316145b92915050565b60003330146101d2576040516314e1dbf760e1"
    "1b815260040160405180910390fd5b818015806101e1575061010081115b156102065760405163f79b572f60"
    "e01b81526004810182905260240160405180910390fd5b60005b818110156103545736858583818110610224"
    "576102246106fd565b90506020028101906102369190610713565b9050614e2061024a603f60208401356107"
    "49565b61025890602084013561076b565b610262919061076b565b5a101561029a5760405182907fc3f52f7f"
    "a2c46e77814c8294eebdb37c53c0c79bedba0accf693aa13b95dc12890600090a250610344565b6000806102"
    "c46102ad602085018561077e565b60208501356102bf6040870187610799565b610395565b91509150811561"
    "0307576040516001851b969096179584907f2d6be90154d25c8b41c03d02076ce8e85f4b8babbabe8ade1050"
    "a15d5bc4829e90600090a2610340565b837f5c0dee5d32a1e145396705da49c1e64a2b1d63387f78c2697100"
    "f655567f5de98260405161033791906107e0565b60405180910390a25b5050505b61034d8161082e565b9050"
    "610209565b5060408051838152602081018390527f1d56d433cc4946e6288a6adf1b4dbf8506671ba3cd7f5e"
    "5a7a4c27051f8e6e51910160405180910390a15092915050565b60006060856001600160a01b03163b600003"
    "6103dd5750506040805180820190915260118152701b9bc818dbd91948185d081d185c99d95d607a1b602082"
    "0152600090610435565b60405183858237600080858360008b8bf192503d6101008111156104005750610100"
    "5b819250808352806000602085013e601f01601f191682016020016040525081156104355750604080516020"
    "8101909152600081525b94509492505050565b60006020828403121561045057600080fd5b81356001600160"
    "e01b03198116811461046857600080fd5b9392505050565b80356001600160a01b0381168114610486576000"
    "80fd5b919050565b60008083601f84011261049d57600080fd5b50813567ffffffffffffffff8111156104b5"
    "57600080fd5b6020830191508360208285010111156104cd57600080fd5b9250929050565b60008060008060"
    "00608086880312156104ec57600080fd5b6104f58661046f565b94506105036020870161046f565b93506040"
    "8601359250606086013567ffffffffffffffff81111561052657600080fd5b6105328882890161048b565b96"
    "9995985093965092949392505050565b60008083601f84011261055557600080fd5b50813567ffffffffffff"
    "ffff81111561056d57600080fd5b6020830191508360208260051b85010111156104cd57600080fd5b600080"
    "6020838503121561059b57600080fd5b823567ffffffffffffffff8111156105b257600080fd5b6105be8582"
    "8601610543565b90969095509350505050565b60008060008060008060008060a0898b0312156105e6576000"
    "80fd5b6105ef8961046f565b97506105fd60208a0161046f565b9650604089013567ffffffffffffffff8082"
    "111561061a57600080fd5b6106268c838d01610543565b909850965060608b013591508082111561063f5760"
    "0080fd5b61064b8c838d01610543565b909650945060808b013591508082111561066457600080fd5b506106"
    "718b828c0161048b565b999c989b5096995094979396929594505050565b60008060008060008060a0878903"
    "121561069e57600080fd5b6106a78761046f565b95506106b56020880161046f565b94506040870135935060"
    "608701359250608087013567ffffffffffffffff8111156106df57600080fd5b6106eb89828a0161048b565b"
    "979a9699509497509295939492505050565b634e487b7160e01b600052603260045260246000fd5b60008235"
    "605e1983360301811261072957600080fd5b9190910192915050565b634e487b7160e01b6000526011600452"
    "60246000fd5b60008261076657634e487b7160e01b600052601260045260246000fd5b500490565b80820180"
    "8211156101aa576101aa610733565b60006020828403121561079057600080fd5b6104688261046f565b6000"
    "808335601e198436030181126107b057600080fd5b83018035915067ffffffffffffffff8211156107cb5760"
    "0080fd5b6020019150368190038213156104cd57600080fd5b600060208083528351808285015260005b8181"
    "101561080d578581018301518582016040015282016107f1565b506000604082860101526040601f19601f83"
    "01168501019250505092915050565b60006001820161084057610840610733565b506001019056fea164736f"
    "6c6343000813000a")
# keccak of the code deployed
RUNTIME_CODE_HASH = "0x64f8abfb13fe190650752efd077f13476fe91b4517b06a58ec3d861b5dfe5b8f"
# wave_address(): CREATE2 by DEPLOYER of SALT and CREATION_CODE
WAVE_ADDRESS = "0x299b21dcA50C693e0dE21F7883B02bF3E6691E90"

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


def encode_execute(calls: Sequence[WaveCall]) -> bytes:
    """`execute(calls)`'s calldata, for a transaction from the keeper to itself."""
    if not 0 < len(calls) <= MAX_CALLS:
        raise ValueError(f"a wave holds 1 to {MAX_CALLS} calls, not {len(calls)}")
    return EXECUTE + encode(["(address,uint256,bytes)[]"],
                            [[(c.target, c.gas, c.data) for c in calls]])


def wave_gas_limit(calls: Iterable[WaveCall]) -> int:
    """A wave's limit: each call's own (the contract gives each exactly that, or skips it), the
    share EIP-150 keeps back from each call (1/63 of the next call's limit, returned after),
    and per call what the loop, the copy and the events cost (under the contract's
    CALL_RESERVE of 20,000, which it requires left besides), and the transaction's own
    21,000 and calldata (a bound: 16 gas a byte)."""
    calls = list(calls)
    largest = max((c.gas for c in calls), default=0)
    data = sum(len(c.data) + 96 for c in calls) + 68
    return (21_000 + 16 * data + sum(c.gas for c in calls) + largest // 63
            + 25_000 * len(calls) + 10_000)


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
    except (ValueError, TypeError, DecodingError):  # (a receipt that does not decode)
        return None


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
