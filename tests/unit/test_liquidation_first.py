"""The order between scanners on the one event loop (keeperd/liquidation_first.py): a heavy
path and everyone's after-work wait for the light liquidation paths in flight, a light path
never waits, every wait is bounded; and `LoopTime` counts the time a coroutine's own steps
held the loop, not the time it waited."""

from __future__ import annotations

import asyncio
import time

import pytest

from keeperd.liquidation_first import LiquidationFirst, LoopTime


def hold(seconds: float) -> None:
    """Holds the event loop, as a computation does (on purpose, here)."""
    time.sleep(seconds)


async def test_loop_time_counts_the_steps_not_the_waits() -> None:
    async def work() -> str:
        hold(0.05)
        await asyncio.sleep(0.3)  # (does not hold it)
        hold(0.05)
        return "done"

    timed = LoopTime(work())
    assert await timed == "done"
    assert 0.1 <= timed.held_s < 0.3


async def test_loop_time_passes_errors_and_cancellation_through() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await LoopTime(fails())
    cleaned: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally")

    async def timed() -> None:
        await LoopTime(waits())

    task = asyncio.create_task(timed())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def test_a_heavy_path_waits_for_the_light_ones_and_a_light_one_never_waits() -> None:
    order = LiquidationFirst(heavy_s=0.05, wait_limit_s=5)
    order.took("curie", 0.4)
    order.took("morpho", 0.01)
    assert order.heavy("curie") and not order.heavy("morpho")
    order.due("morpho", 10)
    order.due("curie", 10)
    heavy = asyncio.create_task(order.before_path("curie"))
    assert await asyncio.wait_for(order.before_path("morpho"), 0.1)  # at once
    order.running("morpho")
    after = asyncio.create_task(order.before_after_work("curie"))
    await asyncio.sleep(0.05)
    assert not heavy.done() and not after.done()
    order.done("morpho", 10)
    assert await asyncio.wait_for(heavy, 1) and await asyncio.wait_for(after, 1)


async def test_a_newer_block_keeps_a_path_in_flight_and_waits_are_bounded() -> None:
    order = LiquidationFirst(heavy_s=0.05, wait_limit_s=0.1)
    order.took("curie", 1.0)
    order.due("aave", 10)
    order.due("aave", 11)  # (arrived while block 10 was evaluated)
    order.done("aave", 10)
    assert order.light_in_flight("curie") == ["aave"]
    started = time.perf_counter()
    assert await order.before_path("curie") is False  # gave up at its limit
    assert time.perf_counter() - started < 1
    order.done("aave", None)  # a stopping scanner: nothing of it in flight
    assert order.light_in_flight("curie") == []
    assert await order.before_path("curie") is True


async def test_one_slow_run_does_not_make_a_light_path_heavy() -> None:
    order = LiquidationFirst(heavy_s=0.05)
    for seconds in (0.01, 0.9, 0.01):
        order.took("aave", seconds)
    assert not order.heavy("aave")


async def test_after_work_waits_for_running_paths_not_for_paths_only_due() -> None:
    """Two light scanners, each doing its after-work of a block when the next arrives: each
    one's next path is due, not running (its own task is in that after-work). Waiting for due
    paths, each would wait for the other until the limit (seen in bench/isolation.py: a
    Morpho liquidation 2 s late)."""
    order = LiquidationFirst(heavy_s=0.05, wait_limit_s=5)
    order.due("aave", 11)
    order.due("morpho", 11)
    assert await asyncio.wait_for(order.before_after_work("aave"), 0.5)
    assert await asyncio.wait_for(order.before_after_work("morpho"), 0.5)
    order.running("morpho")
    waiting = asyncio.create_task(order.before_after_work("aave"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    order.done("morpho", 11)
    assert await asyncio.wait_for(waiting, 1)
