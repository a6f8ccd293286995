"""`keeperd status` for people: the running daemon's mode, counts and money as people read
them, the protocol of each liquidation, and no secret needed to ask (#27 item 11)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from keeperd.cli import main
from keeperd.execution import journal as J
from keeperd.storage.db import STATE_FILE, SqliteDatabase
from tests.conftest import migrated

CONFIG = """
state_dir: {state}
chains:
  - name: ethereum
    chain_id: 1
    rpc_urls: ["https://eth.example/v2/${{PROVIDER_KEY}}"]
protocols:
  - kind: aave_v3
    name: aave-core
    chain: ethereum
    addresses_provider: "0x2f39d218133AFaB8F2B819B1066c7E434Ad94E9e"
keeper:
  mode: liquidate
  key: {{source: file, path: /nonexistent/keeper.key}}
alerts:
  routes:
    - name: desk
      sinks:
        - kind: telegram
          bot_token: ${{TELEGRAM_BOT_TOKEN}}
          chat_id: "-100123"
"""


async def write_state(state: Path) -> None:
    db = SqliteDatabase.open(state / STATE_FILE)
    journal = await J.Journal.open(await migrated(db))
    for i, (status, profit) in enumerate([(J.INCLUDED, 1_523_040.0), (J.INCLUDED, 12.5),
                                          (J.DRY_RUN, 7.0)]):
        await journal.record(J.JournalEntry(
            f"aave-core:0x{i:040x}:a:b:v", "aave-core", f"0x{i:040x}", "WETH", "USDC", 10**6,
            profit, 10**15, 100 + i, status, None, None, None))
    await db.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "keeperd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    return path


async def test_status_needs_no_secret_and_reads_for_people(config: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.delenv("PROVIDER_KEY", raising=False)
    await write_state(tmp_path / "state")
    # The daemon runs (this very process stands in for it) in dry-run, whatever the file says.
    (tmp_path / "state" / "status.json").write_text(json.dumps(
        {"pid": os.getpid(), "updated_at": time.time(), "mode": "dry-run", "ready": True,
         "alive": True, "status": "following", "detail": {}}))
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert ("mode             dry-run (running; the config file, with this shell's "
            "environment, says liquidate: a variable the daemon had may be unset here)") in out
    assert "liquidations     included 2, dry_run 1" in out
    assert "{" not in out and "e+0" not in out, out
    assert "$1,523,040.00" in out and "aave-core" in out
    assert main(["status", "--config", str(config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "dry-run" and info["liquidations"] == {"included": 2, "dry_run": 1}
    assert {row["protocol"] for row in info["last_liquidations"]} == {"aave-core"}
