"""A `keeperd run` in its own process, for the tests that kill it: start it with its logs in a
file (a pipe nobody reads fills up and blocks the daemon's writes), wait for what it does, and
read its journal from outside."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_keeperd(config: Path, env: dict[str, str], logs: Path) -> subprocess.Popen[str]:
    with open(logs, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "keeperd", "run", "--config",
                                 str(config)], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, text=True)


def journal_rows(db: Path) -> list[tuple[str, str]]:
    """(key, status) of every opportunity. Read-only and closed at once: a reader left open
    would hold the WAL's snapshot."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(c.execute("SELECT key, status FROM liquidations"))
    finally:
        c.close()


def txs_per_key(db: Path) -> dict[str, int]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(c.execute("SELECT key, COUNT(*) FROM liquidation_txs GROUP BY key"))
    finally:
        c.close()


def wait_until(predicate: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except sqlite3.Error:
            pass  # the database is being created or written: ask again
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
