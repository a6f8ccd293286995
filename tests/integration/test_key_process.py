"""The process holding the key: `keeperd run` with the key in its environment, as
EnvironmentFile= or `docker run -e` give it."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import yaml

from keeperd.devnet.handle import Devnet
from tests.keeper_harness import KEEPER_KEY
from tests.keeperd_process import start_keeperd, wait_until


def test_the_key_leaves_the_environment_and_the_process_dumps_no_core(
        devnet: Devnet, tmp_path: Path) -> None:
    config = tmp_path / "keeperd.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}],
        "keeper": {"mode": "dry-run", "key": {"source": "env", "env": "KEEPER_KEY"}},
        "metrics": {"enabled": False}, "logging": {"format": "json"}}))
    logs = tmp_path / "keeperd.log"
    # Started allowed to dump core (the soft limit is often 0 already: then the check below
    # would prove nothing), as a shell with `ulimit -c unlimited` would start it.
    limit = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (limit[1], limit[1]))
    try:
        proc = start_keeperd(config, dict(os.environ, KEEPER_KEY=KEEPER_KEY), logs)
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, limit)
    try:
        wait_until(lambda: "daemon.started" in logs.read_text(), "keeperd started", 60)
        secret = KEEPER_KEY[2:].encode()
        # What another process of the same user could read, and what any child inherits.
        assert secret not in Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert b"KEEPER_KEY=" in Path(f"/proc/{proc.pid}/environ").read_bytes()  # (blanked)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        [core] = [line for line in limits.splitlines() if line.startswith("Max core file size")]
        assert core.split()[4:6] == ["0", "0"], core
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_process_that_forbade_core_dumps_is_not_dumpable() -> None:
    """PR_SET_DUMPABLE, seen from inside (another process cannot ask)."""
    code = ("from keeperd.hardening import forbid_core_dumps, dumpable\n"
            "before = dumpable(); forbid_core_dumps(); print(before, dumpable())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["True", "False"]
