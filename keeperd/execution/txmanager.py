"""The transaction manager: nonces, EIP-1559 fees, write-ahead journaling, replacement and
cancellation, an optional private submission endpoint.

- Nonces are tracked locally (one keeper key, one process) and resynced from the node's
  pending count whenever a send fails in a way that leaves the nonce in doubt.
- Fees: maxFeePerGas = min(cap, baseFee x headroom + tip). Every attempt's worst-case fee
  (maxFeePerGas x gas limit) must fit under the caller's budget — the opportunity's expected
  profit — or it is not sent: a replacement that would cost more than the prize is skipped.
- Every signed transaction is journaled (hash and raw bytes) *before* it is broadcast.
- A transaction not included after `replace_after_blocks` is replaced with fees bumped by
  `fee_bump` (nodes require at least +10 %) while its opportunity still stands, or cancelled
  (a 0-value self-transfer at the same nonce) when it is gone.
- With a private endpoint (a protect-style RPC) transactions go there first and fall back to
  the public pool when not included within `private_timeout_blocks`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from eth_utils import keccak

from keeperd.chain.rpc import (
    Endpoint,
    RpcError,
    RpcPool,
    RpcUnavailable,
    hex_quantity,
    quantity_at_most,
)
from keeperd.config import KeeperConfig
from keeperd.crashpoints import crash_point
from keeperd.execution.delegation import (
    OTHER_SENDER_ACTION,
    UNREAD_ACTION,
    KeeperCode,
    KeyHold,
    read_code,
    refusal,
)
from keeperd.execution.journal import TxRecord
from keeperd.execution.sales import Sale
from keeperd.execution.signer import Signer, SignerError, UnsignedTx
from keeperd.execution.signer_policy import PolicedSigner, SignerPolicy
from keeperd.execution.wave_code import WAVE_ADDRESS
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.keys import TxKey, UpkeepKey
from keeperd.protocols.sdk.sending import SendRefused

log = structlog.get_logger(__name__)

GWEI = 10**9
# Nodes replace a pending transaction only when its max fee and tip both rise by 10 % (geth's
# default price bump; others alike).
REPLACEMENT_MIN_BUMP = 1.10
# A transaction from the keeper's address that keeperd did not sign (the key in use by another
# keeper or tool) holds new liquidations until this many blocks pass without another one: two
# senders on one key fight over nonces ("nonce too low", replaced and dropped liquidations).
FOREIGN_QUIET_BLOCKS = 10
# What an operator does when the head keeperd follows is one endpoint's word (`contested`).
CONTESTED_ACTION = ("Check each RPC endpoint's head against a block explorer "
                    "(keeperd_rpc_endpoint_head_lag_blocks): remove or fix the one that is "
                    "wrong.")
# A cancel's limit from an address delegated to code (`_cancel_gas`): measured 21,055 used
# from one delegated to KeeperWave; room for a delegate's heavier `receive`.
DELEGATED_CANCEL_GAS = 40_000
# How long a settled liquidation's pull is kept for balances read before its block
# (`in_flight_pulls`): a scan further behind the head than this is not expected.
MINED_PULLS_KEPT_BLOCKS = 64
# How long new liquidations wait for transactions found in the node's pool at start that
# keeperd's journal does not know (`key_conflict`), if they are not mined.
UNKNOWN_IN_FLIGHT_BLOCKS = 50
# ... and after how many of them that wait is told (`key_alert`).
UNKNOWN_IN_FLIGHT_TOLD_BLOCKS = 3
# More transactions from one sender than a pool keeps (geth's 5,120 slots are shared by all
# senders; a crash's block from one key is a few hundred): a pending count further above the
# mined one is not believed (`sync_nonce_afresh`).
UNKNOWN_IN_FLIGHT_MAX = 1024
ONE_IN_FLIGHT = ("the keeper's address is delegated (EIP-7702) and has a transaction in "
                 "flight: nodes take one at a time from such an address")
# Blocks a drop waits while another endpoint than the pool's has the receipt (`_settle`).
# Every voter asked the address's code this often (`check_code_everywhere`): the block's own
# read is the first endpoint's.
CODE_EVERYWHERE_BLOCKS = 10
CODE_EVERYWHERE_WAIT_S = 1.0  # (each voter's answer waited for this long at most)
RECEIPT_WAIT_BLOCKS = 10


@dataclass(frozen=True)
class FeePolicy:
    priority_fee_wei: int = 2 * GWEI
    base_fee_headroom: float = 2.0
    max_fee_per_gas_wei: int = 500 * GWEI
    fee_bump: float = 1.125
    replace_after_blocks: int = 2
    private_timeout_blocks: int = 3

    @classmethod
    def from_config(cls, keeper: KeeperConfig) -> FeePolicy:
        return cls(priority_fee_wei=int(keeper.priority_fee_gwei * GWEI),
                   base_fee_headroom=keeper.base_fee_headroom,
                   max_fee_per_gas_wei=int(keeper.max_fee_gwei * GWEI),
                   fee_bump=keeper.fee_bump, replace_after_blocks=keeper.replace_after_blocks,
                   private_timeout_blocks=keeper.private_timeout_blocks)

    def fees_for(self, base_fee: int) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) at this base fee: base x headroom + tip, capped.
        The executor prices opportunities with the same numbers the manager signs with."""
        max_fee = min(self.max_fee_per_gas_wei,
                      int(base_fee * self.base_fee_headroom + self.priority_fee_wei))
        return max_fee, min(self.priority_fee_wei, max_fee)


@dataclass
class Pending:
    key: TxKey
    nonce: int
    to: str
    data: bytes
    gas_limit: int
    budget_wei: int  # the most this attempt may cost in fees, all replacements included
    attempts: list[TxRecord] = field(default_factory=list)
    sent_block: int = 0
    private: bool = False
    cancelling: bool = False
    # The last broadcast's answer was lost (a timeout, a reset, the private endpoint down):
    # the node may have it. Sent again, same bytes, every block until a receipt, the nonce
    # passed, or a node acknowledges it.
    in_doubt: bool = False
    first_block: int = -1  # the block of the first send (-1: sent_block)
    # The block at which its nonce was first seen passed with no receipt of ours (see
    # `_settle`): dropped only if that still holds at a later block.
    nonce_passed_at: int | None = None
    # Tracked again from the journal (a restart, a reorg): signed on a chain state that may
    # not be this one's, so its position may have moved on under it (the executor plans
    # that position only once it is settled: `Executor._positions_in_flight`).
    resumed: bool = False

    def __post_init__(self) -> None:
        if self.first_block < 0:
            self.first_block = self.sent_block


@dataclass(frozen=True)
class Outcome:
    key: TxKey
    status: str  # "included" | "reverted" | "cancelled" | "dropped"
    tx_hash: str | None
    gas_used: int = 0
    effective_gas_price: int = 0
    receipt: dict | None = None
    # A liquidation's share of a wave's settlement (execution/waves.py): how many shared it
    # (0: a transaction of its own). Its gas is a share, not what its call used.
    wave_size: int = 0
    # Whether its revert counts toward the revert breaker: a wave that reverted as a whole is
    # one revert, counted on its first member only.
    counts_revert: bool = True
    # A wave member's call's own gas, as KeeperWave measured it (None: not known).
    call_gas: int | None = None
    # Settled on one other endpoint's receipt, its inclusion confirmed by the first's block
    # (`tx.settled_by_block_body`): its status, logs and gas are that one endpoint's word,
    # so it feeds neither the revert breaker nor the loss guard (a review).
    lone_receipt: bool = False
    # A wave member's call's revert data, as KeeperWave's `CallFailed` carries it (up to
    # 256 bytes; None: it did not fail, or not a wave's member).
    revert_data: bytes | None = None


class SlotBusy(SendRefused):
    """Not signed: the address is delegated and a transaction of it is in flight (nodes take
    one at a time from such an address). Nothing was signed or journaled for it: the caller
    plans it again later, as if never planned."""


class InDoubt(Exception):
    """The broadcast's answer never came: the transaction may be in the mempool."""


Recorder = Callable[[TxRecord], Awaitable[None]]
ManyRecorder = Callable[[Sequence[TxRecord]], Awaitable[None]]


async def _no_record(tx: TxRecord) -> None:
    return None


@dataclass(frozen=True)
class ToSign:
    """A liquidation to sign (`TxManager.prepare_many`)."""

    key: TxKey
    to: str
    data: bytes
    gas_limit: int
    budget_wei: int


def node_has_it(message: str) -> bool:
    """A refusal that means the node already holds these very bytes — the answer to a
    broadcast sent again (a retry after a lost answer, a rebroadcast at start): geth's "already
    known", older nodes' "known transaction", anvil's and OpenEthereum's "already imported",
    Nethermind's "AlreadyKnown". The transaction is in the mempool: sent, not refused."""
    m = message.lower()
    return "already known" in m or "alreadyknown" in m or "known transaction" in m or \
        "already imported" in m


def _is_code(answer: object) -> bool:
    try:
        read_code(answer)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


class TxManager:
    def __init__(self, pool: RpcPool, signer: Signer, chain_id: int, *, metrics: Metrics,
                 policy: FeePolicy | None = None, private_pool: RpcPool | None = None,
                 record: Recorder | None = None,
                 record_many: ManyRecorder | None = None,
                 allowed_delegates: frozenset[str] = frozenset()) -> None:
        self.pool = pool
        self.chain_id = chain_id
        self.metrics = metrics
        self.policy = policy or FeePolicy()
        # Every signature goes through it; liquidators add the calls they make
        # (`signing_policy.allow`) before they send.
        self.signing_policy = SignerPolicy(chain_id, signer.address,
                                           self.policy.max_fee_per_gas_wei,
                                           waves_allowed=lambda: self.runs_wave_executor)
        self.signer = PolicedSigner(signer, self.signing_policy)
        self.private_pool = private_pool
        self._record = record or _no_record
        self._record_many = record_many
        self._nonce: int | None = None
        self.pending: dict[TxKey, Pending] = {}
        # Nonces this process signed (or resumed from its journal), and how far the mined
        # nonces were checked for ones it did not sign (`check_foreign`).
        self._ours: set[int] = set()
        self._foreign_checked: int | None = None
        self._foreign_checked_block = -1
        self.foreign_seen: tuple[int, int] | None = None  # (block, nonce) of the last one
        # At start, the nonces in the node's pool from the key (mined count, pending count)
        # and the block the hold on them began: those the journal did not resume are another
        # sender's (`key_conflict`).
        self._in_flight_at_start: tuple[int, int] | None = None
        self._in_flight_since: int | None = None
        self.history_told = False  # (`journal.empty_on_a_used_key`: once a chain, at start)
        # The protocols that send with this key on this chain (their journal rows are its).
        self.protocols: set[str] = set()
        # Tokens an approval of which from this key reverted on chain (lowercase): their
        # approvals over a non-zero allowance go through zero first from then on, whatever a
        # simulation says (protocols/sdk/approvals.py: one endpoint's lie that a USDT-like
        # token accepts cost a reverted approval, and an unapproved top-up, every time).
        self.approval_reverted: set[str] = set()
        # What each wave of approvals sent approves, call by call (token, amount): a call that
        # fails inside a wave that succeeds is read from the wave's receipt at its settlement.
        self.approval_waves: dict[UpkeepKey, list[tuple[str, int]]] = {}
        # The swap pools each liquidation in flight sells through (`sells`).
        self._sales: dict[TxKey, set[str]] = {}
        # The address's code (EIP-7702, execution/delegation.py): why nothing may be signed
        # for it while it runs code not allowed, and since when its reads fail (None: the
        # last one answered, or none was made yet).
        self.allowed_delegates = allowed_delegates
        self.code_refusal: KeyHold | None = None
        self._code_unread_since: int | None = None
        self._delegate: str | None = None  # (the last read's, to log a change once)
        self._code_everywhere_at = -CODE_EVERYWHERE_BLOCKS  # (`check_code_everywhere`)
        # The address's mined count as last read (`check_foreign`, `slot_free_at`): for a
        # delegated key, the slot is free when nothing signed is above it.
        self._mined_at: int | None = None
        self._mined_at_block: int | None = None  # (the block it was read at)
        # What each liquidation in flight pulls from the key's balances (`reserve`); and, for
        # one settled included, the block it was mined in with what it pulled: a balance read
        # at an earlier block (a scan behind the head) does not show that pull yet.
        self._pulls: dict[TxKey, dict[str, int]] = {}
        self._mined_pulls: dict[TxKey, tuple[int, dict[str, int]]] = {}
        # Sales settled as included: (the block, the nonce, the pools, the sale), kept for
        # MINED_PULLS_KEPT_BLOCKS: a turn simulated at a block before theirs runs them first.
        self._mined_sales: dict[TxKey, tuple[int, int, set[str], Sale]] = {}
        # For a sale in flight below the mined count, the block its receipt says it was mined
        # in (`count_mined_at`): the count alone does not say by which block (anvil counts the
        # block it is mining at its head's number, before it serves that block's receipts).
        self._sale_mined_in: dict[TxKey, int] = {}
        # A delegated key's one slot, shared by the protocols on the chain: since which block
        # each has been held out of it (first, last), until it takes it (`slot_turn`); and
        # the block each last signed in it (`want_slot`: not held out at that block).
        self._slot_wanted: dict[str, tuple[int, int]] = {}
        self._slot_had: dict[str, int] = {}

    @property
    def address(self) -> str:
        return self.signer.address

    def _cancel_gas(self) -> int:
        """A cancel's limit: a transfer to self costs 21,000, but an address delegated to code
        (EIP-7702: KeeperWave, an allowed delegate) runs that code on it (the delegation
        resolved cold, its `receive`): 21,000 there reverts, still taking the nonce."""
        return 21_000 if self._delegate is None else DELEGATED_CANCEL_GAS

    def reserve(self, key: TxKey, asset: str, amount: int) -> None:
        """What a signed liquidation will pull from the keeper's balance of `asset` (a wave:
        its members' together), counted by `in_flight_pulls` until it is mined."""
        pulls = self._pulls.setdefault(key, {})
        pulls[asset.lower()] = pulls.get(asset.lower(), 0) + amount

    def sells(self, key: TxKey, pool: str) -> None:
        """A signed liquidation sells through the swap `pool` (a wave: each pool its
        members sell through): the later sales there are simulated after it until it is
        mined (`sales_in_flight`)."""
        self._sales.setdefault(key, set()).add(pool.lower())

    def sells_already(self, key: TxKey) -> bool:
        return key in self._sales

    async def count_mined_at(self, block: int, pools: Collection[str] | None = None) -> None:
        """The mined count read at `block` when the last read is older and sales are in
        flight: what `sales_in_flight` leaves out is then what was mined by the block the
        sales are simulated at. Blocks that come faster than they are followed (a node
        mining on each transaction) left it blocks behind, the sales mined since ran again
        in the simulation, and a sale behind them was priced a third under what it realised
        (a trial). One that fails leaves the last read (turns at "latest", as before).
        `pools` (lowercase): the block's sales go through these — only the sales in flight
        through them are asked their receipts (a round trip on the liquidation path)."""
        if self._sales and (self._mined_at_block is None or self._mined_at_block < block):
            await self._read_mined_at(block)
        await self._receipts_of_sales_counted(pools)

    async def _receipts_of_sales_counted(self, pools: Collection[str] | None = None) -> None:
        """The receipts of the sales in flight the mined count passes (one batch, only those
        not read yet): `sales_in_flight` leaves one out of a turn only once its receipt says
        it was mined by the turn's block. A count read at block N says nothing of the block:
        anvil, mining N + 1, answers a read at N from N + 1's state before it serves N + 1's
        receipts — a crash's first sale, mined in 473, was counted mined at 472, left out of
        the turn pinned at 472 (whose state does not have it), and the two sales behind it
        through its pool passed there, were sent, and reverted (SwapBelowBound, a CI run).
        One unread (no receipt yet, an error) stays ahead: pessimistic, never a revert."""
        for key in [k for k in self._sale_mined_in if k not in self.pending]:
            del self._sale_mined_in[key]
        if self._mined_at is None:
            return
        asked = [(key, record) for key, through in self._sales.items()
                 if key in self.pending and key not in self._sale_mined_in
                 and self.pending[key].nonce < self._mined_at
                 and (pools is None or not through.isdisjoint(pools))
                 for record in self.pending[key].attempts]
        if not asked:
            return
        try:
            receipts = await self.pool.batch([("eth_getTransactionReceipt", [r.tx_hash])
                                              for _, r in asked])
        except (RpcError, RpcUnavailable):
            return
        for (key, record), receipt in zip(asked, receipts, strict=True):
            if is_receipt_of(receipt, record.tx_hash):
                try:  # (a block number that does not read is no proof: it stays ahead)
                    self._sale_mined_in[key] = int(str(receipt["blockNumber"]), 16)
                except (KeyError, ValueError):
                    continue

    @property
    def mined_at_block(self) -> int | None:
        """The block the mined count was last read at: what `sales_in_flight` and
        `in_flight_pulls` call mined is mined by then."""
        return self._mined_at_block

    def sales_in_flight(self, at: int | None = None) -> dict[str, list[Sale]]:
        """By swap pool (lowercase), the key's transactions in flight that sell through it,
        in nonce order: those still pending (being cancelled too) and not below the mined
        count last read — or below it, but with no receipt read that says they were mined by
        `at` (`_receipts_of_sales_counted`). Shared by every protocol's executor on the chain
        (one pool, one key's nonces). `at`: the block that count was read at, where the turns are
        simulated — the sales settled as mined in a later block run there too (settled from
        the latest receipts, they were left out, and a turn at the count's block passed a
        sale that then reverted: a review)."""
        for key in [k for k in self._sales if k not in self.pending]:
            del self._sales[key]  # (settled, dropped, refused)
        out: dict[str, list[tuple[int, Sale]]] = {}
        for key, pools in self._sales.items():
            pending = self.pending[key]
            # (one being cancelled too: its original may still be mined first; if its
            # opportunity is gone, it reverts in the simulation and moves nothing there —
            # left out, the sales behind it were priced as if it could not sell: a review)
            if self._mined_at is not None and pending.nonce < self._mined_at and (
                    (mined_in := self._sale_mined_in.get(key)) is not None
                    and (at is None or mined_in <= at)):
                continue  # (its receipt says mined by the turns' block: in its state)
            for pool in pools:
                out.setdefault(pool, []).append(
                    (pending.nonce, Sale(pending.to, pending.data, pending.gas_limit)))
        if at is not None:
            for key in [k for k, (mined, *_) in self._mined_sales.items()
                        if mined < at - MINED_PULLS_KEPT_BLOCKS]:
                del self._mined_sales[key]
            for mined, nonce, pools, sale in self._mined_sales.values():
                if mined > at:
                    for pool in pools:
                        out.setdefault(pool, []).append((nonce, sale))
        return {pool: [sale for _, sale in sorted(flying, key=lambda f: f[0])]
                for pool, flying in out.items()}

    def in_flight_pulls(self, block: int | None = None, protocol: str | None = None
                        ) -> dict[str, int]:
        """By asset (lowercase), what the key's transactions in flight will pull from its
        balances: those still pending and not below the mined count last read (a mined one's
        pull is in the balance already). Shared by every protocol's executor on the chain.
        `block`: the block the balances were read at — one settled included in a later
        block still counts (the watch settles from the latest receipts: with the scan a
        block behind, a restart's resumed liquidations mined meanwhile freed a balance the
        scan's block still showed, and the next liquidations' simulations failed for it).
        `protocol`: that protocol's transactions only (what its own spender will pull)."""
        for key in [k for k in self._pulls if k not in self.pending]:
            del self._pulls[key]  # (settled, dropped, refused)
        out: dict[str, int] = {}

        def theirs(key: TxKey) -> bool:
            return protocol is None or getattr(key, "protocol", None) == protocol

        for key, pulls in self._pulls.items():
            if not theirs(key):
                continue
            if self._mined_at is not None and self.pending[key].nonce < self._mined_at and (
                    block is None or self._mined_at_block is None
                    or self._mined_at_block <= block):
                continue  # (mined by the block the balances were read at: in them already)
            for asset, amount in pulls.items():
                out[asset] = out.get(asset, 0) + amount
        if block is not None:
            for key in [k for k, (at, _) in self._mined_pulls.items()
                        if at < block - MINED_PULLS_KEPT_BLOCKS]:
                del self._mined_pulls[key]
            for key, (at, pulls) in self._mined_pulls.items():
                if at > block and theirs(key):
                    for asset, amount in pulls.items():
                        out[asset] = out.get(asset, 0) + amount
        return out

    @property
    def delegated(self) -> bool:
        """The address runs code (EIP-7702), as last read: nodes then keep one transaction of
        it in flight at a time (geth's and reth's pools refuse a second one: "in-flight
        transaction limit reached for delegated accounts"), so keeperd sends one at a time."""
        return self._delegate is not None

    def one_in_flight(self) -> SlotBusy | None:
        """Why a new transaction may not be signed now, or None: the address is delegated and
        a transaction of it is in flight — the next nonce to sign (the node's pending count at
        the last sync, or past what this process signed since) is above the mined count last
        read (`_mined_at`: each read replaces the last, a reorg's lower count included), or,
        before any read, anything is pending."""
        if not self.delegated:
            return None
        if self._mined_at is not None and self._nonce is not None:
            busy = self._nonce > self._mined_at
        else:
            busy = bool(self.pending)
        return SlotBusy(ONE_IN_FLIGHT) if busy else None

    def want_slot(self, protocol: str, block: int) -> None:
        """`protocol` had liquidations to send at `block` and did not get the slot (a claim
        not renewed the block after lapses: one made again starts anew). A claim made at a
        block the protocol signed in (its block's second pass, held behind its own first
        pass's transaction) is held out from the next block only: dated at that block, it
        tied with the claim of the protocol it had kept out, and the tie went by name —
        Aave, first in a crash's block, took the next block's turn too, Morpho's
        liquidations waiting two blocks (a loaded full run's order of paths)."""
        since, last = self._slot_wanted.get(protocol, (block, block))
        since = since if last >= block - 1 else block
        had = self._slot_had.get(protocol)
        if had is not None and since <= had:
            since = had + 1
        self._slot_wanted[protocol] = (since, block)

    def forget_want(self, protocol: str) -> None:
        """`protocol`'s turn came: its claim is spent, whether or not it signs."""
        self._slot_wanted.pop(protocol, None)

    def slot_turn(self, protocol: str, block: int) -> str | None:
        """The protocol whose turn a delegated key's free slot is at `block` rather than
        `protocol`'s, or None: the one held out of it longest (held at the last block or
        this one). The protocols on a chain share the key's one transaction a block, and the
        one whose path runs first took it every block of a cascade, the others waiting until
        it had nothing left; in turn, one waits a block at most for each other one."""
        if not self.delegated:
            return None
        mine = self._slot_wanted.get(protocol, (block + 1, block))[0]
        waiting = sorted((since, other) for other, (since, last) in self._slot_wanted.items()
                         if other != protocol and last >= block - 1
                         and (since, other) < (mine, protocol))
        return waiting[0][1] if waiting else None

    def _took_slot(self, key: TxKey, block: int) -> None:
        if self.delegated and not isinstance(key, UpkeepKey):  # (an approval: not its turn)
            self._slot_wanted.pop(key.protocol, None)
            self._slot_had[key.protocol] = block

    async def slot_free_at(self, block: int) -> bool:
        """Whether a delegated address may sign again at `block`: what it had in flight mined
        by then, though not settled yet (the watch reads receipts later, with the block's
        full evaluation: a crash's price-exposed pass waited for it, the wave mined the block
        before still counted as in flight). The count is read at the block through
        `batch_at`, as `check_foreign` reads it every block: the head's prefetch asks it
        ahead."""
        if not self.delegated or (not self.pending and self.one_in_flight() is None):
            return True
        return await self._read_mined_at(block) and self.one_in_flight() is None

    async def _read_mined_at(self, block: int) -> bool:
        """The mined count read at `block` (through `batch_at`: the head's prefetch asks it
        ahead) and noted; False when no endpoint answered it readably."""
        try:
            _, [count] = await self.pool.batch_at(
                block, [("eth_getTransactionCount", [self.address, hex(block)])])
            if isinstance(count, Exception):
                raise count
            self._note_mined(int(str(count), 16), block)
        except (RpcError, RpcUnavailable, ValueError, TypeError):
            return False
        return True

    def _note_mined(self, mined: int, block: int) -> None:
        """A mined count read at `block`: it replaces the last, capped at the next nonce to
        sign (a count above it is no reason to think more was mined than was sent)."""
        self._mined_at = mined if self._nonce is None else min(mined, self._nonce)
        self._mined_at_block = block

    @property
    def runs_wave_executor(self) -> bool:
        """The last read of the address's code says it runs KeeperWave (delegated to it:
        execution/wave_code.py), and nothing holds the key: a wave may be sent as one
        transaction."""
        return (self._delegate == WAVE_ADDRESS and self.code_refusal is None
                and self._code_unread_since is None)

    async def sync_nonce(self) -> int:
        """The next nonce from the node's pending count. A count that would raise it is one
        endpoint's word until the voters confirm it: the least any of them counts is taken
        (one endpoint's count past the truth, believed, had every later transaction signed
        above a gap nothing filled — queued by the nodes, never mined, never settled, and a
        restart kept it: an audit)."""
        count = int(await self.pool.request(
            "eth_getTransactionCount", [self.address, "pending"]), 16)
        # Never under a nonce tracked here: one resumed but not sent again (its call would
        # revert now) is not in the node's count, and each protocol's start syncs again —
        # the second start took the first one's resumed nonce (a review).
        tracked = max((p.nonce + 1 for p in self.pending.values()), default=0)
        first = count
        if count > max(tracked, self._nonce or 0):
            count = min([count, *await self._pending_counts_elsewhere()])
        self._nonce = max(count, tracked)
        if self._foreign_checked is None:
            # What came before is history, as far as the first endpoint counts it: the least
            # of the voters' counts named a voter one block behind's missing nonce, the
            # keeper's own last, another sender's at the first block — an alert and a hold
            # at a start (a review)
            self._foreign_checked = max(self._nonce, first)
        return self._nonce

    async def sync_nonce_afresh(self) -> int:
        """At start and on a replica's promotion: what was mined before now (the previous
        leader's transactions included) is history, not another sender; what code the
        address runs is read afresh (a delegation made while keeperd was down)."""
        self._foreign_checked = None
        self._in_flight_at_start, self._in_flight_since = None, None
        await self.check_code(None)
        pending = await self.sync_nonce()
        try:
            mined = int(await self.pool.request(
                "eth_getTransactionCount", [self.address, "latest"]), 16)
        except (RpcError, RpcUnavailable, ValueError, TypeError):
            mined = pending  # (unknown: as before, the pool's count is history)
        # (the least any endpoint counts: one lying count must not hold liquidations for
        # UNKNOWN_IN_FLIGHT_BLOCKS)
        counted = min([pending, *await self._pending_counts_elsewhere()]) \
            if mined < pending else pending
        if counted - mined > UNKNOWN_IN_FLIGHT_MAX:
            # (more than any pool keeps from one sender: one endpoint's word, not a reason
            # to hold — nor to walk a range of 2^64 nonces)
            log.warning("tx.pool_count_implausible", address=self.address, mined=mined,
                        pending=counted, meaning="not held for what the pool holds")
        elif mined < counted:
            # Transactions of the key wait in the node's pool. Those the journal resumes are
            # ours; any other is another sender's — a keeperd started on another state
            # directory (a typo) whose liquidations are still in flight: signed after them,
            # the same liquidations again were mined behind them and reverted.
            self._in_flight_at_start = (mined, counted)
        return pending

    async def _pending_counts_elsewhere(self) -> list[int]:
        """The key's pending count as each endpoint answers it (those that do)."""
        return await self._counts_by_voters("pending")

    async def _counts_by_voters(self, at: str, most: int | None = None) -> list[int]:
        """The key's nonce count at `at` (a block tag) as each voter answers it, side by side
        (those that answer readably). `most`: an answer past it is no count but that
        endpoint's bad response, counted against it (`quantity_at_most`)."""
        shaped: dict[str, Any] = {} if most is None else {"shape": quantity_at_most(most)}
        said = await asyncio.gather(*(self.pool.call_endpoint(
            ep, "eth_getTransactionCount", [self.address, at], **shaped)
            for ep in self.pool.voters), return_exceptions=True)
        out = []
        for answer in said:
            try:
                out.append(int(str(answer), 16))
            except ValueError:
                continue  # (an error, or an answer that does not read: says nothing)
        return out

    async def check_code(self, block: int | None) -> None:
        """Read the address's code: a delegation to a contract not allowed holds every
        signature (`signing_held`, `key_conflict`)."""
        try:
            answer = await self.pool.request("eth_getCode", [self.address, "latest"])
        except (RpcError, RpcUnavailable) as exc:
            answer = exc
        await self._judge_code(await self._code_elsewhere(answer), block)

    async def _code_elsewhere(self, answer: object) -> object:
        """`answer` if it is code; else the first endpoint's, asked one by one, that is (an
        error inside a batch is not failed over: one endpoint answering eth_getCode with an
        error or junk held every liquidation). The first failure if none is."""
        if _is_code(answer):
            return answer
        for ep in self.pool.voters:  # (not one of another network: another chain's answer)
            try:
                other = await self.pool.call_endpoint(ep, "eth_getCode", [self.address, "latest"])
            except (RpcError, RpcUnavailable):
                continue
            if _is_code(other):
                return other
        return answer

    async def check_code_everywhere(self, block: int) -> None:
        """Now and then (CODE_EVERYWHERE_BLOCKS; once for every protocol on the key), the
        address's code as every voter answers it, side by side: a delegation any of them
        sees that is not allowed is judged as if the first had said it (the refusal is then
        lifted only when they agree: `_lift_confirmed`). The block's own read is the first
        endpoint's, and its `0x` was believed at every block: one endpoint could hide a
        delegation made while keeperd ran, and its alert with it (a review)."""
        if block < self._code_everywhere_at + CODE_EVERYWHERE_BLOCKS \
                or self.code_refusal is not None or len(self.pool.voters) < 2:
            return
        self._code_everywhere_at = block

        async def ask(ep: Endpoint) -> tuple[str, object, KeeperCode | None]:
            name = getattr(ep, "name", str(ep))
            try:
                # (bounded: it runs inside the block's pass, and a hung voter held the next
                # block's up to the pool's timeout — a review)
                answer = await asyncio.wait_for(self.pool.call_endpoint(
                    ep, "eth_getCode", [self.address, "latest"]), CODE_EVERYWHERE_WAIT_S)
                return name, answer, read_code(answer)
            except (RpcError, RpcUnavailable, ValueError, TimeoutError):
                return name, None, None

        said = await asyncio.gather(*(ask(ep) for ep in self.pool.voters))
        for name, answer, code in said:
            if code is not None and refusal(self.address, code, self.allowed_delegates,
                                            block) is not None:
                log.warning("tx.keeper_code_seen_elsewhere", address=self.address,
                            block=block, endpoint=name, delegate=code.delegate,
                            said={n: (c.delegate or "plain") if c is not None else "unread"
                                  for n, _, c in said},
                            meaning="an endpoint says the keeper's address is delegated to "
                                    "code not allowed, where the block's read said not: "
                                    "judged as delegated until the endpoints agree it is not")
                await self._judge_code(answer, block)
                return

    async def _lift_confirmed(self, block: int | None) -> bool:
        """Whether the endpoints agree the refused code is gone: each asked (side by side) at
        `block` — one that has not reached it has no say: behind, its latest block may be
        from before the delegation — none answering code still refused, and two at least
        answering code that is not, when two endpoints or more are configured (one of
        another network counts towards that number but never votes: the refusal stands until
        the config is mended). One endpoint's `0x` lifted a refusal: a lying or stale
        endpoint could let a compromised key sign again."""
        needed = 2 if len(self.pool.endpoints) >= 2 else 1
        at = "latest" if block is None else hex(block)
        voters = self.pool.voters

        async def ask(ep: Endpoint) -> KeeperCode | None:
            try:
                return read_code(await self.pool.call_endpoint(ep, "eth_getCode",
                                                               [self.address, at]))
            except (RpcError, RpcUnavailable, ValueError):
                return None

        said = await asyncio.gather(*(ask(ep) for ep in voters))
        agreeing: list[str] = []
        refusing: list[str] = []
        unanswered: list[str] = []
        for ep, code in zip(voters, said, strict=True):
            name = getattr(ep, "name", str(ep))
            if code is None:
                unanswered.append(name)
            elif refusal(self.address, code, self.allowed_delegates, block) is None:
                agreeing.append(name)
            else:
                refusing.append(name)
        if refusing or len(agreeing) < needed:
            log.warning("tx.keeper_code_disputed", address=self.address, block=block,
                        plain=agreeing, still_refused=refusing, unanswered=unanswered,
                        configured=len(self.pool.endpoints),
                        meaning=f"not every endpoint says the keeper's address no longer runs "
                                f"the refused code: the key stays held until {needed} agree at "
                                "this block and none disagrees",
                        fix="if the delegation is revoked, check the endpoints named "
                            "unanswered or still refused (down, behind, of another network, "
                            "or lying)")
            return False
        return True

    async def _judge_code(self, answer: object, block: int | None) -> None:
        """An `eth_getCode` answer (or the error in its place) taken in. One that is not code
        keeps what was known, and new liquidations wait until a read answers. A refusal is
        lifted only when the endpoints agree (`_lift_confirmed`)."""
        try:
            if isinstance(answer, Exception):
                raise answer
            code = read_code(answer)  # type: ignore[arg-type]
        except (RpcError, RpcUnavailable, ValueError) as exc:
            if self._code_unread_since is None:
                self._code_unread_since = -1 if block is None else block
            log.warning("tx.keeper_code_unread", address=self.address, block=block,
                        error=str(exc)[:200], meaning="new liquidations wait until the "
                        "keeper's address's code is read (EIP-7702 delegation)")
            return
        self._code_unread_since = None
        why = refusal(self.address, code, self.allowed_delegates, block)
        if why is None and self.code_refusal is not None \
                and not await self._lift_confirmed(block):
            return  # (the refusal stands)
        self.metrics.keeper_runs_code.labels(self.pool.chain).set(0 if code.plain else 1)
        if (why is None) != (self.code_refusal is None):
            if why is not None:
                log.error("tx.keeper_address_delegated", address=self.address, block=block,
                          delegate=code.delegate, reason=why.reason)
            else:
                log.info("tx.keeper_address_plain_again", address=self.address, block=block,
                         delegate=code.delegate)
        elif code.delegate is not None and why is None and code.delegate != self._delegate:
            log.info("tx.keeper_address_delegation_allowed", address=self.address,
                     delegate=code.delegate)
        self.code_refusal = why
        self._delegate = code.delegate

    async def check_foreign(self, block: int) -> list[int]:
        """Once per block (several executors share this manager), in one batch: the nonces
        mined since the last check that this process did not sign — another sender on the
        keeper's key — and the code the address runs (a delegation may take a nonce keeperd
        signed and has in flight: no nonce of another's shows it, the code does)."""
        if block <= self._foreign_checked_block or self._foreign_checked is None:
            return []
        self._foreign_checked_block = block
        # (at the block, through batch_at: the head's prefetch asks them ahead of the next
        # block, and `slot_free_at` finds the count there)
        # (while transactions found in the pool at start hold new liquidations, the pool's
        # own count too: dropped from it — a fee spike's eviction — they are never mined,
        # and held the key UNKNOWN_IN_FLIGHT_BLOCKS for nothing)
        watching_pool = self._in_flight_at_start is not None
        _, (count, code, *in_pool) = await self.pool.batch_at(block, [
            ("eth_getTransactionCount", [self.address, hex(block)]),
            ("eth_getCode", [self.address, hex(block)]),
            *([("eth_getTransactionCount", [self.address, "pending"])] if watching_pool
              else [])])
        if isinstance(count, Exception):
            raise count
        await self._judge_code(await self._code_elsewhere(code), block)
        if self._code_unread_since == -1:
            self._code_unread_since = block  # (unread since start: counted from here)
        mined = await self._mined_believed(block, int(count, 16))
        if mined is None:
            self._unknown_in_flight(block)
            return []
        foreign = [n for n in range(self._foreign_checked, mined) if n not in self._ours]
        self._foreign_checked = max(self._foreign_checked, mined)
        if foreign:
            self._note_foreign(block, foreign)
            if self._nonce is not None and mined > self._nonce:
                self._nonce = mined  # (never sign under a nonce the other took)
        self._note_mined(mined, block)
        if in_pool and self._in_flight_at_start is not None and \
                self._pool_counts_none(in_pool[0], mined):
            # (every endpoint must say so: one endpoint's word ends no hold)
            others = await self._pending_counts_elsewhere()
            if others and max(others) <= mined:
                self._gone_from_pool(mined, block)
        self._unknown_in_flight(block)  # (its hold's clock runs from the first block)
        return foreign

    async def _mined_believed(self, block: int, said: int) -> int | None:
        """The mined count at `block` acted on, from the first endpoint's answer `said`. One
        that names no nonce of another and raises nothing (every nonce it passes is ours, up
        to the next one to sign) is taken as it is. One that would is that endpoint's word
        until the voters confirm it: each is asked at the block, side by side, and the least
        count answered is believed — with one endpoint, its second answer. (One endpoint's
        count 3 past the truth, once, called the key used elsewhere, held liquidations 10
        blocks and raised the next nonce above a gap nothing filled: an audit.) A count more
        than UNKNOWN_IN_FLIGHT_MAX past the next nonce is no count but the endpoint's bad
        response (walked, 2^64 - 1 froze the event loop). None: no count believed."""
        assert self._foreign_checked is not None
        ahead = max(self._foreign_checked, self._nonce or 0)
        most = ahead + UNKNOWN_IN_FLIGHT_MAX
        if said <= ahead and all(n in self._ours for n in range(self._foreign_checked, said)):
            return said
        # (asked of each voter with the bound: one answering past it is counted a bad
        # response of its own, as the pool counts any answer no method returns)
        counts = await self._counts_by_voters(hex(block), most)
        if said <= most:
            counts.append(said)
        if not counts:
            log.warning("tx.mined_count_unconfirmed", address=self.address, block=block,
                        said=said if said <= most else f"{said} (past {most})",
                        meaning="no endpoint confirms the keeper's mined count at this "
                                "block: no nonce is called another sender's, the next nonce "
                                "stays, asked again next block")
            return None
        if min(counts) < said:
            log.warning("tx.mined_count_disputed", address=self.address, block=block,
                        said=said, believed=min(counts),
                        meaning="an endpoint counts more transactions of the keeper's mined "
                                "than another: the least is believed (check the endpoints)")
        return min(counts)

    @staticmethod
    def _pool_counts_none(answer: object, mined: int) -> bool:
        """The pool's pending count (hex) says nothing of the key's waits beyond `mined`."""
        try:
            return int(str(answer), 16) <= mined
        except ValueError:
            return False  # (an error, or an answer that does not read: the hold goes on)

    def _gone_from_pool(self, mined: int, block: int) -> None:
        """The transactions found in the pool at start, no longer there unmined: every
        endpoint's pool counts none of the key's beyond what is mined. Their hold ends:
        nothing of them can be mined any more, and new liquidations are not signed above the
        gap they leave. Only while keeperd has taken no nonce since its start (every send
        waits behind the hold, `send_hold`; a nonce taken mid-signature would be handed out
        twice by a reset): its next nonce goes back to the first free one."""
        assert self._in_flight_at_start is not None
        low, high = self._in_flight_at_start
        if self.pending or self._nonce != high or mined >= high:
            return  # (mined after all, or something of ours signed above them: as before)
        log.warning("tx.unknown_in_flight_gone", address=self.address, block=block,
                    nonces=f"{max(low, mined)}-{high - 1}",
                    meaning="the transactions found in the node's pool at start are no "
                            "longer there, unmined (evicted, replaced elsewhere): new "
                            "liquidations go again, from the first free nonce")
        self._in_flight_at_start, self._in_flight_since = None, None
        self._nonce = mined

    def _note_foreign(self, block: int, nonces: list[int]) -> None:
        """Nonces of the keeper's address used by transactions keeperd did not sign: mined
        under a nonce it never used, or under one of its own whose transaction can no longer
        be mined (another sender's took it)."""
        self.foreign_seen = (block, nonces[-1])
        self.metrics.foreign_transactions.labels(self.pool.chain).inc(len(nonces))
        log.error("tx.key_in_use_elsewhere", address=self.address, block=block,
                  nonces=nonces[:10],
                  meaning="a transaction keeperd did not sign was mined from the keeper's "
                          "address: another keeper or tool uses this key; new liquidations "
                          f"wait until {FOREIGN_QUIET_BLOCKS} blocks pass without one")

    def key_conflict(self, block: int) -> KeyHold | None:
        """Why the key is not keeperd's alone (alerted, `key_in_use_elsewhere`): its address
        delegated to code not allowed; its code unreadable for FOREIGN_QUIET_BLOCKS blocks
        (new liquidations held that long: `send_hold`); another sender on it, recently. Or
        None."""
        if self.code_refusal is not None:
            return self.code_refusal
        since = self._code_unread_since
        if since is not None and since >= 0 and block - since >= FOREIGN_QUIET_BLOCKS:
            return KeyHold(f"the keeper's address's code could not be read since block "
                           f"{since} (no endpoint answered eth_getCode with code): whether "
                           "it is delegated (EIP-7702) is unknown, and new liquidations wait",
                           UNREAD_ACTION)
        if self.foreign_seen is None:
            return None
        seen, nonce = self.foreign_seen
        if block - seen >= FOREIGN_QUIET_BLOCKS:
            return None
        return KeyHold(f"a transaction keeperd did not sign (nonce {nonce}) was mined from the "
                       f"keeper's address {self.address} at block {seen}: the key is in use "
                       f"elsewhere; new liquidations wait until {FOREIGN_QUIET_BLOCKS} blocks "
                       "pass without another", OTHER_SENDER_ACTION)

    def _unknown_in_flight(self, block: int) -> list[int]:
        """The nonces found in the node's pool at start that the journal did not resume,
        while none of them is mined (the mined count read each block) and for at most
        UNKNOWN_IN_FLIGHT_BLOCKS blocks (dropped from the pool, they never are)."""
        if self._in_flight_at_start is None:
            return []
        low, high = self._in_flight_at_start
        unknown = [n for n in range(low, high) if n not in self._ours]
        if unknown and self._in_flight_since is None:
            self._in_flight_since = block
            log.warning("tx.unknown_in_flight", address=self.address, block=block,
                        nonces=unknown[:10], count=len(unknown),
                        meaning="transactions of the keeper's address that keeperd's journal "
                                "does not know wait in the node's pool: most often keeperd's "
                                "own approvals, which it does not journal, left in flight by "
                                "its last stop (a SIGTERM too: mined within a block or two, "
                                "nothing to do); if they last, keeperd ran with another state "
                                "directory, or another tool uses this key. New liquidations "
                                "wait until they are mined")
        mined = self._mined_at if self._mined_at is not None else low
        if not unknown or mined > unknown[-1] or \
                block - (self._in_flight_since or block) >= UNKNOWN_IN_FLIGHT_BLOCKS:
            if unknown and mined <= unknown[-1]:
                log.warning("tx.unknown_in_flight_not_mined", address=self.address,
                            nonces=unknown[:10], blocks=UNKNOWN_IN_FLIGHT_BLOCKS,
                            meaning="the transactions found in the pool at start were not "
                                    "mined: new liquidations go again")
            self._in_flight_at_start, self._in_flight_since = None, None
            return []
        return unknown

    def send_hold(self, block: int) -> KeyHold | None:
        """Why new liquidations wait on the key: `key_conflict`, or its address's code not
        read since `_code_unread_since` (alerted once that lasts FOREIGN_QUIET_BLOCKS: a
        block's failed read is an RPC's trouble, retried on every endpoint)."""
        conflict = self.key_conflict(block)
        if conflict is None and (waiting := self._unknown_in_flight(block)):
            # (not a conflict at once: the key's own approvals, unjournaled, cut short by a
            # crash, look the same until mined — and wait one block; told by `key_alert`
            # once it lasts)
            return self._unknown_hold(waiting)
        if conflict is not None or self._code_unread_since is None:
            return conflict
        since = "at start" if self._code_unread_since < 0 else \
            f"since block {self._code_unread_since}"
        return KeyHold(f"the keeper's address's code could not be read {since}: whether it "
                       "is delegated (EIP-7702) is unknown", UNREAD_ACTION)

    def _unknown_hold(self, waiting: list[int]) -> KeyHold:
        return KeyHold(
            f"{len(waiting)} transaction(s) keeperd's journal does not know wait in the "
            f"node's pool from the keeper's address (nonces {waiting[0]}-{waiting[-1]}, "
            "found at start): new liquidations wait until they are mined (at most "
            f"{UNKNOWN_IN_FLIGHT_BLOCKS} blocks): signed after them, the same "
            "liquidations again would revert behind them",
            "If keeperd ran with another state_dir, start it again with the usual one: "
            "its journal knows these transactions. " + OTHER_SENDER_ACTION)

    def upkeep_hold(self, block: int) -> KeyHold | None:
        """Why approvals and deposits wait: `key_conflict`, or transactions found in the pool
        at start that the journal does not know (signed during that wait, ours took nonces
        above theirs: evicted, they left a gap no later transaction of ours could pass, and
        a reset of the nonce was no longer safe — a review); or the head followed being one
        endpoint's word against two others (`RpcPool.contested`: the balances an approval is
        sized by would be its word too)."""
        conflict = self.key_conflict(block)
        if conflict is not None:
            return conflict
        waiting = self._unknown_in_flight(block)
        if waiting:
            return self._unknown_hold(waiting)
        contested = self.pool.contested()
        return None if contested is None else KeyHold(contested, CONTESTED_ACTION)

    def unknown_wait(self, block: int) -> bool:
        """Whether transactions found in the pool at start still hold the key's sends."""
        return bool(self._unknown_in_flight(block))

    def key_alert(self, block: int) -> KeyHold | None:
        """What `key_in_use_elsewhere` tells: `key_conflict`; or transactions the journal does
        not know, found in the pool at start, still unmined UNKNOWN_IN_FLIGHT_TOLD_BLOCKS
        blocks on (a start on another state directory mid-crash held 67 liquidations with
        no page, a by-hand trial; the key's own approvals cut short by a crash are mined at
        the next block, and are not told)."""
        conflict = self.key_conflict(block)
        if conflict is not None:
            return conflict
        waiting = self._unknown_in_flight(block)
        since = self._in_flight_since
        if waiting and since is not None and block - since >= UNKNOWN_IN_FLIGHT_TOLD_BLOCKS:
            return self._unknown_hold(waiting)
        return None

    def signing_held(self) -> KeyHold | None:
        """Why the key signs nothing at all — not a replacement, an approval or a follow-up
        either: its address runs code not allowed."""
        return self.code_refusal

    async def base_fee(self) -> int:
        block = await self.pool.request("eth_getBlockByNumber", ["latest", False])
        return int(block.get("baseFeePerGas", "0x0"), 16)

    async def _sign(self, nonce: int, to: str, data: bytes, gas: int, max_fee: int, tip: int,
                    value: int = 0) -> tuple[str, bytes]:
        """Through the signing policy, then the signer: refused or unreachable, SendRefused
        (nothing signed, nothing journaled). Nothing is signed while the address runs code
        not allowed (`signing_held`), whoever asks."""
        held = self.signing_held()
        if held is not None:
            raise SendRefused(f"not signed: {held.reason}")
        try:
            raw = await self.signer.sign(UnsignedTx(self.chain_id, nonce, to, value, data, gas,
                                                    max_fee, tip))
        except SignerError as exc:
            raise SendRefused(f"not signed: {exc}") from None
        self._ours.add(nonce)
        return "0x" + keccak(raw).hex(), raw

    async def send(self, key: TxKey, to: str, data: bytes, gas_limit: int, budget_wei: int,
                   *, block: int, base_fee: int | None = None,
                   pulls: Mapping[str, int] | None = None) -> TxRecord:
        """Sign, journal, then broadcast. Raises SendRefused when the fee would exceed the
        budget or the node refuses the transaction. `pulls`: what it takes from the key's
        balances (by token), reserved from its signature until it is mined (`reserve`)."""
        if self._nonce is None:
            await self.sync_nonce()
        base = await self.base_fee() if base_fee is None else base_fee
        record, pending = await self.prepare(key, to, data, gas_limit, budget_wei,
                                             block=block, base_fee=base)
        for asset, amount in (pulls or {}).items():
            self.reserve(key, asset, amount)
        [refused] = await self.broadcast_many([(record, pending)])
        if refused is not None:
            raise refused
        return record

    async def prepare(self, key: TxKey, to: str, data: bytes, gas_limit: int, budget_wei: int,
                      *, block: int, base_fee: int) -> tuple[TxRecord, Pending]:
        """Take the next nonce, sign and journal (no I/O but the state database), so that
        many liquidations found in one block can then be broadcast concurrently. The nonce
        is taken before the journal write (which may suspend, on a shared database) and given
        back if that write fails (a replica fenced out) and nothing took the next one."""
        assert self._nonce is not None, "sync_nonce() first"
        if (held := self.one_in_flight()) is not None:
            raise held
        max_fee, tip = self._fees_within(base_fee, gas_limit, budget_wei)
        nonce = self._nonce
        self._nonce = nonce + 1
        pending = Pending(key, nonce, to, data, gas_limit, budget_wei, sent_block=block,
                          private=self.private_pool is not None)
        try:
            record = await self._sign_record(pending, max_fee, tip, "liquidation")
        except BaseException:
            if self._nonce == nonce + 1:
                self._nonce = nonce
            raise
        self.pending[key] = pending
        self._took_slot(key, block)
        return record, pending

    async def prepare_many(self, items: Sequence[ToSign], *, block: int, base_fee: int,
                           pause_every: int | None = None
                           ) -> list[tuple[TxRecord, Pending] | SendRefused]:
        """`prepare` for a wave, in nonce order, journaled in one write after the last
        signature instead of a write each (`record_many`; each item recorded in turn without
        one). An item refused (its budget, the signer) is its SendRefused and takes no nonce.
        If the write fails, nothing of the wave is kept: its nonces are given back (when
        nothing took the next one) and the error raised. `pause_every`: let the loop run
        between signatures, every so many."""
        assert self._nonce is not None, "sync_nonce() first"
        first = self._nonce
        out: list[tuple[TxRecord, Pending] | SendRefused] = []
        signed: list[tuple[TxRecord, Pending]] = []
        try:
            for item in items:
                # (delegated: one in flight, this call's first included)
                if (signed and self.delegated) or self.one_in_flight() is not None:
                    out.append(SlotBusy(ONE_IN_FLIGHT))
                    continue
                try:
                    pending, max_fee, tip = self._take_nonce(item, block, base_fee)
                except SendRefused as exc:
                    out.append(exc)
                    continue
                try:
                    tx_hash, raw = await self._sign(pending.nonce, item.to, item.data,
                                                    item.gas_limit, max_fee, tip)
                except SendRefused as exc:
                    self._nonce = pending.nonce  # (the next one is not taken yet)
                    out.append(exc)
                    continue
                record = TxRecord(tx_hash, item.key, pending.nonce, max_fee, tip,
                                  item.gas_limit, "0x" + raw.hex(), "liquidation", time.time())
                signed.append((record, pending))
                out.append((record, pending))
                if pause_every and len(signed) % pause_every == 0:
                    await asyncio.sleep(0)
            # Write-ahead: journaled before anyone can see them.
            if self._record_many is not None:
                await self._record_many([record for record, _ in signed])
            else:
                for record, _ in signed:
                    await self._record(record)
        except BaseException:
            if signed and self._nonce == signed[-1][1].nonce + 1:
                self._nonce = first
            raise
        for record, pending in signed:
            pending.attempts.append(record)
            self.pending[pending.key] = pending
            self._took_slot(pending.key, block)
        return out

    def _take_nonce(self, item: ToSign, block: int, base_fee: int
                    ) -> tuple[Pending, int, int]:
        assert self._nonce is not None
        max_fee, tip = self._fees_within(base_fee, item.gas_limit, item.budget_wei)
        nonce = self._nonce
        self._nonce = nonce + 1
        return (Pending(item.key, nonce, item.to, item.data, item.gas_limit, item.budget_wei,
                        sent_block=block, private=self.private_pool is not None),
                max_fee, tip)

    def _fees_within(self, base: int, gas_limit: int, budget_wei: int) -> tuple[int, int]:
        """The fee cap and tip, spending at most the budget: the cap lowered to fit, if that
        still clears the base fee (SendRefused otherwise)."""
        max_fee, tip = self.policy.fees_for(base)
        if max_fee * gas_limit > budget_wei:
            max_fee = budget_wei // gas_limit
            tip = min(tip, max(0, max_fee - base))
            if max_fee <= base:
                raise SendRefused(f"fee budget {budget_wei} wei does not cover the base fee "
                                  f"({base} wei/gas x {gas_limit} gas)")
        return max_fee, tip

    async def broadcast(self, record: TxRecord, pending: Pending, *, resync: bool = True,
                        report: bool = True) -> None:
        try:
            await self._broadcast(record, pending.private, resync=resync)
        except SendRefused:
            self.pending.pop(pending.key, None)
            raise
        except InDoubt as exc:
            self._in_doubt(record, pending, exc)
            return
        if report:
            self._log_sent(record, pending)

    def _in_doubt(self, record: TxRecord, pending: Pending, error: Exception) -> None:
        """A broadcast whose answer was lost may still be mined: it stays tracked (journaled
        as pending, its nonce taken) and is sent again at the next blocks."""
        pending.in_doubt = True
        self.metrics.tx_in_doubt.labels(self.pool.chain).inc()
        log.warning("tx.broadcast_in_doubt", opportunity=pending.key, tx_hash=record.tx_hash,
                    nonce=pending.nonce, private=pending.private, error=str(error)[:200],
                    meaning="the node may have it: tracked until a receipt or its nonce "
                            "is passed, and sent again each block")

    async def broadcast_many(self, items: list[tuple[TxRecord, Pending]], *,
                             resync: bool = True, report: bool = True
                             ) -> list[SendRefused | None]:
        """Broadcast several signed transactions in one JSON-RPC batch (one HTTP round trip);
        through the private endpoint, one by one. Returns None or the refusal, per item.
        `resync=False`: a refusal does not re-read the nonce here; the caller, which is
        signing more under the nonces that follow, does so once nothing is being signed
        (`sync_nonce`). `report=False`: the caller counts and logs each sent one later
        (`report_sent`), off its hot path."""
        if not items:
            return []
        if any(p.private for _, p in items) and self.private_pool is not None:
            results = await asyncio.gather(*(self.broadcast(r, p, resync=resync, report=report)
                                             for r, p in items), return_exceptions=True)
            return [r if isinstance(r, SendRefused) else None for r in results]
        try:
            answers = await self.pool.batch([("eth_sendRawTransaction", [r.raw])
                                             for r, _ in items])
            crash_point("tx.broadcast")
        except RpcUnavailable as exc:
            answers = [exc] * len(items)
        out: list[SendRefused | None] = []
        refused = False
        for (record, pending), answer in zip(items, answers, strict=True):
            if isinstance(answer, RpcUnavailable):
                self._in_doubt(record, pending, answer)  # tracked, not forgotten
                out.append(None)
                continue
            if isinstance(answer, Exception) and not (
                    isinstance(answer, RpcError) and node_has_it(answer.message)):
                refused = True
                self.pending.pop(pending.key, None)
                out.append(SendRefused(f"broadcast of {record.tx_hash} failed: {answer}"))
                continue
            if report:
                self._log_sent(record, pending)
            out.append(None)
        if refused and resync:
            await self.sync_nonce()  # a refused nonce leaves a gap: ask the node
        return out

    async def _sign_record(self, p: Pending, max_fee: int, tip: int, kind: str) -> TxRecord:
        to, data, value = (self.address, b"", 0) if p.cancelling else (p.to, p.data, 0)
        gas = self._cancel_gas() if p.cancelling else p.gas_limit
        tx_hash, raw = await self._sign(p.nonce, to, data, gas, max_fee, tip, value)
        record = TxRecord(tx_hash, p.key, p.nonce, max_fee, tip, gas, "0x" + raw.hex(), kind,
                          time.time())
        await self._record(record)  # write-ahead: journaled before anyone can see it
        p.attempts.append(record)
        return record

    def report_sent(self, record: TxRecord, p: Pending) -> None:
        """Count and log a transaction broadcast with `report=False` (not one in doubt: that
        one was logged as such)."""
        if not p.in_doubt:
            self._log_sent(record, p)

    def _log_sent(self, record: TxRecord, p: Pending) -> None:
        self.metrics.tx_sent.labels(self.pool.chain, record.kind).inc()
        # (an approval's or a deposit's said as such: "liquidation" misled a trial)
        said = (f"{p.key.action}" + ("" if record.kind == "liquidation" else f" {record.kind}")
                if isinstance(p.key, UpkeepKey) else record.kind)
        log.info("tx.sent", opportunity=p.key, kind=said, tx_hash=record.tx_hash,
                 nonce=p.nonce, max_fee_gwei=round(record.max_fee_per_gas / GWEI, 3),
                 tip_gwei=round(record.priority_fee / GWEI, 3), gas_limit=record.gas_limit,
                 private=p.private)

    async def _sign_record_broadcast(self, p: Pending, max_fee: int, tip: int,
                                     kind: str) -> TxRecord:
        record = await self._sign_record(p, max_fee, tip, kind)
        try:
            await self._broadcast(record, p.private)
        except InDoubt as exc:
            self._in_doubt(record, p, exc)
            return record
        p.in_doubt = False
        self._log_sent(record, p)
        return record

    async def _broadcast(self, record: TxRecord, private: bool, *, resync: bool = True
                         ) -> None:
        """Send signed bytes. Refused by the node: SendRefused (the nonce re-read if it was
        the cause). No answer (a timeout, a reset) — or any failure of the private endpoint,
        which must not leak the transaction to the public mempool before
        `private_timeout_blocks` — InDoubt: the caller keeps tracking it."""
        private = private and self.private_pool is not None
        pool = self.private_pool if private and self.private_pool is not None else self.pool
        try:
            await pool.request("eth_sendRawTransaction", [record.raw])
            crash_point("tx.broadcast")
            return
        except RpcError as exc:
            message = exc.message.lower()
            if node_has_it(message):
                return
            if private and "nonce" not in message:
                raise InDoubt(f"private endpoint: {exc}") from None
            if resync:
                await self.sync_nonce()  # a refused nonce may leave a gap: ask the node
            raise SendRefused(f"broadcast of {record.tx_hash} failed: {exc}") from None
        except RpcUnavailable as exc:
            raise InDoubt(f"broadcast of {record.tx_hash}: {exc}") from None

    async def watch(self, block: int, still_wanted: Callable[[TxKey], bool],
                    owns: Callable[[TxKey], bool] | None = None) -> list[Outcome]:
        """Once per block: settle included transactions, replace or cancel stuck ones.
        `owns`: the keys this caller settles (several executors share one key's nonces)."""
        outcomes: list[Outcome] = []
        mine = [(k, p) for k, p in self.pending.items() if owns is None or owns(k)]
        if not mine:
            return outcomes
        try:
            latest_nonce: int | None = int(await self.pool.request(
                "eth_getTransactionCount", [self.address, "latest"]), 16)
        except (RpcError, RpcUnavailable) as exc:
            # (settled by their receipts alone this block: no nonce is called passed)
            latest_nonce = None
            log.warning("tx.mined_count_unread", address=self.address, block=block,
                        error=str(exc)[:200])
        for key, p in mine:
            try:
                outcome = await self._settle(p, latest_nonce, block)
            except (RpcError, RpcUnavailable) as exc:
                # Each on its own: one whose receipt no endpoint answers readably waits for
                # the next block, and the others settle (one bad receipt raised out of the
                # watch at every block — nothing settled, every full pass aborted, for as
                # long as anything was pending: an audit). Not replaced meanwhile: it may
                # be mined.
                log.warning("tx.receipt_unread", opportunity=key, nonce=p.nonce, block=block,
                            error=str(exc)[:200],
                            meaning="its receipt could not be read: settled at a later block")
                continue
            if outcome is not None:
                outcomes.append(outcome)
                del self.pending[key]
                if key in self._sales and outcome.status == "included":
                    self._mined_sales[key] = (
                        min(_mined_block(outcome, block), block + 16), p.nonce,
                        self._sales[key], Sale(p.to, p.data, p.gas_limit))
                pulled = self._pulls.pop(key, None)
                if pulled and outcome.status == "included":
                    # (a receipt's block is one endpoint's word: one far ahead would hold
                    # the capital back for good; one unreadable is the watch's block)
                    self._mined_pulls[key] = (min(_mined_block(outcome, block), block + 16),
                                              pulled)
                continue
            if p.private and self.private_pool is not None and \
                    block - p.first_block >= self.policy.private_timeout_blocks:
                # Not mined privately in time (counted from the first send: replacements do
                # not restart it): the same bytes go to the public mempool.
                p.private = False
                log.warning("tx.private_timeout", opportunity=key, nonce=p.nonce)
                await self._send_again(p)
                continue
            if p.nonce_passed_at is not None:
                # Its nonce is used (ours mined, its receipt not served yet, or another's):
                # a replacement could only be refused as "nonce too low" — and would cost a
                # signature. The next block settles it, included or dropped.
                continue
            if block - p.sent_block < self.policy.replace_after_blocks:
                if p.in_doubt:
                    await self._send_again(p)
                continue
            if self.signing_held() is not None or self.pool.contested() is not None:
                # (signed bytes stay as they are: a replacement is a new signature; the hold's
                # reason is logged and alerted where it is found — a head that is one
                # endpoint's word also judged `still_wanted` and the fee: a liar past a halted
                # chain turned live liquidations into cancels, or bumped fees by invented
                # blocks, a review)
                continue
            if not still_wanted(key) and not p.cancelling:
                p.cancelling = True
            await self._replace(p, block)
        return outcomes

    async def _settle(self, p: Pending, latest_nonce: int | None, block: int
                      ) -> Outcome | None:
        """Its outcome, or None while it is not settled. `latest_nonce`: the mined count
        (None: unread — only a receipt settles it). RpcError or RpcUnavailable when a
        receipt cannot be had: the pool judges each (`transaction_receipt`), and one that
        still does not read is refused here, as no endpoint's answer."""
        for record in reversed(p.attempts):
            receipt = await self.pool.request("eth_getTransactionReceipt", [record.tx_hash])
            if receipt is None:
                continue
            if not _settles(receipt, record.tx_hash):
                raise RpcUnavailable(f"eth_getTransactionReceipt {record.tx_hash}: "
                                     f"not a receipt of it: {str(receipt)[:120]}")
            status = ("cancelled" if record.kind == "cancel" else
                      "included" if receipt["status"] == "0x1" else "reverted")
            return Outcome(p.key, status, record.tx_hash, int(receipt["gasUsed"], 16),
                           _quantity(receipt.get("effectiveGasPrice", "0x0")), receipt)
        if latest_nonce is not None and latest_nonce > p.nonce:
            # The nonce was used by a transaction we do not know (another process with this
            # key, or a replacement we never recorded): ours can no longer be mined — if
            # that still holds at a later block. A node may count the nonce before it serves
            # the receipt (anvil between executing a block and storing it; a load-balanced
            # provider whose receipt comes from a node a block behind): a liquidation mined
            # that moment was marked dropped and planned again.
            if p.nonce_passed_at is None:
                p.nonce_passed_at = block
            if block > p.nonce_passed_at:
                # On a 2-second chain "a later block" is 2 s: a provider's receipt node that
                # far behind made a mined liquidation a drop, another sender on the key (a
                # false alert, sending held) and a replan. Every endpoint is asked first; one
                # that has a receipt postpones the drop (up to RECEIPT_WAIT_BLOCKS), and the
                # settlement still comes from the pool's own answer: another endpoint's
                # receipt alone (it may lie) never settles it.
                elsewhere = await self._receipt_elsewhere(p)
                if len(elsewhere) == 1 and await self._in_block_of_the_pool(
                        elsewhere[0][2], elsewhere[0][0]):
                    # (one other endpoint's receipt, and the pool's own block at its height
                    # holds the transaction: two endpoints' words. With two endpoints, a
                    # first serving no receipts left mined liquidations journaled dropped —
                    # the accounting wrong, "sent" never followed by "included", a trial)
                    record, receipt = elsewhere[0][1], elsewhere[0][2]
                    ok = int(receipt["status"], 16) == 1
                    log.warning("tx.settled_by_block_body", opportunity=p.key, nonce=p.nonce,
                                endpoint=elsewhere[0][0], block=receipt.get("blockNumber"),
                                meaning="the first endpoint serves no receipt of it; another "
                                "does, and the first's own block holds it")
                    return Outcome(p.key, "cancelled" if record.kind == "cancel" else
                                   "included" if ok else "reverted", record.tx_hash,
                                   _quantity(receipt.get("gasUsed")),
                                   _quantity(receipt.get("effectiveGasPrice")), receipt,
                                   counts_revert=False, lone_receipt=True)
                if len(elsewhere) >= 2:
                    # (two endpoints agree it was mined, whatever the first says: a first
                    # endpoint serving no receipt made 48 mined liquidations drops, "another
                    # sender" and a 10-block hold — a by-hand trial; one endpoint's receipt
                    # alone still settles nothing, it may lie)
                    record, receipt = elsewhere[0][1], elsewhere[0][2]
                    ok = int(receipt["status"], 16) == 1
                    log.warning("tx.settled_by_other_endpoints", opportunity=p.key,
                                nonce=p.nonce, endpoints=[url for url, *_ in elsewhere],
                                meaning="the first endpoint serves no receipt of it; two others "
                                "do")
                    return Outcome(p.key, "cancelled" if record.kind == "cancel" else
                                   "included" if ok else "reverted", record.tx_hash,
                                   _quantity(receipt.get("gasUsed")),
                                   _quantity(receipt.get("effectiveGasPrice")), receipt)
                if elsewhere and block - p.nonce_passed_at <= RECEIPT_WAIT_BLOCKS:
                    log.info("tx.drop_postponed", opportunity=p.key, nonce=p.nonce,
                             endpoint=elsewhere[0][0], meaning="another endpoint has its "
                             "receipt: settled once the pool serves it")
                    return None
                if not await self._passed_by_voters(p.nonce, block):
                    # (the watch's count is one endpoint's word: one counting past the truth
                    # made a transaction still in the pool a drop of another sender's doing —
                    # alerted, held, planned again beside itself)
                    p.nonce_passed_at = None
                    return None
                if elsewhere:
                    # (an endpoint says ours was mined: dropped as far as the pool knows, but
                    # not another sender's — no key_in_use_elsewhere, no hold)
                    log.warning("tx.receipt_disputed", opportunity=p.key, nonce=p.nonce,
                                endpoint=elsewhere[0][0],
                                meaning="one endpoint has its receipt, the pool's does not: "
                                "settled as dropped; check the endpoints")
                    return Outcome(p.key, "dropped", None)
                self._note_foreign(block, [p.nonce])
                return Outcome(p.key, "dropped", None)
        return None

    async def _passed_by_voters(self, nonce: int, block: int) -> bool:
        """Whether every voter that answers counts `nonce` used at `block` (the least mined
        count past it); with none answering, the pool's count stands. At the block, not
        "latest": a voter behind it has no say (one a block behind kept a transaction
        another sender's nonce had taken from ever settling: a review)."""
        counts = await self._counts_by_voters(hex(block))
        return not counts or min(counts) > nonce

    async def _in_block_of_the_pool(self, receipt: dict[str, str], source: str) -> bool:
        """Whether the first endpoint's own block at the receipt's height is the receipt's
        block and lists its transaction (a second endpoint's word beside the receipt's: an
        endpoint that withholds receipts but serves blocks corroborates a mined transaction).
        Asked of the first endpoint that is not the receipt's `source` (URL), by name: the
        pool's request may fail over to the receipt's own endpoint (a review)."""
        others = [ep for ep in self.pool.ranked() if ep.safe_url != source]
        if not others:
            return False
        try:
            [block] = await self.pool.batch_on(others[0], [
                ("eth_getBlockByNumber", [receipt["blockNumber"], False])])
            return (isinstance(block, dict)
                    and str(block.get("hash", "")).lower()
                    == str(receipt.get("blockHash", "")).lower()
                    and str(receipt["transactionHash"]).lower()
                    in {str(t).lower() for t in block.get("transactions") or []})
        except (RpcError, RpcUnavailable, KeyError, TypeError, ValueError):
            return False

    async def _receipt_elsewhere(self, p: Pending
                                 ) -> list[tuple[str, TxRecord, dict[str, str]]]:
        """The endpoints that have a receipt of one of the attempts (every endpoint asked at
        once, a batch each), before a nonce passed without one is called a drop: (its URL,
        the attempt, the receipt), one per endpoint. A malformed answer is no answer."""
        calls = [("eth_getTransactionReceipt", [r.tx_hash]) for r in p.attempts]
        voters = self.pool.voters
        answers = await asyncio.gather(*(self.pool.batch_on(ep, calls) for ep in voters),
                                       return_exceptions=True)
        found = []
        for ep, receipts in zip(voters, answers, strict=True):
            if not isinstance(receipts, list) or len(receipts) != len(calls):
                continue
            for record, receipt in zip(p.attempts, receipts, strict=True):
                if is_receipt_of(receipt, record.tx_hash):
                    found.append((ep.safe_url, record, receipt))
                    break
        return found

    async def _replace(self, p: Pending, block: int) -> None:
        last = p.attempts[-1]
        base = await self.base_fee()
        bump = self.policy.fee_bump
        cap = self.policy.max_fee_per_gas_wei
        # Every replacement stays within the operator's max_fee_gwei (38 bumps once reached
        # 3,690 gwei against a 500 gwei cap), its tip within its max fee. Nodes take a
        # replacement only when both fees rise by their minimum bump: one the cap leaves no
        # room for waits at the current fee (a stuck transaction is cancelled the same way).
        max_fee = min(cap, max(int(last.max_fee_per_gas * bump) + 1,
                               self.policy.fees_for(base)[0]))
        tip = min(max_fee, max(int(last.priority_fee * bump) + 1, self.policy.fees_for(base)[1]))
        if (max_fee < last.max_fee_per_gas * REPLACEMENT_MIN_BUMP
                or tip < last.priority_fee * REPLACEMENT_MIN_BUMP):
            self.metrics.tx_fee_capped.labels(self.pool.chain).inc()
            log.warning("tx.replacement_at_fee_cap", opportunity=p.key, nonce=p.nonce,
                        max_fee_gwei=round(last.max_fee_per_gas / GWEI, 3),
                        cap_gwei=round(cap / GWEI, 3),
                        action="waiting with the current fee (keeper.max_fee_gwei)")
            p.sent_block = block
            return
        gas = self._cancel_gas() if p.cancelling else p.gas_limit
        if max_fee * gas > p.budget_wei:
            self.metrics.tx_fee_capped.labels(self.pool.chain).inc()
            log.warning("tx.replacement_over_budget", opportunity=p.key, nonce=p.nonce,
                        wanted_max_fee_gwei=round(max_fee / GWEI, 3),
                        budget_wei=p.budget_wei, action="waiting with the current fee")
            p.sent_block = block
            return
        kind = "cancel" if p.cancelling else "replacement"
        try:
            await self._sign_record_broadcast(p, max_fee, min(tip, max_fee), kind)
        except SendRefused as exc:
            log.warning("tx.replacement_refused", opportunity=p.key, error=str(exc))
        p.sent_block = block

    async def _send_again(self, p: Pending) -> None:
        """An in-doubt transaction's last bytes, sent again (a node that has them says so).
        Not while the key signs nothing (`signing_held`): bytes signed before still pay into
        an address a delegate may sweep; sent once the hold ends."""
        if self._holding_bytes(p):
            return
        try:
            await self._broadcast(p.attempts[-1], p.private)
            p.in_doubt = False
            log.info("tx.in_doubt_resent", opportunity=p.key, nonce=p.nonce,
                     tx_hash=p.attempts[-1].tx_hash)
        except (InDoubt, SendRefused) as exc:  # settled by its receipt or its nonce
            log.info("tx.in_doubt_still", opportunity=p.key, error=str(exc)[:200])

    async def rebroadcast(self, key: TxKey, *, resync: bool = True) -> None:
        """Send a resumed transaction's latest signed bytes again: a crash between the
        journal write and the broadcast must not leave it unsent. The node answers "already
        known" when it has it, which is fine. `resync=False`: a refusal does not re-read the
        nonce (one mined already is refused "nonce too low"; re-read mid-resume, the node's
        count could fall below nonces tracked and not yet sent)."""
        p = self.pending.get(key)
        if p is None or not p.attempts or self._holding_bytes(p):
            return
        try:
            await self._broadcast(p.attempts[-1], private=False, resync=resync)
        except SendRefused as exc:
            if not resync and "nonce too low" in str(exc).lower():
                # (expected: its nonce is mined, as the resume read; its receipt settles it.
                # Logged as a refusal, it read like trouble at every restart: a by-hand trial)
                log.debug("tx.rebroadcast_already_mined", opportunity=key, nonce=p.nonce)
                return
            log.info("tx.rebroadcast_refused", opportunity=key, error=str(exc)[:200])
        except InDoubt as exc:
            p.in_doubt = True
            log.info("tx.rebroadcast_in_doubt", opportunity=key, error=str(exc)[:200])

    def _holding_bytes(self, p: Pending) -> bool:
        """True (and the transaction marked in doubt: sent again every block once the hold
        ends) while the key signs nothing."""
        held = self.signing_held()
        if held is None:
            return False
        if not p.in_doubt:
            log.warning("tx.broadcast_held", opportunity=p.key, nonce=p.nonce,
                        reason=held.reason[:200])
        p.in_doubt = True
        return True

    def track(self, key: TxKey, records: list[TxRecord], to: str, data: bytes, budget_wei: int,
              block: int, pulls: Mapping[str, int] | None = None) -> None:
        """Resume watching a journaled transaction after a restart. Its nonce stays taken:
        one signed and journaled but never broadcast (a crash in between) is not counted by
        the node yet, and the next new transaction must not be signed under it. `pulls`: what
        it will pull from the key's balances (the journal's), reserved until it is mined as
        when it was signed — a restart in a crash otherwise let the first block's
        liquidations count a balance its resumed ones were about to take."""
        first = records[0]
        self._pulls.pop(key, None)  # (tracked anew: what it pulls is these, not added twice)
        self._mined_pulls.pop(key, None)  # (a reorg took its inclusion: pending again)
        self._mined_sales.pop(key, None)
        self._sale_mined_in.pop(key, None)
        for asset, amount in (pulls or {}).items():
            self.reserve(key, asset, amount)
        self._ours.update(r.nonce for r in records)
        if self._mined_at is not None:  # (its nonce in flight again: a reorg, a restart)
            self._mined_at = min(self._mined_at, first.nonce)
        self.pending[key] = Pending(key, first.nonce, to, data, first.gas_limit, budget_wei,
                                    attempts=list(records), sent_block=block, resumed=True)
        if self._nonce is not None:
            self._nonce = max(self._nonce, first.nonce + 1)


def _mined_block(outcome: Outcome, block: int) -> int:
    """The block a settled transaction's receipt says it was mined in; `block` when the
    receipt does not say it readably."""
    try:
        return int(str((outcome.receipt or {})["blockNumber"]), 16)
    except (KeyError, ValueError, TypeError):
        return block


def _quantity(value: object) -> int:
    """A receipt's hex quantity; 0 when it has none that reads."""
    try:
        return int(str(value), 16)
    except ValueError:
        return 0


def _settles(answer: object, tx_hash: str) -> bool:
    """Whether a receipt answered has what a settlement reads: `tx_hash`'s, its status 0x0
    or 0x1, its gas a quantity (its block may not read: `_mined_block`)."""
    return (isinstance(answer, dict)
            and str(answer.get("transactionHash", "")).lower() == tx_hash.lower()
            and answer.get("status") in ("0x0", "0x1")
            and hex_quantity(answer.get("gasUsed")) is None)


def is_receipt_of(answer: object, tx_hash: str) -> bool:
    """Whether an answer has the shape of a mined receipt of `tx_hash`."""
    if not isinstance(answer, dict):
        return False
    found = answer.get("transactionHash")
    return (isinstance(found, str) and found.lower() == tx_hash.lower()
            and answer.get("status") in ("0x0", "0x1")
            and isinstance(answer.get("blockHash"), str)
            and isinstance(answer.get("blockNumber"), str))
