"""The fees an OP Stack chain charges a transaction beside its gas: the L1 data fee, and
since Isthmus the operator fee.

On OP Mainnet, Base, Unichain and the other OP Stack chains a transaction pays its gas at the
L2's fee, plus the cost of posting its bytes to Ethereum: the L1 data fee, taken from the
sender's balance on top of `gasUsed x effectiveGasPrice` and reported in the receipt's
`l1Fee`. The data fee follows Ethereum's base and blob fees, not the L2's: at times more than
the gas itself, and during an L1 fee spike more than a small liquidation earns. A keeper that prices
gas alone sends those at a loss and books a profit it did not make.

keeperd does not compute the fee itself (Fjord prices the FastLZ-compressed size of the
transaction with parameters the chain moves every block): it asks the chain's own
GasPriceOracle predeploy, `getL1Fee(unsigned transaction)`, for each liquidation in the batch
that simulates it (no round trip of its own), and `getOperatorFee(gas)` twice a wave (the fee
is linear in the gas: its constant and its slope). The decision prices the fee with
`FEE_HEADROOM` over what the oracle says: the L1 parameters follow Ethereum's blocks, whose
base fee may rise 12.5 % a block between the simulation and the inclusion. The fee is read
once, at the simulation: a replacement or a rebroadcast after a reorg is not priced again
(their fee budget already leaves the first figure, with its headroom, paid).

Every answer may lie: with a second endpoint the same reads go to it beside the simulation's
second opinion, and the higher fee is kept (a low one would let a loss through; a high one
only holds a liquidation back); when only one of the two answers, its figure is used and the
missing opinion counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import decode, encode

from keeperd.chain import rlp
from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable

GAS_PRICE_ORACLE = "0x420000000000000000000000000000000000000F"  # every OP Stack chain's
GET_L1_FEE = bytes.fromhex("49948e0e")  # getL1Fee(bytes)
GET_OPERATOR_FEE = bytes.fromhex("275aedd2")  # getOperatorFee(uint256)
# The OP Stack chains keeperd knows (their chain ids); another one is named in the config
# (`chains[].l1_data_fee: op-stack`).
OP_STACK_CHAINS: Mapping[int, str] = {
    10: "OP Mainnet", 8453: "Base", 130: "Unichain", 480: "World Chain", 57073: "Ink",
    1868: "Soneium", 34443: "Mode", 7777777: "Zora", 252: "Fraxtal", 81457: "Blast",
    11155420: "OP Sepolia", 84532: "Base Sepolia"}
# The headroom over the oracle's figure, as a fraction (exact on wei): more than one L1 block's
# largest base-fee rise (12.5 %) between the simulation and the inclusion.
FEE_HEADROOM = (5, 4)
# A liquidation-sized call (a selector and seven words: Aave's flash liquidation, the shortest
# of the seller contracts' calls, whose profit bar the start's estimate sets), priced where no
# liquidation has been yet: check-config's figure, the start's estimate.
SAMPLE_TO = "0x" + "5a" * 20
SAMPLE_CALL = bytes.fromhex("00f5d0a4") + bytes(range(1, 225))
SAMPLE_GAS = 600_000
OPERATOR_FEE_PROBE_GAS = 1_000_000  # the slope's measure: getOperatorFee(0) and of this much
# The unsigned transaction the oracle is asked about has the size of the one keeperd signs:
# its nonce, fees and gas limit are placeholders of the largest likely length (the fee is
# priced on bytes; a few more than sent err on the side of paying).
# (Distinct, irregular values: Fjord prices the FastLZ-compressed size, and repeated
# placeholder bytes would compress to less than a real transaction's.)
_PLACEHOLDER_NONCE = 0xA5C3F1
_PLACEHOLDER_TIP = 0x7FA3C15E9B2D41
_PLACEHOLDER_MAX_FEE = 0x6E1B9D3F58A7C2


def unpriced_reason(chain_id: int, setting: str) -> str | None:
    """Why a chain's fee beside the gas goes unpriced though keeperd knows it charges one (a
    chain of OP_STACK_CHAINS set to `none`), or None."""
    known = OP_STACK_CHAINS.get(chain_id)
    if known is None or setting != "none":
        return None
    return (f"{known} is an OP Stack chain: its transactions pay an L1 data fee beside their "
            "gas, and `l1_data_fee: none` leaves it out of every liquidation's price")


def charges_l1_fee(chain_id: int, setting: str) -> bool:
    """Whether a chain's transactions pay the OP Stack fees: `setting` is the chain's
    `l1_data_fee` (auto: the chains of OP_STACK_CHAINS)."""
    if setting == "auto":
        return chain_id in OP_STACK_CHAINS
    return setting == "op-stack"


def unsigned_tx(chain_id: int, to: str, data: bytes, gas_limit: int) -> bytes:
    """An EIP-1559 transaction as keeperd would sign it to `to` with `data`, unsigned, fully
    RLP-encoded (what `getL1Fee` prices: it adds the signature's 68 bytes itself)."""
    fields: list[Any] = [chain_id, _PLACEHOLDER_NONCE, _PLACEHOLDER_TIP, _PLACEHOLDER_MAX_FEE,
                         gas_limit, bytes.fromhex(to.removeprefix("0x")), 0, data, []]
    return b"\x02" + rlp.encode(fields)


def l1_fee_request(chain_id: int, to: str, data: bytes, gas_limit: int,
                   at: str = "latest") -> tuple[str, list[Any]]:
    """The `eth_call` asking the chain what a transaction to `to` with `data` pays in L1 data
    fee (wei)."""
    payload = GET_L1_FEE + encode(["bytes"], [unsigned_tx(chain_id, to, data, gas_limit)])
    return "eth_call", [{"to": GAS_PRICE_ORACLE, "data": "0x" + payload.hex()}, at]


def operator_fee_requests(at: str = "latest") -> list[tuple[str, list[Any]]]:
    """The two `eth_call`s that give the operator fee's constant and slope."""
    return [("eth_call", [{"to": GAS_PRICE_ORACLE, "data": "0x" + (
        GET_OPERATOR_FEE + encode(["uint256"], [gas])).hex()}, at])
        for gas in (0, OPERATOR_FEE_PROBE_GAS)]


class FeeUnread(Exception):
    """The chain's fee oracle gave no usable answer: what a transaction costs is unknown."""


async def sample_fee(pool: RpcPool, chain_id: int) -> int:
    """What a liquidation-sized call (SAMPLE_CALL, at SAMPLE_GAS) pays beside its gas now: its
    L1 data fee and the operator fee, as the executor reads them. FeeUnread when the chain's
    oracle does not say (an endpoint's error included)."""
    method, params = l1_fee_request(chain_id, SAMPLE_TO, SAMPLE_CALL, SAMPLE_GAS)
    try:
        data_fee = decode_fee(await pool.request(method, params))
        operator = OperatorFee.from_answers(await pool.batch(operator_fee_requests()))
    except (RpcError, RpcUnavailable) as exc:
        raise FeeUnread(f"the GasPriceOracle's fee could not be read: {exc}"[:300]) from None
    return data_fee + operator.fee(SAMPLE_GAS)


def fee_text(wei: int) -> str:
    """A fee as an operator reads it: gwei, or ETH from a thousandth of one on."""
    if wei >= 10**15:
        return f"{wei / 1e18:,.6f} ETH"
    return f"{wei / 1e9:,.3f} gwei"


def decode_fee(answer: object) -> int:
    """A fee read's answer in wei; FeeUnread for an error or an answer that is not one."""
    if isinstance(answer, RpcError | RpcUnavailable):
        raise FeeUnread(f"the GasPriceOracle's fee could not be read: {answer}"[:300])
    if str(answer) in ("0x", ""):
        raise FeeUnread(f"nothing answered at {GAS_PRICE_ORACLE}: no GasPriceOracle there "
                        "(this chain has no OP Stack predeploys?)")
    try:
        (fee,) = decode(["uint256"], bytes.fromhex(str(answer).removeprefix("0x")))
    except Exception as exc:  # (a lying or broken endpoint: not a uint256)
        raise FeeUnread(f"the GasPriceOracle answered {str(answer)[:80]!r}: {exc}") from None
    return int(fee)


@dataclass(frozen=True)
class OperatorFee:
    """The operator fee as a function of gas (Isthmus: gas x scalar / 1e6 + constant;
    Jovian: gas x scalar x 100 + constant): linear, so two of the chain's own answers define
    it. Zero where the chain charges none (before Isthmus, or its parameters zero)."""

    constant_wei: int = 0
    per_probe_wei: int = 0  # what OPERATOR_FEE_PROBE_GAS of gas adds to the constant

    @classmethod
    def from_answers(cls, answers: list[object]) -> OperatorFee:
        """From `operator_fee_requests`' answers. An oracle without the function (before
        Isthmus: it reverts) charges none; any other failure is FeeUnread."""
        if all(_is_revert(a) for a in answers):
            return cls()
        at_zero, at_probe = (decode_fee(a) for a in answers)
        return cls(at_zero, max(0, at_probe - at_zero))

    @staticmethod
    def highest(fees: list[OperatorFee]) -> OperatorFee:
        """Of several endpoints' readings, the one charging most at any gas."""
        return OperatorFee(max(f.constant_wei for f in fees), max(f.per_probe_wei for f in fees))

    def fee(self, gas: int) -> int:
        return self.constant_wei - (-self.per_probe_wei * gas // OPERATOR_FEE_PROBE_GAS)


NO_OPERATOR_FEE = OperatorFee()


def with_headroom(fee_wei: int) -> int:
    """The fee as the decision prices it: FEE_HEADROOM over the oracle's, rounded up."""
    num, den = FEE_HEADROOM
    return -(-fee_wei * num // den)


def _is_revert(answer: object) -> bool:
    """A call the code refused (a function the oracle lacks): clients word it differently
    (geth "execution reverted", others "VM execution error")."""
    if not isinstance(answer, RpcError):
        return False
    text = str(answer).lower()
    return answer.code == 3 or "revert" in text or "execution error" in text


def receipt_fee_wei(receipt: Mapping[str, Any] | None) -> int:
    """What a receipt says the transaction paid beside its gas: the L1 data fee (`l1Fee`, in
    every OP Stack receipt of a transaction that is not a deposit); 0 where there is none."""
    if not receipt:
        return 0
    value = receipt.get("l1Fee")
    try:
        return int(str(value), 16) if value else 0
    except ValueError:
        return 0


def receipt_has_operator_fee(receipt: Mapping[str, Any] | None) -> bool:
    """Whether a receipt says an operator fee was charged (Isthmus' receipt fields, non-zero):
    its amount is then asked of the chain's oracle (the formula changed with Jovian)."""
    if not receipt:
        return False
    for name in ("operatorFeeScalar", "operatorFeeConstant"):
        try:
            if int(str(receipt.get(name) or "0x0"), 16):
                return True
        except ValueError:
            continue
    return False
