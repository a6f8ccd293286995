"""An unwind (Curie: closing what the keeper took over) that ended without unwinding is tried
again under its next retry key, whether it reverted or was never mined: its send refused,
its nonce taken by another transaction, cancelled. A drop used to be the end of it — the
keeper's position held unhedged for good, no alert. Once every try has failed, the
liquidator is told so (its hold: takeovers in that market wait), with how each ended."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from keeperd.execution import journal as J
from keeperd.execution.executor import RETRIES_AFTER_REVERT, UNWIND_TRIES_MAX, Executor
from keeperd.execution.signer_policy import selector
from keeperd.execution.txmanager import FeePolicy
from keeperd.protocols.sdk.keys import OpportunityKey
from keeperd.storage.db import SqliteDatabase
from tests.conftest import migrated
from tests.unit.test_one_in_flight import CALL, TARGET, Node, Unwinds, manager


class Told(Unwinds):
    def __init__(self, items: list[tuple[OpportunityKey, str, bytes, int]]) -> None:
        super().__init__(items)
        self.settled: list[tuple[OpportunityKey, int, str | None, bool]] = []

    def housekeeping_settled(self, key: OpportunityKey, block: int, failed: str | None, *,
                             lasting: bool = False, simulated: bool = False) -> None:
        self.settled.append((key, block, failed, lasting))


async def executor(tmp_path: Path, node: Node) -> tuple[Any, OpportunityKey]:
    """The executor's housekeeping as the daemon runs it, and the unwind its liquidator
    lists (the keeper's position in one market)."""
    tx = manager(node)
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    ex: Any = Executor.__new__(Executor)
    ex.tx, ex.keeper, ex.pool = tx, tx.address, node
    ex.journal = await J.Journal.open(await migrated(db))
    ex.config = SimpleNamespace(mode="liquidate", gas_limit_margin=1.2)
    ex.fees = FeePolicy()
    ex.adapter = SimpleNamespace(name="curie")
    unwind = OpportunityKey("curie", tx.address, ("unwind", "0xaa"), "100")
    ex.liquidator = Told([(unwind, TARGET, selector(CALL), 300_000)])
    ex.db = db
    return ex, unwind


async def ended(ex: Any, key: OpportunityKey, status: str, detail: str | None = None) -> None:
    await ex.journal.record(J.JournalEntry(str(key), "curie", key.account, "", "", 0, 0.0, 0,
                                           9, J.PLANNED, None, None, "housekeeping"))
    await ex.journal.set_status(key, status, detail=detail)


async def test_an_unwind_never_mined_is_tried_again(tmp_path: Path) -> None:
    node = Node()
    ex, unwind = await executor(tmp_path, node)
    await ended(ex, unwind.retry(0), J.DROPPED,
                "never mined: its nonce went to another transaction")
    await ex._housekeep(SimpleNamespace(block=10))
    assert len(node.sent) == 1  # (without the retry: nothing, the position held for good)
    assert await ex.journal.get(unwind.retry(1)) is not None
    assert not [s for s in ex.liquidator.settled if s[2] is not None]
    # A cancelled second try: the third goes.
    await ex.journal.set_status(unwind.retry(1), J.CANCELLED, detail="tx=0x01")
    await ex._housekeep(SimpleNamespace(block=11))
    assert len(node.sent) == 2
    assert await ex.journal.get(unwind.retry(2)) is not None
    await ex.db.close()


async def test_an_unwind_that_reverted_three_times_holds_its_market(tmp_path: Path) -> None:
    node = Node()
    ex, unwind = await executor(tmp_path, node)
    assert RETRIES_AFTER_REVERT == 2  # (three reverts below)
    await ended(ex, unwind.retry(0), J.REVERTED, "tx=0x01")
    await ended(ex, unwind.retry(1), J.DROPPED, "refused: nonce too low")
    await ended(ex, unwind.retry(2), J.REVERTED, "tx=0x03")
    await ended(ex, unwind.retry(3), J.CANCELLED, "tx=0x04")
    # Two reverts, a drop and a cancel: the fifth try goes (a refused send is not the
    # unwind failing: three of them left it to the operator).
    await ex._housekeep(SimpleNamespace(block=12))
    assert len(node.sent) == 1
    assert await ex.journal.get(unwind.retry(4)) is not None
    assert not [s for s in ex.liquidator.settled if s[3]]  # (nothing lasting)
    await ex.journal.set_status(unwind.retry(4), J.REVERTED, detail="tx=0x05")
    ex.liquidator.settled.clear()
    await ex._housekeep(SimpleNamespace(block=13))
    assert len(node.sent) == 1  # (the third revert: nothing more)
    [(key, block, why, lasting)] = ex.liquidator.settled
    assert (key, block, lasting) == (unwind, 13, True)
    assert why == ("its 5 tries failed: reverted, dropped (refused: nonce too low), reverted, "
                   "cancelled (tx=0x04), reverted")
    await ex.db.close()


async def test_an_unwind_refused_many_times_is_left_to_the_operator(tmp_path: Path) -> None:
    node = Node()
    ex, unwind = await executor(tmp_path, node)
    for n in range(UNWIND_TRIES_MAX):
        await ended(ex, unwind.retry(n), J.DROPPED, "refused: fee over budget")
    await ex._housekeep(SimpleNamespace(block=14))
    assert node.sent == []
    [(_, _, why, lasting)] = ex.liquidator.settled
    assert lasting and why is not None and why.startswith(f"its {UNWIND_TRIES_MAX} tries")
    await ex.db.close()


async def test_an_unwind_in_hand_is_not_sent_again(tmp_path: Path) -> None:
    node = Node()
    ex, unwind = await executor(tmp_path, node)
    await ended(ex, unwind.retry(0), J.DROPPED)
    await ended(ex, unwind.retry(1), J.PENDING)  # (in flight: its watch settles it)
    await ex._housekeep(SimpleNamespace(block=13))
    assert node.sent == []
    assert await ex.journal.get(unwind.retry(2)) is None
    await ex.db.close()
