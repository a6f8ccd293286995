"""#17: a reorg deeper than the block source's window. The source knows only its recent
blocks, so it reports the oldest one it remembers as the ancestor; the account index used to
trust that and kept what it had indexed from the old branch below it — a borrower who never
existed on the chain now, watched for ever. Now the index checks its stored block hashes at
and below the reported ancestor against the chain and rewinds to the true one."""

from __future__ import annotations

from pathlib import Path

from keeperd.chain.blocks import BlockSource, Reorg
from keeperd.chain.rpc import RpcPool
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.storage.account_index import IndexStore
from tests.faults.invariants import assert_index_complete
from tests.integration.test_aave_adapter import make_adapter
from tests.keeper_harness import keeper_key_env  # noqa: F401 - fixture

NEWCOMER = "0x000000000000000000000000000000000000bEEF"
WINDOW = 4


async def test_a_reorg_deeper_than_the_window_drops_what_the_old_branch_brought(
        devnet: Devnet, pool: RpcPool, tmp_path: Path) -> None:
    store = await IndexStore.open(tmp_path)
    adapter = make_adapter(devnet, pool, store, Metrics())
    await adapter.start()
    source = BlockSource(pool, window=WINDOW)
    reorgs: list[Reorg] = []

    async def on(event: object) -> None:
        if isinstance(event, Reorg):
            reorgs.append(event)
            await adapter.on_reorg(event.ancestor.number)

    source.subscribe(on)

    async def follow() -> None:  # (every block: its hash stored, as keeperd does)
        await source.poll_once()
        await adapter.discover(devnet.client.block_number())

    await follow()
    fork = devnet.client.block_number()
    snap = devnet.snapshot()
    devnet.open_position(NEWCOMER, "WETH", 1.0, "USDC", 1000.0)
    await follow()
    for _ in range(2 * WINDOW):  # the newcomer's block falls off the window
        devnet.mine(1)
        await follow()
    assert NEWCOMER in adapter.accounts

    devnet.revert(snap)
    devnet.advance_time(30, mine=False)
    devnet.mine(3 * WINDOW)  # a longer branch without the newcomer
    await follow()
    [reorg] = reorgs
    assert reorg.ancestor.number > fork  # the source could not know the true ancestor
    assert NEWCOMER not in adapter.accounts
    assert adapter.indexer is not None
    assert NEWCOMER not in await store.accounts("aave")
    head = devnet.client.block_number()
    await store.close()
    await assert_index_complete(devnet, tmp_path, "aave", head)


async def test_a_reorg_deeper_than_the_window_rechecks_the_journals_inclusions(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """(A by-hand trial: the liquidations of a crash below the reported ancestor stayed
    `included` on a chain that did not have them, and their accounts, under water again, were
    skipped as journaled.) After a reorg deeper than the remembered blocks every recent
    inclusion is checked against the chain, as at a restart: none stays included without its
    receipt."""
    from keeperd.execution import journal as J
    from tests.keeper_harness import config_for, fund_keeper

    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.client.block_number())
    snap = devnet.snapshot()
    devnet.set_price("WETH", 2100.0)
    journal = keeper.daemon.executors["aave"].journal
    for _ in range(10):
        await keeper.evaluated_at(devnet.mine(1))
        if len(await journal.by_status(J.INCLUDED)) > 20:
            break
    included = await journal.by_status(J.INCLUDED)
    assert len(included) > 20
    for _ in range(7):  # the crash falls out of the window (128 blocks remembered)
        await keeper.evaluated_at(devnet.mine(20))
    devnet.revert(snap)  # a branch from before the crash, longer: none of them on it
    devnet.advance_time(30, mine=False)
    devnet.mine(200)  # (past the old head: the new branch is the longer)

    def on_chain(tx_hash: str) -> bool:
        return devnet.client.call("eth_getTransactionReceipt", tx_hash) is not None

    async def included_off_chain() -> list[str]:
        return [e.key for e in await journal.by_status(J.INCLUDED)
                if not any(on_chain(t.tx_hash) for t in await journal.txs(e.key))]

    for _ in range(20):  # (the reorg's checks run beside the blocks' evaluation)
        await keeper.evaluated_at(devnet.mine(1))
        if not await included_off_chain():
            break
    assert await included_off_chain() == []
