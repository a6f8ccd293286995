"""What a reload says of the changes that wait for a restart (`restart_pending.py`), and how
`keeperd status` shows them; the daemon's reload on a devnet is
tests/integration/test_reload_restart.py."""

from __future__ import annotations

from typing import Any

from keeperd.config import parse_config
from keeperd.restart_pending import (
    RestartPending,
    protocol_changes,
    protocols_to_check,
    restart_sections,
)
from keeperd.status import restart_line

MARKET = "0x" + "11" * 32
OTHER = "0x" + "22" * 32


def config(markets: list[str], *, poll: float = 1.0, aave: bool = True,
           venue_url: str | None = None) -> Any:
    protocols: list[dict[str, Any]] = [
        {"kind": "morpho_blue", "name": "morpho", "chain": "devnet",
         "morpho": "0x" + "33" * 20, "markets": markets}]
    if aave:
        protocols.append({"kind": "aave_v3", "name": "aave", "chain": "devnet",
                          "addresses_provider": "0x" + "44" * 20})
    if venue_url is not None:
        protocols.append({"kind": "hyperliquid", "name": "hl", "api_url": venue_url,
                          "accounts": ["0x" + "55" * 20]})
    return parse_config({
        "state_dir": "/tmp/keeperd-test",
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": ["http://127.0.0.1:8545"],
                    "poll_interval": poll}],
        "protocols": protocols}, env={})


def test_the_changes_are_named_without_their_values() -> None:
    old = config([MARKET])
    assert restart_sections(old, config([MARKET])) == []
    new = config([MARKET, OTHER])
    assert restart_sections(old, new) == ["protocols"]
    assert protocol_changes(old, new) == {"morpho": "markets 1 added"}
    assert protocol_changes(old, config([OTHER])) == {"morpho": "markets 1 added and 1 removed"}
    assert protocol_changes(old, config([MARKET], aave=False)) == {"aave": "removed"}
    assert protocol_changes(config([MARKET], aave=False), old) == {
        "aave": "added (aave_v3 on devnet)"}
    # (a venue's URL may carry its key: its field is named, never its value)
    key = "https://api.example/k3y-s3cret"
    said = protocol_changes(config([MARKET], venue_url="https://api.example"),
                            config([MARKET], venue_url=key))
    assert said == {"hl": "api_url changed"} and "s3cret" not in str(said)


def test_the_protocols_a_restart_would_start_differently_are_checked() -> None:
    old = config([MARKET])
    assert protocols_to_check(old, config([MARKET, OTHER])) == [0]  # (morpho alone)
    # (a chain's settings changed: every protocol on it starts differently)
    assert protocols_to_check(old, config([MARKET], poll=2.0)) == [0, 1]
    assert protocols_to_check(old, config([MARKET], aave=False)) == []  # (nothing to start)
    # (a venue has no chain to start on: its own poll says)
    assert protocols_to_check(old, config([MARKET], venue_url="https://api.example")) == []


def test_status_says_what_waits_and_whether_the_restart_would_start() -> None:
    pending = RestartPending(["protocols"], ["morpho: markets 1 added"],
                             {"morpho": "markets 1 added"}, since=1000.0, check="checking")
    line = restart_line(pending.as_status(), now=1000.0 + 600)
    assert line.startswith("protocols changed in the file (reloaded 10 min ago: morpho: "
                           "markets 1 added) — checking; restart keeperd"), line
    pending.check, pending.problems = "would fail", ["protocols[0]: keeperd run would not "
                                                     "start it: StartRefused: no market 0x11"]
    line = restart_line(pending.as_status(), now=1000.0 + 600)
    assert "a restart WOULD FAIL: protocols[0]: keeperd run would not start it" in line
    assert line.endswith("correct the file and reload")
