"""An RPC provider down when keeperd starts (a boot before the network, a provider outage):
keeperd says it waits, waits, and starts once an endpoint answers — it used to log that
following would start when one answered and then exit 1 (under Restart=on-failure, a restart
loop whose log said the opposite)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlparse

from keeperd.daemon import Daemon
from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from tests.keeper_harness import config_for
from tests.tcp_proxy import main as tcp_proxy


async def test_keeperd_waits_for_an_endpoint_then_starts(devnet: Devnet, tmp_path: Path) -> None:
    import aiohttp

    port = free_port()  # nothing listens here yet
    config = config_for(devnet, tmp_path, "alert-only", rpc_urls=[f"http://127.0.0.1:{port}"])
    web = free_port()
    config = config.model_copy(update={"metrics": config.metrics.model_copy(
        update={"enabled": True, "listen": "127.0.0.1", "port": web})})
    stop = asyncio.Event()
    daemon = Daemon(config, metrics=Metrics())
    task = asyncio.create_task(daemon.run(stop))
    proxy: asyncio.Task[None] | None = None
    try:
        await asyncio.sleep(2.2)  # two tries at least (the first, and after 1 s)
        assert not task.done(), task.exception() if task.done() else None
        assert not daemon.ready.is_set()
        # Served while it waits: alive, not ready, and why (the port used to stay closed
        # until an endpoint answered: to Prometheus, keeperd was simply down)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{web}/readyz") as resp:
                assert resp.status == 503
                assert "waiting for an RPC endpoint of devnet" in await resp.text()
            async with session.get(f"http://127.0.0.1:{web}/healthz") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{web}/metrics") as resp:
                assert resp.status == 200 and "keeperd_build_info" in await resp.text()
        target = urlparse(devnet.manifest["rpc_url"]).port
        assert target is not None
        proxy = asyncio.create_task(tcp_proxy(port, target))  # the provider is back
        await asyncio.wait_for(daemon.ready.wait(), 20)
        assert not task.done()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        if proxy is not None:
            proxy.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await proxy
    assert task.done() and task.exception() is None


async def test_a_stop_while_waiting_ends_keeperd_cleanly(devnet: Devnet, tmp_path: Path) -> None:
    config = config_for(devnet, tmp_path, "alert-only",
                        rpc_urls=[f"http://127.0.0.1:{free_port()}"])
    stop = asyncio.Event()
    task = asyncio.create_task(Daemon(config, metrics=Metrics()).run(stop))
    await asyncio.sleep(1.5)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert task.exception() is None
