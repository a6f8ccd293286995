"""Aave V3 account math, pure and vectorised.

`exact_account_data` mirrors GenericLogic.calculateUserAccountData step by step in integers —
rayMul, percentMul, wadDiv and every floor division in the same place, as the pool's revision
does them (v3.0's half-up rounding; v3.5's floor/ceil; v3.6's zero-threshold collateral; eMode
by reserve bits or by category bitmaps: see revisions.py) — so its health factor equals
`Pool.getUserAccountData` to the wei. It runs over all accounts at once
with numpy object arrays (Python integers: balances exceed 64 bits).

`FastHealth` is the float64 path for what-if work (repricing after a price move, shock grids):
the price-independent parts are precomputed once per snapshot, so a reprice is three
matrix-vector products. It keeps the weighted liquidation threshold unrounded, where Aave
floors it to whole basis points, so it can differ from the exact health factor by up to one
basis point of the threshold (≈ 1.2e-4 relative); decisions to send a liquidation are always
re-checked with the exact path or on chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from keeperd.protocols.aave_v3.book import MarketState, Positions
from keeperd.risk.health import drop_to_liquidation

RAY = 10**27
HALF_RAY = RAY // 2
WAD = 10**18
PERCENTAGE_FACTOR = 10_000
HALF_PERCENTAGE_FACTOR = 5_000
MAX_UINT256 = 2**256 - 1


def ray_mul(a: object, b: object) -> object:
    return (a * b + HALF_RAY) // RAY  # type: ignore[operator]


def percent_mul(value: int, percentage: int) -> int:
    return (value * percentage + HALF_PERCENTAGE_FACTOR) // PERCENTAGE_FACTOR


def wad_div(a: int, b: int) -> int:
    return (a * WAD + b // 2) // b


@dataclass(frozen=True)
class ExactAccountData:
    """Per-account results in Aave's units (base currency units, bps, wad)."""

    total_collateral_base: NDArray[np.object_]
    total_debt_base: NDArray[np.object_]
    ltv: NDArray[np.object_]
    liquidation_threshold: NDArray[np.object_]
    health_factor: NDArray[np.object_]  # wad; MAX_UINT256 where there is no debt
    collateral_base: NDArray[np.object_]  # (N, R) per reserve
    debt_base: NDArray[np.object_]  # (N, R)


def ray_mul_floor(a: object, b: object) -> object:
    return (a * b) // RAY  # type: ignore[operator]


def ray_mul_ceil(a: object, b: object) -> object:
    return -((-a * b) // RAY)  # type: ignore[operator]


@dataclass(frozen=True)
class EffectiveParams:
    """Per (account, reserve), what GenericLogic uses for that account's collateral there."""

    prices: NDArray[np.object_]  # oracle price, or v3.0's eMode price source
    ltv: NDArray[np.object_]  # the LTV that counts (0: skipped in the average)
    lt: NDArray[np.object_]  # the liquidation threshold that counts
    counts: NDArray[np.bool_]  # the collateral counts in the totals


def effective_params(market: MarketState, pos: Positions) -> EffectiveParams:
    """eMode applied where it applies, by the pool's revision: the reserve's category bits
    in v3.0/v3.1, the category's collateral (and LTV-zero) bitmaps since v3.2."""
    n, r = pos.a_scaled.shape
    reserve_ltv = np.array([x.ltv for x in market.reserves], dtype=object)
    reserve_lt = np.array([x.liquidation_threshold for x in market.reserves], dtype=object)
    prices = np.empty((n, r), dtype=object)
    prices[:] = np.array(market.prices, dtype=object)[None, :]
    ltv = np.empty((n, r), dtype=object)
    ltv[:] = reserve_ltv[None, :]
    lt = np.empty((n, r), dtype=object)
    lt[:] = reserve_lt[None, :]
    rules = market.rules
    for cat_id, cat in market.emode.items():
        users = pos.emode == cat_id
        if not users.any():
            continue
        covered = np.array([market.emode_covers(cat_id, c) for c in range(r)], dtype=bool)
        in_cat = users[:, None] & covered[None, :]
        ltv[in_cat] = cat.ltv
        lt[in_cat] = cat.liquidation_threshold
        if cat.ltvzero_bitmap:
            ltvzero = np.array([bool((cat.ltvzero_bitmap >> x.id) & 1) for x in market.reserves])
            ltv[in_cat & ltvzero[None, :]] = 0
        cat_price = market.emode_prices.get(cat_id, 0)
        if cat_price:
            prices[in_cat] = cat_price
    if rules.zero_lt_collateral:
        # v3.6: every enabled collateral counts; its threshold may be 0 (or eMode's).
        counts = pos.collateral_flag.copy()
    else:
        # Before v3.6 a reserve whose own threshold is 0 is skipped entirely, and a reserve
        # whose own LTV is 0 adds nothing to the average LTV.
        counts = pos.collateral_flag & (reserve_lt != 0)[None, :]
        ltv = np.where((reserve_ltv != 0)[None, :], ltv, 0)
    return EffectiveParams(prices, ltv, lt, counts)


def exact_account_data(market: MarketState, pos: Positions,
                       rows_per_pass: int = 8_192) -> ExactAccountData:
    """Aave's getUserAccountData for every account; integer temporaries are bounded by
    working `rows_per_pass` accounts at a time."""
    n = len(pos)
    if n <= rows_per_pass:
        return _exact_pass(market, pos)
    parts = [_exact_pass(market, pos.take(np.arange(lo, min(n, lo + rows_per_pass))))
             for lo in range(0, n, rows_per_pass)]
    return ExactAccountData(*(np.concatenate([getattr(p, f) for p in parts])
                              for f in ExactAccountData.__dataclass_fields__))


def _exact_pass(market: MarketState, pos: Positions) -> ExactAccountData:
    """One pass of `exact_account_data`. Only the cells an account uses are computed (about
    two of a market's reserves per account): the Python-integer arithmetic is the cost, a
    third of a 10,000-account scan's Python time when every cell was (#31)."""
    n, r = pos.a_scaled.shape
    units = np.array([10**x.decimals for x in market.reserves], dtype=object)
    income = np.array(market.income_index, dtype=object)
    debt_index = np.array(market.debt_index, dtype=object)
    p = effective_params(market, pos)
    v35 = market.rules.rounding_v35

    # v3.5: aToken balances round down, debt balances and debt in base currency round up.
    cr, cc = np.nonzero(p.counts)  # row-major: rows come sorted
    collateral_tokens = (ray_mul_floor if v35 else ray_mul)(pos.a_scaled[cr, cc], income[cc])
    collateral = (collateral_tokens * p.prices[cr, cc]) // units[cc]
    collateral_base = _object_zeros((n, r))
    collateral_base[cr, cc] = collateral

    dr, dc = np.nonzero(pos.borrowing_flag)
    scaled = pos.variable_scaled[dr, dc]
    variable = np.where(scaled != 0, (ray_mul_ceil if v35 else ray_mul)(  # type: ignore[call-overload]
        scaled, debt_index[dc]), 0)
    debt_tokens = variable + pos.stable_debt[dr, dc]
    debt_value = debt_tokens * p.prices[dr, dc]
    debt = -((-debt_value) // units[dc]) if v35 else debt_value // units[dc]
    debt_base = _object_zeros((n, r))
    debt_base[dr, dc] = debt

    total_collateral = _row_sums(n, cr, collateral)
    total_debt = _row_sums(n, dr, debt)
    ltv_sum = _row_sums(n, cr, collateral * p.ltv[cr, cc])
    lt_sum = _row_sums(n, cr, collateral * p.lt[cr, cc])

    has_collateral = total_collateral != 0
    some_collateral = np.where(has_collateral, total_collateral, 1)
    avg_ltv = np.where(has_collateral, ltv_sum // some_collateral, 0)
    avg_lt = np.where(has_collateral, lt_sum // some_collateral, 0)
    owes = np.flatnonzero(total_debt != 0)
    td = total_debt[owes]
    if v35:
        # No basis-point floor: the weighted sum itself, over the debt, then / 100_00.
        owed_health = (lt_sum[owes] * WAD + td // 2) // td // PERCENTAGE_FACTOR
    else:
        threshold_value = ((total_collateral[owes] * avg_lt[owes] + HALF_PERCENTAGE_FACTOR)
                           // PERCENTAGE_FACTOR)  # percent_mul
        owed_health = (threshold_value * WAD + td // 2) // td  # wad_div
    health = np.full(n, MAX_UINT256, dtype=object)
    health[owes] = owed_health
    return ExactAccountData(total_collateral, total_debt, avg_ltv, avg_lt, health,
                            collateral_base, debt_base)


def _object_zeros(shape: int | tuple[int, int]) -> NDArray[np.object_]:
    out = np.empty(shape, dtype=object)
    out.fill(0)
    return out


def _row_sums(n: int, rows: NDArray[np.intp], values: NDArray[np.object_]
              ) -> NDArray[np.object_]:
    """Per row, the sum of `values` (Python integers) whose `rows` (sorted) name it."""
    out = _object_zeros(n)
    if len(rows):
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        out[rows[starts]] = np.add.reduceat(values, starts)
    return out


@dataclass(frozen=True)
class FastView:
    health: NDArray[np.float64]  # inf where no debt
    collateral_usd: NDArray[np.float64]
    debt_usd: NDArray[np.float64]
    liquidation_threshold: NDArray[np.float64]  # weighted average, fraction
    main_column: NDArray[np.intp]  # -1 where no collateral
    drop_to_liquidation: NDArray[np.float64]


class FastHealth:
    """Price-independent parts of N accounts' health, ready for repeated repricing."""

    def __init__(self, market: MarketState, pos: Positions) -> None:
        n, r = pos.a_scaled.shape
        self.market = market
        units = np.array([10.0**x.decimals for x in market.reserves])[None, :]
        income = np.array([float(x) for x in market.income_index])[None, :] / RAY
        debt_index = np.array([float(x) for x in market.debt_index])[None, :] / RAY
        params = effective_params(market, pos)
        lt, counts = params.lt, params.counts
        a_scaled, variable_scaled, stable_debt = pos.float_balances
        collateral_units = np.where(counts, a_scaled * income / units, 0.0)
        variable = variable_scaled * debt_index
        debt_units = np.where(pos.borrowing_flag, (variable + stable_debt) / units, 0.0)
        self.collateral_units = np.ascontiguousarray(collateral_units)
        self.weighted_units = np.ascontiguousarray(
            collateral_units * lt.astype(np.float64) / PERCENTAGE_FACTOR)
        self.debt_units = np.ascontiguousarray(debt_units)
        # eMode price sources replace the oracle price for some (account, reserve) cells.
        self._override: list[tuple[NDArray[np.bool_], float]] = []
        reserve_cat = np.array([x.emode_category for x in market.reserves])
        for cat_id, price in market.emode_prices.items():
            if price:
                mask = (pos.emode == cat_id)[:, None] & (reserve_cat == cat_id)[None, :]
                self._override.append((mask, price / market.base_unit))
        self.shape = (n, r)

    def prices(self, overrides: Mapping[str, float] | None = None) -> NDArray[np.float64]:
        p = self.market.prices_usd()
        for symbol, usd in self.market.what_if(overrides or {}).items():
            p[self.market.column(symbol)] = usd
        return p

    def evaluate(self, overrides: Mapping[str, float] | None = None,
                 rows: NDArray[np.intp] | None = None) -> FastView:
        """Health at the book's prices, or with some assets repriced (symbol → USD)."""
        p = self.prices(overrides)
        cu, wu, du = self.collateral_units, self.weighted_units, self.debt_units
        if rows is not None:
            cu, wu, du = cu[rows], wu[rows], du[rows]
        if self._override:
            price_matrix = np.broadcast_to(p, cu.shape).copy()
            for mask, price in self._override:
                price_matrix[mask if rows is None else mask[rows]] = price
            coll_value = cu * price_matrix
            weighted_value = wu * price_matrix
            debt_value = du * price_matrix
            collateral, weighted, debt = (coll_value.sum(1), weighted_value.sum(1),
                                          debt_value.sum(1))
        else:
            collateral, weighted, debt = cu @ p, wu @ p, du @ p
            coll_value = cu * p
            weighted_value = wu * p
            debt_value = du * p
        with np.errstate(divide="ignore", invalid="ignore"):
            health = np.where(debt > 0, weighted / np.where(debt > 0, debt, 1.0), np.inf)
            lt = np.where(collateral > 0, weighted / np.where(collateral > 0, collateral, 1.0),
                          0.0)
        n = len(health)
        has_collateral = collateral > 0
        main = np.where(has_collateral, np.argmax(coll_value, axis=1), -1)
        idx = np.arange(n)
        safe_main = np.maximum(main, 0)
        cm = np.where(has_collateral, weighted_value[idx, safe_main], 0.0)
        dm = np.where(has_collateral, debt_value[idx, safe_main], 0.0)
        drop = drop_to_liquidation(cm, weighted - cm, dm, debt - dm)
        drop = np.where(debt > 0, drop, np.nan)
        return FastView(health, collateral, debt, lt, main, drop)
