"""Morpho Blue's arithmetic (keeperd/protocols/morpho_blue/math.py) case by case, each worked
out by hand from MathLib, SharesMathLib and Morpho.liquidate: until these, no unit test reached
the module (the integration tests compare it with the chain), so `make mutate` found every one
of its 357 mutants untested (docs/mutation.md).

The markets here hold exactly 10**6 borrow shares per loan unit (total shares = total assets
x 10**6): with the virtual share and asset that is the exact share price 10**-6, so converting
shares to assets and back rounds nowhere and each figure below is plain arithmetic."""

from __future__ import annotations

import pytest

from keeperd.protocols.morpho_blue.math import (
    MarketState,
    MorphoLiquidation,
    after_liquidation,
    borrowed,
    health_factor,
    is_healthy,
    liquidation_incentive_factor,
    max_borrow,
    mul_div_down,
    mul_div_up,
    plan_liquidation,
    repaid_shares_for_seizure,
    to_assets_down,
    to_assets_up,
    to_shares_up,
    w_div_down,
    w_div_up,
    w_mul_down,
    w_taylor_compounded,
)

WAD = 10**18
PRICE = 2_000 * 10**36  # one collateral unit is worth 2,000 loan units (both 18 decimals)
LLTV_86 = 86 * WAD // 100
LLTV_50 = WAD // 2  # incentive 1 / (1 - 0.3 x 0.5) = 1.176, capped at 1.15


def market(borrow: int, supply: int | None = None) -> MarketState:
    return MarketState(supply if supply is not None else 2 * borrow, 7 * 10**24, borrow,
                       borrow * 10**6, 1_000, 5 * 10**16)


def test_rounding_helpers_round_the_way_their_names_say() -> None:
    assert mul_div_down(7, 3, 2) == 10 and mul_div_up(7, 3, 2) == 11
    assert mul_div_up(4, 3, 2) == 6  # exact: nothing to round up
    assert w_mul_down(3 * WAD, 5 * WAD // 2) == 15 * WAD // 2
    assert w_mul_down(WAD + 1, WAD // 2) == WAD // 2  # half a wei rounds down
    assert w_div_down(1, 3) == 333_333_333_333_333_333
    assert w_div_up(1, 3) == 333_333_333_333_333_334
    assert w_div_up(2, 4) == WAD // 2


def test_taylor_compounding_to_the_third_term() -> None:
    # x n = 0.1: 0.1 + 0.1^2 / 2 + 0.1^3 / 6 = 0.105166666666666666 (e^0.1 - 1 = 0.10517).
    assert w_taylor_compounded(10**15, 100) == 105_166_666_666_666_666
    assert w_taylor_compounded(0, 100) == 0


def test_shares_and_assets_convert_with_the_virtual_share_and_asset() -> None:
    # An empty market: 1 virtual asset for 10**6 virtual shares.
    assert to_assets_down(1, 0, 0) == 0 and to_assets_up(1, 0, 0) == 1
    assert to_assets_down(3 * 10**6, 0, 0) == 3 == to_assets_up(3 * 10**6, 0, 0)
    assert to_shares_up(1, 0, 0) == 10**6
    # 5 assets in a market of 2 assets and 10**6 shares: 5 x 2e6 / 3 = 3,333,333.3 -> up.
    assert to_shares_up(5, 2, 10**6) == 3_333_334
    assert to_assets_down(10**6, 2, 10**6 - 1) == 3 * 10**6 // (2 * 10**6 - 1)  # = 1


def test_interest_accrues_on_the_borrows_and_the_supply() -> None:
    m = market(1_000 * WAD, supply=1_500 * WAD)
    assert m.accrued(10**15, m.last_update) is m  # no time elapsed
    assert m.accrued(10**15, m.last_update - 5) is m  # a timestamp before the last update
    assert m.accrued(0, m.last_update + 100) is m  # no rate
    # 100 s at 0.001 / s: 1,000 x 0.105166666666666666 of interest.
    after = m.accrued(10**15, m.last_update + 100)
    interest = 105_166_666_666_666_666_000
    assert after == MarketState(1_500 * WAD + interest, m.total_supply_shares,
                                1_000 * WAD + interest, m.total_borrow_shares,
                                m.last_update + 100, m.fee)


def test_health_at_and_around_the_boundary() -> None:
    # 10 collateral at 2,000 with an LLTV of 86 %: 17,200 may be borrowed.
    assert max_borrow(10 * WAD, PRICE, LLTV_86) == 17_200 * WAD
    m = market(100_000 * WAD)
    at_limit = 17_200 * WAD * 10**6
    assert borrowed(at_limit, m) == 17_200 * WAD
    assert borrowed(at_limit + 1, m) == 17_200 * WAD + 1  # a part of a unit rounds up
    assert is_healthy(10 * WAD, at_limit, m, PRICE, LLTV_86)  # exactly at the limit
    assert not is_healthy(10 * WAD, at_limit + 1, m, PRICE, LLTV_86)
    assert is_healthy(0, 0, m, PRICE, LLTV_86)  # no debt, no collateral
    assert health_factor(10 * WAD, at_limit, m, PRICE, LLTV_86) == 1.0
    assert health_factor(10 * WAD, at_limit // 2, m, PRICE, LLTV_86) == 2.0
    assert health_factor(0, 0, m, PRICE, LLTV_86) == float("inf")


def test_liquidation_incentive_factor_and_its_cap() -> None:
    # 1 / (1 - 0.3 x (1 - 0.86)) = 1 / 0.958, rounded down.
    assert liquidation_incentive_factor(LLTV_86) == 1_043_841_336_116_910_229
    assert liquidation_incentive_factor(LLTV_50) == 115 * WAD // 100  # 1.176 capped
    assert liquidation_incentive_factor(WAD) == WAD


# A position owing 1,000 (10**27 shares) in a market of 3,000 borrowed; at the 1.15 incentive
# all the debt seizes 1,000 x 1.15 / 2,000 = 0.575 collateral; the 0.1 % edge buffer puts the
# line at 0.575575.
DEBT_SHARES = 1_000 * WAD * 10**6
M = market(3_000 * WAD, supply=5_000 * WAD)


def test_seizing_a_collateral_amount_repays_its_value_over_the_incentive_in_shares() -> None:
    # 0.5 collateral = 1,000 quoted; / 1.15 = 869.565217391304347826..., rounded up.
    shares = repaid_shares_for_seizure(WAD // 2, M, PRICE, LLTV_50)
    assert shares == 869_565_217_391_304_347_827 * 10**6


def test_enough_collateral_repays_all_the_shares() -> None:
    plan = plan_liquidation(WAD, DEBT_SHARES, M, PRICE, LLTV_50)
    assert plan == MorphoLiquidation(0, DEBT_SHARES, 575 * 10**15, 1_000 * WAD, False)
    # Exactly at the buffer's line still repays by shares; a wei under it does not.
    line = 575_575 * 10**12
    assert plan_liquidation(line, DEBT_SHARES, M, PRICE, LLTV_50).repaid_shares == DEBT_SHARES
    assert plan_liquidation(line - 1, DEBT_SHARES, M, PRICE, LLTV_50).repaid_shares == 0
    # Without the buffer, exactly the collateral needed is enough.
    no_buffer = plan_liquidation(575 * 10**15, DEBT_SHARES, M, PRICE, LLTV_50,
                                 edge_buffer_bps=0)
    assert no_buffer.repaid_shares == DEBT_SHARES


def test_too_little_collateral_seizes_all_of_it_as_bad_debt() -> None:
    plan = plan_liquidation(WAD // 2, DEBT_SHARES, M, PRICE, LLTV_50)
    assert plan == MorphoLiquidation(WAD // 2, 0, WAD // 2, 869_565_217_391_304_347_827, True)


def test_near_the_edge_it_seizes_what_the_shares_allow_less_the_buffer() -> None:
    # 0.5755 collateral, between 0.575 and the 0.575575 line: seize 0.575 x 0.999 = 0.574425,
    # worth 1,148.85, which repays 1,148.85 / 1.15 = 999 exactly.
    plan = plan_liquidation(5_755 * 10**14, DEBT_SHARES, M, PRICE, LLTV_50)
    assert plan == MorphoLiquidation(574_425 * 10**12, 0, 574_425 * 10**12, 999 * WAD, False)
    # A 1 % buffer: 0.575 x 0.99 = 0.56925, worth 1,138.5, repays 990.
    wide = plan_liquidation(5_755 * 10**14, DEBT_SHARES, M, PRICE, LLTV_50, edge_buffer_bps=100)
    assert wide == MorphoLiquidation(56_925 * 10**13, 0, 56_925 * 10**13, 990 * WAD, False)


def test_after_a_full_repayment_the_totals_lose_the_position() -> None:
    plan = plan_liquidation(WAD, DEBT_SHARES, M, PRICE, LLTV_50)
    after = after_liquidation(M, WAD, DEBT_SHARES, plan, PRICE, LLTV_50)
    assert after == MarketState(5_000 * WAD, M.total_supply_shares, 2_000 * WAD,
                                2_000 * WAD * 10**6, M.last_update, M.fee)


def test_after_a_bad_debt_the_rest_is_written_off_against_the_suppliers() -> None:
    # Repaid 869.565217391304347827; the other 130.434782608695652173 is bad debt: the
    # borrows fall to the other borrowers' 2,000, the supply by the bad debt.
    plan = plan_liquidation(WAD // 2, DEBT_SHARES, M, PRICE, LLTV_50)
    after = after_liquidation(M, WAD // 2, DEBT_SHARES, plan, PRICE, LLTV_50)
    assert after == MarketState(5_000 * WAD - 130_434_782_608_695_652_173,
                                M.total_supply_shares, 2_000 * WAD, 2_000 * WAD * 10**6,
                                M.last_update, M.fee)


def test_after_a_partial_seizure_the_position_keeps_its_collateral_and_rest_of_debt() -> None:
    plan = plan_liquidation(5_755 * 10**14, DEBT_SHARES, M, PRICE, LLTV_50)
    after = after_liquidation(M, 5_755 * 10**14, DEBT_SHARES, plan, PRICE, LLTV_50)
    # 999 repaid, nothing written off: 1 of the position's debt stays borrowed.
    assert after == MarketState(5_000 * WAD, M.total_supply_shares, 2_001 * WAD,
                                2_001 * WAD * 10**6, M.last_update, M.fee)


@pytest.mark.parametrize("collateral", [WAD // 2, 5_755 * 10**14, WAD])
def test_the_planned_repayment_is_what_the_totals_lose(collateral: int) -> None:
    plan = plan_liquidation(collateral, DEBT_SHARES, M, PRICE, LLTV_50)
    after = after_liquidation(M, collateral, DEBT_SHARES, plan, PRICE, LLTV_50)
    written_off = M.total_supply_assets - after.total_supply_assets
    assert M.total_borrow_assets - after.total_borrow_assets == (plan.expected_repaid
                                                                 + written_off)


# The survivors of the first `make mutate` with the cases above (docs/mutation.md), each
# killed here by its own case.

def test_one_second_of_interest_accrues() -> None:
    # 0.001 over 1 s: 0.001 + 0.0000005 + 0.000000000166666666 (the third term, rounded
    # down), on 1,000.
    m = market(1_000 * WAD)
    after = m.accrued(10**15, m.last_update + 1)
    assert after.total_borrow_assets == 1_000 * WAD + 1_000_500_166_666_666_000


def test_one_borrow_share_without_collateral_is_unhealthy() -> None:
    assert not is_healthy(0, 1, market(1_000 * WAD), PRICE, LLTV_86)


def test_the_buffer_line_rounds_down_in_collateral_units() -> None:
    # A collateral unit worth 10**18 loan units: all the debt seizes 1,150 units, the 0.1 %
    # buffer puts the line at 1,151.15, which counts as 1,151: 1,151 units repay all shares.
    plan = plan_liquidation(1_151, DEBT_SHARES, M, 10**54, LLTV_50)
    assert plan == MorphoLiquidation(0, DEBT_SHARES, 1_150, 1_000 * WAD, False)


def test_collateral_of_exactly_the_seizure_for_all_is_the_edge_not_bad_debt() -> None:
    # 0.575 collateral is just what all the debt seizes, under the buffer's line: the edge
    # path (seize 0.574425 for 999), not a bad debt.
    plan = plan_liquidation(575 * 10**15, DEBT_SHARES, M, PRICE, LLTV_50)
    assert plan == MorphoLiquidation(574_425 * 10**12, 0, 574_425 * 10**12, 999 * WAD, False)


def test_seizing_all_the_collateral_may_take_exactly_all_the_shares() -> None:
    # 14 loan units owed at a 1:1 price: all of it seizes floor(16.1) = 16 > 15 held, and the
    # 15 held take ceil(15 / 1.15) = 14 units, exactly all the shares: a bad-debt seizure.
    plan = plan_liquidation(15, 14 * 10**6, M, 10**36, LLTV_50)
    assert plan == MorphoLiquidation(15, 0, 15, 14, True)


def test_the_last_borrower_repaid_leaves_the_market_no_borrows() -> None:
    alone = market(1_000 * WAD, supply=5_000 * WAD)
    plan = plan_liquidation(WAD, DEBT_SHARES, alone, PRICE, LLTV_50)
    after = after_liquidation(alone, WAD, DEBT_SHARES, plan, PRICE, LLTV_50)
    assert (after.total_borrow_assets, after.total_borrow_shares) == (0, 0)


def test_one_wei_of_collateral_left_is_not_a_bad_debt() -> None:
    # The edge plan of 0.5755 above, on a position holding one wei more than it seizes.
    plan = MorphoLiquidation(574_425 * 10**12, 0, 574_425 * 10**12, 999 * WAD, False)
    after = after_liquidation(M, 574_425 * 10**12 + 1, DEBT_SHARES, plan, PRICE, LLTV_50)
    assert after.total_borrow_assets == 2_001 * WAD
    assert after.total_supply_assets == M.total_supply_assets


def test_a_sale_too_large_for_its_pool_seizes_at_most_its_cap_by_assets() -> None:
    # 0.25 collateral = 500 quoted; / 1.15 = 434.782608695652173913..., rounded up.
    capped = plan_liquidation(WAD, DEBT_SHARES, M, PRICE, LLTV_50, most_seized=WAD // 4)
    assert capped == MorphoLiquidation(WAD // 4, 0, WAD // 4, 434_782_608_695_652_173_914,
                                       False)
    # A bad debt capped is no bad debt: the rest of the collateral stays, as does the debt.
    assert plan_liquidation(WAD // 2, DEBT_SHARES, M, PRICE, LLTV_50,
                            most_seized=WAD // 4) == capped
    after = after_liquidation(M, WAD // 2, DEBT_SHARES, capped, PRICE, LLTV_50)
    assert after.total_supply_assets == M.total_supply_assets
    # A cap the plan is within changes nothing (0.575 seized of 1 repays by shares).
    whole = plan_liquidation(WAD, DEBT_SHARES, M, PRICE, LLTV_50)
    assert plan_liquidation(WAD, DEBT_SHARES, M, PRICE, LLTV_50,
                            most_seized=575 * 10**15) == whole
    assert plan_liquidation(WAD, DEBT_SHARES, M, PRICE, LLTV_50, most_seized=0) == whole
    # Within the edge buffer (10 bps) of the whole seizure: the whole, by its shares.
    assert plan_liquidation(WAD, DEBT_SHARES, M, PRICE, LLTV_50,
                            most_seized=575 * 10**15 * 9_990 // 10_000) == whole
    assert plan_liquidation(WAD, DEBT_SHARES, M, PRICE, LLTV_50,
                            most_seized=575 * 10**15 * 9_990 // 10_000 - 1) != whole
