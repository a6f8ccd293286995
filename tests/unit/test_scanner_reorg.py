"""A reorg lowers the block the scanner wants to its ancestor: it only ever rose, and after a
lying endpoint's invented chain (100 blocks past the real head) was abandoned, every
evaluation asked for the invented height and failed until the chain got there — a crash went
unevaluated meanwhile (a by-hand trial)."""

from __future__ import annotations

from typing import Any

from keeperd.chain.blocks import BlockHeader, NewBlock, Reorg
from keeperd.metrics import Metrics
from keeperd.scanner import ProtocolScanner


def header(n: int) -> BlockHeader:
    return BlockHeader(n, f"0x{n:064x}", f"0x{n - 1:064x}", 1_700_000_000 + n)


class Adapter:
    name, chain = "aave", "devnet"

    async def on_reorg(self, ancestor: int) -> list[str]:
        return []


async def test_a_reorg_lowers_the_block_wanted_to_its_ancestor() -> None:
    scanner: Any = ProtocolScanner(Adapter(), Metrics())  # type: ignore[arg-type]
    await scanner.on_block_event(NewBlock(header(687)))  # (a liar's invented head)
    assert scanner._wanted == 687
    await scanner.on_block_event(Reorg(header(586), tuple(header(n) for n in range(587, 688))))
    assert scanner._wanted == 586 and scanner._full_due
    await scanner.on_block_event(NewBlock(header(587)))  # (the real chain's next)
    assert scanner._wanted == 587
