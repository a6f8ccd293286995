"""The executor: from a scan result to liquidations sent (or recorded, in dry-run).

For each liquidatable account, most-exposed first: plan the best (collateral, debt) pair
(pure), skip it if the journal already has its key (never twice), price gas and slippage
against the prize, simulate the exact call with eth_call from the keeper's address (a revert
there costs nothing), then journal and send through the transaction manager. Every
block the manager settles, replaces or cancels what is in flight; the outcomes land in the
journal and the metrics. A competitor's LiquidationCall for the same account is recorded as a
lost race, with the winner.

Capital: the keeper's own balance of the debt asset (the pool is approved once per asset).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import structlog
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from keeperd.chain.multicall import encode_call
from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable
from keeperd.config import KeeperConfig
from keeperd.execution import journal as J
from keeperd.execution.capital import Need, Shortfall, allocate, publish_shortfall
from keeperd.execution.reconcile import resume_journal
from keeperd.execution.txmanager import FeePolicy, Outcome, SendRefused, TxManager
from keeperd.metrics import Metrics
from keeperd.oracles.breaker import Breaker
from keeperd.protocols.aave_v3 import abi
from keeperd.protocols.aave_v3.adapter import AaveV3Adapter
from keeperd.protocols.aave_v3.book import MarketState
from keeperd.protocols.aave_v3.liquidation import LiquidationPlan, plan_liquidations
from keeperd.protocols.aave_v3.math import exact_account_data
from keeperd.scanner import ScanResult

log = structlog.get_logger(__name__)

MAX_UINT = 2**256 - 1
# Gas limit of a liquidationCall until receipts teach better (Aave V3 uses 250k-400k).
GAS_DEFAULT = 600_000
# v3.3+: when a liquidation takes the last collateral, the pool burns every other debt of
# the user into the reserve deficit, ~75k gas each (LiquidationLogic); with a margin.
BAD_DEBT_GAS_PER_ASSET = 100_000
# A liquidation that reverted on chain is not the end of its opportunity (interest can turn
# a planned leftover into dust between the snapshot and inclusion): it is planned again, under
# a new key, this many times at most, and simulated first each time.
RETRIES_AFTER_REVERT = 2
# Flash-loan path: the amount borrowed is a bound above the planned repayment (the pool takes
# what the rules allow at inclusion, the rest goes back with the loan).
FLASH_BOUND_MARGIN = 1.001
# Liquidations simulated, signed and broadcast together; the most profitable go first.
WAVE = 16


Keyed = tuple[LiquidationPlan, str]  # a plan and its journal key


def liquidation_calldata(plan: LiquidationPlan) -> bytes:
    """liquidationCall with `type(uint256).max`: the pool caps it at what its rules allow at
    inclusion, so a block of interest cannot leave a dust leftover (MustNotLeaveDust)."""
    return encode_call("liquidationCall(address,address,address,uint256,bool)",
                       ["address", "address", "address", "uint256", "bool"],
                       [plan.collateral_asset, plan.debt_asset, plan.account,
                        MAX_UINT, plan.receive_a_token])


def decide(plan: LiquidationPlan, key: str, *, gas_limit: int, fee_per_gas: int,
           native_usd: float, min_profit_usd: float, slippage_bps: int,
           flash_premium_bps: int = 0) -> Decision | None:
    """Send, or not (pure): the prize is the bonus seized less the swap slippage of selling
    it (and the flash-loan premium on what was borrowed); the gas at the fee cap comes off
    that; below `min_profit_usd`, or with no price for gas, nothing is sent. The fee budget of
    what is sent is what keeps it `min_profit_usd` in profit whatever the fee market does."""
    slippage = plan.seized_usd * slippage_bps / 10_000
    prize_usd = plan.gross_profit_usd - slippage - plan.repaid_usd * flash_premium_bps / 10_000
    gas_usd = gas_limit * fee_per_gas / 1e18 * native_usd
    net = prize_usd - gas_usd
    if net < min_profit_usd or native_usd <= 0:
        return None
    budget_wei = int((prize_usd - min_profit_usd) / native_usd * 1e18)
    return Decision(plan, key, net, gas_limit, budget_wei)


def within_virtual_balances(plans: list[Keyed], market: MarketState) -> list[Keyed]:
    """Liquidations of one block that seize the same collateral draw on one reserve's virtual
    balance (v3.1+): once what they take together would exceed it, the rest take aTokens."""
    left = {r.asset: r.virtual_balance for r in market.reserves
            if r.virtual_balance is not None}
    out = []
    for plan, key in plans:
        balance = left.get(plan.collateral_asset)
        if balance is not None and not plan.receive_a_token:
            if plan.collateral_seized > balance:
                plan = replace(plan, receive_a_token=True)
            else:
                left[plan.collateral_asset] = balance - plan.collateral_seized
        out.append((plan, key))
    return out


def flash_amount(plan: LiquidationPlan) -> int:
    """What the flash-loan path borrows: a bound above the planned repayment."""
    return int(plan.debt_to_cover * FLASH_BOUND_MARGIN) + 1


NOT_ENOUGH_PROFIT = "0x" + function_signature_to_4byte_selector(
    "NotEnoughProfit(uint256,uint256)").hex()


@dataclass(frozen=True)
class Call:
    plan: LiquidationPlan
    key: str
    target: str  # the Aave pool, or the FlashLiquidator
    data: bytes
    flash: bool = False  # through the FlashLiquidator (its premium counts against profit)


@dataclass(frozen=True)
class Decision:
    plan: LiquidationPlan
    key: str
    net_profit_usd: float
    gas_limit: int
    budget_wei: int  # the most this liquidation may pay in fees


class Executor:
    def __init__(self, config: KeeperConfig, adapter: AaveV3Adapter, pool: RpcPool,
                 journal: J.Journal, metrics: Metrics, tx: TxManager | None,
                 keeper_address: str | None, breaker: Breaker | None = None) -> None:
        self.config = config
        self.adapter = adapter
        self.pool = pool
        self.journal = journal
        self.metrics = metrics
        self.tx = tx
        self.keeper = keeper_address
        self.breaker = breaker
        self.fees = FeePolicy.from_config(config)
        self.labels = (adapter.chain, adapter.name)
        self._liquidatable: set[str] = set()
        self._last: ScanResult | None = None
        self._gas_used: dict[tuple[str, str], int] = {}
        self._swap_pools: dict[tuple[str, str], str] = {}
        self._flash_premium_bps = 9  # Aave V3's default FLASHLOAN_PREMIUM_TOTAL; read at start
        self._lost_race_checks: list[tuple[LiquidationPlan, str, int, str]] = []
        # Debt assets the keeper's balance fell short of at the last liquidations considered.
        self.capital_shortfall: dict[str, Shortfall] = {}
        # Outcomes for the alert engine: events(kind, account=, opportunity=, block=, details=)
        self.events: Callable[..., None] | None = None
        self.native_balance: float | None = None  # whole tokens, from publish_balances
        for stage in ("detected", "profitable", "sent", "included", "lost_race", "held",
                      "no_capital"):
            metrics.liquidation_funnel.labels(*self.labels, stage)

    @property
    def mode(self) -> str:
        return self.config.mode

    # --- start-up -------------------------------------------------------------------------

    async def start(self, head: int) -> None:
        """Reconcile the journal before anything new is sent; approve the pool once."""
        if self.tx is not None:
            await self.tx.sync_nonce()
            await self._reconcile(head)
            if self.mode == "liquidate" and self.config.capital in ("own-balance", "auto"):
                await self._ensure_approvals(head)
        if self.config.capital in ("flash-loan", "auto") and self.adapter.reader is not None:
            raw = await self.pool.request("eth_call", [{
                "to": self.adapter.reader.addresses.pool,
                "data": "0x" + encode_call("FLASHLOAN_PREMIUM_TOTAL()", [], []).hex()},
                "latest"])
            self._flash_premium_bps = int(raw, 16)

    async def _reconcile(self, head: int) -> None:
        assert self.tx is not None
        await resume_journal(self.journal, self.tx, self.adapter.name, head)
        # Settle at once what was mined while we were down.
        for outcome in (await self.tx.watch(head, lambda key: False, self._owns)
                        if self.tx.pending else []):
            await self._settle(outcome)

    async def _ensure_approvals(self, head: int) -> None:
        assert self.tx is not None and self.keeper is not None
        pool_address = self.adapter.reader.addresses.pool if self.adapter.reader else None
        assert pool_address is not None
        book_market = await self.adapter.read_market(head)
        for reserve in book_market.reserves:
            data = encode_call("allowance(address,address)", ["address", "address"],
                               [self.keeper, pool_address])
            raw = await self.pool.request("eth_call", [{"to": reserve.asset,
                                                        "data": "0x" + data.hex()}, "latest"])
            allowance = int(raw, 16)
            if allowance >= MAX_UINT // 2:
                continue
            # USDT and its kind refuse an approval from a non-zero allowance: reset it first.
            amounts = ([0] if allowance else []) + [MAX_UINT]
            for amount in amounts:
                approve = encode_call("approve(address,uint256)", ["address", "uint256"],
                                      [pool_address, amount])
                record = await self.tx.send(
                    f"approve:{reserve.asset}:{amount}", reserve.asset, approve, 120_000,
                    budget_wei=10**18, block=head)
                self.metrics.tx_sent.labels(self.adapter.chain, "approval").inc()
                log.info("keeper.approval_sent", asset=reserve.symbol, amount=str(amount),
                         tx_hash=record.tx_hash)

    # --- per scan -------------------------------------------------------------------------

    async def on_scan(self, result: ScanResult) -> None:
        view = result.view
        liquidatable = {view.accounts[int(i)] for i in np.flatnonzero(view.health < 1.0)}
        if not liquidatable and not result.partial and self.capital_shortfall:
            await self._fund([], result)  # nothing to pay for: the shortfall is over
        if result.partial:
            # Price-exposed accounts only: act at once, settle and bookkeep on the full view.
            self._liquidatable |= liquidatable
        else:
            self._last = result
            self._liquidatable = liquidatable
            await self.on_block(result.block)
            if result.block % 10 == 0:
                await self.publish_balances(result.block)
        if self._last is None:
            self._last = result
        if not liquidatable:
            return
        book = result.book
        positions = book.positions
        rows = [positions.position_of[a] for a in liquidatable]
        subset = positions.take(rows)
        plans = plan_liquidations(book.market, subset, exact_account_data(book.market, subset))
        if self.mode == "alert-only":
            self.metrics.liquidation_funnel.labels(*self.labels, "detected").inc(len(plans))
            return
        base_fee = await self._base_fee()
        await self._consider_all(plans, result, base_fee, self._native_usd(result))

    async def _consider_all(self, plans: list[LiquidationPlan], result: ScanResult,
                            base_fee: int, native_usd: float) -> None:
        """The most profitable first, in waves: simulate a wave in one JSON-RPC batch, sign
        it in nonce order under one journal commit, broadcast it concurrently."""
        stage = self.metrics.liquidation_funnel.labels
        # (the scanner publishes the gate and logs its changes; here it only holds)
        if self.adapter.liquidation_hold(result.book.market):
            stage(*self.labels, "held").inc(len(plans))
            return
        paused = self.breaker.tripped() if self.breaker is not None else set()
        positions, symbols = result.book.positions, result.book.market.symbols
        fresh: list[Keyed] = []
        for plan in plans:
            key = self._key_for(plan)
            if key is None:
                stage(*self.labels, "skipped_journaled").inc()
                continue
            if paused:
                # The account's health rests on every asset it uses, not only the pair that
                # would be liquidated: one untrusted price and we evaluate, alert, but do not act.
                row = positions.position_of[plan.account]
                used = {symbols[c] for c in np.flatnonzero(positions.collateral_flag[row]
                                                           | positions.borrowing_flag[row])}
                if used & paused:
                    stage(*self.labels, "breaker_paused").inc()
                    log.info("liquidation.paused_by_breaker", opportunity=key,
                             assets=sorted(used & paused))
                    continue
            if self.journal.get(key) is not None:
                stage(*self.labels, "skipped_journaled").inc()
                continue
            stage(*self.labels, "detected").inc()
            if self._decide(plan, key, self._gas_limit(plan), base_fee, native_usd) is None:
                stage(*self.labels, "unprofitable").inc()
                continue
            fresh.append((plan, key))
        fresh = within_virtual_balances(fresh, result.book.market)
        own, flash = await self._fund(fresh, result)
        if flash:
            await self._find_swap_pools({(p.collateral_asset, p.debt_asset) for p, _ in flash})
        calls: list[Call] = []
        for (plan, key), use_flash in [*((f, False) for f in own), *((f, True) for f in flash)]:
            call = self._call_for(plan, key, result, base_fee, native_usd, use_flash)
            if call is None:
                stage(*self.labels, "no_swap_pool").inc()
                continue
            calls.append(call)
        # (Overlapping one wave's simulation with the previous wave's broadcast was measured:
        # no gain, the node is the bottleneck.)
        for start in range(0, len(calls), WAVE):
            wave = calls[start:start + WAVE]
            await self._wave(wave, await self._simulate(wave), result, base_fee, native_usd)
        # Off the hot path: who beat us to the accounts whose simulation failed.
        checks, self._lost_race_checks = self._lost_race_checks, []
        for plan, key, block, reason in checks:
            await self._maybe_lost_race(plan, key, block, reason)

    async def _fund(self, plans: list[Keyed], result: ScanResult
                    ) -> tuple[list[Keyed], list[Keyed]]:
        """Capital as a stage: (paid from the keeper's balances, sent through the flash-loan
        path). With own capital, what the balances cannot cover is the shortfall — counted,
        published and alerted, never simulated; with `capital: auto` it takes the flash
        path."""
        if self.config.capital == "flash-loan":
            return [], plans
        if self.keeper is None:
            return plans, []
        market = result.book.market
        assets = sorted({p.debt_asset for p, _ in plans})
        answers = await self.pool.batch([
            ("eth_call", [{"to": a, "data": "0x" + abi.balance_of(self.keeper).hex()},
                          "latest"]) for a in assets]) if assets else []
        balances = {a: int(v, 16) if isinstance(v, str) else 0
                    for a, v in zip(assets, answers, strict=True)}

        def need(item: Keyed) -> Need:
            plan = item[0]
            reserve = market.reserves[market.column(plan.debt_asset)]
            return Need(plan.debt_asset, reserve.symbol, reserve.decimals, flash_amount(plan),
                        plan.gross_profit_usd)

        funded, unfunded, short = allocate(plans, need, balances)
        auto = self.config.capital == "auto"
        publish_shortfall(self.metrics, *self.labels, self.capital_shortfall, short,
                          counted=not auto,
                          fix="fund the keeper with the debt asset, or set keeper.capital: "
                              "auto (with a FlashLiquidator) to use flash loans when it falls "
                              "short")
        self.capital_shortfall = short
        return (funded, unfunded) if auto else (funded, [])

    def _key_for(self, plan: LiquidationPlan) -> str | None:
        """The journal key to try this plan under: its own, or, after an on-chain revert, a
        retry key (a bounded number of them); None when nothing may be tried."""
        key = plan.key(self.adapter.name)
        for attempt in range(RETRIES_AFTER_REVERT + 1):
            candidate = key if attempt == 0 else f"{key}#retry{attempt}"
            entry = self.journal.get(candidate)
            if entry is None:
                return candidate
            if entry.status != J.REVERTED:
                return candidate  # journaled, in flight or done: the skip below counts it
        return None

    def _gas_limit(self, plan: LiquidationPlan) -> int:
        """Gas limit for this (collateral, debt) pair: the most it has used so far, with the
        configured margin; a conservative default until a receipt has been seen. A liquidation
        that clears bad debt burns each other debt of the user too."""
        used = self._gas_used.get((plan.collateral_asset, plan.debt_asset))
        extra = BAD_DEBT_GAS_PER_ASSET * plan.bad_debt_assets
        return int(((used or GAS_DEFAULT) + extra) * self.config.gas_limit_margin)

    def _call_for(self, plan: LiquidationPlan, key: str, result: ScanResult, base_fee: int,
                  native_usd: float, flash: bool) -> Call | None:
        """What to send: liquidationCall on the pool (own balance), or the FlashLiquidator."""
        pool_address = self.adapter.reader.addresses.pool if self.adapter.reader else ""
        if not flash:
            return Call(plan, key, pool_address, liquidation_calldata(plan))
        swap_pool = self._swap_pools.get((plan.collateral_asset, plan.debt_asset))
        if not swap_pool or plan.receive_a_token:
            return None  # no pool to sell into, or the seized underlying cannot be paid out
        # The contract reverts unless it keeps enough of the debt asset to pay for the gas
        # and still clear min_profit_usd.
        market = result.book.market
        debt_col = market.column(plan.debt_asset)
        virtual = market.reserves[debt_col].virtual_balance
        if virtual is not None and virtual < flash_amount(plan):
            return None  # the reserve cannot lend that much (v3.1+ virtual balance)
        debt_usd = float(market.prices_usd()[debt_col])
        gas_usd = self._gas_limit(plan) * self._fee_per_gas(base_fee) / 1e18 * native_usd
        min_profit = int((self.config.min_profit_usd + gas_usd) / debt_usd
                         * 10**market.reserves[debt_col].decimals)
        data = encode_call(
            "liquidate(address,address,address,uint256,address,uint256)",
            ["address", "address", "address", "uint256", "address", "uint256"],
            [plan.collateral_asset, plan.debt_asset, plan.account, flash_amount(plan),
             swap_pool, min_profit])
        assert self.config.flash_liquidator is not None
        return Call(plan, key, self.config.flash_liquidator, data, flash=True)

    async def _find_swap_pools(self, pairs: set[tuple[str, str]]) -> None:
        factory = self.config.uniswap_v3_factory
        missing = [p for p in pairs if p not in self._swap_pools]
        if not missing or factory is None:
            return
        answers = await self.pool.batch([
            ("eth_call", [{"to": factory, "data": "0x" + encode_call(
                "getPool(address,address,uint24)", ["address", "address", "uint24"],
                [a, b, self.config.swap_fee]).hex()}, "latest"]) for a, b in missing])
        for pair, answer in zip(missing, answers, strict=True):
            if isinstance(answer, str) and int(answer, 16):
                self._swap_pools[pair] = to_checksum_address("0x" + answer[-40:])
            else:
                self._swap_pools[pair] = ""  # no pool for this pair at this fee tier

    async def _simulate(self, wave: list[Call]) -> list[object]:
        pool_address = self.adapter.reader.addresses.pool if self.adapter.reader else ""
        sender = self.keeper or pool_address
        # The simulation: the exact call, from the keeper, against the latest block. (Against
        # "pending", anvil first re-executes its whole mempool, which costs more than it
        # tells: our own earlier liquidations never share a position with this one.)
        return await self.pool.batch([
            ("eth_call", [{"from": sender, "to": c.target, "data": "0x" + c.data.hex(),
                           "gas": hex(GAS_DEFAULT * 3)}, "latest"]) for c in wave])

    async def _wave(self, wave: list[Call], simulations: list[object],
                    result: ScanResult, base_fee: int, native_usd: float) -> None:
        stage = self.metrics.liquidation_funnel.labels
        to_send = []
        with self.journal.transaction():
            for call, sim in zip(wave, simulations, strict=True):
                plan, key, target, data = call.plan, call.key, call.target, call.data
                if isinstance(sim, RpcError) and NOT_ENOUGH_PROFIT in str(sim.data or ""):
                    stage(*self.labels, "unprofitable").inc()  # the swap would not pay
                    continue
                if isinstance(sim, RpcError):
                    stage(*self.labels, "simulation_failed").inc()
                    log.info("liquidation.simulation_failed", opportunity=key,
                             error=str(sim)[:300])
                    self._lost_race_checks.append((plan, key, result.block, str(sim)[:200]))
                    continue
                stage(*self.labels, "simulated_ok").inc()
                decision = self._decide(plan, key, self._gas_limit(plan), base_fee, native_usd,
                                        call.flash)
                if decision is None:
                    stage(*self.labels, "unprofitable").inc()
                    continue
                stage(*self.labels, "profitable").inc()
                entry = J.JournalEntry(
                    key, self.adapter.name, plan.account, plan.collateral, plan.debt,
                    plan.debt_to_cover, decision.net_profit_usd, decision.budget_wei,
                    result.block, J.DRY_RUN if self.mode == "dry-run" else J.PLANNED, None,
                    None, f"gas_limit={decision.gas_limit}")
                if not self.journal.record(entry):
                    stage(*self.labels, "skipped_journaled").inc()
                    continue
                if self.mode == "dry-run":
                    stage(*self.labels, "dry_run").inc()
                    log.info("liquidation.dry_run", opportunity=key, account=plan.account,
                             collateral=plan.collateral, debt=plan.debt,
                             debt_to_cover=str(plan.debt_to_cover),
                             expected_profit_usd=round(decision.net_profit_usd, 2))
                    continue
                assert self.tx is not None
                try:
                    record, pending = self.tx.prepare(
                        key, target, data, decision.gas_limit, decision.budget_wei,
                        block=result.block, base_fee=base_fee)
                except SendRefused as exc:
                    self.journal.set_status(key, J.DROPPED, detail=str(exc)[:500])
                    log.warning("liquidation.not_sent", opportunity=key, reason=str(exc))
                    continue
                to_send.append((plan, decision, record, pending))
        if to_send:
            assert self.tx is not None
            outcomes = await self.tx.broadcast_many([(record, pending)
                                                     for _, _, record, pending in to_send])
            for (plan, decision, record, _), outcome in zip(to_send, outcomes, strict=True):
                if outcome is not None:
                    self.journal.set_status(record.key, J.DROPPED, detail=str(outcome)[:500])
                    log.warning("liquidation.not_sent", opportunity=record.key,
                                reason=str(outcome))
                    self._event("not_sent", record.key, result.block,
                                {"reason": str(outcome)[:300]})
                    continue
                elapsed = time.perf_counter() - result.seen_at
                stage(*self.labels, "sent").inc()
                self.metrics.block_to_broadcast.labels(*self.labels).observe(elapsed)
                log.info("liquidation.sent", opportunity=record.key, account=plan.account,
                         block=result.block, tx_hash=record.tx_hash,
                         collateral=plan.collateral, debt=plan.debt,
                         expected_profit_usd=round(decision.net_profit_usd, 2),
                         block_to_broadcast_ms=round(elapsed * 1000, 2))
                self._event("sent", record.key, result.block, {
                    "tx_hash": record.tx_hash, "collateral": plan.collateral, "debt": plan.debt,
                    "expected_profit_usd": round(decision.net_profit_usd, 2)})

    def _fee_per_gas(self, base_fee: int) -> int:
        return self.fees.fees_for(base_fee)[0]

    def _decide(self, plan: LiquidationPlan, key: str, gas_limit: int, base_fee: int,
                native_usd: float, flash: bool | None = None) -> Decision | None:
        use_flash = self.config.capital == "flash-loan" if flash is None else flash
        return decide(plan, key, gas_limit=gas_limit, fee_per_gas=self._fee_per_gas(base_fee),
                      native_usd=native_usd, min_profit_usd=self.config.min_profit_usd,
                      slippage_bps=self.config.swap_slippage_bps,
                      flash_premium_bps=self._flash_premium_bps if use_flash else 0)

    # --- per block ------------------------------------------------------------------------

    async def on_block(self, block: int) -> None:
        if self.tx is None or not self.tx.pending:
            return
        for outcome in await self.tx.watch(block, self._still_wanted, self._owns):
            await self._settle(outcome)

    def _owns(self, key: str) -> bool:
        """This executor's opportunities and its approvals (other protocols' executors share
        the transaction manager)."""
        return key.split(":", 1)[0] in (self.adapter.name, "approve")

    def _still_wanted(self, key: str) -> bool:
        entry = self.journal.get(key)
        return entry is not None and entry.account in self._liquidatable

    async def _settle(self, outcome: Outcome) -> None:
        if outcome.key.startswith("approve:"):
            return
        entry = self.journal.get(outcome.key)
        if entry is None:
            return
        stage = self.metrics.liquidation_funnel.labels
        native_usd = self._native_usd(self._last) if self._last else 0.0
        gas_usd = outcome.gas_used * outcome.effective_gas_price / 1e18 * native_usd
        if outcome.gas_used:
            self.metrics.liquidation_gas_cost.labels(*self.labels).inc(gas_usd)
        if outcome.status in ("included", "reverted") and outcome.gas_used:
            pair = self._pair_of(outcome)
            if pair is not None:
                self._gas_used[pair] = max(self._gas_used.get(pair, 0), outcome.gas_used)
        if outcome.status == "included":
            profit = self._realised_profit(outcome) - gas_usd
            self.metrics.liquidation_profit.labels(*self.labels).inc(max(profit, 0.0))
            self.journal.set_status(outcome.key, J.INCLUDED, detail=f"tx={outcome.tx_hash} "
                                    f"profit_usd={profit:.2f}")
            stage(*self.labels, "included").inc()
            log.info("liquidation.included", opportunity=outcome.key, tx_hash=outcome.tx_hash,
                     realised_profit_usd=round(profit, 2), gas_used=outcome.gas_used)
            self._event("included", outcome.key, _receipt_block(outcome), {
                "tx_hash": outcome.tx_hash, "profit_usd": round(profit, 2),
                "gas_used": outcome.gas_used})
            return
        if outcome.status == "reverted":
            stage(*self.labels, "reverted").inc()
            self.journal.set_status(outcome.key, J.REVERTED, detail=f"tx={outcome.tx_hash}")
            log.warning("liquidation.reverted", opportunity=outcome.key, tx_hash=outcome.tx_hash)
            self._event("reverted", outcome.key, _receipt_block(outcome),
                        {"tx_hash": outcome.tx_hash})
            await self._maybe_lost_race(None, outcome.key, entry.detected_block, "reverted")
            return
        status = J.CANCELLED if outcome.status == "cancelled" else J.DROPPED
        stage(*self.labels, outcome.status).inc()
        self.journal.set_status(outcome.key, status, detail=outcome.tx_hash)
        log.info(f"liquidation.{outcome.status}", opportunity=outcome.key)
        if status == J.CANCELLED:
            await self._maybe_lost_race(None, outcome.key, entry.detected_block, "cancelled")

    def _pair_of(self, outcome: Outcome) -> tuple[str, str] | None:
        parts = outcome.key.split(":")
        return (parts[2], parts[3]) if len(parts) >= 5 else None

    def _realised_profit(self, outcome: Outcome) -> float:
        """Seized minus repaid, valued at the latest prices, from our LiquidationCall log."""
        if outcome.receipt is None or self._last is None:
            return 0.0
        market = self._last.book.market
        for entry in outcome.receipt.get("logs", []):
            event = abi.decode_liquidation_call(entry)
            if event is None:
                continue
            coll = market.column(event.collateral_asset)
            debt = market.column(event.debt_asset)
            px = market.prices_usd()
            return (event.collateral_seized / 10**market.reserves[coll].decimals * px[coll]
                    - event.debt_repaid / 10**market.reserves[debt].decimals * px[debt])
        return 0.0

    async def _maybe_lost_race(self, plan: LiquidationPlan | None, key: str, since_block: int,
                               reason: str) -> None:
        """If someone else's LiquidationCall hit this account since we saw it, record it."""
        account = plan.account if plan else key.split(":")[1]
        pool_address = self.adapter.reader.addresses.pool if self.adapter.reader else ""
        try:
            logs = await self.pool.request("eth_getLogs", [{
                "fromBlock": hex(max(0, since_block - 1)), "toBlock": "latest",
                "address": pool_address,
                "topics": [abi.LIQUIDATION_CALL, None, None,
                           "0x" + "0" * 24 + account[2:].lower()]}])
        except (RpcError, RpcUnavailable):
            return
        winners = [event.liquidator for e in logs
                   if (event := abi.decode_liquidation_call(e)) is not None]
        others = [w for w in winners if self.keeper is None or w != self.keeper]
        if not others:
            return
        winner = others[-1]
        if self.journal.get(key) is None and plan is not None:
            self.journal.record(J.JournalEntry(
                key, self.adapter.name, plan.account, plan.collateral, plan.debt,
                plan.debt_to_cover, 0.0, 0, since_block, J.LOST_RACE, None, winner, reason))
        else:
            self.journal.set_status(key, J.LOST_RACE, winner=winner, detail=reason)
        self.metrics.liquidation_funnel.labels(*self.labels, "lost_race").inc()
        log.info("liquidation.lost_race", opportunity=key, account=account, winner=winner)
        self._event("lost_race", key, None, {"winner": winner, "reason": reason})

    def _event(self, kind: str, key: str, block: int | None, details: dict[str, Any]) -> None:
        if self.events is None:
            return
        account = key.split(":")[1] if ":" in key else ""
        try:
            self.events(kind, account=account, opportunity=key, block=block, details=details)
        except Exception as exc:  # alerting must never disturb a liquidation
            log.exception("alerts.event_failed", kind=kind, error=str(exc))

    # --- helpers --------------------------------------------------------------------------

    async def _base_fee(self) -> int:
        block = await self.pool.request("eth_getBlockByNumber", ["latest", False])
        return int(block.get("baseFeePerGas", "0x0"), 16)

    def _native_usd(self, result: ScanResult | None) -> float:
        if result is None:
            return 0.0
        market = result.book.market
        try:
            return float(market.prices_usd()[market.column(self.config.native_symbol)])
        except KeyError:
            return 0.0

    async def publish_balances(self, block: int) -> None:
        """The keeper's native and reserve balances, as gauges (once every few blocks)."""
        if self.keeper is None or self._last is None:
            return
        native = int(await self.pool.request("eth_getBalance", [self.keeper, "latest"]), 16)
        self.native_balance = native / 1e18
        self.metrics.keeper_balance.labels(self.adapter.chain, "native").set(native / 1e18)
        for reserve in self._last.book.market.reserves:
            data = abi.balance_of(self.keeper)
            raw = await self.pool.request("eth_call", [{"to": reserve.asset,
                                                        "data": "0x" + data.hex()}, "latest"])
            self.metrics.keeper_balance.labels(self.adapter.chain, reserve.symbol).set(
                int(raw, 16) / 10**reserve.decimals)


def _receipt_block(outcome: Outcome) -> int | None:
    if outcome.receipt is None or "blockNumber" not in outcome.receipt:
        return None
    return int(outcome.receipt["blockNumber"], 16)
