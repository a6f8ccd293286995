"""The Grafana dashboard's default view, run against a real Prometheus scraping keeperd on the
devnet: every panel query with the variables at their defaults shows one scenario (the joint
move) per protocol, never a sum across scenarios, and names what it sums across protocols."""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from keeperd.devnet.handle import Devnet
from keeperd.devnet.uniswap import pool_between
from tests.integration.test_daemon import get, start, write_config
from tests.integration.test_prometheus import (
    DASHBOARD,
    eventually,
    query,
    start_prometheus,
    stop_async,
)
from tests.keeperd_process import log_digest

# The label that names a metric family's scenario: a cascade figure's shocked asset (or
# "joint"), a perp figure's coin moved (the other marks unchanged).
SCENARIO_LABEL = {"keeperd_cascade_": "asset", "keeperd_perp_liquidated_": "coin",
                  "keeperd_perp_bad_debt_": "coin"}
# Protocols with a cascade in this run (their books are described): every scenario panel
# must show each of them.
CASCADE_PROTOCOLS = {"aave", "morpho", "curie"}
# Metrics this run cannot produce, and why. tests/integration/test_prometheus.py runs the
# keeper, references, alerts and a venue, and checks these panels return data there.
MAY_BE_EMPTY = {
    "keeperd_oracle_deviation_ratio": "no reference prices configured",
    "keeperd_liquidations_total": "monitor only: nothing is liquidated",
    "keeperd_block_to_broadcast_seconds_bucket": "monitor only: nothing is broadcast",
    "keeperd_liquidation_profit_usd_total": "monitor only",
    "keeperd_liquidation_gas_cost_usd_total": "monitor only",
    "keeperd_liquidation_loss_usd_total": "monitor only",
    "keeperd_keeper_balance": "no keeper key",
    "keeperd_notifications_total": "no alert routes",
    "keeperd_alerts_firing": "no alert routes",
    "keeperd_outbox_pending": "no alert routes",
}


def defaults(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each variable's default as Grafana substitutes it into a Prometheus query."""
    values = {"__rate_interval": "1m", "__interval": "15s"}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "datasource":
            continue
        current = var["current"]["value"]
        if current in ("$__all", ["$__all"]):
            values[var["name"]] = var.get("allValue") or ".*"
        elif isinstance(current, list):
            values[var["name"]] = current[0] if len(current) == 1 else f"({'|'.join(current)})"
        else:
            values[var["name"]] = current
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in values, f"{expr}: ${name} is not a dashboard variable"
        return values[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def scenario_label(name: str) -> str | None:
    return next((label for prefix, label in SCENARIO_LABEL.items()
                 if name.startswith(prefix)), None)


def test_defaults_and_substitution() -> None:
    values = {"asset": "joint", "chain": ".*", "__rate_interval": "1m"}
    assert substitute('m{asset=~"$asset", chain=~"${chain}"}[$__rate_interval]', values) == \
        'm{asset=~"joint", chain=~".*"}[1m]'
    with pytest.raises(AssertionError, match="not a dashboard variable"):
        substitute("m{x=\"$nope\"}", values)


async def test_default_view_shows_one_scenario_per_protocol(devnet: Devnet,
                                                             tmp_path: Path) -> None:
    """Aave, Morpho and Curie cascades scraped by a real Prometheus. With the variables at
    their defaults, every panel target that reads a scenario metric returns, per protocol,
    one series per point of its x axis, all of the default scenario (none aggregated away);
    no panel drops the protocol label without saying so in its title. The baseline (no shock)
counts the positions liquidatable at today's prices."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = defaults(dashboard)
    scenario = values.get("asset")
    config, port = write_config(tmp_path, devnet, [devnet.manifest["rpc_url"]])
    data = yaml.safe_load(config.read_text())
    blue = devnet.manifest["morpho_blue"]
    data["protocols"] += [
        {"kind": "morpho_blue", "name": "morpho", "chain": "devnet", "morpho": blue["morpho"],
         "markets": [m["id"] for m in blue["markets"].values()]},
        {"kind": "perp_curie", "name": "curie", "chain": "devnet",
         "clearing_house": devnet.manifest["perp_curie"]["clearing_house"],
         "asset_symbols": {"vETH": "WETH", "vBTC": "WBTC"}}]
    aave = data["protocols"][0]["name"]  # (its fund: Curie reads its own, Morpho has none)
    data["risk"] = {"cascade": {"min_interval_s": 0,
                                "insurance_fund": {aave: {"usd": 100000}},
                                "depth": {"WETH": {"kind": "uniswap_v3", "pool": pool_between(
                                    devnet.manifest, "WETH", "USDC")}}}}
    config.write_text(yaml.safe_dump(data))
    async with contextlib.AsyncExitStack() as stack:
        keeperd = start(config)
        stack.push_async_callback(stop_async, keeperd)
        prometheus, url = start_prometheus(tmp_path, port)
        stack.callback(prometheus.wait, 10)
        stack.callback(prometheus.terminate)
        await eventually(lambda: get(port, "/readyz")[0] == 200, "keeperd ready", 60)
        devnet.mine(1)

        targets = [(panel, target, substitute(target["expr"], values))
                   for panel in dashboard["panels"] for target in panel.get("targets", [])]

        def empty() -> list[str]:
            out = []
            for _, target, expr in targets:
                names = set(re.findall(r"\b(keeperd_[a-z_]+)", target["expr"]))
                if not names <= set(MAY_BE_EMPTY) and not query(url, expr)["data"]["result"]:
                    out.append(expr)
            return out

        try:
            await eventually(lambda: not empty(), "every panel's series", 90)
        except AssertionError:
            raise AssertionError("panels without data:\n" + "\n".join(empty()) + "\n"
                                 + log_digest(keeperd.log_path)) from None
        labels: dict[str, set[str]] = {}
        for _, target, _ in targets:
            for name in re.findall(r"\b(keeperd_[a-z_]+)", target["expr"]):
                labels.setdefault(name, {k for s in query(url, name)["data"]["result"]
                                         for k in s["metric"]})
        problems = [] if scenario == "joint" else [
            f"the scenario variable (asset) defaults to {scenario!r}, not the joint move"]
        problems += [p for panel, target, expr in targets
                     for p in check(panel, target, expr, query(url, expr), labels, scenario)]
        assert not problems, "\n".join(problems)

        # The baseline is what is liquidatable at today's prices: after a real 20 % fall of
        # WETH, the positions the scanner sees below health 1.
        devnet.set_price("WETH", devnet.price("WETH") * 0.8)
        devnet.mine(1)

        def baseline_is_the_scanners() -> bool:
            now = value(url, 'keeperd_cascade_baseline_liquidated_accounts{protocol="aave", '
                             'model="static"}')
            below_one = value(url, 'keeperd_accounts_by_health{protocol="aave", bucket="1"}')
            return now is not None and now == below_one and now > 0
        await eventually(baseline_is_the_scanners, "the baseline to count the accounts below "
                         "health 1", 60)
        assert (value(url, 'keeperd_cascade_baseline_liquidated_debt_usd{protocol="aave", '
                           'model="static"}') or 0) > 0


def value(url: str, expr: str) -> float | None:
    result = query(url, expr)["data"]["result"]
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def check(panel: dict[str, Any], target: dict[str, Any], expr: str, answer: dict[str, Any],
          labels: dict[str, set[str]], scenario: str | None) -> list[str]:
    """What is wrong with one panel target's answer (an empty list: nothing)."""
    assert answer["status"] == "success", (expr, answer)
    series = [s["metric"] for s in answer["data"]["result"]]
    names = set(re.findall(r"\b(keeperd_[a-z_]+)", target["expr"]))
    where = f"{panel['title']!r} {target['refId']}: {expr}\n   "
    panel_names = {n for t in panel.get("targets", [])
                   for n in re.findall(r"\b(keeperd_[a-z_]+)", t["expr"])}
    scenario_panel = any(scenario_label(n) and scenario_label(n) in labels.get(n, set())
                         for n in panel_names)
    problems = []
    for name in names:
        label = scenario_label(name)
        if label and label in labels.get(name, set()):
            lost = [s for s in series if label not in s]
            if lost:
                problems.append(f"{where}aggregates the scenario ({label}) away: {lost[:2]}")
            if label == "asset" and {s.get("asset") for s in series} - {scenario}:
                problems.append(f"{where}shows scenarios {sorted({s.get('asset') for s in series})}"
                                f", not the default {scenario!r} alone")
        owner = "venue" if name.startswith("keeperd_perp_") else "protocol"
        if owner in labels.get(name, set()) and any(owner not in s for s in series):
            if scenario_panel:
                problems.append(f"{where}a scenario panel must show each {owner} on its own")
            elif "over protocols" not in panel["title"]:
                problems.append(f"{where}drops {owner} without its title saying so")
    if scenario_panel and any(n.startswith("keeperd_cascade_") for n in names):
        # one series per protocol, per point of the panel's x axis (a curve by shock)
        axis = panel.get("options", {}).get("xField")
        per = Counter((s.get("chain"), s.get("protocol"), s.get(axis) if axis else None)
                      for s in series)
        many = {k: n for k, n in per.items() if n != 1}
        if many:
            problems.append(f"{where}more than one series per protocol: {many}")
        shown = {s.get("protocol") for s in series}
        if CASCADE_PROTOCOLS - shown:
            problems.append(f"{where}misses protocols {sorted(CASCADE_PROTOCOLS - shown)}")
    return problems
