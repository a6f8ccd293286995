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
    "608060405234801561001057600080fd5b5061087a806100206000396000f3fe60806040526004361061004b"
    "5760003560e01c806301ffc9a714610054578063150b7a02146100895780633f707e6b146100ce578063bc19"
    "7c81146100fc578063f23a6e611461012b57005b3661005257005b005b34801561006057600080fd5b506100"
    "7461006f366004610451565b610158565b60405190151581526020015b60405180910390f35b348015610095"
    "57600080fd5b506100b56100a43660046104e7565b630a85bd0160e11b95945050505050565b604051600160"
    "0160e01b03199091168152602001610080565b3480156100da57600080fd5b506100ee6100e936600461059b"
    "565b6101aa565b604051908152602001610080565b34801561010857600080fd5b506100b561011736600461"
    "05dd565b63bc197c8160e01b98975050505050505050565b34801561013757600080fd5b506100b561014636"
    "6004610698565b63f23a6e6160e01b9695505050505050565b60006301ffc9a760e01b6001600160e01b0319"
    "831614806101895750630a85bd0160e11b6001600160e01b03198316145b806101a45750630271189760e51b"
    "6001600160e01b03198316145b92915050565b60003330146101cc576040516314e1dbf760e11b8152600401"
    "60405180910390fd5b818015806101db575061010081115b156102005760405163f79b572f60e01b81526004"
    "810182905260240160405180910390fd5b60005b81811015610367573685858381811061021e5761021e6107"
    "10565b90506020028101906102309190610726565b9050614e20610244603f602084013561075c565b610252"
    "90602084013561077e565b61025c919061077e565b5a10156102945760405182907fc3f52f7fa2c46e77814c"
    "8294eebdb37c53c0c79bedba0accf693aa13b95dc12890600090a250610357565b60005a90506000806102c3"
    "6102ac6020860186610791565b60208601356102be60408801886107ac565b6103a8565b9150915081156103"
    "1957846001901b87179650847f460db3f16ecf49a87ebeadd9ce5e223f887e0b6afbe52be82adb78ecbffc43"
    "0b5a61030390866107f3565b60405190815260200160405180910390a2610352565b847f5c0dee5d32a1e145"
    "396705da49c1e64a2b1d63387f78c2697100f655567f5de9826040516103499190610806565b604051809103"
    "90a25b505050505b61036081610854565b9050610203565b5060408051838152602081018390527f1d56d433"
    "cc4946e6288a6adf1b4dbf8506671ba3cd7f5e5a7a4c27051f8e6e51910160405180910390a1509291505056"
    "5b60006060856001600160a01b03163b6000036103f05750506040805180820190915260118152701b9bc818"
    "dbd91948185d081d185c99d95d607a1b6020820152600090610448565b60405183858237600080858360008b"
    "8bf192503d61010081111561041357506101005b819250808352806000602085013e601f01601f1916820160"
    "200160405250811561044857506040805160208101909152600081525b94509492505050565b600060208284"
    "03121561046357600080fd5b81356001600160e01b03198116811461047b57600080fd5b9392505050565b80"
    "356001600160a01b038116811461049957600080fd5b919050565b60008083601f8401126104b057600080fd"
    "5b50813567ffffffffffffffff8111156104c857600080fd5b6020830191508360208285010111156104e057"
    "600080fd5b9250929050565b6000806000806000608086880312156104ff57600080fd5b6105088661048256"
    "5b945061051660208701610482565b935060408601359250606086013567ffffffffffffffff811115610539"
    "57600080fd5b6105458882890161049e565b969995985093965092949392505050565b60008083601f840112"
    "61056857600080fd5b50813567ffffffffffffffff81111561058057600080fd5b6020830191508360208260"
    "051b85010111156104e057600080fd5b600080602083850312156105ae57600080fd5b823567ffffffffffff"
    "ffff8111156105c557600080fd5b6105d185828601610556565b90969095509350505050565b600080600080"
    "60008060008060a0898b0312156105f957600080fd5b61060289610482565b975061061060208a0161048256"
    "5b9650604089013567ffffffffffffffff8082111561062d57600080fd5b6106398c838d01610556565b9098"
    "50965060608b013591508082111561065257600080fd5b61065e8c838d01610556565b909650945060808b01"
    "3591508082111561067757600080fd5b506106848b828c0161049e565b999c989b5096995094979396929594"
    "505050565b60008060008060008060a087890312156106b157600080fd5b6106ba87610482565b95506106c8"
    "60208801610482565b94506040870135935060608701359250608087013567ffffffffffffffff8111156106"
    "f257600080fd5b6106fe89828a0161049e565b979a9699509497509295939492505050565b634e487b7160e0"
    "1b600052603260045260246000fd5b60008235605e1983360301811261073c57600080fd5b91909101929150"
    "50565b634e487b7160e01b600052601160045260246000fd5b60008261077957634e487b7160e01b60005260"
    "1260045260246000fd5b500490565b808201808211156101a4576101a4610746565b60006020828403121561"
    "07a357600080fd5b61047b82610482565b6000808335601e198436030181126107c357600080fd5b83018035"
    "915067ffffffffffffffff8211156107de57600080fd5b6020019150368190038213156104e057600080fd5b"
    "818103818111156101a4576101a4610746565b600060208083528351808285015260005b8181101561083357"
    "858101830151858201604001528201610817565b506000604082860101526040601f19601f83011685010192"
    "50505092915050565b60006001820161086657610866610746565b506001019056fea164736f6c6343000813"
    "000a")
# keccak of the code deployed
RUNTIME_CODE_HASH = "0x1fd78ec6f60916c5f46c6801af4879a6fcd811aea47ba6732c813e3a82f9069c"
# wave_address(): CREATE2 by DEPLOYER of SALT and CREATION_CODE
WAVE_ADDRESS = "0x3Fb0A80de1bc64B2F032F9C0Ae85A1CD53a08e6C"

# KeeperWave's addresses before its code last changed (each change moves the address): a key
# still delegated to one is allowed (it is keeperd's own code) and sends one transaction a
# liquidation until `keeperd wave delegate` moves it to WAVE_ADDRESS. None has shipped yet.
PAST_WAVE_ADDRESSES: tuple[str, ...] = ()
KNOWN_WAVE_ADDRESSES = frozenset({WAVE_ADDRESS, *PAST_WAVE_ADDRESSES})

MAX_CALLS = 256  # the contract's bound: a bit each in WaveExecuted's `succeeded`
EXECUTE = keccak(b"execute((address,uint256,bytes)[])")[:4]
WAVE_EXECUTED = "0x" + keccak(b"WaveExecuted(uint256,uint256)").hex()
CALL_SUCCEEDED = "0x" + keccak(b"CallSucceeded(uint256,uint256)").hex()
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
    gas: Mapping[int, int]  # what each call that succeeded used (before the refund)

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
    gas: dict[int, int] = {}
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
            gas[index] = decode(["uint256"], _data(log))[0]
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
    return WaveOutcome(calls, succeeded, failed, frozenset(starved), per_call, gas)


def _data(log: Mapping[str, Any]) -> bytes:
    data = str(log.get("data", "0x"))
    return bytes.fromhex(data[2:] if data.startswith("0x") else data)
