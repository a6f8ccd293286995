"""#29 item 2: one price watch per chain, for every protocol. A stale feed on one chain pauses
that chain's liquidations only; a Morpho market whose own oracle disagrees with the reference
prices of its two assets pauses that market; a daemon with Morpho alone has a working breaker."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keeperd.config import parse_config
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.protocols.morpho_blue.book import market_key
from tests.conftest import _isolated, metric_series, metric_value
from tests.integration.test_breaker import block_time
from tests.integration.test_morpho import drop_oracle, fund, morpho_config
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    KEEPER_KEY,
    aave_and_morpho_config,
    fund_keeper,
    keeper_key_env,
)


@pytest.fixture
def other_chain(devnet_v30_session: Devnet, request: pytest.FixtureRequest
                ) -> Iterator[Devnet]:
    """A second chain: the Aave v3.0 devnet, a node of its own, under chain id 31338 while
    the test runs (two chains never share an id: keeperd refuses one configured twice)."""
    for other in _isolated(devnet_v30_session, request):
        other.client.call("anvil_setChainId", OTHER_CHAIN_ID)
        try:
            yield other
        finally:
            with contextlib.suppress(Exception):  # (a dead anvil restarts with its own)
                other.client.call("anvil_setChainId", 31337)


OTHER_CHAIN_ID = 31338


def aave_on(name: str, devnet: Devnet, chain_id: int = 31337
            ) -> tuple[dict[str, object], dict[str, object]]:
    chain = {"name": name, "chain_id": chain_id, "rpc_urls": [devnet.manifest["rpc_url"]],
             "confirmations": 0, "poll_interval": 0.1}
    protocol = {"kind": "aave_v3", "name": f"aave-{name}", "chain": name,
                "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}
    return chain, protocol


async def completed(keeper, protocol: str, block: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while keeper.daemon.scanners[protocol].completed_block < block:
        assert time.monotonic() < deadline, f"{protocol} did not finish block {block}"
        await asyncio.sleep(0.02)


async def test_a_stale_feed_on_one_chain_pauses_that_chain_only(
        devnet: Devnet, other_chain: Devnet, tmp_path: Path, run_daemon) -> None:
    """The same WETH crash on two chains; on `arbitrum` it is published two hours old. Only
    `arbitrum`'s WETH trips; `ethereum`'s borrowers are liquidated at once (with a breaker
    keyed by symbol, one per daemon, the stale Arbitrum feed paused Ethereum too)."""
    for d in (devnet, other_chain):
        fund_keeper(d)
    eth_chain, eth_aave = aave_on("ethereum", devnet)
    arb_chain, arb_aave = aave_on("arbitrum", other_chain, OTHER_CHAIN_ID)
    config = parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [eth_chain, arb_chain], "protocols": [eth_aave, arb_aave],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPER_KEY"}},
        "oracles": {"heartbeat_s": 3600, "clear_after_s": 0},
        "metrics": {"enabled": False}, "risk": {"cascade": {"enabled": False}},
    }, env={"KEEPER_KEY": KEEPER_KEY})
    keeper = await run_daemon(config)
    await completed(keeper, "aave-ethereum", devnet.client.block_number())
    await completed(keeper, "aave-arbitrum", other_chain.client.block_number())

    other_chain.set_price_at("WETH", 2100.0, block_time(other_chain) - 7200)
    devnet.set_price("WETH", 2100.0)
    await completed(keeper, "aave-arbitrum", other_chain.mine(1))
    await completed(keeper, "aave-ethereum", devnet.mine(1))
    await completed(keeper, "aave-ethereum", devnet.mine(1))

    metrics = keeper.daemon.metrics
    assert metric_value(metrics, "keeperd_breaker_tripped",
                        {"chain": "arbitrum", "asset": "WETH"}) == 1
    assert metric_value(metrics, "keeperd_breaker_tripped",
                        {"chain": "ethereum", "asset": "WETH"}) == 0
    breaker = keeper.daemon.chains["ethereum"].prices.breaker
    assert breaker is keeper.daemon.chains["arbitrum"].prices.breaker  # one table, two keys
    assert await breaker.tripped("arbitrum") == {"WETH"}
    assert await breaker.tripped("ethereum") == set()
    # Arbitrum's borrowers are still under water; Ethereum's were liquidated.
    view = keeper.daemon.scanners["aave-arbitrum"].view
    assert view is not None and (view.health < 1).sum() > 20
    journal = keeper.daemon.executors["aave-ethereum"].journal
    entries = await journal.all()
    assert len([e for e in entries if e.protocol == "aave-ethereum"]) > 20
    assert [e for e in entries if e.protocol == "aave-arbitrum"] == []
    assert metric_value(metrics, "keeperd_liquidations_total", {
        "chain": "arbitrum", "protocol": "aave-arbitrum", "stage": "breaker_paused"}) > 0


def morpho_with_references(devnet: Devnet, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Morpho alone on the chain, in liquidate mode, with the chain's own Chainlink-style
    USD feeds of WETH and USDC as references (what an operator configures on mainnet)."""
    config = morpho_config(devnet, tmp_path, "liquidate")
    feeds = devnet.manifest["price_feeds"]
    chain = config.chains[0].model_copy(update={"reference_feeds": {
        s: feeds[s] for s in ("WETH", "USDC", "DAI", "WBTC")}})
    return config.model_copy(update={
        "chains": [chain],
        "oracles": config.oracles.model_copy(update={"clear_after_s": 0})})


async def test_a_morpho_market_whose_oracle_lies_is_paused(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """WETH/USDC's own oracle drops 12 % while WETH's and USDC's feeds do not move: its
    positions look under water, and the market is paused (its breaker key); WBTC/DAI's
    oracle drops with its references and is liquidated. When WETH's feed follows (the crash
    was real), the market resumes and is liquidated. Morpho alone: no Aave on the chain."""
    fund(devnet, KEEPER)
    blue = devnet.manifest["morpho_blue"]["markets"]
    lying = market_key(blue["WETH/USDC"]["id"])
    honest = market_key(blue["WBTC/DAI"]["id"])
    keeper = await run_daemon(morpho_with_references(devnet, tmp_path))
    await keeper.evaluated_at(devnet.client.block_number(), protocol="morpho")
    breaker = keeper.daemon.chains["devnet"].prices.breaker
    assert await breaker.tripped("devnet") == set()

    weth = devnet.price("WETH")
    drop_oracle(devnet, "WETH/USDC", 0.88)  # the oracle alone: the references hold
    devnet.set_price("WBTC", devnet.price("WBTC") * 0.85)  # feed and oracle alike
    await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    book = keeper.daemon.scanners["morpho"].book
    under = [p for p in book.positions if book.health(p) < 1]
    assert len(under) >= 2 and {p.market.name for p in under} == {"WETH/USDC"}  # held
    assert await breaker.tripped("devnet") == {lying}
    reason = (await breaker.reasons("devnet"))[lying]
    assert reason.startswith("deviation:") and "WETH/USDC" in reason, reason
    assert metric_value(keeper.daemon.metrics, "keeperd_breaker_tripped",
                        {"chain": "devnet", "asset": lying}) == 1
    journal = keeper.daemon.executors["morpho"].journal
    sent = await journal.all()
    assert sent and all(honest.split(":")[1][:18] == e.key.split(":")[2] for e in sent), [
        e.key for e in sent]

    devnet.set_price("WETH", weth * 0.88)  # the crash was real: WETH's feed follows
    await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    assert await breaker.tripped("devnet") == set()
    markets = {e.key.split(":")[2] for e in await journal.all()
               if e.status in (J.PENDING, J.INCLUDED)}
    assert blue["WETH/USDC"]["id"][:18] in markets


async def test_morphos_references_are_judged_while_its_read_is_out(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Morpho alone with the chain's references: no USD feed is declared, only its markets'
    rates, and the references those are checked against are read ahead by the watch's own
    task (`prepare`) as Morpho's read starts, not on Morpho's path after its read (where
    they cost a Morpho-only daemon ~0.5 ms of every crash: bench/isolation.py). The check
    still holds: a market whose oracle lies is paused at that block."""
    from keeperd.oracles import watch as watch_module

    fund(devnet, KEEPER)
    blue = devnet.manifest["morpho_blue"]["markets"]
    reads: list[tuple[int, str, frozenset[str]]] = []  # (block, task, feeds read)
    real_read = watch_module.read_feeds

    async def read_feeds(multicall, feeds, block="latest"):  # type: ignore[no-untyped-def]
        task = asyncio.current_task()
        reads.append((block, task.get_name() if task else "", frozenset(f.key for f in feeds)))
        return await real_read(multicall, feeds, block)

    monkeypatch.setattr(watch_module, "read_feeds", read_feeds)
    keeper = await run_daemon(morpho_with_references(devnet, tmp_path))
    await keeper.evaluated_at(devnet.client.block_number(), protocol="morpho")
    drop_oracle(devnet, "WETH/USDC", 0.88)  # the oracle alone: the references hold
    crash = devnet.mine(1)
    await keeper.evaluated_at(crash, protocol="morpho")
    at_crash = [(task, feeds) for block, task, feeds in reads if block == crash]
    assert at_crash == [(f"devnet:price-watch:{crash}",
                         frozenset({"WETH", "USDC", "DAI", "WBTC"}))], at_crash
    breaker = keeper.daemon.chains["devnet"].prices.breaker
    assert await breaker.tripped("devnet") == {market_key(blue["WETH/USDC"]["id"])}


async def test_with_aave_beside_it_no_morpho_market_is_said_to_have_no_reference(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Aave's feeds price WETH, USDC, WBTC and DAI, and every Morpho market's oracle is
    checked against them from the first block on. At a start Morpho's first scan could come
    before Aave had declared its feeds, and each market was named as having "no trusted
    reference price... only the sequencer and manual trips pause this market" (an operator
    then configures references it does not need, or stops trusting the warning)."""
    import structlog

    blue = devnet.manifest["morpho_blue"]["markets"]
    config = aave_and_morpho_config(devnet, tmp_path, {"mode": "alert-only"})
    with structlog.testing.capture_logs() as logs:
        keeper = await run_daemon(config)
        for _ in range(3):
            block = devnet.mine(1)
            for name in ("aave", "morpho"):
                await keeper.evaluated_at(block, protocol=name)
    watch = keeper.daemon.chains["devnet"].prices
    assert [e for e in logs if e["event"] == "oracle.rate_unchecked"] == []
    assert watch.unchecked == set()
    for m in blue.values():  # (each market's deviation from its references, measured)
        assert metric_value(keeper.daemon.metrics, "keeperd_oracle_deviation_ratio",
                            {"chain": "devnet", "asset": market_key(m["id"])}) < 0.05


async def test_a_morpho_only_daemon_with_no_reference_says_so_and_still_trips_by_hand(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Without references a market's oracle cannot be judged: the watch says so once, by
    name, and the breaker still works (an operator's trip of the market holds it)."""
    fund(devnet, KEEPER)
    blue = devnet.manifest["morpho_blue"]["markets"]
    keeper = await run_daemon(morpho_config(devnet, tmp_path, "liquidate"))
    await keeper.evaluated_at(devnet.client.block_number(), protocol="morpho")
    breaker = keeper.daemon.chains["devnet"].prices.breaker
    await breaker.trip(market_key(blue["WETH/USDC"]["id"]), "manual: testing", manual=True)
    drop_oracle(devnet, "WETH/USDC", 0.88)
    await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    book = keeper.daemon.scanners["morpho"].book
    assert sum(book.health(p) < 1 for p in book.positions) >= 3
    assert await keeper.daemon.executors["morpho"].journal.all() == []
    watch = keeper.daemon.chains["devnet"].prices
    assert watch.unchecked == {market_key(m["id"]) for m in blue.values()}


async def test_the_usd_feeds_judged_while_morphos_read_is_out_still_hold_its_liquidations(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """With Aave configured beside Morpho, the chain's USD feeds (Aave's) are judged as the
    first path of a block starts its read (`ChainPriceWatch.prepare`), not on its path after
    it. Morpho's crash with WETH's feed published two hours old: the feed is judged ahead,
    WETH trips, and Morpho's WETH/USDC liquidations, which rest on WETH, are held; its
    WBTC/DAI ones go (Aave's borrowers do not cross: WETH's feed stays where it was)."""
    fund(devnet, KEEPER)
    blue = devnet.manifest["morpho_blue"]
    config = aave_and_morpho_config(
        devnet, tmp_path, {"mode": "liquidate", "min_profit_usd": 1.0,
                           "key": {"source": "env", "env": "KEEPER_KEY"}},
        oracles={"heartbeat_s": 3600, "clear_after_s": 0})
    keeper = await run_daemon(config)
    watch = keeper.daemon.chains["devnet"].prices
    order: list[tuple[str, int]] = []  # what the watch did, in turn: ("ahead" | protocol, block)
    prepare_inner, judge = watch._prepare, watch.judge

    async def prepared(block: int) -> None:
        await prepare_inner(block)
        order.append(("ahead", block))

    async def judged(protocol: str, block: int, feeds):  # type: ignore[no-untyped-def]
        await judge(protocol, block, feeds)
        order.append((protocol, block))

    watch._prepare = prepared  # type: ignore[method-assign]
    watch.judge = judged  # type: ignore[method-assign]
    for name in ("aave", "morpho"):
        await keeper.evaluated_at(devnet.client.block_number(), protocol=name)
    weth = devnet.price("WETH")
    devnet.set_price_at("WETH", weth, block_time(devnet) - 7200)  # the same price, stale
    drop_oracle(devnet, "WETH/USDC", 0.85)
    devnet.set_price("WBTC", devnet.price("WBTC") * 0.85)  # WBTC's feed and oracle alike
    crash = devnet.mine(1)
    for name in ("aave", "morpho"):
        await keeper.evaluated_at(crash, protocol=name)
    at_crash = [who for who, block in order if block == crash]
    assert at_crash[0] == "ahead" and set(at_crash[1:]) == {"aave", "morpho"}, order
    breaker = watch.breaker
    assert "WETH" in await breaker.tripped("devnet")
    assert (await breaker.reasons("devnet"))["WETH"].startswith("stale")
    book = keeper.daemon.scanners["morpho"].book
    under = {p.market.name for p in book.positions if book.health(p) < 1}
    assert "WETH/USDC" in under, under  # held (WBTC/DAI's may be liquidated by now)
    journal = keeper.daemon.executors["morpho"].journal
    markets = {e.key.split(":")[2] for e in await journal.all() if e.key.startswith("morpho:")}
    assert markets == {blue["markets"]["WBTC/DAI"]["id"][:18]}, markets
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total", {
        "chain": "devnet", "protocol": "morpho", "stage": "breaker_paused"}) > 0


async def test_an_older_blocks_late_scan_is_judged_not_held(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """A slow protocol's path of block N ends after another protocol's path started N+1 (the
    watch moved on: `prepare`, or that protocol's own judge). Its scan of N used to be skipped
    by the watch ("the newer judgement stands") without being marked judged, so the gate held
    every liquidation of it for a whole block as "not judged (its reads failed)", counted as a
    breaker pause though no read failed and no breaker tripped (Curie's on the devnet, every
    crash). Now what the newer block has not judged of its feeds (a Morpho market's rate) is
    judged, and its block passes the gate.

    A rate is judged against the prices of the block it was read at: a crash between N and
    N+1 made Morpho's rate of N (the old price) 43 % off N+1's references, and tripped a
    right market for clear_after_s — every liquidation of it in the crash held (Morpho's
    path a block behind Aave's under a loaded full run). Nor does the first path of a block
    judge another protocol's rates as that one's book held them a block before."""
    from dataclasses import replace

    from keeperd.metrics import Metrics
    from keeperd.oracles.watch import ChainPriceWatch

    config = aave_and_morpho_config(devnet, tmp_path, {"mode": "alert-only"})
    keeper = await run_daemon(config)
    older = devnet.client.block_number()
    for name in ("aave", "morpho"):
        await keeper.evaluated_at(older, protocol=name)
    rt = keeper.daemon.chains["devnet"]
    assert rt.prices is not None
    # A watch of its own on the daemon's chain and breaker (the daemon's own follows blocks)
    watch = ChainPriceWatch(rt.config, rt.pool, rt.prices.breaker, config.oracles, Metrics())
    breaker = rt.prices.breaker
    try:
        scanners = keeper.daemon.scanners
        aave_feeds = await scanners["aave"].adapter.price_feeds(scanners["aave"].book)
        morpho_feeds = await scanners["morpho"].adapter.price_feeds(scanners["morpho"].book)
        rates = [f for f in morpho_feeds if f.is_rate]
        weth_usdc = [f for f in rates if f.base == "WETH" and f.quote == "USDC"]
        assert weth_usdc, rates
        await watch.judge("aave", older, aave_feeds)  # (Aave's path of N, on time)
        devnet.set_price("WETH", 2100.0)  # (from 3,000, in one block: N+1)
        newer = devnet.client.block_number()
        assert newer == older + 1
        await watch.judge("aave", newer, aave_feeds)
        assert (await watch.gate("morpho", older)).hold is not None  # never judged for it
        await watch.judge("morpho", older, morpho_feeds)  # the late scan of the older block
        assert (await watch.gate("morpho", older)).hold is None
        assert set(rates) <= watch._judged  # its markets' rates, judged
        assert (await watch.gate("morpho", newer)).hold is not None  # not that one yet
        assert not {f.key for f in rates} & await breaker.tripped("devnet"), \
            await breaker.reasons("devnet")
        # The next block's first path (Aave's) judges Morpho's USD feeds, not its rates of N.
        newest = devnet.mine(1)
        await watch.judge("aave", newest, aave_feeds)
        assert not set(rates) & watch._judged
        assert not {f.key for f in rates} & await breaker.tripped("devnet"), \
            await breaker.reasons("devnet")
        # A late rate wrong at its own block trips its market all the same...
        wrong = replace(weth_usdc[0], rate=weth_usdc[0].rate * 1.5)
        await watch.judge("morpho", newer, [wrong])
        assert wrong.key in await breaker.tripped("devnet")
        assert (await breaker.reasons("devnet"))[wrong.key].startswith("deviation"), \
            await breaker.reasons("devnet")
        # ...and one of a block whose prices the watch does not keep is left to the next
        # scan (judged against no block's prices, it says nothing either way).
        before = len(watch._judged)
        await watch.judge("morpho", older - 1, [replace(wrong, rate=wrong.rate * 2)])
        assert len(watch._judged) == before
    finally:
        await watch.close()


async def test_a_watched_position_on_a_market_whose_oracle_is_untrusted_says_so(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """A Morpho market's own oracle 12 % off its references trips that market's breaker; a
    holder watching a position there was told "under 1.0: it can be liquidated now, add
    collateral" on the untrusted rate, with no word of it (a by-hand trial: an Aave
    position's alert notes it when its feed is untrusted). The note is the holder's: what
    keeperd distrusts and since when, never "do not act" (the protocol liquidates at its
    own oracle's price whatever keeperd thinks: a holder told not to act was liquidated
    40 s later, a by-hand trial)."""
    from tests.alert_fakes import Recorder, webhook_app, webhook_watchlist
    from tests.conftest import serve

    blue = devnet.manifest["morpho_blue"]
    watched = next(b["address"] for b in blue["borrowers"]
                   if b["market"] == "WETH/USDC" and 1.0 < b["planned_health"] < 1.1)
    rec = Recorder()
    async with serve(webhook_app(rec)) as hook:
        data = morpho_with_references(devnet, tmp_path).model_dump(mode="json")
        data["keeper"] = {"mode": "alert-only"}
        data["alerts"] = webhook_watchlist(hook, [watched])
        keeper = await run_daemon(parse_config(data, env={"WEBHOOK_SECRET": "s" * 32}))
        await keeper.evaluated_at(devnet.client.block_number(), protocol="morpho")
        drop_oracle(devnet, "WETH/USDC", 0.88)
        lying = market_key(blue["markets"]["WETH/USDC"]["id"])
        deadline = time.monotonic() + 20
        while not [e for e in rec.accepted if e["body"]["rule"] == "position_health"
                   and e["body"]["health_factor"] < 1.0]:
            assert time.monotonic() < deadline, [e["body"]["summary"] for e in rec.accepted]
            await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
            await asyncio.sleep(0.1)
        assert lying in await keeper.daemon.chains["devnet"].prices.breaker.tripped("devnet")
    [alert] = [e["body"] for e in rec.accepted if e["body"]["rule"] == "position_health"
               and e["body"]["health_factor"] < 1.0]
    assert alert["account"] == watched
    [note] = [why for why in alert["inhibited_by"] if lying in why]
    assert "WETH/USDC" in note and "untrusted since" in note, note
    assert not any("do not act" in why for why in alert["inhibited_by"])


async def test_a_market_rate_nothing_checks_any_more_shows_no_deviation(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Morpho's market rates checked against the chain's USD feeds; the feeds go stale (two
    hours without a round): the rates are unchecked (`oracle.rate_unchecked`), and their
    deviation gauge says "not measured" (NaN) — a trial saw the last value stay on the
    dashboard, healthy-looking, while nothing checked it."""

    keeper = await run_daemon(morpho_with_references(devnet, tmp_path))
    await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    key = market_key(devnet.manifest["morpho_blue"]["markets"]["WETH/USDC"]["id"])

    def deviation() -> float:
        return metric_value(keeper.daemon.metrics, "keeperd_oracle_deviation_ratio",
                            {"chain": "devnet", "asset": key})

    assert deviation() < 0.01  # (checked: the rate agrees with its references)
    devnet.client.call("evm_increaseTime", 7200)
    await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    assert math.isnan(deviation())


async def test_a_replaced_price_source_is_told_with_its_move(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Governance replaces WETH's source in the AaveOracle with a feed 40 % lower: told (the
    watch kept readings by source, so a new source had no previous one: a feed 29 % away went
    untold and 56 liquidations followed at its price — a by-hand trial), in the log, the
    metrics and a message: it was a Prometheus alert alone, with no webhook or Telegram."""
    import structlog

    from keeperd.chain.multicall import encode_call
    from keeperd.devnet.uniswap import ours
    from tests.alert_fakes import Webhook
    from tests.keeper_harness import config_for

    webhook = Webhook()
    config = config_for(devnet, tmp_path, "alert-only")
    config = config.model_copy(update={"alerts": config.alerts.model_validate({
        "routes": [{"name": "ops", "sinks": [{"kind": "webhook", "url": webhook.url,
                                               "secret": "w" * 32}]}]})})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    admin, aave = devnet.manifest["aave_v3"]["admin"], devnet.manifest["aave_v3"]
    new = devnet.client.deploy(admin, ours("TestAggregator").deploy_data(
        8, "ETH / USD (replacement)", round(devnet.price("WETH") * 0.6 * 10**8)))
    with structlog.testing.capture_logs() as logs:
        devnet.client.send(admin, aave["oracle"], encode_call(
            "setAssetSources(address[],address[])", ["address[]", "address[]"],
            [[devnet.manifest["tokens"]["WETH"]], [new]]))
        await keeper.evaluated_at(devnet.client.block_number())
        await keeper.evaluated_at(devnet.mine(1))
    told = {e["kind"]: e["detail"] for e in logs
            if e["event"] == "oracle.anomaly" and e["asset"] == "WETH"}
    assert set(told) == {"source_changed", "jump"}, told
    assert told["source_changed"].lower().endswith(new.lower())
    assert told["jump"].startswith("40.0% from the replaced source's last price")
    for kind in ("source_changed", "jump"):
        assert metric_value(keeper.daemon.metrics, "keeperd_oracle_anomalies_total",
                            {"chain": "devnet", "asset": "WETH", "kind": kind}) == 1
    for _ in range(150):  # (delivered from the outbox, 15 s at most)
        if webhook.received:
            break
        await asyncio.sleep(0.1)
    webhook.close()
    [(_, message)] = [(k, b) for k, b in webhook.received if b.get("rule") == "oracle"]
    assert message["labels"] == {"chain": "devnet", "asset": "WETH", "event": "source_changed"}
    assert message["severity"] == "critical"  # (its price jumped from the replaced one's)
    assert new.lower() in message["summary"].lower() and "40.0%" in message["summary"]


def replace_weth_source(devnet: Devnet, factor: float) -> str:
    """Governance's `setAssetSources`: WETH's source in the AaveOracle replaced by a new
    feed at `factor` of today's price; the new feed's address."""
    from keeperd.chain.multicall import encode_call
    from keeperd.devnet.uniswap import ours

    admin, aave = devnet.manifest["aave_v3"]["admin"], devnet.manifest["aave_v3"]
    new = devnet.client.deploy(admin, ours("TestAggregator").deploy_data(
        8, "ETH / USD (replacement)", round(devnet.price("WETH") * factor * 10**8)))
    devnet.client.send(admin, aave["oracle"], encode_call(
        "setAssetSources(address[],address[])", ["address[]", "address[]"],
        [[devnet.manifest["tokens"]["WETH"]], [new]]))
    return new


def weth_markets(devnet: Devnet) -> set[str]:
    """The breaker keys of the devnet's Morpho markets that lend or take WETH."""
    return {market_key(m["id"]) for m in devnet.manifest["morpho_blue"]["markets"].values()
            if "WETH" in (m["collateral"], m["loan"])}


async def aave_and_morpho_running(devnet: Devnet, tmp_path: Path, run_daemon,  # type: ignore[no-untyped-def]
                                  references: bool):
    """Aave and Morpho in alert-only mode (with the devnet's own USD feeds named references
    when `references`), having evaluated the head: (the keeper, its chain's price watch)."""
    config = aave_and_morpho_config(devnet, tmp_path, {"mode": "alert-only"})
    if references:
        feeds = devnet.manifest["price_feeds"]
        chain = config.chains[0].model_copy(update={"reference_feeds": {
            s: feeds[s] for s in ("WETH", "USDC", "DAI", "WBTC")}})
        config = config.model_copy(update={"chains": [chain]})
    keeper = await run_daemon(config)
    await evaluated_by_both(keeper, devnet.client.block_number())
    return keeper, keeper.daemon.chains["devnet"].prices


async def evaluated_by_both(keeper, block: int) -> None:  # type: ignore[no-untyped-def]
    for name in ("aave", "morpho"):
        await keeper.evaluated_at(block, protocol=name)


async def mined_and_evaluated(devnet: Devnet, keeper, blocks: int = 1) -> None:  # type: ignore[no-untyped-def]
    for _ in range(blocks):
        await evaluated_by_both(keeper, devnet.mine(1))


async def replaced_and_mined(devnet: Devnet, keeper, factor: float) -> str:  # type: ignore[no-untyped-def]
    """WETH's Aave source replaced at `factor` of its price, three blocks mined and
    evaluated by both protocols: the new source's address."""
    new = replace_weth_source(devnet, factor)
    await mined_and_evaluated(devnet, keeper, 3)
    return new


def set_feed(devnet: Devnet, feed: str, usd: float) -> None:
    """A new round at `usd` on a devnet TestAggregator (the replacement's own)."""
    devnet.client.send(devnet.manifest["aave_v3"]["admin"], feed,
                       devnet._aggregator.encode_call("setAnswer", round(usd * 10**8)))


async def test_a_source_replaced_far_from_the_old_pauses_no_other_protocols_market(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Aave's WETH source replaced by a feed 30 % lower, Morpho's WETH oracles still right:
    the new source is no reference for Morpho's markets (it was, and paused them: a by-hand
    trial), which are said to be unchecked, with why, and stay unpaused; once the new source
    is back near the old price (governance mends it) it is a reference again."""
    import structlog

    weth = weth_markets(devnet)
    keeper, watch = await aave_and_morpho_running(devnet, tmp_path, run_daemon, False)
    usd = devnet.price("WETH")
    with structlog.testing.capture_logs() as logs:
        new = await replaced_and_mined(devnet, keeper, 0.7)
    assert await watch.breaker.tripped("devnet") == set()
    assert weth and weth <= watch.unchecked
    said = [e for e in logs if e["event"] == "oracle.rate_unchecked"]
    assert {e["asset"] for e in said} == weth
    assert all(f"WETH's source {devnet.manifest['price_feeds']['WETH']} -> {new}".lower()
               in e["why"].lower() and "30.0% from the replaced source" in e["why"]
               for e in said), said[0]["why"]
    for key in weth:
        assert math.isnan(metric_value(keeper.daemon.metrics, "keeperd_oracle_deviation_ratio",
                                       {"chain": "devnet", "asset": key}))
    # The gauges by source: the new one's price, the replaced one's series gone (a feed of
    # the asset per series: two protocols' overwrote each other, a trial)
    old = devnet.manifest["price_feeds"]["WETH"]
    assert metric_value(keeper.daemon.metrics, "keeperd_oracle_price_usd", {
        "chain": "devnet", "asset": "WETH", "source": new}) == pytest.approx(usd * 0.7)
    assert metric_series(keeper.daemon.metrics, "keeperd_oracle_price_usd", {
        "chain": "devnet", "asset": "WETH", "source": old}) is None

    # A restart on the same state directory keeps the doubt (it trusted the new source
    # again, with no reading of the old to compare with, and paused the market: a trial).
    keeper.stop.set()
    await asyncio.wait_for(keeper.task, 10)
    with structlog.testing.capture_logs() as logs:
        keeper, watch = await aave_and_morpho_running(devnet, tmp_path, run_daemon, False)
        await mined_and_evaluated(devnet, keeper, 2)
    assert await watch.breaker.tripped("devnet") == set()
    assert weth <= watch.unchecked
    [kept] = [e for e in logs if e["event"] == "oracle.source_doubted"]
    assert kept["source"].lower() == new.lower()

    # Governance mends it: the new source's next round at the old price.
    with structlog.testing.capture_logs() as logs:
        set_feed(devnet, new, usd)
        await mined_and_evaluated(devnet, keeper)
    [trusted] = [e for e in logs if e["event"] == "oracle.source_trusted"]
    assert trusted["asset"] == "WETH"
    assert "the new source is back near the old source's last price" in trusted["meaning"]
    assert watch.unchecked == set()
    assert {e["asset"] for e in logs if e["event"] == "oracle.rate_checked"} == weth
    assert await watch.breaker.tripped("devnet") == set()


async def test_a_reference_feed_comes_before_a_replaced_protocol_source(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """With WETH's Chainlink feed configured as a reference (chains[].reference_feeds),
    Morpho's WETH markets are checked against it, not against Aave's source just replaced
    30 % away: checked, unpaused; the replaced source, once it agrees with the reference
    again, is trusted (`oracle.source_trusted`)."""
    import structlog

    keeper, watch = await aave_and_morpho_running(devnet, tmp_path, run_daemon, True)
    usd = devnet.price("WETH")
    with structlog.testing.capture_logs() as logs:
        new = await replaced_and_mined(devnet, keeper, 0.7)
        assert await watch.breaker.tripped("devnet") == set()
        assert watch.unchecked == set()
        for key in weth_markets(devnet):
            assert metric_value(keeper.daemon.metrics, "keeperd_oracle_deviation_ratio",
                                {"chain": "devnet", "asset": key}) < 0.01
        set_feed(devnet, new, usd)
        await mined_and_evaluated(devnet, keeper)
    assert [e for e in logs if e["event"] == "oracle.rate_unchecked"] == []
    [trusted] = [e for e in logs if e["event"] == "oracle.source_trusted"]
    assert trusted["asset"] == "WETH" and trusted["source"].lower() == new.lower()
    assert "30.0% from the replaced source" in trusted["replaced"]
    assert "agrees with another price of WETH" in trusted["meaning"]


async def test_a_named_reference_is_what_a_market_is_checked_against(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Aave's WETH source replaced by a feed 10 % lower (no jump past max_jump: nothing
    doubted), WETH's Chainlink feed named a reference: Morpho's WETH markets are checked
    against the named reference, which agrees with their oracles, not against Aave's new
    source, which does not (checked against it, they were paused)."""
    keeper, watch = await aave_and_morpho_running(devnet, tmp_path, run_daemon, True)
    await replaced_and_mined(devnet, keeper, 0.9)
    assert await watch.breaker.tripped("devnet") == set()
    assert watch.unchecked == set()
    for key in weth_markets(devnet):
        assert metric_value(keeper.daemon.metrics, "keeperd_oracle_deviation_ratio",
                            {"chain": "devnet", "asset": key}) < 0.01


async def test_a_market_paused_for_its_rate_stays_paused_while_nothing_checks_it(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """WETH/USDC's own oracle drops 12 % alone: paused. Aave's WETH source is then replaced
    far from the old: doubted, the market's rate is unchecked — and its trip held, not
    cleared (it resumed, told "price trusted again", on the 12 % lie: a by-hand trial)."""
    from keeperd.oracles.breaker import UNCHECKED_HOLD

    lying = market_key(devnet.manifest["morpho_blue"]["markets"]["WETH/USDC"]["id"])
    config = aave_and_morpho_config(devnet, tmp_path, {"mode": "alert-only"})
    keeper = await run_daemon(config.model_copy(update={
        "oracles": config.oracles.model_copy(update={"clear_after_s": 0})}))
    await evaluated_by_both(keeper, devnet.client.block_number())
    watch = keeper.daemon.chains["devnet"].prices
    drop_oracle(devnet, "WETH/USDC", 0.88)
    await mined_and_evaluated(devnet, keeper, 2)
    assert lying in await watch.breaker.tripped("devnet")
    await replaced_and_mined(devnet, keeper, 0.7)
    await mined_and_evaluated(devnet, keeper, 2)
    assert lying in watch.unchecked
    assert lying in await watch.breaker.tripped("devnet")
    reason = (await watch.breaker.reasons("devnet"))[lying]
    assert reason.startswith("deviation:") and reason.endswith(UNCHECKED_HOLD), reason
    # (the alerts name the market beside its key; an asset's symbol needs no name, whatever
    # a USD feed of it is called: Curie's index feed renamed every protocol's WETH, a trial)
    from keeperd.protocols.sdk.feeds import PriceFeed

    watch._declared["curie"] = [PriceFeed("WETH", "0x" + "11" * 20, label="curie vETH index")]
    assert "WETH/USDC" in watch.labels()[lying] and "WETH" not in watch.labels()
