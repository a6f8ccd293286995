"""Cases for the survivors of `make mutate` in aave_v3/math.py (docs/mutation.md): every field
of `exact_account_data` worked out by hand for v3.0 and v3.5 rounding (the suite compared the
health factor only), and the float what-if path (`FastHealth`) with an eMode price source,
a slice of rows, and the rows without collateral or with debt under $1.

Market: tests/unit/test_aave_revisions.py's (WETH $2,000, USDC and USDT $1, base 1e8)."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest

from keeperd.protocols.aave_v3.book import EModeCategory, MarketState, Positions
from keeperd.protocols.aave_v3.math import MAX_UINT256, RAY, FastHealth, exact_account_data
from tests.unit.test_aave_revisions import RESERVES, market

E18 = 10**18
E6 = 10**6
INDEX_1_1 = 11 * RAY // 10


def book(rows: list[tuple[int, dict[int, int], dict[int, int], dict[int, int]]]) -> Positions:
    """Accounts of (eMode, collateral, variable debt, stable debt) scaled balances by column."""
    n, r = len(rows), len(RESERVES)
    cflag, bflag = np.zeros((n, r), bool), np.zeros((n, r), bool)
    a, v, s = (np.zeros((n, r), dtype=object) for _ in range(3))
    for i, (_, collateral, variable, stable) in enumerate(rows):
        for col, amount in collateral.items():
            cflag[i, col], a[i, col] = True, amount
        for col, amount in variable.items():
            bflag[i, col], v[i, col] = True, amount
        for col, amount in stable.items():
            bflag[i, col], s[i, col] = True, amount
    return Positions(tuple(f"0xa{i}" for i in range(n)),
                     np.array([row[0] for row in rows], dtype=np.int64), cflag, bflag, a, v, s)


# a0: 1 WETH and 1,000,000,005 scaled USDT (income index 1.1) against 1,500,000,001 scaled
#     USDC (debt index 1.1) and 50 USDC of stable debt;
# a1: 500 USDC against 0.1 WETH + 1 wei; a2: 100 scaled USDC of debt (110 USDC), no
# collateral; a3: 1 WETH, no debt
EXACT_BOOK = [(0, {0: E18, 2: 1_000_000_005}, {1: 1_500_000_001}, {1: 50 * E6}),
              (0, {1: 500 * E6}, {0: 10**17 + 1}, {}),
              (0, {}, {1: 100 * E6}, {}),
              (0, {0: E18}, {}, {})]


@pytest.mark.parametrize("revision", [1, 9])
def test_every_field_of_the_exact_account_data(revision: int) -> None:
    v35 = revision >= 9
    m = market(revision, income_index=(RAY, RAY, INDEX_1_1, RAY),
               debt_index=(RAY, INDEX_1_1, RAY, RAY))
    got = exact_account_data(m, book(EXACT_BOOK))
    # a0: USDT 1,000,000,005 x 1.1 = 1,100,000,005.5: half up (v3.0) ...006, down (v3.5)
    # ...005; x $1 / 1e6 -> base 110,000,000,600 / 500. WETH: 2,000e8.
    usdt = 110_000_000_500 if v35 else 110_000_000_600
    # USDC debt 1,500,000,001 x 1.1 = 1,650,000,001.1: half up ...001, up ...002; + 50 USDC
    # stable = 1,700,000,001 / 002 -> base 170,000,000,100 / 200.
    usdc_debt = 170_000_000_200 if v35 else 170_000_000_100
    # a1: 0.1 WETH + 1 wei of debt = 20,000,000,000.0000002 base: down (v3.0), up (v3.5)
    weth_debt = 20_000_000_001 if v35 else 20_000_000_000
    collateral_base = [[2_000 * 10**8, 0, usdt, 0], [0, 500 * 10**8, 0, 0], [0] * 4,
                       [2_000 * 10**8, 0, 0, 0]]
    debt_base = [[0, usdc_debt, 0, 0], [weth_debt, 0, 0, 0], [0, 110 * 10**8, 0, 0], [0] * 4]
    assert got.collateral_base.tolist() == collateral_base
    assert got.debt_base.tolist() == debt_base
    assert got.total_collateral_base.tolist() == [2_000 * 10**8 + usdt, 500 * 10**8, 0,
                                                  2_000 * 10**8]
    assert got.total_debt_base.tolist() == [usdc_debt, weth_debt, 110 * 10**8, 0]
    # a0's averages: (2,000e8 x 80 % + usdt x 75 %) / total = 78.22..%, (x 82.5 %, 78 %)
    # = 80.90..%, floored to basis points; an account without collateral averages 0.
    assert got.ltv.tolist() == [7_822, 7_500, 0, 8_000]
    assert got.liquidation_threshold.tolist() == [8_090, 7_800, 0, 8_250]
    # v3.0: wadDiv(percentMul(total, avg threshold), debt); v3.5: wadDiv(weighted sum,
    # debt) / 10,000 (no basis-point floor). a1 v3.0: 39,000e6 / 20,000e6 = 1.95 exactly.
    health = ([1_475_294_118_205_536_331, 1_949_999_999_902_500_000, 0, MAX_UINT256] if v35
              else [1_475_235_296_102_802_767, 1_950_000_000_000_000_000, 0, MAX_UINT256])
    assert got.health_factor.tolist() == health
    # Python integers throughout (exact: no float, no int64 that could wrap)
    for f in fields(got):
        assert all(type(x) is int for x in getattr(got, f.name).ravel()), f.name


def test_a_market_without_reserves_owes_nothing() -> None:
    m = replace(market(1), reserves=(), income_index=(), debt_index=(), prices=())
    empty = np.zeros((2, 0), dtype=object)
    pos = Positions(("0xa0", "0xa1"), np.zeros(2, dtype=np.int64), np.zeros((2, 0), bool),
                    np.zeros((2, 0), bool), empty, empty, empty)
    got = exact_account_data(m, pos)
    assert got.total_collateral_base.tolist() == got.total_debt_base.tolist() == [0, 0]
    assert got.health_factor.tolist() == [MAX_UINT256] * 2
    for f in ("total_collateral_base", "total_debt_base"):
        assert all(type(x) is int for x in getattr(got, f)), f


# -- the float path --------------------------------------------------------------------------

def stables_emode(revision: int = 1, price: int = 101_000_000) -> MarketState:
    """v3.0: USDC and USDT in eMode 1 (threshold 97.5 %), whose price source says `price`."""
    reserves = (RESERVES[0], replace(RESERVES[1], emode_category=1),
                replace(RESERVES[2], emode_category=1), RESERVES[3])
    emode = {1: EModeCategory(1, 9_700, 9_750, 10_100, "0xsource", "stables")}
    return market(revision, reserves=reserves, emode=emode,
                  emode_prices={1: price} if price else {})


# a0 (eMode 1): 1,000 USDT against 990 USDC; a1: 1 WETH against 1,000 USDC; a2: 100 USDC of
# debt only; a3: 1 WETH against 0.2 WETH + 800 USDC; a4: 1 WETH against 0.5 USDC; a5: 0.5 USDT
FLOAT_BOOK = book([(1, {2: 1_000 * E6}, {1: 990 * E6}, {}), (0, {0: E18}, {1: 1_000 * E6}, {}),
                   (0, {}, {1: 100 * E6}, {}), (0, {0: E18}, {0: 2 * 10**17, 1: 800 * E6}, {}),
                   (0, {0: E18}, {1: E6 // 2}, {}), (0, {2: E6 // 2}, {}, {})])


def test_the_float_path_with_an_emode_price_source() -> None:
    view = FastHealth(stables_emode(), FLOAT_BOOK).evaluate()
    # a0 at $1.01: 1,010 of collateral (x 97.5 % = 984.75) against 999.90
    assert view.collateral_usd == pytest.approx([1_010, 2_000, 0, 2_000, 2_000, 0.5])
    assert view.debt_usd == pytest.approx([999.9, 1_000, 100, 1_200, 0.5, 0])
    assert view.health == pytest.approx([984.75 / 999.9, 1.65, 0, 1.375, 3_300, np.inf])
    assert view.liquidation_threshold == pytest.approx([0.975, 0.825, 0, 0.825, 0.825, 0.78])
    assert view.main_column.tolist() == [2, 0, -1, 0, 0, 2]
    # a1: WETH may fall until 1,650 (1 - d) = 1,000; a3: until 1,650 (1 - d) = 400 (1 - d)
    # + 800, 1 - d = 0.64; a4: 1 - 0.5 / 1,650; a0 and a2 are already under 1; a5 owes nothing
    drop = view.drop_to_liquidation
    assert drop[:5] == pytest.approx([0, 1 - 1_000 / 1_650, 0, 0.36, 1 - 0.5 / 1_650])
    assert np.isnan(drop[5])


def test_the_float_path_on_a_slice_of_rows_keeps_each_rows_prices() -> None:
    fast = FastHealth(stables_emode(), FLOAT_BOOK)
    view = fast.evaluate(rows=np.array([1, 0]))  # a1 (oracle prices), then a0 (eMode's)
    assert view.collateral_usd == pytest.approx([2_000, 1_010])
    assert view.health == pytest.approx([1.65, 984.75 / 999.9])


def test_the_float_path_without_a_price_source() -> None:
    view = FastHealth(stables_emode(price=0), FLOAT_BOOK).evaluate()
    assert view.collateral_usd == pytest.approx([1_000, 2_000, 0, 2_000, 2_000, 0.5])
    assert view.health[0] == pytest.approx(975 / 990)
    assert view.drop_to_liquidation[3] == pytest.approx(0.36)


def test_the_float_path_counts_stable_debt() -> None:
    # 1 WETH against 500 USDC variable + 300 stable: 1,650 / 800
    pos = book([(0, {0: E18}, {1: 500 * E6}, {1: 300 * E6})])
    view = FastHealth(market(1), pos).evaluate()
    assert view.debt_usd[0] == pytest.approx(800) and view.health[0] == pytest.approx(2.0625)


def test_the_exact_path_prices_an_emode_category_by_its_source() -> None:
    # v3.0, eMode 1 at $1.01: 1,000 USDT -> 1,010e8 base, 990 USDC of debt -> 999.9e8;
    # threshold 97.5 %: wadDiv(percentMul(1,010e8, 9,750), 999.9e8) = 0.98485 in wad
    got = exact_account_data(stables_emode(), book([(1, {2: 1_000 * E6}, {1: 990 * E6}, {})]))
    assert got.total_collateral_base.tolist() == [1_010 * 10**8]
    assert got.total_debt_base.tolist() == [99_990_000_000]
    assert got.health_factor.tolist() == [984_848_484_848_484_848]


def test_ltv_zero_inside_an_emode_and_a_reserve_without_ltv() -> None:
    # v3.6, category 3 (LTV 97 %) covering WETH and USDT, USDT's LTV 0 inside it (bit 2);
    # category 1 has no user. 1 WETH + 1,000 USDT: (2,000e8 x 9,700 + 0) / 3,000e8 = 6,466
    emode = {1: EModeCategory(1, 9_000, 9_300, 10_100, None, "unused", collateral_bitmap=0b10),
             3: EModeCategory(3, 9_700, 9_750, 10_100, None, "mode", collateral_bitmap=0b101,
                              ltvzero_bitmap=0b100)}
    got = exact_account_data(market(10, emode=emode),
                             book([(3, {0: E18, 2: 1_000 * E6}, {1: 100 * E6}, {})]))
    assert got.ltv.tolist() == [6_466]
    # v3.0: a reserve whose own LTV is 0 adds nothing to the average, even in an eMode whose
    # LTV is 97 %: USDT alone averages 0
    reserves = (RESERVES[0], replace(RESERVES[1], emode_category=1),
                replace(RESERVES[2], emode_category=1, ltv=0), RESERVES[3])
    m = market(1, reserves=reserves,
               emode={1: EModeCategory(1, 9_700, 9_750, 10_100, None, "stables")})
    got = exact_account_data(m, book([(1, {2: 1_000 * E6}, {1: 100 * E6}, {})]))
    assert got.ltv.tolist() == [0]
