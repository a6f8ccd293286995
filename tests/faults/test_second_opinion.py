"""A second opinion before signing (#28 item 6): one endpoint that lies can make a liquidation
look good — its simulation says it succeeds — and every send of it burns gas. With two
endpoints configured, each liquidation is simulated on the second as well, at the block it was
planned on: what the second sees revert is not sent.

The liar here answers every `liquidationCall` simulation with success, while on the chain the
keeper's USDC allowance to the pool is gone (set to zero in the token's storage): every
liquidation repaying USDC reverts for real, the others succeed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth_utils import function_signature_to_4byte_selector

from keeperd.chain.rpc import RpcPool
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.allowances import AllowanceOverrides
from keeperd.metrics import Metrics
from tests.conftest import metric_series
from tests.faults.chaos_proxy import ChaosProxy
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    config_for,
    crash_and_collect,
    fund_keeper,
    keeper_key_env,
)

LIQUIDATION_CALL = "0x" + function_signature_to_4byte_selector(
    "liquidationCall(address,address,address,uint256,bool)").hex()


async def revoke_allowance(devnet: Devnet, symbol: str) -> None:
    token, pool = devnet.manifest["tokens"][symbol], devnet.manifest["aave_v3"]["pool"]
    async with RpcPool.from_urls("devnet", [devnet.manifest["rpc_url"]],
                                 metrics=Metrics()) as rpc:
        found = await AllowanceOverrides(rpc).override(token, KEEPER, pool)
    assert found is not None
    [slot] = found[token]["stateDiff"]
    devnet.client.call("anvil_setStorageAt", token, slot, "0x" + "00" * 32)


async def keeper_with_second(devnet: Devnet, tmp_path: Path, run_daemon: Any,
                             second: ChaosProxy) -> Any:
    """A funded keeper in liquidate mode whose second endpoint is `second` (a chaos proxy in
    front of the devnet), having evaluated the head."""
    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         rpc_urls=[devnet.manifest["rpc_url"], second.url],
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.client.block_number())
    return keeper


async def crash_sent_and_mined(devnet: Devnet, keeper: Any) -> tuple[J.Journal,
                                                                     list[J.JournalEntry]]:
    """A crash's block evaluated with automine off, what keeperd sent for it mined, and the
    next block evaluated: (the journal, what was sent)."""
    devnet.client.call("evm_setAutomine", False)
    try:
        _, journal, sent = await crash_and_collect(devnet, keeper)
        devnet.mine(1)
    finally:
        devnet.client.call("evm_setAutomine", True)
    await keeper.evaluated_at(devnet.mine(1))
    return journal, sent


@pytest.mark.parametrize("second_opinion", [True, False], ids=["second-opinion", "without"])
async def test_a_lying_simulation_is_not_sent_when_a_second_endpoint_sees_it_revert(
        devnet: Devnet, tmp_path: Path, run_daemon, second_opinion: bool) -> None:
    fund_keeper(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        config = config_for(devnet, tmp_path, "liquidate",
                            rpc_urls=[liar.url, devnet.manifest["rpc_url"]],
                            key={"source": "env", "env": "KEEPER_KEY"},
                            second_opinion=second_opinion, revert_breaker_reverts=1_000)
        keeper = await run_daemon(config)
        await keeper.evaluated_at(devnet.client.block_number())
        await revoke_allowance(devnet, "USDC")
        liar.call_lies[LIQUIDATION_CALL] = "0x"  # "it succeeds", whatever the chain says
        # The revoked allowance is this test's device for a liquidation that reverts on
        # chain; the capital stage would hold those liquidations for an approval (it reads
        # each spender's allowance, through a multicall the liar passes on): told there is
        # no spender, it plans them on the balance, as before that check.
        keeper.daemon.executors["aave"].liquidator.spender = lambda asset: None
        journal, sent = await crash_sent_and_mined(devnet, keeper)
        refused = metric_series(keeper.daemon.metrics, "keeperd_liquidations_total",
                                {"chain": "devnet", "protocol": "aave",
                                 "stage": "second_opinion_refused"})
    assert liar.faulted["eth_call"] > 0  # the liar was asked, and lied
    by_debt = {e.debt for e in sent}
    assert by_debt - {"USDC"}, "the crash gave liquidations of other debts to send"
    reverted = await journal.by_status(J.REVERTED)
    if second_opinion:
        # What would revert was never signed; the rest went through.
        assert "USDC" not in by_debt and refused is not None and refused > 0
        assert reverted == []
        assert {e.key for e in sent} <= {e.key for e in await journal.by_status(J.INCLUDED)}
    else:
        # The control: believed, sent, reverted on chain — gas burnt.
        assert "USDC" in by_debt and refused is None  # (never once refused)
        assert {e.debt for e in reverted} == {"USDC"}


async def test_a_second_that_saw_the_plans_block_revert_is_asked_again_at_latest(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The first simulates at "latest", the second at the planned block: a plan of an older
    block (a restart's, a promotion's) met the second's state before what was mined since,
    and 11 sound liquidations were refused as "one of them lies or lags" (a by-hand trial).
    Here the second sees every numbered block as the one before the crash: each refusal is
    asked again at "latest", where the liquidation succeeds, and it goes."""
    async with ChaosProxy(devnet.manifest["rpc_url"]) as second:
        keeper = await keeper_with_second(devnet, tmp_path, run_daemon, second)
        second.numbered_calls_at = devnet.client.block_number()  # (before the crash)
        journal, sent = await crash_sent_and_mined(devnet, keeper)
        refused = metric_series(keeper.daemon.metrics, "keeperd_liquidations_total",
                                {"chain": "devnet", "protocol": "aave",
                                 "stage": "second_opinion_refused"})
    assert second.faulted["eth_call"] > 0  # the second was asked at the plan's block
    assert len(sent) > 20 and refused is None
    assert await journal.by_status(J.REVERTED) == []


@pytest.mark.slow
async def test_a_hanging_second_endpoint_does_not_hold_the_liquidations(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The second opinion was awaited with the first: a backup that hangs on calls (its
    heads still fresh, so not benched) held every liquidation its 10 s request timeout (a
    trial: block-to-broadcast 11,037 ms). It gets SECOND_OPINION_GRACE_S once the first has
    answered, then the first's verdict stands, counted as unavailable."""
    from keeperd.execution.executor import SECOND_OPINION_GRACE_S
    from tests.faults.chaos_proxy import Fault

    async with ChaosProxy(devnet.manifest["rpc_url"]) as backup:
        keeper = await keeper_with_second(devnet, tmp_path, run_daemon, backup)
        backup.faults["eth_call"] = Fault.hang()
        backup.faults["eth_simulateV1"] = Fault.hang()
        journal, sent = await crash_sent_and_mined(devnet, keeper)
        metrics = keeper.daemon.metrics
        unavailable = metric_series(metrics, "keeperd_liquidations_total", {
            "chain": "devnet", "protocol": "aave", "stage": "second_opinion_unavailable"})
        waits = metric_series(metrics, "keeperd_block_to_broadcast_seconds_sum",
                              {"chain": "devnet", "protocol": "aave"})
        count = metric_series(metrics, "keeperd_block_to_broadcast_seconds_count",
                              {"chain": "devnet", "protocol": "aave"})
    assert len(sent) > 10 and unavailable is not None and unavailable > 0
    assert {e.key for e in sent} <= {e.key for e in await journal.by_status(J.INCLUDED)}
    # (each wave waits the grace once, not the 10 s request timeout)
    assert SECOND_OPINION_GRACE_S < 1.0
    assert waits is not None and count and waits / count < 3.0, waits / count
