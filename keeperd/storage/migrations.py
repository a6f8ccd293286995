"""Schema migrations both back-ends run, numbered, each applied once and recorded in
`schema_migrations` (in one transaction with its statements, so a crash leaves it applied or
not). The daemon runs them at start, before it opens anything that reads the tables; so do
`keeperd storage migrate` and the commands that open the state database.

The statements are frozen text, here and nowhere else: a migration that has shipped is never
edited (tests/unit/test_migrations.py pins each one's text), and no feature module's constant
feeds one — editing a table's definition in its module once silently changed a shipped
migration. A change to a table is a new migration at the end.

Migrations 1 to 4 adopt the tables keeperd created before migrations existed: their
statements are `CREATE ... IF NOT EXISTS`, so on an existing SQLite state file they only record
themselves. With the state on PostgreSQL, each replica's local SQLite file holds only its
account index (`storage/account_index.py` says why): it runs those migrations alone.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from keeperd.storage.db import Database

# An auto-numbered key: the one column whose spelling differs between the back-ends.
_SERIAL = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgresql": "BIGSERIAL PRIMARY KEY"}

_M1_JOURNAL = (
    """CREATE TABLE IF NOT EXISTS liquidations (
    key              TEXT PRIMARY KEY,
    protocol         TEXT NOT NULL,
    account          TEXT NOT NULL,
    collateral       TEXT NOT NULL,
    debt             TEXT NOT NULL,
    debt_to_cover    TEXT NOT NULL,
    expected_profit_usd DOUBLE PRECISION NOT NULL,
    max_fee_wei      TEXT NOT NULL,
    detected_block   BIGINT NOT NULL,
    status           TEXT NOT NULL,
    nonce            BIGINT,
    winner           TEXT,
    detail           TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS liquidations_by_status ON liquidations (status)",
    """CREATE TABLE IF NOT EXISTS liquidation_txs (
    tx_hash          TEXT PRIMARY KEY,
    key              TEXT NOT NULL REFERENCES liquidations(key),
    nonce            BIGINT NOT NULL,
    max_fee_per_gas  TEXT NOT NULL,
    priority_fee     TEXT NOT NULL,
    gas_limit        BIGINT NOT NULL,
    raw              TEXT NOT NULL,
    kind             TEXT NOT NULL,
    sent_at          DOUBLE PRECISION NOT NULL
)""",
)


def _m2_alerts(dialect: str) -> tuple[str, ...]:
    serial = _SERIAL[dialect]
    return (
        f"""CREATE TABLE IF NOT EXISTS outbox (
    id              {serial},
    route           TEXT NOT NULL,
    sink            BIGINT NOT NULL,
    sink_kind       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    chain           TEXT,
    block           BIGINT,
    status          TEXT NOT NULL,
    priority        BIGINT NOT NULL DEFAULT 0,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    parts_done      BIGINT NOT NULL DEFAULT 0,
    next_at         DOUBLE PRECISION NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    delivered_at    DOUBLE PRECISION,
    last_error      TEXT
)""",
        "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, route, sink, priority, next_at)",
        "CREATE INDEX IF NOT EXISTS outbox_block ON outbox (chain, block)",
        """CREATE TABLE IF NOT EXISTS alert_state (
    fingerprint  TEXT PRIMARY KEY,
    rule         TEXT NOT NULL,
    route        TEXT NOT NULL,
    severity     TEXT NOT NULL,
    value        DOUBLE PRECISION,
    told_at      DOUBLE PRECISION NOT NULL,
    since        DOUBLE PRECISION NOT NULL,
    chain        TEXT,
    block        BIGINT,
    alert        TEXT NOT NULL
)""",
        """CREATE TABLE IF NOT EXISTS alert_cursor (
    name   TEXT PRIMARY KEY,
    block  BIGINT NOT NULL
)""",
        f"""CREATE TABLE IF NOT EXISTS silences (
    id          {serial},
    matchers    TEXT NOT NULL,
    comment     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    ends_at     DOUBLE PRECISION NOT NULL
)""",
    )


_M3_BREAKER = ("""CREATE TABLE IF NOT EXISTS breaker (
    asset        TEXT PRIMARY KEY,
    tripped      BIGINT NOT NULL,
    manual       BIGINT NOT NULL,
    reason       TEXT,
    since        DOUBLE PRECISION NOT NULL,
    clear_since  DOUBLE PRECISION
)""",)

# (Names as the tables had before migrations existed: an existing state file adopts them.)
_M4_ACCOUNT_INDEX = (
    "CREATE TABLE IF NOT EXISTS index_cursor (protocol TEXT PRIMARY KEY, block BIGINT NOT NULL, "
    "hash TEXT)",
    "CREATE TABLE IF NOT EXISTS indexed_blocks (protocol TEXT NOT NULL, number BIGINT NOT NULL, "
    "hash TEXT NOT NULL, PRIMARY KEY (protocol, number))",
    "CREATE TABLE IF NOT EXISTS accounts (protocol TEXT NOT NULL, account TEXT NOT NULL, "
    "first_block BIGINT NOT NULL, PRIMARY KEY (protocol, account))",
    "CREATE INDEX IF NOT EXISTS accounts_by_first_block ON accounts (protocol, first_block)",
)

_M5_INDEX_FILTER = (
    "CREATE TABLE IF NOT EXISTS index_filter (protocol TEXT NOT NULL, element TEXT NOT NULL, "
    "PRIMARY KEY (protocol, element))",
)

_M6_REALISED_PROFIT = ("ALTER TABLE liquidations ADD COLUMN realised_profit_usd DOUBLE PRECISION",)

# Where an automatic breaker trip was last observed (the chain's name and that block's hash),
# so a trip of a chain that is gone — a devnet started again from its state, a block reorged
# away — is not kept for good by a table keyed by symbol (`oracles/breaker.py`).
_M7_BREAKER_OBSERVED_AT = (
    "ALTER TABLE breaker ADD COLUMN chain TEXT",
    "ALTER TABLE breaker ADD COLUMN block_hash TEXT",
)

# The outbox's `sink` becomes TEXT, the sink's id; existing rows get `#<index>` (no id starts
# with `#`: alerts/outbox.py LEGACY_PREFIX) and keep everything else — a pending row stays
# pending. The same statements on both back-ends: SQLite (>= 3.35) and PostgreSQL both add,
# drop and rename columns.
_M8_OUTBOX_SINK_IDS = (
    "DROP INDEX IF EXISTS outbox_due",
    "ALTER TABLE outbox ADD COLUMN sink_id TEXT NOT NULL DEFAULT ''",
    "UPDATE outbox SET sink_id = '#' || CAST(sink AS TEXT)",
    "ALTER TABLE outbox DROP COLUMN sink",
    "ALTER TABLE outbox RENAME COLUMN sink_id TO sink",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, route, sink, priority, next_at)",
)

# The breaker is keyed by (chain, asset): a stale feed on one chain pauses that chain only
# (`oracles/breaker.py`). A trip that knew its chain keeps it; a manual trip that did not is
# kept for every chain ('*'); an automatic trip that did not is dropped (the price watch judges
# its feed again at the daemon's next block, before anything is sent).
_M9_BREAKER_PER_CHAIN = (
    """CREATE TABLE breaker_per_chain (
    chain        TEXT NOT NULL,
    asset        TEXT NOT NULL,
    tripped      BIGINT NOT NULL,
    manual       BIGINT NOT NULL,
    reason       TEXT,
    since        DOUBLE PRECISION NOT NULL,
    clear_since  DOUBLE PRECISION,
    block_hash   TEXT,
    PRIMARY KEY (chain, asset)
)""",
    "INSERT INTO breaker_per_chain (chain, asset, tripped, manual, reason, since, clear_since, "
    "block_hash) SELECT CASE WHEN manual = 1 THEN '*' ELSE chain END, asset, tripped, manual, "
    "reason, since, clear_since, CASE WHEN manual = 1 THEN NULL ELSE block_hash END "
    "FROM breaker WHERE manual = 1 OR chain IS NOT NULL",
    "DROP TABLE breaker",
    "ALTER TABLE breaker_per_chain RENAME TO breaker",
)

# What each liquidation's plan expects the protocol's own event to show (JSON: the event's
# fields by name, in token units), written with the row before anything is signed: the plan
# compared with the chain after a restart as well as before (`execution/journal.py`).
_M10_PLANNED_OUTCOME = ("ALTER TABLE liquidations ADD COLUMN planned TEXT",)

# The watched accounts seen holding a position (lowercase): one holding none later was closed,
# repaid or liquidated, not mistyped — remembered across restarts (`alerts/state.py`).
_M11_WATCHED_HELD = (
    """CREATE TABLE watched_held (
    account TEXT PRIMARY KEY,
    since   DOUBLE PRECISION NOT NULL
)""",
)

# A wave of liquidations sent as one transaction (execution/wave_code.py): the wave's signed
# transaction is journaled under each of its liquidations, with the index of its call in the
# wave (`wave_index`; NULL for a transaction of one liquidation). One hash under many keys,
# so the primary key is the pair.
_M12_WAVE_TXS = (
    """CREATE TABLE liquidation_txs_by_key (
    tx_hash          TEXT NOT NULL,
    key              TEXT NOT NULL REFERENCES liquidations(key),
    nonce            BIGINT NOT NULL,
    max_fee_per_gas  TEXT NOT NULL,
    priority_fee     TEXT NOT NULL,
    gas_limit        BIGINT NOT NULL,
    raw              TEXT NOT NULL,
    kind             TEXT NOT NULL,
    sent_at          DOUBLE PRECISION NOT NULL,
    wave_index       BIGINT,
    PRIMARY KEY (tx_hash, key)
)""",
    "INSERT INTO liquidation_txs_by_key (tx_hash, key, nonce, max_fee_per_gas, priority_fee, "
    "gas_limit, raw, kind, sent_at) SELECT tx_hash, key, nonce, max_fee_per_gas, "
    "priority_fee, gas_limit, raw, kind, sent_at FROM liquidation_txs",
    "DROP TABLE liquidation_txs",
    "ALTER TABLE liquidation_txs_by_key RENAME TO liquidation_txs",
    "CREATE INDEX IF NOT EXISTS liquidation_txs_by_key_index ON liquidation_txs (key)",
)

# What each liquidation's signed transaction will pull from the keeper's balances (JSON: token
# address to amount, a decimal string; NULL for one that pulls nothing: a capital-free path, a
# row from before this): a restart reserves it for the resumed transactions until they are
# mined, as the run that signed them did (`TxManager.reserve`).
_M13_LIQUIDATION_PULLS = ("ALTER TABLE liquidations ADD COLUMN pulls TEXT",)

# The chain each journal was kept on, by its genesis block's hash (`storage/chain_identity.py`):
# a devnet started again has the same chain id and another history, and a journal of the old
# one stalled a crash on the new (a by-hand trial reusing a replicas' database).
# Keyed by the config's chain name: two chains of one id may be configured side by side (two
# devnets), each its own genesis.
_M14_CHAIN_GENESIS = (
    """CREATE TABLE chain_genesis (
    chain    TEXT PRIMARY KEY,
    chain_id BIGINT NOT NULL,
    genesis  TEXT NOT NULL,
    seen_at  DOUBLE PRECISION NOT NULL
)""",
)

# The last outcome of each liquidation told to the alerts (`sent`, `included`, `reverted`,
# `lost_race`), written in the transaction that queues its notification: a settlement is
# journaled at once and told with the block's other alerts, and a replica killed between the
# two left its `included` untold for good — the next leader found the row settled (a by-hand
# trial). What was settled before this is taken as told.
_M15_OUTCOME_TOLD = (
    "ALTER TABLE liquidations ADD COLUMN told TEXT",
    "UPDATE liquidations SET told = status",
)

# What the keeper itself holds in each protocol after its liquidations (Curie's takeovers), by
# market, as last read from the chain: a start whose config no longer has the protocol is
# refused while it holds something there — nothing would watch or unwind it (a by-hand trial
# removed Curie with a position held; the only word was a resolved alert's text).
_M16_KEEPER_HOLDINGS = (
    """CREATE TABLE keeper_holdings (
    protocol   TEXT NOT NULL,
    market     TEXT NOT NULL,
    holding    TEXT NOT NULL,
    block      BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (protocol, market)
)""",
)

# The keeper's own deposits of margin into a protocol (Curie's Vault), written before each is
# signed (`deposit_key`: its upkeep key): what has been refilled within a day survives a
# restart (it lived in memory, and every start topped the margin up again: a daemon
# restarted after each losing unwind refilled without bound).
_M17_KEEPER_DEPOSITS = (
    """CREATE TABLE keeper_deposits (
    deposit_key TEXT PRIMARY KEY,
    protocol    TEXT NOT NULL,
    amount      TEXT NOT NULL,
    refill      BIGINT NOT NULL,
    sent_at     DOUBLE PRECISION NOT NULL
)""",
)

MIGRATION_LOCK = 0x6B656570  # "keep": the advisory lock replicas migrate under

# (version, name): append only; never edit one that has shipped.
NAMES: tuple[tuple[int, str], ...] = (
    (1, "liquidation journal"),
    (2, "alert state, cursors, silences and the outbox"),
    (3, "the oracle breaker"),
    (4, "the account index"),
    (5, "what each discovery filter held"),
    (6, "each liquidation's realised profit"),
    (7, "where each breaker trip was observed"),
    (8, "the outbox names each sink by its id, not its place in the route"),
    (9, "the breaker keyed by chain and asset"),
    (10, "each liquidation's planned outcome"),
    (11, "the watched accounts seen holding a position"),
    (12, "a wave's transaction journaled under each of its liquidations"),
    (13, "what each liquidation pulls from the keeper's balances"),
    (14, "the chain each journal was kept on"),
    (15, "the last outcome of each liquidation told"),
    (16, "what the keeper itself holds in each protocol"),
    (17, "the keeper's own margin deposits"),
)


def statements(version: int, dialect: str) -> Sequence[str]:
    """The frozen statements of one migration on one back-end."""
    return {1: _M1_JOURNAL, 2: _m2_alerts(dialect), 3: _M3_BREAKER, 4: _M4_ACCOUNT_INDEX,
            5: _M5_INDEX_FILTER, 6: _M6_REALISED_PROFIT, 7: _M7_BREAKER_OBSERVED_AT,
            8: _M8_OUTBOX_SINK_IDS, 9: _M9_BREAKER_PER_CHAIN,
            10: _M10_PLANNED_OUTCOME, 11: _M11_WATCHED_HELD, 12: _M12_WAVE_TXS,
            13: _M13_LIQUIDATION_PULLS, 14: _M14_CHAIN_GENESIS,
            15: _M15_OUTCOME_TOLD, 16: _M16_KEEPER_HOLDINGS,
            17: _M17_KEEPER_DEPOSITS}[version]


# (version, name, its statements by dialect), for the callers that walk them.
MIGRATIONS = tuple((v, name, (lambda d, v=v: statements(v, d))) for v, name in NAMES)
INDEX_MIGRATION = 4
INDEX_MIGRATIONS = frozenset({4, 5})  # the account index's: in each replica's own file


async def applied(db: Database) -> list[int]:
    await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version BIGINT PRIMARY KEY, name TEXT NOT NULL, "
                     "applied_at DOUBLE PRECISION NOT NULL)")
    return [r[0] for r in await db.fetch("SELECT version FROM schema_migrations "
                                         "ORDER BY version")]


async def applied_read_only(db: Database) -> list[int] | None:
    """What `applied` says, with nothing written (it creates schema_migrations when absent):
    None without that table (no keeperd has started on the database). For `keeperd
    check-config`, run against a live database before an upgrade."""
    if db.dialect == "postgresql":
        found = await db.fetchrow("SELECT to_regclass('schema_migrations') IS NOT NULL")
    else:
        found = await db.fetchrow("SELECT count(*) > 0 FROM sqlite_master "
                                  "WHERE type = 'table' AND name = 'schema_migrations'")
    if found is None or not found[0]:
        return None
    return [r[0] for r in await db.fetch("SELECT version FROM schema_migrations "
                                         "ORDER BY version")]


class SchemaBehind(RuntimeError):
    """The state database lacks migrations this keeperd needs."""


class SchemaAhead(RuntimeError):
    """The state database holds migrations this keeperd does not know: a newer keeperd
    migrated it (its tables may mean what this one's code does not say)."""


def ahead_said(ahead: list[int]) -> tuple[str, str]:
    """What a database migrated by a newer keeperd is told, and the fix: `migrate`'s refusal,
    and check-config's (`checks.schema_report`)."""
    return (f"the state database holds migrations {ahead}, which this keeperd (up to "
            f"{NAMES[-1][0]}) does not know: a newer keeperd migrated it",
            "run that version (replicas on one database: upgrade them all), or restore a "
            "backup taken before the upgrade")


async def unknown_versions(db: Database) -> list[int]:
    known = {v for v, _ in NAMES}
    return [v for v in await applied(db) if v not in known]


async def pending(db: Database, only: Collection[int] | None = None) -> list[int]:
    """The migrations (of `only`, when given) not applied yet."""
    done = set(await applied(db))
    return [v for v, _ in NAMES if v not in done and (only is None or v in only)]


async def migrate(db: Database, *, only: Collection[int] | None = None) -> list[int]:
    """Apply the migrations not applied yet (of `only`, when given), in one transaction
    (replicas starting together: the first applies them, the others wait on an advisory lock
    and find them done); the versions applied now."""
    now = []
    async with db.transaction():
        if db.dialect == "postgresql":
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        done = set(await applied(db))
        ahead = sorted(done - {v for v, _ in NAMES})
        if ahead:
            # (it ran on such a database as if up to date, with a newer one's tables under
            # it: a replica rolled back beside newer ones, a by-hand trial)
            raise SchemaAhead("; ".join(ahead_said(ahead)))
        for version, name in NAMES:
            if version in done or (only is not None and version not in only):
                continue
            for sql in statements(version, db.dialect):
                await db.execute(sql)
            await db.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                             "VALUES ($1, $2, $3)", version, name, time.time())
            now.append(version)
    return now
