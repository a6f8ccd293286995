"""A top-up of the keeper's wallet is approved as soon as a liquidation needs it. Bounded
approvals (protocols/sdk/approvals.py) approve the balance at start and every few blocks:
USDC sent to the keeper after a shortfall alert — when a crash is on — was approved only at
the next balances, and meanwhile the capital stage planned on the whole balance and each
liquidation past the old allowance failed its simulation, block after block (Curie's collateral
liquidations after `devnet fund`: a by-hand trial). Now the capital stage reads what each
spender may pull beside the balances: what the allowance does not cover waits (not "fund the
keeper": the funds are there), and the approval goes at the crash block's end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.conftest import metric_series
from tests.integration.test_shared_capital import AWAY, usdc_held
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    config_for,
    crash_and_collect,
    fund_keeper,
    keeper_key_env,
)

KEEP = 1_000 * 10**6  # the keeper's USDC at start: all its allowance


async def test_a_top_up_is_approved_when_a_crash_needs_it_and_nothing_fails_for_it(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    erc20 = contracts.aave("MintableERC20")
    usdc, pool = devnet.manifest["tokens"]["USDC"], devnet.manifest["aave_v3"]["pool"]
    fund_keeper(devnet)
    devnet.client.send(KEEPER, usdc, erc20.encode_call("transfer", AWAY,
                                                       usdc_held(devnet) - KEEP))
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.mine(1))
    allowed = int(devnet.client.eth_call(usdc, erc20.encode_call("allowance", KEEPER,
                                                                 pool)).hex(), 16)
    assert allowed == KEEP
    # The operator's top-up, then the crash.
    minter = devnet.client.accounts()[0]
    devnet.client.send(minter, usdc, erc20.encode_call("mint", KEEPER, 50_000_000 * 10**6))
    devnet.client.call("evm_setAutomine", False)
    try:
        with structlog.testing.capture_logs() as logs:
            crash, journal, _ = await crash_and_collect(devnet, keeper)
            await approval_sent(devnet, usdc)  # (at the block's end, after its liquidations)
            for _ in range(2):
                await keeper.evaluated_at(devnet.mine(1))
    finally:
        devnet.client.call("evm_setAutomine", True)
    events = [e["event"] for e in logs]
    [behind] = [e for e in logs if e["event"] == "keeper.allowance_behind"]
    assert behind["asset"] == "USDC" and behind["token"].lower() == usdc.lower()
    assert behind["block"] == crash
    assert int(behind["allowance"]) <= KEEP
    [waiting] = [e for e in logs if e["event"] == "liquidation.awaiting_approval"]
    assert waiting["block"] == crash and waiting["assets"] == ["USDC"]
    held = waiting["liquidations"]
    assert held > 0
    # The approval went at the crash block's end, mined in the next; the liquidations it
    # held went in the block after that. None of them failed a simulation for it, and no
    # shortfall was said: the funds were there.
    approvals = [t for t in devnet.client.call("eth_getBlockByNumber", hex(crash + 1),
                                               True)["transactions"]
                 if t["from"].lower() == KEEPER.lower() and t["input"].startswith("0x095ea7b3")
                 and t["to"].lower() == usdc.lower()]
    assert len(approvals) == 1
    in_usdc = [e for e in await journal.all() if e.debt in ("USDC", usdc)]
    assert len(in_usdc) >= held
    assert all(e.status in (J.PENDING, J.INCLUDED) for e in in_usdc), [
        (e.key, e.status, e.detail) for e in in_usdc]
    assert "liquidation.simulation_failed" not in events
    labels = {"chain": "devnet", "protocol": "aave"}
    assert not metric_series(keeper.daemon.metrics, "keeperd_liquidations_total",
                             {**labels, "stage": "simulation_failed"})
    assert "liquidation.no_capital" not in events
    assert not metric_series(keeper.daemon.metrics, "keeperd_liquidations_total",
                             {**labels, "stage": "no_capital"})


async def approval_sent(devnet: Devnet, token: str, limit_s: float = 10.0) -> None:
    """Until the keeper's approval of `token` waits in the pool."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        pending = devnet.client.call("txpool_content")["pending"]
        mine = next((txs for sender, txs in pending.items()
                     if sender.lower() == KEEPER.lower()), {})
        if any(t["to"] and t["to"].lower() == token.lower()
               and t["input"].startswith("0x095ea7b3") for t in mine.values()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no approval of {token} sent")


async def test_one_endpoint_saying_the_allowance_is_gone_holds_nothing(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The first endpoint answers every allowance with zero; the second tells the truth: a
    crash's liquidations go in its block (one endpoint's word held them all, "awaiting
    approval", and had an approval sent each block)."""
    from eth_utils import function_signature_to_4byte_selector

    from tests.faults.chaos_proxy import ChaosProxy

    fund_keeper(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        keeper = await run_daemon(config_for(
            devnet, tmp_path, "liquidate", rpc_urls=[liar.url, devnet.manifest["rpc_url"]],
            key={"source": "env", "env": "KEEPER_KEY"}))
        await keeper.evaluated_at(devnet.mine(1))
        liar.call_lies["0x" + function_signature_to_4byte_selector(
            "allowance(address,address)").hex()] = "0x" + "00" * 32
        devnet.client.call("evm_setAutomine", False)
        try:
            with structlog.testing.capture_logs() as logs:
                _, _, sent = await crash_and_collect(devnet, keeper)
        finally:
            devnet.client.call("evm_setAutomine", True)
        assert liar.faulted["eth_call"] > 0  # (asked, and lied)
    assert len(sent) > 20
    assert [e for e in logs if e["event"] in ("liquidation.awaiting_approval",
                                              "keeper.allowance_behind")] == []


async def test_a_position_held_for_an_approval_is_not_forgone_twice(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """A crash the keeper's USDC cannot pay for: each forgone liquidation is counted once
    (`no_capital`). A top-up makes them wait for its approval; the USDC is then gone again
    (spent elsewhere) and they are short once more: still counted once each (they were
    counted again after the hold, the forgone profit growing for the same positions: a
    by-hand trial, where another protocol spent the top-up)."""
    from eth_hash.auto import keccak

    erc20 = contracts.aave("MintableERC20")
    usdc = devnet.manifest["tokens"]["USDC"]
    fund_keeper(devnet)
    devnet.client.send(KEEPER, usdc, erc20.encode_call("transfer", AWAY,
                                                       usdc_held(devnet) - KEEP))
    # (OpenZeppelin's ERC20: balances are the mapping at slot 0)
    slot = "0x" + keccak(bytes(12) + bytes.fromhex(KEEPER[2:]) + bytes(32)).hex()
    assert int(devnet.client.call("eth_getStorageAt", usdc, slot, "latest"), 16) == KEEP
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.mine(1))
    labels = {"chain": "devnet", "protocol": "aave", "stage": "no_capital"}
    devnet.client.call("evm_setAutomine", False)
    try:
        await crash_and_collect(devnet, keeper)
        await keeper.evaluated_at(devnet.mine(1))
        forgone = metric_series(keeper.daemon.metrics, "keeperd_liquidations_total", labels)
        assert forgone, "the crash forgave nothing: no shortfall to count"
        devnet.client.call("eth_sendTransaction", {  # (the operator's top-up)
            "from": devnet.client.accounts()[0], "to": usdc,
            "data": "0x" + erc20.encode_call("mint", KEEPER, 50_000_000 * 10**6).hex()})
        with structlog.testing.capture_logs() as logs:
            await keeper.evaluated_at(devnet.mine(1))
            await approval_sent(devnet, usdc)
        assert [e for e in logs if e["event"] == "liquidation.awaiting_approval"]
        # The top-up spent elsewhere before the next block: short again.
        devnet.client.call("anvil_setStorageAt", usdc, slot, "0x" + f"{KEEP:064x}")
        for _ in range(2):
            await keeper.evaluated_at(devnet.mine(1))
    finally:
        devnet.client.call("evm_setAutomine", True)
    assert metric_series(keeper.daemon.metrics, "keeperd_liquidations_total",
                         labels) == forgone
