"""The alerts a what-if would raise (`keeperd simulate`): which watched positions would cross
their watchlist's warn or critical level, and the cascade rule's level for the bad debt left.

The same pieces as the engine: `watched_rows` picks the watched rows of a health view and
`lifecycle.classify` grades them by the watchlist's levels, as if nothing had been told yet
(no hysteresis); silences and inhibition are not applied (`keeperd alerts route` shows them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keeperd.alerts.engine import WatchedRow, watched_rows
from keeperd.alerts.lifecycle import Levels, classify
from keeperd.config import AlertsConfig, WatchlistConfig
from keeperd.protocols.sdk.views import HealthView


@dataclass(frozen=True)
class WouldFire:
    rule: str
    severity: str
    route: str
    summary: str


def watchlist_alerts(config: AlertsConfig, protocol: str, chain: str, shocked: HealthView,
                     before: HealthView | None = None) -> list[WouldFire]:
    """position_health for every watched row of `shocked` under a level (with its health in
    `before`, today's, when given)."""
    watched: dict[str, list[WatchlistConfig]] = {}
    for w in config.watchlists:
        for account in w.accounts:
            watched.setdefault(account.lower(), []).append(w)

    def rows(view: HealthView) -> list[WatchedRow]:
        return watched_rows(view, protocol, chain, watched, "", lambda _: None)

    def key(row: WatchedRow) -> tuple[str, tuple[tuple[str, str], ...]]:
        return row.account.lower(), tuple(sorted(row.labels.items()))

    today = {key(r): r.health for r in rows(before)} if before is not None else {}
    out = []
    for row in rows(shocked):
        for w in watched[row.account.lower()]:
            if w.protocols is not None and protocol not in w.protocols:
                continue
            levels = Levels(w.warn, w.critical, "below", w.clear_margin, w.escalation_step)
            severity = classify(row.health, levels, None) if np.isfinite(row.health) else None
            if severity is None:
                continue
            was = today.get(key(row))
            was_text = f"{was:.4f} -> " if was is not None and np.isfinite(was) else ""
            limit = w.critical if severity == "critical" else w.warn
            out.append(WouldFire(
                "position_health", severity, w.route,
                f"{w.name}: {row.where}: health {was_text}{row.health:.4f}, below {severity} "
                f"{limit}" + (" (liquidatable)" if row.health < 1 else "")))
    return sorted(out, key=lambda a: (a.severity != "critical", a.summary))


def cascade_alert(config: AlertsConfig, bad_debt_usd: float) -> WouldFire | None:
    """The cascade rule's level for this bad debt (the rule itself looks at its own shock,
    `rules.cascade.shock`, on every block)."""
    rule = config.rules.cascade
    route = config.route_for("cascade")
    if not rule.enabled or route is None:
        return None
    levels = Levels(rule.warn_bad_debt_usd, rule.critical_bad_debt_usd, "above")
    severity = classify(bad_debt_usd, levels, None)
    if severity is None:
        return None
    limit = rule.critical_bad_debt_usd if severity == "critical" else rule.warn_bad_debt_usd
    return WouldFire("cascade_risk", severity, route,
                     f"bad debt ${bad_debt_usd:,.0f} left, above the cascade rule's {severity} "
                     f"level ${limit:,.0f}")


def render(alerts: list[WouldFire]) -> str:
    head = ("alerts this shock would raise (at the prices the cascade ends at; silences and "
            "inhibition not applied: `keeperd alerts route` shows them):")
    if not alerts:
        return (f"{head} none (no watched position crosses its watchlist's levels, and the "
                "bad debt is under the cascade rule's)")
    lines = [head]
    for a in alerts:
        lines.append(f"  {a.rule:16} {a.severity:8} route {a.route:8} {a.summary}")
    return "\n".join(lines)
