"""A JSON-RPC proxy in front of a devnet node that adds a fixed delay to every request keeperd
sends (each HTTP request, each websocket message), as a remote provider would — and records
when each request arrived and was answered, so the round trips between a new head and a
broadcast can be counted rather than inferred from timing (bench/latency.py, and the test
that holds the count: tests/integration/test_round_trips.py).

    async with DelayProxy(rpc_url, ws_url, delay_s=0.05) as proxy:
        ... point keeperd at proxy.http_url / proxy.ws_url ...
        proxy.round_trips_to_send(block)   # sequential requests from block's head to a send

`DelayProxyProcess` runs the same proxy in a process of its own (`python -m
keeperd.devnet.delay_proxy`), as a remote provider is: the bench uses it, so that forwarding
keeperd's requests takes none of keeperd's CPU (`await proxy.collect()` fetches what it saw).

The delay is one way (before the request is forwarded); answers and the node's websocket
pushes (new heads) pass at once. Loopback only: a bench and test tool, never in the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

RECORD_PATH = "/_delay_proxy/record"


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


class Seeing:
    """What a proxy saw (its requests and the heads it passed on), and the round trips
    counted from it."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.requests: list[Seen] = []
        self.heads: list[Head] = []
        self.http_url = ""
        self.ws_url = ""

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



class DelayProxy(Seeing):
    """The proxy, on the caller's event loop (a test's: its requests are seen as they
    happen). A bench runs it in its own process (`DelayProxyProcess`), as a remote provider
    would be: its forwarding then takes none of keeperd's CPU."""

    def __init__(self, http_target: str, ws_target: str | None = None, *,
                 delay_s: float = 0.05, port: int | None = None) -> None:
        super().__init__(delay_s)
        self.http_target = http_target
        self.ws_target = ws_target
        self.port = port
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    async def __aenter__(self) -> DelayProxy:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("GET", "/", self._websocket)
        app.router.add_route("POST", "/", self._http)
        app.router.add_route("GET", RECORD_PATH, self._record)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = self.port or _free_port()
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

    # --- serving ------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> web.Response:
        """What was seen so far, for the process that started this one."""
        return web.json_response({
            "requests": [[list(r.methods), r.arrived, r.answered] for r in self.requests],
            "heads": [[h.number, h.at] for h in self.heads]})

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


class DelayProxyProcess(Seeing):
    """The proxy in a process of its own (`python -m keeperd.devnet.delay_proxy`); what it saw
    is fetched with `collect` (its clock is the same monotonic clock as this process's)."""

    def __init__(self, http_target: str, ws_target: str | None = None, *,
                 delay_s: float = 0.05) -> None:
        super().__init__(delay_s)
        self.http_target = http_target
        self.ws_target = ws_target
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> DelayProxyProcess:
        port = _free_port()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "keeperd.devnet.delay_proxy", "--http-target",
            self.http_target, *(["--ws-target", self.ws_target] if self.ws_target else []),
            "--delay-ms", str(self.delay_s * 1000), "--port", str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 30)
        if not line:
            raise RuntimeError("the delay proxy's process ended before it served")
        ready = json.loads(line)
        self.http_url, self.ws_url = ready["http_url"], ready["ws_url"]
        return self

    async def collect(self) -> None:
        """Fetch what the proxy saw so far (round trips are counted from it)."""
        async with aiohttp.ClientSession() as session, session.get(
                self.http_url.rstrip("/") + RECORD_PATH) as resp:
            record = await resp.json()
        self.requests = [Seen(tuple(m), a, b) for m, a, b in record["requests"]]
        self.heads = [Head(n, at) for n, at in record["heads"]]

    async def __aexit__(self, *exc: object) -> None:
        if self._process is None:
            return
        if self._process.stdin is not None:
            self._process.stdin.close()  # (it ends when its input does)
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


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


async def _serve(args: argparse.Namespace) -> None:
    async with DelayProxy(args.http_target, args.ws_target, delay_s=args.delay_ms / 1000,
                          port=args.port) as proxy:
        print(json.dumps({"http_url": proxy.http_url, "ws_url": proxy.ws_url}), flush=True)
        # Until the parent closes our input (or dies).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)


def main() -> None:
    parser = argparse.ArgumentParser(description="a JSON-RPC proxy adding a delay to every "
                                                 "request (a bench's remote provider)")
    parser.add_argument("--http-target", required=True)
    parser.add_argument("--ws-target", default=None)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--port", type=int, default=None)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
