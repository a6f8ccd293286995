"""An unwind's price limit, resting on no single endpoint's word.

closePosition's limit comes from the market's mark and index (`unwind_price_limit`). The
book reads them from the first endpoint alone: one that said mark = index = $1 of a
$2,500 market made a long's floor $0.99, and the keeper's sale ran the pool down to
Curie's own per-block limit (~10 %) instead of `unwind_max_slippage_bps`. So the same
prices are asked of every voter endpoint at the book's block, and the limit is the
tightest any of them gives (a long's highest floor, a short's lowest ceiling): a liar can
only make an unwind fail its simulation (held and alerted as any unwind that cannot go),
never let it sell further. With one endpoint configured, the book's prices alone, as before.

Endpoints read the same block alike: prices further apart than the unwind's own slippage
are a lie or another fork, and the unwind waits for them to agree; so does one that only a
single endpoint's prices would bound, when several are configured (the others silent even at
"latest", or not within VOTE_WAIT_S). Only unwinds that go this block are asked about: one in
flight has its limit signed already.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keeperd.chain.calls import ContractCall
from keeperd.chain.rpc import Endpoint, RpcPool, RpcUnavailable
from keeperd.protocols.perp_curie import margin as cm
from keeperd.protocols.sdk import approvals

BOOK = "book"  # the voice of the book's own read (the first endpoint, earlier in the block)
# How long each voter endpoint is waited for (its ask at the book's block and, silent there,
# at "latest"): the book holds the first endpoint's word already, as a simulation holds the
# first's when its second opinion gets SECOND_OPINION_GRACE_S (0.5 s). Unbounded, a voter
# that took the request and never answered held the block's liquidations, which wait behind
# the unwinds, the RPC timeout (10 s) twice. One that does not answer in time is no vote.
VOTE_WAIT_S = 0.5


@dataclass(frozen=True)
class Said:
    """One voice's mark and index of a market (18 decimals; 0: unread)."""

    who: str
    mark: int
    index: int

    @property
    def read(self) -> bool:
        return self.mark > 0 or self.index > 0


def unwind_price_limit(size: int, market: Any, slippage_bps: int) -> int | None:
    """closePosition's `sqrtPriceLimitX96` for the keeper's position of `size` (signed, 18
    decimals): closing a long sells into the pool down to the lower of the market's index
    and mark less `slippage_bps`, closing a short buys up to the higher of the two plus it —
    the pool's price never pushed beyond, whatever it takes: what it cannot take there is a
    partial close (the rest at a later block), and a pool already beyond it (a sandwich's
    front leg, a panic) reverts the swap (`SPL`) in its simulation, at no gas. An amount bound
    (`oppositeAmountBound`) instead reverted every close whose size moved the pool past it —
    a crash's unwinds, at the 1,000 ticks a block Curie allows, held for good. None when
    neither price is read (no limit at all is none to the ClearingHouse)."""
    prices = [p for p in (market.index, market.mark) if isinstance(p, int) and p > 0]
    if not prices or not size:
        return None
    if size > 0:  # (a floor: rounded up, never looser)
        limit = -(-min(prices) * (10_000 - slippage_bps) // 10_000)
    else:  # (a ceiling: rounded down)
        limit = max(prices) * (10_000 + slippage_bps) // 10_000
    # vUSD per vETH in the pool (base is token0): sqrt(price) x 2^96.
    return max(1, math.isqrt(limit * 2**192 // cm.WAD))


def tightest_limit(size: int, voices: Sequence[Said], slippage_bps: int) -> int | None:
    """The limit no voice would set stricter: a long's highest floor, a short's lowest
    ceiling (a voice with no price read says nothing). None when none has a price."""
    limits = [limit for v in voices
              if (limit := unwind_price_limit(size, v, slippage_bps)) is not None]
    if not limits:
        return None
    return max(limits) if size > 0 else min(limits)


def disagreement(voices: Sequence[Said], tolerance: float) -> str | None:
    """Who said what, when the voices' marks (or indexes) lie further apart than
    `tolerance` (a fraction of the lowest); None when they agree."""
    for kind, said in (("mark", [(v.who, v.mark) for v in voices]),
                       ("index", [(v.who, v.index) for v in voices])):
        read = [(who, price) for who, price in said if price > 0]
        if len(read) < 2:
            continue
        low, high = min(p for _, p in read), max(p for _, p in read)
        if high - low > low * tolerance:
            return f"the endpoints' {kind} prices disagree: " + ", ".join(
                f"{who} {price / cm.WAD:,.6g}" for who, price in read)
    return None


async def ask_every_endpoint(pool: RpcPool, account_balance: str, bases: Sequence[str],
                             block: int, wait_s: float = VOTE_WAIT_S
                             ) -> dict[str, list[Said]]:
    """Each market's mark and index as each voter endpoint says them at `block`, asked
    again at "latest" of one that said nothing there (a block behind: its word a block
    older beats none). An endpoint is waited for `wait_s` in all (both asks): one that does
    not answer within it says nothing. Empty with a single endpoint."""
    if len(pool.voters) < 2:
        return {}
    calls = ([ContractCall(account_balance, "getMarkPrice(address)", ["address"], [b])
              for b in bases]
             + [ContractCall(b, "getIndexPrice(uint256)", ["uint256"], [0]) for b in bases])

    async def ask(ep: Endpoint) -> tuple[str, list[Any]]:
        try:
            said = await approvals.answers_on(pool, ep, calls, block)
        except RpcUnavailable:  # (asked again at "latest", as one that said nothing)
            said = []
        if not any(a is not None for a in said):
            said = await approvals.answers_on(pool, ep, calls, "latest")
        return ep.name, said

    # (each on its own clock, all at once; one timed out is cancelled, its request with it)
    heard = await asyncio.gather(*(asyncio.wait_for(ask(ep), wait_s) for ep in pool.voters),
                                 return_exceptions=True)
    answered = [s for s in heard if isinstance(s, tuple) and any(a is not None for a in s[1])]
    n = len(bases)
    return {b: [Said(who, _price(said[i]), _price(said[n + i])) for who, said in answered
                if _price(said[i]) or _price(said[n + i])]
            for i, b in enumerate(bases)}


def _price(answer: Any) -> int:
    return answer if isinstance(answer, int) and answer > 0 else 0
