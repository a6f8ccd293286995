"""SIGKILL with a wave of liquidations in the mempool, then a restart: one harness for every
protocol (#30 item 4), driven by crash points (`keeperd/crashpoints.py`), not by sleeps.

1. A first `keeperd run` prepares (approvals, Curie's margin deposit) and is stopped: what it
   sends at start is mined before the scenario, so the next run's first broadcast is the wave.
2. The scenario moves prices; automine is turned off, and each block from here on is mined
   at the time of the block before it plus `ahead_s` (the seconds of interest the protocol's
   plan accrues ahead: Morpho's `AHEAD_S`; none for Aave and Curie, whose plans are made on
   the snapshot as it is).
3. A run armed with `KEEPERD_CRASH_AT=tx.broadcast` evaluates the crash and dies by SIGKILL
   the moment the node has accepted its first wave: those liquidations are journaled as
   pending, signed, and in the mempool — exactly, not as a sleep happened to leave them.
4. A last run resumes them (`journal.resumed`, one each) and sends whatever else the crash
   calls for; blocks are mined until everything it journaled has settled.

The checks every protocol shares: each liquidation of the killed wave resumed once, signed
once and included, and every other liquidation the restart sent included too (none may
revert or be dropped: the chain at inclusion is the chain it was planned on, `ahead_s`
later); every included liquidation did on chain what its plan said, to the unit
(`chain_amounts.py`); the journal's invariants hold (`faults/invariants.py`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from keeperd.crashpoints import ENV as CRASH_ENV
from keeperd.devnet.handle import Devnet
from tests.chain_amounts import (
    Sent,
    assert_amounts_as_planned,
    block_time,
    chain_outcome,
    mine_at,
    sent_from_db,
)
from tests.faults.invariants import journal_problems, read_state
from tests.keeper_harness import KEEPER, KEEPER_KEY
from tests.keeperd_process import start_keeperd, txs_per_key, wait_until

SETTLE_BLOCKS = 12  # blocks the last run gets to settle what it journaled


@dataclass
class Killed:
    """What the scenario left: the killed wave, every liquidation journaled, the logs."""

    wave: list[Sent]  # pending at the SIGKILL
    journaled: list[Sent]  # at the end, liquidations only
    db: Path
    logs: list[Path]
    first_block: int  # the first block the resumed wave could land in


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()
            if line.startswith("{") and f'"{name}"' in line]


def keeper_in_mempool(devnet: Devnet) -> int:
    """The keeper's transactions the node holds, not yet mined."""
    pending = devnet.client.call("txpool_content")["pending"]
    return len({k.lower(): v for k, v in pending.items()}.get(KEEPER.lower(), {}))


def sigkill_after_broadcast_then_resume(
        devnet: Devnet, tmp_path: Path, config: dict[str, Any], crash: Callable[[], None],
        *, is_liquidation: Callable[[str], bool] = lambda key: True,
        at_least: int = 3, ahead_s: int = 0) -> Killed:
    """Run the scenario above; return what it left once every check shared by the protocols
    has passed."""
    config = {**config, "state_dir": str(tmp_path / "state"), "logging": {"format": "json"}}
    path = tmp_path / "keeperd.yaml"
    path.write_text(yaml.safe_dump(config))
    db = tmp_path / "state" / "keeperd.sqlite3"
    logs = [tmp_path / f"keeperd-{name}.log" for name in ("prepare", "killed", "resumed")]

    def run(i: int, crash_at: str | None) -> subprocess.Popen[str]:
        env = dict(os.environ, KEEPER_KEY=KEEPER_KEY)
        env.pop(CRASH_ENV, None)
        if crash_at is not None:
            env[CRASH_ENV] = crash_at
        return start_keeperd(path, env, logs[i])

    def liquidations() -> list[Sent]:
        return [s for s in sent_from_db(db) if is_liquidation(s.key)]

    proc = run(0, None)
    try:
        wait_until(lambda: _events(logs[0], "daemon.started"), "prepared", 60, (logs[0],))
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert keeper_in_mempool(devnet) == 0  # (automine: what it sent at start is mined)
    crash()
    devnet.client.call("evm_setAutomine", False)
    try:
        proc = run(1, "tx.broadcast")
        wait_until(lambda: proc.poll() is not None, "the crash at tx.broadcast", 60,
                   (logs[1],))
        assert proc.returncode == -signal.SIGKILL, logs[1].read_text()[-2000:]
        assert "crash point tx.broadcast: SIGKILL" in logs[1].read_text()
        wave = liquidations()
        assert len(wave) >= at_least and {s.status for s in wave} == {"pending"}, wave
        # Every one signed once; the node holds the wave killed at its broadcast and nothing
        # that is not journaled. (A later wave is signed while the one before is broadcast:
        # it may be journaled and not yet sent when the kill comes — the restart sends it,
        # under its journaled nonce, and `_check` holds that nothing went twice.)
        assert all(len(s.tx_hashes) == 1 for s in wave)
        assert 1 <= keeper_in_mempool(devnet) <= len(wave), (keeper_in_mempool(devnet), wave)
        first_block = devnet.client.block_number() + 1
        proc = run(2, None)
        try:
            wait_until(lambda: _events(logs[2], "daemon.started"), "restarted", 60,
                       (logs[2],))
            quiet = 0
            for _ in range(SETTLE_BLOCKS):
                mined = mine_at(devnet, block_time(devnet) + ahead_s)
                # Its evaluation of that block logged: every listener of the block before has
                # finished (the scanner runs them in turn), so what they sent is journaled.
                wait_until(lambda mined=mined: any(  # type: ignore[misc]
                    e.get("block", 0) >= mined for e in _events(
                        logs[2], "positions.evaluated")), f"block {mined} evaluated", 30,
                    (logs[2],))
                quiet = quiet + 1 if (_settled(liquidations())
                                      and keeper_in_mempool(devnet) == 0) else 0
                if quiet == 2:  # (two blocks in a row with nothing left to land)
                    break
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    finally:
        devnet.client.call("evm_setAutomine", True)
    journaled = liquidations()
    assert _settled(journaled), [(s.key, s.status) for s in journaled if s.status == "pending"]
    _check(devnet, db, logs, wave, journaled, is_liquidation)
    return Killed(wave, journaled, db, logs, first_block)


def _settled(sent: list[Sent]) -> bool:
    return bool(sent) and all(s.status not in ("planned", "pending") for s in sent)


def _check(devnet: Devnet, db: Path, logs: list[Path], wave: list[Sent],
           journaled: list[Sent], is_liquidation: Callable[[str], bool]) -> None:
    # Resumed, each once; signed once (the journal's own count of transactions per key).
    resumed = [e["opportunity"] for e in _events(logs[2], "journal.resumed")]
    assert sorted(resumed) == sorted(s.key for s in wave)
    per_key = txs_per_key(db)
    assert all(per_key[s.key] == 1 for s in wave)
    # Every one of the wave included (frozen clock: nothing may revert), one event each.
    status = {s.key: s.status for s in journaled}
    assert {status[s.key] for s in wave} == {"included"}, {s.key: status[s.key] for s in wave}
    # And what the restart sent besides: included too, none reverted or dropped.
    assert set(status.values()) == {"included"}, {k: v for k, v in status.items()
                                                  if v != "included"}
    for s in wave:
        [tx] = s.tx_hashes
        receipt = devnet.client.call("eth_getTransactionReceipt", tx)
        block_logs = devnet.client.call("eth_getLogs", {"fromBlock": receipt["blockNumber"],
                                                        "toBlock": receipt["blockNumber"]})
        assert s.planned is not None
        ours = [r for r in [chain_outcome(devnet, {"logs": [e]}, s.account, set(s.planned))
                            for e in block_logs] if r is not None]
        assert len(ours) == 1, (s.key, ours)  # one liquidation of that position in its block
    assert_amounts_as_planned(devnet, journaled, len(wave))
    rows, txs, _ = read_state(db)
    rows = [r for r in rows if is_liquidation(r[0])]
    txs = [t for t in txs if is_liquidation(t[0])]
    assert not journal_problems(rows, txs), journal_problems(rows, txs)
