"""A mined count read at a block is not proof that the keeper's transactions below it were
mined by that block: anvil answers a read at its head's number from the state of the block it
is mining — the next one — before it stores that block and serves its receipts. A sale counted
mined so (nonce 0 of a crash, mined in 473, counted at 472) left the turn pinned at 472, whose
state does not have it, and the two sales behind it through its pool passed there, were sent
and reverted on chain (SwapBelowBound, a CI run of test_a_keeper_without_capital_...). A sale
in flight leaves its pool's turn only once its receipt says it was mined by the turn's block."""

from __future__ import annotations

from typing import Any

from eth_account import Account

from keeperd.execution.journal import TxRecord
from keeperd.execution.sales import Sale
from keeperd.execution.txmanager import FeePolicy, Pending, TxManager
from keeperd.keys import KeeperKey
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.keys import OpportunityKey

POOL = "0x" + "e2" * 20
SELLER = "0x" + "87" * 20
HASH = "0x" + "ab" * 32


class Node:
    """A node mining block 473 (nonce 0): its count at 472 already says 1; its receipt of
    nonce 0 is served once the test says so."""

    chain = "devnet"
    voters: list[Any] = []
    endpoints: list[Any] = []

    def __init__(self) -> None:
        self.count_at: dict[int, int] = {472: 1}  # (the state of 473, asked at 472)
        self.receipt_block: int | None = None

    def contested(self) -> str | None:
        return None

    async def batch_at(self, block: int, calls: Any) -> Any:
        assert [m for m, _ in calls] == ["eth_getTransactionCount"]
        return {}, [hex(self.count_at[block])]

    async def batch(self, calls: Any) -> Any:
        return [await self.request(m, p) for m, p in calls]

    async def request(self, method: str, params: Any = ()) -> Any:
        assert method == "eth_getTransactionReceipt", method
        if self.receipt_block is None or params[0] != HASH:
            return None
        return {"transactionHash": HASH, "status": "0x1", "blockHash": "0x" + "bb" * 32,
                "blockNumber": hex(self.receipt_block), "gasUsed": "0x1"}


def manager(node: Node) -> tuple[TxManager, OpportunityKey]:
    tx = TxManager(node, KeeperKey(Account.create()), 31337,  # type: ignore[arg-type]
                   metrics=Metrics(), policy=FeePolicy())
    tx._nonce = 1
    key = OpportunityKey("aave", "0x" + "26" * 20, ("c", "d"), "v")
    pending = Pending(key, 0, SELLER, b"\x00" * 4, 750_000, 10**18, sent_block=472)
    pending.attempts.append(TxRecord(HASH, key, 0, 1, 1, 750_000, "0x", "liquidation", 0.0))
    tx.pending[key] = pending
    tx.sells(key, POOL)
    return tx, key


def ahead(tx: TxManager, at: int | None) -> list[Sale]:
    return tx.sales_in_flight(at).get(POOL.lower(), [])


async def test_a_sale_counted_mined_at_a_block_its_receipt_does_not_show_stays_ahead() -> None:
    node = Node()
    tx, _ = manager(node)
    await tx.count_mined_at(472)  # the crash block's pass: its count, read at 472, says 1
    assert tx.mined_at_block == 472
    assert len(ahead(tx, 472)) == 1  # no receipt yet: still ahead of the turn at 472
    node.receipt_block = 473  # stored: mined in 473, after the turn's block
    await tx.count_mined_at(472)
    assert len(ahead(tx, 472)) == 1
    node.count_at[473] = 1
    await tx.count_mined_at(473)  # the next block's pass: mined by it, in its state
    assert ahead(tx, 473) == []


async def test_a_sale_whose_receipt_says_it_was_mined_by_the_block_leaves_the_turn() -> None:
    node = Node()
    node.receipt_block = 472  # (a count that is right: mined in the block read at)
    tx, _ = manager(node)
    await tx.count_mined_at(472)
    assert ahead(tx, 472) == []
