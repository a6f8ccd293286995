"""One position, one liquidation in flight (a by-hand trial: a devnet started again under an
old state directory). A liquidation tracked again after a restart or a reorg, signed for a
position that has since changed on this chain, used to leave the position open to a second
plan under its new version: both were sent, and one reverted (nine in the trial, and the
revert breaker paused the protocol). Now the new plan waits while the first is in flight, and
the first is cancelled unless mined first, not replaced with its old amounts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.conftest import metric_value
from tests.faults.invariants import keeper_liquidations
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    crash_and_collect,
    keeper_key_env,
    liquidating,
)

BORROWER_TOPIC = 3  # LiquidationCall(collateral, debt, user, ...): the user is topic 3


def supply(devnet: Devnet, user: str, symbol: str, units: int) -> None:
    """`user` supplies `units` more of `symbol` (anvil impersonates it)."""
    from keeperd.devnet import contracts

    token, pool = devnet.manifest["tokens"][symbol], devnet.manifest["aave_v3"]["pool"]
    token_art, pool_art = contracts.aave("MintableERC20"), contracts.aave("Pool")
    devnet.client.send(user, token, token_art.encode_call("mint", user, units))
    devnet.client.send(user, token, token_art.encode_call("approve", pool, units))
    devnet.client.send(user, pool, pool_art.encode_call("supply", token, units, user, 0))


async def stopped_after_a_wave(devnet: Devnet, tmp_path: Path, run_daemon  # type: ignore[no-untyped-def]
                               ) -> tuple[Any, int, list[J.JournalEntry]]:
    """A liquidating keeperd, automine off (the caller turns it back on): a crash's wave sent,
    not mined, and keeperd stopped. (config, the crash block, what it sent)."""
    config, keeper = await liquidating(devnet, tmp_path, run_daemon)
    devnet.client.call("evm_setAutomine", False)
    crash, _, sent = await crash_and_collect(devnet, keeper)
    assert sent
    keeper.stop.set()
    await asyncio.wait_for(keeper.task, 15)
    return config, crash, sent


async def test_a_position_changed_under_a_resumed_liquidation_is_liquidated_once_at_a_time(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    try:
        config, crash, sent = await stopped_after_a_wave(devnet, tmp_path, run_daemon)
        # While keeperd is down the wave leaves the node's pool (as on a chain started again
        # from its state), and one borrower changes the position it was signed for: more
        # collateral, still under water at the crash's price.
        devnet.client.call("anvil_removePoolTransactions", KEEPER)
        tokens = devnet.manifest["tokens"]

        def symbol(asset: str) -> str:  # (the journal names an asset by symbol or address)
            return next((s for s, t in tokens.items()
                         if asset.lower() in (s.lower(), t.lower())), asset)

        borrower = next(e for e in sent if symbol(e.collateral) == "WETH").account
        devnet.client.call("evm_setAutomine", True)  # (its transactions, a block each)
        supply(devnet, borrower, "WETH", 10**15)
        devnet.client.call("evm_setAutomine", False)
        assert devnet.account_data(borrower)[5] < 10**18  # (still under water)
        # keeperd starts again: the wave is tracked again (sent again: it still succeeds; and
        # lost again, as a node's pool may), and the position plans under its new version.
        keeper = await run_daemon(config)
        journal = keeper.daemon.executors["aave"].journal
        devnet.client.call("anvil_removePoolTransactions", KEEPER)
        for _ in range(12):
            await keeper.evaluated_at(devnet.mine(1))
            if not await journal.by_status(J.PENDING) \
                    and not keeper.daemon.executors["aave"].tx.pending:
                break
        # (the guard is what held the new plan back: not a timing that happened to)
        assert (metric_value(keeper.daemon.metrics, "keeperd_liquidations_total", {
            "chain": "devnet", "protocol": "aave", "stage": "skipped_in_flight"}) or 0) >= 1
    finally:
        devnet.client.call("evm_setAutomine", True)
    ours = keeper_liquidations(devnet, crash)
    blocks = [e["blockNumber"] for e in ours
              if e["topics"][BORROWER_TOPIC][-40:].lower() == borrower[2:].lower()]
    assert blocks and len(blocks) == len(set(blocks)), blocks  # never two in one block
    assert await journal.by_status(J.REVERTED) == []


async def test_inclusions_settled_at_a_start_are_net_of_their_gas(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """A wave mined while keeperd was down is settled at its next start, before any block is
    evaluated: no prices yet, and each inclusion was booked without its gas (the P&L over by
    the gas, the gas counter without them: a by-hand trial), its profit valued without a
    book. Now both are booked at the first evaluated block: the counter has the gas, and the
    journal's profit, which `keeperd status` sums, is the metrics' profit less their loss."""
    try:
        config, _, sent = await stopped_after_a_wave(devnet, tmp_path, run_daemon)
        devnet.mine(1)  # the wave is mined while keeperd is down
        keeper = await run_daemon(config)  # settles it at its start
        journal = keeper.daemon.executors["aave"].journal
        await keeper.evaluated_at(devnet.mine(1))
    finally:
        devnet.client.call("evm_setAutomine", True)
    included = [e for e in await journal.all() if e.status == J.INCLUDED]
    assert {e.key for e in included} >= {e.key for e in sent}
    native_usd = devnet.price("WETH")
    gas_usd = 0.0
    for e in included:
        tx = e.detail.split("tx=")[1].split()[0]
        receipt = devnet.client.call("eth_getTransactionReceipt", tx)
        gas_usd += (int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
                    / 1e18 * native_usd)
        assert f"profit_usd={e.realised_profit_usd:.2f}" in e.detail  # (one figure)
        # (its profit valued at the first book's prices: with no book it read 0, less gas)
        assert e.realised_profit_usd > 0
    labels = {"chain": "devnet", "protocol": "aave"}
    metrics = keeper.daemon.metrics
    assert gas_usd > 0
    assert metric_value(metrics, "keeperd_liquidation_gas_cost_usd_total", labels) == \
        pytest.approx(gas_usd, rel=1e-9)
    net = (metric_value(metrics, "keeperd_liquidation_profit_usd_total", labels)
           - metric_value(metrics, "keeperd_liquidation_loss_usd_total", labels))
    assert sum(e.realised_profit_usd for e in included) == pytest.approx(net, abs=0.01)
