"""Answers judged by what they must be, against a real RpcPool on loopback: one that is not
is the answering endpoint's bad response — counted against it, failed over where the pool
may fail over — never an exception in the caller."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from keeperd.chain.rpc import Endpoint, RpcPool, RpcPoolSettings, RpcUnavailable, quantity_at_most
from keeperd.metrics import Metrics
from tests.conftest import metric_value, serve

FAST = RpcPoolSettings(timeout=2.0, max_attempts=4, backoff_base=0.01, backoff_max=0.02,
                       bench_after=2, bench_min_seconds=30)
Answer = Callable[[str, list[Any]], Any]


def node(answer: Answer) -> web.Application:
    """A JSON-RPC endpoint (single calls and batches) whose results `answer` gives."""
    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        calls = body if isinstance(body, list) else [body]
        out = [{"jsonrpc": "2.0", "id": c["id"], "result": answer(c["method"], c["params"])}
               for c in calls]
        return web.json_response(out if isinstance(body, list) else out[0],
                                 dumps=json.dumps)

    app = web.Application()
    app.router.add_post("/", handler)
    return app


@pytest.fixture
async def urls() -> AsyncIterator[Callable[..., Any]]:
    """Serve nodes on loopback: `await urls(liar, honest)` gives their URLs."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        async def start(*answers: Answer) -> list[str]:
            return [await stack.enter_async_context(serve(node(a))) for a in answers]
        yield start


def bad(metrics: Metrics, endpoint: str, method: str) -> float:
    return metric_value(metrics, "keeperd_rpc_requests_total", {
        "chain": "t", "endpoint": endpoint, "method": method, "outcome": "bad_response"})


async def test_a_count_past_its_bound_is_the_endpoints_bad_response(urls: Any) -> None:
    [liar, honest] = await urls(lambda m, p: hex(2**64 - 1), lambda m, p: "0x5")
    metrics = Metrics()
    async with RpcPool("t", [Endpoint("liar", liar, None), Endpoint("honest", honest, None)],
                       settings=FAST, metrics=metrics) as pool:
        shape = quantity_at_most(5 + 1024)
        with pytest.raises(RpcUnavailable, match="past 1029"):
            await pool.call_endpoint(pool.endpoints[0], "eth_getTransactionCount",
                                     ["0x" + "11" * 20, "0x1"], shape=shape)
        assert await pool.call_endpoint(pool.endpoints[1], "eth_getTransactionCount",
                                        ["0x" + "11" * 20, "0x1"], shape=shape) == "0x5"
    assert bad(metrics, "liar", "eth_getTransactionCount") == 1
    assert pool.endpoints[0].health.consecutive_failures == 1
