"""An index whose remembered blocks are none of them on the chain (a devnet brought down and up
again from its state: the blocks it indexed above the state's head are gone) is read anew from
its start. It rewound to just below its oldest remembered block, a cursor far above the new
chain's head, and never saw an account opened on the new chain (seen by hand: `index.rewound
to_block 4304` on a chain at 472, /readyz ready, the new borrower never listed)."""

from __future__ import annotations

from pathlib import Path

from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.protocols.aave_v3.adapter import AaveV3Adapter
from keeperd.protocols.sdk.contract import PluginContext
from keeperd.storage.account_index import IndexStore
from tests.keeper_harness import config_for

NEWCOMER = "0x00000000000000000000000000000000deadbeef"


async def index_once(devnet: Devnet, pool, state: Path) -> tuple[set[str], int]:  # type: ignore[no-untyped-def]
    config = config_for(devnet, state, "alert-only")
    store = await IndexStore.open(state)
    try:
        adapter = AaveV3Adapter(config.protocols[0],
                                PluginContext(config.chains[0], pool, store, Metrics()))
        await adapter.start()
        await adapter.discover(devnet.client.block_number())
        assert adapter.indexer is not None
        return set(adapter.accounts), adapter.indexer.indexed_block
    finally:
        await store.close()


async def test_an_index_of_a_chain_that_is_gone_is_read_anew(devnet: Devnet, pool,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    before = devnet.snapshot()
    devnet.mine(300)  # the old chain runs on: the index remembers blocks up here
    old, old_cursor = await index_once(devnet, pool, tmp_path)
    devnet.revert(before)  # the chain "started again" from an earlier state
    devnet.advance_time(30)  # (new blocks of its own, not the old ones again)
    devnet.open_position(NEWCOMER, "WETH", 10, "USDC", 10_000)
    head = devnet.client.block_number()
    assert head < old_cursor
    accounts, cursor = await index_once(devnet, pool, tmp_path)
    assert cursor <= head
    assert NEWCOMER.lower() in {a.lower() for a in accounts}
    assert old <= accounts  # the state's own borrowers found again
