"""Where an alert would go, and what would mute it: `keeperd alerts route RULE label=value...`,
as Alertmanager's `amtool config routes test`.

The route comes from the config as the engine takes it: a watchlist's own route for position
alerts, `AlertsConfig.route_for` for the others; the silences are `Silences.all_matching` on
the labels the engine matches them against (the alert's, `rule` and `severity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from keeperd.alerts.catalog import RuleInfo, check_label, check_rule, suggest
from keeperd.alerts.silences import Silence, Silences
from keeperd.config import AlertsConfig, SinkConfig


@dataclass(frozen=True)
class Routed:
    """One way an alert of the rule with these labels is routed."""

    route: str | None  # None: it is never raised or has nowhere to go (`via` says why)
    via: str
    labels: dict[str, str]
    sinks: tuple[str, ...]
    silences: tuple[tuple[Silence, tuple[str, ...]], ...]  # (silence, the severities it mutes)
    severities: tuple[str, ...]  # the severities looked at (the rule's, or the one given)


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """['account=0xabc', 'chain=mainnet'] -> a dict; each label one keeperd alerts carry."""
    labels: dict[str, str] = {}
    for pair in pairs:
        label, sep, value = pair.partition("=")
        if not sep or not label or value.startswith(("=", "~")) or label.endswith("!"):
            raise ValueError(f"{pair!r}: write label=value (e.g. account=0xabc..., "
                             "chain=mainnet)")
        check_label(label, value)
        labels[label] = value
    return labels


def resolve(config: AlertsConfig, rule: str, labels: dict[str, str]
            ) -> list[tuple[str | None, str, dict[str, str]]]:
    """(route, why, the alert's labels) for each way an alert of `rule` with `labels` is
    routed; a ValueError for a rule, severity or watchlist that does not exist."""
    info = check_rule(rule)
    severity = labels.get("severity")
    if severity is not None and severity not in info.severities:
        raise ValueError(f"rule {rule} fires at {', '.join(info.severities)}, not {severity}")
    return _routes(config, info, labels)


def route(config: AlertsConfig, silences: Silences, rule: str, labels: dict[str, str],
          now: float) -> list[Routed]:
    """`resolve`, with each route's sinks and the active silences that would mute it."""
    resolved = resolve(config, rule, labels)
    severity = labels.get("severity")
    severities = (severity,) if severity else check_rule(rule).severities
    out = []
    for name, via, routed_labels in resolved:
        muting: dict[Silence, list[str]] = {}
        for sev in severities:
            seen = {**routed_labels, "rule": rule, "severity": sev}
            for silence in silences.all_matching(seen, now):
                muting.setdefault(silence, []).append(sev)
        routes = {r.name: r for r in config.routes}
        sinks = tuple(_sink(s) for s in routes[name].sinks) if name else ()
        out.append(Routed(name, via, routed_labels, sinks,
                          tuple((s, tuple(v)) for s, v in muting.items()), severities))
    return out


def _routes(config: AlertsConfig, info: RuleInfo, labels: dict[str, str]
            ) -> list[tuple[str | None, str, dict[str, str]]]:
    if info.toggle is None:
        return _watchlist_routes(config, info, labels)
    toggle = getattr(config.rules, info.toggle)
    where = f"alerts.rules.{info.toggle}"
    if not toggle.enabled:
        return [(None, f"{where}.enabled is false: never raised", labels)]
    name = config.route_for(info.toggle)
    if name is None:
        return [(None, "no route is configured (alerts.routes is empty): never sent", labels)]
    via = (f"{where}.route" if toggle.route else "alerts.operator_route"
           if config.operator_route else "the first route: no alerts.operator_route is set")
    return [(name, via, labels)]


def _watchlist_routes(config: AlertsConfig, info: RuleInfo, labels: dict[str, str]
                      ) -> list[tuple[str | None, str, dict[str, str]]]:
    """Position alerts go to the route of each watchlist that watches the account (a venue's
    sub-account `user@dex` or `address/128` is watched through its holder, as the engine
    does) on that protocol."""
    names = [w.name for w in config.watchlists]
    wanted = labels.get("watchlist")
    if wanted is not None and wanted not in names:
        raise ValueError(f"no watchlist {wanted!r}{suggest(wanted, names)}; watchlists: "
                         f"{', '.join(names) or 'none'}")
    account = labels.get("account", "").lower()
    holders = {account, account.split("@", 1)[0], account.split("/", 1)[0]}
    out: list[tuple[str | None, str, dict[str, str]]] = []
    for w in config.watchlists:
        if wanted is not None and w.name != wanted:
            continue
        if account and not holders & {a.lower() for a in w.accounts}:
            continue
        protocol = labels.get("protocol")
        if protocol and w.protocols is not None and protocol not in w.protocols:
            continue
        out.append((w.route, f"watchlist {w.name}'s route", {**labels, "watchlist": w.name}))
    if not out:
        which = f"account {labels['account']}" if account else "any account"
        return [(None, f"no watchlist watches {which} with these labels: {info.name} is "
                       "never raised for it", labels)]
    return out


def _sink(sink: SinkConfig) -> str:
    """The sink's id, kind and where it sends, without its secrets (a Slack or Discord webhook
    URL is one)."""
    if sink.kind == "telegram":
        thread = f" topic {sink.message_thread_id}" if sink.message_thread_id else ""
        where = f"chat {sink.chat_id}{thread}"
    elif sink.kind in ("webhook", "alertmanager"):
        where = urlsplit(sink.url).netloc.rpartition("@")[2]
    else:
        where = "its webhook URL"
    return f"{sink.sink_id}: {sink.kind} ({where})"


def render(rule: str, routed: list[Routed], now: float) -> str:
    lines = []
    for r in routed:
        labels = " ".join(f"{k}={v}" for k, v in r.labels.items())
        lines.append(f"{rule} {labels}".rstrip())
        if r.route is None:
            lines.append(f"  not routed: {r.via}")
            continue
        lines.append(f"  route {r.route} ({r.via})")
        lines += [f"    sink {s}" for s in r.sinks]
        if not r.silences:
            lines.append("  no active silence matches: it would be sent")
        for silence, severities in r.silences:
            when = ("" if len(severities) == len(r.severities)
                    else f"  (only at severity {'/'.join(severities)})")
            lines.append(f"  muted by silence {silence.describe(now).strip()}{when}")
    return "\n".join(lines)
