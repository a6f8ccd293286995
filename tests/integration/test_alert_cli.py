"""The alerting commands: silences managed from the command line (seen by the engine through
the state database), `alerts test` against a live receiver, `alerts list|retry`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from keeperd.alerts.outbox import Outbox
from keeperd.alerts.silences import Silences
from keeperd.alerts.sinks import verify
from keeperd.storage.db import SqliteDatabase
from keeperd.storage.migrations import migrate
from tests.alert_fakes import Recorder, webhook_app
from tests.conftest import serve

ROOT = Path(__file__).resolve().parents[2]
SECRET = "cli-secret-long-enough-for-hmac-sha256"


def keeperd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keeperd", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, ALERT_SECRET=SECRET))


def write(tmp_path: Path, hook: str) -> Path:
    config = {"state_dir": str(tmp_path / "state"),
              "chains": [{"name": "x", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:9"]}],
              "alerts": {"routes": [{"name": "ops", "sinks": [
                  {"kind": "webhook", "url": hook, "secret": "${ALERT_SECRET}"}]}]}}
    path = tmp_path / "keeperd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_silences_from_the_command_line(tmp_path: Path) -> None:
    config = write(tmp_path, "http://127.0.0.1:9/hook")
    # A mixed-case account carries its EIP-55 checksum, as a watchlist's does: a digit
    # mistyped, the silence muted nothing and said nothing (a by-hand trial).
    mistyped = keeperd("silence", "add", "--config", str(config), "--match",
                       "account=0xAbC0000000000000000000000000000000000001", "--for", "2h")
    assert mistyped.returncode == 1 and "fails its EIP-55 checksum" in mistyped.stderr
    assert "write 0xABC0000000000000000000000000000000000001" in mistyped.stderr
    assert "no active silences" in keeperd("silence", "list", "--config", str(config)).stdout
    added = keeperd("silence", "add", "--config", str(config), "--match",
                    "account=0xABC0000000000000000000000000000000000001", "--match",
                    "rule=~position_.*", "--for", "2h", "--comment", "topping up")
    assert added.returncode == 0 and "silence 1 added for 7200 s" in added.stdout, added.stderr
    listed = keeperd("silence", "list", "--config", str(config))
    assert "rule=~position_.*" in listed.stdout and "# topping up" in listed.stdout
    db = SqliteDatabase.open(tmp_path / "state" / "keeperd.sqlite3")
    silences = Silences(db)
    asyncio.run(silences.refresh())
    match = silences.matching({"account": "0xabc0000000000000000000000000000000000001",
                               "rule": "position_health"})
    assert match is not None and match.id == 1
    bad = keeperd("silence", "add", "--config", str(config), "--match", "nonsense")
    assert bad.returncode == 1 and "label=value" in bad.stderr
    assert keeperd("silence", "expire", "1", "--config", str(config)).returncode == 0
    asyncio.run(silences.refresh())
    assert silences.matching({"rule": "position_health",
                              "account": "0xabc0000000000000000000000000000000000001"}) is None
    assert "no active silences" in keeperd("silence", "list", "--config", str(config)).stdout
    db.conn.close()


def test_alerts_test_list_and_retry(tmp_path: Path) -> None:
    rec = Recorder()

    async def run() -> tuple[subprocess.CompletedProcess[str], Path]:
        async with serve(webhook_app(rec)) as url:
            config = write(tmp_path, f"{url}/hook")
            return await asyncio.to_thread(keeperd, "alerts", "test", "--config",
                                           str(config)), config

    sent, config = asyncio.run(run())
    assert sent.returncode == 0 and re.search(r"ops/webhook-127\.0\.0\.1-[0-9a-f]{10} "
                                              "webhook: delivered", sent.stdout), sent.stderr
    [entry] = rec.accepted
    assert verify(SECRET, entry["raw"], entry["headers"]["X-Keeperd-Signature"])
    assert entry["body"]["rule"] == "test"
    down = keeperd("alerts", "test", "--config", str(config))  # the receiver is gone now
    assert down.returncode == 1 and "ClientConnectorError" in down.stdout
    assert SECRET not in down.stdout + down.stderr

    db = SqliteDatabase.open(tmp_path / "state" / "keeperd.sqlite3")
    outbox = Outbox(db)

    async def dead_letter() -> None:
        await migrate(db)
        await outbox.put("ops", "webhook-1", "webhook", [{"rule": "oracle", "status": "firing",
                                                "severity": "critical", "summary": "x"}],
                         None, None)
        [e] = await outbox.entries()
        await outbox.dead(e.id, "HTTP 404: no such hook")

    asyncio.run(dead_letter())
    listed = keeperd("alerts", "list", "--config", str(config))
    assert "0 pending, 1 dead" in listed.stdout and "HTTP 404" in listed.stdout
    retried = keeperd("alerts", "retry", "--config", str(config))
    assert "1 dead-lettered notification(s) requeued" in retried.stdout
    assert asyncio.run(outbox.entries())[0].state == "pending"
    # It was queued for a sink id the config no longer has (a URL fixed changes a derived
    # id): requeued, it would never be sent; the way to send it is said.
    assert "1 of them wait for ops/webhook-1, a sink no longer in the config" in retried.stderr
    assert re.search(r"keeperd alerts outbox reroute ops/webhook-1 --to "
                     r"ops/webhook-127\.0\.0\.1-[0-9a-f]{10}", retried.stderr), retried.stderr
    db.conn.close()
