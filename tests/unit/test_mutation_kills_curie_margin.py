"""Cases for the survivors of `make mutate` in perp_curie/margin.py (docs/mutation.md), each
worked out by hand from the ClearingHouse's and the Vault's rules: the boundaries (exactly
$100, exactly half the requirement, an account value of exactly 0, exactly at the requirement
after a shock), integer division where Curie divides integers, shocks of one asset among
several, the liquidation price's edges, funding's edges, and the collateral health of an
account on non-settlement collateral (no unit case reached it before)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from keeperd.protocols.perp_curie import margin as cm
from tests.unit.test_curie_margin import MM, position, trader, weth_margin

WAD = 10**18


def account(av: float, positions: tuple[cm.CuriePosition, ...],
            collateral: tuple[cm.CurieCollateral, ...] = ()) -> cm.CurieTrader:
    total = sum(p.notional for p in positions)
    return cm.CurieTrader("0xt", int(av * WAD), cm.mul_ratio(total, MM), 0, positions,
                          collateral)


# -- getLiquidatablePositionSize -----------------------------------------------------------

def test_a_one_wei_position_is_taken_whole() -> None:
    eth = cm.CuriePosition("0xETH", "vETH", "ETH", 1, 2_000, 0, 2_000 * WAD)
    t = cm.CurieTrader("0xt", -1, 0, 0, (eth,))
    assert cm.liquidatable_size(t, eth) == 1


def test_exactly_100_dollars_is_taken_whole() -> None:
    # <= $100: all of it, even above half the requirement (which would take half here)
    small = position("ETH", 0.05, 2_000)  # $100
    requirement = cm.mul_ratio(small.notional, MM)
    t = cm.CurieTrader("0xt", requirement - 1, requirement, 0, (small,))
    assert small.notional == 100 * WAD
    assert cm.liquidatable_size(t, small) == small.size


def test_half_the_requirement_is_floored_as_curie_divides() -> None:
    # accountValue >= marginRequirement / 2 in integers: with an odd requirement the floor.
    # (A requirement of 1e15 + 1 wei: small enough for a float to hold its half, x.5.)
    eth = position("ETH", 5, 2_000)
    requirement = 10**15 + 1
    t = cm.CurieTrader("0xt", requirement // 2, requirement, 0, (eth,))
    assert cm.liquidatable_size(t, eth) == eth.size // 2


def test_the_close_factor_share_is_in_whole_parts_per_million() -> None:
    # $9,000 of ETH (4.5) and $2,000 of BTC: ETH's share is 11,000 / 18,000 = 0.6111..,
    # 611,111 ppm: 4.5e18 x 611,111 / 1e6 = 2,749,999,500,000,000,000
    eth, btc = position("ETH", 4.5, 2_000), position("BTC", 0.05, 40_000)
    requirement = cm.mul_ratio(eth.notional + btc.notional, MM)
    t = cm.CurieTrader("0xt", requirement - 1, requirement, 0, (eth, btc))
    got = cm.liquidatable_size(t, eth)
    assert got == 2_749_999_500_000_000_000 and isinstance(got, int)


# -- the penalty ----------------------------------------------------------------------------

def test_penalty_split_at_zero_account_value_and_odd_penalties() -> None:
    # Bad debt (account value < 0) gives the liquidator all of it; at exactly 0, half.
    assert cm.liquidation_fee(1_000 * WAD, 25_000, 0) == (25 * WAD, 25 * WAD // 2)
    assert cm.liquidation_fee(1_000 * WAD, 25_000, -1) == (25 * WAD, 25 * WAD)
    # 2.5 % of 1,000e18 + 40 = 25e18 + 1; half of it floored
    penalty, share = cm.liquidation_fee(1_000 * WAD + 40, 25_000, 1)
    assert (penalty, share) == (25 * WAD + 1, 12_500_000_000_000_000_000)
    assert isinstance(share, int)


# -- shocks -----------------------------------------------------------------------------------

def test_a_shock_of_one_asset_leaves_the_others_and_their_collateral() -> None:
    # $10,000 of ETH, $6,000 of BTC (0.1), 1 WETH of margin ($1,600 counted); BTC -10 %:
    # value - $600; requirement 6.25 % of (10,000 + 5,400) = $962.50
    eth, btc = position("ETH", 5, 2_000), position("BTC", 0.1, 60_000)
    t = account(3_000, (eth, btc), (weth_margin(1, 2_000),))
    av, mm = cm.shocked(t, {"BTC": 0.9}, MM)
    assert av == pytest.approx(2_400) and mm == pytest.approx(962.5)


def test_at_risk_counts_only_accounts_in_the_asset_and_adds_them_up() -> None:
    # 0xb: BTC only, already under its requirement: not at risk from ETH.
    # Two ETH longs of $10,000 with $1,000 of value each (one also $6,000 of BTC and $1,400
    # more value): ETH -30 % leaves -$2,000 and -$600; their notional $7,000 and $7,000 + $6,000.
    btc_only = account(100, (position("BTC", 0.1, 60_000),))
    a = account(1_000, (position("ETH", 5, 2_000),))
    b = account(2_400, (position("ETH", 5, 2_000), position("BTC", 0.1, 60_000)))
    notional, bad = cm.at_risk([btc_only, a, b], "ETH", -0.30, MM)
    assert notional == pytest.approx(7_000 + 13_000)
    assert bad == pytest.approx(2_000 + 600)


def test_exactly_at_the_requirement_after_the_move_is_not_at_risk() -> None:
    # 5 ETH at $2,000 with $5,312.50 of value: -50 % leaves $312.50, 6.25 % of $5,000
    t = account(5_312.5, (position("ETH", 5, 2_000),))
    assert cm.at_risk([t], "ETH", -0.5, MM) == (0.0, 0.0)
    assert cm.at_risk([t], "ETH", -0.5001, MM)[0] > 0


# -- the liquidation price ----------------------------------------------------------------------

def test_liquidation_price_with_another_market() -> None:
    # 5 ETH long at $2,000 ($10,000) and 0.1 BTC ($6,000), $2,000 of value: at ETH x,
    # 2,000 + 10,000 (x - 1) = 6.25 % (6,000 + 10,000 x) -> x = 8,375 / 9,375; $1,786.67
    eth = position("ETH", 5, 2_000)
    t = account(2_000, (eth, position("BTC", 0.1, 60_000)))
    assert cm.liquidation_price(t, eth, MM) == pytest.approx(2_000 * 8_375 / 9_375)


def test_move_to_liquidation_is_signed_by_where_the_price_is() -> None:
    """The move of the mark, as a signed fraction, that reaches maintenance: a long by a
    drop (-), a short by a rise (+), 0 when already under, None with no such price or
    no mark."""
    eth = position("ETH", 5, 2_000)
    btc = position("BTC", 0.1, 60_000)
    long = account(2_000, (eth, btc))
    assert cm.move_to_liquidation(long, eth, MM) == pytest.approx(8_375 / 9_375 - 1.0)
    # 5 ETH short on $1,000: -1,000 + 10,000 (x - 1)... 1,000 - 10,000 (x - 1) = 625 x
    # -> x = 11,000 / 10,625: a 3.53 % rise.
    short = position("ETH", -5, 2_000)
    assert cm.move_to_liquidation(account(1_000, (short,)), short, MM) == pytest.approx(
        11_000 / 10_625 - 1.0)
    # Already under maintenance ($500 against $625): 0, whatever the price says.
    under = account(500, (short,))
    assert under.account_value < under.margin_requirement
    assert cm.move_to_liquidation(under, short, MM) == 0.0
    # No price gets there (value equals the position: only at 0), or no mark: None.
    assert cm.move_to_liquidation(account(10_000, (eth,)), eth, MM) is None
    no_mark = replace(eth, mark=0)  # (its price is 0 then: no move of nothing)
    assert cm.move_to_liquidation(account(2_000, (no_mark, btc)), no_mark, MM) is None
    # At maintenance exactly (not under): the price itself, a move of 0 — not the 0 of
    # "already under".
    at = account(625, (short,))
    assert at.account_value == at.margin_requirement
    assert cm.move_to_liquidation(at, short, MM) == pytest.approx(0.0, abs=1e-12)


def test_liquidation_price_edges() -> None:
    # No position: none, even with WETH margin in the asset.
    margin = weth_margin(1, 2_000)
    empty = cm.CuriePosition("0xETH", "vETH", "ETH", 0, 0, 0, 2_000 * WAD)
    assert cm.liquidation_price(account(1_000, (empty,), (margin,)), empty, MM) is None
    # A long whose account value equals its value reaches the requirement only at 0: none.
    eth = position("ETH", 5, 2_000)
    assert cm.liquidation_price(account(10_000, (eth,)), eth, MM) is None
    assert cm.liquidation_price(account(20_000, (eth,)), eth, MM) is None
    # A 5 ETH short on 6.640625 WETH of margin (x 0.8 x $2,000 = $10,625 counted): the
    # position (-10,000), the margin (+10,625) and the requirement (625) move together,
    # -10,000 + 10,625 - 625 = 0: no price reaches it.
    short = position("ETH", -5, 2_000)
    hedged = account(1_000, (short,), (weth_margin(6.640625, 2_000),))
    assert cm.liquidation_price(hedged, short, MM) is None


# -- funding -------------------------------------------------------------------------------------

def test_hours_to_maintenance_edges() -> None:
    # 1 ETH long, mark $2,000 over index $1,988: pays 12 / 24 = $0.50 an hour
    eth = position("ETH", 1, 2_000)
    requirement = cm.mul_ratio(eth.notional, MM)  # $125
    index = {eth.base: 1_988 * WAD}

    def with_value(usd: float) -> cm.CurieTrader:
        return cm.CurieTrader("0xt", requirement + int(usd * WAD), requirement, 0, (eth,))
    assert cm.hours_to_maintenance(with_value(0.5), index) == pytest.approx(1.0)
    assert cm.hours_to_maintenance(with_value(0), index) is None  # already there
    assert cm.hours_to_maintenance(with_value(10), {eth.base: 2_000 * WAD}) is None  # no pay


# -- non-settlement collateral ---------------------------------------------------------------

RULES = cm.CollateralRules(mm_buffer=20_000, debt_ratio=800_000, debt_threshold=10_000 * 10**6)


def test_collateral_health_takes_the_least_of_the_three_measures() -> None:
    # 5 ETH long ($10,000) on 1 WETH ($1,600 counted), account value $800: requirement with
    # the buffer 10,000 x 8.25 % = $825 -> 0.9697; USDC debt 1,600 - 800 = $800: 1,600 x 80 %
    # / 800 = 1.6; 10,000 / 800 = 12.5.
    eth = position("ETH", 5, 2_000)
    t = account(800, (eth,), (weth_margin(1, 2_000),))
    assert cm.collateral_health(t, RULES, MM) == pytest.approx(800 / 825)
    # ETH -10 %: value 800 - 1,000 - 160 = -$360, requirement 9,000 x 8.25 % = $742.50
    assert cm.collateral_health(t, RULES, MM, {"ETH": 0.9}) == pytest.approx(-360 / 742.5)
    # No positions: 1 WETH ($1,600) with $1,000 of USDC debt: 1,280 / 1,000
    debt_only = account(600, (), (weth_margin(1, 2_000),))
    assert cm.collateral_health(debt_only, RULES, MM) == pytest.approx(1.28)
    # ... under a $500 debt threshold: 500 / 1,000
    low = cm.CollateralRules(20_000, 800_000, 500 * 10**6)
    assert cm.collateral_health(debt_only, low, MM) == pytest.approx(0.5)
    # No USDC debt (value over the counted collateral): the requirement only
    assert cm.collateral_health(account(2_000, (eth,), (weth_margin(1, 2_000),)), RULES,
                                MM) == pytest.approx(2_000 / 825)
    # ... and ETH -50 %: 800 counted, value 600 - 800 = -$200, debt $1,000: 640 / 1,000
    assert cm.collateral_health(debt_only, RULES, MM, {"ETH": 0.5}) == pytest.approx(0.64)
    # A $10 position (requirement $0.825) on $0.50 of value: 0.5 / 0.825, under the debt
    # ratio's 1,280 / 1,599.50
    tiny = account(0.5, (position("ETH", 0.005, 2_000),), (weth_margin(1, 2_000),))
    assert cm.collateral_health(tiny, RULES, MM) == pytest.approx(0.5 / 0.825)
    # Value exactly the counted collateral: no USDC debt, the requirement only
    even = account(1_600, (eth,), (weth_margin(1, 2_000),))
    assert cm.collateral_health(even, RULES, MM) == pytest.approx(1_600 / 825)
    # $0.50 of USDC debt over a $0.10 debt threshold: 0.2
    cents = cm.CollateralRules(20_000, 800_000, 100_000)
    assert cm.collateral_health(account(1_599.5, (), (weth_margin(1, 2_000),)), cents,
                                MM) == pytest.approx(0.2)
    # Neither positions nor debt, or no collateral at all: nothing can liquidate it
    assert math.isinf(cm.collateral_health(account(2_000, (), (weth_margin(1, 2_000),)),
                                           RULES, MM))
    assert math.isinf(cm.collateral_health(trader(800, eth), RULES, MM))


def test_collateral_liquidation_value_is_the_tokens_one_call_takes() -> None:
    # 0.5 of the 1 WETH liquidatable, at $2,000: $1,000 (before the ratio)
    c = cm.CurieCollateral("0xweth", "ETH", WAD, 18, 2_000 * WAD, 18, 800_000,
                           max_repaid=900 * 10**6, max_liquidatable=WAD // 2)
    assert cm.collateral_liquidation_value(c) == 1_000 * WAD
    # eight-decimal token, eight-decimal feed: 0.5 WBTC at $60,000
    wbtc = cm.CurieCollateral("0xwbtc", "BTC", 10**8, 8, 60_000 * 10**8, 8, 700_000,
                              max_liquidatable=5 * 10**7)
    assert cm.collateral_liquidation_value(wbtc) == 30_000 * WAD
    # The feed's latest under the TWAP (a crash): the tokens are worth that; above it, the
    # TWAP's (what the vault prices them at); 0, not read: the TWAP's.
    assert cm.collateral_liquidation_value(replace(c, spot_price=1_500 * WAD)) == 750 * WAD
    assert cm.collateral_liquidation_value(replace(c, spot_price=2_500 * WAD)) == 1_000 * WAD
    assert cm.collateral_liquidation_value(replace(c, spot_price=0)) == 1_000 * WAD
