"""An L2's sequencer-uptime feed, read once per block for every protocol on the chain."""

from __future__ import annotations

from eth_abi import decode

from keeperd.chain.multicall import Call, Multicall, selector
from keeperd.oracles.checks import Problem, check_sequencer

_LATEST_ROUND_DATA = selector("latestRoundData()")


class SequencerCheck:
    """While the sequencer is down, and for its grace period after, no price is to be acted
    on (Chainlink's L2 guidance): every protocol's liquidations on the chain hold."""

    def __init__(self, multicall: Multicall, feed: str, grace_period_s: int) -> None:
        self.multicall = multicall
        self.feed = feed
        self.grace_period_s = grace_period_s

    async def problem(self, now: int, block: int) -> Problem | None:
        results = await self.multicall.aggregate3([Call(self.feed, _LATEST_ROUND_DATA)], block)
        if not results[0].success:
            return Problem("sequencer_down", "the sequencer uptime feed does not answer")
        _, answer, started_at, _, _ = decode(["uint80", "int256", "uint256", "uint256",
                                              "uint80"], results[0].data)
        return check_sequencer(answer, started_at, now, self.grace_period_s)
