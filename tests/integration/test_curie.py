"""Perp Curie on the devnet and keeperd's `perp_curie` plug-in: the deployment from the pinned
npm artifacts with seeded cross-margined traders; keeperd's figures equal the contracts' own
views; a price set on the devnet walks the market's mark, and the traders it makes
liquidatable by the contracts' views are those keeperd calls liquidatable; keeperd's what-if
under the index shock predicted them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from keeperd.chain.rpc import RpcPool
from keeperd.config import parse_config
from keeperd.devnet.curie import artifact
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.metrics import Metrics
from keeperd.protocols.perp_curie import margin as cm
from keeperd.protocols.perp_curie.adapter import CurieBook, PerpCurieAdapter
from keeperd.protocols.sdk.contract import PluginContext
from keeperd.storage.account_index import IndexStore
from tests.chain_amounts import assert_amounts_as_planned, frozen_clock, sent_from_journal
from tests.conftest import metric_value

ROOT = Path(__file__).resolve().parents[2]


def curie_config(devnet: Devnet, tmp_path: Path) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]], "confirmations": 0,
                    "poll_interval": 0.1}],
        "protocols": [{"kind": "perp_curie", "name": "curie", "chain": "devnet",
                       "clearing_house": devnet.manifest["perp_curie"]["clearing_house"],
                       "asset_symbols": {"vETH": "WETH", "vBTC": "WBTC"}}],
        "keeper": {"mode": "alert-only"}, "metrics": {"enabled": False},
        "risk": {"cascade": {"enabled": False}}}


def funded_curie_keeper(devnet: Devnet, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Curie in liquidate mode, the keeper holding $20M of USDC ($10M of it for margin) and
    gas: its config, the key in the environment."""
    from keeperd.devnet import contracts
    from tests.keeper_harness import KEEPER, KEEPER_KEY

    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    devnet.client.call("anvil_setBalance", KEEPER, hex(100 * 10**18))
    devnet.client.send(KEEPER, devnet.manifest["tokens"]["USDC"], contracts.aave(
        "MintableERC20").encode_call("mint", KEEPER, 20_000_000 * 10**6))
    data = curie_config(devnet, tmp_path)
    data["protocols"][0]["keeper_margin_usd"] = 10_000_000
    data["keeper"] = {"mode": "liquidate", "min_profit_usd": 1.0,
                      "key": {"source": "env", "env": "KEEPER_KEY"}}
    return data


async def read_book(devnet: Devnet, pool: RpcPool, tmp_path: Path, metrics: Metrics
                    ) -> tuple[PerpCurieAdapter, CurieBook]:
    config = parse_config(curie_config(devnet, tmp_path))
    store = await IndexStore.open(tmp_path / "reader")
    adapter = PerpCurieAdapter(config.protocols[0],
                               PluginContext(config.chains[0], pool, store, metrics))
    await adapter.start()
    head = devnet.client.block_number()
    await adapter.discover(head)
    return adapter, await adapter.read(head, None, set(), set())


def chain_view(devnet: Devnet, contract: str, name: str, fn: str, *args: Any) -> Any:
    art = artifact(name)
    (value,) = art.decode_result(fn, devnet.client.eth_call(contract, art.encode_call(fn, *args)),
                                 len(args))
    return value


def chain_view3(devnet: Devnet, contract: str, name: str, fn: str, *args: Any
                ) -> tuple[Any, ...]:
    """A view returning several values, as a tuple."""
    art = artifact(name)
    return tuple(art.decode_result(fn, devnet.client.eth_call(contract, art.encode_call(
        fn, *args)), len(args)))


def gas_booked(entry: J.JournalEntry) -> float:
    """An included row's gas in USD, as its detail keeps it."""
    found = re.search(r"gas_usd=(-?[\d.]+)", entry.detail or "")
    assert found, entry.detail
    return float(found[1])


def chain_liquidatable(devnet: Devnet, traders: list[str]) -> set[str]:
    """By the contracts' own views: positions the ClearingHouse may liquidate (account value
    under the requirement), and WETH margin the Vault may (`isLiquidatable`)."""
    curie = devnet.manifest["perp_curie"]
    return {t for t in traders
            if (chain_view(devnet, curie["account_balance"], "AccountBalance", "getBaseTokens",
                           t)
                and chain_view(devnet, curie["clearing_house"], "ClearingHouse",
                               "getAccountValue", t)
                < chain_view(devnet, curie["account_balance"], "AccountBalance",
                             "getMarginRequirementForLiquidation", t))
            or chain_view(devnet, curie["vault"], "Vault", "isLiquidatable", t)}


def settle_collateral_twap(devnet: Devnet) -> None:
    """The vault prices WETH margin at a 15-minute TWAP: let it catch up with the index."""
    from keeperd.devnet.curie import settle_collateral_twap as settle

    settle(devnet.client, devnet.manifest)


async def test_every_seeded_trader_is_read_as_the_contracts_see_it(
        devnet: Devnet, pool: RpcPool, tmp_path: Path, metrics: Metrics) -> None:
    seeded = {t["address"] for t in devnet.manifest["perp_traders"]}
    adapter, book = await read_book(devnet, pool, tmp_path, metrics)
    traders = {t.account: t for t in book.traders}
    assert seeded <= set(traders)
    assert {m.symbol for m in book.markets.values()} == {"vETH", "vBTC"}
    assert (book.mm_ratio, book.penalty_ratio, book.im_ratio) == (62_500, 25_000, 100_000)
    curie = devnet.manifest["perp_curie"]
    for plan in devnet.manifest["perp_traders"][:25]:
        t = traders[plan["address"]]
        assert {p.asset for p in t.positions} == set(plan["positions"])
        for p in t.positions:  # the side the plan opened
            assert (p.size > 0) == (plan["positions"][p.asset] > 0)
        assert t.account_value == chain_view(devnet, curie["clearing_house"], "ClearingHouse",
                                             "getAccountValue", t.account)
    # keeperd's own margin arithmetic reproduces the contract's requirement to the unit.
    for t in book.traders:
        assert cm.margin_requirement(t, book.mm_ratio) == t.margin_requirement
    # WETH margin, where a trader keeps some: the amount the vault holds, and the counted
    # value the account value includes (account value = settlement-token value + counted
    # collateral, each view rounded to the settlement token's 6 decimals).
    on_weth = [p for p in devnet.manifest["perp_traders"] if p["weth_share"]]
    assert 30 <= len(on_weth) <= 70
    for plan in on_weth:
        t = traders[plan["address"]]
        [c] = t.collateral
        assert c.asset == "WETH" and c.ratio == 800_000
        assert c.amount == chain_view(devnet, curie["vault"], "Vault", "getBalanceByToken",
                                      t.account, curie["collaterals"]["WETH"])
        settlement = chain_view(devnet, curie["vault"], "Vault", "getSettlementTokenValue",
                                t.account)
        assert abs(t.account_value - (settlement * 10**12 + c.counted)) < 2 * 10**12
    assert not any(traders[p["address"]].collateral for p in devnet.manifest["perp_traders"]
                   if not p["weth_share"])
    view = adapter.evaluate(book)
    assert (view.health[[i for i, t in enumerate(book.traders) if t.positions]] > 1).all()
    # Which way each trader's main market must move to liquidate it, and how far: moved so
    # (its WETH margin with it), the account meets its maintenance. A short's is a rise
    # (it was told as a drop of the same size: a holder warned the wrong way).
    moves = {"rise": 0, "drop": 0}
    for i, t in enumerate(book.traders):
        if not t.positions:
            continue
        # (its main market: the one nearest its liquidation)
        [main] = [p for p in t.positions if p.asset == view.main_collateral[i]]
        rise, drop = view.row_rise(i), float(view.drop_to_liquidation[i])
        assert (rise is None) != np.isnan(drop), (t.account, rise, drop)
        moves["rise" if rise is not None else "drop"] += 1
        move = rise if rise is not None else -drop
        # (there, health — the position's rule or, with WETH margin, the Vault's collateral
        # rules, whichever is nearer: a holder on WETH margin was told a distance its margin
        # passed first — is 1)
        av, mm = cm.shocked(t, {main.asset: 1 + move}, book.mm_ratio)
        health = av / mm
        if t.collateral and book.collateral_rules is not None:
            health = min(health, cm.collateral_health(
                t, book.collateral_rules, book.mm_ratio, {main.asset: 1 + move}))
        assert health == pytest.approx(1.0, rel=1e-6), t.account
        for other in t.positions:  # no other market is nearer its liquidation
            other_move = cm.move_to_liquidation(t, other, book.mm_ratio,
                                                book.collateral_rules)
            assert other_move is None or abs(other_move) >= abs(move) - 1e-12
        if not t.collateral:
            assert (rise is not None) == (main.size < 0), t.account
    assert moves["rise"] >= 10 and moves["drop"] >= 10, moves
    adapter.publish(book, view)
    # Risk by index move, per block: what a 25 % WETH drop would liquidate (by the same
    # shock as the what-if), the bad debt it would leave, and the fund that pays it.
    at_risk = metric_value(metrics, "keeperd_perp_liquidated_notional_usd",
                           {"venue": "curie", "coin": "WETH", "move": "-0.25"})
    shocked = adapter.evaluate(book, prices={"WETH": 0.75 * devnet.price("WETH")})
    expected = sum(float(n) for n, h in zip(shocked.debt_usd, shocked.health, strict=True)
                   if h < 1)
    assert at_risk == pytest.approx(expected) and at_risk > 0
    assert metric_value(metrics, "keeperd_perp_bad_debt_usd",
                        {"venue": "curie", "coin": "WETH", "move": "-0.5"}) >= 0
    index = {b: m.index for b, m in book.markets.items()}
    hours = [cm.hours_to_maintenance(t, index) for t in book.traders]
    for within in (24, 72, 168):
        assert metric_value(metrics, "keeperd_perp_funding_to_maintenance_accounts",
                            {"venue": "curie", "within_hours": str(within)}) == sum(
            1 for h in hours if h is not None and h <= within)
    assert any(h is not None for h in hours)  # longs pay while the mark is over the index
    # What a watched trader's alert says of it: the same hours, and a sentence within a week.
    assert view.details is not None and view.notes is not None
    for i, h in enumerate(hours):
        assert view.details[i]["hours_to_maintenance_by_funding"] == (
            None if h is None else round(h, 1))
        assert bool(view.notes[i]) == (h is not None and h <= 168)
    risk = adapter.book_risk(book)
    assert risk.insurance_fund_usd is not None and risk.insurance_fund_usd >= 5_000_000
    assert len(risk.lines) == 4  # (three horizons, and the bad debt already realised)
    assert risk.outstanding_bad_debt_usd == 0.0  # (the seeded book: nobody below zero)


def test_keeperd_scan_lists_every_trader_with_its_margin(devnet: Devnet, tmp_path: Path
                                                        ) -> None:
    path = tmp_path / "curie.yaml"
    path.write_text(yaml.safe_dump(curie_config(devnet, tmp_path)))
    out = subprocess.run([sys.executable, "-m", "keeperd", "scan", "--config", str(path),
                          "--once", "--json"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=True)
    rows = {r["account"]: r for r in json.loads(out.stdout) if r["protocol"] == "curie"}
    curie = devnet.manifest["perp_curie"]
    for plan in devnet.manifest["perp_traders"]:
        row = rows[plan["address"]]
        av = chain_view(devnet, curie["clearing_house"], "ClearingHouse", "getAccountValue",
                        plan["address"])
        mm = chain_view(devnet, curie["account_balance"], "AccountBalance",
                        "getMarginRequirementForLiquidation", plan["address"])
        assert row["account_value_usd"] == av / 10**18  # the view, divided by 1e18
        assert row["maintenance_margin_usd"] == mm / 10**18
        assert row["margin_ratio"] > 0.0625
        assert {p["market"] for p in row["positions"]} == {
            {"WETH": "vETH", "WBTC": "vBTC"}[a] for a in plan["positions"]}
        for p in row["positions"]:
            assert p["notional_usd"] > 0 and p["liquidation_price"] is not None


@pytest.mark.slow
async def test_a_weth_drop_walks_the_mark_and_keeperd_sees_who_is_liquidatable(
        devnet: Devnet, pool: RpcPool, tmp_path: Path, metrics: Metrics) -> None:
    price = devnet.price("WETH")
    target = price * 0.8
    adapter, before = await read_book(devnet, pool, tmp_path / "a", metrics)
    predicted = adapter.evaluate(before, prices={"WETH": target})
    devnet.set_price("WETH", target, walk_perps=True)
    settle_collateral_twap(devnet)
    _, after = await read_book(devnet, pool, tmp_path / "b", metrics)
    weth = next(m for m in after.markets.values() if m.asset == "WETH")
    assert weth.mark / 1e18 == pytest.approx(target, rel=3e-3)
    assert weth.index / 1e18 == pytest.approx(target, rel=1e-6)
    traders = [t.account for t in after.traders]
    on_chain = chain_liquidatable(devnet, traders)
    view = adapter.evaluate(after)
    ours = {t for t, h in zip(view.accounts, view.health, strict=True) if h < 1}
    assert ours == on_chain and len(on_chain) >= 10
    # WETH margin liquidatable by the vault: keeperd's reading of its rules agrees with the
    # vault on every trader, some of them so.
    by_vault = {t.account for t in after.traders if t.collateral_liquidatable}
    assert after.collateral_rules is not None
    assert by_vault == {t.account for t in after.traders if t.collateral and cm.collateral_health(
        t, after.collateral_rules, after.mm_ratio) < 1}
    assert by_vault and by_vault <= on_chain
    # The what-if made before the move saw them coming (all but those within 2 % of the edge:
    # the walk's trades and funding move values a little).
    said = dict(zip(predicted.accounts, predicted.health, strict=True))
    now = dict(zip(view.accounts, view.health, strict=True))
    wrong = {t for t in said.keys() & now.keys()
             if (said[t] < 1) != (now[t] < 1) and abs(now[t] - 1) > 0.02}
    assert not wrong


def liquidations_on_chain(devnet: Devnet, since: int) -> list[dict[str, Any]]:
    from keeperd.protocols.perp_curie.adapter import POSITION_LIQUIDATED

    logs = devnet.client.call("eth_getLogs", {
        "fromBlock": hex(since), "toBlock": "latest",
        "address": devnet.manifest["perp_curie"]["clearing_house"],
        "topics": [POSITION_LIQUIDATED]})
    return [{"trader": "0x" + e["topics"][1][-40:], "liquidator": "0x" + e["data"][-40:],
             "block": int(e["blockNumber"], 16)} for e in logs]


def collateral_liquidations_on_chain(devnet: Devnet, since: int) -> list[dict[str, Any]]:
    from keeperd.protocols.perp_curie.adapter import COLLATERAL_LIQUIDATED

    logs = devnet.client.call("eth_getLogs", {
        "fromBlock": hex(since), "toBlock": "latest",
        "address": devnet.manifest["perp_curie"]["vault"], "topics": [COLLATERAL_LIQUIDATED]})
    return [{"trader": "0x" + e["topics"][1][-40:], "liquidator": "0x" + e["topics"][3][-40:]}
            for e in logs]


@pytest.mark.slow
async def test_a_weth_drop_is_liquidated_by_keeperd_and_what_it_took_over_is_unwound(
        devnet: Devnet, tmp_path: Path, run_daemon,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from tests.keeper_harness import (
    KEEPER,
)

    keeper = await run_daemon(parse_config(funded_curie_keeper(devnet, tmp_path,
                                                               monkeypatch)))
    curie = devnet.manifest["perp_curie"]
    while not chain_view(devnet, curie["vault"], "Vault", "getBalance", KEEPER):
        devnet.mine(1)  # (the margin deposited at start, before anything is taken over)
        await asyncio.sleep(0.1)
    # (read until it shows the deposit: anvil answers a view racing the block it mines from
    # a mix of the two — once under CI load the value before read 0, and the whole deposit
    # looked like a gain the journal had not booked)
    value_before = 0
    for _ in range(50):
        value_before = chain_view(devnet, curie["clearing_house"], "ClearingHouse",
                                  "getAccountValue", KEEPER)
        if value_before > 0:
            break
        await asyncio.sleep(0.1)
    assert value_before > 0
    start = devnet.client.block_number()
    traders = [t["address"] for t in devnet.manifest["perp_traders"]]
    # The walk mines blocks (the mark moves in steps); keeperd liquidates along the way.
    await asyncio.to_thread(devnet.set_price, "WETH", devnet.price("WETH") * 0.75,
                            walk_perps=True)
    await asyncio.to_thread(settle_collateral_twap, devnet)
    walked = devnet.client.block_number()
    deadline = asyncio.get_running_loop().time() + 60
    executor = keeper.daemon.executors["curie"]
    journal = executor.journal

    async def unprofitable(account: str) -> bool:
        """keeperd's own pricing of what it could do for `account` now (the executor's
        decide stage, at this block's fees) says it does not pay: a dust remnant."""
        plans = executor.liquidator.plan(executor._last, {account})
        base_fee = await executor._base_fee()
        native = executor.native_prices.get("devnet", 0.0)
        return bool(plans) and all(executor._decide(o, str(o.key), base_fee, native) is None
                                   for o in plans)

    with frozen_clock(devnet):  # (from the walk's end: see the amounts below)
        while True:
            devnet.mine(1)
            await keeper.evaluated_at(devnet.client.block_number(), protocol="curie")
            left = chain_liquidatable(devnet, traders)
            held = chain_view(devnet, curie["account_balance"], "AccountBalance", "getBaseTokens",
                              KEEPER)
            in_flight = await journal.by_status("pending")
            dust = {t for t in left if await unprofitable(t)}
            if left == dust and not held and not in_flight:
                break
            book = keeper.daemon.scanners["curie"].book
            assert asyncio.get_running_loop().time() < deadline, (len(left), held, [
                (t.account[-4:], len(t.positions), t.account_value / 1e18,
                 t.margin_requirement / 1e18, t.collateral_liquidatable,
                 [(c.amount, c.max_repaid) for c in t.collateral])
                for t in book.traders if t.account in left])
            await asyncio.sleep(0.2)
    done = liquidations_on_chain(devnet, start)
    liquidated = {d["trader"].lower() for d in done}
    assert len(liquidated) >= 10
    # What is left, keeperd's pricing showed unprofitable (a remnant of WETH margin worth
    # less than the gas and the minimum profit: each one checked above), and it is rare. How
    # many remnants a walk leaves depends on where the mark stood when each trader was
    # liquidated: 1 to 4 of 50 in 14 runs on 2026-12-04, the session's starting code
    # included (at 5 %, 2.5 allowed, one run in three failed on the count alone).
    assert len(dust) <= 0.1 * len(liquidated), dust
    # WETH margin sold for USDC debt, by keeperd, paid from its wallet.
    sold = collateral_liquidations_on_chain(devnet, start)
    assert sold and all(d["liquidator"] == KEEPER.lower() for d in sold)
    ours = [d for d in done if d["liquidator"].lower() == KEEPER.lower()]
    assert len(ours) >= 0.95 * len(done)
    # Never twice: one signed transaction per journal key, one liquidation per key on chain.
    keys = [e.key for e in await journal.all()
            if e.status == "included" and ":unwind:" not in e.key]
    assert len(keys) == len(set(keys)) == len(ours) + len(sold)
    # What it took over was closed (the loop above waited for the keeper to hold nothing),
    # by its own journaled unwinds; nothing keeperd sent reverted (each transaction carries
    # the gas its simulation measured).
    unwinds = [e for e in await journal.all() if ":unwind:" in e.key]
    assert unwinds and all(e.status == "included" for e in unwinds), \
        [(e.key[-30:], e.status, e.detail) for e in unwinds]
    assert not [e.key for e in await journal.all() if e.status == "reverted"], [
        (e.key[-40:], e.detail) for e in await journal.all() if e.status == "reverted"]
    # (each with its reason, from the node's trace: a flake seen twice under load)
    # What it planned once the walk was over (the clock frozen from there) is what the
    # contracts did, to the unit. (During the walk the mark moves between a plan and its
    # inclusion by the walk's own trades — that is the scenario — and so do the amounts:
    # the SIGKILL test below checks a whole wave of takeovers exactly.)
    # What its takeovers and their unwinds were booked as, gas added back, is what they did to
    # the keeper's account in the Vault: the penalty's share, the unwinds' gain or loss and
    # the funding, to the cent a row (the journal keeps each figure to the cent). A takeover
    # was booked at half its penalty and an unwind at nothing, whatever closing cost.
    value_after = chain_view(devnet, curie["clearing_house"], "ClearingHouse",
                             "getAccountValue", KEEPER)
    positions = [e for e in await journal.all()
                 if e.status == "included" and ":collateral-" not in e.key]
    booked = sum((e.realised_profit_usd or 0.0) + gas_booked(e) for e in positions)
    assert booked == pytest.approx((value_after - value_before) / 1e18,
                                   abs=0.01 * len(positions)), [
        (e.key[-30:], e.realised_profit_usd, e.detail) for e in positions]
    # The margin the refill counts (deposit + owed realised PnL + pending fees) is, once the
    # keeper holds nothing, its account value: the unwinds' gains and losses are owed, not in
    # the deposit (which alone said the margin was whole).
    from keeperd.protocols.perp_curie.liquidator import settled_margin
    deposit = chain_view(devnet, curie["vault"], "Vault", "getBalance", KEEPER)
    pnl = chain_view3(devnet, curie["account_balance"], "AccountBalance",
                      "getPnlAndPendingFee", KEEPER)
    assert pnl[0] != 0  # (something is owed: the check below is not the deposit's alone)
    assert settled_margin(deposit, pnl) == value_after // 10**12
    planned_after = {e.key for e in await journal.all()
                     if e.detected_block >= walked and ":unwind:" not in e.key}
    after = [s for s in await sent_from_journal(journal) if s.key in planned_after]
    # (how many fall after the walk depends on how far keeperd kept up with it: 16-40 seen)
    assert_amounts_as_planned(devnet, after, 5)


@pytest.mark.slow
def test_curie_liquidations_pending_at_sigkill_are_resumed_never_sent_twice(
        devnet: Devnet, tmp_path: Path) -> None:
    """Killed the moment its first wave is in the mempool (tests/sigkill_harness.py): the
    restart resumes every liquidation instead of signing it again, and every one is included
    — none reverts: the block that includes them is at the time of the block they were
    planned on, so each trader's account value, the mark and the keeper's free collateral are
    what the plan saw — taking over the size, at the notional and for the penalty it said."""
    from keeperd.devnet.curie import deposit
    from tests.keeper_harness import KEEPER
    from tests.sigkill_harness import sigkill_after_broadcast_then_resume

    curie = devnet.manifest["perp_curie"]
    devnet.client.call("anvil_setBalance", KEEPER, hex(100 * 10**18))
    deposit(devnet.client, KEEPER, devnet.manifest["tokens"]["USDC"], curie["vault"],
            5_000_000)
    data = curie_config(devnet, tmp_path)
    data["protocols"][0]["keeper_margin_usd"] = 5_000_000
    data["keeper"] = {"mode": "liquidate", "min_profit_usd": 1.0,
                      "key": {"source": "env", "env": "KEEPER_KEY"}}
    killed = sigkill_after_broadcast_then_resume(
        devnet, tmp_path, data,
        lambda: devnet.set_price("WETH", devnet.price("WETH") * 0.75, walk_perps=True),
        is_liquidation=lambda key: ":unwind:" not in key, at_least=5)
    assert any("positionSize" in (s.planned or {}) for s in killed.wave)  # takeovers
    assert len(killed.journaled) > len(killed.wave)  # (and the rest after the restart)


async def test_the_cascade_engine_models_the_book_as_the_what_if_does(
        devnet: Devnet, pool: RpcPool, tmp_path: Path, metrics: Metrics) -> None:
    """`describe` maps the perp book onto the cascade engine's lending-shaped portfolio
    exactly: the accounts the engine's static round liquidates at each WETH drop are those
    whose margin the plug-in's own what-if (`margin.shocked`) puts under its requirement.
    (The vault's other rule — WETH margin sold when the USDC debt outgrows it — is not in the
    cascade model: the what-if's health, which has both, may say more. It showed once chain
    time had moved a quarter hour past the state — the vault's 15-minute TWAP — and so after
    the tests that walk Curie's mark; the rule compared here is the one the engine models.)"""
    from keeperd.protocols.perp_curie import margin as cm
    from keeperd.risk.cascade import run_cascade, shock_grid
    from keeperd.risk.depth import NoImpact

    adapter, book = await read_book(devnet, pool, tmp_path, metrics)
    portfolio, assets = adapter.describe(book)
    assert [a.symbol for a in assets] == ["WBTC", "WETH", "USD"]
    shocks = [0.05, 0.1, 0.2, 0.3, 0.4]
    columns = shock_grid(portfolio.assets, shocks, single=["WETH"])
    result = run_cascade(portfolio, columns, [NoImpact()] * len(assets), max_rounds=1)
    traders = [t for t in book.traders if t.positions]
    for k, shock in enumerate(shocks):
        under = []
        for t in traders:
            value, requirement = cm.shocked(t, {"WETH": 1 - shock}, book.mm_ratio)
            if value < requirement:
                under.append(t.account)
        assert int(result.static_accounts[k]) == len(under), (shock, len(under))
    assert int(result.static_accounts[-1]) > 0
    # The numeraire's scenario (USD -10 %: every asset up by 1/0.9, the shorts' squeeze)
    # moves the plug-in's what-if too, as every asset up by that much (it moved nothing: a
    # short's health unchanged under a squeeze, `keeperd simulate`'s alerts, a trial).
    squeeze = adapter.evaluate(book, {"USD": 0.9})
    up = adapter.evaluate(book, {a.symbol: a.price_usd / 0.9 for a in assets
                                 if not a.numeraire})
    today = adapter.evaluate(book)
    np.testing.assert_allclose(squeeze.health, up.health, rtol=1e-9)
    shorts = [i for i, t in enumerate(book.traders)
              if t.positions and all(p.size < 0 for p in t.positions)]
    assert shorts and all(squeeze.health[i] < today.health[i] for i in shorts)


async def test_unwinds_trade_against_the_markets_own_pools(
        devnet: Devnet, pool: RpcPool, tmp_path: Path, metrics: Metrics) -> None:
    """The cascade's depth for Curie is each market's own vBase/vUSD pool (where the
    liquidator unwinds), read at the block: its virtual reserves price the base as the pool
    does, and selling into it deepens the drop (cascade >= static)."""
    from keeperd.risk.cascade import run_cascade, shock_grid
    from keeperd.risk.depth import ConstantProduct, NoImpact

    adapter, book = await read_book(devnet, pool, tmp_path, metrics)
    portfolio, assets = adapter.describe(book)
    depth = await adapter.cascade_depth(book, assets, book.block)
    weth = [a.symbol for a in assets].index("WETH")
    assert isinstance(depth[weth], ConstantProduct) and depth[weth].reserve_tokens > 0
    assert isinstance(depth[-1], NoImpact)  # USD
    assert adapter.pools[assets[weth].address] == devnet.manifest["perp_curie"]["pools"]["WETH"]
    result = run_cascade(portfolio, shock_grid(portfolio.assets, [0.2, 0.3], single=["WETH"]),
                         depth)
    assert (result.accounts >= result.static_accounts).all()
    assert (result.amplification >= 1.0 - 1e-9).all()


@pytest.mark.slow
async def test_weth_margin_is_bought_only_when_it_is_worth_what_the_vault_asks(
        devnet: Devnet, tmp_path: Path, run_daemon,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The vault sells a trader's WETH margin at its 15-minute TWAP less 10 %; in a crash the
    TWAP lags above the price WETH sells for. A by-hand trial's 18 collateral liquidations
    paid $63,348 for WETH worth $54,653, each planned as a profit and booked as its gas alone.
    Now a collateral liquidation is valued at the lower of the TWAP and the feed's latest,
    and its realised profit is the WETH at the latest price less the USDC paid."""
    import asyncio

    from keeperd.execution import journal as J
    from tests.keeper_harness import KEEPER

    keeper = await run_daemon(parse_config(funded_curie_keeper(devnet, tmp_path,
                                                               monkeypatch)))
    start = devnet.client.block_number()
    # The crash, the vault's TWAP left behind it.
    await asyncio.to_thread(devnet.set_price, "WETH", devnet.price("WETH") * 0.75,
                            walk_perps=True)
    spot = devnet.price("WETH")
    for _ in range(3):
        await keeper.evaluated_at(devnet.mine(1), protocol="curie")
    book = keeper.daemon.scanners["curie"].book
    lagging = [(t.account, c) for t in book.traders for c in t.collateral
               if t.collateral_liquidatable and c.max_repaid > 0]
    assert lagging and all(c.spot_price < c.price for _, c in lagging)
    # What the vault would sell at a loss, at the TWAP's price alone a profit: the bait.
    at_a_loss = [c for _, c in lagging
                 if c.max_liquidatable / 1e18 * spot < c.max_repaid / 1e6
                 < cm.CurieCollateral(c.token, c.asset, c.max_liquidatable, c.decimals,
                                      c.price, c.price_decimals, c.ratio).value / 1e18]
    assert at_a_loss

    def bought(since: int) -> list[tuple[float, float, str]]:
        """(WETH taken, USDC paid, its transaction) of each of the keeper's collateral
        liquidations."""
        logs = devnet.client.call("eth_getLogs", {
            "fromBlock": hex(since), "toBlock": "latest",
            "address": devnet.manifest["perp_curie"]["vault"],
            "topics": [COLLATERAL_TOPIC, None, None, "0x" + KEEPER[2:].lower().rjust(64, "0")]})
        out = []
        for e in logs:
            words = [int(e["data"][2 + 64 * i: 66 + 64 * i], 16) for i in range(3)]
            out.append((words[0] / 1e18, (words[1] + words[2]) / 1e6, e["transactionHash"]))
        return out

    assert all(taken * spot >= paid for taken, paid, _ in bought(start)), bought(start)
    # Once the TWAP has caught up, the same margin is worth buying, and booked at its worth.
    settle_collateral_twap(devnet)
    settled = devnet.client.block_number()
    for _ in range(4):
        await keeper.evaluated_at(devnet.mine(1), protocol="curie")
    after = bought(settled)
    assert after, "no collateral liquidation once the TWAP caught up"
    assert all(taken * spot >= paid for taken, paid, _ in after)
    journal = keeper.daemon.executors["curie"].journal
    for _ in range(5):  # (the last block's settled)
        if not await journal.by_status(J.PENDING):
            break
        await keeper.evaluated_at(devnet.mine(1), protocol="curie")
    sold = [e for e in await journal.all()
            if "collateral-" in e.key and e.status == J.INCLUDED]
    assert len(sold) == len(bought(start))
    booked = sum(e.realised_profit_usd or 0.0 for e in sold)
    worth = sum(taken * spot - paid for taken, paid, _ in bought(start))
    gas = 0.0  # (each one's, in ETH at WETH's price)
    for *_, tx_hash in bought(start):
        receipt = devnet.client.call("eth_getTransactionReceipt", tx_hash)
        gas += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16) / 1e18 * spot
    assert booked == pytest.approx(worth - gas, abs=0.01 * len(sold)), (booked, worth, gas)


COLLATERAL_TOPIC = "0x" + __import__("eth_utils").keccak(
    text="CollateralLiquidated(address,address,address,uint256,uint256,uint256,uint24)").hex()


async def test_the_collateral_managers_rules_are_read_again(
        devnet: Devnet, pool: RpcPool, tmp_path: Path, metrics: Metrics,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Governance changes the CollateralManager's debt threshold: keeperd's health figures of
    non-USDC margin follow (read at start only, they kept the old rules until a restart, a
    by-hand trial). Read again every COLLATERAL_RULES_EVERY blocks; a change is logged."""
    import structlog

    from keeperd.protocols.perp_curie import adapter as curie_adapter

    monkeypatch.setattr(curie_adapter, "COLLATERAL_RULES_EVERY", 1)
    reader, book = await read_book(devnet, pool, tmp_path, metrics)
    assert book.collateral_rules is not None
    threshold = book.collateral_rules.debt_threshold
    manager = devnet.manifest["perp_curie"]["collateral_manager"]
    art = artifact("CollateralManager")
    devnet.client.send(devnet.client.accounts()[0], manager,
                       art.encode_call("setDebtThreshold", threshold // 2))
    with structlog.testing.capture_logs() as logs:
        head = devnet.mine(1)
        again = await reader.read(head, book, set(), set())
    assert again.collateral_rules is not None
    assert again.collateral_rules.debt_threshold == threshold // 2
    [changed] = [e for e in logs if e["event"] == "curie.collateral_rules_changed"]
    assert changed["block"] == head


async def test_curies_second_reading_is_the_contracts_margin_ratio(
        devnet: Devnet, pool: RpcPool, tmp_path: Path, metrics: Metrics) -> None:
    """Perp Curie's second reading (`health_elsewhere`): each account's value over its margin
    requirement for liquidation, asked of the endpoint given — keeperd's own figure, or a
    lower one where the account's WETH margin has its own rule (never higher: a disagreement
    is a lie or a lag)."""
    reader, book = await read_book(devnet, pool, tmp_path, metrics)
    view = reader.evaluate(book)
    traders = [t for t in book.traders if t.positions][:10]
    found = await reader.health_elsewhere(book, [t.account for t in traders],
                                          pool.endpoints[0])
    assert found is not None and set(found) == {t.account for t in traders}
    for t in traders:
        mine = float(view.health[view.accounts.index(t.account)])
        if t.collateral:
            assert found[t.account] >= mine * (1 - 1e-12), t.account
        else:
            assert found[t.account] == pytest.approx(mine, rel=1e-12), t.account
