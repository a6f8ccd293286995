"""Perp Curie: what the keeper takes over it must be able to unwind. An unwind that cannot go
(the market's pool has no liquidity at the price, a slippage guard) holds new takeovers in
that market, told as `liquidations_held` with the position and what to do: a by-hand trial's
keeper grew its vETH from 1,271 to 1,314 through 22 failed unwinds, and no alert fired."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog

from keeperd.config import parse_config
from keeperd.devnet.curie import DEADLINE, artifact
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.alert_fakes import Webhook
from tests.conftest import metric_value
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


async def mined_until_unwound(devnet: Devnet, keeper: Any, blocks: int) -> None:
    """Blocks mined, each evaluated, until the keeper holds no vETH and nothing of its is
    pending (at most `blocks`); it must get there."""
    executor = keeper.daemon.executors["curie"]
    for _ in range(blocks):
        await keeper.evaluated_at(devnet.mine(1), protocol="curie")
        if keepers_size(devnet, "WETH") == 0 and not await executor.journal.by_status(
                J.PENDING):
            break
    assert keepers_size(devnet, "WETH") == 0


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
    await mined_until_unwound(devnet, keeper, 30)
    taken = len([e for e in await executor.journal.all() if ":unwind:" not in e.key])
    assert taken, "no takeover in the first drop"
    # The maker leaves vETH's pool; the index falls on: more traders go under.
    withdraw_the_makers_liquidity(devnet, "WETH")
    with structlog.testing.capture_logs() as logs:
        # (15 %: at 10 % the one trader it put under stood at health 0.97, and funding since
        # the first drop left it above 1 in half the runs — no takeover, nothing to unwind)
        devnet.set_price("WETH", devnet.price("WETH") * 0.85)
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
    # In the gauge and in status too (the alert said critical while both said nothing: a
    # by-hand trial)
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_held",
                        {"chain": "devnet", "protocol": "curie"}) == 1
    assert "curie: liquidations held (" in keeper.daemon._status_line()
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
    # (its unwinds are follow-ups, never told: marked so at the start, or they came back at
    # every start and, past the query's limit, kept real outcomes out — a review)
    assert await again.daemon.executors["curie"].journal.untold(
        "curie", "profit_usd=pending") == []
    devnet.set_price("WETH", devnet.price("WETH") * 0.9)
    after = []
    for _ in range(5):
        await again.evaluated_at(devnet.mine(1), protocol="curie")
        after.append(keepers_size(devnet, "WETH"))
    assert after == [at_hold] * 5, (at_hold, after)
    assert again.daemon.executors["curie"].liquidator.hold() is not None


def open_keepers_long(devnet: Devnet, usd: float) -> None:
    """The keeper's own long in vETH, bought for `usd` of vUSD on $1M of margin: a position
    it holds at start, as after a takeover (the daemon unwinds it)."""
    from keeperd.devnet.curie import deposit

    curie = devnet.manifest["perp_curie"]
    deposit(devnet.client, KEEPER, curie["settlement_token"], curie["vault"], 1_000_000)
    devnet.client.send(KEEPER, curie["clearing_house"], artifact("ClearingHouse").encode_call(
        "openPosition", (curie["base_tokens"]["WETH"], False, True, int(usd * 10**18), 0,
                         DEADLINE, 0, b"\0" * 32)), gas=3_000_000)


def sell_into_the_pool(devnet: Devnet, to_price: float) -> None:
    """One trade of the arbitrageur's, mined with no chain time passing, that pushes vETH's
    pool down to `to_price` (a sandwich's front leg, a maker's panic): its spot moves, its
    TWAPs and the index (hence the mark, their median) hardly."""
    from keeperd.devnet.curie import sqrt_price_x96

    curie = devnet.manifest["perp_curie"]
    devnet.client.send(curie["arbitrageur"], curie["clearing_house"],
                       artifact("ClearingHouse").encode_call("openPosition", (
                           curie["base_tokens"]["WETH"], True, True, 10**30, 0, DEADLINE,
                           sqrt_price_x96(to_price), b"\0" * 32)), gas=3_000_000)


def unwind_fill_price(devnet: Devnet, tx_hash: str) -> float:
    """What the keeper's unwind sold its vETH at (vUSD a vETH, before the exchange fee),
    from the ClearingHouse's PositionChanged of the keeper in the unwind's receipt."""
    from eth_abi import decode

    from keeperd.chain.multicall import event_topic

    topic = event_topic(
        "PositionChanged(address,address,int256,int256,uint256,int256,int256,uint256)")
    receipt = devnet.client.call("eth_getTransactionReceipt", tx_hash)
    for entry in receipt["logs"]:
        if entry["topics"][0] == topic and entry["topics"][1].endswith(KEEPER[2:].lower()):
            size, notional, *_ = decode(["int256", "int256", "uint256", "int256", "int256",
                                         "uint256"], bytes.fromhex(entry["data"][2:]))
            return abs(notional) / abs(size)
    raise AssertionError(f"no PositionChanged of the keeper in {tx_hash}")


@pytest.mark.slow
async def test_an_unwind_never_fills_beyond_its_bound_from_the_index_and_mark(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """closePosition went with no slippage bound: an unwind sold whatever the pool paid, a
    sandwich's or a panic's price included. Now its price limit is unwind_max_slippage_bps
    (300) under the lower of the index and the mark: the pool's spot 7 % under both, the
    unwind waits (its simulation reverts SPL: no gas), holds the market's takeovers with the
    reason, and goes once the pool is back, never pushing the pool's price under the limit."""
    from keeperd.devnet.curie import walk_mark

    data = funded_curie_keeper(devnet, tmp_path, monkeypatch)
    data["protocols"][0]["unwind_max_slippage_bps"] = 300
    price = devnet.price("WETH")
    open_keepers_long(devnet, 500_000)
    held = keepers_size(devnet, "WETH")
    assert held > 0
    sell_into_the_pool(devnet, price * 0.93)
    keeper = await run_daemon(parse_config(data))
    executor = keeper.daemon.executors["curie"]
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            await keeper.evaluated_at(devnet.mine(1), protocol="curie")
    # Not sold into the pool's 7 %: its simulation reverted on the limit, every block.
    assert keepers_size(devnet, "WETH") == held
    assert not [e for e in await executor.journal.all() if ":unwind:" in e.key]
    deferred = [e["error"] for e in logs if e["event"] == "liquidation.housekeeping_deferred"]
    assert len(deferred) >= 3 and all("SPL" in e for e in deferred), deferred
    hold = executor.liquidator.hold()
    assert hold is not None and "SPL" in hold and "unwind_max_slippage_bps (300 bps)" \
        in hold, hold
    # The pool back at the index: the unwind goes, within its bound.
    await asyncio.to_thread(walk_mark, devnet.client, devnet.manifest, "WETH", price)
    await mined_until_unwound(devnet, keeper, 20)
    unwinds = [e for e in await executor.journal.all() if ":unwind:" in e.key]
    assert unwinds and {e.status for e in unwinds} == {J.INCLUDED}, [
        (e.key, e.status) for e in unwinds]
    for entry in unwinds:  # (one, or a few partial closes: each within the limit)
        mined = [t.tx_hash for t in await executor.journal.txs(entry.key)
                 if devnet.client.call("eth_getTransactionReceipt", t.tx_hash)]
        assert len(mined) == 1
        assert unwind_fill_price(devnet, mined[0]) >= price * 0.97
    assert executor.liquidator.hold() is None


async def test_a_protocol_the_keeper_holds_positions_in_is_not_removed_silently(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keeper's own positions in Curie (its takeovers until unwound) are journaled as
    read; a start whose config no longer has Curie is refused in liquidate mode while it
    holds one (nothing would watch, unwind or tell it: a by-hand trial removed Curie with a
    position held, and the only word was a resolved alert's text), said in another mode, and
    goes once Curie, configured again, read the position closed."""
    from keeperd.daemon import StartupError

    data = funded_curie_keeper(devnet, tmp_path, monkeypatch)
    open_keepers_long(devnet, 200_000)
    dry = {**data, "keeper": {**data["keeper"], "mode": "dry-run"}}
    keeper = await run_daemon(parse_config(dry))
    await keeper.evaluated_at(devnet.mine(1), protocol="curie")
    holdings = await keeper.daemon.executors["curie"].journal.holdings()
    assert list(holdings) == ["curie"] and "vETH (long)" in str(holdings["curie"])
    keeper.stop.set()
    await keeper.task
    from keeperd.status import collect, render

    shown = [line for line in render(collect(parse_config(dry))).splitlines()
             if line.startswith("keeper holds")]
    assert len(shown) == 1 and "curie: " in shown[0] and "vETH (long)" in shown[0], shown
    aave = {"kind": "aave_v3", "name": "aave", "chain": "devnet",
            "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}
    without = {**data, "protocols": [aave]}
    with pytest.raises(StartupError, match=r"`curie`: .*vETH \(long\).*Put `curie` back"):
        await run_daemon(parse_config(without))
    with structlog.testing.capture_logs() as logs:  # (another mode: said, not refused)
        other = await run_daemon(parse_config({**without, "keeper": dry["keeper"]}))
    assert [e for e in logs if e["event"] == "journal.unconfigured_holdings"]
    other.stop.set()
    await other.task
    # Closed by hand; Curie configured once reads it closed; then it may go.
    curie = devnet.manifest["perp_curie"]
    devnet.client.send(KEEPER, curie["clearing_house"], artifact("ClearingHouse").encode_call(
        "closePosition", (curie["base_tokens"]["WETH"], 0, 0, DEADLINE, b"\0" * 32)),
        gas=3_000_000)
    assert keepers_size(devnet, "WETH") == 0
    keeper = await run_daemon(parse_config(dry))
    await keeper.evaluated_at(devnet.mine(1), protocol="curie")
    assert await keeper.daemon.executors["curie"].journal.holdings() == {}
    keeper.stop.set()
    await keeper.task
    assert "keeper holds" not in render(collect(parse_config(dry)))
    again = await run_daemon(parse_config(without))
    again.stop.set()
    await again.task
