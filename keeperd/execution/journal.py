"""The liquidation journal: every attempt, written before its transaction is broadcast.

One row per opportunity (its key says which position, which pair and how much debt), one row
per signed transaction (the first and each replacement). Because the row and the signed
transaction's hash are stored before the broadcast, a crash at any point leaves enough to
find out afterwards what happened — and the opportunity's key stops a restarted keeperd from
sending a second liquidation for it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS liquidations (
    key              TEXT PRIMARY KEY,
    protocol         TEXT NOT NULL,
    account          TEXT NOT NULL,
    collateral       TEXT NOT NULL,
    debt             TEXT NOT NULL,
    debt_to_cover    TEXT NOT NULL,
    expected_profit_usd REAL NOT NULL,
    max_fee_wei      TEXT NOT NULL,
    detected_block   INTEGER NOT NULL,
    status           TEXT NOT NULL,
    nonce            INTEGER,
    winner           TEXT,
    detail           TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS liquidations_by_status ON liquidations (status);
CREATE TABLE IF NOT EXISTS liquidation_txs (
    tx_hash          TEXT PRIMARY KEY,
    key              TEXT NOT NULL REFERENCES liquidations(key),
    nonce            INTEGER NOT NULL,
    max_fee_per_gas  TEXT NOT NULL,
    priority_fee     TEXT NOT NULL,
    gas_limit        INTEGER NOT NULL,
    raw              TEXT NOT NULL,
    kind             TEXT NOT NULL,
    sent_at          REAL NOT NULL
);
"""

# Statuses. "planned" rows are journaled, not signed yet; "pending" rows have a signed
# transaction that may still be mined.
PLANNED = "planned"
DRY_RUN = "dry_run"
PENDING = "pending"
INCLUDED = "included"
REVERTED = "reverted"
LOST_RACE = "lost_race"
CANCELLED = "cancelled"
DROPPED = "dropped"
SIMULATION_FAILED = "simulation_failed"
TERMINAL = frozenset({DRY_RUN, INCLUDED, REVERTED, LOST_RACE, CANCELLED, DROPPED,
                      SIMULATION_FAILED})


@dataclass(frozen=True)
class JournalEntry:
    key: str
    protocol: str
    account: str
    collateral: str
    debt: str
    debt_to_cover: int
    expected_profit_usd: float
    max_fee_wei: int
    detected_block: int
    status: str
    nonce: int | None
    winner: str | None
    detail: str | None


@dataclass(frozen=True)
class TxRecord:
    tx_hash: str
    key: str
    nonce: int
    max_fee_per_gas: int
    priority_fee: int
    gas_limit: int
    raw: str
    kind: str  # "liquidation" | "replacement" | "cancel"
    sent_at: float


class Journal:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._db.executescript(SCHEMA)
        self._in_tx = False

    def get(self, key: str) -> JournalEntry | None:
        row = self._db.execute(
            "SELECT key, protocol, account, collateral, debt, debt_to_cover, "
            "expected_profit_usd, max_fee_wei, detected_block, status, nonce, winner, detail "
            "FROM liquidations WHERE key = ?", (key,)).fetchone()
        return _entry(row) if row else None

    def by_status(self, *statuses: str) -> list[JournalEntry]:
        marks = ",".join("?" * len(statuses))
        rows = self._db.execute(
            "SELECT key, protocol, account, collateral, debt, debt_to_cover, "
            "expected_profit_usd, max_fee_wei, detected_block, status, nonce, winner, detail "
            f"FROM liquidations WHERE status IN ({marks}) ORDER BY created_at", statuses)
        return [_entry(r) for r in rows]

    def all(self) -> list[JournalEntry]:
        rows = self._db.execute(
            "SELECT key, protocol, account, collateral, debt, debt_to_cover, "
            "expected_profit_usd, max_fee_wei, detected_block, status, nonce, winner, detail "
            "FROM liquidations ORDER BY created_at")
        return [_entry(r) for r in rows]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group many writes into one commit (a wave of liquidations found in one block)."""
        self._db.execute("BEGIN")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._in_tx = False

    def forget_unsigned(self, key: str) -> bool:
        """Delete an opportunity that was journaled but never signed (a crash or an error
        between the two): nothing of it can be on chain, so it may be planned again."""
        cur = self._db.execute(
            "DELETE FROM liquidations WHERE key = ? AND status = ? AND NOT EXISTS "
            "(SELECT 1 FROM liquidation_txs WHERE liquidation_txs.key = liquidations.key)",
            (key, PLANNED))
        return cur.rowcount > 0

    def record(self, entry: JournalEntry) -> bool:
        """Insert a new opportunity. False if the key is already journaled (never twice)."""
        now = time.time()
        try:
            self._db.execute(
                "INSERT INTO liquidations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (entry.key, entry.protocol, entry.account, entry.collateral, entry.debt,
                 str(entry.debt_to_cover), entry.expected_profit_usd, str(entry.max_fee_wei),
                 entry.detected_block, entry.status, entry.nonce, entry.winner, entry.detail,
                 now, now))
        except sqlite3.IntegrityError:
            return False
        return True

    def record_tx(self, tx: TxRecord, nonce_of_key: int | None = None) -> None:
        """Store a signed transaction before it is broadcast."""
        db = self._db
        own = not self._in_tx
        if own:
            db.execute("BEGIN")
        try:
            db.execute("INSERT INTO liquidation_txs VALUES (?,?,?,?,?,?,?,?,?)",
                       (tx.tx_hash, tx.key, tx.nonce, str(tx.max_fee_per_gas),
                        str(tx.priority_fee), tx.gas_limit, tx.raw, tx.kind, tx.sent_at))
            db.execute("UPDATE liquidations SET status = ?, nonce = ?, updated_at = ? "
                       "WHERE key = ?", (PENDING, tx.nonce if nonce_of_key is None
                                         else nonce_of_key, time.time(), tx.key))
            if own:
                db.execute("COMMIT")
        except BaseException:
            if own:
                db.execute("ROLLBACK")
            raise

    def txs(self, key: str) -> list[TxRecord]:
        rows = self._db.execute(
            "SELECT tx_hash, key, nonce, max_fee_per_gas, priority_fee, gas_limit, raw, kind, "
            "sent_at FROM liquidation_txs WHERE key = ? ORDER BY sent_at", (key,))
        return [TxRecord(r[0], r[1], r[2], int(r[3]), int(r[4]), r[5], r[6], r[7], r[8])
                for r in rows]

    def set_status(self, key: str, status: str, *, winner: str | None = None,
                   detail: str | None = None) -> None:
        self._db.execute("UPDATE liquidations SET status = ?, winner = COALESCE(?, winner), "
                         "detail = COALESCE(?, detail), updated_at = ? WHERE key = ?",
                         (status, winner, detail, time.time(), key))


def _entry(r: tuple) -> JournalEntry:
    return JournalEntry(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], int(r[7]), r[8], r[9],
                        r[10], r[11], r[12])
