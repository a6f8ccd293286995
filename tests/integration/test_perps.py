"""Perp venues end to end: Hyperliquid served from its recorded answers, dYdX v4 from its
documented format; `keeperd scan` shows them beside the devnet's Aave V3 accounts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from keeperd.config import parse_config
from keeperd.devnet.handle import Devnet
from keeperd.protocols.perps.http import VenueClient, VenueError
from keeperd.protocols.perps.venues import fetch_accounts
from tests.conftest import metric_value, serve
from tests.venue_fakes import HL_USER, dydx_app, hyperliquid_app

ROOT = Path(__file__).resolve().parents[2]
DYDX_ADDRESS = "dydx1" + "q" * 38

# dYdX v4 indexer answers in the documented shape (no recording exists here; values made up).
DYDX_MARKETS = {"BTC-USD": {
    "ticker": "BTC-USD", "status": "ACTIVE", "oraclePrice": "60000", "priceChange24H": "0",
    "nextFundingRate": "0.00001", "initialMarginFraction": "0.05",
    "maintenanceMarginFraction": "0.03", "openInterest": "100", "atomicResolution": -10}}
DYDX_SUBACCOUNT = {
    "address": DYDX_ADDRESS, "subaccountNumber": 0, "equity": "5000", "freeCollateral": "2000",
    "marginEnabled": True, "assetPositions": {"USDC": {"size": "-55000", "symbol": "USDC",
                                                       "side": "SHORT", "assetId": "0"}},
    "openPerpetualPositions": {"BTC-USD": {
        "market": "BTC-USD", "status": "OPEN", "side": "LONG", "size": "1", "maxSize": "1",
        "entryPrice": "58000", "exitPrice": None, "realizedPnl": "0", "unrealizedPnl": "2000",
        "createdAt": "2024-01-01T00:00:00.000Z", "createdAtHeight": "1", "sumOpen": "1",
        "sumClose": "0", "netFunding": "0", "subaccountNumber": 0}}}


async def test_venue_client_retries_rate_limits_and_gives_up_clearly() -> None:
    calls: list[dict[str, Any]] = []
    script = [lambda: web.Response(status=429, text="rate limited"),
              lambda: web.Response(status=502, text="bad gateway")]
    async with serve(hyperliquid_app(calls, script)) as url, aiohttp.ClientSession() as s:
        client = VenueClient(s, url, rate_limit=50, max_attempts=4, timeout_s=5)
        started = time.monotonic()
        meta = await client.request("POST", "/info", {"type": "meta"})
        assert meta["universe"][0]["name"] == "BTC" and len(calls) == 3
        assert time.monotonic() - started >= 2 / 50  # the request budget spaced them
        with pytest.raises(VenueError, match="HTTP 422"):
            await client.request("POST", "/info", {"type": "nonsense"})
        dead = VenueClient(s, "http://127.0.0.1:9", rate_limit=50, max_attempts=2,
                           timeout_s=1)
        with pytest.raises(VenueError, match="gave up after 2 attempts"):
            await dead.request("POST", "/info", {"type": "meta"})


async def test_accounts_from_both_venues() -> None:
    async with serve(hyperliquid_app()) as hl, \
            serve(dydx_app(DYDX_MARKETS, {(DYDX_ADDRESS, 0): DYDX_SUBACCOUNT})) as dy:
        config = parse_config({
            "state_dir": "/tmp/unused", "chains": [{"name": "x", "chain_id": 1,
                                                    "rpc_urls": ["http://127.0.0.1:1"]}],
            "protocols": [
                {"kind": "hyperliquid", "api_url": hl, "rate_limit": 100,
                 "accounts": [HL_USER, "0x" + "11" * 20],
                 "liquidation_rule": "fixed-maintenance"},
                {"kind": "dydx_v4", "indexer_url": dy, "accounts": [DYDX_ADDRESS]}]}, env={})
        async with aiohttp.ClientSession() as session:
            hl_accounts = await fetch_accounts(config.perp_venues[0], session)
            dy_accounts = await fetch_accounts(config.perp_venues[1], session)
    recorded, empty = hl_accounts
    assert len(recorded.positions) == 12 and empty.positions == ()
    [btc] = dy_accounts[0].positions
    assert btc.size == 1.0 and btc.mark_price == 60000 and btc.maintenance_fraction == 0.03
    account = dy_accounts[0]
    assert account.health == pytest.approx(5000 / 1800)
    # long 1 BTC: equity 5000, maintenance 1800 -> falls 3200 / (1 x 0.97) before liquidation
    assert account.liquidation_price(btc) == pytest.approx(60000 - 3200 / 0.97)
    assert btc.funding_per_hour == pytest.approx(0.6)


def test_scan_shows_aave_morpho_and_hyperliquid_in_one_table(devnet: Devnet,
                                                             tmp_path: Path) -> None:
    async def run() -> subprocess.CompletedProcess[str]:
        async with serve(hyperliquid_app()) as hl:
            config = {
                "state_dir": str(tmp_path / "state"),
                "chains": [{"name": "devnet", "chain_id": 31337,
                            "rpc_urls": [devnet.manifest["rpc_url"]], "confirmations": 0}],
                "protocols": [
                    {"kind": "aave_v3", "name": "aave", "chain": "devnet",
                     "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]},
                    {"kind": "morpho_blue", "name": "morpho", "chain": "devnet",
                     "morpho": devnet.manifest["morpho_blue"]["morpho"],
                     "markets": [m["id"] for m in
                                 devnet.manifest["morpho_blue"]["markets"].values()]},
                    {"kind": "hyperliquid", "api_url": hl, "accounts": [HL_USER],
                     "liquidation_rule": "fixed-maintenance"}],
            }
            path = tmp_path / "keeperd.yaml"
            path.write_text(yaml.safe_dump(config))
            return await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "keeperd", "scan", "--config",
                                 str(path), "--once", "--json"],
                cwd=ROOT, capture_output=True, text=True, timeout=120)

    result = asyncio.run(run())
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["protocol"] for r in rows} == {"aave", "morpho", "hyperliquid"}
    blue = [r for r in rows if r["protocol"] == "morpho"]
    assert len(blue) == len(devnet.manifest["morpho_blue"]["borrowers"])
    assert {r["market"] for r in blue} == {"WETH/USDC", "WBTC/DAI"}
    assert all(r["health_factor"] > 1.0 for r in blue)
    [perp] = [r for r in rows if r["protocol"] == "hyperliquid"]
    assert perp["account"].lower() == HL_USER
    assert perp["margin_ratio"] == pytest.approx(34.34815334 / 1182.312496, rel=1e-8)
    by_coin = {p["coin"]: p for p in perp["positions"]}
    assert by_coin["BTC"]["size"] == -0.00785
    assert by_coin["BTC"]["mark_price"] == pytest.approx(26961.2, rel=1e-6)
    assert by_coin["BTC"]["liquidation_price"] == pytest.approx(173198.69592357, rel=1e-8)
    assert by_coin["ETH"]["liquidation_price"] is None
    # ... and the table, without --json, lists the three protocols side by side.
    table = subprocess.run([sys.executable, "-m", "keeperd", "scan", "--config",
                            str(tmp_path / "keeperd.yaml"), "--once", "--limit", "0",
                            "--protocol", "morpho", "--protocol", "aave"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0
    assert {line.split()[0] for line in table.stdout.splitlines()[2:] if line.strip()
            and not line.startswith(("...", " "))} >= {"morpho", "aave"}


def venue_config(devnet: Devnet, tmp_path: Path, venue: dict[str, Any],
                 hook: str | None = None, alerts: dict[str, Any] | None = None) -> Any:
    """The devnet's chain and one Hyperliquid venue watching HL_USER (`venue`: its API and
    polling); with `hook`, alerts to that webhook (`alerts`: the rest of the section)."""
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]], "confirmations": 0,
                    "poll_interval": 0.2}],
        "protocols": [{"kind": "hyperliquid", "accounts": [HL_USER], **venue}],
        "metrics": {"enabled": False}}
    if hook is not None:
        data["alerts"] = {"routes": [{"name": "ops", "sinks": [
            {"kind": "webhook", "url": f"{hook}/hook", "secret": "${WEBHOOK_SECRET}"}]}],
            **(alerts or {})}
    return parse_config(data, env={"WEBHOOK_SECRET": "s" * 32})


async def test_daemon_watches_a_perp_account_alerts_and_exports_open_interest_at_risk(
        devnet: Devnet, tmp_path: Path) -> None:
    from keeperd.daemon import Daemon
    from keeperd.metrics import Metrics
    from tests.alert_fakes import Recorder, webhook_app
    from tests.conftest import metric_value

    rec = Recorder()
    async with serve(hyperliquid_app()) as hl, serve(webhook_app(rec)) as hook:
        config = venue_config(
            devnet, tmp_path, {"api_url": hl, "poll_interval_s": 0.5,
                               "liquidation_rule": "fixed-maintenance"},
            hook, {"watchlists": [{"name": "trader", "accounts": [HL_USER], "warn": 40.0,
                                   "critical": 35.0, "route": "ops"}]})
        metrics = Metrics()
        daemon = Daemon(config, metrics=metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            deadline = time.monotonic() + 20
            while not [e for e in rec.accepted if e["body"]["rule"] == "position_health"]:
                assert time.monotonic() < deadline, "no perp alert"
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    [alert] = [e["body"] for e in rec.accepted if e["body"]["rule"] == "position_health"]
    assert alert["protocol"] == "hyperliquid" and alert["severity"] == "critical"
    assert alert["account"].lower() == HL_USER
    assert alert["health_factor"] == pytest.approx(1182.312496 / 34.34815334, rel=1e-6)
    assert "APE liquidated at 12.58" in alert["summary"]  # the largest positions are named
    # A 600 % rise of BTC would cross the short's liquidation price (173,199 from 26,961):
    # not on the grid; DYDX's short liquidates at +400 %: neither. A 50 % move takes nothing.
    assert metric_value(metrics, "keeperd_perp_liquidated_notional_usd",
                        {"venue": "hyperliquid", "coin": "BTC", "move": "0.5"}) == 0.0
    assert metric_value(metrics, "keeperd_perp_notional_usd",
                        {"venue": "hyperliquid", "coin": "BTC"}) == pytest.approx(211.64542)
    assert metric_value(metrics, "keeperd_perp_accounts_below",
                        {"venue": "hyperliquid", "below": "1"}) == 0


def test_check_config_reads_the_venues(tmp_path: Path) -> None:
    async def run() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        async with serve(hyperliquid_app()) as hl:
            def write(accounts: list[str], url: str) -> Path:
                path = tmp_path / f"c{len(accounts)}{len(url)}.yaml"
                path.write_text(yaml.safe_dump({
                    "state_dir": str(tmp_path / "state"),
                    "chains": [{"name": "x", "chain_id": 31337,
                                "rpc_urls": ["http://127.0.0.1:9"]}],
                    "protocols": [{"kind": "hyperliquid", "api_url": url, "accounts": accounts,
                                   "max_attempts": 1}]}))
                return path

            typo = "0x" + "12" * 20
            cmd = [sys.executable, "-m", "keeperd", "check-config"]
            found = await asyncio.to_thread(
                subprocess.run, [*cmd, str(write([HL_USER, typo], hl))], cwd=ROOT,
                capture_output=True, text=True, timeout=120)
            dead = await asyncio.to_thread(
                subprocess.run, [*cmd, str(write([HL_USER], "http://127.0.0.1:9"))], cwd=ROOT,
                capture_output=True, text=True, timeout=120)
            return found, dead

    found, dead = asyncio.run(run())
    # The chain's RPC is dead in both (reported), and the venue checks run regardless.
    assert found.returncode == 2
    assert "protocols[0].accounts[1]" in found.stderr and "no positions" in found.stderr
    assert "protocols[0].accounts[0]" not in found.stderr
    assert "protocols[0].api_url" in dead.stderr and "did not answer" in dead.stderr


async def test_the_venues_own_maintenance_figure_is_compared_and_a_mismatch_counted() -> None:
    """Today's clearinghouseState states `crossMaintenanceMarginUsed`; the 2023 recording does
    not, so the field is added here: first equal to keeperd's tier arithmetic on that account
    (no mismatch), then 10 % off (one, counted and logged)."""
    from keeperd.metrics import Metrics
    from keeperd.protocols.perps.monitor import PerpMonitor

    async def poll(fields: dict[str, Any] | None) -> tuple[Metrics, Any]:
        metrics = Metrics()
        async with serve(hyperliquid_app(state_fields=fields)) as hl:
            config = parse_config({
                "state_dir": "/tmp/unused", "chains": [{"name": "x", "chain_id": 1,
                                                        "rpc_urls": ["http://127.0.0.1:1"]}],
                "protocols": [{"kind": "hyperliquid", "api_url": hl, "rate_limit": 100,
                               "accounts": [HL_USER]}]}, env={})
            monitor = PerpMonitor(config.perp_venues[0], metrics)
            try:
                [account] = await monitor.poll()
            finally:
                await monitor.close()
        return metrics, account

    metrics, account = await poll(None)
    labels = {"venue": "hyperliquid"}
    assert metric_value(metrics, "keeperd_perp_maintenance_mismatch_total", labels) == 0
    ours = account.maintenance_margin
    metrics, _ = await poll({"crossMaintenanceMarginUsed": f"{ours:.6f}"})
    assert metric_value(metrics, "keeperd_perp_maintenance_mismatch_total", labels) == 0
    metrics, _ = await poll({"crossMaintenanceMarginUsed": f"{ours * 1.1:.6f}"})
    assert metric_value(metrics, "keeperd_perp_maintenance_mismatch_total", labels) == 1


async def test_dydx_isolated_positions_come_with_their_parent() -> None:
    """The front end opens isolated positions in child subaccounts (128 + n): asking the
    indexer for the parent subaccount brings them; each is its own isolated account."""
    isolated = {**DYDX_SUBACCOUNT, "subaccountNumber": 128, "equity": "800",
                "freeCollateral": "500",
                "openPerpetualPositions": {"BTC-USD": {
                    **DYDX_SUBACCOUNT["openPerpetualPositions"]["BTC-USD"],  # type: ignore[index]
                    "side": "SHORT", "size": "0.1", "entryPrice": "61000",
                    "unrealizedPnl": "100", "subaccountNumber": 128}}}
    empty_slot = {**DYDX_SUBACCOUNT, "subaccountNumber": 256, "equity": "0",
                  "freeCollateral": "0", "openPerpetualPositions": {}}
    subaccounts = {(DYDX_ADDRESS, 0): DYDX_SUBACCOUNT, (DYDX_ADDRESS, 128): isolated,
                   (DYDX_ADDRESS, 256): empty_slot}
    async with serve(dydx_app(DYDX_MARKETS, subaccounts)) as dy:
        config = parse_config({
            "state_dir": "/tmp/unused", "chains": [{"name": "x", "chain_id": 1,
                                                    "rpc_urls": ["http://127.0.0.1:1"]}],
            "protocols": [{"kind": "dydx_v4", "indexer_url": dy,
                           "accounts": [DYDX_ADDRESS]}]}, env={})
        async with aiohttp.ClientSession() as session:
            accounts = await fetch_accounts(config.perp_venues[0], session)
    cross, child = accounts
    assert cross.account == DYDX_ADDRESS and cross.extra["margin_mode"] == "cross"
    assert child.account == f"{DYDX_ADDRESS}/128" and child.extra["margin_mode"] == "isolated"
    [short] = child.positions
    assert short.margin_mode == "isolated" and short.size == -0.1
    assert short.isolated_margin == pytest.approx(700.0)  # equity less unrealised PnL
    # Its liquidation price rests on its own margin only, above the mark for a short.
    price = child.liquidation_price(short)
    assert price is not None and price > 60_000



async def test_hyperliquid_builder_dexes_are_read_with_their_own_markets() -> None:
    """HIP-3: a builder-deployed dex has its own meta and clearinghouse state, asked for with
    `dex`. No recording exists here: the answers below follow the documented shapes."""
    meta = {"universe": [{"name": "xyz:GOLD", "szDecimals": 2, "maxLeverage": 10,
                          "marginTableId": 10}], "marginTables": []}
    state = {"assetPositions": [{"position": {
        "coin": "xyz:GOLD", "entryPx": "2400.0", "leverage": {"type": "cross", "value": 5},
        "liquidationPx": None, "marginUsed": "4800.0", "positionValue": "24000.0",
        "szi": "10.0", "unrealizedPnl": "0.0"}, "type": "oneWay"}],
        "crossMarginSummary": {"accountValue": "6000.0", "totalMarginUsed": "4800.0",
                               "totalNtlPos": "24000.0", "totalRawUsd": "-18000.0"},
        "marginSummary": {"accountValue": "6000.0", "totalMarginUsed": "4800.0",
                          "totalNtlPos": "24000.0", "totalRawUsd": "-18000.0"},
        "withdrawable": "1200.0"}
    async with serve(hyperliquid_app(dexes={"xyz": (meta, state)})) as hl:
        config = parse_config({
            "state_dir": "/tmp/unused", "chains": [{"name": "x", "chain_id": 1,
                                                    "rpc_urls": ["http://127.0.0.1:1"]}],
            "protocols": [{"kind": "hyperliquid", "api_url": hl, "rate_limit": 100,
                           "accounts": [HL_USER], "dexes": ["xyz"]}]}, env={})
        async with aiohttp.ClientSession() as session:
            main, builder = await fetch_accounts(config.perp_venues[0], session)
    assert main.account.lower() == HL_USER and len(main.positions) == 12
    assert builder.account.lower() == f"{HL_USER}@xyz"
    [gold] = builder.positions
    assert gold.coin == "xyz:GOLD" and gold.notional == pytest.approx(24_000.0)
    # Its own market's leverage: 10x -> maintenance 5 % of the notional.
    assert builder.maintenance_margin == pytest.approx(1_200.0)
    assert builder.health == pytest.approx(6_000.0 / 1_200.0)


async def test_a_monitor_keeps_its_venue_client_across_polls() -> None:
    """The venue's client lives as long as its monitor: a request type the venue does not
    serve (the recording has no `metaAndAssetCtxs`; the venue answers 422) is asked once, not
    at every poll, and the rate limit spans the polls (4 requests a second over all of them; a
    client made anew each poll started a fresh bucket)."""
    from keeperd.metrics import Metrics
    from keeperd.protocols.perps.monitor import PerpMonitor

    asked: list[dict[str, Any]] = []
    async with serve(hyperliquid_app(log=asked)) as hl:
        config = parse_config({
            "state_dir": "/tmp/unused", "chains": [{"name": "x", "chain_id": 1,
                                                    "rpc_urls": ["http://127.0.0.1:1"]}],
            "protocols": [{"kind": "hyperliquid", "api_url": hl, "rate_limit": 4,
                           "accounts": [HL_USER]}]}, env={})
        monitor = PerpMonitor(config.perp_venues[0], Metrics())
        try:
            started = time.monotonic()
            for _ in range(4):
                [account] = await monitor.poll()
            took = time.monotonic() - started
        finally:
            await monitor.close()
    kinds = [body["type"] for body in asked]
    assert kinds.count("metaAndAssetCtxs") == 1, kinds
    assert kinds.count("meta") == kinds.count("clearinghouseState") == 4
    assert took >= 0.9 * (len(asked) - 1) / 4  # one request at once, then 4 a second
    assert account.positions


async def test_a_venue_that_does_not_answer_is_alerted_by_the_daemon(
        devnet: Devnet, tmp_path: Path) -> None:
    """A by-hand trial: a watched Hyperliquid account behind an API that did not answer was a
    log line and a counter — /readyz ready, no alert — for as long as it lasted."""
    from keeperd.daemon import Daemon
    from keeperd.metrics import Metrics
    from tests.alert_fakes import Recorder, webhook_app

    rec = Recorder()
    async with serve(webhook_app(rec)) as hook:
        config = venue_config(
            devnet, tmp_path, {"api_url": "http://127.0.0.1:9", "poll_interval_s": 0.2,
                               "timeout_s": 0.5},
            hook, {"rules": {"venue_down": {"after_s": 0.5}}})
        daemon = Daemon(config, metrics=Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.ready.wait(), 30)
            deadline = time.monotonic() + 20
            while not [e for e in rec.accepted if e["body"]["rule"] == "venue_down"]:
                assert time.monotonic() < deadline, "no venue_down alert"
                await daemon._alert_tick()
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    [alert] = [e["body"] for e in rec.accepted if e["body"]["rule"] == "venue_down"]
    assert alert["severity"] == "critical" and "hyperliquid" in alert["summary"]


async def test_a_stop_during_a_venue_poll_logs_no_error(
        devnet: Devnet, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A trial: each stop that caught a poll under way logged apscheduler's "Job ... raised an
    exception" with a CancelledError traceback, at error level."""
    import logging

    from aiohttp import web

    from keeperd.daemon import Daemon
    from keeperd.metrics import Metrics

    polled, release = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        polled.set()
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/info", hang)
    async with serve(app) as url:
        config = venue_config(devnet, tmp_path, {"api_url": url, "poll_interval_s": 0.2,
                                                 "timeout_s": 20})
        daemon = Daemon(config, metrics=Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        with caplog.at_level(logging.WARNING):
            await asyncio.wait_for(polled.wait(), 30)
            stop.set()
            await asyncio.wait_for(task, 15)
        release.set()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def poll_into_alerts(tmp_path: Path, venue: dict[str, Any], watch: list[str],
                           warn: float, critical: float) -> Any:
    """A venue's monitor feeding a real alert engine (SQLite state, the outbox read back),
    its watchlist `alice` watching `watch`."""
    from keeperd.protocols.perps.monitor import PerpMonitor
    from tests.unit.test_alert_engine import Setup, alerts_config

    setup = await Setup.open(tmp_path / "state.db", alerts_config(watchlists=[
        {"name": "alice", "accounts": watch, "warn": warn, "critical": critical,
         "route": "people"}], rules={"venue_down": {"route": "people"}}))
    config = parse_config({
        "state_dir": "/tmp/unused", "chains": [{"name": "x", "chain_id": 1,
                                                "rpc_urls": ["http://127.0.0.1:1"]}],
        "protocols": [{"rate_limit": 100, "accounts": watch, **venue}]}, env={})
    setup.monitor = PerpMonitor(config.perp_venues[0], setup.metrics, setup.engine)
    return setup


async def told(setup: Any) -> list[tuple[str, str, str]]:
    """(rule, status, summary) of every alert told, oldest first (the webhook's entries)."""
    return [(e.alerts[0]["rule"], e.status, e.alerts[0]["summary"])
            for e in await setup.entries(sink=1)]


async def tick_later(setup: Any, seconds: float) -> None:
    """The engine's tick `seconds` after now (the monitor dates its unread by wall clock)."""
    setup.clock.now = time.time() + seconds
    venue = setup.monitor.config.name
    await setup.engine.tick(rpc_healthy={}, index_lag={}, keeper_balance={},
                            venues_failing={venue: setup.monitor.failing},
                            venues_unread={venue: setup.monitor.unread})


@pytest.mark.parametrize("mark", ["NaN", "-3000", "Infinity", "0"])
async def test_a_mark_that_cannot_be_keeps_the_hyperliquid_alert_and_says_so(
        tmp_path: Path, mark: str) -> None:
    """(An audit: one coin's `"markPx": "NaN"` in the shared metaAndAssetCtxs made every
    watched account holding it read "margin health ∞": its critical alert resolved as
    "recovered", and the poll counted ok, so venue_down never fired.)"""
    from tests.venue_fakes import asset_contexts, recorded

    contexts = asset_contexts()
    btc = [c["name"] for c in recorded("meta_2023-07-17.json")["universe"]].index("BTC")
    async with serve(hyperliquid_app(contexts=contexts)) as hl:
        setup = await poll_into_alerts(tmp_path, {"kind": "hyperliquid", "api_url": hl},
                                       [HL_USER], warn=40.0, critical=35.0)
        try:
            [account] = await setup.monitor.poll()  # health 34.4: critical
            assert [(r, s) for r, s, _ in await told(setup)] == [("position_health", "firing")]
            contexts[btc]["markPx"] = mark  # the account holds BTC (short 0.00785)
            assert await setup.monitor.poll() == []
            assert [s for _, s, _ in await told(setup)] == ["firing"]  # not resolved
            [(_, why)] = setup.monitor.unread.values()
            assert "metaAndAssetCtxs BTC.markPx" in why
            assert metric_value(setup.metrics, "keeperd_perp_accounts_unread",
                                {"venue": "hyperliquid"}) == 1
            await tick_later(setup, 1)
            assert len(await told(setup)) == 1  # not before venue_down.after_s (120 s)
            await tick_later(setup, 121)
            rule, status, summary = (await told(setup))[-1]
            assert (rule, status) == ("venue_down", "firing")
            assert HL_USER in summary.lower() and "BTC.markPx" in summary
            # The venue's mark reads again: the account is evaluated (its alert, never
            # resolved, fires on: repeated, the clock 2 minutes on), venue_down resolves.
            contexts[btc]["markPx"] = asset_contexts()[btc]["markPx"]
            [again] = await setup.monitor.poll()
            assert again.health == pytest.approx(account.health)
            await tick_later(setup, 122)
            assert [(r, s) for r, s, _ in await told(setup) if s == "resolved"] == [
                ("venue_down", "resolved")]
            assert "every watched account reads" in (await told(setup))[-1][2]
        finally:
            await setup.monitor.close()


async def test_one_malformed_account_leaves_the_others_read(tmp_path: Path) -> None:
    """(An audit: one user's `assetPositions: null` threw for the whole poll: every account
    of the venue skipped, and venue_down fired saying the venue failed.)"""
    from tests.venue_fakes import EMPTY_STATE

    other = "0x" + "11" * 20
    async with serve(hyperliquid_app(states={other: {**EMPTY_STATE, "assetPositions": None}})
                     ) as hl:
        setup = await poll_into_alerts(tmp_path, {"kind": "hyperliquid", "api_url": hl},
                                       [HL_USER, other], warn=40.0, critical=35.0)
        try:
            [account] = await setup.monitor.poll()
        finally:
            await setup.monitor.close()
    assert account.account.lower() == HL_USER and setup.monitor.failing is None
    assert [a.lower() for a in setup.monitor.unread] == [other]
    [(_, why)] = setup.monitor.unread.values()
    assert "assetPositions" in why
    assert [(r, s) for r, s, _ in await told(setup)] == [("position_health", "firing")]


@pytest.mark.parametrize(("field", "value"), [
    ("maintenanceMarginFraction", "-0.03"), ("maintenanceMarginFraction", "NaN"),
    ("maintenanceMarginFraction", "0"), ("oraclePrice", "NaN"), ("oraclePrice", "-60000")])
async def test_a_dydx_market_number_that_cannot_be_keeps_the_alert_and_says_so(
        tmp_path: Path, field: str, value: str) -> None:
    """(An audit: dYdX's equity, oraclePrice and maintenanceMarginFraction went through
    float() unchecked: a negative or NaN fraction or price read "margin health ∞".)"""
    markets = json.loads(json.dumps(DYDX_MARKETS))
    async with serve(dydx_app(markets, {(DYDX_ADDRESS, 0): DYDX_SUBACCOUNT})) as dy:
        setup = await poll_into_alerts(tmp_path, {"kind": "dydx_v4", "indexer_url": dy},
                                       [DYDX_ADDRESS], warn=3.0, critical=2.9)
        try:
            assert await setup.monitor.poll()  # health 5000 / 1800 = 2.78
            assert [(r, s) for r, s, _ in await told(setup)] == [("position_health", "firing")]
            markets["BTC-USD"][field] = value
            assert await setup.monitor.poll() == []
            assert [s for _, s, _ in await told(setup)] == ["firing"]
            [(_, why)] = setup.monitor.unread.values()
            assert f"perpetualMarkets BTC-USD.{field}" in why
            await tick_later(setup, 121)
            rule, status, summary = (await told(setup))[-1]
            assert (rule, status) == ("venue_down", "firing") and DYDX_ADDRESS in summary
        finally:
            await setup.monitor.close()


# A key in the path, as QuickNode and others give them (`https://x.quiknode.pro/<token>/`).
VENUE_TOKEN = "qn5ecretT0ken9f3a"


async def malformed_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An answer aiohttp cannot parse: its ClientResponseError's text ends in `url='...'`,
    the whole URL asked, the key in its path with it."""
    await reader.read(1 << 16)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}")
    await writer.drain()
    writer.close()


def echoing_app() -> web.Application:
    """A 404 page that says the path it was asked (as many servers' do)."""
    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text=f"<h1>Not Found</h1><p>{request.path} and "
                                             f"{request.url} are not here</p>")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


async def test_a_venue_error_never_says_the_key_in_the_api_url() -> None:
    """(An audit: the client's last error was `f"{type(exc).__name__}: {exc}"` and up to 200
    characters of the body; aiohttp's ClientResponseError names the URL whole, a 404 page
    echoes the path. Only the log line was scrubbed: the key went on into venue_down's
    summary, to every sink, the alert state and `keeperd alerts`.)"""
    server = await asyncio.start_server(malformed_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as s:
            client = VenueClient(s, f"http://127.0.0.1:{port}/{VENUE_TOKEN}", rate_limit=50,
                                 max_attempts=2, timeout_s=2)
            with pytest.raises(VenueError) as raised:
                await client.request("POST", "/info", {"type": "meta"})
    finally:
        server.close()
        await server.wait_closed()
    said = str(raised.value)
    assert VENUE_TOKEN.lower() not in said.lower(), said
    assert "ClientResponseError" in said and "400" in said, said
    async with serve(echoing_app()) as url, aiohttp.ClientSession() as s:
        client = VenueClient(s, f"{url}/{VENUE_TOKEN}", rate_limit=50, max_attempts=1,
                             timeout_s=2)
        with pytest.raises(VenueError) as raised:
            await client.request("POST", "/info", {"type": "meta"})
    said = str(raised.value)
    assert VENUE_TOKEN.lower() not in said.lower(), said
    assert "HTTP 404" in said and "Not Found" in said, said  # (the rest of the body stays)


async def test_venue_down_does_not_carry_the_key_in_the_api_url(tmp_path: Path) -> None:
    """The same, end to end: the poll fails, venue_down fires, and its summary names the
    status, not the URL."""
    async with serve(echoing_app()) as url:
        setup = await poll_into_alerts(
            tmp_path, {"kind": "hyperliquid", "api_url": f"{url}/{VENUE_TOKEN}",
                       "max_attempts": 1}, [HL_USER], warn=40.0, critical=35.0)
        try:
            assert await setup.monitor.poll() == []
            await tick_later(setup, 121)
            [(rule, status, summary)] = await told(setup)
        finally:
            await setup.monitor.close()
    assert (rule, status) == ("venue_down", "firing")
    assert VENUE_TOKEN.lower() not in summary.lower(), summary
    assert "HTTP 404" in summary, summary
