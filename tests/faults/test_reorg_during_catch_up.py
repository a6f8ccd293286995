"""A reorg while the account index is reading a range (a slow provider, or the first catch-up
of a big chain, minutes long). The block source awaits the index's rewind: it must not wait
for the catch-up (the chain follower would stall that long), and the range the catch-up read
— of the replaced branch — must not be written after the rewind.

The race is made, not hoped for: the proxy holds the catch-up's answer (the replaced branch's
logs, read from the node before the reorg) until the rewind has returned."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from keeperd.chain.rpc import RpcPool
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.storage.account_index import IndexStore
from tests.faults.chaos_proxy import ChaosProxy
from tests.faults.invariants import assert_index_complete
from tests.integration.test_aave_adapter import make_adapter

NEWCOMER = "0x000000000000000000000000000000000000bEEF"  # indexed, then reorged away
LATECOMER = "0x000000000000000000000000000000000000cafE"  # in the range read across the reorg


class HoldingProxy(ChaosProxy):
    """Once armed, the next eth_getLogs is answered by the node at once and its answer held
    (`read` set) until `release` is set: a read in flight for as long as the test needs."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.armed = False
        self.read, self.release = asyncio.Event(), asyncio.Event()
        self.held: list[dict[str, Any]] = []

    async def _answer(self, call: dict[str, Any], head: int | None) -> dict[str, Any]:
        answer = await super()._answer(call, head)
        if call.get("method") == "eth_getLogs" and self.armed:
            self.armed = False
            self.held = list(answer["result"])
            self.read.set()
            await self.release.wait()
        return answer


def mentions(logs: list[dict[str, Any]], account: str) -> bool:
    word = account.lower().removeprefix("0x").rjust(64, "0")
    return any(word in "".join(entry["topics"]) + entry["data"] for entry in logs)


async def test_a_rewind_does_not_wait_for_a_slow_catch_up_nor_lose_to_it(
        devnet: Devnet, tmp_path: Path) -> None:
    store = await IndexStore.open(tmp_path)
    async with HoldingProxy(devnet.manifest["rpc_url"]) as proxy, \
            RpcPool.from_urls("devnet", [proxy.url], metrics=Metrics()) as pool:
        adapter = make_adapter(devnet, pool, store, Metrics())
        await adapter.start()
        fork = devnet.client.block_number()
        await adapter.discover(fork)
        snap = devnet.snapshot()
        devnet.open_position(NEWCOMER, "WETH", 1.0, "USDC", 1000.0)
        await adapter.discover(devnet.client.block_number())  # indexed: to be rewound
        assert NEWCOMER in adapter.accounts
        devnet.open_position(LATECOMER, "WETH", 1.0, "USDC", 1000.0)
        devnet.mine(2)
        proxy.armed = True
        catching_up = asyncio.create_task(adapter.discover(devnet.client.block_number()))
        await asyncio.wait_for(proxy.read.wait(), 20)
        # The race landed: the catch-up is inside its read, which carries the replaced
        # branch's latecomer.
        assert mentions(proxy.held, LATECOMER), proxy.held
        devnet.revert(snap)
        devnet.advance_time(30, mine=False)
        devnet.mine(5)  # a longer branch without either account
        started = time.monotonic()
        await adapter.on_reorg(fork)
        assert time.monotonic() - started < 1.0  # the follower did not wait for the read
        assert not catching_up.done() and not proxy.release.is_set()  # still inside it
        proxy.release.set()
        await asyncio.wait_for(catching_up, 20)
        for account in (NEWCOMER, LATECOMER):
            assert account not in adapter.accounts
            assert account not in await store.accounts("aave")
        head = devnet.client.block_number()
        await adapter.discover(head)
        assert NEWCOMER not in adapter.accounts and LATECOMER not in adapter.accounts
        assert adapter.indexer is not None and adapter.indexer.indexed_block == head
    await store.close()
    await assert_index_complete(devnet, tmp_path, "aave", head)
