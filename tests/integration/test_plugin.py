"""A protocol added from outside keeperd runs through the same core: `tests/toy_protocol.py`
(one module, one `register` line, loaded with KEEPERD_PLUGINS) shows up in the config's
validation, `keeperd scan`, the daemon's metrics, the watchlist alerts and the cascade monitor,
with no change to keeperd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_utils import to_checksum_address

from keeperd.config import ConfigError, parse_config
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from tests.conftest import metric_value

ROOT = Path(__file__).resolve().parents[2]
HOLDER = to_checksum_address("0x" + "70ae".rjust(40, "0"))
DEBT_USD = 1_500.0
THRESHOLD = 0.8


@pytest.fixture(autouse=True)
def toy_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPERD_PLUGINS", "tests.toy_protocol")


def toy_config(devnet: Devnet, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]], "confirmations": 0,
                    "poll_interval": 0.1}],
        "protocols": [{"kind": "toy_vault", "name": "toy", "chain": "devnet",
                       "token": devnet.manifest["tokens"]["WETH"],
                       "price_feed": devnet.manifest["price_feeds"]["WETH"],
                       "debt_usd": DEBT_USD, "threshold": THRESHOLD}],
        "keeper": {"mode": "alert-only"},
        "metrics": {"enabled": False},
        **extra,
    }


def give_weth(devnet: Devnet, health: float) -> float:
    """Mint the holder the WETH that puts its toy health at `health`; return the amount."""
    price = devnet.manifest["prices_usd"]["WETH"]
    amount = health * DEBT_USD / (THRESHOLD * price)
    token = contracts.aave("MintableERC20")
    minter = devnet.manifest["aave_v3"]["admin"]
    devnet.client.send(minter, devnet.manifest["tokens"]["WETH"],
                       token.encode_call("mint", HOLDER, int(amount * 10**18)))
    return amount


def test_its_config_validates_like_a_built_in_one(devnet: Devnet, tmp_path: Path) -> None:
    parsed = parse_config(toy_config(devnet, tmp_path))
    assert parsed.protocols[0].kind == "toy_vault"
    assert [p.name for p in parsed.chain_protocols] == ["toy"]
    bad = toy_config(devnet, tmp_path)
    bad["protocols"][0]["debt_usdd"] = 1
    with pytest.raises(ConfigError) as err:
        parse_config(bad)
    assert "protocols[0].debt_usdd" in str(err.value)


async def test_the_daemon_runs_it_end_to_end(devnet: Devnet, tmp_path: Path,
                                            run_daemon) -> None:
    give_weth(devnet, 1.08)  # under the watchlist's warn (1.2), above critical
    config = parse_config(toy_config(
        devnet, tmp_path,
        alerts={"routes": [{"name": "ops", "sinks": [
            {"kind": "webhook", "url": "http://127.0.0.1:9/hook",
             "secret": "${WEBHOOK_SECRET}"}]}],
            "watchlists": [{"name": "mine", "accounts": [HOLDER], "warn": 1.2,
                            "critical": 1.05, "route": "ops"}]},
        risk={"cascade": {"enabled": True, "every_blocks": 1, "min_interval_s": 0}}),
        env={"WEBHOOK_SECRET": "s" * 32})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.mine(1), protocol="toy")
    view = keeper.daemon.scanners["toy"].view
    assert HOLDER in view.accounts and len(view.accounts) > 10
    i = list(view.accounts).index(HOLDER)
    assert float(view.health[i]) == pytest.approx(1.08, rel=1e-6)
    metrics = keeper.daemon.metrics
    labels = {"chain": "devnet", "protocol": "toy"}
    assert metric_value(metrics, "keeperd_accounts_tracked", labels) == len(view.accounts)
    assert metric_value(metrics, "keeperd_debt_at_risk_usd",
                        {**labels, "below": "1.1"}) >= DEBT_USD
    [alert] = [a for a in keeper.daemon.alerts.firing() if a["rule"] == "position_health"]
    assert alert["labels"]["protocol"] == "toy" and alert["labels"]["account"] == HOLDER
    assert alert["severity"] == "warning" and "Top up the vault" in alert["action"]
    # The cascade monitor modelled its book: a 50 % WETH drop liquidates the holder and more.
    await keeper.evaluated_at(devnet.mine(1), protocol="toy")
    assert keeper.daemon.cascades["toy"].last is not None
    assert metric_value(metrics, "keeperd_cascade_liquidated_debt_usd",
                        {**labels, "asset": "WETH", "shock": "0.5", "model": "static"}
                        ) >= DEBT_USD


def test_keeperd_scan_lists_its_accounts(devnet: Devnet, tmp_path: Path) -> None:
    give_weth(devnet, 0.9)
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_config(devnet, tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "keeperd", "scan", "--config", str(path),
                          "--once", "--json"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120, check=True)
    rows = {r["account"]: r for r in json.loads(out.stdout) if r["protocol"] == "toy"}
    assert rows[HOLDER]["health_factor"] == pytest.approx(0.9, rel=1e-6)
    assert rows[HOLDER]["debt_usd"] == DEBT_USD
