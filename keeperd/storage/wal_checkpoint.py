"""The SQLite state file's checkpoints, off the event loop.

In WAL mode a commit appends to the write-ahead log, and by default the commit that takes
the log past 1,000 pages also copies it back into the database file: a checkpoint, with two
fsyncs. The daemon's SQLite statements run on the event loop, so that one commit took 3-11 ms
instead of ~0.2 (measured in bench/latency.py: a dozen of them in 30 rounds of a crash, each
landing in a wave of liquidations and holding every later wave of the block behind it).

The daemon's connection therefore never checkpoints (`wal_autocheckpoint=0`), and this
service does it four times a second in a worker thread, on a connection of its own: a PASSIVE
checkpoint copies what no reader still needs without taking the writer's lock, and Python's
sqlite3 module lets the loop go on while SQLite works and waits for the disk. Durability is
SQLite's as before (`synchronous=NORMAL`: the log is synced at each checkpoint). Small and
often: a checkpoint of 2 s of a crash's journal took ~25 ms and slowed the commits beside it
up to 5 ms; one of 0.25 s takes ~4 ms and the commits beside it stay under ~1 ms (a 20 s
SQLite-only run of waves of 16 rows, 2026-12-05). An idle log costs a checkpoint nothing.

If checkpoints keep failing (a disk error, a file replaced under us), the daemon's own
connection gets its automatic checkpoints back, so the log never grows without bound: the
stalls come back, nothing is lost.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import structlog

from keeperd.metrics import Metrics
from keeperd.storage.db import SQLITE_BUSY_TIMEOUT_S, SqliteDatabase

log = structlog.get_logger()

CHECKPOINT_EVERY_S = 0.25
# SQLite's own default, given back to the daemon's connection after this many failures in a
# row.
SQLITE_AUTOCHECKPOINT_PAGES = 1000
FAILURES_BEFORE_FALLBACK = 3


class WalCheckpointer:
    """A service (keeperd/services.py) for the daemon's SQLite state file."""

    name = "storage:checkpoint"

    def __init__(self, db: SqliteDatabase, path: Path, metrics: Metrics | None = None, *,
                 every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.db = db
        self.path = path
        self.metrics = metrics
        self.every_s = every_s
        self.failures = 0
        self.fell_back = False
        # The daemon's commits append to the log and no more.
        db.conn.execute("PRAGMA wal_autocheckpoint=0")
        if metrics is not None:  # (both series from the start: a rule can watch `failed`)
            for outcome in ("ok", "failed"):
                metrics.sqlite_checkpoints.labels(outcome)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.checkpoint()

    def drain(self) -> None:
        """Nothing to refuse: a checkpoint moves no money and may run until cancelled."""

    async def drained(self) -> None:
        return

    async def checkpoint(self) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint in a worker thread: (busy, pages in the log, pages copied),
        or None when it failed (logged and counted)."""
        try:
            busy, logged, copied = await asyncio.to_thread(self._checkpoint)
        except (sqlite3.Error, OSError) as exc:
            self.failures += 1
            self._count("failed")
            if self.metrics is not None:  # (the KeeperdStateNotWritable rule's counter)
                self.metrics.state_write_errors.labels("checkpoint").inc()
            log.warning("storage.checkpoint_failed", path=str(self.path),
                        error=f"{type(exc).__name__}: {exc}", failures=self.failures)
            if self.failures >= FAILURES_BEFORE_FALLBACK and not self.fell_back:
                self.fell_back = True
                self.db.conn.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
                log.error("storage.checkpoint_fallback", path=str(self.path),
                          meaning="checkpoints off the event loop keep failing: the daemon's "
                                  "own commits checkpoint again (a few ms of stall each time "
                                  "the log passes 1,000 pages)")
            return None
        self.failures = 0
        self._count("ok")
        return busy, logged, copied

    def _checkpoint(self) -> tuple[int, int, int]:
        # (a connection of the thread's own, opened and closed each time: one cancelled at
        # stop may still be working in its thread, and nothing else may touch it)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
        return int(row[0]), int(row[1]), int(row[2])

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.sqlite_checkpoints.labels(outcome).inc()
