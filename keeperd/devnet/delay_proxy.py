"""A JSON-RPC proxy in front of a devnet node that adds a fixed delay to every request keeperd
sends (each HTTP request, each websocket message), as a remote provider would — and records
when each request arrived and was answered, so the round trips between a new head and a
broadcast can be counted rather than inferred from timing (bench/latency.py, and the test
that holds the count: tests/integration/test_round_trips.py).

    async with DelayProxy(rpc_url, ws_url, delay_s=0.05) as proxy:
        ... point keeperd at proxy.http_url / proxy.ws_url ...
        proxy.round_trips_to_send(block)   # sequential requests from block's head to a send

The delay is one way (before the request is forwarded); answers and the node's websocket
pushes (new heads) pass at once. Loopback only: a bench and test tool, never in the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web


@dataclass(frozen=True)
class Seen:
    """One HTTP request through the proxy: its JSON-RPC methods, when it reached the proxy
    and when its answer left (perf_counter seconds)."""

    methods: tuple[str, ...]
    arrived: float
    answered: float


@dataclass(frozen=True)
class Head:
    """A newHeads notification the proxy passed to keeperd, and when."""

    number: int
    at: float


def sequential_depth(requests: list[Seen], start: float, target: Seen) -> int:
    """The longest chain of requests, each sent after the one before it was answered, from
    `start` (a head's push) to `target` included (pure): the round trips on that path. A
    request that overlaps another is not a step of its own — it rode beside it."""
    window = sorted((r for r in requests if r.arrived >= start and r.arrived <= target.arrived),
                    key=lambda r: r.arrived)
    depth: dict[int, int] = {}
    for i, r in enumerate(window):
        before = [depth[j] for j, q in enumerate(window[:i]) if q.answered <= r.arrived]
        depth[i] = 1 + max(before, default=0)
    index = next(i for i, r in enumerate(window) if r is target)
    return depth[index]


class DelayProxy:
    def __init__(self, http_target: str, ws_target: str | None = None, *,
                 delay_s: float = 0.05) -> None:
        self.http_target = http_target
        self.ws_target = ws_target
        self.delay_s = delay_s
        self.requests: list[Seen] = []
        self.heads: list[Head] = []
        self.http_url = ""
        self.ws_url = ""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    async def __aenter__(self) -> DelayProxy:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("GET", "/", self._websocket)
        app.router.add_route("POST", "/", self._http)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.http_url = f"http://127.0.0.1:{port}/"
        self.ws_url = f"ws://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):  # (else the server waits for them to end)
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- what was seen ------------------------------------------------------------------

    def head_at(self, block: int) -> float | None:
        return next((h.at for h in self.heads if h.number == block), None)

    def first_send_after(self, start: float) -> Seen | None:
        """The first broadcast after `start` and before the next head (a block that revealed
        nothing to send has none: the next block's is not its)."""
        end = min((h.at for h in self.heads if h.at > start), default=float("inf"))
        return next((r for r in sorted(self.requests, key=lambda r: r.arrived)
                     if start <= r.arrived < end and "eth_sendRawTransaction" in r.methods),
                    None)

    def round_trips_to_send(self, block: int) -> int | None:
        """Sequential round trips from block's head reaching keeperd to the first broadcast
        after it (the send included); None when either is missing."""
        start = self.head_at(block)
        if start is None:
            return None
        send = self.first_send_after(start)
        return None if send is None else sequential_depth(self.requests, start, send)

    def path_to_send(self, block: int) -> list[tuple[float, float, tuple[str, ...]]]:
        """The requests between block's head and its first broadcast, as (ms after the head
        they arrived, ms they took, methods): what a failed count prints."""
        start = self.head_at(block)
        send = self.first_send_after(start) if start is not None else None
        if start is None or send is None:
            return []
        return [(round((r.arrived - start) * 1000, 1), round((r.answered - r.arrived) * 1000, 1),
                 r.methods) for r in sorted(self.requests, key=lambda r: r.arrived)
                if start <= r.arrived <= send.arrived]

    # --- serving ------------------------------------------------------------------------

    async def _http(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body = await request.read()
        await asyncio.sleep(self.delay_s)
        assert self._session is not None
        async with self._session.post(self.http_target, data=body,
                                      headers={"Content-Type": "application/json"}) as resp:
            answer = await resp.read()
            status = resp.status
        self.requests.append(Seen(_methods(body), arrived, time.perf_counter()))
        return web.Response(body=answer, status=status, content_type="application/json")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        assert self._session is not None and self.ws_target is not None
        client = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await client.prepare(request)
        self._sockets.add(client)
        async with self._session.ws_connect(self.ws_target, max_msg_size=0) as node:
            async def upstream() -> None:
                async for msg in client:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    await asyncio.sleep(self.delay_s)
                    await node.send_str(msg.data)

            async def downstream() -> None:
                async for msg in node:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    self._note_head(msg.data)
                    await client.send_str(msg.data)

            tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task
        self._sockets.discard(client)
        await client.close()
        return client

    def _note_head(self, text: str) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            message = json.loads(text)
            if message.get("method") == "eth_subscription":
                number = message["params"]["result"].get("number")
                if isinstance(number, str):
                    self.heads.append(Head(int(number, 16), time.perf_counter()))


def _methods(body: bytes) -> tuple[str, ...]:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return ()
    items = parsed if isinstance(parsed, list) else [parsed]
    return tuple(str(item.get("method")) for item in items if isinstance(item, dict))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
