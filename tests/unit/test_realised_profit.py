"""What a liquidation through a seller contract realised is what the contract sent the
beneficiary (its Liquidated event's profit, in the debt asset), not seized minus repaid at
oracle prices: on the devnet's trial the two were $52,568 logged against 313,679 USDC
received; with the keeper's own capital it stays seized minus repaid."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from eth_utils import keccak

from keeperd.execution.executor import Executor
from keeperd.execution.txmanager import Outcome
from keeperd.protocols.sdk.contract import LiquidatorBase

CONTRACT = "0x" + "ab" * 20
KEEPER = "0x" + "cd" * 20
AAVE_EVENT = "0x" + keccak(
    text="Liquidated(address,address,address,uint256,uint256,uint256)").hex()
MORPHO_EVENT = "0x" + keccak(text="Liquidated(address,bytes32,uint256,uint256,uint256)").hex()


def realised(liquidator: str, logs: list[dict[str, Any]]) -> float:
    ex: Any = Executor.__new__(Executor)
    ex._last = None
    seen = SimpleNamespace(liquidator=liquidator, profit_usd=None, repaid_usd=2_000.0,
                           seized_usd=2_100.0)
    ex.adapter = SimpleNamespace(
        decode_liquidation=lambda e, book: seen if e.get("protocol") else None)
    ex.liquidator = LiquidatorBase()  # (nothing realised beyond the event)
    receipt = {"logs": [{"protocol": True}, *logs]}
    return float(ex._realised_profit(Outcome("k", "included", "0x1", receipt=receipt)))


def seller_log(topic: str, repaid: int, profit: int, by: str = CONTRACT) -> dict[str, Any]:
    data = b"".join(v.to_bytes(32, "big") for v in (repaid, 10**18, profit))
    return {"address": by, "topics": [topic], "data": "0x" + data.hex()}


def test_through_a_seller_contract_it_is_what_the_beneficiary_got() -> None:
    # 2,000 USDC repaid ($2,000), 612.5 USDC to the beneficiary: $612.50, whatever the oracle
    # said the seized collateral was worth.
    for topic in (AAVE_EVENT, MORPHO_EVENT):
        assert realised(CONTRACT, [seller_log(topic, 2_000 * 10**6, 612_500_000)]) == 612.5


def test_with_the_keepers_capital_it_is_seized_minus_repaid() -> None:
    assert realised(KEEPER, []) == 100.0
    # (another contract's event in the same receipt is not ours to read)
    assert realised(KEEPER, [seller_log(AAVE_EVENT, 10**6, 10**6, by=CONTRACT)]) == 100.0
