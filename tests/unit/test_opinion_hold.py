"""A second endpoint refusing what the first simulates, block after block, is told
(`Executor.opinion_hold`, as sending_paused): a lying backup vetoed a real liquidation every
block, and it was missed for good with no alert (a by-hand trial)."""

from __future__ import annotations

from typing import Any

from keeperd.execution.executor import OPINION_REFUSED_BLOCKS, Executor


def test_refusals_in_every_one_of_the_last_blocks_are_told() -> None:
    ex: Any = Executor.__new__(Executor)
    ex._refused_blocks = {}
    assert ex.opinion_hold(10) is None
    for block in range(10, 10 + OPINION_REFUSED_BLOCKS - 1):  # (consecutive here)
        ex._refused_blocks[block] = "endpoint 1 (http://b): eth_call reverted"
        assert ex.opinion_hold(block) is None  # (a block or two: a race, a lag)
    last = 10 + OPINION_REFUSED_BLOCKS - 1
    ex._refused_blocks[last] = "endpoint 1 (http://b): eth_call reverted"
    told = ex.opinion_hold(last)
    assert told is not None and "one of the two endpoints lies or lags" in told
    assert "endpoint 1 (http://b)" in told
    # A block with nothing refused between does not end it (it flapped), two do.
    assert ex.opinion_hold(last + 1) is not None
    assert ex.opinion_hold(last + 2) is not None
    assert ex.opinion_hold(last + 3) is None
