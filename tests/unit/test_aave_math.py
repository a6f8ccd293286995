"""The Aave V3 math on synthetic books: exact integers against an independent scalar
re-implementation, float path against exact, and the liquidation-drop algebra."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keeperd.protocols.aave_v3.book import EModeCategory, MarketState, Positions, Reserve
from keeperd.protocols.aave_v3.math import (
    MAX_UINT256,
    RAY,
    FastHealth,
    exact_account_data,
)

RESERVES = (
    Reserve("0x01", "WETH", 0, 18, 8000, 8250, 10500, 0, "a0", "s0", "v0", True, False, False,
            True),
    Reserve("0x02", "WBTC", 1, 8, 7300, 7800, 10500, 0, "a1", "s1", "v1", True, False, False,
            True),
    Reserve("0x03", "USDC", 2, 6, 7700, 8000, 10450, 1, "a2", "s2", "v2", True, False, False,
            True),
    Reserve("0x04", "DAI", 3, 18, 6300, 7700, 10500, 1, "a3", "s3", "v3", True, False, False,
            True),
)
EMODE = {1: EModeCategory(1, 9300, 9500, 10100, None, "Stablecoins")}


def market(prices: tuple[int, ...], income: tuple[int, ...], debt: tuple[int, ...]) -> MarketState:
    return MarketState(1, RESERVES, income, debt, prices, 10**8, EMODE, {})


def scalar_health(m: MarketState, emode: int, coll: list[int], var: list[int],
                  cflag: list[bool], bflag: list[bool]) -> int:
    """GenericLogic.calculateUserAccountData written out as plainly as possible."""
    total_c = total_d = lt_sum = 0
    for i, r in enumerate(m.reserves):
        unit = 10**r.decimals
        price = m.prices[i]
        in_emode = emode != 0 and r.emode_category == emode
        lt = EMODE[emode].liquidation_threshold if in_emode else r.liquidation_threshold
        if cflag[i] and r.liquidation_threshold != 0:
            bal = (coll[i] * m.income_index[i] + RAY // 2) // RAY
            base = bal * price // unit
            total_c += base
            lt_sum += base * lt
        if bflag[i]:
            d = (var[i] * m.debt_index[i] + RAY // 2) // RAY if var[i] else 0
            total_d += price * d // unit
    if total_d == 0:
        return MAX_UINT256
    avg_lt = lt_sum // total_c if total_c else 0
    return ((total_c * avg_lt + 5000) // 10000 * 10**18 + total_d // 2) // total_d


accounts = st.lists(
    st.tuples(
        st.sampled_from([0, 1]),
        st.lists(st.integers(0, 10**30), min_size=4, max_size=4),
        st.lists(st.integers(0, 10**28), min_size=4, max_size=4),
        st.lists(st.booleans(), min_size=4, max_size=4),
        st.lists(st.booleans(), min_size=4, max_size=4),
    ),
    min_size=1, max_size=20)
indexes = st.tuples(*[st.integers(RAY, 2 * RAY)] * 4)
prices = st.tuples(*[st.integers(1, 10**14)] * 4)


def positions(rows: list) -> Positions:
    n = len(rows)
    obj = lambda k: np.array([r[k] for r in rows], dtype=object).reshape(n, 4)  # noqa: E731
    zeros = np.zeros((n, 4), dtype=object)
    return Positions(tuple(f"0x{i:040x}" for i in range(n)),
                     np.array([r[0] for r in rows], dtype=np.int64),
                     np.array([r[3] for r in rows], dtype=bool).reshape(n, 4),
                     np.array([r[4] for r in rows], dtype=bool).reshape(n, 4),
                     obj(1), obj(2), zeros)


@settings(max_examples=150, deadline=None)
@given(accounts, prices, indexes, indexes)
def test_exact_vectorised_equals_scalar_reference(rows, p, inc, dbt) -> None:
    m = market(p, inc, dbt)
    exact = exact_account_data(m, positions(rows))
    for i, (em, coll, var, cf, bf) in enumerate(rows):
        assert exact.health_factor[i] == scalar_health(m, em, coll, var, cf, bf)


@settings(max_examples=100, deadline=None)
@given(accounts, prices, indexes, indexes)
def test_float_path_agrees_with_exact(rows, p, inc, dbt) -> None:
    m = market(p, inc, dbt)
    pos = positions(rows)
    exact = exact_account_data(m, pos)
    fast = FastHealth(m, pos).evaluate()
    for i in range(len(rows)):
        hf = exact.health_factor[i]
        debt_base = int(exact.total_debt_base[i])
        coll_base = int(exact.total_collateral_base[i])
        _, coll, var, cflag, bflag = rows[i]
        used = [c for c, f in zip(coll, cflag, strict=True) if f and c] + \
            [v for v, f in zip(var, bflag, strict=True) if f and v]
        if hf == MAX_UINT256 or debt_base < 10**6 or coll_base < 10**6 or min(used) < 10**6:
            continue  # integer rounding dominates dust positions (a few token units)
        # Aave floors the weighted liquidation threshold to whole basis points (up to one
        # basis point of it), and floors each reserve's base value, percentMul and wadDiv
        # (each under 1e-6 relative once dust is excluded); the float path floors nothing.
        avg_lt = int(exact.liquidation_threshold[i])
        tolerance = (1.0 / avg_lt if avg_lt else 0.0) + 1e-5
        assert abs(fast.health[i] - hf / 1e18) <= tolerance * (hf / 1e18) + 1e-12


def test_drop_to_liquidation_lands_on_health_one() -> None:
    m = market((3000 * 10**8, 60000 * 10**8, 10**8, 10**8), (RAY,) * 4, (RAY,) * 4)
    rows = [
        (0, [10 * 10**18, 0, 0, 0], [0, 0, 20_000 * 10**6, 0], [True, False, False, False],
         [False, False, True, False]),
        (0, [5 * 10**18, 10**8, 0, 0], [0, 0, 50_000 * 10**6, 0], [True, True, False, False],
         [False, False, True, False]),
    ]
    fast = FastHealth(m, positions(rows))
    view = fast.evaluate()
    assert all(view.health > 1.0)
    for i, symbol in enumerate(("WETH", "WBTC")):
        col = m.column(symbol)
        main = int(view.main_column[i])
        assert main == col
        d = view.drop_to_liquidation[i]
        after = fast.evaluate({symbol: m.prices[main] / 10**8 * (1 - d)})
        assert abs(after.health[i] - 1.0) < 1e-9


def test_accounts_without_debt_have_infinite_health_and_no_drop() -> None:
    m = market((3000 * 10**8, 1, 1, 1), (RAY,) * 4, (RAY,) * 4)
    rows = [(0, [10**18, 0, 0, 0], [0, 0, 0, 0], [True, False, False, False], [False] * 4)]
    view = FastHealth(m, positions(rows)).evaluate()
    assert np.isinf(view.health[0]) and np.isnan(view.drop_to_liquidation[0])
    assert exact_account_data(m, positions(rows)).health_factor[0] == MAX_UINT256


def test_reserve_configuration_bitmap_decodes() -> None:
    config = 8000 | 8250 << 16 | 10500 << 32 | 18 << 48 | 1 << 56 | 1 << 58 | 1500 << 64 | 3 << 168
    r = Reserve.from_configuration("0x1", "WETH", 0, config, "a", "s", "v")
    assert (r.ltv, r.liquidation_threshold, r.liquidation_bonus, r.decimals) == (8000, 8250, 10500,
                                                                                18)
    assert r.active and r.borrowing_enabled and not r.frozen and not r.paused
    assert r.emode_category == 3


def test_the_float_balances_carried_through_take_and_merge_are_a_fresh_conversion() -> None:
    big = 2**80 + 12345  # (beyond float precision: the conversion rounds the same way)
    rows = [(i % 2, [big * (i + 1), i, 0, 0], [0, big + i, 0, 0], [True] * 4, [True] * 4)
            for i in range(6)]
    base = positions(rows)
    _ = base.float_balances  # converted once...
    update = positions([(1, [5, 6, 7, 8], [9, 10, 11, 12], [True] * 4, [True] * 4)])
    for derived in (base.take([4, 1, 3]), base.merge(update, drop={base.accounts[5]}),
                    base.merge(update).take([0, 5])):
        carried = derived.__dict__["float_balances"]  # ...and carried, not converted again
        fresh = (derived.a_scaled.astype(np.float64),
                 derived.variable_scaled.astype(np.float64),
                 derived.stable_debt.astype(np.float64))
        for a, b in zip(carried, fresh, strict=True):
            assert a.shape == b.shape and np.array_equal(a, b)


def test_a_merge_that_changes_nothing_keeps_the_positions_as_they_are() -> None:
    base = positions([(0, [1, 0, 0, 0], [0] * 4, [True] + [False] * 3, [False] * 4)] * 3)
    empty = positions([])
    assert base.merge(empty) is base
    assert base.merge(empty, drop={"0xnot-indexed"}) is base
    dropped = base.merge(empty, drop={base.accounts[1]})
    assert dropped.accounts == (base.accounts[0], base.accounts[2])


def test_positions_merge_replaces_adds_and_drops() -> None:
    base = positions([(0, [1, 0, 0, 0], [0] * 4, [True] + [False] * 3, [False] * 4)] * 3)
    update = positions([(1, [7, 0, 0, 0], [0] * 4, [True] + [False] * 3, [False] * 4)] * 2)
    # update's accounts are 0x..0 and 0x..1: both replace base's rows; base's 0x..2 is dropped.
    merged = base.merge(update, drop={base.accounts[2]})
    assert merged.accounts == update.accounts
    assert list(merged.emode) == [1, 1]
    assert merged.a_scaled[0, 0] == 7


def test_take_of_every_row_in_order_keeps_the_positions_and_any_other_takes_those_rows() -> None:
    rows = [(i % 2, [i + 1, 0, 0, 0], [0, 2 * i, 0, 0], [True] * 4, [i % 3 == 0] * 4)
            for i in range(5)]
    base = positions(rows)
    assert base.take(np.arange(5)) is base  # (a price every account depends on moved)
    for picked in ([4, 0, 2], [0, 1, 2, 3], [1, 0, 2, 3, 4], []):
        taken = base.take(np.array(picked, dtype=np.intp))
        assert taken is not base and taken.accounts == tuple(base.accounts[i] for i in picked)
        for name in ("emode", "collateral_flag", "borrowing_flag", "a_scaled",
                     "variable_scaled", "stable_debt"):
            assert np.array_equal(getattr(taken, name), getattr(base, name)[picked]), name
