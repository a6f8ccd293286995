"""Two `keeperd run` processes with the same configuration on one PostgreSQL (#16), tried as an
operator would: exactly one liquidates; SIGKILLed mid-wave, the other takes over within the
configured failover, resumes what the first signed and finishes the crash, and no
opportunity is sent twice (checked on chain) — nor any alert (checked at a webhook)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from keeperd.devnet.handle import Devnet
from tests.alert_fakes import Webhook
from tests.faults.invariants import keeper_liquidations
from tests.keeper_harness import (
    KEEPER_KEY,
    assert_declined_on_chain,
    chain_health,
    fund_keeper,
)
from tests.keeperd_process import start_keeperd, wait_until

LEASE = {"length_s": 3.0, "renew_every_s": 1.0, "statement_timeout_s": 0.8}


def replica_config(devnet: Devnet, tmp_path: Path, name: str, dsn: str,
                   alerts: dict[str, Any] | None = None) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        **({"alerts": alerts} if alerts else {}),
        "state_dir": str(tmp_path / name),  # each replica its own local state directory
        "storage": {"url": dsn, "lease": LEASE},
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        # (every account read is cross-checked, as in test_liquidation: the strictest gate. A
        # hold from a mismatch — anvil answering a read that races the startup approvals'
        # mining — ends when the accounts that disagreed agree at a later block)
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"],
                       "cross_check_every": 1}],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPER_KEY"}},
        "metrics": {"enabled": False}, "logging": {"format": "json"},
    }))
    return path


def events(logs: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.read_text().splitlines()
            if line.startswith("{") and f'"{name}"' in line]


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return asyncio.run(run())


class Pair:
    """Two replicas of one keeper on a fresh PostgreSQL database: a started first (it leads),
    b once a leads."""

    def __init__(self, devnet: Devnet, tmp_path: Path, postgres_server: str,
                 alerts: dict[str, Any] | None = None) -> None:
        from tests.conftest import fresh_database

        self.devnet, self.tmp_path, self.alerts = devnet, tmp_path, alerts
        self.dsn = asyncio.run(fresh_database(postgres_server))
        fund_keeper(devnet)
        self.env = dict(os.environ, KEEPER_KEY=KEEPER_KEY,
                        WEBHOOK_SECRET="replica-test-webhook-secret-of-32b")
        self.logs = {n: tmp_path / f"{n}.log" for n in ("a", "b")}
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self) -> None:
        self.procs["a"] = self._start("a")
        self.wait(lambda: events(self.logs["a"], "replica.promoted"), "a leads", 60)
        self.procs["b"] = self._start("b")
        self.wait(lambda: events(self.logs["b"], "daemon.started"), "b follows", 60)

    def wait(self, predicate: Callable[[], Any], what: str, limit: float = 30.0) -> None:
        """wait_until, failing with what both replicas logged."""
        wait_until(predicate, what, limit, logs=tuple(self.logs.values()))

    def _start(self, name: str) -> subprocess.Popen[str]:
        return start_keeperd(replica_config(self.devnet, self.tmp_path, name, self.dsn,
                                            self.alerts), self.env, self.logs[name])

    def stop(self) -> None:
        import signal

        self.devnet.client.call("evm_setAutomine", True)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
                proc.wait(timeout=15)


@pytest.mark.slow
def test_two_replicas_one_liquidates_and_the_standby_finishes_a_crash_after_sigkill(
        devnet: Devnet, tmp_path: Path, postgres_server: str) -> None:
    webhook = Webhook()
    watched = [b["address"] for b in devnet.manifest["borrowers"]][:60]
    pair = Pair(devnet, tmp_path, postgres_server, alerts={
        "routes": [{"name": "ops", "sinks": [{"kind": "webhook", "url": webhook.url,
                                              "secret": "${WEBHOOK_SECRET}"}]}],
        "watchlists": [{"name": "desk", "accounts": watched, "warn": 1.1, "critical": 1.02,
                        "route": "ops"}]})
    dsn, logs, procs = pair.dsn, pair.logs, pair.procs

    def journal() -> dict[str, str]:
        return dict(query(dsn, "SELECT key, status FROM liquidations"))  # type: ignore[arg-type]

    try:
        pair.start()
        time.sleep(2 * LEASE["renew_every_s"])
        assert not events(logs["b"], "replica.promoted")  # exactly one leads
        # A first drop both replicas evaluate: watched accounts cross their warn level; only
        # the leader tells.
        told_before = len(events(logs["a"], "alerts.notify"))
        first_drop = devnet.client.block_number() + 1  # (a liquidates what it puts under)
        devnet.set_price("WETH", devnet.manifest["prices_usd"]["WETH"] * 0.93)
        pair.wait(lambda: len(events(logs["a"], "alerts.notify")) > told_before,
                   "a tells the drop", 30)
        time.sleep(2.0)  # b evaluates the same blocks meanwhile
        devnet.client.call("evm_setAutomine", False)
        devnet.set_price_async("WETH", 2100.0)
        devnet.mine(1)
        borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
        underwater = {a for a in borrowers if chain_health(devnet, a) < 1.0}
        assert len(underwater) > 20
        # a liquidates: its wave journaled (signed, write-ahead) and broadcast; then SIGKILL.
        pair.wait(lambda: len(journal()) > 20 and "pending" in journal().values(),
                   "a's liquidations", 30)
        procs["a"].kill()
        killed_at = time.monotonic()
        procs["a"].wait(timeout=10)
        sent_by_a = {k for k, s in journal().items() if s == "pending"}
        # Its wave is mined while b is still a standby: b settles it while it reconciles,
        # and must tell it (a standby's alerts are dropped: those were, for good).
        mined = devnet.mine(1)
        pair.wait(lambda: events(logs["b"], "replica.promoted"), "b takes over", 30)
        failover = time.monotonic() - killed_at
        assert failover <= LEASE["length_s"] + 2 * LEASE["renew_every_s"] + 1.0, failover
        # b reconciled the shared journal: a's signed transactions tracked again, none signed
        # anew under another nonce.
        resumed = {e["opportunity"] for e in events(logs["b"], "journal.resumed")}
        assert resumed == sent_by_a
        # b acts on the block it evaluated as a standby at once, not at the next block (no
        # block is mined meanwhile: it waited for one).
        pair.wait(lambda: [e for e in events(logs["b"], "liquidation.acting_on_promotion")
                           if e["block"] == mined], "b acts on the block it evaluated", 15)
        for _ in range(6):
            devnet.mine(1)
            time.sleep(1.0)
        pair.wait(lambda: all(s in ("included", "lost_race", "reverted") for s in
                               journal().values()) and journal(), "settled", 30)
        pair.wait(lambda: not query(dsn, "SELECT id FROM outbox WHERE state = 'pending'"),
                   "every alert delivered", 30)
    finally:
        pair.stop()
        webhook.close()
    # Alerts: what a told before the SIGKILL and b after it, each at the webhook once — as a
    # receiver that honours the Idempotency-Key sees it. A sink delivers one row at a time, so
    # the SIGKILL leaves at most one row in doubt (accepted by the webhook, not yet marked
    # delivered): b sends that one again, under the same key.
    rows = query(dsn, "SELECT idempotency_key, state FROM outbox")
    assert rows and {state for _, state in rows} == {"delivered"}
    keys = [key for key, _ in webhook.received]
    assert set(keys) == {key for key, _ in rows}  # every notification arrived
    assert len(keys) - len(set(keys)) <= 1, len(keys) - len(set(keys))  # the one in doubt
    told = {key: (b["fingerprint"], b["kind"], b["block"]) for key, b in webhook.received}
    assert len(set(told.values())) == len(told)  # b never told again what a had told
    assert events(logs["b"], "alerts.delivered")  # the new leader delivers
    assert any(b["rule"] == "liquidation" for _, b in webhook.received)
    # Every inclusion is told, a's settled by b while it reconciled as well (those were
    # dropped as a standby's alerts, never told).
    included_told = {b["details"]["opportunity"] for _, b in webhook.received
                     if b["rule"] == "liquidation" and b["labels"].get("event") == "included"}
    assert {k for k, s in journal().items() if s == "included"} <= included_told
    statuses = journal()
    assert "reverted" not in statuses.values()
    # Never twice: one signed transaction per opportunity (a's, resumed by b, or b's own)...
    per_key = dict(query(dsn, "SELECT key, COUNT(*) FROM liquidation_txs GROUP BY key"))
    assert per_key and all(n == 1 for n in per_key.values()), per_key
    # ...and on chain, one liquidation by the keeper per included opportunity.
    ours = keeper_liquidations(devnet, first_drop)
    included = [k for k, s in statuses.items() if s == "included"]
    assert len(ours) == len(included) > 20
    # Every account the crash put under water was liquidated, or is dust keeperd's own
    # decision declines (the failover forgot none).
    liquidated = {k.split(":")[1].lower() for k in included}
    assert_declined_on_chain(devnet, tmp_path, {a for a in underwater
                                                if a.lower() not in liquidated})
    # The account index is each replica's own (its reorg rewinds follow its own view of the
    # chain): in its state directory's file, every borrower in it; none on PostgreSQL.
    for name in ("a", "b"):
        local = sqlite3.connect(tmp_path / name / "keeperd.sqlite3")
        try:
            indexed = {r[0].lower() for r in local.execute("SELECT account FROM accounts")}
            shared_tables = local.execute(
                "SELECT name FROM sqlite_master WHERE name = 'liquidations'").fetchall()
        finally:
            local.close()
        assert {a.lower() for a in borrowers} <= indexed, name
        assert not shared_tables, name  # the journal is on PostgreSQL only
    assert query(dsn, "SELECT count(*) FROM accounts") == [(0,)]


@pytest.mark.slow
def test_a_leader_frozen_past_its_lease_sends_nothing_when_it_resumes(
        devnet: Devnet, tmp_path: Path, postgres_server: str) -> None:
    import signal

    pair = Pair(devnet, tmp_path, postgres_server)
    dsn, logs, procs = pair.dsn, pair.logs, pair.procs
    try:
        pair.start()
        procs["a"].send_signal(signal.SIGSTOP)  # frozen: no renewal, no crash, no goodbye
        pair.wait(lambda: events(logs["b"], "replica.promoted"), "b takes over", 30)
        sent_by_a = len(events(logs["a"], "tx.sent"))  # its approvals, before the freeze
        devnet.client.call("evm_setAutomine", False)
        devnet.set_price_async("WETH", 2100.0)
        devnet.mine(1)
        pair.wait(lambda: len(query(dsn, "SELECT key FROM liquidations")) > 20, "b sends", 30)
        # a resumes with a backlog of blocks and a crash in them: it must not act on it.
        procs["a"].send_signal(signal.SIGCONT)
        pair.wait(lambda: events(logs["a"], "replica.demoted"), "a steps down", 30)
        for _ in range(4):
            devnet.mine(1)
            time.sleep(1.0)
        assert len(events(logs["a"], "tx.sent")) == sent_by_a  # a sent nothing more
        assert events(logs["b"], "replica.promoted") and not events(logs["b"],
                                                                     "replica.demoted")
    finally:
        pair.stop()
    per_key = dict(query(dsn, "SELECT key, COUNT(*) FROM liquidation_txs GROUP BY key"))
    assert len(per_key) > 20 and all(n == 1 for n in per_key.values())
    statuses = dict(query(dsn, "SELECT key, status FROM liquidations"))  # type: ignore[arg-type]
    assert "reverted" not in statuses.values()


@pytest.mark.slow
def test_postgresql_restarted_under_both_replicas_they_resume_and_send_once(
        devnet: Devnet, tmp_path: Path, postgres: Any) -> None:
    pair = Pair(devnet, tmp_path, postgres.dsn)
    dsn, logs = pair.dsn, pair.logs
    try:
        pair.start()
        postgres.restart()  # an upgrade under both replicas
        # Each reconnects on its next statement; whoever leads after the restart (the same
        # leader if the restart was shorter than its lease) acts on the crash.
        time.sleep(LEASE["length_s"] + 2 * LEASE["renew_every_s"])
        devnet.client.call("evm_setAutomine", False)
        devnet.set_price_async("WETH", 2100.0)
        crash = devnet.mine(1)
        pair.wait(lambda: len(query(dsn, "SELECT key FROM liquidations")) > 20,
                   "liquidations after the restart", 30)
        for _ in range(4):
            devnet.mine(1)
            time.sleep(1.0)
        pair.wait(lambda: {s for _, s in query(dsn, "SELECT key, status FROM liquidations")}
                   <= {"included", "lost_race"}, "settled", 30)
    finally:
        pair.stop()
    per_key = dict(query(dsn, "SELECT key, COUNT(*) FROM liquidation_txs GROUP BY key"))
    assert len(per_key) > 20 and all(n == 1 for n in per_key.values())
    ours = keeper_liquidations(devnet, crash)
    assert len(ours) == len(per_key)  # one liquidation on chain per opportunity
    # Who acted after the restart: the first leader kept its lease, or lost it (renewals
    # failing past the lease) and one replica took it with a higher epoch — never both.
    epochs = sorted(e["epoch"] for n in ("a", "b") for e in events(logs[n], "replica.promoted"))
    assert epochs == list(range(1, len(epochs) + 1))


@pytest.mark.slow
def test_a_leaders_reloaded_watchlist_is_seen_by_the_standby_and_read_at_its_takeover(
        devnet: Devnet, tmp_path: Path, postgres_server: str) -> None:
    """Trial 28: an address added to a watchlist, only the leader reloaded (`kill -HUP`, what
    `systemctl reload` on one host does): the standby never said its config differed, and
    after the leader's SIGKILL it led with its old watchlist, told the holder 'no longer
    watched' and nothing more. Now the standby says it within its check (30 s), naming the
    section, and at the takeover reads its file again (edited, not reloaded), so it leads
    with the watchlist the operator wrote, and nothing differs from the last leader's."""
    import signal

    webhook = Webhook()
    accounts = [b["address"] for b in devnet.manifest["borrowers"]][:2]

    def alerts(watched: list[str]) -> dict[str, Any]:
        return {"routes": [{"name": "ops", "sinks": [{"kind": "webhook", "url": webhook.url,
                                                      "secret": "${WEBHOOK_SECRET}"}]}],
                "watchlists": [{"name": "alice", "accounts": watched, "route": "ops"}]}

    pair = Pair(devnet, tmp_path, postgres_server, alerts=alerts(accounts[:1]))
    logs, procs = pair.logs, pair.procs
    try:
        pair.start()
        replica_config(devnet, tmp_path, "a", pair.dsn, alerts(accounts))
        procs["a"].send_signal(signal.SIGHUP)
        pair.wait(lambda: events(logs["a"], "daemon.reloaded"), "a reloads its watchlist")
        pair.wait(lambda: [e for e in events(logs["b"], "replica.config_differs")
                           if e["sections"] == ["alerts.watchlists"]],
                  "b says its watchlists differ from the leader's", 45)
        replica_config(devnet, tmp_path, "b", pair.dsn, alerts(accounts))  # (not reloaded)
        procs["a"].kill()
        pair.wait(lambda: events(logs["b"], "replica.promoted"), "b takes over", 30)
        time.sleep(1.0)  # (anything said right after the promotion)
        [reread] = [e for e in events(logs["b"], "daemon.reloaded")]
        assert reread["why"] == "promotion" and reread["watchlists"] == ["alice"]
        assert events(logs["b"], "replica.took_over_with_other_config") == []
    finally:
        pair.stop()
        webhook.close()
