"""Replicas on a real PostgreSQL server (#16): the lease loop promotes one, reconciles before it
acts, hands over when the leader freezes or stops, and a leader that lost its lease stops
acting at once."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from keeperd.config import LeaseConfig
from keeperd.metrics import Metrics
from keeperd.storage.lease import Lease
from keeperd.storage.replica import LEADER, STANDBY, Replica
from tests.conftest import metric_value, migrated, observe_cascade_risk, outbox_told

CONFIG = LeaseConfig(length_s=1.2, renew_every_s=0.3, statement_timeout_s=0.25)


async def replica(dsn: str, holder: str, promoted: list[tuple[str, int]],
                  metrics: Metrics) -> Replica:
    lease = Lease(dsn, "devnet:0xkeeper", holder=holder, length_s=CONFIG.length_s,
                  statement_timeout_s=CONFIG.statement_timeout_s)
    await lease.connect()

    async def on_promoted(epoch: int) -> None:
        promoted.append((holder, epoch))

    return Replica(lease, CONFIG, metrics, on_promoted=on_promoted)


async def test_one_leads_the_other_takes_over_when_it_freezes(postgres_dsn: str) -> None:
    promoted: list[tuple[str, int]] = []
    ma, mb = Metrics(), Metrics()
    a = await replica(postgres_dsn, "a", promoted, ma)
    b = await replica(postgres_dsn, "b", promoted, mb)
    try:
        await a.step()
        await b.step()
        assert (a.role, b.role) == (LEADER, STANDBY) and promoted == [("a", 1)]
        assert metric_value(ma, "keeperd_replica_role",
                            {"identity": "devnet:0xkeeper", "role": "leader"}) == 1
        assert metric_value(mb, "keeperd_replica_role",
                            {"identity": "devnet:0xkeeper", "role": "standby"}) == 1
        for _ in range(3):  # renewing in time keeps it
            await asyncio.sleep(CONFIG.renew_every_s)
            await a.step()
            await b.step()
        assert (a.role, b.role) == (LEADER, STANDBY)
        assert metric_value(ma, "keeperd_lease_renewals_total",
                            {"identity": "devnet:0xkeeper", "outcome": "ok"}) == 3
        # a freezes (SIGSTOP, a GC pause, a partition): b takes over after the lease.
        started = asyncio.get_running_loop().time()
        while b.role != LEADER:
            await asyncio.sleep(CONFIG.renew_every_s)
            await b.step()
        took = asyncio.get_running_loop().time() - started
        assert took <= CONFIG.length_s + 2 * CONFIG.renew_every_s
        assert promoted == [("a", 1), ("b", 2)]
        assert metric_value(mb, "keeperd_lease_epoch", {"identity": "devnet:0xkeeper"}) == 2
        # a resumes: its renewal fails, it stops acting and says so.
        await a.step()
        assert a.role == STANDBY and not a.is_leader()
        assert metric_value(ma, "keeperd_lease_losses_total",
                            {"identity": "devnet:0xkeeper"}) == 1
    finally:
        await a.lease.close()
        await b.lease.close()


async def test_a_clean_stop_hands_over_at_once(postgres_dsn: str) -> None:
    promoted: list[tuple[str, int]] = []
    a = await replica(postgres_dsn, "a", promoted, Metrics())
    b = await replica(postgres_dsn, "b", promoted, Metrics())
    try:
        await a.step()
        await b.step()
        a.drain()
        await a.drained()  # releases the lease
        await b.step()
        assert b.role == LEADER and promoted == [("a", 1), ("b", 2)]
    finally:
        await a.lease.close()
        await b.lease.close()


async def test_a_fenced_write_demotes_and_a_failed_reconcile_gives_the_lease_back(
        postgres_dsn: str) -> None:
    promoted: list[tuple[str, int]] = []
    a = await replica(postgres_dsn, "a", promoted, Metrics())
    try:
        await a.step()
        assert a.is_leader()
        a.demote("a fenced write was refused")
        assert not a.is_leader() and a.lease.epoch is None

        async def broken(epoch: int) -> None:
            raise RuntimeError("the RPC is down")

        b = await replica(postgres_dsn, "b", promoted, Metrics())
        b.on_promoted = broken
        await asyncio.sleep(CONFIG.length_s + 0.1)
        await b.step()  # takes the lease, cannot reconcile: releases it, stays standby
        assert not b.is_leader()
        await a.step()  # so a (healthy) takes it at once
        assert a.is_leader() and a.lease.epoch == 3
        await b.lease.close()
    finally:
        await a.lease.close()


async def test_postgresql_restarted_under_a_leader_loses_nothing(postgres: Any,
                                                                 postgres_dsn: str) -> None:
    """An operator restarts PostgreSQL (an upgrade): the statement that meets the restart
    fails, the replica reconnects on the next one, keeps its lease (the restart is shorter
    than the lease) and its journal."""
    from keeperd.execution import journal as J
    from keeperd.storage.db import PostgresDatabase
    from keeperd.storage.lease import fence

    config = LeaseConfig(length_s=8.0, renew_every_s=1.0, statement_timeout_s=0.8)
    lease = Lease(postgres_dsn, "devnet:0xkeeper", holder="a", length_s=config.length_s,
                  statement_timeout_s=config.statement_timeout_s)
    await lease.connect()
    a = Replica(lease, config, Metrics())
    db = await PostgresDatabase.connect(
        postgres_dsn, fence=lambda conn: fence(conn, "devnet:0xkeeper", "a", lease.epoch))
    journal = await J.Journal.open(await migrated(db))
    entry = J.JournalEntry("aave:0x1:WETH:USDC:1", "aave", "0x1", "WETH", "USDC", 1, 1.0, 1,
                           1, J.PLANNED, None, None, None)
    try:
        await a.step()
        assert a.is_leader() and await journal.record(entry)
        await asyncio.to_thread(postgres.restart)
        for _ in range(3):  # the first calls may meet the dead connection; then it is back
            with contextlib.suppress(Exception):
                await a.step()
            with contextlib.suppress(Exception):
                await journal.get(entry.key)
        await a.step()
        assert a.is_leader() and a.lease.epoch == 1  # still the same lease
        assert await journal.get(entry.key) == entry  # nothing lost
        assert not await journal.record(entry)  # and still never twice
        assert db.reconnects >= 1
    finally:
        await db.close()
        await lease.close()


async def test_a_replica_whose_clock_is_off_the_databases_says_so(postgres_dsn: str) -> None:
    """A replica two hours ahead signed every webhook two hours ahead (refused) and, leading,
    dead-lettered 51 pending notifications at once, with no word of its clock (a by-hand
    trial). Its skew against the database's clock is measured, exported and said."""
    import structlog

    metrics = Metrics()
    r = await replica(postgres_dsn, "a", [], metrics)
    try:
        assert abs(await r.lease.clock_skew()) < 1.0  # (one machine: the same clock)
        await r.step()
        assert abs(metric_value(metrics, "keeperd_clock_skew_seconds")) < 1.0
        true_skew = r.lease.clock_skew

        async def two_hours_ahead() -> float:
            return await true_skew() + 7200

        r.lease.clock_skew = two_hours_ahead  # type: ignore[method-assign]
        r._clock_checked_at = float("-inf")
        with structlog.testing.capture_logs() as logs:
            await r.step()
            await r.step()  # (said once)
        assert metric_value(metrics, "keeperd_clock_skew_seconds") > 7199
        assert [e["event"] for e in logs if "clock" in e["event"]] == ["replica.clock_skewed"]
    finally:
        await r.lease.close()


async def test_a_standby_on_another_config_than_the_leaders_says_so(postgres_dsn: str) -> None:
    """A reload of the leader's sinks left a running standby on the old ones; at the failover
    it led with them, saying nothing (a by-hand trial). It now checks the leader's config
    every CLOCK_CHECK_S, says when it differs, and still takes over when it must."""
    import structlog

    def lease(holder: str, sink: str) -> Lease:
        return Lease(postgres_dsn, "0xk@1", holder=holder, length_s=CONFIG.length_s,
                     statement_timeout_s=CONFIG.statement_timeout_s, address="0xk",
                     chain_ids=[1], mode="liquidate",
                     shared={"version": ["2"], "alert sinks": [sink]})

    metrics = Metrics()
    leader, standby = lease("a", "ops: webhook-new"), lease("b", "ops: webhook-old")
    await leader.connect()
    await standby.connect()
    try:
        assert await leader.try_acquire() is not None
        b = Replica(standby, CONFIG, metrics)
        with structlog.testing.capture_logs() as logs:
            await b.step()
            b._clock_checked_at = float("-inf")
            await b.step()  # (said once)
        assert b.role == STANDBY
        said = [e for e in logs if e["event"] == "replica.config_differs"]
        assert len(said) == 1 and "alert sinks: the leader's ops: webhook-new; this one's " \
            "ops: webhook-old" in said[0]["reason"]
        assert metric_value(metrics, "keeperd_replica_config_differs",
                            {"identity": "0xk@1"}) == 1
    finally:
        await leader.close()
        await standby.close()


async def test_a_takeover_on_another_config_than_the_last_leaders_says_what_differs(
        postgres_dsn: str) -> None:
    """A standby left on its old watchlist (only the leader was reloaded) took over, told the
    holder a position 'is no longer watched' and nothing more as it fell to critical (trial
    28). The new leader now says which sections differ from the last leader's (read from the
    lease as it takes it), at error level and in a metric a reload clears."""
    import structlog

    def lease(holder: str, watchlist: str) -> Lease:
        return Lease(postgres_dsn, "0xk@1", holder=holder, length_s=CONFIG.length_s,
                     statement_timeout_s=CONFIG.statement_timeout_s, address="0xk",
                     chain_ids=[1], mode="liquidate",
                     shared={"version": ["3"], "alerts.watchlists": [watchlist],
                             "alert sinks": ["ops: webhook-x (digest 1)"]})

    metrics = Metrics()
    leader = lease("a", "alice: accounts 2 (digest new)")
    standby = lease("b", "alice: accounts 1 (digest old)")
    await leader.connect()
    await standby.connect()
    try:
        assert await leader.try_acquire() is not None  # (then it dies: never renewed)
        b = Replica(standby, CONFIG, metrics)
        with structlog.testing.capture_logs() as logs:
            while b.role != LEADER:
                await b.step()
                await asyncio.sleep(CONFIG.renew_every_s)
        [said] = [e for e in logs if e["event"] == "replica.took_over_with_other_config"]
        assert said["sections"] == ["alerts.watchlists"]
        assert "alerts.watchlists: the last leader's alice: accounts 2 (digest new); this " \
               "one's alice: accounts 1 (digest old)" in said["reason"]
        assert "reload" in said["fix"]
        assert metric_value(metrics, "keeperd_replica_took_over_other_config",
                            {"identity": "0xk@1"}) == 1
        # A reload that still differs keeps it said (any reload cleared it: a review).
        b.reconfigured({**standby.shared, "alerts.watchlists": ["alice: accounts 3 "
                                                                "(digest other)"]})
        assert metric_value(metrics, "keeperd_replica_took_over_other_config",
                            {"identity": "0xk@1"}) == 1
        b.reconfigured({**standby.shared, "alerts.watchlists": ["alice: accounts 2 "
                                                                "(digest new)"]})
        assert metric_value(metrics, "keeperd_replica_took_over_other_config",
                            {"identity": "0xk@1"}) == 0
        # A leader that stops cleanly clears its config from the lease: the next one took
        # over from no failure, and a planned restart onto a new config pages no one.
        await standby.release()
        third = lease("c", "alice: accounts 9 (digest newer)")
        await third.connect()
        try:
            assert await third.try_acquire() is not None
            assert third.previous_shared is None
        finally:
            await third.close()
    finally:
        await leader.close()
        await standby.close()


class Alerting:
    """A replica with its alert engine on one PostgreSQL database, promoted as the daemon's
    `_promoted` does for alerts: the engine reads what was told, then the promotion tells."""

    @classmethod
    async def open(cls, dsn: str, holder: str) -> Alerting:
        from keeperd.alerts.delivery import Dispatcher
        from keeperd.alerts.engine import AlertEngine
        from keeperd.alerts.outbox import Outbox
        from keeperd.config import AlertsConfig, OutboxConfig
        from keeperd.storage.db import PostgresDatabase

        self = cls()
        self.promoted = False
        self.db = await migrated(await PostgresDatabase.connect(dsn))
        lease = Lease(dsn, "devnet:0xkeeper", holder=holder, length_s=CONFIG.length_s,
                      statement_timeout_s=CONFIG.statement_timeout_s)
        await lease.connect()
        metrics = Metrics()
        self.replica = Replica(lease, CONFIG, metrics, on_promoted=self._promoted)
        config = AlertsConfig.model_validate({"routes": [{"name": "ops", "sinks": [
            {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s" * 32}]}]})
        dispatcher = Dispatcher(Outbox(self.db), OutboxConfig(), metrics,
                                acting=self.replica.is_leader)
        dispatcher.configure(config.routes)
        self.engine = await AlertEngine.open(self.db, config, dispatcher, metrics,
                                             acting=self.replica.tells)
        return self

    async def _promoted(self, epoch: int) -> None:
        await self.engine.load()
        self.replica.promotion_tells = True
        self.promoted = True  # (what the daemon does next — the journal's reconciliation)

    async def close(self) -> None:
        await self.replica.lease.close()
        await self.db.close()


async def told_critical_then_handed_over(a: Alerting, b: Alerting) -> None:
    """`a` leads, `b` stands by; both evaluate a critical cascade risk (`a` tells it); then
    `a` stops (an upgrade) and hands the lease over."""
    await a.replica.step()
    await b.replica.step()
    for node in (a, b):
        await observe_cascade_risk(node.engine, 1_500_000.0, 1)
    assert await outbox_told(a.engine) == [("firing", "critical")]
    await a.replica.drained()


async def test_an_evaluation_during_the_promotions_last_renewal_is_told(
        postgres_dsn: str) -> None:
    """Between its promotion (the alert state read, told from then) and its role's change,
    the new leader renews the lease once more; an evaluation then was dropped as a
    standby's while its change stayed in memory: a resolution of the critical the last
    leader told went unsaid, and the next critical was told as firing again, no resolve
    between them."""
    a, b = await Alerting.open(postgres_dsn, "a"), await Alerting.open(postgres_dsn, "b")
    try:
        await told_critical_then_handed_over(a, b)
        renew = b.replica.lease.renew

        async def evaluated_meanwhile() -> bool:
            if b.promoted and b.replica.role != LEADER:  # (the take-over's own renewal)
                await observe_cascade_risk(b.engine, 50_000.0, 2)
            return await renew()

        b.replica.lease.renew = evaluated_meanwhile  # type: ignore[method-assign]
        await b.replica.step()
        b.replica.lease.renew = renew  # type: ignore[method-assign]
        assert b.replica.role == LEADER
        await observe_cascade_risk(b.engine, 1_200_000.0, 3)
        assert await outbox_told(b.engine) == [
            ("firing", "critical"), ("resolved", "critical"), ("firing", "critical")]
    finally:
        await a.close()
        await b.close()


async def test_an_evaluation_while_the_promotion_reads_the_alert_state_is_not_kept(
        postgres_dsn: str) -> None:
    """An evaluation between the alert state's reads at a promotion changed the rows just
    read, in memory only (nothing is told before the read ends): the new leader went on
    from a state no database held and told the last leader's critical again."""
    a, b = await Alerting.open(postgres_dsn, "a"), await Alerting.open(postgres_dsn, "b")
    try:
        await told_critical_then_handed_over(a, b)
        fetch = b.engine.state.db.fetch

        async def evaluated_meanwhile(sql: str, *args: Any) -> Any:
            if "alert_cursor" in sql and b.replica.role != LEADER:  # (b's promotion)
                await observe_cascade_risk(b.engine, 50_000.0, 2)
            return await fetch(sql, *args)

        b.engine.state.db.fetch = evaluated_meanwhile  # type: ignore[method-assign]
        await b.replica.step()
        b.engine.state.db.fetch = fetch  # type: ignore[method-assign]
        assert b.replica.role == LEADER
        await observe_cascade_risk(b.engine, 1_200_000.0, 3)  # critical still: told already
        assert await outbox_told(b.engine) == [("firing", "critical")]
        await observe_cascade_risk(b.engine, 50_000.0, 4)
        assert await outbox_told(b.engine) == [("firing", "critical"), ("resolved", "critical")]
    finally:
        await a.close()
        await b.close()
