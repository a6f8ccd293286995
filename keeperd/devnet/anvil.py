"""A handle on one anvil process: start it, wait until it answers, always stop it.

    with Anvil(load_state=path) as node:          # or `async with`
        node.rpc_url  ->  "http://127.0.0.1:<port>"

`detached=True` starts it in its own session for `keeperd devnet up`, which outlives the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from keeperd.devnet import paths

DEFAULT_CHAIN_ID = 31337
# The 1,000-account getUserAccountData multicall needs ~35M gas; leave room for larger batches.
DEFAULT_GAS_LIMIT = 1_000_000_000


class AnvilError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc_call(url: str, method: str, params: list[Any] | None = None, timeout: float = 30) -> Any:
    """A blocking JSON-RPC call, for process management and set-up scripts (not the daemon)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if "error" in answer:
        raise AnvilError(f"{method}: {answer['error']}")
    return answer["result"]


class Anvil:
    def __init__(
        self,
        port: int | None = None,
        *,
        load_state: Path | None = None,
        chain_id: int = DEFAULT_CHAIN_ID,
        gas_limit: int = DEFAULT_GAS_LIMIT,
        block_time: float | None = None,
        no_mining: bool = False,
        log_path: Path | None = None,
        detached: bool = False,
        history: int = 128,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self.load_state = load_state
        self.chain_id = chain_id
        self.gas_limit = gas_limit
        self.block_time = block_time
        self.no_mining = no_mining
        self.log_path = log_path
        self.detached = detached
        self.history = history
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            str(paths.anvil_binary()),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--gas-limit", str(self.gas_limit),
            # Without it anvil writes ~1 MB of state per block to ~/.foundry and slows down; with
            # a bare --prune-history it keeps no past state at all, and keeperd's reads pinned
            # to a block that is no longer the head fail. Keep the last `history` in memory —
            # each a whole copy of the state (measured: 9.6 MB a block at 10,000 borrowers,
            # so ~12 GB for 128 blocks at 100,000): a node that mines many blocks of a large
            # state keeps fewer.
            "--prune-history", str(self.history),
            "--auto-impersonate",
            "--silent",
        ]
        if self.load_state is not None:
            cmd += ["--load-state", str(self.load_state)]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        if self.no_mining:
            cmd += ["--no-mining"]
        return cmd + list(self.extra_args)

    def _last_words(self) -> str:
        """The end of anvil's log, where it says why it stopped ("Address already in use"):
        the exit code alone sent a user reading the log to find it."""
        if self.log_path is None:
            return ""
        try:
            lines = [ln.strip() for ln in Path(self.log_path).read_text(
                errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f": {' / '.join(lines[-2:])[:300]}" if lines else ""

    def start(self, timeout: float = 60.0) -> Anvil:
        if self.process is not None:
            raise AnvilError("anvil already started by this handle")
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=self.detached,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AnvilError(f"anvil exited with code {self.process.returncode}"
                                 f"{self._last_words()} (command: {' '.join(self.command())})")
            try:
                chain_id = int(rpc_call(self.rpc_url, "eth_chainId", timeout=2), 16)
            except (OSError, urllib.error.URLError, AnvilError) as exc:
                last = exc
                time.sleep(0.05)
                continue
            if chain_id != self.chain_id:
                raise AnvilError(f"port {self.port} answers with chain id {chain_id}, "
                                 f"expected {self.chain_id}: another node is using it?")
            return
        raise AnvilError(f"anvil did not answer on {self.rpc_url} within {timeout}s: {last}")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def kill(self) -> None:
        """Stop it hard (tests of failover)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Anvil:
        import asyncio

        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)


def stop_pid(pid: int, timeout: float = 5.0) -> bool:
    """Stop a detached anvil by pid. Returns False if it was not running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True
