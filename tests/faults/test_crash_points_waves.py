"""#17's crash points with the liquidations sent in waves (one transaction each: the keeper's
address delegated to KeeperWave): SIGKILL after a wave is
journaled and signed, after its broadcast, and while its receipt is being settled, one
`keeperd run` after another on one state directory — then no liquidation made twice, none
left pending, the nonce of each wave shared by its members only, and every member of a
mined wave settled from its own call."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keeperd.devnet.handle import Devnet
from tests.faults.invariants import journal_problems, keeper_liquidations, read_state
from tests.faults.test_crash_points import (
    Lineage,
    config,
    crash_through_the_chain_points,
    mine_until_settled,
)
from tests.integration.test_wave_liquidation import delegate_keeper
from tests.keeper_harness import KEEPER_KEY, fund_keeper
from tests.keeperd_process import wait_until


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sigkill_on_a_waves_way_to_the_chain_repeats_and_loses_nothing(
        devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    delegate_keeper(devnet, tmp_path)
    state = tmp_path / "state"
    path = config(devnet, state, "http://127.0.0.1:9/", [], 0)
    settings = yaml.safe_load(path.read_text())
    settings["metrics"] = {"enabled": False}
    del settings["alerts"]
    path.write_text(yaml.safe_dump(settings))
    keeper = Lineage(devnet, state, path)
    db = state / "keeperd.sqlite3"
    borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
    first = devnet.client.block_number() + 1
    try:
        keeper.start(None)
        wait_until(lambda: keeper.events("daemon.started"), "started", 60)
        keeper.stop()
        _, underwater = crash_through_the_chain_points(keeper, devnet, borrowers)
        assert len(underwater) > 20
        mine_until_settled(devnet, db)
    finally:
        devnet.client.call("evm_setAutomine", True)
        keeper.stop()
    rows, txs, _ = read_state(db)
    assert not journal_problems(rows, txs, waves=True), journal_problems(rows, txs, waves=True)
    statuses = dict(rows)
    assert "reverted" not in statuses.values()
    included = [k for k, s in statuses.items() if s == "included"]
    # On chain: one liquidation by the keeper per included opportunity, none twice, and they
    # went out in waves (far fewer transactions than liquidations).
    ours = keeper_liquidations(devnet, first)
    assert len(ours) == len(included) > 20
    assert len({h for _, _, h in txs}) < len(included) / 4
    assert {e["transactionHash"] for e in ours} <= {h for _, _, h in txs}
    resumed = keeper.events("journal.wave_resumed")
    assert resumed, "no wave was resumed after a crash"
    assert not keeper.events("liquidation.wave_not_executed")
    assert KEEPER_KEY[2:] not in "".join(log.read_text() for log in keeper.logs)
