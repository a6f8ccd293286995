"""One interface to the state database, two back-ends: the embedded SQLite file (one machine,
the default) and PostgreSQL through asyncpg (several replicas sharing one state).

SQL is written once, in the dialect both accept: `$1, $2, ...` placeholders (rewritten to
SQLite's `?1, ?2, ...`), `ON CONFLICT ... DO NOTHING`, BIGINT / DOUBLE PRECISION / TEXT.
Transactions are async context managers and nest (an inner one joins the outer). A
transaction that leads to an on-chain transaction calls `fenced()` inside it: with a lease
configured (PostgreSQL), the write commits only while this replica holds the lease at its
epoch (`storage/lease.py`); on SQLite there is one process (the state-directory lock), so
there is nothing to fence.

The SQLite back-end runs its statements on the event loop thread, as keeperd always did (local
disk, short transactions). Each back-end holds one connection and a lock: a transaction keeps
the connection for its duration, other tasks' statements wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

_PLACEHOLDER = re.compile(r"\$(\d+)")

# How long a statement waits for another process's lock on the SQLite file (an operator's
# `sqlite3` shell, a CLI command mid-write) before it fails. Statements run on the event loop:
# Python's default, 5 s, froze every task that long. A write that fails is the caller's to
# retry (a liquidation waits for the next block, an alert stays queued in memory).
SQLITE_BUSY_TIMEOUT_S = 0.25

# The state directory's SQLite file: everything on one machine; with the state on PostgreSQL,
# this replica's account index.
STATE_FILE = "keeperd.sqlite3"

Fence = Callable[[Any], Awaitable[None]]


class Database:
    dialect: str

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def fetchrow(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def fenced(self) -> None:
        """Inside a transaction: fail (`FencedOut`) unless this replica may act."""

    async def close(self) -> None:
        pass


class _Serialized(Database):
    """One connection shared by the tasks of the event loop: a transaction holds it (a lock)
    until it ends, so another task's statements wait instead of landing inside it; a task's
    own statements inside its transaction go straight through (a context variable)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._in_tx: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"db_tx_{id(self)}", default=False)

    async def _run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        if self._in_tx.get():
            return await fn()
        async with self._lock:
            return await fn()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._in_tx.get():
            yield  # nested: part of the outer transaction
            return
        async with self._lock:
            token = self._in_tx.set(True)
            try:
                async with self._begin():
                    yield
            finally:
                self._in_tx.reset(token)

    def _begin(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError


class SqliteDatabase(_Serialized):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self.conn = conn

    @classmethod
    def open(cls, path: Path, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S
             ) -> SqliteDatabase:
        """(A command-line tool, whose loop runs nothing else, may wait longer for a lock.)"""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               timeout=busy_timeout_s)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return cls(conn)

    @classmethod
    def open_read_only(cls, path: Path) -> SqliteDatabase:
        """A reader's handle (`keeperd status`, check-config): no write, no file created, no
        lock held beyond a read. With no write-ahead log beside it (no keeperd running on
        it), opened immutable: read-only, SQLite still made the `-wal` and `-shm` files of a
        WAL database, and left them (a review)."""
        wal = path.with_name(path.name + "-wal")
        mode = "ro" if wal.exists() else "ro&immutable=1"
        conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None,
                               check_same_thread=False)
        return cls(conn)

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def _sql(sql: str) -> str:
        """`$n` as `?n` (a statement's text is rewritten once: the hot path runs the same few
        statements per liquidation)."""
        return _PLACEHOLDER.sub(r"?\1", sql)

    async def execute(self, sql: str, *args: Any) -> int:
        async def run() -> int:
            return self.conn.execute(self._sql(sql), args).rowcount
        return await self._run(run)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction():
            self.conn.executemany(self._sql(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        async def run() -> list[tuple[Any, ...]]:
            return self.conn.execute(self._sql(sql), args).fetchall()
        return await self._run(run)

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:  # (SQLite rolls back by itself on a full disk)
                self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except BaseException:  # a commit a full disk refused must not stay open
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        self.conn.close()


class PostgresDatabase(_Serialized):
    """One asyncpg connection, opened again on the next use after it broke (a server restart,
    a network cut): the statement that met the break fails, the following ones go on."""

    dialect = "postgresql"

    def __init__(self, connector: Callable[[], Awaitable[Any]], conn: Any,
                 fence: Fence | None = None) -> None:
        super().__init__()
        self._connector = connector
        self.conn = conn
        self.fence = fence
        self.reconnects = 0

    @classmethod
    async def connect(cls, dsn: str, *, statement_timeout_s: float = 10.0,
                      fence: Fence | None = None) -> PostgresDatabase:
        import asyncpg

        ms = str(int(statement_timeout_s * 1000))

        async def connector() -> Any:
            return await asyncpg.connect(dsn, timeout=statement_timeout_s, server_settings={
                "statement_timeout": ms, "idle_in_transaction_session_timeout": ms,
                "application_name": "keeperd"})

        return cls(connector, await connector(), fence)

    async def _connection(self) -> Any:
        if self.conn is None or self.conn.is_closed():
            self.conn = None
            self.conn = await self._connector()
            self.reconnects += 1
        return self.conn

    async def _call(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        conn = await self._connection()
        try:
            return await fn(conn)
        except BaseException as exc:
            self._forget_if_broken(exc)
            raise

    def _forget_if_broken(self, exc: BaseException) -> None:
        import asyncpg

        if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError
                      | asyncpg.exceptions.AdminShutdownError
                      | asyncpg.exceptions.CannotConnectNowError):
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.terminate()

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._run(lambda: self._call(lambda c: c.execute(sql, *args)))
        tail = status.rsplit(" ", 1)[-1] if isinstance(status, str) else ""
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._run(lambda: self._call(lambda c: c.executemany(sql, rows)))

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        records = await self._run(lambda: self._call(lambda c: c.fetch(sql, *args)))
        return [tuple(r) for r in records]

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[None]:
        conn = await self._connection()
        try:
            async with conn.transaction():
                yield
        except BaseException as exc:
            self._forget_if_broken(exc)
            raise

    async def fenced(self) -> None:
        if self.fence is not None:
            if not self._in_tx.get():
                raise RuntimeError("fenced() belongs inside the write's transaction")
            await self.fence(await self._connection())

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
