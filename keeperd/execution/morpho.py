"""Morpho Blue: follow the markets block by block and liquidate what is unhealthy.

Per block: catch the index up, read every position (Multicall3), compute health with interest
accrued to the block's time; for each unhealthy position plan the liquidation (repay all the
debt when the collateral covers it with the incentive, else seize all the collateral), price it
(loan-token units, stablecoins counted at 1 USD; other loan tokens need `usd_prices`),
simulate the exact `liquidate` call from the keeper's address, journal it, and send it through
the shared transaction manager. The journal key (market, borrower, borrow shares) keeps a
restart from liquidating the same position twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from keeperd.chain.multicall import encode_call
from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable
from keeperd.config import KeeperConfig
from keeperd.execution import journal as J
from keeperd.execution.capital import Need, Purse, Shortfall, publish_shortfall
from keeperd.execution.reconcile import resume_journal
from keeperd.execution.txmanager import Outcome, SendRefused, TxManager
from keeperd.metrics import Metrics
from keeperd.oracles.breaker import Breaker
from keeperd.oracles.sequencer import SequencerCheck
from keeperd.protocols.morpho_blue import math as mm
from keeperd.protocols.morpho_blue.adapter import (
    MorphoBlueAdapter,
    MorphoBook,
    MorphoPosition,
    encode_liquidate,
)
from keeperd.risk.health import RISK_LEVELS, bucket_label, summarize

log = structlog.get_logger(__name__)

GAS_LIMIT = 400_000
MAX_UINT = 2**256 - 1
STABLES = {"USDC", "USDT", "DAI", "USDS", "GHO", "PYUSD", "FRAX", "LUSD"}


class MorphoKeeper:
    def __init__(self, config: KeeperConfig, adapter: MorphoBlueAdapter, pool: RpcPool,
                 journal: J.Journal, metrics: Metrics, tx: TxManager | None,
                 keeper_address: str | None, breaker: Breaker | None = None,
                 sequencer: SequencerCheck | None = None) -> None:
        self.config = config
        self.breaker = breaker
        self.sequencer = sequencer
        # Loan tokens the keeper's balance fell short of in the last block (see _liquidate).
        self.capital_shortfall: dict[str, Shortfall] = {}
        self.adapter = adapter
        self.pool = pool
        self.journal = journal
        self.metrics = metrics
        self.tx = tx
        self.keeper = keeper_address
        self.labels = (adapter.chain, adapter.name)
        self.book: MorphoBook | None = None
        self.completed_block = -1
        self.listeners: list[Callable[[MorphoBook], Any]] = []
        self.events: Callable[..., None] | None = None
        self._wanted: int | None = None
        self._wake = asyncio.Event()
        self.stopping = False
        self.idle = asyncio.Event()
        for stage in ("detected", "profitable", "sent", "included", "lost_race",
                      "no_capital"):
            metrics.liquidation_funnel.labels(*self.labels, stage)

    @property
    def mode(self) -> str:
        return self.config.mode

    def _owns(self, key: str) -> bool:
        return key.split(":", 1)[0] == self.adapter.name

    async def start(self, head: int) -> None:
        if self.tx is None:
            return
        await self.tx.sync_nonce()
        # What this protocol's journal left in flight: resumed (or forgotten, if never
        # signed) before anything new is sent, then settled at once if it was mined.
        if await resume_journal(self.journal, self.tx, self.adapter.name, head):
            for outcome in await self.tx.watch(head, lambda key: True, self._owns):
                self._settle(outcome)
        if self.mode == "liquidate":
            for token in {m.loan_token for m in self.adapter.markets.values()}:
                raw = await self.pool.request("eth_call", [{"to": token, "data": "0x" + encode_call(
                    "allowance(address,address)", ["address", "address"],
                    [self.keeper, self.adapter.config.morpho]).hex()}, "latest"])
                if int(raw, 16) >= MAX_UINT // 2:
                    continue
                data = encode_call("approve(address,uint256)", ["address", "uint256"],
                                   [self.adapter.config.morpho, MAX_UINT])
                record = await self.tx.send(f"{self.adapter.name}:approve:{token}", token,
                                            data, 100_000, budget_wei=10**18, block=head)
                log.info("keeper.approval_sent", protocol=self.adapter.name, token=token,
                         tx_hash=record.tx_hash)

    # --- following -----------------------------------------------------------------------

    async def on_block_event(self, event: Any) -> None:
        from keeperd.chain.blocks import NewBlock, Reorg

        if isinstance(event, Reorg):
            self.adapter.on_reorg(event.ancestor.number)
        elif isinstance(event, NewBlock):
            self._wanted = max(self._wanted or 0, event.header.number)
            self._wake.set()

    async def run(self) -> None:
        while True:
            self.idle.set()
            await self._wake.wait()
            self._wake.clear()
            if self.stopping or self._wanted is None:
                continue
            self.idle.clear()
            block = self._wanted
            started = time.perf_counter()
            try:
                await self.evaluate(block)
                self.metrics.scans.labels(*self.labels, "full", "ok").inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.scans.labels(*self.labels, "full", "error").inc()
                log.error("positions.evaluation_failed", protocol=self.adapter.name,
                          block=block, error=f"{type(exc).__name__}: {exc}")
            finally:
                self.metrics.scan_duration.labels(*self.labels, "full").observe(
                    time.perf_counter() - started)

    async def evaluate(self, block: int) -> MorphoBook:
        await self.adapter.discover(block)
        book = await self.adapter.snapshot(sorted(self.adapter.accounts), block)
        self.book = book
        self._publish(book)
        if self.tx is not None and self.tx.pending:
            for outcome in await self.tx.watch(block, self._still_wanted, self._owns):
                self._settle(outcome)
        if self.mode != "alert-only":
            await self._liquidate(book)
        for listener in self.listeners:
            await listener(book)
        self.completed_block = block
        return book

    def _publish(self, book: MorphoBook) -> None:
        health = np.array([book.health(p) for p in book.positions] or [np.inf])
        debt = np.array([self._usd(p.market.loan_symbol, book.debt(p), p.market.loan_decimals)
                         for p in book.positions] or [0.0])
        coll = np.array([self._usd(p.market.loan_symbol, book.collateral_value(p),
                                   p.market.loan_decimals) for p in book.positions] or [0.0])
        summary = summarize(health, coll, debt)
        chain, protocol = self.labels
        for bucket, count in summary.buckets.items():
            self.metrics.accounts_by_health.labels(chain, protocol, bucket).set(count)
        for level in RISK_LEVELS:
            label = bucket_label(level)
            self.metrics.debt_at_risk.labels(chain, protocol, label).set(
                summary.debt_below[label])
        self.metrics.total_debt.labels(chain, protocol).set(summary.total_debt)
        self.metrics.accounts_tracked.labels(chain, protocol).set(len(self.adapter.accounts))
        log.info("positions.evaluated", protocol=protocol, block=book.block,
                 positions=len(book.positions), liquidatable=int((health < 1).sum()),
                 debt_usd=round(summary.total_debt, 2))

    @staticmethod
    def _usd(symbol: str, amount: int, decimals: int) -> float:
        return amount / 10**decimals if symbol in STABLES else float("nan")

    def _still_wanted(self, key: str) -> bool:
        if self.book is None:
            return True
        return any(self._key(p) == key and self.book.health(p) < 1.0
                   for p in self.book.positions)

    def _key(self, p: MorphoPosition) -> str:
        return f"{self.adapter.name}:{p.account}:{p.market.id[:18]}:{p.borrow_shares}"

    # --- liquidating ----------------------------------------------------------------------

    async def _liquidate(self, book: MorphoBook) -> None:
        stage = self.metrics.liquidation_funnel.labels
        morpho = self.adapter.config.morpho
        # The transaction lands in a later block: plan with interest a few seconds on.
        at = book.timestamp + 12
        # The same pauses as every protocol's: an untrusted price (the breaker, tripped by the
        # oracle monitor or by hand) holds the markets that use the asset; a down L2
        # sequencer holds everything.
        paused = self.breaker.tripped() if self.breaker is not None else set()
        sequencer = (await self.sequencer.problem(book.timestamp, book.block)
                     if self.sequencer is not None else None)
        base_fee: int | None = None
        # Each liquidation sent changes its market's totals (a bad debt lowers what a borrow
        # share is worth): the next one in the same market is planned on the market after it.
        states = {market_id: book.accrued(market_id, at) for market_id in book.markets}
        # Capital as a stage, as for Aave: the keeper repays from its loan-token balance;
        # what that cannot cover is the shortfall, never simulated in vain.
        purse = Purse()
        for p in book.positions:
            info = p.market
            _, _, price, _ = book.markets[info.id]
            state = states[info.id]
            if mm.is_healthy(p.collateral, p.borrow_shares, book.accrued(info.id), price,
                             info.lltv):
                continue
            key = self._key(p)
            if self.journal.get(key) is not None:
                continue
            held = {info.collateral_symbol, info.loan_symbol} & paused
            if held or sequencer is not None:
                stage(*self.labels, "breaker_paused").inc()
                log.info("liquidation.paused_by_breaker", opportunity=key,
                         assets=sorted(held), sequencer=sequencer.detail if sequencer else None)
                continue
            stage(*self.labels, "detected").inc()
            plan = mm.plan_liquidation(p.collateral, p.borrow_shares, state, price, info.lltv)
            seized_value = mm.mul_div_down(plan.expected_seized, price, mm.ORACLE_PRICE_SCALE)
            profit = self._usd(info.loan_symbol, seized_value - plan.expected_repaid,
                               info.loan_decimals)
            if not profit >= self.config.min_profit_usd:
                stage(*self.labels, "unprofitable").inc()
                continue
            if self.keeper is not None and self.mode == "liquidate":
                if not purse.knows(info.loan_token):
                    raw = await self.pool.request("eth_call", [{
                        "to": info.loan_token, "data": "0x" + encode_call(
                            "balanceOf(address)", ["address"], [self.keeper]).hex()},
                        "latest"])
                    purse.hold(info.loan_token, int(raw, 16))
                need = Need(info.loan_token, info.loan_symbol, info.loan_decimals,
                            plan.expected_repaid * 1001 // 1000 + 1,  # interest until inclusion
                            profit)
                if not purse.pay(need):
                    continue  # counted with the shortfall below
            data = encode_liquidate(info.params, p.account, plan.seized_assets,
                                    plan.repaid_shares)
            sender = self.keeper or morpho
            try:
                await self.pool.request("eth_call", [{"from": sender, "to": morpho,
                                                      "data": "0x" + data.hex(),
                                                      "gas": hex(GAS_LIMIT * 3)}, "latest"])
            except (RpcError, RpcUnavailable) as exc:
                stage(*self.labels, "simulation_failed").inc()
                log.info("liquidation.simulation_failed", opportunity=key, error=str(exc)[:300])
                continue
            stage(*self.labels, "simulated_ok").inc()
            stage(*self.labels, "profitable").inc()
            entry = J.JournalEntry(
                key, self.adapter.name, p.account, info.collateral_symbol, info.loan_symbol,
                plan.expected_repaid, profit, 0, book.block,
                J.DRY_RUN if self.mode == "dry-run" else J.PLANNED, None, None,
                f"market={info.id} seized={plan.expected_seized} bad_debt={plan.bad_debt}")
            if self.mode == "dry-run" or self.tx is None:
                if not self.journal.record(entry):
                    stage(*self.labels, "skipped_journaled").inc()
                    continue
                stage(*self.labels, "dry_run").inc()
                log.info("liquidation.dry_run", opportunity=key, account=p.account,
                         market=info.name, expected_profit_usd=round(profit, 2))
                continue
            budget = 10**17  # gas is cheap next to a Morpho liquidation; capped all the same
            if base_fee is None:
                base_fee = await self.tx.base_fee()
            try:
                # Journaled and signed in one commit (write-ahead, as the Aave executor does):
                # a crash can leave neither an entry without its transaction nor the reverse.
                with self.journal.transaction():
                    if not self.journal.record(entry):
                        stage(*self.labels, "skipped_journaled").inc()
                        continue
                    record, pending = self.tx.prepare(key, morpho, data, GAS_LIMIT, budget,
                                                      block=book.block, base_fee=base_fee)
                [refused] = await self.tx.broadcast_many([(record, pending)])
                if refused is not None:
                    raise refused
            except SendRefused as exc:
                self.journal.set_status(key, J.DROPPED, detail=str(exc)[:500])
                log.warning("liquidation.not_sent", opportunity=key, reason=str(exc))
                self._event("not_sent", key, book.block, {"reason": str(exc)[:300]})
                continue
            states[info.id] = mm.after_liquidation(state, p.collateral, p.borrow_shares, plan,
                                                   price, info.lltv)
            stage(*self.labels, "sent").inc()
            log.info("liquidation.sent", opportunity=key, account=p.account, market=info.name,
                     tx_hash=record.tx_hash, expected_profit_usd=round(profit, 2),
                     seize_all=plan.bad_debt)
            self._event("sent", key, book.block, {"tx_hash": record.tx_hash,
                                                  "market": info.name,
                                                  "expected_profit_usd": round(profit, 2)})
        short = purse.shortfall()
        publish_shortfall(self.metrics, *self.labels, self.capital_shortfall, short,
                          counted=True, fix="fund the keeper with the loan token")
        self.capital_shortfall = short

    def _settle(self, outcome: Outcome) -> None:
        if ":approve:" in outcome.key:
            return
        stage = self.metrics.liquidation_funnel.labels
        if outcome.status == "included":
            self.journal.set_status(outcome.key, J.INCLUDED, detail=f"tx={outcome.tx_hash}")
            stage(*self.labels, "included").inc()
            log.info("liquidation.included", opportunity=outcome.key, tx_hash=outcome.tx_hash,
                     gas_used=outcome.gas_used)
        elif outcome.status == "reverted":
            self.journal.set_status(outcome.key, J.REVERTED, detail=f"tx={outcome.tx_hash}")
            stage(*self.labels, "reverted").inc()
            log.warning("liquidation.reverted", opportunity=outcome.key,
                        tx_hash=outcome.tx_hash)
        else:
            self.journal.set_status(outcome.key, J.CANCELLED if outcome.status == "cancelled"
                                    else J.DROPPED, detail=outcome.tx_hash)
            stage(*self.labels, outcome.status).inc()
        block = int(outcome.receipt["blockNumber"], 16) if outcome.receipt else None
        self._event(outcome.status, outcome.key, block, {"tx_hash": outcome.tx_hash})

    def _event(self, kind: str, key: str, block: int | None, details: dict[str, Any]) -> None:
        if self.events is None:
            return
        try:
            self.events(kind, account=key.split(":")[1], opportunity=key, block=block,
                        details=details)
        except Exception as exc:
            log.exception("alerts.event_failed", kind=kind, error=str(exc))
