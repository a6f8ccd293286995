"""The keeper on the devnet, for the tests that run it: the devnet keeper's key (anvil's
published test account 5), its funding, a config for it, and the crash helpers (`run_daemon`,
a daemon in this process, is tests/conftest.py's). It lived in
tests/integration/test_liquidation.py, which 40 other test modules imported it from (#30 item
6): a test module is no place for shared fixtures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keeperd.config import parse_config
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.conftest import Running

KEEPER_KEY = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"
KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
LIQUIDATION_CALL_TOPIC = "0xe413a321e8681d831f4dbccbca790d2952b56f977908e45be37335533e005286"


def fund_keeper(devnet: Devnet, address: str = KEEPER, approve: bool = False) -> None:
    """$50M of every reserve's token (approved once, from zero: USDT-like tokens allow no
    more)."""
    token = contracts.aave("MintableERC20")
    devnet.client.call("anvil_setBalance", address, hex(100 * 10**18))
    for symbol, reserve in devnet.manifest["aave_v3"]["reserves"].items():
        amount = int(50_000_000 / devnet.manifest["prices_usd"][symbol])
        decimals = reserve["decimals"]
        address_token = devnet.manifest["tokens"][symbol]
        devnet.client.send(address, address_token,
                           token.encode_call("mint", address, amount * 10**decimals))
        if approve:
            devnet.client.send(address, address_token, token.encode_call(
                "approve", devnet.manifest["aave_v3"]["pool"], 2**256 - 1))


def config_for(devnet: Devnet, tmp_path: Path, mode: str, *, rpc_urls: list[str] | None = None,
               **keeper: object):
    return parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": rpc_urls or [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"],
                       "cross_check_every": 1}],
        "keeper": {"mode": mode, "min_profit_usd": 1.0, **keeper},
        "metrics": {"enabled": False},
    }, env={"KEEPER_KEY": KEEPER_KEY})


async def liquidating(devnet: Devnet, tmp_path: Path, run_daemon: Any) -> tuple[Any, Any]:
    """A funded keeper in liquidate mode (its key from the environment), caught up with the
    head: (its config, the running daemon)."""
    fund_keeper(devnet)
    config = config_for(devnet, tmp_path, "liquidate", key={"source": "env", "env": "KEEPER_KEY"})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    return config, keeper


def devnet_chain(devnet: Devnet) -> dict[str, Any]:
    """The devnet as a config's chain, its one endpoint polled fast."""
    return {"name": "devnet", "chain_id": 31337, "rpc_urls": [devnet.manifest["rpc_url"]],
            "confirmations": 0, "poll_interval": 0.1}


def morpho_protocol(devnet: Devnet, **extra: Any) -> dict[str, Any]:
    """Morpho Blue with every devnet market, as a config's protocol."""
    blue = devnet.manifest["morpho_blue"]
    return {"kind": "morpho_blue", "name": "morpho", "chain": "devnet",
            "morpho": blue["morpho"], "markets": [m["id"] for m in blue["markets"].values()],
            **extra}


def aave_and_morpho_config(devnet: Devnet, tmp_path: Path, keeper: dict[str, Any],
                           **extra: Any):  # type: ignore[no-untyped-def]
    """Aave and Morpho Blue (every devnet market) on the devnet, the cascade monitor off."""
    return parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [devnet_chain(devnet)],
        "protocols": [
            {"kind": "aave_v3", "name": "aave", "chain": "devnet",
             "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]},
            morpho_protocol(devnet)],
        "keeper": keeper, "metrics": {"enabled": False},
        "risk": {"cascade": {"enabled": False}}, **extra}, env={"KEEPER_KEY": KEEPER_KEY})


async def crash_and_collect(devnet: Devnet, keeper: Running, usd: float = 2100.0
                            ) -> tuple[int, J.Journal, list[J.JournalEntry]]:
    """With automine off (blocks come when mined): move WETH, mine the block, let keeperd
    evaluate it; return that block, the journal and what keeperd sent (still pending)."""
    devnet.set_price_async("WETH", usd)
    crash = devnet.mine(1)
    await keeper.evaluated_at(crash)
    journal = keeper.daemon.executors["aave"].journal
    return crash, journal, await journal.by_status(J.PENDING)


def chain_health(devnet: Devnet, account: str) -> float:
    return devnet.account_data(account)[5] / 1e18


async def assert_declined(executor: Any, accounts: set[str]) -> None:
    """Each of `accounts` (left under water) is one keeperd sees as liquidatable and its own
    decision declines for every pair it could liquidate — gas at the head's fees, slippage,
    the bonus — dust no keeper pays gas for, not an account missed."""
    declined = await executor.declined(accounts)
    for account in sorted(accounts - set(declined)):
        opportunities = executor.liquidator.plan(executor._last, {account})
        assert opportunities, f"{account} is under water and keeperd does not see it"
        raise AssertionError((account, [o.gross_profit_usd for o in opportunities]))


def assert_declined_on_chain(devnet: Devnet, tmp_path: Path, accounts: set[str]) -> None:
    """The same, for a test whose keeper ran in another process: a dry-run keeperd in this one
    evaluates the head and decides on each account."""
    from keeperd.daemon import Daemon
    from keeperd.metrics import Metrics

    async def check() -> None:
        config = config_for(devnet, tmp_path / "declined", "dry-run", address=KEEPER)
        stop = asyncio.Event()
        daemon = Daemon(config, metrics=Metrics())
        task = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.ready.wait(), 30)
            running = Running(daemon, task, stop)
            await running.evaluated_at(devnet.client.block_number())
            await assert_declined(daemon.executors["aave"], accounts)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    if accounts:
        asyncio.run(check())


@pytest.fixture(autouse=True)
def keeper_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)


async def crash_through_flash_sales(devnet: Devnet, keeper: Running) -> None:
    """WETH down to 2,100, then eight blocks on a frozen clock: each pool pays for a few
    flash sales within their bound, and the pools are realigned (arbitrage) before each of
    the last six, so the rest go through."""
    from tests.chain_amounts import frozen_clock

    await keeper.evaluated_at(devnet.client.block_number())
    with frozen_clock(devnet):
        devnet.set_price("WETH", 2100.0)
        await keeper.evaluated_at(devnet.mine(1))
        await keeper.evaluated_at(devnet.mine(1))
        for _ in range(6):
            devnet.align_pools()
            await keeper.evaluated_at(devnet.mine(1))
