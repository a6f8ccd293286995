"""The executor: from a scan result to liquidations sent (or recorded, in dry-run), for every
protocol — a funnel of stages, each counted in `keeperd_liquidations_total{stage}`.

1. plan — the plug-in's liquidator turns the liquidatable rows into typed opportunities;
2. gate — the protocol's hold (unknown revision, parity), the chain's price watch (the breaker
   on any asset the position rests on, the L2 sequencer, a block whose prices it could not
   judge); a journaled key is never tried twice;
3. decide — pure: prize less slippage, flash premium and gas at the fee cap, against
   `min_profit_usd`; the fee budget that keeps it profitable whatever the fee market does;
4. capital — the keeper's balances, most profitable first; the rest is the shortfall (counted
   and alerted), or goes down the flash path with `capital: auto`;
5. simulate — the exact calls from the keeper's address, a wave in one JSON-RPC batch;
6. send — journaled and signed in one commit (write-ahead), then broadcast together;
7. settle — each block: included / reverted / replaced / cancelled / dropped, realised profit
   from the protocol's own liquidation event, gas learnt; a competitor's liquidation of the
   same account is a lost race, with the winner.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import structlog
from eth_utils import function_signature_to_4byte_selector

from keeperd.chain import l1_fee
from keeperd.chain.calls import ContractCall, call_many
from keeperd.chain.revert_reason import decoded_revert, reason_of
from keeperd.chain.rpc import Endpoint, RpcError, RpcPool, RpcUnavailable
from keeperd.config import KeeperConfig
from keeperd.crashpoints import crash_point
from keeperd.execution import journal as J
from keeperd.execution import sales
from keeperd.execution.allowances import AllowanceOverrides
from keeperd.execution.capital import Shortfall, allocate, publish_shortfall
from keeperd.execution.reconcile import forged, resume_journal, track_again
from keeperd.execution.txmanager import (
    FeePolicy,
    Outcome,
    Pending,
    SendRefused,
    SlotBusy,
    ToSign,
    TxManager,
    TxRecord,
    is_receipt_of,
)
from keeperd.execution.wave_code import (
    EXECUTE,
    MAX_CALLS,
    WaveCall,
    encode_execute,
    read_wave_logs,
    wave_gas_limit,
)
from keeperd.execution.waves import split_wave
from keeperd.metrics import Metrics
from keeperd.oracles.watch import ChainPriceWatch
from keeperd.protocols.sdk.approvals import WAVE_SUBJECT, by_endpoint
from keeperd.protocols.sdk.contract import (
    RECEIPT_TO_LIMIT,
    Call,
    GasQuote,
    LiquidationSeen,
    Liquidator,
    Opportunity,
    Plugin,
    PriceTrust,
    Verdict,
)
from keeperd.protocols.sdk.keys import OpportunityKey, TxKey, UpkeepKey, WaveKey
from keeperd.protocols.sdk.messages import ExecutionEvent, ScanResult
from keeperd.protocols.sdk.swap import seller_outcome
from keeperd.storage.lease import FencedOut

log = structlog.get_logger(__name__)

# A liquidation that reverted on chain is not the end of its opportunity (interest can turn
# a planned leftover into dust between the snapshot and inclusion): it is planned again, under
# a new key, this many times at most, and simulated first each time.
RETRIES_AFTER_REVERT = 2
# How an unwind's try ends that lets the next go (housekeeping: a position the keeper holds
# stays held until one is included).
UNWIND_RETRIED = frozenset({J.REVERTED, J.DROPPED, J.CANCELLED})
# An unwind's tries at most, refused or dropped ones included (a block each): then it is left
# to the operator, as after RETRIES_AFTER_REVERT + 1 reverts.
UNWIND_TRIES_MAX = 16
REORG_WATCH_BLOCKS = 128  # as deep as the block source remembers
BALANCE_EVERY_BLOCKS = 10  # the keeper's balances (gauges, capital planning) are this fresh
# How long an allowance behind the balance is asked of the other endpoints before the
# liquidations it holds wait on the first endpoint's word (`Executor._fund`)
ALLOWANCE_CONFIRM_S = 1.0
# How long a delegated key's due approvals wait behind its protocol's liquidations before
# they go first (`_act`).
APPROVALS_WAIT_BLOCKS = 3
# Liquidations simulated, signed and broadcast together; the most profitable go first, in a
# first wave of WAVE, then in waves of LATER_WAVE. Every wave's simulation is asked without
# waiting for another wave (the later ones a moment after the first's), and each wave is
# broadcast as soon as it is signed, while the next is signed. A block's last
# liquidation goes out one wave's signature and broadcast after the node answers its
# simulation: small later waves keep that short (later waves of 100 and of 32 left a longer
# tail in single runs of bench/latency.py; bench/README.md, "third pass", has the runs of 16).
# The first wave is smaller: it is what the node simulates, this process signs and the node
# takes before the block's first liquidation is out (bench/README.md, "fourth pass"). A block
# of at most LATER_WAVE goes in one wave (`wave_split`).
WAVE = 8
LATER_WAVE = 16
# A mined wave that ran no KeeperWave (`_settle_wave`): no wave for this many blocks.
WAVES_OFF_BLOCKS = 50
# A delegated key under code other than KeeperWave sends one liquidation a block: this many
# of the most profitable are simulated for it (the first that passes goes).
ALONE_CANDIDATES = 16
# A wave member's receipt: its share of the operator fee the wave paid (`_settle_wave`).
OPERATOR_FEE_SHARE = "keeperdOperatorFeeShare"
# The most gas a wave's transaction asks (`wave_gas_limit`): EIP-7825 caps a transaction at
# 2**24 (16,777,216) since Fusaka; the rest of a block's liquidations wait for a later block.
# An inclusion settled at a start, before a block gave its prices: booked at the first one.
UNBOOKED_MARK = "profit_usd=pending"
# How long a reverted liquidation's trace is waited for (its reason, for the log), and how
# many are asked a block, once its liquidations are sent.
REVERT_TRACE_S = 2.0
# How long a second opinion is waited for once the first endpoint has answered a simulation.
SECOND_OPINION_GRACE_S = 0.5
# Blocks with a second opinion refusing a liquidation, of the last OPINION_WINDOW_BLOCKS,
# before it is told.
OPINION_REFUSED_BLOCKS = 3
OPINION_WINDOW_BLOCKS = 5
# A trace the node did not answer in time (a crash's load) is asked again at a later block,
# this many times in all: under a full test run's load 16 and 30 of 34 kept reverts were
# traced at the first asking. An endpoint that refuses debug_* is not asked again.
REVERT_TRACE_TRIES = 3
REVERT_TRACES_PER_BLOCK = 2
REVERT_TRACES_KEPT = 32
UNASKED = object()  # (a trace not asked: the node was slow at an earlier one of the block)
WAVE_GAS_CAP = 16_000_000
PAUSE_EVERY = 8  # liquidations signed between two looks at the node's answers
# The later waves' simulations are asked when the first wave's is answered, or this long
# after it was asked: asked together, the node worked through them beside the first wave's
# (its simulation's median 10.7 ms against 5.3 in bench/README.md's run F, "fourth pass").
LATER_SIMULATIONS_AFTER_S = 0.003
WRITE_TURNS = 3  # loop turns for an aiohttp request to go from its task to the socket
# A call is simulated with the gas limit it is sent with (simulating with more gas than was
# then sent passed calls that ran out of gas on chain). One that fails there is measured, up
# to this multiple of the plan (the plan may be short of a receipt's worth of experience),
# and if it succeeds so, sent with what it needs times `gas_limit_margin`.
SIMULATION_GAS_FACTOR = 3
# Blocks of liquidations held for an unread L1 data fee before it is alerted (`fee_hold`): one
# failed read is an endpoint's moment, not the keeper's trouble.
FEE_UNREAD_HOLD_BLOCKS = 5
# (RECEIPT_TO_LIMIT, charged_gas: protocols/sdk/contract.py, beside GasQuote, whose
# gas_usd the decision prices with)

# More transactions than this sent by the key past the journal's highest nonce on its chain
# is a journal behind the key (`journal.behind_the_key`).
JOURNAL_BEHIND_TOLD = 20
# An included liquidation that lost before its gas counts toward the pause (`_lost_money`)
# when it gave this much less collateral per debt than the plan (the plug-in compares).
LOSS_RATE_SHORT = 0.02
# A sale simulated in turn (execution/sales.py) runs with SIMULATION_GAS_FACTOR times its
# gas: what it needs is its gas used with this headroom (the 63/64 rule at each call it
# makes: flash loan, liquidation, swap, callback); simulated blocks of at most this much of
# limits each.
TURN_GAS_HEADROOM = 1.1
TURN_BLOCK_GAS = 15_000_000
# A lasting verification refusal of one opportunity is logged again this often (blocks).
REFUSAL_RETELL_BLOCKS = 100
# The reasons of keeperd's own seller contracts' guards (a sale that no longer pays): not
# counted by the revert breaker, which is for reverts no one explains.
OWN_GUARDS = re.compile(r"\b(SwapBelowBound|NotEnoughProfit)\b")


# How a reverted row's detail gives its traced reason (`_trace_reverts` writes it,
# `last_traced_reason` reads it back): "tx=<hash> reverted: <why>".
REVERTED_BECAUSE = " reverted: "


def last_traced_reason(entries: Sequence[J.JournalEntry]) -> str | None:
    """The reason traced into the last of these reverted rows that has one, as the revert
    breaker's pause says it."""
    for entry in reversed(entries):
        if entry.detail and REVERTED_BECAUSE in entry.detail:
            return entry.detail.split(REVERTED_BECAUSE, 1)[1].split(
                f" {UNBOOKED_MARK}")[0][:300]
    return None


def keepers_own(entry: J.JournalEntry, keeper: str | None) -> bool:
    """A row of the keeper's own account: a follow-up (Curie's unwinds), not a liquidation."""
    return keeper is not None and entry.account.lower() == keeper.lower()


def counts_as_revert(entry: J.JournalEntry, keeper: str | None) -> bool:
    """Whether a journaled revert is one the revert breaker counts, as it counts them live:
    not a follow-up's (`keepers_own`), nor one keeperd's own seller contract refused (its
    traced reason in the row: `OWN_GUARDS`)."""
    return not keepers_own(entry, keeper) and not OWN_GUARDS.search(entry.detail or "")
NOT_ENOUGH_PROFIT = "0x" + function_signature_to_4byte_selector(
    "NotEnoughProfit(uint256,uint256)").hex()
SWAP_BELOW_BOUND = "0x" + function_signature_to_4byte_selector(
    "SwapBelowBound(uint256,uint256)").hex()


def swap_would_not_pay(error: object) -> str | None:
    """Which guard of keeperd's seller contracts refused a simulated liquidation — the sale
    of the seized collateral left too little (NotEnoughProfit) or paid under the oracle rate
    less max_swap_slippage_bps (SwapBelowBound) — or None. The selector is read from the
    error's data and from its message: a node that measures gas (eth_estimateGas) names a
    custom error in its message only ("custom error 0x092faa7a: ..."), and the crash's
    measured sales were counted as failed simulations, then checked as lost races."""
    if not isinstance(error, RpcError):
        return None
    data, message = str(error.data or "").lower(), error.message.lower()
    for name, selector in (("NotEnoughProfit", NOT_ENOUGH_PROFIT),
                           ("SwapBelowBound", SWAP_BELOW_BOUND)):
        if data.startswith(selector) or f"custom error {selector}" in message:
            return name
    return None


class InTurnUnavailable(Exception):
    """A sale simulated in turn with the block's earlier sales through its pool got no
    answer: the endpoint refused the simulated block as a whole (no `eth_simulateV1`, say).
    Not sent this block: alone it would pass where its turn may fail."""


def _in_turn_part(answer: Any, first: int, last: int) -> Any:
    """One sale's results in its pool's simulated block, as an `eth_simulateV1` answer of
    its own (what `_verdict` and `_reverted` read); the request's failure as a whole is
    InTurnUnavailable."""
    if isinstance(answer, Exception):
        return InTurnUnavailable(str(answer)[:300])
    try:
        calls = [c for block in answer for c in block["calls"]]  # (the state carries on)
        if len(calls) < last:
            raise ValueError(f"{len(calls)} results for {last} calls")
        return [{"calls": calls[first:last]}]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return InTurnUnavailable(f"unexpected eth_simulateV1 answer: {exc}")


class InTurnReverted(RpcError):
    """A sale that reverts once the keeper's sales ahead of it through its pool are mined
    (`ahead` of them, through `pool`): its error and data as the simulated block gave them."""

    def __init__(self, code: int, message: str, data: Any, ahead: int, pool: str) -> None:
        super().__init__("eth_simulateV1", code, message, data)
        self.ahead, self.pool = ahead, pool


def _in_turn_verdict(answer: Any, ahead: int, pool: str, planned_gas: int
                     ) -> Simulated | RpcError:
    """A sale in turn: Simulated when its call succeeded after the sales ahead of it (with
    what it needs when its gas used, with TURN_GAS_HEADROOM for the calls it makes, passes
    the plan's limit), else its revert with the error's data (a seller's guard is read from
    it)."""
    call = answer[0]["calls"][-1]
    if int(call.get("status", "0x0"), 16) == 1:
        used = int(str(call.get("gasUsed") or "0x0"), 16)
        needed = int(used * TURN_GAS_HEADROOM) + 1
        return Simulated(needed if needed > planned_gas else None,
                         sold=seller_returned(call.get("returnData")))
    error = call.get("error") or {}
    return InTurnReverted(int(error.get("code", 3)),
                          str(error.get("message", "execution reverted")),
                          error.get("data") or call.get("returnData"), ahead, pool)


# (exported at 0 from the start: KeeperdLiquidationsReverting's increase() missed a
# process's first revert, its series born at 1 — a trial)
FUNNEL_STAGES = ("detected", "profitable", "sent", "included", "reverted", "lost_race", "held",
                 "no_capital", "resumed")
# The stages an opportunity stops at without being sent, as `keeperd status` names them.
NOT_SENT_REASONS = ("held", "breaker_paused", "fee_unread", "second_opinion_refused",
                    "verification_refused", "simulation_failed", "no_swap_pool",
                    "swap_would_not_pay", "unprofitable")


@dataclass(frozen=True)
class Simulated:
    """A wave item that would succeed; `gas_needed` when it had to be measured (it failed at
    the plan's limit), None when the plan's limit sufficed; `verdict` when the chain itself
    confirmed it (a call under verification), with the outcome priced from the simulation."""

    gas_needed: int | None
    verdict: Verdict | None = None
    # On an OP Stack chain, what the chain's oracle says it pays beside its gas (wei): its
    # L1 data fee, and the operator fee as a function of the gas it is sent with.
    l1_fee_wei: int = 0
    operator_fee: l1_fee.OperatorFee = l1_fee.NO_OPERATOR_FEE
    # A flash sale's: what the seller contract returned it sent the beneficiary (debt-asset
    # units), as the simulation ran the sale — after the sales ahead of it in turn. None: not
    # a sale, measured with eth_estimateGas (no return data), or a contract that returns none.
    sold: int | None = None

    def fee_beside_gas(self, gas_limit: int) -> int:
        """What the decision prices beside the gas (wei): the chain's fees, FEE_HEADROOM
        over what its oracle said at the simulation."""
        return l1_fee.with_headroom(self.l1_fee_wei + self.operator_fee.fee(gas_limit))


def seller_returned(data: Any) -> int | None:
    """The profit a seller contract's `liquidate` returns (one uint256), from a simulation's
    return data; None for anything else (a contract deployed before it returned one)."""
    if not isinstance(data, str) or len(data) != 66 or not data.startswith("0x"):
        return None
    try:
        return int(data, 16)
    except ValueError:
        return None


class VerificationRefused(Exception):
    """The chain did not confirm a liquidation under verification (health, outcome)."""


class SecondOpinionRefused(Exception):
    """A second RPC endpoint saw the call revert where the first saw it succeed."""


Keyed = tuple[Opportunity, OpportunityKey]  # (a plan, the journal key it is tried under)


@dataclass(frozen=True)
class Decision:
    opportunity: Opportunity
    key: OpportunityKey
    net_profit_usd: float
    gas_limit: int
    budget_wei: int  # the most this liquidation may pay in fees for its gas
    fee_beside_gas_wei: int = 0  # an OP Stack chain's L1 data and operator fees, priced


class FeeReading(NamedTuple):
    """A wave's reads of an OP Stack chain's fees: how many figures rested on one endpoint of
    two, each call's L1 data fee (None: unread), the operator fee (None: unread)."""

    lone: int
    fees: list[int | None]
    operator: l1_fee.OperatorFee | None


class _Judged(NamedTuple):
    """A liquidation of a wave whose simulation passed and which still pays: to journal."""

    call: Call
    key: OpportunityKey
    opp: Opportunity
    decision: Decision
    entry: J.JournalEntry
    verified: bool


class _TurnsOfTheBlock:
    """A block's sales through swap pools as they were judged (`_consider_all`): which
    failed in turn behind a sale that passed its simulation and was then not sent."""

    def __init__(self) -> None:
        self.failed: list[tuple[Call, OpportunityKey]] = []
        self.unsent: set[str] = set()  # pools a sale passed in and was not sent through

    def note(self, wave: list[tuple[Call, OpportunityKey]], simulations: list[object],
             sent: list[_ToSend]) -> None:
        signed = {t.key for t in sent}
        for (call, key), sim in zip(wave, simulations, strict=True):
            if not call.sells_through:
                continue
            if isinstance(sim, InTurnReverted):
                if swap_would_not_pay(sim) is not None:  # (a race lost is told once)
                    self.failed.append((call, key))
            elif isinstance(sim, Simulated | SecondOpinionRefused | VerificationRefused
                            | l1_fee.FeeUnread) and key not in signed:
                # (it passed on the first endpoint, moving the pool for those behind it,
                # and was not sent: refused after, or unprofitable)
                self.unsent.add(call.sells_through.lower())

    def again(self) -> list[tuple[Call, OpportunityKey]]:
        return [(c, k) for c, k in self.failed
                if c.sells_through is not None and c.sells_through.lower() in self.unsent]


class _ToSend(NamedTuple):
    """A liquidation of a wave, journaled and signed: what its broadcast reports on."""

    opp: Opportunity
    key: OpportunityKey
    decision: Decision
    record: TxRecord
    pending: Pending
    verified: bool


class _Sent(NamedTuple):
    """A wave's broadcast: the node's answer for each (None: it has it) and when it came."""

    items: list[_ToSend]
    outcomes: list[SendRefused | None]
    answered: float


def decide(opportunity: Opportunity, key: OpportunityKey, *, gas_limit: int, fee_per_gas: int,
           native_usd: float, min_profit_usd: float, slippage_bps: int,
           flash_premium_bps: int = 0, fee_beside_gas_wei: int = 0,
           sold_usd: float | None = None) -> Decision | None:
    """Send, or not (pure): the prize is the bonus seized less the swap slippage of selling
    it (and the flash-loan premium on what was borrowed); the gas it is charged at the fee
    cap (`charged_gas`, as `GasQuote.gas_usd` prices the seller contracts' bar) comes off
    that, and so does what the chain charges beside the gas (`fee_beside_gas_wei`: an OP
    Stack chain's L1 data fee); below `min_profit_usd`, with no price for gas, or unpriced
    (NaN), nothing is sent. The fee budget is what keeps it `min_profit_usd` in profit
    whatever the gas fee market does, worst case included: the tx manager holds fee cap x
    the whole limit under it (the fee beside the gas, as priced at the simulation with its
    headroom, is taken off it first: an L1 fee rising past that headroom is not bounded).
    `sold_usd`: a flash sale's profit as its simulation ran it (the seller contract's return:
    after the swap, the loan and its premium), the prize instead of the estimate — never more
    than the plan's own figures allow with no slippage at all: it is one endpoint's answer,
    and the fee budget follows it."""
    o = opportunity
    slippage = o.seized_usd * slippage_bps / 10_000
    premium = o.repaid_usd * flash_premium_bps / 10_000
    prize_usd = (o.gross_profit_usd - slippage - premium if sold_usd is None
                 else min(sold_usd, o.gross_profit_usd - premium))
    gas_usd = GasQuote(fee_per_gas, native_usd, min_profit_usd).gas_usd(gas_limit)
    net = prize_usd - gas_usd - fee_beside_gas_wei / 1e18 * native_usd
    if not net >= min_profit_usd or not native_usd > 0:
        return None
    budget_wei = int((prize_usd - min_profit_usd) / native_usd * 1e18) - fee_beside_gas_wei
    return Decision(o, key, net, gas_limit, budget_wei, fee_beside_gas_wei)


def newly_forgone(lacking: Sequence[OpportunityKey], forgone: Collection[tuple[str, Any]],
                  planned: Collection[tuple[str, Any]]) -> list[int]:
    """The indexes of `lacking` (liquidations the keeper's capital does not cover) that were
    not forgone at the last pass (pure). One in place of a position of the same account that
    was forgone and is not planned any more is the same liquidation, not a new one: Aave's
    plan picks an account's (collateral, debt) pair anew each block, and a near tie flips as
    interest grows (0xe8F2…'s WBTC/USDC at 472, WETH/USDC at 473: counted twice as forgone,
    no_capital 47 for 46 — a CI run). Each position gone stands for one new one at most."""
    gone = Counter(account for account, position in forgone
                   if (account, position) not in planned)
    out = []
    for i, key in enumerate(lacking):
        if (key.account, key.position) in forgone:
            continue
        if gone[key.account]:
            gone[key.account] -= 1
            continue
        out.append(i)
    return out


def _short_while_held(short: Mapping[str, Shortfall], last: Mapping[str, Shortfall],
                      held_back: Collection[str]) -> dict[str, Shortfall]:
    """This block's shortfall by debt asset, with the last full pass's kept for the assets
    not judged short now whose forgone positions a breaker's pause or the price watch's hold
    kept from this pass's capital stage (`held_back`; not those unprofitable or in flight
    now: their shortfall is over) (pure)."""
    return {**{a: s for a, s in last.items() if a in held_back and a not in short}, **short}


def _not_sent(told: set[tuple[OpportunityKey, str]]) -> dict[str, int]:
    """Accounts by the stage their opportunities stopped at without being sent (an account
    with one sent, or journaled already, is not counted; one with several pairs, once)."""
    stages: dict[str, set[str]] = {}
    for key, what in told:
        stages.setdefault(key.account.lower(), set()).add(what)
    out: dict[str, int] = {}
    for seen in stages.values():
        if seen & {"profitable", "skipped_journaled"}:
            continue
        reason = next((r for r in NOT_SENT_REASONS if r in seen), None)
        if reason is not None:
            out[reason] = out.get(reason, 0) + 1
    return out


def _sold_usd(opp: Opportunity, simulated: Simulated | None) -> float | None:
    """A flash sale's simulated profit in USD: the seller's debt-asset units at the plan's
    own price of that asset (what it repays, over the units it repays)."""
    if simulated is None or simulated.sold is None or opp.amount <= 0 \
            or not opp.repaid_usd > 0:
        return None
    return simulated.sold * opp.repaid_usd / opp.amount


class Executor:
    def __init__(self, config: KeeperConfig, plugin: Plugin, liquidator: Liquidator,
                 pool: RpcPool, journal: J.Journal, metrics: Metrics, tx: TxManager | None,
                 keeper_address: str | None, prices: ChainPriceWatch | None = None,
                 native_prices: dict[str, float] | None = None, *,
                 op_stack_chain_id: int | None = None) -> None:
        self.config = config
        self.adapter = plugin
        self.liquidator = liquidator
        self.pool = pool
        self.journal = journal
        self.metrics = metrics
        self.tx = tx
        self.keeper = keeper_address
        self.prices = prices  # None: nothing gates on prices (tests of other stages)
        # The chain's id where it charges OP Stack fees beside the gas (chain/l1_fee.py):
        # each liquidation's are asked of the chain with its simulation and priced.
        self.op_stack_chain_id = op_stack_chain_id
        # The blocks since which, and at which last, a liquidation was held because that fee
        # could not be read (`fee_hold`); a fee read since (`_fee_read_at`) ends it.
        self._fee_unread: tuple[int, int] | None = None
        # What a liquidation is expected to pay beside its gas, for the seller contracts'
        # on-chain profit bar (`GasQuote.fee_beside_gas_wei`, encoded before the simulation
        # prices it): the median call's of the last wave read, or at start a
        # liquidation-sized call's.
        self._fee_estimate_wei = 0
        self._fee_read_at = -1  # the last block at which a fee read answered
        self._bar_fee_wei = 0  # that estimate, as the block's calls were encoded with it
        self.fees = FeePolicy.from_config(config)
        self.labels = (plugin.chain, plugin.name)
        # The chain's native token in USD, shared by the executors of one chain: a protocol
        # that does not price it (Morpho without an ETH market) uses another's.
        self.native_prices = native_prices if native_prices is not None else {}
        self._liquidatable: set[str] = set()
        # One evaluation acted on at a time: a scan's, or the last one's at a promotion.
        self._acting = asyncio.Lock()
        # Liquidations tracked again (a restart, a reorg) whose position has changed since
        # they were signed (a plan for it now has another version): not replaced with their
        # old calldata, cancelled (`_still_wanted`); the position is planned afresh once
        # their nonce is settled.
        self._superseded: set[OpportunityKey] = set()
        self._last: ScanResult | None = None
        self._lost_race_checks: list[tuple[Opportunity, OpportunityKey, int, str]] = []
        self._stages: dict[str, float] = {}  # the block's plan, step by step (execution.timing)
        # Debt assets the keeper's balance fell short of at the last liquidations considered.
        # What the keeper's balances could not pay for in the last block: `_short_of` as the
        # gauges show it, `capital_shortfall` (alerted) only when it was forgone — under
        # `capital: auto` the capital-free path took it, and nothing was left unsent.
        self._short_of: dict[str, Shortfall] = {}
        self.capital_shortfall: dict[str, Shortfall] = {}
        # The positions whose liquidation was forgone for want of capital at the last full
        # pass (and the price-exposed passes since): each counted once while it stays
        # forgone (`publish_shortfall`; by position, not key: a key's version moves with the
        # position's interest, block after block).
        self._forgone: set[tuple[str, tuple[str, ...]]] = set()
        # Each forgone position's debt asset, and the shortfall of the last full pass: an
        # asset whose forgone positions are held back from the capital stage this block (a
        # breaker's pause, the price watch's hold) stays short as it was — its alert resolved
        # "no liquidation is short of USDC now" while nothing was funded, and fired again
        # once the breaker cleared (a by-hand trial).
        self._forgone_asset: dict[tuple[str, tuple[str, ...]], str] = {}
        self._full_short: dict[str, Shortfall] = {}
        # Outcomes, for the alert engine (its subscriber): noted as they happen, written
        # together (`events_flush`) once the block's work — or the start's — is done.
        self.events: Callable[[ExecutionEvent], None] | None = None
        self.events_flush: Callable[[], Awaitable[bool]] | None = None
        # Replicas: whether this one leads (signs and sends), and whom to tell when a fenced
        # write shows it no longer does. One process alone always acts.
        self.acting: Callable[[], bool] = lambda: True
        self.on_fenced: Callable[[str], None] | None = None
        self.native_balance: float | None = None  # whole tokens, from publish_balances
        self.capital_fix: str | None = None  # what covers a shortfall here (the alert's action)
        # Liquidations included in the last REORG_WATCH_BLOCKS blocks: key -> its block. A
        # reorg that takes that block away hands them back to the transaction manager.
        self._recently_included: dict[OpportunityKey, int] = {}
        # Inclusions seen at a block the chain's head has not reached (`_recheck_inclusion`):
        # checked again once it has.
        self._included_ahead: dict[OpportunityKey, int] = {}
        self._included_pruned_at = -1  # (pruned once a block, not once a liquidation)
        # Balances are read every BALANCE_EVERY_BLOCKS blocks from the first full scan on (a
        # fixed "block % 10" missed them whenever that block's scan was coalesced away).
        self._balances_due = 0
        self._allowances: AllowanceOverrides | None = None  # dry-run's approvals (_simulate)
        # keeperd's own safety limits on sending (`send_pause`): blocks of recent on-chain
        # reverts, and (wall time, USD) of the gas receipts paid.
        self._reverts: list[int] = []
        # A revert's block as counted, by transaction, until its reason is read
        # (`_put_down_reasons`: one of keeperd's own guards is taken back).
        self._revert_counted: dict[str, int] = {}
        # Blocks of included liquidations that lost money (`_lost_money`): they pause sending
        # as reverts do.
        self._losses: list[int] = []
        # What the protocol's own state held back at the last block (`_tell_unplanned`).
        self._unplanned: dict[str, int] = {}
        self._refusals_said: dict[Hashable, int] = {}  # (`_refusal_said`)
        self._last_revert_reason: str | None = None  # (the node's trace of the last one)
        # (reverts nobody explained, and the times each was asked: `_trace_reverts`)
        self._to_trace: list[tuple[Outcome, int]] = []
        self._tracing: asyncio.Task[list[tuple[Outcome, int, Any]]] | None = None
        # Approvals to send at the next block's end (`_keep_allowances`): a delegated key's
        # were held behind the block's liquidations, or refused for its slot.
        self._allowances_due = False
        self._approval_behind: set[str] = set()  # assets whose allowance lags the balance
        self._awaiting_told = -1  # the block `liquidation.awaiting_approval` was said for
        # (blocks they have waited behind liquidations: after APPROVALS_WAIT_BLOCKS they go
        # first; counted from when they were due, a wait behind the start's own approvals in
        # flight, with nothing to liquidate, let them take a crash's first turn: a CI run)
        self._allowances_deferred = 0
        self._held_said_at = -1  # (the block `liquidation.held_one_in_flight` was logged at)
        self._standby_balances_due = 0  # (a standby's balance gauges, read every few blocks)
        # The funnel's stages told this block, by opportunity: a block's price-exposed pass
        # and its full pass consider the same opportunity twice (`_tell`).
        self._told_block = -1
        self._unpriced_sale_told = False  # (`liquidation.sale_priced_by_estimate`)
        # The last block judged whole: how many accounts stopped at each not-sent stage.
        self._judged_last: tuple[int, dict[str, int]] | None = None
        self._told: set[tuple[OpportunityKey, str]] = set()
        self._told_keys: set[OpportunityKey] = set()  # (every key of `_told`)
        # No wave until this block: a mined wave ran no KeeperWave (the delegation read was
        # wrong, or gone by the time it was mined).
        self._waves_off_until = 0
        # What the journal holds of the keeper's own holdings here (`_record_holdings`):
        # None until this start wrote them once.
        self._holdings_written: dict[str, str] | None = None
        self._waves_off_why = ""  # (`waves_hold`: told as sending_paused while it lasts)
        self._refused_blocks: dict[int, str] = {}  # (`opinion_hold`: block -> why refused)
        # Members of a wave in flight found no longer wanted when it was replaced.
        self._unwanted_in_waves: set[OpportunityKey] = set()
        self._gas_spent: list[tuple[float, float]] = []
        # Settled before any book was evaluated (a start-up reconciliation, before the first
        # scan): no prices yet to value the liquidation nor its gas. Their outcomes, booked
        # at the first scan with a native price (`_book_settled_at_start`): booked at once,
        # their profit read 0 and their gas went unpriced.
        self._unbooked: list[Outcome] = []
        self._pause_reason: str | None = None
        self._pause_kind: tuple[str | None, str | None] = (None, None)  # (`send_pause`)
        for stage in (*FUNNEL_STAGES, *(("fee_unread",) if op_stack_chain_id else ())):
            metrics.liquidation_funnel.labels(*self.labels, stage)
        metrics.liquidation_profit.labels(*self.labels)  # (0 until one is included: a series)
        metrics.liquidation_loss.labels(*self.labels)

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def supports_flash(self) -> bool:
        return self.liquidator.supports_flash

    # --- start-up -------------------------------------------------------------------------

    async def reconcile(self, head: int) -> None:
        """At start, before anything new is sent: what the journal says was signed, tracked
        again under its own nonces (rebroadcast), and what was mined while down, settled.
        Then `prepare`; with several protocols on one key, every one's `reconcile` before any
        one's `prepare` (the daemon's `_prepare_executors`). Under `_acting`: an act of an
        earlier leadership still under way ends first."""
        async with self._acting:
            await self._reconcile(head)

    async def prepare(self, head: int) -> None:
        """The liquidator's own preparation (approvals, parameters, Curie's deposit): only
        once every protocol sharing the key has reconciled — an approval sent first took the
        nonce of another protocol's journaled, unbroadcast liquidation, which then never went
        (a review)."""
        async with self._acting:
            await self._prepare(head)

    async def _tell_journal_behind(self, sent: int) -> None:
        """A journal that knows the key's transactions on this chain only up to a nonce far
        below the chain's count (JOURNAL_BEHIND_TOLD more than it recorded: keeperd's own
        approvals and deposits are not journaled, a few of those are not this) is told once:
        a state database restored from a backup, or another one this key liquidated from.
        Restored, a trial's status fell from 167 liquidations to 41 with no word."""
        highest = await self.journal.highest_nonce(self.tx.protocols or {self.adapter.name}) \
            if self.tx is not None else None
        if self.tx is None or highest is None or sent - 1 - highest <= JOURNAL_BEHIND_TOLD:
            return
        self.tx.history_told = True
        log.warning("journal.behind_the_key", chain=self.adapter.chain,
                    address=self.tx.address, journal_highest_nonce=highest,
                    transactions=sent,
                    meaning=f"the key has sent {sent - 1 - highest} transactions on this "
                    "chain since the last one this journal recorded, more than keeperd's own "
                    "approvals and deposits (not journaled) usually are: most likely a state "
                    "database restored from a backup, or liquidations from another state_dir "
                    "or database with this key (their P&L is not in this journal's status); "
                    "or a long quiet time of allowance top-ups and margin refills. Nothing "
                    "is liquidated twice (a liquidated position is another opportunity), and "
                    "events told again carry their first idempotency key")

    async def _reconcile(self, head: int) -> None:
        # (a leadership's first block writes its holdings: another leader may have written
        # since this replica last did — a review)
        self._holdings_written = None
        if self.tx is not None:
            sent = await self.tx.sync_nonce_afresh()
            if sent and not self.tx.history_told and await self.journal.is_empty():
                # (a state_dir typo: a journal of its own, the P&L split from the real one's
                # for good, a by-hand trial — held, not refused: a keeper that has sent only
                # its approvals says the same)
                self.tx.history_told = True
                log.warning("journal.empty_on_a_used_key", chain=self.adapter.chain,
                            address=self.tx.address, transactions=sent,
                            state_dir_journal="no liquidation recorded",
                            meaning="the key has sent transactions on this chain, and this "
                                    "journal records no liquidation: if keeperd liquidated "
                                    "with this key from another state_dir, stop and start "
                                    "it with that one (its journal holds their P&L and what "
                                    "is in flight); keeperd's own approvals and deposits "
                                    "count too, so a keeper that has not liquidated yet "
                                    "sees this")
            elif sent and not self.tx.history_told:
                await self._tell_journal_behind(sent)
            await self._tell_untold()  # (before this start's own settlements: told once)
            await self._reverts_journaled(head)
            await resume_journal(self.journal, self.tx, self.adapter.name, head,
                                 resend_if=self._still_succeeds)
            self._register_sales()
            await self._watch_recent_inclusions(head)
            await self._unbooked_by_a_run_before()
            # Settle at once what was mined while we were down.
            for outcome in (await self.tx.watch(head, lambda key: False, self._owns)
                            if self.tx.pending else []):
                await self._settle(outcome)
        await self._flush_events()

    async def _prepare(self, head: int) -> None:
        if self.op_stack_chain_id is not None:
            await self._estimate_fee_at_start()
        try:
            await self.liquidator.prepare(head)
        except SendRefused as exc:  # (the key held: its address delegated; a fee over budget)
            log.warning("keeper.preparation_refused", protocol=self.adapter.name,
                        reason=str(exc)[:300],
                        meaning="approvals or deposits were not sent; they are tried again "
                                "with the balances, every few blocks")

    async def act_on_last(self) -> None:
        """Just promoted to leader: act on the last evaluation this replica made as a standby
        (it followed and evaluated every block, and sent nothing), if it is of the head; an
        older one is left to the next block's."""
        last = self._last
        if last is None or last.partial or not self.acting():
            return
        async with self._acting:
            # (checked under the lock: a newer block's scan may have come and acted meanwhile
            # — acting on the older one after it would send plans of a state that is gone, a
            # position's old version among them)
            head = int(await self.pool.request("eth_blockNumber"), 16)
            if self._last is not last or last.block < head or not self.acting():
                return
            log.info("liquidation.acting_on_promotion", protocol=self.adapter.name,
                     block=last.block)
            await self._act_fenced(last)  # (as the scan of that block would have, had it led)

    # --- per scan -------------------------------------------------------------------------

    async def on_scan(self, result: ScanResult) -> None:
        """The scanner's listener. A standby replica (`acting()` False) only follows; a
        write refused by the lease's fence means another replica leads now: this one stops
        at once (`on_fenced`)."""
        if not self.acting():
            if not result.partial:
                self._last = result
                if result.block >= self._standby_balances_due:
                    # (the wallet's gauges on every replica: a standby, or one that led once,
                    # exported its last value for good, and KeeperdLowGas paged on a full
                    # wallet — a by-hand trial)
                    self._standby_balances_due = result.block + BALANCE_EVERY_BLOCKS
                    try:
                        await self.publish_balances(result.block)
                    except (RpcError, RpcUnavailable) as exc:
                        log.info("keeper.balances_unread", protocol=self.adapter.name,
                                 error=str(exc)[:200])
            return
        async with self._acting:
            await self._act_fenced(result)

    async def _act_fenced(self, result: ScanResult) -> None:
        """`_act` (under `_acting`), a refused fence demoting this replica."""
        try:
            await self._act(result)
            if (self._to_trace or self._tracing is not None) and not result.partial:
                await self._trace_reverts()
        except FencedOut as exc:
            log.error("liquidation.fenced_out", protocol=self.adapter.name, error=str(exc),
                      meaning="another replica holds the lease: nothing more is sent here")
            if self.on_fenced is not None:
                self.on_fenced(str(exc))
        finally:
            await self._flush_events()

    async def _act(self, result: ScanResult) -> None:
        await self._act_on(result)
        if not result.partial:
            # (after the block's liquidations: in a Curie cascade the holdings change most
            # blocks, and their write is a fenced transaction — a review)
            await self._record_holdings(result)

    async def _act_on(self, result: ScanResult) -> None:
        view = result.view
        liquidatable = {view.accounts[int(i)] for i in np.flatnonzero(view.health < 1.0)}
        if not liquidatable and not result.partial and self._short_of:
            await self._fund([], result)  # nothing to pay for: the shortfall is over
        if result.partial:
            # Price-exposed accounts only: act at once, settle and bookkeep on the full view.
            self._liquidatable |= liquidatable
        else:
            self._last = result
            self._liquidatable = liquidatable
            native = self.liquidator.native_usd(result.book)
            if native:
                self.native_prices[self.adapter.chain] = native
            if self._unbooked:
                await self._book_settled_at_start(result)
            await self.on_block(result.block)
            # A delegated key's one transaction a block goes to the block's liquidations
            # first: its approvals after them, if the slot is still free (an approval of
            # seized collateral took a crash's slot, and the protocol's turn: a trial).
            # (not for ever: after APPROVALS_WAIT_BLOCKS they go first — a cascade's every
            # block would keep a top-up its liquidations need waiting)
            if result.block >= self._balances_due:
                self._balances_due = result.block + BALANCE_EVERY_BLOCKS
                await self.publish_balances(result.block)
                if not self._allowances_due:
                    self._allowances_deferred = 0
                self._allowances_due = True
            approvals_after = (bool(liquidatable) and self.mode == "liquidate"
                               and self.tx is not None and self.tx.delegated
                               and self._allowances_deferred < APPROVALS_WAIT_BLOCKS)
            if self._allowances_due and approvals_after:
                self._allowances_deferred += 1
            if self._allowances_due and not approvals_after:
                await self._keep_allowances(result)
            await self._housekeep(result)
            await self._keep_balances_warm(result)
        if self._last is None:
            self._last = result
        if not liquidatable:
            if self._unplanned and not result.partial:
                self._tell_unplanned(result, liquidatable, [])
            await self._code_everywhere(result)
            return
        acting = time.perf_counter()
        opportunities = self.liquidator.plan(result, liquidatable)
        self._stages = {**result.stages, "evaluated_ms": _ms(acting - result.seen_at),
                        "plan_ms": _ms(time.perf_counter() - acting)}
        if not result.partial and (len(opportunities) < len(liquidatable) or self._unplanned):
            self._tell_unplanned(result, liquidatable, opportunities)
        if self.mode == "alert-only":
            for o in opportunities:
                self._tell(result.block, o.key.retry(0), "detected")
            return
        await self._consider_all(opportunities, result, await self._base_fee(result.block),
                                 self._native_usd(result))
        if self._allowances_due and not result.partial:
            await self._keep_allowances(result)
        await self._code_everywhere(result)

    async def _code_everywhere(self, result: ScanResult) -> None:
        """The address's code as every endpoint says it, now and then, after the block's
        liquidations (`TxManager.check_code_everywhere`)."""
        if self.tx is not None and not result.partial and self.acting():
            await self.tx.check_code_everywhere(result.block)

    def _in_flight_now(self, block: int
                       ) -> tuple[dict[str, list[sales.Sale]] | None, int | None]:
        """The keeper's sales in flight and the block they were counted at, read together
        (no await between: another protocol's block may read the count again, and a sale
        mined in between was then in neither list — a review); the block is None when the
        count is older than `block` (the turns at "latest" then, as before)."""
        if self.tx is None:
            return None, None
        counted = self.tx.mined_at_block
        if counted is not None and counted < block:
            counted = None
        return self.tx.sales_in_flight(counted), counted

    def _refusal_said(self, key: Hashable, block: int) -> bool:
        """Whether to log a lasting refusal of `key` now (a verification's; a sale the pool
        does not pay for, keyed with its reason): once, then again every
        REFUSAL_RETELL_BLOCKS while it lasts (the same 36 accounts were 432 lines in a
        trial's few minutes; the counter still counts each block's)."""
        said = self._refusals_said.get(key)
        if said is not None and block - said < REFUSAL_RETELL_BLOCKS:
            return False
        if len(self._refusals_said) > 10_000:
            self._refusals_said.clear()
        self._refusals_said[key] = block
        return True

    def _register_sales(self) -> None:
        """Every sale of this protocol's in flight registered as one (`TxManager.sells`),
        its pool read from its signed calldata (`Liquidator.sale_pool`): those resumed at a
        start or put back by a reorg were not, and new sales through their pools were
        simulated without them ahead (a review)."""
        if self.tx is None:
            return
        for key, pending in list(self.tx.pending.items()):
            if self.tx.sells_already(key) or not self._owns(key):
                continue
            pool = self.liquidator.sale_pool(pending.to, pending.data)
            if pool is not None:
                self.tx.sells(key, pool)

    def _tell_unplanned(self, result: ScanResult, liquidatable: set[str],
                        opportunities: list[Opportunity]) -> None:
        """Liquidatable accounts the protocol's own state holds back (a paused reserve, a
        grace period: `Liquidator.unplanned`): counted `held` each block, and logged when
        its reasons change (they were skipped with no word: 16 accounts, $3.1M of debt,
        behind a paused reserve, a by-hand trial)."""
        planned = {o.account for o in opportunities}
        reasons = dict(self.liquidator.unplanned(result, liquidatable, planned)) \
            if liquidatable - planned else {}
        held = sum(reasons.values())
        if held:
            self.metrics.liquidation_funnel.labels(*self.labels, "held").inc(held)
        if set(reasons) != set(self._unplanned):  # (its reasons, not its counts, changed)
            if reasons:
                log.warning("liquidation.held_by_protocol", protocol=self.adapter.name,
                            block=result.block, accounts=held, reasons=reasons,
                            meaning="under water, but the protocol does not let them be "
                            "liquidated now: planned again when it does")
            elif self._unplanned:
                log.info("liquidation.held_by_protocol_over", protocol=self.adapter.name,
                         block=result.block)
        self._unplanned = reasons

    async def _keep_allowances(self, result: ScanResult) -> None:
        """Bounded approvals follow the balances (a top-up approved in turn). A delegated
        key's wait, with nothing read, while its one slot is taken or another protocol's
        turn (they took a protocol's turn, a trial and a review)."""
        tx = self.tx
        if tx is not None and tx.delegated and (
                tx.one_in_flight() is not None
                or tx.slot_turn(self.adapter.name, result.block) is not None):
            self._allowances_due = True
            return
        self._allowances_due = False
        try:
            await self.liquidator.keep_allowances(result.block, result.book)
        except SendRefused as exc:  # (the key held meanwhile, a fee over budget)
            # (a delegated address's one transaction in flight: tried again at the next
            # block, not the next balances — liquidations wait on approvals)
            busy = self.tx is not None and self.tx.one_in_flight() is not None
            if busy:
                self._allowances_due = True
            log.warning("keeper.approval_refused", protocol=self.adapter.name,
                        reason=str(exc)[:300],
                        retry="at the next block" if busy else "with the next balances")
        except (RpcError, RpcUnavailable) as exc:
            # (a read that failed: asked again at the next block — the block's housekeeping
            # and liquidations go on, which an error here used to end for the block)
            self._allowances_due = True
            log.warning("keeper.allowances_unread", protocol=self.adapter.name,
                        error=str(exc)[:300], retry="at the next block")

    async def _consider_all(self, opportunities: list[Opportunity], result: ScanResult,
                            base_fee: int, native_usd: float) -> None:
        """The most profitable first, in waves: simulate a wave in one JSON-RPC batch, sign
        it in nonce order under one journal commit, broadcast it concurrently."""
        stage = self.metrics.liquidation_funnel.labels
        # (the scanner publishes the gate and logs its changes; here it only holds)
        if self.adapter.liquidation_hold(result.book) is not None:
            for o in opportunities:
                self._tell(result.block, o.key.retry(0), "held")
            return
        key_hold = (self.tx.send_hold(result.block)
                    if self.tx is not None and self.mode == "liquidate" else None)
        conflict = key_hold.reason if key_hold is not None else None
        pause = (self.send_pause(result.block)
                 if self.mode == "liquidate" and conflict is None else None)
        if conflict is not None or pause is not None:
            why = "held_key_in_use" if conflict is not None else "held_sending_paused"
            told = [(self._tell(result.block, o.key.retry(0), "held"),
                     self._first(result.block, o.key.retry(0), why)) for o in opportunities]
            # (the key's own trouble, or keeperd's limits: each under its own name; once a
            # block, whichever pass met its opportunities first)
            if any(new_reason for _, new_reason in told):
                log.warning("liquidation.held_key_in_use" if conflict is not None
                            else "liquidation.held_sending_paused",
                            protocol=self.adapter.name, opportunities=len(opportunities),
                            reason=conflict or pause)
            return
        # A delegated address (EIP-7702) has one transaction in flight at a time: the block's
        # liquidations go in one (a KeeperWave wave, or the first alone), once nothing of the
        # key's is in flight; until then they wait, unjournaled, and are planned again.
        # (whether the slot is free, and whose turn it is, is judged once the block's
        # liquidations are known to be worth sending: below, before their simulation)
        one_tx = self.mode == "liquidate" and self.tx is not None and self.tx.delegated
        mark = time.perf_counter()
        gate = (await self.prices.gate(self.adapter.name, result.block)
                if self.prices is not None else None)
        mark = self._stage("gate_ms", mark)
        paused = gate.paused if gate is not None else frozenset()
        hold = gate.hold if gate is not None else None
        fresh: list[Keyed] = []
        # (the positions a breaker's pause or the price watch's hold keeps from the capital
        # stage this pass: their shortfall stands as it was, `_short_while_held`)
        held_back: set[tuple[str, tuple[str, ...]]] = set()
        # The block's keys asked of the journal in one query; a key whose transaction was
        # reverted or dropped is looked at again for its retry key (`_key_for`, rare).
        journaled = await self.journal.get_many([str(o.key.retry(0)) for o in opportunities])
        in_flight = self._positions_in_flight()
        # (a flying key planned as it is now is current: it waits for its own settlement, it
        # is not cancelled — another market or pair of the account waits for it meanwhile)
        current = {o.key.retry(0) for o in opportunities}
        for opp in opportunities:
            key: OpportunityKey | None = opp.key.retry(0)
            flying = in_flight.get(opp.key.account, set())
            if flying and key not in flying:
                # A transaction for this account, tracked again after a restart or a reorg,
                # is in flight under another version of its position or another pair (signed
                # on a chain state that moved; health is the account's, whichever pair): a
                # second liquidation of it now would revert or take what the first takes.
                # The first is cancelled, not replaced with its old amounts; this one is
                # planned once its nonce settles.
                self._tell(result.block, opp.key.retry(0), "skipped_in_flight")
                for old in sorted(flying - self._superseded - current, key=str):
                    self._superseded.add(old)
                    log.info("liquidation.position_in_flight", opportunity=key,
                             in_flight=old, meaning="a transaction for this account is in "
                             "flight under its earlier position: that one is cancelled unless "
                             "mined first, and this one waits for its nonce to settle")
                continue
            entry = journaled.get(str(key))
            if entry is not None and entry.status in (J.REVERTED, J.DROPPED, J.CANCELLED):
                key = await self._key_for(opp.key)
                entry = await self.journal.get(key) if key is not None else None
            if (entry is not None and entry.status == J.DRY_RUN and self.mode != "dry-run"
                    and await self.journal.forget_dry_run(entry.key)):
                # What a dry-run recorded was never sent: liquidate mode sends it now.
                log.info("liquidation.dry_run_record_replaced", opportunity=key)
                entry = None
            if key is None or entry is not None:
                # (once a block, and not for what this block's earlier pass journaled: told
                # as it went)
                if key is None:
                    stage(*self.labels, "skipped_journaled").inc()
                elif not self._told_this_block(result.block, key):
                    self._tell(result.block, key, "skipped_journaled")
                continue
            # The position's health rests on every asset it uses, not only the pair that
            # would be liquidated: one untrusted price and we evaluate, alert, but do not act.
            held = opp.assets & paused
            if held or hold is not None:
                held_back.add((opp.key.account, opp.key.position))
            if held:
                if self._tell(result.block, key, "breaker_paused"):
                    log.info("liquidation.paused_by_breaker", opportunity=key,
                             assets=sorted(held), hold=hold, block=result.block)
                continue
            if hold is not None:  # (the watch's own hold: the block unjudged, the sequencer)
                if self._tell(result.block, key, "held"):
                    log.info("liquidation.held_by_price_watch", opportunity=key, hold=hold)
                continue
            self._tell(result.block, key, "detected")
            if self._decide(opp, key, base_fee, native_usd) is None:
                self._tell(result.block, key, "unprofitable")
                continue
            fresh.append((opp, key))
        mark = self._stage("journal_lookup_ms", mark)
        adjusted = self.liquidator.adjust([o for o, _ in fresh], result.book)
        keyed = [(o, key) for o, (_, key) in zip(adjusted, fresh, strict=True)]
        own, flash = await self._fund(keyed, result, planned={
            (o.key.account, o.key.position) for o in opportunities}, held_back=held_back)
        mark = self._stage("fund_ms", mark)
        chosen = [*((o, k, False) for o, k in own), *((o, k, True) for o, k in flash)]
        gas = self._gas_quote(base_fee, native_usd)
        calls = await self._encode(chosen, result.block, result.book, gas)
        if one_tx and calls and not await self._slot_is_ours(result.block, len(calls)):
            return
        if one_tx:  # (only what one transaction can take is simulated, with some to spare)
            calls = self._fit_one_transaction(calls, result.block)
        self._stage("encode_ms", mark)
        # Every wave's simulation is asked up front (one round trip for the block, not one
        # per wave: later waves used to wait for each earlier wave's simulation, signature
        # and broadcast in turn). Each wave is then journaled and signed as soon as its own
        # simulation is back, in order (its nonces follow the wave before), and broadcast at
        # once, while the next is signed: the node takes a wave's transactions while this
        # process signs the next ones. (A wave's broadcast is not held until the wave
        # before is answered: that was a round trip per wave against a remote node, which
        # queues a nonce that comes early until the ones before it arrive, as it does
        # within one batch.)
        planned = time.perf_counter()
        waves: list[dict[str, float]] = []
        batches = wave_split(calls)
        # (each wave's sales through a pool simulated after the keeper's in flight there
        # and the earlier waves')
        self._register_sales()
        if self.tx is not None and any(c.sells_through for c, _ in calls):
            await self.tx.count_mined_at(result.block, {
                c.sells_through.lower() for c, _ in calls if c.sells_through})
        # (the block those in flight were counted at: the waves' turns are simulated there,
        # whatever the count read since says, with the sales mined after it ahead)
        ahead, counted = self._in_flight_now(result.block)
        sold = sales.sold_before([[c for c, _ in wave] for wave in batches], ahead)
        simulating = [asyncio.ensure_future(self._simulate(wave, result.block, sold[0],
                                                           counted))
                      for wave in batches[:1]]
        sending: list[asyncio.Future[_Sent]] = []
        try:
            if len(batches) > 1:
                # The later waves' simulations a moment after the first's: asked together,
                # the node worked through them all beside the first wave's, which came back
                # that much later. A few turns of the loop then put their requests on the
                # wire before the first wave is signed.
                await asyncio.wait(simulating, timeout=LATER_SIMULATIONS_AFTER_S)
                simulating += [asyncio.ensure_future(self._simulate(wave, result.block,
                                                                    sold[n], counted))
                               for n, wave in enumerate(batches[1:], start=1)]
                for _ in range(WRITE_TURNS):
                    await asyncio.sleep(0)
            gathered: list[tuple[Call, OpportunityKey]] = []
            answers: list[object] = []
            turns = _TurnsOfTheBlock()
            for wave, simulation in zip(batches, simulating, strict=True):
                began = time.perf_counter()
                simulations = await simulation
                ready = time.perf_counter()
                # (simulate_ms: from the block's plan to this wave's answers; waited_ms: how
                # long the wave waited for them after the wave before was signed)
                stages = {"size": len(wave), "simulate_ms": _ms(ready - planned),
                          "waited_ms": _ms(ready - began)}
                waves.append(stages)
                if one_tx:  # (one transaction for the block: signed once every answer is in)
                    gathered += wave
                    answers += simulations
                    if len(gathered) < len(calls):
                        continue
                    wave, simulations = gathered, answers
                to_send = await self._prepare_wave(wave, simulations, result, base_fee,
                                                   native_usd, stages, pause=bool(sending),
                                                   one_tx=one_tx)
                turns.note(wave, simulations, to_send)
                if to_send:
                    # (started outside the wave's journal transaction: its own writes must
                    # not count as part of another wave's)
                    sending.append(asyncio.ensure_future(self._send_wave(
                        to_send, stages, planned)))
            again = turns.again() if self.mode == "liquidate" and not one_tx \
                and self.tx is not None else []
            if again:
                # Sales that failed in turn behind one that passed but was not sent (refused,
                # unprofitable after its fees): simulated again behind what was sent — else
                # the block's largest sale, refused every block, held every later one through
                # its pool for good (a review).
                stages = {"size": len(again), "again": 1.0}
                waves.append(stages)
                assert self.tx is not None
                to_send = await self._prepare_wave(
                    again, await self._simulate(again, result.block,
                                                *self._in_flight_now(result.block)),
                    result, base_fee, native_usd, stages, pause=bool(sending))
                if to_send:
                    sending.append(asyncio.ensure_future(self._send_wave(
                        to_send, stages, planned)))
        except BaseException:
            for task in simulating:  # (a failure ends the block's signing, as it did)
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # (retrieved: the first one raised already)
            raise
        finally:
            # What was signed is journaled: it is broadcast whatever happened since (as it
            # was when each wave was sent before the next was signed). Then the bookkeeping.
            gap = False
            for sent in await asyncio.gather(*sending, return_exceptions=True):
                if isinstance(sent, _Sent):
                    await self._report_sent(sent, result)
                elif not isinstance(sent, asyncio.CancelledError):
                    log.error("liquidation.broadcast_failed", protocol=self.adapter.name,
                              block=result.block, error=f"{type(sent).__name__}: {sent}")
                # A refused nonce leaves a gap, and so may a wave whose broadcast failed
                # altogether: the nonce is asked of the node.
                gap = gap or not isinstance(sent, _Sent) or any(sent.outcomes)
            if gap and self.tx is not None:
                await self.tx.sync_nonce()
        if waves:
            # Where a block's liquidations spend their time (bench/latency.py keeps it).
            # (plan_ms: from the header's arrival to the first simulation asked; stages: its
            # parts, from the header to the evaluated book handed here, then each step)
            log.info("execution.timing", protocol=self.adapter.name, block=result.block,
                     partial=result.partial, plan_ms=_ms(planned - result.seen_at),
                     stages=self._stages, waves=waves)
        # Off the hot path: who beat us to the accounts whose simulation failed.
        checks, self._lost_race_checks = self._lost_race_checks, []
        for opp, checked, block, reason in checks:
            await self._maybe_lost_race(opp, checked, block, reason)

    async def _encode(self, chosen: list[tuple[Opportunity, OpportunityKey, bool]], block: int,
                      book: Any, gas: GasQuote) -> list[tuple[Call, OpportunityKey]]:
        """The calls to send for (opportunity, key, through the flash path); one the
        liquidator cannot make (no swap pool) is counted and left out."""
        if not chosen:
            return []
        encoded = await self.liquidator.calls([(o, f) for o, _, f in chosen], book, gas)
        calls: list[tuple[Call, OpportunityKey]] = []
        for (_, key, _), call in zip(chosen, encoded, strict=True):
            if call is None:
                self._tell(block, key, "no_swap_pool")
                continue
            calls.append((call, key))
        return calls

    def _tell(self, block: int, key: OpportunityKey, stage: str) -> bool:
        """Count `key` at funnel `stage` once a block; True the first time (when the caller
        logs it too). A block's price-exposed pass and its full pass consider the same
        opportunity, each judged afresh (a second endpoint a block behind may have caught
        up): counted and logged per pass, a refusal or a breaker's pause read twice on the
        dashboard and in the log."""
        if not self._first(block, key, stage):
            return False
        self.metrics.liquidation_funnel.labels(*self.labels, stage).inc()
        return True

    def _first(self, block: int, key: OpportunityKey, what: str) -> bool:
        """True the first time this block `key` meets `what` (a stage, or a reason logged
        under a stage several reasons share)."""
        if block != self._told_block:
            if self._told_block >= 0:  # (the block before, whole: what status says)
                self._judged_last = (self._told_block, _not_sent(self._told))
            self._told_block, self._told, self._told_keys = block, set(), set()
        if (key, what) in self._told:
            return False
        self._told.add((key, what))
        self._told_keys.add(key)
        return True

    def not_sent(self) -> tuple[int, dict[str, int]] | None:
        """The last block judged, and how many of its opportunities stopped at each stage
        that sends nothing (none of its passes found them worth sending): for `keeperd
        status`, where a crash's Curie accounts stayed "14 liquidatable" for good with no
        reason said (unprofitable every block: the vault's TWAP behind the crash, a trial)."""
        if self._judged_last is not None:
            return self._judged_last
        return None if self._told_block < 0 else (self._told_block, _not_sent(self._told))

    def _told_this_block(self, block: int, key: OpportunityKey) -> bool:
        """Whether an earlier pass of this block told `key` (sent it, say: journaled now)."""
        return block == self._told_block and key in self._told_keys

    def _stage(self, name: str, since: float) -> float:
        """Times one step of the block's plan (`execution.timing`); the time it ended."""
        now = time.perf_counter()
        self._stages[name] = _ms(now - since)
        return now

    async def _fund(self, items: list[Keyed], result: ScanResult,
                    planned: Collection[tuple[str, Any]] = (),
                    held_back: Collection[tuple[str, Any]] = ()
                    ) -> tuple[list[Keyed], list[Keyed]]:
        """Capital as a stage: (paid from the keeper's balances, sent through the flash-loan
        path). With own capital, what the balances cannot cover is the shortfall — counted,
        published and alerted, never simulated; with `capital: auto` it takes the flash
        path where the protocol has one."""
        flash_path = self.supports_flash
        if self.config.capital == "flash-loan" and flash_path:
            return [], items
        if self.keeper is None:
            return items, []
        assets = sorted({o.need.asset for o, _ in items})
        # What each token's spender may pull (bounded approvals: the balance when last
        # approved), asked beside the balances: USDC sent to the keeper is approved only
        # at the next balances, and until then its liquidations failed their simulations
        # for want of the allowance (Curie's, after a top-up: a by-hand trial).
        spent = self._spenders(assets)
        asked = [_allowance_of(a, self.keeper, spender) for a, spender in spent]
        allowed: list[object] = []
        if not assets:
            own: dict[str, int] | None = {}
            read: dict[str, object] = {}
        else:
            # (asked beside the capital the liquidator reads itself, Curie's margin, or
            # beside the balances: no round trip of their own)
            asking = asyncio.ensure_future(self._read_allowances(asked, result.block))
            try:
                own = await self.liquidator.balances(assets)
                if own is not None:
                    read = dict(own)
                else:
                    # (at the scan's block, the head: asked ahead with its other reads)
                    answers = await call_many(
                        self.pool, [_balance_of(a, self.keeper) for a in assets], result.block)
                    read = dict(zip(assets, answers, strict=True))
                allowed = await asking
            finally:
                if not asking.done():
                    asking.cancel()
                    await asyncio.gather(asking, return_exceptions=True)
        # Less what the key's liquidations in flight will pull (this protocol's and every
        # other's on the chain: one key, one balance — Curie's wallet USDC too): two
        # protocols each allocated the whole balance, and 13 liquidations reverted for want
        # of USDC (a by-hand trial).
        pulls = self.tx.in_flight_pulls(result.block) if self.tx is not None else {}
        balances = {a: max(0, (v if isinstance(v, int) else 0) - pulls.get(a.lower(), 0))
                    for a, v in read.items()}
        behind = self._allowances_behind(balances, spent, allowed, result.block)
        funded, unfunded, short, held, lacking = _allocate_capped(items, balances, behind)
        if held and len(self.pool.voters) > 1:
            # (one endpoint's low allowance would hold these liquidations, and have an
            # approval sent each block: the most any endpoint says at the block counts —
            # asked only when something would wait, of the assets it waits on, within
            # ALLOWANCE_CONFIRM_S: a liquidation path asks no more in the common case)
            waits = {o.need.asset for o, _ in held}
            first = {a: v for (a, _), v in zip(spent, allowed, strict=True)
                     if isinstance(v, int)}  # (those behind read: ints)
            confirm = [(a, s) for a, s in spent if a in behind and a in waits]
            try:
                said = await asyncio.wait_for(by_endpoint(
                    self.pool, [_allowance_of(a, self.keeper, s) for a, s in confirm],
                    result.block), ALLOWANCE_CONFIRM_S)
            except TimeoutError:
                said = []  # (the first's word: they wait a block)
            most: list[object] = [
                max([first[a]] + [other[i] for other in said if isinstance(other[i], int)])
                for i, (a, _) in enumerate(confirm)]
            behind = {**{a: v for a, v in behind.items() if a not in waits},
                      **self._allowances_behind(balances, confirm, most, result.block)}
            funded, unfunded, short, held, lacking = _allocate_capped(items, balances, behind)
        if held:
            self._allowances_due = True
        self._tell_awaiting_approval(result.block, behind, balances, len(held),
                                     {o.need.asset: o.need.symbol for o, _ in items})
        auto = self.config.capital == "auto" and flash_path
        # (`capital: auto` is advice only where the protocol has a capital-free path: Curie
        # has none, and a keeper already on auto does not need telling)
        fix = ((own is not None and self.liquidator.capital_fix(set(short)))
               or "fund the keeper with the debt asset") + (
            ", or set keeper.capital: auto to liquidate through the protocol's capital-free "
            "contract (FlashLiquidator, MorphoLiquidator) when it falls short"
            if flash_path and self.config.capital != "auto" else "")
        self.capital_fix = fix[0].upper() + fix[1:] + "."
        # (a block not funded changes nothing: a position held for an approval, or still
        # planned but not funded this block — paused, held, unjudged — keeps what it was,
        # counted once if it was forgone before; its return to the shortfall is not counted
        # again — a by-hand trial's forgone profit grew by the same positions after a hold)
        considered = {(k.account, k.position) for _, k in items}
        forgone = {(k.account, k.position) for _, k in lacking} | {
            (k.account, k.position) for _, k in held
            if (k.account, k.position) in self._forgone} | {
            p for p in self._forgone if p in planned and p not in considered
        } if not auto else set()
        # (a price-exposed pass plans a subset: what it does not plan is not gone — taken
        # for gone, another market of the account forgone outside the subset absorbed a new
        # one's count for good, a review)
        newly = [lacking[i][0].need for i in newly_forgone(
            [k for _, k in lacking], self._forgone,
            self._forgone if result.partial else planned)] if not auto else []
        self._forgone = (self._forgone | forgone) if result.partial else forgone
        self._forgone_asset = {**{p: a for p, a in self._forgone_asset.items()
                                  if p in self._forgone},
                               **{(k.account, k.position): o.need.asset for o, k in lacking}}
        short = _short_while_held(short, self._full_short, {
            self._forgone_asset[p] for p in held_back
            if p in self._forgone and p in self._forgone_asset})
        if not result.partial:
            self._full_short = short
        publish_shortfall(self.metrics, *self.labels, self._short_of, short,
                          counted=not auto, fix=fix, newly=newly)
        self._short_of = short
        self.capital_shortfall = {} if auto else short
        return (funded, unfunded) if auto else (funded, [])

    async def _read_allowances(self, asked: list[ContractCall], block: int) -> list[object]:
        """What each spender may pull, at `block`; unread (None each) when the read fails:
        no cap then, as before (each call's simulation still judges it)."""
        if not asked:
            return []
        try:
            return list(await call_many(self.pool, asked, block))
        except (RpcError, RpcUnavailable):
            return [None] * len(asked)

    def _spenders(self, assets: Sequence[str]) -> list[tuple[str, str]]:
        """(asset, its spender) of the assets some contract pulls from the keeper's wallet
        in liquidate mode (dry-run simulates with the approvals in place; the flash path
        pulls nothing of it)."""
        if (self.keeper is None or self.mode != "liquidate"
                or self.config.capital == "flash-loan"):
            return []
        return [(a, spender) for a in assets
                if (spender := self.liquidator.spender(a)) is not None]

    def _allowances_behind(self, balances: Mapping[str, int], spent: list[tuple[str, str]],
                           allowed: Sequence[object], block: int) -> dict[str, int]:
        """The assets whose spender may pull less than the balance (a top-up not yet
        approved), each with what it may pull: the allowance less what this protocol's
        transactions in flight will pull through it (another protocol's go through its own
        spender). An allowance unread is not a cap (the simulation still judges each
        call)."""
        behind: dict[str, int] = {}
        mine = (self.tx.in_flight_pulls(block, self.adapter.name) if self.tx is not None
                else {})
        for (asset, _), allowance in zip(spent, allowed, strict=True):
            if not isinstance(allowance, int) or asset not in balances:
                continue
            left = max(0, allowance - mine.get(asset.lower(), 0))
            if left < balances[asset]:
                behind[asset] = left
        return behind

    def _tell_awaiting_approval(self, block: int, behind: Mapping[str, int],
                                balances: Mapping[str, int], held: int,
                                symbols: Mapping[str, str]) -> None:
        """Said when a liquidation first waits on an asset's approval, and once a block it
        holds any (`held` of them, the block's last pass may hold fewer); forgotten once the
        allowance covers the balance."""
        if held:
            for asset in sorted(behind.keys() - self._approval_behind):
                log.info("keeper.allowance_behind", protocol=self.adapter.name,
                         asset=symbols.get(asset, asset), token=asset,
                         allowance=str(behind[asset]), balance=str(balances[asset]),
                         block=block,
                         meaning="the keeper's balance grew past what it approved (a "
                                 "top-up): approved at this block's end; the liquidations "
                                 "only the balance covers wait for it")
            if self._awaiting_told != block:
                self._awaiting_told = block
                log.info("liquidation.awaiting_approval", protocol=self.adapter.name,
                         block=block, liquidations=held,
                         assets=sorted(symbols.get(a, a) for a in behind))
            self._approval_behind |= set(behind)
        self._approval_behind &= set(behind)

    async def _keep_balances_warm(self, result: ScanResult) -> None:
        """The keeper's balance of each token it repays with, read at every block after the
        block's work (off the hot path): the pool then asks them again beside the next head's
        other reads (chain/prefetch.py), and the capital stage finds them waiting instead of
        spending a round trip between the first pass and the simulation."""
        if self.keeper is None or self.mode != "liquidate" or self.config.capital == "flash-loan":
            return
        tokens = self.liquidator.tokens(result.book)
        if tokens:
            # (and what their spenders may pull: asked beside them by the capital stage)
            await call_many(self.pool, [_balance_of(a, self.keeper) for a, _, _ in tokens] + [
                _allowance_of(a, self.keeper, spender)
                for a, spender in self._spenders([a for a, _, _ in tokens])], result.block)

    async def _key_for(self, key: OpportunityKey) -> OpportunityKey | None:
        """The journal key to try this opportunity under: its own, or, after an on-chain
        revert, a retry key (a bounded number of them); None when nothing may be tried."""
        for attempt in range(RETRIES_AFTER_REVERT + 1):
            candidate = key.retry(attempt)
            entry = await self.journal.get(candidate)
            # (a dropped transaction's nonce went to another: it can never be mined, so the
            # opportunity — say, after a reorg took its block — may be tried again; so may a
            # cancelled one, whose cancel was mined in its place: its account recovered, or
            # its position moved on, and the same position under water again was skipped as
            # journaled for good)
            if entry is None or entry.status not in (J.REVERTED, J.DROPPED, J.CANCELLED):
                return candidate  # new, or journaled/in flight/done: the caller skips that
        return None

    async def _simulate(self, wave: list[tuple[Call, OpportunityKey]], block: int,
                        before: Mapping[str, Sequence[sales.Sale]] | None = None,
                        counted: int | None = None) -> list[object]:
        """Each call of the wave as it would be sent: from the keeper, against the latest
        block, with the gas limit the plan sends it with — one `eth_call` each, one batch. A
        revert fails it with its data. (Against "pending", anvil first re-executes its whole
        mempool, which costs more than it tells: our own earlier liquidations never share a
        position with this one.)

        Sales through one swap pool are simulated in turn (execution/sales.py): the calls
        selling through a pool the block sells through already (`before`: the earlier
        waves' sales, by pool) or more than once in this wave go in one `eth_simulateV1`
        block after those sales, in the order they are sent; each is judged by its own
        result there. The block's first sale through a pool is asked alone too, and that
        answer stands for it. The turns run at `counted`, the block the sales in flight were
        counted at (those mined by it are not in `before`), when that is the planned block
        or later; else at "latest", as the calls alone are.

        A call that fails may only be short of gas at the plan's limit — which rarely looks
        like running out of gas: an inner call starved by the 63/64 rule makes the outer one
        revert. So each failure alone is tried again with `eth_estimateGas` (capped at
        SIMULATION_GAS_FACTOR times the plan): it succeeds for a call short of gas, which is
        then sent with what it needs; a real revert fails there too, with its data. (Every
        call was gas-estimated for a while: a binary search of executions per call, which
        tripled the block-to-broadcast latency of a wave — bench/README.md.) A sale in turn
        is not measured alone (alone it would pass where its turn fails). Successes are
        `Simulated`.

        With a second endpoint (`second_opinion`), the same calls go to it beside the first,
        at the planned block and with gas to spare: a success it sees revert is refused
        (`SecondOpinionRefused`)."""
        sender = self.keeper or wave[0][0].target
        overrides = [await self._dry_run_approval(c) for c, _ in wave]
        # The turns at the block the sales in flight were counted at, not "latest": one mined
        # since ran again ahead of the block's sales, its pool's move counted twice (sales
        # priced a third under what they realised; one that then failed dropped out, and the
        # sale behind it passed, then reverted on chain — a trial).
        turn_at = hex(counted) if counted is not None and counted >= block else None
        turns = sales.in_turn([c for c, _ in wave], before or {})
        # (index in the wave -> its turn; the block's first sale through a pool is asked
        # alone as well, and its own answer stands)
        turn_of = {i: t for t in turns for i in t.members if i != t.alone}

        def tx(call: Call, gas: int) -> dict[str, str]:
            return {"from": sender, "to": call.target, "data": "0x" + call.data.hex(),
                    "gas": hex(gas)}

        def ahead(i: int) -> int:
            """The keeper's sales ahead of wave index `i` through its pool."""
            turn = turn_of[i]
            return len(turn.before) + turn.members.index(i)

        def entries(call: Call, gas: int) -> list[dict[str, str]]:
            """The call's part of a simulated block: the protocol's own reads first when
            it is sent only on the chain's word, then the call."""
            reads = [{"from": sender, "to": to, "data": "0x" + data.hex()}
                     for to, data in (call.verification.reads if call.verification else ())]
            return [*reads, tx(call, gas)]

        def request(call: Call, override: dict[str, Any] | None, at: str = "latest",
                    spare: int = 1) -> tuple[str, list[Any]]:
            gas = call.opportunity.gas_limit * spare
            if call.verification is None:
                return "eth_call", [tx(call, gas), at, *([override] if override else [])]
            # The protocol's own reads, then the liquidation, in one simulated block.
            state: dict[str, Any] = {"calls": entries(call, gas)}
            if override:
                state["stateOverrides"] = override
            return "eth_simulateV1", [{"blockStateCalls": [state], "validation": False}, at]

        def turn_request(turn: sales.InTurn, at: str, upto: int | None = None
                         ) -> tuple[tuple[str, list[Any]], dict[int, tuple[int, int]]]:
            """One pool's sales simulated in turn: the sales ahead first, then the wave's in
            order (up to and including wave index `upto`); each member's slice of the
            results. Every call with SIMULATION_GAS_FACTOR times its gas, on both endpoints
            alike (a sale ahead that needs more than its plan is sent with what it needs; a
            member's need is read from its gasUsed, `_in_turn_verdict`), in simulated
            blocks of at most TURN_BLOCK_GAS of limits each (eth_simulateV1 refuses a block
            past the chain's gas limit; the state carries from one to the next). (The flash
            paths have no state override: dry-run's approvals are for a keeper's own
            capital.)"""
            blocks: list[list[dict[str, str]]] = [[]]
            room = TURN_BLOCK_GAS
            done = 0

            def add(part: list[dict[str, str]]) -> tuple[int, int]:
                nonlocal room, done
                gas = sum(int(c.get("gas", "0x0"), 16) for c in part)
                if blocks[-1] and gas > room:
                    blocks.append([])
                    room = TURN_BLOCK_GAS
                blocks[-1].extend(part)
                room -= gas
                done += len(part)
                return done - len(part), done

            for sale in turn.before:
                add([{"from": sender, "to": sale.to, "data": "0x" + sale.data.hex(),
                      "gas": hex(sale.gas * SIMULATION_GAS_FACTOR)}])
            slices: dict[int, tuple[int, int]] = {}
            for i in turn.members:
                call = wave[i][0]
                slices[i] = add(entries(call, call.opportunity.gas_limit
                                        * SIMULATION_GAS_FACTOR))
                if i == upto:
                    break
            return ("eth_simulateV1", [{"blockStateCalls": [{"calls": b} for b in blocks],
                                        "validation": False}, turn_at or at]), slices

        def requests(at: str, spare: int) -> tuple[list[tuple[str, list[Any]]],
                                                   list[dict[int, tuple[int, int]]]]:
            """The wave's requests: each call alone but the sales in turn, then a request
            per turn (with each member's slice)."""
            # (a turn's first sale, asked alone, on the state its turn mates are simulated
            # on: passing alone at "latest" and failing in its turn at the pinned block, the
            # sales behind it were priced as if it sold nothing — a review)
            firsts = {t.alone for t in turns if t.alone is not None}
            asked = [request(c, o, turn_at if turn_at and i in firsts and at == "latest"
                             else at, spare)
                     for i, ((c, _), o) in enumerate(zip(wave, overrides, strict=True))
                     if i not in turn_of]
            slices = []
            for turn in turns:
                ask, members = turn_request(turn, at)
                asked.append(ask)
                slices.append(members)
            return asked, slices

        def per_call(answers: list[Any], slices: list[dict[int, tuple[int, int]]]
                     ) -> list[Any]:
            """The requests' answers, one per call of the wave: a sale in turn gets its own
            results shaped as an `eth_simulateV1` answer of its own, or `InTurnUnavailable`
            when the turn's request failed as a whole (a revert fails a call, not the
            block)."""
            alone = iter(answers[:len(answers) - len(slices)])
            out: list[Any] = [None if i in turn_of else next(alone) for i in range(len(wave))]
            for answer, members in zip(answers[len(answers) - len(slices):], slices,
                                       strict=True):
                for i, (first, last) in members.items():
                    if i in turn_of:
                        out[i] = _in_turn_part(answer, first, last)
            return out

        async def first_batch(asking: list[tuple[str, list[Any]]]) -> list[Any]:
            """The first endpoint's answers; with the turns pinned, from one that has their
            block (a lagging one answered "header not found", and every sale in turn was
            held for the block — a review)."""
            if counted is None or turn_at is None:
                return list(await self.pool.batch(asking))
            return list((await self.pool.batch_at(counted, asking))[1])

        second = self._second_endpoint()
        asked, slices = requests("latest", 1)
        # (an OP Stack chain's fees for each call ride in the same batches)
        fees = self._fee_requests(wave, "latest")
        second_fees: list[Any] | None = None
        if second is None:
            answers = await first_batch([*asked, *fees])
            opinions: list[Any] | None = None
        else:
            second_asked, second_slices = requests(hex(block), SIMULATION_GAS_FACTOR)
            # (held in `asking`, awaited or cancelled below)
            asking = asyncio.create_task(self._second_opinion(second, [
                *second_asked, *self._fee_requests(wave, hex(block))]))
            try:
                answers = await first_batch([*asked, *fees])
                # (once the first has answered, the second gets SECOND_OPINION_GRACE_S more:
                # a hanging one held every liquidation its 10 s request timeout — a trial)
                opinions = await asyncio.wait_for(asyncio.shield(asking),
                                                  SECOND_OPINION_GRACE_S)
            except TimeoutError:
                self._opinion_unavailable(
                    second, f"no answer within {SECOND_OPINION_GRACE_S} s of the first")
                opinions = None
            finally:
                if not asking.done():
                    asking.cancel()
            if opinions is not None:
                opinions, second_fees = (per_call(opinions[:len(second_asked)], second_slices),
                                         opinions[len(second_asked):])
                lost = next((o for o in opinions if isinstance(o, InTurnUnavailable)), None)
                if lost is not None:  # (the first's verdict stands for them: said, counted)
                    self._opinion_unavailable(second, f"sales in turn: {lost}")
        answers, fee_answers = per_call(answers[:len(asked)], slices), answers[len(asked):]

        def judged(i: int, call: Call, answer: Any) -> object:
            if isinstance(answer, Exception):
                return answer
            if i not in turn_of:
                return self._verdict(call, answer) if call.verification is not None \
                    else Simulated(None, sold=seller_returned(answer) if call.flash else None)
            measured = _in_turn_verdict(answer, ahead(i), turn_of[i].pool,
                                        call.opportunity.gas_limit)
            if call.verification is None or not isinstance(measured, Simulated):
                return measured
            verdict = self._verdict(call, answer)  # (and what it needs, measured in turn)
            return (replace(verdict, gas_needed=measured.gas_needed)
                    if isinstance(verdict, Simulated) else verdict)

        out: list[object] = [judged(i, c, a)
                             for i, ((c, _), a) in enumerate(zip(wave, answers, strict=True))]
        # (a liquidation under verification is not measured for gas: it is sent only as the
        # chain simulated it; nor is a sale in turn)
        short = [i for i, a in enumerate(out) if isinstance(a, RpcError)
                 and wave[i][0].verification is None and i not in turn_of]
        if short:
            # (a sale's return, what it kept, is read at the same gas in the same batch:
            # eth_estimateGas returns none, and a large sale went out priced by the
            # slippage estimate at twice what it realised)
            sells = [i for i in short if wave[i][0].flash]
            answered = await self.pool.batch([(method, [tx(
                wave[i][0], wave[i][0].opportunity.gas_limit * SIMULATION_GAS_FACTOR),
                "latest", *([overrides[i]] if overrides[i] else [])])
                for method, indices in (("eth_estimateGas", short), ("eth_call", sells))
                for i in indices])
            sold = dict(zip(sells, answered[len(short):], strict=True))
            for i, estimate in zip(short, answered[:len(short)], strict=True):
                out[i] = (Simulated(int(estimate, 16), sold=seller_returned(sold.get(i)))
                          if isinstance(estimate, str) else estimate)
        if opinions is not None and second is not None:
            disputed = {i: reverted for i, opinion in enumerate(opinions)
                        if isinstance(out[i], Simulated)
                        and (reverted := self._reverted(opinion)) is not None}
            if disputed:
                # Asked again at "latest", as the first was: a plan of an older block (a
                # start's, a promotion's) met the second's state at that block, before the
                # approvals sent since — 11 sound liquidations refused after a restart, a
                # by-hand trial. Refused only when it reverts there too (or says nothing).
                # (a sale in turn: after the sales ahead of it, as the first simulated it —
                # at the block its turn was pinned to, when it was)
                again_asked = [
                    turn_request(turn_of[i], "latest", upto=i)
                    if i in turn_of else (request(wave[i][0], overrides[i], "latest",
                                                  SIMULATION_GAS_FACTOR), None)
                    for i in disputed]
                try:  # (a hanging second holds no wave past its grace: refused then)
                    again = await asyncio.wait_for(self._second_opinion(
                        second, [ask for ask, _ in again_asked]), SECOND_OPINION_GRACE_S)
                except TimeoutError:
                    again = None
                if again is not None:
                    again = [answer if members is None else _in_turn_part(answer, *members[i])
                             for i, answer, (_, members) in zip(disputed, again, again_asked,
                                                                strict=True)]
                for (i, reverted), latest in zip(disputed.items(), again or [None] * len(
                        disputed), strict=True):
                    if again is not None and not isinstance(latest, Exception) \
                            and self._reverted(latest) is None:
                        continue  # (it succeeds there: an answer, not an error it gave)
                    # (both named: which one lies is not known here — the refusal named
                    # the second alone, the honest one when the first lied, a trial)
                    first = self.pool.ranked()[0]
                    out[i] = SecondOpinionRefused(
                        f"endpoint {first.name} ({first.safe_url}) simulates it, endpoint "
                        f"{second.name} ({second.safe_url}) sees it revert: {reverted}")
        if fees:
            reading = self._price_fees(out, fee_answers, second_fees)
            # (each figure of two endpoints asked that rests on one: the second gave no
            # answers at all, or not that one)
            lone = reading.lone if second_fees is not None else (
                len(wave) if second is not None else 0)
            if lone:
                self.metrics.liquidation_funnel.labels(
                    *self.labels, "fee_second_opinion_unavailable").inc(lone)
            self._learn_fees(reading, [c.opportunity.gas_limit for c, _ in wave], block)
        return out

    def _learn_fees(self, reading: FeeReading, gas_limits: list[int], block: int) -> None:
        """What the wave's fee reads teach, whatever each call's simulation did: the fee is
        readable (`fee_hold`), and the seller contracts' next profit bar is the median call's
        fee with its headroom. (From every call read, not only those that simulated: a bar
        set too high makes every seller contract's call revert on it, and learnt from those
        alone it never came down. The median: one large call, or one endpoint's high answer,
        does not raise the bar of all the others.)"""
        if reading.operator is None:
            return
        operator = reading.operator
        fees = sorted(l1_fee.with_headroom(fee + operator.fee(gas))
                      for fee, gas in zip(reading.fees, gas_limits, strict=True)
                      if fee is not None)
        if fees:
            self._fee_read_at = block
            self._fee_estimate_wei = fees[len(fees) // 2]

    def _fee_requests(self, wave: list[tuple[Call, OpportunityKey]], at: str
                      ) -> list[tuple[str, list[Any]]]:
        """On an OP Stack chain, the reads of what each call pays beside its gas: its L1
        data fee, then the operator fee's two points (none elsewhere)."""
        if self.op_stack_chain_id is None:
            return []
        return [*(l1_fee.l1_fee_request(self.op_stack_chain_id, c.target, c.data,
                                        c.opportunity.gas_limit, at) for c, _ in wave),
                *l1_fee.operator_fee_requests(at)]

    @staticmethod
    def _price_fees(out: list[object], answers: list[Any], second: list[Any] | None
                    ) -> FeeReading:
        """Each simulated call priced with the chain's fees beside its gas (`answers`, as
        `_fee_requests` asked them); with a second endpoint's answers, the higher fee of the
        two (a low one lets a loss through); when one endpoint's read fails, the other's
        figure. A call whose fee neither gives is not sent (`FeeUnread`). Returns what was
        read, for every call whatever its simulation did."""
        n = len(out)
        lone = 0
        fees: list[int | None] = [None] * n

        def higher(read: Callable[[list[Any]], Any],
                   combine: Callable[[list[Any]], Any] = max, count: bool = True) -> Any:
            """The higher of the endpoints' readings; FeeUnread when none reads."""
            nonlocal lone
            readings: list[Any] = []
            error: l1_fee.FeeUnread | None = None
            for fee_answers in (answers, *([second] if second is not None else [])):
                try:
                    readings.append(read(fee_answers))
                except l1_fee.FeeUnread as exc:
                    error = error or exc
            if not readings:
                assert error is not None
                raise error
            if second is not None and len(readings) == 1 and count:
                lone += 1
            return combine(readings)

        try:
            operator: l1_fee.OperatorFee | l1_fee.FeeUnread = higher(
                lambda a: l1_fee.OperatorFee.from_answers(a[n:]), l1_fee.OperatorFee.highest,
                count=False)
        except l1_fee.FeeUnread as exc:
            operator = exc
        for i, sim in enumerate(out):
            def read_fee(fee_answers: list[Any], i: int = i) -> int:
                return l1_fee.decode_fee(fee_answers[i])

            try:
                fee = higher(read_fee, count=isinstance(sim, Simulated))
            except l1_fee.FeeUnread as exc:
                if isinstance(sim, Simulated):
                    out[i] = exc
                continue
            fees[i] = fee
            if not isinstance(sim, Simulated):
                continue
            out[i] = (operator if isinstance(operator, l1_fee.FeeUnread)
                      else replace(sim, l1_fee_wei=fee, operator_fee=operator))
        return FeeReading(lone, fees, None if isinstance(operator, l1_fee.FeeUnread)
                          else operator)

    async def _estimate_fee_at_start(self) -> None:
        """The seller contracts' first on-chain profit bar (`_fee_estimate_wei`), before any
        liquidation has been priced: what a liquidation-sized call pays now (with headroom)."""
        try:
            fee = await l1_fee.sample_fee(self.pool, self.op_stack_chain_id or 0)
        except l1_fee.FeeUnread as exc:
            log.warning("liquidation.fee_estimate_unread", protocol=self.adapter.name,
                        error=str(exc)[:200], meaning="this chain's GasPriceOracle did not "
                        "answer: a liquidation whose L1 data fee cannot be read when it is "
                        "simulated is not sent (the seller contracts' profit bar leaves the "
                        "fee out until one is priced)")
            return
        self._fee_estimate_wei = l1_fee.with_headroom(fee)

    def _second_endpoint(self) -> Endpoint | None:
        """The endpoint a second opinion comes from: the first healthy one after the one the
        first batch goes to, not behind two others (`RpcPool.second`; None with a single
        endpoint, none such, or `second_opinion: false`: a benched one was asked at every
        liquidation, each waiting for its timeout — a trial)."""
        if not self.config.second_opinion:
            return None
        return self.pool.second()

    async def _second_opinion(self, ep: Endpoint, requests: list[tuple[str, list[Any]]]
                              ) -> list[Any] | None:
        """The second endpoint's answers, or None when it gives none (down, slow, refused
        the batch): counted, and the first endpoint's verdict stands."""
        try:
            return await self.pool.batch_on(ep, requests)
        except Exception as exc:  # (any failure of the second's: its verdict is missing, not
            # the wave's end — a review)
            self._opinion_unavailable(ep, str(exc)[:200])
            return None

    def _opinion_unavailable(self, ep: Endpoint, error: str) -> None:
        """No second opinion for a wave: counted and logged; the first's verdict stands."""
        self.metrics.liquidation_funnel.labels(*self.labels, "second_opinion_unavailable").inc()
        log.info("liquidation.second_opinion_unavailable", endpoint=ep.safe_url, error=error)

    @staticmethod
    def _reverted(opinion: Any) -> str | None:
        """What the second endpoint says when it saw the call revert; None when it saw it
        succeed or could not tell (no block yet, a method it lacks: not a refusal)."""
        if isinstance(opinion, RpcError):
            text = f"{opinion}"
            return text[:300] if "revert" in text.lower() or opinion.code == 3 else None
        if isinstance(opinion, list):  # eth_simulateV1: the liquidation is the last call
            try:
                liquidation = opinion[0]["calls"][-1]
            except (KeyError, IndexError, TypeError):
                return None
            if int(liquidation.get("status", "0x1"), 16) == 0:
                error = liquidation.get("error") or {}
                return f"execution reverted: {error.get('message', '')}"[:300]
        return None

    async def _dry_run_approval(self, call: Call) -> dict[str, Any] | None:
        """In dry-run, the approval liquidate mode would have sent (the keeper's repaid token
        to the call's target) as a state override of the simulation (allowances.py): without
        it every own-capital simulation fails on `transferFrom` and dry-run shows nothing."""
        if self.mode != "dry-run" or self.keeper is None or call.flash:
            return None
        if self._allowances is None:
            self._allowances = AllowanceOverrides(self.pool)
            log.info("dry_run.simulated_as_approved", protocol=self.adapter.name,
                     meaning="dry-run simulates each liquidation with the keeper's approval "
                             "of the repaid token in place (a state override), as liquidate "
                             "mode would after sending its approvals")
        return await self._allowances.override(call.opportunity.need.asset, self.keeper,
                                               call.target)

    @staticmethod
    def _verdict(call: Call, answer: Any) -> Simulated | Exception:
        """An `eth_simulateV1` answer for a call under verification: the liquidation must
        succeed, and the judge (the plug-in's) must find the chain's own reads and the
        simulated outcome good enough to send."""
        assert call.verification is not None
        try:
            results = answer[0]["calls"]
            *reads, liquidation = results
            if len(reads) != len(call.verification.reads):
                raise ValueError(f"{len(results)} results for {len(reads) + 1} calls")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return RpcError("eth_simulateV1", -32603, f"unexpected answer: {exc}")
        if int(liquidation.get("status", "0x0"), 16) != 1:
            error = liquidation.get("error") or {}
            return RpcError("eth_simulateV1", int(error.get("code", 3)),
                            str(error.get("message", "execution reverted")),
                            error.get("data") or liquidation.get("returnData"))
        if not all(int(r.get("status", "0x0"), 16) == 1 for r in reads):
            return VerificationRefused("the protocol's own read failed in the simulation")
        verdict = call.verification.judge(
            [bytes.fromhex(str(r.get("returnData", "0x"))[2:]) for r in reads],
            list(liquidation.get("logs") or []))
        if not verdict.ok:
            return VerificationRefused(verdict.reason)
        return Simulated(None, verdict)

    async def _prepare_wave(self, wave: list[tuple[Call, OpportunityKey]],
                            simulations: list[object], result: ScanResult, base_fee: int,
                            native_usd: float, timing: dict[str, float], *,
                            pause: bool = False, one_tx: bool = False) -> list[_ToSend]:
        """A simulated wave judged, journaled and signed in one commit: what is to be
        broadcast (`_send_wave`). `pause`: let the loop read the answers to the waves
        broadcast meanwhile, between liquidations. `one_tx`: the key may send one
        transaction (its address delegated): the block's liquidations in one KeeperWave
        wave within WAVE_GAS_CAP, or the first alone; the others wait for a later block,
        unjournaled."""
        began = time.perf_counter()
        stage = self.metrics.liquidation_funnel.labels
        to_send: list[_ToSend] = []
        judged: list[_Judged] = []
        # (an OP Stack chain's fees: told once a wave, not once a liquidation a block)
        unread: list[str] = []
        over_fee: list[int] = []
        in_turn_told = False
        if self.op_stack_chain_id is not None:  # (nothing more a liquidation elsewhere)
            priced = [s.fee_beside_gas(c.opportunity.gas_limit) for s, (c, _) in
                      zip(simulations, wave, strict=True) if isinstance(s, Simulated)]
            if priced:
                self.metrics.liquidation_fee_beside_gas.labels(*self.labels).set(
                    max(priced) / 1e18 * native_usd)
        for (call, key), sim in zip(wave, simulations, strict=True):
            opp = call.opportunity
            guard = swap_would_not_pay(sim)
            if guard is not None:
                self._tell(result.block, key, "unprofitable")  # the swap would not pay
                if self._first(result.block, key, "swap_would_not_pay"):
                    # (once a block: a pair too large for its pool alone is planned smaller)
                    smaller = (self.liquidator.sale_too_large(opp, result.block)
                               if guard == "SwapBelowBound" and call.flash
                               and not isinstance(sim, InTurnReverted) else None)
                    # (a sale planned smaller always said; one that only waits, once in a
                    # while: it was a third of a crash's log lines, one sale 30 times in 50
                    # blocks — a trial)
                    if smaller is None and not self._refusal_said(
                            (key, "swap_would_not_pay"), result.block):
                        continue
                    log.info("liquidation.swap_would_not_pay", opportunity=key, guard=guard,
                             **({"bar_fee_beside_gas": l1_fee.fee_text(self._bar_fee_wei)}
                                if self._bar_fee_wei else {}),
                             **({"sales_simulated_ahead": sim.ahead, "swap_pool": sim.pool,
                                 "meaning": "simulated after the keeper's other sales through "
                                 "the same pool this block (and those in flight), it would "
                                 "pay too little: planned again next block"}
                                if isinstance(sim, InTurnReverted) else
                                {"meaning": "the pool pays less than the bound for this sale "
                                 "alone (its depth, or its price below the oracle's): "
                                 + ("planned at half this size from the next block"
                                    if smaller is not None else
                                    "planned again each block at this size")}
                                if guard == "SwapBelowBound" else {}),
                             **({"planned_size": smaller} if smaller is not None else {}))
                continue
            if isinstance(sim, SecondOpinionRefused):
                self._refused_blocks[result.block] = str(sim)
                if self._tell(result.block, key, "second_opinion_refused"):
                    log.warning("liquidation.second_opinion_refused", opportunity=key,
                                reason=str(sim), meaning="the endpoints disagree on this "
                                "liquidation; one of them lies or lags: not sent")
                continue
            if isinstance(sim, InTurnUnavailable):
                # (once a wave: the endpoint's answer is the same for every sale in turn)
                if self._tell(result.block, key, "held") and not in_turn_told:
                    in_turn_told = True
                    log.warning("liquidation.sale_in_turn_unsimulated", opportunity=key,
                                error=str(sim), meaning="this block sells through the same "
                                "swap pool before it; simulated alone it would pass where it "
                                "may revert once the earlier sales have moved the pool, and "
                                "the endpoint did not simulate them in turn (eth_simulateV1): "
                                "held for a later block")
                continue
            if isinstance(sim, VerificationRefused):
                if self._tell(result.block, key, "verification_refused"):
                    self.metrics.liquidations_verified.labels(*self.labels, "refused").inc()
                    if self._refusal_said(key, result.block):
                        log.info("liquidation.verification_refused", opportunity=key,
                                 reason=str(sim))
                continue
            if isinstance(sim, l1_fee.FeeUnread):
                # (a run of unread blocks: one long past, or a read since, starts anew)
                run = self._fee_unread
                since = (run[0] if run is not None and run[1] >= result.block
                         - FEE_UNREAD_HOLD_BLOCKS and self._fee_read_at < run[0]
                         else result.block)
                self._fee_unread = (since, result.block)
                if self._tell(result.block, key, "fee_unread"):  # (logged as counted)
                    unread.append(str(sim))
                continue
            if isinstance(sim, RpcError | RpcUnavailable):
                if self._tell(result.block, key, "simulation_failed"):
                    # (the revert's own words where its data says them: a node's
                    # eth_simulateV1 said "execution failed" of MustNotLeaveDust, a trial)
                    said = (decoded_revert(str(sim.data), self.liquidator.error_names())
                            if isinstance(sim, RpcError) and isinstance(sim.data, str)
                            and len(sim.data) >= 10 else None)
                    log.info("liquidation.simulation_failed", opportunity=key,
                             error=str(sim)[:300], **({"reason": said} if said else {}))
                self._lost_race_checks.append((opp, key, result.block, str(sim)[:200]))
                continue
            self._tell(result.block, key, "simulated_ok")
            needed = sim.gas_needed if isinstance(sim, Simulated) else None
            verdict = sim.verdict if isinstance(sim, Simulated) else None
            if call.flash and isinstance(sim, Simulated) and sim.sold is None \
                    and verdict is None and not self._unpriced_sale_told:
                self._unpriced_sale_told = True  # (once a process: the contract's doing)
                log.warning("liquidation.sale_priced_by_estimate", opportunity=key,
                            contract=call.target,
                            meaning="the seller contract returned nothing from its "
                            "simulation (one deployed before it returned what it kept): "
                            "flash sales are priced by keeper.swap_slippage_bps, which a "
                            "crash's sales can realise a third of; redeploy it (README, "
                            "quick start)")
            if verdict is not None:
                # Priced from what the chain did in the simulation, not from the plan.
                opp = replace(opp, gross_profit_usd=verdict.gross_profit_usd,
                              seized_usd=verdict.seized_usd, repaid_usd=verdict.repaid_usd,
                              detail=f"{opp.detail} verified: {verdict.reason}".strip())
            decision = self._decide(opp, key, base_fee, native_usd, call.flash, needed,
                                    sim if isinstance(sim, Simulated) else None)
            if decision is None and verdict is not None and verdict.gross_profit_usd \
                    < call.opportunity.gross_profit_usd * (1 - LOSS_RATE_SHORT):
                # The chain's own outcome pays less than the plan said, too little to send: a
                # refusal of the verification, not a plan's pricing (192 such were counted
                # unprofitable, nothing logged, on a pool whose changed code paid 9 % less —
                # a trial).
                if self._tell(result.block, key, "verification_refused"):
                    self.metrics.liquidations_verified.labels(*self.labels, "refused").inc()
                    if self._refusal_said(key, result.block):
                        log.info("liquidation.verification_refused", opportunity=key,
                                 reason=f"the simulated outcome does not pay: {verdict.reason}",
                                 planned_profit_usd=round(call.opportunity.gross_profit_usd,
                                                          2),
                                 simulated_profit_usd=round(opp.gross_profit_usd, 2))
                continue
            if decision is None:
                self._tell(result.block, key, "unprofitable")
                # (the fee's doing only if, without it, this decision would have sent it)
                if self.op_stack_chain_id is not None and isinstance(
                        sim, Simulated) and self._decide(
                        opp, key, base_fee, native_usd, call.flash, needed,
                        replace(sim, l1_fee_wei=0, operator_fee=l1_fee.NO_OPERATOR_FEE)
                        ) is not None:
                    over_fee.append(sim.fee_beside_gas(
                        self._gas_limit(opp, needed)))
                continue
            self._tell(result.block, key, "profitable")
            detail = f"gas_limit={decision.gas_limit}" + (
                f" fee_beside_gas_wei={decision.fee_beside_gas_wei}"
                if decision.fee_beside_gas_wei else "") + (f" {opp.detail}" if opp.detail
                                                           else "")
            entry = J.JournalEntry(
                str(key), self.adapter.name, opp.account, opp.collateral, opp.debt, opp.amount,
                decision.net_profit_usd, decision.budget_wei, result.block,
                J.DRY_RUN if self.mode == "dry-run" else J.PLANNED, None, None, detail,
                planned=opp.planned,
                # (what a restart reserves while it is in flight: as `reserve` below)
                pulls=None if call.flash else {opp.need.asset.lower(): opp.need.amount})
            judged.append(_Judged(call, key, opp, decision, entry, verdict is not None))
        if unread:
            log.warning("liquidation.fee_unread", protocol=self.adapter.name,
                        block=result.block, opportunities=len(unread), reason=unread[0],
                        meaning="this chain charges fees beside the gas (the L1 data fee, the "
                        "operator fee) and its GasPriceOracle did not say how much: not sent")
        if over_fee:
            log.info("liquidation.unprofitable_with_fee_beside_gas", protocol=self.adapter.name,
                     block=result.block, opportunities=len(over_fee),
                     fee_beside_gas=l1_fee.fee_text(max(over_fee)),
                     fee_beside_gas_usd=round(max(over_fee) / 1e18 * native_usd, 2),
                     meaning="simulated, but the chain's fees beside the gas (L1 data and "
                     "operator fees, with their headroom) take them below "
                     "keeper.min_profit_usd: not sent")
        if one_tx and judged:
            judged = self._one_transaction(judged, result.block)
        # The wave is journaled in one transaction, a statement for its rows and two for its
        # signed transactions (a round trip each on PostgreSQL), not three per liquidation.
        async with self.journal.transaction():
            inserted = await self.journal.record_many([j.entry for j in judged])
            signing: list[_Judged] = []
            for j in judged:
                if j.entry.key not in inserted:
                    stage(*self.labels, "skipped_journaled").inc()
                elif self.mode == "dry-run" or self.tx is None:
                    stage(*self.labels, "dry_run").inc()
                    if j.verified:  # (it stayed at 0 in dry-run, a by-hand trial)
                        self.metrics.liquidations_verified.labels(*self.labels,
                                                                  "dry_run").inc()
                    log.info("liquidation.dry_run", opportunity=j.key, account=j.opp.account,
                             collateral=j.opp.collateral, debt=j.opp.debt,
                             debt_to_cover=str(j.opp.amount),
                             expected_profit_usd=round(j.decision.net_profit_usd, 2))
                else:
                    signing.append(j)
            if signing:
                assert self.tx is not None
                prepared = await self._sign_wave(signing, result.block, base_fee, pause)
                for j, ready in zip(signing, prepared, strict=True):
                    if isinstance(ready, SlotBusy):
                        # (the key's one slot taken meanwhile: as if never planned — not a
                        # drop, which would spend one of its retries)
                        await self.journal.forget_unsigned(j.key)
                        if all(isinstance(r, SendRefused) for r in prepared):
                            self.tx.want_slot(self.adapter.name, result.block)  # (none had it)
                        self._tell(result.block, j.key, "held")
                        continue
                    if isinstance(ready, SendRefused):
                        await self.journal.set_status(j.key, J.DROPPED,
                                                      detail=str(ready)[:500])
                        log.warning("liquidation.not_sent", opportunity=j.key,
                                    reason=str(ready))
                        continue
                    record, pending = ready
                    to_send.append(_ToSend(j.opp, j.key, j.decision, record, pending,
                                           verified=j.verified))
                    if j.call.sells_through:  # (later sales through its pool are
                        # simulated after it until it is mined: `sales_in_flight`)
                        self.tx.sells(pending.key, j.call.sells_through)
                    if not j.call.flash:  # (what it pulls from the keeper's balance, until
                        # mined: another protocol's capital stage, or the next block's, must
                        # not count it again)
                        self.tx.reserve(pending.key, j.opp.need.asset, j.opp.need.amount)
        timing["journal_sign_ms"] = _ms(time.perf_counter() - began)
        if to_send:
            crash_point("journal.signed")  # (the wave is one transaction: before it, nothing)
        return to_send

    async def _slot_is_ours(self, block: int, liquidations: int) -> bool:
        """A delegated key's one transaction (`TxManager.one_in_flight`), for this protocol's
        liquidations worth sending at `block`: free, and its turn (`slot_turn`: the protocols
        on the chain take it in turn). Held otherwise, with a claim on a later turn — made
        only with liquidations to send (a protocol whose positions were dust, paused or
        unfunded took every other turn and sent nothing)."""
        assert self.tx is not None
        turn: str | None = None
        if await self.tx.slot_free_at(block) and (
                turn := self.tx.slot_turn(self.adapter.name, block)) is None:
            self.tx.forget_want(self.adapter.name)  # (its turn: had, whatever it signs)
            return True
        self.tx.want_slot(self.adapter.name, block)
        self.metrics.liquidation_funnel.labels(*self.labels, "held").inc(liquidations)
        if block != self._held_said_at:  # (once a block: its two passes said it twice)
            self._held_said_at = block
            log.info("liquidation.held_one_in_flight", protocol=self.adapter.name, block=block,
                     opportunities=liquidations,
                     reason=str(self.tx.one_in_flight()) if turn is None else
                     f"the key's one transaction of this block is {turn}'s turn (held out of "
                     "it longer)")
        return False

    def _fit_one_transaction(self, calls: list[tuple[Call, OpportunityKey]], block: int
                             ) -> list[tuple[Call, OpportunityKey]]:
        """Of a block's encoded calls (the most profitable first), those the one transaction
        of a delegated key could take, by their planned limits, and a quarter more for those
        that fail their simulation (a KeeperWave wave); ALONE_CANDIDATES for the one
        liquidation under other code. The rest wait for a later block unsimulated: a crash's
        backlog was simulated whole at every block, to send a wave of it."""
        assert self.tx is not None
        if self.tx.runs_wave_executor and block >= self._waves_off_until:
            room, taken = WAVE_GAS_CAP * 5 // 4, len(calls)
            for i, (call, _) in enumerate(calls):
                if room < 0 or i >= MAX_CALLS * 5 // 4:
                    taken = i
                    break
                room -= call.opportunity.gas_limit + 25_000
        else:
            taken = ALONE_CANDIDATES
        if len(calls) > taken:
            self.metrics.liquidation_funnel.labels(*self.labels, "held").inc(
                len(calls) - taken)
        return calls[:taken]

    def _one_transaction(self, judged: list[_Judged], block: int) -> list[_Judged]:
        """What of a block's judged liquidations goes in the one transaction a delegated key
        may have in flight: the most profitable first, as many as a KeeperWave wave takes
        within WAVE_GAS_CAP (EIP-7825's cap on a transaction's gas, 2**24, with room), or
        the first alone when the address runs other code. The rest wait (not journaled:
        planned again at a later block)."""
        assert self.tx is not None
        if self.tx.runs_wave_executor and block >= self._waves_off_until:
            taken: list[_Judged] = []
            calls: list[WaveCall] = []
            for j in judged[:MAX_CALLS]:
                call = WaveCall(j.call.target, j.decision.gas_limit, j.call.data)
                if taken and wave_gas_limit([*calls, call]) > WAVE_GAS_CAP:
                    break
                taken.append(j)
                calls.append(call)
        else:
            taken = judged[:1]
        left = len(judged) - len(taken)
        if left:
            self.metrics.liquidation_funnel.labels(*self.labels, "held").inc(left)
            log.info("liquidation.held_one_in_flight", protocol=self.adapter.name, block=block,
                     opportunities=left, sent=len(taken),
                     reason="the keeper's address is delegated (EIP-7702): one transaction in "
                     "flight at a time" + (", a wave within its gas cap"
                                           if self.tx.runs_wave_executor else ""))
        return taken

    async def _sign_wave(self, signing: list[_Judged], block: int, base_fee: int, pause: bool
                         ) -> list[tuple[TxRecord, Pending] | SendRefused]:
        """Sign a judged wave. From an address that runs KeeperWave, two liquidations or
        more go as one transaction to itself (`execute`, each call with its own limit; the
        wave's budget its members'); otherwise one transaction each. Each liquidation's
        answer: the (shared) signed record, or why it was refused. `pause`: let the loop run
        between signatures (signing computes and the journal does not wait: without a pause
        the node's answers to the waves broadcast meanwhile would be read only once this
        whole wave is signed; the first wave does not pause: nothing of the block is out
        yet)."""
        assert self.tx is not None
        if len(signing) > 1 and self.tx.runs_wave_executor:
            calls = [WaveCall(j.call.target, j.decision.gas_limit, j.call.data)
                     for j in signing]
            wave = WaveKey(self.adapter.name, tuple(j.key for j in signing))
            [ready] = await self.tx.prepare_many(
                [ToSign(wave, self.tx.address, encode_execute(calls, self.tx.address),
                        wave_gas_limit(calls),
                        sum(j.decision.budget_wei for j in signing))],
                block=block, base_fee=base_fee)
            if isinstance(ready, SendRefused):
                log.warning("liquidation.wave_refused", protocol=self.adapter.name,
                            block=block, liquidations=len(signing), reason=str(ready)[:300])
            return [ready] * len(signing)
        return await self.tx.prepare_many(
            [ToSign(j.key, j.call.target, j.call.data, j.decision.gas_limit,
                    j.decision.budget_wei) for j in signing],
            block=block, base_fee=base_fee, pause_every=PAUSE_EVERY if pause else None)

    async def _send_wave(self, to_send: list[_ToSend], timing: dict[str, float],
                         planned: float) -> _Sent:
        """Broadcast a signed wave. What the node answered is reported (`_report_sent`) once
        the block's last wave is out."""
        assert self.tx is not None
        began = time.perf_counter()
        # (a wave sent as one transaction: its members share one record, broadcast once)
        unique = list({id(item.pending): (item.record, item.pending)
                       for item in to_send}.values())
        answers = await self.tx.broadcast_many(unique, resync=False, report=False)
        by_pending = {id(p): answer for (_, p), answer in zip(unique, answers, strict=True)}
        outcomes = [by_pending[id(item.pending)] for item in to_send]
        answered = time.perf_counter()
        timing["broadcast_ms"] = _ms(answered - began)
        timing["sent_ms"] = _ms(answered - planned)  # (from the block's plan)
        return _Sent(to_send, outcomes, answered)

    async def _report_sent(self, sent: _Sent, result: ScanResult) -> None:
        """A broadcast wave's bookkeeping: each liquidation sent is counted and logged, with
        its latency as of the node's answer; each refused one is journaled as dropped."""
        assert self.tx is not None
        elapsed = sent.answered - result.seen_at
        stage = self.metrics.liquidation_funnel.labels
        reported: set[int] = set()
        for item, outcome in zip(sent.items, sent.outcomes, strict=True):
            opp, key, decision, record = item.opp, item.key, item.decision, item.record
            if outcome is not None:
                await self.journal.set_status(key, J.DROPPED, detail=str(outcome)[:500])
                log.warning("liquidation.not_sent", opportunity=key, reason=str(outcome))
                self._event("not_sent", key, opp.account, result.block,
                            {"reason": str(outcome)[:300]})
                continue
            if id(item.pending) not in reported:  # (a wave's: once)
                reported.add(id(item.pending))
                self.tx.report_sent(record, item.pending)
            stage(*self.labels, "sent").inc()
            if item.verified:
                self.metrics.liquidations_verified.labels(*self.labels, "sent").inc()
            self.metrics.block_to_broadcast.labels(*self.labels).observe(elapsed)
            log.info("liquidation.sent", opportunity=key, account=opp.account,
                     block=result.block, tx_hash=record.tx_hash, collateral=opp.collateral,
                     debt=opp.debt, expected_profit_usd=round(decision.net_profit_usd, 2),
                     planned=_as_text(opp.planned),
                     block_to_broadcast_ms=round(elapsed * 1000, 2))
            self._event("sent", key, opp.account, result.block, {
                "tx_hash": record.tx_hash, "collateral": opp.collateral, "debt": opp.debt,
                "expected_profit_usd": round(decision.net_profit_usd, 2),
                "planned": _as_text(opp.planned)})

    async def _record_holdings(self, result: ScanResult) -> None:
        """What the keeper holds in this protocol (`keeper_holdings`), journaled when it
        changes: a start without the protocol is refused while it holds something there
        (`Daemon._check_journal_holdings`)."""
        held = self.liquidator.keeper_holdings(result.book)
        if held is None or held == self._holdings_written:
            return
        try:
            await self.journal.set_holdings(self.adapter.name, held, result.block)
        except FencedOut:
            raise
        except Exception as exc:  # (asked again at the next block: a write's trouble)
            log.warning("journal.holdings_unwritten", protocol=self.adapter.name,
                        error=str(exc)[:200])
            return
        self._holdings_written = dict(held)

    async def _price_trust(self, block: int) -> PriceTrust:
        """The price watch's gate at `block` as a follow-up sees it: Curie's unwinds, bounded
        by the index and mark, wait while their asset's breaker is tripped."""
        gate = (await self.prices.gate(self.adapter.name, block)
                if self.prices is not None else None)
        return PriceTrust() if gate is None else PriceTrust(gate.paused, gate.hold)

    async def _follow_up_try(self, base_key: OpportunityKey, block: int
                             ) -> OpportunityKey | None:
        """The key a follow-up goes under this block (`base_key`'s next try), or None: one
        in hand (journaled and not ended unmined or reverted: in flight, or included), or
        given up (its retries reverted, or too many tries ended unmined)."""
        key = None
        failed: list[str] = []
        reverts = 0
        for n in range(UNWIND_TRIES_MAX):
            candidate = base_key.retry(n)
            entry = await self.journal.get(candidate)
            # A try that ended without unwinding — reverted, or never mined (its send
            # refused, its nonce taken, cancelled) — leaves the position held: the next
            # try goes. A drop used to be the end of it: the keeper's position held
            # unhedged for good, with no alert. A try that did unwind after all makes the
            # next one's simulation say so (nothing to unwind): nothing is sent.
            if entry is None or entry.status not in UNWIND_RETRIED:
                key = None if entry is not None else candidate  # journaled: in hand
                break
            failed.append(entry.status if entry.status == J.REVERTED or not entry.detail
                          else f"{entry.status} ({entry.detail[:80]})")
            # (only a revert on chain counts against the retries: a refused send — a fee
            # spike, a node's hiccup — is not the unwind failing, and must not leave it to
            # the operator after three blocks)
            reverts += entry.status == J.REVERTED
            if reverts > RETRIES_AFTER_REVERT:
                break
        if key is None and (reverts > RETRIES_AFTER_REVERT
                            or len(failed) >= UNWIND_TRIES_MAX):
            # (nothing more is sent for it — said every block, so a start after it knows
            # too: the liquidator's hold lives in memory)
            self.liquidator.housekeeping_settled(
                base_key, block, f"its {len(failed)} tries failed: "
                + ", ".join(failed[-6:]), lasting=True)
        return key

    async def _housekeep(self, result: ScanResult) -> None:
        """The liquidator's own follow-ups (Curie: unwinding the positions the keeper took
        over), journaled and signed in one commit like liquidations, so a restart resumes
        rather than repeats them; one that reverted or was never mined (refused, its nonce
        taken, cancelled) is tried again under a retry key."""
        if self.tx is None or self.mode != "liquidate" or self.keeper is None or \
                self.tx.signing_held() is not None or self.tx.unknown_wait(result.block) \
                or self.pool.contested() is not None:
            # (nor while transactions found in the pool at start hold the key: signed above
            # them, an unwind would sit behind the gap they leave if evicted; nor while the
            # head is one endpoint's word: an unwind's price bound is read from its mark and
            # index, its simulation run on it — a review)
            return
        # A delegated key's one slot busy: nothing journaled, asked again at the next block
        # (a follow-up refused for the slot was dropped for good: an unhedged position kept).
        if not await self.tx.slot_free_at(result.block):
            return
        tries: dict[OpportunityKey, OpportunityKey | None] = {}

        async def due(base_key: OpportunityKey) -> bool:
            # (asked by the liquidator before it spends a request on a follow-up — Curie's
            # unwind limit asked every voter endpoint for one in flight, ahead of each
            # block's liquidations — and by the loop below: the journal read once)
            if base_key not in tries:
                tries[base_key] = await self._follow_up_try(base_key, result.block)
            return tries[base_key] is not None

        todo = []
        for base_key, target, data, gas in await self.liquidator.housekeeping(
                result, lambda: self._price_trust(result.block), due):
            if await due(base_key) and (key := tries[base_key]) is not None:
                todo.append((key, target, data, gas))
        if not todo:
            return
        # Simulated as liquidations are: one that would revert now (a block whose price moved
        # its 1000 ticks already) waits for the next block, unjournaled; the others go out
        # with the gas they were measured to need.
        estimates = await self.pool.batch([
            ("eth_estimateGas", [{"from": self.keeper, "to": target, "data": "0x" + data.hex(),
                                  "gas": hex(gas * SIMULATION_GAS_FACTOR)}, "latest"])
            for _, target, data, gas in todo])
        ready = []
        for (key, target, data, gas), estimate in zip(todo, estimates, strict=True):
            if not isinstance(estimate, str):
                log.info("liquidation.housekeeping_deferred", opportunity=key,
                         error=str(estimate)[:300])
                reverted = self._reverted(estimate)
                if reverted is not None:  # (an endpoint's trouble says nothing of the call)
                    self.liquidator.housekeeping_settled(
                        key, result.block, f"its simulation reverted: {reverted}"[:300])
                continue
            self.liquidator.housekeeping_settled(key, result.block, None, simulated=True)
            ready.append((key, target, data,
                          max(gas, int(int(estimate, 16) * self.config.gas_limit_margin))))
        if not ready:
            return
        base_fee = await self._base_fee()
        to_send, keys = [], []
        async with self.journal.transaction():
            for key, target, data, gas in ready:
                budget = gas * self.fees.fees_for(base_fee)[0] * 4  # room for replacements
                await self.journal.record(J.JournalEntry(
                    str(key), self.adapter.name, self.keeper, "", "", 0, 0.0, budget, result.block,
                    J.PLANNED, None, None, "housekeeping"))
                try:
                    to_send.append(await self.tx.prepare(key, target, data, gas, budget,
                                                   block=result.block, base_fee=base_fee))
                    keys.append(key)
                except SlotBusy:  # (one sent for the slot: the rest at a later block)
                    await self.journal.forget_unsigned(key)
                except SendRefused as exc:
                    await self.journal.set_status(key, J.DROPPED, detail=str(exc)[:500])
        for key, (record, _), refused in zip(keys, to_send,
                                             await self.tx.broadcast_many(to_send), strict=True):
            if refused is not None:
                await self.journal.set_status(key, J.DROPPED, detail=str(refused)[:500])
            else:
                log.info("liquidation.housekeeping_sent", opportunity=record.key,
                         tx_hash=record.tx_hash)

    def send_pause(self, block: int, now: float | None = None) -> str | None:
        """Why this protocol's sending is paused by keeperd's own limits, or None: too many
        of its liquidations reverted lately (a lying endpoint can make healthy accounts look
        liquidatable; every send of them burns gas), the last hour's gas reached the cap, or
        the head followed is one endpoint's word against two others (`RpcPool.contested`)."""
        cfg = self.config
        self._reverts = [b for b in self._reverts if b > block - cfg.revert_breaker_blocks]
        self._revert_counted = {tx: b for tx, b in self._revert_counted.items()
                                if b > block - cfg.revert_breaker_blocks}
        reason, kind = None, None
        self._losses = [b for b in self._losses if b > block - cfg.revert_breaker_blocks]
        if len(self._losses) >= cfg.revert_breaker_reverts:
            kind = "losses"
            reason = (f"{len(self._losses)} included liquidations lost money in the last "
                      f"{cfg.revert_breaker_blocks} blocks (last at block {self._losses[-1]}): "
                      "the protocol paid less than keeperd's plan — its rules, a price source "
                      f"or the sale may have changed; sending waits until "
                      f"{cfg.revert_breaker_blocks} blocks pass without one")
        elif len(self._reverts) >= cfg.revert_breaker_reverts:
            kind = "reverts"
            why = (f", the last one: {self._last_revert_reason}"
                   if self._last_revert_reason else "")
            reason = (f"{len(self._reverts)} liquidations reverted on chain in the last "
                      f"{cfg.revert_breaker_blocks} blocks (last at block {self._reverts[-1]}"
                      f"{why}): sending waits until {cfg.revert_breaker_blocks} blocks pass "
                      "without one")
        now = time.time() if now is None else now
        self._gas_spent = [(t, usd) for t, usd in self._gas_spent if t > now - 3600]
        spent = sum(usd for _, usd in self._gas_spent)
        if reason is None and cfg.max_gas_usd_per_hour is not None and \
                spent >= cfg.max_gas_usd_per_hour:
            kind = "gas"
            reason = (f"${spent:,.2f} of gas spent in the last hour, at the "
                      f"max_gas_usd_per_hour cap (${cfg.max_gas_usd_per_hour:,.2f})")
        if reason is None:
            # (one endpoint's head against two that still answer: a liar past a halted
            # chain, followed alone, decided every send — a review)
            reason = self.pool.contested()
            kind = "contested" if reason is not None else None
        # (logged when the kind of pause changes, not its text: a contested head's numbers
        # move every block, and each was an error line — a review)
        if (kind, reason if kind == "reverts" else None) != self._pause_kind:
            if reason:
                log.error("liquidation.sending_paused", protocol=self.adapter.name,
                          reason=reason)
            else:  # (its pause's reason as `paused_for`: said as `reason`, it read as still
                # paused — "sending waits until 50 blocks pass", a by-hand trial)
                log.info("liquidation.sending_resumed", protocol=self.adapter.name,
                         paused_for=self._pause_reason)
            self._pause_kind = (kind, reason if kind == "reverts" else None)
        self._pause_reason = reason
        return reason

    def opinion_hold(self, block: int) -> str | None:
        """Why liquidations keep failing their second opinion: refused in
        OPINION_REFUSED_BLOCKS of the last OPINION_WINDOW_BLOCKS blocks (one endpoint's
        simulations against the other's: one of them lies or lags, and a liquidation was
        missed for good with no alert — a trial); told as sending_paused while it lasts."""
        # (of the last OPINION_WINDOW_BLOCKS: a block with nothing to simulate between
        # two refusals must not end and raise the alert again — a review)
        self._refused_blocks = {b: why for b, why in self._refused_blocks.items()
                                if b > block - OPINION_WINDOW_BLOCKS}
        if len(self._refused_blocks) < OPINION_REFUSED_BLOCKS:
            return None
        last = self._refused_blocks[max(self._refused_blocks)]
        return (f"the second endpoint has refused liquidations the first simulates in "
                f"{len(self._refused_blocks)} of the last {OPINION_WINDOW_BLOCKS} blocks "
                f"({last[:200]}): one of the two "
                "endpoints lies or lags — check both (keeperd_rpc_* metrics) and drop the "
                "wrong one")

    def waves_hold(self, block: int) -> str | None:
        """Why a delegated key sends one liquidation a block instead of its waves (a wave
        mined with no KeeperWave run), while it lasts; told as sending_paused (it was an error
        log only: a crash's throughput cut to one a block, unalerted, a by-hand trial)."""
        if block >= self._waves_off_until or not self._waves_off_why:
            return None
        return self._waves_off_why

    def fee_hold(self, block: int) -> str | None:
        """Why liquidations have not been sent for FEE_UNREAD_HOLD_BLOCKS blocks or more: the
        chain's L1 data fee unread at each of them (none read since), the last one recent.
        Not a pause (the next wave asks again): told as one (alert sending_paused)."""
        if self._fee_unread is None:
            return None
        since, last = self._fee_unread
        if self._fee_read_at >= since:
            return None
        if last - since < FEE_UNREAD_HOLD_BLOCKS or last < block - FEE_UNREAD_HOLD_BLOCKS:
            return None
        return (f"this chain's L1 data fee could not be read from its GasPriceOracle "
                f"({l1_fee.GAS_PRICE_ORACLE}) since block {since}: no liquidation is sent "
                "without it")

    def _is_housekeeping(self, entry: J.JournalEntry) -> bool:
        return keepers_own(entry, self.keeper)

    def _fee_per_gas(self, base_fee: int) -> int:
        return self.fees.fees_for(base_fee)[0]

    def _decide(self, opp: Opportunity, key: OpportunityKey, base_fee: int, native_usd: float,
                flash: bool | None = None, gas_needed: int | None = None,
                simulated: Simulated | None = None) -> Decision | None:
        """`simulated`: the chain's fees beside the gas are priced from it (before the
        simulation, an OP Stack chain's are not known yet: the plan's first judgement
        leaves them out, the simulated one counts them)."""
        use_flash = (self.config.capital == "flash-loan" and self.supports_flash
                     if flash is None else flash)
        gas_limit = self._gas_limit(opp, gas_needed)
        return decide(opp, key, gas_limit=gas_limit,
                      fee_per_gas=self._fee_per_gas(base_fee), native_usd=native_usd,
                      min_profit_usd=self.config.min_profit_usd,
                      slippage_bps=self.config.swap_slippage_bps,
                      flash_premium_bps=self.liquidator.flash_premium_bps if use_flash else 0,
                      fee_beside_gas_wei=(simulated.fee_beside_gas(gas_limit)
                                          if simulated is not None else 0),
                      sold_usd=_sold_usd(opp, simulated) if use_flash else None)

    def _gas_quote(self, base_fee: int, native_usd: float) -> GasQuote:
        """What the liquidator encodes the seller contracts' profit bar with: this block's gas
        price, and on an OP Stack chain the fee beside the gas it last learnt."""
        self._bar_fee_wei = self._fee_estimate_wei  # (said when a contract's bar refuses)
        return GasQuote(self._fee_per_gas(base_fee), native_usd, self.config.min_profit_usd,
                        self._fee_estimate_wei)

    def _gas_limit(self, opp: Opportunity, gas_needed: int | None) -> int:
        """The limit a liquidation is sent with: the plan's, or what its simulation measured
        it needs with the margin, whichever is more."""
        return opp.gas_limit if gas_needed is None else max(
            opp.gas_limit, int(gas_needed * self.config.gas_limit_margin))

    # --- per block ------------------------------------------------------------------------

    async def on_block(self, block: int) -> None:
        if self.tx is None:
            return
        await self.tx.check_foreign(block)  # (alerted by the engine's tick: key_conflict)
        for key, seen in list(self._included_ahead.items()):
            if seen <= block:
                del self._included_ahead[key]
                entry = await self.journal.get(key)
                if entry is not None and entry.status == J.INCLUDED:
                    try:
                        await self._recheck_inclusion(
                            entry, seen, block, "the chain reached the block it was seen in")
                    except (RpcError, RpcUnavailable) as exc:
                        # (its receipts unread — every endpoint down or answering junk:
                        # checked again next block, and the block's pass goes on)
                        self._included_ahead[key] = seen
                        log.warning("liquidation.inclusion_unread", opportunity=entry.key,
                                    block=block, error=str(exc)[:200])
        self._superseded &= {k.retry(0) for k in _opportunities(self.tx.pending)}
        # (settled ones are forgotten)
        if not self.tx.pending:
            return
        wanted = {key for key in list(self.tx.pending) if self._owns(key)
                  and await self._still_wanted(key)}
        due = block - self.tx.policy.replace_after_blocks
        for tx_key in wanted:
            pending = self.tx.pending.get(tx_key)
            if isinstance(tx_key, WaveKey) and pending is not None \
                    and pending.sent_block <= due:
                # Replaced now for the liquidations of it that stand: one that no longer does
                # fails inside the replacement, what a cancel would have been — settled as
                # cancelled, not counted as a revert (`_settle`).
                for member in tx_key.members:
                    if not await self._still_wanted(member):
                        self._unwanted_in_waves.add(member)
        for outcome in await self.tx.watch(block, wanted.__contains__, self._owns):
            await self._settle(outcome)

    async def on_reorg(self, ancestor: int, head: int, *, past_window: bool = False) -> None:
        """Blocks after `ancestor` were replaced. A liquidation of ours mined in one of them
        is final only if the new branch has it too: otherwise it is pending again — tracked
        and rebroadcast under its own nonce, settled anew (included on this branch, or dropped
        when its nonce went to another transaction, and then planned again). `past_window`:
        the true ancestor is deeper than the blocks remembered — every recent inclusion in
        the journal is checked, as at a restart (those below the reported ancestor stayed
        included on a chain that did not have them, and their accounts were skipped as
        journaled: a by-hand trial)."""
        if self.tx is None or not self.acting():
            return
        checked: set[OpportunityKey] = set()
        if past_window:  # (within REORG_WATCH_BLOCKS below the oldest block remembered)
            checked = await self._watch_recent_inclusions(
                ancestor, "a reorg deeper than the remembered blocks", head=head)
        for key, block in list(self._recently_included.items()):
            # (past the window, every one watched: the true ancestor is below the reported
            # one, and one detected long ago may have been included lately)
            if (block <= ancestor and not past_window) or key in checked:
                continue
            entry = await self.journal.get(key)
            if entry is None:
                continue
            await self._recheck_inclusion(entry, block, head, f"a reorg to {ancestor}")

    async def _watch_recent_inclusions(self, since: int,
                                       why: str = "a reorg while keeperd was down", *,
                                       head: int | None = None) -> set[OpportunityKey]:
        """An inclusion is final only once buried `REORG_WATCH_BLOCKS` deep. The watch list is
        memory: at start the journal's recent inclusions (within REORG_WATCH_BLOCKS below
        `since`, the head) are checked against the chain (a reorg while keeperd was down may
        have taken them away) and watched again; so after a reorg deeper than the remembered
        blocks (`since`: the oldest of them)."""
        head = since if head is None else head
        checked: set[OpportunityKey] = set()
        for entry in await self.journal.by_status(J.INCLUDED):
            if (entry.protocol == self.adapter.name and not self._is_housekeeping(entry)
                    and entry.detected_block >= since - REORG_WATCH_BLOCKS):
                await self._recheck_inclusion(entry, entry.detected_block, head, why)
                checked.add(entry.opportunity)
        return checked

    async def _recheck_inclusion(self, entry: J.JournalEntry, block: int, head: int,
                                 why: str) -> None:
        """Watch an included liquidation on if the chain has its receipt (maybe in another
        block now); otherwise it is pending again, its signed bytes rebroadcast."""
        assert self.tx is not None
        records = await self.journal.txs(entry.key)
        receipts = [await self.pool.request("eth_getTransactionReceipt", [t.tx_hash])
                    for t in records]
        kept = next((r for r in receipts if r is not None), None)
        place = records[-1].wave_index if records else None
        if kept is not None and place is not None:
            # A wave mined again in another block may have run this call otherwise: included
            # only if it succeeded there too (else pending again, settled anew).
            read = read_wave_logs(kept.get("logs") or [], self.tx.address)
            if read is None or not read.ok(place):
                kept = None
        if kept is not None:  # the chain (the new branch) has it
            # (the pool judged it a receipt: `transaction_receipt`)
            try:
                self._recently_included[entry.opportunity] = int(str(kept["blockNumber"]), 16)
            except (KeyError, TypeError, ValueError):
                self._recently_included[entry.opportunity] = block
            return
        if block > head:
            # keeperd saw it included at a block this chain has not reached: an endpoint
            # behind (the receipt comes with the block), or another chain under the same id
            # (a devnet started again from its state), or a reorg to a branch with fewer
            # blocks. It stays included, nothing is sent, until the head reaches that block
            # (`on_block` checks it again then).
            self._included_ahead[entry.opportunity] = block
            log.warning("liquidation.inclusion_ahead_of_chain", opportunity=entry.key,
                        block=block, head=head, why=why,
                        meaning="the chain's head is behind the block keeperd saw this "
                                "liquidation in (an endpoint behind, a reorg to a shorter "
                                "branch, or another chain: a devnet started again wants a new "
                                "state_dir): checked again when the head reaches it")
            return
        self._recently_included.pop(entry.opportunity, None)
        await self.journal.set_status(entry.key, J.PENDING,
                                      detail=f"block {block} reorganised away")
        await track_again(self.journal, self.tx, entry, head, resend_if=self._still_succeeds,
                          reorged=True)
        self.metrics.liquidation_funnel.labels(*self.labels, "reorged_out").inc()
        log.warning("liquidation.reorged_out", opportunity=entry.key, block=block, why=why,
                    meaning="pending again: rebroadcast under its nonce if its call still "
                            "succeeds, settled on the new branch")

    async def _still_succeeds(self, to: str, data: bytes, gas: int) -> bool:
        """Whether a signed liquidation's call would succeed from the keeper at the head (a
        reorged-out one is sent again only then: on the new branch the position may be
        healthy, and its bytes would revert, every one of them counted by the breaker). An
        endpoint that cannot tell says yes: the bytes were good when signed, and a nonce
        left unsent holds every later one."""
        try:
            answer = await self.pool.request("eth_call", [{
                "from": self.keeper or to, "to": to, "data": "0x" + data.hex(),
                "gas": hex(gas)}, "latest"])
        except RpcError as exc:
            return self._reverted(exc) is None  # (the second opinion's reading of a revert)
        except RpcUnavailable:
            return True
        if self.keeper is not None and to.lower() == self.keeper.lower() \
                and data[:4] == EXECUTE:
            # A wave never reverts for a call that fails inside it: it still succeeds if any
            # of its calls does (`execute` answers which did).
            try:
                return int(str(answer), 16) != 0
            except ValueError:
                return True
        return True

    def _owns(self, key: TxKey) -> bool:
        """This protocol's opportunities and approvals (executors of the other protocols on
        the chain share the transaction manager)."""
        return key.protocol == self.adapter.name

    def _positions_in_flight(self) -> dict[str, set[OpportunityKey]]:
        """This protocol's liquidations in flight that were tracked again from the journal
        (after a restart or a reorg: signed on a chain state that may not be this one's), by
        account (their keys as first tried). Not those sent by this process: one of those
        under another version than the plan's is, all but always, just mined (its receipt
        read at the block's full evaluation; the price-exposed pass comes first), and a
        crash's second liquidation of a half-liquidated position must not wait for that."""
        out: dict[str, set[OpportunityKey]] = {}
        if self.tx is None:
            return out
        for k, p in self.tx.pending.items():
            if p.resumed and self._owns(k):
                for member in _opportunities([k]):
                    out.setdefault(member.account, set()).add(member.retry(0))
        return out

    async def _still_wanted(self, key: TxKey) -> bool:
        if isinstance(key, UpkeepKey):
            return True  # replaced until mined, never cancelled: the next wave may need it
        if isinstance(key, WaveKey):
            # (replaced whole while any of its liquidations stands — one gone fails inside it
            # at its own gas: `on_block`; cancelled when none stands)
            for member in key.members:
                if await self._still_wanted(member):
                    return True
            return False
        if isinstance(key, OpportunityKey) and key.retry(0) in self._superseded:
            return False  # (its position has moved on: cancelled, planned afresh)
        entry = await self.journal.get(key)
        return entry is not None and (entry.account in self._liquidatable
                                      or self._is_housekeeping(entry))

    async def _settle(self, outcome: Outcome) -> None:
        key = outcome.key
        if isinstance(key, UpkeepKey):
            calls = (self.tx.approval_waves.pop(key, None) if self.tx is not None
                     and key.subject == WAVE_SUBJECT else None)
            if outcome.status == "reverted":
                self._upkeep_reverted(key, outcome)
            elif outcome.status == "included" and calls:
                self._wave_approvals_failed(key, outcome, calls)
            return
        if isinstance(key, WaveKey):
            await self._settle_wave(outcome, key)
            return
        crash_point("tx.settled")
        entry = await self.journal.get(key)
        if entry is None:
            return
        if self._is_housekeeping(entry):
            await self._settle_housekeeping(outcome, entry)
            return
        stage = self.metrics.liquidation_funnel.labels
        native_usd = self._native_usd(self._last)
        gas_usd = await self._paid_wei(outcome) / 1e18 * native_usd
        # (no book yet: its profit and gas are booked at the first scan)
        unbooked = self._last is None or (bool(outcome.gas_used) and not native_usd)
        if unbooked and (outcome.status in ("included", "reverted") or outcome.gas_used):
            self._unbooked.append(outcome)  # (a cancel, a wave's drop: their gas paid)
        if outcome.gas_used:
            if not unbooked:
                self.metrics.liquidation_gas_cost.labels(*self.labels).inc(gas_usd)
                self._gas_spent.append((time.time(), gas_usd))
            if outcome.status in ("included", "reverted") and not outcome.wave_size:
                self.liquidator.learn(key, math.ceil(outcome.gas_used * RECEIPT_TO_LIMIT))
            elif outcome.call_gas:  # (a wave's member: its call's own gas, not the share)
                self.liquidator.learn(key, math.ceil(outcome.call_gas * RECEIPT_TO_LIMIT))
        block = _receipt_block(outcome)
        if outcome.status == "included" and block is not None:
            self._recently_included[key] = block
            if block > self._included_pruned_at:
                # (a scan of the whole watch list for each of a crash's liquidations was
                # 0.14 ms each: 0.3 s of the loop in bench/latency.py's 30 rounds, cProfile)
                self._included_pruned_at = block
                for old in [k for k, b in self._recently_included.items()
                            if b < block - REORG_WATCH_BLOCKS]:
                    del self._recently_included[old]
        if outcome.status == "included":
            profit: float | None = None  # (settled at start: booked at the first scan)
            if unbooked:
                await self.journal.set_status(key, J.INCLUDED, detail=f"tx={outcome.tx_hash} "
                                              f"{UNBOOKED_MARK} (settled at start)"
                                              f"{_fee_detail(entry, outcome)}")
            else:
                profit = self._book_profit(outcome, gas_usd, entry.realised_profit_usd)
                await self.journal.set_status(
                    key, J.INCLUDED, detail=f"tx={outcome.tx_hash} profit_usd={profit:.2f} "
                    f"gas_usd={gas_usd:.2f}{_fee_detail(entry, outcome)}",
                    realised_profit_usd=profit)
            stage(*self.labels, "included").inc()
            rounded = None if profit is None else round(profit, 2)
            log.info("liquidation.included", opportunity=key, tx_hash=outcome.tx_hash,
                     realised_profit_usd=rounded, gas_used=outcome.gas_used)
            loss = (self._lost_money(outcome, entry, profit, gas_usd)
                    if profit is not None and entry.realised_profit_usd is None else None)
            if loss is not None:
                self._losses.append(block if block is not None else (
                    self._last.block if self._last is not None else 0))
                log.error("liquidation.lost_money", opportunity=key, tx_hash=outcome.tx_hash,
                          expected_profit_usd=round(entry.expected_profit_usd, 2),
                          realised_profit_usd=rounded, why=loss,
                          meaning="the protocol paid less than keeperd's plan: its rules, a "
                          "price source or the sale may have changed; "
                          f"{self.config.revert_breaker_reverts} of these within "
                          f"{self.config.revert_breaker_blocks} blocks pause sending")
            if profit is not None:  # (settled at start: told once booked, with its profit —
                # it was told at once, its profit null, and never again: a by-hand trial)
                self._tell_included(outcome, key, entry, block, rounded, loss)
            return
        if outcome.status == "reverted":
            stage(*self.labels, "reverted").inc()
            # Counted first (whatever fails below, a revert counts), then taken back if it was
            # a race lost: the revert breaker is for reverts nobody explains (an endpoint that
            # makes healthy accounts look liquidatable). A race lost to another keeper's
            # liquidation mined before ours, after the block we planned on, is the crash's
            # competition: three of them in a cascade paused sending for 50 blocks.
            counted = block if block is not None else (
                self._last.block if self._last is not None else 0)
            if outcome.counts_revert:
                self._reverts.append(counted)
                if outcome.tx_hash:
                    self._revert_counted[outcome.tx_hash] = counted
            await self.journal.set_status(key, J.REVERTED, detail=f"tx={outcome.tx_hash}" + (
                f" {UNBOOKED_MARK} (settled at start)" if unbooked else ""))
            if not unbooked:
                await self._book_gas_only(key, gas_usd, entry.realised_profit_usd)
            log.warning("liquidation.reverted", opportunity=key, tx_hash=outcome.tx_hash)
            self._event("reverted", key, entry.account, block,
                        {"tx_hash": outcome.tx_hash})
            receipt = outcome.receipt or {}
            ours = ((block, int(str(receipt["transactionIndex"]), 16))
                    if block is not None and receipt.get("transactionIndex") else None)
            winner = await self._maybe_lost_race(
                None, key, entry.detected_block, "reverted", entry.account, until=block,
                before=ours, after=entry.detected_block, unbooked=unbooked)
            unwanted = winner is None and key in self._unwanted_in_waves
            if (winner is not None or unwanted) and outcome.counts_revert \
                    and counted in self._reverts:
                self._reverts.remove(counted)
            if winner is None and not unwanted:  # (nobody explains it: why, once the
                self._to_trace.append((outcome, 0))  # block's liquidations are sent)
            if unwanted:
                # Its wave was sent again (replaced) for its other liquidations after this one
                # was no longer wanted: its call failing is what a cancel would have been.
                await self.journal.set_status(
                    key, J.CANCELLED, detail=f"tx={outcome.tx_hash}: its call failed in a "
                    "wave replaced after it was no longer wanted")
            return
        status = J.CANCELLED if outcome.status == "cancelled" else J.DROPPED
        stage(*self.labels, outcome.status).inc()
        await self.journal.set_status(key, status, detail=None if outcome.tx_hash is None
                                      else outcome.tx_hash + (
                                          f" {UNBOOKED_MARK} (settled at start)"
                                          if unbooked and outcome.gas_used else ""))
        if not unbooked and (outcome.gas_used or entry.realised_profit_usd is not None):
            # (a cancel mined: its gas paid; a drop after a reorg took its inclusion away:
            # nothing realised any more)
            await self._book_gas_only(key, gas_usd if outcome.gas_used else 0.0,
                                      entry.realised_profit_usd)
        log.info(f"liquidation.{outcome.status}", opportunity=key)
        if status == J.CANCELLED:
            await self._maybe_lost_race(None, key, entry.detected_block, "cancelled",
                                        entry.account,
                                        unbooked=unbooked and bool(outcome.gas_used))

    async def _settle_housekeeping(self, outcome: Outcome, entry: J.JournalEntry) -> None:
        """A follow-up's settlement (Curie's unwind): its status, and what it realised — its
        own trades' gain or loss (`Liquidator.realised`) less its gas, a revert's or a mined
        cancel's gas alone — booked as a liquidation's is, in the journal and the counters.
        Neither was booked: the P&L showed a takeover's share of the penalty, whatever
        closing the position cost, and none of the unwinds' gas."""
        key = entry.opportunity
        status = {"included": J.INCLUDED, "reverted": J.REVERTED,
                  "cancelled": J.CANCELLED}.get(outcome.status, J.DROPPED)
        native_usd = self._native_usd(self._last)
        gas_usd = await self._paid_wei(outcome) / 1e18 * native_usd
        detail = (f"tx={outcome.tx_hash}" if outcome.tx_hash else
                  "never mined: its nonce went to another transaction")
        realised: float | None = None
        if outcome.gas_used and (self._last is None or not native_usd):
            self._unbooked.append(outcome)  # (booked at the first scan, as a liquidation's)
            detail += f" {UNBOOKED_MARK} (settled at start)"
        elif outcome.gas_used:
            self.metrics.liquidation_gas_cost.labels(*self.labels).inc(gas_usd)
            self._gas_spent.append((time.time(), gas_usd))
            realised = (self._realised_profit(outcome) if status == J.INCLUDED else 0.0) \
                - gas_usd
            self._count(realised, entry.realised_profit_usd)
            detail += f" profit_usd={realised:.2f} gas_usd={gas_usd:.2f}"
        await self.journal.set_status(key, status, detail=detail,
                                      realised_profit_usd=realised)
        (log.info if status == J.INCLUDED else log.warning)(
            "liquidation.housekeeping_settled", opportunity=key, status=outcome.status,
            tx_hash=outcome.tx_hash,
            realised_profit_usd=None if realised is None else round(realised, 2))
        if status in (J.INCLUDED, J.REVERTED):
            self.liquidator.housekeeping_settled(
                key, _receipt_block(outcome) or 0,
                None if status == J.INCLUDED else f"reverted on chain ({outcome.tx_hash})")

    def _wave_approvals_failed(self, key: UpkeepKey, outcome: Outcome,
                               calls: list[tuple[str, int]]) -> None:
        """A wave of approvals mined: each call that failed inside it, read from KeeperWave's
        events, as an approval that reverted on its own (`_upkeep_reverted`): a wave that
        succeeds says nothing of its calls, and a USDT-like token's approval over its
        allowance failed in every top-up's wave, unseen."""
        assert self.tx is not None
        read = read_wave_logs((outcome.receipt or {}).get("logs") or [], self.tx.address)
        if read is None or read.calls != len(calls):
            return  # (not the wave sent: nothing of it trusted)
        for i, (token, amount) in enumerate(calls):
            if i in read.failed:  # (its call ran and failed: one starved of gas says nothing)
                self._upkeep_reverted(UpkeepKey(key.protocol, "approve", token,
                                                f"{amount}@{key.tag.split('@')[-1]}"),
                                      outcome, in_wave=True)

    def _upkeep_reverted(self, key: UpkeepKey, outcome: Outcome, *,
                         in_wave: bool = False) -> None:
        """An approval or a deposit that reverted on chain: said (it went unseen). A token's
        approval of an amount reverted: made through zero from then on, for this run (what
        USDT-like tokens need, which a lying or mistaken simulation said this one did not); a
        zero approval reverted: the token refuses zeros (as BNB does), so none goes first any
        more — either way a revert a top-up at most, not every one. (A wave's approvals fail
        inside a wave that succeeds: read from its events, `_wave_approvals_failed`.)"""
        next_time = "not sent again by this run (a restart tries again)"
        if key.action == "approve" and self.tx is not None and key.subject != WAVE_SUBJECT:
            token = key.subject.lower()
            if key.tag.startswith("0@"):
                self.tx.approval_reverted.discard(token)
                next_time = "the next approvals of this token without a zero first"
            else:
                self.tx.approval_reverted.add(token)
                next_time = "the next approvals of this token through zero first"
        log.warning("keeper.upkeep_reverted", protocol=self.adapter.name, action=key.action,
                    subject=key.subject, tx_hash=outcome.tx_hash, next=next_time,
                    **({"in_wave": True} if in_wave else {}))

    async def _settle_wave(self, outcome: Outcome, key: WaveKey) -> None:
        """A wave's settlement, each liquidation's in the order of its call
        (execution/waves.py)."""
        assert self.tx is not None
        members, read = split_wave(outcome, self.tx.address)
        if outcome.gas_used and l1_fee.receipt_has_operator_fee(outcome.receipt):
            # The operator fee once for the wave (its constant is per transaction), shared out
            # as its gas is.
            whole = await self._paid_wei(replace(outcome, effective_gas_price=0, receipt={
                k: v for k, v in (outcome.receipt or {}).items() if k != "l1Fee"}))
            n = len(members)
            members = [replace(m, receipt={**(m.receipt or {}), OPERATOR_FEE_SHARE:
                                           whole // n + (whole % n if i == 0 else 0)})
                       for i, m in enumerate(members)]
        if outcome.status == "included" and read is None:
            # Mined, yet no KeeperWave ran: the address was not delegated to it when the wave
            # was mined (a lying read of its code, or a revocation since). Its calls were not
            # made: each is dropped (planned again, not a revert), and waves wait.
            block = _receipt_block(outcome) or 0
            self._waves_off_until = block + WAVES_OFF_BLOCKS
            self._waves_off_why = (
                f"a wave of {len(key.members)} liquidations (tx {outcome.tx_hash}) was mined "
                "but the keeper's address ran no KeeperWave (a delegation revoked, or an "
                "endpoint's lying read of its code): none of them was made; no wave until "
                f"block {self._waves_off_until}, one liquidation a block meanwhile — check "
                "`keeperd wave status`")
            log.error("liquidation.wave_not_executed", protocol=self.adapter.name,
                      tx_hash=outcome.tx_hash, liquidations=len(key.members),
                      meaning="the wave was mined but the keeper's address ran no KeeperWave: "
                              "none of its liquidations was made (dropped: planned again); no "
                              f"wave for {WAVES_OFF_BLOCKS} blocks. Check `keeperd wave "
                              "status`")
        elif read is not None:
            log.info("liquidation.wave_settled", protocol=self.adapter.name,
                     tx_hash=outcome.tx_hash, liquidations=len(key.members),
                     succeeded=len(read.succeeded), failed=len(read.failed),
                     starved=len(read.starved), gas_used=outcome.gas_used)
            if read.starved:
                log.error("liquidation.wave_starved", protocol=self.adapter.name,
                          tx_hash=outcome.tx_hash, calls=sorted(read.starved),
                          meaning="the wave's gas limit left calls without their own: a bug "
                                  "in keeperd's wave limit; those liquidations were not made")
        # (only those still pending: a settlement a crash cut short left the others settled,
        # and they are not booked twice)
        pending = {str(k) for k, e in (await self.journal.get_many(
            [str(m.key) for m in members])).items() if e.status == J.PENDING}
        for member in members:
            if str(member.key) in pending:
                await self._settle(member)
            self._unwanted_in_waves.discard(member.key)  # (type: OpportunityKey)

    async def _paid_wei(self, outcome: Outcome) -> int:
        """What a mined transaction cost the keeper: its gas, and what an OP Stack chain
        charged beside it — the receipt's L1 data fee, and an operator fee where the receipt
        says one was charged (asked of the chain's oracle at the receipt's block: its
        formula changed with Jovian; unread, it is left out and logged)."""
        paid = (outcome.gas_used * outcome.effective_gas_price
                + l1_fee.receipt_fee_wei(outcome.receipt))
        share = (outcome.receipt or {}).get(OPERATOR_FEE_SHARE)
        if share is not None:  # (a wave's member: its share of the fee read once for the wave)
            return paid + int(share)
        if outcome.gas_used and l1_fee.receipt_has_operator_fee(outcome.receipt):
            block = _receipt_block(outcome)
            at = hex(block) if block is not None else "latest"
            try:
                answers = await self.pool.batch(l1_fee.operator_fee_requests(at))
                paid += l1_fee.OperatorFee.from_answers(answers).fee(outcome.gas_used)
            except (RpcError, RpcUnavailable, l1_fee.FeeUnread) as exc:
                log.warning("liquidation.operator_fee_unread", tx_hash=outcome.tx_hash,
                            error=str(exc)[:200], meaning="the booked gas cost leaves out "
                            "the operator fee this transaction paid")
        return paid

    def _realised_profit(self, outcome: Outcome) -> float:
        """From our liquidation event: through a seller contract (the flash and callback
        paths), what it sent the beneficiary — the sale's proceeds less the repayment, in the
        debt asset, valued at the event's own repaid price; with the keeper's capital, seized
        minus repaid at the latest prices (the collateral stays with the keeper). Seized
        minus repaid for a contract's liquidation ignored the sale: $52,568 logged of 313,679
        USDC received on a devnet where the pools lagged the oracle, and on mainnet it would
        overstate what slippage took."""
        if outcome.receipt is None:
            return 0.0
        # (beside the event's figure: what the keeper's own trades realised — Curie's unwind
        # is all of it, its takeover's netting against a position held a part)
        return self._event_profit(outcome.receipt) + self.liquidator.realised(outcome.receipt)

    def _tell_included(self, outcome: Outcome, key: OpportunityKey, entry: J.JournalEntry,
                       block: int | None, profit: float | None, loss: str | None = None
                       ) -> None:
        later = self._realised_later(outcome)
        self._event("included", key, entry.account, block, {
            "tx_hash": outcome.tx_hash, "profit_usd": profit, "gas_used": outcome.gas_used,
            "collateral": entry.collateral, "debt": entry.debt,
            **({"realised_later": later} if later else {}),
            **({"lost_money": loss, "expected_profit_usd": round(entry.expected_profit_usd, 2)}
               if loss else {})})

    def _lost_money(self, outcome: Outcome, entry: J.JournalEntry, profit: float,
                    gas_usd: float) -> str | None:
        """Why an included liquidation counts as money lost to the protocol paying less than
        planned, or None: it lost before its gas, and the protocol's own event gave
        LOSS_RATE_SHORT or more less collateral per debt than the plan (`paid_short`: a price
        that moved since the plan changes that rate by its move; a crash's continuing fall
        raises it). Where the plug-in cannot compare (a Curie takeover's funding and
        netting, a collateral priced after a further fall), a loss is the market's, told as
        the inclusion it is, and pauses nothing (a review). A pool linked to changed
        liquidation code lost $254k in 24 included liquidations, each told as an info
        event, nothing paused (a by-hand trial)."""
        gross = profit + gas_usd
        if gross >= 0 or outcome.receipt is None or outcome.lone_receipt:
            return None
        short = self.liquidator.paid_short(outcome.receipt, entry.account, entry.planned)
        if short is None or short < LOSS_RATE_SHORT:
            return None
        return (f"the protocol gave {short:.1%} less collateral per debt repaid than "
                f"keeperd's plan; ${-gross:,.2f} lost before gas")

    def _realised_later(self, outcome: Outcome) -> str | None:
        """Where our liquidation's gain is realised when not in it (its event says so: Perp
        Curie's takeover, realised by the unwind), or None."""
        seen = next(self._seen_in(outcome.receipt or {}), None)
        return seen.realised_later if seen is not None else None

    def _seen_in(self, receipt: dict[str, Any]) -> Iterator[LiquidationSeen]:
        """The receipt's liquidation events of the protocol, decoded, in order."""
        book = self._last.book if self._last is not None else None
        for entry in receipt.get("logs", []):
            seen = self.adapter.decode_liquidation(entry, book)
            if seen is not None:
                yield seen

    def _event_profit(self, receipt: dict[str, Any]) -> float:
        for seen in self._seen_in(receipt):
            if seen.profit_usd is not None:
                return seen.profit_usd
            sold = seller_outcome(receipt, seen.liquidator)
            if sold is not None and sold[0] > 0 and seen.repaid_usd is not None:
                repaid, profit = sold
                return profit / repaid * seen.repaid_usd
            if seen.seized_usd is not None and seen.repaid_usd is not None:
                return seen.seized_usd - seen.repaid_usd
        return 0.0

    async def _maybe_lost_race(self, opp: Opportunity | None, key: OpportunityKey, since_block: int,
                               reason: str, account: str | None = None, *,
                               until: int | None = None, before: tuple[int, int] | None = None,
                               after: int | None = None, unbooked: bool = False
                               ) -> str | None:
        """If someone else's liquidation hit this account since we saw it, record it; the
        winner, or None. `until`: no later than that block; `before`: mined before that
        (block, transaction index), ours that reverted; `after`: in a later block than that
        one (the one planned on, whose state already held what was mined in it); `unbooked`:
        its gas not booked yet (settled at start: the row keeps saying so)."""
        account = opp.account if opp is not None else account
        if account is None:
            return None
        book = self._last.book if self._last is not None else None
        try:
            logs = await self.pool.request("eth_getLogs", [{
                "fromBlock": hex(max(0, since_block - 1)),
                "toBlock": hex(until) if until is not None else "latest",
                **self.adapter.liquidation_logs(book, [account])}])
        except (RpcError, RpcUnavailable):
            return None
        if before is not None or after is not None:
            logs = [e for e in logs if _mined_between(e, after, before)]
        winners = [seen.liquidator for e in logs
                   if (seen := self.adapter.decode_liquidation(e, book)) is not None]
        # Ours: the keeper, and the contracts it liquidates through (the FlashLiquidator, the
        # MorphoLiquidator), which the protocols' events name as the liquidator.
        ours = {self.keeper.lower()} if self.keeper is not None else set()
        ours |= {r.to.lower() for r in self.liquidator.signing_rules() if r.to != "*"}
        others = [w for w in winners if w.lower() not in ours]
        if not others:
            return None
        winner = others[-1]
        if await self.journal.get(key) is None and opp is not None:
            await self.journal.record(J.JournalEntry(
                str(key), self.adapter.name, opp.account, opp.collateral, opp.debt, opp.amount,
                0.0, 0, since_block, J.LOST_RACE, None, winner, reason))
        else:
            await self.journal.set_status(key, J.LOST_RACE, winner=winner, detail=reason + (
                f" {UNBOOKED_MARK} (settled at start)" if unbooked else ""))
        self.metrics.liquidation_funnel.labels(*self.labels, "lost_race").inc()
        log.info("liquidation.lost_race", opportunity=key, account=account, winner=winner)
        self._event("lost_race", key, account, None, {"winner": winner, "reason": reason})
        return winner

    def _event(self, kind: str, key: OpportunityKey, account: str, block: int | None,
               details: dict[str, Any]) -> None:
        if self.events is None:
            return
        try:
            self.events(ExecutionEvent(kind, self.adapter.chain, self.adapter.name, account,
                                       str(key), block, details))
        except Exception as exc:  # alerting must never disturb a liquidation
            log.exception("alerts.event_failed", kind=kind, error=str(exc))

    async def _flush_events(self) -> None:
        if self.events_flush is None:
            return
        try:
            # (the engine marks the outcomes told in the journal in the transaction that
            # writes their notifications: `AlertEngine.commit`)
            await self.events_flush()
        except Exception as exc:  # kept by the engine for its next write
            log.exception("alerts.event_failed", kind="flush", error=str(exc))

    async def _reverts_journaled(self, head: int) -> None:
        """The revert breaker's count, as the journal has it (`reverted_since`): it lived in
        memory, and a restart or a takeover ended a pause at once — a new leader sent four
        liquidations into the cause of the old one's (trial 30). Counted at the block each
        was planned at (its inclusion's is not journaled): a little sooner out of the window
        than as counted live."""
        try:
            rows = await self.journal.reverted_since(
                self.adapter.name, head - self.config.revert_breaker_blocks)
        except Exception as exc:  # (a read of the journal: never a start's end)
            log.warning("liquidation.reverts_unread", protocol=self.adapter.name,
                        error=str(exc)[:200])
            return
        # (what the live count leaves out, left out here too: a follow-up's revert — Curie's
        # unwinds — and one keeperd's own seller refused, its reason traced into the row;
        # counted, three such flash sales paused sending after a restart that the running
        # process had not paused: a review)
        counted = [e for e in rows if counts_as_revert(e, self.keeper)]
        found = [e.detected_block for e in counted]
        self._reverts = found  # (a leader again: what it counted live is journaled too)
        # (the pause's reason too: the last traced one, as the row keeps it — a restart's
        # pause said "reverted" with no why, a by-hand trial)
        self._last_revert_reason = last_traced_reason(counted) or self._last_revert_reason
        if found:
            log.info("liquidation.reverts_journaled", protocol=self.adapter.name,
                     reverts=len(found), since_block=head - self.config.revert_breaker_blocks)

    async def _tell_untold(self) -> None:
        """At a start or a promotion, before anything is settled: the outcomes an earlier run
        journaled and never told (it died before its alerts were written), told now, marked
        `told_late`. Not a follow-up's (Curie's unwinds: no liquidation event), nor one left
        to be booked at the first block (`profit_usd=pending`: told when it is booked)."""
        try:
            untold = await self.journal.untold(self.adapter.name, UNBOOKED_MARK)
        except Exception as exc:  # (a read of the alerts' bookkeeping: never a start's end)
            log.warning("alerts.untold_unread", protocol=self.adapter.name, error=str(exc))
            return
        # (a follow-up is never told: marked so, or its rows came back at every start and,
        # past the query's limit, kept real outcomes out)
        follow_ups = [(e.key, e.status) for e, _ in untold if self._is_housekeeping(e)]
        if follow_ups:
            await self.journal.mark_told(follow_ups)
        untold = [(e, o) for e, o in untold if not self._is_housekeeping(e)]
        for entry, outcome in untold:
            txs = await self.journal.txs(entry.key)
            details: dict[str, Any] = {
                "tx_hash": txs[-1].tx_hash if txs else None, "collateral": entry.collateral,
                "debt": entry.debt, "told_late": "settled by a run that ended before telling"}
            if outcome == "included":
                details["profit_usd"] = entry.realised_profit_usd
            if outcome == "lost_race":
                details["winner"] = entry.winner
            self._event(outcome, entry.opportunity, entry.account, None, details)
        if untold:
            log.info("alerts.told_late", protocol=self.adapter.name, outcomes=len(untold))

    # --- helpers --------------------------------------------------------------------------

    async def declined(self, accounts: Iterable[str]) -> dict[str, float]:
        """Of `accounts` (under water at the last evaluated block), those this keeper's own
        pricing declines for every pair it could liquidate — gas at the head's fees, slippage,
        the bonus, `min_profit_usd` — with the best gross prize on offer: dust no keeper pays
        gas for. One it has no plan for is not among them (missed, not declined)."""
        result = self._last
        if result is None:
            return {}
        base_fee, native = await self._base_fee(), self._native_usd(result)
        out: dict[str, float] = {}
        for account in accounts:
            opportunities = self.liquidator.plan(result, {account})
            if opportunities and all(self._decide(o, o.key, base_fee, native) is None
                                     for o in opportunities):
                out[account] = max(o.gross_profit_usd for o in opportunities)
        return out

    async def _base_fee(self, block: int | None = None) -> int:
        """The base fee of `block`'s header (asked by number: the head's header comes with
        the reads asked ahead at its arrival, chain/prefetch.py), or of the latest."""
        header = await self.pool.request(
            "eth_getBlockByNumber", ["latest" if block is None else hex(block), False])
        if header is None:  # (a node that lost the block since: the latest, as before)
            header = await self.pool.request("eth_getBlockByNumber", ["latest", False])
        return int(header.get("baseFeePerGas", "0x0"), 16)

    def _book_profit(self, outcome: Outcome, gas_usd: float, prior: float | None) -> float:
        """An inclusion's realised profit net of its gas, into the counters (`_count`)."""
        profit = self._realised_profit(outcome) - gas_usd
        self._count(profit, prior)
        return profit

    def _count(self, realised: float, prior: float | None) -> None:
        """A realised figure into the counters, less what its entry held before (`prior`: a
        settlement again after a reorg — the counters only grow, gains and losses apart, and
        their difference must stay the P&L the journal holds, entry by entry)."""
        delta = realised - (prior or 0.0)
        if delta >= 0:
            self.metrics.liquidation_profit.labels(*self.labels).inc(delta)
        else:
            self.metrics.liquidation_loss.labels(*self.labels).inc(-delta)

    async def _trace_reverts(self) -> None:
        """Why the reverts nobody explained reverted (`_revert_reason`), asked in the
        background once a block's liquidations went out — a few a block
        (REVERT_TRACES_PER_BLOCK; the rest at the next blocks) — and put in the log, the
        journal row and the revert breaker's reason at the end of a later block's act, once
        answered. The next block's liquidations never wait for a trace: asked on the act
        path, a slow node held each block's liquidations up to REVERT_TRACE_S behind it."""
        if self._tracing is not None:
            if not self._tracing.done():
                return  # (still asking: what it learns is put down at a later block)
            asking, self._tracing = self._tracing, None
            try:
                answers = asking.result()
            except asyncio.CancelledError:
                answers = []
            except Exception as exc:  # (a bug of its own: said, never the act's end)
                log.error("liquidation.revert_trace_failed", protocol=self.adapter.name,
                          error=f"{type(exc).__name__}: {exc}"[:300])
                answers = []
            await self._put_down_reasons(answers)
        if self._to_trace:
            todo = self._to_trace[:REVERT_TRACES_PER_BLOCK]
            # (the rest at the next blocks, a few dozen at most: reverts are rare, or a
            # breaker paused the protocol, and one reason tells what the others say)
            self._to_trace = self._to_trace[REVERT_TRACES_PER_BLOCK:][:REVERT_TRACES_KEPT]
            self._tracing = asyncio.create_task(self._ask_reasons(todo),
                                                name=f"{self.adapter.name}:revert-traces")

    async def _ask_reasons(self, todo: list[tuple[Outcome, int]]
                           ) -> list[tuple[Outcome, int, Any]]:
        """Each revert's reason, in turn: (outcome, times asked before, the reason — None:
        not said; TraceUnanswered: not answered in time; UNASKED: the node was slow, not
        asked this time)."""
        out: list[tuple[Outcome, int, Any]] = []
        for i, (outcome, asked) in enumerate(todo):
            try:
                out.append((outcome, asked, await self._revert_reason(outcome)))
            except TraceUnanswered as exc:
                out.append((outcome, asked, exc))
                # (the node is slow now: the others wait for a later block rather than add
                # to its load)
                out += [(o, n, UNASKED) for o, n in todo[i + 1:]]
                break
            except Exception as exc:  # (a trace that does not read: this one unexplained,
                # the others still asked — one malformed answer lost the whole batch, a review)
                log.info("liquidation.revert_unexplained", opportunity=outcome.key,
                         tx_hash=outcome.tx_hash, error=f"{type(exc).__name__}: {exc}"[:200])
                out.append((outcome, asked, None))
        return out

    async def _put_down_reasons(self, answers: list[tuple[Outcome, int, Any]]) -> None:
        """The answers of `_ask_reasons`: a reason into the journal row, the log and the
        breaker's reason; an unanswered trace asked again later (REVERT_TRACE_TRIES in all);
        one not asked, first at the next asking."""
        unasked = [(o, n) for o, n, why in answers if why is UNASKED]
        self._to_trace[:0] = unasked  # (first, whatever the writes below do)
        for outcome, asked, why in answers:
            if why is UNASKED:
                continue
            if isinstance(why, TraceUnanswered):
                if asked + 1 < REVERT_TRACE_TRIES:
                    self._to_trace.append((outcome, asked + 1))
                else:
                    log.info("liquidation.revert_unexplained", opportunity=outcome.key,
                             tx_hash=outcome.tx_hash, tries=asked + 1, error=str(why)[:200])
                continue
            if why is None or not isinstance(outcome.key, OpportunityKey):
                continue
            counted = self._revert_counted.pop(outcome.tx_hash or "", None)
            if outcome.counts_revert and OWN_GUARDS.search(why):
                # (keeperd's own seller contract refused a sale the pool no longer paid for:
                # the block's earlier liquidations through the same pool moved it, or a
                # sandwich — gas only, and not an endpoint's lie: three flash liquidations
                # through one pool in one block paused 49 sound ones for 50 blocks, a by-hand
                # trial)
                if counted is not None and counted in self._reverts:
                    self._reverts.remove(counted)
            elif outcome.counts_revert:
                self._last_revert_reason = why
            entry = await self.journal.get(outcome.key)
            if entry is not None and entry.status == J.REVERTED:
                # (a revert settled at start and not booked yet keeps saying so)
                unbooked = entry.realised_profit_usd is None and UNBOOKED_MARK in (
                    entry.detail or "")
                await self.journal.set_status(
                    outcome.key, J.REVERTED,
                    detail=f"tx={outcome.tx_hash}{REVERTED_BECAUSE}{why}" + (
                        f" {UNBOOKED_MARK} (settled at start)" if unbooked else ""))
            log.warning("liquidation.revert_reason", opportunity=outcome.key,
                        tx_hash=outcome.tx_hash, reason=why)

    async def close(self) -> None:
        """At the daemon's stop: a trace still asked for is given up (its revert stays
        journaled without its reason)."""
        if self._tracing is not None:
            self._tracing.cancel()
            await asyncio.gather(self._tracing, return_exceptions=True)
            self._tracing = None

    async def _revert_reason(self, outcome: Outcome) -> str | None:
        """Why a liquidation reverted: a wave's member from its own call's failure in the
        wave's events, else from the node's call trace (chain/revert_reason.py) — asked of
        the first endpoint alone, its failure not held against it (providers limit or refuse
        debug_* methods), within REVERT_TRACE_S. None: not said (the trace does not say, or
        the endpoint refuses the method); `TraceUnanswered`: not answered in time, or an
        error that may pass — worth asking again later."""
        errors = self.liquidator.error_names()
        if outcome.wave_size:
            data = outcome.revert_data
            return None if data is None else decoded_revert("0x" + data.hex(), errors)
        voters = self.pool.voters
        if outcome.tx_hash is None or not voters:
            return None
        try:
            trace = await asyncio.wait_for(self.pool.call_endpoint(
                voters[0], "debug_traceTransaction",
                [outcome.tx_hash, {"tracer": "callTracer"}], judged=False), REVERT_TRACE_S)
        except RpcError as exc:
            if exc.code in TRACE_REFUSED_CODES:
                return None  # (a provider without debug_*: asking again changes nothing)
            raise TraceUnanswered(str(exc)) from exc
        except (RpcUnavailable, TimeoutError) as exc:
            raise TraceUnanswered(f"{type(exc).__name__}: {exc}") from exc
        return reason_of(trace, errors)

    async def _book_gas_only(self, key: OpportunityKey, gas_usd: float,
                             prior: float | None) -> None:
        """A liquidation that gained nothing and paid gas (reverted, a race lost, cancelled):
        its gas is its realised loss, in the journal and the counters — the P&L left it
        out, and read above what the wallet held (a by-hand trial: $2.46 of reverts' gas).
        (No gas, as a drop after a reorg took its inclusion: nothing realised, 0.)"""
        self._count(-gas_usd, prior)
        await self.journal.set_realised(key, -gas_usd)

    async def _unbooked_by_a_run_before(self) -> None:
        """Inclusions, reverts and mined cancels settled at an earlier start that ended before
        its first evaluated block booked them (`profit_usd=pending` in their row): their
        receipts read again, booked at this run's first block (`_book_settled_at_start`). They
        stayed out of the P&L for good (a restart loop before the first block); a revert's
        or a cancel's gas too, until a review of the first fix found it."""
        for entry in await self.journal.unbooked(self.adapter.name, UNBOOKED_MARK, J.INCLUDED,
                                                 J.REVERTED, J.CANCELLED, J.LOST_RACE,
                                                 J.DROPPED):
            try:
                await self._unbooked_again(entry)
            except Exception as exc:  # (a row or an answer that does not read: not booked,
                # said; a start must not fail on it, at every restart)
                log.warning("liquidation.unbooked_not_read", opportunity=entry.key,
                            error=f"{type(exc).__name__}: {exc}"[:300])

    async def _unbooked_again(self, entry: J.JournalEntry) -> None:
        """One row of `_unbooked_by_a_run_before`: its transaction's receipt, if the journal's
        bytes are the keeper's (`reconcile.forged`: a row written by someone else must not
        book another sender's liquidation as ours)."""
        assert self.tx is not None
        key = entry.opportunity
        records = await self.journal.txs(key)
        if not records or any(forged(r, self.tx, records[0].nonce) for r in records):
            return
        # (what its settlement made of the one mined record of its nonce: a race lost is
        # its revert's or its cancel's)
        wanted = {J.INCLUDED: ("included",), J.REVERTED: ("reverted",),
                  J.CANCELLED: ("cancelled",), J.DROPPED: ("dropped",),  # (a wave's share)
                  J.LOST_RACE: ("reverted", "cancelled")}.get(entry.status, ())
        for record in reversed(records):
            receipt = await self.pool.request("eth_getTransactionReceipt",
                                              [record.tx_hash])
            if not is_receipt_of(receipt, record.tx_hash):
                continue
            mined = ("cancelled" if record.kind == "cancel" else
                     "included" if receipt["status"] == "0x1" else "reverted")
            outcome = Outcome(key, mined, record.tx_hash, int(str(receipt["gasUsed"]), 16),
                              int(str(receipt.get("effectiveGasPrice", "0x0")), 16), receipt)
            if record.wave_index is not None:  # (its own share and its own call's logs)
                places = await self.journal.wave_members(record.tx_hash)
                ordered = sorted(places.items(), key=lambda kv: kv[1])
                if [i for _, i in ordered] != list(range(len(ordered))):
                    return  # (not a wave keeperd journaled)
                wave = WaveKey(key.protocol, tuple(OpportunityKey.parse(k)
                                                   for k, _ in ordered))
                members, _ = split_wave(replace(outcome, key=wave), self.tx.address)
                outcome = members[record.wave_index]
            if outcome.status in wanted and outcome.key == key and not any(
                    (o.key, o.tx_hash) == (key, outcome.tx_hash) for o in self._unbooked):
                self._unbooked.append(outcome)
            break

    async def _book_settled_at_start(self, result: ScanResult) -> None:
        """What was settled before any book was evaluated, booked at this first scan: its
        gas at the native token's price, an inclusion's profit from its event at this book's
        prices, net of the gas (the journal's, which `keeperd status` sums, and the
        counters'). Old gas: not in the hourly gas budget. An entry no longer included (a
        reorg since) is left to its new settlement; one that fails to book stays listed."""
        native_usd = self._native_usd(result)
        if not native_usd:
            return
        booked = 0
        for outcome in list(self._unbooked):
            key = outcome.key
            gas_usd = await self._paid_wei(outcome) / 1e18 * native_usd
            entry = (await self.journal.get(key) if isinstance(key, OpportunityKey)
                     else None)
            if not isinstance(key, OpportunityKey) or (outcome.status == "included" and (
                    entry is None or entry.status != J.INCLUDED)):
                self._unbooked.remove(outcome)
                continue
            if outcome.gas_used:
                self.metrics.liquidation_gas_cost.labels(*self.labels).inc(gas_usd)
            prior = entry.realised_profit_usd if entry is not None else None
            if outcome.status == "included":
                profit = self._book_profit(outcome, gas_usd, prior)
                await self.journal.set_status(
                    key, J.INCLUDED,
                    detail=f"tx={outcome.tx_hash} profit_usd={profit:.2f} gas_usd={gas_usd:.2f}"
                    f"{_fee_detail(entry, outcome)}", realised_profit_usd=profit)
                if entry is not None and not self._is_housekeeping(entry):
                    self._tell_included(outcome, key, entry, _receipt_block(outcome),
                                        round(profit, 2))
            elif outcome.gas_used:
                await self._book_gas_only(key, gas_usd, prior)
            self._unbooked.remove(outcome)
            booked += 1
        log.info("liquidation.settled_at_start_booked", protocol=self.adapter.name,
                 booked=booked, native_usd=round(native_usd, 2))

    def _native_usd(self, result: ScanResult | None) -> float:
        own = self.liquidator.native_usd(result.book) if result is not None else None
        return own or self.native_prices.get(self.adapter.chain, 0.0)

    async def publish_balances(self, block: int) -> None:
        """The keeper's native balance and its balances of what it repays with, as gauges
        (once every few blocks)."""
        if self.keeper is None or self._last is None:
            return
        native = int(await self.pool.request("eth_getBalance", [self.keeper, "latest"]), 16)
        self.native_balance = native / 1e18
        self.metrics.keeper_balance.labels(self.adapter.chain, "native").set(native / 1e18)
        tokens = self.liquidator.tokens(self._last.book)
        answers = await call_many(self.pool, [_balance_of(a, self.keeper) for a, _, _ in tokens])
        for (_, symbol, decimals), balance in zip(tokens, answers, strict=True):
            if isinstance(balance, int):
                self.metrics.keeper_balance.labels(self.adapter.chain, symbol).set(
                    balance / 10**decimals)


def _opportunities(keys: Iterable[TxKey]) -> list[OpportunityKey]:
    """The liquidations among transaction keys: a wave's members, or the key itself."""
    out: list[OpportunityKey] = []
    for key in keys:
        if isinstance(key, WaveKey):
            out.extend(key.members)
        elif isinstance(key, OpportunityKey):
            out.append(key)
    return out


def wave_split(calls: list[Any]) -> list[list[Any]]:
    """The block's liquidations, most profitable first, in waves (pure): WAVE, then
    LATER_WAVE each; a block of at most LATER_WAVE in one wave (split, its last ones would
    go out a wave's signing and broadcast later for a first wave ~5 ms sooner; and a crash
    killed at its broadcast leaves the whole block journaled, not a part the restart plans
    again without the rest in its book)."""
    if len(calls) <= LATER_WAVE:
        return [calls] if calls else []
    waves = [calls[:WAVE]]
    waves += [calls[start:start + LATER_WAVE] for start in range(WAVE, len(calls), LATER_WAVE)]
    return waves


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _as_text(planned: Any) -> dict[str, str] | None:
    """Planned token amounts for a log line or an event (as strings: JSON numbers lose them)."""
    return None if planned is None else {k: str(v) for k, v in planned.items()}


def _balance_of(token: str, owner: str) -> ContractCall:
    return ContractCall(token, "balanceOf(address)", ["address"], [owner])


def _allocate_capped(items: list[Keyed], balances: Mapping[str, int],
                     behind: Mapping[str, int]
                     ) -> tuple[list[Keyed], list[Keyed], dict[str, Shortfall], list[Keyed],
                                list[Keyed]]:
    """(funded, unfunded, shortfall, held, lacking) of `items` (pure): funded within each
    asset's balance capped by what its spender may pull (`behind`); of the rest, what the
    balance left over pays for waits for its approval (held: not "fund the keeper", the
    funds are there, nor simulated in vain), and what it does not is the shortfall."""
    funded, unfunded, short = allocate(items, lambda item: item[0].need,
                                       {**balances, **behind})
    if not behind:
        return funded, unfunded, short, [], unfunded
    left = dict(balances)
    for opp, _ in funded:
        left[opp.need.asset] = left.get(opp.need.asset, 0) - opp.need.amount
    held, lacking, short = allocate(unfunded, lambda item: item[0].need,
                                    {a: max(0, v) for a, v in left.items()})
    return funded, unfunded, short, held, lacking


def _allowance_of(token: str, owner: str, spender: str) -> ContractCall:
    return ContractCall(token, "allowance(address,address)", ["address", "address"],
                        [owner, spender])


def _mined_between(entry: Any, after: int | None, before: tuple[int, int] | None) -> bool:
    """Whether a log was mined in a block after `after` and before (block, transaction
    index) `before`; one without its position is not."""
    try:
        where = (int(str(entry["blockNumber"]), 16), int(str(entry["transactionIndex"]), 16))
    except (KeyError, TypeError, ValueError):
        return False
    return (after is None or where[0] > after) and (before is None or where < before)


class TraceUnanswered(Exception):
    """A revert's trace the endpoint did not give this time (slow, busy, unreachable)."""


# JSON-RPC errors that say the endpoint does not serve a method (not found, not supported,
# not allowed by its plan): a trace asked of it again would be refused again.
TRACE_REFUSED_CODES = frozenset({-32601, -32004, -32006})


def _fee_detail(entry: J.JournalEntry | None, outcome: Outcome) -> str:
    """What an included row keeps of an OP Stack chain's fee beside the gas: as priced (the
    planned row's figure) and as paid (the receipt's `l1Fee`); nothing elsewhere."""
    parts = []
    priced = re.search(r"fee_beside_gas_wei=\d+", entry.detail or "") if entry else None
    if priced:
        parts.append(priced[0])
    paid = l1_fee.receipt_fee_wei(outcome.receipt)
    if paid:
        parts.append(f"l1_fee_paid_wei={paid}")
    return "".join(f" {part}" for part in parts)


def _receipt_block(outcome: Outcome) -> int | None:
    if outcome.receipt is None or "blockNumber" not in outcome.receipt:
        return None
    return int(outcome.receipt["blockNumber"], 16)
