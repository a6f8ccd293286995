"""A revert breaker (#28 item 6): an endpoint that lies can make healthy accounts look
liquidatable, and the parity check and the simulation ask the same liar; what is left is the
chain's verdict. Liquidations that revert on chain, several in a short while, pause a
protocol's sending (alert `sending_paused`) instead of burning gas block after block."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.conftest import metric_value
from tests.keeper_harness import (  # noqa: F401 - fixtures
    config_for,
    fund_keeper,
    keeper_key_env,
)


def restore_first(devnet: Devnet, symbol: str, usd: float) -> None:
    """The price back up, queued to be mined before everything else in the next block."""
    for to, data, gas in devnet._price_moves(symbol, usd):
        devnet.client.call("eth_sendTransaction", {
            "from": devnet.manifest["aave_v3"]["admin"], "to": to, "data": "0x" + data.hex(),
            "gas": hex(gas or 200_000), "maxFeePerGas": hex(2_000 * 10**9),
            "maxPriorityFeePerGas": hex(1_000 * 10**9)})


async def test_liquidations_reverting_on_chain_pause_sending(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"},
                                         revert_breaker_reverts=3, revert_breaker_blocks=50))
    await keeper.evaluated_at(devnet.client.block_number())
    before = devnet.manifest["prices_usd"]["WETH"]
    executor = keeper.daemon.executors["aave"]
    labels = {"chain": "devnet", "protocol": "aave"}
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.set_price_async("WETH", 2100.0)
        await keeper.evaluated_at(devnet.mine(1))  # the wave is sent, pending
        sent = await executor.journal.by_status(J.PENDING)
        assert len(sent) >= 3
        restore_first(devnet, "WETH", before)  # the accounts are healthy again first
        await keeper.evaluated_at(devnet.mine(1))
        await keeper.evaluated_at(devnet.mine(1))
        reverted = await executor.journal.by_status(J.REVERTED)
        assert len(reverted) >= 3
        assert executor.send_pause(devnet.client.block_number()) is not None
        # Another crash while paused: evaluated, counted as held, nothing sent.
        held_before = metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                                   {**labels, "stage": "held"})
        devnet.set_price_async("WETH", 2100.0)
        await keeper.evaluated_at(devnet.mine(1))
        assert await executor.journal.by_status(J.PENDING) == []
        assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                            {**labels, "stage": "held"}) > held_before
        total = len(await executor.journal.all())
        assert total == len(sent)  # (not one more journaled while paused)
        # A restart (or a replica's takeover) keeps the pause: its count is the journal's.
        # It lived in memory, and a new leader sent four liquidations into the cause of the
        # old one's (trial 30).
        keeper.stop.set()
        await asyncio.wait_for(keeper.task, 10)
        again = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                            key={"source": "env", "env": "KEEPER_KEY"},
                                            revert_breaker_reverts=3,
                                            revert_breaker_blocks=50))
        await again.evaluated_at(devnet.mine(1))
        assert again.daemon.executors["aave"].send_pause(
            devnet.client.block_number()) is not None
        assert len(await again.daemon.executors["aave"].journal.all()) == total
    finally:
        devnet.client.call("evm_setAutomine", True)


def test_the_gas_spend_cap_pauses_until_the_hour_passes() -> None:
    from types import SimpleNamespace

    from keeperd.chain.rpc import Endpoint, RpcPool
    from keeperd.execution.executor import Executor

    executor = Executor.__new__(Executor)
    executor.config = SimpleNamespace(revert_breaker_blocks=50, revert_breaker_reverts=3,  # type: ignore[assignment]
                                      max_gas_usd_per_hour=100.0)
    executor.adapter = SimpleNamespace(name="aave")  # type: ignore[assignment]
    executor.pool = RpcPool("t", [Endpoint("a", "http://a", None)])  # (no head: uncontested)
    executor._reverts, executor._pause_reason = [], None
    executor._pause_kind = (None, None)
    executor._revert_counted, executor._losses = {}, []
    executor._last_revert_reason = None
    executor._gas_spent = [(1_000.0, 60.0), (2_000.0, 45.0)]
    assert "max_gas_usd_per_hour" in (executor.send_pause(10, now=2_100.0) or "")
    assert executor.send_pause(10, now=4_650.0) is None  # the first spend is an hour old
    executor._reverts = [5, 6, 7]
    assert "3 liquidations reverted" in (executor.send_pause(10, now=4_650.0) or "")
    assert executor.send_pause(57, now=4_650.0) is None  # 50 blocks since the last


def test_a_contested_head_pauses_sending_and_approvals() -> None:
    """The head followed being one endpoint's word against two others (`RpcPool.contested`:
    a liar past a halted chain, test_rpc_pool) pauses the protocol's sending, told as
    sending_paused, and holds approvals and deposits: the balances they are sized by, and
    the simulations the sends rest on, would be that endpoint's word alone."""
    from types import SimpleNamespace

    import structlog

    from keeperd.execution.executor import Executor
    from keeperd.execution.txmanager import CONTESTED_ACTION, TxManager
    from keeperd.metrics import Metrics

    why = "the head followed (block 130) is one endpoint's word (http://c): ..."
    contested = SimpleNamespace(contested=lambda: why)
    executor = Executor.__new__(Executor)
    executor.config = SimpleNamespace(revert_breaker_blocks=50, revert_breaker_reverts=3,  # type: ignore[assignment]
                                      max_gas_usd_per_hour=None)
    executor.adapter = SimpleNamespace(name="aave")  # type: ignore[assignment]
    executor.pool = contested  # type: ignore[assignment]
    executor._reverts, executor._pause_reason = [], None
    executor._pause_kind = (None, None)
    executor._revert_counted, executor._losses = {}, []
    executor._last_revert_reason = None
    executor._gas_spent = []
    assert executor.send_pause(10) == why
    with structlog.testing.capture_logs() as logs:  # (its heads move every block: said once)
        for head in range(131, 140):
            contested.contested = lambda head=head: why.replace("130", str(head))
            assert executor.send_pause(head) == why.replace("130", str(head))
        contested.contested = lambda: None
        assert executor.send_pause(140) is None
    assert [e["event"] for e in logs] == ["liquidation.sending_resumed"]
    # (what it was paused for is said as that, not as a reason: it read as still paused)
    assert "reason" not in logs[0] and "139" in logs[0]["paused_for"]
    contested.contested = lambda: why
    tx = TxManager(contested, SimpleNamespace(address="0x" + "11" * 20), 31337,  # type: ignore[arg-type]
                   metrics=Metrics())
    held = tx.upkeep_hold(10)
    assert held is not None and held.reason == why and held.action == CONTESTED_ACTION
    assert tx.key_alert(10) is None  # (not the key's trouble: told as sending_paused)


async def test_no_follow_up_goes_while_the_head_is_contested() -> None:
    """Curie's unwinds (the keeper's follow-ups) wait while the head is one endpoint's word:
    an unwind's price bound is read from that endpoint's mark and index, and its simulation
    run on it (a review). Asked again at each block; planned once the head is agreed."""
    from types import SimpleNamespace

    from keeperd.execution.executor import Executor

    asked: list[int] = []

    class Liquidator:
        async def housekeeping(self, result: object, trust: object = None,
                               due: object = None) -> list[object]:
            asked.append(result.block)  # type: ignore[attr-defined]
            return []

    executor = Executor.__new__(Executor)
    executor.config = SimpleNamespace(mode="liquidate")  # type: ignore[assignment]
    executor.keeper = "0x" + "11" * 20
    executor.liquidator = Liquidator()  # type: ignore[assignment]

    async def slot_free_at(block: int) -> bool:
        return True

    executor.tx = SimpleNamespace(signing_held=lambda: None,  # type: ignore[assignment]
                                  unknown_wait=lambda block: False, slot_free_at=slot_free_at)
    why: list[str | None] = ["the head followed (block 130) is one endpoint's word"]
    executor.pool = SimpleNamespace(contested=lambda: why[0])  # type: ignore[assignment]
    await executor._housekeep(SimpleNamespace(block=130))  # type: ignore[arg-type]
    assert asked == []
    why[0] = None
    await executor._housekeep(SimpleNamespace(block=131))  # type: ignore[arg-type]
    assert asked == [131]


async def test_a_revert_of_keeperds_own_sale_guard_is_taken_back_from_the_breaker() -> None:
    """Three flash liquidations through one pool in one block, each simulated alone: the
    later ones' sales paid less than the guard allows once the first moved the pool, and
    reverted (SwapBelowBound, gas only). Counted, they paused 49 sound liquidations for 50
    blocks (a by-hand trial). Once its reason is read, a revert of keeperd's own guard is
    taken back; one nobody explains (the pool's own refusal) still counts."""
    from keeperd.execution.executor import Executor
    from keeperd.execution.txmanager import Outcome
    from keeperd.protocols.sdk.keys import OpportunityKey

    class Journal:
        async def get(self, key: object) -> None:
            return None

    executor = Executor.__new__(Executor)
    executor.journal = Journal()  # type: ignore[assignment]
    executor._to_trace = []
    executor._reverts, executor._last_revert_reason = [100, 100, 101], None
    executor._revert_counted = {"0xa": 100, "0xb": 100, "0xc": 101}

    def reverted(tx: str) -> Outcome:
        return Outcome(OpportunityKey("aave", "0x" + tx[-1] * 40, ("WBTC", "USDC"), "1"),
                       "reverted", tx)

    await executor._put_down_reasons([
        (reverted("0xa"), 0, "SwapBelowBound(1000, 990) in 0xFlashLiquidator"),
        (reverted("0xb"), 0, "NotEnoughProfit(5, 7) in 0xFlashLiquidator"),
        (reverted("0xc"), 0, "HealthFactorNotBelowThreshold in 0xPool")])
    assert executor._reverts == [101]
    assert executor._last_revert_reason == "HealthFactorNotBelowThreshold in 0xPool"
    assert executor._revert_counted == {}
