"""/readyz says whether keeperd is useful (#18 item 8): 503 while an account index trails
the head (a node whose log service fails while blocks go on) and while every RPC is down,
with the reason in its body; 200 again once they recover. /healthz stays 200 meanwhile: a
restart would mend neither."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from keeperd.devnet.handle import Devnet
from tests.conftest import metric_value
from tests.faults.chaos_proxy import ChaosProxy, Fault
from tests.keeper_harness import config_for


async def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.json()


async def until(port: int, status: int, what: str, limit: float = 20.0,
                mine: Devnet | None = None) -> dict[str, Any]:
    """/readyz answers `status` within `limit` seconds (mining a block every turn if asked:
    blocks that go on); its body."""
    deadline = time.monotonic() + limit
    while True:
        code, body = await probe(port, "/readyz")
        if code == status:
            return body
        assert time.monotonic() < deadline, f"/readyz never {status} ({what}): {code} {body}"
        if mine is not None:
            mine.mine(1)
        await asyncio.sleep(0.3)


async def test_readyz_fails_on_index_lag_and_with_every_rpc_down_and_comes_back(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy:
        config = config_for(devnet, tmp_path, "alert-only")
        chain = config.chains[0].model_copy(update={
            "rpc_urls": [proxy.url], "request_timeout": 0.5, "max_attempts": 1})
        metrics = config.metrics.model_copy(update={
            "enabled": True, "port": 0, "ready_max_index_lag": 3})
        keeper = await run_daemon(config.model_copy(update={"chains": [chain],
                                                            "metrics": metrics}))
        assert keeper.daemon.web is not None
        port = keeper.daemon.web.port
        ready = await until(port, 200, "at start")
        assert ready["status"] == "ready" and ready["aave"]["index_lag_blocks"] <= 3

        # The node's logs fail while its blocks go on: the index falls behind.
        proxy.faults["eth_getLogs"] = Fault.status(503)
        lagging = await until(port, 503, "index lag", mine=devnet)
        assert lagging["status"] == "not ready"
        assert lagging["aave"]["index_lag_blocks"] > 3 and lagging["devnet"]["following"], lagging
        # (and why, for `keeperd status`: it said "NOT ready" alone for an index behind)
        assert lagging["aave"]["why"] == (
            f"its index is {lagging['aave']['index_lag_blocks']} blocks behind the head (more "
            "than metrics.ready_max_index_lag, 3)"), lagging
        assert (await probe(port, "/healthz"))[0] == 200
        # ...while the positions already known are still evaluated at the head (a node's
        # logs failing in a crash must not stop the liquidations of known borrowers), and
        # the lag an alert watches is exported.
        head = lagging["devnet"]["head"]
        await keeper.evaluated_at(head)
        assert metric_value(keeper.daemon.metrics, "keeperd_index_lag_blocks",
                            {"chain": "devnet", "protocol": "aave"}) > 3
        del proxy.faults["eth_getLogs"]
        back = await until(port, 200, "index caught up", mine=devnet)
        assert back["aave"]["index_lag_blocks"] <= 3

        # Every RPC down.
        proxy.faults["*"] = Fault.status(503)
        down = await until(port, 503, "every RPC down")
        assert down["devnet"]["healthy_endpoints"] == 0, down
        assert (await probe(port, "/healthz"))[0] == 200
        del proxy.faults["*"]
        again = await until(port, 200, "the RPC back", limit=30, mine=devnet)
        assert again["devnet"]["healthy_endpoints"] == 1
