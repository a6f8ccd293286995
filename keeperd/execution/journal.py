"""The liquidation journal: every attempt, written before its transaction is broadcast.

One row per opportunity (its key says which position, which pair and how much debt), one row
per signed transaction (the first and each replacement) and opportunity: a wave's transaction
(many liquidations in one, execution/wave_code.py) has a row under each of its liquidations,
with the index of its call in the wave. Because the row and the signed
transaction's hash are stored before the broadcast, a crash at any point leaves enough to
find out afterwards what happened — and the opportunity's key stops a restarted keeperd from
sending a second liquidation for it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from keeperd.protocols.sdk.keys import OpportunityKey, TxKey, WaveKey
from keeperd.storage.db import Database
from keeperd.storage.migrations import SchemaBehind, pending

log = structlog.get_logger(__name__)

# A journal row's key: typed (the executor's), or its text as another row gave it.
JournalKey = OpportunityKey | str

# The journal's tables, in SQL both back-ends run (`storage/migrations.py` applies them once).
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
# A signed transaction journaled, and its opportunity's row marked as sent under its nonce.
_INSERT_TX = ("INSERT INTO liquidation_txs (tx_hash, key, nonce, max_fee_per_gas, priority_fee, "
              "gas_limit, raw, kind, sent_at, wave_index) VALUES "
              "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
_SET_PENDING = ("UPDATE liquidations SET status = $1, nonce = $2, updated_at = $3 "
                "WHERE key = $4")
GET_MANY_CHUNK = 500  # keys in one `get_many` query (well under SQLite's bound parameters)
RECORD_MANY_CHUNK = 50  # rows in one `record_many` insert (17 parameters a row)


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
    # From the protocol's own event in the receipt, less gas (None until included): the one
    # figure of P&L that `keeperd status`, the demo and the profit metrics all show.
    realised_profit_usd: float | None = None
    # What the plan expects the protocol's own liquidation event to show, by the event's
    # field names, in token units (None: not planned here — a lost race seen, a row from
    # before migration 9). Compared with the receipt, it says whether the chain did what
    # keeperd priced.
    planned: Mapping[str, int] | None = None
    # What its transaction will pull from the keeper's balances, by token (lowercase): the
    # capital stage's need (None: it pulls nothing, or a row from before migration 13). A
    # restart reserves it for the resumed transaction until mined (`reconcile.track_again`).
    pulls: Mapping[str, int] | None = None

    @property
    def opportunity(self) -> OpportunityKey:
        """The key, typed: the one place a journal key's text is parsed back."""
        return OpportunityKey.parse(self.key)


@dataclass(frozen=True)
class TxRecord:
    tx_hash: str
    # Only an OpportunityKey's are journaled (approvals and deposits are fenced); one read
    # back carries the key its reader asked for (`Journal.txs`): typed, or a row's text.
    key: TxKey | str
    nonce: int
    max_fee_per_gas: int
    priority_fee: int
    gas_limit: int
    raw: str
    kind: str  # "liquidation" | "replacement" | "cancel"
    sent_at: float
    # Read back under a member of a wave: its call's index in the wave (None: a transaction of
    # its own). Written: the key, a WaveKey, says the members.
    wave_index: int | None = None


class Journal:
    """The journal on either back-end (`storage/db.py`). Writes that lead to a transaction
    on chain — a new opportunity, a signed transaction — are fenced: with replicas, only the
    lease holder's land."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._told_unread: set[tuple[str, str]] = set()  # (rows said unreadable: table, key)

    @classmethod
    async def open(cls, db: Database) -> Journal:
        """The journal of a state database its owner has migrated (the daemon does at start:
        `storage/migrations.py`); one behind is refused, naming the command."""
        missing = await pending(db)
        if missing:
            raise SchemaBehind(f"the state database lacks migrations {missing}: run "
                               "`keeperd storage migrate --config ...` (the daemon runs "
                               "them at start)")
        return cls(db)

    async def get(self, key: JournalKey) -> JournalEntry | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM liquidations WHERE key = $1",
                                     str(key))
        return self._entries([row])[0] if row else None

    async def get_many(self, keys: list[str]) -> dict[str, JournalEntry]:
        """The entries journaled under any of `keys` (absent ones are not in the answer): one
        query per GET_MANY_CHUNK keys, where a block's liquidations asked one by one cost a
        query each before the first could be simulated."""
        found: dict[str, JournalEntry] = {}
        for start in range(0, len(keys), GET_MANY_CHUNK):
            chunk = keys[start:start + GET_MANY_CHUNK]
            marks = ",".join(f"${i + 1}" for i in range(len(chunk)))
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM liquidations WHERE key IN ({marks})", *chunk)
            found.update((e.key, e) for e in self._entries(rows))
        return found

    async def by_status(self, *statuses: str) -> list[JournalEntry]:
        marks = ",".join(f"${i + 1}" for i in range(len(statuses)))
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM liquidations WHERE status IN ({marks}) "
            "ORDER BY created_at, key", *statuses)
        return self._entries(rows)

    async def unbooked(self, protocol: str, mark: str, *statuses: str) -> list[JournalEntry]:
        """`protocol`'s rows of those statuses with no realised figure whose detail holds
        `mark` (settled, not booked yet: the executor's `_unbooked_by_a_run_before`), without
        reading the whole journal at every start."""
        marks = ",".join(f"${i + 3}" for i in range(len(statuses)))
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM liquidations WHERE protocol = $1 AND "
            f"realised_profit_usd IS NULL AND detail LIKE $2 AND status IN ({marks}) "
            "ORDER BY created_at, key", protocol, f"%{mark}%", *statuses)
        return [e for e in self._entries(rows) if mark in (e.detail or "")]

    async def latest_signed(self, protocols: Collection[str], limit: int
                            ) -> list[tuple[str, int | None]]:
        """(key, block planned at) of `protocols`' rows with a transaction journaled, the
        latest block first, `limit` of them: what says how far the journal saw its chain
        (`reconcile.journal_last_block`). A block that does not read is None."""
        if not protocols:
            return []
        marks = ",".join(f"${i + 1}" for i in range(len(protocols)))
        rows = await self.db.fetch(
            f"SELECT key, detected_block FROM liquidations l WHERE protocol IN ({marks}) AND "
            "EXISTS (SELECT 1 FROM liquidation_txs t WHERE t.key = l.key) "
            f"ORDER BY detected_block DESC, key LIMIT ${len(protocols) + 1}",
            *sorted(protocols), limit)
        return [(str(key), _int(block)) for key, block in rows]

    async def highest_nonce(self, protocols: Collection[str]) -> int | None:
        """The highest nonce of a transaction journaled for `protocols` (one key on one
        chain), or None: the journal's knowledge of the key's history there."""
        if not protocols:
            return None
        marks = ",".join(f"${i + 1}" for i in range(len(protocols)))
        row = await self.db.fetchrow(
            "SELECT MAX(t.nonce) FROM liquidation_txs t JOIN liquidations l ON l.key = t.key "
            f"WHERE l.protocol IN ({marks})", *sorted(protocols))
        return int(row[0]) if row is not None and row[0] is not None else None

    async def is_empty(self) -> bool:
        """No liquidation recorded at all (one row read, not the table)."""
        return await self.db.fetchrow("SELECT 1 FROM liquidations LIMIT 1") is None

    async def all(self) -> list[JournalEntry]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM liquidations ORDER BY created_at, key")
        return self._entries(rows)

    def _entries(self, rows: Sequence[Sequence[Any]]) -> list[JournalEntry]:
        """The rows as entries, each kept whatever its columns hold (`_entry`); one with a
        column that does not read is said once (per table and key, not at every block)."""
        entries = []
        for r in rows:
            entry, unread = _entry(r)
            if unread:
                self._said_unread("liquidations", entry.key, unread)
            entries.append(entry)
        return entries

    def _said_unread(self, table: str, key: str, unread: Mapping[str, str]) -> None:
        if (table, key) in self._told_unread:
            return
        self._told_unread.add((table, key))
        log.warning("journal.row_unreadable", table=table, key=key, columns=dict(unread),
                    meaning="columns of a row no keeperd wrote (a hand's UPDATE, a bad "
                            "restore) do not read: each is taken as none (0 for an amount or "
                            "a fee budget, which spends nothing more on it); the row is kept, "
                            "and a transaction signed for it still tracked",
                    fix="check who can write the state database; correct or delete the row")

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Group many writes into one commit (a wave of liquidations found in one block)."""
        return self.db.transaction()

    async def forget_unsigned(self, key: JournalKey) -> bool:
        """Delete an opportunity that was journaled but never signed (a crash or an error
        between the two): nothing of it can be on chain, so it may be planned again."""
        return await self.db.execute(
            "DELETE FROM liquidations WHERE key = $1 AND status = $2 AND NOT EXISTS "
            "(SELECT 1 FROM liquidation_txs WHERE liquidation_txs.key = liquidations.key)",
            str(key), PLANNED) > 0

    async def forget_dry_run(self, key: JournalKey) -> bool:
        """Delete what a dry-run recorded for `key` (it was never signed nor sent), so that
        a keeper switched to liquidate on the same state directory sends it."""
        async with self.db.transaction():
            await self.db.fenced()
            return await self.db.execute(
                "DELETE FROM liquidations WHERE key = $1 AND status = $2 AND NOT EXISTS "
                "(SELECT 1 FROM liquidation_txs WHERE liquidation_txs.key = liquidations.key)",
                str(key), DRY_RUN) > 0

    async def record(self, entry: JournalEntry) -> bool:
        """Insert a new opportunity. False if the key is already journaled (never twice)."""
        now = time.time()
        async with self.db.transaction():
            await self.db.fenced()
            return await self.db.execute(
                "INSERT INTO liquidations (key, protocol, account, collateral, debt, "
                "debt_to_cover, expected_profit_usd, max_fee_wei, detected_block, status, "
                "nonce, winner, detail, created_at, updated_at, planned, pulls, told) VALUES "
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
                "'') ON CONFLICT (key) DO NOTHING",
                entry.key, entry.protocol, entry.account, entry.collateral, entry.debt,
                str(entry.debt_to_cover), entry.expected_profit_usd, str(entry.max_fee_wei),
                entry.detected_block, entry.status, entry.nonce, entry.winner, entry.detail,
                now, now, _planned_text(entry.planned), _planned_text(entry.pulls)) > 0

    async def record_many(self, entries: Sequence[JournalEntry]) -> set[str]:
        """Insert new opportunities, a statement for many (a wave's, in its transaction): the
        keys inserted. One already journaled is left out (never twice), as `record` says
        False for it."""
        inserted: set[str] = set()
        if not entries:
            return inserted
        now = time.time()
        async with self.db.transaction():
            await self.db.fenced()
            for start in range(0, len(entries), RECORD_MANY_CHUNK):
                chunk = entries[start:start + RECORD_MANY_CHUNK]
                rows = ",".join("(" + ",".join(f"${17 * i + j}" for j in range(1, 18))
                                + ", '')" for i in range(len(chunk)))
                args = [value for e in chunk for value in (
                    e.key, e.protocol, e.account, e.collateral, e.debt, str(e.debt_to_cover),
                    e.expected_profit_usd, str(e.max_fee_wei), e.detected_block, e.status,
                    e.nonce, e.winner, e.detail, now, now, _planned_text(e.planned),
                    _planned_text(e.pulls))]
                found = await self.db.fetch(
                    "INSERT INTO liquidations (key, protocol, account, collateral, debt, "
                    "debt_to_cover, expected_profit_usd, max_fee_wei, detected_block, status, "
                    "nonce, winner, detail, created_at, updated_at, planned, pulls, told) "
                    f"VALUES {rows} ON CONFLICT (key) DO NOTHING RETURNING key", *args)
                inserted.update(r[0] for r in found)
        return inserted

    async def fence(self) -> None:
        """Fail (FencedOut) unless this replica still holds the lease: for a transaction
        that is not a liquidation (an approval, a deposit, their replacements and
        cancels), signed but never written here — it takes a nonce all the same, and one
        sent by a replica that lost the lease could evict the new leader's liquidation."""
        async with self.db.transaction():
            await self.db.fenced()

    async def record_tx(self, tx: TxRecord, nonce_of_key: int | None = None) -> None:
        """Store a signed transaction before it is broadcast (fenced: a replica that lost the
        lease fails here, before anything reaches the chain)."""
        async with self.db.transaction():
            await self.db.fenced()
            await self.db.executemany(_INSERT_TX, _tx_rows(tx))
            nonce = tx.nonce if nonce_of_key is None else nonce_of_key
            now = time.time()
            await self.db.executemany(_SET_PENDING, [(PENDING, nonce, now, key)
                                                     for key in _keys(tx)])

    async def record_txs(self, txs: Sequence[TxRecord]) -> None:
        """`record_tx` for many signed transactions (a wave's), in one transaction and two
        statements instead of two each."""
        if not txs:
            return
        now = time.time()
        async with self.db.transaction():
            await self.db.fenced()
            await self.db.executemany(_INSERT_TX, [row for tx in txs for row in _tx_rows(tx)])
            await self.db.executemany(_SET_PENDING, [(PENDING, tx.nonce, now, key)
                                                     for tx in txs for key in _keys(tx)])

    async def txs(self, key: JournalKey) -> list[TxRecord]:
        # (a wave's bytes are kept once, in its first call's row: `_tx_rows`)
        rows = await self.db.fetch(
            "SELECT t.tx_hash, t.key, t.nonce, t.max_fee_per_gas, t.priority_fee, t.gas_limit, "
            "CASE WHEN t.wave_index IS NULL OR t.wave_index = 0 THEN t.raw ELSE "
            "(SELECT w.raw FROM liquidation_txs w WHERE w.tx_hash = t.tx_hash AND "
            "w.wave_index = 0) END, t.kind, t.sent_at, t.wave_index FROM liquidation_txs t "
            "WHERE t.key = $1 ORDER BY t.sent_at, t.tx_hash", str(key))
        # (each record under the key as the caller holds it: typed, or a row's text)
        records = []
        for r in rows:
            unread: dict[str, str] = {}
            # (a nonce or a place that does not read is -1, which no transaction has: the
            # record then fails `reconcile.forged` or the wave's places, and is refused)
            nonce = _read(unread, "nonce", r[2], _int)
            place = _read(unread, "wave_index", r[9], _int)
            records.append(TxRecord(
                str(r[0]), key, -1 if nonce is None else nonce,
                _read(unread, "max_fee_per_gas", r[3], _amount) or 0,
                _read(unread, "priority_fee", r[4], _amount) or 0,
                _read(unread, "gas_limit", r[5], _amount) or 0, str(r[6]), str(r[7]),
                _read(unread, "sent_at", r[8], _float) or 0.0,
                None if r[9] is None else -1 if place is None or place < 0 else place))
            if unread:
                self._said_unread("liquidation_txs", f"{r[0]} {r[1]}", unread)
        return records

    async def wave_members(self, tx_hash: str) -> dict[str, int]:
        """The keys a wave's transaction was journaled under, each with its call's index
        (-1: one that does not read, which no call has — the wave's places are then not
        0..n-1 and it is not trusted)."""
        rows = await self.db.fetch(
            "SELECT key, wave_index FROM liquidation_txs WHERE tx_hash = $1 AND "
            "wave_index IS NOT NULL", tx_hash)
        members = {}
        for key, index in rows:
            place = _int(index)
            if place is None or place < 0:
                self._said_unread("liquidation_txs", f"{tx_hash} {key}",
                                  {"wave_index": str(index)[:80]})
            members[str(key)] = -1 if place is None or place < 0 else place
        return members

    async def mark_told(self, told: Sequence[tuple[str, str]]) -> None:
        """Each (key, outcome) as told to the alerts (the alert engine's commit, in the
        transaction that queues their notifications): one statement on PostgreSQL, where
        each is a round trip under the connection a crash's next block waits for."""
        if not told:
            return
        if self.db.dialect == "postgresql":
            await self.db.execute(
                "UPDATE liquidations SET told = t.outcome FROM (SELECT unnest($1::text[]) AS "
                "key, unnest($2::text[]) AS outcome) AS t WHERE liquidations.key = t.key",
                [k for k, _ in told], [o for _, o in told])
            return
        for key, outcome in told:
            await self.db.execute("UPDATE liquidations SET told = $1 WHERE key = $2",
                                  outcome, key)

    async def reverted_since(self, protocol: str, block: int) -> list[JournalEntry]:
        """A protocol's rows that reverted on chain with no race to explain it (a lost race
        is LOST_RACE), planned after `block`: what the revert breaker may count, read back at
        a start or a takeover (the caller leaves out what it never counts)."""
        return self._entries(await self.db.fetch(
            f"SELECT {_COLUMNS} FROM liquidations WHERE protocol = $1 AND status = $2 "
            "AND detected_block > $3 ORDER BY detected_block", protocol, REVERTED, block))

    async def mark_told_by_older_leader(self) -> int:
        """The settled outcomes whose telling is marked only as far as "sent": taken as told.
        For a replica taking the lease from an older keeperd, which tells what it settles
        and marks nothing: the rows in flight when migration 15 ran (`told` = 'pending') and
        settled by it were told again at the takeover, under new idempotency keys (a rolling
        upgrade by hand: 13 outcomes twice). The number marked."""
        return await self.db.execute(
            "UPDATE liquidations SET told = status WHERE told = $1 AND status IN ($2, $3, $4)",
            PENDING, INCLUDED, REVERTED, LOST_RACE)

    async def untold(self, protocol: str, unbooked_mark: str, limit: int = 500
                     ) -> list[tuple[JournalEntry, str]]:
        """`protocol`'s rows whose outcome was journaled and not told (a process killed in
        between), each with the outcome to tell: `sent` for one in flight, else its status.
        Only rows this code journaled (`told` '' at first): an older keeperd's, beside this
        one during a rolling upgrade, told its own and wrote nothing of it. Not those whose
        detail says they wait to be booked (`unbooked_mark`: told when they are)."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM liquidations WHERE protocol = $1 AND told IS NOT NULL "
            "AND ((status = $2 AND told = '') OR (status IN ($3, $4, $5) AND "
            "told <> status)) AND (detail IS NULL OR detail NOT LIKE $6) "
            "ORDER BY created_at, key LIMIT $7",
            protocol, PENDING, INCLUDED, REVERTED, LOST_RACE, f"%{unbooked_mark}%", limit)
        entries = self._entries(rows)
        return [(e, "sent" if e.status == PENDING else e.status) for e in entries]

    async def holdings(self) -> dict[str, dict[str, tuple[str, int]]]:
        """What the keeper holds, by protocol and market: (the holding as text, the block it
        was read at) — as each protocol last wrote it (`set_holdings`). A block that does not
        read is 0: the holding is kept (it refuses a start without its protocol all the same)."""
        rows = await self.db.fetch("SELECT protocol, market, holding, block FROM "
                                   "keeper_holdings ORDER BY protocol, market")
        found: dict[str, dict[str, tuple[str, int]]] = {}
        for protocol, market, holding, block in rows:
            unread: dict[str, str] = {}
            at = _read(unread, "block", block, _int)
            if unread:
                self._said_unread("keeper_holdings", f"{protocol} {market}", unread)
            found.setdefault(str(protocol), {})[str(market)] = (str(holding), at or 0)
        return found

    async def set_holdings(self, protocol: str, held: Mapping[str, str], block: int) -> None:
        """A protocol's holdings of the keeper as read at `block` (market -> text), in place
        of what it held before; fenced (a replica that lost the lease writes nothing)."""
        async with self.db.transaction():
            await self.db.fenced()
            await self.db.execute("DELETE FROM keeper_holdings WHERE protocol = $1", protocol)
            now = time.time()
            if held:
                await self.db.executemany(
                    "INSERT INTO keeper_holdings (protocol, market, holding, block, "
                    "updated_at) VALUES ($1, $2, $3, $4, $5)",
                    [(protocol, market, text, block, now) for market, text in held.items()])

    async def record_deposit(self, protocol: str, deposit_id: str, amount: int, *,
                             refill: bool) -> None:
        """A margin deposit the keeper is about to send into a protocol (`refill`: not its
        first), written before it is signed: a budget of refills must survive a restart, a
        SIGKILL after the broadcast included. Fenced like a signing."""
        async with self.db.transaction():
            await self.db.fenced()
            await self.db.execute(
                "INSERT INTO keeper_deposits (deposit_key, protocol, amount, refill, sent_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (deposit_key) DO NOTHING",
                deposit_id, protocol, str(amount), int(refill), time.time())

    async def forget_deposit(self, deposit_id: str) -> None:
        """A deposit recorded and then refused before it reached the chain."""
        await self.db.execute("DELETE FROM keeper_deposits WHERE deposit_key = $1", deposit_id)

    async def deposits(self, protocol: str) -> list[tuple[float, int | None, bool]]:
        """A protocol's margin deposits as recorded: (sent at, amount, refill), oldest
        first; an amount that does not read as one (written by someone else) is None, for
        the caller to take at its worst, and a time that does not read is infinity: the
        latest, which a budget of refills counts."""
        rows = await self.db.fetch("SELECT deposit_key, sent_at, amount, refill FROM "
                                   "keeper_deposits WHERE protocol = $1 ORDER BY sent_at",
                                   protocol)
        found: list[tuple[float, int | None, bool]] = []
        for key, at, text, refill in rows:
            unread: dict[str, str] = {}
            sent_at = _read(unread, "sent_at", at, _float)
            amount = _read(unread, "amount", text, _amount)
            if unread:
                self._said_unread("keeper_deposits", str(key), unread)
            found.append((math.inf if sent_at is None else sent_at, amount, bool(refill)))
        return sorted(found, key=lambda d: d[0])

    async def set_realised(self, key: JournalKey, usd: float) -> None:
        """An entry's realised profit (negative: a loss), its status unchanged."""
        await self.db.execute("UPDATE liquidations SET realised_profit_usd = $1, "
                              "updated_at = $2 WHERE key = $3", usd, time.time(), str(key))

    async def set_status(self, key: JournalKey, status: str, *, winner: str | None = None,
                         detail: str | None = None,
                         realised_profit_usd: float | None = None) -> None:
        await self.db.execute(
            "UPDATE liquidations SET status = $1, winner = COALESCE($2, winner), "
            "detail = COALESCE($3, detail), updated_at = $4, "
            "realised_profit_usd = COALESCE($6, realised_profit_usd) WHERE key = $5",
            status, winner, detail, time.time(), str(key), realised_profit_usd)


_COLUMNS = ("key, protocol, account, collateral, debt, debt_to_cover, expected_profit_usd, "
            "max_fee_wei, detected_block, status, nonce, winner, detail, realised_profit_usd, "
            "planned, pulls")


def _planned_text(planned: Mapping[str, int] | None) -> str | None:
    """As JSON, each amount a decimal string (token units exceed what a JSON number holds
    exactly in most readers)."""
    if planned is None:
        return None
    return json.dumps({k: str(int(v)) for k, v in planned.items()}, sort_keys=True)


def _entry(r: Sequence[Any]) -> tuple[JournalEntry, dict[str, str]]:
    """A row as an entry, and what of it did not read (column -> its text). Every row is
    kept: a pending one's signed transaction may be on its way (its bytes, in
    liquidation_txs, are verified on their own: `reconcile.forged`), and dropping it would stop
    tracking it. Its plan, profit figures and nonce are read as none; its debt and fee budget
    as 0 (a budget of 0 spends nothing more on replacing it); its block as 0 (not watched for
    a reorg)."""
    unread: dict[str, str] = {}
    return JournalEntry(
        str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]),
        _read(unread, "debt_to_cover", r[5], _amount) or 0,
        _read(unread, "expected_profit_usd", r[6], _float) or 0.0,
        _read(unread, "max_fee_wei", r[7], _amount) or 0,
        _read(unread, "detected_block", r[8], _int) or 0, str(r[9]),
        _read(unread, "nonce", r[10], _int), None if r[11] is None else str(r[11]),
        None if r[12] is None else str(r[12]),
        _read(unread, "realised_profit_usd", r[13], _float),
        _read(unread, "planned", r[14], _planned), _read(unread, "pulls", r[15], _pulls)
    ), unread


_T = TypeVar("_T")


def _read(unread: dict[str, str], column: str, value: object,
          parse: Callable[[Any], _T | None]) -> _T | None:
    """A column as `parse` reads it; None when NULL, or when it does not read (then named in
    `unread` with its text)."""
    if value is None:
        return None
    found = parse(value)
    if found is None:
        unread[column] = str(value)[:80]
    return found


def _int(value: object) -> int | None:
    """A stored integer, or None (SQLite keeps a text written into an integer column as
    text, PostgreSQL refuses it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


def _float(value: object) -> float | None:
    """A stored finite number, or None."""
    try:
        found = float(str(value))
    except ValueError:
        return None
    return found if math.isfinite(found) else None


def _planned(text: object) -> Mapping[str, int] | None:
    """A row's plan (the protocol's event fields it expects), or None when it does not read
    as amounts by field."""
    try:
        found = json.loads(str(text))
        return {str(k): int(v) for k, v in found.items()}
    except (ValueError, TypeError, AttributeError):
        return None


def _pulls(text: object) -> Mapping[str, int] | None:
    """A row's pulls, or None when it has none or they do not read as token amounts: they
    only ever hold capital back (a row cannot make keeperd spend more than it holds), and a
    bad one must not stop the journal from being read."""
    if text is None:
        return None
    try:
        found = {str(k).lower(): int(v) for k, v in json.loads(str(text)).items()}
    except (ValueError, TypeError, AttributeError):
        return None
    return found if all(v >= 0 for v in found.values()) else None


def _amount(text: object) -> int | None:
    """A recorded token amount, or None when it does not read as one (`_int`, not below 0)."""
    amount = _int(text)
    return amount if amount is not None and amount >= 0 else None


def _keys(tx: TxRecord) -> list[str]:
    """The journal keys a signed transaction is written under: a wave's members, or its own."""
    if isinstance(tx.key, WaveKey):
        return [str(member) for member in tx.key.members]
    return [str(tx.key)]


def _tx_rows(tx: TxRecord) -> list[tuple[object, ...]]:
    """A signed transaction's rows, in `_INSERT_TX`'s order: one, or one per wave member, the
    wave's bytes in its first call's row only (16 copies of a wave of 16 were ~200 KB a
    wave, written before its broadcast)."""
    fees = (str(tx.max_fee_per_gas), str(tx.priority_fee), tx.gas_limit)
    if isinstance(tx.key, WaveKey):
        return [(tx.tx_hash, str(member), tx.nonce, *fees, tx.raw if i == 0 else "",
                 tx.kind, tx.sent_at, i) for i, member in enumerate(tx.key.members)]
    return [(tx.tx_hash, str(tx.key), tx.nonce, *fees, tx.raw, tx.kind, tx.sent_at,
             tx.wave_index)]
