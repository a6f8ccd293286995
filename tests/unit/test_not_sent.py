"""`keeperd status` says why liquidatable accounts are not liquidated: a crash's Curie accounts
stayed "14 liquidatable" for good with no reason (unprofitable every block, a by-hand trial)."""

from __future__ import annotations

from typing import Any

from keeperd.execution.executor import Executor
from keeperd.protocols.sdk.keys import OpportunityKey


def key(account: str) -> OpportunityKey:
    return OpportunityKey("curie", account, ("0xbase",), "1")


def test_each_opportunity_is_counted_once_by_why_it_was_not_sent() -> None:
    executor: Any = Executor.__new__(Executor)
    executor._told_block = -1
    assert executor.not_sent() is None  # (nothing judged yet)
    a, b, c, d, e = (key(f"0x{i}") for i in "abcde")
    executor._told_block = 120
    executor._told = {
        (a, "detected"), (a, "unprofitable"),
        (b, "detected"), (b, "unprofitable"),
        (c, "detected"), (c, "swap_would_not_pay"), (c, "unprofitable"),  # (the guard's)
        (d, "detected"), (d, "held"),
        # one pass refused it, the other sent it: sent
        (e, "detected"), (e, "unprofitable"), (e, "profitable")}
    assert executor.not_sent() == (120, {"unprofitable": 2, "swap_would_not_pay": 1,
                                         "held": 1})


def test_the_status_line_says_it_beside_the_count() -> None:
    from keeperd.daemon import Daemon

    daemon: Any = Daemon.__new__(Daemon)
    executor: Any = Executor.__new__(Executor)
    executor._told_block, executor._told = 7, {(key("0xa"), "unprofitable")}
    daemon.executors = {"curie": executor}
    assert daemon._not_sent("curie", 1) == " (not sent at block 7: 1 unprofitable)"
    assert daemon._not_sent("curie", 0) == ""
    assert daemon._not_sent("aave", 3) == ""  # (alert-only: no executor)
