"""Replacements of a stuck transaction stay within the operator's fee cap (#28 item 7): 38
bumps once reached a 3,690 gwei max fee and a 176 gwei tip against `max_fee_gwei: 500`."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from eth_account import Account

from keeperd.execution.journal import TxRecord
from keeperd.execution.signer_policy import Allowed, selector
from keeperd.execution.txmanager import GWEI, FeePolicy, Pending, TxManager
from keeperd.keys import KeeperKey
from keeperd.metrics import Metrics


class Node:
    """Answers what a replacement asks: the base fee, and takes every broadcast."""

    chain = "devnet"

    def __init__(self, base_fee: int) -> None:
        self.base_fee, self.sent = base_fee, 0

    async def request(self, method: str, params: Any = ()) -> Any:
        if method == "eth_getBlockByNumber":
            return {"baseFeePerGas": hex(self.base_fee)}
        assert method == "eth_sendRawTransaction"
        self.sent += 1
        return "0x" + "00" * 32


TARGET = "0x" + "22" * 20
CALL = "liquidate()"  # (a call the signing policy allows)


def stuck(max_fee: int, tip: int) -> Pending:
    first = TxRecord("0x" + "11" * 32, "k", 7, max_fee, tip, 300_000, "0x", "liquidation", 0.0)
    return Pending("k", 7, TARGET, selector(CALL), 300_000, budget_wei=10**30,
                   attempts=[first])


async def test_replacements_never_pass_the_fee_cap_nor_the_tip_its_max_fee() -> None:
    node = Node(base_fee=200 * GWEI)  # a fee spike: base x headroom is far above the cap
    tx = TxManager(node, KeeperKey(Account.create()), 31337, metrics=Metrics(),  # type: ignore[arg-type]
                   policy=FeePolicy(max_fee_per_gas_wei=500 * GWEI, fee_bump=1.125))
    tx.signing_policy.allow(Allowed(TARGET, CALL, "test"))
    pending = stuck(100 * GWEI, 20 * GWEI)
    for block in range(40):
        await tx._replace(pending, block)
    fees = [(a.max_fee_per_gas, a.priority_fee) for a in pending.attempts]
    assert len(fees) >= 3 and fees[-1][0] == 500 * GWEI  # replaced up to the cap, no more
    assert all(max_fee <= 500 * GWEI and tip <= max_fee for max_fee, tip in fees), fees
    # Each replacement raised both fees by the nodes' minimum bump, or was not sent.
    for (a, b), (c, d) in pairwise(fees):
        assert c >= a * 1.1 and d >= b * 1.1
    assert node.sent == len(fees) - 1


class Watched(Node):
    """A node for `watch`: nothing mined (no receipt; the nonce not passed), and whether the
    head it follows is one endpoint's word (`RpcPool.contested`)."""

    def __init__(self, base_fee: int) -> None:
        super().__init__(base_fee)
        self.contested_why: str | None = None

    async def request(self, method: str, params: Any = ()) -> Any:
        if method == "eth_getTransactionCount":
            return hex(7)
        if method == "eth_getTransactionReceipt":
            return None
        return await super().request(method, params)

    def contested(self) -> str | None:
        return self.contested_why


async def test_no_replacement_nor_cancel_is_signed_while_the_head_is_contested() -> None:
    """While the head is one endpoint's word (a liar past a halted chain), a stuck
    transaction is not replaced or cancelled: `still_wanted` and the fee would be judged on
    that endpoint's state, and its invented blocks would count towards
    `replace_after_blocks` (a review). The bytes signed stay; once the head is agreed, the
    replacement goes."""
    node = Watched(base_fee=10 * GWEI)
    tx = TxManager(node, KeeperKey(Account.create()), 31337, metrics=Metrics(),  # type: ignore[arg-type]
                   policy=FeePolicy(max_fee_per_gas_wei=500 * GWEI))
    tx.signing_policy.allow(Allowed(TARGET, CALL, "test"))
    tx.pending["k"] = pending = stuck(20 * GWEI, 2 * GWEI)
    node.contested_why = "the head followed (block 130) is one endpoint's word"
    for block in range(10, 30):
        await tx.watch(block, still_wanted=lambda key: False)
    assert len(pending.attempts) == 1 and not pending.cancelling and node.sent == 0
    node.contested_why = None
    await tx.watch(30, still_wanted=lambda key: False)
    assert len(pending.attempts) == 2 and pending.cancelling  # (not wanted: cancelled now)
