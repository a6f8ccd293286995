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
from tests.conftest import metric_absent, metric_value, serve

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


TX = "0x" + "ab" * 32
OTHER = "0x" + "cd" * 32


def receipt(tx_hash: str = TX, **fields: Any) -> dict[str, Any]:
    return {"transactionHash": tx_hash, "status": "0x1", "gasUsed": "0x5208",
            "blockHash": "0x" + "ee" * 32, "blockNumber": "0x10", "logs": [], **fields}


@pytest.mark.parametrize("lie", [
    {"status": "0x1"},  # (the fields keeperd reads missing)
    "0x1", [],  # (not an object)
    receipt(status="0xZ"), receipt(status=None), receipt(gasUsed="lots"),
    receipt(blockNumber=16), receipt(effectiveGasPrice="0xzz"), receipt(logs="0x"),
    receipt(OTHER),  # (another transaction's)
])
async def test_a_receipt_that_is_not_one_is_the_endpoints_bad_response(urls: Any,
                                                                      lie: Any) -> None:
    """(Receipts had no shape: `{"status": "0x1"}` raised KeyError in the watch at every
    block while a transaction was pending, the answer counted a success — an audit.) Asked
    alone, in a batch, or of that endpoint by name: failed over, or no answer, and counted."""
    [liar, honest] = await urls(lambda m, p: lie, lambda m, p: receipt(p[0]))
    metrics = Metrics()
    async with RpcPool("t", [Endpoint("liar", liar, None), Endpoint("honest", honest, None)],
                       settings=FAST, metrics=metrics) as pool:
        assert await pool.request("eth_getTransactionReceipt", [TX]) == receipt()
        pool.endpoints[0].health = type(pool.endpoints[0].health)()  # (first again)
        assert await pool.batch([("eth_getTransactionReceipt", [TX])]) == [receipt()]
        with pytest.raises(RpcUnavailable):
            await pool.batch_on(pool.endpoints[0], [("eth_getTransactionReceipt", [TX])])
    assert bad(metrics, "liar", "eth_getTransactionReceipt") == 1
    assert bad(metrics, "liar", "batch") == 2


@pytest.mark.parametrize("answer", [None, receipt(), receipt(status="0x0", l1Fee="0x1",
                                                                effectiveGasPrice="0x3")])
async def test_a_receipt_or_none_is_an_answer(urls: Any, answer: Any) -> None:
    [only] = await urls(lambda m, p: answer)
    metrics = Metrics()
    async with RpcPool("t", [Endpoint("only", only, None)], settings=FAST,
                       metrics=metrics) as pool:
        assert await pool.request("eth_getTransactionReceipt", [TX]) == answer
        assert await pool.batch([("eth_getTransactionReceipt", [TX.upper().replace("0X", "0x")])
                                 ]) == [answer]
    assert metric_absent(metrics, "keeperd_rpc_requests_total", {
        "chain": "t", "endpoint": "only", "method": "eth_getTransactionReceipt",
        "outcome": "bad_response"})
