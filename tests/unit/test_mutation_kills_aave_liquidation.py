"""Cases for the survivors of `make mutate` in aave_v3/liquidation.py (docs/mutation.md), each
worked out by hand from LiquidationLogic's and PercentageMath's rules (comments give the
arithmetic): the boundaries the pool draws with `>=` or `>`, the rounding of each revision,
eMode prices before v3.2, the pairs a plan skips, the fields of a plan and the order of
`plan_liquidations`. Where a boundary needs an exact amount the helpers are called directly.

Base currency: 8 decimals (1e8 = $1). WETH $2,000 (18 decimals), USDC and USDT $1 (6)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from keeperd.protocols.aave_v3.book import EModeCategory, MarketState, Positions
from keeperd.protocols.aave_v3.liquidation import (
    _capital_needed,
    _leaves_dust,
    _max_liquidatable_debt,
    _no_collateral_left,
    _price,
    _Seizure,
    _within_dust_floor,
    percent_div,
    percent_mul,
    plan_account,
    plan_liquidations,
)
from keeperd.protocols.aave_v3.math import RAY, exact_account_data
from keeperd.protocols.aave_v3.revisions import rules_for
from tests.unit.test_aave_revisions import RESERVES, market, plan, positions, usd

E18 = 10**18
E6 = 10**6
BASE = 10**8  # $1 in base currency
WAD = 10**18
USDC_COLLATERAL_BONUS = 10_450


def hf_of(m: MarketState, pos: Positions) -> int:
    return int(exact_account_data(m, pos).health_factor[0])


def book(rows: list[tuple[dict[int, int], dict[int, int]]],
         stable: dict[tuple[int, int], int] | None = None) -> Positions:
    """Accounts 0xa0, 0xa1, ... with (collateral, variable debt) scaled balances by column."""
    n, r = len(rows), len(RESERVES)
    cflag, bflag = np.zeros((n, r), bool), np.zeros((n, r), bool)
    a, v, s = (np.zeros((n, r), dtype=object) for _ in range(3))
    for i, (collateral, debt) in enumerate(rows):
        for col, amount in collateral.items():
            cflag[i, col], a[i, col] = True, amount
        for col, amount in debt.items():
            bflag[i, col], v[i, col] = True, amount
    for (i, col), amount in (stable or {}).items():
        bflag[i, col], s[i, col] = True, amount
    return Positions(tuple(f"0xa{i}" for i in range(n)), np.zeros(n, dtype=np.int64), cflag,
                     bflag, a, v, s)


# -- PercentageMath: half up ------------------------------------------------------------------

def test_percent_mul_and_div_round_half_up() -> None:
    # percentMul: (value x pct + 5,000) / 10,000. 4,999 x 0.01 % = 0.4999: 0; 0.5: 1.
    assert percent_mul(4_999, 1) == 0
    assert percent_mul(5_000, 1) == 1
    # percentDiv: (value x 10,000 + pct / 2) / pct. 1 / 200 % = 0.5: 1; 1 / 200.01 %: 0.
    assert percent_div(1, 20_000) == 1
    assert percent_div(1, 20_001) == 0


# -- the close factor ---------------------------------------------------------------------------

def test_v30_takes_all_of_the_reserve_debt_at_exactly_095() -> None:
    # v3.0: closeFactor = healthFactor > 0.95 ? 50 % : 100 %. At exactly 0.95, all of it.
    m = market(1)
    assert _max_liquidatable_debt(m, 1_000 * E6, BASE, E6, 0, 0, 95 * 10**16) == 1_000 * E6
    assert _max_liquidatable_debt(m, 1_000 * E6, BASE, E6, 0, 0, 95 * 10**16 + 1) == 500 * E6


def test_v33_cap_boundaries_are_the_pools() -> None:
    # v3.3: the 50 % of the total debt applies when collateral >= $2,000, debt >= $2,000 and
    # health > 0.95. 3,000 USDC of $5,000 of debt: capped at $2,500.
    m = market(10)
    hf = 96 * 10**16
    args = (BASE, E6)
    assert _max_liquidatable_debt(m, 3_000 * E6, *args, 2_000 * BASE, 5_000 * BASE,
                                  hf) == 2_500 * E6  # collateral exactly $2,000: capped
    # 2,000 USDC (exactly $2,000) of $3,000: capped at $1,500
    assert _max_liquidatable_debt(m, 2_000 * E6, *args, 9_000 * BASE, 3_000 * BASE,
                                  hf) == 1_500 * E6
    # health exactly 0.95: not above it, so all of it
    assert _max_liquidatable_debt(m, 3_000 * E6, *args, 9_000 * BASE, 5_000 * BASE,
                                  95 * 10**16) == 3_000 * E6
    # half the total is $2,500 + 1 unit (5,000e8 + 2, halved half up): 2,500e8 + 1 base
    # units x 1e6 / 1e8 = 2,500,000,000.01 USDC units, floored
    got = _max_liquidatable_debt(m, 3_000 * E6, *args, 9_000 * BASE, 5_000 * BASE + 2, hf)
    assert got == 2_500 * E6 and isinstance(got, int)


def test_v33_no_cap_when_the_reserve_debt_is_exactly_half_the_total() -> None:
    # 1 WETH + 1 wei of debt: ceil((1e18 + 1) x 2,000e8 / 1e18) = 2,000e8 + 1 base units, half
    # of a total of twice that: not *more* than half, so all of it, to the wei. (Converting
    # the half back would give (2,000e8 + 1) x 1e18 / 2,000e8 = 1e18 + 5e6 wei.)
    m = market(10)
    debt_base = 2_000 * BASE + 1
    got = _max_liquidatable_debt(m, E18 + 1, 2_000 * BASE, E18, 9_000 * BASE, 2 * debt_base,
                                 96 * 10**16)
    assert got == E18 + 1


# -- _calculateAvailableCollateralToLiquidate -------------------------------------------------

def weth_for_usdc(revision: int, balance: int, fee: int = 0) -> _Seizure:
    return _Seizure(rules_for(revision), 10_500, fee, balance, BASE, E6, 2_000 * BASE, E18)


def test_collateral_exactly_enough_covers_all_of_the_debt_asked() -> None:
    # v3.0: 1,000.000011 USDC -> base 1,000,000,011 x 5e8 = 500,000,005,500,000,000 wei of
    # WETH, x 1.05 = 525,000,005,775,000,000: exactly the balance. The pool caps only when
    # the collateral needed is *more* than the balance: all 1,000.000011 USDC are covered.
    # (Recomputed from the balance, 1,050,000,011 USDC of value / 1.05 = 1,000,000,010.)
    s = weth_for_usdc(1, 525_000_005_775_000_000)
    assert s.of(1_000_000_011) == (525_000_005_775_000_000, 1_000_000_011, 0)


def test_collateral_bound_debt_rounds_half_up_before_v35_and_up_since() -> None:
    # All 0.5 WETH ($1,000) for a larger debt: covered = 1,000 USDC / 1.05 = 952.380952380...
    # v3.0 percentDiv rounds half up: 952,380,952; v3.5+ rounds up: 952,380,953.
    assert weth_for_usdc(1, E18 // 2).of(5_000 * E6) == (E18 // 2, 952_380_952, 0)
    assert weth_for_usdc(9, E18 // 2).of(5_000 * E6) == (E18 // 2, 952_380_953, 0)


def test_collateral_bound_value_is_floored_before_the_bonus_is_taken_off() -> None:
    # USDT collateral for a debt priced $3: value of 1,000.000001 USDT = 333.333333667 of the
    # debt asset, floored to 333,333,333 units; / 1.05 = 317,460,317.46 -> v3.0 (half up)
    # 317,460,317. v3.6: 1,000.000009 USDT -> 333,333,336 units, / 1.05 = 317,460,319.05 ->
    # up: 317,460,320.
    s = _Seizure(rules_for(1), 10_500, 0, 1_000_000_001, 3 * BASE, E6, BASE, E6)
    assert s.of(10**12)[1] == 317_460_317
    s = _Seizure(rules_for(10), 10_500, 0, 1_000_000_009, 3 * BASE, E6, BASE, E6)
    assert s.of(10**12)[1] == 317_460_320


def test_protocol_fee_base_part_rounds_half_up_before_v37() -> None:
    # All 1,000.000009 USDT seized (5 % bonus, 50 % fee): base part 1,000,000,009 / 1.05 =
    # 952,380,960.95 -> v3.6 half up 952,380,961, bonus part 47,619,048, fee half of it
    # 23,809,524. v3.7: base part down 952,380,960, bonus 47,619,049, fee up 23,809,525.
    for revision, fee in ((10, 23_809_524), (11, 23_809_525)):
        s = _Seizure(rules_for(revision), 10_500, 5_000, 1_000_000_009, BASE, E6, BASE, E6)
        assert s.of(10**12)[0::2] == (1_000_000_009, fee)


# -- the dust rule (v3.3+) ----------------------------------------------------------------------

def test_exactly_1000_left_is_not_dust_one_wei_less_of_collateral_is() -> None:
    # LiquidationLogic: leftover (debt and collateral) x price / unit >= $1,000 passes.
    m = market(10)
    args = (2_000 * BASE, E18)
    # 3,000 USDC less 2,000 leaves $1,000; 1 WETH less 0.5 leaves $1,000
    assert not _leaves_dust(m, 3_000 * E6, 2_000 * E6, BASE, E6, E18, E18 // 2, *args)
    # 0.5 WETH less one wei: (5e17 - 1) x 2,000e8 / 1e18 floors to $999.99999999
    assert _leaves_dust(m, 3_000 * E6, 2_000 * E6, BASE, E6, E18, E18 // 2 + 1, *args)


def test_the_largest_amount_within_the_floor_can_be_one_unit() -> None:
    # Floor with its margin: $1,010 -> 1,010 USDC of debt kept. 1,010.000001 USDC of debt:
    # one unit may be repaid (10 WETH of collateral leaves plenty).
    m = market(10)
    assert _within_dust_floor(m, 1_010 * E6 + 1, weth_for_usdc(10, 10 * E18)) == 1
    # 0.510101010101010103 WETH: keeps 1,010 / 2,000 = 0.505 WETH + 1 % of the balance
    # (0.005101010101010102 rounded up): room of one wei, which buys nothing with a 5 % bonus
    s = weth_for_usdc(10, 510_101_010_101_010_103)
    assert _within_dust_floor(m, 5_000 * E6, s) is None


# -- what the keeper's balance must hold ---------------------------------------------------------

def test_capital_needed_boundaries() -> None:
    m = market(10)
    usdt = _Seizure(m.rules, USDC_COLLATERAL_BONUS, 0, 10**12, BASE, E6, BASE, E6)
    # health exactly 0.97 (0.95 + the band): the cap may be gone by inclusion -> all 7,800
    assert _capital_needed(m, usdt, 7_800 * E6, 3_900 * E6, 9_700 * BASE,
                           97 * 10**16) == 7_800 * E6
    far = 98 * 10**16
    # collateral $2,095 (< $2,100): the whole 2,050 USDC of the reserve
    assert _capital_needed(m, usdt, 2_050 * E6, 1_025 * E6, 2_095 * BASE, far) == 2_050 * E6
    # debt $2,090 (< $2,100), collateral $2,500: the whole 2,090
    assert _capital_needed(m, usdt, 2_090 * E6, 1_045 * E6, 2_500 * BASE, far) == 2_090 * E6
    # exactly $2,100 of collateral, and exactly $2,100 of debt: outside the band, the plan's
    assert _capital_needed(m, usdt, 3_000 * E6, 1_500 * E6, 2_100 * BASE, far) == 1_500 * E6
    assert _capital_needed(m, usdt, 2_100 * E6, 1_050 * E6, 5_000 * BASE, far) == 1_050 * E6
    # v3.0 above 0.97: the 50 % the plan repays
    old = market(1)
    assert _capital_needed(old, usdt, 1_600 * E6, 800 * E6, 1_900 * BASE, far) == 800 * E6


# -- no collateral left (v3.7: scaled units) --------------------------------------------------

def test_no_collateral_left_counts_what_the_fee_and_the_seizure_consume() -> None:
    m = market(11)
    # 100 USDT (index 1): 90 seized of which 10 fee consume 80 + 10: $10 left
    pos = positions({2: 100 * E6}, {1: 50 * E6})
    assert not _no_collateral_left(m, pos, 0, 2, 90 * E6, 10 * E6, BASE, E6, 100 * BASE)
    assert _no_collateral_left(m, pos, 0, 2, 100 * E6, 10 * E6, BASE, E6, 100 * BASE)
    # 1 WETH + 2,500,000 wei, all of it: worth 2,000e8 + 0.5 base units, floored like the
    # account's total collateral (2,000e8): nothing left
    pos = positions({0: E18 + 2_500_000}, {1: 50 * E6})
    assert _no_collateral_left(m, pos, 0, 0, E18 + 2_500_000, 0, 2_000 * BASE, E18,
                               2_000 * BASE)


# -- eMode prices before v3.2 --------------------------------------------------------------------

def stables_emode_market(revision: int) -> MarketState:
    """USDC and USDT in eMode category 1, whose price source says $1.01."""
    reserves = (RESERVES[0], replace(RESERVES[1], emode_category=1),
                replace(RESERVES[2], emode_category=1), RESERVES[3])
    emode = {1: EModeCategory(1, 9_700, 9_750, 10_100, "0xsource", "stables")}
    return market(revision, reserves=reserves, emode=emode, emode_prices={1: 101_000_000})


def test_emode_price_before_v32_applies_to_the_categorys_reserves_only() -> None:
    m = stables_emode_market(1)
    assert _price(m, 1, 1) == 101_000_000  # USDC, user in category 1
    assert _price(m, 0, 1) == 2_000 * BASE  # WETH is not in the category
    assert _price(m, 1, 0) == BASE  # user in no eMode
    assert _price(stables_emode_market(4), 1, 1) == BASE  # v3.2+: no eMode price source


def test_emode_priced_plan_before_v32() -> None:
    # v3.0, user in eMode 1: 1,000 USDT collateral against 990 USDC, both at $1.01; threshold
    # 97.5 %: health 1,000 x 0.975 / 990 = 0.985 > 0.95, so 50 %: 495 USDC, $499.95. Seized:
    # 495 x 1.01 / 1.01 = 495 USDT, x the eMode bonus 1.01 = 499.95 USDT.
    m = stables_emode_market(1)
    pos = positions({2: 1_000 * E6}, {1: 990 * E6}, emode=1)
    assert 95 * 10**16 < hf_of(m, pos) < WAD
    p = plan(m, pos)
    assert p is not None and (p.collateral, p.debt) == ("USDT", "USDC")
    assert p.debt_to_cover == 495 * E6 and p.collateral_seized == 499_950_000
    assert p.repaid_usd == pytest.approx(499.95)


# -- which pairs a plan considers ---------------------------------------------------------------

def test_health_exactly_one_is_not_liquidatable() -> None:
    # 10,000 USDT x 0.78 = 7,800 against 7,800 USDC: health exactly 1 (the pool wants < 1)
    m = market(10)
    pos = positions({2: 10_000 * E6}, {1: 7_800 * E6})
    assert hf_of(m, pos) == WAD
    assert plan(m, pos) is None


def test_a_paused_or_empty_debt_reserve_does_not_stop_the_next_one() -> None:
    m = market(10)
    # 1 WETH ($1,650 weighted) against 1,000 USDC + 800 USDT: health 0.917
    pos = positions({0: E18}, {1: 1_000 * E6, 2: 800 * E6})
    paused = market(10, reserves=(RESERVES[0], replace(RESERVES[1], paused=True),
                                  *RESERVES[2:]))
    p = plan(paused, pos)
    assert p is not None and p.debt == "USDT" and p.debt_to_cover == 800 * E6
    # the USDC flag set with nothing borrowed (a flag read before a repayment): skipped
    empty = positions({0: E18}, {1: 0, 2: 1_800 * E6})
    p = plan(m, empty)
    assert p is not None and p.debt == "USDT"
    # ... and when the only other debt's reserve is paused, no plan at all (not one of 0)
    paused_usdt = market(10, reserves=(*RESERVES[:2], replace(RESERVES[2], paused=True),
                                       RESERVES[3]))
    assert plan(paused_usdt, empty) is None


def test_empty_or_unlisted_collateral_does_not_stop_the_next_one() -> None:
    m = market(10)
    # USDT only (WETH, column 0, not collateral): 1,000 USDT x 0.78 against 900 USDC
    p = plan(m, positions({2: 1_000 * E6}, {1: 900 * E6}))
    assert p is not None and p.collateral == "USDT"
    # WETH flagged with a zero balance before it: skipped, USDT planned
    pos = positions({0: 0, 2: 1_000 * E6}, {1: 900 * E6})
    p = plan(m, pos)
    assert p is not None and p.collateral == "USDT"
    # ... and with USDT's reserve paused, nothing: no plan seizing 0
    paused = market(10, reserves=(*RESERVES[:2], replace(RESERVES[2], paused=True),
                                  RESERVES[3]))
    assert plan(paused, pos) is None


def test_collateral_without_a_bonus_is_skipped_and_one_bps_of_bonus_is_not() -> None:
    # $1,000 of USD collateral (x 0.78) against a WETH debt of 0.45 ($900): health 0.867
    def with_usdc_bonus(bonus: int) -> MarketState:
        return market(10, reserves=(RESERVES[0], replace(RESERVES[1], liquidation_bonus=bonus),
                                    *RESERVES[2:]))
    debt = {0: 45 * 10**16}
    both = positions({1: 500 * E6, 2: 500 * E6}, debt)
    p = plan(with_usdc_bonus(10_000), both)  # USDC (column 1) has no bonus: USDT
    assert p is not None and p.collateral == "USDT"
    assert plan(with_usdc_bonus(10_000), positions({1: 1_000 * E6}, debt)) is None
    p = plan(with_usdc_bonus(10_001), positions({1: 1_000 * E6}, debt))
    # 0.45 WETH = $900, x 1.0001 = 900.09 USDC
    assert p is not None and p.collateral == "USDC" and p.collateral_seized == 900_090_000


def test_zero_threshold_collateral_is_not_seized_before_v36() -> None:
    # v3.5: wstETH with threshold 0 (and a 5 % bonus) is not seizable; the USDT pair is.
    # 1,000 USDT x 0.78 / 900 USDC = 0.867: all 900 USDC for 940.5 USDT.
    reserves = (*RESERVES[:3], replace(RESERVES[3], liquidation_bonus=10_500))
    m = market(9, reserves=reserves)
    pos = positions({2: 1_000 * E6, 3: 2 * E18}, {1: 900 * E6})
    p = plan(m, pos)
    assert p is not None and p.collateral == "USDT" and p.collateral_seized == 940_500_000
    # ... and one in an earlier column (WETH, threshold 0) does not end the search
    reserves = (replace(RESERVES[0], liquidation_threshold=0), *RESERVES[1:])
    p = plan(market(9, reserves=reserves), positions({0: E18, 2: 1_000 * E6}, {1: 900 * E6}))
    assert p is not None and p.collateral == "USDT" and p.collateral_seized == 940_500_000


def test_equal_pairs_keep_the_first_in_reserve_order() -> None:
    # 1,000 USDC and 1,000 USDT against 0.8 WETH ($1,600): each pair seizes all of its $1,000
    # for the same 1,000 / 1.045 of WETH: the first (USDC) is kept.
    m = market(10)
    p = plan(m, positions({1: 1_000 * E6, 2: 1_000 * E6}, {0: 8 * 10**17}))
    assert p is not None and p.collateral == "USDC"


# -- balances, by revision ----------------------------------------------------------------------

def test_debt_balance_rounds_half_up_before_v35_and_up_since() -> None:
    # index 1.1: 1,500,000,001 scaled -> 1,650,000,001.1 USDC units; v3.0 rayMul half up:
    # 1,650,000,001; v3.5+ up: 1,650,000,002 (against 1 WETH: health just under 1)
    debt_index = (RAY, 11 * RAY // 10, RAY, RAY)
    pos = positions({0: E18}, {1: 1_500_000_001})
    for revision, debt in ((1, 1_650_000_001), (9, 1_650_000_002)):
        p = plan(market(revision, debt_index=debt_index), pos)
        assert p is not None and p.user_debt == debt


def test_collateral_balance_rounds_half_up_before_v35_and_down_since() -> None:
    # index 1.1: 1e18 + 5 scaled -> 1.1e18 + 5.5 wei; v3.0 half up 1.1e18 + 6, v3.5+ down
    # 1.1e18 + 5. Against 3,000 USDC (health 0.605) all of it is seized.
    income_index = (11 * RAY // 10, RAY, RAY, RAY)
    pos = positions({0: E18 + 5}, {1: 3_000 * E6})
    for revision, balance in ((1, 11 * 10**17 + 6), (9, 11 * 10**17 + 5)):
        p = plan(market(revision, income_index=income_index), pos)
        assert p is not None and p.collateral_seized + p.protocol_fee == balance


def test_stable_debt_adds_to_the_variable_and_marks_the_version() -> None:
    # v3.0: 1,000 USDC variable + 100 stable = 1,100 against 1 WETH: health 1.5 ... at $1,200
    # of WETH: 990 / 1,100 = 0.9 <= 0.95 -> all 1,100.
    m = market(1, prices=(1_200 * BASE, BASE, BASE, 2_400 * BASE))
    pos = book([({0: E18}, {1: 1_000 * E6})], stable={(0, 1): 100 * E6})
    p = plan_account(m, pos, exact_account_data(m, pos), 0)
    assert p is not None and p.user_debt == 1_100 * E6
    assert p.position_version == f"{1_000 * E6}+s/{E18}"
    pos = book([({0: E18}, {1: 1_100 * E6})])
    p = plan_account(m, pos, exact_account_data(m, pos), 0)
    assert p is not None and p.position_version == f"{1_100 * E6}/{E18}"


def test_a_plan_names_the_account_the_debt_asset_and_the_health() -> None:
    m = market(10)
    pos = positions({2: 1_000 * E6}, {1: 900 * E6})
    p = plan(m, pos)
    assert p is not None
    assert (p.account, p.debt_asset, p.collateral_asset) == ("0xuser", "0x02", "0x03")
    assert p.health_factor == hf_of(m, pos) == 1_000 * 78 * WAD // (900 * 100)


def test_virtual_balance_exactly_the_seized_amount_pays_the_underlying() -> None:
    # all 900 USDC for 900 x 1.045 = 940.5 USDT: a virtual balance of exactly 940.5 pays it
    pos = positions({2: 1_000 * E6}, {1: 900 * E6})
    for virtual, a_token in ((940_500_000, False), (940_499_999, True)):
        m = market(10, reserves=(*RESERVES[:2], replace(RESERVES[2], virtual_balance=virtual),
                                 RESERVES[3]))
        p = plan(m, pos)
        assert p is not None and p.collateral_seized == 940_500_000
        assert p.receive_a_token is a_token


# -- the $2,000 / $2,100 lines, one wei under -----------------------------------------------------

def test_collateral_one_wei_under_2000_is_under_2000() -> None:
    # v3.6: 1 WETH - 1 wei ($1,999.9999999998) + $800 USDT against 2,300 USDC: health
    # (1,650 + 624) / 2,300 = 0.989. The WETH reserve is under $2,000: no 50 % cap, all the
    # debt asked, more than the WETH pays for: all of it for its value floored (1,999,999,999)
    # / 1.05, rounded up: 1,904,761,904.
    m = market(10)
    pos = positions({0: E18 - 1, 2: usd(m, 2, 800)}, {1: 2_300 * E6})
    assert 95 * 10**16 < hf_of(m, pos) < WAD
    p = plan(m, pos)
    assert p is not None and p.collateral == "WETH"
    assert p.collateral_seized == E18 - 1 and p.debt_to_cover == 1_904_761_904


def test_a_capped_plan_under_2100_needs_the_whole_debt_in_capital() -> None:
    # v3.6: 1.05 WETH - 1 wei ($2,099.99...) + $300 USDT against 2,000 USDC: health
    # (1,732.5 + 234) / 2,000 = 0.983, above the band. Capped: half the total, 1,000 USDC,
    # for 0.525 WETH, leaving $1,000 of debt and $1,049.99 of WETH: no dust, sent as
    # type(uint256).max. Both reserves are under $2,100, so the cap may not hold at
    # inclusion: the capital is what all 2,000 USDC would take — the whole WETH, worth
    # 2,099,999,999 USDC units floored, / 1.05 rounded up = 2,000,000,000.
    m = market(10)
    pos = positions({0: 105 * 10**16 - 1, 2: usd(m, 2, 300)}, {1: 2_000 * E6})
    assert 97 * 10**16 < hf_of(m, pos) < WAD
    p = plan(m, pos)
    assert p is not None and p.collateral == "WETH"
    assert p.debt_to_cover == 1_000 * E6 and p.amount_to_send is None
    assert p.capital_needed == 2_000 * E6


def test_an_exact_amount_needs_only_itself_in_capital() -> None:
    # v3.6: $2,700 of WETH against 2,100 USDC + $200 USDT: health 2,227.5 / 2,300 = 0.968,
    # inside the band. Half the total (1,150) would leave $950 of USDC debt: the plan repays
    # 2,100 - 1,010 = 1,090 USDC, sent as that exact amount: the capital is that amount.
    m = market(10)
    pos = positions({0: usd(m, 0, 2_700)}, {1: 2_100 * E6, 2: usd(m, 2, 200)})
    assert 95 * 10**16 < hf_of(m, pos) <= 97 * 10**16
    p = plan(m, pos)
    assert p is not None and p.debt == "USDC"
    assert p.debt_to_cover == p.amount_to_send == p.capital_needed == 1_090 * E6


# -- plan_liquidations ---------------------------------------------------------------------------

def test_plan_liquidations_plans_the_unhealthy_best_first() -> None:
    # 0xa0: 1,000 USDT against 900 USDC (all of it, $40.50 of bonus); 0xa1 healthy;
    # 0xa2: 2,000 USDT against 1,800 USDC (all of it, $81).
    m = market(10)
    pos = book([({2: 1_000 * E6}, {1: 900 * E6}), ({2: 1_000 * E6}, {1: 100 * E6}),
                ({2: 2_000 * E6}, {1: 1_800 * E6})])
    exact = exact_account_data(m, pos)
    plans = plan_liquidations(m, pos, exact)
    assert [(p.account, p.debt_to_cover) for p in plans] == [("0xa2", 1_800 * E6),
                                                             ("0xa0", 900 * E6)]
    assert [p.account for p in plan_liquidations(m, pos, exact, rows=[0])] == ["0xa0"]
    assert plan_liquidations(m, pos, exact, rows=[1]) == []
