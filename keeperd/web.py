"""The HTTP surface: /metrics for Prometheus, /healthz (alive) and /readyz (useful)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keeperd.metrics import Metrics

ReadinessCheck = Callable[[], tuple[bool, dict[str, Any]]]


def make_app(metrics: Metrics, liveness: ReadinessCheck,
             readiness: ReadinessCheck) -> web.Application:
    async def metrics_handler(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, detail = liveness()
        return web.json_response({"status": "ok" if ok else "failing", **detail},
                                 status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = readiness()
        return web.json_response({"status": "ready" if ok else "not ready", **detail},
                                 status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


class ListenError(Exception):
    """The metrics server cannot listen where the config says; the message names the
    address, the cause and the fix."""


class WebServer:
    """Runs the app on (host, port); port 0 picks a free one, readable from `.port`."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self.host = host
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
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
        server = site._server
        if server is not None and self.port == 0:
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self._runner.cleanup()
