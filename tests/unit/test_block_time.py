"""Which of two endpoints' times of one block the price feeds' age is judged against
(`ChainPriceWatch._block_time`): the later, unless it is dated in the future by this
machine's clock while the earlier is vouched for by it."""

from __future__ import annotations

import pytest

from keeperd.oracles.watch import ChainPriceWatch

T = 1_800_000_000  # the chain's true time of the block


def judged(first: int, second: int, clock: float) -> int:
    watch = ChainPriceWatch.__new__(ChainPriceWatch)  # (the rule alone: no chain, no pool)
    watch.wall_clock = lambda: clock
    return watch._block_time(first, second)


@pytest.mark.parametrize(("first", "second", "clock", "expected", "case"), [
    (T, T + 12, T, T + 12, "two times a block apart: the later"),
    (T - 7200, T, T, T, "one dating early: the later, the true one"),
    (T + 7200, T, T, T, "one dating in the future, the clock with the other: the other"),
    (T, T + 7200, T + 5, T, "the same, the liar second"),
    (T - 7200, T, T - 3600, T, "dating early, the clock an hour behind the chain: the later"),
    (T + 7200, T, T - 3600, T + 7200, "the clock vouching for neither: the later (a pause)"),
    (T + 7200, T + 7200, T, T + 7200, "two agreeing far from the clock: believed"),
])
def test_which_time_judges(first: int, second: int, clock: float, expected: int,
                           case: str) -> None:
    assert judged(first, second, clock) == expected, case
