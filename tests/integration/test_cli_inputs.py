"""The command line a new user meets, on the devnet: a breaker name no protocol prices is
refused, set-price climbs back after a crash, the metrics port in use is one line, simulate
lists the alerts a shock would raise, and `devnet up` says where the chain is."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from keeperd import cli
from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from keeperd.devnet.paths import project_root
from tests.integration.test_daemon import write_config

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("logging_restored")  # (tests/conftest.py)


@pytest.fixture
def devnet_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A devnet directory of this test's own (never the checkout's .devnet/, where someone's
    devnet may be up), sharing the built states."""
    own = tmp_path / "devnet"
    own.mkdir()
    (own / "states").symlink_to(project_root() / ".devnet" / "states")
    monkeypatch.setenv("KEEPERD_DEVNET_DIR", str(own))
    return own


def test_breaker_refuses_an_asset_no_protocol_prices(
        devnet: Devnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = write_config(tmp_path, devnet, [devnet.manifest["rpc_url"]])
    for asset, hint in (("weth", "(did you mean WETH?)"), ("FOO", "WBTC, WETH")):
        assert cli.main(["breaker", "trip", asset, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert f"no configured protocol prices {asset!r}" in err and hint in err
    assert cli.main(["breaker", "list", "--config", str(config)]) == 0
    assert "no breaker has ever tripped" in capsys.readouterr().out
    assert cli.main(["breaker", "trip", "WETH", "--config", str(config)]) == 0
    assert "WETH on every chain: tripped by hand" in capsys.readouterr().out


def test_set_price_climbs_back_after_a_crash(
        devnet: Devnet, devnet_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rise needs Curie's mark to pass its 15-minute premium window: the first walk never
    reached it (a RuntimeError, every time). And the feeds it did not move stay fresh."""
    from keeperd.devnet.curie import artifact

    devnet.write_manifest(devnet_dir / "manifest.json")
    start = devnet.price("WETH")
    assert cli.main(["devnet", "set-price", "WETH", f"{start * 0.7:g}"]) == 0
    assert cli.main(["devnet", "set-price", "WETH", f"{start:g}"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"WETH: {start * 0.7:g} -> {start:g} USD"
    curie, balance = devnet.manifest["perp_curie"], artifact("AccountBalance")
    (mark,) = balance.decode_result("getMarkPrice", devnet.client.eth_call(
        curie["account_balance"], balance.encode_call(
            "getMarkPrice", curie["base_tokens"]["WETH"])))
    assert mark / 1e18 == pytest.approx(start, rel=2e-3)
    head = int(devnet.client.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
    (_, _, _, updated_at, _) = devnet._aggregator.decode_result(
        "latestRoundData", devnet.client.eth_call(
            devnet.manifest["price_feeds"]["WBTC"],
            devnet._aggregator.encode_call("latestRoundData")))
    assert head - updated_at < 120


def test_set_price_with_automine_off_moves_every_protocol_in_the_next_block(
        devnet: Devnet, devnet_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Blocks mined by hand (a crash to watch step by step): the moves wait in the pool, all
    of them, for the next block. The command hung a minute, said "the devnet refused it",
    and left the feed's move in the pool without the Morpho oracles' (a by-hand trial)."""
    devnet.write_manifest(devnet_dir / "manifest.json")
    start = devnet.price("WETH")
    devnet.client.call("evm_setAutomine", False)
    try:
        assert cli.main(["devnet", "set-price", "WETH", f"{start * 0.7:g}"]) == 0
        assert "with the next block mined" in capsys.readouterr().out
        assert devnet.price("WETH") == pytest.approx(start)  # (not mined yet)
        pool = devnet.client.call("txpool_status")
        # (the feed, Morpho's WETH oracles, the Uniswap pools' alignment)
        moves = devnet._price_moves("WETH", start * 0.7)
        assert int(pool["pending"], 16) == len(moves) > 1
        assert cli.main(["devnet", "mine", "1"]) == 0
    finally:
        devnet.client.call("evm_setAutomine", True)
    assert devnet.price("WETH") == pytest.approx(start * 0.7, rel=1e-6)
    assert int(devnet.client.call("txpool_status")["pending"], 16) == 0


def feed_ages(devnet: Devnet) -> dict[str, int]:
    head = int(devnet.client.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
    return {symbol: head - int.from_bytes(devnet.client.eth_call(
        feed, devnet._aggregator.encode_call("latestTimestamp")), "big")
        for symbol, feed in devnet.manifest["price_feeds"].items()}


def test_every_devnet_command_leaves_the_feeds_fresh(
        devnet: Devnet, devnet_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """#27 item 13: chain time moved by a command (here `mine` of 4,000 blocks, a second
    each; set-price's mark walks, a quarter hour each) left every feed's round behind, and
    example.yaml's one-hour heartbeats tripped USDT and WBTC. After each command the feeds
    are as fresh as a real chain's heartbeat rounds keep them; a command that moves no time
    publishes nothing."""
    devnet.write_manifest(devnet_dir / "manifest.json")
    assert cli.main(["devnet", "mine", "4000", "--block-time", "1"]) == 0
    assert max(feed_ages(devnet).values()) <= 600
    before = devnet.client.block_number()
    assert cli.main(["devnet", "mine", "3"]) == 0
    assert devnet.client.block_number() == before + 3  # nothing needed refreshing


def test_devnet_mine_moves_chain_time_as_a_chains_blocks_do(
        devnet: Devnet, devnet_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1,200 blocks mined were 67 seconds of chain time: a crash's Curie collateral
    liquidations waited for good on a TWAP that time did not move (by hand). A block is 12
    seconds after the last, as Ethereum's; --block-time 0 keeps anvil's own clock."""
    devnet.write_manifest(devnet_dir / "manifest.json")

    def now() -> int:
        return int(devnet.client.call("eth_getBlockByNumber", "latest", False)["timestamp"],
                   16)

    start = now()
    assert cli.main(["devnet", "mine", "100"]) == 0
    assert now() - start >= 100 * 12
    start = now()
    assert cli.main(["devnet", "mine", "10", "--block-time", "0"]) == 0
    assert now() - start < 60


def test_a_trip_observed_on_a_chain_that_is_gone_is_forgotten(
        devnet: Devnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """#27 item 13: `breaker list` kept a devnet's trips after the devnet went (down, then up
    again from its state). A trip observed at a block the chain no longer has (here: a block
    mined, tripped on, then reverted away, as a devnet started again loses it) is forgotten,
    by `breaker list` and by the daemon's start; one observed at a block the chain has, and a
    manual one, stay."""
    from keeperd.oracles.breaker import Breaker
    from keeperd.storage.db import STATE_FILE, SqliteDatabase
    from keeperd.storage.migrations import migrate

    config, _ = write_config(tmp_path, devnet, [devnet.manifest["rpc_url"]])
    (tmp_path / "state").mkdir()

    def head_hash() -> str:
        return str(devnet.client.call("eth_getBlockByNumber", "latest", False)["hash"])

    async def trip_three() -> None:
        before = devnet.snapshot()
        devnet.advance_time(7)  # a block of its own, whatever the next one's contents
        gone = head_hash()
        devnet.revert(before)
        devnet.advance_time(1)
        assert head_hash() != gone
        db = SqliteDatabase.open(tmp_path / "state" / STATE_FILE)
        await migrate(db)
        breaker = Breaker(db)
        await breaker.observe("devnet", "WETH", ["stale: 4000 s"], 0, block_hash=gone)
        await breaker.observe("devnet", "USDT", ["stale: 4000 s"], 0, block_hash=head_hash())
        await breaker.trip("WBTC", "manual: by hand", manual=True)
        await db.close()

    asyncio.run(trip_three())
    assert cli.main(["breaker", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "WETH: its automatic trip (stale: 4000 s) was observed on a chain that is gone" in out
    listed = {(line.split()[0], line.split()[1]): line.split()[2] for line in out.splitlines()
              if ":" not in line.split()[0] and line.split()[0] != "ASSET"}
    assert listed == {("USDT", "devnet"): "TRIPPED", ("WBTC", "*"): "TRIPPED"}
    assert "clear since" not in out

    async def usdt_fresh_again() -> None:  # (a clean judgement: clearing, not yet reset)
        db = SqliteDatabase.open(tmp_path / "state" / STATE_FILE)
        await Breaker(db).observe("devnet", "USDT", [], 3_600, block_hash=head_hash())
        await db.close()

    asyncio.run(usdt_fresh_again())
    assert cli.main(["breaker", "list", "--config", str(config)]) == 0
    [usdt] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("USDT")]
    assert "TRIPPED" in usdt and "clear since 01:00:00 UTC chain time, resets once clear " \
        "for 300 s" in usdt, usdt
    # A reset says where the trips it cleared were (it said "every chain" of one on devnet).
    assert cli.main(["breaker", "reset", "USDT", "--config", str(config)]) == 0
    assert "USDT on devnet: reset (1 trip(s) cleared)" in capsys.readouterr().out
    assert cli.main(["breaker", "reset", "WBTC", "--config", str(config)]) == 0
    assert "WBTC on every chain: reset (1 trip(s) cleared)" in capsys.readouterr().out

    # The daemon's start forgets it alike (and judges WETH's feed, fine, at its next block).
    (tmp_path / "state" / STATE_FILE).unlink()
    asyncio.run(trip_three())
    proc = subprocess.Popen([sys.executable, "-m", "keeperd", "run", "--config", str(config),
                             "--duration", "4"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    logs = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, logs
    assert '"event": "breaker.forgotten"' in logs and '"asset": "WETH"' in logs
    async def states() -> dict[tuple[str, str], Any]:
        db = SqliteDatabase.open(tmp_path / "state" / STATE_FILE)
        try:
            return await Breaker(db).states()
        finally:
            await db.close()

    states = asyncio.run(states())
    assert ("devnet", "WETH") not in states or not states[("devnet", "WETH")].tripped
    assert states[("*", "WBTC")].tripped


def test_metrics_port_in_use_is_one_line(devnet: Devnet, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config, _ = write_config(tmp_path, devnet, [devnet.manifest["rpc_url"]], port=port)
        run = subprocess.run([sys.executable, "-m", "keeperd", "run", "--config", str(config),
                              "--duration", "30"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert f"keeperd: metrics: 127.0.0.1:{port} is already in use" in run.stderr
    assert "set metrics.port to a free port" in run.stderr
    assert "reads metrics.port from" not in run.stderr
    # The port from a variable (as config/devnet.yaml's): the variable is named, with a
    # misspelt one beside it told as such (a by-hand trial set "metrics.port" by neither).
    data = yaml.safe_load(config.read_text())
    data["metrics"]["port"] = "${KEEPERD_METRICS_PORT:-" + str(port) + "}"
    config.write_text(yaml.safe_dump(data))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        run = subprocess.run([sys.executable, "-m", "keeperd", "run", "--config", str(config),
                              "--duration", "30"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "KEEPERD_METRICS_PROT": "1"})
    assert run.returncode == 1
    assert ("this config reads metrics.port from KEEPERD_METRICS_PORT: export "
            "KEEPERD_METRICS_PORT=<a free port>") in run.stderr
    assert '"event": "config.variable_unread"' in run.stdout + run.stderr


def simulate_config(tmp_path: Path, devnet: Devnet) -> tuple[Path, list[str], str]:
    """The devnet's Aave with a watchlist: three WETH borrowers a 30 % drop puts under
    critical, and one it leaves far above warn."""
    config, _ = write_config(tmp_path, devnet, [devnet.manifest["rpc_url"]])
    data = yaml.safe_load(config.read_text())
    weth = sorted((b for b in devnet.manifest["borrowers"]
                   if b["collateral"] == ["WETH"] and "WETH" not in b["debts"]),
                  key=lambda b: b["planned_health"])
    crossing = [b["address"] for b in weth if 1.06 < b["planned_health"] < 1.3][:3]
    safe = max(devnet.manifest["borrowers"], key=lambda b: b["planned_health"])["address"]
    data["alerts"] = {
        "routes": [{"name": "holders", "sinks": [
            {"kind": "webhook", "url": "http://127.0.0.1:9/hook",
             "secret": "${KEEPERD_TEST_UNSET:-a-webhook-secret-of-32-or-more-bytes}"}]}],
        "watchlists": [{"name": "desk", "accounts": [*crossing, safe], "route": "holders"}]}
    config.write_text(yaml.safe_dump(data))
    return config, crossing, safe


def test_simulate_lists_the_alerts_a_shock_would_raise(
        devnet: Devnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, crossing, safe = simulate_config(tmp_path, devnet)
    assert len(crossing) == 3
    assert cli.main(["simulate", "--config", str(config), "--shock", "WETH=-30%",
                     "--png", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    block = out[out.index("alerts this shock would raise"):]
    for account in crossing:
        line = next(x for x in block.splitlines() if account in x)
        assert line.split()[:4] == ["position_health", "critical", "route", "holders"], line
        assert "below critical 1.05" in line
    assert safe not in block
    # The cascade rule's levels: warning over $100,000 of bad debt, critical over $1M.
    found = re.search(r"final drop .* bad debt \$([\d,]*\d)", out)
    assert found is not None
    bad_debt = int(found.group(1).replace(",", ""))
    assert bad_debt > 100_000  # (this book, with no depth configured: $488,790)
    level = "critical" if bad_debt > 1_000_000 else "warning"
    assert f"cascade_risk     {level:8} route holders  bad debt ${bad_debt:,}" in block


def test_simulate_chart_that_cannot_be_written_is_one_line(
        devnet: Devnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A write that fails when it happens (a full disk): after the figures, one line."""
    from tests.integration.test_full_disk import fill, small_disk

    config, _, _ = simulate_config(tmp_path, devnet)
    with small_disk(tmp_path / "disk", "1m") as disk:
        fill(disk)
        png = disk / "c.png"
        assert cli.main(["simulate", "--config", str(config), "--shock", "WETH=-30%",
                         "--png", str(png)]) == 1
    captured = capsys.readouterr()
    assert "static (the shock alone)" in captured.out
    assert captured.err.startswith(f"keeperd simulate: the chart was not written to {png}: "
                                   "No space left on device")
    assert len(captured.err.strip().splitlines()) == 1


def test_devnet_up_prints_where_the_chain_is(devnet_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert cli.main(["devnet", "up", "--port", str(port)]) == 0
    try:
        captured = capsys.readouterr()
        manifest = Path(captured.out.strip())
        assert manifest == devnet_dir / "manifest.json"  # (stdout: scripts read the path)
        assert json.loads(manifest.read_text())["rpc_url"] == f"http://127.0.0.1:{port}"
        assert (f"devnet up: RPC http://127.0.0.1:{port}, websocket ws://127.0.0.1:{port}"
                in captured.err)
        assert f"KEEPERD_DEVNET_RPC=http://127.0.0.1:{port}" in captured.err
        assert "config/devnet.yaml reaches it" in captured.err
        # The port taken (this devnet's): said, with the fix, no traceback.
        assert cli.main(["devnet", "down"]) == 0
        import socket

        with socket.socket() as taken:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taken.bind(("127.0.0.1", port))
            taken.listen()
            assert cli.main(["devnet", "up", "--port", str(port)]) == 1
        err = capsys.readouterr().err
        assert f"port {port} is in use" in err and "--port" in err
        assert "Traceback" not in err
    finally:
        cli.main(["devnet", "down"])
