"""#17 item 7: keeperd killed after a signed transaction was journaled and before it was
broadcast. After the restart the journal's transaction is rebroadcast under its own nonce, and
the next new transaction takes the following one — it used to take the same nonce, and one of
the two was dropped or replaced."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from keeperd.chain.rpc import RpcPool
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.reconcile import resume_journal
from keeperd.execution.txmanager import TxManager
from keeperd.keys import _from_hex
from keeperd.metrics import Metrics
from keeperd.storage.db import SqliteDatabase
from tests.conftest import migrated
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    KEEPER_KEY,
    keeper_key_env,
)


class Killed(BaseException):
    """The process dying at the broadcast (nothing after it runs)."""


def planned(key: str) -> J.JournalEntry:
    return J.JournalEntry(key, "aave", KEEPER, "WETH", "USDC", 1, 1.0, 10**18, 1,
                          J.PLANNED, None, None, None)


async def test_a_transaction_journaled_but_never_broadcast_keeps_its_nonce(
        devnet: Devnet, pool: RpcPool, tmp_path: Path) -> None:
    devnet.client.call("anvil_setBalance", KEEPER, hex(10**20))
    key = _from_hex(KEEPER_KEY, "test")
    db = await migrated(SqliteDatabase.open(tmp_path / "keeperd.sqlite3"))
    journal = await J.Journal.open(db)
    head = devnet.client.block_number()
    before = int(devnet.client.call("eth_getTransactionCount", KEEPER, "latest"), 16)

    first = TxManager(pool, key, 31337, metrics=Metrics(), record=journal.record_tx)
    await journal.record(planned("aave:0xa:c:d:1"))

    async def killed(*args: object, **kwargs: object) -> None:
        raise Killed

    first.broadcast_many = killed  # type: ignore[method-assign,assignment]
    with pytest.raises(Killed):  # signed and journaled, then the process died
        await first.send("aave:0xa:c:d:1", KEEPER, b"", 21_000, 10**18, block=head)
    [signed] = await journal.txs("aave:0xa:c:d:1")
    assert signed.nonce == before
    assert int(devnet.client.call("eth_getTransactionCount", KEEPER, "pending"), 16) == before

    restarted = TxManager(pool, key, 31337, metrics=Metrics(), record=journal.record_tx)
    await restarted.sync_nonce()
    assert await resume_journal(journal, restarted, "aave", head) == 1
    await journal.record(planned("aave:0xb:c:d:1"))
    record = await restarted.send("aave:0xb:c:d:1", KEEPER, b"", 21_000, 10**18, block=head)
    assert record.nonce == before + 1
    devnet.mine(1)
    for tx_hash in (signed.tx_hash, record.tx_hash):
        receipt = devnet.client.call("eth_getTransactionReceipt", tx_hash)
        assert receipt is not None and int(receipt["status"], 16) == 1
    assert int(devnet.client.call("eth_getTransactionCount", KEEPER, "latest"), 16) == before + 2


async def test_an_approval_at_start_never_takes_another_protocols_journaled_nonce(
        devnet: Devnet, pool: RpcPool, tmp_path: Path, run_daemon) -> None:
    """Killed with a Morpho liquidation journaled and not broadcast, keeperd restarts with
    an approval due for Aave (a top-up, or collateral a crash seized): each protocol's start
    resumed its own journal and then sent its approvals, so Aave's approval, first, took the
    nonce of Morpho's journaled transaction, which then never went (nonce too low; on a
    chain with blocks to wait for, the two at one nonce). Every protocol's journal is resumed
    before any protocol sends anything."""
    from keeperd.devnet import contracts
    from keeperd.storage.db import STATE_FILE
    from tests.keeper_harness import aave_and_morpho_config, fund_keeper

    fund_keeper(devnet)
    config = aave_and_morpho_config(devnet, tmp_path, {
        "mode": "liquidate", "min_profit_usd": 1.0, "key": {"source": "env", "env": "KEEPER_KEY"}})
    assert [p.name for p in config.protocols] == ["aave", "morpho"]
    first = await run_daemon(config)  # (its approvals, at start)
    await first.evaluated_at(devnet.mine(1))
    first.stop.set()
    await first.task
    # Morpho's liquidation signed and journaled, the process killed before its broadcast.
    db = SqliteDatabase.open(config.state_dir / STATE_FILE)
    try:
        journal = await J.Journal.open(db)
        killed = TxManager(pool, _from_hex(KEEPER_KEY, "test"), 31337, metrics=Metrics(),
                           record=journal.record_tx)
        await killed.sync_nonce()
        await journal.record(dataclasses.replace(planned("morpho:0xa:c:d:1"),
                                                 protocol="morpho"))

        async def dead(*args: object, **kwargs: object) -> None:
            raise Killed

        killed.broadcast_many = dead  # type: ignore[method-assign,assignment]
        with pytest.raises(Killed):
            await killed.send("morpho:0xa:c:d:1", KEEPER, b"", 21_000, 10**18,
                              block=devnet.client.block_number())
        [signed] = await journal.txs("morpho:0xa:c:d:1")
    finally:
        await db.close()
    # An approval due for Aave at the next start: USDC topped up.
    erc20 = contracts.aave("MintableERC20")
    devnet.client.send(devnet.client.accounts()[0], devnet.manifest["tokens"]["USDC"],
                       erc20.encode_call("mint", KEEPER, 10**12))
    second = await run_daemon(config)
    await second.evaluated_at(devnet.mine(1))
    devnet.mine(1)
    receipt = devnet.client.call("eth_getTransactionReceipt", signed.tx_hash)
    assert receipt is not None and int(receipt["status"], 16) == 1, \
        "Morpho's journaled transaction did not go under its nonce"
    # And Aave's approval went, after it.
    approvals = [t for n in range(int(receipt["blockNumber"], 16),
                                  devnet.client.block_number() + 1)
                 for t in devnet.client.call("eth_getBlockByNumber", hex(n), True)["transactions"]
                 if t["from"].lower() == KEEPER.lower() and t["input"].startswith("0x095ea7b3")]
    assert approvals and all(int(t["nonce"], 16) > signed.nonce for t in approvals)
