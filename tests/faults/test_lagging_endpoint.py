"""#17 item 1: an endpoint behind the head — a lagging provider, or the fallback a pool fails
over to — answers `eth_getLogs` for the blocks it has and silently nothing for the rest. The
index cursor used to pass those blocks: a borrower first seen there was never indexed, across
restarts. Now logs are trusted only from an endpoint that has the range's last block."""

from __future__ import annotations

from pathlib import Path

from keeperd.chain.blocks import BlockSource
from keeperd.chain.rpc import RpcPool
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.storage.account_index import IndexStore
from tests.conftest import metric_value
from tests.faults.chaos_proxy import ChaosProxy
from tests.faults.invariants import assert_index_complete
from tests.integration.test_aave_adapter import make_adapter

NEWCOMER = "0x000000000000000000000000000000000000bEEF"


async def test_a_lagging_only_endpoint_makes_the_index_wait_not_skip(
        devnet: Devnet, tmp_path: Path) -> None:
    metrics = Metrics()
    store = await IndexStore.open(tmp_path)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy, \
            RpcPool.from_urls("devnet", [proxy.url], metrics=metrics) as pool:
        adapter = make_adapter(devnet, pool, store, metrics)
        await adapter.start()
        await adapter.discover(devnet.client.block_number())
        proxy.lag = 3
        devnet.open_position(NEWCOMER, "WETH", 1.0, "USDC", 1000.0)
        head = devnet.client.block_number()  # (the head as a faster node tells it)
        indexer = adapter.indexer
        assert indexer is not None
        before = indexer.indexed_block
        await adapter.discover(head)
        # The node has not got the newcomer's block: the cursor does not pass it.
        assert indexer.indexed_block < head - 3 + 1
        assert NEWCOMER not in adapter.accounts
        assert metric_value(metrics, "keeperd_index_waits_total",
                            {"chain": "devnet", "protocol": "aave"}) >= 1
        assert metric_value(metrics, "keeperd_rpc_requests_total",
                            {"chain": "devnet", "endpoint": "0", "method": "batch",
                             "outcome": "behind"}) >= 1
        assert indexer.indexed_block >= before  # what it has is indexed meanwhile
        proxy.lag = None  # the node catches up
        await adapter.discover(head)
        assert NEWCOMER in adapter.accounts
        assert indexer.indexed_block == head
    await store.close()
    await assert_index_complete(devnet, tmp_path, "aave", head)


async def test_a_lagging_first_endpoint_is_failed_over(devnet: Devnet, tmp_path: Path) -> None:
    """The operator's first endpoint falls behind: the next one answers, nothing is missed,
    and the lagging one is ranked after it from then on."""
    metrics = Metrics()
    store = await IndexStore.open(tmp_path)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy, \
            RpcPool.from_urls("devnet", [proxy.url, devnet.manifest["rpc_url"]],
                              metrics=metrics) as pool:
        adapter = make_adapter(devnet, pool, store, metrics)
        await adapter.start()
        proxy.lag = 2
        heads = []
        for _ in range(4):
            devnet.mine(1)
            heads.append(devnet.client.block_number())
            if len(heads) == 2:
                devnet.open_position(NEWCOMER, "WETH", 1.0, "USDC", 1000.0)
            await adapter.discover(devnet.client.block_number())
            assert adapter.indexer is not None
            assert adapter.indexer.indexed_block == devnet.client.block_number()
        assert NEWCOMER in adapter.accounts
        behind = metric_value(metrics, "keeperd_rpc_requests_total",
                              {"chain": "devnet", "endpoint": "0", "method": "batch",
                               "outcome": "behind"})
        assert behind >= 1
        assert pool.ranked()[0] is pool.endpoints[1]
        head = devnet.client.block_number()
    await store.close()
    await assert_index_complete(devnet, tmp_path, "aave", head)



async def test_a_first_endpoint_frozen_within_the_lag_hides_no_block(devnet: Devnet) -> None:
    """The operator's first endpoint two blocks behind (within `max_head_lag`, 3) stayed
    first: polling asked it for the head and the keeper saw those blocks only once it lagged
    past the limit. Two other endpoints past it rank it after them: the head is theirs."""
    rpc = devnet.manifest["rpc_url"]
    async with ChaosProxy(rpc) as first, ChaosProxy(rpc) as second, ChaosProxy(rpc) as third, \
            RpcPool.from_urls("devnet", [first.url, second.url, third.url]) as pool:
        source = BlockSource(pool)
        await pool.probe()
        await source.poll_once()
        start = devnet.client.block_number()
        assert source.head is not None and source.head.number == start
        first.lag = 2
        devnet.mine(2)
        await pool.probe()  # (the daemon's probe loop, every poll interval)
        await source.poll_once()
        assert source.head.number == start + 2
        assert pool.healthy_count() == 3 and pool.ranked()[-1] is pool.endpoints[0]
        first.lag = None  # it catches up: first again
        await pool.probe()
        assert pool.ranked()[0] is pool.endpoints[0]
