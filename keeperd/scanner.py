"""Keeps one protocol's positions current, block by block, whatever the protocol (it speaks
the plug-in contract, `protocols/sdk/contract.py`).

Every new block wakes the scanner; it evaluates the newest block it has been told about, so a
slow evaluation never queues up behind itself: blocks that arrive meanwhile are folded into the
next run (and counted). Each run:
1. catches the account index up (new and touched accounts come back), and asks the plug-in
   meanwhile what the block did to its own (`outlook`: nothing but time, a position under
   water at its prices, or something else); with the daemon's order, the read then waits
   for the paths in flight it comes after (`liquidation_first.py` rules 2-3): the ones under
   water first, the lightest first, the quiet ones (touching no account) last;
2. reads the book at the block: everyone (full: first run, after a reorg, and on the periodic
   full-rescan job, which also corrects drift the logs cannot show), or the previous book with
   the touched accounts re-read (incremental, where the plug-in can);
3. when prices moved, the rows exposed to the moved assets (the plug-in's first pass) are
   evaluated and handed to the listeners first;
4. evaluates health and hands the result to the liquidation path's listeners (the price
   watch, the executor), then — once no other protocol's liquidation path is running
   (`liquidation_first.py`) — publishes metrics and the liquidation gate and hands it to the
   after-work listeners (alerts, cascade monitor), in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import structlog

from keeperd.chain.blocks import BlockEvent, NewBlock, Reorg
from keeperd.chain.rpc import RpcError, RpcUnavailable
from keeperd.collector_hold import CollectorHold
from keeperd.liquidation_first import LiquidationFirst, LoopTime
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.contract import Outlook, Plugin
from keeperd.protocols.sdk.messages import ScanResult
from keeperd.protocols.sdk.views import HealthView
from keeperd.risk.health import RISK_LEVELS, bucket_label, summarize

log = structlog.get_logger(__name__)

# Failed evaluations in a row the accounts of a failed evaluation are read again with the
# next ones (`_carried`) before they are left to the periodic full rescan.
CARRIED_TRIES = 5


async def _outlook(probing: asyncio.Future[Outlook | None] | None) -> Outlook | None:
    """The plug-in's answer, or None: not asked, it cannot tell, or it failed (the read that
    follows asks the node again and reports what fails)."""
    if probing is None:
        return None
    try:
        return await probing
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("positions.outlook_unknown", error=f"{type(exc).__name__}: {exc}")
        return None


Listener = Callable[[ScanResult], Awaitable[None]]


class ProtocolScanner:
    def __init__(self, adapter: Plugin, metrics: Metrics) -> None:
        self.adapter = adapter
        self.metrics = metrics
        self.book: Any = None
        self.completed_block = -1
        # Graceful stop: `stopping` refuses new runs; `idle` is set between runs, so the
        # daemon can let an evaluation (and the liquidations it sends) reach its end.
        self.stopping = False
        self.idle = asyncio.Event()
        self.view: HealthView | None = None
        # The liquidation path (the price watch, the executor), then the after-work (alerts,
        # the cascade monitor): see `evaluate`.
        self.listeners: list[Listener] = []
        self.after_listeners: list[Listener] = []
        # Told the block as the path starts its read (after its wait for the other paths):
        # work for the block that can go on while the node answers (the price watch's).
        self.reading_hooks: list[Callable[[int], None]] = []
        # The daemon's order between its scanners (None: alone, nothing to wait for).
        self.order: LiquidationFirst | None = None
        # The daemon's hold on the cyclic GC while liquidation paths run (None: not held).
        self.collector: CollectorHold | None = None
        self.loop_held_s: float | None = None  # how long the last path held the event loop
        self._wanted: int | None = None
        self._wanted_seen_at = 0.0
        self._wake = asyncio.Event()
        self._full_due = True
        self._discovery_failing = False  # the index's log reads fail: see evaluate
        self._dropped: set[str] = set()
        # Accounts a discovery returned whose evaluation did not complete (a read that
        # failed, an unknown eMode category): read again with the next block's. The index
        # gives each touch once; a failed block forgot them until the full rescan (3 min 22 s
        # of a liquidatable account unseen, a by-hand trial).
        self._carried: set[str] = set()
        self._carried_since = 0  # (the block the accounts carried were first given at)
        self._carried_tries = 0  # (failed evaluations in a row since)
        self._liquidatable: set[str] = set()
        self._hold_reason: str | None = None
        self._verification_reason: str | None = None
        # Other holds on this protocol's liquidations, beside its plug-in's gate (the
        # liquidator's own: Curie's takeovers while unwinds fail), in the same gauge.
        self.holds: list[Callable[[], str | None]] = []
        # Export the should-stay-zero counters from the start, so alerts can rely on them.
        metrics.scan_skipped.labels(*self.labels)

    @property
    def hold_reason(self) -> str | None:
        """Why its liquidations are held, as of its last full scan (None: they are not)."""
        return self._hold_reason

    @property
    def verification_reason(self) -> str | None:
        """Why each is sent only on the chain's word, as of its last full scan, or None."""
        return self._verification_reason

    @property
    def labels(self) -> tuple[str, str]:
        return self.adapter.chain, self.adapter.name

    # --- the service lifecycle (services.py) --------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.adapter.chain}:{self.adapter.name}:scanner"

    def drain(self) -> None:
        self.stopping = True

    async def drained(self) -> None:
        await self.idle.wait()

    # --- triggers -----------------------------------------------------------------------------

    async def on_block_event(self, event: BlockEvent) -> None:
        if isinstance(event, Reorg):
            dropped = await self.adapter.on_reorg(event.ancestor.number)
            self._dropped.update(dropped)
            self._full_due = True
            # (the block wanted only ever rose: after a lying endpoint's invented chain was
            # abandoned, every evaluation asked for its height, 100 blocks past the real
            # head, and failed until the chain got there — a crash unevaluated meanwhile,
            # a by-hand trial; the reorg's new blocks follow as NewBlock events)
            if self._wanted is not None and self._wanted > event.ancestor.number:
                self._wanted = event.ancestor.number
            return
        if isinstance(event, NewBlock):
            self.request(event.header.number)

    def request(self, block: int) -> None:
        if self._wake.is_set():
            self.metrics.scan_skipped.labels(*self.labels).inc()
        if self._wanted is None or block > self._wanted:
            self._wanted, self._wanted_seen_at = block, time.perf_counter()
        if self.order is not None:
            self.order.due(self.name, block)
        self._wake.set()

    def request_full_rescan(self) -> None:
        """The periodic job: the next run re-reads every account. A run of a block already
        evaluated is timed from this request, not from the block's header: an idle chain's
        rescan, minutes after its block, logged a plan of 215 s and would have put that in
        keeperd_block_to_broadcast_seconds for any liquidation it sent (a by-hand trial)."""
        self._full_due = True
        if self._wanted is not None:
            if self._wanted <= self.completed_block:
                self._wanted_seen_at = time.perf_counter()
            self._wake.set()

    async def run(self) -> None:
        while True:
            self.idle.set()
            await self._wake.wait()
            self._wake.clear()
            if self.stopping:
                if self.order is not None:
                    self.order.done(self.name, None)
                continue  # no new work once the daemon is stopping
            self.idle.clear()
            block = self._wanted
            if block is None:
                continue
            kind = "full" if self._full_due else "incremental"
            started = time.perf_counter()
            try:
                await self.evaluate(block, full=self._full_due, seen_at=self._wanted_seen_at)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.scans.labels(*self.labels, kind, "error").inc()
                log.error("positions.evaluation_failed", protocol=self.adapter.name,
                          block=block, error=f"{type(exc).__name__}: {exc}")
                continue
            finally:
                if self.order is not None:  # (also when it failed before its executor ran)
                    self.order.done(self.name, block)
                self.metrics.scan_duration.labels(*self.labels, kind).observe(
                    time.perf_counter() - started)

    # --- one evaluation -----------------------------------------------------------------------

    async def evaluate(self, block: int, *, full: bool = False,
                       seen_at: float | None = None) -> ScanResult:
        """The liquidation path (read, evaluate, the price watch, the executor), then the
        after-work (metrics, alerts, the cascade monitor) — with the daemon's `order`, a
        path after the other protocols' much lighter ones in flight, and the after-work after
        the paths running."""
        if self.order is not None:
            await self.order.before_path(self.name)
            self.order.running(self.name)
        path = LoopTime(self._liquidation_path(block, full, seen_at),
                        self.order.held if self.order is not None else None)
        with self.collector if self.collector is not None else contextlib.nullcontext():
            result = await path
        self.loop_held_s = path.held_s
        if self.order is not None:
            self.order.took(self.name, path.held_s)
            self.order.done(self.name, block)
            await self.order.before_after_work(self.name)
        self._publish(result)
        await self._notify(result, self.after_listeners)
        self.completed_block = block  # the block whose listeners have all finished
        self.metrics.scans.labels(*self.labels, result.kind, "ok").inc()
        return result

    async def _liquidation_path(self, block: int, full: bool, seen_at: float | None
                                ) -> ScanResult:
        started = time.perf_counter()
        seen_at = started if seen_at is None else seen_at
        adapter = self.adapter
        # Beside the discovery: whether the block moved anything of this protocol's but time
        # (the plug-in reads, ahead, what its read starts with). Only an order has use for it.
        probing = (asyncio.ensure_future(adapter.outlook(block, self.book))
                   if self.order is not None and not full and self.book is not None else None)
        try:
            touched = await adapter.discover(block)
        except (RpcError, RpcUnavailable) as exc:
            # The node's logs fail (a provider's log service down or overloaded — in a crash,
            # when it matters most) while its state answers: the accounts already known are
            # evaluated all the same, re-read in full since the events that say which changed
            # are what is missing. New borrowers wait for the index.
            if not self._discovery_failing:
                log.warning("index.discovery_failed", protocol=adapter.name, block=block,
                            error=str(exc)[:300],
                            meaning="known accounts re-read in full every block until the "
                                    "index reads logs again")
            self._discovery_failing = True
            touched, full = set(), True
        else:
            if self._discovery_failing:
                log.info("index.discovery_recovered", protocol=adapter.name, block=block)
            self._discovery_failing = False
        finally:
            outlook = await _outlook(probing)
        if self._carried:  # (the evaluation before this one failed)
            self._carried_tries += 1
        if self._carried_tries > CARRIED_TRIES:
            # (an account whose read fails every time would fail every evaluation: given up
            # on after CARRIED_TRIES failed ones in a row — counted in evaluations, not
            # blocks, which a fast chain's skipped ones would run through at once — and
            # read again by the periodic full rescan, as before)
            log.warning("positions.carried_dropped", protocol=adapter.name, block=block,
                        accounts=len(self._carried), since=self._carried_since,
                        meaning="accounts whose evaluation kept failing are left to the "
                                "next full rescan")
            self._carried, self._carried_tries = set(), 0
        if self._carried:
            touched = set(touched) | self._carried
        else:
            self._carried_since = block
        self._carried = set(touched)  # (until the book they are read into is kept)
        kind = "full" if full or self.book is None else "incremental"
        discovered = time.perf_counter()
        if self.order is not None:
            incremental = kind == "incremental"
            await self.order.before_read(
                self.name, under=outlook == "under" and incremental,
                quiet=outlook == "quiet" and incremental and not touched and not self._dropped)
        reading = time.perf_counter()  # (after any wait for the other protocols' paths)
        for hook in self.reading_hooks:
            hook(block)
        previous = self.book
        book = await adapter.read(block, None if kind == "full" else previous, touched,
                                  self._dropped)
        self._dropped.clear()
        if kind == "full":
            self._full_due = False

        read = time.perf_counter()
        priority = np.zeros(0, dtype=np.intp)
        first_pass = adapter.first_pass(previous, book)
        stages = {"path_wait_ms": _ms(started - seen_at), "discover_ms": _ms(discovered - started),
                  "order_wait_ms": _ms(reading - discovered), "read_ms": _ms(read - reading)}
        if first_pass is not None:
            # The executor acts on the accounts exposed to the moved prices before the rest
            # is evaluated.
            priority, near, first = first_pass
            partial = ScanResult(adapter.name, block, kind, book, first, near,
                                 time.perf_counter() - started, seen_at, partial=True,
                                 stages={**stages,
                                         "first_pass_ms": _ms(time.perf_counter() - read),
                                         "result_ms": _ms(time.perf_counter() - seen_at)})
            await self._notify(partial)
            log.info("positions.price_moved", protocol=adapter.name, block=block,
                     dependents=len(priority), evaluated_first=len(near),
                     liquidatable=int(np.sum(first.health < 1.0)))

        evaluating = time.perf_counter()
        view = adapter.evaluate(book)
        self.book, self.view = book, view
        self._carried, self._carried_tries = set(), 0
        seconds = time.perf_counter() - started
        result = ScanResult(adapter.name, block, kind, book, view, priority, seconds, seen_at,
                            stages={**stages,
                                    "evaluate_ms": _ms(time.perf_counter() - evaluating),
                                    "result_ms": _ms(time.perf_counter() - seen_at)})
        await self._notify(result)
        return result

    async def _notify(self, result: ScanResult, listeners: list[Listener] | None = None
                      ) -> None:
        """The one error policy for listeners: each runs in turn; one that raises is logged
        with its traceback and counted, and the next still gets the result (a failed
        simulation batch must not keep this block's alerts or cascade figures back)."""
        for listener in self.listeners if listeners is None else listeners:
            try:
                await listener(result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                name = getattr(listener, "__qualname__", repr(listener)).split(".<locals>")[0]
                self.metrics.listener_errors.labels(*self.labels, name).inc()
                log.exception("positions.listener_failed", protocol=self.adapter.name,
                              block=result.block, listener=name,
                              error=f"{type(exc).__name__}: {exc}")

    def _publish(self, result: ScanResult) -> None:
        view = result.view
        summary = summarize(view.health, view.collateral_usd, view.debt_usd, view.at_risk_usd)
        chain, protocol = self.labels
        for bucket, count in summary.buckets.items():
            self.metrics.accounts_by_health.labels(chain, protocol, bucket).set(count)
        for level in RISK_LEVELS:
            label = bucket_label(level)
            self.metrics.debt_at_risk.labels(chain, protocol, label).set(
                summary.debt_below[label])
            self.metrics.collateral_at_risk.labels(chain, protocol, label).set(
                summary.collateral_below[label])
        self.metrics.total_debt.labels(chain, protocol).set(summary.total_debt)
        self.metrics.total_collateral.labels(chain, protocol).set(summary.total_collateral)
        self.adapter.publish(result.book, view)
        # The gate, published every scan and in every mode (alert-only included).
        # (the liquidator's hold was alerted and not in the gauge: 0 while the alert said
        # critical, a by-hand trial)
        hold = "; ".join(filter(None, (self.adapter.liquidation_hold(result.book),
                                       *(h() for h in self.holds)))) or None
        self.metrics.liquidations_held.labels(chain, protocol).set(1 if hold else 0)
        if hold != self._hold_reason:
            (log.error if hold else log.info)(
                "liquidation.held" if hold else "liquidation.released",
                protocol=protocol, reason=hold or self._hold_reason)
            self._hold_reason = hold
        verifying = self.adapter.liquidation_verification(result.book)
        self.metrics.liquidations_unverified_rules.labels(chain, protocol).set(
            1 if verifying else 0)
        if verifying != self._verification_reason:
            (log.warning if verifying else log.info)(
                "liquidation.verifying" if verifying else "liquidation.rules_known",
                protocol=protocol, reason=verifying or self._verification_reason,
                meaning="each liquidation is sent only when the chain confirms it in a "
                        "simulation" if verifying else "liquidations are planned by rules "
                        "keeperd knows again")
            self._verification_reason = verifying

        under = np.flatnonzero(view.health < 1.0)
        liquidatable = {view.accounts[int(i)] for i in under}
        for i in map(int, under):
            if view.accounts[i] in self._liquidatable:
                continue
            log.warning("position.liquidatable", protocol=protocol, account=view.accounts[i],
                        **view.row_labels(i),
                        health_factor=round(float(view.health[i]), 6),
                        debt_usd=round(float(view.debt_usd[i]), 2),
                        collateral_usd=round(float(view.collateral_usd[i]), 2),
                        block=result.block)
        self._liquidatable = liquidatable
        finite = view.health[np.isfinite(view.health)]
        log.info("positions.evaluated", protocol=protocol, block=result.block, kind=result.kind,
                 accounts=len(set(view.accounts)), positions=len(view.accounts),
                 with_debt=summary.with_debt,
                 liquidatable=len(liquidatable),
                 min_health=round(float(finite.min()), 4) if finite.size else None,
                 debt_usd=round(summary.total_debt, 2),
                 debt_at_risk_usd={k: round(v, 2) for k, v in summary.debt_below.items()},
                 seconds=round(result.seconds, 4),
                 loop_held_s=None if self.loop_held_s is None else round(self.loop_held_s, 4))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
