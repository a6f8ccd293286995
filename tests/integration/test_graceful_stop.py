"""A stop (SIGTERM: `systemctl stop`, a deploy) in the middle of a liquidation wave (#18 item
8): the evaluation in flight runs to its end — every wave of the crash signed and broadcast —
within the stop budget, nothing is left planned, and everything it sent lands."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.executor import WAVE
from keeperd.storage.db import STATE_FILE
from tests.faults.chaos_proxy import ChaosProxy, Fault
from tests.faults.invariants import keeper_liquidations
from tests.keeper_harness import (
    KEEPER,
    KEEPER_KEY,
    chain_health,
    config_for,
    fund_keeper,
)
from tests.keeperd_process import journal_rows

STOP_BUDGET_S = 5.0  # Daemon._drain's limit


def pending_nonce(devnet: Devnet) -> int:
    """The keeper's transactions the node holds, mined or in its mempool."""
    return int(devnet.client.call("eth_getTransactionCount", KEEPER, "pending"), 16)


async def test_a_stop_mid_wave_lets_the_crash_finish_within_the_budget(
        devnet: Devnet, tmp_path: Path, run_daemon,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy:
        config = config_for(devnet, tmp_path, "liquidate",
                            key={"source": "env", "env": "KEEPER_KEY"})
        chain = config.chains[0].model_copy(update={"rpc_urls": [proxy.url]})
        keeper = await run_daemon(config.model_copy(update={"chains": [chain]}))
        await keeper.evaluated_at(devnet.client.block_number())
        journal = keeper.daemon.executors["aave"].journal
        devnet.client.call("evm_setAutomine", False)
        try:
            # Each wave's broadcast takes 0.3 s to reach the node: the stop comes while the
            # crash's broadcasts are on their way (later waves are signed meanwhile).
            proxy.faults["eth_sendRawTransaction"] = Fault.delay(0.3)
            nonce_before = pending_nonce(devnet)
            devnet.set_price_async("WETH", 2100.0)
            crash = devnet.mine(1)
            underwater = {a for a in borrowers if chain_health(devnet, a) < 1.0}
            assert len(underwater) > WAVE
            deadline = time.monotonic() + 30
            while not (signed := [e for e in await journal.by_status(J.PENDING)
                                  if e.detected_block >= crash]):  # (not the approvals)
                assert time.monotonic() < deadline, "nothing signed"
                await asyncio.sleep(0.01)
            stopped = time.monotonic()
            keeper.stop.set()
            reached_at_stop = pending_nonce(devnet) - nonce_before  # of the crash's sends
            await asyncio.wait_for(keeper.task, 3 * STOP_BUDGET_S)
            took = time.monotonic() - stopped
            rows = journal_rows(tmp_path / "state" / STATE_FILE)
            del proxy.faults["eth_sendRawTransaction"]
            devnet.mine(1)  # what it broadcast, in the node's mempool
        finally:
            devnet.client.call("evm_setAutomine", True)
    assert took < STOP_BUDGET_S, took  # the wave ended inside the budget, not cut by it
    statuses = [status for _, status in rows]
    assert J.PLANNED not in statuses
    # The stop came with the crash's broadcasts still on their way (none had reached the
    # node), and more of it than was signed then: every wave was signed and sent after it.
    assert reached_at_stop == 0 and len(rows) > WAVE, (reached_at_stop, len(rows))
    assert len(signed) >= 1
    ours = keeper_liquidations(devnet, crash)
    assert len(ours) == len(rows) == statuses.count(J.PENDING)  # each one reached the node
    liquidated = {k.split(":")[1].lower() for k, _ in rows}
    assert liquidated <= {a.lower() for a in underwater}
