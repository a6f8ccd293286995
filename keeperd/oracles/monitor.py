"""Watches the feeds of one protocol every block and drives the circuit breaker."""

from __future__ import annotations

import asyncio
import time

import structlog
from eth_abi import decode

from keeperd.chain.multicall import Call, encode_call
from keeperd.config import OraclesConfig
from keeperd.metrics import Metrics
from keeperd.oracles.breaker import Breaker
from keeperd.oracles.chainlink import read_feeds
from keeperd.oracles.checks import (
    FeedPolicy,
    FeedReading,
    Problem,
    PythPrice,
    check_feed,
    check_pyth,
)
from keeperd.oracles.references import References, median_price
from keeperd.oracles.sequencer import SequencerCheck
from keeperd.protocols.aave_v3.adapter import AaveV3Adapter
from keeperd.scanner import ScanResult

log = structlog.get_logger(__name__)


class OracleMonitor:
    def __init__(self, adapter: AaveV3Adapter, breaker: Breaker, config: OraclesConfig,
                 metrics: Metrics) -> None:
        self.adapter = adapter
        self.breaker = breaker
        self.config = config
        self.metrics = metrics
        self._previous: dict[str, FeedReading] = {}
        self._last_block = -1
        self.references = References(config.references, metrics, config.reference_timeout_s)
        self._medians: dict[str, float | None] = {}
        self._medians_at = float("-inf")
        self._standing: set[tuple[str, str]] = set()
        chain = adapter.chain_config
        self.sequencer = (SequencerCheck(adapter.multicall, chain.sequencer_uptime_feed,
                                         chain.sequencer_grace_period_s)
                          if chain.sequencer_uptime_feed is not None else None)

    def policy(self, symbol: str) -> FeedPolicy:
        return FeedPolicy(heartbeat_s=self.config.heartbeats.get(symbol, self.config.heartbeat_s),
                          max_jump=self.config.max_jump, bound_margin=self.config.bound_margin)

    async def _refresh_medians(self, assets: list[str]) -> None:
        """Reference medians, fetched at most every `reference_interval_s` (public APIs
        rate-limit); between fetches the last medians stand."""
        if not self.config.references:
            return
        now = time.monotonic()
        if now - self._medians_at < self.config.reference_interval_s:
            return
        self._medians_at = now
        quotes = await asyncio.gather(*(self.references.quotes(a) for a in assets))
        self._medians = {a: median_price(q, self.config.min_sources)
                         for a, q in zip(assets, quotes, strict=True)}

    async def _sequencer_problem(self, now: int, block: int) -> Problem | None:
        return None if self.sequencer is None else await self.sequencer.problem(now, block)

    async def _pyth_problems(self, now: int, block: int) -> dict[str, list[Problem]]:
        pyth = self.config.pyth
        if pyth is None:
            return {}
        assets = list(pyth.feeds)
        results = await self.adapter.multicall.aggregate3(
            [Call(pyth.contract, encode_call("getPriceUnsafe(bytes32)", ["bytes32"],
                                             [bytes.fromhex(pyth.feeds[a][2:])]))
             for a in assets], block)
        out: dict[str, list[Problem]] = {}
        for asset, res in zip(assets, results, strict=True):
            if not res.success:
                out[asset] = [Problem("pyth_stale", "no Pyth price for this feed")]
                continue
            price, conf, expo, publish_time = decode(["int64", "uint64", "int32", "uint256"],
                                                     res.data)
            p = PythPrice(asset, price, conf, expo, publish_time)
            out[asset] = check_pyth(p, now, pyth.max_age_s, pyth.max_conf_ratio)
            if price > 0:
                self.metrics.pyth_conf_ratio.labels(self.adapter.chain, asset).set(conf / price)
            self.metrics.pyth_age.labels(self.adapter.chain, asset).set(
                max(0, now - publish_time))
        return out

    async def close(self) -> None:
        await self.references.close()

    async def on_scan(self, result: ScanResult) -> None:
        """Runs before the executor on every scan result (once per block)."""
        if result.block == self._last_block or self.adapter.reader is None:
            return
        self._last_block = result.block
        header = await self.adapter.pool.request("eth_getBlockByNumber",
                                                 [hex(result.block), False])
        now = int(header["timestamp"], 16) if header else 0
        readings = await read_feeds(self.adapter.multicall, self.adapter.reader.addresses.oracle,
                                    result.book.market.reserves, result.block)
        chain = self.adapter.chain
        await self._refresh_medians([r.asset for r in readings])
        sequencer = await self._sequencer_problem(now, result.block)
        pyth = await self._pyth_problems(now, result.block)
        for reading in readings:
            problems = check_feed(reading, now, self.policy(reading.asset),
                                  self._previous.get(reading.asset))
            median = self._medians.get(reading.asset)
            if median:
                deviation = abs(reading.price - median) / median
                self.metrics.oracle_deviation.labels(chain, reading.asset).set(deviation)
                if deviation > self.config.max_deviation:
                    problems.append(Problem("deviation", f"oracle {reading.price:g} vs "
                                            f"reference median {median:g} ({deviation:.1%})"))
            self._previous[reading.asset] = reading
            if sequencer is not None:
                problems.append(sequencer)
            problems += pyth.get(reading.asset, [])
            self.metrics.oracle_price.labels(chain, reading.asset).set(reading.price)
            if reading.freshness != "unknown":
                self.metrics.oracle_age.labels(chain, reading.asset).set(
                    max(0, now - reading.updated_at))
            for p in problems:
                if not p.trips:
                    self.metrics.oracle_anomalies.labels(chain, reading.asset, p.kind).inc()
                    if (reading.asset, p.kind) in self._standing:
                        continue  # a standing condition is logged once, counted every block
                    if p.kind == "freshness_unknown":
                        self._standing.add((reading.asset, p.kind))
                    log.warning("oracle.anomaly", chain=chain, asset=reading.asset,
                                kind=p.kind, detail=p.detail, block=result.block)
            change = await self.breaker.observe(
                reading.asset, [f"{p.kind}: {p.detail}" for p in problems if p.trips], now,
                chain=chain, block_hash=header["hash"] if header else None)
            if change is not None:
                self.metrics.breaker_transitions.labels(
                    chain, reading.asset, "tripped" if change.tripped else "reset").inc()
                (log.warning if change.tripped else log.info)(
                    "breaker.tripped" if change.tripped else "breaker.reset",
                    chain=chain, asset=reading.asset, reason=change.reason, block=result.block)
        tripped = await self.breaker.tripped()
        for reserve in result.book.market.reserves:
            self.metrics.breaker_state.labels(chain, reserve.symbol).set(
                1 if reserve.symbol in tripped else 0)
