"""A `keeperd run` in its own process, for the tests that kill it: start it with its logs in a
file (a pipe nobody reads fills up and blocks the daemon's writes), wait for what it does, and
read its journal from outside."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
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


def log_digest(*logs: Path, last: int = 12) -> str:
    """What a daemon did, short enough for an assertion message (CI keeps the message, not the
    temporary directory): each log's event counts and its last warnings and errors."""
    parts = []
    for path in logs:
        if not path.exists():
            parts.append(f"{path.name}: no log")
            continue
        counts: Counter[str] = Counter()
        loud: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                loud.append(line[:300])  # a traceback, console output
                continue
            counts[str(entry.get("event"))] += 1
            if entry.get("level") in ("warning", "error", "critical") and not str(
                    entry.get("event")).startswith("position."):  # (those are the job)
                loud.append(line[:300])
        parts.append(f"--- {path.name}: " + ", ".join(f"{e} {n}" for e, n in
                                                     sorted(counts.items())))
        parts.extend(loud[-last:])
    return "\n".join(parts)


def wait_until(predicate: Callable[[], bool], what: str, limit: float = 30.0,
               logs: tuple[Path, ...] = ()) -> None:
    """`predicate` true within `limit` seconds; otherwise an AssertionError naming `what`, with
    the digest of the daemons' `logs`."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except sqlite3.Error:
            pass  # the database is being created or written: ask again
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}"
                         + (f"\n{log_digest(*logs)}" if logs else ""))
