"""Morpho Blue's book at a block (pure): its markets (parameters, state, oracle price, borrow
rate) and every position, with health and debt computed exactly as Morpho's `_isHealthy` does,
interest accrued to the block's timestamp. Read by `adapter.py`, planned on by `liquidator.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from keeperd.protocols.morpho_blue import math as mm

# Loan tokens valued at 1 USD a unit (Morpho prices collateral in loan-token units; a market
# lending anything else has no USD scale here and is evaluated, alerted, but not priced).
USD_PEGGED = frozenset({"USDC", "USDT", "DAI", "USDS", "GHO", "PYUSD", "FRAX", "LUSD"})


def loan_usd(symbol: str) -> float:
    return 1.0 if symbol in USD_PEGGED else float("nan")


def market_key(market_id: str) -> str:
    """The breaker's name for a market's own oracle."""
    return f"morpho:{market_id.lower()}"


@dataclass(frozen=True)
class MarketInfo:
    id: str
    loan_token: str
    collateral_token: str
    oracle: str
    irm: str
    lltv: int
    loan_symbol: str
    collateral_symbol: str
    loan_decimals: int
    collateral_decimals: int

    @property
    def params(self) -> tuple[str, str, str, str, int]:
        return (self.loan_token, self.collateral_token, self.oracle, self.irm, self.lltv)

    @property
    def name(self) -> str:
        return f"{self.collateral_symbol}/{self.loan_symbol}"


@dataclass(frozen=True)
class MorphoPosition:
    market: MarketInfo
    account: str
    collateral: int
    borrow_shares: int


@dataclass(frozen=True)
class MorphoBook:
    block: int
    timestamp: int
    # market id -> (info, state, oracle price, borrow rate per second)
    markets: dict[str, tuple[MarketInfo, mm.MarketState, int, int]]
    positions: tuple[MorphoPosition, ...]

    def accrued(self, market_id: str, at: int | None = None) -> mm.MarketState:
        _, state, _, rate = self.markets[market_id]
        return state.accrued(rate, self.timestamp if at is None else at)

    def health(self, p: MorphoPosition, at: int | None = None) -> float:
        _, _, price, _ = self.markets[p.market.id]
        return mm.health_factor(p.collateral, p.borrow_shares, self.accrued(p.market.id, at),
                                price, p.market.lltv)

    def debt(self, p: MorphoPosition) -> int:
        return mm.borrowed(p.borrow_shares, self.accrued(p.market.id))

    def collateral_value(self, p: MorphoPosition) -> int:
        """In loan-token units, at the oracle's price."""
        _, _, price, _ = self.markets[p.market.id]
        return mm.mul_div_down(p.collateral, price, mm.ORACLE_PRICE_SCALE)
