"""Aave v3.7 (POOL_REVISION 11) against v3.6, on hand-built books: the three rounding sites of
the seized collateral, each against the liquidator, and "no collateral left" decided in scaled
aToken units. Every vector is worked out in the comments (../shared/AAVE-V3.7.md)."""

from __future__ import annotations

from dataclasses import replace

from keeperd.protocols.aave_v3.math import RAY
from keeperd.protocols.aave_v3.revisions import rules_for
from tests.unit.test_aave_revisions import PRICES, RESERVES, market, plan, positions

E18 = 10**18
WITH_FEE = (replace(RESERVES[0], liquidation_protocol_fee=1_000), *RESERVES[1:])  # WETH: 10 %


def test_revision_11_is_v37_and_known() -> None:
    rules = rules_for(11)
    assert rules.known and rules.release == "v3.7" and rules.rounding_v37
    assert rules.zero_lt_collateral and rules.close_factor_v33  # (everything of v3.6 stays)
    assert not rules_for(10).rounding_v37
    assert not rules_for(12).known and rules_for(12).rounding_v37  # nearest known: v3.7's


def test_site_1_the_total_collateral_rounds_down() -> None:
    # WETH at 2,000.00000001 (200000000001 in 8 decimals); 5 WETH against 9,500.000001 USDC:
    # HF 0.868, all of the debt. base = 1e8 x 9500000001 x 1e18 // (200000000001 x 1e6)
    # = 4750000000476249999; x 10500 / 10000 = 4987500000500062498.95:
    # v3.6 half-up ...499, v3.7 floor ...498 (no protocol fee on this reserve).
    prices = (200_000_000_001, *PRICES[1:])
    pos = positions({0: 5 * E18}, {1: 9_500_000_001})
    v36, v37 = plan(market(10, prices=prices), pos), plan(market(11, prices=prices), pos)
    assert v36 is not None and v37 is not None
    assert v36.collateral_seized == 4_987_500_000_500_062_499
    assert v37.collateral_seized == 4_987_500_000_500_062_498
    assert v36.debt_to_cover == v37.debt_to_cover == 9_500_000_001


def test_sites_2_and_3_the_bonus_part_up_and_the_fee_up() -> None:
    # B = 1e18 + 21 wei of WETH against 1,990 USDC: the bonus would take more than B, so all
    # of B goes (the debt for it rounds up in both: 1904761905). Site 2: the base part of B,
    # B x 10000 / 10500 = 952380952380952400.95 -> v3.6 half-up ...401, v3.7 floor ...400;
    # the bonus part 47619047619047620 (v3.6) / ...621 (v3.7). Site 3: the 10 % fee of it,
    # 4761904761904762.0 -> 762 (v3.6 half-up) / 4761904761904762.1 -> 763 (v3.7 ceil).
    m36, m37 = market(10, reserves=WITH_FEE), market(11, reserves=WITH_FEE)
    pos = positions({0: E18 + 21}, {1: 1_990 * 10**6})
    v36, v37 = plan(m36, pos), plan(m37, pos)
    assert v36 is not None and v37 is not None
    assert (v36.protocol_fee, v37.protocol_fee) == (4_761_904_761_904_762, 4_761_904_761_904_763)
    assert v36.collateral_seized == E18 + 21 - 4_761_904_761_904_762
    assert v37.collateral_seized == E18 + 21 - 4_761_904_761_904_763
    assert v36.debt_to_cover == v37.debt_to_cover == 1_904_761_905


def test_site_3_alone_the_fee_rounds_up() -> None:
    # B = 1e18 + 31: the base part 952380952380952410.47 rounds to ...410 both ways, the bonus
    # part is 47619047619047621 in both, and its 10 % is 4761904761904762.1: v3.6 half-up
    # ...762, v3.7 ceil ...763.
    pos = positions({0: E18 + 31}, {1: 1_990 * 10**6})
    v36 = plan(market(10, reserves=WITH_FEE), pos)
    v37 = plan(market(11, reserves=WITH_FEE), pos)
    assert v36 is not None and v37 is not None
    assert (v36.protocol_fee, v37.protocol_fee) == (4_761_904_761_904_762, 4_761_904_761_904_763)


def test_a_few_wei_left_over_count_as_no_collateral_left() -> None:
    # 1e18 scaled WETH at a liquidity index of 3 (3 WETH, $6,000, the only collateral) against
    # 2857142857142857142 wei of WETH debt and 100 USDC. All the WETH debt: seized
    # floor(2857142857142857142 x 1.05) = 2999999999999999999 — one wei is left. Its fee part:
    # base floor(...999 / 1.05) = 2857142857142857141, bonus 142857142857142858, fee
    # ceil(14285714285714285.8) = 14285714285714286; to the liquidator 2985714285714285713.
    # v3.7, in scaled units: ceil(2985714285714285713 / 3) + ceil(14285714285714286 / 3)
    # = 995238095238095238 + 4761904761904762 = 1e18: the whole scaled balance, worth the
    # whole $6,000: nothing left, the USDC debt is burnt as bad debt. v3.6 values what it
    # seizes: floor(2999999999999999999 x 2000e8 / 1e18) = 599999999999 < 600000000000: the
    # wei is left, nothing burnt.
    idx = (3 * RAY, RAY, RAY, RAY)
    pos = positions({0: E18}, {0: 2_857_142_857_142_857_142, 1: 100 * 10**6})
    v36 = plan(market(10, reserves=WITH_FEE, income_index=idx), pos)
    v37 = plan(market(11, reserves=WITH_FEE, income_index=idx), pos)
    assert v36 is not None and v37 is not None and v37.debt == "WETH"
    assert v37.collateral_seized + v37.protocol_fee == 3 * E18 - 1
    assert v37.protocol_fee == 14_285_714_285_714_286
    assert (v36.bad_debt_assets, v37.bad_debt_assets) == (0, 1)


def test_own_capital_reserves_the_whole_debt_when_the_cap_may_not_hold_at_inclusion() -> None:
    # v3.3+: $10,000 of WETH against 6,590 USDC and 2,000 USDT: HF 8,250 / 8,590 = 0.960 >
    # 0.95 and both reserves over $2,000, so the pool takes at most half the total debt
    # ($4,295) of USDC — at this block. Sent as type(uint256).max, the pool takes all 6,590
    # if health slips under 0.95 before inclusion: the keeper must hold that, not 4,295.
    m = market(10)
    from tests.unit.test_aave_revisions import usd

    near = positions({0: usd(m, 0, 10_000)}, {1: usd(m, 1, 6_590), 2: usd(m, 2, 2_000)})
    p = plan(m, near)
    assert p is not None and p.debt == "USDC" and p.amount_to_send is None
    assert p.debt_to_cover < p.user_debt
    assert p.capital_needed == p.user_debt
    # Far from 0.95 and from $2,000: the plan's own amount is the most it can take.
    far = positions({0: usd(m, 0, 100_000)}, {1: usd(m, 1, 62_000), 2: usd(m, 2, 22_000)})
    q = plan(m, far)
    assert q is not None and q.debt_to_cover < q.user_debt
    assert q.capital_needed == q.debt_to_cover
