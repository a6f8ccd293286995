"""The reads of a block, asked in one round trip when its head arrives (#31 item 3).

Between a new head and a liquidation's broadcast, keeperd reads the chain in steps that each
wait for the one before (the index's logs, the market, the book, the price watch's feeds, the
keeper's balances, the header's base fee). Against a remote provider each step is a round
trip. Most of these reads are the same calls every block, only the block number changes. So
the pool remembers the reads it was asked *at the head's block* (or, for eth_getLogs, a range
ending at it) and, when the next head arrives, asks all of them again at the new block in one
JSON-RPC batch — `batch_at`, so only an endpoint that has the block answers, its header beside
them. The steps then find their answers waiting (or in flight) instead of asking; a read that
is new this block (an account touched in it) goes to the node as before.

Nothing is believed that would not have been: the answer is the node's to the very call the
code makes, at the very block number; only when it was asked changes. The cache holds one
block's answers and is emptied on every new head and every reorg. Answers that are errors are
not kept (the caller asks again and sees the error itself).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Where a block number sits in a method's params: the index of a block tag, or "logs" for a
# filter's fromBlock/toBlock. Methods absent here are never remembered nor answered from the
# cache (sends, simulations at "latest", receipts, gas estimates).
_BLOCK_AT: dict[str, int | str] = {
    "eth_call": 1, "eth_getBalance": 1, "eth_getCode": 1, "eth_getTransactionCount": 1,
    "eth_getStorageAt": 2, "eth_getBlockByNumber": 0, "eth_getLogs": "logs"}
LOG_RANGE_BEHIND = 64  # an eth_getLogs range starting further back is a catch-up, not a step
MAX_PARAMS_CHARS = 32_000  # a bigger call (a full scan's chunk) is not asked ahead
MAX_CALLS = 128  # at most this many calls asked ahead per block
MAX_PARAMS_TOTAL = 512_000

Call = tuple[str, list[Any]]
Fetch = Callable[[int, list[Call]], Awaitable[tuple[dict[str, Any], list[Any]]]]


def _number(tag: Any) -> int | None:
    if isinstance(tag, str) and tag.startswith("0x"):
        try:
            return int(tag, 16)
        except ValueError:
            return None
    return None


def shape(method: str, params: Sequence[Any], head: int) -> Call | None:
    """The call with its block numbers as offsets from `head` (pure): None for a call that is
    not a read at (or, for logs, ending at) the head's block, or too big to ask ahead."""
    shaped = _shaped(method, params, head)
    return None if shaped is None else shaped[0]


def _shaped(method: str, params: Sequence[Any], head: int) -> tuple[Call, str] | None:
    """`shape`, and its key: the same call at every head has the same key, so a call is
    written as JSON once per ask (a block's reads are up to MAX_PARAMS_TOTAL of it, and
    writing each again at every step of the cache cost the loop ~1.5 ms a head with three
    protocols configured: bench/README.md, isolation.py)."""
    where = _BLOCK_AT.get(method)
    if where is None:
        return None
    p = list(params)
    if where == "logs":
        if len(p) != 1 or not isinstance(p[0], dict) or "blockHash" in p[0]:
            return None
        f = dict(p[0])
        start, end = _number(f.get("fromBlock")), _number(f.get("toBlock"))
        if start is None or end is None or end != head or start < head - LOG_RANGE_BEHIND:
            return None
        f["fromBlock"], f["toBlock"] = start - head, 0
        p = [f]
    else:
        assert isinstance(where, int)
        if len(p) <= where or _number(p[where]) != head:
            return None
        p[where] = 0
    if _rough_chars(p) > MAX_PARAMS_CHARS:
        return None
    text = json.dumps(p, sort_keys=True)
    if len(text) > MAX_PARAMS_CHARS:
        return None
    return (method, p), method + text


def _rough_chars(value: Any) -> int:
    """At least the size of `value` in JSON, without writing it (a full scan's chunk is
    megabytes of hex: serialising it only to find it too big would cost the scan)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(k)) + _rough_chars(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_rough_chars(v) for v in value)
    return 1


def at_block(call: Call, head: int) -> Call:
    """A remembered shape asked at `head` (pure): the inverse of `shape`."""
    method, params = call
    p = list(params)
    where = _BLOCK_AT[method]
    if where == "logs":
        f = dict(p[0])
        f["fromBlock"], f["toBlock"] = hex(head + f["fromBlock"]), hex(head + f["toBlock"])
        p[0] = f
    else:
        assert isinstance(where, int)
        p[where] = hex(head + p[where])
    return method, p


# The key of the block's header, which every batch asked ahead carries (its shape's).
_HEADER_KEY = "eth_getBlockByNumber" + json.dumps([0, False])


@dataclass
class _Generation:
    """One head's reads: asked ahead (the task), answered (results by call), and the calls
    the code made at this head (remembered for the next). Keyed by the call's shape
    (`_shaped`), the same at every head."""

    head: int
    head_hash: str | None
    answers: dict[str, Any] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    asked: dict[str, Call] = field(default_factory=dict)
    params_chars: int = 0
    in_flight: set[str] = field(default_factory=set)  # the keys the task asks


class HeadPrefetch:
    """One pool's prefetch: `head(number, hash)` on each new head, `forget()` on a reorg;
    the pool asks `answer(method, params)` before it sends (which also remembers the call for
    the next head)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._current: _Generation | None = None
        self.hits = 0
        self.misses = 0

    def head(self, number: int, block_hash: str | None = None) -> None:
        """A new head: what the last head's reads were, asked at this one, in one batch (a
        task: the caller goes on at once; the code's first reads wait for it)."""
        last = self._current
        if last is not None and last.head == number and last.head_hash == block_hash:
            return
        if last is not None and last.task is not None and not last.task.done():
            last.task.cancel()
        generation = _Generation(number, block_hash)
        self._current = generation
        if last is None or not last.asked or number <= last.head:
            return
        keys = list(last.asked)
        calls = [at_block(c, number) for c in last.asked.values()]
        generation.in_flight = {*keys, _HEADER_KEY}
        generation.task = asyncio.get_running_loop().create_task(
            self._ask(generation, keys, calls))

    def forget(self) -> None:
        """A reorg: the block numbers asked may name other blocks now."""
        if self._current is not None and self._current.task is not None:
            self._current.task.cancel()
        self._current = None

    async def _ask(self, generation: _Generation, keys: list[str], calls: list[Call]
                   ) -> None:
        try:
            header, results = await self._fetch(generation.head, calls)
        except asyncio.CancelledError:
            raise
        except Exception:  # (the code asks for itself, and sees the error there)
            return
        if generation.head_hash is not None and header.get("hash") != generation.head_hash:
            return  # the endpoint's block of that number is another one
        generation.answers[_HEADER_KEY] = header
        for key, result in zip(keys, results, strict=True):
            if not isinstance(result, Exception) and result is not None:
                generation.answers[key] = result

    async def answer(self, method: str, params: Sequence[Any]) -> tuple[bool, Any]:
        """(True, the answer) when this call was asked ahead for the current head (waiting
        for the batch in flight); (False, None) otherwise. Either way it is remembered."""
        generation = self._current
        if generation is None or method not in _BLOCK_AT:
            return False, None
        shaped = _shaped(method, params, generation.head)
        if shaped is None:
            return False, None  # (never asked ahead: a read elsewhere than the head, too big)
        call, key = shaped
        self._remember(generation, call, key)
        if key not in generation.answers and key in generation.in_flight \
                and generation.task is not None and not generation.task.done():
            task = generation.task
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise  # (the caller's own cancellation; a new head cancels the task)
        if generation is self._current and key in generation.answers:
            self.hits += 1
            return True, generation.answers[key]
        self.misses += 1
        return False, None

    @staticmethod
    def _remember(generation: _Generation, call: Call, key: str) -> None:
        if key in generation.asked or len(generation.asked) >= MAX_CALLS:
            return
        chars = len(key) - len(call[0])
        if generation.params_chars + chars > MAX_PARAMS_TOTAL:
            return
        generation.asked[key] = call
        generation.params_chars += chars
