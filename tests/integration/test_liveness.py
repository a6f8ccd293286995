"""/healthz follows the chain followers (#17 item 10, #18 item 8): a follower that stops
trying — a hung await — fails liveness within its limit, so a container's probe restarts
keeperd; one that goes on trying (an RPC that fails, a chain that halts) does not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from keeperd.devnet.handle import Devnet
from tests.integration.test_liquidation import config_for, run_daemon  # noqa: F401


async def test_a_hung_chain_follower_fails_liveness_and_recovers(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:  # noqa: F811
    config = config_for(devnet, tmp_path, "alert-only")
    chain = config.chains[0].model_copy(update={"request_timeout": 0.5, "max_attempts": 1})
    keeper = await run_daemon(config.model_copy(update={"chains": [chain]}))
    daemon = keeper.daemon
    await keeper.evaluated_at(devnet.client.block_number())
    assert daemon.liveness()[0]
    source = daemon.chains["devnet"].blocks
    follow = source.poll_once
    hang = asyncio.Event()

    async def hung() -> None:
        await hang.wait()  # a request that never returns, no timeout around it

    source.poll_once = hung  # type: ignore[method-assign]
    started = time.monotonic()
    while daemon.liveness()[0]:
        assert time.monotonic() - started < 15, "a hung follower still looks alive"
        await asyncio.sleep(0.1)
    ok, detail = daemon.liveness()
    assert not ok
    assert detail["devnet"]["follower_stuck"] and detail["devnet"]["follower_idle_s"] > 5
    assert time.monotonic() - started < 10  # its limit: 0.1 s poll + 5.5 s attempt + 2 s
    source.poll_once = follow  # type: ignore[method-assign]
    hang.set()
    await keeper.evaluated_at(devnet.mine(1))
    assert daemon.liveness()[0]
