"""A row of the journal's tables that keeperd did not write (a hand's `UPDATE`, a bad
restore) must not stop the keeper: "every answer may lie", a database row too. On SQLite a
text written into an integer column reads back as text: a nonce, a wave's place, a holding's
block, a deposit's time. Each of these once failed every start (a review); a row whose plan
or amounts do not read is kept, and its signed transaction still tracked."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import structlog
from eth_account import Account
from eth_utils import keccak

from keeperd.execution import journal as J
from keeperd.execution.reconcile import journal_last_block, resume_journal
from keeperd.execution.txmanager import GWEI, TxManager
from keeperd.keys import KeeperKey
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.keys import OpportunityKey
from keeperd.storage.db import SqliteDatabase
from tests.conftest import migrated
from tests.unit.test_journal_forgery import POOL, Node

KEEPER = KeeperKey(Account.create())


def signed(nonce: int) -> tuple[str, str]:
    raw = KEEPER.sign_eip1559(chain_id=31337, nonce=nonce, to=POOL, value=0, data=b"\x01",
                              gas=300_000, max_fee=50 * GWEI, tip=2 * GWEI)
    return "0x" + keccak(raw).hex(), "0x" + raw.hex()


def entry(key: str) -> J.JournalEntry:
    return J.JournalEntry(key, "aave", key.split(":")[1], "WETH", "USDC", 1, 5.0, 10**16, 100,
                          J.PLANNED, None, None, None)


async def journal_at(tmp_path: Path) -> tuple[SqliteDatabase, J.Journal]:
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    return db, await J.Journal.open(await migrated(db))


async def test_a_signed_row_whose_fields_do_not_read_is_still_resumed(tmp_path: Path) -> None:
    """Its plan, amounts, nonce and block not read (text in an integer column): the row is
    kept and its transaction — verified against its own bytes — tracked and sent again, after
    the one of a lower nonce; a sort of an integer and a text nonce failed the start."""
    db, journal = await journal_at(tmp_path)
    try:
        keys = ["aave:0xa:c:d:v", "aave:0xb:c:d:v"]
        for nonce, key in enumerate(keys):
            await journal.record(entry(key))
            tx_hash, raw = signed(nonce)
            await journal.record_tx(J.TxRecord(tx_hash, key, nonce, 50 * GWEI, 2 * GWEI,
                                               300_000, raw, "liquidation", 0.0))
        await db.execute("UPDATE liquidations SET planned = '{', debt_to_cover = 'abc', "
                         "max_fee_wei = '1e3', nonce = 'one', detected_block = 'late', "
                         "expected_profit_usd = 'much', realised_profit_usd = 'x' "
                         "WHERE key = $1", keys[1])
        with structlog.testing.capture_logs() as logs:
            [_, bad] = await journal.by_status(J.PENDING)
        assert (bad.key, bad.nonce, bad.detected_block, bad.max_fee_wei, bad.planned,
                bad.expected_profit_usd, bad.realised_profit_usd) == (
            keys[1], None, 0, 0, None, 0.0, None)
        [told] = [e for e in logs if e["event"] == "journal.row_unreadable"]
        assert sorted(told["columns"]) == ["debt_to_cover", "detected_block",
                                           "expected_profit_usd", "max_fee_wei", "nonce",
                                           "planned", "realised_profit_usd"]
        node = Node()
        tx = TxManager(node, KEEPER, 31337, metrics=Metrics())  # type: ignore[arg-type]
        await tx.sync_nonce()
        assert await resume_journal(journal, tx, "aave", 101) == 2
        assert set(tx.pending) == {OpportunityKey.parse(k) for k in keys}
        assert len(node.broadcast) == 2
    finally:
        await db.close()


async def test_a_wave_place_that_does_not_read_is_no_place(
        tmp_path: Path) -> None:
    """A wave's call's place is what its trust rests on (`reconcile._track_wave_again`): one
    that does not read is no place, and the wave is refused as a tampered one is."""
    db, journal = await journal_at(tmp_path)
    try:
        await journal.record(entry("aave:0xa:c:d:v"))
        tx_hash, raw = signed(0)
        await journal.record_tx(J.TxRecord(tx_hash, "aave:0xa:c:d:v", 0, 50 * GWEI, 2 * GWEI,
                                           300_000, raw, "liquidation", 0.0, 0))
        await db.execute("UPDATE liquidation_txs SET wave_index = 'first'")
        assert await journal.wave_members(tx_hash) == {"aave:0xa:c:d:v": -1}
        [record] = await journal.txs("aave:0xa:c:d:v")
        assert record.wave_index == -1
    finally:
        await db.close()


async def test_holdings_and_deposits_whose_block_or_time_do_not_read_are_kept(
        tmp_path: Path) -> None:
    """A holding whose block does not read stopped every start (`_check_journal_holdings`),
    a deposit whose time does not read a liquidate-mode start (Curie's `prepare`): each is
    kept — a holding refuses a start without its protocol all the same, a deposit of unknown
    time counts against today's refills (the worst)."""
    db, journal = await journal_at(tmp_path)
    try:
        await journal.set_holdings("curie", {"ETH": "2 ETH long"}, 100)
        await journal.set_holdings("other", {"BTC": "1 BTC short"}, 100)
        await db.execute("UPDATE keeper_holdings SET block = 'late' WHERE protocol = 'curie'")
        assert await journal.holdings() == {"curie": {"ETH": ("2 ETH long", 0)},
                                            "other": {"BTC": ("1 BTC short", 100)}}
        await journal.record_deposit("curie", "curie:deposit:0xv:1", 5, refill=True)
        await journal.record_deposit("curie", "curie:deposit:0xv:2", 7, refill=True)
        await db.execute("UPDATE keeper_deposits SET sent_at = 'yesterday' "
                         "WHERE deposit_key = 'curie:deposit:0xv:2'")
        got = await journal.deposits("curie")
        assert [(amount, refill) for _, amount, refill in got] == [(5, True), (7, True)]
        assert got[1][0] == float("inf")
    finally:
        await db.close()


async def test_only_a_row_signed_by_the_keeper_says_how_far_the_journal_saw(
        tmp_path: Path) -> None:
    """The journal's last block refuses a start whose chain has not reached it (a devnet
    started again from its state: `storage/chain_identity.py`). One row of a block far ahead
    refused every start for good, its message saying to throw the state away: now only rows
    whose transaction this keeper signed for this chain count, and the refusal names the
    row. A row with no transaction, a forged one, or a block that does not read is set aside
    and said."""
    db, journal = await journal_at(tmp_path)
    try:
        rows = {"aave:0xa:c:d:v": (120, "signed"),  # (the keeper's: it counts)
                "aave:0xb:c:d:v": (10**12, None),  # (nothing signed)
                "aave:0xc:c:d:v": (10**11, "forged"),  # (its hash not its bytes')
                "aave:0xd:c:d:v": (10**10, "signed"),  # (its block text, below)
                "morpho:0xe:c:d:v": (130, "signed")}  # (another chain's protocol)
        for nonce, (key, (block, kind)) in enumerate(rows.items()):
            await journal.record(replace(entry(key), protocol=key.split(":")[0],
                                         detected_block=block))
            if kind is not None:
                tx = signed(nonce) if kind == "signed" else ("0x" + "ab" * 32, signed(nonce)[1])
                await journal.record_tx(J.TxRecord(tx[0], key, nonce, 50 * GWEI, 2 * GWEI,
                                                   300_000, tx[1], "liquidation", 0.0))
        await db.execute("UPDATE liquidations SET detected_block = 'far' WHERE key = $1",
                         "aave:0xd:c:d:v")
        with structlog.testing.capture_logs() as logs:
            last = await journal_last_block(journal, {"aave"}, KEEPER.address, 31337)
        assert last == (120, "aave:0xa:c:d:v")
        assert sorted(e["key"] for e in logs if e["event"] == "journal.block_unverified") == [
            "aave:0xc:c:d:v", "aave:0xd:c:d:v"]
        assert await journal_last_block(journal, {"aave"}, KEEPER.address, 1) is None
        assert await journal_last_block(journal, {"morpho"}, KEEPER.address, 31337) == (
            130, "morpho:0xe:c:d:v")
        assert await journal_last_block(journal, set(), KEEPER.address, 31337) is None
    finally:
        await db.close()


def test_the_reverts_read_back_are_those_the_breaker_counts_live() -> None:
    """At a start the revert breaker's count is read from the journal: what the running
    process leaves out is left out there too — a Curie unwind's revert (the keeper's own
    account) and a sale keeperd's own seller refused (three SwapBelowBound flash sales would
    have paused sending after a restart the running process had not paused: a review)."""
    from keeperd.execution.executor import counts_as_revert

    keeper = "0x" + "ab" * 20
    base = J.JournalEntry("aave:0x1:WETH:USDC:1", "aave", "0x" + "01" * 20, "WETH", "USDC", 1,
                          1.0, 1, 7, J.REVERTED, 3, None, "tx=0xaa")
    assert counts_as_revert(base, keeper)
    assert not counts_as_revert(replace(base, account=keeper.upper().replace("0X", "0x")),
                                keeper)
    assert not counts_as_revert(replace(
        base, detail="tx=0xaa reverted: SwapBelowBound(1, 2)"), keeper)
    assert counts_as_revert(replace(base, detail="tx=0xaa reverted: HEALTH_FACTOR_NOT_BELOW"),
                            None)


def test_a_restarts_pause_says_the_last_reverts_reason() -> None:
    """Read back at a start, the pause said "reverted" with no why (trial 31): the reason
    traced into the last row that has one is said again."""
    from keeperd.execution.executor import UNBOOKED_MARK, last_traced_reason

    base = J.JournalEntry("aave:0x1:WETH:USDC:1", "aave", "0x" + "01" * 20, "WETH", "USDC", 1,
                          1.0, 1, 7, J.REVERTED, 3, None, "tx=0xaa")
    rows = [replace(base, detail="tx=0xaa reverted: HealthFactorNotBelowThreshold()"),
            replace(base, detail=f"tx=0xbb reverted: 0x1234 {UNBOOKED_MARK} (settled at start)"),
            replace(base, detail="tx=0xcc")]
    assert last_traced_reason(rows) == "0x1234"
    assert last_traced_reason(rows[:1]) == "HealthFactorNotBelowThreshold()"
    assert last_traced_reason(rows[2:]) is None
