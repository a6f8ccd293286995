"""#17: SIGKILL at each named crash point (`keeperd/crashpoints.py`) with liquidations and alerts
in flight, one `keeperd run` after another on the same state directory — then the invariants:
no opportunity sent twice or left stuck, no nonce shared, no alert lost (the one a sink had
accepted when the process died is sent again under its idempotency key), the index complete,
no secret in any output.

One round passes every point once (part of `make test`); `KEEPERD_FAULT_ROUNDS=20 make
test-faults` repeats the whole lineage, each round on a fresh state directory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from keeperd.crashpoints import ENV as CRASH_ENV
from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from tests.alert_fakes import Webhook
from tests.faults.invariants import (
    assert_index_complete,
    journal_problems,
    keeper_liquidations,
    read_state,
)
from tests.integration.test_daemon import get
from tests.keeper_harness import (
    KEEPER_KEY,
    assert_declined_on_chain,
    chain_health,
    fund_keeper,
)
from tests.keeperd_process import start_keeperd, wait_until
from tests.sigkill_harness import keeper_in_mempool

SECRET = "crash-point-webhook-secret-of-32-bytes"
ROUNDS = int(os.environ.get("KEEPERD_FAULT_ROUNDS", "1"))


def config(devnet: Devnet, state: Path, webhook: str, watched: list[str],
           metrics_port: int) -> Path:
    path = state.parent / f"{state.name}.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(state),
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",  # (cross-checks:
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"],
                       "cross_check_every": 1}],  # as in tests/integration/test_replicas.py)
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPER_KEY"}},
        "alerts": {
            "routes": [{"name": "ops", "sinks": [{"kind": "webhook", "url": webhook,
                                                  "secret": "${WEBHOOK_SECRET}"}]}],
            "watchlists": [{"name": "desk", "accounts": watched, "warn": 1.1,
                            "critical": 1.02, "route": "ops"}],
            "operator_route": "ops",
            "outbox": {"backoff_initial_s": 0.1, "backoff_max_s": 0.5}},
        "metrics": {"listen": "127.0.0.1", "port": metrics_port},
        "logging": {"format": "json"},
    }))
    return path


class Lineage:
    """`keeperd run` after `keeperd run` on one state directory, each told where to die."""

    def __init__(self, devnet: Devnet, state: Path, config_path: Path) -> None:
        self.devnet, self.state, self.config = devnet, state, config_path
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, crash_at: str | None) -> None:
        env = dict(os.environ, KEEPER_KEY=KEEPER_KEY, WEBHOOK_SECRET=SECRET)
        env.pop(CRASH_ENV, None)
        if crash_at is not None:
            env[CRASH_ENV] = crash_at
        log = self.state.parent / f"{self.state.name}-{len(self.logs)}-{crash_at}.log"
        self.logs.append(log)
        self.proc = start_keeperd(self.config, env, log)

    def died_at(self, point: str, limit: float = 60.0) -> None:
        assert self.proc is not None
        proc = self.proc
        wait_until(lambda: proc.poll() is not None, f"the crash at {point}", limit)
        assert proc.returncode == -signal.SIGKILL, (point, proc.returncode,
                                                    self.logs[-1].read_text()[-2000:])
        assert f"crash point {point}: SIGKILL" in self.logs[-1].read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for log in self.logs for line in log.read_text().splitlines()
                if line.startswith("{") and f'"{name}"' in line]


def crash_through_the_chain_points(keeper: Lineage, devnet: Devnet, borrowers: list[str]
                                   ) -> tuple[int, set[str]]:
    """A crash (automine off: blocks when mined), and a `keeperd run` dying at each point of
    its liquidations' way to the chain — journaled and signed, broadcast, settling (the block
    mined, a receipt seen and not yet journaled) — then one that lives, started: the crash's
    block, and the accounts it put under water."""
    devnet.client.call("evm_setAutomine", False)
    devnet.set_price_async("WETH", 2100.0)
    devnet.mine(1)
    crash_block = devnet.client.block_number()
    underwater = {a for a in borrowers if chain_health(devnet, a) < 1.0}
    for point in ("journal.signed", "tx.broadcast"):
        keeper.start(point)
        keeper.died_at(point)
    keeper.start("tx.settled")
    wait_until(lambda: keeper.events("daemon.started"), "started", 60)
    devnet.mine(1)
    keeper.died_at("tx.settled")
    keeper.start(None)
    wait_until(lambda: keeper.events("daemon.started"), "started", 60)
    return crash_block, underwater


def mine_until_settled(devnet: Devnet, db: Path, limit_s: float = 60) -> None:
    """Blocks until the crash is done: every journaled liquidation settled and nothing of the
    keeper's left in the mempool, three blocks in a row that journal nothing new (a
    liquidation held by a failed cross-check — anvil answering a read that races its mining —
    waits for a clean round of checks, a few blocks later; what is left under water then is
    checked to be dust by the caller)."""
    def settled(rows: list[tuple[Any, ...]]) -> bool:
        return bool(rows) and all(s in ("included", "lost_race", "reverted")
                                  for _, s in rows) and keeper_in_mempool(devnet) == 0

    deadline = time.monotonic() + limit_s
    quiet, seen = 0, -1
    while quiet < 3:
        assert time.monotonic() < deadline, "the crash's liquidations did not finish"
        devnet.mine(1)
        time.sleep(1.0)
        rows = read_state(db)[0]
        quiet = quiet + 1 if settled(rows) and len(rows) == seen else 0
        seen = len(rows)


def crash_lineage(devnet: Devnet, state: Path, webhook: Webhook) -> dict[str, Any]:
    borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
    metrics_port = free_port()
    keeper = Lineage(devnet, state, config(devnet, state, webhook.url, borrowers[:60],
                                           metrics_port))
    db = state / "keeperd.sqlite3"
    try:
        # The first catch-up of the account index dies between reading and writing a range.
        keeper.start("index.logs_read")
        keeper.died_at("index.logs_read")
        # A price drop puts watched accounts past their warn level: their alerts' state and
        # notifications are written, then the process dies before anything is delivered.
        keeper.start("alerts.committed")
        wait_until(lambda: keeper.events("daemon.started"), "started", 60)
        first_drop = devnet.client.block_number() + 1  # (some go under: liquidated from here)
        devnet.set_price("WETH", devnet.manifest["prices_usd"]["WETH"] * 0.93)
        keeper.died_at("alerts.committed")
        # The next one delivers them: the first the webhook accepts is never marked.
        keeper.start("sink.accepted")
        keeper.died_at("sink.accepted")
        in_doubt = webhook.received[-1][0]
        # The crash: a wave of liquidations, with every death on its way to the chain.
        crash_block, underwater = crash_through_the_chain_points(keeper, devnet, borrowers)
        mine_until_settled(devnet, db)
        wait_until(lambda: not [r for r in read_state(db)[2] if r[1] == "pending"],
                   "every alert delivered", 30)
        exported = get(metrics_port, "/metrics")[1]  # (what Prometheus would store)
    finally:
        devnet.client.call("evm_setAutomine", True)
        keeper.stop()
    return {"keeper": keeper, "db": db, "in_doubt": in_doubt, "first_drop": first_drop,
            "exported": exported,
            "crash_block": crash_block,
            "underwater": underwater}


@pytest.mark.slow
@pytest.mark.timeout(300 + 240 * ROUNDS)
def test_sigkill_at_every_crash_point_loses_and_repeats_nothing(devnet: Devnet,
                                                                 tmp_path: Path) -> None:
    fund_keeper(devnet)
    for round_ in range(ROUNDS):
        start = devnet.snapshot()  # (each round from the same chain: prices, capital)
        webhook = Webhook()
        try:
            found = crash_lineage(devnet, tmp_path / f"state{round_}", webhook)
        finally:
            webhook.close()
        check_invariants(devnet, tmp_path / f"state{round_}", webhook, found)
        devnet.client.call("anvil_dropAllTransactions")
        devnet.revert(start)


def check_invariants(devnet: Devnet, state: Path, webhook: Webhook,
                     found: dict[str, Any]) -> None:
    db = found["db"]
    rows, txs, outbox = read_state(db)
    # The journal: nothing stuck, one nonce per opportunity, no nonce shared.
    assert not journal_problems(rows, txs), journal_problems(rows, txs)
    statuses = dict(rows)
    assert "reverted" not in statuses.values()
    # On chain: one liquidation by the keeper per included opportunity, none twice.
    ours = keeper_liquidations(devnet, found["first_drop"])
    included = [k for k, s in statuses.items() if s == "included"]
    assert len(ours) == len(included) > 20
    # Every account the crash put under water was liquidated, or is dust keeperd's own
    # decision declines (not one a crash made it forget).
    liquidated = {k.split(":")[1].lower() for k in included}
    assert_declined_on_chain(devnet, state.parent / f"{state.name}-after", {
        a for a in found["underwater"] if a.lower() not in liquidated})
    # Alerts: every notification delivered and received; the one accepted at the crash sent
    # again under its key, no other twice.
    assert outbox and {state for _, state in outbox} == {"delivered"}, outbox
    keys = [key for key, _ in webhook.received]
    assert set(keys) == {key for key, _ in outbox}
    duplicates = {k for k in keys if keys.count(k) > 1}
    assert duplicates == {found["in_doubt"]}, duplicates
    # The index: every borrower a fresh index finds, after a crash mid-catch-up.
    asyncio.run(assert_index_complete(devnet, state, "aave", found["crash_block"]))
    # No secret in anything keeperd wrote or served: its output, its metrics, the status file,
    # the state database (every byte of it, the WAL included).
    secrets = (KEEPER_KEY[2:].lower(), SECRET)
    written = {str(log): log.read_text() for log in found["keeper"].logs}
    written["/metrics"] = found["exported"]
    written["status.json"] = (state / "status.json").read_text()
    for path in state.glob("keeperd.sqlite3*"):
        written[path.name] = path.read_bytes().decode("latin-1")
    assert "keeperd_liquidations_total" in written["/metrics"]  # (a real scrape)
    for where, text in written.items():
        for secret in secrets:
            assert secret not in text.lower() and secret not in text, (where, secret[:6])
