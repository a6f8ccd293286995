"""The documented path into production (docs/operations.md): dry-run through a crash, look at
what it would do, then switch to liquidate on the same state directory — on a fresh keeper
that has never approved anything."""

from __future__ import annotations

from pathlib import Path

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    chain_health,
    config_for,
    fund_keeper,
    keeper_key_env,
)


async def test_a_dry_run_shows_what_liquidate_then_sends(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)  # funded, never approved: dry-run sends no approvals
    assert devnet.client.call("eth_call", {"to": devnet.manifest["tokens"]["USDC"],
                                           "data": "0xdd62ed3e" + KEEPER[2:].lower().rjust(64, "0")
                                           + devnet.manifest["aave_v3"]["pool"][2:].lower()
                                           .rjust(64, "0")}, "latest") == "0x" + "0" * 64
    dry = await run_daemon(config_for(devnet, tmp_path, "dry-run", address=KEEPER))
    await dry.evaluated_at(devnet.client.block_number())
    nonce = devnet.client.call("eth_getTransactionCount", KEEPER, "latest")
    devnet.set_price("WETH", 2100.0)
    crash = devnet.client.block_number()
    await dry.evaluated_at(crash)
    journal = dry.daemon.executors["aave"].journal
    recorded = {e.account for e in await journal.by_status(J.DRY_RUN)}
    underwater = {b["address"] for b in devnet.manifest["borrowers"]
                  if chain_health(devnet, b["address"]) < 1.0}
    # What liquidate would do: nearly every account under water, simulated as if approved.
    assert len(recorded) >= 0.9 * len(underwater) > 20, (len(recorded), len(underwater))
    assert devnet.client.call("eth_getTransactionCount", KEEPER, "latest") == nonce
    dry.stop.set()
    await dry.task

    # The same state directory in liquidate mode: what the dry-run recorded is sent.
    live = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                       key={"source": "env", "env": "KEEPER_KEY"}))
    for _ in range(4):
        await live.evaluated_at(devnet.mine(1))
    journal = live.daemon.executors["aave"].journal
    included = {e.account for e in await journal.by_status(J.INCLUDED)}
    assert recorded <= included, sorted(recorded - included)[:5]
    assert await journal.by_status(J.DRY_RUN) == []
