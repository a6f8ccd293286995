"""A reorg that takes away the block holding our liquidations (#17). They used to stay
"included" — final at 0 confirmations — though the chain no longer had them, and were never
tried again. Now they are pending again: rebroadcast under their own nonces and settled on
the new branch, once each."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.conftest import metric_value
from tests.faults.invariants import keeper_liquidations
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    config_for,
    crash_and_collect,
    fund_keeper,
    keeper_key_env,
)


async def wait_for(check, what: str, limit_s: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


async def test_liquidations_whose_block_is_reorganised_away_are_sent_again_once(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.client.block_number())
    devnet.client.call("evm_setAutomine", False)
    try:
        crash, journal, sent = await crash_and_collect(devnet, keeper)
        assert len(sent) > 20
        keys = {e.key for e in sent}
        before = devnet.snapshot()  # the crash block, our wave in the mempool
        await keeper.evaluated_at(devnet.mine(1))

        async def all_included() -> bool:
            return keys <= {e.key for e in await journal.by_status(J.INCLUDED)}

        await wait_for(all_included, "the wave included")
        # The block holding the wave is reorganised away: a longer branch without it.
        devnet.revert(before)
        devnet.mine(2)

        def reorged_out() -> float:
            return metric_value(keeper.daemon.metrics, "keeperd_liquidations_total", {
                "chain": "devnet", "protocol": "aave", "stage": "reorged_out"})

        async def pending_again() -> bool:  # (each is journaled pending, then rebroadcast,
            # then counted: wait for the last count, not only the last status)
            return (keys <= {e.key for e in await journal.by_status(J.PENDING)}
                    and reorged_out() >= len(keys))

        await wait_for(pending_again, "the reorged-out wave pending again")
        assert reorged_out() == len(keys)
        await keeper.evaluated_at(devnet.mine(1))  # the rebroadcast wave
        await wait_for(all_included, "the wave included on the new branch")
    finally:
        devnet.client.call("evm_setAutomine", True)
    ours = keeper_liquidations(devnet, crash)
    assert len(ours) == len(keys)  # on the chain as it is now, each exactly once
    per_key = {k: len(await journal.txs(k)) for k in keys}
    assert all(n == 1 for n in per_key.values())  # the same signed transaction, not a new one


async def test_a_reorg_while_keeperd_is_stopped_sends_the_lost_wave_again_once(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The watch over recent inclusions is memory: a restart used to forget it, so a reorg
    while keeperd was down left the wave "included" though the chain no longer had it. At
    start the journal's recent inclusions are checked against the chain."""
    fund_keeper(devnet)
    config = config_for(devnet, tmp_path, "liquidate", key={"source": "env", "env": "KEEPER_KEY"})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    devnet.client.call("evm_setAutomine", False)
    try:
        crash, journal, sent = await crash_and_collect(devnet, keeper)
        keys = {e.key for e in sent}
        assert len(keys) > 20
        before = devnet.snapshot()
        await keeper.evaluated_at(devnet.mine(1))

        async def included() -> bool:
            return keys <= {e.key for e in await keeper.daemon.executors["aave"]
                            .journal.by_status(J.INCLUDED)}

        await wait_for(included, "the wave included")
        keeper.stop.set()
        await asyncio.wait_for(keeper.task, 15)
        devnet.revert(before)  # while it is down, the wave's block is reorganised away
        devnet.mine(2)
        keeper = await run_daemon(config)
        journal = keeper.daemon.executors["aave"].journal
        assert keys <= {e.key for e in await journal.by_status(J.PENDING)}
        assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total", {
            "chain": "devnet", "protocol": "aave", "stage": "reorged_out"}) == len(keys)
        await keeper.evaluated_at(devnet.mine(1))
        await wait_for(included, "the wave included on the new branch")
    finally:
        devnet.client.call("evm_setAutomine", True)
    ours = keeper_liquidations(devnet, crash)
    # (Before the stop, the first wave's block showed partial leftovers still liquidatable:
    # their own opportunities, journaled and pending at the stop, resumed too.)
    included = {e.key for e in await journal.by_status(J.INCLUDED)}
    assert keys <= included
    assert len(ours) == len(included)  # on the chain as it is now, each exactly once
    assert {len(await journal.txs(k)) for k in included} == {1}
