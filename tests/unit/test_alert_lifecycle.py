"""The alert lifecycle as plain functions: hysteresis, escalation, repeat, resolution."""

from __future__ import annotations

from keeperd.alerts.lifecycle import Levels, Told, after, classify, decide

HEALTH = Levels(warn=1.2, critical=1.05, direction="below", clear_margin=0.02,
                escalation_step=0.05)


def run(values: list[float], repeat_s: float = 3600, dt: float = 12.0) -> list[str | None]:
    """Feed a series of health values; return the decision per step."""
    told: Told | None = None
    out: list[str | None] = []
    for i, v in enumerate(values):
        now = i * dt
        severity = classify(v, HEALTH, told.severity if told else None)
        d = decide(told, severity, v, now, HEALTH, repeat_s)
        told = after(told, d, severity, v, now)
        out.append(d)
    return out


def test_fires_once_then_stays_quiet_while_hovering() -> None:
    # 1.19 fires; hovering between 1.18 and 1.21 (inside the 0.02 margin) says nothing more.
    assert run([1.3, 1.19, 1.21, 1.18, 1.2, 1.215, 1.19]) == [
        None, "firing", None, None, None, None, None]


def test_resolves_only_past_the_clear_margin() -> None:
    assert run([1.19, 1.215, 1.221]) == ["firing", None, "resolved"]


def test_escalates_to_critical_and_again_when_worse_by_a_step() -> None:
    assert run([1.15, 1.04, 1.03, 0.99, 0.985]) == [
        "firing", "escalated", None, "escalated", None]


def test_crossing_the_edge_is_news_whatever_the_step() -> None:
    """A position falling from 1.02 to 0.99 (less than a step) can be liquidated now: the
    holder is told (a by-hand trial's went unsaid); staying under it is not news again."""
    edged = Levels(warn=1.2, critical=1.05, direction="below", clear_margin=0.02,
                   escalation_step=0.05, edge=1.0)
    told = Told("critical", 1.02, 0.0, 0.0)
    assert decide(told, "critical", 0.99, 12.0, HEALTH, 3600) is None  # (no edge: silent)
    assert decide(told, "critical", 0.99, 12.0, edged, 3600) == "escalated"
    under = after(told, "escalated", "critical", 0.99, 12.0)
    assert decide(under, "critical", 0.985, 24.0, edged, 3600) is None
    assert decide(told, "critical", 1.0, 12.0, edged, 3600) is None  # (at it: not under)


def test_a_value_grown_by_the_ratio_is_news() -> None:
    """A capital shortfall's forgone profit: told again once it has doubled since last told
    ($40 at first, $80,000 a crash later, said nothing until the repeat interval)."""
    grown = Levels(0.0, direction="above", escalation_ratio=2.0)
    told = Told("warning", 40.0, 0.0, 0.0)
    assert decide(told, "warning", 79.0, 12.0, grown, 3600) is None
    assert decide(told, "warning", 80.0, 12.0, grown, 3600) == "escalated"
    again = after(told, "escalated", "warning", 80_000.0, 12.0)
    assert decide(again, "warning", 100_000.0, 24.0, grown, 3600) is None
    assert decide(again, "warning", 20.0, 24.0, grown, 3600) is None  # (less: not news)
    assert decide(Told("warning", 0.0, 0.0, 0.0), "warning", 5.0, 12.0, grown, 3600) is None


def test_recovery_from_critical_to_warning_is_silent_and_so_is_a_fall_back_to_it() -> None:
    """Critical was told and never resolved: a fall back to it is not news (a cascade_risk
    told critical twice across a crash's steps, no resolve between — a by-hand trial); worse
    by a step than the value told is, and after a resolution it fires anew."""
    assert run([1.04, 1.08, 1.1, 1.04]) == ["firing", None, None, None]
    assert run([1.04, 1.08, 1.04, 0.98]) == ["firing", None, None, "escalated"]
    assert run([1.04, 1.3, 1.04]) == ["firing", "resolved", "firing"]


def test_what_a_silent_recovery_remembers_is_what_was_heard() -> None:
    told = after(None, "firing", "critical", 1.04, 0.0)
    back = after(told, None, "warning", 1.1, 12.0)
    assert back == Told("warning", 1.04, 0.0, 0.0, heard="critical") and back.said == "critical"
    assert decide(back, "critical", 1.04, 24.0, HEALTH, 3600) is None
    again = after(back, None, "critical", 1.04, 24.0)
    assert again == Told("critical", 1.04, 0.0, 0.0)  # (what it deserves is what was heard)
    # A repeat at warning is heard: a fall to critical after it is news again.
    repeated = after(back, "repeat", "warning", 1.1, 3600.0)
    assert repeated.said == "warning"
    assert decide(repeated, "critical", 1.04, 3612.0, HEALTH, 3600) == "escalated"


def test_repeats_after_the_interval_while_firing() -> None:
    decisions = run([1.1] * 8, repeat_s=36, dt=12)
    assert decisions == ["firing", None, None, "repeat", None, None, "repeat", None]


def test_higher_is_worse_direction() -> None:
    lag = Levels(warn=20, critical=100, direction="above")
    assert classify(10, lag, None) is None
    assert classify(25, lag, None) == "warning"
    assert classify(150, lag, None) == "critical"
    assert classify(99, lag, "critical") == "warning"  # no margin: leaves critical at once


def test_no_debt_resolves() -> None:
    told = Told("warning", 1.1, 0.0, 0.0)
    assert decide(told, None, None, 10.0, HEALTH, 3600) == "resolved"
    assert after(told, "resolved", None, None, 10.0) is None
