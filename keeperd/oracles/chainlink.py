"""Reads Chainlink-style USD feeds (any plug-in's, `protocols/sdk/feeds.py`) in one or two
multicalls."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

from eth_abi.exceptions import InsufficientDataBytes, NonEmptyPaddingBytes
from eth_utils import to_checksum_address

from keeperd.chain.multicall import Call, CallResult, Multicall, selector
from keeperd.oracles.checks import FeedReading
from keeperd.protocols.sdk.feeds import PriceFeed

_LATEST_ROUND_DATA = selector("latestRoundData()")
_DECIMALS = selector("decimals()")
_AGGREGATOR = selector("aggregator()")
_MIN_ANSWER = selector("minAnswer()")
_MAX_ANSWER = selector("maxAnswer()")


def _int(data: bytes, signed: bool = True) -> int:
    return int.from_bytes(data[:32], "big", signed=signed)


_UINT80_PADDING = bytes(22)


def round_data(data: bytes) -> tuple[int, int, int, int, int]:
    """latestRoundData's (roundId, answer, startedAt, updatedAt, answeredInRound), decoded as
    strictly as eth_abi's `decode` (a short answer or a uint80 with bits above 80 raises)
    in a fraction of its time: every protocol's feeds are read on the liquidation path of
    the first protocol in each block (pure)."""
    if len(data) < 160:
        raise InsufficientDataBytes(f"latestRoundData answered {len(data)} bytes, not 160")
    if data[:22] != _UINT80_PADDING or data[128:150] != _UINT80_PADDING:
        raise NonEmptyPaddingBytes("latestRoundData's uint80 padding is not zero")
    return (int.from_bytes(data[:32], "big"), int.from_bytes(data[32:64], "big", signed=True),
            int.from_bytes(data[64:96], "big"), int.from_bytes(data[96:128], "big"),
            int.from_bytes(data[128:160], "big"))


@functools.lru_cache(maxsize=4096)
def _address(word: bytes) -> str:
    """The checksummed address in an answer's word (the feeds' aggregators do not change
    between blocks: each is checksummed once)."""
    return to_checksum_address(word[12:32])


# Getters through which Aave's adapters name the aggregators they wrap (bgd-labs/aave-capo's
# price-cap adapters; Chainlink's synchronicity adapters).
WRAPPED_GETTERS = tuple(selector(f"{name}()") for name in (
    "BASE_TO_USD_AGGREGATOR", "ASSET_TO_USD_AGGREGATOR", "PEG_TO_BASE", "ASSET_TO_PEG"))
_LATEST_ANSWER = selector("latestAnswer()")
_PER_SOURCE = 6 + len(WRAPPED_GETTERS)


async def read_feeds(multicall: Multicall, feeds: Sequence[PriceFeed],
                     block: int | str = "latest") -> list[FeedReading]:
    """One reading per feed (its `key` as the reading's asset). A Chainlink-style source is
    read with latestRoundData. A source without it (Aave's price-cap and synchronicity
    adapters) is read with latestAnswer; its time is the oldest `updatedAt` of the aggregators
    it names, and where it names none, its freshness is "unknown" (reported, never a reason to
    trip)."""
    results = await multicall.aggregate3(feed_calls(feeds), block)
    return await decode_feeds(multicall, feeds, results, block)


def feed_calls(feeds: Sequence[PriceFeed]) -> list[Call]:
    """The first multicall's calls of `read_feeds`: a caller may send them with calls of its
    own in one request (the watch's second reading: the block's time, the sequencer)."""
    calls: list[Call] = []
    for feed in feeds:
        source = feed.source
        calls += [Call(source, _LATEST_ROUND_DATA), Call(source, _DECIMALS),
                  Call(source, _AGGREGATOR), Call(source, _MIN_ANSWER),
                  Call(source, _MAX_ANSWER), Call(source, _LATEST_ANSWER),
                  *(Call(source, g) for g in WRAPPED_GETTERS)]
    return calls


async def decode_feeds(multicall: Multicall, feeds: Sequence[PriceFeed],
                       results: Sequence[CallResult], block: int | str
                       ) -> list[FeedReading]:
    """`read_feeds` from the answers to `feed_calls(feeds)`: the bounds behind proxies and the
    aggregators behind adapters are read at `block` on `multicall`."""
    readings: list[FeedReading] = []
    underlying: list[tuple[int, str]] = []
    wrapped: list[tuple[int, list[str]]] = []
    k = 0
    for feed in feeds:
        key, source = feed.key, feed.source
        latest, dec, agg, lo, hi, answer_only, *getters = results[k:k + _PER_SOURCE]
        k += _PER_SOURCE
        if not dec.success:
            readings.append(FeedReading(key, source, 0, 0, 0, 8))
            continue
        decimals = _int(dec.data, signed=False)
        if not latest.success:
            if not answer_only.success:
                readings.append(FeedReading(key, source, 0, 0, 0, decimals))
                continue
            behind: list[str] = [_address(g.data[:32]) for g in getters
                      if g.success and len(g.data) >= 32 and int.from_bytes(g.data[:32], "big")]
            readings.append(FeedReading(key, source, 0, _int(answer_only.data), 0,
                                        decimals, freshness="wrapped" if behind else "unknown"))
            if behind:
                wrapped.append((len(readings) - 1, behind))
            continue
        round_id, answer, _, updated_at, _ = round_data(latest.data)
        reading = FeedReading(key, source, round_id, answer, updated_at, decimals,
                              _int(lo.data) if lo.success else None,
                              _int(hi.data) if hi.success else None,
                              timed_by=((source, round_id, updated_at),))
        readings.append(reading)
        if agg.success and len(agg.data) >= 32 and not lo.success:
            # A proxy: the bounds live on the aggregator behind it.
            underlying.append((len(readings) - 1, _address(agg.data[:32])))
    if underlying:
        bounds = await multicall.aggregate3(
            [c for _, a in underlying for c in (Call(a, _MIN_ANSWER), Call(a, _MAX_ANSWER))],
            block)
        for j, (index, _) in enumerate(underlying):
            lo, hi = bounds[2 * j], bounds[2 * j + 1]
            readings[index] = replace(readings[index],
                                      min_answer=_int(lo.data) if lo.success else None,
                                      max_answer=_int(hi.data) if hi.success else None)
    if wrapped:
        rounds = await multicall.aggregate3(
            [Call(a, _LATEST_ROUND_DATA) for _, behind in wrapped for a in behind], block)
        j = 0
        for index, behind in wrapped:
            times, round_ids = [], []
            for res in rounds[j:j + len(behind)]:
                if res.success:
                    rid, _, _, updated, _ = round_data(res.data)
                    times.append(updated)
                    round_ids.append(rid)
            j += len(behind)
            if len(times) < len(behind):
                readings[index] = replace(readings[index], freshness="unknown")
                continue
            # The adapter's "round" changes whenever one of its aggregators publishes.
            readings[index] = replace(readings[index], updated_at=min(times),
                                      round_id=sum(round_ids),
                                      timed_by=tuple(zip(behind, round_ids, times,
                                                         strict=True)))
    return readings
