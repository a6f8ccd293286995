"""Redirects are answers, never followed (#28 item 12): an RPC endpoint or an alert receiver
that answers 3xx must not carry the request — a provider key in the URL, a webhook's signature
and headers — to where it points (plain http, another origin)."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession, web

from keeperd.alerts.sinks import WebhookSink
from keeperd.chain.rpc import RpcPool, RpcUnavailable
from keeperd.config import WebhookSinkConfig
from tests.conftest import serve


def elsewhere() -> tuple[web.Application, list[str]]:
    """Where a redirect points: it answers like a healthy node, and notes every visit."""
    visits: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        visits.append(request.headers.get("X-Keeperd-Signature", "") or "rpc")
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": "0x1"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    return app, visits


def redirecting(to: str) -> web.Application:
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(to + "/moved")

    app = web.Application()
    app.router.add_post("/{tail:.*}", moved)
    return app


async def test_an_rpc_redirect_is_not_followed() -> None:
    target, visits = elsewhere()
    async with serve(target) as there, serve(redirecting(there)) as here, \
            RpcPool.from_urls("t", [here + "/v3/0123456789abcdef"]) as pool:
        with pytest.raises(RpcUnavailable):
            await pool.request("eth_chainId")
    assert visits == []


async def test_a_webhook_redirect_is_not_followed() -> None:
    target, visits = elsewhere()
    async with serve(target) as there, serve(redirecting(there)) as here:
        sink = WebhookSink(WebhookSinkConfig(kind="webhook", url=here + "/hook",
                                             secret="s" * 32))
        async with ClientSession() as session:
            delivery = await sink.send(session, [{"rule": "oracle", "status": "firing",
                                                  "severity": "critical", "kind": "state",
                                                  "labels": {}, "summary": "x"}], "key-1")
    assert visits == []
    assert not delivery.ok
