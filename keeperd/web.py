"""The HTTP surface: /metrics for Prometheus, /healthz (alive) and /readyz (useful).

One peer must not be able to take keeperd's sockets: a connection that has not sent a whole
request within `header_timeout_s` (of opening, or of its last response) is closed, and past
`max_connections` open ones a new connection is answered 503 and closed at once; the last
quarter of them only to peers holding none (one peer's idle connections must not take the
orchestrator probe's place). /metrics may
ask for a bearer token; /healthz and /readyz never do (orchestrator probes carry no secret,
and they tell only whether keeperd is alive and useful). Rendering /metrics walks every
series: it runs on a thread of its own, not on the event loop that follows the chains.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keeperd.config import MetricsConfig
from keeperd.keys import check_secret_file
from keeperd.metrics import Metrics

ReadinessCheck = Callable[[], tuple[bool, dict[str, Any]]]


def make_app(metrics: Metrics, liveness: ReadinessCheck, readiness: ReadinessCheck,
             bearer_token: str | None = None) -> web.Application:
    # One thread: concurrent scrapes queue behind each other instead of each taking a
    # thread of the default pool (which the cascade kernels and file writes share).
    renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keeperd-metrics")
    expected = f"Bearer {bearer_token}".encode() if bearer_token else None

    async def metrics_handler(request: web.Request) -> web.Response:
        if expected is not None and not _authorized(request, expected):
            metrics.http_unauthorized.inc()
            return web.Response(status=401, text="a bearer token is required\n",
                                headers={"WWW-Authenticate": 'Bearer realm="keeperd"'})
        body = await asyncio.get_running_loop().run_in_executor(
            renderer, generate_latest, metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, detail = liveness()
        return web.json_response({"status": "ok" if ok else "failing", **detail},
                                 status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = readiness()
        return web.json_response({"status": "ready" if ok else "not ready", **detail},
                                 status=200 if ok else 503)

    async def stop_renderer(_: web.Application) -> None:
        renderer.shutdown(wait=False, cancel_futures=True)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.on_cleanup.append(stop_renderer)
    return app


def _authorized(request: web.Request, expected: bytes) -> bool:
    """The scheme is case-insensitive (RFC 9110); the token is compared in constant time."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    given = f"Bearer {credentials.strip()}".encode() if scheme.lower() == "bearer" else b""
    return hmac.compare_digest(given, expected)


def read_bearer_token(config: MetricsConfig) -> str | None:
    """The token /metrics asks for (None: open), read once at start. A file must be private,
    as every secret file is (keys.SecretError names the field and the fix)."""
    if config.bearer_token_file is not None:
        check_secret_file(config.bearer_token_file, "metrics.bearer_token_file")
        return config.bearer_token_file.read_text().strip()
    return config.bearer_token


class ListenError(Exception):
    """The metrics server cannot listen where the config says; the message names the
    address, the cause and the fix."""


def _refuse(transport: asyncio.BaseTransport) -> None:
    """Over a cap: say so and give the socket back at once."""
    assert isinstance(transport, asyncio.WriteTransport)
    transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Retry-After: 1\r\nConnection: close\r\n\r\n")
    transport.close()


class _Refused(asyncio.Protocol):
    """Over the cap at accept."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _refuse(transport)


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, counted from its acceptance to its loss (counted
    at accept, not from aiohttp's list of connections, which learns of a connection only after
    the accept loop may have taken a hundred more), and by its peer's address once it is
    known: a peer that already holds one is refused the gate's last `reserve` places."""

    def __init__(self, gate: _Gate) -> None:
        self._gate = gate
        self._inner: asyncio.Protocol | None = None
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._gate.admits(self._peer):
            self._gate.refused()
            _refuse(transport)
            return
        self._inner = self._gate.handler()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.lost(self._peer if self._inner is not None else None)
        if self._inner is not None:
            self._inner.connection_lost(exc)


class _Gate:
    """The protocol factory of the listening socket: aiohttp's handler while fewer than
    `cap` connections are open, a refusal past it. The last quarter of the places go only to
    peers holding none: one peer holding every place (32 idle connections reopened each
    timeout) answered the orchestrator's /healthz probe 503, and a liveness probe restarts
    keeperd for that (a review)."""

    def __init__(self, runner: web.AppRunner, cap: int, metrics: Metrics) -> None:
        self._runner, self._cap, self._metrics = runner, cap, metrics
        self.reserve = cap // 4
        self.open = 0  # (accepted under the cap: admitted, or being refused)
        self._admitted = 0
        self._by_peer: dict[str, int] = {}

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self._cap:
            self.refused()
            return _Refused()
        self.open += 1
        return _Counted(self)

    def admits(self, peer: str) -> bool:
        """A connection accepted under the cap, once its peer is known: refused when its peer
        holds one already and the connections admitted have reached the reserve. (Counted
        among those admitted, not those accepted: a burst's are all accepted before any is
        admitted.)"""
        if self._by_peer.get(peer, 0) and self._admitted >= self._cap - self.reserve:
            return False
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        self._admitted += 1
        return True

    def handler(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        return server()

    def refused(self) -> None:
        self._metrics.http_refused.inc()

    def lost(self, peer: str | None) -> None:
        """A connection accepted under the cap closed (`peer`: it was admitted)."""
        self.open -= 1
        if peer is not None:
            self._admitted -= 1
            left = self._by_peer.get(peer, 1) - 1
            if left > 0:
                self._by_peer[peer] = left
            else:
                self._by_peer.pop(peer, None)


class WebServer:
    """Runs the app on (host, port); port 0 picks a free one, readable from `.port`."""

    def __init__(self, app: web.Application, host: str, port: int, metrics: Metrics, *,
                 header_timeout_s: float = 5.0, max_connections: int = 32) -> None:
        # aiohttp's keep-alive timer is armed when a connection opens and after each
        # response, and closes the connection if no whole request has come by then: one
        # timer for a half-sent request (slowloris) and an idle keep-alive alike. Its
        # default is 3630 s.
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout_s)
        self._gate = _Gate(self._runner, max_connections, metrics)
        self._listener: asyncio.Server | None = None
        self.host = host
        self.port = port

    @property
    def open_connections(self) -> int:
        return self._gate.open

    async def start(self) -> None:
        await self._runner.setup()
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self._gate, self.host, self.port, reuse_address=True)
        except OSError as exc:
            await self._runner.cleanup()
            where = f"{self.host}:{self.port}"
            if exc.errno == errno.EADDRINUSE:
                raise ListenError(
                    f"metrics: {where} is already in use (another keeperd, or another "
                    f"program: `ss -ltnp 'sport = :{self.port}'` names it); stop it, or set "
                    "metrics.port to a free port (metrics.enabled: false serves none)"
                ) from None
            raise ListenError(f"metrics: cannot listen on {where}: {exc.strerror or exc}; "
                              "check metrics.listen (an address of this host) and "
                              "metrics.port") from None
        if self.port == 0 and self._listener.sockets:
            self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()  # no new connections; the runner closes the open ones
        await self._runner.cleanup()
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None
