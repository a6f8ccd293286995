"""A delegated address has one transaction in flight at a time (real pools refuse a second
from it): the transaction manager signs nothing new while one is, judged from the mined count
last read — each read replacing the last, so a reorg's lower count makes the slot busy again
and one lying count frees it for one transaction at most — and the executor's follow-ups
refused for the slot are left unjournaled, to be sent once it frees (a follow-up dropped for
it was never sent again)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account

from keeperd.execution import journal as J
from keeperd.execution.executor import Executor
from keeperd.execution.signer_policy import Allowed, selector
from keeperd.execution.txmanager import GWEI, FeePolicy, SlotBusy, TxManager
from keeperd.execution.wave_code import WAVE_ADDRESS
from keeperd.keys import KeeperKey
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.contract import LiquidatorBase
from keeperd.protocols.sdk.keys import OpportunityKey
from keeperd.storage.db import SqliteDatabase
from tests.conftest import migrated

TARGET = "0x" + "22" * 20
CALL = "liquidate()"


class Node:
    """The RPC pool as the transaction manager uses it, the mined count set by the test."""

    chain = "devnet"
    voters: list[Any] = []
    endpoints: list[Any] = []

    def __init__(self) -> None:
        self.mined = 5
        self.sent: list[str] = []

    def contested(self) -> str | None:
        return None  # (its head agreed: nothing held for it)

    async def request(self, method: str, params: Any = ()) -> Any:
        if method == "eth_getTransactionCount":
            return hex(self.mined)
        if method == "eth_getBlockByNumber":
            return {"baseFeePerGas": hex(GWEI)}
        if method == "eth_sendRawTransaction":
            self.sent.append(params[0])
            return "0x" + "00" * 32
        raise AssertionError(method)

    async def batch_at(self, block: int, calls: Any) -> Any:
        return {}, [hex(self.mined)]

    async def batch(self, calls: Any) -> Any:
        return ["0x30000" if method == "eth_estimateGas" else await self.request(method, params)
                for method, params in calls]


def delegated(node: Node) -> TxManager:
    tx = TxManager(node, KeeperKey(Account.create()), 31337,  # type: ignore[arg-type]
                   metrics=Metrics(), policy=FeePolicy())
    tx.signing_policy.allow(Allowed(TARGET, CALL, "test"))
    tx._delegate = WAVE_ADDRESS  # (as the code read would have it)
    tx._nonce = node.mined
    return tx


def manager(node: Node) -> TxManager:
    """A transaction manager of an address that runs no code, its next nonce 5."""
    tx = TxManager(node, KeeperKey(Account.create()), 31337,  # type: ignore[arg-type]
                   metrics=Metrics(), policy=FeePolicy())
    tx.signing_policy.allow(Allowed(TARGET, CALL, "test"))
    tx._nonce = 5
    return tx


def key(n: int) -> OpportunityKey:
    return OpportunityKey("aave", "0x" + f"{n:040x}", ("c", "d"), "v")


async def sign(tx: TxManager, n: int, block: int) -> Any:
    return await tx.prepare(key(n), TARGET, selector(CALL), 300_000, 10**18, block=block,
                            base_fee=GWEI)


async def test_one_at_a_time_and_free_again_once_mined() -> None:
    node = Node()
    tx = delegated(node)
    await sign(tx, 1, 10)
    with pytest.raises(SlotBusy):
        await sign(tx, 2, 10)
    assert not await tx.slot_free_at(10)  # (nothing mined yet)
    node.mined = 6
    assert await tx.slot_free_at(11)  # mined, though not settled: free
    await sign(tx, 2, 11)


async def test_a_reorg_lowering_the_mined_count_makes_the_slot_busy_again() -> None:
    node = Node()
    tx = delegated(node)
    record, _ = await sign(tx, 1, 10)
    node.mined = 6
    assert await tx.slot_free_at(11)
    del tx.pending[key(1)]  # (the watch settled it included)
    # A reorg takes its block away: tracked again under its nonce, and the count is 5 again.
    node.mined = 5
    tx.track(key(1), [record], TARGET, selector(CALL), 10**18, 12)
    assert not await tx.slot_free_at(12)
    with pytest.raises(SlotBusy):
        await sign(tx, 2, 12)


async def test_one_lying_count_frees_the_slot_for_one_transaction_at_most() -> None:
    node = Node()
    tx = delegated(node)
    await sign(tx, 1, 10)
    node.mined = 10**9  # one endpoint's lie
    assert await tx.slot_free_at(11)
    await sign(tx, 2, 11)  # (a node would refuse it: one more at most)
    node.mined = 5  # the truth again
    assert not await tx.slot_free_at(12)
    with pytest.raises(SlotBusy):
        await sign(tx, 3, 12)


class Unwinds(LiquidatorBase):
    def __init__(self, items: list[tuple[OpportunityKey, str, bytes, int]]) -> None:
        self.items = items
        self.due: list[bool] = []  # (what the executor said of each, asked first)

    async def housekeeping(self, result: Any, trust: Any = None, due: Any = None
                           ) -> list[tuple[OpportunityKey, str, bytes, int]]:
        if due is not None:
            self.due = [await due(k) for k, *_ in self.items]
        return [i for i in self.items]


async def two_unwinds(tmp_path: Path) -> tuple[Any, Any, J.Journal, Any, OpportunityKey,
                                                 OpportunityKey]:
    """A delegated key's executor whose liquidator lists two Curie unwinds: (node, db,
    journal, executor, first key, second key)."""
    node = Node()
    tx = delegated(node)
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    journal = await J.Journal.open(await migrated(db))
    keeper = tx.address
    first = OpportunityKey("curie", keeper, ("unwind", "0xaa"), "100")
    second = OpportunityKey("curie", keeper, ("unwind", "0xbb"), "200")
    ex: Any = Executor.__new__(Executor)
    ex.tx, ex.keeper, ex.journal, ex.pool = tx, keeper, journal, node
    ex.config = SimpleNamespace(mode="liquidate", gas_limit_margin=1.2)
    ex.fees = FeePolicy()
    ex.adapter = SimpleNamespace(name="curie")
    ex.liquidator = Unwinds([(first, TARGET, selector(CALL), 300_000),
                             (second, TARGET, selector(CALL), 300_000)])
    return node, db, journal, ex, first, second


async def test_a_follow_up_refused_for_the_slot_is_sent_once_it_frees(tmp_path: Path) -> None:
    node, db, journal, ex, _, second = await two_unwinds(tmp_path)
    await ex._housekeep(SimpleNamespace(block=10))
    assert len(node.sent) == 1
    assert await journal.get(second) is None  # (not journaled: not a drop)
    await ex._housekeep(SimpleNamespace(block=11))  # (the slot still busy: nothing)
    assert len(node.sent) == 1
    node.mined = 6  # the first mined
    ex.liquidator.items = ex.liquidator.items[1:]  # (done: the liquidator lists it no more)
    await ex._housekeep(SimpleNamespace(block=12))
    assert len(node.sent) == 2
    assert await journal.get(second) is not None  # (journaled now: its signed transaction
    # is recorded by the daemon's recorder, not wired here)
    await db.close()


async def test_a_follow_up_in_flight_is_not_due_before_the_liquidator_bounds_it(
        tmp_path: Path) -> None:
    """The liquidator asks whether a follow-up goes this block before it spends a request on
    it (Curie's unwind limit asks every voter endpoint, ahead of the block's liquidations):
    one journaled and on its way is not due — even while the book still shows the position —
    one never journaled is; the journal's word, the same the executor sends by."""
    node, db, _, ex, _, _ = await two_unwinds(tmp_path)
    await ex._housekeep(SimpleNamespace(block=10))
    assert ex.liquidator.due == [True, True] and len(node.sent) == 1  # (the slot: one)
    node.mined = 6  # the first mined; the book a block behind lists it still
    await ex._housekeep(SimpleNamespace(block=12))
    assert ex.liquidator.due == [False, True]
    assert len(node.sent) == 2  # (the second alone: the first not sent again)
    await db.close()


async def test_what_liquidations_in_flight_pull_is_counted_until_mined() -> None:
    tx = manager(Node())
    await sign(tx, 1, 10)
    await sign(tx, 2, 10)
    tx.reserve(key(1), "0xUSDC", 300)
    tx.reserve(key(2), "0xusdc", 200)
    tx.reserve(key(2), "0xdai", 7)
    assert tx.in_flight_pulls() == {"0xusdc": 500, "0xdai": 7}
    tx._note_mined(6, 12)  # (nonce 5, key 1's, mined: its pull is in the balance)
    assert tx.in_flight_pulls() == {"0xusdc": 200, "0xdai": 7}
    assert tx.in_flight_pulls(12) == {"0xusdc": 200, "0xdai": 7}
    # (but not in a balance read at a block before the count was: another protocol's
    # scan a block ahead read it)
    assert tx.in_flight_pulls(11) == {"0xusdc": 500, "0xdai": 7}
    del tx.pending[key(2)]  # (settled or dropped: nothing more to pull)
    assert tx.in_flight_pulls() == {}


class Mined(Node):
    """A node that has mined everything sent, in block 12."""

    async def request(self, method: str, params: Any = ()) -> Any:
        if method == "eth_getTransactionReceipt":
            return {"transactionHash": params[0], "status": "0x1", "gasUsed": "0x5208",
                    "blockHash": "0x" + "ab" * 32, "blockNumber": hex(12)}
        return await super().request(method, params)


async def test_a_settled_pull_still_counts_for_a_balance_read_before_its_block() -> None:
    """The watch settles from the latest receipts; a scan a block behind reads the balances
    at its own block, which do not show a pull mined after it (a restart's resumed
    liquidations, mined while its first scan ran: the next ones' simulations failed for
    it). A receipt's block far ahead (one endpoint's word) holds the capital 16 blocks at
    most."""
    node = Mined()
    tx = manager(node)
    await sign(tx, 1, 10)
    tx.reserve(key(1), "0xusdc", 300)
    node.mined = 6
    [outcome] = await tx.watch(12, lambda k: True)
    assert outcome.status == "included" and key(1) not in tx.pending
    assert tx.in_flight_pulls(11) == {"0xusdc": 300}  # (read before it was mined)
    assert tx.in_flight_pulls(12) == {} and tx.in_flight_pulls() == {}
    assert tx.in_flight_pulls(11) == {"0xusdc": 300}  # (kept for a scan further behind)
    assert tx.in_flight_pulls(12 + 65) == {}  # (forgotten once far behind)
    assert tx.in_flight_pulls(11) == {}

    far = Mined()
    far_tx = manager(far)
    await sign(far_tx, 1, 10)
    far_tx.reserve(key(1), "0xusdc", 300)

    async def lying(method: str, params: Any = ()) -> Any:
        answer = await Mined.request(far, method, params)
        if method == "eth_getTransactionReceipt":
            answer["blockNumber"] = hex(10**12)
        return answer
    far.request = lying  # type: ignore[method-assign]
    far.mined = 6
    await far_tx.watch(12, lambda k: True)
    assert far_tx.in_flight_pulls(12 + 15) == {"0xusdc": 300}
    assert far_tx.in_flight_pulls(12 + 16) == {}


def taker(tx: Any, node: Any) -> Any:
    """`take(protocol, n, block)`: `protocol` finds the slot free and its turn at `block`,
    and signs its n-th liquidation there, mined by the next block."""
    async def take(protocol: str, n: int, block: int) -> None:
        assert await tx.slot_free_at(block) and tx.slot_turn(protocol, block) is None
        await tx.prepare(OpportunityKey(protocol, "0x" + f"{n:040x}", ("c", "d"), "v"),
                         TARGET, selector(CALL), 300_000, 10**18, block=block, base_fee=GWEI)
        node.mined += 1

    return take


async def test_the_protocols_on_a_chain_take_the_one_slot_in_turn() -> None:
    """Aave's path runs first every block: without turns it took the slot at every block of
    a cascade, and Morpho's liquidations waited until Aave had none left."""
    node = Node()
    tx = delegated(node)
    take = taker(tx, node)

    assert tx.slot_turn("aave", 10) is None  # (nobody waits: no turn to give)
    await take("aave", 1, 10)
    tx.want_slot("morpho", 10)  # (its path, after Aave's: the slot taken)
    assert tx.slot_turn("aave", 11) == "morpho"  # (Aave yields the next block...)
    tx.want_slot("aave", 11)
    await take("morpho", 2, 11)  # (...to Morpho, held out of it longer)
    tx.want_slot("curie", 11)
    assert tx.slot_turn("morpho", 12) == "aave"  # (Aave, since 11; Curie since 11 too:
    assert tx.slot_turn("curie", 12) == "aave"   # the order between equals is the name's)
    await take("aave", 3, 12)
    tx.want_slot("curie", 12)  # (held again: its turn not come)
    assert tx.slot_turn("aave", 13) == "curie"
    await take("curie", 4, 13)
    # A claim not renewed lapses: one that had nothing more to send keeps no one waiting,
    # and one made again later waits from then (an old claim gave priority for good).
    tx.want_slot("morpho", 14)
    assert tx.slot_turn("aave", 15) == "morpho" and tx.slot_turn("aave", 16) is None
    tx.want_slot("aave", 20)
    tx.want_slot("morpho", 20)  # (its claim of 14 lapsed: from 20, as Aave's)
    assert tx.slot_turn("morpho", 21) == "aave"  # (equals: the name's order)
    # A turn had is spent, whether or not anything is signed in it.
    tx.forget_want("aave")
    assert tx.slot_turn("morpho", 21) is None
    # An address not delegated sends as many as it likes: no turns.
    tx_plain = manager(Node())
    tx_plain.want_slot("morpho", 10)
    assert tx_plain.slot_turn("aave", 10) is None


async def test_a_protocol_held_behind_its_own_transaction_waits_behind_the_one_it_kept_out(
        ) -> None:
    """A crash's block: Aave's price-exposed pass signs, its full pass is then held behind
    that transaction, and Morpho's path is held behind it too — both claims made at the one
    block. Aave was not held out of that block's slot (it had it): the next block is
    Morpho's, whichever path asks first. (Dated alike, the tie went by name: Aave took the
    next block too, a loaded full run's turns aave, aave, morpho.)"""
    node = Node()
    tx = delegated(node)
    take = taker(tx, node)

    await take("aave", 1, 10)  # (its first pass)
    tx.want_slot("aave", 10)  # (its full pass: held behind its own wave)
    tx.want_slot("morpho", 10)
    assert tx.slot_turn("aave", 11) == "morpho" and tx.slot_turn("morpho", 11) is None
    tx.want_slot("aave", 11)
    await take("morpho", 2, 11)
    tx.want_slot("morpho", 11)  # (Morpho's own second pass, the same: Aave's turn next)
    assert tx.slot_turn("morpho", 12) == "aave" and tx.slot_turn("aave", 12) is None
    await take("aave", 3, 12)
    tx.want_slot("aave", 12)
    tx.want_slot("morpho", 12)  # (since 12: its claim of 11 dated from the block after)
    assert tx.slot_turn("aave", 13) == "morpho"
    # A claim renewed at the next block stays dated from the block after the one had.
    tx.want_slot("aave", 13)
    await take("morpho", 4, 13)
    assert tx.slot_turn("morpho", 14) == "aave"


class Pool(Node):
    """A node whose pool holds transactions of the key: `pool_count` is its pending count."""

    def __init__(self) -> None:
        super().__init__()
        self.pool_count = 5
        self.receipt_block: Any = hex(12)
        self.elsewhere: dict[str, int] = {}

    async def request(self, method: str, params: Any = ()) -> Any:
        if method == "eth_getTransactionCount":
            return hex(self.pool_count if params[1] == "pending" else self.mined)
        if method == "eth_getCode":
            return "0x"
        if method == "eth_getTransactionReceipt":
            if self.mined <= 5:
                return None
            return {"transactionHash": params[0], "status": "0x1", "gasUsed": "0x5208",
                    "blockHash": "0x" + "ab" * 32, "blockNumber": self.receipt_block}
        return await super().request(method, params)

    async def batch_at(self, block: int, calls: Any) -> Any:
        return {}, [await self.request(m, p) for m, p in calls]

    async def call_endpoint(self, ep: str, method: str, params: Any = ()) -> Any:
        """Another endpoint (`voters`): its pending count is `elsewhere[ep]`."""
        if method == "eth_getTransactionCount" and params[1] == "pending":
            return hex(self.elsewhere[ep])
        return await self.request(method, params)


def pooled() -> tuple[Pool, TxManager]:
    node = Pool()
    tx = manager(node)
    tx._nonce = None
    return node, tx


async def test_what_another_sender_has_in_the_pool_at_start_holds_until_mined() -> None:
    """Unknown nonces in the pool at start hold new liquidations until mined; the hold is
    armed again at the next start (a replica's promotion) and lifts after 50 blocks if they
    never are. A pending count no pool could hold (one endpoint's word) is not believed —
    walked, 2^64 nonces froze the process."""
    node, tx = pooled()
    node.mined, node.pool_count = 5, 8
    await tx.sync_nonce_afresh()
    assert tx.send_hold(10) is not None and "nonces 5-7" in tx.send_hold(10).reason
    await tx.check_foreign(10)
    assert tx.send_hold(11) is not None
    node.mined = 8  # (the other keeper's liquidations mined)
    await tx.check_foreign(11)
    assert tx.send_hold(11) is None
    # Promoted again later: armed again, its clock from the first block after.
    node.pool_count = 10
    await tx.sync_nonce_afresh()
    await tx.check_foreign(100)
    assert tx.send_hold(100) is not None and tx.send_hold(149) is not None
    assert tx.send_hold(150) is None  # (never mined: not held for good)
    node.mined, node.pool_count = 10, 2**64 - 1
    await tx.sync_nonce_afresh()
    assert tx.send_hold(200) is None
    # One endpoint's count of 30 in its pool, another's of none: the least is believed (a
    # lying count held liquidations 50 blocks).
    node.pool_count, node.voters, node.elsewhere = 40, ["a", "b"], {"a": 40, "b": 10}
    await tx.sync_nonce_afresh()
    assert tx.send_hold(300) is None
    node.elsewhere["b"] = 12
    await tx.sync_nonce_afresh()
    assert tx.send_hold(400) is not None and "nonces 10-11" in tx.send_hold(400).reason


async def test_a_start_signs_above_what_it_tracks_and_a_receipt_without_block_settles() -> None:
    """Each protocol's start syncs the nonce again: a resumed transaction not sent again (not
    in the node's count) kept its nonce only until the next sync. And a receipt whose block
    does not read is settled all the same (it raised out of the watch, the settlement lost)."""
    node, tx = pooled()
    await tx.sync_nonce()
    record, _ = await sign(tx, 1, 10)
    tx.pending.clear()
    tx.track(key(1), [record], TARGET, selector(CALL), 10**18, 10)  # (resumed, unsent)
    assert await tx.sync_nonce() == 6  # (the node counts 5: nonce 5 is ours)
    tx.reserve(key(1), "0xusdc", 300)
    node.mined, node.receipt_block = 6, None
    [outcome] = await tx.watch(12, lambda k: True)
    assert outcome.status == "included" and tx.in_flight_pulls(11) == {"0xusdc": 300}
