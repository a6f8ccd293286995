"""An included liquidation that lost money because the protocol paid less than planned is
told critical and counts toward a pause, as reverts do: a pool linked to changed liquidation
code paid 9 % less collateral per debt than keeperd's plan, and 24 liquidations lost $254k,
each told as an info event, nothing paused (a by-hand trial)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from eth_abi import encode
from eth_utils import keccak

from keeperd.execution import journal as J
from keeperd.execution.executor import Executor
from keeperd.execution.txmanager import Outcome
from keeperd.protocols.aave_v3.liquidator import AaveLiquidator
from keeperd.protocols.sdk.contract import LiquidatorBase

USER = "0x" + "ab" * 20
POOL = "0x" + "a0" * 20
LIQUIDATION_CALL = "0x" + keccak(
    text="LiquidationCall(address,address,address,uint256,uint256,address,bool)").hex()


def liquidation_log(user: str, repaid: int, seized: int) -> dict[str, Any]:
    def topic(address: str) -> str:
        return "0x" + address[2:].rjust(64, "0")

    return {"address": POOL,
            "topics": [LIQUIDATION_CALL, topic("0x" + "01" * 20), topic("0x" + "02" * 20),
                       topic(user)],
            "data": "0x" + encode(["uint256", "uint256", "address", "bool"],
                                  [repaid, seized, "0x" + "cd" * 20, False]).hex()}


PLANNED = {"debtToCover": 1_000_000, "liquidatedCollateralAmount": 500_000, "protocolFee": 10}


def test_aave_compares_the_event_with_the_plan() -> None:
    liquidator: Any = AaveLiquidator.__new__(AaveLiquidator)
    liquidator.adapter = SimpleNamespace(reader=SimpleNamespace(
        addresses=SimpleNamespace(pool=POOL)))
    receipt = {"logs": [liquidation_log("0x" + "ee" * 20, 1, 1),  # (another account's)
                        {**liquidation_log(USER, 1, 1), "address": "0x" + "99" * 20},
                        liquidation_log(USER, 2_000_000, 910_000)]}
    assert liquidator.paid_short(receipt, USER.upper().replace("0X", "0x"),
                                 PLANNED) == 1 - 0.455 / 0.5
    assert liquidator.paid_short(receipt, USER, None) is None  # (no plan journaled)
    assert liquidator.paid_short({"logs": []}, USER, PLANNED) is None


def executor(short: float | None) -> Any:
    ex: Any = Executor.__new__(Executor)
    ex._last = None
    ex.liquidator = SimpleNamespace(paid_short=lambda receipt, account, planned: short)
    seen = SimpleNamespace(account=USER, repaid_usd=10_000.0)
    ex.adapter = SimpleNamespace(decode_liquidation=lambda entry, book: seen)
    return ex


def entry() -> J.JournalEntry:
    return J.JournalEntry("k", "aave", USER, "WETH", "USDC", 1, 500.0, 0, 7, J.INCLUDED, 1,
                          None, None, planned=PLANNED)


def test_a_loss_counts_when_the_pool_paid_less_than_planned() -> None:
    outcome = Outcome("k", "included", "0x1", receipt={"logs": [{}]})
    # 9 % less collateral per debt, $700 lost before gas: counted.
    assert "9.0% less collateral per debt" in executor(0.09)._lost_money(
        outcome, entry(), -705.0, 5.0)
    # A loss of the gas alone is no loss of the liquidation's; nor a rate that moved less
    # than a price can in a block (the rules held).
    assert executor(0.09)._lost_money(outcome, entry(), -5.0, 5.0) is None
    assert executor(0.005)._lost_money(outcome, entry(), -105.0, 5.0) is None
    # A plug-in that cannot compare (a Curie takeover's funding and netting, a collateral
    # priced after a further fall): the market's loss, told as an inclusion, no pause.
    assert executor(None)._lost_money(outcome, entry(), -305.0, 5.0) is None
    assert LiquidatorBase().paid_short({}, USER, PLANNED) is None
    # Settled on one other endpoint's receipt (its logs that endpoint's word): no pause.
    lone = Outcome("k", "included", "0x1", receipt={"logs": [{}]}, lone_receipt=True)
    assert executor(0.09)._lost_money(lone, entry(), -705.0, 5.0) is None


def test_morpho_compares_its_liquidate_event_with_the_plan() -> None:
    from keeperd.protocols.morpho_blue.adapter import LIQUIDATE
    from keeperd.protocols.morpho_blue.liquidator import MorphoLiquidator

    morpho = "0x" + "bb" * 20
    liquidator: Any = MorphoLiquidator.__new__(MorphoLiquidator)
    liquidator.adapter = SimpleNamespace(config=SimpleNamespace(morpho=morpho))

    def liquidate(by: str, borrower: str, repaid: int, seized: int) -> dict[str, Any]:
        return {"address": by, "topics": [LIQUIDATE, "0x" + "11" * 32, "0x" + "22" * 32,
                                          "0x" + borrower[2:].rjust(64, "0")],
                "data": "0x" + encode(["uint256"] * 5, [repaid, 7, seized, 0, 0]).hex()}

    planned = {"repaidAssets": 1_000, "seizedAssets": 500}
    receipt = {"logs": [liquidate("0x" + "cc" * 20, USER, 1_000, 1),  # (not Morpho's)
                        liquidate(morpho, USER, 2_000, 910)]}
    assert liquidator.paid_short(receipt, USER, planned) == 1 - 0.455 / 0.5
    assert liquidator.paid_short(receipt, USER, None) is None


def test_losses_pause_sending_as_reverts_do() -> None:
    ex: Any = Executor.__new__(Executor)
    ex.config = SimpleNamespace(revert_breaker_reverts=3, revert_breaker_blocks=50,
                                max_gas_usd_per_hour=None)
    ex._reverts, ex._revert_counted, ex._gas_spent = [], {}, []
    ex._last_revert_reason, ex._pause_kind, ex._pause_reason = None, None, None
    ex.adapter = SimpleNamespace(name="aave")
    ex.pool = SimpleNamespace(contested=lambda: None)
    ex._losses = [100, 101]
    assert ex.send_pause(102) is None
    ex._losses.append(102)
    assert "3 included liquidations lost money in the last 50 blocks" in ex.send_pause(103)
    assert ex.send_pause(152) is None  # (50 blocks without one)
