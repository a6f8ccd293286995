"""A JSON-RPC endpoint in front of a real node (anvil) that misbehaves on purpose: the faults
the fault suite (#17) puts between keeperd and the chain.

It understands JSON-RPC, single calls and batches, so a fault can be one method's: a node
refusing wide `eth_getLogs` ranges, a node *behind the head* (its view frozen some blocks back,
answering as real nodes do: `eth_blockNumber` its own head, blocks above it absent, logs
clamped to it without an error, state queries above it refused), a node of another network
(`chain_id`), a method that hangs, answers 429 or 5xx, resets the connection, or answers
something that is not JSON-RPC. Everything it
does not change goes to the node as it came.

    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy:
        proxy.lag = 3                          # three blocks behind the node
        proxy.faults["eth_call"] = Fault.status(503)
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


@dataclass(frozen=True)
class Fault:
    """What one method's calls meet instead of the node's answer. A fault on any item of a
    batch is the whole request's fate (as a proxy or load balancer in front of a node)."""

    kind: str
    value: Any = None

    @classmethod
    def status(cls, code: int) -> Fault:
        return cls("status", code)

    @classmethod
    def hang(cls) -> Fault:
        return cls("hang")

    @classmethod
    def reset(cls) -> Fault:
        return cls("reset")

    @classmethod
    def body(cls, raw: bytes) -> Fault:
        """This answer instead (malformed shapes: `b'{"jsonrpc": "2.0", "id": 1}'`, ...)."""
        return cls("body", raw)

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
        self.seen: collections.Counter[str] = collections.Counter()
        self.faulted: collections.Counter[str] = collections.Counter()
        self._session: aiohttp.ClientSession | None = None
        self._stack = contextlib.AsyncExitStack()
        self._closing = asyncio.Event()

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

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        calls = body if isinstance(body, list) else [body]
        delay = 0.0
        for call in calls:
            fault = self.faults.get(call.get("method", ""), self.faults.get("*"))
            if fault is None:
                continue
            self.faulted[call.get("method", "")] += 1
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
            if fault.kind == "delay":
                delay = max(delay, fault.value)
        await asyncio.sleep(delay)  # (once per request, a batch as a single call)
        head = await self._node_head() - self.lag if self.lag is not None else None
        answers = [await self._answer(call, head) for call in calls]
        for call in calls:
            fault = self.faults.get(call.get("method", ""), self.faults.get("*"))
            if fault is not None and fault.kind == "slow_answer":
                await asyncio.sleep(fault.value)
                break
        return web.json_response(answers if isinstance(body, list) else answers[0])

    async def _answer(self, call: dict[str, Any], head: int | None) -> dict[str, Any]:
        method, params = call.get("method", ""), list(call.get("params") or [])
        self.seen[method] += 1
        reply = {"jsonrpc": "2.0", "id": call.get("id")}
        if self.chain_id is not None and method == "eth_chainId":
            return {**reply, "result": hex(self.chain_id)}
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
        return await self._forward(call)

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

    async def _node_head(self) -> int:
        answer = await self._forward({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber",
                                      "params": []})
        return int(answer["result"], 16)


def _block(tag: Any, head: int) -> int:
    return head if tag in _TAGS else int(tag, 16)


@contextlib.asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url + "/"
