"""/healthz and the systemd watchdog follow the same test (#17 item 10, #18 item 8): a chain
follower that stops trying — a hung await — fails liveness within its limit and stops the
watchdog's pings, so a container's probe or systemd restarts keeperd; a stalled event loop
sends nothing at all; one that goes on trying (an RPC that fails, a chain that halts) does
neither (/readyz says those: test_readiness.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from keeperd.devnet.handle import Devnet
from tests.keeper_harness import config_for


class NotifySocket:
    """systemd's end of sd_notify: every datagram keeperd sends, with when it arrived — read
    in a thread, so a stalled event loop in this process cannot hide what it did not send."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.05)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            with contextlib.suppress(TimeoutError):
                message = self._sock.recv(4096).decode()
                self.received.append((time.monotonic(), message))

    def between(self, start: float, end: float, field: str) -> int:
        return sum(1 for at, m in self.received if start <= at <= end
                   and any(f.startswith(field) for f in m.splitlines()))

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self._sock.close()


async def test_a_hung_chain_follower_fails_liveness_stops_the_watchdog_and_recovers(
        devnet: Devnet, tmp_path: Path, run_daemon,
        monkeypatch: pytest.MonkeyPatch) -> None:
    systemd = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(systemd.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    try:
        config = config_for(devnet, tmp_path, "alert-only")
        chain = config.chains[0].model_copy(update={"request_timeout": 0.5, "max_attempts": 1})
        keeper = await run_daemon(config.model_copy(update={"chains": [chain]}))
        daemon = keeper.daemon
        await keeper.evaluated_at(devnet.client.block_number())
        assert daemon.liveness()[0]
        await asyncio.sleep(1.0)
        now = time.monotonic()
        assert systemd.between(now - 1.0, now, "WATCHDOG=1") >= 3

        # A follower that stops trying: liveness fails within its limit, the pings stop while
        # the status loop goes on (STATUS= still comes: it is the test, not a dead loop).
        source = daemon.chains["devnet"].blocks
        follow = source.poll_once
        hang = asyncio.Event()

        async def hung() -> None:
            await hang.wait()  # a request that never returns, no timeout around it

        source.poll_once = hung  # type: ignore[method-assign]
        started = time.monotonic()
        while daemon.liveness()[0]:
            assert time.monotonic() - started < 15, "a hung follower still looks alive"
            await asyncio.sleep(0.1)
        ok, detail = daemon.liveness()
        assert not ok
        assert detail["devnet"]["follower_stuck"] and detail["devnet"]["follower_idle_s"] > 5
        assert time.monotonic() - started < 10  # its limit: 0.1 s poll + 5.5 s attempt + 2 s
        failed = time.monotonic()
        await asyncio.sleep(1.5)
        assert systemd.between(failed + 0.3, failed + 1.5, "WATCHDOG=1") == 0
        assert systemd.between(failed + 0.3, failed + 1.5, "STATUS=") >= 3

        source.poll_once = follow  # type: ignore[method-assign]
        hang.set()
        await keeper.evaluated_at(devnet.mine(1))
        assert daemon.liveness()[0]
        recovered = time.monotonic()
        await asyncio.sleep(1.0)
        assert systemd.between(recovered, recovered + 1.0, "WATCHDOG=1") >= 3

        # The event loop itself stalled (a blocking call on it): nothing is sent until it
        # turns again — past WatchdogSec, systemd kills it.
        stalled = time.monotonic()
        time.sleep(2.0)  # noqa: ASYNC251 (the stall is the point)
        resumed = time.monotonic()
        await asyncio.sleep(1.0)
        assert not [m for at, m in systemd.received if stalled + 0.1 < at < resumed - 0.1]
        assert systemd.between(resumed, resumed + 1.0, "WATCHDOG=1") >= 3
    finally:
        systemd.close()
