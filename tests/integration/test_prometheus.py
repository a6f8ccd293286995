"""The shipped Prometheus rules and Grafana dashboard: promtool's own unit tests pass, and a
real Prometheus (Debian's package, which `make system-deps` installs) scrapes keeperd on the
devnet, loads the rules and answers every dashboard query with keeperd's series."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from keeperd.devnet.uniswap import pool_between
from keeperd.metrics import Metrics
from tests.conftest import serve
from tests.integration.test_daemon import get, logs_of, start, stop, write_config
from tests.keeperd_process import log_digest

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "config" / "prometheus"
DASHBOARD = ROOT / "config" / "grafana" / "keeperd-dashboard.json"


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (Debian package "
                    "prometheus)")
    return found


def test_promtool_checks_and_unit_tests_pass() -> None:
    promtool = binary("promtool")
    checked = subprocess.run([promtool, "check", "rules", "keeperd-rules.yml"], cwd=PROM_DIR,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "keeperd-rules.test.yml"],
                            cwd=PROM_DIR, capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    config = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=PROM_DIR,
                            capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stdout + config.stderr


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in data["panels"] for t in p.get("targets", [])]


def concrete(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in as 'all'."""
    expr = expr.replace("$__rate_interval", "1m")
    return re.sub(r"\$\w+", ".*", expr)


def test_dashboard_is_importable_and_only_uses_keeperd_metrics() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert data["uid"] and data["title"] and data["panels"]
    assert {v["name"] for v in data["templating"]["list"]} >= {"datasource", "chain",
                                                                "protocol", "asset"}
    registry = Metrics().registry
    known = {m.name for m in registry.collect()} | {f"{m.name}_total" for m in
                                                    registry.collect()}
    known |= {f"{m.name}_bucket" for m in registry.collect()}
    used = {name for e in dashboard_exprs() for name in re.findall(r"\b(keeperd_[a-z_]+)", e)}
    assert used and used <= known, used - known
    titles = " ".join(p["title"].lower() for p in data["panels"])
    for needed in ("health", "debt at risk", "liquidation curve", "amplification",
                   "bad debt vs insurance fund", "oracle", "funnel", "rpc"):
        assert needed in titles, needed


def query(url: str, expr: str) -> dict[str, Any]:
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as resp:
        return json.loads(resp.read())


async def eventually(check: Any, what: str, limit_s: float = 30.0) -> None:
    """Poll without blocking the loop (the venue and reference fakes answer on it)."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            if await asyncio.to_thread(check):
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_real_prometheus_scrapes_keeperd_and_loads_the_rules(devnet: Devnet,
                                                                   tmp_path: Path) -> None:
    """keeperd as an operator runs it — liquidating, alerting to a webhook, watching a perp
    venue and the reference prices — scraped by a real Prometheus: the rules load and
    evaluate, and every dashboard panel's query returns keeperd's series (one that returns
    nothing on such a run is a panel that shows nothing)."""
    from tests.alert_fakes import Webhook
    from tests.integration.test_references import MARKETS, PATHS, Venue
    from tests.keeper_harness import (
        KEEPER_KEY,
        fund_keeper,
    )
    from tests.venue_fakes import HL_USER, hyperliquid_app

    fund_keeper(devnet)
    webhook = Webhook()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(webhook.close)
        hyperliquid = await stack.enter_async_context(serve(hyperliquid_app()))
        references = []
        for kind in ("binance", "coinbase", "kraken"):
            venue = Venue(kind, devnet.manifest["prices_usd"]["WETH"])
            app = web.Application()
            app.router.add_get(PATHS[kind], venue.handle)
            references.append({"kind": kind, "name": kind, "markets": {"WETH": MARKETS[kind]},
                               "url": await stack.enter_async_context(serve(app))})
        config, port = write_config(tmp_path, devnet, [devnet.manifest["rpc_url"]])
        data = yaml.safe_load(config.read_text())
        borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
        data["protocols"][0]["cross_check_every"] = 1
        data.update({
            "risk": {"cascade": {"min_interval_s": 0,
                                 "insurance_fund": {"aave": {"usd": 100000}},
                                 "depth": {"WETH": {"kind": "uniswap_v3", "pool": pool_between(
                                     devnet.manifest, "WETH", "USDC")}}}},
            "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                       "key": {"source": "env", "env": "KEEPER_KEY"}},
            "oracles": {"references": references, "min_sources": 2,
                        "max_deviation": 0.9, "reference_interval_s": 0.5},
            "alerts": {"routes": [{"name": "ops", "sinks": [
                {"kind": "webhook", "url": webhook.url, "secret": "${WEBHOOK_SECRET}"}]}],
                "watchlists": [{"name": "desk", "accounts": borrowers[:60], "warn": 1.1,
                                "critical": 1.02, "route": "ops"}],
                "operator_route": "ops"},
        })
        data["protocols"].append({  # (the on-chain perp: the perp risk panels are its)
            "kind": "perp_curie", "name": "curie", "chain": "devnet",
            "clearing_house": devnet.manifest["perp_curie"]["clearing_house"],
            "asset_symbols": {"vETH": "WETH", "vBTC": "WBTC"}})
        data["protocols"].append({"kind": "hyperliquid", "api_url": hyperliquid,
                                  "accounts": [HL_USER], "poll_interval_s": 0.5,
                                  "liquidation_rule": "fixed-maintenance"})
        config.write_text(yaml.safe_dump(data))
        keeperd = start(config, env=dict(os.environ, KEEPER_KEY=KEEPER_KEY,
                                         WEBHOOK_SECRET="dashboard-test-webhook-secret-32b"))
        stack.push_async_callback(stop_async, keeperd)
        prometheus, url = start_prometheus(tmp_path, port)
        stack.callback(prometheus.wait, 10)
        stack.callback(prometheus.terminate)
        await eventually(lambda: get(port, "/readyz")[0] == 200, "keeperd ready")
        devnet.mine(1)
        await eventually(lambda: query(url, 'keeperd_cascade_liquidated_debt_usd{model='
                                            '"cascade"}')["data"]["result"],
                         "cascade series in Prometheus", 60)
        series = query(url, 'keeperd_cascade_liquidated_debt_usd{asset="joint", '
                            'model="cascade"}')["data"]["result"]
        assert {s["metric"]["shock"] for s in series} >= {"0.1", "0.2", "0.5"}
        assert all(s["metric"]["job"] == "keeperd" for s in series)
        # A crash it liquidates and alerts on, and blocks after it (a liquidation held by a
        # cross-check that raced anvil's mining waits for the next clean block).
        devnet.set_price("WETH", 2100.0)
        deadline = time.monotonic() + 60
        while not query(url, 'keeperd_liquidations_total{stage="included"} > 0'
                        )["data"]["result"]:
            assert time.monotonic() < deadline, ("no liquidation included\n"
                                                 + log_digest(keeperd.log_path))
            devnet.mine(1)
            await asyncio.sleep(0.5)
        groups = rule_groups(url)
        assert {g["name"] for g in groups} == {"keeperd-keeper", "keeperd-cascade-risk"}
        shipped = yaml.safe_load((ROOT / "config" / "prometheus" / "keeperd-rules.yml")
                                 .read_text())["groups"]
        assert len([r for g in groups for r in g["rules"]]) == sum(
            len(g["rules"]) for g in shipped) >= 20  # every shipped rule loaded
        await eventually(lambda: all(r["health"] == "ok" for g in rule_groups(url)
                                     for r in g["rules"]), "every rule evaluated without error")
        assert query(url, "keeperd:cascade_bad_debt_usd:max_over_scenarios")["data"]["result"]

        def empty_panels() -> list[str]:
            empty = []
            for expr in dashboard_exprs():
                answer = query(url, concrete(expr))
                assert answer["status"] == "success", (expr, answer)
                if not answer["data"]["result"]:
                    empty.append(expr)
            return empty

        try:  # (rates need two scrapes of a series inside their window)
            await eventually(lambda: not empty_panels(), "every panel's series", 30)
        except AssertionError:
            raise AssertionError("panels without data:\n" + "\n".join(empty_panels())
                                 ) from None
    assert "cascade.evaluated" in logs_of(keeperd)
    assert keeperd.returncode == 0, logs_of(keeperd)[-2000:]


def rule_groups(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=5) as resp:
        groups: list[dict[str, Any]] = json.loads(resp.read())["data"]["groups"]
    return groups


async def stop_async(proc: subprocess.Popen[str]) -> None:
    await asyncio.to_thread(stop, proc)


def start_prometheus(tmp_path: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    shutil.copy(PROM_DIR / "keeperd-rules.yml", prom_dir / "keeperd-rules.yml")
    prom_config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    prom_config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    prom_config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
    prom_port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        [binary("prometheus"), f"--config.file={prom_dir / 'prometheus.yml'}",
         f"--storage.tsdb.path={prom_dir / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=log, stderr=log)
    log.close()
    return prometheus, f"http://127.0.0.1:{prom_port}"
