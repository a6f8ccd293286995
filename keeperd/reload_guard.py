"""Whether a re-read config file may replace the running alert configuration (SIGHUP, and a
replica's promotion, which reads its file again).

`AlertsConfig` defaults every field to empty, so a file cut short while it is written (an
editor's save, a deploy's copy) still loads: `alerts` gone, or its routes kept and its
watchlists gone. Applied, that removed every sink, resolved every firing position alert as
"no longer watched" (a false all-clear to the holders) and left the keeper's own alerts with
no route, logged only as `daemon.reloaded` (audit F3). Such a reload is refused here; taking
the alerts away deliberately is written in the file itself — the section or list written out
empty (`alerts: {routes: []}`, `watchlists: []`) — rather than with a flag or a variable: a
promotion reads the file again without the operator there, and must judge it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keeperd.config import AlertsConfig, Config, ConfigIssue


@dataclass(frozen=True)
class ReloadVerdict:
    """What a reload would do to the running alerts: `refused` (each a reason) keeps the
    running config; `removed` names the routes, sinks and watchlists it takes away."""

    refused: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def fix(self) -> str:
        return ("if the file is being written, reload once it is whole; to take the alerts "
                "away deliberately, write what goes out empty in the file (`alerts: {routes: "
                "[]}`, `watchlists: []`, a section as `name: {}`) and reload, or restart "
                "keeperd")


def judge_reload(sections: frozenset[str], old: AlertsConfig, new: Config) -> ReloadVerdict:
    """`sections`: the top-level keys the running config's file had; `old`: the alerts that
    run; `new`: the file as read now."""
    refused = []
    lost = sorted(sections - new.model_fields_set)
    if lost:
        refused.append(f"the file no longer has its top-level section(s) {', '.join(lost)} "
                       "(a file cut short?)")
    written = new.alerts.model_fields_set if "alerts" in new.model_fields_set else set()
    if old.routes and not new.alerts.routes and "routes" not in written:
        refused.append("alerts.routes would go from "
                       f"{', '.join(r.name for r in old.routes)} to none: no alert would be "
                       "sent anywhere")
    # (`routes: []` written takes the watchlists too: each needs a route)
    deliberate = "watchlists" in written or ("routes" in written and not new.alerts.routes)
    if old.watchlists and not new.alerts.watchlists and not deliberate:
        refused.append("every watchlist would go: their firing position alerts would be "
                       "resolved as 'no longer watched', a false all-clear to the holders")
    return ReloadVerdict(refused, removed_names(old, new.alerts))


def removed_names(old: AlertsConfig, new: AlertsConfig) -> list[str]:
    """Each route, sink (by its outbox id) and watchlist of `old` that `new` does not have."""
    routes = {r.name: r for r in new.routes}
    removed = []
    for route in old.routes:
        kept = routes.get(route.name)
        if kept is None:
            removed.append(f"route {route.name!r}")
            continue
        ids = {s.sink_id for s in kept.sinks}
        removed += [f"sink {s.sink_id!r} of route {route.name!r}" for s in route.sinks
                    if s.sink_id not in ids]
    names = {w.name for w in new.watchlists}
    removed += [f"watchlist {w.name!r}" for w in old.watchlists if w.name not in names]
    return removed


def unheard_warnings(config: Config) -> list[ConfigIssue]:
    """At start and in check-config: a keeper that liquidates with no alert route tells
    nobody what it does (the file cut short that a reload refuses started quietly).
    (Watchlists with no route do not load: each names a route that must be defined.)"""
    if config.alerts.routes or config.keeper.mode != "liquidate":
        return []
    return [ConfigIssue("alerts.routes", "empty with keeper.mode liquidate: no alert will be "
                        "sent (the keeper's liquidations, its balance, RPC and oracle alerts)",
                        "define alerts.routes (a file cut short loses them: compare it with "
                        "the one you meant)")]
