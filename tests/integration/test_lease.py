"""The fenced lease on a real PostgreSQL server (#16): one holder at a time, takeover only
after expiry with a new epoch, and a write of the old epoch refused once it was lost."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from keeperd.storage.lease import FencedOut, Lease, fence


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    return postgres_dsn


async def lease(dsn: str, holder: str, length_s: float = 1.0) -> Lease:
    out = Lease(dsn, "devnet:0xkeeper", holder=holder, length_s=length_s,
                statement_timeout_s=0.5)
    await out.connect()
    return out


async def test_one_holder_at_a_time_and_a_takeover_only_after_expiry(dsn: str) -> None:
    a, b = await lease(dsn, "a"), await lease(dsn, "b")
    try:
        assert await a.try_acquire() == 1
        assert await b.try_acquire() is None  # held and not expired
        assert await a.renew()
        await asyncio.sleep(0.6)
        assert await a.renew()  # renewed in time: still a's
        assert await b.try_acquire() is None
        await asyncio.sleep(1.2)  # a stopped renewing (frozen, partitioned)
        assert await b.try_acquire() == 2  # taken over with a new epoch
        assert not await a.renew() and a.epoch is None  # a learns it lost
        rows = await b.rows()
        assert [(r.identity, r.holder, r.epoch) for r in rows] == [("devnet:0xkeeper", "b", 2)]
        assert 0 < rows[0].expires_in_s <= 1.0
    finally:
        await a.close()
        await b.close()


async def test_a_write_of_a_lost_epoch_is_refused_and_a_takeover_waits_for_a_fenced_write(
        dsn: str) -> None:
    a, b = await lease(dsn, "a"), await lease(dsn, "b")
    writer = await asyncpg.connect(dsn)
    try:
        await writer.execute("CREATE TABLE journal (key TEXT PRIMARY KEY, epoch BIGINT)")
        assert await a.try_acquire() == 1
        old = a.epoch

        async def write(key: str, holder: str, epoch: int | None) -> None:
            async with writer.transaction():
                await fence(writer, "devnet:0xkeeper", holder, epoch)
                await writer.execute("INSERT INTO journal VALUES ($1, $2)", key, epoch)

        await write("k1", "a", old)
        # A fenced write in progress holds the row: b's takeover, due now, waits for it.
        await asyncio.sleep(1.1)
        tx = writer.transaction()
        await tx.start()
        with pytest.raises(FencedOut):  # expired: even the holder may not write now
            await fence(writer, "devnet:0xkeeper", "a", old)
        await tx.rollback()
        assert await b.try_acquire() == 2
        # a, resumed, still believes it holds epoch 1: its write fails and lands nothing.
        with pytest.raises(FencedOut):
            await write("k2", "a", old)
        with pytest.raises(FencedOut):
            await write("k2", "a", None)  # standby never writes
        await write("k2", "b", 2)
        assert [tuple(r) for r in await writer.fetch("SELECT key, epoch FROM journal "
                                                     "ORDER BY key")] == [("k1", 1), ("k2", 2)]
    finally:
        await writer.close()
        await a.close()
        await b.close()


async def test_a_takeover_blocks_until_the_fenced_write_commits(dsn: str) -> None:
    a, b = await lease(dsn, "a", length_s=2.0), await lease(dsn, "b", length_s=2.0)
    writer = await asyncpg.connect(dsn)
    try:
        assert await a.try_acquire() == 1
        tx = writer.transaction()
        await tx.start()
        await fence(writer, "devnet:0xkeeper", "a", 1)  # valid now: the row is held FOR SHARE
        await asyncio.sleep(2.1)  # the lease expires while the write is still open
        takeover = asyncio.create_task(b.try_acquire())
        await asyncio.sleep(0.2)
        assert not takeover.done()  # waits for a's write transaction
        await tx.commit()
        assert await asyncio.wait_for(takeover, 2) == 2
    finally:
        await writer.close()
        await a.close()
        await b.close()


async def test_the_lease_connection_bounds_its_statements(dsn: str) -> None:
    a = await lease(dsn, "a")
    try:
        assert await a._conn.fetchval("SHOW statement_timeout") == "500ms"
        assert await a._conn.fetchval("SHOW idle_in_transaction_session_timeout") == "500ms"
        with pytest.raises(asyncpg.QueryCanceledError):
            await a._conn.execute("SELECT pg_sleep(2)")
        with pytest.raises(ValueError, match="shorter than the lease"):
            Lease(dsn, "x", length_s=1.0, statement_timeout_s=1.0)
    finally:
        await a.close()


async def test_a_takeover_knows_whether_the_last_leader_marked_what_it_told(dsn: str) -> None:
    """A rolling upgrade: an older keeperd leading marks nothing of what it tells, and the
    first replica of this code to take over told its settled outcomes again, under new keys
    (13 of them, a by-hand trial). `told_by` says whether the last holder was of this code:
    written at each acquisition, which an older keeperd's acquisition leaves as it was."""
    a, b, c, d = (await lease(dsn, "a"), await lease(dsn, "b"), await lease(dsn, "c"),
                  await lease(dsn, "d"))
    writer = await asyncpg.connect(dsn)
    try:
        assert await a.try_acquire() == 1
        assert a.previous_told_outcomes is None  # (no one before it)
        await a.release()
        assert await b.try_acquire() == 2
        assert b.previous_told_outcomes is True  # (a is of this code)
        await b.release()
        # An older keeperd takes it as it did: holder and epoch, nothing of told_by.
        await writer.execute(
            "UPDATE keeper_lease SET holder = 'old', epoch = epoch + 1, mode = NULL, "
            "shared = NULL, expires_at = now() - interval '1 second' WHERE identity = $1",
            "devnet:0xkeeper")
        assert await c.try_acquire() == 4
        assert c.previous_told_outcomes is False
        # A keeperd of the day before `told_by` (it marks what it tells, and writes its
        # config with the lease) that crashed: its untold outcomes are told late, as before.
        await writer.execute(
            "UPDATE keeper_lease SET holder = 'yesterday', epoch = epoch + 1, shared = '{}', "
            "expires_at = now() - interval '1 second' WHERE identity = $1", "devnet:0xkeeper")
        assert await d.try_acquire() == 6
        assert d.previous_told_outcomes is True
    finally:
        await writer.close()
        for one in (a, b, c, d):
            await one.close()
