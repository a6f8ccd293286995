"""What only today's Aave (v3.6) has, on its devnet: price sources that answer latestAnswer()
only, liquidation grace periods, paused reserves. keeperd must read the first as they are and
never send a liquidation the second and third make revert."""

from __future__ import annotations

from pathlib import Path

import structlog

from keeperd.chain.multicall import Multicall
from keeperd.chain.rpc import RpcPool
from keeperd.devnet import aave_origin
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.oracles.chainlink import read_feeds
from keeperd.oracles.checks import FeedPolicy, check_feed
from keeperd.protocols.aave_v3.adapter import oracle_feeds
from keeperd.protocols.aave_v3.reader import AaveV3Reader
from tests.chain_amounts import (
    assert_amounts_as_planned,
    frozen_clock,
    mine_at,
    sent_from_journal,
)
from tests.integration.test_breaker import block_time
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    chain_health,
    config_for,
    fund_keeper,
    keeper_key_env,
)


def simulated_pairs(keeper, protocol: str = "aave") -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(collateral, debt) of every liquidation keeperd simulates from now on: what it
    *tried*, whether or not the simulation passed. (Counting failed simulations instead would
    also count anvil's: a call racing a block anvil is mining — the keeper's own wave being
    automined — can fail once and pass a block later.)"""
    executor = keeper.daemon.executors[protocol]
    tried: list[tuple[str, str]] = []
    simulate = executor._simulate

    async def recording(wave, *rest):  # type: ignore[no-untyped-def]
        tried.extend((call.opportunity.collateral, call.opportunity.debt) for call, _ in wave)
        return await simulate(wave, *rest)

    executor._simulate = recording
    return tried


def configure(devnet: Devnet, fn: str, *args: object) -> None:
    cfg = aave_origin.artifact("PoolConfiguratorInstance")
    aave = devnet.manifest["aave_v3"]
    devnet.client.send(aave["admin"], aave["pool_configurator"], cfg.encode_call(fn, *args))


async def test_adapter_sources_are_read_and_timed_by_the_feeds_they_wrap(
        devnet: Devnet, pool: RpcPool) -> None:
    m = devnet.manifest
    reader = await AaveV3Reader.resolve(Multicall(pool, address=m["multicall3"]),
                                        m["aave_v3"]["addresses_provider"])
    head = devnet.client.block_number()
    market = await reader.read_market(head)
    feeds = await oracle_feeds(reader.multicall, reader.addresses.oracle, market.reserves, head)
    readings = {r.asset: r for r in await read_feeds(reader.multicall, feeds, head)}
    sources = m["aave_v3"]["oracle_sources"]
    assert {s: r.freshness for s, r in readings.items()} == {
        s: "round" if v["kind"] == "chainlink" else "wrapped" for s, v in sources.items()}
    now = block_time(devnet)
    for symbol, reading in readings.items():
        # The answer is the oracle's price; the age is that of the aggregators behind it.
        assert reading.answer == market.prices[market.column(symbol)], symbol
        assert check_feed(reading, now, FeedPolicy()) == [], symbol
    assert market.price_links == {"wstETH": "WETH"}
    # BTC / USD goes stale: WBTC, priced through it, is stale too (the adapter has no time).
    devnet.set_price_at("WBTC", 60_000.0, now - 7200)
    head = devnet.client.block_number()
    wbtc = next(r for r in await read_feeds(reader.multicall, feeds, head)
                if r.asset == "WBTC")
    assert [p.kind for p in check_feed(wbtc, block_time(devnet), FeedPolicy())] == ["stale"]


async def test_a_grace_period_holds_liquidations_until_it_ends(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    configure(devnet, "setReservePause", devnet.manifest["tokens"]["WETH"], False, 600)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    tried = simulated_pairs(keeper)
    await keeper.evaluated_at(devnet.client.block_number())
    # The clock frozen from the crash on: the other pairs' liquidations of the crash are
    # automined each in a block of its own, and one crossing a second of wall time accrued
    # interest over its plan (4 units of debt, seen in CI). Frozen through the jump past the
    # grace period, which is the frozen clock's one step: a liquidation planned on the jump's
    # block and automined before the clock froze accrued interest in between (13 units, seen
    # once).
    with frozen_clock(devnet):
        with structlog.testing.capture_logs() as logs:
            devnet.set_price("WETH", 2100.0)
            await keeper.evaluated_at(devnet.mine(1))
        [held] = [e for e in logs if e["event"] == "liquidation.held_by_protocol"]
        assert [r.split(" until ")[0] for r in held["reasons"]] == [
            "reserve WETH in its liquidation grace period"], held
        weth_users = [b["address"] for b in devnet.manifest["borrowers"]
                      if "WETH" in b["collateral"] or "WETH" in b["debts"]]
        underwater = [a for a in weth_users if chain_health(devnet, a) < 1]
        assert len(underwater) > 20
        journal = keeper.daemon.executors["aave"].journal
        assert not [e for e in await journal.all() if "WETH" in (e.collateral, e.debt)]
        # Not even simulated: the plan knows the grace period (a simulation would revert).
        assert not [pair for pair in tried if "WETH" in pair]
        # A few blocks: the keeper's own transactions are automined while it simulates its
        # next wave, and anvil answers a call racing the block it mines from a mix of two
        # blocks (a simulation fails once and passes a block later; real nodes do not do
        # this). Each lands on the state it was planned on.
        await keeper.evaluated_at(mine_at(devnet, block_time(devnet) + 601))
        for _ in range(5):
            await keeper.evaluated_at(devnet.mine(1))
            liquidated = {e.account for e in await journal.by_status(J.INCLUDED)}
            if len(liquidated & set(underwater)) >= 0.95 * len(underwater):
                break
    assert len(liquidated & set(underwater)) >= 0.95 * len(underwater)
    assert await journal.by_status(J.REVERTED) == []
    assert_amounts_as_planned(devnet, await sent_from_journal(journal), len(liquidated))


async def test_a_paused_reserve_is_left_alone_and_the_rest_liquidated(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    configure(devnet, "setReservePause", devnet.manifest["tokens"]["USDC"], True)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    tried = simulated_pairs(keeper)
    await keeper.evaluated_at(devnet.client.block_number())
    with frozen_clock(devnet), structlog.testing.capture_logs() as logs:
        devnet.set_price("WETH", 2100.0)
        await keeper.evaluated_at(devnet.mine(1))
        await keeper.evaluated_at(devnet.mine(1))
    # Said, with how many (they were skipped with no word, a by-hand trial), once.
    [held] = [e for e in logs if e["event"] == "liquidation.held_by_protocol"]
    assert list(held["reasons"]) == ["reserve USDC paused"] and held["accounts"] > 5
    journal = keeper.daemon.executors["aave"].journal
    included = await journal.by_status(J.INCLUDED)
    assert len(included) > 10
    assert_amounts_as_planned(devnet, await sent_from_journal(journal), len(included))
    assert not [e for e in await journal.all() if "USDC" in (e.collateral, e.debt)]
    assert await journal.by_status(J.REVERTED) == []
    assert tried and not [pair for pair in tried if "USDC" in pair]  # not even tried
    # Accounts owing DAI or USDT (not USDC) were liquidated.
    assert {e.debt for e in included} & {"DAI", "USDT"}


async def test_collateral_the_reserve_cannot_pay_out_is_taken_as_atokens(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Utilisation near 100 %: the WETH reserve's virtual balance is smaller than what a
    liquidation seizes, so the underlying cannot be paid out (v3.1+). keeperd asks for aWETH
    instead (receiveAToken) and the liquidation goes through."""
    from keeperd.devnet import contracts

    m = devnet.manifest
    pool_art, token = aave_origin.artifact("PoolInstance"), contracts.aave("MintableERC20")
    weth, usdc = m["tokens"]["WETH"], m["tokens"]["USDC"]
    (available,) = pool_art.decode_result("getVirtualUnderlyingBalance", devnet.client.eth_call(
        m["aave_v3"]["pool"], pool_art.encode_call("getVirtualUnderlyingBalance", weth)))
    drainer = "0x00000000000000000000000000000000d7a1e700"
    devnet.client.call("anvil_setBalance", drainer, hex(10**19))
    collateral = int(available / 10**18 * 3000 * 2) * 10**6  # USDC worth twice the WETH
    devnet.client.send(drainer, usdc, token.encode_call("mint", drainer, collateral))
    devnet.client.send(drainer, usdc, token.encode_call("approve", m["aave_v3"]["pool"],
                                                        collateral))
    devnet.client.send(drainer, m["aave_v3"]["pool"], pool_art.encode_call(
        "supply", usdc, collateral, drainer, 0))
    left = 10**17  # 0.1 WETH stays in the reserve
    devnet.client.send(drainer, m["aave_v3"]["pool"], pool_art.encode_call(
        "borrow", weth, available - left, 2, 0, drainer))

    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.client.block_number())
    with frozen_clock(devnet):
        devnet.set_price("WETH", 2100.0)
        await keeper.evaluated_at(devnet.mine(1))
        await keeper.evaluated_at(devnet.mine(1))
    journal = keeper.daemon.executors["aave"].journal
    weth_seized = [e for e in await journal.by_status(J.INCLUDED) if e.collateral == "WETH"]
    assert len(weth_seized) > 5
    # (taken as aTokens or not, the pool seized what the plan said)
    assert_amounts_as_planned(devnet, await sent_from_journal(journal), len(weth_seized))
    assert await journal.by_status(J.REVERTED) == []
    a_weth = m["aave_v3"]["reserves"]["WETH"]["a_token"]
    (held,) = token.decode_result("balanceOf", devnet.client.eth_call(
        a_weth, token.encode_call("balanceOf", KEEPER)))
    assert held > left  # more than the reserve could have paid out in WETH
