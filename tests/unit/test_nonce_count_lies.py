"""The key's nonce counts are one endpoint's word: one answering more than was mined (once,
or 2^64 - 1) must not call keeperd's key used elsewhere, raise its next nonce above a gap
nothing fills (every later transaction queued by the nodes, never mined, never settled),
nor walk a range of 2^64 nonces on the event loop. What would name a nonce another's or
raise the next one is confirmed with every voter at the block, and the least count
believed; a count past any that can be is the endpoint's bad response."""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth_account import Account

from keeperd.chain.rpc import RpcUnavailable, Shape
from keeperd.execution.journal import TxRecord
from keeperd.execution.txmanager import UNKNOWN_IN_FLIGHT_MAX, FeePolicy, Pending, TxManager
from keeperd.keys import KeeperKey
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.keys import OpportunityKey

SIGNER = KeeperKey(Account.create())
TARGET = "0x" + "11" * 20


class Endpoints:
    """A pool of named endpoints, each with its own counts. `first` answers the pool's
    requests and batches; each voter answers by name (`call_endpoint`, `batch_on`), judged
    by the shape asked as RpcPool judges it: an answer not of it is a bad response of that
    endpoint (listed in `bad`)."""

    chain = "devnet"

    def __init__(self, *names: str, mined: int = 5) -> None:
        self.endpoints = list(names)
        self.voters = list(names)
        self.first = names[0]
        self.mined = dict.fromkeys(names, mined)
        self.pending = dict.fromkeys(names, mined)
        self.bad: list[str] = []

    def answer(self, ep: str, method: str, params: Any) -> Any:
        if method == "eth_getTransactionCount":
            return hex(self.pending[ep] if params[1] == "pending" else self.mined[ep])
        if method == "eth_getCode":
            return "0x"
        if method == "eth_getTransactionReceipt":
            return None  # (not mined)
        raise AssertionError(f"not expected: {method}")

    async def request(self, method: str, params: Any = ()) -> Any:
        return self.answer(self.first, method, params)

    async def batch(self, calls: list[tuple[str, Any]]) -> list[Any]:
        return [self.answer(self.first, m, p) for m, p in calls]

    async def batch_at(self, block: int, calls: list[tuple[str, Any]]
                       ) -> tuple[dict[str, Any], list[Any]]:
        return {"number": hex(block)}, await self.batch(calls)

    async def batch_on(self, ep: str, calls: list[tuple[str, Any]]) -> list[Any]:
        return [self.answer(ep, m, p) for m, p in calls]

    async def call_endpoint(self, ep: str, method: str, params: Any = (), *,
                            judged: bool = True, shape: Shape | None = None) -> Any:
        answer = self.answer(ep, method, params)
        if shape is not None and (why := shape(answer)) is not None:
            self.bad.append(ep)
            raise RpcUnavailable(f"endpoint {ep}: {why}")
        return answer

    def contested(self) -> None:
        return None

    def ranked(self) -> list[str]:
        return self.endpoints

    def lie(self, **counts: int) -> None:
        """Each named endpoint's mined count."""
        self.mined.update(counts)


async def started(pool: Endpoints, signed: int = 0) -> TxManager:
    """A manager synced at the pool's count, then `signed` nonces of its own taken (not
    mined yet)."""
    tx = TxManager(pool, SIGNER, 31337, metrics=Metrics(),  # type: ignore[arg-type]
                   policy=FeePolicy(replace_after_blocks=1000))  # (nothing replaced here)
    await tx.sync_nonce_afresh()
    assert tx._nonce is not None
    for _ in range(signed):
        tx._ours.add(tx._nonce)
        tx._nonce += 1
    return tx


async def test_one_endpoints_count_above_the_truth_calls_nothing_foreign_nor_raises_the_nonce(
        ) -> None:
    """(An audit: the first endpoint's count 3 past the truth, once, named three nonces
    another sender's — a false key_in_use_elsewhere and a 10-block hold — and raised the next
    nonce to 10: with honest counts back, every later transaction was signed above a gap.)"""
    pool = Endpoints("liar", "honest")
    tx = await started(pool, signed=2)  # (5 and 6 are ours, in flight: next 7)
    pool.lie(liar=10)
    assert await tx.check_foreign(1) == []
    assert tx.foreign_seen is None and tx.key_conflict(1) is None
    assert tx._nonce == 7
    pool.lie(liar=7, honest=7)  # (the truth: ours mined)
    assert await tx.check_foreign(2) == []
    assert tx._nonce == 7 and tx.key_conflict(2) is None


async def test_a_nonce_every_voter_counts_mined_is_anothers() -> None:
    pool = Endpoints("a", "b")
    tx = await started(pool, signed=1)  # (5 ours: next 6)
    pool.lie(a=8, b=8)  # (6 and 7 mined by another sender)
    assert await tx.check_foreign(1) == [6, 7]
    assert tx.key_conflict(1) is not None
    assert tx._nonce == 8  # (never signed under a nonce the other took)


async def test_the_least_count_of_the_voters_is_believed() -> None:
    pool = Endpoints("a", "b", "c")
    tx = await started(pool)
    pool.lie(a=9, b=7, c=8)
    assert await tx.check_foreign(1) == [5, 6]
    assert tx._nonce == 7


async def test_with_one_endpoint_its_count_still_names_anothers_nonces() -> None:
    pool = Endpoints("only")
    tx = await started(pool)
    pool.lie(only=7)
    assert await tx.check_foreign(1) == [5, 6]
    assert tx._nonce == 7 and tx.key_conflict(1) is not None


async def test_a_count_past_any_that_can_be_is_the_endpoints_bad_answer() -> None:
    """More than UNKNOWN_IN_FLIGHT_MAX past the next nonce: no pool holds that many from one
    sender, and nothing mines them in a block."""
    pool = Endpoints("liar", "honest")
    tx = await started(pool)
    pool.lie(liar=5 + UNKNOWN_IN_FLIGHT_MAX + 1)
    assert await tx.check_foreign(1) == []
    assert tx._nonce == 5 and tx.foreign_seen is None
    assert pool.bad == ["liar"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("voters", [("only",), ("liar", "honest")])
async def test_a_count_of_2_64_is_not_walked(voters: tuple[str, ...]) -> None:
    """(The comprehension walked 2^64 nonces on the event loop: the daemon frozen until its
    memory ran out.) With one endpoint too: it is no count, not believed."""
    pool = Endpoints(*voters)
    tx = await started(pool)
    pool.lie(**{voters[0]: 2**64 - 1})
    started_at = time.monotonic()
    assert await tx.check_foreign(1) == []
    assert time.monotonic() - started_at < 1
    assert tx._nonce == 5 and tx.foreign_seen is None and voters[0] in pool.bad


async def test_one_endpoints_pending_count_does_not_raise_the_next_nonce() -> None:
    """`sync_nonce` (at start, after a refused broadcast): one endpoint's pending count past
    the others' is not the next nonce — signed there, every transaction waited behind a gap."""
    pool = Endpoints("liar", "honest")
    pool.pending["liar"] = 9
    tx = await started(pool)
    assert tx._nonce == 5
    pool.pending["liar"] = 2**64 - 1
    assert await tx.sync_nonce() == 5


def _pending_at(tx: TxManager, nonce: int, block: int) -> Pending:
    record = TxRecord("0x" + f"{nonce:064x}", "k", nonce, 10**9, 10**9, 21_000, "0x00",
                      "liquidation", time.time())
    key = OpportunityKey("aave", "0x" + f"{nonce:040x}", ("c", "d"), "v")
    pending = Pending(key, nonce, TARGET, b"", 21_000, 10**18, attempts=[record],
                      sent_block=block)
    tx.pending[key] = pending
    tx._ours.add(nonce)
    return pending


async def test_one_endpoints_count_does_not_drop_a_transaction_in_flight() -> None:
    """The watch's count past a nonce with no receipt anywhere made it a drop of another
    sender's doing (alerted, held, planned again while it was still in the pool): the
    voters' least count must pass it too."""
    pool = Endpoints("liar", "honest")
    tx = await started(pool)
    assert tx._nonce is not None
    _pending_at(tx, 5, 1)
    tx._nonce = 6
    pool.lie(liar=6)
    for block in (2, 3, 4):
        assert await tx.watch(block, lambda k: True) == []
    assert tx.foreign_seen is None and len(tx.pending) == 1
    pool.lie(honest=6)  # (now both say it passed, and no endpoint has its receipt)
    [outcome] = [*await tx.watch(5, lambda k: True), *await tx.watch(6, lambda k: True)]
    assert outcome.status == "dropped" and tx.foreign_seen is not None


class OneBehind(Endpoints):
    """`behind` has not seen the last block: its pending count one short, and it has no
    state at the block the others are at."""

    def __init__(self, *names: str, behind: str) -> None:
        super().__init__(*names)
        self.behind = behind

    async def call_endpoint(self, ep: str, method: str, params: Any = (), *,
                            judged: bool = True, shape: Shape | None = None) -> Any:
        if ep == self.behind and method == "eth_getTransactionCount" \
                and params[1] not in ("pending", "latest"):
            raise RpcUnavailable(f"endpoint {ep}: header not found")
        return await super().call_endpoint(ep, method, params, judged=judged, shape=shape)


async def test_a_voter_one_block_behind_at_a_start_names_nothing_foreign() -> None:
    """(A review: the least of the voters' pending counts became where the check for other
    senders starts; a voter one block behind a takeover mid-crash named the keeper's own last
    nonce another sender's at the first block — key_in_use_elsewhere and a 10-block hold.)
    What the first endpoint counts at a start is history."""
    pool = OneBehind("first", "behind", behind="behind")
    pool.lie(first=7)
    pool.pending.update(first=7, behind=6)
    tx = await started(pool)
    assert await tx.check_foreign(1) == []
    assert tx.foreign_seen is None and tx.key_conflict(1) is None


async def test_a_voter_behind_the_block_has_no_say_on_a_drop() -> None:
    """The watch asks the voters at the block, not at "latest": a voter that has not reached
    it kept a transaction whose nonce another sender took from ever settling (a review)."""
    pool = OneBehind("first", "behind", behind="behind")
    tx = await started(pool)
    _pending_at(tx, 5, 1)
    tx._nonce = 6
    pool.lie(first=6, behind=5)  # (behind: "latest" at a block before the other's)
    outcomes = [o for b in (2, 3) for o in await tx.watch(b, lambda k: True)]
    assert [o.status for o in outcomes] == ["dropped"]
