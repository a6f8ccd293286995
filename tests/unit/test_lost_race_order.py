"""A revert is a race lost only to a liquidation mined before ours and after the block we
planned on (whose state already held what was mined in it): one mined after ours in the same
block, or before our plan, explains nothing, and the revert counts toward the breaker."""

from __future__ import annotations

from keeperd.execution.executor import _mined_between


def log_at(block: int, index: int) -> dict[str, str]:
    return {"blockNumber": hex(block), "transactionIndex": hex(index)}


def test_only_a_liquidation_between_our_plan_and_our_transaction_is_a_race_lost() -> None:
    ours, planned_on = (101, 5), 99
    assert _mined_between(log_at(101, 4), planned_on, ours)  # just before ours
    assert _mined_between(log_at(100, 9), planned_on, ours)  # the block after our plan
    assert not _mined_between(log_at(101, 6), planned_on, ours)  # after ours, same block
    assert not _mined_between(log_at(101, 5), planned_on, ours)  # ours itself
    assert not _mined_between(log_at(99, 0), planned_on, ours)  # in the state we planned on
    assert not _mined_between(log_at(98, 0), planned_on, ours)
    assert not _mined_between({"blockNumber": "0x65"}, planned_on, ours)  # (no position)
    assert not _mined_between({"blockNumber": None, "transactionIndex": "0x1"}, None, None)
    # (no bound asked: anything placed counts, as the other callers read it)
    assert _mined_between(log_at(5, 0), None, None)
