"""Perp Curie's margin rules, without a chain: the requirement, how much one liquidation may
take, the penalty split, the liquidation price and the what-if under a shock."""

from __future__ import annotations

import pytest

from keeperd.protocols.perp_curie import margin as cm

WAD = 10**18
MM = 62_500  # 6.25 %


def position(asset: str, size: float, mark: float) -> cm.CuriePosition:
    s = int(size * WAD)
    return cm.CuriePosition("0x" + asset, "v" + asset, asset, s, s * int(mark * 10**6) // 10**6,
                            -s * int(mark), int(mark * WAD))


def trader(av: float, *positions: cm.CuriePosition) -> cm.CurieTrader:
    total = sum(p.notional for p in positions)
    return cm.CurieTrader("0xt", int(av * WAD), cm.mul_ratio(total, MM), 0, positions)


def test_requirement_is_floor_of_total_value_times_ratio() -> None:
    t = trader(1_000, position("ETH", 3, 2_000), position("BTC", -0.1, 60_000))
    assert cm.margin_requirement(t, MM) == (6_000 + 6_000) * WAD * MM // 10**6
    assert cm.mul_ratio(-7, 500_000) == -3  # toward zero, as mulDiv on the absolute value


def test_half_of_a_large_position_while_margin_is_above_half_the_requirement() -> None:
    # One market: requirement $625 on $10,000; account value $400 >= $312.5 -> at most
    # min(1, total / (2 x this)) = 50 %.
    eth = position("ETH", 5, 2_000)
    t = trader(400, eth)
    assert cm.is_liquidatable(t)
    assert cm.liquidatable_size(t, eth) == eth.size // 2
    # Under half the requirement: all of it.
    assert cm.liquidatable_size(trader(300, eth), eth) == eth.size
    # Small positions ($100 or less) go whole; healthy accounts give nothing.
    tiny = position("ETH", 0.04, 2_000)
    assert cm.liquidatable_size(trader(1, tiny), tiny) == tiny.size
    assert cm.liquidatable_size(trader(700, eth), eth) == 0


def test_cross_margin_takes_more_of_the_smaller_market() -> None:
    eth, btc = position("ETH", 5, 2_000), position("BTC", 0.05, 60_000)  # $10k + $3k
    t = trader(700, eth, btc)  # requirement $812.5, 700 >= 406.25
    assert cm.liquidatable_size(t, eth) == cm.mul_ratio(eth.size, 13_000 * 10**6 // 20_000)
    assert cm.liquidatable_size(t, btc) == btc.size  # 13k / 6k > 1: capped at all of it


def test_penalty_goes_half_to_the_liquidator_unless_there_is_bad_debt() -> None:
    assert cm.liquidation_fee(10_000 * WAD, 25_000, 1) == (250 * WAD, 125 * WAD)
    assert cm.liquidation_fee(-10_000 * WAD, 25_000, -1) == (250 * WAD, 250 * WAD)


def test_liquidation_price_is_where_value_meets_the_requirement() -> None:
    eth = position("ETH", 5, 2_000)
    t = trader(2_000, eth)
    price = cm.liquidation_price(t, eth, MM)
    assert price is not None
    av, mm = cm.shocked(t, {"ETH": price / 2_000}, MM)
    assert av == pytest.approx(mm)
    short = position("ETH", -5, 2_000)
    up = cm.liquidation_price(trader(2_000, short), short, MM)
    assert up is not None and up > 2_000
    av, mm = cm.shocked(trader(2_000, short), {"ETH": up / 2_000}, MM)
    assert av == pytest.approx(mm)


def test_funding_and_the_hours_it_takes_to_reach_maintenance() -> None:
    eth = position("ETH", 5, 2_024)  # mark 2,024 over an index of 2,000: longs pay
    t = trader(1_000, eth)
    index = {eth.base: 2_000 * WAD}
    assert cm.funding_per_hour(t, index) == pytest.approx(5 * 24 / 24)  # $5 an hour
    room = (t.account_value - t.margin_requirement) / WAD
    assert cm.hours_to_maintenance(t, index) == pytest.approx(room / 5)
    short = position("ETH", -5, 2_024)
    assert cm.funding_per_hour(trader(1_000, short), index) == pytest.approx(-5.0)
    assert cm.hours_to_maintenance(trader(1_000, short), index) is None  # it receives


def weth_margin(amount: float, price: float, ratio: int = 800_000) -> cm.CurieCollateral:
    return cm.CurieCollateral("0xweth", "ETH", int(amount * WAD), 18, int(price * WAD), 18,
                              ratio)


def test_weth_margin_counts_its_ratio_and_moves_with_its_asset() -> None:
    c = weth_margin(1, 2_000)
    assert c.value == 2_000 * WAD and c.counted == 1_600 * WAD
    # Six-decimal token, eight-decimal feed: the vault's conversion.
    usdc_like = cm.CurieCollateral("0xt", "T", 5 * 10**6, 6, 3 * 10**8, 8, 500_000)
    assert usdc_like.value == 15 * WAD and usdc_like.counted == 7_500_000_000_000_000_000
    eth = position("ETH", 5, 2_000)
    plain = trader(2_000, eth)
    on_weth = cm.CurieTrader("0xt", plain.account_value, plain.margin_requirement, 0, (eth,),
                             (c,))
    # A 10 % drop costs the position $1,000 and the counted margin $160 more.
    assert cm.shocked(on_weth, {"ETH": 0.9}, MM)[0] == pytest.approx(
        cm.shocked(plain, {"ETH": 0.9}, MM)[0] - 160)
    # So its liquidation price is higher, and it is where value meets the requirement.
    price = cm.liquidation_price(on_weth, eth, MM)
    assert price is not None and price > (cm.liquidation_price(plain, eth, MM) or 0)
    av, mm = cm.shocked(on_weth, {"ETH": price / 2_000}, MM)
    assert av == pytest.approx(mm)
    # A short on WETH margin is partly hedged; a BTC move leaves the WETH margin alone.
    assert on_weth.assets == {"ETH"}
    assert cm.at_risk([on_weth], "ETH", -0.3, MM)[0] > 0
    btc_only = cm.CurieTrader("0xb", 1_000 * WAD, 0, 0, (position("BTC", 0.1, 60_000),), (c,))
    assert btc_only.assets == {"BTC", "ETH"}
    assert cm.shocked(btc_only, {"BTC": 1.0, "ETH": 0.5}, MM)[0] == pytest.approx(1_000 - 800)


RULES = cm.CollateralRules(mm_buffer=20_000, debt_ratio=800_000, debt_threshold=10_000 * 10**6)


def health(t: cm.CurieTrader, x: float, asset: str = "ETH") -> float:
    """What the adapter's view calls health under a move of `asset`: the lower of the
    position rule and the Vault's collateral rules."""
    av, mm = cm.shocked(t, {asset: x}, MM)
    return min(av / mm if mm > 0 else float("inf"),
               cm.collateral_health(t, RULES, MM, {asset: x}))


@pytest.mark.parametrize("size, av, margin", [
    (5, 1_500, 1.0),  # a long on WETH margin: its margin goes first (the buffer)
    (-5, 1_500, 1.0),  # a short on WETH margin, hedged
    (5, 1_000, 2.0),  # USDC debt beside WETH margin: over 80 % of the counted margin
    (-3, 800, 0.5),
    (8, 7_000, 10.0),  # USDC debt near the threshold
])
def test_the_liquidation_price_is_the_nearest_rule_that_health_counts(
        size: float, av: float, margin: float) -> None:
    """A holder on WETH margin was told a distance to liquidation its collateral passed
    first: health counts the Vault's collateral rules (maintenance + buffer, the USDC debt
    over 80 % of the counted margin or over the threshold), and the price said only the
    position's (a by-hand trial: health 0.93 beside "2.7e-05 to liquidation"). The price is
    now where health reaches 1, and nearer today's price it is above 1."""
    eth = position("ETH", size, 2_000)
    t = cm.CurieTrader("0xt", int(av * WAD), cm.mul_ratio(eth.notional, MM), 0, (eth,),
                       (weth_margin(margin, 2_000),))
    assert health(t, 1.0) > 1.0
    price = cm.liquidation_price(t, eth, MM, RULES)
    assert price is not None
    x = price / 2_000
    assert health(t, x) == pytest.approx(1.0, abs=1e-9)
    for k in (0.1, 0.5, 0.9, 0.99):
        assert health(t, 1 + k * (x - 1)) > 1.0, k
    assert health(t, 1 + 1.01 * (x - 1)) < 1.0
    move = cm.move_to_liquidation(t, eth, MM, RULES)
    assert move == pytest.approx(x - 1)
    # Without the rules, only the position's: never nearer than the one with them.
    plain = cm.liquidation_price(t, eth, MM)
    assert plain is None or abs(plain / 2_000 - 1) >= abs(x - 1) - 1e-12


def test_a_trader_whose_margin_may_be_sold_now_is_at_its_liquidation() -> None:
    eth = position("ETH", 5, 2_000)
    c = weth_margin(1, 2_000)
    # Over maintenance (650 > 625) but under maintenance + buffer (825).
    t = cm.CurieTrader("0xt", 650 * WAD, cm.mul_ratio(eth.notional, MM), 0, (eth,), (c,))
    assert not cm.is_liquidatable(t) and cm.collateral_health(t, RULES, MM) < 1.0
    assert cm.move_to_liquidation(t, eth, MM, RULES) == 0.0
    assert (cm.move_to_liquidation(t, eth, MM) or 0) < 0  # (the position rule alone: later)


def test_debt_at_risk_counts_what_a_margin_liquidation_repays_not_the_notional() -> None:
    """An account liquidatable through its WETH margin alone, its position above maintenance:
    what a liquidation repays is the USDC its margin covers, not its $10,000 notional (debt
    at risk said $374,802 of what was $2,074, a by-hand trial). One liquidatable through its
    position counts its notional, as before."""
    from dataclasses import replace

    from keeperd.protocols.perp_curie.adapter import CurieBook, Market, PerpCurieAdapter
    from keeperd.risk.health import summarize

    eth = position("ETH", 5, 2_000)
    margin = replace(weth_margin(1, 2_000), max_repaid=900 * 10**6)
    by_margin = cm.CurieTrader("0xa", 650 * WAD, cm.mul_ratio(eth.notional, MM), 0, (eth,),
                               (margin,))
    by_position = cm.CurieTrader("0xb", 500 * WAD, cm.mul_ratio(eth.notional, MM), 0, (eth,))
    market = Market("0xETH", "vETH", "ETH", 2_000 * WAD, 2_000 * WAD)
    book = CurieBook(1, 0, {"0xETH": market}, (by_margin, by_position), MM, 25_000, 100_000,
                     None, RULES)
    view = PerpCurieAdapter.__new__(PerpCurieAdapter).evaluate(book)
    assert view.health[0] < 1.0 and view.health[1] < 1.0
    assert view.at_risk_usd is not None
    assert list(view.at_risk_usd) == [pytest.approx(900.0), pytest.approx(10_000.0)]
    assert summarize(view.health, view.collateral_usd, view.debt_usd,
                     view.at_risk_usd).debt_below["1"] == pytest.approx(10_900.0)
