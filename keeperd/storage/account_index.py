"""The account index's tables, on the `Database` interface: the accounts each protocol's
events touched (with the block they were first seen in), the index cursor, and the hashes of
the last indexed blocks (so a reorg that happened while keeperd was down is noticed).

The index belongs to one replica: it follows that replica's own view of the chain, and its
reorg rewinds delete what that view dropped. Shared by two writers, one replica's rewind could
delete rows the other just wrote from the new branch while both still hold them in memory —
borrowers missing after the next restart. So the daemon keeps it in the state directory's
SQLite file even when the rest of the state is on PostgreSQL (`docs/operations.md`); the
tables are an ordinary migration, and nothing here depends on the back-end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from keeperd.storage.db import STATE_FILE, Database, SqliteDatabase

# How many indexed block hashes to keep per protocol for reorg checks at start-up.
KEEP_BLOCK_HASHES = 256


@dataclass(frozen=True)
class Cursor:
    block: int
    hash: str | None


class IndexStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, state_dir: Path) -> IndexStore:
        """The index in the state directory's SQLite file, its tables created if missing (the
        command-line tools; the daemon opens the file itself, for the journal too)."""
        from keeperd.storage.migrations import INDEX_MIGRATIONS, migrate

        db = SqliteDatabase.open(state_dir / STATE_FILE)
        try:
            await migrate(db, only=INDEX_MIGRATIONS)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def cursor(self, protocol: str) -> Cursor | None:
        row = await self.db.fetchrow(
            "SELECT block, hash FROM index_cursor WHERE protocol = $1", protocol)
        return Cursor(int(row[0]), row[1]) if row else None

    async def record_indexed(self, protocol: str, to_block: int, to_hash: str | None,
                             accounts: Iterable[tuple[str, int]], *,
                             still_valid: Callable[[], bool] | None = None) -> bool:
        """Atomically add newly seen accounts (with the block they were first seen in) and
        move the cursor to `to_block`. `still_valid` is asked inside the transaction (no
        rewind can interleave there): False writes nothing and returns False."""
        db = self.db
        async with db.transaction():
            if still_valid is not None and not still_valid():
                return False
            rows = [(protocol, account, block) for account, block in accounts]
            if rows:
                await db.executemany(
                    "INSERT INTO accounts (protocol, account, first_block) VALUES ($1, $2, $3) "
                    "ON CONFLICT (protocol, account) DO UPDATE SET first_block = CASE WHEN "
                    "excluded.first_block < accounts.first_block THEN excluded.first_block "
                    "ELSE accounts.first_block END", rows)
            await db.execute(
                "INSERT INTO index_cursor (protocol, block, hash) VALUES ($1, $2, $3) "
                "ON CONFLICT (protocol) DO UPDATE SET block = excluded.block, "
                "hash = excluded.hash", protocol, to_block, to_hash)
            if to_hash is not None:
                await db.execute(
                    "INSERT INTO indexed_blocks (protocol, number, hash) VALUES ($1, $2, $3) "
                    "ON CONFLICT (protocol, number) DO UPDATE SET hash = excluded.hash",
                    protocol, to_block, to_hash)
                await db.execute(
                    "DELETE FROM indexed_blocks WHERE protocol = $1 AND number <= $2",
                    protocol, to_block - KEEP_BLOCK_HASHES)
        return True

    async def indexed_block_hashes(self, protocol: str) -> list[tuple[int, str]]:
        """(number, hash) of recently indexed blocks, newest first."""
        return [(int(n), h) for n, h in await self.db.fetch(
            "SELECT number, hash FROM indexed_blocks WHERE protocol = $1 ORDER BY number DESC",
            protocol)]

    async def rewind(self, protocol: str, to_block: int) -> list[str]:
        """Forget everything indexed above `to_block`; return the accounts dropped."""
        db = self.db
        async with db.transaction():
            dropped = [r[0] for r in await db.fetch(
                "SELECT account FROM accounts WHERE protocol = $1 AND first_block > $2",
                protocol, to_block)]
            await db.execute("DELETE FROM accounts WHERE protocol = $1 AND first_block > $2",
                             protocol, to_block)
            await db.execute("DELETE FROM indexed_blocks WHERE protocol = $1 AND number > $2",
                             protocol, to_block)
            kept = await db.fetchval(
                "SELECT hash FROM indexed_blocks WHERE protocol = $1 AND number = $2",
                protocol, to_block)
            await db.execute("UPDATE index_cursor SET block = $1, hash = $2 WHERE protocol = $3 "
                             "AND block > $1", to_block, kept, protocol)
        return dropped

    async def filter_elements(self, protocol: str) -> set[str]:
        """What the protocol's discovery filter held when its index last started (migration
        5): an element added since — a market, a reserve's aToken — has its past read on its
        own (indexer.py)."""
        return {r[0] for r in await self.db.fetch(
            "SELECT element FROM index_filter WHERE protocol = $1", protocol)}

    async def set_filter_elements(self, protocol: str, elements: Iterable[str]) -> None:
        async with self.db.transaction():
            await self.db.execute("DELETE FROM index_filter WHERE protocol = $1", protocol)
            await self.db.executemany(
                "INSERT INTO index_filter (protocol, element) VALUES ($1, $2)",
                [(protocol, e) for e in sorted(set(elements))])

    async def accounts(self, protocol: str) -> list[str]:
        return [r[0] for r in await self.db.fetch(
            "SELECT account FROM accounts WHERE protocol = $1 ORDER BY account", protocol)]

    async def account_count(self, protocol: str) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM accounts WHERE protocol = $1", protocol))
