"""Market depth models: how far a sale of seized collateral pushes the asset's price.

Each model maps the cumulative amount of the asset sold (in tokens) to a price multiplier
(1.0: no impact, 0.9: the price is 10 % lower), vectorised over any array shape.
- `ConstantProduct`: an x·y=k pool with `reserve_tokens` of the asset (a Uniswap V2 pool, or a
  Uniswap V3 pool's virtual reserves within its current range). Selling t tokens leaves the
  price at (x/(x+t))² of what it was.
- `DepthCurve`: piecewise-linear points (USD sold at today's price → price drop), as risk teams
  measure on order books; beyond the last point the last slope continues, capped at 99 %.
- `NoImpact`: an asset without a model (infinite depth); the report says which assets have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

MAX_DROP = 0.99


class DepthModel(Protocol):
    def multiplier(self, tokens_sold: NDArray[np.float64]) -> NDArray[np.float64]: ...

    def absorbable_tokens(self, max_drop: float) -> float:
        """Tokens that can be sold before the price falls by `max_drop`."""
        ...


@dataclass(frozen=True)
class NoImpact:
    def multiplier(self, tokens_sold: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.ones_like(tokens_sold, dtype=np.float64)

    def absorbable_tokens(self, max_drop: float) -> float:
        return float("inf")


@dataclass(frozen=True)
class ConstantProduct:
    reserve_tokens: float  # the asset's side of the pool (virtual reserves for Uniswap V3)

    def multiplier(self, tokens_sold: NDArray[np.float64]) -> NDArray[np.float64]:
        x = self.reserve_tokens
        if x <= 0:  # (no liquidity at the price: any sale takes it to nothing; 0/0 was NaN)
            return np.where(tokens_sold > 0, 0.0, 1.0)
        return (x / (x + np.maximum(tokens_sold, 0.0))) ** 2

    def absorbable_tokens(self, max_drop: float) -> float:
        return self.reserve_tokens * (1.0 / np.sqrt(1.0 - max_drop) - 1.0)

    @classmethod
    def from_uniswap_v3(cls, liquidity: int, sqrt_price_x96: int, asset_is_token0: bool,
                        asset_decimals: int) -> ConstantProduct:
        """Virtual reserves of the asset at the pool's current price: L/√P (token0) or L·√P
        (token1), in whole tokens."""
        sqrt_p = sqrt_price_x96 / 2**96  # √(token1 per token0), raw units
        raw = liquidity / sqrt_p if asset_is_token0 else liquidity * sqrt_p
        return cls(raw / 10**asset_decimals)


@dataclass(frozen=True)
class DepthCurve:
    usd: tuple[float, ...]  # increasing USD notional sold, at the price before the shock
    drop: tuple[float, ...]  # the price drop each causes (fractions, increasing)
    price_usd: float  # the asset's price the notional is measured at

    def __post_init__(self) -> None:
        if len(self.usd) != len(self.drop) or not self.usd:
            raise ValueError("a depth curve needs as many USD points as drops, at least one")
        if any(b <= a for a, b in zip(self.usd, self.usd[1:], strict=False)) or \
                any(b < a for a, b in zip(self.drop, self.drop[1:], strict=False)):
            raise ValueError("depth curve points must increase")

    def _drop(self, usd: NDArray[np.float64]) -> NDArray[np.float64]:
        xs = np.concatenate([[0.0], self.usd])
        ys = np.concatenate([[0.0], self.drop])
        out = np.interp(usd, xs, ys)
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        beyond = usd > xs[-1]
        out = np.where(beyond, ys[-1] + (usd - xs[-1]) * slope, out)
        return np.minimum(out, MAX_DROP)

    def multiplier(self, tokens_sold: NDArray[np.float64]) -> NDArray[np.float64]:
        return 1.0 - self._drop(np.maximum(tokens_sold, 0.0) * self.price_usd)

    def absorbable_tokens(self, max_drop: float) -> float:
        xs = np.concatenate([[0.0], self.usd])
        ys = np.concatenate([[0.0], self.drop])
        if max_drop <= ys[-1]:
            usd = float(np.interp(max_drop, ys, xs))
        else:
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            usd = float(xs[-1] + (max_drop - ys[-1]) / slope) if slope > 0 else float("inf")
        return usd / self.price_usd
