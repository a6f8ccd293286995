"""`keeperd status` says why liquidatable accounts are not liquidated: a crash's Curie accounts
stayed "14 liquidatable" for good with no reason (unprofitable every block, a by-hand trial)."""

from __future__ import annotations

from typing import Any

from keeperd.execution.executor import Executor
from keeperd.protocols.sdk.keys import OpportunityKey


def key(account: str, pair: str = "0xbase") -> OpportunityKey:
    return OpportunityKey("curie", account, (pair,), "1")


def executor() -> Any:
    made: Any = Executor.__new__(Executor)
    made._told_block, made._told, made._told_keys, made._judged_last = -1, set(), set(), None
    made.metrics = None
    return made


def test_each_account_is_counted_once_by_why_it_was_not_sent() -> None:
    judged = executor()
    assert judged.not_sent() is None  # (nothing judged yet)
    a, b, c, d, e = (key(f"0x{i}") for i in "abcde")
    told = [(a, "detected"), (a, "unprofitable"),
            # two pairs of one account, both refused: one account
            (b, "unprofitable"), (key("0xb", "0xother"), "unprofitable"),
            (c, "detected"), (c, "swap_would_not_pay"), (c, "unprofitable"),  # (the guard's)
            (d, "detected"), (d, "held"),
            # one pass refused it, the other sent it: sent
            (e, "detected"), (e, "unprofitable"), (e, "profitable")]
    for k, what in told:
        judged._first(120, k, what)
    whole = {"unprofitable": 2, "swap_would_not_pay": 1, "held": 1}
    assert judged.not_sent() == (120, whole)  # (the block under way: what it has so far)
    judged._first(121, a, "unprofitable")  # the next block begins: 120's, whole, is said
    assert judged.not_sent() == (120, whole)


def test_the_status_line_says_it_beside_the_count() -> None:
    from keeperd.daemon import Daemon

    daemon: Any = Daemon.__new__(Daemon)
    judged = executor()
    judged._first(7, key("0xa"), "unprofitable")
    daemon.executors = {"curie": judged}
    assert daemon._not_sent("curie", 1) == " (not sent at block 7: 1 unprofitable)"
    assert daemon._not_sent("curie", 0) == ""
    assert daemon._not_sent("aave", 3) == ""  # (alert-only: no executor)
