"""Planner edges from LiquidationLogic (#26 item 6), on hand-built books: a plan held under the
dust floor survives the price moves that may come before inclusion, and the capital a plan
sent as type(uint256).max must hold is the most the pool may take then — bounded by the
collateral, and on v3.0-v3.2 rules too. Every vector is worked out in the comments."""

from __future__ import annotations

from keeperd.protocols.aave_v3.liquidation import percent_mul
from keeperd.protocols.aave_v3.revisions import rules_for
from tests.unit.test_aave_revisions import market, plan, positions, reserve

E18 = 10**18
# WBTC with a 1 % bonus: its pair pays less than the WETH one, which is the edge under test.
TWO_COLLATERALS = (
    reserve("WETH", 0, 18, 8000, 8250, 10500),
    reserve("WBTC", 1, 8, 7300, 7800, 10100),
    reserve("USDC", 2, 6, 7500, 7800, 10450),
    reserve("DAI", 3, 18, 6300, 7700, 10500),
)
PRICES = (2000 * 10**8, 50_000 * 10**8, 10**8, 10**8)


def test_a_collateral_bound_plan_keeps_its_floor_after_the_collateral_price_falls() -> None:
    # 4.4 WETH ($8,800) and 0.22 WBTC ($11,000) against 12,000 USDC and 4,000 DAI: health
    # (7,260 + 8,580) / 16,000 = 0.99, both reserves over $2,000: the pool takes at most half
    # the total debt, $8,000 of USDC, which seizes $8,400 of WETH and leaves $400 of it:
    # MustNotLeaveDust. The WETH/USDC pair is held under the floor by its collateral: keep
    # $1,010 (0.505 WETH) plus 1 % of the reserve (0.044 WETH) — 0.549 WETH — so at most
    # 3.851 WETH goes: debtToCover floor(3.851 x 10,000 / 10,500 x 2,000) = 7,335.238095 USDC,
    # seizing floor(3.6676190475 x 1.05) = 3.850999999875 WETH (the $366.76 of bonus beats the
    # WBTC pair's $80 and the DAI pair's $200).
    m = market(10, reserves=TWO_COLLATERALS, prices=PRICES)
    pos = positions({0: 44 * E18 // 10, 1: 22_000_000}, {2: 12_000 * 10**6, 3: 4_000 * E18})
    p = plan(m, pos)
    assert p is not None and (p.collateral, p.debt) == ("WETH", "USDC")
    assert p.amount_to_send == p.debt_to_cover == 7_335_238_095
    assert p.collateral_seized + p.protocol_fee == 3_850_999_999_875_000_000
    # ETH 0.5 % lower at inclusion (one Chainlink deviation update, $1,990): the pool seizes
    # floor(7,335.238095 / 1,990) x 1.05 (half-up) = 3.870351758... WETH and what is left,
    # 0.52964824... WETH, is worth $1,054: still over the floor. (With only the floor's 1 %
    # kept, 0.505 WETH, it sent 7,419.047619 USDC, seized 3.914572... WETH at $1,990 and left
    # $966: MustNotLeaveDust.)
    eth = 1_990 * 10**8
    base = 10**8 * p.debt_to_cover * E18 // (eth * 10**6)
    left = 44 * E18 // 10 - percent_mul(base, 10_500)
    assert left * eth // E18 >= 1_000 * 10**8
    assert p.capital_needed == p.amount_to_send  # sent exact: the pool takes no more


def test_capital_for_max_is_bounded_by_the_collateral() -> None:
    # 0.75 WETH ($1,500) against 10,000 USDC: health 0.12, all the debt may go, but the
    # collateral pays for only ceil(1,500 x 10,000 / 10,500) = 1,428.571429 USDC of it. Sent
    # as type(uint256).max the pool takes that much whatever happens before inclusion: the
    # keeper needs that, not the whole 10,000 USDC.
    m = market(10)
    p = plan(m, positions({0: 75 * E18 // 100}, {1: 10_000 * 10**6}))
    assert p is not None and p.amount_to_send is None
    assert p.debt_to_cover == 1_428_571_429 < p.user_debt
    assert p.capital_needed == p.debt_to_cover


def test_v30_capital_reserves_the_whole_reserve_debt_near_095() -> None:
    # v3.0-v3.2 rules: 50 % of the reserve debt above health 0.95, all of it at or below.
    # 5 WETH ($10,000) against 8,600 USDC: health 8,250 / 8,600 = 0.959, within 0.02 of 0.95:
    # the plan repays 4,300 USDC, but the pool may take all 8,600 by inclusion.
    m = market(1)
    near = plan(m, positions({0: 5 * E18}, {1: 8_600 * 10**6}))
    assert near is not None and near.debt_to_cover == 4_300 * 10**6
    assert near.capital_needed == 8_600 * 10**6
    # Against 8,300 USDC (health 0.994) the half stays: 4,150 USDC.
    far = plan(m, positions({0: 5 * E18}, {1: 8_300 * 10**6}))
    assert far is not None and far.capital_needed == far.debt_to_cover == 4_150 * 10**6


def test_the_price_oracle_sentinel_is_gone_from_v37() -> None:
    # On an L2 pool v3.0-v3.6 let only health < 0.95 be liquidated while the sequencer is down
    # or in its grace period; v3.7 has no sentinel (the executor's sequencer pause reads this).
    assert rules_for(1).price_sentinel and rules_for(10).price_sentinel
    assert not rules_for(11).price_sentinel and not rules_for(12).price_sentinel
