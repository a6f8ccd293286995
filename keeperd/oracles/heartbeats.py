"""Each feed's heartbeat, learnt from its own rounds.

A Chainlink feed publishes when its price moves past its deviation threshold or, at the
latest, when its heartbeat has passed: one hour for ETH / USD, a day for USDC / USD and most
stablecoins on Ethereum. One heartbeat for every feed cannot be right: at the default hour a
day-heartbeat feed reads "stale" for most of the day and its asset's liquidations are held
(every USDC pair of an Aave market on mainnet); at a day, an hour-heartbeat feed that stops
is believed for a day. The devnet's feeds are kept fresh and hid it. A feed's heartbeat is
not on chain, but its rounds are: the gaps between its last ROUNDS rounds are its heartbeat
when the price is quiet (heartbeat rounds) and shorter when it moves (deviation rounds). The
second-longest gap is taken: a heartbeat as soon as two of the rounds were quiet, and one
long outage among them does not count. Where that is longer than the configured default, a
feed may be that old (with a margin for the round's way on chain), at most MAX_LEARNED_S; a
heartbeat configured for the asset (`oracles.heartbeats`) stands instead. Each aggregator an
adapter wraps is judged by its own (`Heartbeats.of` per source). A relearn that teaches
nothing (a proxy's new phase, an aggregator with few rounds) keeps what was learnt.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any

from keeperd.chain.multicall import (
    Call,
    CallResult,
    Multicall,
    decode_aggregate3,
    encode_aggregate3,
    encode_call,
)
from keeperd.oracles.chainlink import round_data

ROUNDS = 16  # rounds read back from the latest
PHASE = 1 << 64  # a proxy's round id: phaseId << 64 | the phase aggregator's round
MIN_GAPS = 3  # fewer gaps than this teach nothing
MARGIN = 1.1  # a heartbeat round is a little late now and then...
LATENCY_S = 120  # ...and takes up to ~40 s to land on chain
MAX_LEARNED_S = 2 * 86_400  # no longer than two days, whatever the rounds say
RELEARN_S = 6 * 3_600
RETRY_S = 60.0  # rounds that did not read are asked again this soon


def heartbeat_of(times: Sequence[int]) -> float | None:
    """The second-longest gap between consecutive rounds' `updatedAt` (any order), or None
    when there are too few to say (pure)."""
    ordered = sorted(set(times))
    gaps = sorted(b - a for a, b in itertools.pairwise(ordered))
    return float(gaps[-2]) if len(gaps) >= MIN_GAPS else None


def allowed_age(default_s: float, learnt_s: float | None) -> float:
    """The age a feed may reach before it is stale: the configured default, unless its
    learnt heartbeat is longer: then that with the margin, at most MAX_LEARNED_S (pure)."""
    if learnt_s is None or learnt_s <= default_s:
        return default_s
    return min(learnt_s * MARGIN + LATENCY_S, MAX_LEARNED_S)


def rounds_back(latest: int) -> list[int]:
    """The round ids before `latest` within its phase, newest first, ROUNDS in all with it
    (a proxy's phase starts at round 1: an id below is another phase's or none)."""
    phase, number = divmod(latest, PHASE)
    return [phase * PHASE + number - i for i in range(ROUNDS) if number - i >= 1]


def _times(results: Sequence[CallResult]) -> list[int]:
    times = []
    for res in results:
        if res.success and len(res.data) >= 160:
            try:
                updated_at = round_data(res.data)[3]
            except Exception:  # (a malformed word: that round teaches nothing)
                continue
            if updated_at > 0:
                times.append(updated_at)
    return times


class Heartbeats:
    """What the watch learnt of each aggregator (by address): (heartbeat or None, when)."""

    def __init__(self, multicall: Multicall) -> None:
        self.multicall = multicall
        self._learnt: dict[str, tuple[float | None, float]] = {}

    def unknown(self, sources: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """The (aggregator, latest round) not learnt yet."""
        return [(a, r) for a, r in sources if a.lower() not in self._learnt]

    def due(self, sources: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """The ones learnt longer than RELEARN_S ago."""
        now = time.monotonic()
        return [(a, r) for a, r in sources
                if (seen := self._learnt.get(a.lower())) is not None
                and now - seen[1] > RELEARN_S]

    async def learn(self, sources: Sequence[tuple[str, int]], block: int | str) -> None:
        """Read each aggregator's last ROUNDS rounds and keep its heartbeat. A round that
        does not answer (before a phase's first, or none at all) is left out. With two
        endpoints or more, two are asked and the shorter heartbeat of each aggregator is
        kept: a longer one relaxes the staleness check, and one endpoint's answer alone must
        not (a lie could let a stopped feed be believed for two days); with only one of them
        answering, its word stands for RETRY_S, then both are asked again."""
        if not sources:
            return
        ids = [rounds_back(r) for _, r in sources]
        calls = [Call(a, encode_call("getRoundData(uint80)", ["uint80"], [i]))
                 for (a, _), back in zip(sources, ids, strict=True) for i in back]
        answers, asked = await self._answers(calls, block)
        now, k = time.monotonic(), 0
        # (one endpoint of two answered: its word stands until both are asked again)
        learnt_at = now - RELEARN_S + RETRY_S if len(answers) < asked else now
        for (address, _), back in zip(sources, ids, strict=True):
            said = [heartbeat_of(_times(results[k:k + len(back)])) for results in answers]
            k += len(back)
            known = [h for h in said if h is not None]
            learnt = min(known) if known else None
            if learnt is None:  # (keep what an earlier read taught: a new phase has few)
                learnt = self._learnt.get(address.lower(), (None, 0.0))[0]
            self._learnt[address.lower()] = (learnt, learnt_at)

    async def _answers(self, calls: Sequence[Call], block: int | str
                       ) -> tuple[list[Sequence[CallResult]], int]:
        """The calls' results from up to two endpoints (each one attempt), or from the pool
        when it has one, and how many were asked; raises when none answers."""
        pool = self.multicall.pool
        voters = list(pool.voters)[:2]
        if len(voters) < 2:
            return [await self.multicall.aggregate3(calls, block)], 1
        tag = hex(block) if isinstance(block, int) else block
        data = "0x" + encode_aggregate3(calls).hex()

        async def ask(ep: Any) -> Sequence[CallResult]:
            raw = await pool.call_endpoint(ep, "eth_call",
                                           [{"to": self.multicall.address, "data": data}, tag])
            return decode_aggregate3(bytes.fromhex(str(raw)[2:]))

        got = await asyncio.gather(*(ask(ep) for ep in voters), return_exceptions=True)
        answers = [g for g in got if not isinstance(g, BaseException)
                   and len(g) == len(calls)]
        if not answers:
            raise RuntimeError(f"no endpoint answered the rounds: {got[0]!r}"[:300])
        return answers, len(voters)

    def unread(self, sources: Iterable[tuple[str, int]]) -> None:
        """Their rounds did not read: asked again in RETRY_S, keeping what was learnt (a
        failing endpoint must not cost every block a round trip, nor leave a day-heartbeat
        feed "stale" for RELEARN_S)."""
        at = time.monotonic() - RELEARN_S + RETRY_S
        for address, _ in sources:
            key = address.lower()
            self._learnt[key] = (self._learnt.get(key, (None, 0.0))[0], at)

    def of(self, address: str) -> float | None:
        """An aggregator's learnt heartbeat (None: none)."""
        return self._learnt.get(address.lower(), (None, 0.0))[0]
