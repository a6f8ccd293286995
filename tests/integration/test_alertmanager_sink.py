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


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\n  group_wait: 0s\nreceivers:\n'
                      '  - name: "null"\n')
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


async def test_alerts_reach_a_real_alertmanager_and_resolve(alertmanager: str,
                                                            tmp_path: Path) -> None:
    database = SqliteDatabase.open(tmp_path / "state.db")
    await migrate(database)
    db = database.conn
    outbox = Outbox(database)
    dispatcher = Dispatcher(outbox, OutboxConfig(backoff_initial_s=0.05), Metrics())
    dispatcher.configure([RouteConfig.model_validate({"name": "am", "sinks": [
        {"kind": "alertmanager", "url": alertmanager}]})])
    task = asyncio.create_task(dispatcher.run())
    [sink_id] = [rt.sink_id for rt in dispatcher.route_sinks("am")]
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
