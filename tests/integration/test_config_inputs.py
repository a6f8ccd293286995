"""Watched accounts that no configured protocol holds a position for, told by `check-config`
(online, a warning) and by the running daemon (a log line, a gauge); and `check-config`
against the chain refusing the key and the secret files `keeperd run` would refuse (#27 items
3 and 5). The devnet's Aave and Morpho Blue borrowers are disjoint: each is held by one of the
two protocols only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from tests.integration.test_daemon import ROOT, sample, start, stop, wait_for

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1
TYPO = "0x" + "12" * 20  # nobody's position


def config_for(devnet: Devnet, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    m = devnet.manifest
    hook_secret = tmp_path / "hook.secret"
    hook_secret.write_text("s" * 32)
    os.chmod(hook_secret, 0o600)
    return {
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": [m["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.2}],
        "protocols": [
            {"kind": "aave_v3", "name": "aave", "chain": "devnet",
             "addresses_provider": m["aave_v3"]["addresses_provider"]},
            {"kind": "morpho_blue", "name": "morpho", "chain": "devnet",
             "morpho": m["morpho_blue"]["morpho"],
             "markets": [x["id"] for x in m["morpho_blue"]["markets"].values()]}],
        "alerts": {
            "operator_route": "ops",  # (the holders' route by choice: check-config says so else)
            "routes": [{"name": "ops", "sinks": [{"kind": "webhook",
                                                  "url": "http://127.0.0.1:9/hook",
                                                  "secret_file": str(hook_secret)}]}],
            "watchlists": [{"name": "w", "route": "ops", "accounts": [
                m["borrowers"][0]["address"],  # on aave only
                m["morpho_blue"]["borrowers"][0]["address"],  # on morpho only
                TYPO]}]},
        "risk": {"cascade": {"enabled": False}},
        "logging": {"format": "json"},
        **extra}


def check_config(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "keeperd.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "keeperd", "check-config", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_check_config_warns_of_a_watched_account_no_protocol_holds(devnet: Devnet,
                                                                   tmp_path: Path) -> None:
    done = check_config(tmp_path, config_for(devnet, tmp_path))
    assert done.returncode == 0, done.stderr  # a warning, not an error
    warnings = [line for line in done.stderr.splitlines() if ": warning: " in line]
    assert len(warnings) == 1, done.stderr
    assert "alerts.watchlists[0].accounts[2]" in warnings[0] and TYPO in warnings[0]
    assert "holds no position in any protocol watchlist 'w' looks at (aave, morpho)" in \
        warnings[0]


def test_check_config_says_a_closed_position_is_not_a_typo(devnet: Devnet,
                                                          tmp_path: Path) -> None:
    """A watched account that held a position and holds none now (here repaid and withdrawn;
    a crash's liquidations leave the same) is said as that: check-config after a crash called
    a risk team's liquidated, correct addresses likely typos (a by-hand trial)."""
    from keeperd.devnet import contracts

    m = devnet.manifest
    closed = "0x" + "c1" * 20
    devnet.open_position(closed, "WETH", 1.0, "USDC", 100.0)
    token, pool = contracts.aave("MintableERC20"), contracts.aave("Pool")
    usdc, weth = m["tokens"]["USDC"], m["tokens"]["WETH"]
    devnet.client.send(closed, usdc, token.encode_call("mint", closed, 200 * 10**6))
    devnet.client.send(closed, usdc, token.encode_call("approve", m["aave_v3"]["pool"],
                                                       2**256 - 1))
    devnet.client.send(closed, m["aave_v3"]["pool"], pool.encode_call(
        "repay", usdc, 2**256 - 1, 2, closed))
    devnet.client.send(closed, m["aave_v3"]["pool"], pool.encode_call(
        "withdraw", weth, 2**256 - 1, closed))
    # A Morpho borrower repaid and withdrawn too (its reader leaves out empty positions).
    from keeperd.devnet.morpho import compiled

    blue, morpho = m["morpho_blue"], compiled()["Morpho"]
    spec = blue["markets"]["WETH/USDC"]
    params = (usdc, weth, spec["oracle"], spec["irm"], spec["lltv"])
    repaid = [b["address"] for b in blue["borrowers"] if b["market"] == "WETH/USDC"][1]
    mid = bytes.fromhex(spec["id"][2:])
    _, shares, collateral = morpho.decode_result("position", devnet.client.eth_call(
        blue["morpho"], morpho.encode_call("position", mid, repaid)))
    devnet.client.send(repaid, usdc, token.encode_call("mint", repaid, 10**12))
    devnet.client.send(repaid, usdc, token.encode_call("approve", blue["morpho"], 2**256 - 1))
    devnet.client.send(repaid, blue["morpho"], morpho.encode_call(
        "repay", params, 0, shares, repaid, b""), gas=500_000)
    devnet.client.send(repaid, blue["morpho"], morpho.encode_call(
        "withdrawCollateral", params, collateral, repaid, repaid), gas=500_000)
    config = config_for(devnet, tmp_path)
    config["alerts"]["watchlists"][0]["accounts"] += [closed, repaid]
    done = check_config(tmp_path, config)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if ": warning: " in line]
    assert len(warnings) == 3, done.stderr
    [morpho_gone] = [w for w in warnings if "accounts[4]" in w]
    assert "held a position on morpho and holds none now" in morpho_gone, morpho_gone
    [typo] = [w for w in warnings if "accounts[2]" in w]
    assert "it can never alert" in typo
    [gone] = [w for w in warnings if "accounts[3]" in w]
    assert "held a position on aave and holds none now" in gone, gone
    assert "can never alert" not in gone


def test_the_daemon_tells_and_counts_watched_accounts_without_position(devnet: Devnet,
                                                                       tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "keeperd.yaml"
    path.write_text(yaml.safe_dump(config_for(devnet, tmp_path, metrics={
        "listen": "127.0.0.1", "port": port})))
    import sqlite3

    from eth_utils import to_checksum_address

    from keeperd.storage.db import STATE_FILE

    def without() -> list[dict[str, Any]]:
        with sqlite3.connect(tmp_path / "state" / STATE_FILE) as db:
            payloads = [json.loads(r[0]) for r in db.execute(
                "SELECT payload FROM outbox WHERE route = 'ops'")]
        return [a for p in payloads for a in p if a["rule"] == "watched_without_position"]

    proc = start(path)
    try:
        wait_for(lambda: sample(port, "keeperd_watched_without_position", watchlist="w")
                 is not None, timeout=60, what="the without-position gauge")
        assert sample(port, "keeperd_watched_without_position", watchlist="w") == 1
        assert sample(port, "keeperd_watched_never_held", watchlist="w") == 1
        # ...and to the watchlist's own route (once its protocols' indexes are caught up): a
        # holder who reads only their chat learns their entry watches nothing (a log line
        # and a gauge no rule watched, a by-hand trial); once, not at every block.
        wait_for(lambda: without() != [], timeout=60, what="watched_without_position")
        time.sleep(3)  # (a few more blocks' scans: nothing repeats)
    finally:
        code, _, logs = stop(proc)
    assert code == 0, logs
    told = [json.loads(line) for line in logs.splitlines() if line.startswith("{")
            and json.loads(line)["event"] == "watchlist.without_position"]
    assert [(e["level"], e["accounts"]) for e in told] == [("warning", [TYPO])]
    without = without()
    assert [(a["account"], a["severity"], a["status"]) for a in without] == [
        (to_checksum_address(TYPO), "warning", "firing")]
    assert "Check the address" in without[0]["action"]


def test_check_config_against_the_chain_refuses_what_run_refuses(devnet: Devnet,
                                                                 tmp_path: Path) -> None:
    key, token = tmp_path / "keeper.key", tmp_path / "telegram.token"
    key.write_text(KEY + "\n")
    token.write_text("123:abcdefghijkl\n")
    for path in (key, token):
        os.chmod(path, 0o644)
    config = config_for(devnet, tmp_path, keeper={
        "mode": "liquidate", "key": {"source": "file", "path": str(key)}})
    config["alerts"]["watchlists"][0]["accounts"].remove(TYPO)
    config["alerts"]["routes"][0]["sinks"].append(
        {"kind": "telegram", "bot_token_file": str(token), "chat_id": -100,
         "api_url": "http://127.0.0.1:9"})
    bad = check_config(tmp_path, config)
    assert bad.returncode == 2
    assert "keeper.key.path" in bad.stderr and "chmod 600" in bad.stderr
    assert "alerts.routes[0].sinks[1].bot_token_file" in bad.stderr
    assert KEY[2:] not in bad.stderr and "abcdefghijkl" not in bad.stderr
    for path in (key, token):
        os.chmod(path, 0o600)
    ok = check_config(tmp_path, config)
    assert ok.returncode == 0, ok.stderr
    assert ": warning: " not in ok.stderr


def test_check_config_starts_each_protocol_as_run_would(devnet: Devnet,
                                                        tmp_path: Path) -> None:
    """A Morpho market id one digit off, and an Aave addresses provider that is another
    contract: both have code where code was all that was checked, so check-config said OK and
    `run` then refused to start (a by-hand trial)."""
    config = config_for(devnet, tmp_path)
    del config["alerts"]["watchlists"]  # (the watchlist check starts them too: not this)
    good = config["protocols"][1]["markets"][0]
    config["protocols"][1]["markets"][0] = good[:-1] + ("0" if good[-1] != "0" else "1")
    config["protocols"][0]["addresses_provider"] = devnet.manifest["morpho_blue"]["morpho"]
    bad = check_config(tmp_path, config)
    assert bad.returncode == 2, bad.stderr
    assert "protocols[0]: keeperd run would not start it" in bad.stderr
    # (the market's own entry, with its fix: a by-hand trial found `protocols[1]` and a fix
    # for any protocol's addresses)
    assert "protocols[1].markets[0]: keeperd run would not start it" in bad.stderr
    assert "does not exist" in bad.stderr and "copy the market's id again" in bad.stderr


def test_check_config_says_what_it_found_on_the_chain(devnet: Devnet, tmp_path: Path) -> None:
    """(It said "OK" and nothing of what it had checked: the pool revision keeperd judged, the
    Morpho markets it found.) A line per protocol, from its plug-in's start."""
    ok = check_config(tmp_path, config_for(devnet, tmp_path))
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    aave = next(line for line in lines if line.strip().startswith("protocols[0]"))
    pool = devnet.manifest["aave_v3"]["pool"]
    assert f"pool {pool}, POOL_REVISION" in aave and "rules keeperd knows" in aave
    morpho = next(line for line in lines if line.strip().startswith("protocols[1]"))
    markets = len(config_for(devnet, tmp_path)["protocols"][1]["markets"])
    assert f"{markets} market(s) exist with the configured ids" in morpho and "LLTV" in morpho


def test_check_config_confirms_what_the_liquidations_trust(devnet: Devnet,
                                                           tmp_path: Path) -> None:
    """(A by-hand trial: a keeper.flash_liquidator with no code, or another contract, passed
    check-config, and `run` then refused to start.) The liquidators' own confirmations run
    as `run` runs them before it sends anything."""
    key = tmp_path / "keeper.key"
    key.write_text(KEY + "\n")
    os.chmod(key, 0o600)
    config = config_for(devnet, tmp_path, keeper={
        "mode": "liquidate", "key": {"source": "file", "path": str(key)},
        "capital": "auto", "flash_liquidator": TYPO,
        "uniswap_v3_factory": devnet.manifest["uniswap_v3"]["factory"]})
    del config["alerts"]["watchlists"]
    bad = check_config(tmp_path, config)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "keeper.flash_liquidator" in bad.stderr and TYPO in bad.stderr
    assert "keeperd run refuses to start on it" in bad.stderr


def test_check_config_names_the_keeper_and_its_gas(devnet: Devnet, tmp_path: Path) -> None:
    """(A by-hand trial: in liquidate mode a random key with no gas passed check-config, and
    the keeper's address was named nowhere.)"""
    key = tmp_path / "keeper.key"
    key.write_text("0x" + "12" * 32 + "\n")  # (an address that holds nothing)
    os.chmod(key, 0o600)
    config = config_for(devnet, tmp_path, keeper={
        "mode": "liquidate", "key": {"source": "file", "path": str(key)}})
    del config["alerts"]["watchlists"]
    done = check_config(tmp_path, config)
    assert done.returncode == 0, done.stdout + done.stderr
    keeper = "0x1C5A77d9FA7eF466951B2F01F724BCa3A5820b63"
    assert f"keeper {keeper} on chains[0] (devnet): 0 native" in done.stdout, done.stdout
    assert (f"warning: chains[0]: the keeper {keeper} holds 0 of the native token"
            in done.stderr + done.stdout)
