"""A short is liquidated by a rise of its asset's price, not a drop. A holder of a Perp Curie
short watched by keeperd was told "main collateral vETH, liquidatable after a 4.4 % drop",
and `keeperd scan` printed the same under "drop to liq.": the wrong way, for the one person
the message is for. Each figure now says which way the price must move, and the asset of a
perp row is the position nearest its liquidation, paired with that position's move."""

from __future__ import annotations

import pytest

from keeperd.alerts.model import Alert
from keeperd.alerts.render import render
from keeperd.protocols.perp_curie import margin as cm
from keeperd.protocols.perps.margin import PerpAccount, PerpPosition
from keeperd.scan import perp_row, to_table
from tests.unit.test_curie_margin import MM, WAD, position


def trader(av: float, *positions: cm.CuriePosition,
           collateral: tuple[cm.CurieCollateral, ...] = ()) -> cm.CurieTrader:
    total = sum(p.notional for p in positions)
    return cm.CurieTrader("0xt", int(av * WAD), cm.mul_ratio(total, MM), 0, positions,
                          collateral)


def test_curie_a_long_falls_a_short_rises_to_its_liquidation() -> None:
    long, short = position("ETH", 5, 2_000), position("ETH", -5, 2_000)
    down = cm.move_to_liquidation(trader(2_000, long), long, MM)
    up = cm.move_to_liquidation(trader(2_000, short), short, MM)
    # $10,000 of ETH on $2,000: the value meets 6.25 % of the notional after a ~15 % move,
    # down for the long, up for the short (where the shocked account says so).
    assert down is not None and -0.2 < down < -0.1
    assert up is not None and 0.1 < up < 0.25
    for t, move in ((trader(2_000, long), down), (trader(2_000, short), up)):
        av, mm = cm.shocked(t, {"ETH": 1 + move}, MM)
        assert av == pytest.approx(mm)


def test_curie_a_short_on_more_weth_margin_than_it_shorts_is_liquidated_by_a_drop() -> None:
    # 5 ETH short, 10 WETH of margin (counted at 80 %): a drop costs the margin more than it
    # earns the short. The side of the position does not say which way; the price does.
    short = position("ETH", -5, 2_000)
    weth = cm.CurieCollateral("0xweth", "ETH", 10 * WAD, 18, 2_000 * WAD, 18, 800_000)
    t = trader(2_000, short, collateral=(weth,))
    move = cm.move_to_liquidation(t, short, MM)
    assert move is not None and move < 0
    av, mm = cm.shocked(t, {"ETH": 1 + move}, MM)
    assert av == pytest.approx(mm)


def test_curie_an_account_under_maintenance_is_there_already() -> None:
    short = position("ETH", -5, 2_000)
    assert cm.move_to_liquidation(trader(500, short), short, MM) == 0.0


def watched(**details: object) -> dict:
    return Alert("position_health", "warning", "firing",
                 {"account": "0x" + "ab" * 20, "watchlist": "w"}, "health 1.05",
                 details={"collateral_usd": 2_000.0, "debt_usd": 10_000.0,
                          **details}).to_json()


def test_the_alert_says_which_way_and_what_the_asset_is() -> None:
    short = render([watched(main_collateral="vETH", drop_to_liquidation=None,
                            rise_to_liquidation=0.044, main_is_position=True)], "text")
    assert "main position vETH, liquidatable after a 4.4% rise" in short
    assert "drop" not in short
    # A perp account's figures are its equity and open notional, not collateral and debt.
    assert "account value $2,000.00 · open notional $10,000.00" in short
    loan = render([watched(main_collateral="WETH", drop_to_liquidation=0.25)], "text")
    assert "main collateral WETH, liquidatable after a 25.0% drop" in loan


def test_a_venue_rows_asset_is_its_nearest_position_with_that_positions_move() -> None:
    # A large isolated BTC long far from its liquidation (half its notional as margin) beside
    # a smaller ETH short near its own: the row names ETH and a rise (it named BTC, the
    # largest, with ETH's distance, as a drop).
    btc = PerpPosition("BTC", 1.0, 60_000.0, 60_000.0, 0.0, "isolated",
                       maintenance_fraction=0.01, isolated_margin=30_000.0)
    eth = PerpPosition("ETH", -5.0, 2_000.0, 2_000.0, 0.0, "cross", maintenance_fraction=0.01)
    row = perp_row(PerpAccount("hyperliquid", "0xabc", 1_000.0, (btc, eth)), True)
    assert row.main_collateral == "ETH"
    assert row.drop_to_liquidation is None
    assert row.rise_to_liquidation is not None and 0 < row.rise_to_liquidation < 0.5
    positions = row.extra["positions"]
    eth_json = next(p for p in positions if p["coin"] == "ETH")
    assert eth_json["liquidation_price"] > eth_json["mark_price"]
    assert row.rise_to_liquidation == pytest.approx(eth_json["distance_to_liquidation"])
    assert row.to_json()["rise_to_liquidation"] == row.rise_to_liquidation
    table = to_table([row])
    assert "main asset" in table and f"{row.rise_to_liquidation:.2%} rise" in table
    # A long alone: a drop, as before.
    alone = perp_row(PerpAccount("hyperliquid", "0xabc", 3_000.0, (btc,)), True)  # isolated
    assert alone.main_collateral == "BTC" and alone.rise_to_liquidation is None
    assert alone.drop_to_liquidation is not None and 0 < alone.drop_to_liquidation < 1
    assert f"{alone.drop_to_liquidation:.2%} drop" in to_table([alone])


def test_a_venue_account_under_maintenance_is_liquidatable_now() -> None:
    """Under maintenance a long's liquidation price is above its mark: compared, it read as
    "2.63% rise". It is neither way: now."""
    eth = PerpPosition("ETH", 10.0, 2_000.0, 2_000.0, 0.0, "cross", maintenance_fraction=0.05)
    row = perp_row(PerpAccount("hyperliquid", "0xabc", 500.0, (eth,)), True)  # health 0.5
    assert row.drop_to_liquidation == 0.0 and row.rise_to_liquidation is None
    assert "now" in to_table([row]).splitlines()[-1]


def test_the_alert_says_the_price_that_liquidates() -> None:
    """A holder told "liquidatable after a 16.2 % drop" had to work out the price from one
    it was not told (a by-hand trial): the price is said beside the move, in the unit the
    position is judged in (a Morpho market's loan token), and not under health 1 (no move)."""
    import numpy as np

    from keeperd.alerts.engine import watched_rows
    from keeperd.protocols.sdk.views import HealthView

    accounts = ["0x" + "a1" * 20, "0x" + "a2" * 20, "0x" + "a3" * 20, "0x" + "a4" * 20]
    view = HealthView(
        accounts=accounts, health=np.array([1.19, 1.1, 0.9, 1.3]),
        collateral_usd=np.ones(4), debt_usd=np.ones(4), liquidation_threshold=np.ones(4),
        main_collateral=["WETH", "vETH", "WETH", "wstETH"],
        drop_to_liquidation=np.array([0.162, np.nan, 0.0, 0.05]),
        rise_to_liquidation=np.array([np.nan, 0.044, np.nan, np.nan]),
        main_price=np.array([2_840.0, 2_000.0, 2_300.0, 1.2]),
        price_unit=["USD", "USD", "USD", "WETH"])
    rows = watched_rows(view, "p", "c", {a.lower(): {} for a in accounts}, "", lambda _: None)
    said = [r.details.get("liquidation_price") for r in rows]
    assert said == [pytest.approx(2_840 * 0.838), pytest.approx(2_000 * 1.044), None,
                    pytest.approx(1.14)]
    text = render([watched(**rows[0].details)], "text")
    assert "main collateral WETH, liquidatable after a 16.2% drop (WETH at $2,379.92)" in text
    assert "(vETH at $2,088.00)" in render([watched(**rows[1].details)], "text")
    assert " at $" not in render([watched(**rows[2].details)], "text")
    assert "(wstETH at 1.1400 WETH)" in render([watched(**rows[3].details)], "text")
    # A tiny rate (a memecoin in WETH) to significant digits, not rounded to nothing.
    tiny = HealthView(
        accounts=accounts[:1], health=np.array([1.25]), collateral_usd=np.ones(1),
        debt_usd=np.ones(1), liquidation_threshold=np.ones(1), main_collateral=["SHIB"],
        drop_to_liquidation=np.array([0.2]), main_price=np.array([1.234567e-9]),
        price_unit=["WETH"])
    [row] = watched_rows(tiny, "p", "c", {accounts[0].lower(): {}}, "", lambda _: None)
    assert row.details["liquidation_price"] == pytest.approx(0.9876536e-9, rel=1e-6)
    assert "(SHIB at 9.877e-10 WETH)" in render([watched(**row.details)], "text")
