"""#17 with a running keeper: the node it talks to (through the chaos proxy) loses the answers
to a liquidation wave's broadcast — after it took the transactions, or before — or tells a
far-future head now and then. The crash's liquidations land anyway, each once, and the
suite's invariants hold: no opportunity under two nonces, no nonce shared, nothing left
planned or pending, the account index complete."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.conftest import metric_value
from tests.faults.chaos_proxy import ChaosProxy, Fault
from tests.faults.invariants import assert_index_complete, journal_problems, keeper_liquidations
from tests.keeper_harness import (  # noqa: F401 - fixtures
    Running,
    config_for,
    crash_and_collect,
    fund_keeper,
    keeper_key_env,
)

SETTLED = (J.INCLUDED, J.DROPPED, J.LOST_RACE, J.REVERTED)


async def settle(devnet: Devnet, keeper: Running, limit_s: float = 30) -> dict[str, J.JournalEntry]:
    """Blocks until every journal entry is settled; the entries."""
    journal = keeper.daemon.executors["aave"].journal
    deadline = time.monotonic() + limit_s
    while True:
        await keeper.evaluated_at(devnet.mine(1))
        await asyncio.sleep(0.2)
        entries = {e.key: e for e in await journal.all()}
        if entries and all(e.status in SETTLED for e in entries.values()):
            return entries
        assert time.monotonic() < deadline, {k: e.status for k, e in entries.items()}


async def check_invariants(devnet: Devnet, keeper: Running, entries: dict[str, J.JournalEntry],
                           crash: int) -> None:
    journal = keeper.daemon.executors["aave"].journal
    txs = [(t.key, t.nonce, t.tx_hash) for k in entries for t in await journal.txs(k)]
    assert not journal_problems([(k, e.status) for k, e in entries.items()], txs)
    included = [k for k, e in entries.items() if e.status == J.INCLUDED]
    assert included
    # On chain: exactly one liquidation by the keeper per included opportunity.
    assert len(keeper_liquidations(devnet, crash)) == len(included)


# (kind, times): once — the pool's retry reaches the node, which says it has the bytes
# ("already imported"); every time (every attempt at every batch) — the wave is in doubt,
# tracked and sent again, one by one, at the next block: whether the node had it (the answer
# lost) or not (the connection reset before it saw the request).
LOSSES = {"answer lost after the node took it, once": ("drop_answer", 1),
          "answer lost after the node took it, every time": ("drop_answer", None),
          "connection reset before the node saw it, every time": ("reset", None)}


@pytest.mark.parametrize("loss", LOSSES)
async def test_a_wave_whose_broadcast_answer_is_lost_lands_once(
        devnet: Devnet, tmp_path: Path, run_daemon, loss: str) -> None:
    kind, times = LOSSES[loss]
    fund_keeper(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy:
        keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                             rpc_urls=[proxy.url],
                                             key={"source": "env", "env": "KEEPER_KEY"}))
        await keeper.evaluated_at(devnet.client.block_number())
        # (batches: the wave's broadcast, not the token approvals sent before it)
        proxy.faults["eth_sendRawTransaction"] = Fault(kind, None, times, batches_only=True)
        devnet.client.call("evm_setAutomine", False)
        try:
            crash, _, sent = await crash_and_collect(devnet, keeper)
            assert len(sent) > 5
            assert proxy.faulted["eth_sendRawTransaction"] >= 1
            entries = await settle(devnet, keeper)
        finally:
            devnet.client.call("evm_setAutomine", True)
        if times is None:  # every answer lost: the whole wave was in doubt
            assert metric_value(keeper.daemon.metrics, "keeperd_tx_broadcast_in_doubt_total",
                                {"chain": "devnet"}) >= len(sent)
        else:  # the retry settled it: nothing in doubt (the series never exported)
            assert keeper.daemon.metrics.tx_in_doubt.labels("devnet")._value.get() == 0
        await check_invariants(devnet, keeper, entries, crash)


async def test_a_node_telling_far_future_heads_changes_nothing(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Every third head it is asked for is 10,000 blocks ahead, with a hash no block has:
    each is held (never the tip, never a jump of the index), the real blocks are followed,
    the crash is liquidated."""
    fund_keeper(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy:
        proxy.lie_ahead = 10_000
        keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                             rpc_urls=[proxy.url],
                                             key={"source": "env", "env": "KEEPER_KEY"}))
        await keeper.evaluated_at(devnet.client.block_number())
        devnet.client.call("evm_setAutomine", False)
        try:
            crash, _, sent = await crash_and_collect(devnet, keeper)
            assert len(sent) > 5
            entries = await settle(devnet, keeper)
        finally:
            devnet.client.call("evm_setAutomine", True)
        assert proxy.lies_told >= 3
        head = devnet.client.block_number()
        scanner = keeper.daemon.scanners["aave"]
        assert scanner.completed_block <= head  # never the made-up head
        await check_invariants(devnet, keeper, entries, crash)
    await assert_index_complete(devnet, tmp_path / "state", "aave", crash)


async def test_a_start_pins_its_reads_to_a_head_the_chain_confirms(devnet: Devnet) -> None:
    """What a start pins to one block (the executors' reconciliation, the pool's rules read
    for its approvals) takes a head whose header exists: a made-up far-future number failed
    the start ("block height is 474 but requested was 10474", the fault suite's lying node).
    Asked again while no block has it; none confirmed: unavailable, not a crash elsewhere."""
    from keeperd.chain.blocks import confirmed_head
    from keeperd.chain.rpc import RpcPool, RpcUnavailable

    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy:
        proxy.lie_ahead, proxy.lie_every = 10_000, 2
        async with RpcPool.from_urls("devnet", [proxy.url]) as pool:
            await pool.request("eth_blockNumber")  # (the next head it is asked: a lie)
            head = await confirmed_head(pool)
            assert proxy.lies_told == 1 and head == devnet.client.block_number()
            proxy.lie_every = 1  # every head a lie
            with pytest.raises(RpcUnavailable):
                await confirmed_head(pool)
