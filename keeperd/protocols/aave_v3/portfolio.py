"""An Aave V3 book as the cascade engine's portfolio (pure)."""

from __future__ import annotations

import numpy as np

from keeperd.protocols.aave_v3.book import AaveBook, MarketState
from keeperd.protocols.aave_v3.math import FastHealth
from keeperd.risk.cascade import Asset, Portfolio

PERCENTAGE_FACTOR = 10_000
CLOSE_FACTOR = 0.5  # Aave V3 DEFAULT_LIQUIDATION_CLOSE_FACTOR
FULL_CLOSE_BELOW = 0.95  # CLOSE_FACTOR_HF_THRESHOLD


def aave_portfolio(book: AaveBook) -> Portfolio:
    """USD values at the book's prices; eMode thresholds (and eMode price sources) applied as
    Aave applies them; the bonus of each position's main collateral from the reserve."""
    fast = FastHealth(book.market, book.positions)
    market = book.market
    prices = fast.prices()
    price_matrix = np.broadcast_to(prices, fast.collateral_units.shape)
    if fast._override:
        price_matrix = price_matrix.copy()
        for mask, price in fast._override:
            price_matrix[mask] = price
    bonus = np.array([(r.liquidation_bonus - PERCENTAGE_FACTOR) / PERCENTAGE_FACTOR
                      if r.liquidation_bonus else 0.0 for r in market.reserves])
    return Portfolio.build(
        market.symbols, prices, fast.collateral_units * price_matrix,
        fast.weighted_units * price_matrix, fast.debt_units * price_matrix, bonus,
        close_factor=CLOSE_FACTOR, full_close_below=FULL_CLOSE_BELOW,
        accounts=book.positions.accounts)


def aave_assets(market: MarketState) -> list[Asset]:
    prices = market.prices_usd()
    return [Asset(r.symbol, r.asset, r.decimals, float(prices[i]),
                  (r.liquidation_bonus - 10_000) / 10_000 if r.liquidation_bonus else 0.0,
                  market.price_links.get(r.symbol))
            for i, r in enumerate(market.reserves)]
