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
    liquidating,
)


async def wait_for(check, what: str, limit_s: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


async def stop_once_included(keeper, keys: set[str], devnet: Devnet  # type: ignore[no-untyped-def]
                             ) -> None:
    """Mine the block holding the wave, wait until every key of it is journaled included,
    and stop the daemon."""
    await keeper.evaluated_at(devnet.mine(1))

    async def included() -> bool:
        return keys <= {e.key for e in await keeper.daemon.executors["aave"]
                        .journal.by_status(J.INCLUDED)}

    await wait_for(included, "the wave included")
    keeper.stop.set()
    await asyncio.wait_for(keeper.task, 15)


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
    config, keeper = await liquidating(devnet, tmp_path, run_daemon)
    devnet.client.call("evm_setAutomine", False)
    try:
        crash, journal, sent = await crash_and_collect(devnet, keeper)
        keys = {e.key for e in sent}
        assert len(keys) > 20
        before = devnet.snapshot()
        await stop_once_included(keeper, keys, devnet)
        devnet.revert(before)  # while it is down, the wave's block is reorganised away
        devnet.mine(2)
        keeper = await run_daemon(config)
        journal = keeper.daemon.executors["aave"].journal
        assert keys <= {e.key for e in await journal.by_status(J.PENDING)}
        assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total", {
            "chain": "devnet", "protocol": "aave", "stage": "reorged_out"}) == len(keys)
        await keeper.evaluated_at(devnet.mine(1))

        async def included_again() -> bool:
            return keys <= {e.key for e in await journal.by_status(J.INCLUDED)}

        await wait_for(included_again, "the wave included on the new branch")
    finally:
        devnet.client.call("evm_setAutomine", True)
    ours = keeper_liquidations(devnet, crash)
    # (Before the stop, the first wave's block showed partial leftovers still liquidatable:
    # their own opportunities, journaled and pending at the stop, resumed too.)
    included = {e.key for e in await journal.by_status(J.INCLUDED)}
    assert keys <= included
    assert len(ours) == len(included)  # on the chain as it is now, each exactly once
    assert {len(await journal.txs(k)) for k in included} == {1}


async def test_a_lost_wave_whose_positions_are_healthy_again_is_not_sent_and_its_nonces_go(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The chain keeperd restarts on no longer has the wave, nor the crash that made it: the
    price is back (a devnet started again from its state; a reorg past the price update).
    Each lost liquidation is checked before it is sent again: none would succeed, so none is
    sent (they used to be rebroadcast and revert, every one counted by the revert breaker),
    and their nonces are cancelled. While the chain's head is behind the block keeperd saw
    them in, nothing is decided: they stay included until the head gets there."""
    config, keeper = await liquidating(devnet, tmp_path, run_daemon)
    calm = devnet.snapshot()  # before the crash: WETH at its seeded price
    devnet.client.call("evm_setAutomine", False)
    try:
        crash, journal, sent = await crash_and_collect(devnet, keeper)
        keys = {e.key for e in sent}
        assert len(keys) > 20
        await stop_once_included(keeper, keys, devnet)
        devnet.revert(calm)  # the chain without the crash, shorter than what keeperd saw
        assert devnet.client.block_number() < crash
        # (as a devnet started again: the wave's leftovers that were pending at the stop are
        # not in its pool; a revert keeps them)
        devnet.client.call("anvil_removePoolTransactions", KEEPER)
        keeper = await run_daemon(config)
        journal = keeper.daemon.executors["aave"].journal
        assert keys <= {e.key for e in await journal.by_status(J.INCLUDED)}
        # (nor the wave's partial leftovers, pending at the stop: checked before they are
        # sent again too)
        pool = devnet.client.call("txpool_content")
        assert not {k.lower() for k in [*pool["pending"], *pool["queued"]]} & {KEEPER.lower()}
        # The head passes the block: checked, found gone, not sent again; the nonces cancelled.
        while devnet.client.block_number() < crash + 6:
            await keeper.evaluated_at(devnet.mine(1))

        async def settled() -> bool:
            statuses = {e.key: e.status for e in await journal.all() if e.key in keys}
            return all(s not in (J.INCLUDED, J.PENDING) for s in statuses.values())

        for _ in range(10):
            if await settled():
                break
            await keeper.evaluated_at(devnet.mine(1))
        assert await settled()
        assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total", {
            "chain": "devnet", "protocol": "aave", "stage": "reorged_out"}) == len(keys)
    finally:
        devnet.client.call("evm_setAutomine", True)
    assert keeper_liquidations(devnet, crash - 1) == []  # nothing liquidated on this chain
    assert await journal.by_status(J.REVERTED) == []  # and nothing sent that reverted
    cancelled = {e.key for e in await journal.by_status(J.CANCELLED)}
    assert keys <= cancelled
