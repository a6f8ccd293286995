"""An L2's sequencer-uptime feed, read once per block for every protocol on the chain: on the
first endpoint as the block starts, and again on the second with its reading of the feeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi import decode

from keeperd.chain.multicall import Call, CallResult, Multicall, selector
from keeperd.oracles.checks import Problem, check_sequencer

_LATEST_ROUND_DATA = selector("latestRoundData()")


@dataclass(frozen=True)
class SequencerWord:
    """What one endpoint says of the feed: `answer` (0 up, 1 down) and `started_at`, the time
    of its last change; both None when the feed does not answer there. `who` is "" for the
    first endpoint, else how its problems are prefixed ("second endpoint: ")."""

    who: str
    answer: int | None
    started_at: int | None


class SequencerCheck:
    """While the sequencer is down, and for its grace period after, no price is to be acted
    on (Chainlink's L2 guidance): every protocol's liquidations on the chain hold."""

    def __init__(self, multicall: Multicall, feed: str, grace_period_s: int) -> None:
        self.multicall = multicall
        self.feed = feed
        self.grace_period_s = grace_period_s
        self.call = Call(feed, _LATEST_ROUND_DATA)

    async def read(self, block: int) -> SequencerWord:
        """The first endpoint's word at `block` (the pool's, with its failover)."""
        results = await self.multicall.aggregate3([self.call], block)
        return self.word(results[0])

    def word(self, result: CallResult, who: str = "") -> SequencerWord:
        if not result.success:
            return SequencerWord(who, None, None)
        _, answer, started_at, _, _ = decode(["uint80", "int256", "uint256", "uint256",
                                              "uint80"], result.data)
        return SequencerWord(who, answer, started_at)

    def judge(self, words: Sequence[SequencerWord], now: int) -> Problem | None:
        """The least favourable of the endpoints' words (pure): a "down" or no answer from
        any holds, and the grace period runs from the latest `startedAt` any says. One
        endpoint answering "up, since a day ago" silenced a sequencer down on the other, and
        one back up within its grace period (a review). `now`: the earliest time the
        endpoints give the block (a later one would end the grace period early)."""
        for word in words:
            if word.answer is None or word.started_at is None:
                return Problem("sequencer_down",
                               f"{word.who}the sequencer uptime feed does not answer")
            if word.answer != 0:
                return Problem("sequencer_down", f"{word.who}the L2 sequencer is down")
        latest = max(words, key=lambda w: w.started_at or 0)
        problem = check_sequencer(0, latest.started_at or 0, now, self.grace_period_s)
        return (Problem(problem.kind, f"{latest.who}{problem.detail}")
                if problem is not None else None)
