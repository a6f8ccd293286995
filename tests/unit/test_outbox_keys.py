"""A notification's idempotency key, what a receiver drops repeats by: an event's is derived
from the event, so one told again from a state database restored from a backup is dropped (a
restored backup re-sent three "was liquidated" messages under new keys, a by-hand trial)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keeperd.alerts.outbox import Outbox, Queued
from keeperd.storage.db import SqliteDatabase
from keeperd.storage.migrations import migrate


def liquidated(tx: str, block: int = 100) -> dict[str, Any]:
    return {"status": "firing", "kind": "event", "rule": "position_liquidated",
            "severity": "critical", "fingerprint": f"position_liquidated:{tx}:3:holders",
            "block": block, "summary": f"liquidated in {tx}"}


def health(kind: str) -> dict[str, Any]:
    return {"status": "firing", "kind": kind, "rule": "position_health",
            "severity": "critical", "fingerprint": "abc123", "block": 100,
            "summary": "health 0.98"}


async def outbox_at(path: Path) -> Outbox:
    db = SqliteDatabase.open(path)
    await migrate(db)
    return Outbox(db)


async def test_an_event_has_the_same_key_in_a_restored_database(tmp_path: Path) -> None:
    live, restored = await outbox_at(tmp_path / "live.db"), await outbox_at(
        tmp_path / "restored.db")
    told = Queued("holders", "sink-1", "webhook", [liquidated("0xaa")], "devnet", 100)
    key = await live.put("holders", "sink-1", "webhook", told.alerts, "devnet", 100)
    assert await restored.put_all([told]) == [key]  # (told again: the receiver drops it)
    # Another event, sink or block is another notification.
    others = await live.put_all([
        Queued("holders", "sink-1", "webhook", [liquidated("0xbb")], "devnet", 100),
        Queued("holders", "sink-2", "webhook", [liquidated("0xaa")], "devnet", 100),
        Queued("holders", "sink-1", "webhook", [liquidated("0xaa", 101)], "devnet", 101)])
    assert len({key, *others}) == 4


async def test_a_lifecycle_alert_or_an_event_queued_again_here_is_new(tmp_path: Path) -> None:
    """A health alert fires, resolves and fires again with the same fingerprint: each is new.
    An event this database queues again is told again on purpose (a reorg took its block
    and the chain made it anew): a new key, or the receiver would drop it."""
    outbox, restored = await outbox_at(tmp_path / "live.db"), await outbox_at(
        tmp_path / "restored.db")
    firing = Queued("holders", "sink-1", "webhook", [health("fired")], "devnet", 100)
    # (a state alert told again from a restored database is told as new: not an event's key)
    assert await outbox.put_all([firing]) != await restored.put_all([firing])
    # An event with no block (`keeperd alerts test`'s) is not one to derive a key from.
    unblocked = Queued("holders", "sink-1", "webhook", [{**liquidated("0xaa"), "block": None}],
                       "devnet", None)
    assert await outbox.put_all([unblocked]) != await restored.put_all([unblocked])
    event = Queued("holders", "sink-1", "webhook", [liquidated("0xaa")], "devnet", 100)
    first = await outbox.put_all([event])
    again = await outbox.put_all([event, event])
    assert len({*first, *again}) == 3
    assert len(await outbox.entries(limit=100)) == 5
