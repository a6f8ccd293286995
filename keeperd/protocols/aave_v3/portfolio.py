"""An Aave V3 book as the cascade engine's portfolio (pure), by the pool's revision rules."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from keeperd.protocols.aave_v3.book import AaveBook, MarketState, Positions
from keeperd.protocols.aave_v3.liquidation import (
    CLOSE_FACTOR_HF_THRESHOLD,
    DEFAULT_CLOSE_FACTOR,
    MIN_BASE_MAX_CLOSE_FACTOR_USD,
    WAD,
)
from keeperd.protocols.aave_v3.math import FastHealth
from keeperd.risk.cascade import Asset, Portfolio

PERCENTAGE_FACTOR = 10_000
CLOSE_FACTOR = DEFAULT_CLOSE_FACTOR / PERCENTAGE_FACTOR  # 0.5
FULL_CLOSE_BELOW = CLOSE_FACTOR_HF_THRESHOLD / WAD  # 0.95


def _bonus(bps: int) -> float:
    """10500 → 0.05; an unset bonus (0) → 0."""
    return (bps - PERCENTAGE_FACTOR) / PERCENTAGE_FACTOR if bps else 0.0


def aave_portfolio(book: AaveBook) -> Portfolio:
    """USD values at the book's prices; eMode thresholds (and eMode price sources) applied as
    Aave applies them; the liquidation rules of the pool's revision (liquidation.py is the
    exact reference): the eMode category's bonus where the category covers the main
    collateral, the reserve's elsewhere; v3.0's close factor (half, all at health <= 0.95),
    or v3.3+'s (all, unless the main collateral and the main debt are each worth >= $2,000
    and health > 0.95: half)."""
    fast = FastHealth(book.market, book.positions)
    market = book.market
    prices = fast.prices()
    price_matrix = np.broadcast_to(prices, fast.collateral_units.shape)
    if fast._override:
        price_matrix = price_matrix.copy()
        for mask, price in fast._override:
            price_matrix[mask] = price
    # v3.3+'s $2,000 is in base currency: the portfolio's unit (base currency / base_unit).
    partial_min = float(MIN_BASE_MAX_CLOSE_FACTOR_USD) if market.rules.close_factor_v33 else 0.0
    return Portfolio.build(
        market.symbols, prices, fast.collateral_units * price_matrix,
        fast.weighted_units * price_matrix, fast.debt_units * price_matrix,
        bonus_table(market, book.positions), close_factor=CLOSE_FACTOR,
        full_close_below=FULL_CLOSE_BELOW, partial_min_usd=partial_min,
        accounts=book.positions.accounts)


def bonus_table(market: MarketState, positions: Positions) -> NDArray[np.float64]:
    """(N, R) the bonus a liquidator gets seizing each reserve of each account: its eMode
    category's where the category covers the reserve (by the revision's membership rule),
    else the reserve's."""
    table = np.tile(np.array([_bonus(r.liquidation_bonus) for r in market.reserves]),
                    (len(positions), 1))
    for cat_id, cat in market.emode.items():
        users = positions.emode == cat_id
        if not users.any():
            continue
        covered = np.array([market.emode_covers(cat_id, c) for c in range(len(market.reserves))],
                           dtype=bool)
        table[users[:, None] & covered[None, :]] = _bonus(cat.liquidation_bonus)
    return table


def aave_assets(market: MarketState) -> list[Asset]:
    prices = market.prices_usd()
    return [Asset(r.symbol, r.asset, r.decimals, float(prices[i]), _bonus(r.liquidation_bonus),
                  market.price_links.get(r.symbol))
            for i, r in enumerate(market.reserves)]
