"""#17: the wall clock steps under a running `keeperd run` (NTP correcting a drifted clock, a
VM resumed from a snapshot) — made real with libfaketime (Debian's `faketime`, installed by
`make setup`): keeperd's libc clock jumps while its monotonic clock runs on. A sink's pause
(a 429's Retry-After) is kept on the monotonic clock, so a forward step of two hours does not
end it early; a backward step of two hours does not put an alert scheduled before it two hours
late (the outbox keeps wall-clock times, which outlive the process)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from keeperd.devnet.handle import Devnet
from tests.alert_fakes import Webhook
from tests.keeperd_process import log_digest, start_keeperd, wait_until

RETRY_AFTER_S = 6


def libfaketime() -> Path:
    """libfaketime's preload library, where Debian's package put it on this machine (its file
    list, not a path of one architecture). Missing, the test fails: `make setup` installs it
    where `make test` runs, and a skipped fault test would read as a passed one (#30 item 3)."""
    try:
        listed = subprocess.run(["dpkg", "-L", "libfaketime"], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.fail("no dpkg here: `make test` runs on Debian, where `make setup` installs "
                    "faketime", pytrace=False)
    if listed.returncode != 0:
        pytest.fail(f"libfaketime is not installed ({listed.stderr.strip()}): `make setup` "
                    "installs Debian's faketime", pytrace=False)
    found = [Path(line) for line in listed.stdout.splitlines()
             if Path(line).name == "libfaketime.so.1" and Path(line).is_file()]
    assert len(found) == 1, f"no single libfaketime.so.1 in the package's files: {found}"
    return found[0]


def log_times(logs: Path) -> list[float]:
    """The wall-clock timestamps keeperd wrote on its log lines (its libc clock)."""
    from datetime import datetime

    return [datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
            .timestamp() for line in logs.read_text().splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_wall_clock_steps_move_neither_a_sink_pause_nor_a_due_alert(
        devnet: Devnet, tmp_path: Path) -> None:
    from tests.keeper_harness import chain_health

    preload = libfaketime()
    # Two watched accounts under their warn level: two alerts, each its own webhook request.
    devnet.set_price("WETH", devnet.manifest["prices_usd"]["WETH"] * 0.93)
    watched = [b["address"] for b in devnet.manifest["borrowers"]
               if 1.03 < chain_health(devnet, b["address"]) < 1.09][:2]
    assert len(watched) == 2
    clock = tmp_path / "faketime.rc"
    clock.write_text("+0\n")
    webhook = Webhook(retry_after_first=RETRY_AFTER_S)
    # The keeper's own alerts (here the cascade-risk warning the 7 % drop raises) go to a
    # receiver of their own: the desk's sees exactly the two notifications timed below (CI
    # once saw a third, queued behind them, delivered at shutdown).
    operator = Webhook()
    config = tmp_path / "keeperd.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}],
        "alerts": {"routes": [
            {"name": "desk", "sinks": [
                {"kind": "webhook", "url": webhook.url, "secret": "${WEBHOOK_SECRET}"}]},
            {"name": "keeper", "sinks": [
                {"kind": "webhook", "url": operator.url, "secret": "${WEBHOOK_SECRET}"}]}],
            "operator_route": "keeper",
            "watchlists": [{"name": "desk", "accounts": watched, "warn": 1.1,
                            "critical": 1.02, "route": "desk"}]},
        "metrics": {"enabled": False}, "logging": {"format": "json"},
    }))
    logs = tmp_path / "keeperd.log"
    env = dict(os.environ, WEBHOOK_SECRET="clock-step-test-webhook-secret-32b",
               LD_PRELOAD=str(preload),
               FAKETIME_TIMESTAMP_FILE=str(clock), FAKETIME_DONT_FAKE_MONOTONIC="1",
               FAKETIME_CACHE_DURATION="1")
    proc = start_keeperd(config, env, logs)

    def refused() -> int:
        return sum(1 for _, _, status in webhook.posts if status == 429)

    def wait(predicate: Any, what: str, limit: float = 30.0) -> None:
        wait_until(predicate, what, limit, logs=(logs,))

    try:
        wait(lambda: refused() >= 1, "the first notification", 60)
        clock.write_text("+2h\n")  # the wall clock jumps two hours ahead during the pause
        wait(lambda: refused() >= 2, "the second notification refused", 30)
        clock.write_text("-2h\n")  # ...and four hours back (two behind) during the next one
        wait(lambda: sum(1 for _, _, status in webhook.posts if status == 200) >= 2,
             "both notifications taken", 30)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        webhook.close()
        operator.close()
    # libfaketime reached keeperd: its log's wall-clock times jumped ahead, then back.
    stamps, real_now = log_times(logs), time.time()
    assert any(t > real_now + 3600 for t in stamps), log_digest(logs)
    assert any(t < real_now - 3600 for t in stamps), log_digest(logs)
    # After each 429 the sink paused for its Retry-After, on the monotonic clock: the next
    # request came neither early (a pause on the wall clock ends at once after the forward
    # step) nor hours late (a due time read on the stepped-back clock).
    posts = sorted(webhook.posts)
    assert len({key for _, key, _ in posts}) == 2, posts  # the two watched accounts' alerts
    gaps = [later[0] - at for (at, _, status), later in itertools.pairwise(posts)
            if status == 429]
    assert len(gaps) == 2 and all(RETRY_AFTER_S - 0.5 <= g <= RETRY_AFTER_S + 5
                                  for g in gaps), (gaps, log_digest(logs))
