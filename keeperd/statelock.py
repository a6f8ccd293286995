"""One keeperd per state directory: two on one database would deliver the outbox twice, fight
over nonces and replace each other's transactions.

An exclusive `flock` on `keeperd.lock` in the state directory, held for the daemon's life. The
kernel releases it when the process dies, however it dies (SIGKILL included), so a lock is
never stale; the file records who holds it, so the refusal can say so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType


class StateDirLocked(Exception):
    """Another keeperd holds the state directory."""


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "keeperd.lock"
        self._fd: int | None = None

    def acquire(self) -> StateDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateDirLocked(
                f"another keeperd holds {self.path.parent} ({holder}): stop it first, or give "
                "this one its own state_dir (two keepers on one database would send twice; "
                "replicas on one key need storage on PostgreSQL)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": round(time.time())}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateDirLock:
        return self.acquire()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data["since"]))
        return f"pid {data['pid']} on {data['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
