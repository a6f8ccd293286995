"""Liquidation execution on the devnet with a real keeper key (anvil's public test account 5),
its own balance as capital, and the real Aave V3 pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keeperd.config import parse_config
from keeperd.daemon import Daemon
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.metrics import Metrics
from tests.conftest import metric_value

# anvil's default mnemonic, account 5: a published test key, never used for anything real.
KEEPER_KEY = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"
KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"


def fund_keeper(devnet: Devnet, address: str = KEEPER, approve: bool = False) -> None:
    token = contracts.aave("MintableERC20")
    for symbol, amount in (("USDC", 50_000_000), ("DAI", 50_000_000), ("WETH", 20_000),
                           ("WBTC", 1_000)):
        decimals = devnet.manifest["aave_v3"]["reserves"][symbol]["decimals"]
        address_token = devnet.manifest["tokens"][symbol]
        devnet.client.send(address, address_token,
                           token.encode_call("mint", address, amount * 10**decimals))
        if approve:
            devnet.client.send(address, address_token, token.encode_call(
                "approve", devnet.manifest["aave_v3"]["pool"], 2**256 - 1))


def config_for(devnet: Devnet, tmp_path: Path, mode: str, **keeper: object):
    return parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"],
                       "cross_check_every": 1}],
        "keeper": {"mode": mode, "min_profit_usd": 1.0, **keeper},
        "metrics": {"enabled": False},
    }, env={"KEEPER_KEY": KEEPER_KEY})


class Running:
    def __init__(self, daemon: Daemon, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.daemon, self.task, self.stop = daemon, task, stop

    async def evaluated_at(self, block: int, timeout: float = 20) -> None:
        async def check() -> None:
            while True:
                if self.daemon.scanners["aave"].completed_block >= block:
                    return
                await asyncio.sleep(0.02)
        await asyncio.wait_for(check(), timeout)


@pytest.fixture
async def run_daemon() -> AsyncIterator:
    running: list[Running] = []

    async def start(config) -> Running:
        stop = asyncio.Event()
        daemon = Daemon(config, metrics=Metrics())
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), 30)
        r = Running(daemon, task, stop)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop.set()
        await asyncio.wait_for(r.task, 10)


def chain_health(devnet: Devnet, account: str) -> float:
    return devnet.account_data(account)[5] / 1e18


@pytest.fixture(autouse=True)
def keeper_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)


async def test_a_30pct_weth_crash_is_liquidated_within_two_blocks(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    config = config_for(devnet, tmp_path, "liquidate",
                        key={"source": "env", "env": "KEEPER_KEY"})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())

    borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.set_price_async("WETH", 2100.0)
        crash_block = devnet.mine(1)
        underwater = {a for a in borrowers if chain_health(devnet, a) < 1.0}
        debts = {a: devnet.account_data(a)[1] for a in underwater}
        assert len(underwater) > 20
        await keeper.evaluated_at(crash_block)
        journal = keeper.daemon.executors["aave"].journal
        pending = journal.by_status(J.PENDING)
        assert pending, "nothing was sent"
        devnet.mine(1)
    finally:
        devnet.client.call("evm_setAutomine", True)
    await keeper.evaluated_at(crash_block + 1)
    await keeper.evaluated_at(devnet.mine(1))

    included = journal.by_status(J.INCLUDED)
    assert {e.account for e in included} == {e.account for e in pending}
    for entry in included:
        txs = journal.txs(entry.key)
        receipt = devnet.client.call("eth_getTransactionReceipt", txs[-1].tx_hash)
        assert int(receipt["blockNumber"], 16) <= crash_block + 2
        assert devnet.account_data(entry.account)[1] < debts[entry.account]
    # Every underwater account worth liquidating was liquidated: what is left is dust.
    skipped = underwater - {e.account for e in included}
    for account in skipped:
        assert debts[account] / 1e8 < 200, (account, debts[account] / 1e8)
    metrics = keeper.daemon.metrics
    labels = {"chain": "devnet", "protocol": "aave"}
    assert metric_value(metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "included"}) == len(included)
    assert metric_value(metrics, "keeperd_liquidation_profit_usd_total", labels) > 0
