"""A Morpho Blue book as the cascade engine's portfolio (pure).

USD values come from each market's own oracle (collateral in loan units) with stablecoin loan
tokens at 1 USD; markets lending anything else are left out (their USD scale is unknown
here). Liquidations in Morpho repay the whole debt (close factor 1) and seize with the
market's incentive factor: bonus = LIF - 1.
"""

from __future__ import annotations

import numpy as np

from keeperd.protocols.morpho_blue import math as mm
from keeperd.protocols.morpho_blue.book import USD_PEGGED, MorphoBook
from keeperd.risk.cascade import Asset, Portfolio


def morpho_usd_prices(book: MorphoBook) -> dict[str, float]:
    """USD per whole token of each asset, as `describe_morpho` prices them (the first market
    of a collateral's rate, stablecoin loans at 1)."""
    return {a.symbol: a.price_usd for a in describe_morpho(book)[1]}


def describe_morpho(book: MorphoBook) -> tuple[Portfolio, list[Asset]]:
    markets = [(info, state, price, rate) for info, state, price, rate in book.markets.values()
               if info.loan_symbol in USD_PEGGED]
    assets: dict[str, Asset] = {}
    for info, _, price, _ in markets:
        loan_unit = 10**info.loan_decimals
        # one whole collateral token, in loan units, in USD (stable loan: 1 USD a unit)
        coll_usd = price * 10**info.collateral_decimals / mm.ORACLE_PRICE_SCALE / loan_unit
        incentive = mm.liquidation_incentive_factor(info.lltv) / mm.WAD - 1.0
        assets.setdefault(info.collateral_symbol, Asset(
            info.collateral_symbol, info.collateral_token, info.collateral_decimals, coll_usd,
            incentive))
        assets.setdefault(info.loan_symbol, Asset(info.loan_symbol, info.loan_token,
                                                  info.loan_decimals, 1.0, 0.0))
    symbols = sorted(assets)
    column = {s: i for i, s in enumerate(symbols)}
    ids = {info.id for info, _, _, _ in markets}
    rows = [p for p in book.positions if p.market.id in ids and p.borrow_shares > 0]
    n, a = len(rows), len(symbols)
    collateral = np.zeros((n, a))
    weighted = np.zeros((n, a))
    debt = np.zeros((n, a))
    for i, p in enumerate(rows):
        info = p.market
        unit = 10**info.loan_decimals
        value = book.collateral_value(p) / unit
        collateral[i, column[info.collateral_symbol]] = value
        weighted[i, column[info.collateral_symbol]] = value * info.lltv / mm.WAD
        debt[i, column[info.loan_symbol]] = book.debt(p) / unit
    bonus = [assets[s].bonus for s in symbols]
    portfolio = Portfolio.build(symbols, [assets[s].price_usd for s in symbols], collateral,
                                weighted, debt, bonus, close_factor=1.0,
                                full_close_below=1.0, accounts=[p.account for p in rows])
    return portfolio, [assets[s] for s in symbols]
