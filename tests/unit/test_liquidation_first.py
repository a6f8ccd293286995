"""The order between scanners on the one event loop (keeperd/liquidation_first.py): a path
waits for the much lighter paths in flight, the after-work for the paths running, every wait
is bounded; and `LoopTime` counts the time a coroutine's own steps held the loop, not the time
it waited."""

from __future__ import annotations

import asyncio
import time

import pytest

from keeperd.liquidation_first import LiquidationFirst, LoopTime, count_child_tasks


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


async def test_loop_time_counts_the_tasks_a_path_starts_with_the_daemons_task_factory() -> None:
    """A multicall gathers its chunks in tasks of their own: their decoding is the path's."""
    async def chunk() -> int:
        await asyncio.sleep(0)
        hold(0.05)
        return 1

    async def path() -> int:
        return sum(await asyncio.gather(chunk(), chunk()))

    loop = asyncio.get_running_loop()
    without = LoopTime(path())
    assert await without == 2 and without.held_s < 0.05
    previous = loop.get_task_factory()
    loop.set_task_factory(count_child_tasks(previous))
    try:
        counted = LoopTime(path())
        assert await counted == 2 and counted.held_s >= 0.1
        outside = asyncio.create_task(chunk())  # (not in a path: not counted anywhere)
        assert await outside == 1 and counted.held_s < 0.15
    finally:
        loop.set_task_factory(previous)


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


def weighed(**weights: float) -> LiquidationFirst:
    order = LiquidationFirst(lighter=4, min_wait_s=0.02, wait_limit_s=5)
    for name, seconds in weights.items():
        order.took(name, seconds)
    return order


async def test_a_heavy_path_waits_for_the_much_lighter_ones_and_they_never_wait() -> None:
    order = weighed(curie=0.15, aave=0.03, morpho=0.01)
    for name in ("aave", "morpho", "curie"):
        order.due(name, 10)
    assert order.lighter_in_flight("curie") == ["aave", "morpho"]
    # Aave and Morpho, within a factor 4 of each other, run side by side as before.
    assert order.lighter_in_flight("aave") == [] and order.lighter_in_flight("morpho") == []
    heavy = asyncio.create_task(order.before_path("curie"))
    assert await asyncio.wait_for(order.before_path("morpho"), 0.1)  # at once
    order.running("morpho")
    order.done("aave", 10)
    await asyncio.sleep(0.05)
    assert not heavy.done()
    order.done("morpho", 10)
    assert await asyncio.wait_for(heavy, 1)


async def test_after_work_waits_for_running_paths_not_for_paths_only_due() -> None:
    """Two scanners, each doing its after-work of a block when the next arrives: each one's
    next path is due, not running (its own task is in that after-work). Waiting for due paths,
    each would wait for the other until the limit (seen in bench/isolation.py: a Morpho
    liquidation 2 s late)."""
    order = weighed(aave=0.03, morpho=0.01)
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


async def test_a_newer_block_keeps_a_path_in_flight_and_waits_are_bounded() -> None:
    order = LiquidationFirst(wait_limit_s=0.1)
    order.took("curie", 1.0)
    order.took("aave", 0.01)
    order.due("aave", 10)
    order.due("aave", 11)  # (arrived while block 10 was evaluated)
    order.done("aave", 10)
    assert order.lighter_in_flight("curie") == ["aave"]
    started = time.perf_counter()
    assert await order.before_path("curie") is False  # gave up at its limit
    assert time.perf_counter() - started < 1
    order.done("aave", None)  # a stopping scanner: nothing of it in flight
    assert order.lighter_in_flight("curie") == []
    assert await order.before_path("curie") is True


def test_weights_are_the_lightest_runs_and_small_paths_wait_for_nothing() -> None:
    order = weighed(aave=0.01, morpho=0.001)
    for seconds in (0.9, 0.8):  # slow runs (behind others, at a start) are no weight
        order.took("aave", seconds)
    assert order.weight("aave") == 0.01
    order.due("morpho", 5)
    assert order.lighter_in_flight("aave") == []  # (10 ms: not worth ordering)
    order.took("toy", 1.0)
    order.took("toy", 1.0)
    order.due("aave", 5)
    assert order.lighter_in_flight("toy") == ["aave", "morpho"]


async def test_a_path_long_in_flight_is_heavy_however_little_loop_it_holds() -> None:
    """Curie's path, its calldata encoded once, holds the loop 40-90 ms but keeps the node
    busy 0.4-0.6 s with its reads: Aave's reads, beside it, are answered that much later
    (bench/isolation.py). Weighed by its loop time alone it would run beside Aave's."""
    order = weighed(aave=0.01)
    for _block in range(3):
        order.running("curie")
        await asyncio.sleep(0.1)  # waiting for the node: the loop is free
        order.took("curie", 0.01)
        order.done("curie", 10)
    assert order.weight("curie") >= 0.1
    order.due("aave", 11)
    assert order.lighter_in_flight("curie") == ["aave"]
    # A run that held the loop longer than it was in flight (a test's own figure) keeps it.
    order.took("toy", 0.5)
    assert order.weight("toy") == 0.5


async def test_a_light_path_beside_a_heavy_one_is_not_weighed_heavy() -> None:
    """A path in flight while another path holds the loop (the toy's one-second evaluation,
    Curie's decoding) waits that long through no fault of its own: weighed by its time in
    flight it looked as heavy as its neighbour, and lost its place before it (seen:
    test_isolation failing, Morpho's liquidation behind the toy's evaluation)."""
    order = weighed(toy=1.0)
    order.running("morpho")
    order.running("toy")
    heavy = LoopTime(asyncio.sleep(0), order.held)  # the toy's steps, told as they end
    await heavy
    order.held(0.3)  # (its evaluation: the loop held 0.3 s while Morpho waited for it)
    time.sleep(0.3)  # noqa: ASYNC251 - the loop held, as an evaluation holds it
    order.took("toy", 0.3)
    order.done("toy", 10)
    await asyncio.sleep(0.02)  # Morpho's own wait for the node
    order.took("morpho", 0.005)
    order.done("morpho", 10)
    assert 0.02 <= order.weight("morpho") < 0.1
    order.due("morpho", 11)
    assert order.lighter_in_flight("toy") == ["morpho"]


async def test_the_lightest_path_reads_first_however_light() -> None:
    """Aave's path (~30 ms on the devnet) and Morpho's (~12 ms), both under the floor of
    rule 1, read side by side: each one's reads and evaluation shared the node and the loop
    with the other's, and Morpho's first liquidation came 1.5x later than alone
    (bench/isolation.py). Rule 2: the heavier reads after the lighter's path."""
    order = weighed(aave=0.03, morpho=0.012)
    for name in ("aave", "morpho"):
        order.due(name, 10)
        order.running(name)
    assert order.lighter_in_flight("aave") == []  # (rule 1: under its floor, within 4x)
    lighter = asyncio.create_task(order.before_read("morpho"))
    await asyncio.sleep(0.02)
    assert not lighter.done()  # (rule 2a: until Aave tells its outlook, within 4x of it)
    heavier = asyncio.create_task(order.before_read("aave"))
    assert await asyncio.wait_for(lighter, 0.1)  # Aave told: Morpho, lighter, reads
    await asyncio.sleep(0.05)
    assert not heavier.done()
    order.done("morpho", 10)
    assert await asyncio.wait_for(heavier, 1)


async def test_a_path_under_water_reads_first_whatever_its_weight() -> None:
    """Morpho's crash moves Aave's WETH feed too, and Aave's path, which will liquidate
    nothing, came out lighter by a hair in 16 of 78 rounds (on ordinary blocks they weigh
    alike): Morpho then waited 7-16 ms for it (bench/isolation.py). Morpho tells, before its
    read, that a position is under water at the block's prices: it reads first. Aave, which
    cannot tell before its read, waits for Morpho's outlook, however its discovery ended
    first."""
    order = weighed(aave=0.0086, morpho=0.0091, curie=0.3)
    for name in ("aave", "morpho"):
        order.due(name, 10)
        order.running(name)
    assert order.lightest_first("morpho") == ["aave"]  # rule 2 alone: Aave first
    aave = asyncio.create_task(order.before_read("aave"))
    await asyncio.sleep(0.02)
    assert not aave.done()  # Morpho, within 4x of Aave's weight, has not told yet
    assert await asyncio.wait_for(order.before_read("morpho", under=True), 0.1)  # at once
    await asyncio.sleep(0.05)
    assert not aave.done()  # after Morpho's whole path
    order.done("morpho", 10)
    assert await asyncio.wait_for(aave, 1)
    # Told the other way round: Aave is waiting already, and Morpho tells under.
    for name in ("aave", "morpho"):
        order.due(name, 11)
        order.running(name)
    morpho = asyncio.create_task(order.before_read("morpho", under=True))
    await asyncio.sleep(0.02)
    assert not morpho.done()  # Aave, lighter, may be under too: until it tells
    aave = asyncio.create_task(order.before_read("aave"))
    assert await asyncio.wait_for(morpho, 0.1)  # Aave told moved: Morpho first
    await asyncio.sleep(0.05)
    assert not aave.done()
    order.done("morpho", 11)
    assert await asyncio.wait_for(aave, 1)
    order.done("aave", 11)


async def test_paths_under_water_read_the_lightest_first_and_quiet_ones_last() -> None:
    order = weighed(aave=0.03, morpho=0.012, toy=0.001)
    for name in ("aave", "morpho", "toy"):
        order.due(name, 10)
        order.running(name)
    aave = asyncio.create_task(order.before_read("aave", under=True))
    toy = asyncio.create_task(order.before_read("toy", quiet=True))
    await asyncio.sleep(0.02)
    assert not aave.done() and not toy.done()  # Morpho, lighter, has not told
    assert await asyncio.wait_for(order.before_read("morpho", under=True), 0.1)
    assert order.read_after("aave", "under") == ["morpho"]
    assert order.read_after("toy", "quiet") == ["aave", "morpho"]
    order.done("morpho", 10)
    assert await asyncio.wait_for(aave, 1)
    await asyncio.sleep(0.02)
    assert not toy.done()
    order.done("aave", 10)
    assert await asyncio.wait_for(toy, 1)


async def test_a_path_that_cannot_tell_does_not_wait_for_a_much_heavier_ones_outlook() -> None:
    """Rule 2a's wait for an outlook is for paths within LIGHTER of each other's weight: a
    light path does not wait for a heavy one's discovery (Curie's, were it running)."""
    order = weighed(aave=0.01, curie=0.3)
    for name in ("aave", "curie"):
        order.due(name, 10)
        order.running(name)
    assert await asyncio.wait_for(order.before_read("aave"), 0.1)
    with pytest.raises(ValueError, match="outlook"):
        order.tell("aave", "sunny")


async def test_a_path_not_yet_weighed_is_not_waited_for_before_a_read() -> None:
    """At a daemon's start no path has a weight: none waits for another by rule 2 (a path
    never weighed could be the heaviest of all)."""
    order = weighed(aave=0.03)
    order.due("curie", 10)
    order.running("curie")
    order.running("aave")
    assert order.lightest_first("aave") == []
    assert await asyncio.wait_for(order.before_read("aave"), 0.1)


async def test_a_quiet_path_lets_the_others_read_first_and_reads_after_them() -> None:
    """Aave's crash moves nothing of Morpho's: Morpho, lighter, would make Aave's read wait
    for its own. Quiet, it lets Aave's path go, and reads once Aave's path is done; Curie's
    path still waits for Morpho's (its reads would slow Morpho's, and weigh them heavy)."""
    order = weighed(aave=0.03, morpho=0.012, curie=0.3)
    for name in ("aave", "morpho", "curie"):
        order.due(name, 10)
    order.running("aave")
    order.running("morpho")
    heavy = asyncio.create_task(order.before_path("curie"))
    aave = asyncio.create_task(order.before_read("aave"))
    await asyncio.sleep(0.02)
    assert not aave.done()  # Morpho, lighter, has not said yet
    morpho = asyncio.create_task(order.before_read("morpho", quiet=True))
    assert await asyncio.wait_for(aave, 1)  # Morpho quiet: Aave reads at once
    await asyncio.sleep(0.05)
    assert not morpho.done()  # Morpho reads after Aave's path...
    assert not heavy.done()  # ...and Curie starts after both
    order.done("aave", 10)
    assert await asyncio.wait_for(morpho, 1)
    await asyncio.sleep(0.05)
    assert not heavy.done()
    order.done("morpho", 10)
    assert await asyncio.wait_for(heavy, 1)


async def test_a_running_path_does_not_wait_before_its_read_for_one_not_yet_running() -> None:
    """A path not yet running may itself wait (rule 1) for a quiet one, which waits for the
    running ones: waiting for it, a running path would close a circle (to the limit)."""
    order = weighed(aave=0.03, morpho=0.012)
    order.due("morpho", 10)
    order.running("aave")
    assert await asyncio.wait_for(order.before_read("aave"), 0.1)


async def test_quiet_paths_do_not_wait_for_each_other() -> None:
    order = weighed(aave=0.03, morpho=0.012)
    for name in ("aave", "morpho"):
        order.due(name, 10)
        order.running(name)
    both = asyncio.gather(order.before_read("aave", quiet=True),
                          order.before_read("morpho", quiet=True))
    assert await asyncio.wait_for(both, 0.5) == [True, True]


async def test_a_wait_before_the_read_is_no_weight() -> None:
    """A quiet Morpho waits for Aave's whole path: weighed with that wait it would look
    as heavy as Aave, and lose its place before Aave's read in the next crash."""
    order = weighed(aave=0.03)
    order.due("aave", 10)
    order.running("aave")
    order.running("morpho")
    waiting = asyncio.create_task(order.before_read("morpho", quiet=True))
    order.held(0.0)
    await asyncio.sleep(0.1)
    order.done("aave", 10)
    assert await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0.005)  # its read
    order.took("morpho", 0.001)
    order.done("morpho", 10)
    assert order.weight("morpho") < 0.05
    order.due("morpho", 11)
    order.running("morpho")
    order.running("aave")
    assert order.lightest_first("aave") == ["morpho"]
