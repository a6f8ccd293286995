"""#17 item 7: keeperd killed after a signed transaction was journaled and before it was
broadcast. After the restart the journal's transaction is rebroadcast under its own nonce, and
the next new transaction takes the following one — it used to take the same nonce, and one of
the two was dropped or replaced."""

from __future__ import annotations

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
from tests.keeper_harness import (
    KEEPER,
    KEEPER_KEY,
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
