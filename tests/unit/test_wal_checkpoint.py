"""The SQLite state file's checkpoints run off the event loop (storage/wal_checkpoint.py): the
daemon's commits only append to the log, a thread copies it back, and if that keeps failing
the commits get their own checkpoints back."""

from __future__ import annotations

from pathlib import Path

from keeperd.metrics import Metrics
from keeperd.storage.db import SqliteDatabase
from keeperd.storage.wal_checkpoint import (
    FAILURES_BEFORE_FALLBACK,
    SQLITE_AUTOCHECKPOINT_PAGES,
    WalCheckpointer,
)
from tests.conftest import metric_value

PAGE = 4096


async def _write_pages(db: SqliteDatabase, pages: int) -> None:
    """About `pages` pages of rows, in transactions of ~50 pages (a busy block's journal)."""
    await db.execute("CREATE TABLE IF NOT EXISTS filler (n INTEGER PRIMARY KEY, blob BLOB)")
    for start in range(0, pages, 50):
        async with db.transaction():
            await db.executemany("INSERT INTO filler (blob) VALUES ($1)",
                                 [(bytes(PAGE - 200),) for _ in range(50)])
        del start


def _wal_frames(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return (wal.stat().st_size - 32) // (PAGE + 24) if wal.exists() else 0


async def test_the_commits_append_and_the_checkpointer_copies_back(tmp_path: Path) -> None:
    # Control: with SQLite's default, a commit checkpoints once the log passes 1,000 pages,
    # and the log starts over from its beginning: it never grows much past that.
    plain_path = tmp_path / "plain.sqlite3"
    plain = SqliteDatabase.open(plain_path)
    await _write_pages(plain, 2_500)
    assert _wal_frames(plain_path) < 1_300
    await plain.close()

    path = tmp_path / "state.sqlite3"
    db = SqliteDatabase.open(path)
    metrics = Metrics()
    checkpointer = WalCheckpointer(db, path, metrics)
    await _write_pages(db, 2_500)
    # No commit copied anything back: the whole log is still there.
    assert _wal_frames(path) > 2_400
    busy, logged, copied = await checkpointer.checkpoint() or (1, 0, -1)
    assert busy == 0 and logged == copied > 2_400
    # Copied back, the log starts over: the next writes reuse its beginning.
    await _write_pages(db, 100)
    busy, logged, copied = await checkpointer.checkpoint() or (1, 0, -1)
    assert busy == 0 and logged == copied < 200
    assert await db.fetchval("SELECT count(*) FROM filler") == 2_600
    assert metric_value(metrics, "keeperd_sqlite_checkpoints_total", {"outcome": "ok"}) == 2
    await db.close()


async def test_checkpoints_that_keep_failing_give_the_commits_theirs_back(
        tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = SqliteDatabase.open(path)
    metrics = Metrics()
    # (a state file the thread cannot open: its directory is gone)
    checkpointer = WalCheckpointer(db, tmp_path / "gone" / "state.sqlite3", metrics)
    assert await db.fetchval("PRAGMA wal_autocheckpoint") == 0
    for _ in range(FAILURES_BEFORE_FALLBACK - 1):
        assert await checkpointer.checkpoint() is None
    assert await db.fetchval("PRAGMA wal_autocheckpoint") == 0
    assert await checkpointer.checkpoint() is None
    assert checkpointer.fell_back
    assert await db.fetchval("PRAGMA wal_autocheckpoint") == SQLITE_AUTOCHECKPOINT_PAGES
    assert metric_value(metrics, "keeperd_sqlite_checkpoints_total",
                        {"outcome": "failed"}) == FAILURES_BEFORE_FALLBACK
    assert metric_value(metrics, "keeperd_state_write_errors_total",
                        {"what": "checkpoint"}) == FAILURES_BEFORE_FALLBACK
    # Nothing was lost meanwhile, and the log stays bounded by the commits' own checkpoints.
    await _write_pages(db, 2_500)
    assert _wal_frames(path) < 1_300
    await db.close()
