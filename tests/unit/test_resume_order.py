"""A restart sends its journaled transactions again lowest nonce first
(`reconcile.resume_journal`): each one the node gets can be mined at once. The journal's own
order is the time and key of its rows, and a wave's rows share one time."""

from __future__ import annotations

from pathlib import Path

from eth_account import Account
from eth_utils import keccak

from keeperd.execution import journal as J
from keeperd.execution.reconcile import resume_journal
from keeperd.execution.txmanager import GWEI, TxManager
from keeperd.keys import KeeperKey
from keeperd.metrics import Metrics
from keeperd.storage.db import SqliteDatabase
from tests.conftest import migrated
from tests.unit.test_journal_forgery import Node  # (a node that keeps what it is sent)

POOL = "0x" + "22" * 20
KEEPER = KeeperKey(Account.create())


async def journaled(journal: J.Journal, keyed: list[tuple[str, int]]) -> dict[int, str]:
    """Each (key, nonce) journaled with a liquidation the keeper signed: its raw bytes by
    nonce."""
    raws: dict[int, str] = {}
    for key, nonce in keyed:
        raw = KEEPER.sign_eip1559(chain_id=31337, nonce=nonce, to=POOL, value=0,
                                  data=b"\x01\x02", gas=300_000, max_fee=50 * GWEI,
                                  tip=2 * GWEI)
        raws[nonce] = "0x" + raw.hex()
        await journal.record(J.JournalEntry(key, "aave", key.split(":")[1], "WETH", "USDC", 1,
                                            5.0, 10**16, 100, J.PLANNED, None, None, None))
        await journal.record_tx(J.TxRecord("0x" + keccak(raw).hex(), key, nonce, 50 * GWEI,
                                           2 * GWEI, 300_000, raws[nonce], "liquidation", 0.0))
    return raws


async def test_a_restart_sends_the_journal_again_lowest_nonce_first(tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    journal = await J.Journal.open(await migrated(db))
    # One wave, journaled in one write: one time for its rows, whose keys sort otherwise than
    # their nonces.
    wave = [("aave:0xc:c:d:v", 19), ("aave:0xa:c:d:v", 21), ("aave:0xb:c:d:v", 20)]
    raws = await journaled(journal, wave)
    await db.execute("UPDATE liquidations SET created_at = 1")
    assert [e.nonce for e in await journal.by_status(J.PENDING)] == [21, 20, 19]
    node = Node()
    tx = TxManager(node, KEEPER, 31337, metrics=Metrics())  # type: ignore[arg-type]
    await tx.sync_nonce()
    assert await resume_journal(journal, tx, "aave", 101) == 3
    assert node.broadcast == [raws[19], raws[20], raws[21]]
    await db.close()


async def test_one_whose_nonce_is_mined_is_tracked_not_simulated_or_sent(tmp_path: Path
                                                                         ) -> None:
    """A restart after a SIGKILL warned "its call would revert at the head now: not broadcast
    again" of liquidations mined before it (their call reverts: the position is liquidated),
    then logged them included a moment later. One under a nonce already mined is not
    simulated — its bytes go again all the same (harmless if the endpoint's nonce was true,
    and what sends it if it was not) — and the watch settles it from its receipt."""
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    journal = await J.Journal.open(await migrated(db))
    raws = await journaled(journal, [("aave:0xa:c:d:v", 4), ("aave:0xb:c:d:v", 5)])

    class Mined(Node):
        async def request(self, method: str, params: object = ()) -> object:
            if method == "eth_getTransactionCount":
                return "0x5"  # nonce 4 mined, 5 not
            return await super().request(method, params)

    node = Mined()
    tx = TxManager(node, KEEPER, 31337, metrics=Metrics())  # type: ignore[arg-type]
    await tx.sync_nonce()
    checked: list[bytes] = []

    async def still_succeeds(to: str, data: bytes, gas: int) -> bool:
        checked.append(data)
        return True

    assert await resume_journal(journal, tx, "aave", 101, resend_if=still_succeeds) == 2
    assert len(checked) == 1  # (nonce 5's only)
    assert node.broadcast == [raws[4], raws[5]]
    assert {p.nonce for p in tx.pending.values()} == {4, 5}  # (both watched)
    await db.close()
