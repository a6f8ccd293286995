"""The durable outbox: every notification is written to the state database before any delivery
attempt and leaves the pending state only when its sink accepted it.

One row per (notification, sink), the sink named by its route and its stable id
(`_SinkConfig.sink_id`), never by its place in the route: reordering a route's sinks and
reloading sends each waiting notification where it was meant to go. A row is `pending`
(waiting or being retried, with its `next_at`), `delivered` (kept for a while: reorg
retraction and `keeperd alerts list` read it), `dead` (gave up after `max_attempts` or a
permanent refusal; `keeperd alerts retry` requeues), `retracted` (its block was reorganised
away before anyone saw it), or `dropped` (its sink was removed from the config and an
operator dropped what waited for it: `keeperd alerts outbox drop`).

On SQLite (one machine) or PostgreSQL (replicas sharing it: only the leader delivers, and it
claims each row under its lease's fence before sending, so a replica that lost the lease sends
nothing more).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from keeperd.alerts.model import severity_rank
from keeperd.storage.db import Database

log = structlog.get_logger(__name__)

# A row written before sinks had ids names its sink `#<index in the route>` (migration 8; no
# id can start with `#`); the dispatcher gives it the id of the sink at that index when it
# first runs (`Outbox.adopt`): the config the old version ran with, as long as the upgrade does not
# reorder a route at the same time.
LEGACY_PREFIX = "#"


def legacy_sink(index: int) -> str:
    return f"{LEGACY_PREFIX}{index}"


PENDING, DELIVERED, DEAD, RETRACTED = "pending", "delivered", "dead", "retracted"
# A sink's pending rows looked at for the next to send, oldest first (a backlog beyond it
# waits for the first ones to go).
PENDING_SCANNED = 2_000
SEVERE_SCANNED = 64
_FINGERPRINT = re.compile(r'"fingerprint"\s*:\s*"((?:[^"\\]|\\.)*)"')
# The accounts a message is about (its alerts' `account`): one account's messages keep their
# order whatever their rules — a "liquidated" went ahead of the older "can be liquidated now"
# after an outage, and the holder's last message said the latter (a by-hand trial).
_ACCOUNT = re.compile(r'"account"\s*:\s*"((?:[^"\\]|\\.)+)"')  # (0x…, 0x…@dex, …/128)
DROPPED = "dropped"


@dataclass(frozen=True)
class Entry:
    id: int
    route: str
    sink: str
    sink_kind: str
    idempotency_key: str
    chain: str | None
    block: int | None
    status: str
    alerts: list[dict[str, Any]]
    state: str
    attempts: int
    next_at: float
    created_at: float
    last_error: str | None
    parts_done: int


_COLUMNS = ("id, route, sink, sink_kind, idempotency_key, chain, block, status, payload, state, "
            "attempts, next_at, created_at, last_error, parts_done")


def _entry(r: tuple[Any, ...]) -> Entry:
    """A row as an entry; ValueError when its payload is not a list of alerts (a row no
    keeperd wrote)."""
    alerts = json.loads(r[8]) if isinstance(r[8], str) else None
    if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
        raise ValueError(f"payload is not a list of alerts: {str(r[8])[:80]!r}")
    return Entry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], alerts, r[9], r[10],
                 r[11], r[12], r[13], r[14])


def _readable(rows: Sequence[tuple[Any, ...]]) -> tuple[list[Entry], dict[int, str]]:
    """The rows that read as entries, and why each other one did not (by id)."""
    entries, unreadable = [], {}
    for r in rows:
        try:
            entries.append(_entry(r))
        except ValueError as exc:
            unreadable[r[0]] = str(exc)[:200]
    return entries, unreadable


@dataclass(frozen=True)
class Queued:
    """One notification for one sink, ready to be written (`Outbox.put_all`)."""

    route: str
    sink: str
    sink_kind: str
    alerts: list[dict[str, Any]]
    chain: str | None
    block: int | None


# The namespace of the idempotency keys derived from what a notification tells (`uuid5`).
EVENT_KEYS = uuid.UUID("6b2f1f0e-8c1d-4f63-9c55-2f0c4a1d7e31")


def idempotency_key(q: Queued) -> tuple[str, bool]:
    """The notification's key for receivers to drop a repeat. A notification of one-off
    events at their blocks (a watched position liquidated in transaction T, keeperd's own
    liquidation sent) is the same wherever it is queued: its key is derived from them and the
    sink, so one told again by a state database restored from a backup is dropped as the
    repeat it is (a restored backup re-sent three "was liquidated" messages under new keys, a
    by-hand trial). Any other is new each time it is queued (and so is an event its own
    database — replicas share one — queues again: `Outbox.put_all`). (key, derived)."""
    if q.alerts and all(a.get("kind") == "event" and a.get("block") is not None
                        for a in q.alerts):
        told = sorted((str(a.get("fingerprint")), str(a["block"])) for a in q.alerts)
        return str(uuid.uuid5(EVENT_KEYS, json.dumps([q.route, q.sink, told]))), True
    return str(uuid.uuid4()), False


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, route: str, sink: str, sink_kind: str, alerts: list[dict[str, Any]],
                  chain: str | None, block: int | None, now: float | None = None) -> str:
        """Queue one notification for one sink; returns its idempotency key (stable across
        retries, restarts and replicas, so receivers can drop a duplicate; `idempotency_key`)."""
        return (await self.put_all([Queued(route, sink, sink_kind, alerts, chain, block)],
                                   now))[0]

    async def put_all(self, queued: Sequence[Queued], now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        rows, keys = [], []
        derived: list[str] = []
        for q in queued:
            key, is_derived = idempotency_key(q)
            if is_derived:
                derived.append(key)
            status = "resolved" if all(a["status"] == "resolved" for a in q.alerts) else "firing"
            # Critical before warning before info: a holder's liquidation warning must not
            # wait behind a burst of the keeper's own info events.
            priority = max(severity_rank(a["severity"]) for a in q.alerts)
            rows.append((q.route, q.sink, q.sink_kind, key, q.chain, q.block, status, priority,
                         json.dumps(q.alerts, separators=(",", ":"), default=str), PENDING,
                         now, now))
            keys.append(key)
        # An event this database queued already and queues again is told again on purpose (a
        # reorg took its block and the chain made it anew): a new key, or the receiver drops it.
        again: set[str] = set()
        for start in range(0, len(derived), 500):  # (a crash's burst: within SQLite's bound)
            chunk = derived[start:start + 500]
            marks = ",".join(f"${i + 1}" for i in range(len(chunk)))
            again |= {r[0] for r in await self.db.fetch(
                f"SELECT idempotency_key FROM outbox WHERE idempotency_key IN ({marks})",
                *chunk)}
        if again or len(set(keys)) < len(keys):
            seen: set[str] = set()
            for i, key in enumerate(keys):
                if key in again or key in seen:
                    keys[i] = str(uuid.uuid4())
                    rows[i] = (*rows[i][:3], keys[i], *rows[i][4:])
                seen.add(keys[i])
        async with self.db.transaction():
            for row in rows:
                await self.db.execute(
                    "INSERT INTO outbox (route, sink, sink_kind, idempotency_key, chain, block, "
                    "status, priority, payload, state, next_at, created_at) "
                    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)", *row)
        return keys

    async def due(self, route: str, sink: str, now: float | None = None, limit: int = 1,
                  *, horizon: float = 1e15) -> list[Entry]:
        """Pending entries whose time has come — or lies more than `horizon` seconds ahead
        (only a wall clock stepped back since they were scheduled puts them there) — the most
        severe first, except that a notification never goes before an older one pending for
        the same alert (fingerprint): after an outage a holder's backlog went critical first,
        then the older warning and its resolution, and the last message said "recovered" of
        a position that could be liquidated (a by-hand trial)."""
        now = time.time() if now is None else now
        chosen, _ = await self._pick(route, sink, now, horizon, limit)
        if not chosen:
            return []
        marks = ",".join(f"${i + 1}" for i in range(len(chosen)))
        entries, unreadable = _readable(await self.db.fetch(
            f"SELECT {_COLUMNS} FROM outbox WHERE id IN ({marks})", *chosen))
        for entry_id, why in unreadable.items():
            # (one row no keeperd wrote, its payload not alerts, failed its sink's every
            # send: every notification behind it waited for good — a review)
            log.error("outbox.entry_unreadable", id=entry_id, route=route, sink=sink,
                      reason=why, meaning="dropped: it cannot be sent; the ones behind it go")
            await self.drop_entry(entry_id, f"unreadable: {why}")
        found = {e.id: e for e in entries}
        return [found[i] for i in chosen if i in found]

    async def next_eligible_at(self, route: str, sink: str, *, horizon: float = 1e15
                               ) -> float | None:
        """When the next entry may go (`due`'s rules): the earliest time of the entries no
        older one of the same alert holds back. (The earliest of all waited for a newer one
        held behind an older one in backoff: the loop spun, a review.)"""
        return (await self._pick(route, sink, time.time(), horizon, 0))[1]

    async def _pick(self, route: str, sink: str, now: float, horizon: float, limit: int
                    ) -> tuple[list[int], float | None]:
        """(the ids to send now, at most `limit`, most severe first; the earliest time an
        entry no older one holds back is due: an older one of the same alert, or about the
        same account). Looked at: the PENDING_SCANNED oldest pending
        rows and the most severe due ones (a critical one beyond a long backlog still goes
        first; one beyond the window is held back only by the rows looked at). The
        fingerprints are read from the payload's text, not parsed: this runs before every
        send, on the loop."""
        oldest = await self.db.fetch(
            "SELECT id, next_at, priority, payload FROM outbox WHERE state = $1 AND route = $2 "
            f"AND sink = $3 ORDER BY id LIMIT {PENDING_SCANNED}", PENDING, route, sink)
        severe = await self.db.fetch(
            "SELECT id, next_at, priority, payload FROM outbox WHERE state = $1 AND route = $2 "
            "AND sink = $3 AND (next_at <= $4 OR next_at > $5) ORDER BY priority DESC, id "
            f"LIMIT {SEVERE_SCANNED}", PENDING, route, sink, now, now + horizon)
        rows = sorted({int(r[0]): r for r in (*oldest, *severe)}.values(), key=lambda r: r[0])
        seen: set[str] = set()
        eligible: list[tuple[int, int]] = []  # (-priority, id)
        wake: float | None = None
        for entry_id, next_at, priority, payload in rows:
            prints = set(_FINGERPRINT.findall(payload)) | {
                "account:" + a.lower() for a in _ACCOUNT.findall(payload)}
            if not prints & seen:
                if next_at <= now or next_at > now + horizon:
                    eligible.append((-int(priority), int(entry_id)))
                wake = next_at if wake is None else min(wake, next_at)
            seen |= prints
        return [entry_id for _, entry_id in sorted(eligible)[:limit]], wake

    async def claim(self, entry_id: int) -> bool:
        """Before a send: this replica may deliver (the lease's fence, on PostgreSQL) and the
        row is still pending (another replica may have delivered it meanwhile)."""
        async with self.db.transaction():
            await self.db.fenced()
            state = await self.db.fetchval("SELECT state FROM outbox WHERE id = $1", entry_id)
        return bool(state == PENDING)

    async def expedite(self, route: str, sink: str, now: float) -> None:
        """A sink that accepted a message: its entries waiting in backoff are due now (they
        waited for the sink, which answers again)."""
        await self.db.execute("UPDATE outbox SET next_at = $1 WHERE state = $2 AND "
                              "route = $3 AND sink = $4 AND next_at > $1",
                              now, PENDING, route, sink)

    async def delivered(self, entry_id: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        await self.db.execute("UPDATE outbox SET state = $1, delivered_at = $2, "
                              "attempts = attempts + 1, last_error = NULL WHERE id = $3",
                              DELIVERED, now, entry_id)

    async def retry(self, entry_id: int, next_at: float, error: str, *, count: bool = True,
                    parts_done: int = 0) -> None:
        await self.db.execute("UPDATE outbox SET next_at = $1, last_error = $2, "
                              "parts_done = $3, attempts = attempts + $4 WHERE id = $5",
                              next_at, error[:500], parts_done, 1 if count else 0, entry_id)

    async def dead(self, entry_id: int, error: str) -> None:
        await self.db.execute("UPDATE outbox SET state = $1, last_error = $2, "
                              "attempts = attempts + 1 WHERE id = $3", DEAD, error[:500], entry_id)

    async def requeue_dead(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return await self.db.execute("UPDATE outbox SET state = $1, attempts = 0, next_at = $2 "
                                     "WHERE state = $3", PENDING, now, DEAD)

    async def after_block(self, chain: str, block: int) -> list[Entry]:
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM outbox WHERE chain = $1 AND "
                                   "block > $2 AND state IN ($3, $4) ORDER BY id",
                                   chain, block, PENDING, DELIVERED)
        return _readable(rows)[0]

    async def retract(self, entry_id: int) -> None:
        await self.db.execute("UPDATE outbox SET state = $1 WHERE id = $2 AND state = $3",
                              RETRACTED, entry_id, PENDING)

    async def stats(self, now: float | None = None) -> dict[tuple[str, str], tuple[int, float]]:
        """Per (route, sink id): pending count and the oldest pending age in seconds."""
        now = time.time() if now is None else now
        rows = await self.db.fetch("SELECT route, sink, COUNT(*), MIN(created_at) FROM outbox "
                                   "WHERE state = $1 GROUP BY route, sink", PENDING)
        return {(r[0], str(r[1])): (int(r[2]), now - r[3]) for r in rows}

    # --- a sink that moved or left the config ---------------------------------------------------

    async def adopt(self, route: str, index: int, sink: str, sink_kind: str) -> int:
        """Rows queued before sinks had ids, for the sink at `index` of `route`: now its id's,
        when it is of the kind they were queued for."""
        return await self.db.execute(
            "UPDATE outbox SET sink = $1 WHERE route = $2 AND sink = $3 AND sink_kind = $4",
            sink, route, legacy_sink(index), sink_kind)

    async def drop_entry(self, entry_id: int, reason: str) -> None:
        """One pending notification not to be sent (silenced after it was queued)."""
        await self.db.execute("UPDATE outbox SET state = $1, last_error = $2 WHERE id = $3 "
                              "AND state = $4", DROPPED, reason[:500], entry_id, PENDING)

    async def drop(self, route: str, sink: str) -> int:
        """Give up the pending rows of a sink (kept as `dropped`, pruned with the history)."""
        return await self.db.execute(
            "UPDATE outbox SET state = $1, last_error = $2 WHERE state = $3 AND route = $4 "
            "AND sink = $5", DROPPED, "dropped by `keeperd alerts outbox drop`", PENDING,
            route, sink)

    async def reroute(self, route: str, sink: str, to_route: str, to_sink: str,
                      to_kind: str, now: float | None = None) -> int:
        """Send the pending rows of a sink to another one, now. (A row holds the alerts, not
        a rendered message: any kind of sink can send it.) Its parts count starts again: the
        parts were the old sink's."""
        now = time.time() if now is None else now
        return await self.db.execute(
            "UPDATE outbox SET route = $1, sink = $2, sink_kind = $3, next_at = $4, "
            "parts_done = 0 WHERE state = $5 AND route = $6 AND sink = $7",
            to_route, to_sink, to_kind, now, PENDING, route, sink)

    async def dead_count(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM outbox WHERE state = $1", DEAD))

    async def entries(self, state: str | None = None, limit: int = 50) -> list[Entry]:
        if state is None:
            rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM outbox ORDER BY id DESC "
                                       "LIMIT $1", limit)
        else:
            rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM outbox WHERE state = $1 "
                                       "ORDER BY id DESC LIMIT $2", state, limit)
        return _readable(rows)[0]

    async def prune(self, older_than_s: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return await self.db.execute("DELETE FROM outbox WHERE state IN ($1, $2, $3) AND "
                                     "created_at < $4", DELIVERED, RETRACTED, DROPPED,
                                     now - older_than_s)
