"""Perp Curie: what the keeper takes over it must be able to unwind. An unwind that cannot go
(the market's pool has no liquidity at the price, a slippage guard) holds new takeovers in
that market, told as `liquidations_held` with the position and what to do: a by-hand trial's
keeper grew its vETH from 1,271 to 1,314 through 22 failed unwinds, and no alert fired."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from keeperd.config import parse_config
from keeperd.devnet.curie import DEADLINE, artifact
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.alert_fakes import Webhook
from tests.integration.test_curie import chain_view, funded_curie_keeper
from tests.keeper_harness import KEEPER


def withdraw_the_makers_liquidity(devnet: Devnet, symbol: str) -> None:
    """The market maker takes every range it provides out of the market's pool (as makers do
    in a crash): nothing is left to trade against at any price."""
    curie = devnet.manifest["perp_curie"]
    base, maker = curie["base_tokens"][symbol], curie["maker"]
    book, ch = artifact("OrderBook"), artifact("ClearingHouse")
    (ids,) = book.decode_result("getOpenOrderIds", devnet.client.eth_call(
        curie["order_book"], book.encode_call("getOpenOrderIds", maker, base)), 2)
    assert ids
    for order in ids:
        (info,) = book.decode_result("getOpenOrderById", devnet.client.eth_call(
            curie["order_book"], book.encode_call("getOpenOrderById", order)), 1)
        liquidity, lower, upper = info[0], info[1], info[2]
        devnet.client.send(maker, curie["clearing_house"], ch.encode_call(
            "removeLiquidity", (base, lower, upper, liquidity, 0, 0, DEADLINE)),
            gas=3_000_000)


def keepers_size(devnet: Devnet, symbol: str) -> int:
    curie = devnet.manifest["perp_curie"]
    return int(chain_view(devnet, curie["account_balance"], "AccountBalance",
                          "getTakerPositionSize", KEEPER, curie["base_tokens"][symbol]))


@pytest.mark.slow
async def test_takeovers_wait_while_the_keepers_position_cannot_be_unwound(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    data = funded_curie_keeper(devnet, tmp_path, monkeypatch)
    hook = Webhook()
    request.addfinalizer(hook.close)
    data["alerts"] = {
        "routes": [{"name": "ops", "sinks": [
            {"kind": "webhook", "url": hook.url, "secret": "${HOOK_SECRET}"}]}],
        "operator_route": "ops", "outbox": {"backoff_initial_s": 0.1, "backoff_max_s": 0.5}}
    # A first drop, walked: the keeper takes some traders over, and unwinds them.
    keeper = await run_daemon(parse_config(data, env={"HOOK_SECRET": "s" * 32}))
    await asyncio.to_thread(devnet.set_price, "WETH", devnet.price("WETH") * 0.85,
                            walk_perps=True)
    executor = keeper.daemon.executors["curie"]
    for _ in range(30):
        await keeper.evaluated_at(devnet.mine(1), protocol="curie")
        if keepers_size(devnet, "WETH") == 0 and not await executor.journal.by_status(
                J.PENDING):
            break
    assert keepers_size(devnet, "WETH") == 0
    taken = len([e for e in await executor.journal.all() if ":unwind:" not in e.key])
    assert taken, "no takeover in the first drop"
    # The maker leaves vETH's pool; the index falls on: more traders go under.
    withdraw_the_makers_liquidity(devnet, "WETH")
    with structlog.testing.capture_logs() as logs:
        devnet.set_price("WETH", devnet.price("WETH") * 0.9)
        for _ in range(12):  # (until an unwind has failed: simulated, or reverted on chain)
            await keeper.evaluated_at(devnet.mine(1), protocol="curie")
            if executor.liquidator.hold() is not None:
                break
        assert executor.liquidator.hold() is not None, keepers_size(devnet, "WETH")
        for _ in range(2):  # (what was in flight when it learnt it, mined)
            await keeper.evaluated_at(devnet.mine(1), protocol="curie")
        at_hold = keepers_size(devnet, "WETH")
        # The index falls on, and more go under.
        devnet.set_price("WETH", devnet.price("WETH") * 0.85)
        sizes = []
        for _ in range(4):
            await keeper.evaluated_at(devnet.mine(1), protocol="curie")
            sizes.append(keepers_size(devnet, "WETH"))
    # None taken over while its position could not be unwound (the trial's kept adding).
    assert at_hold and sizes == [at_hold] * 4, (at_hold, sizes)
    failed = [e for e in logs if e["event"] == "liquidation.housekeeping_deferred"
              and "CH_PSZ" not in e["error"]] + [
        e for e in logs if e["event"] == "liquidation.housekeeping_settled"
        and e["status"] == "reverted"]
    assert failed
    hold = executor.liquidator.hold()
    assert hold is not None and "cannot be unwound" in hold and "vETH" in hold, hold
    assert [e["event"] for e in logs if e["event"].startswith("curie.takeovers")] == [
        "curie.takeovers_held"]
    # Others stay liquidatable in vETH, and none is taken over while it holds.
    view = keeper.daemon.scanners["curie"].view
    assert view is not None and (view.health < 1).any()
    # Told to the operator: liquidations_held, with the position and what to do.
    for _ in range(50):
        told = [body for _, body in hook.received if body["rule"] == "liquidations_held"]
        if told:
            break
        await asyncio.sleep(0.1)
    assert told and told[0]["status"] == "firing", [b["rule"] for _, b in hook.received]
    assert "cannot be unwound" in told[0]["summary"] and "vETH" in told[0]["summary"]
    # A restart (its hold lived in memory: the first block after it took one more over, and
    # the alert said "resume", a trial): what the keeper holds from before waits for an
    # unwind that passes, and none does here.
    keeper.stop.set()
    await keeper.task
    again = await run_daemon(parse_config(data, env={"HOOK_SECRET": "s" * 32}))
    devnet.set_price("WETH", devnet.price("WETH") * 0.9)
    after = []
    for _ in range(5):
        await again.evaluated_at(devnet.mine(1), protocol="curie")
        after.append(keepers_size(devnet, "WETH"))
    assert after == [at_hold] * 5, (at_hold, after)
    assert again.daemon.executors["curie"].liquidator.hold() is not None
