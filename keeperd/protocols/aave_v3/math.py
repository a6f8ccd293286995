"""Aave V3 account math, pure and vectorised.

`exact_account_data` mirrors GenericLogic.calculateUserAccountData (Aave V3.0) step by step in
integers — rayMul, percentMul, wadDiv and every floor division in the same place — so its
health factor equals `Pool.getUserAccountData` to the wei. It runs over all accounts at once
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


def _effective_params(market: MarketState, pos: Positions) -> tuple[NDArray[np.object_], ...]:
    """Per (account, reserve): price, LTV and threshold, with eMode applied where it applies."""
    n, r = pos.a_scaled.shape
    reserve_ltv = np.array([x.ltv for x in market.reserves], dtype=object)
    reserve_lt = np.array([x.liquidation_threshold for x in market.reserves], dtype=object)
    reserve_cat = np.array([x.emode_category for x in market.reserves], dtype=np.int64)
    prices = np.empty((n, r), dtype=object)
    prices[:] = np.array(market.prices, dtype=object)[None, :]
    ltv = np.empty((n, r), dtype=object)
    ltv[:] = reserve_ltv[None, :]
    lt = np.empty((n, r), dtype=object)
    lt[:] = reserve_lt[None, :]
    for cat_id, cat in market.emode.items():
        users = pos.emode == cat_id
        if not users.any():
            continue
        in_cat = users[:, None] & (reserve_cat[None, :] == cat_id)
        ltv[in_cat] = cat.ltv
        lt[in_cat] = cat.liquidation_threshold
        cat_price = market.emode_prices.get(cat_id, 0)
        if cat_price:
            prices[in_cat] = cat_price
    return prices, ltv, lt, reserve_ltv, reserve_lt


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
    n, r = pos.a_scaled.shape
    units = np.array([10**x.decimals for x in market.reserves], dtype=object)[None, :]
    income = np.array(market.income_index, dtype=object)[None, :]
    debt_index = np.array(market.debt_index, dtype=object)[None, :]
    prices, ltv, lt, reserve_ltv, reserve_lt = _effective_params(market, pos)

    counts_as_collateral = pos.collateral_flag & (reserve_lt != 0)[None, :]
    collateral_tokens = ray_mul(pos.a_scaled, income)
    collateral_base = np.where(counts_as_collateral, (collateral_tokens * prices) // units, 0)

    variable = np.where(pos.variable_scaled != 0,
                        ray_mul(pos.variable_scaled, debt_index), 0)  # type: ignore[call-overload]
    debt_tokens = variable + pos.stable_debt
    debt_base = np.where(pos.borrowing_flag, (debt_tokens * prices) // units, 0)

    # The LTV sum skips collateral whose *reserve* LTV is 0, as GenericLogic does.
    ltv_weight = np.where((reserve_ltv != 0)[None, :], ltv, 0)
    total_collateral = collateral_base.sum(axis=1) if r else np.zeros(n, dtype=object)
    total_debt = debt_base.sum(axis=1) if r else np.zeros(n, dtype=object)
    ltv_sum = (collateral_base * ltv_weight).sum(axis=1)
    lt_sum = (collateral_base * lt).sum(axis=1)

    avg_ltv = np.empty(n, dtype=object)
    avg_lt = np.empty(n, dtype=object)
    health = np.empty(n, dtype=object)
    for i in range(n):
        tc, td = int(total_collateral[i]), int(total_debt[i])
        avg_ltv[i] = int(ltv_sum[i]) // tc if tc else 0
        avg_lt[i] = int(lt_sum[i]) // tc if tc else 0
        health[i] = MAX_UINT256 if td == 0 else wad_div(percent_mul(tc, avg_lt[i]), td)
    return ExactAccountData(total_collateral, total_debt, avg_ltv, avg_lt, health,
                            collateral_base, debt_base)


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
        _, _, lt, _, reserve_lt = _effective_params(market, pos)
        counts = pos.collateral_flag & (reserve_lt != 0)[None, :]
        a_scaled = pos.a_scaled.astype(np.float64)
        collateral_units = np.where(counts, a_scaled * income / units, 0.0)
        variable = pos.variable_scaled.astype(np.float64) * debt_index
        debt_units = np.where(pos.borrowing_flag,
                              (variable + pos.stable_debt.astype(np.float64)) / units, 0.0)
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
        for symbol, usd in (overrides or {}).items():
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
