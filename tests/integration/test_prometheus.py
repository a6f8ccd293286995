"""The shipped Prometheus rules and Grafana dashboard: promtool's own unit tests pass, and a
real Prometheus (Debian's package, which `make system-deps` installs) scrapes keeperd on the
devnet, loads the rules and answers every dashboard query with keeperd's series."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from keeperd.devnet.uniswap import pool_between
from keeperd.metrics import Metrics
from tests.integration.test_daemon import get, logs_of, start, stop, wait_for, write_config

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


def test_real_prometheus_scrapes_keeperd_and_loads_the_rules(devnet: Devnet,
                                                             tmp_path: Path) -> None:
    config, port = write_config(tmp_path, devnet, [devnet.manifest["rpc_url"]])
    data = yaml.safe_load(config.read_text())
    data["risk"] = {"cascade": {"min_interval_s": 0, "insurance_fund": {"usd": 100000},
                                "depth": {"WETH": {"kind": "uniswap_v3", "pool":
                                          pool_between(devnet.manifest, "WETH", "USDC")}}}}
    config.write_text(yaml.safe_dump(data))
    keeperd = start(config)
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
    url = f"http://127.0.0.1:{prom_port}"
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, what="keeperd ready")
        devnet.mine(1)
        wait_for(lambda: query(url, 'keeperd_cascade_liquidated_debt_usd{model="cascade"}')
                 ["data"]["result"], timeout=60, what="cascade series in Prometheus")
        series = query(url, 'keeperd_cascade_liquidated_debt_usd{asset="joint", '
                            'model="cascade"}')["data"]["result"]
        assert {s["metric"]["shock"] for s in series} >= {"0.1", "0.2", "0.5"}
        assert all(s["metric"]["job"] == "keeperd" for s in series)
        with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=5) as resp:
            groups = json.loads(resp.read())["data"]["groups"]
        names = {g["name"] for g in groups}
        assert names == {"keeperd-keeper", "keeperd-cascade-risk"}
        rules = [r for g in groups for r in g["rules"]]
        wait_for(lambda: all(r["health"] == "ok" for g in json.loads(urllib.request.urlopen(
            f"{url}/api/v1/rules", timeout=5).read())["data"]["groups"] for r in g["rules"]),
            timeout=30, what="every rule evaluated without error")
        assert len(rules) == 20
        recorded = query(url, "keeperd:cascade_bad_debt_usd:max_over_scenarios")
        assert recorded["status"] == "success"
        # Every dashboard query is valid PromQL against the real server.
        for expr in dashboard_exprs():
            answer = query(url, concrete(expr))
            assert answer["status"] == "success", (expr, answer)
    finally:
        prometheus.terminate()
        prometheus.wait(10)
        log.close()
        code, _, logs = stop(keeperd)
    assert code == 0, logs[-2000:]
    assert "cascade.evaluated" in logs_of(keeperd)
