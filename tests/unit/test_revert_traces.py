"""A revert nobody explains is traced (`Executor._trace_reverts`): asked in the background
once a block's liquidations went out, its answer put down at a later block's end — the next
block's liquidations never wait for it (a slow node held each block's up to REVERT_TRACE_S);
a trace the node did not answer in time — a crash's load — is asked again at a later block,
a few times in all (under a full test run's load 16 and 30 of 34 kept reverts were traced at
the first asking, and the rest never); one the endpoint refuses (no debug_* there) is not
asked again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from keeperd.chain.rpc import RpcError
from keeperd.execution import journal as J
from keeperd.execution.executor import REVERT_TRACE_TRIES, Executor
from keeperd.execution.txmanager import Outcome
from keeperd.protocols.sdk.contract import LiquidatorBase
from keeperd.protocols.sdk.keys import OpportunityKey
from keeperd.storage.db import SqliteDatabase
from tests.conftest import migrated

TRACE = {"error": "execution reverted", "to": "0x" + "aa" * 20,
         "revertReason": "HealthFactorNotBelowThreshold"}


class Node:
    """The first endpoint, as the executor asks it for traces: its answers given in turn."""

    voters = ["endpoint-0"]

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.asked = 0

    async def call_endpoint(self, endpoint: str, method: str, params: Any, *,
                            judged: bool = True) -> Any:
        assert (endpoint, method, judged) == ("endpoint-0", "debug_traceTransaction", False)
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer


async def executor(tmp_path: Path, node: Node) -> tuple[Any, OpportunityKey]:
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    ex: Any = Executor.__new__(Executor)
    ex.pool, ex.liquidator, ex._last_revert_reason = node, LiquidatorBase(), None
    ex.journal = await J.Journal.open(await migrated(db))
    ex.db = db
    key = OpportunityKey("aave", "0x" + "0b" * 20, ("c", "d"), "1")
    await ex.journal.record(J.JournalEntry(str(key), "aave", key.account, "c", "d", 1, 1.0, 0,
                                           9, J.PLANNED, None, None, None))
    await ex.journal.set_status(key, J.REVERTED, detail="tx=0x01")
    ex._to_trace = [(Outcome(key, "reverted", "0x01", 50_000, 1, {}), 0)]
    ex._tracing = None
    ex._reverts, ex._revert_counted = [9], {"0x01": 9}  # (the revert breaker's count)
    ex.adapter = SimpleNamespace(name="aave")
    return ex, key


async def block_end(ex: Any) -> None:
    """One block's act ends: the last asking's answers put down, the next asked — and, for
    the test, answered before the next block."""
    await ex._trace_reverts()
    if ex._tracing is not None:
        await asyncio.wait([ex._tracing])


@pytest.mark.parametrize("busy", [TimeoutError(), RpcError("debug_traceTransaction", -32000,
                                                             "request timed out")])
async def test_a_trace_not_answered_is_asked_again_at_a_later_block(tmp_path: Path,
                                                                    busy: Exception) -> None:
    node = Node([busy, busy, TRACE])
    ex, key = await executor(tmp_path, node)
    for _ in range(REVERT_TRACE_TRIES + 1):
        await block_end(ex)
    assert node.asked == 3  # (without the retries: once, and the reason never known)
    entry = await ex.journal.get(key)
    assert entry is not None and entry.detail == (
        f"tx=0x01 reverted: HealthFactorNotBelowThreshold in 0x{'aa' * 20}")
    assert ex._last_revert_reason == f"HealthFactorNotBelowThreshold in 0x{'aa' * 20}"
    assert ex._to_trace == []
    await ex.db.close()


async def test_a_trace_is_asked_a_few_times_at_most(tmp_path: Path) -> None:
    node = Node([TimeoutError()])
    ex, _ = await executor(tmp_path, node)
    for _ in range(REVERT_TRACE_TRIES + 3):
        await block_end(ex)
    assert node.asked == REVERT_TRACE_TRIES
    assert ex._to_trace == []
    await ex.db.close()


async def test_an_endpoint_without_debug_methods_is_not_asked_again(tmp_path: Path) -> None:
    node = Node([RpcError("debug_traceTransaction", -32601, "the method does not exist")])
    ex, key = await executor(tmp_path, node)
    for _ in range(REVERT_TRACE_TRIES):
        await block_end(ex)
    assert node.asked == 1
    entry = await ex.journal.get(key)
    assert entry is not None and entry.detail == "tx=0x01"
    await ex.db.close()


async def test_a_slow_node_is_not_asked_again_in_the_same_block(tmp_path: Path) -> None:
    """A trace not answered in time says the node is slow now: the block's other trace waits
    for a later block (each asking holds the next block's liquidations up to REVERT_TRACE_S)."""
    node = Node([TimeoutError(), TRACE, TRACE])
    ex, key = await executor(tmp_path, node)
    other = Outcome(key, "reverted", "0x02", 50_000, 1, {})
    ex._to_trace.append((other, 0))
    await block_end(ex)
    assert node.asked == 1
    await ex._trace_reverts()  # (put down; the next asked)
    assert node.asked == 1 and ex._tracing is not None
    await block_end(ex)
    assert node.asked == 3 and ex._to_trace == []
    await ex.db.close()


async def test_the_next_blocks_act_never_waits_for_a_trace(tmp_path: Path) -> None:
    """A node that takes its time with a trace: the block's act ends at once, and so does
    every later one while it is asked; its answer is put down at the first block's end after
    it came. A stop gives it up."""
    answered = asyncio.Event()

    class SlowNode(Node):
        async def call_endpoint(self, endpoint: str, method: str, params: Any, *,
                                judged: bool = True) -> Any:
            self.asked += 1
            await answered.wait()
            return TRACE

    node = SlowNode([])
    ex, key = await executor(tmp_path, node)
    await asyncio.wait_for(ex._trace_reverts(), 0.5)
    await asyncio.sleep(0)
    assert node.asked == 1
    for _ in range(3):  # (later blocks: no wait, nothing asked twice)
        await asyncio.wait_for(ex._trace_reverts(), 0.5)
    assert node.asked == 1
    entry = await ex.journal.get(key)
    assert entry is not None and entry.detail == "tx=0x01"
    answered.set()
    await asyncio.wait([ex._tracing])
    await ex._trace_reverts()
    entry = await ex.journal.get(key)
    assert entry is not None and entry.detail.endswith("HealthFactorNotBelowThreshold in 0x"
                                                       + "aa" * 20)
    # A stop while one is asked: cancelled, nothing left running.
    answered.clear()
    ex._to_trace = [(Outcome(key, "reverted", "0x03", 50_000, 1, {}), 0)]
    await ex._trace_reverts()
    asking = ex._tracing
    assert asking is not None and not asking.done()
    await ex.close()
    assert asking.cancelled() and ex._tracing is None
    await ex.db.close()


async def test_a_trace_that_does_not_read_loses_only_itself(tmp_path: Path) -> None:
    """One malformed answer failed the whole asking: the answered and the unasked were lost
    with it (a review). Now it is unexplained, and the others are put down."""
    node = Node([{"calls": "not a trace", "error": 7}, TRACE])
    ex, key = await executor(tmp_path, node)

    async def reason(outcome: Outcome) -> str | None:
        if outcome.tx_hash == "0x01":
            raise TypeError("a trace that does not read")
        return "HealthFactorNotBelowThreshold"

    ex._revert_reason = reason
    ex._to_trace.append((Outcome(key, "reverted", "0x02", 50_000, 1, {}), 0))
    await block_end(ex)
    await ex._trace_reverts()
    assert ex._tracing is None and ex._to_trace == []
    entry = await ex.journal.get(key)
    assert entry is not None and entry.detail == "tx=0x02 reverted: HealthFactorNotBelowThreshold"
    await ex.db.close()
