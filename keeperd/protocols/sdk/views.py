"""What every protocol's evaluation produces: a columnar health view and display rows.

The contract that produces them is `plugin.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class AccountRow:
    """One account's health as shown by `keeperd scan` (JSON keys are these field names)."""

    protocol: str
    account: str
    health_factor: float | None  # None: no debt
    collateral_usd: float
    debt_usd: float
    liquidation_threshold: float | None  # weighted, as a fraction (0.825)
    main_collateral: str | None  # a perp account: the asset of the position nearest it
    drop_to_liquidation: float | None  # fraction of the main collateral's price
    extra: dict[str, Any] = field(default_factory=dict)
    # A short's: the rise of that asset's price that liquidates it (drop_to_liquidation is
    # then None: each field says what its name says).
    rise_to_liquidation: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "protocol": self.protocol,
            "account": self.account,
            "health_factor": self.health_factor,
            "collateral_usd": self.collateral_usd,
            "debt_usd": self.debt_usd,
            "liquidation_threshold": self.liquidation_threshold,
            "main_collateral": self.main_collateral,
            "drop_to_liquidation": self.drop_to_liquidation,
            "rise_to_liquidation": self.rise_to_liquidation,
        }
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class BookRisk:
    """What a protocol says of its book beyond the cascade (`book_risk`, optional hook)."""

    insurance_fund_usd: float | None  # what pays its bad debt, when the protocol has one
    lines: list[str]  # for `keeperd simulate`
    # No fund at all (its $0 is not a fund drained): no coverage ratio is published.
    no_fund: bool = False
    # Bad debt the protocol already carries, realised, in USD (Aave v3.3+: its reserves'
    # deficit, until covered; Perp Curie: accounts with no position left and a negative
    # value, until settled against the fund); None where the protocol keeps none (Morpho
    # Blue: its lenders take it at the liquidation) or it is not read.
    outstanding_bad_debt_usd: float | None = None
    # ...its parts, each in its own unit with what a unit is worth now (Aave: each reserve's
    # deficit in its tokens, at the oracle; Curie: each account's, in USD): an increase of a
    # part is bad debt newly realised, priced when it happened — a price move of a deficit
    # already there is none (`keeperd_bad_debt_realised_usd_total`). None: not known.
    bad_debt_parts: Mapping[str, tuple[float, float]] | None = None


@dataclass(frozen=True)
class HealthView:
    """Health of every account of a book, columnar (index i ↔ book.accounts[i])."""

    accounts: Sequence[str]
    health: NDArray[np.float64]  # inf where the account has no debt
    collateral_usd: NDArray[np.float64]
    debt_usd: NDArray[np.float64]
    liquidation_threshold: NDArray[np.float64]
    main_collateral: Sequence[str | None]
    drop_to_liquidation: NDArray[np.float64]  # NaN where no drop of it liquidates
    # Where a rise of the main asset's price liquidates (a perp short): its size, NaN
    # elsewhere; None: no row is liquidated by a rise (lending: collateral falls).
    rise_to_liquidation: NDArray[np.float64] | None = None
    # True: `main_collateral` is a position's asset (perps), not collateral (alerts say so).
    main_is_position: bool = False
    # Which position a row is, beyond its account (Morpho Blue: {"market": "WETH/USDC"}).
    labels: Sequence[Mapping[str, str]] | None = None
    # The symbols each row's health rests on: an untrusted price of one of them inhibits its
    # alerts and holds its liquidation.
    assets: Sequence[frozenset[str]] | None = None
    # What a watched row's alert says besides health (Curie: the funding that would bring
    # the account to maintenance): fields for its details, and a sentence for its summary.
    details: Sequence[Mapping[str, Any]] | None = None
    notes: Sequence[str] | None = None
    # The positions this evaluation could not read (Morpho Blue: a market whose state, oracle
    # or rate model did not answer: {"market": "WETH/USDC"}): a watched row missing there is
    # unknown, not gone (an endpoint failing that read must not resolve its alert).
    unread: Sequence[Mapping[str, str]] = ()
    # The main asset's price today (NaN: not known; None: no row's), in `price_unit` of the
    # row ("USD", or a Morpho market's loan token its oracle rate is in): with the drop (or
    # rise) to liquidation, the price that liquidates — what a holder's alert says (a by-hand
    # trial's holder had to work out 2,840 x (1 - 16.2 %) from "a 16.2 % drop").
    main_price: NDArray[np.float64] | None = None
    price_unit: Sequence[str] | None = None
    # What a liquidation of the row would repay, where it differs from `debt_usd` (Perp
    # Curie: an account liquidatable through its collateral alone, its positions above
    # maintenance, risks the collateral's USDC debt, not its open notional — debt at risk
    # said $374,802 of what was $2,074, a by-hand trial); None: `debt_usd`.
    at_risk_usd: NDArray[np.float64] | None = None

    def row_rise(self, i: int) -> float | None:
        """The rise of the row's main asset that liquidates it, if that is what does."""
        if self.rise_to_liquidation is None:
            return None
        rise = float(self.rise_to_liquidation[i])
        return None if np.isnan(rise) else rise

    def row_price(self, i: int) -> tuple[float, str] | None:
        """(the row's main asset's price today, its unit), if known."""
        if self.main_price is None:
            return None
        price = float(self.main_price[i])
        if not np.isfinite(price) or price <= 0:
            return None
        return price, self.price_unit[i] if self.price_unit is not None else "USD"

    def row_labels(self, i: int) -> Mapping[str, str]:
        return self.labels[i] if self.labels is not None else {}

    def row_details(self, i: int) -> Mapping[str, Any]:
        return self.details[i] if self.details is not None else {}

    def row_note(self, i: int) -> str:
        return self.notes[i] if self.notes is not None else ""

    def row_assets(self, i: int) -> frozenset[str]:
        return self.assets[i] if self.assets is not None else frozenset()


def row_key(account: str, labels: Mapping[str, str] | None) -> str:
    """One row of a view, beyond its account (a second reading keyed per position: Morpho's
    account in one market is not its account in another)."""
    parts = ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))
    return f"{account.lower()}|{parts}"
