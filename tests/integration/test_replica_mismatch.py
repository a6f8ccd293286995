"""Replicas sharing a database run one keeper: the same key on the same chains, in one mode.
A replica that does not refuses to start, naming the field. A by-hand trial joined a dry-run
replica to a liquidating one: it took the lease at the next expiry and a crash went
unliquidated, with no alert; and an alert-only replica without the key led beside them (its
own lease, `watch@…`) and told every alert again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keeperd.config import parse_config
from keeperd.daemon import StartupError
from keeperd.devnet.handle import Devnet
from keeperd.storage.lease import Lease, identity_of, mismatch
from tests.conftest import metric_value
from tests.keeper_harness import KEEPER, KEEPER_KEY


def replica(devnet: Devnet, tmp_path: Path, dsn: str, name: str,
            keeper: dict[str, Any]) -> Any:
    return parse_config({
        "state_dir": str(tmp_path / name),
        "storage": {"url": dsn, "lease": {"length_s": 3.0, "renew_every_s": 1.0,
                                          "statement_timeout_s": 0.8}},
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]], "confirmations": 0}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}],
        "keeper": keeper, "metrics": {"enabled": False}})


async def test_a_replica_of_another_mode_or_key_refuses_to_join(
        devnet: Devnet, tmp_path: Path, postgres_dsn: str, run_daemon,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    key = {"source": "env", "env": "KEEPER_KEY"}
    leader = Lease(postgres_dsn, identity_of(KEEPER, [31337]), holder="replica-a",
                   address=KEEPER, chain_ids=[31337], mode="liquidate")
    await leader.connect()
    try:
        assert await leader.try_acquire() is not None
        # check-config says what run will (it said OK of a replica run refused: a trial)
        from keeperd.checks import storage_issues

        [said] = await storage_issues(replica(devnet, tmp_path, postgres_dsn, "b",
                                              {"mode": "dry-run", "key": key}))
        assert said.path == "storage.url" and "runs keeper.mode liquidate, this one dry-run" \
            in said.message
        with pytest.raises(StartupError, match=r"runs keeper\.mode liquidate, this one "
                                               r"dry-run"):
            await run_daemon(replica(devnet, tmp_path, postgres_dsn, "b",
                                     {"mode": "dry-run", "key": key}))
        with pytest.raises(StartupError, match="led by another keeper"):
            await run_daemon(replica(devnet, tmp_path, postgres_dsn, "c",
                                     {"mode": "alert-only"}))
        # The same keeper in the same mode joins, as a standby. (the wallet set first: the
        # standby reads it every few blocks, from its first evaluation)
        devnet.client.call("anvil_setBalance", KEEPER, hex(7 * 10**17))
        standby = await run_daemon(replica(devnet, tmp_path, postgres_dsn, "d",
                                           {"mode": "liquidate", "key": key}))
        assert standby.daemon.replica is not None and standby.daemon.replica.lease.epoch is None
        # A standby reads the wallet too: a replica that never led exported no balance, and
        # one that led once its last for good (KeeperdLowGas paged on a full wallet).
        await standby.evaluated_at(devnet.mine(1))
        assert metric_value(standby.daemon.metrics, "keeperd_keeper_balance",
                            {"chain": "devnet", "asset": "native"}) == pytest.approx(0.7)
    finally:
        await leader.close()


def test_what_a_replica_may_join() -> None:
    ours = identity_of(KEEPER, [1])
    assert mismatch(ours, KEEPER, "liquidate", []) is None
    assert mismatch(ours, KEEPER, "liquidate",
                    [(ours, KEEPER.lower(), "liquidate", None)]) is None
    # (a lease an older keeperd wrote says no mode: not refused for it)
    assert mismatch(ours, KEEPER, "dry-run", [(ours, KEEPER.lower(), None, None)]) is None
    said = mismatch(ours, KEEPER, "dry-run", [(ours, KEEPER.lower(), "liquidate", None)])
    assert said is not None and said.startswith("storage.url: the replica leading")
    said = mismatch("watch@1", "watch", "alert-only",
                    [(ours, KEEPER.lower(), "liquidate", None)])
    assert said is not None and "led by another keeper" in said
    # One config: the leader's protocols, chains, sinks and lease timing (a replica without
    # Curie led a crash of it, unliquidated and unalerted: a by-hand trial)
    full = {"protocols": ["aave (aave_v3 on devnet)", "curie (perp_curie on devnet)"],
            "chains": ["devnet (chain id 1)"], "version": ["2"]}
    less = {**full, "protocols": ["aave (aave_v3 on devnet)"]}
    leader = [(ours, KEEPER.lower(), "liquidate", full)]
    assert mismatch(ours, KEEPER, "liquidate", leader, full) is None
    said = mismatch(ours, KEEPER, "liquidate", leader, less)
    assert said is not None and ("protocols: the leader's aave (aave_v3 on devnet), curie "
                                 "(perp_curie on devnet); this one's aave (aave_v3 on "
                                 "devnet)") in said
    # (a lease an older keeperd wrote says nothing of its config: not refused for it; one of
    # another version is compared on the parts both know)
    assert mismatch(ours, KEEPER, "liquidate", [(ours, KEEPER.lower(), "liquidate", None)],
                    less) is None
    newer = [(ours, KEEPER.lower(), "liquidate", {**full, "version": ["3"], "new part": ["x"]})]
    assert mismatch(ours, KEEPER, "liquidate", newer, full) is None


def test_the_shared_config_sees_a_sinks_destination_and_secret_never_in_clear(
        tmp_path: Path) -> None:
    """A replica with another webhook secret joined, and after the failover every webhook
    carried a signature the receiver could not verify; an explicit `id:` let another URL
    through; another chain name told every firing alert again (a by-hand trial)."""
    from keeperd.storage.shared_config import shared_config

    def config(secret: str = "", url: str = "https://hooks.example/k", chain: str = "devnet",
               **sink: str) -> Any:
        given = {"secret": "${HOOK}"} if secret else {}
        return parse_config({
            "state_dir": str(tmp_path), "storage": {"url": "postgresql://k@127.0.0.1/k"},
            "chains": [{"name": chain, "chain_id": 1, "rpc_urls": ["http://127.0.0.1:1"]}],
            "alerts": {"routes": [{"name": "ops", "sinks": [
                {"kind": "webhook", "url": url, **given, **sink}]}]}}, env={"HOOK": secret})

    one = shared_config(config("s" * 32))
    assert one == shared_config(config("s" * 32))
    assert one["alert sinks"] != shared_config(config("t" * 32))["alert sinks"]
    assert "s" * 32 not in str(one)  # (a digest, never the secret)
    same_id = shared_config(config("s" * 32, url="https://other.example/k",
                                   id=one["alert sinks"][0].split(": ")[1].split(" ")[0]))
    assert one["alert sinks"] != same_id["alert sinks"]
    assert one["chains"] != shared_config(config("s" * 32, chain="mainnet"))["chains"]
    # A secret from a file: its content counts, not the path (each unit has its own)
    for name in ("a", "b"):
        (tmp_path / name).write_text("s" * 32 + "\n")
        (tmp_path / name).chmod(0o600)
    assert shared_config(config(secret_file=str(tmp_path / "a"))) == \
        shared_config(config(secret_file=str(tmp_path / "b")))


async def test_a_replica_of_another_config_refuses_to_join(
        devnet: Devnet, tmp_path: Path, postgres_dsn: str, run_daemon,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    key = {"source": "env", "env": "KEEPER_KEY"}
    first = await run_daemon(replica(devnet, tmp_path, postgres_dsn, "a",
                                     {"mode": "liquidate", "key": key}))
    assert first.daemon.replica is not None
    other = replica(devnet, tmp_path, postgres_dsn, "b", {"mode": "liquidate", "key": key})
    other = other.model_copy(update={"storage": other.storage.model_copy(update={
        "lease": other.storage.lease.model_copy(update={"length_s": 6.0})})})
    with pytest.raises(StartupError, match=r"storage\.lease: the leader's length_s 3, "
                                           r"renew_every_s 1; this one's length_s 6"):
        await run_daemon(other)
