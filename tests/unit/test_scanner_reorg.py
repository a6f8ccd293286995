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


class Reading(Adapter):
    """Discovery gives each touch once (the index's cursor moves on); block 2's read fails."""

    def __init__(self) -> None:
        self.touches = {1: set(), 2: {"0xa"}, 3: {"0xb"}, 4: set()}
        self.reads: list[tuple[int, str, set[str]]] = []

    async def discover(self, block: int) -> set[str]:
        return set(self.touches[block])

    async def read(self, block: int, previous: Any, touched: set[str], dropped: set[str]
                   ) -> str:
        self.reads.append((block, "incremental" if previous else "full", set(touched)))
        if block == 2:
            raise RuntimeError("account 0xa is in eMode category 3, which the market read at "
                               "block 2 does not have")
        return f"book {block}"

    def first_pass(self, previous: Any, book: Any) -> None:
        return None

    def evaluate(self, book: Any) -> object:
        return object()


async def test_accounts_a_failed_evaluation_was_given_are_read_with_the_next_block() -> None:
    """A block whose read failed (an eMode category the market read lacked, an endpoint's
    error) lost the accounts its discovery gave: the index gives each touch once, and a
    liquidatable account went unseen until the full rescan, 3 min 22 s later (a by-hand
    trial). They are read with the next block's."""
    import pytest

    adapter = Reading()
    scanner: Any = ProtocolScanner(adapter, Metrics())  # type: ignore[arg-type]
    await scanner._liquidation_path(1, True, None)
    with pytest.raises(RuntimeError):
        await scanner._liquidation_path(2, False, None)
    await scanner._liquidation_path(3, False, None)
    await scanner._liquidation_path(4, False, None)
    assert adapter.reads == [(1, "full", set()), (2, "incremental", {"0xa"}),
                             (3, "incremental", {"0xa", "0xb"}), (4, "incremental", set())]


async def test_accounts_whose_evaluation_keeps_failing_are_left_to_the_full_rescan() -> None:
    import pytest

    from keeperd.scanner import CARRIED_TRIES

    adapter = Reading()
    last = 3 + CARRIED_TRIES
    adapter.touches = {b: ({"0xa"} if b == 2 else set()) for b in range(1, last + 2)}
    failing = set(range(2, last))

    async def read(block: int, previous: Any, touched: set[str], dropped: set[str]) -> str:
        adapter.reads.append((block, "incremental" if previous else "full", set(touched)))
        if block in failing:
            raise RuntimeError("its read fails")
        return f"book {block}"

    adapter.read = read  # type: ignore[method-assign]
    scanner: Any = ProtocolScanner(adapter, Metrics())  # type: ignore[arg-type]
    await scanner._liquidation_path(1, True, None)
    for block in sorted(failing):
        with pytest.raises(RuntimeError):
            await scanner._liquidation_path(block, False, None)
    await scanner._liquidation_path(last, False, None)
    assert adapter.reads[-2][2] == {"0xa"} and adapter.reads[-1] == (last, "incremental", set())


async def test_a_rescan_of_a_block_already_evaluated_is_timed_from_its_request() -> None:
    """An idle chain's periodic rescan ran minutes after its block's header and was timed from
    it (a plan of 215 s, which keeperd_block_to_broadcast_seconds would take for a liquidation
    it sent: a by-hand trial). A new block still counts from its header."""
    import time

    scanner: Any = ProtocolScanner(Adapter(), Metrics())  # type: ignore[arg-type]
    await scanner.on_block_event(NewBlock(header(10)))
    header_seen = scanner._wanted_seen_at
    scanner.request_full_rescan()  # (block 10 not evaluated yet: its header's time stands)
    assert scanner._wanted_seen_at == header_seen
    scanner.completed_block = 10
    asked = time.perf_counter()
    scanner.request_full_rescan()
    assert scanner._wanted_seen_at >= asked > header_seen
