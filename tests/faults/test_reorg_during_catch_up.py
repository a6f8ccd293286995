"""A reorg while the account index is reading a range (a slow provider, or the first catch-up
of a big chain, minutes long). The block source awaits the index's rewind: it must not wait
for the catch-up (the chain follower would stall that long), and the range the catch-up read
— of the replaced branch — must not be written after the rewind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from keeperd.chain.rpc import RpcPool
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.storage.account_index import IndexStore
from tests.faults.chaos_proxy import ChaosProxy, Fault
from tests.faults.invariants import assert_index_complete
from tests.integration.test_aave_adapter import make_adapter

NEWCOMER = "0x000000000000000000000000000000000000bEEF"


async def test_a_rewind_does_not_wait_for_a_slow_catch_up_nor_lose_to_it(
        devnet: Devnet, tmp_path: Path) -> None:
    store = await IndexStore.open(tmp_path)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy, \
            RpcPool.from_urls("devnet", [proxy.url], metrics=Metrics()) as pool:
        adapter = make_adapter(devnet, pool, store, Metrics())
        await adapter.start()
        fork = devnet.client.block_number()
        await adapter.discover(fork)
        snap = devnet.snapshot()
        devnet.open_position(NEWCOMER, "WETH", 1.0, "USDC", 1000.0)
        await adapter.discover(devnet.client.block_number())  # indexed: to be rewound
        assert NEWCOMER in adapter.accounts
        devnet.mine(2)
        # A slow provider: the logs of the branch about to be replaced, answered late.
        proxy.faults["eth_getLogs"] = Fault.slow_answer(1.5)
        catching_up = asyncio.create_task(adapter.discover(devnet.client.block_number()))
        await asyncio.sleep(0.3)  # the old branch's range is being read
        devnet.revert(snap)
        devnet.advance_time(30, mine=False)
        devnet.mine(5)  # a longer branch without the newcomer
        started = time.monotonic()
        await adapter.on_reorg(fork)
        assert time.monotonic() - started < 1.0  # the follower did not wait for the read
        await catching_up
        assert NEWCOMER not in adapter.accounts
        assert NEWCOMER not in await store.accounts("aave")
        del proxy.faults["eth_getLogs"]
        head = devnet.client.block_number()
        await adapter.discover(head)
        assert NEWCOMER not in adapter.accounts
        assert adapter.indexer is not None and adapter.indexer.indexed_block == head
    await store.close()
    await assert_index_complete(devnet, tmp_path, "aave", head)
