"""Alerting end to end on the devnet: watched positions crossing their thresholds as real
prices move, grouped for people and one by one for machines, escalated, resolved; a watched
position liquidated by the keeper; the outbox surviving SIGKILL; watchlists reloaded by SIGHUP.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from eth_utils import to_checksum_address

from keeperd.alerts.sinks import verify
from keeperd.config import parse_config
from keeperd.daemon import Daemon
from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from tests.alert_fakes import Recorder, telegram_app, webhook_app
from tests.conftest import serve
from tests.integration.test_daemon import logs_of, start
from tests.keeper_harness import (
    KEEPER_KEY,
    fund_keeper,
)

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
CHAT = -1001234567890
ALICE = [to_checksum_address("0x" + "00" * 18 + "a11c"),
         to_checksum_address("0x" + "00" * 18 + "a11d")]
SECRET = "whsec_test_only_long_enough_for_hmac"


def open_watched(devnet: Devnet, accounts: list[str], health: float) -> None:
    """1 WETH of collateral each, USDC debt sized for `health` at today's WETH price."""
    price = devnet.price("WETH")
    for account in accounts:
        devnet.open_position(account, "WETH", 1.0, "USDC", round(price * 0.825 / health, 2))


def health_of(devnet: Devnet, account: str) -> float:
    return devnet.account_data(account)[5] / 1e18


def price_for(devnet: Devnet, account: str, target: float) -> float:
    """The WETH price that puts `account` (WETH collateral, USDC debt) at `target` health."""
    return devnet.price("WETH") * target / health_of(devnet, account)


def alerts_section(telegram_url: str, webhook_url: str, **watchlist: Any) -> dict[str, Any]:
    return {
        "routes": [
            {"name": "people", "sinks": [{"kind": "telegram", "bot_token": "${TG_TOKEN}",
                                          "chat_id": CHAT, "api_url": telegram_url}]},
            {"name": "ops", "sinks": [{"kind": "webhook", "url": f"{webhook_url}/hook",
                                       "secret": "${WEBHOOK_SECRET}"}]},
        ],
        "watchlists": [
            {"name": "alice", "accounts": ALICE, "warn": 1.2, "critical": 1.05,
             "route": "people", **watchlist},
            {"name": "alice-machine", "accounts": ALICE, "warn": 1.2, "critical": 1.05,
             "route": "ops"},
        ],
        "operator_route": "ops",
        "outbox": {"backoff_initial_s": 0.1, "backoff_max_s": 0.5},
    }


def daemon_config(devnet: Devnet, tmp_path: Path, alerts: dict[str, Any], mode: str = "alert-only",
                  **extra: Any) -> dict[str, Any]:
    keeper: dict[str, Any] = {"mode": mode}
    if mode == "liquidate":
        keeper.update(key={"source": "env", "env": "KEEPER_KEY"}, min_profit_usd=1.0)
    return {
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]], "confirmations": 0,
                    "poll_interval": 0.1, "explorer_url": "https://explorer.example"}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}],
        "keeper": keeper,
        "alerts": alerts,
        "metrics": {"enabled": False},
        **extra,
    }


ENV = {"TG_TOKEN": TOKEN, "WEBHOOK_SECRET": SECRET, "KEEPER_KEY": KEEPER_KEY}


@pytest.fixture
async def daemon_factory() -> AsyncIterator[Callable[[dict[str, Any]], Any]]:
    running: list[tuple[Daemon, asyncio.Task[None], asyncio.Event]] = []

    async def make(data: dict[str, Any], config_path: Path | None = None) -> Daemon:
        daemon = Daemon(parse_config(data, env=ENV), metrics=Metrics(), config_path=config_path)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait([task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the start-up error, rather than a timeout
        assert daemon.ready.is_set(), "the daemon did not become ready"
        running.append((daemon, task, stop))
        return daemon

    yield make
    for _, task, stop in running:
        stop.set()
        await asyncio.wait_for(task, 15)


async def evaluated(daemon: Daemon, block: int, limit_s: float = 20) -> None:
    deadline = time.monotonic() + limit_s
    while daemon.scanners["aave"].completed_block < block:
        assert time.monotonic() < deadline, f"block {block} not evaluated"
        await asyncio.sleep(0.02)


async def eventually(check: Callable[[], bool], what: str, limit_s: float = 15) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def hooks(rec: Recorder, rule: str | None = None) -> list[dict[str, Any]]:
    return [e["body"] for e in rec.accepted if rule is None or e["body"]["rule"] == rule]


async def test_watchlist_warns_escalates_and_resolves_once_each(
        devnet: Devnet, tmp_path: Path, daemon_factory: Any) -> None:
    open_watched(devnet, ALICE, 1.5)
    telegram, webhook = Recorder(), Recorder()
    async with serve(telegram_app(TOKEN, telegram)) as tg, serve(webhook_app(webhook)) as wh:
        daemon = await daemon_factory(daemon_config(devnet, tmp_path, alerts_section(tg, wh)))
        await evaluated(daemon, devnet.client.block_number())
        assert telegram.accepted == [] and hooks(webhook, "position_health") == []

        devnet.set_price("WETH", price_for(devnet, ALICE[0], 1.15))  # both cross warn at once
        await evaluated(daemon, devnet.client.block_number())
        await eventually(lambda: len(telegram.accepted) == 1
                         and len(hooks(webhook, "position_health")) == 2,
                         "one grouped Telegram message and two webhooks")
        text = telegram.accepted[0]["text"]
        assert "WARNING · position health · 2 alerts" in text
        assert all(a in text for a in ALICE), text
        assert "explorer.example/address/" in text
        for body in hooks(webhook, "position_health"):
            assert body["status"] == "firing" and body["rule"] == "position_health"
            assert body["severity"] == "warning" and body["account"] in ALICE
            assert body["health_factor"] == pytest.approx(1.15, abs=0.002)
            assert body["protocol"] == "aave" and body["details"]["debt_usd"] > 0
            assert "health 1.15" in body["summary"]
        for entry in webhook.accepted:
            assert verify(SECRET, entry["raw"], entry["headers"]["X-Keeperd-Signature"])

        devnet.mine(5)  # still at 1.15: nothing more, not every block
        await evaluated(daemon, devnet.client.block_number())
        devnet.set_price("WETH", price_for(devnet, ALICE[0], 1.03))
        await evaluated(daemon, devnet.client.block_number())
        await eventually(lambda: len(telegram.accepted) == 2, "the escalation")
        assert "CRITICAL · position health · 2 alerts" in telegram.accepted[1]["text"]

        devnet.set_price("WETH", price_for(devnet, ALICE[0], 1.5))
        await evaluated(daemon, devnet.client.block_number())
        await eventually(lambda: len(telegram.accepted) == 3, "the resolution")
        assert "✅" in telegram.accepted[2]["text"] and "recovered" in telegram.accepted[2]["text"]
        # Each sink has its own delivery loop: the webhook's resolutions may land a moment
        # after Telegram's message (seen once under load).
        await eventually(lambda: len(hooks(webhook, "position_health")) == 6,
                         "the webhook's resolutions")
        kinds = [(b["account"], b["kind"]) for b in hooks(webhook, "position_health")]
        for account in ALICE:
            assert [k for a, k in kinds if a == account] == ["firing", "escalated", "resolved"]
        keys = [e["headers"]["Idempotency-Key"] for e in webhook.accepted]
        assert len(keys) == len(set(keys))


async def test_a_watched_position_liquidated_by_the_keeper(
        devnet: Devnet, tmp_path: Path, daemon_factory: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    open_watched(devnet, ALICE[:1], 1.3)
    telegram, webhook = Recorder(), Recorder()
    async with serve(telegram_app(TOKEN, telegram)) as tg, serve(webhook_app(webhook)) as wh:
        daemon = await daemon_factory(daemon_config(devnet, tmp_path, alerts_section(tg, wh),
                                                    mode="liquidate"))
        await evaluated(daemon, devnet.client.block_number())
        devnet.set_price("WETH", price_for(devnet, ALICE[0], 0.97))
        await eventually(lambda: hooks(webhook, "position_liquidated") != [],
                         "the watched position's liquidation", limit_s=30)
        [liquidated] = hooks(webhook, "position_liquidated")
        assert liquidated["account"] == ALICE[0] and liquidated["severity"] == "critical"
        assert liquidated["details"]["tx_hash"].startswith("0x")
        # What the liquidation left, at the block it was told, as the chain says it (it said
        # "may still be at risk: check its health" of a position with no debt left). Alice's
        # small position (under $2,000 of collateral) goes whole: debt 0, collateral left.
        collateral, debt = devnet.account_data(ALICE[0])[:2]
        assert debt == 0
        left = re.fullmatch(r"Its whole debt was repaid: nothing is left at risk there "
                            r"\(collateral \$([\d,.]+) left, yours to withdraw\)\.",
                            liquidated["action"])
        assert left is not None, liquidated["action"]
        assert float(left.group(1).replace(",", "")) == pytest.approx(collateral / 1e8, abs=0.01)
        await eventually(lambda: any(b["labels"]["event"] == "included"
                                     and b["account"] == ALICE[0]
                                     for b in hooks(webhook, "liquidation")),
                         "the keeper's liquidation of alice, included")
        tx = liquidated["details"]["tx_hash"]
        [ours] = [b for b in hooks(webhook, "liquidation")
                  if b["labels"]["event"] == "included" and b["account"] == ALICE[0]]
        assert ours["details"]["tx_hash"] == tx  # the keeper's own transaction
        await eventually(lambda: any("was liquidated" in m["text"] for m in telegram.accepted),
                         "the holder's Telegram message")
        # Its health alert resolves as what it is: nothing at risk (no debt), not "recovered:
        # health ∞", which read as good news after a liquidation that took it all.
        await eventually(lambda: [b for b in hooks(webhook, "position_health")
                                  if b["account"] == ALICE[0] and b["kind"] == "resolved"],
                         "alice's health alert resolved")
        [resolved] = [b for b in hooks(webhook, "position_health")
                      if b["account"] == ALICE[0] and b["kind"] == "resolved"]
        assert "has nothing at risk any more (no debt or open position" in resolved["summary"]
        assert "recovered" not in resolved["summary"]


async def test_a_config_file_cut_short_is_refused_at_reload(
        devnet: Devnet, tmp_path: Path, daemon_factory: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Audit F3: the file cut short while written (alerts gone, or routes kept and watchlists
    gone) still loads; reloaded, it removed every sink and resolved the firing position alert
    as "no longer watched". Refused now, the running alerts go on; the watchlists written out
    empty are taken away, each named."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    open_watched(devnet, ALICE[:1], 1.5)
    telegram, webhook = Recorder(), Recorder()
    async with serve(telegram_app(TOKEN, telegram)) as tg, serve(webhook_app(webhook)) as wh:
        data = daemon_config(devnet, tmp_path, alerts_section(tg, wh))
        path = tmp_path / "keeperd.yaml"
        text = yaml.safe_dump(data, sort_keys=False)
        path.write_text(text)
        daemon = await daemon_factory(data, path)
        devnet.set_price("WETH", price_for(devnet, ALICE[0], 1.15))
        await eventually(lambda: len(hooks(webhook, "position_health")) == 1, "the warning")

        for cut in (text[:text.index("\nalerts:")], text[:text.index("  watchlists:")]):
            path.write_text(cut)
            with structlog.testing.capture_logs() as logs:
                daemon._reload()  # (what SIGHUP calls)
            [refused] = [e for e in logs if e["event"] == "daemon.reload_refused"]
            assert refused["log_level"] == "error"
            assert "watchlist 'alice-machine'" in refused["would_remove"]
            assert not any(e["event"] == "daemon.reloaded" for e in logs)
        devnet.set_price("WETH", price_for(devnet, ALICE[0], 1.03))
        await eventually(lambda: [b["kind"] for b in hooks(webhook, "position_health")]
                         == ["firing", "escalated"], "the escalation, on the running routes")

        data["alerts"]["watchlists"] = []  # (deliberate: written out empty)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        with structlog.testing.capture_logs() as logs:
            daemon._reload()
        [removes] = [e for e in logs if e["event"] == "daemon.reload_removes"]
        assert removes["removed"] == ["watchlist 'alice'", "watchlist 'alice-machine'"]
        assert any(e["event"] == "daemon.reloaded" for e in logs)
        await eventually(lambda: len(hooks(webhook, "position_health")) == 3, "the resolution")
        resolved = hooks(webhook, "position_health")[2]
        assert resolved["kind"] == "resolved" and "no longer watched" in resolved["summary"]


def test_outbox_survives_sigkill_and_sighup_reloads_watchlists(devnet: Devnet,
                                                             tmp_path: Path) -> None:
    """keeperd as a process: an alert raised while the webhook receiver is down waits in the
    outbox through a SIGKILL and arrives after the restart; a watchlist added to the file
    takes effect on SIGHUP, without a restart."""
    open_watched(devnet, ALICE, 1.5)
    hook_port = free_port()
    hook_url = f"http://127.0.0.1:{hook_port}"
    alerts = alerts_section("http://127.0.0.1:9", hook_url)
    alerts["watchlists"] = [w for w in alerts["watchlists"] if w["route"] == "ops"]
    alerts["watchlists"][0]["accounts"] = ALICE[:1]
    config = tmp_path / "keeperd.yaml"
    data = daemon_config(devnet, tmp_path, alerts, logging={"format": "json"})
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, **ENV}

    def read_outbox() -> list[tuple[str, str]]:
        """The position alerts in the outbox (operator alerts may sit there too)."""
        import sqlite3
        db = sqlite3.connect(tmp_path / "state" / "keeperd.sqlite3")
        try:
            return [(r[0], r[1]) for r in db.execute(
                "SELECT state, idempotency_key, payload FROM outbox ORDER BY id")
                if json.loads(r[2])[0]["rule"] == "position_health"]
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def wait(check: Callable[[], bool], what: str, limit_s: float = 30) -> None:
        deadline = time.monotonic() + limit_s
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    proc = start(config, env=env)
    try:
        wait(lambda: '"daemon.started"' in logs_of(proc), "start")
        devnet.set_price("WETH", price_for(devnet, ALICE[0], 1.1))
        wait(lambda: any(s == "pending" for s, _ in read_outbox()), "an alert in the outbox")
        wait(lambda: '"alerts.delivery_failed"' in logs_of(proc), "a failed delivery")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    [(state, key)] = read_outbox()
    assert state == "pending"

    rec = Recorder()

    async def receive_then_reload() -> None:
        from aiohttp import web
        runner = web.AppRunner(webhook_app(rec))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        proc2 = start(config, env=env)
        try:
            def positions() -> list[dict[str, Any]]:
                return [e for e in rec.accepted if e["body"]["rule"] == "position_health"]

            await eventually(lambda: len(positions()) == 1, "the alert after restart", 30)
            assert positions()[0]["headers"]["Idempotency-Key"] == key
            assert positions()[0]["body"]["account"] == ALICE[0]
            # SIGHUP: the second account joins the watchlist without a restart.
            data["alerts"]["watchlists"][0]["accounts"] = ALICE
            config.write_text(yaml.safe_dump(data))
            proc2.send_signal(signal.SIGHUP)
            await eventually(lambda: '"daemon.reloaded"' in logs_of(proc2), "the reload")
            devnet.mine(1)
            await eventually(lambda: any(e["body"]["account"] == ALICE[1]
                                         for e in positions()), "the reloaded watchlist", 30)
            assert len(positions()) == 2  # and the first alert was not sent again
        finally:
            proc2.send_signal(signal.SIGTERM)
            await asyncio.get_running_loop().run_in_executor(None, proc2.wait, 15)
            await runner.cleanup()
        assert proc2.returncode == 0, logs_of(proc2)[-3000:]
        events = [json.loads(line)["event"] for line in logs_of(proc2).splitlines()
                  if line.startswith("{")]
        assert "alerts.flushed" in events
        for secret in (TOKEN, SECRET, TOKEN.split(":")[1]):
            assert secret not in logs_of(proc2)

    assert all(secret not in logs_of(proc) for secret in (TOKEN, SECRET))
    asyncio.run(receive_then_reload())
