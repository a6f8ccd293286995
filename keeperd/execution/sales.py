"""A block's sales through one swap pool, simulated in turn (pure).

The flash paths sell what they seize in a Uniswap pool, in the same transaction, and revert
below a bound (the oracle rate less `max_swap_slippage_bps`: SwapBelowBound). Each sale
moves the pool's price against the next. Simulated each alone against the block's state, a
crash's liquidations through one pool all passed; sent together, mined in nonce order, each
sold into the price the earlier ones left, and the later ones reverted: 39 of a devnet
crash's flash liquidations, gas spent for nothing, and the revert breaker then held every
sound liquidation for 50 blocks. So the calls that sell through a pool the block already
sells through are simulated in one `eth_simulateV1` block after those sales, in the order
they are sent (waves in order, a wave's calls in order: the nonces' order), and after the
keeper's sales through it still in flight (an earlier pass of the block — the crash's exposed
accounts first, then the rest — or a block not yet mined; any protocol's on the chain: they
share the key's nonces). A sale the chain has not mined when an earlier one of ours reverts
is simulated after it all the same: pessimistic, never a revert.

The first sale of a block through a pool is also asked alone, as every call was: it needs no
other, and it goes out even where the endpoint serves no `eth_simulateV1`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keeperd.protocols.sdk.contract import Call


@dataclass(frozen=True)
class Sale:
    """A transaction of the keeper's that sells through a pool, as it is simulated ahead of
    a later one: where it goes, its calldata, its gas limit."""

    to: str
    data: bytes
    gas: int

    @classmethod
    def of(cls, call: Call) -> Sale:
        return cls(call.target, call.data, call.opportunity.gas_limit)


@dataclass(frozen=True)
class InTurn:
    """One pool's sales in a wave, to simulate in one block after `before` (the keeper's
    sales through it in flight, then the block's earlier waves', in their order).
    `members`: the wave's indexes of its calls through the pool, in order; `alone`: the
    first of them when nothing sells through the pool ahead of it (it is asked alone too,
    and its own answer stands)."""

    pool: str
    before: tuple[Sale, ...]
    members: tuple[int, ...]

    @property
    def alone(self) -> int | None:
        return self.members[0] if not self.before else None


def sold_before(waves: Sequence[Sequence[Call]],
                in_flight: Mapping[str, Sequence[Sale]] | None = None
                ) -> list[dict[str, tuple[Sale, ...]]]:
    """For each wave, what sells through each pool (lowercase) ahead of it: the keeper's
    sales in flight there (in nonce order), then the calls of the waves ahead of it, in the
    order they are sent."""
    out: list[dict[str, tuple[Sale, ...]]] = []
    seen: dict[str, list[Sale]] = {}
    for pool, sold in (in_flight or {}).items():
        seen.setdefault(pool.lower(), []).extend(sold)
    for wave in waves:
        out.append({pool: tuple(sold) for pool, sold in seen.items() if sold})
        for call in wave:
            if call.sells_through:
                seen.setdefault(call.sells_through.lower(), []).append(Sale.of(call))
    return out


def in_turn(calls: Sequence[Call], before: Mapping[str, Sequence[Sale]]) -> list[InTurn]:
    """The wave's pools whose sales must be simulated in turn: those with a sale earlier in
    the block, or more than one in this wave. A pool the wave sells through once, first in
    the block, needs nothing: its call is asked alone, as any other."""
    members: dict[str, list[int]] = {}
    for i, call in enumerate(calls):
        if call.sells_through:  # (pools by lowercase address, as `sold_before` keys them)
            members.setdefault(call.sells_through.lower(), []).append(i)
    return [InTurn(pool, tuple(before.get(pool, ())), tuple(indexes))
            for pool, indexes in members.items() if before.get(pool) or len(indexes) > 1]
