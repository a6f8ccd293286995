"""The pure part of an alert's life: which severity a value deserves (with hysteresis) and
whether that is news (fire, escalate, repeat, resolve) given what was last sent.

No I/O and no clock: the engine passes `now`, so the rules are tested as plain functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from keeperd.alerts.model import severity_rank


@dataclass(frozen=True)
class Levels:
    warn: float
    critical: float | None = None
    # "below": lower is worse (health factor); "above": higher is worse (lag, bad debt).
    direction: Literal["below", "above"] = "below"
    clear_margin: float = 0.0  # a level clears only once the value is this far past it
    escalation_step: float | None = None  # re-alert when the value worsens this much
    # A value past which it is news whatever the step (a position's health under 1.0: it can
    # be liquidated now — a fall from 1.02 to 0.99 under a step of 0.05 said nothing).
    edge: float | None = None
    # Re-alert when the value has grown this many times over what was last told ("above":
    # a shortfall's forgone profit, $40 when first told and $80,000 a crash later, said
    # nothing until the repeat interval).
    escalation_ratio: float | None = None


@dataclass(frozen=True)
class Told:
    """What was last sent for one fingerprint."""

    severity: str  # what it deserves now (hysteresis, counts): lowered by a silent recovery
    value: float | None
    at: float  # when it was last sent (firing, escalated or repeated)
    since: float  # when it started firing
    # The severity of the last message sent, where a silent recovery left `severity` below
    # it (None: `severity`). A fall back to it is not news: a cascade_risk told critical,
    # back to warning as the keeper liquidated, was told critical again at the next drop of
    # a crash — by the replica that had taken over, with no resolve between (a by-hand
    # trial); the last message still says it.
    heard: str | None = None

    @property
    def said(self) -> str:
        """The severity of the last message sent."""
        return self.heard or self.severity


def _worse(levels: Levels, value: float, threshold: float) -> bool:
    return value < threshold if levels.direction == "below" else value > threshold


def _cleared(levels: Levels, value: float, threshold: float) -> bool:
    margin = levels.clear_margin if levels.direction == "below" else -levels.clear_margin
    return not _worse(levels, value, threshold + margin)


def classify(value: float, levels: Levels, current: str | None) -> str | None:
    """The severity `value` deserves, given the severity currently held (hysteresis: a held
    level is kept until the value has cleared it by `clear_margin`)."""
    if levels.critical is not None:
        if _worse(levels, value, levels.critical):
            return "critical"
        if current == "critical" and not _cleared(levels, value, levels.critical):
            return "critical"
    if _worse(levels, value, levels.warn):
        return "warning"
    if current in ("warning", "critical") and not _cleared(levels, value, levels.warn):
        return "warning"
    return None


Decision = Literal["firing", "escalated", "repeat", "resolved"] | None


def decide(told: Told | None, severity: str | None, value: float | None, now: float,
           levels: Levels | None, repeat_s: float) -> Decision:
    """Is this news? `severity` is what the condition deserves now (None: all clear)."""
    if severity is None:
        return "resolved" if told is not None else None
    if told is None:
        return "firing"
    if severity_rank(severity) > severity_rank(told.said):
        return "escalated"
    if (levels is not None and levels.edge is not None and value is not None
            and told.value is not None and _worse(levels, value, levels.edge)
            and not _worse(levels, told.value, levels.edge)):
        return "escalated"  # (it crossed the edge since it was last told)
    step = levels.escalation_step if levels else None
    if step and value is not None and told.value is not None and levels is not None:
        worsened = (told.value - value) if levels.direction == "below" else (value - told.value)
        if worsened >= step - 1e-12:
            return "escalated"
    ratio = levels.escalation_ratio if levels else None
    if ratio and value is not None and told.value is not None and told.value > 0 and \
            value >= told.value * ratio:
        return "escalated"
    if now - told.at >= repeat_s:
        return "repeat"
    return None


def after(told: Told | None, decision: Decision, severity: str | None, value: float | None,
          now: float) -> Told | None:
    """What has been told once `decision` is sent (or, for None, what stays told)."""
    if decision == "resolved":
        return None
    if decision == "firing":
        return Told(severity or "warning", value, now, now)
    if decision in ("escalated", "repeat"):
        assert told is not None and severity is not None
        keep = severity if severity_rank(severity) >= severity_rank(told.severity) else \
            told.severity
        return Told(keep, value, now, told.since, severity if keep != severity else None)
    if told is not None and severity is not None and severity != told.severity:
        # Back from critical to warning, or down to it again: no message — the last one
        # still says `told.said`, and a fall back to it is not news until it resolves.
        return Told(severity, told.value, told.at, told.since,
                    told.said if told.said != severity else None)
    return told
