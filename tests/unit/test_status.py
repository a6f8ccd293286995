"""`keeperd status` for people: the running daemon's mode, counts and money as people read
them, the protocol of each liquidation, and no secret needed to ask (#27 item 11)."""

from __future__ import annotations

import asyncio
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
    await journal.set_status(f"aave-core:0x{0:040x}:a:b:v", J.INCLUDED,
                             realised_profit_usd=1_522_900.5)
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
    assert "realised (net of fees)" in out and "$1,522,900.50" in out
    assert "assets paused    none" in out
    # A tripped breaker holds every liquidation on its asset: said (it showed only the
    # liquidatable accounts, all held; a by-hand trial).
    from keeperd.oracles.breaker import Breaker

    db = SqliteDatabase.open(tmp_path / "state" / STATE_FILE)
    await Breaker(db).trip("WBTC", "testing", manual=True)
    await db.close()
    assert main(["status", "--config", str(config)]) == 0
    assert ("assets paused    WBTC on every chain (by hand: testing) — its liquidations are "
            "held (keeperd breaker list)") in capsys.readouterr().out
    # A long reason is cut at a word's end, not inside an address (a trial read half of one).
    from keeperd.text import clip

    reason = "stale: heartbeat 3600 s (0x0165878A594ca255338adfa4d48449f69242Eb8F); " * 3
    clipped = clip(reason, 100)
    assert clipped.endswith(" …") and len(clipped) <= 102
    words = set(reason.split()) | {w.rstrip(";") for w in reason.split()}
    assert all(w in words for w in clipped.split()[:-1]), clipped  # (no word cut in two)
    assert main(["status", "--config", str(config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "dry-run" and info["liquidations"] == {"included": 2, "dry_run": 1}
    assert {row["protocol"] for row in info["last_liquidations"]} == {"aave-core"}


# --- the mode without the key; a stopped daemon is not ready --------------------------------

ROOT = Path(__file__).resolve().parents[2]
DEVNET_KEY = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"

ENV_MODE = """
state_dir: {state}
chains:
  - name: ethereum
    chain_id: 1
    rpc_urls: ["https://eth.example/v2/${{PROVIDER_KEY}}"]
keeper:
  mode: ${{KEEPERD_MODE:-alert-only}}
  {key}
"""


@pytest.mark.parametrize(("mode", "key"), [
    ("liquidate", "key: {source: env, env: KEEPERD_TEST_KEY}"),  # the key's variable set
    ("liquidate", "key: {source: file, path: /nonexistent/keeper.key}"),
    ("dry-run", "key: {source: env, env: KEEPERD_TEST_KEY}"),
    ("dry-run", ""),  # no key nor address: the daemon would refuse it, status reads the state
    ("alert-only", ""),
])
def test_status_reads_a_mode_from_the_environment_without_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        mode: str, key: str) -> None:
    """`keeper.mode: ${KEEPERD_MODE}` resolving to liquidate or dry-run: status never
    validates the keeper section (whose key it does not use), so it answers (it said "mode
    'liquidate' needs `key`" although the key was set)."""
    monkeypatch.setenv("KEEPERD_MODE", mode)
    monkeypatch.setenv("KEEPERD_TEST_KEY", DEVNET_KEY)
    config = tmp_path / "keeperd.yaml"
    config.write_text(ENV_MODE.format(state=tmp_path / "state", key=key))
    assert main(["status", "--config", str(config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["mode"], info["config_mode"], info["mode_source"]) == (mode, mode, "config")
    assert main(["status", "--config", str(config)]) == 0
    assert (f"mode             {mode} (the config's, read with this shell's environment)"
            in capsys.readouterr().out)


@pytest.mark.parametrize("profile", sorted(p.name for p in (ROOT / "config" / "mainnet")
                                           .glob("*.yaml")))
def test_status_answers_on_every_mainnet_profile_as_shipped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        profile: str) -> None:
    """The profiles say `mode: ${KEEPERD_MODE:-dry-run}` and a key file the operator asking
    may not read; their RPC URLs' variables unset too."""
    for name in ("KEEPERD_MODE", "KEEPERD_KEY_FILE", "ETH_RPC_PRIMARY", "ETH_RPC_SECONDARY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEEPERD_STATE_DIR", str(tmp_path / "state"))
    config = tmp_path / profile
    config.write_text((ROOT / "config" / "mainnet" / profile).read_text())
    assert main(["status", "--config", str(config), "--json"]) == 0, capsys.readouterr().err
    info = json.loads(capsys.readouterr().out)
    assert info["state_dir"] == str(tmp_path / "state") and info["mode"] == "dry-run"
    monkeypatch.setenv("KEEPERD_MODE", "liquidate")
    assert main(["status", "--config", str(config), "--json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["mode"] == "liquidate"


def test_the_files_mode_as_this_shell_reads_it() -> None:
    from keeperd.status import file_mode

    assert file_mode(None) == file_mode({}) == file_mode({"mode": None}) == "alert-only"
    assert file_mode({"mode": "dry-run"}, {}) == "dry-run"
    assert file_mode({"mode": "${M}"}, {"M": "liquidate"}) == "liquidate"
    assert file_mode({"mode": "${M:-dry-run}"}, {}) == "dry-run"
    assert file_mode({"mode": "${M:-}"}, {}) == "alert-only"  # unset means the default
    assert file_mode({"mode": "${M}"}, {}) == "unknown"  # only the daemon's environment has it
    assert file_mode({"mode": "${M}"}, {"M": "liquidat"}) == "unknown"
    assert file_mode({"mode": 3}, {}) == "unknown"


def dead_pid() -> int:
    """A pid no process has (one that has just exited and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_a_stopped_daemon_is_neither_ready_nor_alive(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGKILLed (or stopped) liquidate-mode daemon leaves status.json saying ready and
    alive: `--json` said so too next to "running": false. Its last words are kept apart, and
    the mode shown says whose it is."""
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.delenv("PROVIDER_KEY", raising=False)
    config.write_text(config.read_text().replace("mode: liquidate", "mode: alert-only"))
    asyncio.run(write_state(tmp_path / "state"))
    pid = dead_pid()
    (tmp_path / "state" / "status.json").write_text(json.dumps(
        {"pid": pid, "updated_at": time.time() - 5, "mode": "liquidate", "ready": True,
         "alive": True, "status": "following", "detail": {"replica": {"role": "leader"}}}))
    assert main(["status", "--config", str(config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    d = info["daemon"]
    assert (d["running"], d["ready"], d["alive"]) == (False, False, False), d
    assert "pid" not in d and "status" not in d and "detail" not in d
    assert d["last_report"]["pid"] == pid and d["last_report"]["mode"] == "liquidate"
    assert (info["mode"], info["mode_source"]) == ("alert-only", "config")
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert ("mode             alert-only (the config's, read with this shell's environment); "
            "the daemon last seen here ran in liquidate") in out, out
    assert f"daemon           not running (last status.json 5 s ago, from pid {pid})" in out
    assert "ready" not in out and "alive" not in out and "this replica" not in out
    assert "liquidations     included 2, dry_run 1" in out


def this_process_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, age_s: float,
                          ready: bool, status: str, detail: dict | None = None) -> None:
    """A status.json written `age_s` ago by a liquidate-mode daemon whose pid is this
    process's (one that exists), the config's secrets unset."""
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.delenv("PROVIDER_KEY", raising=False)
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "status.json").write_text(json.dumps(
        {"pid": os.getpid(), "updated_at": time.time() - age_s, "mode": "liquidate",
         "ready": ready, "alive": True, "status": status, "detail": detail or {}}))


def test_a_hung_daemon_with_a_stale_status_is_not_running(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its pid exists (this process stands in) but status.json is minutes old."""
    this_process_reported(tmp_path, monkeypatch, age_s=600, ready=True, status="following")
    assert main(["status", "--config", str(config), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["daemon"]
    assert (d["running"], d["ready"], d["alive"]) == (False, False, False)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert (f"not running (pid {os.getpid()} exists but has not written status.json for "
            "600 s: hung") in out, out
    assert "liquidate (the config's, read with this shell's environment); the daemon last " \
        "seen here ran in it too" in out


def test_a_running_daemons_mode_is_said_to_be_its_own(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    this_process_reported(tmp_path, monkeypatch, age_s=0, ready=False, status="catching up",
                          detail={"mainnet": {"healthy_endpoints": 0, "following": False,
                                              "why": "no healthy RPC endpoint: none answers"}})
    assert main(["status", "--config", str(config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["mode"], info["mode_source"]) == ("liquidate", "daemon")
    assert (info["daemon"]["running"], info["daemon"]["ready"]) == (True, False)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "mode             liquidate (the running daemon's)" in out
    # (and why, as /readyz says it: "NOT ready" alone left an operator to curl it, a trial)
    assert (f"running (pid {os.getpid()}), NOT ready (mainnet: no healthy RPC endpoint: none "
            "answers), alive") in out
    this_process_reported(tmp_path, monkeypatch, age_s=0, ready=False, status="starting",
                          detail={"starting": "waiting for an RPC endpoint of mainnet"})
    assert main(["status", "--config", str(config)]) == 0
    assert (f"running (pid {os.getpid()}), NOT ready (waiting for an RPC endpoint of "
            "mainnet), alive") in capsys.readouterr().out


def test_a_standby_replica_is_not_said_to_liquidate(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(A by-hand trial: a standby's status read "liquidate (the running daemon's)".)"""
    this_process_reported(tmp_path, monkeypatch, age_s=0, ready=True, status="ready",
                          detail={"replica": {"role": "standby", "epoch": 3}})
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "liquidate once leading (the running daemon's; a standby sends nothing)" in out
    assert "this replica     standby" in out


def test_a_relative_state_dir_asked_from_elsewhere_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """config/devnet.yaml's `state_dir: .devnet/keeperd-state` asked from /tmp: the running
    daemon looked as if it had never started, without a word about where it was looked for."""
    config = tmp_path / "keeperd.yaml"
    config.write_text("state_dir: .devnet/keeperd-state\nchains:\n  - name: devnet\n"
                      "    chain_id: 31337\n    rpc_urls: [http://127.0.0.1:8545]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("KEEPERD_STATE_DIR", raising=False)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "never started here" in out
    assert f"state_dir .devnet/keeperd-state is relative, read from {elsewhere}" in out


def test_with_postgresql_unreachable_the_shared_tables_are_unknown_not_empty(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(A by-hand trial: during a PostgreSQL outage `status` printed "liquidations none yet"
    and "0 pending" from the local file's empty tables, over a journal of 114 liquidations.)"""
    state = tmp_path / "state"
    state.mkdir()
    asyncio.run(write_state(state))  # (a local file whose tables say something: not read)
    config = tmp_path / "keeperd.yaml"
    config.write_text(f"state_dir: {state}\nstorage:\n  url: postgresql://keeper@127.0.0.1:1/k\n"
                      "chains:\n  - name: devnet\n    chain_id: 31337\n"
                      "    rpc_urls: [http://127.0.0.1:8545]\n")
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "replicas         unknown" in out
    assert "liquidations     unknown (PostgreSQL unreachable" in out
    assert "none yet" not in out and "included" not in out and "alert outbox" not in out


def test_scan_and_simulate_say_when_a_relative_state_dir_is_fresh_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """(A by-hand trial: `simulate` run from /tmp built a fresh index there, minutes of
    reading, without a word.)"""
    from keeperd.cli import _note_fresh_state
    from keeperd.config import parse_config

    config = parse_config({"state_dir": ".devnet/keeperd-state", "chains": [
        {"name": "devnet", "chain_id": 31337, "rpc_urls": ["http://127.0.0.1:8545"]}]})
    monkeypatch.chdir(tmp_path)
    _note_fresh_state(config, "simulate")
    err = capsys.readouterr().err
    assert f"state_dir .devnet/keeperd-state is relative and there is none in {tmp_path}" in err
    (tmp_path / ".devnet" / "keeperd-state").mkdir(parents=True)
    _note_fresh_state(config, "simulate")
    assert capsys.readouterr().err == ""  # (one there: its index is used, nothing to say)
