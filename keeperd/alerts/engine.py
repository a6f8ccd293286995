"""The alert engine: turns what keeperd observes into alerts, decides what is news, and puts
notifications in the outbox.

Inputs (all from the daemon's own loop, no extra threads):
- `on_scan`: every completed evaluation — watched accounts' health (watchlists), liquidations
  of watched accounts (their LiquidationCall logs), the oracle breaker's state;
- `on_liquidation`: the executor's outcomes (sent, included, reverted, lost, not sent);
- `tick`: every few seconds — RPCs down, index lag, keeper gas balance;
- `on_block_event`: reorgs retract what was raised on blocks that no longer exist;
- `observe` (public): any threshold condition (the cascade engine's bad debt uses it).

Per input, the engine computes each condition's severity (with hysteresis), compares it with
what was last sent for its fingerprint (persisted, so a restart does not repeat or forget),
applies silences and inhibition, groups what fires together, and writes the state change and
the notifications in one database transaction (SQLite, or PostgreSQL shared by replicas: only
the acting replica writes; a standby evaluates and tells no one, and reads the shared state
again when it becomes the leader). Delivery is the dispatcher's job.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import structlog

from keeperd.alerts.delivery import Dispatcher
from keeperd.alerts.inhibition import holder_note
from keeperd.alerts.lifecycle import Levels, Told, after, classify, decide
from keeperd.alerts.model import Alert, fingerprint
from keeperd.alerts.outbox import DELIVERED, PENDING, Queued
from keeperd.alerts.silences import Silences
from keeperd.alerts.state import AlertState
from keeperd.chain.blocks import BlockEvent, Reorg
from keeperd.config import AlertsConfig, Config, WatchlistConfig
from keeperd.crashpoints import crash_point
from keeperd.execution.delegation import KeyHold
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.contract import LiquidationSeen
from keeperd.protocols.sdk.messages import ExecutionEvent
from keeperd.storage.db import Database

log = structlog.get_logger(__name__)

# A position's health under which anyone may liquidate it: crossing it is always news.
LIQUIDATABLE_BELOW = 1.0
# A capital shortfall is told again when the profit it forgoes has grown this many times.
SHORTFALL_RETELL_RATIO = 2.0

# The executors' outcomes the journal records as told (its `told` column, migration 15).
TOLD_OUTCOMES = frozenset({"sent", "included", "reverted", "lost_race"})
_LIQUIDATION_EVENTS = {
    # executor outcome -> severity, summary verb, what to do
    "sent": ("info", "sent", ""),
    "included": ("info", "included", ""),
    "reverted": ("warning", "reverted", "Check the simulation and gas settings; the journal "
                 "has the transaction."),
    "lost_race": ("warning", "lost to another keeper", "Consider a private RPC or a higher "
                  "priority fee (keeper.priority_fee_gwei)."),
    "not_sent": ("warning", "not sent", "See the reason; check the RPC and the keeper's nonce."),
}

ACTION_POSITION = ("Add collateral or repay debt now. Below health 1.0 anyone may liquidate "
                   "the position and take the liquidation bonus out of the collateral.")


@dataclass(frozen=True)
class WatchedRow:
    """One watched position as the watchlist rule reads it, whatever produced it (a
    protocol's health view, a perp venue's accounts)."""

    protocol: str
    chain: str | None
    account: str
    labels: Mapping[str, str]  # which position within the account (Morpho: its market)
    health: float
    assets: frozenset[str]  # an untrusted price of one of these inhibits the alert
    details: Mapping[str, Any]
    where: str  # "0xabc on aave" / "0xabc in morpho WETH/USDC"
    action: str
    measure: str = "health"
    measure_note: str = ""
    tail: str = ""


def watched_rows(view: Any, protocol: str, chain: str, watched: Mapping[str, Any],
                 action: str, link: Callable[[str], str | None]) -> list[WatchedRow]:
    """The rows of a protocol's health view whose account is watched."""
    out = []
    for i, account in enumerate(view.accounts):
        if account.lower() not in watched:
            continue
        labels = view.row_labels(i)
        drop = float(view.drop_to_liquidation[i])
        rise = view.row_rise(i)
        where = (f"{account} in {protocol} {' '.join(labels.values())}" if labels
                 else f"{account} on {protocol}")
        note = view.row_note(i)
        priced = view.row_price(i)
        at: dict[str, Any] = {}
        move = rise if rise is not None else (-drop if not np.isnan(drop) else None)
        if priced is not None and move:
            # (to significant digits: a Morpho rate of 1e-9 loan tokens rounded to 0)
            at = {"liquidation_price": float(f"{priced[0] * (1.0 + move):.6g}"),
                  "price_unit": priced[1]}
        out.append(WatchedRow(
            protocol, chain, account, labels, float(view.health[i]), view.row_assets(i),
            {"collateral_usd": round(float(view.collateral_usd[i]), 2),
             "debt_usd": round(float(view.debt_usd[i]), 2),
             "main_collateral": view.main_collateral[i],
             "drop_to_liquidation": None if np.isnan(drop) else round(drop, 6),
             # (a short's: its holder must hear "rise", never "drop")
             **({"rise_to_liquidation": round(rise, 6)} if rise is not None else {}),
             **({"main_is_position": True} if view.main_is_position else {}),
             **at, **view.row_details(i), **labels, "explorer_url": link(account)},
            where, action, tail=f"; {note}" if note else ""))
    return out


def holds_position(collateral_usd: float, debt_usd: float) -> bool:
    """Whether a row of an evaluation is a position: collateral or debt (a perp account:
    equity or open notional). A watched account with none anywhere can never alert."""
    return bool(collateral_usd != 0 or debt_usd != 0)


def account_keys(account: str) -> tuple[str, ...]:
    """The watched entries an account may belong to: itself, or the holder behind a venue's
    sub-account (Hyperliquid `user@dex`, a dYdX child subaccount `address/128`)."""
    key = account.lower()
    return key, key.split("@", 1)[0], key.split("/", 1)[0]


@dataclass(frozen=True)
class Condition:
    """A rule's reading of one thing in this evaluation."""

    rule: str
    route: str
    labels: dict[str, str]
    severity: str | None  # what the reading deserves now (None: all clear)
    value: float | None
    levels: Levels | None
    repeat_s: float
    summary: str  # for firing
    resolved_summary: str
    action: str = ""
    details: dict[str, Any] | None = None
    inhibited_by: tuple[str, ...] = ()
    # Told again when its summary changes while it fires (a new upgrade to another unknown
    # revision kept the first one's message: an open alert naming revision 11 while the pool
    # ran 13, a by-hand trial).
    retell_on_change: bool = False
    # Told again when what this makes of its summary changes while it fires (an oracle's
    # reason, rewritten each block with its figures: a manual trip reset and tripped again
    # for a deviation kept saying "until an operator resets it", a trial).
    retell_when: Callable[[str], str] | None = None
    # Whether `inhibition: hold` may hold it while a price it rests on is untrusted: an
    # operator's alert, not a holder's — the protocol liquidates at its own oracle's price
    # whatever keeperd thinks of it, and a held holder heard nothing until it had.
    holdable: bool = True


def _reason_words(summary: str) -> str:
    """What an oracle alert's reason says, not its figures (rewritten each block) nor its
    feed fine again while the breaker waits (`Breaker.distrust`: "was ... fine since"), which
    a feed flapping across its threshold would have told each block: the reason's kind (a
    manual trip, stale, deviation ...) and words."""
    reason = summary.partition(" are paused: ")[2] or summary
    reason = reason.removeprefix("was ").split(" — ")[0].split(" until the block of ")[0]
    return re.sub(r"0x[0-9a-fA-F]+|[0-9][0-9.,:%]*", "#", reason)


def group_alerts(alerts: list[Alert], group: bool) -> list[list[Alert]]:
    """The grouping stage (pure): for people's chats, one message per (rule, status,
    severity) of one evaluation, lowest value first; for machines, one request per alert."""
    if not group:
        return [[a] for a in alerts]
    keyed: dict[tuple[str, str, str], list[Alert]] = {}
    for a in alerts:
        keyed.setdefault((a.rule, a.status, a.severity), []).append(a)
    return [sorted(g, key=lambda a: a.value if a.value is not None else 0.0)
            for g in keyed.values()]


class AlertEngine:
    def __init__(self, db: Database, config: AlertsConfig, dispatcher: Dispatcher,
                 metrics: Metrics, *, explorers: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.time,
                 acting: Callable[[], bool] = lambda: True,
                 sources: Iterable[str] | None = None, sends: bool = True) -> None:
        """Call `load` before the first input (or build it with `open`). `sources`: every
        protocol and venue whose evaluations will come (`sources_of`); without it, the chain
        protocols `tick` names and the venues that have reported."""
        self.db = db
        # The process's, as the dispatcher's: the secrets no alert may carry (`_scrubbed`).
        self.redactor = dispatcher.redactor
        self.acting = acting
        self.sends = sends  # (liquidate mode: the keeper sends; its alerts' words say so)
        self.state = AlertState(db)
        self.outbox = dispatcher.outbox
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.clock = clock
        self.explorers = explorers or {}
        # Per chain, the assets whose price is untrusted at its last evaluation (asset ->
        # why): a cascade's figures rest on those prices too.
        self.untrusted: dict[str, dict[str, str]] = {}
        self.silences = Silences(db)
        self.config = config
        # Watched accounts without a position: per source, the watched keys its latest full
        # evaluation holds a position for; the verdict waits until every source has spoken.
        self.sources = None if sources is None else set(sources)
        self._ticked: set[str] | None = None  # the chain protocols `tick` named (no tick: None)
        # Each chain protocol's index lag at the last tick (no tick: None): a watchlist's
        # verdict waits for its indexes (`_indexes_complete`).
        self._index_lags: dict[str, int | None] | None = None
        self._held: dict[str, set[str]] = {}
        self._without: set[tuple[str, str]] = set()
        # (the protocols the config file added or changed at a reload, waiting for a restart:
        # name -> what changed; `waiting_for_restart`)
        self._restart_waiting: dict[str, str] = {}
        self.configure(config)
        self._pending: list[tuple[str, Alert]] = []
        # The executors' outcomes met since the last commit (opportunity key, outcome), and
        # where to record them told (the journal's `mark_told`, set by the daemon).
        self._told_outcomes: list[tuple[str, str]] = []
        self.mark_told: Callable[[Sequence[tuple[str, str]]], Awaitable[None]] | None = None
        self._suppressed: set[str] = set()  # fingerprints already counted as suppressed
        self._rpc_down_since: dict[str, float] = {}
        dispatcher.firing_provider = self.resent
        dispatcher.silenced = self._silence_of

    @classmethod
    async def open(cls, db: Database, config: AlertsConfig, dispatcher: Dispatcher,
                   metrics: Metrics, **kwargs: Any) -> AlertEngine:
        engine = cls(db, config, dispatcher, metrics, **kwargs)
        await engine.load()
        return engine

    async def load(self) -> None:
        """Read what was told and the stored silences (at start; and when this replica becomes
        the leader: what the last one told, so nothing is told twice). The state is read
        last: from its read to the end nothing else runs, and the promotion tells from there
        (`AlertState.load`)."""
        await self.silences.refresh(self.clock())
        await self.state.load()
        self._pending = []
        self._resolve_unwatched()
        self._resolve_unconfigured()
        self._refresh_firing_gauge()

    # --- configuration (SIGHUP swaps it) -----------------------------------------------------

    def configure(self, config: AlertsConfig) -> None:
        self.config = config
        self.routes = {r.name: r for r in config.routes}
        self.silences.set_configured((s.matchers, s.comment) for s in config.silences)
        self.watched: dict[str, list[WatchlistConfig]] = {}
        self.checksummed: dict[str, str] = {}
        for w in config.watchlists:
            for account in w.accounts:
                self.watched.setdefault(account.lower(), []).append(w)
                self.checksummed[account.lower()] = account
        self._held = {}  # (the held sets name only the accounts watched when they were made)
        # (an account taken out of its watchlist is forgotten, not "found": its removal was
        # logged as watchlist.position_found, a by-hand trial)
        listed = {(w.name, a) for w in config.watchlists for a in w.accounts}
        names = {w.name for w in config.watchlists}
        self._without = {(w, a) for w, a in self._without if (w, a) in listed}
        self._resolve_unwatched()  # (SIGHUP; at start the state is empty until `load`)
        for gauge in (self.metrics.watched_without_position, self.metrics.watched_never_held):
            for sample in [s for m in gauge.collect() for s in m.samples]:
                if sample.labels["watchlist"] not in names:
                    gauge.remove(sample.labels["watchlist"])

    def waiting_for_restart(self, protocols: dict[str, str]) -> None:
        """The protocols a reload found added or changed in the file (name -> what), not
        loaded until a restart: a watched account without a position may hold it there. Its
        alert said "check the address (a typo...)" of an account in a Morpho market the
        reload had added and no restart had loaded yet (a by-hand trial)."""
        self._restart_waiting = dict(protocols)

    def _restart_note(self, w: WatchlistConfig) -> str | None:
        """What waits for a restart among the protocols `w` looks at, said; None if none."""
        waiting = {name: what for name, what in self._restart_waiting.items()
                   if what != "removed" and (w.protocols is None or name in w.protocols)}
        if not waiting:
            return None
        return ("the config file's protocol changes (" + "; ".join(
            f"{name}: {what}" for name, what in sorted(waiting.items()))
            + ") wait for a restart: keeperd does not watch them until then")

    def _resolve_unwatched(self) -> None:
        """Alerts of a watchlist entry the config no longer has (the list, or the account in
        it) stayed firing for good, across restarts and reloads: nothing evaluates them any
        more. They are resolved, told as such."""
        watched = {(w.name, a.lower()) for w in self.config.watchlists for a in w.accounts}
        gone = []
        for rule in ("position_health", "watched_without_position"):
            for route, labels in self.state.routes_of(rule):
                keys = account_keys(labels.get("account", ""))
                if not any((labels.get("watchlist"), k) in watched for k in keys):
                    gone.append(Condition(
                        rule, route, dict(labels), None, None, None, 0.0,
                        summary="", resolved_summary=f"{labels.get('watchlist')}: "
                        f"{labels.get('account')} is no longer watched (removed from the "
                        "config)"))
        if gone:
            log.info("alerts.unwatched_resolved", alerts=len(gone))
            self._evaluate(gone, None, None)

    def _resolve_unconfigured(self) -> None:
        """Alerts of a protocol the config no longer has (a market held, a shortfall, a
        pause) stayed firing for good, in `alerts list` and `status`: nothing evaluates them
        any more (a by-hand trial removed Curie). They are resolved at start, told as such.
        (Watched positions are the watchlists': `_resolve_unwatched`.)"""
        if self.sources is None:
            return
        from keeperd.alerts.catalog import RULES

        gone = []
        for rule, info in RULES.items():
            if "protocol" not in info.labels or rule in ("position_health",
                                                         "position_liquidated", "liquidation"):
                continue
            for route, labels in self.state.routes_of(rule):
                protocol = labels.get("protocol")
                if protocol is not None and protocol not in self.sources:
                    gone.append(Condition(
                        rule, route, dict(labels), None, None, None, 0.0, summary="",
                        resolved_summary=f"{protocol}: no longer configured, so no longer "
                        "evaluated (its positions, and the keeper's own, are not watched)"))
        if gone:
            log.info("alerts.unconfigured_resolved", alerts=len(gone))
            self._evaluate(gone, None, None)

    @classmethod
    def sources_of(cls, config: Config) -> list[str]:
        return [p.name for p in config.protocols]

    @classmethod
    def explorers_of(cls, config: Config) -> dict[str, str]:
        return {c.name: c.explorer_url.rstrip("/") for c in config.chains if c.explorer_url}

    def repeat_interval(self, route: str) -> float:
        r = self.routes.get(route)
        return r.repeat_interval_s if r else 4 * 3600

    def _link(self, chain: str | None, kind: str, value: str) -> str | None:
        base = self.explorers.get(chain or "")
        return f"{base}/{kind}/{value}" if base else None

    # --- inputs -------------------------------------------------------------------------------

    async def on_scan(self, result: Any, *, chain: str, tripped: dict[str, str],
                      protocol: str | None = None, held: str | None = None,
                      verifying: str | None = None,
                      shortfalls: dict[str, Any] | None = None,
                      liquidations: Iterable[LiquidationSeen] = (),
                      action: str = ACTION_POSITION,
                      capital_fix: str | None = None,
                      names: Mapping[str, str] | None = None) -> None:
        """One evaluation of a protocol, whichever. `tripped`: asset -> why its price is
        untrusted (`names`: what to call a key that is not a symbol, a market's oracle);
        `held`: why its liquidations are held (None: they are not); `verifying`: why they
        are sent only on the chain's word (rules keeperd does not know); `shortfalls`:
        debt asset -> what the keeper's balance lacked; `liquidations`: its liquidation events
        of watched accounts since the last evaluation (decoded by the plug-in); `action`: what
        a watched borrower should do (the plug-in's words); `capital_fix`: what covers a
        shortfall for this protocol (the executor's words: setting `capital: auto` helps only
        where the protocol has a capital-free path and it is not set already)."""
        if result.partial:
            return
        self.untrusted[chain] = dict(tripped)  # (the cascade's alerts are annotated by it)
        protocol = protocol or result.protocol
        rows = watched_rows(result.view, protocol, chain, self.watched, action,
                            lambda a: self._link(chain, "address", a))
        self._holding(protocol, rows)
        # (a watched account's liquidation is told before its health alert resolves: the
        # holder was told "recovered" first, then "liquidated")
        for seen in liquidations:
            self._liquidated(chain, protocol, seen, result.block, rows, result.view.unread)
        conditions = self._watchlist_conditions(rows, tripped, names)
        conditions += self._gone_conditions(protocol, chain, conditions, result.view.unread)
        conditions += self._held_conditions(chain, protocol, held)
        conditions += self._verification_conditions(chain, protocol, verifying, held)
        if shortfalls is not None:
            conditions += self._capital_conditions(chain, protocol, shortfalls, capital_fix)
        self._evaluate(conditions, chain, result.block)
        self._oracle_conditions(tripped, chain, result.block, names or {})
        await self.commit()

    async def on_perp_accounts(self, venue: str, accounts: list[Any],
                               maintenance_moves: bool = True, unread: Iterable[str] = ()
                               ) -> None:
        """Watched perp accounts: the same watchlist rule, health = equity / maintenance.
        `unread`: the accounts the venue's answer did not let the poll read — unknown, not
        healthy and not gone: their alerts are kept as they were (`venue_down` says them)."""
        rows = []
        unknown = set(unread)
        for account in accounts:
            if self._watch_key(account.account) is None:
                continue
            health = float(account.health)
            if np.isnan(health):  # (not a reading: a NaN read as no risk resolved alerts)
                log.warning("perps.health_unread", venue=venue, account=account.account,
                            meaning="kept at its last alert state")
                unknown.add(account.account)
                continue
            positions = sorted(account.positions, key=lambda p: -p.notional)
            details = {
                "margin_ratio": None if not np.isfinite(health) or health == 0
                else round(1 / health, 6),
                "collateral_usd": round(account.account_value, 2),
                "debt_usd": round(account.notional, 2),
                "maintenance_margin_usd": round(account.maintenance_margin, 2),
                "main_is_position": True,  # (a perp account: rendered as equity, notional)
                "positions": [{"coin": p.coin, "size": p.size, "mark_price": p.mark_price,
                               "liquidation_price": account.liquidation_price(
                                   p, maintenance_moves=maintenance_moves)}
                              for p in positions[:5]],
            }
            near = ", ".join(f"{p['coin']} liquidated at {p['liquidation_price']:,.4g}"
                             for p in details["positions"] if p["liquidation_price"] is not None)
            rows.append(WatchedRow(
                venue, None, account.account, {}, health, frozenset(), details,
                where=f"{account.account} on {venue}", measure="margin health",
                measure_note=" (equity / maintenance)", tail=f"; {near}" if near else "",
                action="Add margin or reduce the position: at health 1.0 the venue "
                       "liquidates it."))
        keys = {k for a in unknown if (k := self._watch_key(a)) is not None}
        self._holding(venue, rows, keys)
        conditions = self._watchlist_conditions(rows, {})
        # (an unread account, or a sub-account of its holder, is unknown, not gone)
        kept = [{"account": labels["account"]} for _, labels in
                self.state.routes_of("position_health")
                if labels.get("protocol") == venue
                and self._watch_key(labels.get("account", "")) in keys]
        self._evaluate(conditions + self._gone_conditions(venue, None, conditions, kept),
                       None, None)
        await self.commit()

    def _watchlist_conditions(self, rows: Iterable[WatchedRow], tripped: dict[str, str],
                              names: Mapping[str, str] | None = None) -> list[Condition]:
        """The watchlist rule, one for every protocol and venue: per watched position and
        watchlist, its health against the list's levels (with hysteresis and escalation);
        inhibited while a price it rests on is untrusted (`names`: what to call a key that
        is not a symbol, a market's oracle)."""
        names = names or {}
        out: list[Condition] = []
        for row in rows:
            account = self.checksummed.get(row.account.lower(), row.account)
            # (the holder's words: the protocol liquidates at its oracle's price whatever
            # keeperd thinks of it, so never "do not act" — `alerts/inhibition.py`)
            inhibited = tuple(holder_note(f"{names[a]} ({a})" if a in names else a, tripped[a])
                              for a in sorted(row.assets) if a in tripped)
            health = row.health
            details = {"health_factor": None if not np.isfinite(health) else round(health, 6),
                       **row.details}
            for w in self.watched.get(self._watch_key(row.account) or "", []):
                if w.protocols is not None and row.protocol not in w.protocols:
                    continue
                labels = {**({"chain": row.chain} if row.chain else {}),
                          "protocol": row.protocol, "account": account, **row.labels,
                          "watchlist": w.name}
                levels, severity, limit, hf = self._watch_level(w, labels, health)
                out.append(Condition(
                    "position_health", w.route, labels, severity,
                    None if not np.isfinite(health) else health, levels,
                    self.repeat_interval(w.route),
                    summary=f"{w.name}: {row.where} has {row.measure} {hf}{row.measure_note}, "
                            f"below {'critical' if severity == 'critical' else 'warn'} "
                            f"{limit}{row.tail}"
                            # (below 1.0 the holder must read "now", not infer it)
                            + ("; under 1.0: it can be liquidated now"
                               if health < LIQUIDATABLE_BELOW else ""),
                    resolved_summary=(
                        f"{w.name}: {row.where} holds no position any more (closed, "
                        "repaid or liquidated)" if not holds_position(
                            row.details["collateral_usd"], row.details["debt_usd"])
                        # (no debt: "recovered: health ∞" read as good news after a
                        # liquidation that took it all)
                        else f"{w.name}: {row.where} has nothing at risk any more (no debt "
                             "or open position: repaid, closed or liquidated)"
                        if not row.details["debt_usd"]
                        else f"{w.name}: {row.where} recovered: {row.measure} {hf} (warn at "
                             f"{w.warn})"),
                    action=row.action, details=details, inhibited_by=inhibited,
                    holdable=False))
        return out

    def _gone_conditions(self, source: str, chain: str | None, present: list[Condition],
                         unread: Iterable[Mapping[str, str]] = ()) -> list[Condition]:
        """The watched positions of `source` whose health alert fires and that its evaluation
        no longer has a row for (a Morpho market position closed by its liquidation): resolved.
        Nothing evaluated them any more, and the holder's critical alert fired on, its last
        health repeated, after the position was gone (a by-hand trial). Not those where the
        evaluation could not read (`HealthView.unread`: a market whose oracle did not answer):
        unknown is not gone, and an endpoint failing that read must not silence the alert."""
        told = {fingerprint(c.rule, c.labels) for c in present}
        unknown = [dict(u) for u in unread]
        out = []
        for route, labels in self.state.routes_of("position_health"):
            if labels.get("protocol") != source or labels.get("chain") != chain \
                    or fingerprint("position_health", labels) in told \
                    or any(u.items() <= labels.items() for u in unknown):
                continue
            out.append(Condition(
                "position_health", route, dict(labels), None, None, None, 0.0, summary="",
                resolved_summary=f"{labels.get('watchlist')}: {labels.get('account')} on "
                                 f"{source} holds no position there any more (closed, repaid "
                                 "or liquidated)"))
        return out

    def _watch_key(self, account: str) -> str | None:
        """The watched entry an account belongs to: itself, or the holder behind a venue's
        sub-account (Hyperliquid `user@dex`, a dYdX child subaccount `address/128`)."""
        for candidate in account_keys(account):
            if candidate in self.watched:
                return candidate
        return None

    def _holding(self, source: str, rows: Iterable[WatchedRow],
                 unread: Iterable[str] = ()) -> None:
        """A full evaluation of `source` (a protocol or a venue): which watched accounts it
        holds a position for (`unread`: watched keys it could not read, held as before)."""
        before = self._held.get(source, set())
        self._held[source] = {key for r in rows
                              if holds_position(r.details["collateral_usd"], r.details["debt_usd"])
                              and (key := self._watch_key(r.account)) is not None
                              } | (before & set(unread))
        self._refresh_without()

    def _refresh_without(self) -> None:
        """keeperd_watched_without_position per watchlist, and a warning naming the accounts
        that no protocol the watchlist looks at holds a position for. An account is without
        position only if it is in none: the verdict on a watchlist waits until every one of
        its protocols has been evaluated (at start, and after a reload)."""
        if self.sources is None and self._ticked is None:
            return  # (not one tick yet: which chain protocols exist is unknown)
        known = self.sources if self.sources is not None else (
            (self._ticked or set()) | set(self._held))
        told: list[Condition] = []
        told_without: dict[str, set[str]] = {}  # (watchlist -> accounts told without one)
        for _, labels in self.state.routes_of("watched_without_position"):
            told_without.setdefault(labels.get("watchlist", ""), set()).add(
                labels.get("account", "").lower())
        for w in self.config.watchlists:
            scope = known if w.protocols is None else (
                known & set(w.protocols) if self.sources is not None else set(w.protocols))
            if not scope <= self._held.keys():
                continue
            missing = [a for a in w.accounts
                       if not any(a.lower() in self._held[s] for s in scope)]
            self.metrics.watched_without_position.labels(w.name).set(len(missing))
            new = [a for a in missing if (w.name, a) not in self._without]
            found = [a for w_, a in self._without if w_ == w.name and a not in missing]
            self._without = (self._without - {(w.name, a) for a in found}
                             | {(w.name, a) for a in new})
            had = {a.lower() for s in scope for a in self._held[s]}
            # (remembered in the state database: after a restart a liquidated watched account
            # was called a likely typo again)
            self.state.mark_held({a.lower() for a in w.accounts if a.lower() in had},
                                 self.clock())
            # (one that held a position here before was liquidated, repaid or closed: not a
            # typo — the demo's liquidated accounts were told to check their address)
            gone = [a for a in new if self.state.held_before(a.lower())]
            never = [a for a in new if not self.state.held_before(a.lower())]
            if gone:
                log.info("watchlist.position_gone", watchlist=w.name, accounts=gone,
                         protocols=sorted(scope),
                         meaning="these held a position here and hold none now (liquidated, "
                         "repaid or closed): nothing to alert on until they open one")
            if never:
                waiting = self._restart_note(w)
                log.warning("watchlist.without_position", watchlist=w.name, accounts=never,
                            protocols=sorted(scope),
                            meaning="no position (collateral, debt or perp margin) in any of "
                            "these protocols: the account cannot alert",
                            fix=(f"{waiting}. If the position is there, restart keeperd; "
                                 "otherwise check the address (a typo reads as an empty "
                                 "account)") if waiting is not None else
                            "check the address (a typo reads as an empty account), or add "
                            "the protocol it has its position on")
            if found:
                log.info("watchlist.position_found", watchlist=w.name, accounts=found)
            lost = {a.lower() for a in missing if not self.state.held_before(a.lower())}
            self.metrics.watched_never_held.labels(w.name).set(len(lost))
            if scope and self._indexes_complete(scope):
                # (only the accounts without a position, and those told so before: one
                # condition per watched account every scan of every protocol cost 14 ms a
                # call at 2,000 accounts, on the loop — a review)
                firing = told_without.get(w.name, set())
                told.extend(self._without_condition(w, a, sorted(scope), a.lower() in lost)
                            for a in w.accounts if a.lower() in lost | firing)
        if told:
            self._evaluate(told, None, None)

    def _indexes_complete(self, scope: set[str]) -> bool:
        """Whether the account index of every chain protocol in `scope` is caught up (the
        last tick's lag within `rules.index_lag.warn_blocks`): an account is in a view only
        once its index has found it, and a first index of years of logs broken partway made
        real holders look like typos (a review). None until the first tick."""
        if self._index_lags is None:
            return False
        limit = self.config.rules.index_lag.warn_blocks
        return all((lag := self._index_lags.get(p, 0)) is not None and lag <= limit
                   for p in scope)

    def _without_condition(self, w: WatchlistConfig, account: str, protocols: list[str],
                           without: bool) -> Condition:
        """`watched_without_position`, to the watchlist's own route: an account that no
        protocol of its list holds a position for and never did cannot alert — a typo, most
        often; it was a log line and a gauge no rule watched, and a holder who reads only
        their chat never learnt that their watchlist watched nothing (a by-hand trial)."""
        name = self.checksummed.get(account.lower(), account)
        where = ", ".join(protocols)
        waiting = self._restart_note(w)
        action = ("Check the address (a mistyped one reads as an empty account)"
                  + (", or add the protocol it holds its position on to the watchlist's "
                     "protocols." if w.protocols is not None else
                     ", or configure the protocol it holds its position on."))
        if waiting is not None:  # (not blamed on a typo while the position may be there)
            action = (f"{waiting[0].upper()}{waiting[1:]}. If {name}'s position is there, "
                      "restart keeperd to watch it (systemctl restart keeperd); otherwise "
                      "check the address (a mistyped one reads as an empty account).")
        return Condition(
            "watched_without_position", w.route, {"watchlist": w.name, "account": name},
            "warning" if without else None, None, None, self.repeat_interval(w.route),
            summary=f"{w.name}: {name} holds no position on {where}, and has not since it was "
                    "listed: nothing about it can be told",
            resolved_summary=f"{w.name}: {name} holds a position now: it is watched",
            action=action)

    def severity_for(self, rule: str, labels: dict[str, str], value: float,
                     levels: Levels) -> str | None:
        """The severity `value` deserves, with hysteresis against what was last sent for the
        alert these labels name (None for a non-finite value: nothing to measure)."""
        if not np.isfinite(value):
            return None
        told = self._told(fingerprint(rule, labels))
        return classify(value, levels, told.severity if told else None)

    def _watch_level(self, w: WatchlistConfig, labels: dict[str, str], health: float
                     ) -> tuple[Levels, str | None, float, str]:
        """A watchlist's levels, the severity `health` deserves, the threshold it is under,
        and the health as text."""
        levels = Levels(w.warn, w.critical, "below", w.clear_margin, w.escalation_step,
                        edge=LIQUIDATABLE_BELOW)
        severity = self.severity_for("position_health", labels, health, levels)
        limit = w.critical if severity == "critical" else w.warn
        # (below zero: a perp account whose value is negative — "health -1.1451" read as a
        # glitch, a by-hand trial)
        text = ("∞" if not np.isfinite(health) else
                f"{health:.4f} (below zero: the account owes more than it holds)"
                if health < 0 else f"{health:.4f}")
        return levels, severity, limit, text

    def watched_accounts(self) -> list[str]:
        return [self.checksummed[a] for a in self.watched]

    @staticmethod
    def _left_after(seen: LiquidationSeen, rows: Sequence[WatchedRow],
                    unread: Iterable[Mapping[str, str]] = ()) -> str:
        """What a liquidated position is left with at the evaluated block, in the holder's
        words: it said "may still be at risk" of a position whose whole debt was repaid, and
        never the health a partial liquidation left (the alert de-escalates without a word).
        A row is the event's position when the labels it has agree (Curie's rows are whole
        accounts; its events name a market); one the evaluation could not read (`unread`)
        is unknown, not gone."""
        def same(labels: Mapping[str, str]) -> bool:
            return all(labels[k] == v for k, v in seen.labels.items() if k in labels)

        mine = [r for r in rows if r.account.lower() == seen.account.lower() and same(r.labels)]
        if not mine:
            if any(same(u) and u for u in unread):
                return ("It could not be read at this block (its market's state or oracle "
                        "did not answer): check its health.")
            return "Nothing is left of the position there."
        perp = any(r.details.get("main_is_position") for r in mine)
        debt = sum(float(r.details.get("debt_usd") or 0.0) for r in mine)
        collateral = sum(float(r.details.get("collateral_usd") or 0.0) for r in mine)
        if debt <= 0 and not perp and collateral < 0.01:
            # (every collateral seized and no debt left: what it did not cover was written
            # off — Aave's deficit, a Morpho market's lenders' loss — not repaid: "its whole
            # debt was repaid" of $97k written off, a by-hand trial)
            return ("All its collateral was seized and no debt is left there: any debt the "
                    "collateral did not cover was written off by the protocol, not repaid. "
                    "Nothing is left at risk there.")
        health = min(r.health for r in mine)
        if debt <= 0 and perp and np.isfinite(health):
            # (Curie: no position left, but a non-USDC margin still under what it owes
            # against it may be liquidated on its own; "No open position is left" was said of
            # such an account, a by-hand trial)
            return (f"No open position is left there, but its margin is still at risk: health "
                    f"{health:.4f} now (below 1.0 its collateral may be liquidated): add USDC "
                    "margin or repay what it owes.")
        if debt <= 0:
            return ("No open position is left there." if perp else
                    f"Its whole debt was repaid: nothing is left at risk there (collateral "
                    f"${collateral:,.2f} left, yours to withdraw).")
        return (f"What is left: {'open notional' if perp else 'debt'} ${debt:,.2f}, health "
                f"{health:.4f} now (below 1.0 it may be liquidated again): "
                + ("add margin or reduce the position." if perp
                   else "add collateral or repay."))

    def _liquidated(self, chain: str, protocol: str, seen: LiquidationSeen, block: int,
                    rows: Sequence[WatchedRow] = (),
                    unread: Iterable[Mapping[str, str]] = ()) -> None:
        account_lower = seen.account.lower()
        for w in self.watched.get(account_lower, []):
            if w.protocols is not None and protocol not in w.protocols:
                continue
            account = self.checksummed[account_lower]
            labels = {"chain": chain, "protocol": protocol, "account": account,
                      "watchlist": w.name}
            self._emit(w.route, Alert(
                "position_liquidated", "critical", "event", labels,
                f"{w.name}: {account} on {protocol} was liquidated: {seen.summary}",
                action=self._left_after(seen, rows, unread),
                details={**seen.details, "tx_hash": seen.tx_hash,
                         "explorer_url": self._link(chain, "tx", seen.tx_hash)},
                chain=chain, block=seen.block or block, starts_at=self.clock(),
                key=f"position_liquidated:{seen.tx_hash}:{seen.log_index}:{w.name}"))

    def cursor(self, name: str) -> int | None:
        """Where a log follower feeding this engine stopped (rewound on reorgs)."""
        return self.state.cursor(name)

    def set_cursor(self, name: str, block: int) -> None:
        self.state.set_cursor(name, block)

    def _held_conditions(self, chain: str, protocol: str, held: str | None) -> list[Condition]:
        rule = self.config.rules.liquidations_held
        route = self.config.route_for("liquidations_held")
        if not rule.enabled or route is None:
            return []
        return [Condition(
            "liquidations_held", route, {"chain": chain, "protocol": protocol},
            "critical" if held else None, None, None, self.repeat_interval(route),
            summary=f"liquidations on {protocol} ({chain}) are held: {held}",
            resolved_summary=f"liquidations on {protocol} ({chain}) resume",
            action="Positions are still evaluated and alerted on; keeperd sends nothing on "
                   "this market until the cause above is cleared.")]

    def _verification_conditions(self, chain: str, protocol: str, why: str | None,
                                 held: str | None = None) -> list[Condition]:
        rule = self.config.rules.revision_unverified
        route = self.config.route_for("revision_unverified")
        if not rule.enabled or route is None:
            return []
        action = ("Liquidations go on, each sent only when the chain confirms it in a "
                  "simulation (the pool's own health below 1, a profitable outcome). Check "
                  "the upgrade's release notes; a keeperd that knows the revision evaluates "
                  "it exactly again. To send nothing meanwhile, set unknown_revision: hold."
                  if self.sends else
                  "keeperd sends nothing in this mode; positions are evaluated with the "
                  "nearest rules it knows, so health figures and alerts may be off by what the "
                  "upgrade changed. Check the upgrade's release notes.")
        return [Condition(
            "revision_unverified", route, {"chain": chain, "protocol": protocol},
            "warning" if why else None, None, None, self.repeat_interval(route),
            summary=f"{protocol} ({chain}) runs rules keeperd does not know: {why}",
            # (a restart under unknown_revision: hold said "keeperd knows the rules again"
            # of a revision it still did not know, a by-hand trial)
            resolved_summary=(f"{protocol} ({chain}): its liquidations are held now, not "
                              f"verified ({held[:600]})" if held else
                              f"keeperd knows the rules {protocol} ({chain}) runs again"),
            action=action, retell_on_change=True)]

    def _capital_conditions(self, chain: str, protocol: str, shortfalls: dict[str, Any],
                            fix: str | None = None) -> list[Condition]:
        rule = self.config.rules.capital_shortfall
        route = self.config.route_for("capital_shortfall")
        if not rule.enabled or route is None:
            return []
        by_symbol = {s.symbol: s for s in shortfalls.values()}
        known = {labels["asset"] for labels in self.state.labels_of("capital_shortfall")
                 if labels.get("protocol") == protocol}
        conditions = []
        for symbol in sorted(known | set(by_symbol)):
            s = by_symbol.get(symbol)
            conditions.append(Condition(
                "capital_shortfall", route, {"chain": chain, "protocol": protocol,
                                             "asset": symbol},
                "warning" if s else None, s.profit_forgone_usd if s else None,
                # (told again once the profit forgone has doubled since: a crash's growing
                # shortfall kept its first, small figure until the repeat interval)
                Levels(0.0, direction="above", escalation_ratio=SHORTFALL_RETELL_RATIO),
                self.repeat_interval(route),
                summary=(f"the keeper lacks {_amount(s.missing_tokens)} {symbol} on {protocol}: "
                         f"{s.opportunities} liquidation(s) worth ${s.profit_forgone_usd:,.2f} "
                         "not sent") if s else "",
                # (neutral: the balance may not have moved — the positions were liquidated by
                # others, or recovered: "covers again" was told of an unchanged balance, a trial)
                resolved_summary=f"no liquidation on {protocol} is short of {symbol} now "
                                 "(the keeper's balance covers them, or none is left)",
                action=fix or "Fund the keeper with the debt asset.",
                details={"missing": s.missing_tokens, "opportunities": s.opportunities,
                         "profit_forgone_usd": round(s.profit_forgone_usd, 2)} if s else None))
        return conditions

    def _oracle_conditions(self, tripped: dict[str, str], chain: str, block: int,
                           names: Mapping[str, str]) -> None:
        """`tripped`: this chain's paused assets. One alert per (chain, asset): another
        chain's trip of the same symbol is neither resolved nor repeated by this one's scans.
        An alert told before alerts named their chain (labels without one) resolves. A
        market's oracle is told by its name beside its key (`names`): its resolution said
        only `morpho:0x…` (a by-hand trial)."""
        rule = self.config.rules.oracle
        route = self.config.route_for("oracle")
        if not rule.enabled or route is None:
            return
        told = self.state.labels_of("oracle")
        known = {labels["asset"] for labels in told if labels.get("chain") == chain}
        legacy = sorted({labels["asset"] for labels in told if "chain" not in labels})
        conditions = []
        for asset in sorted(known | set(tripped)):
            reason = tripped.get(asset)
            subject = f"{names[asset]} ({asset})" if asset in names else asset
            conditions.append(Condition(
                "oracle", route, {"chain": chain, "asset": asset},
                "critical" if reason else None, None, None, self.repeat_interval(route),
                summary=f"{subject} price untrusted on {chain}, liquidations there that "
                        f"depend on it are paused: {reason}",
                resolved_summary=f"{subject} price trusted again on {chain}; liquidations "
                                 "resume",
                action="Check the feed and the reference prices; `keeperd breaker list` shows "
                       "why, `keeperd breaker reset ASSET` resumes by hand.",
                retell_when=_reason_words))
        conditions += [Condition(
            "oracle", route, {"asset": asset}, None, None, None, self.repeat_interval(route),
            summary="", resolved_summary=f"{asset}: this alert is now told per chain",
            action="") for asset in legacy]
        self._evaluate(conditions, chain, block)

    def on_source_changed(self, asset: str, detail: str, jump: str | None, block: int, *,
                          chain: str) -> None:
        """A protocol's price source of `asset` replaced (the price watch's `source_changed`):
        one event, queued for the block's commit. Governance's `setAssetSources` moves every
        position of the asset at once; it was a Prometheus alert alone, and a WETH source
        swapped to a feed 29 % away, followed by 56 liquidations, reached no one's phone (a
        by-hand trial)."""
        rule = self.config.rules.oracle
        route = self.config.route_for("oracle")
        if not rule.enabled or route is None:
            return
        self._emit(route, Alert(
            "oracle", "critical" if jump else "warning", "event",
            {"chain": chain, "asset": asset, "event": "source_changed"},
            f"{asset}'s price source on {chain} was replaced ({detail})"
            + (f"; the new source's price is a jump: {jump}" if jump else ""),
            action="A protocol's governance (or whoever holds its oracle's admin) replaced the "
                   "feed positions are priced by: check that it is the change announced. "
                   "keeperd judges the new source as any other (staleness, jumps, reference "
                   "prices); `keeperd breaker trip ASSET` pauses liquidations on it by hand."
                   + (" Being this far from the old, it checks no other protocol's market "
                      "oracle (Morpho's) until it agrees with another price of the asset: "
                      "those markets go unchecked meanwhile unless chains[].reference_feeds "
                      "or oracles.references price the asset." if jump else ""),
            details={"change": detail, **({"jump": jump} if jump else {})},
            chain=chain, block=block, starts_at=self.clock(),
            key=f"oracle:{chain}:{asset}:source_changed:{block}"))

    def on_liquidation(self, e: ExecutionEvent) -> None:
        """The executor's outcomes, one event each: queued, written by the executor's
        `events_flush` (this engine's `commit`) once its block's work is done."""
        event, chain, protocol, account = e.kind, e.chain, e.protocol, e.account
        opportunity, block, details = e.opportunity, e.block, e.details
        if event in TOLD_OUTCOMES:  # (told, or not to be told: either way, not again)
            self._told_outcomes.append((opportunity, event))
        rule = self.config.rules.liquidation
        route = self.config.route_for("liquidation")
        if not rule.enabled or route is None or event not in _LIQUIDATION_EVENTS:
            return
        severity, verb, action = _LIQUIDATION_EVENTS[event]
        if event == "included" and details.get("lost_money"):
            # (24 included at a $254k loss were info events, a by-hand trial)
            severity, verb, action = "critical", "included AT A LOSS", (
                f"{details['lost_money']} (expected ${details.get('expected_profit_usd', 0):,.2f} "
                "profit). The protocol paid less than keeperd planned: check its code and "
                "price sources; keeperd pauses sending after keeper.revert_breaker_reverts "
                "such losses.")
        tx = details.get("tx_hash")
        profit = details.get("profit_usd")
        later = details.get("realised_later")
        money = ((f" (realised ${profit:,.2f} so far: {later})" if later
                  else f" (profit ${profit:,.2f})")
                 if isinstance(profit, int | float) else "")
        # (the pair: one account's liquidations of two debts read as one told twice, a trial)
        pair = (f" ({details['collateral']}/{details['debt']})"
                if details.get("collateral") and details.get("debt") else "")
        self._emit(route, Alert(
            "liquidation", severity, "event",
            {"chain": chain, "protocol": protocol, "account": account, "event": event},
            f"liquidation of {account}{pair} on {protocol} {verb}{money}",
            action=action,
            details={**details, "opportunity": opportunity,
                     "explorer_url": self._link(chain, "tx", tx) if tx else None},
            chain=chain, block=block, starts_at=self.clock(),
            key=f"liquidation:{opportunity}:{event}"))

    async def tick(self, *, rpc_healthy: dict[str, int],
                   index_lag: dict[tuple[str, str], int | None],
                   keeper_balance: dict[str, float | None],
                   key_conflicts: dict[str, KeyHold | None] | None = None,
                   send_pauses: dict[tuple[str, str], str | None] | None = None,
                   venues_failing: dict[str, tuple[float, str] | None] | None = None,
                   venues_unread: dict[str, dict[str, tuple[float, str]]] | None = None,
                   rpc_wrong_chain: dict[tuple[str, str], str | None] | None = None,
                   rpc_failing_for: dict[str, float] | None = None) -> None:
        """Operator conditions that need no block: all RPCs down (`rpc_healthy`: by chain,
        the endpoints in use; `rpc_failing_for`: how long every one has been failing, from
        its first failed request: `RpcPool.failing_for`), an endpoint of another
        network (`rpc_wrong_chain`: by chain and endpoint, its URL as logged when it is one,
        else None), index lag, gas balance, a perp venue's polls failing (`venues_failing`:
        since when, wall clock, and the last error; None: its last poll answered; and
        `venues_unread`: per venue, the accounts its answers did not let keeperd read, each
        since when and why) — and the silences added from the CLI since the last tick."""
        scanned = {p for _, p in index_lag}  # (the daemon's scanners: every chain protocol)
        limit = self.config.rules.index_lag.warn_blocks
        caught_up = {p for p, lag in (self._index_lags or {}).items()
                     if lag is not None and lag <= limit}
        self._index_lags = {p: lag for (_, p), lag in index_lag.items()}
        if self.sources is None and (self._ticked is None or not scanned <= self._ticked):
            self._ticked = (self._ticked or set()) | scanned
            self._refresh_without()
        elif {p for p, lag in self._index_lags.items()
              if lag is not None and lag <= limit} - caught_up:
            # (an index caught up: the verdict it held waits for no block — a quiet chain's
            # next one may be long in coming)
            self._refresh_without()
        now = self.clock()
        await self.silences.refresh(now)
        rules = self.config.rules
        conditions: list[Condition] = []
        route = self.config.route_for("rpc_down")
        for chain, healthy in rpc_healthy.items():
            if healthy > 0:
                self._rpc_down_since.pop(chain, None)
            else:
                self._rpc_down_since.setdefault(chain, now)
            # (down from the first failed request of each endpoint's run, not from its
            # bench: a hung node is benched after three timeouts, and rpc_down came ~25 s
            # after `after_s` — a by-hand trial)
            down_for = max(now - self._rpc_down_since.get(chain, now),
                           (rpc_failing_for or {}).get(chain, 0.0))
            if rules.rpc_down.enabled and route:
                down = down_for >= rules.rpc_down.after_s
                conditions.append(Condition(
                    "rpc_down", route, {"chain": chain}, "critical" if down else None, None,
                    None, self.repeat_interval(route),
                    summary=f"every RPC endpoint of {chain} has failed for {down_for:.0f} s: "
                            "keeperd is blind on this chain",
                    resolved_summary=f"{chain}: an RPC endpoint answers again",
                    action="Check the providers (keeperd_rpc_* metrics say which fail how); "
                           "add a fallback endpoint to chains[].rpc_urls."))
        route = self.config.route_for("rpc_wrong_chain")
        if rules.rpc_wrong_chain.enabled and route:
            # (a backup gone wrong used to stop the start; now it is kept out and keeperd runs
            # on the others, which must not go unnoticed: keeperd_rpc_endpoint_up is 0 too)
            for (chain, endpoint), url in (rpc_wrong_chain or {}).items():
                conditions.append(Condition(
                    "rpc_wrong_chain", route, {"chain": chain, "endpoint": endpoint},
                    "warning" if url else None, None, None, self.repeat_interval(route),
                    summary=f"{chain}: RPC endpoint {endpoint} ({url}) answers for another "
                            "network: it is never used, and keeperd runs on the others "
                            "without the redundancy configured",
                    resolved_summary=f"{chain}: RPC endpoint {endpoint} is on the chain again",
                    action=f"Point chains[].rpc_urls[{endpoint}] at the right network (or "
                           "remove it), then restart keeperd."))
        route = self.config.route_for("venue_down")
        if rules.venue_down.enabled and route:
            # (a holder's Telegram message before a Hyperliquid liquidation depends on it: the
            # polls' failures were a log line and a counter only)
            for venue in {**(venues_unread or {}), **(venues_failing or {})}:
                conditions.append(self._venue_condition(
                    venue, route, (venues_failing or {}).get(venue),
                    (venues_unread or {}).get(venue) or {}, now))
        route = self.config.route_for("key_in_use_elsewhere")
        if rules.key_in_use_elsewhere.enabled and route:
            for chain, key_hold in (key_conflicts or {}).items():
                conditions.append(Condition(
                    "key_in_use_elsewhere", route, {"chain": chain},
                    "critical" if key_hold else None, None, None, self.repeat_interval(route),
                    summary=f"{chain}: {key_hold.reason if key_hold else ''}",
                    resolved_summary=f"{chain}: the keeper's key is keeperd's alone again (no "
                                     "other sender for a while, its address runs no code "
                                     "not allowed): liquidations go on",
                    action=key_hold.action if key_hold else ""))
        route = self.config.route_for("sending_paused")
        if rules.sending_paused.enabled and route:
            for (chain, protocol), why in (send_pauses or {}).items():
                conditions.append(Condition(
                    "sending_paused", route, {"chain": chain, "protocol": protocol},
                    "critical" if why else None, None, None, self.repeat_interval(route),
                    summary=f"{protocol} ({chain}): sending paused: {why}",
                    resolved_summary=f"{protocol} ({chain}): sending resumed",
                    action="Evaluation and alerts go on. Reverts: check the RPC endpoints "
                           "(one may lie about the chain's state) and the reverted "
                           "transactions; the gas cap: raise keeper.max_gas_usd_per_hour if "
                           "the spend was right; an L1 data fee unread: check that the "
                           "endpoints answer eth_call to the chain's GasPriceOracle; the head "
                           "one endpoint's word: check each endpoint's head against a block "
                           "explorer and remove or fix the wrong one; liquidations at a loss: "
                           "the protocol paid less than keeperd planned — check its code (an "
                           "upgrade, an accepted revision) and its price sources before "
                           "sending resumes."))
        route = self.config.route_for("index_lag")
        if rules.index_lag.enabled and route:
            levels = Levels(rules.index_lag.warn_blocks, rules.index_lag.critical_blocks,
                            "above")
            for (chain, protocol), lag in index_lag.items():
                if lag is None:
                    continue
                labels = {"chain": chain, "protocol": protocol}
                sev = self.severity_for("index_lag", labels, float(lag), levels)
                conditions.append(Condition(
                    "index_lag", route, labels, sev, float(lag), levels,
                    self.repeat_interval(route),
                    summary=f"{protocol} index is {lag} blocks behind the head of {chain}",
                    resolved_summary=(f"{protocol} index back within "
                                      f"{rules.index_lag.warn_blocks} blocks of the head "
                                      f"({lag} behind)"),
                    action="Positions opened meanwhile are not watched yet; check eth_getLogs "
                           "on the RPC (range limits, errors)."))
        route = self.config.route_for("keeper_balance")
        rule = rules.keeper_balance
        if rule.enabled and route:
            levels = Levels(rule.warn_below, rule.critical_below, "below")
            for chain, balance in keeper_balance.items():
                if balance is None:
                    continue
                labels = {"chain": chain}
                sev = self.severity_for("keeper_balance", labels, balance, levels)
                conditions.append(Condition(
                    "keeper_balance", route, labels, sev, balance, levels,
                    self.repeat_interval(route),
                    summary=f"keeper gas balance on {chain} is {balance:.4f}, below "
                            f"{rule.critical_below if sev == 'critical' else rule.warn_below}",
                    resolved_summary=f"keeper gas balance on {chain} is {balance:.4f} again",
                    action="Top up the keeper address with the chain's native token: without "
                           "gas no liquidation can be sent."))
        self._evaluate(conditions, None, None)
        await self.commit()

    def _venue_condition(self, venue: str, route: str, failing: tuple[float, str] | None,
                         unread: Mapping[str, tuple[float, str]], now: float) -> Condition:
        """`venue_down`: for `after_s`, every poll of the venue failing, or some watched
        accounts unread (a number of theirs, or of a market they hold, that does not read).
        One alert per venue, the accounts named, not one per account: the fault is the
        venue's answer (one bad mark leaves every holder of the coin unread), the fix is the
        operator's, and the holders' own alerts are kept as they were — neither fired nor
        resolved on a number that does not read (a NaN mark resolved them all as "margin
        health ∞", and the poll counted ok). Blind since the earliest of the two: a venue
        that answers again with an account still unread has not recovered."""
        starts = ([failing[0]] if failing else []) + [since for since, _ in unread.values()]
        blind = bool(starts) and now - min(starts) >= self.config.rules.venue_down.after_s
        if failing is not None or not unread:
            down_for = now - failing[0] if failing else 0.0
            summary = (f"perp venue {venue}: every poll has failed for {down_for:.0f} s "
                       f"({failing[1] if failing else ''}): its watched accounts are not "
                       "read, and their health alerts cannot fire")
        else:
            names = "; ".join(f"{self.checksummed.get(a.lower(), a)} ({why})"
                              for a, (_, why) in sorted(unread.items()))
            summary = (f"perp venue {venue}: {len(unread)} watched account(s) unread for "
                       f"{now - min(starts):.0f} s — its answer does not read: {names}. "
                       "Their health alerts can neither fire nor resolve: each is kept as "
                       "it was")
        return Condition(
            "venue_down", route, {"venue": venue}, "critical" if blind else None, None, None,
            self.repeat_interval(route), summary=summary,
            resolved_summary=f"perp venue {venue}: its API answers again, and every "
                             "watched account reads",
            action="Check the venue's status and keeperd's access to its API_url "
                   "(keeperd_perp_polls_total{outcome=\"error\"}); a number the venue "
                   "answered that cannot be is named in the log (perps.account_unread, "
                   "perps.market_unread) and counted in keeperd_perp_accounts_unread. The "
                   "accounts are evaluated again at the next poll that reads them.",
            # (told again when which accounts are unread, or why, changes; not for seconds)
            retell_when=lambda said: said.partition(" — ")[2])

    async def observe(self, conditions: Iterable[Condition], chain: str | None = None,
                      block: int | None = None) -> None:
        """Threshold conditions from other parts of keeperd (the cascade engine)."""
        self._evaluate(list(conditions), chain, block)
        await self.commit()

    async def on_block_event(self, event: BlockEvent, chain: str) -> None:
        if isinstance(event, Reorg):
            await self.retract(chain, event.ancestor.number)

    # --- the lifecycle ------------------------------------------------------------------------

    def _told(self, fp: str) -> Told | None:
        return self.state.told(fp)

    def _inhibited_held(self, c: Condition) -> bool:
        """Whether `inhibition: hold` holds `c` now: an operator's alert resting on an
        untrusted price (a holder's is told, annotated, whatever the setting)."""
        return bool(c.inhibited_by) and c.holdable and self.config.inhibition == "hold"

    def _evaluate(self, conditions: list[Condition], chain: str | None, block: int | None
                  ) -> None:
        """The stages, per condition: lifecycle (pure `decide`: fire, escalate, repeat,
        resolve, or nothing new) → inhibition (`hold` drops an operator's while a price it
        rests on is untrusted; `annotate` sends it marked) → silences → the state told, and the
        notification queued; `commit` groups the queue per sink into the outbox."""
        now = self.clock()
        for c in conditions:
            alert = Alert(c.rule, c.severity or "info", "firing", c.labels, c.summary, c.action,
                          c.value, c.details or {}, chain, block, now, c.inhibited_by)
            fp = alert.fingerprint
            told = self._told(fp)
            decision = decide(told, c.severity, c.value, now, c.levels, c.repeat_s)
            if told is not None or decision is not None:  # (what is told or remembered)
                alert = self._scrubbed(alert)
            # (the summary as told: scrubbed, as the one remembered is)
            if decision is None and c.retell_on_change and told is not None \
                    and c.severity is not None \
                    and self.state.told_summary(fp) not in (None, alert.summary):
                decision = "firing"
            if decision is None and c.retell_when is not None and told is not None \
                    and c.severity is not None \
                    and (said := self.state.told_summary(fp)) is not None \
                    and c.retell_when(said) != c.retell_when(alert.summary):
                decision = "firing"
            if decision is None:
                new = after(told, None, c.severity, c.value, now)
                if new != told and new is not None:
                    self.state.set_severity(fp, new)
                held = self._inhibited_held(c)
                if told is not None and c.severity is not None and not held:  # (firing;
                    # a reading on an untrusted price held back, as its message would be)
                    self.state.refresh(fp, replace(alert, kind="firing",
                                                   starts_at=told.since).to_json())
                continue
            if decision == "resolved":
                assert told is not None
                # (no action: a resolution told a holder "add collateral or repay: below 1.0
                # anyone may liquidate" of a position that had recovered, a trial). At the
                # severity last told, the message it ends: after a silent recovery it said
                # "resolved warning" of a critical, which Alertmanager, its label another,
                # left firing when the replica that told it was gone.
                alert = replace(alert, severity=told.said, kind="resolved",
                                summary=self._scrubbed_text(c.resolved_summary),
                                starts_at=told.since, action="")
            else:
                alert = replace(alert, kind=decision,
                                starts_at=told.since if told else now)
                if self._inhibited_held(c):
                    self._suppress(alert, "inhibited")
                    continue
            if decision != "resolved" and self._silenced(alert):
                continue
            new = after(told, decision, c.severity, c.value, now)
            if new is None:
                self.state.forget(fp)
            else:
                self.state.record(fp, c.rule, c.route, new, chain, block, alert.to_json())
            self._suppressed.discard(fp)
            self._pending.append((c.route, alert))

    def _silence_of(self, queued: dict[str, Any]) -> str | None:
        """The silence muting a queued alert (its outbox payload) now, or None."""
        labels = {**(queued.get("labels") or {}), "rule": str(queued.get("rule")),
                  "severity": str(queued.get("severity"))}
        silence = self.silences.matching(labels, self.clock())
        return None if silence is None else str(silence.id or "config")

    def _silenced(self, alert: Alert) -> bool:
        labels = {**alert.labels, "rule": alert.rule, "severity": alert.severity}
        silence = self.silences.matching(labels, self.clock())
        if silence is None:
            return False
        self._suppress(alert, "silenced", silence=silence.id or "config")
        return True

    def _suppress(self, alert: Alert, reason: str, **fields: Any) -> None:
        if alert.fingerprint in self._suppressed:
            return
        self._suppressed.add(alert.fingerprint)
        self.metrics.alerts_suppressed.labels(alert.rule, reason).inc()
        log.info("alerts.suppressed", rule=alert.rule, reason=reason, labels=alert.labels,
                 **fields)

    def _scrubbed(self, alert: Alert) -> Alert:
        """The alert with every secret this process holds taken out of its words (the
        redactor's registered ones: the keeper's key, sinks' tokens, the database's password,
        the endpoints' and venues' keys). Each rule words its own alerts with none; this is the
        backstop behind them all, applied before an alert is remembered or queued, so the
        state, the outbox and every sink get the same scrubbed text."""
        r = self.redactor
        if r is None or not r.holds_secret(
                [alert.summary, alert.action, alert.labels, alert.details]):
            return alert
        # (the fingerprint stays the one of the labels as the rule gave them: the same thing
        # keeps its name whether or not a secret had to be taken out of it)
        return replace(alert, labels=r.scrub_alert(alert.labels),
                       summary=r.scrub_secrets(alert.summary),
                       action=r.scrub_secrets(alert.action),
                       details=r.scrub_alert(alert.details), key=alert.fingerprint)

    def _scrubbed_text(self, text: str) -> str:
        return text if self.redactor is None else self.redactor.scrub_secrets(text)

    def _emit(self, route: str, alert: Alert) -> None:
        """A one-off event (no lifecycle): silences apply, then it is queued."""
        alert = self._scrubbed(alert)
        if self._silenced(alert):
            return
        self._pending.append((route, alert))

    async def commit(self) -> bool:
        """Group what this input produced and write it to the outbox in one transaction with
        the state changes it made, and the executors' outcomes marked told in the journal
        (`mark_told`) in the same one. A standby replica writes none of it (the leader
        tells): False then. A write that fails keeps all of it for the next commit."""
        pending, self._pending = self._pending, []
        outcomes, self._told_outcomes = self._told_outcomes, []
        changes = self.state.take_changes()
        if not self.acting():
            # (a standby's, or a promotion's before it reads the alert state: untold in the
            # journal, told by the leader's next start or promotion)
            self._refresh_firing_gauge()
            return False
        queued = self._queue(pending)
        if changes or queued or outcomes:
            try:
                async with self.db.transaction():
                    await self.state.write(changes)
                    if queued:
                        await self.outbox.put_all(queued, self.clock())
                    # (the journal's word that they went, in the same transaction: killed
                    # between a settlement and its alert, a replica left its `included`
                    # untold for good — a by-hand trial)
                    if outcomes and self.mark_told is not None:
                        await self.mark_told(outcomes)
            except BaseException:
                self._pending[:0] = pending
                self._told_outcomes[:0] = outcomes
                self.state.give_back(changes)
                raise
            crash_point("alerts.committed")
        for route, alert in pending:
            self.metrics.alerts.labels(alert.rule, alert.kind).inc()
            log.info("alerts.notify", rule=alert.rule, kind=alert.kind,
                     severity=alert.severity, route=route, labels=alert.labels,
                     summary=alert.summary)
        if queued:
            self.dispatcher.wake()
        self._refresh_firing_gauge()
        return True

    def _queue(self, pending: list[tuple[str, Alert]]) -> list[Queued]:
        """Per route, per sink: the notifications (grouped for people, one per alert for
        machines)."""
        by_route: dict[str, list[Alert]] = {}
        for route, alert in pending:
            by_route.setdefault(route, []).append(alert)
        queued = []
        for route, alerts in by_route.items():
            sinks = self.dispatcher.route_sinks(route)
            if not sinks:
                log.error("alerts.no_such_route", route=route)
                continue
            for rt in sinks:
                for group in group_alerts(alerts, rt.sink.group):
                    blocks = [a.block for a in group if a.block is not None]
                    chains = {a.chain for a in group if a.chain}
                    queued.append(Queued(route, rt.sink_id, rt.sink.kind,
                                         [a.to_json() for a in group],
                                         next(iter(chains)) if len(chains) == 1 else None,
                                         max(blocks) if blocks else None))
        return queued

    # --- reorgs -------------------------------------------------------------------------------

    async def retract(self, chain: str, ancestor: int) -> None:
        """Blocks after `ancestor` are gone: notifications raised on them and not yet sent are
        withdrawn; those already sent get a retraction; the alert states they set are
        forgotten, so the next evaluation decides afresh on the surviving chain."""
        self.state.forget_after(chain, ancestor)
        if not self.acting():
            self.state.take_changes()
            return
        entries = await self.outbox.after_block(chain, ancestor)
        changes = self.state.take_changes()
        retractions = []
        async with self.db.transaction():
            await self.state.write(changes)
            for e in entries:
                if e.state == PENDING:
                    await self.outbox.retract(e.id)
                    for a in e.alerts:
                        self.metrics.alerts_suppressed.labels(a["rule"], "retracted").inc()
                elif e.state == DELIVERED and e.status == "firing":
                    retracted = []
                    for a in e.alerts:
                        a = dict(a, kind="retracted", status="resolved", retracted=True,
                                 summary=f"retracted (block {a.get('block')} was reorganised "
                                         f"away): {a['summary']}")
                        retracted.append(a)
                        self.metrics.alerts.labels(a["rule"], "retracted").inc()
                    retractions.append(Queued(e.route, e.sink, e.sink_kind, retracted,
                                              None, None))
            if retractions:
                await self.outbox.put_all(retractions, self.clock())
        if entries:
            log.warning("alerts.retracted", chain=chain, ancestor=ancestor,
                        withdrawn=sum(e.state == PENDING for e in entries),
                        retractions_sent=sum(e.state == DELIVERED for e in entries))
            self.dispatcher.wake()
        self._refresh_firing_gauge()

    # --- views --------------------------------------------------------------------------------

    def firing(self, route: str | None = None) -> list[dict[str, Any]]:
        return self.state.firing(route)

    def resent(self, route: str | None = None) -> list[dict[str, Any]]:
        """What an Alertmanager sink re-posts: the firing alerts no silence mutes now (a
        `keeperd silence` left Alertmanager's copy re-posted every minute, active for good —
        a trial; unsent, it ends at Alertmanager's resolve_timeout)."""
        return [a for a in self.state.firing(route) if self._silence_of(a) is None]

    def _refresh_firing_gauge(self) -> None:
        counts = self.state.counts()
        for (rule, severity), n in counts.items():
            self.metrics.alerts_firing.labels(rule, severity).set(n)
        for sample in [s for m in self.metrics.alerts_firing.collect() for s in m.samples]:
            key = (sample.labels["rule"], sample.labels["severity"])
            if key not in counts:
                self.metrics.alerts_firing.labels(*key).set(0)


def _amount(tokens: float) -> str:
    """A token amount for people: 1,200,650.5 not 1.20065e+06; small ones to 6 figures."""
    return f"{tokens:,.2f}".rstrip("0").rstrip(".") if tokens >= 1 else f"{tokens:.6g}"
