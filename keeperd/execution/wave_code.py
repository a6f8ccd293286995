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
from eth_utils import keccak, to_checksum_address

# Arachnid's deterministic deployment proxy: its input is salt (32 bytes) || creation code.
DEPLOYER = "0x4e59b44847b379578588920cA78FbF26c0B4956C"
# keccak("keeperd KeeperWave")
SALT = bytes.fromhex("91d952bf882c7c76b0efe2208ca323d74dd63956a7182510004eea6974388af0")
# KeeperWave's creation code: solc 0.8.19, optimizer 200 runs, paris, no source hash.
CREATION_CODE = bytes.fromhex(
    "608060405234801561001057600080fd5b50610829806100206000396000f3fe60806040526004361061004e"
    "5760003560e01c806301ffc9a71461005a578063150b7a021461008f5780633f707e6b146100d4578063bc19"
    "7c8114610102578063f23a6e611461013157600080fd5b3661005557005b600080fd5b348015610066576000"
    "80fd5b5061007a610075366004610413565b61015e565b60405190151581526020015b60405180910390f35b"
    "34801561009b57600080fd5b506100bb6100aa3660046104a9565b630a85bd0160e11b95945050505050565b"
    "6040516001600160e01b03199091168152602001610086565b3480156100e057600080fd5b506100f46100ef"
    "36600461055d565b6101b0565b604051908152602001610086565b34801561010e57600080fd5b506100bb61"
    "011d36600461059f565b63bc197c8160e01b98975050505050505050565b34801561013d57600080fd5b5061"
    "00bb61014c36600461065a565b63f23a6e6160e01b9695505050505050565b60006301ffc9a760e01b600160"
    "0160e01b03198316148061018f5750630a85bd0160e11b6001600160e01b03198316145b806101aa57506302"
    "71189760e51b6001600160e01b03198316145b92915050565b60003330146101d2576040516314e1dbf760e1"
    "1b815260040160405180910390fd5b818015806101e1575061010081115b156102065760405163f79b572f60"
    "e01b81526004810182905260240160405180910390fd5b60005b818110156103295736858583818110610224"
    "576102246106d2565b905060200281019061023691906106e8565b9050614e2061024a603f60208401356107"
    "1e565b610258906020840135610740565b6102629190610740565b5a101561029a5760405182907fc3f52f7f"
    "a2c46e77814c8294eebdb37c53c0c79bedba0accf693aa13b95dc12890600090a250610319565b6000806102"
    "c46102ad6020850185610753565b60208501356102bf604087018761076e565b61036a565b91509150811561"
    "02dc57836001901b86179550610315565b837f5c0dee5d32a1e145396705da49c1e64a2b1d63387f78c26971"
    "00f655567f5de98260405161030c91906107b5565b60405180910390a25b5050505b61032281610803565b90"
    "50610209565b5060408051838152602081018390527f1d56d433cc4946e6288a6adf1b4dbf8506671ba3cd7f"
    "5e5a7a4c27051f8e6e51910160405180910390a15092915050565b60006060856001600160a01b03163b6000"
    "036103b25750506040805180820190915260118152701b9bc818dbd91948185d081d185c99d95d607a1b6020"
    "82015260009061040a565b60405183858237600080858360008b8bf192503d6101008111156103d557506101"
    "005b819250808352806000602085013e601f01601f1916820160200160405250811561040a57506040805160"
    "208101909152600081525b94509492505050565b60006020828403121561042557600080fd5b813560016001"
    "60e01b03198116811461043d57600080fd5b9392505050565b80356001600160a01b038116811461045b5760"
    "0080fd5b919050565b60008083601f84011261047257600080fd5b50813567ffffffffffffffff8111156104"
    "8a57600080fd5b6020830191508360208285010111156104a257600080fd5b9250929050565b600080600080"
    "6000608086880312156104c157600080fd5b6104ca86610444565b94506104d860208701610444565b935060"
    "408601359250606086013567ffffffffffffffff8111156104fb57600080fd5b61050788828901610460565b"
    "969995985093965092949392505050565b60008083601f84011261052a57600080fd5b50813567ffffffffff"
    "ffffff81111561054257600080fd5b6020830191508360208260051b85010111156104a257600080fd5b6000"
    "806020838503121561057057600080fd5b823567ffffffffffffffff81111561058757600080fd5b61059385"
    "828601610518565b90969095509350505050565b60008060008060008060008060a0898b0312156105bb5760"
    "0080fd5b6105c489610444565b97506105d260208a01610444565b9650604089013567ffffffffffffffff80"
    "8211156105ef57600080fd5b6105fb8c838d01610518565b909850965060608b013591508082111561061457"
    "600080fd5b6106208c838d01610518565b909650945060808b013591508082111561063957600080fd5b5061"
    "06468b828c01610460565b999c989b5096995094979396929594505050565b60008060008060008060a08789"
    "03121561067357600080fd5b61067c87610444565b955061068a60208801610444565b945060408701359350"
    "60608701359250608087013567ffffffffffffffff8111156106b457600080fd5b6106c089828a0161046056"
    "5b979a9699509497509295939492505050565b634e487b7160e01b600052603260045260246000fd5b600082"
    "35605e198336030181126106fe57600080fd5b9190910192915050565b634e487b7160e01b60005260116004"
    "5260246000fd5b60008261073b57634e487b7160e01b600052601260045260246000fd5b500490565b808201"
    "808211156101aa576101aa610708565b60006020828403121561076557600080fd5b61043d82610444565b60"
    "00808335601e1984360301811261078557600080fd5b83018035915067ffffffffffffffff8211156107a057"
    "600080fd5b6020019150368190038213156104a257600080fd5b600060208083528351808285015260005b81"
    "8110156107e2578581018301518582016040015282016107c6565b506000604082860101526040601f19601f"
    "8301168501019250505092915050565b60006001820161081557610815610708565b506001019056fea16473"
    "6f6c6343000813000a")
# keccak of the code deployed
RUNTIME_CODE_HASH = "0x1b0b4518baa572ba9f0b785aa91b21cb0f42b03de49e199d528039da667bc561"
# wave_address(): CREATE2 by DEPLOYER of SALT and CREATION_CODE
WAVE_ADDRESS = "0x3dB43c61183678DD8AF6A07e5c7a9fFECF9821A9"

MAX_CALLS = 256  # the contract's bound: a bit each in WaveExecuted's `succeeded`
EXECUTE = keccak(b"execute((address,uint256,bytes)[])")[:4]
WAVE_EXECUTED = "0x" + keccak(b"WaveExecuted(uint256,uint256)").hex()
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
    keeper's address can emit them): which calls succeeded, why the others failed."""

    calls: int
    succeeded: frozenset[int]
    failed: Mapping[int, bytes]
    starved: frozenset[int]

    def ok(self, index: int) -> bool:
        return index in self.succeeded


def read_wave_logs(logs: Iterable[Mapping[str, Any]], keeper: str) -> WaveOutcome | None:
    """The wave's outcome from its receipt's logs, or None when the keeper's address emitted
    no WaveExecuted: the transaction ran no KeeperWave (a delegation gone or never made, a
    wave that reverted). Logs of any other address are ignored, whatever their topics."""
    mine = [log for log in logs
            if str(log.get("address", "")).lower() == keeper.lower() and log.get("topics")]
    executed = [log for log in mine if str(log["topics"][0]).lower() == WAVE_EXECUTED]
    if len(executed) != 1:
        return None
    bits, calls = decode(["uint256", "uint256"], _data(executed[0]))
    failed: dict[int, bytes] = {}
    starved: set[int] = set()
    for log in mine:
        topic = str(log["topics"][0]).lower()
        if topic == CALL_FAILED and len(log["topics"]) == 2:
            failed[int(str(log["topics"][1]), 16)] = decode(["bytes"], _data(log))[0]
        elif topic == CALL_STARVED and len(log["topics"]) == 2:
            starved.add(int(str(log["topics"][1]), 16))
    succeeded = frozenset(i for i in range(min(calls, MAX_CALLS)) if bits >> i & 1)
    return WaveOutcome(calls, succeeded, failed, frozenset(starved))


def _data(log: Mapping[str, Any]) -> bytes:
    data = str(log.get("data", "0x"))
    return bytes.fromhex(data[2:] if data.startswith("0x") else data)
