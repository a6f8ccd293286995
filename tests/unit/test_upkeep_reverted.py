"""An approval that reverted on chain (`Executor._upkeep_reverted`): an amount's revert makes
that token's approvals go through zero for the rest of the run (a USDT-like token a lying
simulation said accepts one over its allowance); a zero's revert takes it back (a token that
refuses zeros, as BNB does, would otherwise revert a zero every top-up); a wave's approvals,
or a deposit's revert, mark nothing."""

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
