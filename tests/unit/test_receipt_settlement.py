"""Each transaction in flight is settled on its own: one whose receipt cannot be had (every
endpoint answering junk or an error) or does not read waits for the next block, and the
others settle (one bad receipt raised out of the watch at every block: nothing settled and
every full pass aborted, for as long as anything was pending — an audit)."""

from __future__ import annotations

from typing import Any

import pytest

from keeperd.chain.rpc import RpcError, RpcUnavailable
from tests.unit.test_nonce_count_lies import Endpoints, _pending_at, started


class Receipts(Endpoints):
    """Endpoints whose receipts are scripted by hash: a dict, or an exception raised."""

    def __init__(self) -> None:
        super().__init__("a")
        self.receipts: dict[str, Any] = {}

    def answer(self, ep: str, method: str, params: Any) -> Any:
        if method == "eth_getTransactionReceipt":
            answer = self.receipts.get(params[0])
            if isinstance(answer, Exception):
                raise answer
            return answer
        return super().answer(ep, method, params)


def mined(tx_hash: str, **fields: Any) -> dict[str, Any]:
    return {"transactionHash": tx_hash, "status": "0x1", "gasUsed": "0x5208",
            "blockHash": "0x" + "ee" * 32, "blockNumber": "0x2", **fields}


@pytest.mark.parametrize("bad", [
    RpcUnavailable("every endpoint answered a receipt that is not one"),
    RpcError("eth_getTransactionReceipt", -32000, "transaction indexing is in progress"),
    {"status": "0x1"}, "0x1", [], mined("0x" + "00" * 32, status="0xZ"),
])
async def test_one_receipt_that_cannot_be_read_does_not_stop_the_others(bad: Any) -> None:
    pool = Receipts()
    tx = await started(pool)
    first, second = _pending_at(tx, 5, 1), _pending_at(tx, 6, 1)
    tx._nonce = 7
    pool.receipts[first.attempts[0].tx_hash] = bad
    pool.receipts[second.attempts[0].tx_hash] = mined(second.attempts[0].tx_hash)
    [outcome] = await tx.watch(2, lambda k: True)
    assert outcome.key == second.key and outcome.status == "included"
    assert list(tx.pending) == [first.key]  # (asked again next block)
    pool.receipts[first.attempts[0].tx_hash] = mined(first.attempts[0].tx_hash, status="0x0")
    [outcome] = await tx.watch(3, lambda k: True)
    assert outcome.key == first.key and outcome.status == "reverted" and not tx.pending


async def test_a_count_that_cannot_be_had_still_settles_by_receipts() -> None:
    pool = Receipts()
    tx = await started(pool)
    pending = _pending_at(tx, 5, 1)
    pool.receipts[pending.attempts[0].tx_hash] = mined(pending.attempts[0].tx_hash)

    async def down(method: str, params: Any = ()) -> Any:
        if method == "eth_getTransactionCount":
            raise RpcUnavailable("every endpoint down for this one")
        return pool.answer("a", method, params)

    pool.request = down  # type: ignore[method-assign]
    [outcome] = await tx.watch(2, lambda k: True)
    assert outcome.status == "included"
