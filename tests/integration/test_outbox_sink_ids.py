"""The outbox names a sink by its stable id (#28 item 14, #27 item 7): notifications waiting
when a route's sinks are reordered and the config reloaded reach the sink they were queued for;
those of a removed sink are reported, and `keeperd alerts outbox` re-routes or drops them;
rows written before sink ids survive the migration, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from keeperd import cli
from keeperd.alerts.delivery import Dispatcher
from keeperd.alerts.outbox import DEAD, DELIVERED, DROPPED, PENDING, Outbox
from keeperd.config import OutboxConfig, load_config
from keeperd.metrics import Metrics
from keeperd.storage.db import STATE_FILE, Database, PostgresDatabase, SqliteDatabase
from keeperd.storage.migrations import migrate
from tests.alert_fakes import Recorder, status, webhook_app
from tests.conftest import fresh_database, metric_absent, metric_value, serve

SECRET = "a-webhook-secret-of-at-least-32-bytes"
FAST = OutboxConfig(max_attempts=1000, backoff_initial_s=0.05, backoff_max_s=0.2)


def alert(summary: str) -> dict[str, Any]:
    return {"rule": "position_health", "status": "firing", "severity": "warning",
            "kind": "firing", "summary": summary, "labels": {"account": summary}}


def hook(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "webhook", "url": f"{url}/hook", "secret": "${HOOK_SECRET}", **extra}


def write_config(path: Path, routes: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({
        "state_dir": str(path.parent / "state"),
        "chains": [{"name": "x", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:9"]}],
        "alerts": {"routes": routes}}))
    return path


def reload(dispatcher: Dispatcher, path: Path) -> None:
    """What the daemon does on SIGHUP (`Daemon._reload`): read the file, swap the sinks."""
    dispatcher.configure(load_config(path, env={"HOOK_SECRET": SECRET}).alerts.routes)


async def queue(dispatcher: Dispatcher, route: str, index: int, summary: str) -> None:
    """Queue one notification for the route's `index`-th sink, as the engine does."""
    rt = dispatcher.route_sinks(route)[index]
    await dispatcher.outbox.put(route, rt.sink_id, rt.sink.kind, [alert(summary)], None, None)


def summaries(rec: Recorder) -> list[str]:
    return sorted(e["body"]["summary"] for e in rec.accepted)


async def until(check: Callable[[], bool], dispatcher: Dispatcher, limit_s: float = 15) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        dispatcher.wake()
        await asyncio.sleep(0.05)


async def states(db: Database) -> list[tuple[str, str, str]]:
    """(sink, state, summary) of every row, in order."""
    rows = await db.fetch("SELECT sink, state, payload FROM outbox ORDER BY id")
    return [(str(r[0]), r[1], json.loads(r[2])[0]["summary"]) for r in rows]


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Dispatcher], None]]:
    tasks: list[asyncio.Task[None]] = []

    def start(dispatcher: Dispatcher) -> None:
        tasks.append(asyncio.create_task(dispatcher.run()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_reordered_sinks_keep_their_pending_notifications_across_a_reload(
        tmp_path: Path, running: Callable[[Dispatcher], None]) -> None:
    """Both receivers down, three notifications waiting for each; the operator swaps the two
    sinks in the route and reloads; the receivers come back: each gets its own three, none of
    the other's. (Keyed by the sink's place, they went to whichever sink sat there after the
    reload: A's to B and B's to A.)"""
    a, b = Recorder(script=[status(503)] * 10_000), Recorder(script=[status(503)] * 10_000)
    async with serve(webhook_app(a)) as a_url, serve(webhook_app(b)) as b_url:
        db = SqliteDatabase.open(tmp_path / "state.db")
        await migrate(db)
        dispatcher = Dispatcher(Outbox(db), FAST, Metrics())
        # (one id explicit, one derived from the URL: both must hold)
        v1 = write_config(tmp_path / "v1.yaml", [{"name": "ops", "sinks": [
            hook(a_url, id="desk-hook"), hook(b_url)]}])
        reload(dispatcher, v1)
        for i in range(3):
            await queue(dispatcher, "ops", 0, f"for-a-{i}")
            await queue(dispatcher, "ops", 1, f"for-b-{i}")
        running(dispatcher)
        await until(lambda: len(a.requests) >= 2 and len(b.requests) >= 2, dispatcher)
        assert not a.accepted and not b.accepted

        v2 = write_config(tmp_path / "v2.yaml", [{"name": "ops", "sinks": [
            hook(b_url), hook(a_url, id="desk-hook")]}])
        reload(dispatcher, v2)
        assert [rt.index for rt in dispatcher.route_sinks("ops")] == [0, 1]
        a.script.clear()
        b.script.clear()
        await until(lambda: len(a.accepted) + len(b.accepted) >= 6, dispatcher)
        await asyncio.sleep(0.3)  # nothing more arrives
    assert summaries(a) == ["for-a-0", "for-a-1", "for-a-2"]
    assert summaries(b) == ["for-b-0", "for-b-1", "for-b-2"]
    await db.close()


async def test_a_reload_while_a_notification_is_on_the_wire_sends_it_once(
        tmp_path: Path, running: Callable[[Dispatcher], None]) -> None:
    """A reload cancelled the sink loops mid-request: the receiver had the notification, its row
    stayed pending, and the new loop sent it again (seen in CI as a duplicate `for-b-0`). Now
    the send under way finishes, is recorded, and nothing goes out twice."""
    rec = Recorder()
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow_ok() -> None:
        arrived.set()
        await release.wait()

    async with serve(webhook_app(rec, before_answer=slow_ok)) as url:
        db = SqliteDatabase.open(tmp_path / "state.db")
        await migrate(db)
        dispatcher = Dispatcher(Outbox(db), FAST, Metrics())
        config = write_config(tmp_path / "v1.yaml", [{"name": "ops", "sinks": [hook(url)]}])
        reload(dispatcher, config)
        await queue(dispatcher, "ops", 0, "once")
        running(dispatcher)
        await asyncio.wait_for(arrived.wait(), 15)
        reload(dispatcher, config)  # SIGHUP while the receiver holds the request
        await asyncio.sleep(0.3)  # (before the fix, the new loop had resent it by now)
        release.set()
        await until(lambda: len(rec.accepted) >= 1, dispatcher)
        await asyncio.sleep(0.5)  # nothing more arrives
        assert [e["body"]["summary"] for e in rec.accepted] == ["once"]
        assert len(rec.requests) == 1
        assert [(st, s) for _, st, s in await states(db)] == [(DELIVERED, "once")]
    await db.close()


async def test_a_silence_added_while_notifications_wait_drops_those_it_matches(
        tmp_path: Path, running: Callable[[Dispatcher], None]) -> None:
    """(A trial: a silence added while the sink was down, then the sink back — the five
    notifications queued before the silence were all delivered.) What a silence matches at
    delivery is dropped, counted and logged; the rest goes."""
    rec = Recorder()
    async with serve(webhook_app(rec)) as url:
        db = SqliteDatabase.open(tmp_path / "state.db")
        await migrate(db)
        metrics = Metrics()
        dispatcher = Dispatcher(Outbox(db), FAST, metrics)
        reload(dispatcher, write_config(tmp_path / "v1.yaml",
                                        [{"name": "ops", "sinks": [hook(url)]}]))
        for summary in ("noisy-0", "keep", "noisy-1"):
            await queue(dispatcher, "ops", 0, summary)
        # A resolution of the noisy account's: it goes, silence or not (the receiver must
        # learn it ended).
        resolved = {**alert("noisy-2"), "status": "resolved", "kind": "resolved"}
        rt = dispatcher.route_sinks("ops")[0]
        await dispatcher.outbox.put("ops", rt.sink_id, rt.sink.kind, [resolved], None, None)
        # (the engine's: the silence muting a queued alert now — here, the noisy account's)
        dispatcher.silenced = lambda a: "s-1" if a["labels"]["account"].startswith(
            "noisy") else None
        with structlog.testing.capture_logs() as logs:
            running(dispatcher)
            await until(lambda: len(rec.accepted) >= 2, dispatcher)
            await asyncio.sleep(0.3)  # nothing more arrives
    assert summaries(rec) == ["keep", "noisy-2"]
    assert [(st, s) for _, st, s in await states(db)] == [
        (DROPPED, "noisy-0"), (DELIVERED, "keep"), (DROPPED, "noisy-1"), (DELIVERED, "noisy-2")]
    sink = dispatcher.route_sinks("ops")[0].sink_id
    assert metric_value(metrics, "keeperd_notifications_total",
                        {"route": "ops", "sink": sink, "outcome": "silenced"}) == 2
    assert [e["silence"] for e in logs if e["event"] == "alerts.dropped_silenced"] == [
        "s-1", "s-1"]
    await db.close()


async def test_a_removed_sinks_notifications_are_reported_then_rerouted_or_dropped(
        tmp_path: Path, running: Callable[[Dispatcher], None],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    recs = {n: Recorder() for n in "abcd"}
    async with AsyncExitStack() as stack:
        urls = {n: await stack.enter_async_context(serve(webhook_app(r)))
                for n, r in recs.items()}
        state = tmp_path / "state"
        db = SqliteDatabase.open(state / STATE_FILE)
        await migrate(db)
        metrics = Metrics()
        dispatcher = Dispatcher(Outbox(db), FAST, metrics)
        v1 = write_config(tmp_path / "v1.yaml", [
            {"name": "ops", "sinks": [hook(urls["a"]), hook(urls["b"]), hook(urls["d"])]},
            {"name": "pager", "sinks": [hook(urls["c"])]}])
        reload(dispatcher, v1)
        a_id, b_id, d_id = (rt.sink_id for rt in dispatcher.route_sinks("ops"))
        [c_id] = [rt.sink_id for rt in dispatcher.route_sinks("pager")]
        await queue(dispatcher, "ops", 0, "for-a")
        await queue(dispatcher, "ops", 1, "for-b-0")
        await queue(dispatcher, "ops", 1, "for-b-1")
        await queue(dispatcher, "ops", 2, "for-d")

        # B and D leave the config before anything was sent: reported, never sent elsewhere.
        v2 = write_config(tmp_path / "v2.yaml", [
            {"name": "ops", "sinks": [hook(urls["a"])]},
            {"name": "pager", "sinks": [hook(urls["c"])]}])
        reload(dispatcher, v2)
        with structlog.testing.capture_logs() as logs:
            running(dispatcher)
            await until(lambda: len(recs["a"].accepted) == 1, dispatcher)
        told = {e["sink"]: e for e in logs if e["event"] == "alerts.orphaned_entries"}
        assert set(told) == {b_id, d_id} and told[b_id]["pending"] == 2
        assert f"keeperd alerts outbox reroute ops/{b_id}" in told[b_id]["action"]
        orphaned = {"route": "ops", "sink": b_id}
        assert metric_value(metrics, "keeperd_outbox_orphaned", orphaned) == 2
        assert metric_value(metrics, "keeperd_outbox_orphaned", {**orphaned, "sink": d_id}) == 1

        async def keeperd(*args: str) -> int:
            return await asyncio.to_thread(cli.main, ["alerts", "outbox", *args,
                                                      "--config", str(v2)])

        assert await keeperd("list") == 0
        listed = capsys.readouterr().out
        line = next(x for x in listed.splitlines() if f"ops/{b_id}" in x)
        assert "2 pending" in line and "NOT CONFIGURED" in line
        assert f"ops/{a_id}" not in listed  # delivered: nothing waits for it

        # Clear refusals, nothing changed by them.
        assert await keeperd("reroute", f"ops/{b_id}", "--to", "pager/nope") == 1
        err = capsys.readouterr().err
        assert "--to pager/nope: no such sink in the config" in err and f"pager/{c_id}" in err
        assert await keeperd("drop", f"ops/{a_id}") == 1
        assert "is a configured sink" in capsys.readouterr().err
        assert await keeperd("drop", f"ops/{b_id[:-1]}") == 1
        err = capsys.readouterr().err
        assert "nothing waits for" in err and f"did you mean ops/{b_id}?" in err
        assert await keeperd("reroute", f"ops/{b_id}") == 2  # no --to
        assert "--to ROUTE/SINK_ID" in capsys.readouterr().err
        assert [s for s, st, _ in await states(db) if st == PENDING] == [b_id, b_id, d_id]

        # Re-routed: B's two go to C, now; D's dropped.
        assert await keeperd("reroute", f"ops/{b_id}", "--to", f"pager/{c_id}") == 0
        assert "2 notification(s) waiting for" in capsys.readouterr().out
        assert await keeperd("drop", f"ops/{d_id}") == 0
        assert "1 notification(s)" in capsys.readouterr().out
        await until(lambda: len(recs["c"].accepted) == 2, dispatcher)
        assert summaries(recs["c"]) == ["for-b-0", "for-b-1"]
        assert not recs["b"].requests and not recs["d"].requests
        assert [(st, s) for _, st, s in await states(db)] == [
            (DELIVERED, "for-a"), (DELIVERED, "for-b-0"), (DELIVERED, "for-b-1"),
            (DROPPED, "for-d")]
        await until(lambda: metric_absent(metrics, "keeperd_outbox_orphaned", orphaned),
                    dispatcher)
        assert await keeperd("list") == 0
        assert capsys.readouterr().out.splitlines()[-1] == "outbox: nothing pending"
    await db.close()


# --- the migration from the schema before sink ids, on both back-ends -------------------------

OLD_INSERT = ("INSERT INTO outbox (route, sink, sink_kind, idempotency_key, chain, block, "
              "status, priority, payload, state, next_at, created_at) "
              "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)")


@pytest.fixture(params=["sqlite", "postgresql"])
async def old_database(request: pytest.FixtureRequest, tmp_path: Path
                       ) -> AsyncIterator[Database]:
    """A state database as keeperd left it before sink ids: migrations 1 to 6."""
    if request.param == "sqlite":
        db: Database = SqliteDatabase.open(tmp_path / "state.db")
    else:
        server = request.getfixturevalue("postgres_server")  # (sync: asked for at run time)
        db = await PostgresDatabase.connect(await fresh_database(server))
    assert await migrate(db, only=range(1, 7)) == [1, 2, 3, 4, 5, 6]
    yield db
    await db.close()


async def test_rows_queued_before_sink_ids_survive_the_migration_and_reach_their_sink(
        old_database: Database, tmp_path: Path,
        running: Callable[[Dispatcher], None]) -> None:
    db = old_database
    now = time.time()
    # What the old `Outbox.put` wrote: the sink as its index in the route.
    old_rows = [("ops", 0, PENDING, "for-a"), ("ops", 1, PENDING, "for-b"),
                ("ops", 1, DELIVERED, "b-earlier"), ("ops", 0, DEAD, "a-dead"),
                ("ops", 5, PENDING, "for-a-sink-long-gone")]
    for i, (route, index, state, summary) in enumerate(old_rows):
        await db.execute(OLD_INSERT, route, index, "webhook", f"key-{i}", None, None, "firing",
                         1, json.dumps([alert(summary)]), state, now, now)

    assert await migrate(db) == [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    assert await migrate(db) == []
    assert await states(db) == [("#0", PENDING, "for-a"), ("#1", PENDING, "for-b"),
                                ("#1", DELIVERED, "b-earlier"), ("#0", DEAD, "a-dead"),
                                ("#5", PENDING, "for-a-sink-long-gone")]

    # The first start after the upgrade, with the config the old version ran: each row takes
    # the id of the sink at its place, and goes there.
    a, b = Recorder(), Recorder()
    async with serve(webhook_app(a)) as a_url, serve(webhook_app(b)) as b_url:
        metrics = Metrics()
        dispatcher = Dispatcher(Outbox(db), FAST, metrics)
        reload(dispatcher, write_config(tmp_path / "k.yaml", [{"name": "ops", "sinks": [
            hook(a_url), hook(b_url)]}]))
        a_id, b_id = (rt.sink_id for rt in dispatcher.route_sinks("ops"))
        running(dispatcher)
        await until(lambda: len(a.accepted) + len(b.accepted) >= 2, dispatcher)
        await asyncio.sleep(0.3)
        assert summaries(a) == ["for-a"] and summaries(b) == ["for-b"]
        assert await states(db) == [(a_id, DELIVERED, "for-a"), (b_id, DELIVERED, "for-b"),
                                    (b_id, DELIVERED, "b-earlier"), (a_id, DEAD, "a-dead"),
                                    ("#5", PENDING, "for-a-sink-long-gone")]
        # A row whose place no sink fills any more is kept, and reported; a reload that puts a
        # sink at that place later does not take it (only the start's config is the old one).
        assert metric_value(metrics, "keeperd_outbox_orphaned",
                            {"route": "ops", "sink": "#5"}) == 1
        reload(dispatcher, write_config(tmp_path / "k2.yaml", [{"name": "ops", "sinks": [
            {**hook(a_url), "url": f"{a_url}/hook?n={n}"} for n in range(6)]}]))
        await asyncio.sleep(0.5)
        assert (await states(db))[-1] == ("#5", PENDING, "for-a-sink-long-gone")
        assert summaries(a) == ["for-a"]
