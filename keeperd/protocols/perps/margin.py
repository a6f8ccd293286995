"""Perpetual margin math, pure: equity against maintenance margin, liquidation prices, funding.

One account holds positions (signed size in coins) and an account value (collateral plus
unrealised PnL). Maintenance margin per position is notional x the maintenance fraction of
the position's tier (tiers by notional where the venue has them). Health, as for lending, is
equity / maintenance margin: below 1 the venue liquidates.

Liquidation price of one position (the others held at their marks), for cross margin:
    p = mark - side x (equity - MM) / (|size| x (1 - side x mmf x k))
where k = 1 when the position's own maintenance margin moves with its price (Hyperliquid's
documented rule today: margin_available / size / (1 - l x side), l = 1 / maintenance
leverage), and k = 0 when it is held at its current value (the rule in force in 2023: it
reproduces the venue's own liquidationPx on the recorded account to 1e-8). Isolated margin:
the same with the position's own margin as equity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MarginTier:
    lower_notional: float  # the tier applies from this notional up
    max_leverage: float

    @property
    def maintenance_fraction(self) -> float:
        # Hyperliquid: maintenance margin is half the initial margin at max leverage.
        return 1.0 / (2.0 * self.max_leverage)


def maintenance_fraction(tiers: Sequence[MarginTier], notional: float) -> float:
    """The maintenance fraction of the highest tier the notional reaches."""
    fraction = tiers[0].maintenance_fraction
    for tier in tiers:
        if notional >= tier.lower_notional:
            fraction = tier.maintenance_fraction
    return fraction


def maintenance_deduction(tiers: Sequence[MarginTier], notional: float) -> float:
    """Hyperliquid: a tier's maintenance margin is notional x its rate less a deduction that
    keeps the margin continuous where tiers meet: each tier reached adds its lower bound x
    (its rate - the rate below it). Without it a $150M ETH position's maintenance reads ~36 %
    too high (3.33 % of all of it instead of 2 % of the first $100M and 3.33 % of the rest)."""
    ordered = sorted(tiers, key=lambda t: t.lower_notional)
    deduction = 0.0
    below = ordered[0].maintenance_fraction
    for tier in ordered[1:]:
        if notional < tier.lower_notional:
            break
        deduction += tier.lower_notional * (tier.maintenance_fraction - below)
        below = tier.maintenance_fraction
    return deduction


@dataclass(frozen=True)
class PerpPosition:
    coin: str
    size: float  # signed: > 0 long, < 0 short
    entry_price: float
    mark_price: float
    unrealized_pnl: float
    margin_mode: str  # "cross" | "isolated"
    leverage: float | None = None
    maintenance_fraction: float = 0.01
    maintenance_deduction: float = 0.0  # USD, the tier's (see `maintenance_deduction`)
    isolated_margin: float | None = None
    funding_rate_hourly: float | None = None  # fraction of notional per hour (longs pay > 0)
    venue_liquidation_price: float | None = None  # what the venue reports, when it does

    @property
    def side(self) -> int:
        return 1 if self.size > 0 else -1

    @property
    def notional(self) -> float:
        return abs(self.size) * self.mark_price

    @property
    def maintenance_margin(self) -> float:
        return self.notional * self.maintenance_fraction - self.maintenance_deduction

    @property
    def funding_per_hour(self) -> float | None:
        """USD this position pays per hour at the current rate (negative: it receives)."""
        if self.funding_rate_hourly is None:
            return None
        return self.side * self.notional * self.funding_rate_hourly


@dataclass(frozen=True)
class PerpAccount:
    venue: str
    account: str
    account_value: float  # cross equity: collateral + unrealised PnL of cross positions
    positions: tuple[PerpPosition, ...]
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def cross(self) -> tuple[PerpPosition, ...]:
        return tuple(p for p in self.positions if p.margin_mode == "cross")

    @property
    def maintenance_margin(self) -> float:
        return sum(p.maintenance_margin for p in self.cross)

    @property
    def notional(self) -> float:
        return sum(p.notional for p in self.positions)

    @property
    def health(self) -> float:
        """Equity / maintenance margin (inf without cross positions); below 1: liquidated.
        NaN where either does not read (a NaN, a negative maintenance): not a reading, and
        never "no risk" — a NaN mark read as ∞ resolved every alert on the coin."""
        mm, equity = self.maintenance_margin, self.account_value
        if math.isnan(mm) or math.isnan(equity) or mm < 0:
            return math.nan
        return equity / mm if mm > 0 else math.inf

    @property
    def margin_ratio(self) -> float:
        """Maintenance margin / equity, as venues display it (1.0: liquidation)."""
        if self.account_value <= 0:
            return math.inf
        return self.maintenance_margin / self.account_value

    def liquidation_price(self, position: PerpPosition, *,
                          maintenance_moves: bool = True) -> float | None:
        """The mark at which the account (cross) or the position (isolated) reaches
        maintenance, the other marks unchanged; None when no positive price does."""
        if position.size == 0:
            return None
        if position.margin_mode == "isolated":
            equity = (position.isolated_margin or 0.0) + position.unrealized_pnl
            available = equity - position.maintenance_margin
        else:
            available = self.account_value - self.maintenance_margin
        k = 1.0 if maintenance_moves else 0.0
        side = position.side
        denominator = abs(position.size) * (1.0 - side * position.maintenance_fraction * k)
        if denominator <= 0:
            return None
        price = position.mark_price - side * available / denominator
        return price if price > 0 else None

    def distance_to_liquidation(self, position: PerpPosition, *,
                                maintenance_moves: bool = True) -> float | None:
        """How far the mark must move against the position, as a fraction of the mark."""
        liq = self.liquidation_price(position, maintenance_moves=maintenance_moves)
        if liq is None:
            return None
        return abs(liq - position.mark_price) / position.mark_price

    @property
    def funding_per_hour(self) -> float | None:
        values = [p.funding_per_hour for p in self.positions]
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    def hours_until_funding_liquidates(self) -> float | None:
        """At today's funding rates and marks, the hours until funding alone eats the margin
        above maintenance (None: funding is neutral or pays the account)."""
        cost = self.funding_per_hour
        if cost is None or cost <= 0:
            return None
        return max(0.0, self.account_value - self.maintenance_margin) / cost

    def to_json(self, *, maintenance_moves: bool = True) -> dict[str, object]:
        """The element `keeperd scan --json` prints for a perp account."""
        return {
            "protocol": self.venue,
            "account": self.account,
            "health_factor": None if not math.isfinite(self.health) else self.health,
            "margin_ratio": None if math.isinf(self.margin_ratio) else self.margin_ratio,
            "account_value_usd": self.account_value,
            "maintenance_margin_usd": self.maintenance_margin,
            "notional_usd": self.notional,
            "collateral_usd": self.account_value,
            "debt_usd": self.notional,
            "funding_per_hour_usd": self.funding_per_hour,
            "hours_until_funding_liquidates": self.hours_until_funding_liquidates(),
            "positions": [{
                "coin": p.coin,
                "size": p.size,
                "side": "long" if p.size > 0 else "short",
                "entry_price": p.entry_price,
                "mark_price": p.mark_price,
                "notional_usd": p.notional,
                "unrealized_pnl": p.unrealized_pnl,
                "margin_mode": p.margin_mode,
                "maintenance_margin_usd": p.maintenance_margin,
                "liquidation_price": self.liquidation_price(
                    p, maintenance_moves=maintenance_moves),
                "venue_liquidation_price": p.venue_liquidation_price,
                "distance_to_liquidation": self.distance_to_liquidation(
                    p, maintenance_moves=maintenance_moves),
                "funding_per_hour_usd": p.funding_per_hour,
            } for p in self.positions],
            **self.extra,
        }


def liquidated_notional_by_move(accounts: Sequence[PerpAccount], coin: str,
                                moves: Sequence[float], *, maintenance_moves: bool = True,
                                partial: tuple[float, float] | None = None
                                ) -> dict[float, float]:
    """Open interest liquidated when `coin` moves by each fraction (negative: down), the other
    marks unchanged: every position of an account whose liquidation price the move crosses
    (cross margin takes the whole account; isolated only that position). `partial` =
    (notional, fraction): positions above that notional go that fraction at a time
    (Hyperliquid: $100k, 20 %, 30 s apart), so the first liquidation takes only that clip of
    them (its backstop, at 2/3 of maintenance, is not modelled)."""

    def clip(position: PerpPosition) -> float:
        if partial is not None and position.notional > partial[0]:
            return position.notional * partial[1]
        return position.notional

    out = {m: 0.0 for m in moves}
    for account in accounts:
        for p in account.positions:
            if p.coin != coin:
                continue
            liq = account.liquidation_price(p, maintenance_moves=maintenance_moves)
            if liq is None:
                continue
            move_to_liq = liq / p.mark_price - 1.0  # negative for longs, positive for shorts
            taken = (sum(clip(q) for q in account.positions) if p.margin_mode == "cross"
                     else clip(p))
            for m in moves:
                # Reaching the liquidation price against the position liquidates it: a long
                # falling to it, a short rising to it. (Told apart by the sign of the move, an
                # account exactly at maintenance, move 0, was liquidated by no move, and one
                # already under it only by moves in its favour.)
                if m <= move_to_liq if p.side > 0 else m >= move_to_liq:
                    out[m] += taken
    return out
