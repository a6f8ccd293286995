"""`keeperd storage` as an operator moving from one machine to replicas uses it (#16): migrate,
copy the SQLite journal and alerts into an empty PostgreSQL database (and refuse a second
copy), show who holds the lease; a password written into storage.url is refused with the
fix."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import yaml

from keeperd.execution import journal as J
from keeperd.storage.db import PostgresDatabase, SqliteDatabase
from keeperd.storage.lease import Lease
from tests.conftest import fresh_database, migrated

ROOT = Path(__file__).resolve().parents[2]


def keeperd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keeperd", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "keeperd.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"), "storage": {"url": url},
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": ["http://127.0.0.1:9"]}]}))
    return path


async def single_machine_journal(state_dir: Path) -> None:
    db = await migrated(SqliteDatabase.open(state_dir / "keeperd.sqlite3"))
    journal = await J.Journal.open(db)
    for i in range(3):
        key = f"aave:0xabc{i}:WETH:USDC:{i}"
        await journal.record(J.JournalEntry(key, "aave", f"0xabc{i}", "WETH", "USDC",
                                            10**30 + i, 1.5, 10**18, 100 + i, J.PLANNED,
                                            None, None, None))
        await journal.record_tx(J.TxRecord(f"0x{i:064x}", key, 7 + i, 3 * 10**9, 10**9,
                                           900_000, "0x02", "liquidation", 1.0 + i))
    await journal.set_status("aave:0xabc0:WETH:USDC:0", J.INCLUDED)
    # An alert told, and its notification still waiting for its sink.
    from keeperd.alerts.outbox import Outbox

    await journal.db.execute(
        "INSERT INTO alert_state (fingerprint, rule, route, severity, value, told_at, since, "
        "chain, block, alert) VALUES ('fp1', 'oracle', 'ops', 'critical', NULL, 1.0, 1.0, "
        "'devnet', 7, $1)", '{"rule": "oracle", "severity": "critical", "starts_at": 1.0, '
        '"summary": "WETH price untrusted"}')
    await Outbox(journal.db).put("ops", "webhook-1", "webhook", [
        {"rule": "oracle", "status": "firing", "severity": "critical"}], "devnet", 7)
    # A watched account seen holding a position (its emptiness later is not a typo).
    await journal.db.execute("INSERT INTO watched_held (account, since) VALUES ($1, $2)",
                             "0xabc0", 1.0)
    await journal.db.close()


def test_an_operator_moves_the_journal_to_postgresql(tmp_path: Path,
                                                     postgres_server: str) -> None:
    dsn = asyncio.run(fresh_database(postgres_server))
    config = write_config(tmp_path, dsn)
    asyncio.run(single_machine_journal(tmp_path / "state"))

    out = keeperd("storage", "migrate", "--config", str(config))
    assert out.returncode == 0
    from keeperd.storage.migrations import MIGRATIONS

    assert out.stdout.strip() == \
        f"postgresql: applied migrations {[v for v, _, _ in MIGRATIONS]}"
    assert keeperd("storage", "migrate", "--config", str(config)).stdout.strip() == \
        "postgresql: up to date"

    # Not while a keeperd runs on the state directory: what it sent after the copy would be
    # unknown to the replicas (a by-hand trial's copy missed the next liquidation).
    from keeperd.statelock import StateDirLock

    with StateDirLock(tmp_path / "state"):
        held = keeperd("storage", "copy", "--from", "sqlite", "--to", "postgres",
                       "--config", str(config))
    assert held.returncode == 1 and "another keeperd holds" in held.stderr, held.stderr
    assert "a copy needs keeperd stopped on it" in held.stderr
    out = keeperd("storage", "copy", "--from", "sqlite", "--to", "postgres",
                  "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert "3 rows of liquidations, 3 rows of liquidation_txs" in out.stdout
    assert "1 rows of alert_state" in out.stdout and "1 rows of outbox" in out.stdout
    assert "1 rows of watched_held" in out.stdout
    listed = keeperd("alerts", "list", "--config", str(config)).stdout  # read from PostgreSQL
    assert "firing: 1" in listed and "outbox: 1 pending, 0 dead" in listed

    async def copied() -> tuple[list[J.JournalEntry], list[J.TxRecord]]:
        db = await PostgresDatabase.connect(dsn)
        try:
            journal = J.Journal(db)
            return await journal.all(), await journal.txs("aave:0xabc1:WETH:USDC:1")
        finally:
            await db.close()

    entries, txs = asyncio.run(copied())
    assert [(e.key, e.status, e.debt_to_cover, e.nonce) for e in entries] == [
        ("aave:0xabc0:WETH:USDC:0", "included", 10**30, 7),
        ("aave:0xabc1:WETH:USDC:1", "pending", 10**30 + 1, 8),
        ("aave:0xabc2:WETH:USDC:2", "pending", 10**30 + 2, 9)]
    assert [t.tx_hash for t in txs] == [f"0x{1:064x}"]
    # A second copy would merge two histories: refused, nothing written.
    again = keeperd("storage", "copy", "--config", str(config))
    assert again.returncode == 1 and "already has 3 opportunities" in again.stderr

    assert "no lease" in keeperd("storage", "leases", "--config", str(config)).stdout

    async def hold() -> None:
        lease = Lease(dsn, "devnet:0xkeeper", holder="host-a:1:x", length_s=30)
        await lease.connect()
        await lease.try_acquire()
        await lease.close()

    asyncio.run(hold())
    shown = keeperd("storage", "leases", "--config", str(config)).stdout
    assert shown.startswith("devnet:0xkeeper: held by host-a:1:x, epoch 1, expires in")
    # `keeperd status` reads the replicas and the shared journal from PostgreSQL.
    run = keeperd("status", "--config", str(config))
    status = run.stdout
    assert run.returncode == 0, run.stderr[-2000:]
    assert "replicas         devnet:0xkeeper: leader host-a:1:x (epoch 1)" in status
    assert "liquidations     pending 2, included 1" in status, status


def test_a_password_in_the_url_is_refused_with_the_fix(tmp_path: Path) -> None:
    config = write_config(tmp_path, "postgresql://keeperd:hunter2@db.internal:5432/keeperd")
    out = keeperd("storage", "migrate", "--config", str(config))
    assert out.returncode == 2
    assert "storage.url" in out.stderr and "password_env" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout


def test_check_config_tries_the_database(tmp_path: Path, postgres_server: str) -> None:
    good = asyncio.run(fresh_database(postgres_server))
    ok = keeperd("check-config", str(write_config(tmp_path, good)))
    assert "storage" not in ok.stderr + ok.stdout  # (the RPC of this config is down: not ours)
    missing = good.rsplit("/", 1)[0] + "/no_such_database"
    bad = keeperd("check-config", str(write_config(tmp_path, missing)))
    assert bad.returncode == 2
    assert "storage.url: PostgreSQL at " in bad.stderr and "no_such_database" in bad.stderr
    assert "fix: check the host, the database, the user" in bad.stderr


async def test_check_config_says_what_the_database_answered(tmp_path: Path,
                                                            postgres_dsn: str) -> None:
    """On success it said nothing of storage (a trial): now a line, with who holds the
    leases."""
    import asyncpg

    from keeperd.checks import storage_issues
    from keeperd.config import load_config

    config = load_config(write_config(tmp_path, postgres_dsn))
    checked: list[str] = []
    assert await storage_issues(config, checked) == []
    assert len(checked) == 1 and checked[0].startswith("storage: PostgreSQL at ")
    assert checked[0].endswith("answered; no replica holds a lease now")
    # Nothing written: check-config runs before an upgrade, against the database the old
    # replicas use (it altered their lease table: trial 30).
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('keeper_lease')") is None
        await conn.execute("CREATE TABLE keeper_lease (identity TEXT PRIMARY KEY, holder TEXT "
                           "NOT NULL, epoch BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL, "
                           "renewed_at TIMESTAMPTZ NOT NULL)")  # (an older keeperd's)
        checked = []
        assert await storage_issues(config, checked) == []
        assert checked[0].endswith("answered; no replica holds a lease now")
        assert await conn.fetchval("SELECT count(*) FROM information_schema.columns WHERE "
                                   "table_name = 'keeper_lease'") == 5
        await conn.execute("DROP TABLE keeper_lease")
    finally:
        await conn.close()
    lease = Lease(postgres_dsn, "0xabc@1", holder="replica-a")
    await lease.connect()
    try:
        assert await lease.try_acquire() is not None
        checked = []
        # (another keeper's lease: run would refuse to join it, and check-config says so)
        [refused] = await storage_issues(config, checked)
        assert refused.path == "storage.url" and "led by another keeper" in refused.message
        assert checked[0].endswith("leases: 0xabc@1 held by replica-a (epoch 1)")
    finally:
        await lease.close()


async def test_check_config_says_the_first_start_migrates_the_database(
        tmp_path: Path, postgres_dsn: str) -> None:
    """Trial 31: check-config on a new keeperd before an upgrade did not say that its first
    start migrates the state database, one way. It does now, reading only (nothing applied,
    schema_migrations not created); and a live lease of an older keeperd (no `mode`) is
    said."""
    from keeperd.checks import storage_issues
    from keeperd.config import load_config
    from keeperd.storage.lease import identity_of
    from keeperd.storage.migrations import NAMES, migrate

    config = load_config(write_config(tmp_path, postgres_dsn))
    latest = NAMES[-1][0]
    db = await PostgresDatabase.connect(postgres_dsn)
    try:
        checked: list[str] = []
        assert await storage_issues(config, checked) == [] and len(checked) == 1
        assert await db.fetchrow("SELECT to_regclass('schema_migrations')") == (None,)
        await migrate(db, only=range(1, 12))  # (an older keeperd's database)
        checked = []
        assert await storage_issues(config, checked) == []
        assert checked[1:] == [
            f"storage: the database is at migration 11; this keeperd migrates it to {latest} "
            "at its first start (one way: an older keeperd must not run on it again — back "
            "it up first)"]
        assert await db.fetch("SELECT max(version) FROM schema_migrations") == [(11,)]
        await migrate(db)
        checked = []
        assert await storage_issues(config, checked) == [] and len(checked) == 1
        # An older keeperd leading: its lease written without `mode`.
        old = Lease(postgres_dsn, identity_of("watch", [31337]), holder="older-replica")
        await old.connect()
        try:
            assert await old.try_acquire() is not None
            checked = []
            assert await storage_issues(config, checked) == []
            assert checked[1:] == ["storage: the replica leading runs an older keeperd: see "
                                   "docs/operations.md, Upgrade"]
        finally:
            await old.close()
        # A newer keeperd's database: run refuses it, and so does check-config.
        await db.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                         "VALUES (99, 'a newer keeperd''s', 0)")
        [ahead] = await storage_issues(config, [])
        assert ahead.path == "storage.url" and "holds migrations [99]" in ahead.message
    finally:
        await db.close()


def test_check_config_says_the_first_start_migrates_the_state_file(tmp_path: Path) -> None:
    """The same of the SQLite state file, when there is one (read only: nothing applied)."""
    from keeperd.storage.migrations import NAMES, migrate

    path = tmp_path / "keeperd.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": ["http://127.0.0.1:9"]}]}))
    fresh = keeperd("check-config", "--offline", str(path))
    assert fresh.returncode == 0, fresh.stderr
    assert "migrat" not in fresh.stdout and not (tmp_path / "state").exists()

    async def older_state_file() -> None:
        db = SqliteDatabase.open(tmp_path / "state" / "keeperd.sqlite3")
        await migrate(db, only=range(1, 15))
        await db.close()

    asyncio.run(older_state_file())
    before = sorted(p.name for p in (tmp_path / "state").iterdir())
    out = keeperd("check-config", "--offline", str(path))
    # (nothing written beside it either: read-only, SQLite made a WAL database's -wal and
    # -shm and left them — a review)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == before
    assert out.returncode == 0, out.stderr
    assert (f"  storage: the database is at migration 14; this keeperd migrates it to "
            f"{NAMES[-1][0]} at its first start (one way: an older keeperd must not run on "
            "it again — back it up first)") in out.stdout.splitlines()

    async def versions() -> list[tuple[int, ...]]:
        db = SqliteDatabase.open_read_only(tmp_path / "state" / "keeperd.sqlite3")
        try:
            return await db.fetch("SELECT max(version) FROM schema_migrations")
        finally:
            await db.close()

    assert asyncio.run(versions()) == [(14,)]
