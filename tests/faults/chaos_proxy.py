"""A JSON-RPC endpoint in front of a real node (anvil) that misbehaves on purpose: the faults
the fault suite (#17) puts between keeperd and the chain.

It understands JSON-RPC, single calls and batches, so a fault can be one method's: a node
refusing wide `eth_getLogs` ranges, a node *behind the head* (its view frozen some blocks back,
answering as real nodes do: `eth_blockNumber` its own head, blocks above it absent, logs
clamped to it without an error, state queries above it refused), a node of another network
(`chain_id`), a node that lies about the head (`lie_ahead`: one far-future header now and
then), a node that dates its headers off (`header_time_shift`), a method that hangs,
answers 429 or 5xx, resets the connection, answers something that is not JSON-RPC or an
answer without end, or reaches the node and then loses its answer (a broadcast accepted, the
reply dropped). A fault can be limited to its first `times` calls.
Everything it does not change goes to the node as it came.

    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy:
        proxy.lag = 3                          # three blocks behind the node
        proxy.faults["eth_call"] = Fault.status(503)
        proxy.faults["eth_sendRawTransaction"] = Fault.drop_answer(times=1)
        pool = RpcPool.from_urls("devnet", [proxy.url, devnet.manifest["rpc_url"]])

`proxy.seen` counts the calls it answered, per method (batch items one by one);
`proxy.faulted` the calls it answered with a fault (a refusal, a lagging view's answer).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import serve

# The methods whose last parameter is a block (a tag or a number).
_AT_BLOCK = {"eth_call": 1, "eth_estimateGas": 1, "eth_getBalance": 1,
             "eth_getTransactionCount": 1, "eth_getCode": 1, "eth_getStorageAt": 2}
_TAGS = {"latest", "pending", "safe", "finalized"}
_HEADERS = {"eth_getBlockByNumber", "eth_getBlockByHash"}


@dataclass(frozen=True)
class Fault:
    """What one method's calls meet instead of the node's answer. A fault on any item of a
    batch is the whole request's fate (as a proxy or load balancer in front of a node)."""

    kind: str
    value: Any = None
    times: int | None = None  # only the first calls meet it; None: every call
    batches_only: bool = False  # only calls inside a JSON-RPC batch meet it

    @classmethod
    def status(cls, code: int, times: int | None = None) -> Fault:
        return cls("status", code, times)

    @classmethod
    def hang(cls, times: int | None = None) -> Fault:
        return cls("hang", None, times)

    @classmethod
    def reset(cls, times: int | None = None) -> Fault:
        """The connection reset before the node saw the request."""
        return cls("reset", None, times)

    @classmethod
    def drop_answer(cls, times: int | None = None) -> Fault:
        """The request reaches the node, which acts on it; then the connection resets before
        the answer (a timeout after the node accepted a broadcast)."""
        return cls("drop_answer", None, times)

    @classmethod
    def body(cls, raw: bytes, times: int | None = None) -> Fault:
        """This answer instead (malformed shapes: `b'{"jsonrpc": "2.0", "id": 1}'`, ...)."""
        return cls("body", raw, times)

    @classmethod
    def answer(cls, result: Any, times: int | None = None) -> Fault:
        """This result instead of the node's, in a well-formed reply (a node that has not got
        a receipt yet: `Fault.answer(None)` to eth_getTransactionReceipt)."""
        return cls("answer", result, times)

    @classmethod
    def endless(cls, times: int | None = None) -> Fault:
        """An answer that starts as JSON-RPC and never ends (streamed until the reader hangs
        up, or 512 MB whatever happens)."""
        return cls("endless", None, times)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """The request reaches the node this much later."""
        return cls("delay", seconds)

    @classmethod
    def slow_answer(cls, seconds: float) -> Fault:
        """The node answers at once; the answer arrives this much later (what it says may
        no longer be true by then: a reorg in between)."""
        return cls("slow_answer", seconds)


class ChaosProxy:
    def __init__(self, target: str) -> None:
        self.target = target
        self.url = ""
        self.faults: dict[str, Fault] = {}  # by method; "*": every method
        self.lag: int | None = None  # blocks behind the node, or None for a node at the head
        self.max_log_range: int | None = None  # eth_getLogs over more blocks: refused
        self.chain_id: int | None = None  # answers eth_chainId so: a node of another network
        # A node that lies about the head: every `lie_every`-th head it is asked for
        # (eth_blockNumber, eth_getBlockByNumber "latest") is this many blocks ahead of the
        # node's, a header with a made-up hash and parent.
        self.lie_ahead: int | None = None
        self.lie_every = 3
        self.lies_told = 0
        # A node that lies about one contract call: eth_call whose calldata starts with a key
        # (a selector, say) gets its value as the answer (an address it wants approved).
        self.call_lies: dict[str, str] = {}
        # A node that answers eth_call from an older block's state while its head is current
        # (a stale replica behind a load balancer, or a liar hiding a feed's age).
        self.calls_at: int | None = None
        # Only eth_calls asked at a block number are answered from this block's state ("latest"
        # goes on): what a node sees of a plan's older block, before what was mined since.
        self.numbered_calls_at: int | None = None
        # Every header it serves (eth_getBlockByNumber, eth_getBlockByHash) dated this many
        # seconds off, its number and hash the real block's: a node whose clock-bound
        # answers lie while everything a block is checked by holds (negative: earlier).
        self.header_time_shift: int | None = None
        # eth_call's third parameter, a state override (keeperd's scan reader rides on it):
        # "honour" it as the node does, "refuse" the call as nodes without the feature do
        # ("too many arguments"), or "ignore" it (forward the call without it).
        self.state_overrides = "honour"
        self.streamed: list[int] = []  # bytes written of each endless answer
        self.seen: collections.Counter[str] = collections.Counter()
        self.faulted: collections.Counter[str] = collections.Counter()
        self._session: aiohttp.ClientSession | None = None
        self._stack = contextlib.AsyncExitStack()
        self._closing = asyncio.Event()
        self._used: collections.Counter[str] = collections.Counter()
        self._heads_asked = 0

    async def __aenter__(self) -> ChaosProxy:
        self._session = await self._stack.enter_async_context(aiohttp.ClientSession())
        app = web.Application()
        app.router.add_post("/", self._handle)
        self.url = await self._stack.enter_async_context(_served(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        await self._stack.aclose()

    # --- the request ------------------------------------------------------------------------

    def _fault(self, method: str, in_batch: bool) -> Fault | None:
        key = method if method in self.faults else "*"
        fault = self.faults.get(key)
        if fault is None or (fault.batches_only and not in_batch):
            return None
        if fault.times is not None and self._used[key] >= fault.times:
            return None
        return fault

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        calls = body if isinstance(body, list) else [body]
        delay = slow = 0.0
        drop_answer = False
        answered: dict[int, Any] = {}  # call index -> the result it gets instead
        for i, call in enumerate(calls):
            method = call.get("method", "")
            fault = self._fault(method, isinstance(body, list))
            if fault is None:
                continue
            self._used[method if method in self.faults else "*"] += 1
            self.faulted[method] += 1
            if fault.kind == "status":
                return web.Response(status=fault.value, text="chaos")
            if fault.kind == "hang":  # (until the proxy closes: then the connection drops)
                await self._closing.wait()
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            if fault.kind == "reset":
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            if fault.kind == "body":
                return web.Response(body=fault.value, content_type="application/json")
            if fault.kind == "endless":
                return await self._endless(request)
            if fault.kind == "delay":
                delay = max(delay, fault.value)
            if fault.kind == "drop_answer":
                drop_answer = True
            if fault.kind == "slow_answer":
                slow = max(slow, fault.value)
            if fault.kind == "answer":
                answered[i] = fault.value
        await asyncio.sleep(delay)  # (once per request, a batch as a single call)
        head = await self._node_head() - self.lag if self.lag is not None else None
        answers = [{"jsonrpc": "2.0", "id": call.get("id"), "result": answered[i]}
                   if i in answered else await self._answer(call, head)
                   for i, call in enumerate(calls)]
        if drop_answer:  # the node has acted on it; its answer is lost on the way
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        await asyncio.sleep(slow)
        return web.json_response(answers if isinstance(body, list) else answers[0])

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        chunk = b'{"jsonrpc": "2.0", "id": 0, "result": "0x' + b"0" * 65536
        self.streamed.append(0)
        with contextlib.suppress(ConnectionError, RuntimeError):  # the reader hung up
            while self.streamed[-1] < 512 * 2**20 and not self._closing.is_set():
                await resp.write(chunk)
                self.streamed[-1] += len(chunk)
        return resp

    async def _answer(self, call: dict[str, Any], head: int | None) -> dict[str, Any]:
        method, params = call.get("method", ""), list(call.get("params") or [])
        self.seen[method] += 1
        reply = {"jsonrpc": "2.0", "id": call.get("id")}
        if self.chain_id is not None and method == "eth_chainId":
            return {**reply, "result": hex(self.chain_id)}
        if method == "eth_call" and params and isinstance(params[0], dict):
            data = str(params[0].get("data") or params[0].get("input") or "").lower()
            for prefix, result in self.call_lies.items():
                if data.startswith(prefix.lower()):
                    self.faulted[method] += 1
                    return {**reply, "result": result}
        if method == "eth_call" and self.calls_at is not None and len(params) > 1:
            self.faulted[method] += 1
            params[1] = hex(self.calls_at)
            call = {**call, "params": params}
        if method == "eth_call" and self.numbered_calls_at is not None and len(params) > 1 \
                and isinstance(params[1], str) and params[1].startswith("0x"):
            self.faulted[method] += 1
            params[1] = hex(self.numbered_calls_at)
            call = {**call, "params": params}
        if method == "eth_call" and len(params) > 2 and self.state_overrides != "honour":
            self.faulted[method] += 1
            if self.state_overrides == "refuse":
                return {**reply, "error": {"code": -32602,
                                           "message": "too many arguments, want at most 2"}}
            call = {**call, "params": params[:2]}
        if self.lie_ahead is not None and _asks_head(method, params):
            self._heads_asked += 1
            if self._heads_asked % self.lie_every == 0:
                self.lies_told += 1
                self.faulted[method] += 1
                return {**reply, "result": await self._lie(method)}
        if method == "eth_getLogs" and self.max_log_range is not None:
            f = params[0]
            if "blockHash" not in f and (int(f["toBlock"], 16) - int(f["fromBlock"], 16) + 1
                                         > self.max_log_range):
                self.faulted[method] += 1
                return {**reply, "error": {"code": -32005,
                                           "message": "query returned more than 10000 results"}}
        if head is not None:
            lagging = self._behind(method, params, head)
            if lagging is not None:
                self.faulted[method] += 1
                return {**reply, **lagging}
            # (the call as the lagging node sees it: its ranges clamped, "latest" its head —
            # `params` is this method's copy, rewritten in place)
            call = {**call, "params": params}
        answer = await self._forward(call)
        if self.header_time_shift is not None and method in _HEADERS \
                and isinstance(answer.get("result"), dict):
            self.faulted[method] += 1
            header = dict(answer["result"])
            header["timestamp"] = hex(int(header["timestamp"], 16) + self.header_time_shift)
            answer = {**answer, "result": header}
        return answer

    def _behind(self, method: str, params: list[Any], head: int) -> dict[str, Any] | None:
        """A node whose head is `head`: rewrite the call to its view (params changed in place)
        or answer it here; None to forward."""
        if method == "eth_blockNumber":
            return {"result": hex(head)}
        if method == "eth_getBlockByNumber":
            number = _block(params[0], head)
            if number > head:
                return {"result": None}
            params[0] = hex(number)
        elif method == "eth_getLogs":
            f = dict(params[0])
            if "blockHash" not in f:  # (clamped to its head without a word: geth, erigon)
                start = _block(f.get("fromBlock", "latest"), head)
                end = min(_block(f.get("toBlock", "latest"), head), head)
                if start > end:
                    return {"result": []}
                f["fromBlock"], f["toBlock"] = hex(start), hex(end)
                params[0] = f
        elif method in _AT_BLOCK:
            at = _AT_BLOCK[method]
            number = _block(params[at] if len(params) > at else "latest", head)
            if number > head:
                return {"error": {"code": -32000, "message": "header not found"}}
            params[at:] = [hex(number)]
        return None

    async def _forward(self, call: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.post(self.target, json=call) as resp:
            answer: dict[str, Any] = await resp.json(content_type=None)
        return answer

    async def _lie(self, method: str) -> Any:
        """A head `lie_ahead` blocks past the node's: the node's latest header renumbered, with
        a hash and a parent no real block has."""
        assert self.lie_ahead is not None
        latest = (await self._forward({"jsonrpc": "2.0", "id": 0, "method":
                                       "eth_getBlockByNumber", "params": ["latest", False]}))
        header = dict(latest["result"])
        number = int(header["number"], 16) + self.lie_ahead
        if method == "eth_blockNumber":
            return hex(number)
        made_up = f"{self.lies_told:064x}"
        header.update(number=hex(number), hash="0x" + "ab" * 16 + made_up[-32:],
                      parentHash="0x" + "cd" * 16 + made_up[-32:], transactions=[])
        return header

    async def _node_head(self) -> int:
        answer = await self._forward({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber",
                                      "params": []})
        return int(answer["result"], 16)


def _asks_head(method: str, params: list[Any]) -> bool:
    return method == "eth_blockNumber" or (
        method == "eth_getBlockByNumber" and bool(params) and params[0] == "latest")


def _block(tag: Any, head: int) -> int:
    return head if tag in _TAGS else int(tag, 16)


@contextlib.asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url + "/"
