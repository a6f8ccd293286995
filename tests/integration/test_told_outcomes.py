"""An outcome journaled and never told: a settlement is journaled when it is seen and told
with the block's alerts, and a replica killed between the two left its `included` untold for
good — the next leader found the row settled (a by-hand trial: 19 liquidations sent and never
said included). The journal now records what was told (`told`, migration 15) in the
transaction that writes the notifications, and a start tells what was not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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
        assert await journal.untold("aave") == []  # ...and journaled as told
        keeper.stop.set()
        await asyncio.wait_for(keeper.task, 10)

        # What a process killed between the settlement and its alerts leaves: rows settled,
        # their `included` never written to the outbox.
        lost = included[:5]
        db = SqliteDatabase.open(settings.state_dir / STATE_FILE)
        try:
            for e in lost:
                await db.execute("UPDATE liquidations SET told = NULL WHERE key = $1", e.key)
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
        assert await again.daemon.executors["aave"].journal.untold("aave") == []
    finally:
        webhook.close()
