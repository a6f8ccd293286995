"""#28 item 11, the lease's gaps, on a real PostgreSQL server: the lease is keyed by the key's
address and chain ids (two configurations sharing a key cannot both lead on a chain), a
promotion that outlives its lease does not lead, `is_leader` ends with the lease as this
process last renewed it, and approvals are fenced like liquidations."""

from __future__ import annotations

import asyncio

import pytest

from keeperd.config import LeaseConfig
from keeperd.daemon import _journal_tx
from keeperd.execution.journal import Journal, TxRecord
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.keys import UpkeepKey
from keeperd.storage.db import PostgresDatabase
from keeperd.storage.lease import FencedOut, Lease, fence, identity_of
from keeperd.storage.replica import LEADER, STANDBY, Replica
from tests.conftest import migrated

CONFIG = LeaseConfig(length_s=1.2, renew_every_s=0.3, statement_timeout_s=0.25)
KEY = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"


async def lease(dsn: str, holder: str, chain_ids: list[int], *, address: str | None = KEY,
                identity: str | None = None) -> Lease:
    out = Lease(dsn, identity or identity_of(KEY, chain_ids), holder=holder,
                length_s=CONFIG.length_s, statement_timeout_s=CONFIG.statement_timeout_s,
                address=address, chain_ids=chain_ids)
    await out.connect()
    return out


async def test_two_configurations_on_one_key_do_not_both_lead_a_chain(postgres_dsn: str
                                                                      ) -> None:
    """Today's identity was the config's chain names: `mainnet` and `mainnet+arbitrum`
    (or `eth` and `mainnet` for one chain) were two leases on one key — two leaders, one
    nonce. By address and chain ids, the second waits while the first lives; on other
    chains only, it leads beside it."""
    eth = await lease(postgres_dsn, "a", [1])
    eth_arb = await lease(postgres_dsn, "b", [42161, 1])
    arb = await lease(postgres_dsn, "c", [42161])
    try:
        assert eth.identity == f"{KEY.lower()}@1"
        assert await eth.try_acquire() == 1
        assert await eth_arb.try_acquire() is None
        assert eth_arb.held_elsewhere == eth.identity
        assert await arb.try_acquire() == 1  # no chain in common with the holder
        await asyncio.sleep(CONFIG.length_s + 0.1)  # both expire
        assert await eth_arb.try_acquire() == 1
        assert await eth.try_acquire() is None and await arb.try_acquire() is None
    finally:
        for one in (eth, eth_arb, arb):
            await one.close()


async def test_a_lease_of_the_chain_names_era_holds_off_the_new_one(postgres_dsn: str) -> None:
    """A rolling upgrade: an old replica holds `<chain names>:<address>`; a new one on the same
    key must not lead beside it."""
    old = await lease(postgres_dsn, "old", [1], address=None,
                      identity=f"mainnet:{KEY}")
    new = await lease(postgres_dsn, "new", [1])
    try:
        assert await old.try_acquire() == 1
        assert await new.try_acquire() is None
        assert new.held_elsewhere == f"mainnet:{KEY}"
        await old.release()
        assert await new.try_acquire() == 1
    finally:
        await old.close()
        await new.close()


async def test_a_long_promotion_keeps_its_lease_and_one_that_lost_it_does_not_lead(
        postgres_dsn: str) -> None:
    a_lease = await lease(postgres_dsn, "a", [1])
    b_lease = await lease(postgres_dsn, "b", [1])
    try:
        async def slow(epoch: int) -> None:  # reconciling a large journal: 3 leases long
            for _ in range(12):
                await asyncio.sleep(CONFIG.length_s / 4)
                assert await b_lease.try_acquire() is None  # renewed beside: never free

        a = Replica(a_lease, CONFIG, Metrics(), on_promoted=slow)
        await a.step()
        assert a.role == LEADER and a.is_leader()
        a.demote("to test the next case")
        await a_lease.release()

        async def stolen(epoch: int) -> None:  # the lease lost while reconciling
            await a_lease._conn.execute("UPDATE keeper_lease SET expires_at = now()")
            assert await b_lease.try_acquire() == epoch + 1

        a.on_promoted = stolen
        await a.step()
        assert a.role == STANDBY and not a.is_leader() and a_lease.epoch is None
    finally:
        await a_lease.close()
        await b_lease.close()


async def test_is_leader_ends_with_the_lease_as_last_renewed(postgres_dsn: str) -> None:
    """A loop that stalls (its renewals not running) must not go on answering `is_leader`
    past the lease while another replica takes over."""
    a_lease = await lease(postgres_dsn, "a", [1])
    try:
        a = Replica(a_lease, CONFIG, Metrics())
        await a.step()
        assert a.is_leader()
        await asyncio.sleep(CONFIG.length_s - CONFIG.renew_every_s + 0.05)  # no step ran
        assert a.role == LEADER and not a.is_leader()
        await a.step()  # the renewal (still in time in the database) makes it lead again
        assert a.is_leader()
    finally:
        await a_lease.close()


async def test_an_approval_of_a_replica_that_lost_the_lease_is_refused(postgres_dsn: str
                                                                       ) -> None:
    """Approvals and deposits are not journaled, but they take a nonce: one signed by a
    replica whose lease was taken (and its replacements, its cancels) could evict the new
    leader's liquidation. Each is fenced as a liquidation is."""
    a_lease = await lease(postgres_dsn, "a", [1])
    db = await PostgresDatabase.connect(
        postgres_dsn, fence=lambda conn: fence(conn, a_lease.identity, a_lease.holder,
                                               a_lease.epoch))
    try:
        journal = await Journal.open(await migrated(db))
        approval = TxRecord("0x" + "11" * 32, UpkeepKey("aave", "approve", "0xtoken", "max"), 7,
                            10**9, 10**8, 60_000, "0x02", "liquidation", 0.0)
        assert await a_lease.try_acquire() == 1
        await _journal_tx(journal, approval)  # the holder: fine
        a_lease.epoch = None  # lost (taken over, or demoted)
        with pytest.raises(FencedOut):
            await _journal_tx(journal, approval)
    finally:
        await db.close()
        await a_lease.close()
