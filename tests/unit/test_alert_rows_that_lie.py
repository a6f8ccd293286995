"""A row of the alert tables that keeperd did not write (a hand's `UPDATE`, a bad restore)
must not silence alerts: "every answer may lie", a database row too. Each of these once
stopped everything behind it — a silence that did not parse failed every alert tick (rpc_down,
key_in_use_elsewhere and the rest became log lines), an outbox payload that did not parse
failed its sink's every send (every notification behind it waited for good), a remembered
alert that did not parse failed the start (a review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import structlog

from keeperd.alerts.outbox import Outbox
from keeperd.alerts.silences import Silences
from keeperd.alerts.state import AlertState
from keeperd.storage.db import SqliteDatabase
from keeperd.storage.migrations import migrate


async def migrated(path: Path) -> SqliteDatabase:
    db = SqliteDatabase.open(path)
    await migrate(db)
    return db


def alert(fingerprint: str) -> dict[str, Any]:
    return {"status": "firing", "kind": "fired", "rule": "rpc_down", "severity": "critical",
            "fingerprint": fingerprint, "block": 100, "summary": "every RPC fails"}


async def test_a_silence_that_does_not_read_mutes_nothing_and_stops_nothing(
        tmp_path: Path) -> None:
    db = await migrated(tmp_path / "state.db")
    try:
        silences = Silences(db)
        kept = await silences.add(["rule=oracle"], 3600, "feed maintenance", now=1000.0)
        for matchers in ("not json", "[]", '["no matcher here"]', '{"rule": "x"}',
                         '["rule=~("]'):
            await db.execute("INSERT INTO silences (matchers, comment, created_by, "
                             "created_at, ends_at) VALUES ($1, 'x', 'hand', 1000, 5000)",
                             matchers)
        with structlog.testing.capture_logs() as logs:
            active = await silences.refresh(now=1001.0)
            await silences.refresh(now=1002.0)  # (said once, not every tick)
        assert [s.id for s in active] == [kept]
        # (a row of no matchers would have matched every alert: it mutes none)
        assert silences.matching({"rule": "rpc_down", "chain": "devnet"}, now=1001.0) is None
        assert silences.matching({"rule": "oracle"}, now=1001.0) is not None
        told = [e for e in logs if e["event"] == "silence.unreadable"]
        assert len(told) == 1 and len(told[0]["silences"]) == 5
    finally:
        await db.close()


async def test_an_outbox_row_that_does_not_read_is_dropped_and_the_rest_go(
        tmp_path: Path) -> None:
    db = await migrated(tmp_path / "state.db")
    try:
        outbox = Outbox(db)
        for n in range(3):
            await outbox.put("ops", "sink-1", "webhook", [alert(f"fp{n}")], "devnet", 100)
        first = min(e.id for e in await outbox.entries())
        await db.execute("UPDATE outbox SET payload = $1 WHERE id = $2", "{not json", first)
        await db.execute("UPDATE outbox SET payload = $1 WHERE id = $2",
                         json.dumps({"a": 1}), first + 1)
        with structlog.testing.capture_logs() as logs:
            due = await outbox.due("ops", "sink-1", limit=10)
        assert [e.alerts[0]["fingerprint"] for e in due] == ["fp2"]
        assert [e["id"] for e in logs if e["event"] == "outbox.entry_unreadable"] == [
            first, first + 1]
        assert [tuple(r) for r in await db.fetch(
            "SELECT id, state FROM outbox ORDER BY id")] == [
            (first, "dropped"), (first + 1, "dropped"), (first + 2, "pending")]
        assert [e.alerts[0]["fingerprint"] for e in await outbox.entries()] == ["fp2"]
    finally:
        await db.close()


async def test_a_remembered_alert_that_does_not_read_is_told_again_not_a_failed_start(
        tmp_path: Path) -> None:
    db = await migrated(tmp_path / "state.db")
    try:
        for fingerprint, text in (("good", json.dumps(alert("good"))), ("bad", "{nope"),
                                  ("list", "[1]")):
            await db.execute(
                "INSERT INTO alert_state (fingerprint, rule, route, severity, value, told_at, "
                "since, chain, block, alert) VALUES ($1, 'rpc_down', 'ops', 'critical', 1.0, "
                "1000, 1000, 'devnet', 100, $2)", fingerprint, text)
        with structlog.testing.capture_logs() as logs:
            state = await AlertState(db).load()
        assert set(state._rows) == {"good"}
        assert [sorted(e["rows"]) for e in logs if e["event"] == "alerts.state_unreadable"] == [
            ["bad", "list"]]
    finally:
        await db.close()
