"""The storage layer, one suite run on both back-ends (#16): the embedded SQLite file and a real
PostgreSQL server on loopback. Migrations, the liquidation journal's rules (never twice,
write-ahead of signed transactions, forgetting what was never signed), transactions that
roll back whole, and — on PostgreSQL with a lease — writes fenced by the lease's epoch; the
alert state and outbox, the breaker, and the account index."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from keeperd.execution import journal as J
from keeperd.storage.account_index import KEEP_BLOCK_HASHES, Cursor, IndexStore
from keeperd.storage.db import Database, PostgresDatabase, SqliteDatabase
from keeperd.storage.lease import FencedOut, Lease, fence
from keeperd.storage.migrations import INDEX_MIGRATIONS, MIGRATIONS, applied, migrate
from tests.conftest import fresh_database, migrated, observe_cascade_risk, outbox_told


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database: Database = SqliteDatabase.open(tmp_path / "state" / "keeperd.sqlite3")
    else:  # the session's server (a sync fixture), a database of this test's own
        database = await PostgresDatabase.connect(
            await fresh_database(request.getfixturevalue("postgres_server")))
    try:
        yield database
    finally:
        await database.close()


def entry(key: str, protocol: str = "aave", status: str = J.PLANNED) -> J.JournalEntry:
    return J.JournalEntry(key, protocol, "0xabc", "WETH", "USDC", 10**30, 12.5, 10**18, 7,
                          status, None, None, None)


def signed(key: str, nonce: int, tx_hash: str) -> J.TxRecord:
    return J.TxRecord(tx_hash, key, nonce, 3 * 10**9, 10**9, 900_000, "0x02f8", "liquidation",
                      1_700_000_000.25)


async def test_migrations_apply_once_and_are_recorded(db: Database) -> None:
    assert await migrate(db) == [v for v, _, _ in MIGRATIONS]
    assert await migrate(db) == []  # a second start, or a second replica: nothing to do
    assert await applied(db) == [v for v, _, _ in MIGRATIONS]
    assert await db.fetchval("SELECT count(*) FROM liquidations") == 0


async def test_the_journal_never_records_an_opportunity_twice(db: Database) -> None:
    journal = await J.Journal.open(await migrated(db))
    assert await journal.record(entry("aave:0xabc:WETH:USDC:1"))
    assert not await journal.record(entry("aave:0xabc:WETH:USDC:1"))
    got = await journal.get("aave:0xabc:WETH:USDC:1")
    assert got == entry("aave:0xabc:WETH:USDC:1")  # big integers kept exactly (as text)
    assert await journal.get("nope") is None


async def test_what_was_told_of_each_outcome_is_recorded_on_both_back_ends(
        db: Database) -> None:
    """The alert engine marks outcomes told in one statement (PostgreSQL: each statement a
    round trip under the connection a crash's next block waits for); what was journaled by
    this code and not told is found (a start tells it)."""
    await migrate(db)
    journal = await J.Journal.open(db)
    for key in ("a", "b", "c"):
        await journal.record(entry(key))
    await journal.record_many([entry("d")])
    for key, status in (("a", J.INCLUDED), ("b", J.REVERTED), ("c", J.PENDING),
                        ("d", J.LOST_RACE)):
        await journal.set_status(key, status)
    mark = "profit_usd=pending"
    assert {(e.key, o) for e, o in await journal.untold("aave", mark)} == {
        ("a", "included"), ("b", "reverted"), ("c", "sent"), ("d", "lost_race")}
    await journal.mark_told([("a", "included"), ("b", "reverted"), ("c", "sent")])
    assert [(e.key, o) for e, o in await journal.untold("aave", mark)] == [("d", "lost_race")]
    await journal.set_status("c", J.INCLUDED)  # (settled since: its included is untold)
    assert {e.key for e, _ in await journal.untold("aave", mark)} == {"c", "d"}


async def test_a_blocks_keys_are_looked_up_together_as_one_by_one(db: Database) -> None:
    journal = await J.Journal.open(await migrated(db))
    keys = [f"aave:0x{i:040x}:WETH:USDC:1" for i in range(2 * J.GET_MANY_CHUNK + 3)]
    for key in keys[::7]:  # (journaled ones in every chunk, the last one's included)
        assert await journal.record(entry(key, status=J.PENDING))
    asked = [*keys, "nope", keys[7]]  # (one absent, one asked twice)
    found = await journal.get_many(asked)
    assert found == {k: e for k in asked if (e := await journal.get(k)) is not None}
    assert set(found) == set(keys[::7])
    assert await journal.get_many([]) == {}


async def test_a_wave_is_journaled_as_one_by_one(db: Database) -> None:
    """`record_many` and `record_txs` (a wave's rows in a few statements) leave what `record`
    and `record_tx` would, and a key already journaled stays out of the wave: never twice."""
    journal = await J.Journal.open(await migrated(db))
    keys = [f"aave:0x{i:040x}:WETH:USDC:1" for i in range(J.RECORD_MANY_CHUNK + 7)]
    assert await journal.record(entry(keys[3]))  # (journaled by an earlier pass)
    wave = [entry(k) for k in [*keys, keys[5]]]  # (one twice in the wave itself)
    wave[9] = replace(wave[9], planned={"debtToCover": 10**30, "liquidatedCollateralAmount": 5})
    wave[10] = replace(wave[10], pulls={"0x" + "ab" * 20: 10**30})
    inserted = await journal.record_many(wave)
    assert inserted == set(keys) - {keys[3]}
    assert await journal.record_many([entry(keys[0])]) == set()
    assert await journal.record_many([]) == set()
    for w in wave[:len(keys)]:
        got = await journal.get(w.key)
        assert got is not None and got.planned == w.planned and got.pulls == w.pulls
        assert got == w if w.key != keys[3] else got == entry(keys[3])
    await journal.record_txs([signed(k, 40 + i, f"0x{i:02x}") for i, k in enumerate(keys[:3])])
    await journal.record_txs([])
    for i, k in enumerate(keys[:3]):
        got = await journal.get(k)
        assert got is not None and (got.status, got.nonce) == (J.PENDING, 40 + i)
        assert await journal.txs(k) == [signed(k, 40 + i, f"0x{i:02x}")]
    assert (await journal.get(keys[4])).status == J.PLANNED  # type: ignore[union-attr]


async def test_what_a_liquidation_pulls_is_read_back_or_not_at_all(db: Database) -> None:
    """A restart reserves what a resumed liquidation will pull (`reconcile.track_again`): the
    row's amounts come back exact, and a row whose pulls do not read as token amounts (written
    by someone else) reads as none, without stopping the journal from being read."""
    journal = await J.Journal.open(await migrated(db))
    pulls = {"0x" + "cd" * 20: 2**255 + 1}
    await journal.record(replace(entry("aave:0x1:WETH:USDC:1"), pulls=pulls))
    assert (await journal.get("aave:0x1:WETH:USDC:1")).pulls == pulls  # type: ignore[union-attr]
    for i, text in enumerate(['{"0xcd": "-5"}', "[1, 2]", '{"0xcd": "many"}', "not json"]):
        key = f"aave:0x{i + 2}:WETH:USDC:1"
        await journal.record(entry(key))
        await db.execute("UPDATE liquidations SET pulls = $1 WHERE key = $2", text, key)
        got = await journal.get(key)
        assert got is not None and got.pulls is None, text
    assert len(await journal.all()) == 5


async def test_margin_deposits_are_kept_refused_ones_forgotten_bad_rows_read_as_unknown(
        db: Database) -> None:
    """Curie's refills within a day are read back at start (`CurieLiquidator.prepare`): the
    same on both back-ends; a deposit recorded twice is one; a refused one is forgotten; an
    amount that does not read is None (the caller takes it at its worst), not a failed start."""
    journal = await J.Journal.open(await migrated(db))
    await journal.record_deposit("curie", "curie:deposit:0xv:100", 10**13, refill=False)
    await journal.record_deposit("curie", "curie:deposit:0xv:100", 10**13, refill=False)
    await journal.record_deposit("curie", "curie:deposit:0xv:200", 2**70, refill=True)
    await journal.record_deposit("other", "other:deposit:0xv:200", 5, refill=True)
    await journal.record_deposit("curie", "curie:deposit:0xv:300", 7, refill=True)
    await journal.forget_deposit("curie:deposit:0xv:300")
    got = await journal.deposits("curie")
    assert [(amount, refill) for _, amount, refill in got] == [(10**13, False), (2**70, True)]
    assert got[0][0] <= got[1][0]
    await db.execute("UPDATE keeper_deposits SET amount = $1 WHERE deposit_key = $2",
                     "lots", "curie:deposit:0xv:200")
    assert [amount for _, amount, _ in await journal.deposits("curie")] == [10**13, None]


async def test_outcomes_an_older_leader_settled_are_taken_as_told(db: Database) -> None:
    """Rows in flight when migration 15 ran (`told` 'pending') and settled by an older
    keeperd, which told them: marked told at the takeover, so they are not told again; a row
    this code journaled and has not told (`told` '') is left to be told."""
    journal = await J.Journal.open(await migrated(db))
    for key, status, told in (("m:1", J.INCLUDED, J.PENDING), ("m:2", J.REVERTED, J.PENDING),
                              ("m:3", J.PENDING, J.PENDING), ("m:4", J.INCLUDED, "")):
        await journal.record(entry(key, "morpho"))
        await db.execute("UPDATE liquidations SET status = $1, told = $2 WHERE key = $3",
                         status, told, key)
    assert await journal.mark_told_by_older_leader() == 2
    told = {r[0]: r[1] for r in await db.fetch("SELECT key, told FROM liquidations")}
    assert told == {"m:1": J.INCLUDED, "m:2": J.REVERTED, "m:3": J.PENDING, "m:4": ""}
    assert [e.key for e, _ in await journal.untold("morpho", "unbooked")] == ["m:4"]
async def test_a_journal_row_whose_columns_do_not_read_is_kept_and_read_as_none(
        db: Database) -> None:
    """A row no keeperd wrote (a hand's `UPDATE`, a bad restore) whose plan, amount or fee
    budget does not read stopped every start (`by_status` at the daemon's first check), and a
    live opportunity of its key failed its protocol's every block (`get_many`). Read on both
    back-ends: the row is kept (its signed transaction may be in flight), what does not read
    is none or 0 — the fee budget 0 spends nothing more on it — and it is said once."""
    journal = await J.Journal.open(await migrated(db))
    keys = [f"aave:0x{i}:WETH:USDC:1" for i in range(5)]
    for key in keys:
        await journal.record(entry(key, status=J.PENDING))
    for key, (column, text) in zip(keys, [("planned", "{"), ("planned", "[1]"),
                                          ("debt_to_cover", "abc"), ("max_fee_wei", "1e3"),
                                          ("max_fee_wei", "-5")], strict=True):
        await db.execute(f"UPDATE liquidations SET {column} = $1 WHERE key = $2", text, key)
    with structlog.testing.capture_logs() as logs:
        pending = await journal.by_status(J.PENDING)
        assert [e.key for e in pending] == keys
        assert [e.key for e in await journal.all()] == keys
        assert set(await journal.get_many(keys)) == set(keys)
        assert [e.key for e, _ in await journal.untold("aave", "mark")] == keys
    got = {e.key: e for e in pending}
    assert got[keys[0]].planned is None and got[keys[1]].planned is None
    assert got[keys[2]].debt_to_cover == 0 and got[keys[2]].max_fee_wei == 10**18
    assert got[keys[3]].max_fee_wei == 0 and got[keys[4]].max_fee_wei == 0
    assert await journal.get(keys[0]) == got[keys[0]]
    told = [e for e in logs if e["event"] == "journal.row_unreadable"]
    assert sorted(e["key"] for e in told) == keys  # (once each, however often it is read)
    assert {e["key"]: sorted(e["columns"]) for e in told}[keys[3]] == ["max_fee_wei"]


async def test_settled_rows_not_booked_are_found_by_their_mark(db: Database) -> None:
    """A start books what an earlier one settled and did not (`profit_usd=pending` in the
    row): found by protocol, status, no realised figure and the mark, on both back-ends (the
    mark's `_` a LIKE wildcard, checked again in Python)."""
    journal = await J.Journal.open(await migrated(db))
    mark = "profit_usd=pending"
    rows = {"aave:0x1:W:U:1": (J.INCLUDED, f"tx=0x1 {mark} (settled at start)", None),
            "aave:0x2:W:U:1": (J.LOST_RACE, f"race {mark} (settled at start)", None),
            "aave:0x3:W:U:1": (J.REVERTED, f"tx=0x3 {mark}", -1.0),  # (booked)
            "aave:0x4:W:U:1": (J.REVERTED, "tx=0x4 profitXusd=pending", None),  # (LIKE's _)
            "aave:0x5:W:U:1": (J.PENDING, f"{mark}", None),
            "aave:0x7:W:U:1": (J.CANCELLED, f"0x7 {mark} (settled at start)", None),
            "aave:0x8:W:U:1": (J.DROPPED, f"0x8 {mark} (settled at start)", None),
            "morpho:0x6:W:U:1": (J.INCLUDED, f"tx=0x6 {mark}", None)}
    for key, (status, detail, realised) in rows.items():
        await journal.record(replace(entry(key), protocol=key.split(":")[0]))
        await journal.set_status(key, status, detail=detail)
        if realised is not None:
            await journal.set_realised(key, realised)
    found = await journal.unbooked("aave", mark, J.INCLUDED, J.REVERTED, J.LOST_RACE,
                                   J.CANCELLED, J.DROPPED)
    assert [e.key for e in found] == ["aave:0x1:W:U:1", "aave:0x2:W:U:1", "aave:0x7:W:U:1",
                                      "aave:0x8:W:U:1"]


async def test_a_signed_transaction_is_journaled_before_it_is_sent(db: Database) -> None:
    journal = await J.Journal.open(await migrated(db))
    key = "aave:0xabc:WETH:USDC:1"
    await journal.record(entry(key))
    await journal.record_tx(signed(key, 41, "0xaa"))
    await journal.record_tx(signed(key, 41, "0xbb"), nonce_of_key=41)  # a replacement
    got = await journal.get(key)
    assert got is not None and got.status == J.PENDING and got.nonce == 41
    assert [t.tx_hash for t in await journal.txs(key)] == ["0xaa", "0xbb"]
    assert (await journal.txs(key))[0] == signed(key, 41, "0xaa")
    # Signed: it can no longer be forgotten (it may be on chain).
    assert not await journal.forget_unsigned(key)
    await journal.set_status(key, J.INCLUDED, detail="tx=0xbb")
    await journal.set_status(key, J.INCLUDED, winner=None)  # COALESCE keeps the detail
    got = await journal.get(key)
    assert got is not None and (got.status, got.detail) == (J.INCLUDED, "tx=0xbb")
    assert [e.key for e in await journal.by_status(J.INCLUDED, J.PENDING)] == [key]


async def test_what_was_never_signed_is_forgotten_and_may_be_planned_again(db: Database
                                                                          ) -> None:
    journal = await J.Journal.open(await migrated(db))
    await journal.record(entry("morpho:0x1:m:1", "morpho"))
    assert await journal.forget_unsigned("morpho:0x1:m:1")
    assert await journal.get("morpho:0x1:m:1") is None
    assert await journal.record(entry("morpho:0x1:m:1", "morpho"))


async def test_a_transaction_rolls_back_whole(db: Database) -> None:
    journal = await J.Journal.open(await migrated(db))
    with pytest.raises(RuntimeError, match="boom"):
        async with journal.transaction():
            await journal.record(entry("a:1"))
            async with journal.transaction():  # nested: joins the outer one
                await journal.record(entry("a:2"))
            raise RuntimeError("boom")
    assert await journal.all() == []
    async with journal.transaction():
        await journal.record(entry("a:1"))
        await journal.record(entry("a:2"))
    assert [e.key for e in await journal.all()] == ["a:1", "a:2"]


async def test_concurrent_tasks_do_not_interleave_a_transaction(db: Database) -> None:
    journal = await J.Journal.open(await migrated(db))

    async def wave(prefix: str) -> None:
        async with journal.transaction():
            for i in range(20):
                await journal.record(entry(f"{prefix}:{i}"))
                await asyncio.sleep(0)

    await asyncio.gather(wave("x"), wave("y"), wave("z"))
    assert len(await journal.all()) == 60


async def test_only_the_lease_holder_journals(postgres_dsn: str) -> None:
    identity = "devnet:0xkeeper"
    leases = [Lease(postgres_dsn, identity, holder=h, length_s=1.0, statement_timeout_s=0.5)
              for h in ("a", "b")]
    for lease in leases:
        await lease.connect()
    a, b = leases

    def fenced_by(lease: Lease):  # type: ignore[no-untyped-def]
        return lambda conn: fence(conn, identity, lease.holder, lease.epoch)

    db_a = await PostgresDatabase.connect(postgres_dsn, fence=fenced_by(a))
    db_b = await PostgresDatabase.connect(postgres_dsn, fence=fenced_by(b))
    try:
        ja = await J.Journal.open(await migrated(db_a))
        jb = await J.Journal.open(await migrated(db_b))
        with pytest.raises(FencedOut):  # nobody holds the lease yet: nobody journals
            await ja.record(entry("k:0"))
        assert await a.try_acquire() == 1
        assert await ja.record(entry("k:1"))
        with pytest.raises(FencedOut):
            await jb.record(entry("k:2"))  # b is standby
        await asyncio.sleep(1.2)  # a froze past its lease; b takes over
        assert await b.try_acquire() == 2
        with pytest.raises(FencedOut):  # a, resumed, signs: its write-ahead fails
            await ja.record_tx(signed("k:1", 5, "0xa1"))
        await jb.record_tx(signed("k:1", 5, "0xb1"))
        assert [t.tx_hash for t in await jb.txs("k:1")] == ["0xb1"]
        assert [e.key for e in await jb.all()] == ["k:1"]
    finally:
        await db_a.close()
        await db_b.close()
        for lease in leases:
            await lease.close()


# --- alerts on both back-ends --------------------------------------------------------------


async def alert_engine(db: Database, acting: bool = True):  # type: ignore[no-untyped-def]
    from keeperd.alerts.delivery import Dispatcher
    from keeperd.alerts.engine import AlertEngine
    from keeperd.alerts.outbox import Outbox
    from keeperd.config import AlertsConfig, OutboxConfig
    from keeperd.metrics import Metrics

    await migrate(db)
    config = AlertsConfig.model_validate({"routes": [{"name": "ops", "sinks": [
        {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s" * 32}]}]})
    metrics = Metrics()
    dispatcher = Dispatcher(Outbox(db), OutboxConfig(), metrics, acting=lambda: acting)
    dispatcher.configure(config.routes)
    return await AlertEngine.open(db, config, dispatcher, metrics, acting=lambda: acting)


async def lagging(engine, blocks: int = 500) -> None:  # type: ignore[no-untyped-def]
    """The account index far behind the head: a critical index_lag alert."""
    await engine.tick(rpc_healthy={}, index_lag={("devnet", "aave"): blocks}, keeper_balance={})


async def test_alert_state_and_its_notification_are_written_together(db: Database,
                                                                     monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """#17: a crash (here: a failed write) between the state write and the outbox write must
    not leave a state that says "told" with nothing on its way."""
    engine = await alert_engine(db)

    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(engine.outbox, "put_all", broken)
    with pytest.raises(OSError):
        await lagging(engine)
    assert await db.fetchval("SELECT count(*) FROM alert_state") == 0  # rolled back whole
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0
    monkeypatch.undo()
    await engine.commit()  # the next write carries both
    assert await db.fetchval("SELECT count(*) FROM alert_state") == 1
    [entry] = await engine.outbox.entries()
    assert entry.alerts[0]["rule"] == "index_lag" and entry.state == "pending"
    restarted = await alert_engine(db)  # told: a restart does not tell it again
    await lagging(restarted)
    assert len(await restarted.outbox.entries()) == 1


async def test_a_standby_tells_no_one_and_the_new_leader_reads_what_was_told(
        db: Database) -> None:
    leader, standby = await alert_engine(db), await alert_engine(db, acting=False)
    await lagging(leader)
    await lagging(standby)  # evaluates the same, writes nothing
    assert len(await leader.outbox.entries()) == 1
    assert await db.fetchval("SELECT count(*) FROM alert_state") == 1
    promoted = await alert_engine(db)  # what _promoted does: load the shared state
    await lagging(promoted)
    assert len(await promoted.outbox.entries()) == 1  # not told twice
    await lagging(promoted, blocks=0)
    assert [e.status for e in reversed(await promoted.outbox.entries())] == [
        "firing", "resolved"]


async def test_a_critical_told_is_not_told_again_by_the_replica_that_takes_over(
        db: Database) -> None:
    """A by-hand trial (two replicas on PostgreSQL, a crash on the Aave devnet in steps, the
    leader stopped between two of them): the leader told cascade_risk critical ($110,722),
    its liquidations brought the figure back under the critical level (no message: warning
    now), and the replica that took over told critical again at the next step ($191,844),
    with no resolve between them. It read the row's severity now, "warning", not what was
    heard."""
    leading = [True, False]
    leader, standby = await alert_engine(db), await alert_engine(db)
    for i, engine in enumerate((leader, standby)):
        engine.acting = lambda i=i: leading[i]  # type: ignore[misc]
    for block, bad in ((1, 150_000.0), (2, 1_500_000.0), (3, 400_000.0)):
        for engine in (leader, standby):  # both evaluate each block; only the leader tells
            await observe_cascade_risk(engine, bad, block)
    assert await outbox_told(leader) == [("firing", "warning"), ("escalated", "critical")]
    leading[:] = [False, True]  # the leader stops; the standby takes the lease ...
    await standby.load()  # ... and reads what was told (the daemon's `_promoted`)
    await observe_cascade_risk(standby, 1_900_000.0, 4)  # the next step of the crash
    assert await outbox_told(standby) == [("firing", "warning"), ("escalated", "critical")]
    await observe_cascade_risk(standby, 50_000.0, 5)
    # Resolved at the severity told (the message it ends), and a new firing is news.
    await observe_cascade_risk(standby, 1_200_000.0, 6)
    assert (await outbox_told(standby))[2:] == [("resolved", "critical"), ("firing", "critical")]


async def test_only_the_lease_holder_delivers(postgres_dsn: str) -> None:
    from keeperd.alerts.outbox import Outbox

    identity = "devnet:0xkeeper"
    a, b = (Lease(postgres_dsn, identity, holder=h, length_s=1.0, statement_timeout_s=0.5)
            for h in ("a", "b"))
    await a.connect()
    await b.connect()
    db_a = await PostgresDatabase.connect(
        postgres_dsn, fence=lambda conn: fence(conn, identity, a.holder, a.epoch))
    db_b = await PostgresDatabase.connect(
        postgres_dsn, fence=lambda conn: fence(conn, identity, b.holder, b.epoch))
    try:
        await migrate(db_a)
        outbox_a, outbox_b = Outbox(db_a), Outbox(db_b)
        await a.try_acquire()
        await outbox_a.put("ops", "webhook-1", "webhook", [{"rule": "oracle", "status": "firing",
                                                   "severity": "critical"}], None, None)
        [e] = await outbox_a.entries()
        with pytest.raises(FencedOut):
            await outbox_b.claim(e.id)  # the standby may not send it
        assert await outbox_a.claim(e.id)
        await outbox_a.delivered(e.id)
        assert not await outbox_a.claim(e.id)  # delivered: never claimed again
    finally:
        for closing in (db_a.close(), db_b.close(), a.close(), b.close()):
            await closing


# --- the oracle breaker on both back-ends --------------------------------------------------


async def test_a_breaker_row_not_written_as_one_still_pauses(db: Database) -> None:
    """A row no keeperd wrote (`tripped` 2, -1) read as tripped by one query and as clear by
    another switched the breaker off: the next stale reading saw "tripped" and tripped
    nothing, the gate paused nothing, the alert resolved, liquidations went at the stale price
    (a review). One predicate everywhere: anything but 0 is tripped."""
    from keeperd.oracles.breaker import Breaker

    breaker = Breaker(await migrated(db))
    for odd in (2, -1):
        await db.execute("DELETE FROM breaker")
        await db.execute("INSERT INTO breaker (chain, asset, tripped, manual, reason, since) "
                         "VALUES ('mainnet', 'WETH', $1, 0, 'by hand', 1000)", odd)
        _, paused = await breaker.observe_many("mainnet", {"WETH": ["stale: 7200 s"]},
                                               now=2000.0)
        assert paused == {"WETH"}, odd
        assert set(await breaker.paused("mainnet")) == {"WETH"}
        assert await breaker.tripped("mainnet") == {"WETH"}
        assert await breaker.reset("WETH") == 1  # (the operator's reset finds it too)
        assert await breaker.tripped("mainnet") == set()


async def test_breaker_trips_and_resets_only_after_staying_clear(db: Database) -> None:
    from keeperd.oracles.breaker import Breaker

    await migrate(db)
    breaker = Breaker(db, clear_after_s=300)
    assert (await breaker.observe("eth", "WETH", ["stale"], now=0)).tripped  # type: ignore[union-attr]
    assert await breaker.tripped("eth") == {"WETH"}
    assert await breaker.observe("eth", "WETH", [], now=10) is None  # clear since 10
    assert await breaker.observe("eth", "WETH", ["stale"], now=100) is None  # bad again
    assert await breaker.observe("eth", "WETH", [], now=200) is None
    assert await breaker.observe("eth", "WETH", [], now=400) is None  # 200 s clear, not 300
    reset = await breaker.observe("eth", "WETH", [], now=500)
    assert reset is not None and not reset.tripped and reset.chain == "eth"
    assert await breaker.tripped("eth") == set()


async def test_a_trip_on_one_chain_pauses_that_chain_only(db: Database) -> None:
    """#29 item 2: the breaker is keyed by (chain, asset); a manual trip without a chain holds
    the asset on every chain, and an operator's reset without one clears it wherever it is."""
    from keeperd.oracles.breaker import EVERY_CHAIN, Breaker

    await migrate(db)
    breaker = Breaker(db, clear_after_s=0)
    await breaker.observe("arbitrum", "WETH", ["stale: 7200 s"], now=0)
    assert await breaker.tripped("arbitrum") == {"WETH"}
    assert await breaker.tripped("ethereum") == set()
    assert await breaker.reasons("arbitrum") == {"WETH": "stale: 7200 s"}
    assert await breaker.observe("ethereum", "WETH", [], now=1) is None  # fine there
    assert await breaker.tripped("arbitrum") == {"WETH"}
    await breaker.trip("WBTC", "manual: maintenance", manual=True)  # every chain
    assert await breaker.tripped("ethereum") == {"WBTC"}
    assert await breaker.tripped("arbitrum") == {"WETH", "WBTC"}
    assert set(await breaker.states()) == {("arbitrum", "WETH"), (EVERY_CHAIN, "WBTC")}
    assert await breaker.reset("WETH", "ethereum") == 0  # not tripped there: nothing
    assert await breaker.tripped("arbitrum") == {"WETH", "WBTC"}
    assert await breaker.reset("WETH") == 1
    assert await breaker.reset("WBTC") == 1
    assert await breaker.tripped("arbitrum") == set() == await breaker.tripped("ethereum")


async def test_one_judgement_reads_the_breaker_table_twice_however_many_assets(
        db: Database) -> None:
    """A block's judgement of many feeds folds them in with one read of the table before and
    one after (it read the table twice per asset), and says what `observe` one by one says."""
    from keeperd.oracles.breaker import Breaker

    await migrate(db)
    breaker = Breaker(db, clear_after_s=0)
    await breaker.trip("DAI", "manual: maintenance", chain="eth", manual=True, now=0)
    await breaker.observe("eth", "WBTC", ["stale"], now=0)
    await breaker.observe("eth", "WBTC", [], now=1)  # clear since 1: resets at the next
    reads = 0
    fetch = db.fetch

    async def counted(*args: object) -> object:
        nonlocal reads
        reads += 1
        return await fetch(*args)  # type: ignore[arg-type]

    db.fetch = counted  # type: ignore[method-assign]
    try:
        changes, tripped = await breaker.observe_many(
            "eth", {f"A{i}": [] for i in range(20)} | {"WETH": ["stale: 7200 s"], "WBTC": [],
                                                       "DAI": []}, now=2)
    finally:
        del db.fetch  # type: ignore[method-assign]
    assert reads == 2
    assert {(c.asset, c.tripped) for c in changes} == {("WETH", True), ("WBTC", False)}
    assert tripped == {"WETH", "DAI"} == await breaker.tripped("eth")


async def test_a_manual_trip_holds_until_an_operator_resets_it(db: Database) -> None:
    """On PostgreSQL the other process may be the other replica: a trip or reset typed on any
    host reaches the one that leads."""
    from keeperd.oracles.breaker import Breaker

    await migrate(db)
    breaker = Breaker(db, clear_after_s=0)
    await breaker.trip("WBTC", "manual: maintenance", chain="eth", manual=True, now=0)
    await breaker.trip("WBTC", "stale", chain="eth", now=5)  # automatic on top stays manual
    assert await breaker.observe("eth", "WBTC", [], now=10) is None
    assert await breaker.observe("eth", "WBTC", [], now=10_000) is None
    again = Breaker(db)  # another process: a restarted daemon, the CLI, another replica
    assert await again.tripped("eth") == {"WBTC"} and (await again.states())[("eth", "WBTC")].manual
    await again.reset("WBTC")
    assert await breaker.tripped("eth") == set()


async def test_a_locked_state_file_neither_freezes_the_loop_nor_loses_an_alert(
        tmp_path: Path) -> None:
    """#17: another process holds the SQLite file's write lock (an operator's `sqlite3` shell
    mid-transaction). A write used to wait 5 s on the event loop — every task frozen — and the
    alerts taken off the queue were lost when it failed. Now it fails within a quarter second,
    the loop keeps turning, and the alert is written once the lock is gone."""
    import sqlite3
    import time

    path = tmp_path / "state" / "keeperd.sqlite3"
    db = SqliteDatabase.open(path)
    try:
        engine = await alert_engine(db)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the other process's write lock
        started = time.monotonic()  # (the statement runs on the loop: this is how long
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # every task waits)
            await lagging(engine)
        assert time.monotonic() - started < 1.0  # was 5 s
        holder.execute("ROLLBACK")
        holder.close()
        await engine.commit()  # the next write carries what the failed one held
        [entry] = await engine.outbox.entries()
        assert entry.alerts[0]["rule"] == "index_lag"
        assert await db.fetchval("SELECT count(*) FROM alert_state") == 1
    finally:
        await db.close()


# --- the account index (each replica's own; the same code on either back-end) -------------

async def test_the_account_index_records_rewinds_and_keeps_the_earliest_block(
        db: Database) -> None:
    await migrate(db)
    index = IndexStore(db)
    assert await index.cursor("aave") is None
    await index.record_indexed("aave", 100, "0x100", [("0xa", 90), ("0xb", 100)])
    await index.record_indexed("aave", 110, "0x110", [("0xa", 105), ("0xc", 108)])
    await index.record_indexed("morpho", 120, "0x120", [("0xa", 120)])
    assert await index.cursor("aave") == Cursor(110, "0x110")
    assert await index.accounts("aave") == ["0xa", "0xb", "0xc"]
    assert await index.indexed_block_hashes("aave") == [(110, "0x110"), (100, "0x100")]
    # 0xa was first seen at 90 — a later sighting does not move that, so a rewind to 100
    # keeps it and drops only what the dropped blocks brought.
    assert await index.rewind("aave", 100) == ["0xc"]
    assert await index.accounts("aave") == ["0xa", "0xb"]
    assert await index.cursor("aave") == Cursor(100, "0x100")
    assert await index.account_count("morpho") == 1  # another protocol's rows untouched
    # A rewind to below every remembered hash leaves a cursor without one.
    assert sorted(await index.rewind("aave", 95)) == ["0xb"]
    assert await index.cursor("aave") == Cursor(95, None)


async def test_the_index_keeps_only_the_recent_block_hashes(db: Database) -> None:
    await migrate(db)
    index = IndexStore(db)
    for block in range(1, KEEP_BLOCK_HASHES + 11):
        await index.record_indexed("aave", block, hex(block), [])
    hashes = await index.indexed_block_hashes("aave")
    assert len(hashes) == KEEP_BLOCK_HASHES  # newest first, the older ones pruned
    assert hashes[0] == (KEEP_BLOCK_HASHES + 10, hex(KEEP_BLOCK_HASHES + 10))
    assert hashes[-1][0] == 11


async def test_a_state_file_from_before_migrations_keeps_its_index(tmp_path: Path) -> None:
    """Files written by earlier keeperd versions created the index tables themselves: the
    migration adopts them with their rows."""
    import sqlite3

    state = tmp_path / "state"
    state.mkdir()
    old = sqlite3.connect(state / "keeperd.sqlite3")
    old.executescript(
        "CREATE TABLE index_cursor (protocol TEXT PRIMARY KEY, block INTEGER NOT NULL, "
        "hash TEXT); CREATE TABLE indexed_blocks (protocol TEXT NOT NULL, number INTEGER "
        "NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (protocol, number)); CREATE TABLE accounts "
        "(protocol TEXT NOT NULL, account TEXT NOT NULL, first_block INTEGER NOT NULL, "
        "PRIMARY KEY (protocol, account));"
        "INSERT INTO index_cursor VALUES ('aave', 42, '0x42');"
        "INSERT INTO accounts VALUES ('aave', '0xa', 7);")
    old.commit()
    old.close()
    index = await IndexStore.open(state)
    try:
        assert await index.cursor("aave") == Cursor(42, "0x42")
        assert await index.accounts("aave") == ["0xa"]
        # Only the index's migration ran: the file of a replica holds nothing else.
        assert await applied(index.db) == sorted(INDEX_MIGRATIONS)
        assert await index.db.fetchval(
            "SELECT count(*) FROM sqlite_master WHERE name = 'liquidations'") == 0
    finally:
        await index.close()


# --- one status summary for both back-ends (#29 item 5) ------------------------------------


async def test_the_status_summary_reads_alike_on_both_back_ends(db: Database) -> None:
    """`keeperd status` reads the embedded file and the replicas' PostgreSQL through one
    summary (`storage/summary.py`): the same rows give the same summary on either."""
    from keeperd.storage.summary import summarize

    await migrate(db)
    journal = await J.Journal.open(db)
    await journal.record(entry("aave:0xa:c:d:1", status=J.PLANNED))
    await journal.record(entry("aave:0xb:c:d:1"))
    await journal.set_status("aave:0xb:c:d:1", J.INCLUDED, realised_profit_usd=12.5)
    await journal.record(J.JournalEntry("curie:0xk:unwind:0xbase:5", "curie", "0xk", "", "",
                                        0, 0.0, 0, 1, J.INCLUDED, None, None, "housekeeping"))
    await journal.set_status("curie:0xk:unwind:0xbase:5", J.INCLUDED, realised_profit_usd=-3.25)
    summary = await summarize(db)
    # (the housekeeping row counted apart, not among the liquidations nor the latest; what it
    # realised is the protocol's P&L)
    assert summary["liquidations"] == {"planned": 1, "included": 1}
    assert summary["by_protocol"] == {
        "aave": {"liquidations": {"planned": 1, "included": 1}, "accounts_liquidated": 1,
                 "realised_pnl_usd": 12.5, "housekeeping": 0},
        "curie": {"liquidations": {}, "accounts_liquidated": 0, "realised_pnl_usd": -3.25,
                  "housekeeping": 1}}
    assert sorted(r["status"] for r in summary["last_liquidations"]) == [
        "included", "planned"]
    assert summary["alerts_firing"] == []
    assert summary["outbox"] == {"pending": 0, "dead": 0, "delivered": 0,
                                 "oldest_pending_s": None}
    assert summary["index"] == {}  # (migrated, nothing indexed yet)
    assert "index" not in await summarize(db, index=False)
