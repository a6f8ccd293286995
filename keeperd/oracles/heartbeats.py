"""Each feed's heartbeat, learnt from its own rounds.

A Chainlink feed publishes when its price moves past its deviation threshold or, at the
latest, when its heartbeat has passed: one hour for ETH / USD, a day for USDC / USD and most
stablecoins on Ethereum. One heartbeat for every feed cannot be right: at the default hour a
day-heartbeat feed reads "stale" for most of the day and its asset's liquidations are held
(every USDC pair of an Aave market on mainnet); at a day, an hour-heartbeat feed that stops
is believed for a day. The devnet's feeds are kept fresh and hid it. A feed's heartbeat is
not on chain, but its rounds are: the median gap between its last rounds is its heartbeat
when the price is quiet (heartbeat rounds) and shorter when it moves (deviation rounds), so
it never reads longer than the heartbeat, and one long outage among the rounds does not move
it. The watch takes the longer of that (with a margin for the round's way on chain) and its
configured default as the age a feed may reach, capped at MAX_LEARNED_S; a heartbeat
configured for the asset (`oracles.heartbeats`) stands instead.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterable, Sequence

from keeperd.chain.multicall import Call, Multicall, encode_call
from keeperd.oracles.chainlink import round_data

ROUNDS = 8  # rounds read back from the latest
MIN_GAPS = 3  # fewer gaps than this teach nothing
MARGIN = 1.1  # a heartbeat round is a little late now and then...
LATENCY_S = 120  # ...and takes up to ~40 s to land on chain
MAX_LEARNED_S = 2 * 86_400  # no longer than two days, whatever the rounds say
RELEARN_S = 6 * 3_600
RETRY_S = 60.0  # rounds that did not read are asked again this soon


def heartbeat_of(times: Sequence[int]) -> float | None:
    """The median gap between consecutive rounds' `updatedAt` (any order), or None when
    there are too few to say (pure)."""
    ordered = sorted(set(times))
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    return float(statistics.median(gaps)) if len(gaps) >= MIN_GAPS else None


def allowed_age(default_s: float, learnt_s: float | None) -> float:
    """The age a feed may reach before it is stale: its learnt heartbeat with the margin,
    never under the configured default nor over MAX_LEARNED_S (pure)."""
    if learnt_s is None:
        return default_s
    return max(default_s, min(learnt_s * MARGIN + LATENCY_S, MAX_LEARNED_S))


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
        """Read each aggregator's last ROUNDS rounds (one multicall) and keep its heartbeat.
        A round that does not answer (before a phase's first, or none at all) is left out."""
        if not sources:
            return
        calls = [Call(a, encode_call("getRoundData(uint80)", ["uint80"], [r - i]))
                 for a, r in sources for i in range(ROUNDS) if r - i > 0]
        results = await self.multicall.aggregate3(calls, block)
        now, k = time.monotonic(), 0
        for address, latest in sources:
            n = sum(1 for i in range(ROUNDS) if latest - i > 0)
            times = []
            for res in results[k:k + n]:
                if res.success and len(res.data) >= 160:
                    try:
                        times.append(round_data(res.data)[3])
                    except ValueError:
                        continue
            k += n
            self._learnt[address.lower()] = (heartbeat_of([t for t in times if t > 0]), now)

    def unread(self, sources: Iterable[tuple[str, int]]) -> None:
        """Their rounds did not read: asked again in RETRY_S (a failing endpoint must not cost
        every block a round trip, nor leave a day-heartbeat feed "stale" for RELEARN_S)."""
        at = time.monotonic() - RELEARN_S + RETRY_S
        for address, _ in sources:
            self._learnt.setdefault(address.lower(), (None, at))

    def of(self, sources: Iterable[tuple[str, int]]) -> float | None:
        """The heartbeat of a reading timed by `sources` (the longest of theirs: the reading
        is as old as its oldest); None when one of them taught nothing."""
        learnt = [self._learnt.get(a.lower(), (None, 0.0))[0] for a, _ in sources]
        if not learnt or any(h is None for h in learnt):
            return None
        return max(h for h in learnt if h is not None)
