"""Broadcasts whose answer is lost (#17): a timeout after the node accepted, a reset before it
did, the private endpoint down. The transaction may be in a mempool: it stays tracked (its
nonce taken) and is sent again each block until a receipt or its nonce is passed — it used to
be marked dropped and forgotten while it could still be mined. And a private endpoint that
fails does not leak the transaction to the public mempool before `private_timeout_blocks`
(it used to fall back at once)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import structlog

from keeperd.chain.rpc import RpcPool, RpcPoolSettings, RpcUnavailable
from keeperd.devnet.handle import Devnet
from keeperd.execution.txmanager import FeePolicy, TxManager
from keeperd.keys import _from_hex
from keeperd.metrics import Metrics
from tests.conftest import metric_value
from tests.keeper_harness import (
    KEEPER,
    KEEPER_KEY,
)

# Nothing to the keeper itself: the one transaction the signing policy allows with no
# liquidator declaring any call.
SELF = KEEPER


@pytest.fixture(autouse=True)
def manual_mining(devnet: Devnet) -> Iterator[None]:
    """The keeper funded for gas; blocks only when a test mines them (what is in the mempool
    stays there until then)."""
    devnet.client.call("anvil_setBalance", KEEPER, hex(10**20))
    devnet.client.call("evm_setAutomine", False)
    yield
    devnet.client.call("evm_setAutomine", True)


def lose_answers(pool: RpcPool, *, deliver: bool) -> list[str]:
    """eth_sendRawTransaction batches whose answer is lost: after the node got them
    (`deliver`), or before. Returns the raw transactions that went through the pool."""
    batch = pool.batch
    seen: list[str] = []

    async def lossy(calls: Sequence[tuple[str, list[Any]]], **kwargs: Any) -> list[object]:
        if calls and all(m == "eth_sendRawTransaction" for m, _ in calls):
            seen.extend(p[0] for _, p in calls)
            if deliver:
                await batch(calls, **kwargs)
            pool.batch = batch  # type: ignore[method-assign]  # only the first one is lost
            raise RpcUnavailable("eth_sendRawTransaction: read timeout")
        return await batch(calls, **kwargs)

    pool.batch = lossy  # type: ignore[method-assign]
    return seen


def manager(pool: RpcPool, metrics: Metrics, private: RpcPool | None = None) -> TxManager:
    return TxManager(pool, _from_hex(KEEPER_KEY, "test"), 31337, metrics=metrics,
                     private_pool=private, policy=FeePolicy(replace_after_blocks=2,
                                                            private_timeout_blocks=3))


def receipt(devnet: Devnet, tx_hash: str) -> dict[str, Any] | None:
    return devnet.client.call("eth_getTransactionReceipt", tx_hash)  # type: ignore[no-any-return]


async def test_an_accepted_broadcast_whose_answer_is_lost_is_settled_included(
        devnet: Devnet, pool: RpcPool, metrics: Metrics) -> None:
    tx = manager(pool, metrics)
    head = devnet.client.block_number()
    lose_answers(pool, deliver=True)
    record = await tx.send("a", SELF, b"", 21_000, 10**18, block=head)  # no SendRefused
    assert tx.pending["a"].in_doubt
    assert metric_value(metrics, "keeperd_tx_broadcast_in_doubt_total",
                        {"chain": "devnet"}) == 1
    block = devnet.mine(1)
    [outcome] = await tx.watch(block, lambda key: True)
    assert (outcome.key, outcome.status, outcome.tx_hash) == ("a", "included",
                                                              record.tx_hash)


async def test_a_broadcast_lost_before_the_node_got_it_is_sent_again(
        devnet: Devnet, pool: RpcPool, metrics: Metrics) -> None:
    tx = manager(pool, metrics)
    head = devnet.client.block_number()
    lose_answers(pool, deliver=False)
    record = await tx.send("b", SELF, b"", 21_000, 10**18, block=head)
    block = devnet.mine(1)
    assert receipt(devnet, record.tx_hash) is None  # the node never had it
    assert await tx.watch(block, lambda key: True) == []  # tracked, sent again
    assert not tx.pending["b"].in_doubt
    block = devnet.mine(1)
    [outcome] = await tx.watch(block, lambda key: True)
    assert (outcome.status, outcome.tx_hash) == ("included", record.tx_hash)


async def test_a_private_endpoint_down_does_not_leak_before_its_timeout(
        devnet: Devnet, pool: RpcPool, metrics: Metrics) -> None:
    settings = RpcPoolSettings(timeout=1.0, max_attempts=1)
    async with RpcPool.from_urls("private", ["http://127.0.0.1:9"], metrics=metrics,
                                 settings=settings) as private:
        tx = manager(pool, metrics, private)
        head = devnet.client.block_number()
        record = await tx.send("c", SELF, b"", 21_000, 10**18, block=head)
        assert tx.pending["c"].private and tx.pending["c"].in_doubt
        for _ in range(2):  # within private_timeout_blocks: nothing public
            block = devnet.mine(1)
            assert await tx.watch(block, lambda key: True) == []
            assert devnet.client.call("eth_getTransactionByHash", record.tx_hash) is None
        block = devnet.mine(1)  # 3 blocks: it falls back to the public mempool
        assert await tx.watch(block, lambda key: True) == []
        assert not tx.pending["c"].private
        block = devnet.mine(1)
        [outcome] = await tx.watch(block, lambda key: True)
        assert outcome.status == "included" and outcome.key == "c"


async def test_a_transaction_no_longer_wanted_is_cancelled(devnet: Devnet, pool: RpcPool,
                                                           metrics: Metrics) -> None:
    """(#18: the README's "cancellation of ones whose opportunity vanished", backed.) Stuck
    past `replace_after_blocks` while its opportunity is gone: replaced by a 0-value transfer
    to itself under the same nonce, with a bumped fee; the liquidation never lands."""
    tx = manager(pool, metrics)
    head = devnet.client.block_number()
    # Underpriced for the devnet's base fee: it stays in the mempool, not mined.
    record = await tx.send("d", SELF, b"", 21_000, 10**18, block=head, base_fee=1)
    devnet.client.call("anvil_setNextBlockBaseFeePerGas", hex(100 * 10**9))
    for _ in range(2):
        block = devnet.mine(1)
        assert await tx.watch(block, lambda key: False) == []  # not wanted any more
    [cancel] = [a for a in tx.pending["d"].attempts if a.kind == "cancel"]
    assert cancel.nonce == record.nonce and cancel.max_fee_per_gas > record.max_fee_per_gas
    devnet.client.call("anvil_setNextBlockBaseFeePerGas", hex(1))
    block = devnet.mine(1)
    [outcome] = await tx.watch(block, lambda key: False)
    assert (outcome.key, outcome.status, outcome.tx_hash) == ("d", "cancelled",
                                                              cancel.tx_hash)
    assert receipt(devnet, record.tx_hash) is None  # the liquidation never landed


async def test_a_receipt_served_a_block_after_the_nonce_is_not_a_drop(
        devnet: Devnet, metrics: Metrics) -> None:
    """A node may count the nonce before it serves the receipt (anvil between executing a
    block and storing it; a load-balanced provider whose receipt comes from a node a block
    behind). Seen once in the replica test: a liquidation mined that moment was marked
    dropped — and planned again. The nonce passed without a receipt counts as a drop only if
    it still holds at a later block."""
    from tests.faults.chaos_proxy import ChaosProxy, Fault

    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy, \
            RpcPool.from_urls("devnet", [proxy.url], metrics=metrics) as pool:
        tx = manager(pool, metrics)
        record = await tx.send("e", SELF, b"", 21_000, 10**18,
                               block=devnet.client.block_number())
        block = devnet.mine(1)
        proxy.faults["eth_getTransactionReceipt"] = Fault.answer(None, times=1)  # not yet
        assert await tx.watch(block, lambda key: True) == []
        assert proxy.faulted["eth_getTransactionReceipt"] == 1
        [outcome] = await tx.watch(devnet.mine(1), lambda key: True)
    assert (outcome.key, outcome.status, outcome.tx_hash) == ("e", "included", record.tx_hash)


async def test_a_transaction_whose_nonce_is_used_is_not_replaced(
        devnet: Devnet, pool: RpcPool, metrics: Metrics) -> None:
    """Mined, its receipt not served yet (anvil between executing a block and storing it; a
    provider whose receipts come from a node a block behind), two blocks after its send: it
    was replaced — a replacement only ever refused ("nonce too low"), and one more signature
    asked of a remote signer (seen: test_remote_signer counting one more signature than
    nonces). Its nonce is used: the next block settles it."""
    tx = manager(pool, metrics)
    head = devnet.client.block_number()
    await tx.send("a", SELF, b"", 21_000, 10**18, block=head)
    devnet.mine(1)
    request = pool.request

    async def receipts_late(method: str, params: Any = (), **kwargs: Any) -> Any:
        if method == "eth_getTransactionReceipt":
            return None
        return await request(method, params, **kwargs)

    pool.request = receipts_late  # type: ignore[method-assign]
    try:
        assert await tx.watch(devnet.mine(2), lambda key: True) == []
    finally:
        pool.request = request  # type: ignore[method-assign]
    assert len(tx.pending["a"].attempts) == 1  # not replaced
    [outcome] = await tx.watch(devnet.mine(1), lambda key: True)
    assert outcome.status == "included"


async def test_a_receipt_one_endpoint_lags_on_is_asked_of_the_others_before_a_drop(
        devnet: Devnet, metrics: Metrics) -> None:
    """On a 2-second chain "a later block" is 2 s: a provider whose receipts come from a node
    further behind made a mined liquidation a drop — the key's other sender alerted, sending
    held, the position planned again. Before a nonce passed without a receipt is called a
    drop, every endpoint is asked: one that has it postpones the drop, and the settlement
    comes from the pool's own answer once it serves it (another endpoint's receipt alone,
    which may lie, settles nothing) — or from the pool's own block at the receipt's height,
    when it lists the transaction (two endpoints' words)."""
    from tests.faults.chaos_proxy import ChaosProxy, Fault

    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy, \
            RpcPool.from_urls("devnet", [proxy.url, devnet.manifest["rpc_url"]],
                              metrics=metrics) as pool:
        tx = manager(pool, metrics)
        record = await tx.send("r", SELF, b"", 21_000, 10**18,
                               block=devnet.client.block_number())
        # (the pool's endpoint serves no receipt for two blocks, the batch asked of it too,
        # nor its blocks: nothing beside the other endpoint's receipt)
        proxy.faults["eth_getTransactionReceipt"] = Fault.answer(None, times=3)
        proxy.faults["eth_getBlockByNumber"] = Fault.answer(None, times=1)
        assert await tx.watch(devnet.mine(1), lambda key: True) == []
        with structlog.testing.capture_logs() as logs:
            assert await tx.watch(devnet.mine(1), lambda key: True) == []
        [told] = [e for e in logs if e["event"] == "tx.drop_postponed"]
        assert told["endpoint"] == pool.endpoints[1].safe_url
        assert not [e for e in logs if e["event"] == "tx.key_in_use_elsewhere"]
        [outcome] = await tx.watch(devnet.mine(1), lambda key: True)
        assert (outcome.key, outcome.status, outcome.tx_hash) == (
            "r", "included", record.tx_hash)
        assert tx.key_conflict(devnet.client.block_number()) is None

        # The pool's endpoint never serves its receipts but serves its blocks: its block at
        # the other's receipt's height lists the transaction — settled included at once.
        # (With two endpoints, a first withholding receipts left mined liquidations
        # journaled dropped: "sent", never "included", a by-hand trial.)
        record = await tx.send("t", SELF, b"", 21_000, 10**18,
                               block=devnet.client.block_number())
        proxy.faults["eth_getTransactionReceipt"] = Fault.answer(None)
        assert await tx.watch(devnet.mine(1), lambda key: True) == []
        with structlog.testing.capture_logs() as logs:
            [outcome] = await tx.watch(devnet.mine(1), lambda key: True)
        assert (outcome.key, outcome.status, outcome.tx_hash) == (
            "t", "included", record.tx_hash)
        assert outcome.gas_used == 21_000
        [told] = [e for e in logs if e["event"] == "tx.settled_by_block_body"]
        assert told["endpoint"] == pool.endpoints[1].safe_url
        assert not [e for e in logs if e["event"] in ("tx.key_in_use_elsewhere",
                                                      "tx.receipt_disputed")]


async def test_a_drop_is_not_postponed_by_a_malformed_receipt_nor_for_ever(
        devnet: Devnet, metrics: Metrics) -> None:
    """Another endpoint's answer is only asked whether to wait: a malformed one is no answer
    (it stopped the executor every block), and one that keeps claiming a receipt the pool
    never serves waits RECEIPT_WAIT_BLOCKS, not for ever."""
    from keeperd.execution.txmanager import RECEIPT_WAIT_BLOCKS, is_receipt_of
    from tests.faults.chaos_proxy import ChaosProxy, Fault

    good = {"transactionHash": "0xAB", "status": "0x1", "blockHash": "0x01",
            "blockNumber": "0x5"}
    assert is_receipt_of(good, "0xab")
    for broken in ({**good, "transactionHash": None}, {**good, "status": "0x2"},
                   {**good, "transactionHash": "0xac"}, "0x1", None,
                   {k: v for k, v in good.items() if k != "blockHash"}):
        assert not is_receipt_of(broken, "0xab")
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy, \
            RpcPool.from_urls("devnet", [proxy.url, devnet.manifest["rpc_url"]],
                              metrics=metrics) as pool:
        tx = manager(pool, metrics)
        await tx.send("s", SELF, b"", 21_000, 10**18, block=devnet.client.block_number())
        proxy.faults["eth_getTransactionReceipt"] = Fault.answer(None)  # (never served)
        # (and its blocks hold no such transaction: the other endpoint's word alone)
        proxy.faults["eth_getBlockByNumber"] = Fault.answer(
            {"hash": "0x" + "00" * 32, "number": "0x1", "transactions": []})
        outcomes: list[Any] = []
        with structlog.testing.capture_logs() as logs:
            for _ in range(RECEIPT_WAIT_BLOCKS + 2):
                outcomes += await tx.watch(devnet.mine(1), lambda key: True)
                if outcomes:
                    break
    assert [o.status for o in outcomes] == ["dropped"]
    # (an endpoint says ours was mined: disputed, not another sender's — no alert, no hold;
    # it was key_in_use_elsewhere, critical, and 10 blocks of held liquidations, a trial)
    assert [e for e in logs if e["event"] == "tx.receipt_disputed"]
    assert not [e for e in logs if e["event"] == "tx.key_in_use_elsewhere"]
    assert tx.key_conflict(devnet.client.block_number()) is None


async def test_two_endpoints_receipts_settle_what_the_first_never_serves(
        devnet: Devnet, metrics: Metrics) -> None:
    """A first endpoint that serves no receipt, two others that do: two endpoints agreeing
    settle it, as included (48 mined liquidations were journaled dropped, the key called in
    use elsewhere, a by-hand trial); one alone would not."""
    from tests.faults.chaos_proxy import ChaosProxy, Fault

    url = devnet.manifest["rpc_url"]
    async with ChaosProxy(url) as proxy, \
            RpcPool.from_urls("devnet", [proxy.url, url, url], metrics=metrics) as pool:
        tx = manager(pool, metrics)
        record = await tx.send("t", SELF, b"", 21_000, 10**18,
                               block=devnet.client.block_number())
        proxy.faults["eth_getTransactionReceipt"] = Fault.answer(None)  # (never served)
        outcomes: list[Any] = []
        for _ in range(4):
            outcomes += await tx.watch(devnet.mine(1), lambda key: True)
            if outcomes:
                break
    assert [(o.status, o.tx_hash) for o in outcomes] == [("included", record.tx_hash)]
    assert tx.key_conflict(devnet.client.block_number()) is None
