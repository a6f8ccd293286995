"""What replicas of one database compare (`shared_config`): everything a takeover would change
in what is told or done, secrets only by digest. Trial 28: a standby left on its old
watchlist (only the leader was reloaded) said nothing, took over, told the holder a position
'is no longer watched' and nothing more as it fell to critical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keeperd.config import parse_config
from keeperd.storage.lease import mismatch
from keeperd.storage.shared_config import (
    differing,
    refused_at_start,
    reloadable,
    shared_config,
)

ALICE = "0x9c90c1e3e6bfa1a7e3b2b2ef0e2a8db2b5f6ac90"
BOB = "0x1111111111111111111111111111111111111111"
SECRET = "s" * 32
REFERENCE_KEY = "referencekey0123456789"
RELAY_KEY = "relaykey0123456789abcdef"


def config(tmp_path: Path, **change: Any) -> Any:
    """A replica's config; `change` replaces top-level sections, or `alerts`' parts."""
    alerts: dict[str, Any] = {
        "routes": [{"name": "ops", "sinks": [{"kind": "webhook", "url": "https://h.example/k",
                                              "secret": "${HOOK}"}]}],
        "watchlists": [{"name": "alice", "accounts": [ALICE], "route": "ops"}],
        "silences": [{"matchers": ["rule=cascade"]}],
        **change.pop("alerts", {})}
    return parse_config({
        "state_dir": str(tmp_path / change.pop("host", "a")),
        "storage": {"url": "postgresql://k@127.0.0.1/k"},
        "chains": change.pop("chains", [{"name": "devnet", "chain_id": 1,
                                         "rpc_urls": ["http://127.0.0.1:1"]}]),
        "alerts": alerts, **change}, env={"HOOK": SECRET})


def parts_differing(tmp_path: Path, **change: Any) -> list[str]:
    return differing(shared_config(config(tmp_path)), shared_config(config(tmp_path, **change)))


def test_the_same_config_on_two_hosts_does_not_differ(tmp_path: Path) -> None:
    # Each host's own: its state directory, its endpoints, its metrics and logs, its CPUs.
    assert parts_differing(
        tmp_path, host="b", metrics={"port": 9999}, logging={"level": "debug"},
        risk={"cascade": {"threads": 4}},
        chains=[{"name": "devnet", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:2"],
                 "poll_interval": 0.5, "rate_limit": 10}]) == []


def test_a_watchlist_rules_silences_inhibition_routes_and_oracles_are_compared(
        tmp_path: Path) -> None:
    assert parts_differing(tmp_path, alerts={"watchlists": [
        {"name": "alice", "accounts": [ALICE, BOB], "route": "ops"}]}) == ["alerts.watchlists"]
    assert parts_differing(tmp_path, alerts={"watchlists": [
        {"name": "alice", "accounts": [ALICE], "route": "ops", "critical": 1.1}]}) == \
        ["alerts.watchlists"]
    assert parts_differing(tmp_path, alerts={"rules": {"oracle": {"enabled": False}}}) == \
        ["alerts.rules"]
    assert parts_differing(tmp_path, alerts={"silences": []}) == ["alerts.silences"]
    assert parts_differing(tmp_path, alerts={"inhibition": "hold"}) == ["alerts.inhibition"]
    assert parts_differing(tmp_path, alerts={"routes": [
        {"name": "ops", "repeat_interval_s": 60, "sinks": [
            {"kind": "webhook", "url": "https://h.example/k", "secret": "${HOOK}"}]}]}) == \
        ["alerts.routes"]
    assert parts_differing(tmp_path, oracles={"max_jump": 0.5}) == ["oracles"]
    assert parts_differing(tmp_path, keeper={"min_profit_usd": 50}) == ["keeper"]
    assert parts_differing(tmp_path, risk={"cascade": {"shocks": [0.1]}}) == ["risk.cascade"]
    assert parts_differing(tmp_path, chains=[{"name": "devnet", "chain_id": 1, "rpc_urls": [
        "http://127.0.0.1:1"], "confirmations": 5}]) == ["chains.settings"]


def test_the_lines_name_what_differs(tmp_path: Path) -> None:
    """Which watchlist, which rule, which oracle setting: the error names it."""
    one = shared_config(config(tmp_path))
    two = shared_config(config(tmp_path, oracles={"max_jump": 0.5}, alerts={
        "rules": {"oracle": {"enabled": False}},
        "watchlists": [{"name": "alice", "accounts": [ALICE, BOB], "route": "ops"},
                       {"name": "bob", "accounts": [BOB], "route": "ops"}]}))
    # (alice's line changed with her accounts, bob's is new)
    assert not set(two["alerts.watchlists"]) & set(one["alerts.watchlists"])
    assert [w.split(" (")[0] for w in two["alerts.watchlists"]] == \
        ["alice: accounts 2, levels and route", "bob: accounts 1, levels and route"]
    assert [r.split(" ")[0] for r in two["alerts.rules"] if r not in one["alerts.rules"]] \
        == ["oracle"]
    assert "max_jump 0.5" in two["oracles"] and "max_jump 0.25" in one["oracles"]
    # Of a section of many fields, only the lines that differ are said (all 11 of `oracles`
    # were, on both sides, for one `max_jump`: a by-hand trial).
    from keeperd.storage.lease import config_difference

    said = config_difference(["oracles"], one, two, "the leader's")
    assert said == "oracles: the leader's max_jump 0.25; this one's max_jump 0.5", said


def test_secrets_are_compared_by_digest_never_in_clear(tmp_path: Path) -> None:
    def shared(secret_url: str) -> dict[str, list[str]]:
        return shared_config(config(
            tmp_path, keeper={"private_rpc_url": f"https://relay.example/{secret_url}"},
            oracles={"references": [{"kind": "coinbase", "name": "cb", "markets": {
                "WETH": "ETH-USD"}, "url": f"https://api.example/?key={secret_url}"}]}))

    ours, another_key = shared(REFERENCE_KEY), shared(RELAY_KEY)
    text = str(ours)
    assert SECRET not in text and REFERENCE_KEY not in text and ALICE not in text.lower()
    # A reference's URL (its key in it) is compared; a private relay's is each host's own
    # credential: only whether one is set.
    assert differing(ours, another_key) == ["oracles"]
    assert "private_rpc_url set" in ours["keeper"]
    assert parts_differing(tmp_path, keeper={"private_rpc_url": "https://relay.example/x"}) \
        == ["keeper"]


def test_a_difference_only_in_what_sighup_reloads_lets_a_replica_start_and_says_reload(
        tmp_path: Path) -> None:
    """A rolling restart onto a new watchlist, or a new oracle setting, must get through (the
    first restarted replica would be refused beside the leader's old one); the running check
    says it, and the fix of a watchlist is a reload of each replica, not a stop of all. What
    refused a start before (the chains, the protocols, the capital, the sinks, the lease's
    timing) still does."""
    assert reloadable("alerts.watchlists") and reloadable("alert sinks")
    assert not reloadable("oracles") and not reloadable("protocols")
    assert refused_at_start("alert sinks") and refused_at_start("protocols")
    assert not refused_at_start("alerts.watchlists") and not refused_at_start("oracles")
    ident, key = "0xk@1", "0xk"
    leader = shared_config(config(tmp_path))
    newer = shared_config(config(tmp_path, alerts={"watchlists": [
        {"name": "alice", "accounts": [ALICE, BOB], "route": "ops"}]}))
    live = [(ident, key, "liquidate", leader)]
    assert mismatch(ident, key, "liquidate", live, newer, starting=True) is None
    said = mismatch(ident, key, "liquidate", live, newer)
    assert said is not None and "alerts.watchlists: the leader's alice: accounts 1" in said
    assert "reload each (systemctl reload keeperd" in said
    other_oracles = shared_config(config(tmp_path, oracles={"max_jump": 0.5}))
    assert mismatch(ident, key, "liquidate", live, other_oracles, starting=True) is None
    said = mismatch(ident, key, "liquidate", live, other_oracles)
    assert said is not None and "oracles: the leader's" in said
    # (a rolling restart gets through for it: "stop every replica" took the keeper down for
    # nothing, a by-hand trial; a sink's difference still refuses a start, and says so)
    assert "restart them one at a time" in said and "stop every replica" not in said
    other_sinks = shared_config(config(tmp_path, alerts={"routes": [{"name": "ops", "sinks": [
        {"kind": "webhook", "url": "https://elsewhere.example/k", "secret": "${HOOK}"}]}]}))
    said = mismatch(ident, key, "liquidate", live, other_sinks, starting=True)
    assert said is not None and "stop every replica" in said


def test_a_lease_row_whose_shared_config_does_not_read_crashes_no_comparison(
        tmp_path: Path) -> None:
    """`shared` as another keeperd (or a hand) wrote it: parts that are not lists of lines are
    left out. `{"chains": 5}` in a live row raised in every standby's comparison, every 30 s,
    and at every start: no standby, no start (a review)."""
    import json

    from keeperd.storage.lease import _shared

    ours = shared_config(config(tmp_path))
    for text in ('{"chains": 5}', '{"alerts.rules": null}', '{"alerts.rules": [1]}',
                 '{"chains": "x"}', "[1, 2]", "not json"):
        theirs = _shared(text)
        assert theirs is None or all(isinstance(v, list) for v in theirs.values()), text
        live = [("0xk@1", "0xk", "liquidate", theirs)]
        mismatch("0xk@1", "0xk", "liquidate", live, ours, starting=True)  # (no raise)
        mismatch("0xk@1", "0xk", "liquidate", live, ours)
    kept = _shared(json.dumps({**ours, "alerts.rules": 7}))
    assert kept is not None and "alerts.rules" not in kept and kept["chains"] == ours["chains"]


async def test_a_standby_says_once_that_the_leader_runs_an_older_keeperd(
        tmp_path: Path) -> None:
    """A rolling upgrade: an older keeperd's lease names no mode and no config, and the
    standby compared nothing and said nothing of it (trial 30)."""
    from types import SimpleNamespace

    import structlog

    from keeperd.config import LeaseConfig
    from keeperd.metrics import Metrics
    from keeperd.storage.replica import Replica

    live: list[Any] = [("0xk@1", "0xk", None, None)]

    async def live_elsewhere() -> list[Any]:
        return live

    lease: Any = SimpleNamespace(identity="0xk@1", address="0xk", mode="liquidate",
                                 shared=shared_config(config(tmp_path)),
                                 live_elsewhere=live_elsewhere, epoch=None)
    replica = Replica(lease, LeaseConfig(), Metrics())
    with structlog.testing.capture_logs() as logs:
        await replica._check_config()
        await replica._check_config()
        live[:] = [("0xk@1", "0xk", "liquidate", lease.shared)]  # (upgraded)
        await replica._check_config()
    said = [e for e in logs if e["event"] == "replica.leader_older"]
    assert len(said) == 1 and said[0]["leaders"] == ["0xk@1"]
    assert "finish the upgrade" in said[0]["fix"]
    assert not [e for e in logs if e["event"] == "replica.config_differs"]
