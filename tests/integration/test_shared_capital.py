"""One key, one balance: Aave and Morpho on one chain both repay in USDC. Each protocol's
capital stage allocated the keeper's whole USDC balance to its own liquidations, and what
the other (or the block before) had in flight was not subtracted: a by-hand trial's crash
asked for 1.61M USDC against 1.55M held, 13 liquidations reverted and the revert breaker
paused sending. Now what the key's liquidations in flight will pull is reserved across the
protocols: a crash larger than the keeper's USDC sends what it can pay for, and nothing
reverts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keeperd.config import parse_config
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.conftest import metric_series, metric_value
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    KEEPER_KEY,
    chain_health,
    devnet_chain,
    fund_keeper,
    keeper_key_env,
    morpho_protocol,
)

AWAY = "0x00000000000000000000000000000000000Dead1"
KEEP = 400_000 * 10**6  # (the keeper's USDC: less than the crash's USDC liquidations ask)


def keeper_short_of_usdc(devnet: Devnet, tmp_path: Path,
                         also: list[dict[str, Any]] | None = None) -> Any:
    """Aave and Morpho (and `also`) in liquidate mode on a keeper holding KEEP USDC."""
    fund_keeper(devnet)
    held = usdc_held(devnet)
    devnet.client.send(KEEPER, devnet.manifest["tokens"]["USDC"], contracts.aave(
        "MintableERC20").encode_call("transfer", AWAY, held - KEEP))
    return parse_config({
        "state_dir": str(tmp_path / "state"), "chains": [devnet_chain(devnet)],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]},
                      morpho_protocol(devnet), *(also or [])],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPER_KEY"}},
        "metrics": {"enabled": False}, "risk": {"cascade": {"enabled": False}}},
        env={"KEEPER_KEY": KEEPER_KEY})


def usdc_held(devnet: Devnet) -> int:
    usdc = devnet.manifest["tokens"]["USDC"]
    return int(devnet.client.eth_call(usdc, contracts.aave("MintableERC20").encode_call(
        "balanceOf", KEEPER)).hex(), 16)


async def test_two_protocols_on_one_token_never_spend_more_than_the_keeper_holds(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    config = keeper_short_of_usdc(devnet, tmp_path)
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.set_price_async("WETH", 2100.0)
        await keeper.evaluated_at(devnet.mine(1))
        for _ in range(3):
            await keeper.evaluated_at(devnet.mine(1))
    finally:
        devnet.client.call("evm_setAutomine", True)
    sent = {}
    for name in ("aave", "morpho"):
        journal = keeper.daemon.executors[name].journal
        usdc = devnet.manifest["tokens"]["USDC"]
        sent[name] = [e for e in await journal.all() if e.debt.lower() in (usdc.lower(), "usdc")]
        assert await journal.by_status(J.REVERTED) == [], name
        assert keeper.daemon.executors[name]._reverts == [], name
    # Both protocols liquidated USDC debt, within what the keeper held.
    assert sent["aave"] and sent["morpho"], {k: len(v) for k, v in sent.items()}
    assert 0 <= usdc_held(devnet) < KEEP


@pytest.mark.parametrize("first_block", ["before_mining", "while_mining"])
async def test_a_restart_reserves_what_its_resumed_liquidations_will_pull(
        devnet: Devnet, tmp_path: Path, run_daemon, first_block: str) -> None:
    """Stopped while a crash's liquidations wait in the pool, keeperd resumes them at its next
    start; what they will pull is the journal's, reserved again until they are mined. Without
    it the restarted keeper counted the whole balance for the crash's liquidations it had not
    sent yet, and 8 of the two sets reverted once mined. `while_mining`: the restarted
    keeper's first block evaluated while the next is mined (the resumed liquidations settled
    from the latest receipts, the balances read at its block: still counted)."""
    config = keeper_short_of_usdc(devnet, tmp_path)
    first = await run_daemon(config)
    await first.evaluated_at(devnet.client.block_number())
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.set_price_async("WETH", 2100.0)
        await first.evaluated_at(devnet.mine(1))
        in_pool = await first.daemon.executors["aave"].journal.by_status(J.PENDING)  # (one
        # state database: every protocol's)
        assert in_pool, "the crash's first liquidations were not sent"
        usdc = devnet.manifest["tokens"]["USDC"].lower()
        assert all(e.pulls for e in in_pool if e.debt.lower() == usdc)
        first.stop.set()
        await first.task
        second = await run_daemon(config)  # (the same state: it resumes them)
        if first_block == "before_mining":
            await second.evaluated_at(devnet.client.block_number())
        for _ in range(4):
            await second.evaluated_at(devnet.mine(1))
    finally:
        devnet.client.call("evm_setAutomine", True)
    for name in ("aave", "morpho"):
        journal = second.daemon.executors[name].journal
        assert await journal.by_status(J.REVERTED) == [], name
        assert second.daemon.executors[name]._reverts == [], name
        # Nor one simulated against a balance its resumed liquidations were taking.
        assert metric_series(second.daemon.metrics, "keeperd_liquidations_total", {
            "chain": "devnet", "protocol": name, "stage": "simulation_failed"}) is None, name
    assert 0 <= usdc_held(devnet) < KEEP
    # What the restarted keeper settled, it counts as resumed (not sent by it).
    assert sum(metric_value(second.daemon.metrics, "keeperd_liquidations_total", {
        "chain": "devnet", "protocol": name, "stage": "resumed"})
        for name in ("aave", "morpho")) == len(in_pool)


async def test_curies_margin_deposit_is_set_aside_from_the_others_liquidations(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Perp Curie's margin deposit takes the keeper's USDC into its vault (up to
    `keeper_margin_usd`); sent at start, it was not counted by Aave's and Morpho's capital
    stages, whose liquidations of the same block were planned on the whole wallet: mined
    behind the deposit, 7 reverted and both protocols paused for 50 blocks (a by-hand
    trial). The deposit's pull is reserved like a liquidation's."""
    config = keeper_short_of_usdc(devnet, tmp_path, also=[{
        "kind": "perp_curie", "name": "curie", "chain": "devnet",
        "clearing_house": devnet.manifest["perp_curie"]["clearing_house"],
        "asset_symbols": {"vETH": "WETH", "vBTC": "WBTC"}, "keeper_margin_usd": 2_000_000}])
    usdc, erc20 = devnet.manifest["tokens"]["USDC"], contracts.aave("MintableERC20")
    for spender in (devnet.manifest["aave_v3"]["pool"], devnet.manifest["morpho_blue"]["morpho"],
                    devnet.manifest["perp_curie"]["vault"]):  # (no approval waits at start)
        devnet.client.send(KEEPER, usdc, erc20.encode_call("approve", spender, 2**255))
    devnet.set_price("WETH", 2100.0)  # (the crash mined before the start: its first block)
    devnet.client.call("evm_setAutomine", False)  # (the deposit stays in the pool meanwhile)
    try:
        keeper = await run_daemon(config)
        await keeper.evaluated_at(devnet.client.block_number())
        for _ in range(3):
            await keeper.evaluated_at(devnet.mine(1))
    finally:
        devnet.client.call("evm_setAutomine", True)
    journal = keeper.daemon.executors["aave"].journal
    assert await journal.by_status(J.REVERTED) == []
    assert not [e for e in await journal.all() if e.debt.lower() == usdc.lower()], \
        "a USDC liquidation was sent against the USDC the deposit took"
    assert usdc_held(devnet) == 0  # (the deposit took it all: the config's margin wants more)
