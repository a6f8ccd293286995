"""`keeperd storage migrate|copy|leases`: what an operator runs against the state database.

- `migrate`: apply the schema migrations to the configured back-end (PostgreSQL with
  storage.url, else the SQLite file in state_dir), as keeperd does at start.
- `copy --from sqlite --to postgres`: move a single machine's journal and alerts onto
  PostgreSQL before starting replicas: every opportunity and every signed transaction, what was
  told and what waits in the outbox, silences and the breaker's trips, in one transaction — a
  keeper that moves over never repeats a liquidation it sent from the old machine, nor an alert
  it told.
  Refuses a target journal that is not empty (two histories must not be merged blindly).
- `leases`: who holds each keeper identity's lease, at which epoch, until when.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keeperd.config import Config
from keeperd.statelock import StateDirLock, StateDirLocked
from keeperd.storage.db import STATE_FILE, Database, PostgresDatabase, SqliteDatabase
from keeperd.storage.lease import Lease, LeaseRow, unreachable, with_password
from keeperd.storage.migrations import migrate
from keeperd.storage.summary import summarize

TABLES = {
    "liquidations": ("key, protocol, account, collateral, debt, debt_to_cover, "
                     "expected_profit_usd, max_fee_wei, detected_block, status, nonce, winner, "
                     "detail, created_at, updated_at, realised_profit_usd, planned, pulls, told"),
    "liquidation_txs": ("tx_hash, key, nonce, max_fee_per_gas, priority_fee, gas_limit, raw, "
                        "kind, sent_at, wave_index"),
    # What was told, and what is still to be told (ids are the target's own).
    "alert_state": "fingerprint, rule, route, severity, value, told_at, since, chain, block, alert",
    "alert_cursor": "name, block",
    "watched_held": "account, since",
    "silences": "matchers, comment, created_by, created_at, ends_at",
    "breaker": "chain, asset, tripped, manual, reason, since, clear_since, block_hash",
    "outbox": ("route, sink, sink_kind, idempotency_key, chain, block, status, priority, "
               "payload, state, attempts, parts_done, next_at, created_at, delivered_at, "
               "last_error"),
    # What the keeper holds of its own (Curie's takeovers): left behind, a start on the copy
    # without that protocol went on while it held one (a review).
    "keeper_holdings": "protocol, market, holding, block, updated_at",
    # (the margin refilled within a day: left behind, the copy's first start refilled again)
    "keeper_deposits": "deposit_key, protocol, amount, refill, sent_at",
}
# The migrated tables `storage copy` leaves, and why (a test walks every table: a new one is
# copied or named here).
NOT_COPIED = {
    "schema_migrations": "the target's own migrations",
    "sqlite_sequence": "SQLite's own",
    "index_cursor": "the account index stays in each replica's own file",
    "indexed_blocks": "the account index stays in each replica's own file",
    "accounts": "the account index stays in each replica's own file",
    "index_filter": "the account index stays in each replica's own file",
    "chain_genesis": "recorded from the chain by the first start on the target, as on any "
                     "new database",
}


class StorageError(Exception):
    pass


def sqlite_path(config: Config) -> Path:
    return config.state_dir / STATE_FILE


async def open_configured(config: Config) -> Database:
    storage = config.storage
    if storage.url is None:  # (the daemon may hold the file's lock for a moment: wait)
        return SqliteDatabase.open(sqlite_path(config), busy_timeout_s=5.0)
    try:
        dsn = with_password(storage.connect_url, storage.password())
        return await PostgresDatabase.connect(dsn, statement_timeout_s=storage.statement_timeout_s)
    except Exception as exc:
        raise StorageError(unreachable(storage.url, exc)) from None


async def run_migrations(config: Config) -> tuple[str, list[int]]:
    db = await open_configured(config)
    try:
        return db.dialect, await migrate(db)
    finally:
        await db.close()


@dataclass(frozen=True)
class Copied:
    rows: dict[str, int]


async def copy_sqlite_to_postgres(config: Config) -> Copied:
    """The single machine's journal, alert state and outbox into an empty PostgreSQL
    database, holding the state directory's lock throughout: a keeperd still running on it
    would send and tell things after the copy that the replicas never learn of (a copy taken
    beside a running keeper missed its next liquidation in a by-hand trial)."""
    if config.storage.url is None:
        raise StorageError("storage.url is not set: name the PostgreSQL database to copy to")
    path = sqlite_path(config)
    if not path.exists():
        raise StorageError(f"{path} does not exist: nothing to copy (state_dir is where the "
                           "single machine kept its state)")
    try:
        lock = StateDirLock(config.state_dir).acquire()
    except StateDirLocked as exc:
        raise StorageError(f"{exc}; a copy needs keeperd stopped on it") from None
    try:
        return await _copy(config, path)
    finally:
        lock.release()


async def _copy(config: Config, path: Path) -> Copied:
    source = SqliteDatabase.open(path)
    target = await open_configured(config)
    try:
        await migrate(source)
        await migrate(target)
        existing = await target.fetchval("SELECT count(*) FROM liquidations")
        if existing:
            raise StorageError(f"the PostgreSQL journal already has {existing} "
                               "opportunities: copy into an empty database only")
        counts = {}
        async with target.transaction():
            for table, columns in TABLES.items():  # opportunities before their transactions
                rows = await source.fetch(f"SELECT {columns} FROM {table}")
                marks = ", ".join(f"${i + 1}" for i in range(len(columns.split(","))))
                await target.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
                counts[table] = len(rows)
        return Copied(counts)
    finally:
        await source.close()
        await target.close()


async def leases(config: Config) -> list[LeaseRow]:
    storage = config.storage
    if storage.url is None:
        return []
    lease = Lease(with_password(storage.connect_url, storage.password()), "-",
                  length_s=storage.lease.length_s,
                  statement_timeout_s=storage.lease.statement_timeout_s)
    try:
        await lease.connect(create=False)  # (a read: nothing written)
    except Exception as exc:
        raise StorageError(unreachable(storage.url, exc)) from None
    import asyncpg

    try:
        return await lease.rows()
    except asyncpg.UndefinedTableError:
        return []  # (no replica has started on it yet)
    finally:
        await lease.close()


async def shared_status(config: Config) -> dict[str, object]:
    """For `keeperd status` with storage.url: the replicas' leases, the shared journal, the
    alerts firing and the outbox."""
    rows = await leases(config)
    db = await open_configured(config)
    try:
        summary = await summarize(db, index=False)  # (the index is in each replica's file)
    finally:
        await db.close()
    return {**summary,
            "replicas": [{"identity": r.identity, "holder": r.holder, "epoch": r.epoch,
                          "expires_in_s": round(r.expires_in_s, 1),
                          "since_renewal_s": round(r.since_renewal_s, 1)} for r in rows]}
