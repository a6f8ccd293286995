"""The journal is not an attack path (#28 item 2): a journaled transaction is resumed —
rebroadcast, later replaced or cancelled under the keeper's signature — only if the keeper
signed it for this chain. Whoever can write the state database cannot get the keeper to sign
a call of their making."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak

from keeperd.execution import journal as J
from keeperd.execution.reconcile import resume_journal
from keeperd.execution.txmanager import GWEI, TxManager
from keeperd.keys import KeeperKey
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.keys import OpportunityKey, WaveKey
from keeperd.storage.db import SqliteDatabase
from tests.conftest import migrated

POOL = "0x" + "22" * 20
ATTACKER = "0x" + "66" * 20


class Node:
    chain = "devnet"
    voters: list[Any] = []  # (no endpoint asked by name: the pool's count stands)

    def __init__(self) -> None:
        self.broadcast: list[str] = []

    async def request(self, method: str, params: Any = ()) -> Any:
        if method == "eth_getTransactionCount":
            return "0x0"
        assert method == "eth_sendRawTransaction", method
        self.broadcast.append(params[0])
        return "0x" + "00" * 32


def signed(key: KeeperKey, *, to: str = POOL, chain_id: int = 31337, nonce: int = 0
           ) -> tuple[str, str]:
    raw = key.sign_eip1559(chain_id=chain_id, nonce=nonce, to=to, value=0, data=b"\x01\x02",
                           gas=300_000, max_fee=50 * GWEI, tip=2 * GWEI)
    return "0x" + keccak(raw).hex(), "0x" + raw.hex()


async def resumed(tmp_path: Path, tx_hash: str, raw: str, nonce: int = 0
                  ) -> tuple[TxManager, Node, J.JournalEntry]:
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    journal = await J.Journal.open(await migrated(db))
    await journal.record(J.JournalEntry("aave:0xa:c:d:v", "aave", "0xa", "WETH", "USDC", 1, 5.0,
                                        10**16, 100, J.PLANNED, None, None, None))
    await journal.record_tx(J.TxRecord(tx_hash, "aave:0xa:c:d:v", nonce, 50 * GWEI, 2 * GWEI,
                                       300_000, raw, "liquidation", 0.0))
    node = Node()
    tx = TxManager(node, KEEPER, 31337, metrics=Metrics())  # type: ignore[arg-type]
    await tx.sync_nonce()
    await resume_journal(journal, tx, "aave", 101)
    entry = await journal.get("aave:0xa:c:d:v")
    await db.close()
    assert entry is not None
    return tx, node, entry


KEEPER = KeeperKey(Account.create())


async def test_the_keepers_own_transaction_is_resumed(tmp_path: Path) -> None:
    tx, node, entry = await resumed(tmp_path, *signed(KEEPER))
    assert OpportunityKey.parse("aave:0xa:c:d:v") in tx.pending and len(node.broadcast) == 1
    assert entry.status == J.PENDING


@pytest.mark.parametrize("forgery", ["another signer", "another chain", "hash not its bytes",
                                     "nonce not its own", "not a transaction"])
async def test_a_forged_row_is_refused_and_nothing_is_sent(tmp_path: Path, forgery: str) -> None:
    nonce = 0
    if forgery == "another signer":
        tx_hash, raw = signed(KeeperKey(Account.create()), to=ATTACKER)
    elif forgery == "another chain":
        tx_hash, raw = signed(KEEPER, chain_id=1)
    elif forgery == "hash not its bytes":
        tx_hash, raw = "0x" + "ab" * 32, signed(KEEPER)[1]
    elif forgery == "nonce not its own":
        (tx_hash, raw), nonce = signed(KEEPER, nonce=5), 0
    else:
        raw = "0x02deadbeef"
        tx_hash = "0x" + keccak(bytes.fromhex(raw[2:])).hex()
    tx, node, entry = await resumed(tmp_path, tx_hash, raw, nonce)
    assert tx.pending == {} and node.broadcast == []
    assert entry.status == J.DROPPED and (entry.detail or "").startswith("refused: ")


async def test_a_row_whose_key_is_not_an_opportunity_key_is_refused(tmp_path: Path) -> None:
    """#29 item 4: a journal key is parsed in one place; a row that does not parse (written by
    someone else) is refused like a forged one — dropped, nothing tracked or sent."""
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    journal = await J.Journal.open(await migrated(db))
    tx_hash, raw = signed(KEEPER)
    await journal.record(J.JournalEntry("aave:0xa", "aave", "0xa", "WETH", "USDC", 1, 5.0,
                                        10**16, 100, J.PLANNED, None, None, None))
    await journal.record_tx(J.TxRecord(tx_hash, "aave:0xa", 0, 50 * GWEI, 2 * GWEI, 300_000,
                                       raw, "liquidation", 0.0))
    node = Node()
    tx = TxManager(node, KEEPER, 31337, metrics=Metrics())  # type: ignore[arg-type]
    await tx.sync_nonce()
    await resume_journal(journal, tx, "aave", 101)
    entry = await journal.get("aave:0xa")
    await db.close()
    assert entry is not None and entry.status == J.DROPPED
    assert "not an opportunity key" in (entry.detail or "")
    assert tx.pending == {} and node.broadcast == []


async def wave_resumed(tmp_path: Path, tx_hash: str, raw: str, *, tamper: str | None = None
                       ) -> tuple[TxManager, Node, list[J.JournalEntry]]:
    """A wave of three journaled under its members (its bytes once, in the first call's row),
    then resumed; `tamper` rewrites a row first as someone with the database could."""
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    journal = await J.Journal.open(await migrated(db))
    keys = [f"aave:0x{i}:c:d:v" for i in range(3)]
    for key in keys:
        await journal.record(J.JournalEntry(key, "aave", key.split(":")[1], "WETH", "USDC", 1,
                                            5.0, 10**16, 100, J.PLANNED, None, None, None))
    wave = WaveKey("aave", tuple(OpportunityKey.parse(k) for k in keys))
    await journal.record_tx(J.TxRecord(tx_hash, wave, 0, 50 * GWEI, 2 * GWEI, 300_000, raw,
                                       "liquidation", 0.0))
    # Each member reads the wave's bytes back, and its own place in it.
    for i, key in enumerate(keys):
        [record] = await journal.txs(key)
        assert (record.raw, record.wave_index, record.tx_hash) == (raw, i, tx_hash)
    wave = WaveKey("aave", tuple(OpportunityKey.parse(k) for k in keys))
    if tamper == "a replacement placed otherwise":
        # (a later copy of the wave journaled under its members in another order)
        other = WaveKey("aave", tuple(reversed(wave.members)))
        tx_hash2, raw2 = signed(KEEPER, nonce=0, to=KEEPER.address)
        await journal.record_tx(J.TxRecord(tx_hash2, other, 0, 60 * GWEI, 3 * GWEI, 300_000,
                                           raw2, "replacement", 1.0))
    if tamper == "a member moved":
        await db.execute("UPDATE liquidation_txs SET wave_index = 5 WHERE key = $1", keys[2])
    elif tamper == "bytes not the hash's":
        await db.execute("UPDATE liquidation_txs SET raw = $1 WHERE wave_index = 0",
                         signed(KEEPER, nonce=0, to=ATTACKER)[1])
    node = Node()
    tx = TxManager(node, KEEPER, 31337, metrics=Metrics())  # type: ignore[arg-type]
    await tx.sync_nonce()
    await resume_journal(journal, tx, "aave", 101)
    entries = [e for k in keys if (e := await journal.get(k)) is not None]
    await db.close()
    return tx, node, entries


async def test_a_wave_is_resumed_once_under_its_members(tmp_path: Path) -> None:
    tx, node, entries = await wave_resumed(tmp_path, *signed(KEEPER))
    [key] = tx.pending
    assert isinstance(key, WaveKey) and [str(m) for m in key.members] == [e.key for e in entries]
    assert len(node.broadcast) == 1  # (the wave's bytes, once)
    assert all(e.status == J.PENDING for e in entries)


@pytest.mark.parametrize("tamper", ["a member moved", "bytes not the hash's",
                                    "a replacement placed otherwise"])
async def test_a_tampered_wave_is_refused_and_nothing_is_sent(tmp_path: Path,
                                                              tamper: str) -> None:
    tx, node, entries = await wave_resumed(tmp_path, *signed(KEEPER), tamper=tamper)
    assert tx.pending == {} and node.broadcast == []
    assert any(e.status == J.DROPPED and (e.detail or "").startswith("refused: ")
               for e in entries)
