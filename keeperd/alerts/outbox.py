"""The durable outbox: every notification is written to SQLite before any delivery attempt and
leaves the pending state only when its sink accepted it.

One row per (notification, sink). A row is `pending` (waiting or being retried, with its
`next_at`), `delivered` (kept for a while: reorg retraction and `keeperd alerts list` read it),
`dead` (gave up after `max_attempts` or a permanent refusal; `keeperd alerts retry` requeues),
or `retracted` (its block was reorganised away before anyone saw it).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from keeperd.alerts.model import severity_rank

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    route           TEXT NOT NULL,
    sink            INTEGER NOT NULL,
    sink_kind       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    chain           TEXT,
    block           INTEGER,
    status          TEXT NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    parts_done      INTEGER NOT NULL DEFAULT 0,
    next_at         REAL NOT NULL,
    created_at      REAL NOT NULL,
    delivered_at    REAL,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, route, sink, priority, next_at);
CREATE INDEX IF NOT EXISTS outbox_block ON outbox (chain, block);
"""

PENDING, DELIVERED, DEAD, RETRACTED = "pending", "delivered", "dead", "retracted"


@dataclass(frozen=True)
class Entry:
    id: int
    route: str
    sink: int
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
    return Entry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9], r[10],
                 r[11], r[12], r[13], r[14])


class Outbox:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def put(self, route: str, sink: int, sink_kind: str, alerts: list[dict[str, Any]],
            chain: str | None, block: int | None, now: float | None = None) -> str:
        """Queue one notification for one sink; returns its idempotency key (stable across
        retries and restarts, so receivers can drop a duplicate)."""
        now = time.time() if now is None else now
        key = str(uuid.uuid4())
        status = "resolved" if all(a["status"] == "resolved" for a in alerts) else "firing"
        # Critical before warning before info: a holder's liquidation warning must not wait
        # behind a burst of the keeper's own info events.
        priority = max(severity_rank(a["severity"]) for a in alerts)
        self._db.execute(
            "INSERT INTO outbox (route, sink, sink_kind, idempotency_key, chain, block, status, "
            "priority, payload, state, next_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (route, sink, sink_kind, key, chain, block, status, priority,
             json.dumps(alerts, separators=(",", ":"), default=str), PENDING, now, now))
        return key

    def due(self, route: str, sink: int, now: float | None = None, limit: int = 1
            ) -> list[Entry]:
        now = time.time() if now is None else now
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = ? AND route = ? AND sink = ? "
            "AND next_at <= ? ORDER BY priority DESC, id LIMIT ?",
            (PENDING, route, sink, now, limit))
        return [_entry(r) for r in rows]

    def next_due_at(self, route: str, sink: int) -> float | None:
        row = self._db.execute("SELECT MIN(next_at) FROM outbox WHERE state = ? AND route = ? "
                               "AND sink = ?", (PENDING, route, sink)).fetchone()
        return row[0] if row and row[0] is not None else None

    def delivered(self, entry_id: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._db.execute("UPDATE outbox SET state = ?, delivered_at = ?, attempts = attempts + 1,"
                         " last_error = NULL WHERE id = ?", (DELIVERED, now, entry_id))

    def retry(self, entry_id: int, next_at: float, error: str, *, count: bool = True,
              parts_done: int = 0) -> None:
        self._db.execute("UPDATE outbox SET next_at = ?, last_error = ?, parts_done = ?, "
                         "attempts = attempts + ? WHERE id = ?",
                         (next_at, error[:500], parts_done, 1 if count else 0, entry_id))

    def dead(self, entry_id: int, error: str) -> None:
        self._db.execute("UPDATE outbox SET state = ?, last_error = ?, attempts = attempts + 1 "
                         "WHERE id = ?", (DEAD, error[:500], entry_id))

    def requeue_dead(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        cur = self._db.execute("UPDATE outbox SET state = ?, attempts = 0, next_at = ? "
                               "WHERE state = ?", (PENDING, now, DEAD))
        return cur.rowcount

    def after_block(self, chain: str, block: int) -> list[Entry]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE chain = ? AND block > ? "
                                "AND state IN (?, ?) ORDER BY id",
                                (chain, block, PENDING, DELIVERED))
        return [_entry(r) for r in rows]

    def retract(self, entry_id: int) -> None:
        self._db.execute("UPDATE outbox SET state = ? WHERE id = ? AND state = ?",
                         (RETRACTED, entry_id, PENDING))

    def stats(self, now: float | None = None) -> dict[tuple[str, int], tuple[int, float]]:
        """Per (route, sink): pending count and the oldest pending age in seconds."""
        now = time.time() if now is None else now
        rows = self._db.execute("SELECT route, sink, COUNT(*), MIN(created_at) FROM outbox "
                                "WHERE state = ? GROUP BY route, sink", (PENDING,))
        return {(r[0], r[1]): (r[2], now - r[3]) for r in rows}

    def dead_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE state = ?",
                                    (DEAD,)).fetchone()[0])

    def entries(self, state: str | None = None, limit: int = 50) -> list[Entry]:
        if state is None:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?",
                                    (limit,))
        else:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE state = ? "
                                    "ORDER BY id DESC LIMIT ?", (state, limit))
        return [_entry(r) for r in rows]

    def prune(self, older_than_s: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        cur = self._db.execute("DELETE FROM outbox WHERE state IN (?, ?) AND created_at < ?",
                               (DELIVERED, RETRACTED, now - older_than_s))
        return cur.rowcount
