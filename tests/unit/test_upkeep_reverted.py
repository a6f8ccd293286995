"""An approval that reverted on chain (`Executor._upkeep_reverted`): an amount's revert makes
that token's approvals go through zero for the rest of the run (a USDT-like token a lying
simulation said accepts one over its allowance); a zero's revert takes it back (a token that
refuses zeros, as BNB does, would otherwise revert a zero every top-up); a wave's approvals,
or a deposit's revert, mark nothing — but an approval that failed inside a wave that
succeeded is read from KeeperWave's events and marks its token as its own revert would."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import structlog

from keeperd.execution.executor import Executor
from keeperd.execution.txmanager import Outcome
from keeperd.protocols.sdk.approvals import WAVE_SUBJECT
from keeperd.protocols.sdk.keys import UpkeepKey

TOKEN = "0xDc64a140Aa3E981100a9becA4E685f962f0cF6C9"


def executor() -> Any:
    ex: Any = Executor.__new__(Executor)
    ex.adapter = SimpleNamespace(name="aave")
    ex.tx = SimpleNamespace(approval_reverted=set())
    return ex


def reverted(ex: Any, action: str, subject: str, tag: str) -> list[dict[str, Any]]:
    key = UpkeepKey("aave", action, subject, tag)
    with structlog.testing.capture_logs() as logs:
        ex._upkeep_reverted(key, Outcome(key, "reverted", "0xabc", 50_000))
    return [e for e in logs if e["event"] == "keeper.upkeep_reverted"]


def test_an_amounts_revert_sends_zero_first_and_a_zeros_revert_takes_it_back() -> None:
    ex = executor()
    [said] = reverted(ex, "approve", TOKEN, "51000000000000@501")
    assert ex.tx.approval_reverted == {TOKEN.lower()}
    assert "through zero first" in said["next"] and said["tx_hash"] == "0xabc"
    [said] = reverted(ex, "approve", TOKEN, "0@511")
    assert ex.tx.approval_reverted == set()
    assert "without a zero first" in said["next"]


@pytest.mark.parametrize(("action", "subject"), [("approve", WAVE_SUBJECT),
                                                 ("deposit", TOKEN)])
def test_a_waves_or_a_deposits_revert_is_said_and_marks_nothing(action: str,
                                                                subject: str) -> None:
    ex = executor()
    [said] = reverted(ex, action, subject, "3@501")
    assert ex.tx.approval_reverted == set()
    assert said["action"] == action and "not sent again by this run" in said["next"]


async def test_an_approval_that_failed_inside_a_mined_wave_is_seen() -> None:
    """A delegated key sends its approvals as one KeeperWave wave, which succeeds whatever
    its calls do: USDT's approval over its allowance failed in every top-up's wave, unseen."""
    from eth_abi import encode

    from keeperd.execution import wave_code as W
    from tests.unit.test_waves import _log, _marker

    ex = executor()
    from tests.unit.test_waves import KEEPER as keeper
    other = "0x" + "0d" * 20
    key = UpkeepKey("aave", "approve", WAVE_SUBJECT, "2@501")
    ex.tx = SimpleNamespace(approval_reverted=set(), address=keeper,
                            approval_waves={key: [(other, 7), (TOKEN, 51 * 10**12)]})
    logs = [_marker(W.CALL_SUCCEEDED, 0, encode(["uint256"], [40_000])),
            _marker(W.CALL_FAILED, 1, encode(["bytes"], [b""])),
            _log(keeper, [W.WAVE_EXECUTED], encode(["uint256", "uint256"], [0b01, 2]))]
    with structlog.testing.capture_logs() as seen:
        await ex._settle(Outcome(key, "included", "0xabc", 90_000,
                                 receipt={"status": "0x1", "logs": logs}))
    [said] = [e for e in seen if e["event"] == "keeper.upkeep_reverted"]
    assert ex.tx.approval_reverted == {TOKEN.lower()}  # (the one that failed, alone)
    assert said["subject"] == TOKEN and said["in_wave"] is True
    assert "through zero first" in said["next"]
    assert ex.tx.approval_waves == {}  # (settled: forgotten)
