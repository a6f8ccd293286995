"""Perp Curie markets that stop (issue #26): Curie is frozen upstream, and the owner of a
market's BaseToken may pause it (then close it); `liquidate` there reverts `CH_MNO`. keeperd
reads each market's status in its per-block multicall, holds the liquidations of a market that
is not open — counted and logged once — and goes on in the other markets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from keeperd.chain.rpc import RpcPool
from keeperd.config import parse_config
from keeperd.devnet.curie import artifact, settle_collateral_twap
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.protocols.perp_curie import margin as cm
from keeperd.protocols.perp_curie.adapter import POSITION_LIQUIDATED
from keeperd.protocols.perp_curie.liquidator import CurieLiquidator
from tests.conftest import metric_value
from tests.integration.test_curie import chain_liquidatable, funded_curie_keeper, read_book
from tests.keeper_harness import (
    KEEPER,
)


def set_market(devnet: Devnet, base: str, fn: str, *args: Any) -> None:
    """`pause()` or `close(price)` on a market's BaseToken, sent by its owner (the devnet's
    deployer; impersonated should it be no unlocked account)."""
    art = artifact("BaseToken")
    (owner,) = art.decode_result("owner", devnet.client.eth_call(base, art.encode_call("owner")))
    devnet.client.call("anvil_impersonateAccount", owner)
    devnet.client.send(owner, base, art.encode_call(fn, *args), gas=500_000)


def liquidated_on_chain(devnet: Devnet, since: int) -> list[tuple[str, str]]:
    """(trader, base token) of every PositionLiquidated since `since`, lower case."""
    logs = devnet.client.call("eth_getLogs", {
        "fromBlock": hex(since), "toBlock": "latest",
        "address": devnet.manifest["perp_curie"]["clearing_house"],
        "topics": [POSITION_LIQUIDATED]})
    return [("0x" + e["topics"][1][-40:], "0x" + e["topics"][2][-40:]) for e in logs]


async def test_a_paused_market_holds_its_liquidations_and_the_others_go_on(
        devnet: Devnet, pool: RpcPool, tmp_path: Path, metrics: Metrics,
        run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:

    curie = devnet.manifest["perp_curie"]
    veth, vbtc = curie["base_tokens"]["WETH"], curie["base_tokens"]["WBTC"]
    for symbol in ("WETH", "WBTC"):
        devnet.set_price(symbol, devnet.price(symbol) * 0.75, walk_perps=True)
    # pause() fixes the index at its 15-minute TWAP: a quarter hour at the new prices first.
    settle_collateral_twap(devnet.client, devnet.manifest)
    set_market(devnet, vbtc, "pause")
    traders = [t["address"] for t in devnet.manifest["perp_traders"]]
    liquidatable = chain_liquidatable(devnet, traders)
    _, book = await read_book(devnet, pool, tmp_path / "before", metrics)
    assert book.markets[vbtc].status == "paused" and book.markets[veth].status == "open"
    by_account = {t.account: t for t in book.traders}
    # Liquidatable by the contracts' views, through their positions: those with one in vETH
    # (even when their vBTC one is larger), and those with vBTC only, held.
    positions = {a: {p.base: p.notional for p in by_account[a].positions}
                 for a in liquidatable if cm.is_liquidatable(by_account[a])}
    held = {a for a, ps in positions.items() if set(ps) == {vbtc}}
    mixed = {a for a, ps in positions.items() if len(ps) == 2 and ps[vbtc] > ps[veth]}
    goes_on = {a for a, ps in positions.items() if veth in ps}
    assert held and mixed and len(goes_on) >= 10, (len(held), len(mixed), len(goes_on))
    # The chain says why: a held trader's liquidation reverts CH_MNO (Market not opened).
    with pytest.raises(Exception, match="CH_MNO"):
        devnet.client.call("eth_call", {"from": KEEPER, "to": curie["clearing_house"],
                                        "data": "0x" + artifact("ClearingHouse").encode_call(
                                            "liquidate", next(iter(held)), vbtc, 0).hex()})

    data = funded_curie_keeper(devnet, tmp_path, monkeypatch)
    start = devnet.client.block_number()
    with capture_logs() as logs:
        keeper = await run_daemon(parse_config(data))
        scanner = keeper.daemon.scanners["curie"]
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            done = liquidated_on_chain(devnet, start)
            if {t for t, _ in done} >= {a.lower() for a in goes_on}:
                break
            left = {a.lower() for a in goes_on} - {t for t, _ in done}
            assert asyncio.get_running_loop().time() < deadline, \
                f"{len(left)} trader(s) with a vETH position never liquidated: {left}"
            devnet.mine(1)
            await keeper.evaluated_at(devnet.client.block_number(), protocol="curie")
        # Two more blocks: nothing is ever tried in the paused market.
        for _ in range(2):
            devnet.mine(1)
            await keeper.evaluated_at(devnet.client.block_number(), protocol="curie")
        # Closed (at the price it was paused at): still held; what a keeper holds there is
        # left by quitMarket (closePosition reverts there) — the arbitrageur's vBTC, here.
        (paused_at,) = artifact("BaseToken").decode_result("getPausedIndexPrice", (
            devnet.client.eth_call(vbtc, artifact("BaseToken").encode_call(
                "getPausedIndexPrice"))))
        set_market(devnet, vbtc, "close", paused_at)
        await keeper.evaluated_at(devnet.client.block_number(), protocol="curie")
        book = scanner.book
        assert book.markets[vbtc].status == "closed"
        arb = curie["arbitrageur"]
        unwinds = await CurieLiquidator(keeper.daemon.executors["curie"].liquidator.adapter,
                                        keeper.daemon.config.keeper, arb, None).housekeeping(
            SimpleNamespace(book=book))
        quits = [data for _, _, data, _ in unwinds
                 if data[:4] == artifact("ClearingHouse").encode_call("quitMarket", arb,
                                                                      vbtc)[:4]]
        assert len(quits) == 1 and len(unwinds) == 2  # vETH closed, vBTC quit
        devnet.client.call("eth_call", {"from": arb, "to": curie["clearing_house"],
                                        "data": "0x" + quits[0].hex()})
        devnet.mine(1)
        await keeper.evaluated_at(devnet.client.block_number(), protocol="curie")
    done = liquidated_on_chain(devnet, start)
    assert {b for _, b in done} == {veth.lower()}
    assert not {t for t, _ in done} & {a.lower() for a in held}
    # Nothing in vBTC was journaled, nor even simulated (it would fail CH_MNO).
    journal = await keeper.daemon.executors["curie"].journal.all()
    assert not [e.key for e in journal if vbtc.lower() in e.key.lower()]
    # (A vETH liquidation may fail its simulation when the position moved since it was read;
    # the key is an OpportunityKey, its text the journal's.)
    tried_in_vbtc = [e for e in logs if e["event"] == "liquidation.simulation_failed"
                     and (vbtc.lower() in str(e["opportunity"]).lower()
                          or "CH_MNO" in str(e["error"]))]
    assert not tried_in_vbtc, tried_in_vbtc
    metrics = keeper.daemon.metrics
    labels = {"chain": "devnet", "protocol": "curie"}
    assert metric_value(metrics, "keeperd_liquidations_total", {**labels, "stage": "held"}) \
        >= len(held)
    for status, value in (("closed", 1), ("paused", 0), ("open", 0)):
        assert metric_value(metrics, "keeperd_perp_market_status",
                            {"venue": "curie", "market": "vBTC", "status": status}) == value
    assert metric_value(metrics, "keeperd_perp_market_status",
                        {"venue": "curie", "market": "vETH", "status": "open"}) == 1
    # Logged once per change, not every block: the market's status, and each held position.
    changes = [e for e in logs if e["event"] == "curie.market_status"]
    assert [(e["market"], e["status"]) for e in changes] == [("vBTC", "paused"),
                                                             ("vBTC", "closed")]
    # (a held trader stays held: nothing can liquidate its position, and the keeper sells
    # no WETH margin of one in these blocks unless the vault calls it liquidatable)
    said = [e["account"] for e in logs if e["event"] == "curie.liquidation_held"]
    steady = {a for a in held if not by_account[a].collateral}
    assert held <= set(said) and steady and all(said.count(a) == 1 for a in steady)
