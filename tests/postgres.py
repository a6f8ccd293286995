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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keeperd.devnet.anvil import free_port


def server_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise FileNotFoundError("PostgreSQL's server is not installed: run `make setup`")
    return Path(found[-1]).parent


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yields the DSN of a fresh cluster's `postgres` database (trust auth, loopback only)."""
    bin_dir = server_bin()
    root = Path(tempfile.mkdtemp(prefix="keeperd-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "--auth=trust",
                    "-U", "postgres", "--no-sync"], check=True, capture_output=True)
    # -l: without a log file the server keeps pg_ctl's pipes and a caller capturing its
    # output hangs; -k: the socket stays in our directory.
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l",
                    str(root / "log"), "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off", "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
