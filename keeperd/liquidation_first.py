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

1. a path waits, before it starts reading, for the paths in flight that are much lighter
   than its own: those whose recent runs weighed at most 1/LIGHTER of what its own do (and
   its own at least MIN_WAIT_S: below that nothing is worth ordering). A run weighs the
   longer of the loop it held (`LoopTime`: the time its own task ran, counted step by step)
   and its time in flight, from its start to its executor's end: the loop's time and the
   node's, answering its reads. A heavy path loads both: Perp Curie asks some 2,000 views of
   the node every block for 200 traders (0.4-0.6 s in flight on the project's machine, 40-90
   ms of loop since its calldata is encoded once), and a node executing them answers the
   other protocols' reads that much later. Counting the loop alone, Curie looked no longer
   four times Aave's weight and ran beside it (bench/isolation.py). The weight of a path is
   the lightest of its last HISTORY runs: what it costs when nothing competes with it. Paths
   side by side stretch each other's time in flight (at a daemon's start every path waits
   for the node behind the others: Aave's 0.8 s as long as Curie's), and a slow run says
   more about the others than about the path; its lightest run does not (nor its waits
   before its read: rules 2 and 3). The order is scale-free: on a faster machine or node all
   weights shrink together;
2. once its discovery is done, a path waits, before it reads, for the running paths
   lighter than its own (weighed ones: strictly less, times LIGHTER_FIRST), however light
   its own: the lightest first. Side by side, a heavier path's reads and evaluation share
   the node and the loop with the lighter one's, and neither is as fast as alone (Aave's
   ~30 ms and Morpho's ~12 ms on the devnet: Morpho's first liquidation 1.5x later than
   alone, bench/isolation.py); but first
2a. a path that knows, before its read, that a position of its own is under water at the
   block's prices (its plug-in's `outlook`: "under") reads before the running paths that do
   not know it, whatever their weights: they wait for its whole path. Weights are learnt on
   ordinary blocks, and on those Aave's path and Morpho's weigh alike (8-10 ms each on the
   devnet): in a crash of Morpho's, Aave came out lighter by a hair in 16 of 78 rounds and
   Morpho waited 7-16 ms for Aave's whole path, which liquidated nothing. So that the order
   does not hang on which path's discovery the loop handled first, a path that cannot tell
   waits, before its read, for the running paths within LIGHTER of its weight to tell
   theirs (their discovery, answered from the same batch: a millisecond or two); and
3. a path that knows its block changed nothing it rests on but time (no touched account,
   its plug-in's `outlook`: "quiet", no market state, no price of its own moved) is waited
   for by no running path (rules 2 and 2a pass over it), and itself waits, before it reads,
   until no other protocol's path that is not quiet is running: its read and evaluation
   follow the others' broadcasts. A heavy path waits for it still (rule 1): its read beside
   Curie's would be slowed by the node's load, and weigh as much;
4. after-work waits until no other protocol's path is running.

Every wait is bounded (WAIT_LIMIT_S): a path stuck on a slow endpoint delays the rest by that
much at most, never stops it. A path is due from the moment its block reaches the scanner
(`due`, before the scanner's task runs: a heavy scanner's task may run first), running from
its start (`running`) until its executor has finished (`done`). No wait can be circular: a
path not yet running waits only for strictly lighter ones (rule 1); a running one only for
running ones, by a strict order once they have told their outlook (under, then the others
by weight, then the quiet ones: rules 2, 2a, 3), and for one that has not told only until it
does (its discovery waits for no one): no running path waits for one not yet running, nor
for a quiet one. After-work
waits for running paths only, not for due ones (a due path may belong to a scanner busy with
its own after-work of the block before).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# A path waits for those in flight that hold the loop at most 1/LIGHTER of its own time...
LIGHTER = 4.0
# ...when its own is at least this long.
MIN_WAIT_S = 0.02
# Rule 2: a path reads after those in flight at most 1/LIGHTER_FIRST of its weight.
LIGHTER_FIRST = 1.0
# What a running path told of its block before its read (`before_read`), in the order they
# read: under water first, then the others (by weight), the quiet ones last.
UNDER, MOVED, QUIET = "under", "moved", "quiet"
_RANK = {UNDER: 0, MOVED: 1, QUIET: 2}
# The longest any work waits for the light paths in flight.
WAIT_LIMIT_S = 2.0
# Runs kept per scanner to judge its weight (the lightest: slow runs are no weight).
HISTORY = 5


class LoopTime(Generic[T]):
    """Awaits a coroutine and adds up how long it held the event loop: each resumption of the
    coroutine by its task is timed, the waits between them are not (another task ran, or the
    loop waited for the network). Tasks it starts (a multicall's chunks, gathered) are counted
    too where the loop has `count_child_tasks` as its task factory (the daemon installs it)."""

    def __init__(self, coro: Coroutine[Any, Any, T],
                 on_step: Callable[[float], None] | None = None) -> None:
        self.coro = coro
        self.held_s = 0.0
        self.on_step = on_step  # told each step's time as it ends (LiquidationFirst.held)

    def __await__(self) -> Generator[Any, Any, T]:
        token = _counting.set(self)
        try:
            return (yield from _timed(self.coro, self))
        finally:
            _counting.reset(token)


# The LoopTime of the path running in this context (tasks inherit their creator's context).
_counting: ContextVar[LoopTime[Any] | None] = ContextVar("keeperd_loop_time", default=None)


def _timed(coro: Coroutine[Any, Any, T], into: LoopTime[Any]) -> Generator[Any, Any, T]:
    steps = coro.__await__()
    value: Any = None
    error: BaseException | None = None
    while True:
        started = time.perf_counter()
        try:
            yielded = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as end:
            return end.value
        finally:
            step = time.perf_counter() - started
            into.held_s += step
            if into.on_step is not None:
                into.on_step(step)
        try:
            value, error = (yield yielded), None
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:  # (cancellation included): thrown into the coroutine
            value, error = None, exc


class _Counted:
    def __init__(self, coro: Coroutine[Any, Any, Any], into: LoopTime[Any]) -> None:
        self.coro, self.into = coro, into

    def __await__(self) -> Generator[Any, Any, Any]:
        return _timed(self.coro, self.into)


async def _counted(coro: Coroutine[Any, Any, T], into: LoopTime[Any]) -> T:
    result: T = await _Counted(coro, into)
    return result


TaskFactory = Callable[..., "asyncio.Future[Any]"]


def count_child_tasks(previous: TaskFactory | None = None) -> TaskFactory:
    """A task factory for the loop: a task started inside a path being timed (`LoopTime`) adds
    its steps to that path's time. `previous`: the factory the loop had, still used."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
                ) -> asyncio.Future[Any]:
        into = _counting.get()
        if into is not None and asyncio.iscoroutine(coro):
            coro = _counted(coro, into)
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    return factory


class LiquidationFirst:
    def __init__(self, lighter: float = LIGHTER, min_wait_s: float = MIN_WAIT_S,
                 wait_limit_s: float = WAIT_LIMIT_S, history: int = HISTORY,
                 lighter_first: float = LIGHTER_FIRST) -> None:
        self.lighter = lighter
        self.lighter_first = lighter_first
        self.min_wait_s = min_wait_s
        self.wait_limit_s = wait_limit_s
        self.history = history
        self._in_flight: dict[str, int] = {}  # scanner -> the newest block its path is due for
        self._running: set[str] = set()  # scanners whose path has started
        self._started: dict[str, float] = {}  # scanner -> when its running path started
        self._held: dict[str, float] = {}  # scanner -> the loop its running path held
        self._runs: dict[str, deque[float]] = {}
        self._changed = asyncio.Event()
        # The loop every path has held so far (each step told as it ends), and its value when
        # each running path started: a run's time in flight less what *other* paths held of
        # the loop meanwhile is its own (a light path beside a heavy one is not heavy).
        self._paths_held_s = 0.0
        self._held_at_start: dict[str, float] = {}
        # running paths' outlook, told before their read (UNDER, MOVED, QUIET); a running
        # path absent here is still discovering
        self._told: dict[str, str] = {}
        # scanner -> (seconds its running path waited before its read, loop held meanwhile):
        # neither is the path's own weight.
        self._waited: dict[str, tuple[float, float]] = {}

    # --- what the scanners tell -------------------------------------------------------------

    def due(self, name: str, block: int) -> None:
        """A block reached the scanner: its path is in flight until `done`."""
        self._in_flight[name] = max(block, self._in_flight.get(name, block))

    def running(self, name: str) -> None:
        """The scanner's path started."""
        self._running.add(name)
        self._told.pop(name, None)
        self._started[name] = time.perf_counter()
        self._held_at_start[name] = self._paths_held_s
        self._held.pop(name, None)
        self._waited.pop(name, None)

    def tell(self, name: str, outlook: str) -> None:
        """What the scanner's running path found of its block before its read: UNDER (a
        position of its own under water: rule 2a), QUIET (nothing of its own moved but
        time: rule 3), or MOVED (anything else, or it cannot tell)."""
        if outlook not in _RANK:
            raise ValueError(f"an outlook is one of {sorted(_RANK)}: {outlook!r}")
        self._told[name] = outlook
        self._wake()

    def held(self, seconds: float) -> None:
        """One step of a path held the loop this long (`LoopTime.on_step`)."""
        self._paths_held_s += seconds

    def done(self, name: str, block: int | None) -> None:
        """The scanner's path for `block` ended (sent, or failed): unless a newer block is
        already due for it, it has none in flight. None: whatever is due (a stopping
        scanner)."""
        self._running.discard(name)
        started = self._started.pop(name, None)
        at_start = self._held_at_start.pop(name, self._paths_held_s)
        self._told.pop(name, None)
        waited, held_waiting = self._waited.pop(name, (0.0, 0.0))
        if started is not None:
            # The run weighs its time in flight less what the other paths held of the loop
            # meanwhile (the node's time answering it counts; a neighbour's evaluation does
            # not) and less its wait before its read (rules 2 and 3), or the loop it held
            # itself if that is more.
            own = self._held.pop(name, 0.0)
            others = max(0.0, self._paths_held_s - at_start - own - held_waiting)
            self._record(name, max(time.perf_counter() - started - waited - others, own))
        due = self._in_flight.get(name)
        if due is not None and (block is None or due <= block):
            del self._in_flight[name]
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def took(self, name: str, seconds: float) -> None:
        """How long one path of the scanner held the loop (`LoopTime`). Told while the path
        is running, it is weighed with the path's time in flight at `done`; otherwise it is
        the run's weight."""
        if name in self._started:
            self._held[name] = seconds
        else:
            self._record(name, seconds)

    def _record(self, name: str, seconds: float) -> None:
        self._runs.setdefault(name, deque(maxlen=self.history)).append(seconds)

    # --- what they wait for -----------------------------------------------------------------

    def weight(self, name: str) -> float:
        """Seconds a path of the scanner weighs (0 until one has run)."""
        runs = self._runs.get(name)
        return min(runs) if runs else 0.0

    def lighter_in_flight(self, name: str) -> list[str]:
        """The other scanners' paths, due or running, much lighter than this one's."""
        own = self.weight(name)
        if own < self.min_wait_s:
            return []
        return sorted(n for n in self._in_flight.keys() | self._running
                      if n != name and self.weight(n) * self.lighter <= own)

    def read_after(self, name: str, outlook: str = MOVED) -> list[str]:
        """The other scanners' running paths this one reads after, its own outlook told:
        those that told a more urgent one (rules 2a and 3), the lighter ones of the same
        (rule 2: any margin; none not yet weighed; quiet ones wait for no one of theirs),
        and, until they tell theirs, those that may yet come first: any for a quiet path,
        the lighter ones for one under water, and for any other those within LIGHTER of
        its weight (rule 2a: which discovery the loop handled first must not decide)."""
        own, rank = self.weight(name), _RANK[outlook]
        after = []
        for n in self._running:
            if n == name:
                continue
            weight = self.weight(n)
            lighter = 0 < weight * self.lighter_first < own
            told = self._told.get(n)
            if told is not None:
                if _RANK[told] < rank or (_RANK[told] == rank and outlook != QUIET and lighter):
                    after.append(n)
            elif outlook == QUIET or lighter or (
                    outlook == MOVED and 0 < weight < own * self.lighter):
                after.append(n)
        return sorted(after)

    def lightest_first(self, name: str) -> list[str]:
        """Rule 2 alone: the other scanners' running paths, not quiet, lighter than this
        one's (any margin; none not yet weighed)."""
        own = self.weight(name)
        return sorted(n for n in self._running
                      if n != name and self._told.get(n) != QUIET
                      and 0 < self.weight(n) * self.lighter_first < own)

    def others_running(self, name: str) -> list[str]:
        return sorted(n for n in self._running if n != name)

    async def before_path(self, name: str) -> bool:
        """A path waits for the much lighter ones in flight. False: the wait reached its
        limit."""
        return await self._until(lambda: not self.lighter_in_flight(name))

    async def before_read(self, name: str, *, quiet: bool = False, under: bool = False
                          ) -> bool:
        """Between a path's discovery and its read: it tells its outlook (`under`: a position
        of its own under water at the block's prices; `quiet`: nothing of its own moved but
        time) and waits for the running paths it reads after (`read_after`: rules 2, 2a, 3).
        False: the wait reached its limit."""
        outlook = UNDER if under else QUIET if quiet else MOVED
        started, held = time.perf_counter(), self._paths_held_s
        try:
            self.tell(name, outlook)
            return await self._until(lambda: not self.read_after(name, outlook))
        finally:
            self._waited[name] = (time.perf_counter() - started, self._paths_held_s - held)

    async def before_after_work(self, name: str) -> bool:
        """After-work (metrics, alerts, the cascade) waits for the paths running."""
        return await self._until(lambda: not self.others_running(name))

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
