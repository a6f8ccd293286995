"""Runs the cascade engine on each protocol's latest book, publishes the figures as metrics,
and tells the alert engine when the bad debt of a shock crosses its thresholds.

Beside the shock grid, one column at today's prices (no shock) is published as the baseline:
what is liquidatable already. The grid's figures include it; the dashboard subtracts it to
show what a shock adds (docs/risk.md).

The book comes from the scanner (no extra reads), the depth of Uniswap V3 pools and an
on-chain insurance fund are read at the same block; the engine runs in a worker thread so the
event loop keeps following blocks. Evaluation is throttled (`every_blocks`, `min_interval_s`)
and never stacks up behind itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from keeperd.alerts.engine import AlertEngine, Condition
from keeperd.alerts.inhibition import operator_note
from keeperd.alerts.lifecycle import Levels
from keeperd.chain.calls import ContractCall
from keeperd.chain.rpc import RpcPool
from keeperd.config import (
    AlertsConfig,
    CascadeConfig,
    ConstantProductDepth,
    CurveDepth,
    UniswapV3Depth,
)
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.depth import uniswap_v3_depth
from keeperd.protocols.sdk.views import BookRisk
from keeperd.risk.cascade import (
    Asset,
    CascadeResult,
    Columns,
    Portfolio,
    run_cascade,
    shock_grid,
    with_followers,
)
from keeperd.risk.depth import ConstantProduct, DepthCurve, DepthModel, NoImpact
from keeperd.state_files import write_json

log = structlog.get_logger(__name__)

# How recent the realised bad debt's parts kept from the last run must be to be compared with
# at a start (`CascadeMonitor._load_bad_debt_seen`): a restart's, not a week off's.
BAD_DEBT_SEEN_FOR_S = 3_600
# How often the kept parts are written again unchanged: the time kept with them is the last
# evaluation's, not the last change's (parts that stood still for hours were ignored at a
# start, and a crash's bad debt realised during a kill went uncounted again — a review).
BAD_DEBT_SEEN_REFRESH_S = 300


def shock_label(shock: float) -> str:
    return f"{shock:g}"


def scenario_text(scenario: str, shock: float, numeraire: bool = False) -> str:
    """A scenario at a shock, as the cascade alert says it (`numeraire`: the scenario is the
    book's unit of account falling, `Asset.numeraire`)."""
    if scenario == "joint":
        return f"a {shock:.0%} drop of every non-stable asset at once"
    if numeraire:
        return (f"a {shock:.0%} fall of USD against every other asset (each up "
                f"{1 / (1 - shock) - 1:.0%}: shorts squeezed)")
    return f"a {shock:.0%} drop of {scenario}"


# A protocol's book -> its portfolio and the description of its asset columns.
Describe = Callable[[Any], tuple[Portfolio, list[Asset]] | None]
# A plug-in's depth for each asset column of its book, at a block.
DepthOf = Callable[[Any, Sequence[Asset], int], Awaitable[list[DepthModel] | None]]


def columns_for(assets: Sequence[Asset], config: CascadeConfig) -> Columns:
    symbols = [a.symbol for a in assets]
    # (a perp book's cash, its unit of account, is never part of the joint "everything
    # correlated" move: every column falling together, the unit with them, moves nothing
    # against it, and Curie's joint scenario liquidated no one at any shock)
    stables = ({s.lower() for s in config.stable_assets}
               | {a.symbol.lower() for a in assets if a.numeraire})
    joint = [s for s in symbols if s.lower() not in stables]
    return with_followers(shock_grid(symbols, config.shocks, joint=joint), symbols,
                          {a.symbol: a.follows for a in assets if a.follows})


def baseline_columns(assets: Sequence[Asset]) -> Columns:
    """One column at today's prices: nothing shocked, so every scenario shares it."""
    n = len(assets)
    return Columns(("baseline",), np.zeros(1), np.ones((1, n)), np.zeros((1, n), dtype=bool))


async def read_depth(config: CascadeConfig, assets: Sequence[Asset], pool: RpcPool, block: int
                     ) -> list[DepthModel]:
    """One depth model per asset column, in order."""
    out: list[DepthModel] = []
    for asset in assets:
        spec = config.depth.get(asset.symbol)
        if isinstance(spec, ConstantProductDepth):
            out.append(ConstantProduct(spec.reserve_tokens))
        elif isinstance(spec, CurveDepth):
            out.append(DepthCurve(tuple(p[0] for p in spec.points),
                                  tuple(p[1] for p in spec.points), asset.price_usd))
        elif isinstance(spec, UniswapV3Depth):
            out.append(await uniswap_v3_depth(pool, spec.pool, asset.address, asset.decimals,
                                              block))
        else:
            out.append(NoImpact())
    return out


class CascadeMonitor:
    def __init__(self, config: CascadeConfig, chain: str, protocol: str, pool: RpcPool,
                 metrics: Metrics, alerts: AlertEngine | None = None,
                 alerts_config: AlertsConfig | None = None,
                 describe: Describe | None = None,
                 depth_of: DepthOf | None = None,
                 book_risk: Callable[[Any], BookRisk | None] | None = None,
                 after_work: Callable[[], Awaitable[bool]] | None = None,
                 state_dir: Path | None = None) -> None:
        self.config = config
        # What a catch-up evaluation waits for first (the daemon's order: no liquidation path
        # running, as for the scanner's own after-work)
        self.after_work = after_work
        # The last book skipped by min_interval_s, evaluated once the interval has passed if
        # no block came meanwhile: a crash's wave on a quiet chain left the figures (and a
        # cascade_risk alert) on the block before it until the next block (a by-hand trial).
        self._skipped: tuple[Any, int] | None = None
        self._catch_up: asyncio.Task[None] | None = None
        self.chain = chain
        self.protocol = protocol
        self.pool = pool
        self.metrics = metrics
        self.alerts = alerts
        self.alerts_config = alerts_config
        # The plug-in's description of its book (its `describe`); None: nothing to model.
        self.describe = describe
        # The plug-in's own depth for its book (Curie: its markets' pools), else the config's.
        self.depth_of = depth_of
        # The plug-in's own insurance fund (Curie's), when the config names none.
        self.book_risk = book_risk
        self.last: CascadeResult | None = None
        self.baseline: CascadeResult | None = None
        self.last_block = -1
        self.fund_usd: float | None = None
        # Each part of the protocol's realised bad debt at the last evaluation that knew them
        # (`_publish_bad_debt`; None: none yet).
        # Kept in `state_dir` across a restart, for BAD_DEBT_SEEN_FOR_S: a crash during which
        # keeperd restarted (a kill, a deploy, a failover) realised $28k of bad debt that the
        # counter never saw, its first evaluation after the start only recording (a trial).
        self._bad_debt_file = (state_dir / f"bad-debt-seen-{chain}-{protocol}.json"
                               if state_dir is not None else None)
        self._bad_debt_seen: dict[str, float] | None = self._load_bad_debt_seen()
        self._bad_debt_saved_at = 0.0  # (time.time() of the last write)
        self.no_fund = False  # (the protocol has none: its coverage is not published)
        self._last_at = 0.0
        self._running = False

    def configure_alerts(self, config: AlertsConfig) -> None:
        """SIGHUP: the cascade rule's new thresholds and route."""
        self.alerts_config = config

    async def on_scan(self, result: Any) -> None:
        """The scanner's listener: its full results, not the partial ones."""
        if not result.partial:
            await self.on_book(result.book, result.block)

    async def on_book(self, book: Any, block: int) -> None:
        if not self.config.enabled or self._running:
            return
        now = time.monotonic()
        if self.last_block >= 0 and (block - self.last_block < self.config.every_blocks
                                     or now - self._last_at < self.config.min_interval_s):
            if block - self.last_block >= self.config.every_blocks:  # (skipped for time)
                self._skipped = (book, block)
                if self._catch_up is None or self._catch_up.done():
                    self._catch_up = asyncio.get_running_loop().create_task(
                        self._evaluate_skipped(self.config.min_interval_s
                                               - (now - self._last_at) + 0.05),
                        name=f"cascade-catch-up:{self.protocol}")
            return
        self._skipped = None
        self._running = True
        try:
            await self.evaluate(book, block)
        except Exception as exc:  # the figures wait for the next block; nothing else stops
            log.warning("cascade.evaluation_failed", protocol=self.protocol,
                        error=f"{type(exc).__name__}: {exc}")
        finally:
            self._running = False
            self._last_at = time.monotonic()

    async def _evaluate_skipped(self, delay_s: float) -> None:
        await asyncio.sleep(max(0.0, delay_s))
        skipped = self._skipped
        if skipped is None or skipped[1] <= self.last_block:
            return  # (a later block was evaluated meanwhile)
        if self.after_work is not None:
            await self.after_work()
        if self._skipped is skipped:
            await self.on_book(*skipped)

    async def close(self) -> None:
        if self._catch_up is not None:
            self._catch_up.cancel()
            await asyncio.gather(self._catch_up, return_exceptions=True)

    async def evaluate(self, book: Any, block: int) -> CascadeResult | None:
        described = self.describe(book) if self.describe is not None else None
        if described is None:
            return None
        portfolio, assets = described
        assert tuple(a.symbol for a in assets) == tuple(portfolio.assets)
        columns = columns_for(assets, self.config)
        # (before the depth read: a crash's quote failing there left what it realised
        # unpublished — a review)
        risk = self.book_risk(book) if self.book_risk is not None else None
        self._publish_bad_debt(risk)
        own = (await self.depth_of(book, assets, block) if self.depth_of is not None
               else None)  # (None: the protocol trades against the chain's spot market)
        depth = own if own is not None else await read_depth(self.config, assets, self.pool,
                                                              block)
        self.fund_usd = await self._fund(risk, assets, block)
        run = functools.partial(run_cascade, portfolio, depth=depth,
                                max_rounds=self.config.max_rounds,
                                tolerance=self.config.tolerance, threads=self.config.threads)

        def grid_and_baseline() -> tuple[CascadeResult, CascadeResult]:
            return run(columns=columns), run(columns=baseline_columns(assets))

        started = time.perf_counter()
        result, baseline = await asyncio.to_thread(grid_and_baseline)
        seconds = time.perf_counter() - started
        self.metrics.cascade_duration.labels(self.chain, self.protocol).observe(seconds)
        self.last, self.baseline, self.last_block = result, baseline, block
        self._publish(result, depth, assets, baseline)
        self._publish_baseline(baseline)
        await self._alert(result, block, {a.symbol for a in assets if a.numeraire})
        worst = int(np.argmax(result.bad_debt)) if len(result.bad_debt) else None
        log.info("cascade.evaluated", protocol=self.protocol, block=block,
                 positions=len(portfolio), columns=len(columns.shock),
                 seconds=round(seconds, 4),
                 worst=None if worst is None else {
                     "asset": columns.scenario[worst], "shock": float(columns.shock[worst]),
                     "bad_debt_usd": round(float(result.bad_debt[worst]), 2),
                     "amplification": round(float(result.amplification[worst]), 4)})
        return result

    def _publish_bad_debt(self, risk: BookRisk | None) -> None:
        """The bad debt the protocol carries (`keeperd_bad_debt_outstanding_usd`; NaN while
        unknown), and each increase of a part of it since the last evaluation, priced now
        (`keeperd_bad_debt_realised_usd_total`): what a crash already did — the grid's
        figures fall once it has liquidated the book, and its rules resolved while the bad
        debt stayed (a by-hand trial). The first evaluation only records the parts: a
        start's deficit is not news."""
        if risk is None or (risk.outstanding_bad_debt_usd is None
                            and risk.bad_debt_parts is None):
            return
        labels = (self.chain, self.protocol)
        outstanding = risk.outstanding_bad_debt_usd  # (NaN: the protocol's read failed)
        self.metrics.bad_debt_outstanding.labels(*labels).set(
            math.nan if outstanding is None else outstanding)
        realised = self.metrics.bad_debt_realised.labels(*labels)  # (0 from the first)
        parts = risk.bad_debt_parts
        if parts is None:
            return  # (unknown this time: compared with the next known reading)
        seen = self._bad_debt_seen
        if seen is not None:
            grown = sum((amount - seen.get(key, 0.0)) * usd
                        for key, (amount, usd) in parts.items()
                        if amount > seen.get(key, 0.0))
            if grown > 0:
                realised.inc(grown)
                log.warning("cascade.bad_debt_realised", protocol=self.protocol,
                            usd=round(grown, 2), outstanding_usd=round(outstanding, 2)
                            if outstanding is not None else None)
        now_seen = {key: amount for key, (amount, _) in parts.items()}
        if now_seen != seen or time.time() - self._bad_debt_saved_at >= BAD_DEBT_SEEN_REFRESH_S:
            self._save_bad_debt_seen(now_seen)
        self._bad_debt_seen = now_seen

    def _load_bad_debt_seen(self) -> dict[str, float] | None:
        """The parts the last run saw, if it saw them lately (an older file's growth since
        is not this half hour's news: the start records, as it did)."""
        if self._bad_debt_file is None:
            return None
        try:
            kept = json.loads(self._bad_debt_file.read_text())
            if time.time() - float(kept["at"]) > BAD_DEBT_SEEN_FOR_S:
                return None
            return {str(k): float(v) for k, v in dict(kept["parts"]).items()}
        except (OSError, ValueError, KeyError, TypeError):
            return None  # (none, or unreadable: the first evaluation records)

    def _save_bad_debt_seen(self, parts: dict[str, float]) -> None:
        if self._bad_debt_file is None:
            return
        now = time.time()
        self._bad_debt_saved_at = now  # (a failed write too: tried again a refresh later)
        try:
            write_json(self._bad_debt_file, {"at": now, "parts": parts})
        except OSError as exc:  # (a full disk: the counter goes on in memory)
            log.warning("cascade.bad_debt_seen_unwritten", protocol=self.protocol,
                        error=str(exc)[:200])

    async def _fund(self, risk: BookRisk | None, assets: Sequence[Asset], block: int
                    ) -> float | None:
        fund = self.config.fund_for(self.protocol)
        self.no_fund = False
        if fund is None:
            value = risk.insurance_fund_usd if risk is not None else None
            self.no_fund = risk is not None and risk.no_fund
            if value is not None:
                self.metrics.cascade_fund.labels(self.chain, self.protocol).set(value)
            return value
        if fund.usd is not None:
            value = fund.usd
        else:
            assert fund.token is not None and fund.holder is not None
            token = next((a for a in assets if a.symbol == fund.token), None)
            if token is None:
                raise ValueError(f"risk.cascade.insurance_fund.token {fund.token!r} is not an "
                                 f"asset of {self.protocol} ({[a.symbol for a in assets]})")
            balance = await ContractCall(token.address, "balanceOf(address)", ["address"],
                                         [fund.holder]).call(self.pool, block)
            value = balance / 10**token.decimals * token.price_usd
        self.metrics.cascade_fund.labels(self.chain, self.protocol).set(value)
        return value

    def _publish(self, r: CascadeResult, depth: list[DepthModel], assets: list[Asset],
                 baseline: CascadeResult) -> None:
        """The grid's figures. The critical shock and the depth coverage count what a shock
        liquidates beyond today's liquidatable positions (the baseline, published beside):
        with them counted, a stablecoin's 1 % "liquidated" the baseline and its market was
        "too thin" for the WETH the baseline sells (alerts for every asset, a trial)."""
        m = self.metrics
        base = (self.chain, self.protocol)
        coverage = r.depth_coverage(depth, np.array([a.bonus for a in assets]),
                                    baseline.tokens_sold[0])
        for k, (scenario, shock) in enumerate(zip(r.columns.scenario, r.columns.shock,
                                                  strict=True)):
            s = shock_label(float(shock))
            for model, accounts, repaid, seized, bonus_paid, bad in (
                    ("static", r.static_accounts, r.static_repaid, r.static_seized,
                     r.static_bonus, r.static_bad_debt),
                    ("cascade", r.accounts, r.repaid, r.seized, r.bonus, r.bad_debt)):
                labels = (*base, scenario, s, model)
                m.cascade_accounts.labels(*labels).set(int(accounts[k]))
                m.cascade_liquidated_debt.labels(*labels).set(float(repaid[k]))
                m.cascade_seized.labels(*labels).set(float(seized[k]))
                m.cascade_bonus.labels(*labels).set(float(bonus_paid[k]))
                m.cascade_bad_debt.labels(*labels).set(float(bad[k]))
                if self.fund_usd is not None and not self.no_fund:
                    ratio = self.fund_usd / float(bad[k]) if bad[k] > 0 else math.inf
                    m.cascade_fund_coverage.labels(*labels).set(ratio)
            labels4 = (*base, scenario, s)
            m.cascade_amplification.labels(*labels4).set(float(r.amplification[k]))
            m.cascade_final_drop.labels(*labels4).set(float(r.final_drop[k]))
            m.cascade_rounds.labels(*labels4).set(int(r.rounds[k]))
            m.cascade_depth_coverage.labels(*labels4).set(float(coverage[k].min()))
            m.cascade_toxic_debt.labels(*labels4, "without").set(float(r.toxic_debt[k]))
            m.cascade_toxic_debt.labels(*labels4, "with").set(
                float(r.toxic_debt_with_slippage[k]))
        for scenario in dict.fromkeys(r.columns.scenario):
            critical = r.critical_shock(scenario, self.config.min_liquidation_usd,
                                        float(baseline.repaid[0]))
            m.cascade_critical_shock.labels(*base, scenario).set(
                math.nan if critical is None else critical)
        m.cascade_block.labels(*base).set(self.last_block)

    def _publish_baseline(self, b: CascadeResult) -> None:
        m = self.metrics
        for model, accounts, repaid, bad in (
                ("static", b.static_accounts, b.static_repaid, b.static_bad_debt),
                ("cascade", b.accounts, b.repaid, b.bad_debt)):
            labels = (self.chain, self.protocol, model)
            m.cascade_baseline_accounts.labels(*labels).set(int(accounts[0]))
            m.cascade_baseline_liquidated_debt.labels(*labels).set(float(repaid[0]))
            m.cascade_baseline_bad_debt.labels(*labels).set(float(bad[0]))

    async def _alert(self, r: CascadeResult, block: int,
                     numeraires: set[str] | None = None) -> None:
        if self.alerts is None or self.alerts_config is None:
            return
        rule = self.alerts_config.rules.cascade
        route = self.alerts_config.route_for("cascade")
        if not rule.enabled or route is None:
            return
        # The grid shock closest to the rule's, the worst scenario at it.
        shocks = r.columns.shock
        target = shocks[int(np.argmin(np.abs(shocks - rule.shock)))]
        at = np.flatnonzero(shocks == target)
        worst = int(at[np.argmax(r.bad_debt[at])])
        bad = float(r.bad_debt[worst])
        scenario = r.columns.scenario[worst]
        moved = scenario_text(scenario, float(target), scenario in (numeraires or set()))
        levels = Levels(rule.warn_bad_debt_usd, rule.critical_bad_debt_usd, "above")
        labels = {"chain": self.chain, "protocol": self.protocol}
        severity = self.alerts.severity_for("cascade_risk", labels, bad, levels)
        fund = "" if self.fund_usd is None or bad <= 0 else (
            "; no insurance fund covers it" if self.fund_usd == 0
            else f"; the fund (${self.fund_usd:,.0f}) covers {self.fund_usd / bad:.0%}")
        # (its figures rest on the book's prices: one untrusted, the alert says so — and,
        # with inhibition: hold, waits — as a holder's does; it fired on a price the breaker
        # distrusted, unannotated, a trial)
        priced = set(r.columns.scenario)
        # (operator advice: the operator may act on the figures — `alerts/inhibition.py`)
        inhibited = tuple(operator_note(a, why) for a, why in
                          sorted(self.alerts.untrusted.get(self.chain, {}).items())
                          if a in priced)
        await self.alerts.observe([Condition(
            "cascade_risk", route, labels, severity, bad, levels,
            self.alerts.repeat_interval(route),
            summary=f"{moved} would leave ${bad:,.0f} of bad debt on {self.protocol} after a "
                    f"{int(r.rounds[worst])}-round cascade (final drop "
                    f"{float(r.final_drop[worst]):.1%}){fund}",
            # (the worst scenario now, which may not be the one that fired: said as such)
            resolved_summary=f"the worst bad debt a {float(target):.0%} shock leaves on "
                             f"{self.protocol} is back to ${bad:,.0f} (now {moved})",
            action=("Review the largest positions in the assets it moves and the depth "
                    "assumptions; consider lower caps or higher thresholds for them."
                    if scenario == "joint" or scenario in (numeraires or set()) else
                    f"Review the largest positions in {scenario} and the depth assumptions; "
                    "consider lower caps or higher thresholds for it."),
            details={"scenario": scenario, "shock": float(target), "bad_debt_usd": round(bad, 2),
                     "amplification": round(float(r.amplification[worst]), 4),
                     "fund_usd": self.fund_usd},
            inhibited_by=inhibited)], self.chain, block)
