"""Transactions of the key found in the node's pool at start that the journal does not know
(a start on another state directory mid-crash): new liquidations wait until they are mined
(`TxManager.send_hold`), told as `key_in_use_elsewhere` once the wait lasts
UNKNOWN_IN_FLIGHT_TOLD_BLOCKS blocks (`key_alert`: the key's own approvals cut short by a
crash are mined at the next block, and are not told; a by-hand trial's 67 held positions were
not), and ended once the pool no longer holds them (`_gone_from_pool`: evicted, they are never
mined, and signing resumes from the first free nonce instead of above a gap)."""

from __future__ import annotations

from keeperd.chain.rpc import Endpoint, RpcPool
from keeperd.execution.txmanager import (
    UNKNOWN_IN_FLIGHT_BLOCKS,
    UNKNOWN_IN_FLIGHT_TOLD_BLOCKS,
    TxManager,
)
from keeperd.metrics import Metrics

KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"


class Signer:
    address = KEEPER


def manager(mined: int = 12, counted: int = 58) -> TxManager:
    pool = RpcPool("t", [Endpoint("a", "http://a", None)])  # (no head read: not contested)
    tx = TxManager(pool, Signer(), 31337, metrics=Metrics())  # type: ignore[arg-type]
    tx._in_flight_at_start = (mined, counted)
    tx._mined_at, tx._nonce = mined, counted
    return tx


def test_a_wait_for_unknown_transactions_is_told_once_it_lasts() -> None:
    tx = manager()
    assert tx.send_hold(100) is not None  # (held from the first block)
    for block in range(100, 100 + UNKNOWN_IN_FLIGHT_TOLD_BLOCKS):
        assert tx.key_alert(block) is None, block  # (own approvals look the same: mined next)
    told = tx.key_alert(100 + UNKNOWN_IN_FLIGHT_TOLD_BLOCKS)
    assert told is not None and "46 transaction(s)" in told.reason and "nonces 12-57" in \
        told.reason and "another state_dir" in told.action
    tx._mined_at = 58  # (mined: the hold and the alert end)
    assert tx.key_alert(104) is None and tx.send_hold(104) is None


def test_the_wait_ends_at_its_limit_whatever_the_pool() -> None:
    tx = manager()
    tx.send_hold(100)
    assert tx.key_alert(100 + UNKNOWN_IN_FLIGHT_BLOCKS - 1) is not None
    assert tx.key_alert(100 + UNKNOWN_IN_FLIGHT_BLOCKS) is None


def test_transactions_gone_from_the_pool_end_the_wait_and_free_their_nonces() -> None:
    tx = manager()
    tx.send_hold(100)
    assert not tx._pool_counts_none("0x3a", 12)  # (the pool still counts them: 58)
    assert not tx._pool_counts_none("junk", 12)  # (an answer that does not read: nothing)
    assert tx._pool_counts_none(hex(12), 12)
    tx._gone_from_pool(12, 103)  # (every endpoint's pool: none beyond the mined count)
    assert tx.send_hold(103) is None and tx.key_alert(110) is None
    assert tx._nonce == 12  # (signed from the first free nonce, not above a gap at 58)


def test_no_reset_once_a_nonce_was_taken_since_start() -> None:
    """A nonce taken since the start (a signature under way, an approval signed above them)
    must never be handed out again by the reset (a review): the wait ends at its limit, as
    before."""
    tx = manager()
    tx._nonce = 59  # (58 taken by a send of ours)
    tx._gone_from_pool(12, 103)
    assert tx._nonce == 59 and tx.send_hold(103) is not None


def test_approvals_deposits_and_unwinds_wait_with_the_liquidations() -> None:
    """Signed during the wait, they took nonces above the unknown ones: evicted, those left
    a gap nothing of ours could pass, and the reset was no longer safe (a review)."""
    tx = manager()
    held = tx.upkeep_hold(100)
    assert held is not None and "keeperd's journal does not know" in held.reason
    assert tx.unknown_wait(100)
    tx._mined_at = 58
    assert tx.upkeep_hold(101) is None and not tx.unknown_wait(101)
