"""Liquidations in flight of a protocol the config no longer has (removed, or renamed: journal
rows are keyed by the protocol's name) refuse a liquidating start, naming them and the fix.
Each protocol resumes only its own rows: a by-hand trial dropped Aave from the config with 23
of its liquidations in the node's pool; the start called them another sender's, they were
mined and never booked, and `keeperd status` showed them pending for good."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from keeperd.daemon import StartupError
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.reconcile import unconfigured_in_flight
from tests.keeper_harness import KEEPER_KEY, crash_and_collect, liquidating


def renamed(config, name: str):  # type: ignore[no-untyped-def]
    protocol = config.protocols[0].model_copy(update={"name": name})
    return config.model_copy(update={"protocols": [protocol]})


@pytest.mark.slow
async def test_a_renamed_protocols_liquidations_in_flight_refuse_a_liquidating_start(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    config, keeper = await liquidating(devnet, tmp_path, run_daemon)
    devnet.client.call("evm_setAutomine", False)
    try:
        *_, sent = await crash_and_collect(devnet, keeper)
        assert len(sent) > 3
        keeper.stop.set()
        await asyncio.wait_for(keeper.task, 10)
        nonces = sorted(e.nonce for e in sent if e.nonce is not None)
        with pytest.raises(StartupError, match=rf"{len(sent)} of `aave`, nonces {nonces[0]}-"
                                               rf"{nonces[-1]}\).*Put `aave` back"):
            await run_daemon(renamed(config, "aave-v3"))
        # Watching only, it starts, and says so.
        watching = renamed(config, "aave-v3").model_copy(update={
            "keeper": config.keeper.model_copy(update={"mode": "alert-only"})})
        with structlog.testing.capture_logs() as logs:
            watcher = await run_daemon(watching)
            watcher.stop.set()
            await asyncio.wait_for(watcher.task, 10)
        assert [e for e in logs if e["event"] == "journal.unconfigured_in_flight"]
        # Mined meanwhile (under the key's mined nonce: in no pool any more), they no
        # longer refuse the start: only their P&L waits for the protocol's own name.
        devnet.mine(1)
        with structlog.testing.capture_logs() as logs:
            renamed_keeper = await run_daemon(renamed(config, "aave-v3"))
            renamed_keeper.stop.set()
            await asyncio.wait_for(renamed_keeper.task, 10)
        [said] = [e for e in logs if e["event"] == "journal.unconfigured_in_flight"]
        assert "mined or replaced" in said["meaning"]
    finally:
        devnet.client.call("evm_setAutomine", True)
    # Its own name back: resumed, and settled (booked) from their receipts.
    keeper = await run_daemon(config)
    for _ in range(20):
        await keeper.evaluated_at(devnet.mine(1))
        if not await keeper.daemon.executors["aave"].journal.by_status(J.PENDING):
            break
    assert not await keeper.daemon.executors["aave"].journal.by_status(J.PENDING)


def entry(protocol: str, nonce: int | None) -> J.JournalEntry:
    return J.JournalEntry(f"{protocol}:0xa:c:d:{nonce}", protocol, "0xa", "c", "d", 1, 1.0, 0,
                          1, J.PENDING, nonce, None, None)


def test_rows_under_the_mined_nonce_are_in_no_pool() -> None:
    rows = [entry("old", 5), entry("old", 7)]
    assert unconfigured_in_flight(rows, {"aave"}, mined=8) is None
    why = unconfigured_in_flight(rows, {"aave"}, mined=6)
    assert why is not None and "1 of `old`, nonces 7-7" in why


def test_only_rows_of_unconfigured_protocols_are_named() -> None:
    assert unconfigured_in_flight([entry("aave", 1), entry("morpho", 2)],
                                  {"aave", "morpho"}) is None
    why = unconfigured_in_flight([entry("aave", 1), entry("old", 7), entry("old", 5),
                                  entry("gone", None)], {"aave"})
    assert why is not None
    assert "1 of `gone`; 2 of `old`, nonces 5-7" in why and "`aave`" not in why
    assert "Put `gone`, `old` back under `protocols`" in why
