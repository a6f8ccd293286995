"""The Alertmanager sink against a real Alertmanager (Debian's prometheus-alertmanager, which
`make system-deps` installs), started on loopback for the test."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keeperd.alerts.delivery import Dispatcher
from keeperd.alerts.model import Alert
from keeperd.alerts.outbox import DELIVERED, Outbox
from keeperd.config import OutboxConfig, RouteConfig
from keeperd.devnet.anvil import free_port
from keeperd.metrics import Metrics
from keeperd.storage.db import SqliteDatabase
from keeperd.storage.migrations import migrate


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        pytest.fail("Alertmanager is not installed: run `make system-deps` (Debian package "
                    "prometheus-alertmanager)")
    return found


ROOT = Path(__file__).resolve().parents[2]
INHIBIT = ROOT / "config" / "alertmanager" / "keeperd-inhibit.yml"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    yield from run_alertmanager(tmp_path)


@pytest.fixture
def inhibiting_alertmanager(tmp_path: Path) -> Iterator[str]:
    """One whose config carries the inhibit rules keeperd ships, as docs/alerts.md says to
    merge them."""
    yield from run_alertmanager(tmp_path, INHIBIT.read_text())


def run_alertmanager(tmp_path: Path, more: str = "") -> Iterator[str]:
    config = tmp_path / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\n  group_wait: 0s\nreceivers:\n'
                      '  - name: "null"\n' + more)
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen([alertmanager_binary(), f"--config.file={config}",
                             f"--storage.path={tmp_path / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}",
                             "--cluster.listen-address="], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
        assert time.monotonic() < deadline, "alertmanager did not become ready"
        time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def am_alerts(url: str, active: bool = True) -> list[dict[str, Any]]:
    query = "?active=true&silenced=false&inhibited=false&unprocessed=true" if active else ""
    with urllib.request.urlopen(f"{url}/api/v2/alerts{query}", timeout=5) as resp:
        return json.loads(resp.read())


async def delivering_to(url: str, tmp_path: Path
                        ) -> tuple[SqliteDatabase, Outbox, Dispatcher, asyncio.Task[None], int]:
    """keeperd's outbox and dispatcher, its one route an Alertmanager sink to `url`,
    delivering: (the database, the outbox, the dispatcher, its task, the sink's id)."""
    database = SqliteDatabase.open(tmp_path / "state.db")
    await migrate(database)
    outbox = Outbox(database)
    dispatcher = Dispatcher(outbox, OutboxConfig(backoff_initial_s=0.05), Metrics())
    dispatcher.configure([RouteConfig.model_validate({"name": "am", "sinks": [
        {"kind": "alertmanager", "url": url}]})])
    task = asyncio.create_task(dispatcher.run())
    [sink_id] = [rt.sink_id for rt in dispatcher.route_sinks("am")]
    return database, outbox, dispatcher, task, sink_id


async def test_alerts_reach_a_real_alertmanager_and_resolve(alertmanager: str,
                                                            tmp_path: Path) -> None:
    database, outbox, dispatcher, task, sink_id = await delivering_to(alertmanager, tmp_path)
    db = database.conn
    account = "0x" + "ab" * 20
    labels = {"chain": "devnet", "protocol": "aave", "account": account, "watchlist": "w"}
    firing = Alert("position_health", "critical", "firing", labels,
                   f"w: {account} has health 1.0200, below critical 1.05",
                   action="Add collateral", details={"health_factor": 1.02}).to_json()
    try:
        await outbox.put("am", sink_id, "alertmanager", [firing], "devnet", 5)
        dispatcher.wake()
        for _ in range(200):
            if [r[0] for r in db.execute("SELECT state FROM outbox")] == [DELIVERED]:
                break
            await asyncio.sleep(0.05)
        [received] = [a for a in am_alerts(alertmanager)
                      if a["labels"].get("alertname") == "keeperd_position_health"]
        assert received["labels"]["account"] == account
        assert received["labels"]["severity"] == "critical"
        assert received["annotations"]["health_factor"] == "1.02"
        assert received["status"]["state"] == "active"

        resolved = dict(firing, kind="resolved", status="resolved",
                        summary=f"w: {account} recovered")
        await outbox.put("am", sink_id, "alertmanager", [resolved], "devnet", 6)
        dispatcher.wake()
        for _ in range(200):
            if not [a for a in am_alerts(alertmanager)
                    if a["labels"].get("alertname") == "keeperd_position_health"]:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the resolved alert is still active in Alertmanager")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await database.close()


async def test_firing_alerts_are_resent_so_alertmanager_keeps_them(alertmanager: str,
                                                                   tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path / "state.db")
    await migrate(db)
    dispatcher = Dispatcher(Outbox(db), OutboxConfig(), Metrics())
    dispatcher.configure([RouteConfig.model_validate({"name": "am", "sinks": [
        {"kind": "alertmanager", "url": alertmanager, "resend_s": 0.3}]})])
    firing = Alert("oracle", "critical", "firing", {"asset": "WETH"},
                   "WETH price untrusted").to_json()
    dispatcher.firing_provider = lambda route: [firing] if route == "am" else []
    task = asyncio.create_task(dispatcher.run())
    try:
        updated: list[str] = []
        for _ in range(100):
            found = [a for a in am_alerts(alertmanager)
                     if a["labels"].get("alertname") == "keeperd_oracle"]
            if found and (not updated or found[0]["updatedAt"] != updated[-1]):
                updated.append(found[0]["updatedAt"])
            if len(updated) >= 3:
                break
            await asyncio.sleep(0.1)
        assert len(updated) >= 3, "not re-sent"  # each resend refreshes the alert
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await db.close()


def inhibit_rules() -> list[dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(INHIBIT.read_text())["inhibit_rules"])


def matcher_value(matchers: list[str], label: str) -> str:
    [value] = [m.split("=", 1)[1].strip('"') for m in matchers if m.startswith(f"{label}=")]
    return value


def test_the_shipped_inhibit_rules_name_keeperds_rules_and_prometheus_alerts() -> None:
    """Each names a rule keeperd raises, compared on labels its alerts carry, and an alert
    of config/prometheus/keeperd-rules.yml: a misspelt name would inhibit nothing and say
    nothing."""
    import yaml

    from keeperd.alerts.catalog import RULES

    shipped = {r["alert"] for g in yaml.safe_load(
        (ROOT / "config" / "prometheus" / "keeperd-rules.yml").read_text())["groups"]
        for r in g["rules"] if "alert" in r}
    assert {matcher_value(r["source_matchers"], "alertname") for r in inhibit_rules()} == {
        f"keeperd_{rule}" for rule in ("oracle", "rpc_down", "venue_down", "index_lag",
                                       "keeper_balance", "cascade_risk")}
    for rule in inhibit_rules():
        ours = matcher_value(rule["source_matchers"], "alertname")
        assert ours.startswith("keeperd_") and ours[len("keeperd_"):] in RULES, ours
        assert matcher_value(rule["source_matchers"], "source") == "keeperd"
        assert matcher_value(rule["target_matchers"], "alertname") in shipped, rule
        assert set(rule["equal"]) <= set(RULES[ours[len("keeperd_"):]].labels), rule


def post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200


async def test_prometheus_copies_of_keeperds_own_alerts_are_held_while_keeperds_fire(
        inhibiting_alertmanager: str, tmp_path: Path) -> None:
    """With both keeperd's sink and Prometheus's rules sending to one Alertmanager, a price
    untrusted paged twice (KeeperdOracleUntrusted and keeperd_oracle, a by-hand trial). With
    the shipped inhibit rules, each of keeperd's own alerts, delivered by its sink, holds
    Prometheus's copy for the same labels, and only that one."""
    url = inhibiting_alertmanager
    database, outbox, dispatcher, task, sink_id = await delivering_to(url, tmp_path)
    values = {"chain": "devnet", "asset": "WETH", "venue": "hyperliquid", "protocol": "aave"}
    try:
        ours, copies = [], []
        for rule in inhibit_rules():
            name = matcher_value(rule["source_matchers"], "alertname")[len("keeperd_"):]
            labels = {label: values[label] for label in rule["equal"]}
            # (keeperd_oracle is two: a trip, without `event`, and a source replaced)
            event = [m.split("=", 1)[1].strip('"') for m in rule["source_matchers"]
                     if m.startswith("event=")]
            ours.append(Alert(name, "critical", "firing",
                              {**labels, **({"event": event[0]} if event and event[0] else {})},
                              f"{name} fires").to_json())
            target = matcher_value(rule["target_matchers"], "alertname")
            # (as Prometheus sends a rule's alert: the metric's labels, instance and job)
            same = {"alertname": target, "severity": "critical", "instance": "k:9464",
                    "job": "keeperd", **labels}
            other = dict(same, **{rule["equal"][-1]: "elsewhere"})
            copies += [same, other]
        await outbox.put("am", sink_id, "alertmanager", ours, "devnet", 5)
        dispatcher.wake()
        for _ in range(200):
            if len([a for a in am_alerts(url) if a["labels"].get("source") == "keeperd"]) \
                    == len(ours):
                break
            await asyncio.sleep(0.05)
        post_alerts(url, [{"labels": c, "annotations": {"summary": "from Prometheus"}}
                          for c in copies])
        held: dict[tuple[str, str], bool] = {}
        for _ in range(100):
            seen = [a for a in am_alerts(url, active=False)
                    if a["labels"].get("instance") == "k:9464"]
            held = {(a["labels"]["alertname"], json.dumps(sorted(a["labels"].items()))):
                    bool(a["status"]["inhibitedBy"]) for a in seen}
            if len(held) == len(copies) and sum(held.values()) == len(copies) // 2:
                break
            await asyncio.sleep(0.1)
        expected = {(c["alertname"], json.dumps(sorted(c.items()))): i % 2 == 0
                    for i, c in enumerate(copies)}
        assert held == expected
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await database.close()


async def test_an_escalation_ends_the_old_severity_and_each_event_is_its_own_alert(
        alertmanager: str, tmp_path: Path) -> None:
    """`severity` is a label: an escalated position stayed firing at warning, its old figures,
    beside its critical until resolve_timeout; and an account's four liquidations merged into
    one alert, the last's figures (a trial, against Debian's Alertmanager)."""
    database, outbox, dispatcher, task, sink_id = await delivering_to(alertmanager, tmp_path)
    account = "0x" + "ab" * 20
    labels = {"chain": "devnet", "protocol": "aave", "account": account, "watchlist": "w"}

    async def deliver(alerts: list[dict[str, Any]], block: int, expect: int) -> None:
        await outbox.put("am", sink_id, "alertmanager", alerts, "devnet", block)
        dispatcher.wake()
        for _ in range(200):
            if len(await outbox.entries(limit=100)) >= expect and not await outbox.due(
                    "am", sink_id, time.time() + 1):
                return
            await asyncio.sleep(0.05)

    try:
        warning = Alert("position_health", "warning", "firing", labels, "health 1.06").to_json()
        await deliver([warning], 5, 1)
        critical = Alert("position_health", "critical", "escalated", labels,
                         "health 0.98").to_json()
        await deliver([critical], 6, 2)
        events = [Alert("position_liquidated", "critical", "event", labels,
                        f"liquidated in 0x{i}", key=f"position_liquidated:0x{i}:0:w",
                        block=7 + i).to_json() for i in range(2)]
        await deliver(events, 7, 3)
        active: list[dict[str, Any]] = []
        for _ in range(100):
            active = am_alerts(alertmanager)
            health = [a for a in active
                      if a["labels"]["alertname"] == "keeperd_position_health"]
            liquidated = [a for a in active
                          if a["labels"]["alertname"] == "keeperd_position_liquidated"]
            if len(health) == 1 and len(liquidated) == 2:
                break
            await asyncio.sleep(0.1)
        assert [a["labels"]["severity"] for a in health] == ["critical"], active
        assert sorted(a["annotations"]["summary"] for a in liquidated) == [
            "liquidated in 0x0", "liquidated in 0x1"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await database.close()
