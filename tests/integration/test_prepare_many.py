"""A wave signed in nonce order and journaled in one write (`TxManager.prepare_many`, #31):
one refused item takes no nonce, and a write that fails keeps nothing of the wave — its
nonces are given back, so the next wave has no gap (a gap holds every later transaction of
the keeper out of blocks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from keeperd.chain.rpc import RpcPool
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.txmanager import SendRefused, ToSign, TxManager, TxRecord
from keeperd.keys import _from_hex
from keeperd.metrics import Metrics
from keeperd.storage.db import SqliteDatabase
from tests.conftest import migrated
from tests.integration.test_resume_nonce import planned
from tests.keeper_harness import KEEPER, KEEPER_KEY


class WriteRefused(Exception):
    """The state database refused the wave's write (a full disk, a replica fenced out)."""


async def test_a_wave_takes_its_nonces_in_order_and_gives_them_back_if_unjournaled(
        devnet: Devnet, pool: RpcPool, tmp_path: Path) -> None:
    devnet.client.call("anvil_setBalance", KEEPER, hex(10**20))
    journal = await J.Journal.open(await migrated(SqliteDatabase.open(tmp_path / "k.sqlite3")))
    refuse = True

    async def record_many(txs: Sequence[TxRecord]) -> None:
        if refuse:
            raise WriteRefused
        await journal.record_txs(txs)

    tm = TxManager(pool, _from_hex(KEEPER_KEY, "test"), 31337, metrics=Metrics(),
                   record=journal.record_tx, record_many=record_many)
    await tm.sync_nonce()
    before = int(devnet.client.call("eth_getTransactionCount", KEEPER, "latest"), 16)
    head = devnet.client.block_number()
    base_fee = int(devnet.client.call("eth_getBlockByNumber", "latest", False)["baseFeePerGas"],
                   16)
    keys = ["aave:0xa:c:d:1", "aave:0xb:c:d:1", "aave:0xc:c:d:1", "aave:0xd:c:d:1"]
    assert await journal.record_many([planned(k) for k in keys]) == set(keys)
    wave = [ToSign(keys[0], KEEPER, b"", 21_000, 10**18),
            ToSign(keys[1], KEEPER, b"", 21_000, 1),  # its budget covers no fee
            ToSign(keys[2], KEEPER, b"\x01", 21_000, 10**18),  # the signing policy refuses it
            ToSign(keys[3], KEEPER, b"", 21_000, 10**18)]

    with pytest.raises(WriteRefused):
        await tm.prepare_many(wave, block=head, base_fee=base_fee, pause_every=1)
    assert tm.pending == {} and await journal.txs(keys[0]) == []

    refuse = False
    first, refused, unsigned, last = await tm.prepare_many(wave, block=head, base_fee=base_fee)
    assert isinstance(refused, SendRefused) and isinstance(unsigned, SendRefused)
    assert not isinstance(first, SendRefused) and not isinstance(last, SendRefused)
    assert (first[0].nonce, last[0].nonce) == (before, before + 1)  # given back, no gap
    assert set(tm.pending) == {keys[0], keys[3]}
    assert await journal.txs(keys[0]) == [first[0]] and await journal.txs(keys[3]) == [last[0]]
    for key in keys[1:3]:
        assert (await journal.get(key)).status == J.PLANNED  # type: ignore[union-attr]

    assert await tm.broadcast_many([first, last]) == [None, None]
    devnet.mine(1)
    for record, _ in (first, last):
        receipt = devnet.client.call("eth_getTransactionReceipt", record.tx_hash)
        assert receipt is not None and int(receipt["status"], 16) == 1
