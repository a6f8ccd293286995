"""A throwaway PostgreSQL cluster on loopback for the tests (Debian's server, installed by
`make setup`): initdb into a temporary directory, pg_ctl start on a free port, stopped at
the end. initdb refuses to run as root, so as root it runs as the package's `postgres` user
(../shared/DEVNET-NOTES.md has the measured facts)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from keeperd.devnet.anvil import free_port


def server_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise FileNotFoundError("PostgreSQL's server is not installed: run `make setup`")
    return Path(found[-1]).parent


class PostgresServer:
    """A running throwaway cluster: its DSN, and a restart (as an operator's upgrade does)."""

    def __init__(self, bin_dir: Path, data: Path, root: Path, port: int,
                 as_user: list[str], settings: str = "") -> None:
        self.bin_dir, self.data, self.root, self.port = bin_dir, data, root, port
        self.as_user = as_user
        self.settings = settings  # more `-c name=value` for the server
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data),
                        *args], check=True, capture_output=True)

    def start(self) -> None:
        # -l: without a log file the server keeps pg_ctl's pipes and a caller capturing its
        # output hangs; -k: the socket stays in our directory.
        self._pg_ctl("-l", str(self.root / "log"), "-o",
                     f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                     f"-c fsync=off {self.settings}", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def postgres_cluster(prepare: Callable[[Path], dict[str, str]] | None = None
                     ) -> Iterator[PostgresServer]:
    """A fresh cluster (trust auth, loopback only), stopped and removed at the end.
    `prepare(root)` may write files into the cluster's directory (a TLS certificate) and
    returns server settings to start it with; the files are handed to the server's user."""
    bin_dir = server_bin()
    root = Path(tempfile.mkdtemp(prefix="keeperd-pg-"))
    settings = prepare(root) if prepare is not None else {}
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        for path in [root, *root.iterdir()]:
            shutil.chown(path, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "--auth=trust",
                    "-U", "postgres", "--no-sync"], check=True, capture_output=True)
    server = PostgresServer(bin_dir, data, root, free_port(), as_user,
                            " ".join(f"-c {k}={v}" for k, v in settings.items()))
    server.start()
    try:
        yield server
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
