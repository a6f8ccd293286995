"""The metrics port against a hostile or careless peer, on real sockets: a half-sent request
is cut within the header timeout while others are served, the connection cap holds (a
burst included), /metrics asks for its bearer token (a real Prometheus scrapes with
`authorization: credentials_file`), and rendering /metrics runs off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.core import GaugeMetricFamily

from keeperd.config import MetricsConfig
from keeperd.devnet.anvil import free_port
from keeperd.metrics import Metrics
from keeperd.web import WebServer, make_app, read_bearer_token
from tests.integration.test_prometheus import PROM_DIR, binary


def _alive() -> tuple[bool, dict[str, Any]]:
    return True, {}


@contextlib.asynccontextmanager
async def served(metrics: Metrics | None = None, token: str | None = None,
                 **limits: Any) -> AsyncIterator[WebServer]:
    """keeperd's web server, as the daemon builds it, on a free loopback port."""
    metrics = metrics or Metrics()
    server = WebServer(make_app(metrics, _alive, _alive, token), "127.0.0.1", 0, metrics,
                       **limits)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def fetch(port: int, path: str, headers: dict[str, str] | None = None
                ) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}{path}", headers=headers,
            timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return resp.status, await resp.text()


async def closed_within(reader: asyncio.StreamReader, limit_s: float) -> float:
    """Seconds until the server closed the connection (its answer, if any, read away)."""
    started = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        while await asyncio.wait_for(reader.read(4096), limit_s):
            pass
    return time.monotonic() - started


async def test_half_sent_request_is_cut_within_the_header_timeout() -> None:
    """A slowloris: a request line and a header line every 0.3 s, never the blank line.
    aiohttp's default kept it for an hour; trickling bytes must not extend the deadline, and
    while it waits the others are served."""
    async with served(header_timeout_s=1.0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: keeperd\r\n")
        await writer.drain()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(100):
                    await asyncio.sleep(0.3)
                    writer.write(f"X-Slow-{i}: 1\r\n".encode())
                    await writer.drain()

        dripping = asyncio.create_task(trickle())
        assert await fetch(server.port, "/healthz") == (200, '{"status": "ok"}')
        assert (await fetch(server.port, "/metrics"))[0] == 200
        took = await closed_within(reader, 4.0)
        dripping.cancel()
        writer.close()
        assert took < 2.0, f"the half-sent request was kept {took:.1f} s"
        assert server.open_connections == 0


async def test_idle_keep_alive_after_a_response_is_closed_too() -> None:
    """After a whole request and its answer, a second request left half-sent is cut the
    same way (the timer restarts at each response, not at each byte)."""
    async with served(header_timeout_s=1.0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: keeperd\r\n\r\nGET /metrics HTTP/1.1\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 200")
        took = await closed_within(reader, 4.0)
        writer.close()
        assert took < 2.0


async def test_connection_cap_holds_and_frees_as_connections_close() -> None:
    metrics = Metrics()
    async with served(metrics, header_timeout_s=30.0, max_connections=3) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert server.open_connections == 3
        # The fourth is answered 503 and closed at once, whatever it asks.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: keeperd\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            answer = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer
        assert metrics.http_refused._value.get() == 1
        # The held ones still work...
        r0, w0 = held[0]
        w0.write(b"GET /healthz HTTP/1.1\r\nHost: keeperd\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(r0.read(), 2)).startswith(b"HTTP/1.1 200")
        # ...and a closed one frees its place.
        for _, w in held:
            w.close()
        await asyncio.sleep(0.2)
        assert server.open_connections == 0
        assert await fetch(server.port, "/healthz") == (200, '{"status": "ok"}')


async def test_a_burst_of_connections_never_passes_the_cap() -> None:
    """Fifty at once: the accept loop takes many before aiohttp has registered any, so the
    cap is counted at accept time; one peer gets the places but the reserve (8 of 8 here)."""
    async with served(header_timeout_s=30.0, max_connections=8) as server:
        conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", server.port)
                                       for _ in range(50)))
        await asyncio.sleep(0.5)
        alive = 0
        for reader, _ in conns:
            with contextlib.suppress(ConnectionResetError):
                alive += not reader.at_eof() and not await _closed_now(reader)
        assert server.open_connections == 6
        assert alive == 6
        for _, writer in conns:
            writer.close()


async def test_one_peer_holding_its_places_leaves_the_reserve_to_a_probe() -> None:
    """One peer's idle connections (a scraper gone wrong, an attacker) take every place but
    the last quarter; another peer — the orchestrator's /healthz probe — still gets in, and
    the first peer's next one is refused."""
    metrics = Metrics()
    async with served(metrics, header_timeout_s=30.0, max_connections=8) as server:
        held = []
        for _ in range(6):
            held.append(await asyncio.open_connection("127.0.0.1", server.port))
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        with contextlib.suppress(ConnectionResetError):
            assert await _closed_within_2s(reader)
        writer.close()
        assert metrics.http_refused._value.get() == 1
        # Another address of the loopback is another peer: a probe from it gets in.
        probe_r, probe_w = await asyncio.open_connection(
            "127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
        probe_w.write(b"GET /healthz HTTP/1.1\r\nHost: keeperd\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(probe_r.read(), 2)).startswith(b"HTTP/1.1 200")
        probe_w.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.2)
        assert server.open_connections == 0


async def _closed_within_2s(reader: asyncio.StreamReader) -> bool:
    data = await asyncio.wait_for(reader.read(4096), 2.0)
    return data == b"" or data.startswith(b"HTTP/1.1 503")


async def _closed_now(reader: asyncio.StreamReader) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(4096), 0.05)
    except TimeoutError:
        return False  # nothing to read: still open
    return data == b"" or data.startswith(b"HTTP/1.1 503")


async def test_metrics_asks_for_the_bearer_token_and_probes_stay_open() -> None:
    metrics = Metrics()
    async with served(metrics, token="t0ken-for-prometheus") as server:
        status, _ = await fetch(server.port, "/metrics")
        assert status == 401
        assert (await fetch(server.port, "/metrics", {"Authorization": "Bearer wrong"}))[0] == 401
        assert (await fetch(server.port, "/metrics", {"Authorization": "Basic dDBrZW4="}))[0] \
            == 401
        status, body = await fetch(server.port, "/metrics",
                                   {"Authorization": "Bearer t0ken-for-prometheus"})
        assert status == 200 and "keeperd_http_unauthorized_total 3.0" in body
        assert (await fetch(server.port, "/metrics",
                            {"Authorization": "bearer t0ken-for-prometheus"}))[0] == 200
        assert (await fetch(server.port, "/healthz"))[0] == 200
        assert (await fetch(server.port, "/readyz"))[0] == 200


async def test_without_a_token_metrics_is_open() -> None:
    async with served() as server:
        assert (await fetch(server.port, "/metrics"))[0] == 200


class _Probe:
    """A collector that notes the thread it is collected on, and takes its time."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.threads: list[int] = []
        self.started = threading.Event()
        self.started_at = 0.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.threads.append(threading.get_ident())
        self.started_at = time.monotonic()
        self.started.set()
        time.sleep(self.delay_s)  # (a registry of a million series takes this long)
        yield GaugeMetricFamily("keeperd_test_probe", "collected", value=1)


async def test_metrics_are_rendered_off_the_event_loop() -> None:
    """A slow render must not stall the loop: /healthz answers while /metrics renders."""
    metrics = Metrics()
    probe = _Probe(delay_s=1.0)
    metrics.registry.register(probe)  # type: ignore[arg-type]
    async with served(metrics) as server:
        scrape = asyncio.create_task(fetch(server.port, "/metrics"))
        assert await asyncio.to_thread(probe.started.wait, 5)
        assert (await fetch(server.port, "/healthz"))[0] == 200
        # (answered while the render still sleeps: on the loop, it would wait the second)
        assert time.monotonic() - probe.started_at < 0.5
        status, body = await scrape
        assert status == 200 and "keeperd_test_probe 1.0" in body
    assert probe.threads and threading.get_ident() not in probe.threads


def test_the_token_comes_from_a_private_file(tmp_path: Path) -> None:
    from keeperd.keys import SecretError

    path = tmp_path / "token"
    path.write_text("from-a-file\n")
    path.chmod(0o600)
    assert read_bearer_token(MetricsConfig(bearer_token_file=path)) == "from-a-file"
    path.chmod(0o644)
    with pytest.raises(SecretError) as caught:
        read_bearer_token(MetricsConfig(bearer_token_file=path))
    assert caught.value.field == "metrics.bearer_token_file" and "chmod 600" in str(caught.value)
    assert read_bearer_token(MetricsConfig()) is None


def _targets(url: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as resp:
        active = json.loads(resp.read())["data"]["activeTargets"]
    return {t["labels"]["job"]: t for t in active}


async def test_prometheus_scrapes_with_its_credentials_file(tmp_path: Path) -> None:
    """The shipped scrape config, with the `authorization` it documents filled in: a real
    Prometheus with the token scrapes keeperd; one with a stale token is refused (401)."""
    good, stale = tmp_path / "token", tmp_path / "stale"
    good.write_text("scrape-t0ken\n")
    stale.write_text("last-years-token\n")
    prom_config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    prom_config.pop("rule_files", None)
    prom_config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s"}
    job = prom_config["scrape_configs"][0]
    async with served(token="scrape-t0ken") as server:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
        job["authorization"] = {"type": "Bearer", "credentials_file": str(good)}
        prom_config["scrape_configs"].append(
            dict(job, job_name="stale", authorization={"credentials_file": str(stale)}))
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("w")
        prometheus = await asyncio.create_subprocess_exec(
            binary("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", stdout=log, stderr=log)
        log.close()
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    targets = await asyncio.to_thread(_targets, f"http://127.0.0.1:{port}")
                    if all(t["health"] != "unknown" for t in targets.values()) and \
                            len(targets) == 2:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
                await asyncio.sleep(0.3)
        finally:
            prometheus.terminate()
            await prometheus.wait()
    assert targets["keeperd"]["health"] == "up", targets["keeperd"]["lastError"]
    assert targets["stale"]["health"] == "down"
    assert "401" in targets["stale"]["lastError"]


def test_keeperd_run_serves_metrics_behind_its_token(devnet: Any, tmp_path: Path) -> None:
    """The daemon reads metrics.bearer_token_file at start and the token never reaches its
    log; probes stay open."""
    from tests.integration.test_daemon import get, logs_of, start, stop, wait_for, write_config

    path, port = write_config(tmp_path, devnet, [devnet.manifest["rpc_url"]])
    token = tmp_path / "metrics-token"
    token.write_text("daemon-t0ken-4f2a\n")
    token.chmod(0o600)
    data = yaml.safe_load(path.read_text())
    data["metrics"].update(bearer_token_file=str(token), header_timeout_s=2,
                           max_connections=4)
    path.write_text(yaml.safe_dump(data))
    proc = start(path)
    try:
        wait_for(lambda: get(port, "/healthz")[0] == 200, what="keeperd serving")
        assert get(port, "/metrics")[0] == 401
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Authorization": "Bearer daemon-t0ken-4f2a"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200 and b"keeperd_build_info" in resp.read()
        assert get(port, "/readyz")[0] in (200, 503)  # (open: no 401)
    finally:
        stop(proc)
    assert "daemon-t0ken-4f2a" not in logs_of(proc)
