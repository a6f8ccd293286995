"""What a perp venue's answer must hold for its numbers to be read, and what a read gives.

Every answer may lie; none alone may silence its alerts. `float()` reads "NaN", "inf" and
"-3000" as numbers: a mark of NaN made every watched account holding that coin read
"margin health ∞" (maintenance NaN is not above 0), and its firing alert resolved as
"recovered". A number that cannot be what its field says is the venue's fault: the account
(or the market) it belongs to is UNREAD — kept at its last alert state and said — never
healthy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import structlog

from keeperd.protocols.perps.margin import PerpAccount

log = structlog.get_logger(__name__)


class VenueAnswerError(ValueError):
    """A field of a venue's answer that does not read: missing, not a number, not finite,
    or out of the range the field can hold (a mark at or below zero)."""

    def __init__(self, field: str, value: Any, why: str) -> None:
        super().__init__(f"{field} = {value!r}: {why}")
        self.field, self.value, self.why = field, value, why


def finite(value: Any, field: str) -> float:
    """The field as a finite number (sizes, equity, PnL: any sign)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VenueAnswerError(field, value, "not a number") from None
    if not math.isfinite(number):
        raise VenueAnswerError(field, value, "not a finite number")
    return number


def positive(value: Any, field: str) -> float:
    """The field as a finite number above zero (marks, oracle prices, leverage, fractions)."""
    number = finite(value, field)
    if number <= 0:
        raise VenueAnswerError(field, value, "must be above 0")
    return number


def fraction(value: Any, field: str) -> float:
    """A margin fraction: above 0 and below 1."""
    number = positive(value, field)
    if number >= 1:
        raise VenueAnswerError(field, value, "a margin fraction must be below 1")
    return number


def optional(read: Any, value: Any, field: str) -> float | None:
    """`read(value, field)`, or None where the venue leaves the field out (null)."""
    return None if value is None else float(read(value, field))


@dataclass(frozen=True)
class Unread:
    """A watched account the venue's answer did not let keeperd read this poll."""

    account: str
    field: str
    why: str

    def __str__(self) -> str:
        return f"{self.account} ({self.field}: {self.why})"


@dataclass
class VenueRead:
    """One poll of a venue: the accounts read, and those that did not read."""

    accounts: list[PerpAccount] = field(default_factory=list)
    unread: list[Unread] = field(default_factory=list)


def unread_of(venue: str, account: str, exc: Exception) -> Unread:
    """The account `exc` stopped from reading, logged with the venue and the field."""
    if isinstance(exc, VenueAnswerError):
        field_, value, why = exc.field, repr(exc.value)[:80], exc.why
    else:  # (a field missing, or of the wrong shape: `assetPositions: null`)
        field_, value, why = "answer", None, f"{type(exc).__name__}: {exc}"[:200]
    log.warning("perps.account_unread", venue=venue, account=account, field=field_,
                value=value, why=why,
                meaning="the venue's answer does not read: the account is not evaluated this "
                "poll, its alerts are kept as they were (not resolved)")
    return Unread(account, field_, why)
