"""The one SQLite database in the state directory (WAL mode).

It holds what must survive a restart: the account index with its cursor and the hashes of the
last indexed blocks (so a reorg that happened while keeperd was down is noticed). Later parts
(the transaction journal, the alert outbox, silences, breaker state) add their tables here.

Calls are synchronous and short (local disk, small transactions): they run on the event loop
thread, which keeps ordering simple; bulk inserts go through `executemany` in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from keeperd.storage.db import SQLITE_BUSY_TIMEOUT_S

SCHEMA = """
CREATE TABLE IF NOT EXISTS index_cursor (
    protocol   TEXT PRIMARY KEY,
    block      INTEGER NOT NULL,
    hash       TEXT
);
CREATE TABLE IF NOT EXISTS indexed_blocks (
    protocol   TEXT NOT NULL,
    number     INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (protocol, number)
);
CREATE TABLE IF NOT EXISTS accounts (
    protocol    TEXT NOT NULL,
    account     TEXT NOT NULL,
    first_block INTEGER NOT NULL,
    PRIMARY KEY (protocol, account)
);
CREATE INDEX IF NOT EXISTS accounts_by_first_block ON accounts (protocol, first_block);
"""

# How many indexed block hashes to keep per protocol for reorg checks at start-up.
KEEP_BLOCK_HASHES = 256


@dataclass(frozen=True)
class Cursor:
    block: int
    hash: str | None


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=SQLITE_BUSY_TIMEOUT_S)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Store:
        return cls(state_dir / "keeperd.sqlite3")

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """For the tables other parts own (the liquidation journal, the alert outbox)."""
        return self._db

    # --- account index ----------------------------------------------------------------------

    def cursor(self, protocol: str) -> Cursor | None:
        row = self._db.execute("SELECT block, hash FROM index_cursor WHERE protocol = ?",
                               (protocol,)).fetchone()
        return Cursor(row[0], row[1]) if row else None

    def record_indexed(self, protocol: str, to_block: int, to_hash: str | None,
                       accounts: Iterable[tuple[str, int]]) -> None:
        """Atomically add newly seen accounts (with the block they were first seen in) and
        move the cursor to `to_block`."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO accounts (protocol, account, first_block) VALUES (?, ?, ?) "
                "ON CONFLICT (protocol, account) DO UPDATE SET "
                "first_block = MIN(first_block, excluded.first_block)",
                ((protocol, a, b) for a, b in accounts))
            db.execute("INSERT INTO index_cursor (protocol, block, hash) VALUES (?, ?, ?) "
                       "ON CONFLICT (protocol) DO UPDATE SET block = excluded.block, "
                       "hash = excluded.hash", (protocol, to_block, to_hash))
            if to_hash is not None:
                db.execute("INSERT OR REPLACE INTO indexed_blocks (protocol, number, hash) "
                           "VALUES (?, ?, ?)", (protocol, to_block, to_hash))
                db.execute("DELETE FROM indexed_blocks WHERE protocol = ? AND number <= ?",
                           (protocol, to_block - KEEP_BLOCK_HASHES))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # (SQLite rolls back by itself on a full disk)
                db.execute("ROLLBACK")
            raise

    def indexed_block_hashes(self, protocol: str) -> list[tuple[int, str]]:
        """(number, hash) of recently indexed blocks, newest first."""
        return list(self._db.execute(
            "SELECT number, hash FROM indexed_blocks WHERE protocol = ? ORDER BY number DESC",
            (protocol,)))

    def rewind(self, protocol: str, to_block: int) -> list[str]:
        """Forget everything indexed above `to_block`; return the accounts dropped."""
        db = self._db
        db.execute("BEGIN")
        try:
            dropped = [r[0] for r in db.execute(
                "SELECT account FROM accounts WHERE protocol = ? AND first_block > ?",
                (protocol, to_block))]
            db.execute("DELETE FROM accounts WHERE protocol = ? AND first_block > ?",
                       (protocol, to_block))
            db.execute("DELETE FROM indexed_blocks WHERE protocol = ? AND number > ?",
                       (protocol, to_block))
            row = db.execute("SELECT hash FROM indexed_blocks WHERE protocol = ? AND number = ?",
                             (protocol, to_block)).fetchone()
            db.execute("UPDATE index_cursor SET block = ?, hash = ? WHERE protocol = ? "
                       "AND block > ?", (to_block, row[0] if row else None, protocol, to_block))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # (SQLite rolls back by itself on a full disk)
                db.execute("ROLLBACK")
            raise
        return dropped

    def accounts(self, protocol: str) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT account FROM accounts WHERE protocol = ? ORDER BY account", (protocol,))]

    def account_count(self, protocol: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM accounts WHERE protocol = ?",
                                    (protocol,)).fetchone()[0])
