"""The price watch of one chain: every block, the feeds every protocol on the chain declared
(`Plugin.price_feeds`, `protocols/sdk/feeds.py`) are read and judged once, the sequencer too, and
the circuit breaker is driven per (chain, asset). One per chain, built by the daemon; no
protocol is named here.

Per block, the first protocol's scan to arrive has the chain's feeds judged (its own as
declared now, the others' USD feeds as they declared them last): one multicall for the chain,
whatever the number of protocols. Each later scan of the block judges only what it declares
anew (a market's rate read into its book). A market's rate is judged by its own protocol's
scan only, against the prices trusted at the block it was read at (a scan of an older block
arriving late: that block's). Problems are gathered per asset over every feed of the block
before the breaker sees them, so two feeds of one symbol (two Aave markets on a chain, Curie's
index beside Aave's source) never flap it.

The executor of a protocol acts on a block only once the watch has judged that protocol's
feeds at that block (`gate`): a watch that could not read the prices holds liquidations, never
lets them through on last block's word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from eth_abi import decode

from keeperd.chain.multicall import Call, CallResult, Multicall, encode_call, selector
from keeperd.chain.rpc import RpcPool
from keeperd.config import ChainConfig, OraclesConfig
from keeperd.metrics import Metrics
from keeperd.oracles.breaker import Breaker
from keeperd.oracles.chainlink import decode_feeds, feed_calls, read_feeds
from keeperd.oracles.checks import (
    FeedPolicy,
    FeedReading,
    Problem,
    PythPrice,
    check_feed,
    check_pyth,
    source_replaced,
)
from keeperd.oracles.heartbeats import Heartbeats, allowed_age
from keeperd.oracles.references import References, median_price
from keeperd.oracles.sequencer import SequencerCheck, SequencerWord
from keeperd.protocols.sdk.feeds import PriceFeed
from keeperd.state_files import write_json

log = structlog.get_logger(__name__)
# How long the second endpoint's reading of the feeds is waited for once the first's is in.
SECOND_READ_GRACE_S = 0.3
# Two endpoints' times of one block further apart than this are said (`_say_time_gap`).
BLOCK_TIME_GAP_S = 60
# A block dated further than this past this machine's clock, while the other endpoint's time
# of it is within this of the clock, is a lie about the future (`_block_time`): a live chain's
# blocks are dated within seconds of the wall clock; a devnet whose time was moved forward is
# dated so by both.
FUTURE_DATED_S = 300
# Multicall3's `block.timestamp`: the second endpoint's time of the judged block, asked in the
# same request as its reading of the feeds (no request more, none on the first's path).
_BLOCK_TIMESTAMP = selector("getCurrentBlockTimestamp()")

# How long after the first rate without a reference the chain's other protocols are waited
# for to declare their feeds (a large book's first scan takes a while; one that never scans
# does not silence the warning): this many blocks and seconds both (5 blocks is ~1 s on an
# L2).
DECLARE_WITHIN_BLOCKS = 5
DECLARE_WITHIN_S = 120.0
# The trusted USD prices of this many recent blocks are kept: a slower protocol's late scan
# of one of them has its markets' rates judged against that block's prices (`judge`).
PRICES_KEPT_BLOCKS = 8


@dataclass(frozen=True)
class SecondReading:
    """The second endpoint's word on a block, at the judged header's hash: its name, its
    readings of the feeds, its time of the block (None: its multicall did not say) and the
    sequencer feed's answer (None: no sequencer feed on the chain)."""

    name: str
    readings: list[FeedReading]
    timestamp: int | None
    sequencer: SequencerWord | None


@dataclass(frozen=True)
class Gate:
    """What the executor may do on a block: `paused` assets hold the liquidations resting on
    them; `hold` (the watch has not judged this block, the sequencer is down) holds all."""

    paused: frozenset[str]
    hold: str | None


def rate_problem(feed: PriceFeed, usd: dict[str, float], max_deviation: float
                 ) -> tuple[Problem | None, float | None]:
    """A market's rate against the ratio of its assets' reference prices (pure): the problem
    (None when it agrees, or when a reference is missing) and the deviation."""
    assert feed.rate is not None
    base, quote = usd.get(feed.base), usd.get(feed.quote)
    if not base or not quote:
        return None, None
    if feed.rate <= 0:
        return Problem("non_positive", f"{feed.label or feed.key} oracle answers "
                                       f"{feed.rate:g}"), None
    expected = base / quote
    deviation = abs(feed.rate - expected) / expected
    if deviation > max_deviation:
        return Problem("deviation", f"{feed.label or feed.key} oracle {feed.rate:g} "
                                    f"{feed.quote} per {feed.base} vs references "
                                    f"{expected:g} ({deviation:.1%})"), deviation
    return None, deviation


class ChainPriceWatch:
    def __init__(self, chain: ChainConfig, pool: RpcPool, breaker: Breaker,
                 config: OraclesConfig, metrics: Metrics, state_dir: Path | None = None,
                 *, wall_clock: Callable[[], float] = time.time) -> None:
        self.chain = chain.name
        self.wall_clock = wall_clock  # (only to tell a block dated in the future: `_block_time`)
        self.pool = pool
        self.multicall = Multicall(pool, address=chain.multicall3)
        # Each aggregator's heartbeat, learnt from its rounds (a day-heartbeat feed was
        # "stale" under the one default hour: oracles/heartbeats.py)
        self.heartbeats = Heartbeats(self.multicall)
        self._learning: asyncio.Task[None] | None = None
        self.breaker = breaker
        self.config = config
        self.metrics = metrics
        self.reference_feeds = [PriceFeed(symbol, address)
                                for symbol, address in chain.reference_feeds.items()]
        self._reference_sources = {(f.key, f.source.lower()) for f in self.reference_feeds}
        self.sequencer = (SequencerCheck(self.multicall, chain.sequencer_uptime_feed,
                                         chain.sequencer_grace_period_s)
                          if chain.sequencer_uptime_feed is not None else None)
        self.references = References(config.references, metrics, config.reference_timeout_s)
        self._declared: dict[str, list[PriceFeed]] = {}  # protocol -> its feeds, last said
        # The chain's protocols (`expect`), and when a rate first lacked a reference: until
        # each has declared its feeds (or DECLARE_WITHIN_BLOCKS and _S have passed), a
        # market rate with no reference yet is not said to have none — another protocol's
        # feeds may be it.
        self._expected: set[str] = set()
        self._first_judged: tuple[int, float] | None = None  # (block, monotonic time)
        self._previous: dict[tuple[str, str], FeedReading] = {}  # (key, source) -> reading
        # (key, new source) -> (key, the source it replaced in a protocol's declaration)
        self._replacing: dict[tuple[str, str], tuple[str, str]] = {}
        # (key, source) -> (what replaced what at which block, the replaced source's last
        # price): a source that replaced another with a jump past max_jump, no reference for
        # other markets' oracles until it agrees with another trusted price of its asset or
        # comes back near the replaced one's (`_prove`). (Aave's WETH source replaced by a
        # feed 29 % off became the reference of Morpho's WETH markets, whose own oracles were
        # right, and paused them: a by-hand trial.)
        # Kept in the state directory (`doubted_file`): a restart has no reading of the
        # replaced source to compare with, and trusted the new one again — Morpho's right
        # market paused at the first block after it (a by-hand trial).
        self.doubted_file = (state_dir / f"oracle-doubted-{chain.name}.json"
                             if state_dir is not None else None)
        self._unproven: dict[tuple[str, str], tuple[str, float]] = self._load_doubted()
        self._medians: dict[str, float | None] = {}
        self._medians_at = float("-inf")
        self._standing: set[tuple[str, str]] = set()
        # Told of a price source replaced: (asset, what replaced what, the jump from the old
        # source's last price or None, block). The daemon points it at the alert engine: a
        # replaced source was a Prometheus alert alone, no message (a by-hand trial).
        self.on_source_changed: Callable[[str, str, str | None, int], None] | None = None
        self._anomaly_series: set[str] = set()  # assets whose anomaly counters are exported
        self._lock = asyncio.Lock()
        # This block's work: its number, header, the feeds judged, problems per asset, the
        # USD prices it trusts (judged feeds and reference medians), the sequencer's word.
        self._block = -1
        self._header: dict[str, str] | None = None
        self._judged: set[PriceFeed] = set()
        self._problems: dict[str, list[str]] = {}
        self._usd: dict[str, float] = {}
        # The USD prices trusted at each recent block (its `_usd`, by block), for the rates
        # of a late scan of that block.
        self._usd_of: dict[int, dict[str, float]] = {}
        self._sequencer: Problem | None = None
        # The block's time as the feeds are judged by (the later of the first endpoint's
        # header and the second's word: a lie can only make a feed look staler) and as the
        # sequencer's grace period is (the earlier: a lie can only make it longer); and what
        # each endpoint said of the sequencer.
        self._now = self._grace_now = 0
        self._sequencer_words: list[SequencerWord] = []
        self._time_gap_told = 0  # (minutes two endpoints' times of a block were last apart)
        self._judged_for: dict[str, int] = {}  # protocol -> the last block judged for it
        # The USD feeds of a block judged ahead, while a path's read is in flight (`prepare`)
        self._preparing: tuple[int, asyncio.Task[None]] | None = None
        self.unchecked: set[str] = set()  # market keys said to have no reference

    # --- the executor's question ----------------------------------------------------------

    async def gate(self, protocol: str, block: int) -> Gate:
        paused = frozenset(await self.breaker.tripped(self.chain))
        if self._judged_for.get(protocol, -1) < block:
            return Gate(paused, f"the price watch has not judged block {block} (its feed "
                                "reads or its breaker's database failed: the error is "
                                "logged as positions.listener_failed): nothing is sent on "
                                "unjudged prices")
        if self._sequencer is not None and self._block == block:
            return Gate(paused, f"sequencer: {self._sequencer.detail}")
        return Gate(paused, None)

    def expect(self, protocol: str) -> None:
        """`protocol` runs on this chain: its feeds will be declared at its first scan."""
        self._expected.add(protocol)

    def _all_declared(self, block: int) -> bool:
        if self._first_judged is None:
            self._first_judged = (block, time.monotonic())
        first_block, first_at = self._first_judged
        return (self._expected <= self._declared.keys()
                or (block - first_block >= DECLARE_WITHIN_BLOCKS
                    and time.monotonic() - first_at >= DECLARE_WITHIN_S))

    def known_assets(self) -> set[str]:
        """Every asset the watch judges on this chain (the breaker's names: CLI checks)."""
        return {f.key for feeds in self._declared.values() for f in feeds}

    def labels(self) -> dict[str, str]:
        """The names of the breaker's keys that are not an asset's symbol (a Morpho market's
        `morpho:<id>` -> "morpho WETH/USDC (86%)"), as the protocols last declared them: the
        alerts name the market, not only its id."""
        # (a market's rate only: a USD feed's key is its asset's symbol, and Curie's index
        # feed of WETH, labelled "curie-devnet vETH index", renamed every protocol's WETH in
        # every alert — an Aave holder's too, a by-hand trial)
        return {f.key: f.label for feeds in self._declared.values() for f in feeds
                if f.is_rate and f.label and f.label != f.key}

    # --- the scanners' hooks ---------------------------------------------------------------

    def prepare(self, block: int) -> None:
        """A path of this chain starts reading `block`: every USD feed the protocols declared
        (and the references) is judged now, in a task, while the node answers that read —
        not on the first path's liquidation path after its read, where it cost the first
        protocol of a crash ~1 ms of every other protocol's feeds (bench/isolation.py).
        A market's rate is judged in its own protocol's `judge`: it comes with the book; the
        references it is checked against are judged here (with Morpho alone on a chain, no
        USD feed is declared, and they were read on its path after its read: ~0.5 ms)."""
        if block <= self._block or (self._preparing is not None
                                    and self._preparing[0] >= block):
            return
        self._preparing = (block, asyncio.get_running_loop().create_task(
            self._prepare(block), name=f"{self.chain}:price-watch:{block}"))

    async def _prepare(self, block: int) -> None:
        async with self._lock:
            if block <= self._block:
                return  # (a path's own `judge` came first)
            try:
                await self._start_block(block)
                declared = [f for feeds in self._declared.values() for f in feeds]
                await self._judge(block, [f for f in declared if not f.is_rate],
                                  references=any(f.is_rate for f in declared))
            except asyncio.CancelledError:
                self._block = -1
                raise
            except Exception as exc:
                # Nothing judged ahead: the first path's `judge` starts the block again and
                # meets the error itself (its listener's policy: logged, the gate holds).
                self._block = -1
                log.debug("oracle.prepare_failed", chain=self.chain, block=block,
                          error=f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        for task in (self._preparing[1] if self._preparing is not None else None,
                     self._learning):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.references.close()

    # --- the scanner's listener -----------------------------------------------------------

    async def judge(self, protocol: str, block: int, feeds: Sequence[PriceFeed]) -> None:
        """Judge `protocol`'s feeds at `block` (and, first in a block that `prepare` did not
        start, every protocol's USD feeds)."""
        async with self._lock:  # two protocols' scans of one block: one read of the chain
            self._note_replaced(protocol, self._declared.get(protocol), feeds)
            self._declared[protocol] = list(feeds)
            if block < self._block:
                # An older block's late scan (a slow path; another protocol's path, or
                # `prepare`, already started the next block): the newer judgement stands;
                # what it has not judged of this protocol's USD feeds is judged at the newer
                # block, its markets' rates (read at the older block) against the prices of
                # the older block. Its liquidations were held for a whole block as
                # "unjudged" before (Curie's path on the devnet, every crash).
                todo = [f for f in feeds if f not in self._judged]
                usd = [f for f in todo if not f.is_rate]
                if usd:
                    await self._judge(self._block, usd)
                await self._judge_late_rates(block, [f for f in todo if f.is_rate])
                self._judged_for[protocol] = max(self._judged_for.get(protocol, -1), block)
                return
            if block > self._block:
                await self._start_block(block)
                # (the other protocols' USD feeds are read at this block; their markets'
                # rates are as their books held them at an older block, judged by their
                # own scans of this one: against this block's prices, a crash between the
                # two is a deviation of the old rate, and tripped a right Morpho market for
                # clear_after_s — every one of its liquidations of the crash held)
                todo = [f for other, declared in self._declared.items() for f in declared
                        if other == protocol or not f.is_rate]
            else:
                todo = [f for f in feeds if f not in self._judged]
            await self._judge(block, todo)
            self._judged_for[protocol] = block

    def _note_replaced(self, protocol: str, before: Sequence[PriceFeed] | None,
                       now: Sequence[PriceFeed]) -> None:
        """A protocol's feed of a key whose source changed since its last declaration
        (governance's `setAssetSources`): its first reading is judged against the replaced
        source's last (`source_replaced`). The watch keeps readings by (key, source): a new
        source had no previous reading, and WETH's source swapped to a feed 29 % away went
        untold (a by-hand trial)."""
        if not before:
            return
        old = {(f.key, f.source) for f in before}
        new = {(f.key, f.source) for f in now}
        gone = {key: (key, source) for key, source in old - new}
        for key, source in new - old:
            if key in gone:
                self._replacing[(key, source)] = gone[key]
        # A source no protocol reads any more leaves the gauges (its last price, frozen,
        # stood beside the new source's)
        still = {(f.key, f.source) for other, feeds in self._declared.items()
                 if other != protocol for f in feeds} | new
        for key, source in old - still:
            for gauge in (self.metrics.oracle_price, self.metrics.oracle_age):
                with contextlib.suppress(KeyError):
                    gauge.remove(self.chain, key, source)

    async def _start_block(self, block: int) -> None:
        header = await self.pool.request("eth_getBlockByNumber", [hex(block), False])
        if header is None:
            raise RuntimeError(f"{self.chain}: no header for block {block}")
        self._block, self._header = block, header
        self._judged, self._problems, self._usd = set(), {}, {}
        self._usd_of[block] = self._usd  # (filled in as the block is judged)
        for old in [b for b in self._usd_of if b <= block - PRICES_KEPT_BLOCKS]:
            del self._usd_of[old]
        self._now = self._grace_now = int(header["timestamp"], 16)
        self._sequencer_words = ([await self.sequencer.read(block)]
                                 if self.sequencer is not None else [])
        self._judge_sequencer()

    def _judge_sequencer(self) -> None:
        self._sequencer = (self.sequencer.judge(self._sequencer_words, self._grace_now)
                           if self.sequencer is not None else None)

    def _hear_second(self, second: SecondReading) -> None:
        """The second endpoint's time of the block and its sequencer word taken in. The
        first's header alone dated the block: one endpoint serving each head's real number
        and hash, its timestamp hours early, made a stale feed read fresh on both readings —
        no trip, no alert (a review)."""
        if second.timestamp is not None:
            self._now = self._block_time(self._now, second.timestamp)
            self._grace_now = min(self._grace_now, second.timestamp)
            self._say_time_gap(second)
        if second.sequencer is not None:
            self._sequencer_words.append(second.sequencer)
        self._judge_sequencer()

    def _block_time(self, first: int, second: int) -> int:
        """The time the feeds are judged against, from two endpoints' times of one block: the
        later (an endpoint dating its blocks early cannot make a stale feed read fresh), unless
        they are more than BLOCK_TIME_GAP_S apart and the later is dated over FUTURE_DATED_S
        past this machine's clock while the earlier is within FUTURE_DATED_S of it — one
        endpoint dating its blocks in the future made every feed stale and paused every
        liquidation on the chain (a stall by one endpoint, the session-36 note). Two endpoints
        agreeing are believed, however far their time is from the clock (a devnet's moved
        time, a chain that trails the clock); so is the later where the clock vouches for
        neither."""
        earlier, later = sorted((first, second))
        if later - earlier > BLOCK_TIME_GAP_S:
            clock = self.wall_clock()
            # (the earlier only where this machine's clock vouches for it: a clock that trails
            # the chain — a devnet's time moved on, a machine without NTP — must not hand the
            # judgement to an endpoint dating its blocks early)
            if later > clock + FUTURE_DATED_S and abs(earlier - clock) <= FUTURE_DATED_S:
                return earlier
        return later

    def _say_time_gap(self, second: SecondReading) -> None:
        """Two endpoints' times of one block apart by more than BLOCK_TIME_GAP_S: one of them
        lies (or serves another chain's state under its hashes), said when it starts and when
        its size moves by a minute, both named — a by-hand trial's first endpoint dated every
        header two hours early and nothing said so."""
        assert self._header is not None
        first = int(self._header["timestamp"], 16)
        assert second.timestamp is not None
        gap = second.timestamp - first
        minutes = round(gap / 60) if abs(gap) > BLOCK_TIME_GAP_S else 0
        if minutes != self._time_gap_told:
            (log.warning if minutes else log.info)(
                "oracle.block_time_disputed" if minutes else "oracle.block_time_agreed",
                chain=self.chain, block=int(self._header["number"], 16),
                first=f"endpoint {self.pool.ranked()[0].name}: {first}",
                second=f"{second.name}: {second.timestamp}", gap_s=gap,
                judged_by=self._now,
                meaning="feeds are judged against the later time (a stale one trips) unless "
                        "it is dated in the future by this machine's clock, the breaker's wait "
                        "by the first's clock; one of the two endpoints lies or is broken: "
                        "check both against a block explorer" if minutes else
                        "the two endpoints date the block alike again")
        self._time_gap_told = minutes

    async def _judge(self, block: int, feeds: Iterable[PriceFeed], references: bool = False
                     ) -> None:
        """Judge `feeds` at `block`, with the references not yet judged this block when
        there is anything to judge or `references` (a rate to come: `prepare`)."""
        assert self._header is not None
        feeds = list(dict.fromkeys(feeds))  # (the same feed declared twice is read once)
        usd_feeds = [f for f in feeds if not f.is_rate]
        rates = [f for f in feeds if f.is_rate]
        references_due = [f for f in self.reference_feeds if f not in self._judged] if (
            rates or usd_feeds or references) else []
        read = usd_feeds + references_due
        # (the sequencer's second word rides with the feeds' second reading: with no feed to
        # read — a market's rates alone, no `reference_feeds` — the first endpoint's word
        # stands, as `oracle.rate_unchecked` tells that operator to configure the references;
        # asked alone, it held the block's first judgement a round trip: a review)
        readings, second = (await self._read_twice(read, block) if read else ([], None))
        if second is not None:
            self._hear_second(second)
        now = self._now
        symbols = sorted({r.asset for r in readings} | {s for f in rates
                                                        for s in (f.base, f.quote)})
        await self._refresh_medians(symbols)
        pyth = await self._pyth_problems(now, block, {r.asset for r in readings})
        await self._learn_heartbeats(readings, block)
        touched: dict[str, list[str]] = {}
        unproven: list[tuple[PriceFeed, FeedReading]] = []
        for i, (feed, reading) in enumerate(zip(read, readings, strict=True)):
            previous = self._previous.get((feed.key, feed.source))
            problems = check_feed(reading, now, self.policy(reading.asset, reading), previous)
            replaced = self._replacing.pop((feed.key, feed.source), None)
            # (an unproven source replaced in turn hands its doubt on: a second replacement
            # near the first, no jump between them, trusted what the first was doubted for)
            doubt = self._unproven.pop(replaced, None) if replaced is not None else None
            jumped = None
            if previous is None and replaced in self._previous:
                found = source_replaced(reading, self._previous[replaced],
                                        self.policy(reading.asset, reading))
                problems += found
                jumped = next((p.detail for p in found if p.kind == "jump"), None)
            if self._named_reference(feed):
                pass  # (the operator named it a reference: never doubted)
            elif doubt is not None and replaced is not None:
                self._unproven[(feed.key, feed.source)] = (
                    f"{doubt[0]}; then {replaced[1]} -> {feed.source} at block {block}",
                    doubt[1])
            elif jumped is not None and replaced is not None:
                self._unproven[(feed.key, feed.source)] = (
                    f"{replaced[1]} -> {feed.source} at block {block}, {jumped}",
                    self._previous[replaced].price)
            if doubt is not None or (jumped and (feed.key, feed.source) in self._unproven):
                self._save_doubted()
            if second is not None:
                problems += self._second_problems(reading, second.readings[i], second.name,
                                                  now, problems)
            self._previous[(feed.key, feed.source)] = reading
            median = self._medians.get(reading.asset)
            if median and reading.price > 0:
                deviation = abs(reading.price - median) / median
                self.metrics.oracle_deviation.labels(self.chain, reading.asset).set(deviation)
                if deviation > self.config.max_deviation:
                    problems.append(Problem("deviation", f"oracle {reading.price:g} vs "
                                            f"reference median {median:g} ({deviation:.1%})"))
            problems += pyth.get(reading.asset, [])
            if any(p.trips for p in problems) or reading.price <= 0:
                pass
            elif feed in references_due or self._named_reference(feed):
                # (a feed the operator named a reference first: a protocol's own source
                # checking another protocol's oracle is second best)
                self._usd[reading.asset] = reading.price
            elif (feed.key, feed.source) in self._unproven:
                unproven.append((feed, reading))
            else:
                self._usd.setdefault(reading.asset, reading.price)
            # A reference's price is not what any position rests on: it stays out of the
            # protocol feeds' gauges (same labels; the two would overwrite each other).
            self._report(reading, problems, now, block, gauges=feed not in references_due)
            if feed in references_due:
                self._judged.add(feed)
                continue  # a reference is believed or not: it trips nothing
            self._judged.add(feed)
            touched.setdefault(feed.key, []).extend(
                f"{p.kind}: {p.detail}" for p in problems if p.trips)
        for symbol, median_usd in self._medians.items():
            if median_usd:
                self._usd.setdefault(symbol, median_usd)
        self._prove(unproven, block)
        self._forget_undeclared()
        unchecked_now = self._judge_rates(rates, self._usd, block, touched)
        for key, said in touched.items():
            self._problems.setdefault(key, []).extend(said)
        await self._observe(touched, block, unchecked_now)

    def _judge_rates(self, rates: Sequence[PriceFeed], usd: dict[str, float], block: int,
                     touched: dict[str, list[str]]) -> list[str]:
        """Markets' rates judged against `usd`, the USD prices trusted at the block they were
        read at (`block`): their problems into `touched`; the rates nothing checked (no
        trusted price of an asset) returned."""
        unchecked_now: list[str] = []
        for feed in rates:
            problem, rate_deviation = rate_problem(feed, usd, self.config.max_deviation)
            if rate_deviation is not None:
                self.metrics.oracle_deviation.labels(self.chain, feed.key).set(rate_deviation)
                if feed.key in self.unchecked:
                    self.unchecked.discard(feed.key)
                    log.info("oracle.rate_checked", chain=self.chain, asset=feed.key,
                             market=feed.label, meaning="its assets have reference prices now")
            elif feed.key not in self.unchecked and self._all_declared(block):
                # (its last deviation would stay on the dashboard, healthy-looking, while
                # nothing checks it: NaN, "not measured", as its help says — a trial)
                self.metrics.oracle_deviation.labels(self.chain, feed.key).set(math.nan)
                # (at a start, Morpho's first scan can come before Aave's feeds are declared:
                # "no reference" was said of markets Aave's feeds then checked every block)
                self.unchecked.add(feed.key)
                missing = [s for s in (feed.base, feed.quote) if not usd.get(s)]
                doubted = [f"{key}'s source {said}"
                           for (key, _), (said, _) in self._unproven.items() if key in missing]
                log.warning("oracle.rate_unchecked", chain=self.chain, asset=feed.key,
                            market=feed.label, missing=missing,
                            why="no trusted reference price for "
                                f"{' and '.join(missing)}"
                                + (f" (replaced, and not trusted as a reference until it "
                                   f"agrees with another price of its asset: "
                                   f"{'; '.join(doubted)})" if doubted else "")
                                + ": configure chains[].reference_feeds or oracles.references "
                                "for it; until then only the sequencer and manual trips "
                                "pause this market")
            if rate_deviation is None and problem is None:
                unchecked_now.append(feed.key)
            self._judged.add(feed)
            touched.setdefault(feed.key, []).extend(
                [f"{problem.kind}: {problem.detail}"] if problem is not None else [])
        return unchecked_now

    async def _judge_late_rates(self, block: int, rates: Sequence[PriceFeed]) -> None:
        """A late scan's markets' rates, read at `block` (older than the block being judged),
        against the USD prices trusted at `block` — a rate is only ever measured against
        prices of its own block — told to the breaker now. Not judged when `block`'s prices
        are not kept (never judged here, or PRICES_KEPT_BLOCKS behind): the breaker's state
        stands, and the protocol's next scan judges its rates."""
        if not rates:
            return
        usd = self._usd_of.get(block)
        if usd is None:
            log.debug("oracle.late_rates_unjudged", chain=self.chain, block=block,
                      judging=self._block, markets=[f.key for f in rates])
            return
        touched: dict[str, list[str]] = {}
        unchecked = self._judge_rates(rates, usd, block, touched)
        await self._observe(touched, self._block, unchecked, found=touched)

    def _prove(self, unproven: list[tuple[PriceFeed, FeedReading]], block: int) -> None:
        """An unproven source (`_unproven`) read this block is trusted once its price agrees,
        within `max_deviation`, with a trusted price of its asset this block (a reference
        feed, another protocol's source, the exchanges' median), or has come back within
        `max_deviation` of the replaced source's last price (the jump undone); until then it is
        no reference for other markets' oracles (it still prices its own protocol's
        positions: that protocol liquidates on it)."""
        for feed, reading in unproven:
            said, replaced_price = self._unproven[(feed.key, feed.source)]
            other = self._usd.get(reading.asset)
            if other and abs(reading.price - other) / other <= self.config.max_deviation:
                why = f"agrees with another price of {feed.key} ({other:g})"
            elif (abs(reading.price - replaced_price) / replaced_price
                  <= self.config.max_deviation):
                why = f"is back near the old source's last price ({replaced_price:g})"
            else:
                continue
            del self._unproven[(feed.key, feed.source)]
            self._save_doubted()
            self._usd.setdefault(reading.asset, reading.price)
            log.info("oracle.source_trusted", chain=self.chain, asset=feed.key,
                     source=feed.source, replaced=said, price=reading.price, block=block,
                     meaning=f"the new source {why}: a reference for other markets' "
                             "oracles again")

    def _forget_undeclared(self) -> None:
        """Doubts of sources no protocol declares any more (replaced again, a protocol
        removed from the config), once every protocol has declared its feeds: kept, they
        named a source no longer read in the warnings of markets it does not price."""
        # (every protocol's own declaration, not the time-out `_all_declared` allows: a
        # protocol slow to scan at a start would lose its doubts)
        if not self._unproven or not self._expected <= self._declared.keys():
            return
        declared = {(f.key, f.source) for feeds in self._declared.values() for f in feeds}
        gone = [k for k in self._unproven if k not in declared]
        for key in gone:
            del self._unproven[key]
        if gone:
            self._save_doubted()

    def _load_doubted(self) -> dict[tuple[str, str], tuple[str, float]]:
        if self.doubted_file is None:
            return {}
        try:
            kept = json.loads(self.doubted_file.read_text())
            doubted = {(str(d["key"]), str(d["source"])): (str(d["said"]), float(d["replaced"]))
                       for d in kept}
            if not all(math.isfinite(price) and price > 0 for _, price in doubted.values()):
                raise ValueError("a replaced price that is not a positive number")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("oracle.doubted_unread", chain=self.chain,
                        path=str(self.doubted_file), error=f"{type(exc).__name__}: {exc}"[:200],
                        meaning="replaced price sources doubted before this start are "
                                "trusted as references again")
            return {}
        for (key, source), (said, _) in doubted.items():
            log.info("oracle.source_doubted", chain=self.chain, asset=key, source=source,
                     replaced=said, meaning="kept from before this start: no reference for "
                     "other markets' oracles until it agrees with another price of its asset "
                     f"(remove {self.doubted_file} to trust it)")
        return doubted

    def _save_doubted(self) -> None:
        """Rare: only when a source is doubted or trusted again."""
        if self.doubted_file is None:
            return
        try:
            write_json(self.doubted_file, [
                {"key": key, "source": source, "said": said, "replaced": price}
                for (key, source), (said, price) in sorted(self._unproven.items())])
        except OSError as exc:  # (a full disk: the doubt holds in memory)
            log.warning("oracle.doubted_unwritten", chain=self.chain, error=str(exc)[:200])

    def _named_reference(self, feed: PriceFeed) -> bool:
        """Whether `feed` reads a source the operator named a reference for its key
        (`chains[].reference_feeds`), whichever protocol declared it."""
        return (feed.key, feed.source.lower()) in self._reference_sources

    async def _read_twice(self, feeds: list[PriceFeed], block: int
                          ) -> tuple[list[FeedReading], SecondReading | None]:
        """The feeds' readings from the pool, and — with a second healthy endpoint — that
        endpoint's word at the same block (`_read_second`), waited for SECOND_READ_GRACE_S
        once the first is in (None: none, or not in time). One endpoint was all the watch
        read: a lie of one feed's round made a two-hour-old price look fresh, and
        liquidations went on it with no alert (a by-hand trial)."""
        second = self.pool.second() if self.config.second_read else None
        if second is None:
            return await read_feeds(self.multicall, feeds, block), None
        # (held in `asking`: awaited, or cancelled and its outcome taken, below)
        asking = asyncio.create_task(self._read_second(
            self.multicall.on(second), feeds, block,
            f"endpoint {second.name} ({second.safe_url})"))
        try:
            readings = await read_feeds(self.multicall, feeds, block)
            try:
                said = await asyncio.wait_for(asyncio.shield(asking), SECOND_READ_GRACE_S)
            except Exception as exc:  # (any failure of the second's is the second's: a
                # reading that does not decode held every liquidation of the chain, a review)
                self.metrics.oracle_second_reads.labels(self.chain, "unavailable").inc()
                log.debug("oracle.second_read_unavailable", chain=self.chain, block=block,
                          endpoint=second.safe_url, error=f"{type(exc).__name__}: {exc}"[:200])
                return readings, None
            self.metrics.oracle_second_reads.labels(self.chain, "read").inc()
            return readings, said
        finally:
            if not asking.done():
                asking.cancel()
            elif not asking.cancelled():
                asking.exception()  # (its failure taken: said above, or the first's raised)

    async def _read_second(self, other: Multicall, feeds: list[PriceFeed], block: int,
                           name: str) -> SecondReading:
        """The second endpoint's reading of `feeds`, with its time of the block and its
        sequencer word in the same request. At the judged header's hash (EIP-1898): honest
        endpoints on two forks of one height read different rounds, and that is no lie — a
        second on another fork says it has no such block, and its word is not used."""
        at: Any = ({"blockHash": self._header["hash"], "requireCanonical": True}
                   if self._header is not None and self._header.get("hash") else block)
        extra = [Call(self.multicall.address, _BLOCK_TIMESTAMP)]
        if self.sequencer is not None:
            extra.append(self.sequencer.call)
        results = await other.aggregate3(feed_calls(feeds) + extra, at)
        n = len(results) - len(extra)
        readings = await decode_feeds(other, feeds, results[:n], at)
        return SecondReading(name, readings, _timestamp(results[n]),
                             self.sequencer.word(results[n + 1], "second endpoint: ")
                             if self.sequencer is not None else None)

    def _second_problems(self, first: FeedReading, second: FeedReading, second_name: str,
                         now: int, found: list[Problem]) -> list[Problem]:
        """What the second endpoint's reading of a feed says that the first's does not: its
        own problems (stale, non-positive...), and a disagreement with the first on the
        round at the same block — one of the two lies or lags; either way the price is not
        one to act on until they agree."""
        kinds = {p.kind for p in found}
        out = [Problem(p.kind, f"second endpoint: {p.detail}")
               for p in check_feed(second, now, self.policy(second.asset, second), None)
               if p.kind not in kinds]
        if (first.price, first.updated_at) != (second.price, second.updated_at) and \
                "disagreement" not in kinds:
            # (which one lies is not known here: both named; one lying second can pause an
            # asset this way — the price of no single endpoint hiding a stale round)
            out.append(Problem("disagreement", f"two endpoints read the feed differently at "
                               f"the same block: {first.price:g} updated at "
                               f"{first.updated_at} (endpoint "
                               f"{self.pool.ranked()[0].name}) against {second.price:g} at "
                               f"{second.updated_at} ({second_name})"))
        return out

    async def _observe(self, keys: Iterable[str], block: int,
                       unchecked: Sequence[str] = (), *,
                       found: dict[str, list[str]] | None = None) -> None:
        """The breaker told what this block says of each key's price, the table read once;
        `unchecked`: the market rates with no trusted reference this block (a deviation trip
        of theirs stands: `Breaker.observe_many`)."""
        assert self._header is not None
        sequencer = ([f"{self._sequencer.kind}: {self._sequencer.detail}"]
                     if self._sequencer is not None else [])
        said = self._problems if found is None else found
        problems = {key: list(dict.fromkeys(said.get(key, []))) + sequencer for key in keys}
        if not problems:
            return
        changes, tripped = await self.breaker.observe_many(
            self.chain, problems, int(self._header["timestamp"], 16),
            block_hash=self._header.get("hash"), unchecked=unchecked)
        for change in changes:
            self.metrics.breaker_transitions.labels(
                self.chain, change.asset, "tripped" if change.tripped else "reset").inc()
            (log.warning if change.tripped else log.info)(
                "breaker.tripped" if change.tripped else "breaker.reset",
                chain=self.chain, asset=change.asset, reason=change.reason, block=block)
        for key in problems:
            self.metrics.breaker_state.labels(self.chain, key).set(1 if key in tripped else 0)

    def _report(self, reading: FeedReading, problems: list[Problem], now: int,
                block: int, *, gauges: bool = True) -> None:
        if reading.asset not in self._anomaly_series:
            # (exported at 0 from the first reading: a counter series born at 1 is no
            # increase() to Prometheus, and KeeperdOraclePriceJump missed a process's first
            # jump — a review)
            self._anomaly_series.add(reading.asset)
            for kind in ("jump", "source_changed"):
                self.metrics.oracle_anomalies.labels(self.chain, reading.asset, kind)
        if gauges:
            self.metrics.oracle_price.labels(self.chain, reading.asset, reading.source).set(
                reading.price)
        if gauges and reading.freshness != "unknown":
            self.metrics.oracle_age.labels(self.chain, reading.asset, reading.source).set(
                max(0, now - reading.updated_at))
        for p in problems:
            if p.trips:
                continue
            self.metrics.oracle_anomalies.labels(self.chain, reading.asset, p.kind).inc()
            if (reading.asset, p.kind) in self._standing:
                continue  # a standing condition is logged once, counted every block
            if p.kind == "freshness_unknown":
                self._standing.add((reading.asset, p.kind))
            log.warning("oracle.anomaly", chain=self.chain, asset=reading.asset,
                        kind=p.kind, detail=p.detail, block=block)
            if p.kind == "source_changed" and self.on_source_changed is not None:
                jump = next((j.detail for j in problems if j.kind == "jump"), None)
                self.on_source_changed(reading.asset, p.detail, jump, block)

    def policy(self, symbol: str, reading: FeedReading | None = None) -> FeedPolicy:
        """How `symbol`'s feed is judged: the heartbeat configured for it, else each
        aggregator it is timed by against its own (`Heartbeats`: the default, or what its
        rounds taught when that is longer)."""
        configured = self.config.heartbeats.get(symbol)
        ages: tuple[float, ...] = ()
        if configured is None and reading is not None and reading.timed_by:
            ages = tuple(allowed_age(self.config.heartbeat_s, self.heartbeats.of(address))
                         for address, _, _ in reading.timed_by)
        return FeedPolicy(heartbeat_s=configured if configured is not None
                          else self.config.heartbeat_s, max_jump=self.config.max_jump,
                          bound_margin=self.config.bound_margin, ages=ages)

    async def _learn_heartbeats(self, readings: Sequence[FeedReading], block: int) -> None:
        """Aggregators seen for the first time are learnt before they are judged (one
        multicall, at a start); the others again every RELEARN_S, in a task of their own
        (not on a liquidation path). A read that fails leaves the default: judged as before."""
        sources = [(address, round_id) for r in readings for address, round_id, _ in r.timed_by
                   if r.asset not in self.config.heartbeats]
        unknown = self.heartbeats.unknown(sources)
        if unknown:
            try:
                await self.heartbeats.learn(unknown, block)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.heartbeats.unread(unknown)
                log.warning("oracle.heartbeats_unread", chain=self.chain,
                            error=f"{type(exc).__name__}: {exc}",
                            meaning="feeds judged against oracles.heartbeat_s until they "
                                    "read (asked again in a minute)")
        due = self.heartbeats.due(sources)
        if due and (self._learning is None or self._learning.done()):
            self._learning = asyncio.get_running_loop().create_task(
                self._relearn(due, block), name=f"{self.chain}:heartbeats")

    async def _relearn(self, due: list[tuple[str, int]], block: int) -> None:
        try:
            await self.heartbeats.learn(due, block)
        except Exception as exc:  # (the last learnt stands; asked again in a minute)
            self.heartbeats.unread(due)
            log.debug("oracle.heartbeats_unread", chain=self.chain, error=str(exc))

    async def _refresh_medians(self, assets: list[str]) -> None:
        """Reference medians, fetched at most every `reference_interval_s` (public APIs
        rate-limit); between fetches the last medians stand."""
        if not self.config.references:
            return
        wanted = [a for a in assets if a not in self._medians]
        now = time.monotonic()
        if now - self._medians_at < self.config.reference_interval_s and not wanted:
            return
        if now - self._medians_at >= self.config.reference_interval_s:
            self._medians_at, wanted = now, assets
        quotes = await asyncio.gather(*(self.references.quotes(a) for a in wanted))
        for asset, said in zip(wanted, quotes, strict=True):
            median = median_price(said, self.config.min_sources)
            if self.references.sources_for(asset) < self.config.min_sources:
                # (no source prices it, or fewer than min_sources by configuration: never a
                # median, so nothing is missing — check-config says so)
                self._medians[asset] = None
                continue
            missing = median is None
            was = self._medians.get(asset, 0.0) is None
            self.metrics.reference_median_missing.labels(self.chain, asset).set(int(missing))
            if missing and not was:
                # (the deviation check went off with six info lines and nothing else when
                # the shipped exchanges could not be reached: a by-hand trial)
                log.warning("reference.median_unavailable", chain=self.chain, asset=asset,
                            answered=len(said), min_sources=self.config.min_sources,
                            meaning="the oracle's deviation from the reference prices is not "
                                    "checked for this asset until enough sources answer",
                            fix="check keeperd's access to the sources in oracles.references "
                                "(keeperd_reference_requests_total says which fail)")
            elif was and not missing:
                log.info("reference.median_back", chain=self.chain, asset=asset,
                         answered=len(said))
            self._medians[asset] = median

    async def _pyth_problems(self, now: int, block: int, symbols: set[str]
                             ) -> dict[str, list[Problem]]:
        pyth = self.config.pyth
        if pyth is None or (pyth.chain is not None and pyth.chain != self.chain):
            return {}
        assets = [a for a in pyth.feeds if a in symbols]
        if not assets:
            return {}
        results = await self.multicall.aggregate3(
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
                self.metrics.pyth_conf_ratio.labels(self.chain, asset).set(conf / price)
            self.metrics.pyth_age.labels(self.chain, asset).set(max(0, now - publish_time))
        return out


def _timestamp(result: CallResult) -> int | None:
    """Multicall3's `getCurrentBlockTimestamp()` answer (None: failed, or not a word — a
    multicall contract without it; the first's header alone then dates the block)."""
    return int.from_bytes(result.data[:32], "big") if (
        result.success and len(result.data) >= 32) else None
