"""Flash sales too large for their pool's depth, planned smaller for a while.

A flash sale that fails its bound alone (the seller contract's SwapBelowBound with no other
sale ahead of it) is too large for what its pool pays at that size: sent again each block at
the same size, it never goes (the devnet's two largest Aave positions, $2.7M of debt, were
never liquidated so: a by-hand trial). Each such failure halves what the pair may sell, from
the next block, down to an eighth of its first size; the smaller size holds `hold_blocks`,
then the whole size is tried again (arbitrage may have brought the pool back), and the pair is
forgotten: a position liquidated or healed leaves nothing behind.

What a "size" is belongs to the plug-in (Aave: the debt to cover; Morpho: the collateral
seized); so does the key (Aave: account, collateral, debt; Morpho: account, market)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

Pair = TypeVar("Pair", bound=Hashable)

# The smaller size holds this many blocks: then the whole size is tried again.
SALE_CAP_BLOCKS = 50
# Halved down to this fraction of the first size (1/2, 1/4, 1/8), not further: a sale that an
# eighth of its size cannot pass is the pool's price, not its depth.
SMALLEST_SHARE = 8


class SaleCaps(Generic[Pair]):
    """The most each pair may sell, by pair (`halve` when a sale fails alone, `at` to plan)."""

    def __init__(self, hold_blocks: int = SALE_CAP_BLOCKS) -> None:
        self.hold_blocks = hold_blocks
        # pair -> (the most it may sell, the block it was set at, its first size)
        self._caps: dict[Pair, tuple[int, int, int]] = {}

    def halve(self, pair: Pair, size: int, block: int) -> int | None:
        """`pair`'s sale of `size` failed its bound alone at `block`: the new cap (half of
        `size`), or None when that would be under the smallest share of its first size."""
        held = self._caps.get(pair)
        first = held[2] if held is not None and block - held[1] <= self.hold_blocks else size
        cap = size // 2
        if cap <= 0 or cap < first // SMALLEST_SHARE:
            return None
        self._caps[pair] = (cap, block, first)
        return cap

    def at(self, block: int) -> dict[Pair, int]:
        """The caps in force at `block`; those past their hold are forgotten."""
        for pair in [p for p, (_, since, _) in self._caps.items()
                     if block - since > self.hold_blocks]:
            del self._caps[pair]
        return {pair: cap for pair, (cap, _, _) in self._caps.items()}

    def __len__(self) -> int:
        return len(self._caps)
