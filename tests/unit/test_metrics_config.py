"""metrics.* in the config: the bearer token is a ${ENV} reference or a private file, never
written into the file; check-config checks its file as it checks every secret file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keeperd.checks import local_issues
from keeperd.config import ConfigError, parse_config

MINIMAL = {
    "state_dir": "/tmp/keeperd-test",
    "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": ["http://127.0.0.1:8545"]}],
}


def issues_of(metrics: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "metrics": metrics}, "test.yaml", env or {})
    return {i.path: f"{i.message} | {i.fix}" for i in info.value.issues}


def test_the_token_comes_from_the_environment() -> None:
    config = parse_config({**MINIMAL, "metrics": {"bearer_token": "${METRICS_TOKEN}"}},
                          "test.yaml", {"METRICS_TOKEN": "from-env"})
    assert config.metrics.bearer_token == "from-env"
    unset = parse_config({**MINIMAL, "metrics": {"bearer_token": "${METRICS_TOKEN:-}"}},
                         "test.yaml", {})
    assert unset.metrics.bearer_token is None  # (an empty reference: no token, /metrics open)


def test_a_token_written_into_the_file_is_refused() -> None:
    issues = issues_of({"bearer_token": "s3cr3t-in-the-file"})
    assert list(issues) == ["metrics.bearer_token"]
    assert "never go inline" in issues["metrics.bearer_token"]
    assert "s3cr3t" not in str(issues)


def test_one_token_source(tmp_path: Path) -> None:
    issues = issues_of({"bearer_token": "${T}", "bearer_token_file": str(tmp_path / "t")},
                       {"T": "x"})
    assert list(issues) == ["metrics"] and "not both" in issues["metrics"]


def test_limits_are_bounded() -> None:
    assert set(issues_of({"header_timeout_s": 0, "max_connections": 0})) == {
        "metrics.header_timeout_s", "metrics.max_connections"}
    defaults = parse_config(MINIMAL, "test.yaml", {}).metrics
    assert defaults.header_timeout_s == 5.0 and defaults.max_connections == 32


def test_check_config_checks_the_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    token.chmod(0o644)
    config = parse_config({**MINIMAL, "metrics": {"bearer_token_file": str(token)}},
                          "test.yaml", {})
    (issue,) = local_issues(config)
    assert issue.path == "metrics.bearer_token_file" and "chmod 600" in str(issue)
    token.chmod(0o600)
    assert local_issues(config) == []


def test_a_reload_says_a_rewritten_token_file_needs_a_restart(tmp_path: Path) -> None:
    """The server keeps the token it started with; a token file rewritten in place changes no
    config field, and the reload said `needs_restart: []` while the old token still worked
    (seen by hand)."""
    from keeperd.daemon import Daemon

    token = tmp_path / "metrics.token"
    token.write_text("a" * 40 + "\n")
    token.chmod(0o600)
    config = parse_config({**MINIMAL, "metrics": {"bearer_token_file": str(token)}}, env={})
    daemon = Daemon(config)
    daemon._metrics_token = "a" * 40  # what _web_server read at start
    assert not daemon._metrics_token_changed(config)
    token.write_text("b" * 40 + "\n")
    assert daemon._metrics_token_changed(config)


def test_readyz_says_why_a_chain_is_not_followed() -> None:
    """An idle devnet turned /readyz 503 with `"following": false` and no reason (by hand)."""
    import time
    from types import SimpleNamespace

    from keeperd.daemon import Daemon

    daemon = Daemon(parse_config(MINIMAL, env={}))
    assert daemon.readiness() == (False, {"starting": "starting"})  # (not run yet)
    daemon._starting = None  # (as `run` sets it once started)

    def chain(last_block_at: float | None) -> object:
        return SimpleNamespace(pool=SimpleNamespace(healthy_count=lambda: 1),
                               config=SimpleNamespace(poll_interval=1.0),
                               last_block_at=last_block_at, blocks=SimpleNamespace(head=None))

    daemon.chains = {"devnet": chain(time.monotonic() - 95)}  # type: ignore[dict-item]
    ok, detail = daemon.readiness()
    assert not ok and "no new block for 95 s" in detail["devnet"]["why"]
    daemon.chains = {"devnet": chain(None)}  # type: ignore[dict-item]
    assert daemon.readiness()[1]["devnet"]["why"] == "no block seen yet"
    daemon.chains = {"devnet": chain(time.monotonic())}  # type: ignore[dict-item]
    assert "why" not in daemon.readiness()[1]["devnet"]
