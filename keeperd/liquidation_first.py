"""Liquidation paths first: the order in which the protocols' work for a block takes the
event loop (issue #31 item 4).

Every protocol runs on the one event loop, and a step that computes (decoding a large book,
evaluating it, publishing its metrics, the alert engine, the cascade monitor's description of
the book) holds the loop: another protocol's liquidation waits behind it, however short its
own work. A scanner's work for a block is in two parts:

- its liquidation path: reading the book, evaluating it, the price watch and the executor
  (which sends);
- its after-work: the metrics and the plug-in's publish hook, the alerts, the cascade monitor.

Two rules order them across the daemon's scanners:

1. after-work waits until no light liquidation path (another protocol's) is running;
2. a heavy path waits, before it starts reading, until no light path is in flight (running,
   or due: its block has reached the scanner, whose task has not started it yet). Heavy: its
   recent paths held the loop HEAVY_S or more (the median of the last HISTORY), counted step
   by step (`LoopTime`: the time its own task ran, not the time others ran while it waited
   for an answer). Perp Curie encodes, decodes and evaluates every trader at every block in
   Python; Aave's and Morpho's books on the devnet take a few milliseconds.

Light paths never wait: between themselves they run as before. Every wait is bounded
(WAIT_LIMIT_S): a path stuck on a slow endpoint delays the rest by that much at most, never
stops it. A path is due from the moment its block reaches the scanner (`due`, before the
scanner's task runs), running from its start (`running`) until its executor has finished
(`done`). After-work waits for running paths only: a due path may belong to a scanner busy
with its own after-work of the block before, and two scanners' after-work each waiting for
the other's next path would wait for each other.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# A path that holds the loop this long is heavy: it runs after the light ones.
HEAVY_S = 0.05
# The longest any work waits for the light paths in flight.
WAIT_LIMIT_S = 2.0
# Runs kept per scanner to judge its weight (their median: one slow run is no weight).
HISTORY = 5


class LoopTime(Generic[T]):
    """Awaits a coroutine and adds up how long its steps held the event loop: each resumption
    of the coroutine by its task is timed, the waits between them are not (another task ran,
    or the loop waited for the network)."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.held_s = 0.0

    def __await__(self) -> Generator[Any, Any, T]:
        steps = self.coro.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            started = time.perf_counter()
            try:
                yielded = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as end:
                return end.value
            finally:
                self.held_s += time.perf_counter() - started
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:  # (cancellation included): thrown into the coroutine
                value, error = None, exc


class LiquidationFirst:
    def __init__(self, heavy_s: float = HEAVY_S, wait_limit_s: float = WAIT_LIMIT_S,
                 history: int = HISTORY) -> None:
        self.heavy_s = heavy_s
        self.wait_limit_s = wait_limit_s
        self.history = history
        self._in_flight: dict[str, int] = {}  # scanner -> the newest block its path is due for
        self._running: set[str] = set()  # scanners whose path has started
        self._runs: dict[str, deque[float]] = {}
        self._changed = asyncio.Event()

    # --- what the scanners tell -------------------------------------------------------------

    def due(self, name: str, block: int) -> None:
        """A block reached the scanner: its path is in flight until `done`."""
        self._in_flight[name] = max(block, self._in_flight.get(name, block))

    def running(self, name: str) -> None:
        """The scanner's path started."""
        self._running.add(name)

    def done(self, name: str, block: int | None) -> None:
        """The scanner's path for `block` ended (sent, or failed): unless a newer block is
        already due for it, it has none in flight. None: whatever is due (a stopping
        scanner)."""
        self._running.discard(name)
        due = self._in_flight.get(name)
        if due is not None and (block is None or due <= block):
            del self._in_flight[name]
        self._changed.set()
        self._changed = asyncio.Event()

    def took(self, name: str, seconds: float) -> None:
        """How long one path of the scanner held the loop (`LoopTime`)."""
        self._runs.setdefault(name, deque(maxlen=self.history)).append(seconds)

    # --- what they wait for -----------------------------------------------------------------

    def heavy(self, name: str) -> bool:
        runs = self._runs.get(name)
        return runs is not None and len(runs) > 0 and statistics.median(runs) >= self.heavy_s

    def light_in_flight(self, name: str) -> list[str]:
        """The other scanners' light paths due or running."""
        return sorted(n for n in self._in_flight.keys() | self._running
                      if n != name and not self.heavy(n))

    def light_running(self, name: str) -> list[str]:
        """The other scanners' light paths running."""
        return sorted(n for n in self._running if n != name and not self.heavy(n))

    async def before_path(self, name: str) -> bool:
        """A heavy path waits for the light ones; a light one goes at once. False: the wait
        reached its limit."""
        if not self.heavy(name):
            return True
        return await self._until(lambda: not self.light_in_flight(name))

    async def before_after_work(self, name: str) -> bool:
        """After-work (metrics, alerts, the cascade) waits for the light paths running."""
        return await self._until(lambda: not self.light_running(name))

    async def _until(self, ready: Callable[[], bool]) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_limit_s
        while not ready():
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return ready()
        return True
