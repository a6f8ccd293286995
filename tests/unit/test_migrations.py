"""#29 item 5: storage owns its schema. Each migration's statements are frozen text in
`storage/migrations.py`; a shipped one never changes (its text is pinned here: a migration
edited in place would leave every existing database without the change, and a fresh one with
it), a new one goes at the end, and opening the journal does not migrate behind the daemon's
back (it refuses a database that is behind)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from keeperd.execution.journal import Journal
from keeperd.storage.db import SqliteDatabase
from keeperd.storage.migrations import NAMES, SchemaAhead, SchemaBehind, migrate, statements

# sha256 (first 16 hex digits) of each migration's statements, joined by "\n;\n". A new
# migration adds its line; an existing line never changes.
PINNED = {
    (1, "sqlite"): "ef452e29d5a77beb", (1, "postgresql"): "ef452e29d5a77beb",
    (2, "sqlite"): "27d05ee1932d7bdd", (2, "postgresql"): "631a48117dd659e0",
    (3, "sqlite"): "0df4e3831afc84fb", (3, "postgresql"): "0df4e3831afc84fb",
    (4, "sqlite"): "d197e4163f8f164b", (4, "postgresql"): "d197e4163f8f164b",
    (5, "sqlite"): "a857393a9dfceec6", (5, "postgresql"): "a857393a9dfceec6",
    (6, "sqlite"): "0da0f4de11e29cf3", (6, "postgresql"): "0da0f4de11e29cf3",
    (7, "sqlite"): "65bfcdf02b4d4d9c", (7, "postgresql"): "65bfcdf02b4d4d9c",
    (8, "sqlite"): "edc820e56a2bf353", (8, "postgresql"): "edc820e56a2bf353",
    (9, "sqlite"): "058ae0b05dc2066c", (9, "postgresql"): "058ae0b05dc2066c",
    (10, "sqlite"): "1851e2b530c61230", (10, "postgresql"): "1851e2b530c61230",
    (11, "sqlite"): "96ac8720ca82eb0f", (11, "postgresql"): "96ac8720ca82eb0f",
    (12, "sqlite"): "6e3ff7b3eca22945", (12, "postgresql"): "6e3ff7b3eca22945",
    (13, "sqlite"): "cbb2966a94defebd", (13, "postgresql"): "cbb2966a94defebd",
    (14, "sqlite"): "23961dd99509ffda", (14, "postgresql"): "23961dd99509ffda",
    (15, "sqlite"): "b533a14e37cc0119", (15, "postgresql"): "b533a14e37cc0119",
    (16, "sqlite"): "fb33bc401a3f2af7", (16, "postgresql"): "fb33bc401a3f2af7",
    (17, "sqlite"): "a5a62c6b30f19dc5", (17, "postgresql"): "a5a62c6b30f19dc5",
}


def test_no_shipped_migration_changes() -> None:
    assert [v for v, _ in NAMES] == list(range(1, len(NAMES) + 1))  # appended, in order
    for (version, dialect), pinned in PINNED.items():
        text = "\n;\n".join(statements(version, dialect))
        assert hashlib.sha256(text.encode()).hexdigest()[:16] == pinned, (
            f"migration {version} ({dialect}) was edited: add a new migration instead")
    assert {v for v, _ in PINNED} == {v for v, _ in NAMES}, "pin the new migration's text"


def test_no_feature_module_feeds_a_migration() -> None:
    """The migrations import nothing of keeperd but the database interface: a table's
    definition edited in its feature module cannot reach a shipped migration."""
    source = (Path(__file__).resolve().parents[2] / "keeperd" / "storage"
              / "migrations.py").read_text()
    imports = [line for line in source.splitlines()
               if line.startswith(("from keeperd", "import keeperd"))
               or line.strip().startswith(("from keeperd", "import keeperd"))]
    assert imports == ["from keeperd.storage.db import Database"]


async def test_the_journal_refuses_a_database_behind_and_opens_a_migrated_one(
        tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path / "state.sqlite3")
    try:
        with pytest.raises(SchemaBehind, match="keeperd storage migrate"):
            await Journal.open(db)
        await migrate(db, only=range(1, 7))
        with pytest.raises(SchemaBehind, match=r"\[7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17\]"):
            await Journal.open(db)
        assert await migrate(db) == [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
        journal = await Journal.open(db)
        assert await journal.all() == []
    finally:
        await db.close()


async def test_migration_9_keys_the_breaker_by_chain_and_keeps_what_it_can(
        tmp_path: Path) -> None:
    """A trip that knew its chain keeps it; a manual one that did not holds on every chain;
    an automatic one that did not is dropped (its feed is judged again at the next block)."""
    from keeperd.oracles.breaker import EVERY_CHAIN, Breaker

    db = SqliteDatabase.open(tmp_path / "state.sqlite3")
    try:
        await migrate(db, only=range(1, 9))
        insert = ("INSERT INTO breaker (asset, tripped, manual, reason, since, clear_since, "
                  "chain, block_hash) VALUES ($1, 1, $2, $3, 0, NULL, $4, $5)")
        await db.execute(insert, "WBTC", 1, "manual: maintenance", None, None)
        await db.execute(insert, "WETH", 0, "stale: 7200 s", "arbitrum", "0xabc")
        await db.execute(insert, "USDT", 0, "deviation", None, None)  # before migration 7
        assert await migrate(db) == [9, 10, 11, 12, 13, 14, 15, 16, 17]
        states = await Breaker(db).states()
        assert set(states) == {(EVERY_CHAIN, "WBTC"), ("arbitrum", "WETH")}
        assert states[(EVERY_CHAIN, "WBTC")].manual
        assert states[("arbitrum", "WETH")].block_hash == "0xabc"
        assert await Breaker(db).tripped("ethereum") == {"WBTC"}
    finally:
        await db.close()


async def test_storage_copy_moves_every_column_the_migrations_make(tmp_path: Path) -> None:
    """`keeperd storage copy` names each table's columns (`storage/admin.py`): a column a new
    migration adds and the copy leaves out would be lost moving to PostgreSQL (a liquidation's
    planned outcome, what a resumed one pulls)."""
    from keeperd.storage.admin import NOT_COPIED, TABLES

    db = SqliteDatabase.open(tmp_path / "state.sqlite3")
    try:
        await migrate(db)
        # (every table: one a new migration makes is copied, or named as left behind — the
        # keeper's holdings were neither, a review)
        made_tables = {r[0] for r in await db.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert made_tables == set(TABLES) | set(NOT_COPIED)
        for table, columns in TABLES.items():
            rows = await db.fetch(f"SELECT name FROM pragma_table_info('{table}')")
            made = {r[0] for r in rows} - {"id"}  # (the target numbers its own rows)
            assert made == {c.strip() for c in columns.split(",")}, table
    finally:
        await db.close()


async def test_a_database_a_newer_keeperd_migrated_is_refused(tmp_path: Path) -> None:
    """A database holding a migration past this code's last (a newer keeperd's) ran as up to
    date (a by-hand trial): its tables may mean what this code does not say."""
    db = SqliteDatabase.open(tmp_path / "state.sqlite3")
    try:
        await migrate(db)
        await db.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                         "VALUES ($1, $2, $3)", NAMES[-1][0] + 1, "from the future", 0.0)
        with pytest.raises(SchemaAhead, match=rf"holds migrations \[{NAMES[-1][0] + 1}\]"):
            await migrate(db)
    finally:
        await db.close()


async def test_outcomes_settled_before_migration_15_are_taken_as_told(tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path / "state.sqlite3")
    try:
        await migrate(db, only=range(1, 15))
        await db.execute("INSERT INTO liquidations (key, protocol, account, collateral, debt, "
                         "debt_to_cover, expected_profit_usd, max_fee_wei, detected_block, "
                         "status, created_at, updated_at) VALUES ('k', 'aave', '0xa', 'WETH', "
                         "'USDC', '1', 1.0, '1', 1, 'included', 0, 0)")
        assert await migrate(db) == [15, 16, 17]
        journal = await Journal.open(db)
        unbooked = "profit_usd=pending"
        assert await journal.untold("aave", unbooked) == []
        # (a row an older keeperd journals beside this one, in a rolling upgrade, says
        # nothing of what it told: it told its own, and is not told again)
        await db.execute("UPDATE liquidations SET told = NULL")
        assert await journal.untold("aave", unbooked) == []
        await db.execute("UPDATE liquidations SET told = 'sent'")  # (this code's, untold)
        [(entry, outcome)] = await journal.untold("aave", unbooked)
        assert (entry.key, outcome) == ("k", "included")
        await journal.mark_told([("k", "included")])
        assert await journal.untold("aave", unbooked) == []
    finally:
        await db.close()
