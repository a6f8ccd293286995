"""Schema migrations both back-ends run, numbered, each applied once and recorded in
`schema_migrations` (in one transaction with its statements, so a crash leaves it applied or
not). `keeperd storage migrate` runs them; so does opening the journal.

Migrations 1 to 4 adopt the tables keeperd created before migrations existed: their
statements are `CREATE ... IF NOT EXISTS`, so on an existing SQLite state file they only record
themselves. With the state on PostgreSQL, each replica's local SQLite file holds only its
account index (`storage/account_index.py` says why): it runs that migration alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

from keeperd.storage.db import Database


def _journal(dialect: str) -> Sequence[str]:
    from keeperd.execution.journal import SCHEMA

    return SCHEMA


def _alerts(dialect: str) -> Sequence[str]:
    from keeperd.alerts import outbox, silences, state

    return (*outbox.schema_v2(dialect), *state.schema(dialect), *silences.schema(dialect))


def _breaker(dialect: str) -> Sequence[str]:
    from keeperd.oracles.breaker import schema

    return schema(dialect)


def _account_index(dialect: str) -> Sequence[str]:
    from keeperd.storage.account_index import schema

    return schema(dialect)


def _realised_profit(dialect: str) -> Sequence[str]:
    return ("ALTER TABLE liquidations ADD COLUMN realised_profit_usd DOUBLE PRECISION",)


def _outbox_sink_ids(dialect: str) -> Sequence[str]:
    from keeperd.alerts.outbox import sink_id_migration

    return sink_id_migration(dialect)


def _index_filter(dialect: str) -> Sequence[str]:
    return ("CREATE TABLE IF NOT EXISTS index_filter (protocol TEXT NOT NULL, element TEXT NOT "
            "NULL, PRIMARY KEY (protocol, element))",)


def _breaker_observed_at(dialect: str) -> Sequence[str]:
    from keeperd.oracles.breaker import observed_at_schema

    return observed_at_schema(dialect)


MIGRATION_LOCK = 0x6B656570  # "keep": the advisory lock replicas migrate under

# (version, name, the statements): append only; never edit one that has shipped.
MIGRATIONS: tuple[tuple[int, str, Callable[[str], Sequence[str]]], ...] = (
    (1, "liquidation journal", _journal),
    (2, "alert state, cursors, silences and the outbox", _alerts),
    (3, "the oracle breaker", _breaker),
    (4, "the account index", _account_index),
    (5, "what each discovery filter held", _index_filter),
    (6, "each liquidation's realised profit", _realised_profit),
    (7, "where each breaker trip was observed", _breaker_observed_at),
    (8, "the outbox names each sink by its id, not its place in the route", _outbox_sink_ids),
)
INDEX_MIGRATION = 4
INDEX_MIGRATIONS = frozenset({4, 5})  # the account index's: in each replica's own file


async def applied(db: Database) -> list[int]:
    await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version BIGINT PRIMARY KEY, name TEXT NOT NULL, "
                     "applied_at DOUBLE PRECISION NOT NULL)")
    return [r[0] for r in await db.fetch("SELECT version FROM schema_migrations "
                                         "ORDER BY version")]


async def migrate(db: Database, *, only: Collection[int] | None = None) -> list[int]:
    """Apply the migrations not applied yet (of `only`, when given), in one transaction
    (replicas starting together: the first applies them, the others wait on an advisory lock
    and find them done); the versions applied now."""
    now = []
    async with db.transaction():
        if db.dialect == "postgresql":
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        done = set(await applied(db))
        for version, name, statements in MIGRATIONS:
            if version in done or (only is not None and version not in only):
                continue
            for sql in statements(db.dialect):
                await db.execute(sql)
            await db.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                             "VALUES ($1, $2, $3)", version, name, time.time())
            now.append(version)
    return now
