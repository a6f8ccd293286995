"""What the alert engine remembers, behind one store: per fingerprint what was last told
(severity, value, when, since when, the alert as sent), and the cursors of the log followers
that feed it. The engine, `keeperd alerts` and `keeperd status` read it through this class;
no SQL about alerts lives anywhere else (the outbox has its own, `outbox.py`).

The engine decides on every block for hundreds of fingerprints, so the state is held in memory
(`load` reads it whole) and what changed is written back by `flush`, inside the transaction that
also writes the notifications those changes produced: a crash leaves both or neither, never a
state that says "told" with no notification on its way (a lost alert until its repeat interval).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import structlog

from keeperd.alerts.lifecycle import Told
from keeperd.alerts.model import SEVERITIES
from keeperd.storage.db import Database

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Remembered:
    rule: str
    route: str
    told: Told
    chain: str | None
    block: int | None
    alert: dict[str, Any]


def _alert(text: object) -> dict[str, Any] | None:
    """A remembered alert's JSON, or None when it does not read as one."""
    try:
        found = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _heard(alert: dict[str, Any], severity: str) -> str | None:
    """The severity of the message a remembered row last told (its alert's), where it is not
    the row's `severity`: the row says the severity now, lowered by a silent recovery, and its
    message what was heard — a replica promoted read "warning" and told a fall back to
    critical again (a by-hand trial). What any keeperd wrote reads so: no migration."""
    said = alert.get("severity")
    return said if said in SEVERITIES and said != severity else None


@dataclass
class Changes:
    """What changed since the last flush: fingerprint -> its new row (None: forgotten)."""

    states: dict[str, Remembered | None]
    cursors: dict[str, int]
    held: dict[str, float] = field(default_factory=dict)  # account -> since (new ones)

    def __bool__(self) -> bool:
        return bool(self.states or self.cursors or self.held)


class AlertState:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._rows: dict[str, Remembered] = {}
        # What each firing alert says now, when that is not news (its value moved less than
        # a step): what a re-send to Alertmanager carries (it carried the first message's
        # text for hours: a trial). Memory only: after a restart, the told one until the
        # next evaluation.
        self._latest: dict[str, dict[str, Any]] = {}
        self._cursors: dict[str, int] = {}
        self._held: set[str] = set()
        self._changes = Changes({}, {})

    async def load(self) -> AlertState:
        """Read the whole state (at start, and when a replica becomes the leader: what the
        last leader told); changes not flushed are dropped. Everything is read first and
        replaced at once: an evaluation between two of the reads changed the new rows in
        memory only — a promoting replica tells nothing until this returns — and its leader
        started from a state no database held (a resolution gone unsaid, the next firing
        told again)."""
        rows = await self.db.fetch("SELECT fingerprint, rule, route, severity, value, told_at, "
                                   "since, chain, block, alert FROM alert_state")
        cursors = await self.db.fetch("SELECT name, block FROM alert_cursor")
        held = await self.db.fetch("SELECT account FROM watched_held")
        self._rows, unreadable = {}, {}
        for r in rows:
            alert = _alert(r[9])
            if alert is None:  # (told again as new: better than no start, and no alerts)
                unreadable[r[0]] = str(r[9])[:80]
                continue
            self._rows[r[0]] = Remembered(r[1], r[2], Told(r[3], r[4], r[5], r[6],
                                                           _heard(alert, r[3])), r[7], r[8],
                                          alert)
        if unreadable:
            log.warning("alerts.state_unreadable", rows=unreadable,
                        meaning="these alerts' remembered state does not read (a row no "
                                "keeperd wrote): each is told again as new if it fires")
        self._latest = {}  # (a replica promoted again: its old readings are not the state)
        self._cursors = {r[0]: int(r[1]) for r in cursors}
        self._held = {r[0] for r in held}
        self._changes = Changes({}, {})
        return self

    # --- watched accounts seen holding a position -------------------------------------------

    def held_before(self, account: str) -> bool:
        """Whether the watched `account` (lowercase) was ever seen holding a position."""
        return account in self._held

    def mark_held(self, accounts: set[str], now: float) -> None:
        for account in accounts - self._held:
            self._held.add(account)
            self._changes.held[account] = now

    # --- per fingerprint ------------------------------------------------------------------

    def told(self, fingerprint: str) -> Told | None:
        row = self._rows.get(fingerprint)
        return row.told if row else None

    def told_summary(self, fingerprint: str) -> str | None:
        """The summary of the message last told for it (None: not firing)."""
        row = self._rows.get(fingerprint)
        return str(row.alert.get("summary")) if row else None

    def set_severity(self, fingerprint: str, told: Told) -> None:
        """A move between levels that is not news (`lifecycle.after`): the message last told
        stays the row's, and says what was heard."""
        row = self._rows.get(fingerprint)
        if row is None:
            return
        self._put(fingerprint, Remembered(row.rule, row.route, told, row.chain, row.block,
                                          row.alert))

    def refresh(self, fingerprint: str, alert: dict[str, Any]) -> None:
        """What a firing alert says now, told or not (`_latest`), under the severity it was
        told with (a label to Alertmanager: a change would be another alert there)."""
        row = self._rows.get(fingerprint)
        if row is not None:
            self._latest[fingerprint] = {**alert,
                                         "severity": row.alert.get("severity", alert["severity"])}

    def forget(self, fingerprint: str) -> None:
        self._latest.pop(fingerprint, None)
        if self._rows.pop(fingerprint, None) is not None:
            self._changes.states[fingerprint] = None

    def record(self, fingerprint: str, rule: str, route: str, told: Told, chain: str | None,
               block: int | None, alert: dict[str, Any]) -> None:
        old = self._rows.get(fingerprint)
        since = old.told.since if old is not None else told.since  # kept, as an upsert would
        self._put(fingerprint, Remembered(rule, route, Told(told.severity, told.value, told.at,
                                                            since, told.heard), chain, block,
                                          alert))

    def _put(self, fingerprint: str, row: Remembered) -> None:
        self._latest.pop(fingerprint, None)
        self._rows[fingerprint] = row
        self._changes.states[fingerprint] = row

    # --- views ----------------------------------------------------------------------------

    def firing(self, route: str | None = None) -> list[dict[str, Any]]:
        """The alerts firing, oldest first, each as it reads now (`refresh`), else as last
        told."""
        rows = sorted(self._rows.items(), key=lambda kv: kv[1].told.since)
        return [self._latest.get(fp, r.alert) for fp, r in rows
                if route is None or r.route == route]

    def firing_now(self) -> list[tuple[dict[str, Any], str]]:
        """`firing`, each with its severity now: a position back from critical to warning
        is not told (lifecycle), and its last message still says critical."""
        rows = sorted(self._rows.values(), key=lambda r: r.told.since)
        return [(r.alert, r.told.severity) for r in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        """(rule, severity) -> how many fire."""
        out: dict[tuple[str, str], int] = {}
        for r in self._rows.values():
            out[(r.rule, r.told.severity)] = out.get((r.rule, r.told.severity), 0) + 1
        return out

    def routes_of(self, rule: str) -> list[tuple[str, dict[str, str]]]:
        """(route, labels) of every alert of `rule` that fires."""
        return [(r.route, r.alert["labels"]) for r in self._rows.values() if r.rule == rule]

    def labels_of(self, rule: str) -> list[dict[str, str]]:
        """The labels of every alert of `rule` that fires (to resolve the ones no input
        mentions any more)."""
        return [r.alert["labels"] for r in self._rows.values() if r.rule == rule]

    # --- reorgs and cursors ---------------------------------------------------------------

    def forget_after(self, chain: str, ancestor: int) -> None:
        """States set on blocks that are gone; log followers rewound to the ancestor."""
        for fp in [fp for fp, r in self._rows.items()
                   if r.chain == chain and r.block is not None and r.block > ancestor]:
            self.forget(fp)
        for name, block in list(self._cursors.items()):
            if block > ancestor and name.startswith("liquidations:"):
                self.set_cursor(name, ancestor)

    def cursor(self, name: str) -> int | None:
        return self._cursors.get(name)

    def set_cursor(self, name: str, block: int) -> None:
        self._cursors[name] = block
        self._changes.cursors[name] = block

    # --- writing back ---------------------------------------------------------------------

    def take_changes(self) -> Changes:
        changes, self._changes = self._changes, Changes({}, {})
        return changes

    def give_back(self, changes: Changes) -> None:
        """A flush that failed: its changes are written with the next one (unless changed
        again since)."""
        for fp, row in changes.states.items():
            self._changes.states.setdefault(fp, row)
        for name, block in changes.cursors.items():
            self._changes.cursors.setdefault(name, block)
        for account, since in changes.held.items():
            self._changes.held.setdefault(account, since)

    async def write(self, changes: Changes) -> None:
        """Write `changes` (inside the caller's transaction)."""
        for fp, row in changes.states.items():
            if row is None:
                await self.db.execute("DELETE FROM alert_state WHERE fingerprint = $1", fp)
                continue
            t = row.told
            await self.db.execute(
                "INSERT INTO alert_state (fingerprint, rule, route, severity, value, told_at, "
                "since, chain, block, alert) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) "
                "ON CONFLICT (fingerprint) DO UPDATE SET rule = excluded.rule, "
                "route = excluded.route, severity = excluded.severity, value = excluded.value, "
                "told_at = excluded.told_at, since = excluded.since, chain = excluded.chain, "
                "block = excluded.block, alert = excluded.alert",
                fp, row.rule, row.route, t.severity, t.value, t.at, t.since, row.chain,
                row.block, json.dumps(row.alert, default=str))
        for name, block in changes.cursors.items():
            await self.db.execute("INSERT INTO alert_cursor (name, block) VALUES ($1, $2) "
                                  "ON CONFLICT (name) DO UPDATE SET block = excluded.block",
                                  name, block)
        for account, since in changes.held.items():
            await self.db.execute("INSERT INTO watched_held (account, since) VALUES ($1, $2) "
                                  "ON CONFLICT (account) DO NOTHING", account, since)
