"""A reload whose changes only a restart applies says so and keeps saying it until the
restart, and the protocols it changed are checked as check-config checks them: a by-hand
trial added a Morpho market by SIGHUP — one info line said `needs_restart`, the watched
holder of that market was told to check their address for a typo, and a mistyped market id
reloaded without a word, to refuse the whole keeper at its next restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from keeperd.config import parse_config
from keeperd.devnet.handle import Devnet
from keeperd.status import collect, render
from tests.alert_fakes import Recorder, webhook_app
from tests.conftest import serve
from tests.integration.test_alerts_devnet import (  # noqa: F401 (the fixture)
    ENV,
    SECRET,
    daemon_factory,
    eventually,
    hooks,
)
from tests.keeper_harness import devnet_chain


def borrower(devnet: Devnet, market: str) -> str:
    """A seeded Morpho borrower of `market` (WETH/USDC, WBTC/DAI)."""
    return next(b["address"] for b in devnet.manifest["morpho_blue"]["borrowers"]
                if b["market"] == market)


def config_data(devnet: Devnet, tmp_path: Path, webhook_url: str, markets: list[str],
                watched: list[str]) -> dict[str, Any]:
    blue = devnet.manifest["morpho_blue"]
    return {
        "state_dir": str(tmp_path / "state"),
        "chains": [devnet_chain(devnet)],
        "protocols": [
            {"kind": "aave_v3", "name": "aave", "chain": "devnet",
             "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]},
            {"kind": "morpho_blue", "name": "morpho", "chain": "devnet",
             "morpho": blue["morpho"], "markets": markets}],
        "keeper": {"mode": "alert-only"},
        "alerts": {
            "routes": [{"name": "ops", "sinks": [{"kind": "webhook", "url": f"{webhook_url}/hook",
                                                  "secret": "${WEBHOOK_SECRET}"}]}],
            "watchlists": [{"name": "holders", "accounts": watched, "warn": 1.0001,
                            "critical": 1.00005, "route": "ops"}],
            "operator_route": "ops",
            "outbox": {"backoff_initial_s": 0.1, "backoff_max_s": 0.5}},
        "metrics": {"enabled": False},
        "risk": {"cascade": {"enabled": False}},
    }


def sample(daemon: Any, name: str, **labels: str) -> float | None:
    return daemon.metrics.registry.get_sample_value(name, labels)


async def test_a_reload_that_needs_a_restart_says_so_until_then_and_checks_the_protocols(
        devnet: Devnet, tmp_path: Path, daemon_factory: Any,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert SECRET
    markets = {k: m["id"] for k, m in devnet.manifest["morpho_blue"]["markets"].items()}
    first, added = borrower(devnet, "WETH/USDC"), borrower(devnet, "WBTC/DAI")
    webhook = Recorder()
    async with serve(webhook_app(webhook)) as wh:
        data = config_data(devnet, tmp_path, wh, [markets["WETH/USDC"]], [first])
        path = tmp_path / "keeperd.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        daemon = await daemon_factory(data, path)
        config = parse_config(data, env=ENV)
        status_file = tmp_path / "state" / "status.json"
        assert sample(daemon, "keeperd_config_restart_would_fail") == 0

        # The trial's reload: the WBTC/DAI market added, and its borrower to the watchlist.
        data["protocols"][1]["markets"] = [markets["WETH/USDC"], markets["WBTC/DAI"]]
        data["alerts"]["watchlists"][0]["accounts"] = [first, added]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        with structlog.testing.capture_logs() as logs:
            daemon._reload()  # (what SIGHUP calls)
            await eventually(lambda: any(e["event"] == "daemon.restart_checked" for e in logs),
                             "the check of the changed protocols", limit_s=60)
        [said] = [e for e in logs if e["event"] == "daemon.reload_needs_restart"]
        assert said["log_level"] == "warning" and said["sections"] == ["protocols"]
        assert said["protocols"] == ["morpho: markets 1 added"]
        assert "systemctl restart keeperd" in said["fix"]
        [checked] = [e for e in logs if e["event"] == "daemon.restart_checked"]
        assert checked["protocols"] == ["morpho"], checked
        assert "2 market(s) exist" in checked["started"][0], checked
        assert sample(daemon, "keeperd_config_restart_pending", section="protocols") == 1
        assert sample(daemon, "keeperd_config_restart_would_fail") == 0
        # Told in `keeperd status` until the restart.
        await eventually(lambda: (json.loads(status_file.read_text()).get("restart_pending")
                                  or {}).get("check") == "ok", "status.json's word", 20)
        line = next(x for x in render(collect(config)).splitlines()
                    if x.startswith("restart pending"))
        assert "protocols changed in the file" in line and "morpho: markets 1 added" in line
        assert "a restart would start them" in line and "restart keeperd" in line
        # The new market's borrower is told it waits for the restart, not blamed on a typo.
        await eventually(lambda: any(b["account"] == added
                                     for b in hooks(webhook, "watched_without_position")),
                         "the added account's watched_without_position", limit_s=60)
        [told] = [b for b in hooks(webhook, "watched_without_position") if b["account"] == added]
        assert "morpho: markets 1 added) wait for a restart" in told["action"], told
        assert told["action"].index("restart keeperd") < told["action"].index("check the address")

        # A mistyped market id: the reload takes the alerts, and says the restart would fail.
        data["protocols"][1]["markets"] = [markets["WETH/USDC"], "0x" + "ab" * 32]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        with structlog.testing.capture_logs() as logs:
            daemon._reload()
            await eventually(lambda: any(e["event"] == "daemon.restart_would_fail"
                                         for e in logs), "the refusal", limit_s=60)
        [failed] = [e for e in logs if e["event"] == "daemon.restart_would_fail"]
        assert failed["log_level"] == "error" and failed["protocols"] == ["morpho"]
        # (the market's own entry and its fix: it was `protocols[1]`, "ValueError: ..." and
        # a fix for any protocol — a by-hand trial)
        assert any(p.startswith("protocols[1].markets[1]: ") and "ab" * 32 in p.lower()
                   and "does not exist" in p and "copy the market's id again" in p
                   and "ValueError" not in p for p in failed["problems"]), failed["problems"]
        assert sample(daemon, "keeperd_config_restart_would_fail") == 1
        await eventually(lambda: (json.loads(status_file.read_text()).get("restart_pending")
                                  or {}).get("check") == "would fail", "status.json's word", 20)
        assert "a restart WOULD FAIL: protocols[1]" in render(collect(config))

        # The file put back as it runs: nothing waits any more.
        data["protocols"][1]["markets"] = [markets["WETH/USDC"]]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        with structlog.testing.capture_logs() as logs:
            daemon._reload()
        assert [e["event"] for e in logs if "restart" in e["event"]] == [
            "daemon.restart_no_longer_needed"]
        assert sample(daemon, "keeperd_config_restart_pending", section="protocols") is None
        assert sample(daemon, "keeperd_config_restart_would_fail") == 0
        await eventually(lambda: json.loads(status_file.read_text()).get("restart_pending")
                         is None, "status.json cleared", 20)
        assert "restart pending" not in render(collect(config))
