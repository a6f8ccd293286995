"""What every replica of one database must configure alike, as its lease records it.

A standby takes over with its own config: whatever in it differs from the leader's changes
what is told or done at the failover, silently unless the replicas compare it. Each part is
a list of short lines, secrets never in clear: what may hold one (a sink's destination and
secret, a URL with its key, a watchlist's accounts) is a digest. Only what is the same on
every host by intent is here; where a replica reaches its chain and its database, its key,
its metrics and logs are its own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# The version of these parts. A replica compares only the parts both it and the leader know:
# a rolling upgrade across versions is not refused for a part one of them lacks.
VERSION = "3"

# A chain's settings that are each host's: its endpoints (their providers and API keys) and
# how hard it uses them.
CHAIN_PER_HOST = frozenset({
    "rpc_urls", "ws_url", "ws_stall_s", "poll_interval", "request_timeout", "max_attempts",
    "rate_limit", "multicall_chunk_size", "max_request_bytes", "scan_reader"})
# A protocol's settings that are each host's: a perp venue's API (its URL may carry the host's
# own key) and how hard it is polled (a review: hosts on their own indexers differed for good).
PROTOCOL_PER_HOST = frozenset({"api_url", "indexer_url", "poll_interval_s", "timeout_s",
                               "max_attempts", "rate_limit"})
# The keeper's fields compared elsewhere (the key's address and the mode by the lease itself,
# `keeper.capital` as its own part) or each host's (where its key is kept; a private relay's
# URL holds the host's own credential: only whether one is set is compared).
KEEPER_ELSEWHERE = frozenset({"key", "address", "mode", "capital", "private_rpc_url"})


def shared_config(config: Any) -> dict[str, list[str]]:
    """What every replica of one database must configure alike. The chains (by name too: the
    alerts' state is keyed by it, and a replica spelling it another way told every firing
    alert again at a failover), the protocols (a replica without one led a crash of it,
    unliquidated and unalerted for 21 blocks), where the capital comes from, the alert sinks
    by digest (one leading with another signing secret sent the receiver nothing it could
    verify), the lease's timing (a longer lease slowed a failover to 35 s): by-hand trials.
    And since trial 28 everything else a takeover would change: a standby left on its old
    watchlist (only the leader was reloaded) took over, told the holder a position 'is no
    longer watched' and nothing more as it fell to critical — the alerts' watchlists, rules,
    routes, silences, inhibition and outbox, the oracle and cascade settings, the keeper's,
    each chain's and protocol's."""
    lease = config.storage.lease
    alerts = config.alerts
    keeper = by_field(config.keeper, exclude=KEEPER_ELSEWHERE)
    keeper.append("private_rpc_url " + ("set" if config.keeper.private_rpc_url else "unset"))
    return {
        "version": [VERSION],
        "chains": sorted(f"{c.name} (chain id {c.chain_id})" for c in config.chains),
        "protocols": sorted(f"{p.name} ({p.kind}" + (f" on {p.chain})" if getattr(
            p, "chain", None) else ")") for p in config.protocols),
        "keeper.capital": [str(config.keeper.capital)],
        "alert sinks": sorted(f"{r.name}: {s.sink_id} ({digest(s.model_dump(mode='json'))})"
                              for r in alerts.routes for s in r.sinks),
        "storage.lease": [f"length_s {lease.length_s:g}", f"renew_every_s "
                          f"{lease.renew_every_s:g}"],
        # (version 3)
        "alerts.routes": sorted(f"{r.name}: " + ", ".join(by_field(r, exclude={"name", "sinks"}))
                                for r in alerts.routes),
        "alerts.operator_route": [alerts.operator_route or "(the first route)"],
        "alerts.watchlists": sorted(
            f"{w.name}: accounts {len(w.accounts)}, levels and route "
            f"({digest(w.model_dump(mode='json'))})"
            for w in alerts.watchlists),
        "alerts.rules": by_field(alerts.rules),
        "alerts.inhibition": [alerts.inhibition],
        # (by digest alone: a matcher may name a watched account, which the lease row and
        # the logs must not hold in clear — a review)
        "alerts.silences": sorted(digest(s.model_dump(mode="json")) for s in alerts.silences),
        "alerts.outbox": by_field(alerts.outbox),
        "oracles": by_field(config.oracles),
        "risk.cascade": by_field(config.risk.cascade, exclude={"threads"}),  # (each host's CPUs)
        "keeper": keeper,
        "chains.settings": sorted(
            f"{c.name}: {digest(c.model_dump(mode='json', exclude=set(CHAIN_PER_HOST)))}"
            for c in config.chains),
        "protocols.settings": sorted(
            f"{p.name}: {digest(p.model_dump(mode='json', exclude=set(PROTOCOL_PER_HOST)))}"
            for p in config.protocols),
    }


# The parts that refuse a replica's start when they differ from the leader's (what replicas
# compared before version 3): a replica leading on them would liquidate or tell on another
# chain, protocol, capital, sink or failover timing. The others are said while running and
# at a takeover, never refused at a start: a rolling change of a watchlist, a rule or
# `min_profit_usd` (restart one replica, then the other) must get through — refused, the
# first replica restarted could not join the leader still on the old file.
REFUSED_AT_START = frozenset({"chains", "protocols", "keeper.capital", "alert sinks",
                              "storage.lease"})


def refused_at_start(part: str) -> bool:
    return part in REFUSED_AT_START


def reloadable(part: str) -> bool:
    """Whether SIGHUP applies this part (the `alerts` section): the fix of a difference only
    in these is a reload of each replica, not a stop of all."""
    return part == "alert sinks" or part.startswith("alerts.")


def differing(mine: dict[str, list[str]] | None, theirs: dict[str, list[str]] | None
              ) -> list[str]:
    """The parts that differ, of those both know (another version's parts are its own)."""
    if mine is None or theirs is None:
        return []
    return sorted(p for p in (set(mine) & set(theirs)) - {"version"} if mine[p] != theirs[p])


def by_field(model: BaseModel, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """A section's fields, one line each: a number, a flag or nothing in clear; anything else
    (a name, a URL that may hold its key, a list, a nested section) by digest — the line
    still names the field that differs."""
    lines = []
    for name, value in model.model_dump(mode="json", exclude=set(exclude)).items():
        if value is None or isinstance(value, bool | int | float):
            lines.append(f"{name} {json.dumps(value)}")
        else:
            lines.append(f"{name} ({digest(value)})")
    return lines


def digest(value: Any) -> str:
    """A short digest of a value, a `*_file` field's file read for its content (replicas keep
    their credentials at paths of their own)."""
    text = json.dumps(_read_files(value), sort_keys=True, default=str)
    return "digest " + hashlib.sha256(text.encode()).hexdigest()[:12]


def _read_files(value: Any) -> Any:
    if isinstance(value, list):
        return [_read_files(v) for v in value]
    if not isinstance(value, dict):
        return value
    fields = {k: _read_files(v) for k, v in value.items()}
    for name in [n for n in fields if n.endswith("_file")]:
        path = fields.pop(name)
        if path:
            try:
                fields[name.removesuffix("_file")] = Path(path).read_text().strip()
            except OSError:
                fields[name] = path  # (unreadable here: the section's own start says so)
    return fields
