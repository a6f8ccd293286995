"""An outcome journaled and never told: a settlement is journaled when it is seen and told
with the block's alerts, and a replica killed between the two left its `included` untold for
good — the next leader found the row settled (a by-hand trial: 19 liquidations sent and never
said included). The journal now records what was told (`told`, migration 15) in the
transaction that writes the notifications, and a start tells what was not."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.storage.db import STATE_FILE, SqliteDatabase
from tests.alert_fakes import Webhook
from tests.integration.test_aave_verify import config
from tests.keeper_harness import fund_keeper, keeper_key_env  # noqa: F401 - fixtures


async def included_told(webhook: Webhook, keys: set[str], limit_s: float = 20
                        ) -> dict[str, dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = {b["details"]["opportunity"]: b for _, b in webhook.received
                 if b.get("rule") == "liquidation" and b["labels"].get("event") == "included"
                 and b["details"].get("opportunity") in keys}
        if found.keys() >= keys:
            return found
        await asyncio.sleep(0.1)
    return found


async def test_an_outcome_left_untold_is_told_at_the_next_start(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    webhook = Webhook()
    try:
        settings = config(devnet, tmp_path, webhook)
        keeper = await run_daemon(settings)
        await keeper.evaluated_at(devnet.client.block_number())
        devnet.set_price("WETH", 2100.0)
        await keeper.evaluated_at(devnet.client.block_number())
        for _ in range(2):
            await keeper.evaluated_at(devnet.mine(1))
        journal = keeper.daemon.executors["aave"].journal
        included = await journal.by_status(J.INCLUDED)
        assert len(included) > 20
        told = await included_told(webhook, {e.key for e in included})
        assert len(told) == len(included)  # each told once, as it settled
        assert await journal.untold("aave", "profit_usd=pending") == []  # ...journaled as told
        keeper.stop.set()
        await asyncio.wait_for(keeper.task, 10)

        # What a process killed between the settlement and its alerts leaves: rows settled,
        # their `sent` told and their `included` never written to the outbox.
        lost = included[:5]
        db = SqliteDatabase.open(settings.state_dir / STATE_FILE)
        try:
            for e in lost:
                await db.execute("UPDATE liquidations SET told = 'sent' WHERE key = $1",
                                 e.key)
        finally:
            await db.close()
        webhook.received.clear()
        again = await run_daemon(settings)
        await again.evaluated_at(devnet.mine(1))
        late = await included_told(webhook, {e.key for e in lost})
        assert late.keys() == {e.key for e in lost}
        assert all(b["details"]["told_late"] for b in late.values())
        assert all(b["details"]["tx_hash"] for b in late.values())
        others = [b for _, b in webhook.received if b.get("rule") == "liquidation"
                  and b["details"].get("opportunity") not in late]
        assert others == []  # nothing told twice
        assert await again.daemon.executors["aave"].journal.untold(
            "aave", "profit_usd=pending") == []
    finally:
        webhook.close()


async def test_outcomes_settled_by_a_restart_are_told_once(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart with a crash's liquidations mined while it was down (and one race lost):
    each outcome settled by the start, and booked at its first block, is told once — a
    review found 45 of 56 told twice (once as told_late with no profit, then booked)."""
    from keeperd.execution.executor import Executor
    from tests.integration.test_liquidation import config_for, lose_a_race

    told: list[tuple[str, str]] = []
    tell = Executor._event

    def recording(self: Executor, kind: str, key: Any, account: str, block: int | None,
                  details: dict[str, Any]) -> None:
        told.append((kind, str(key)))
        tell(self, kind, key, account, block, details)

    monkeypatch.setattr(Executor, "_event", recording)
    fund_keeper(devnet)
    config = config_for(devnet, tmp_path, "liquidate",
                        key={"source": "env", "env": "KEEPER_KEY"})
    victim = await lose_a_race(devnet, await run_daemon(config), stopped=True)
    told.clear()
    again = await run_daemon(config)
    await again.evaluated_at(devnet.mine(1))
    await again.evaluated_at(devnet.mine(1))
    journal = again.daemon.executors["aave"].journal
    settled = {e.key: e.status for e in await journal.all()
               if e.status in (J.INCLUDED, J.LOST_RACE, J.REVERTED)}
    assert len(settled) > 20 and J.LOST_RACE in settled.values()
    outcomes = Counter((kind, key) for kind, key in told if kind != "sent")
    assert max(outcomes.values()) == 1, [o for o, n in outcomes.items() if n > 1][:3]
    [lost] = [k for k, s in settled.items() if s == J.LOST_RACE]
    assert ("lost_race", lost) in outcomes and victim in lost
    assert await journal.untold("aave", "profit_usd=pending") == []
    # ...and a third start tells nothing again
    again.stop.set()
    await asyncio.wait_for(again.task, 10)
    told.clear()
    third = await run_daemon(config)
    await third.evaluated_at(devnet.mine(1))
    assert [t for t in told if t[0] != "sent"] == []
