"""Reads every Chainlink-style feed an Aave V3 market trusts, in one or two multicalls."""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import decode
from eth_utils import to_checksum_address

from keeperd.chain.multicall import Call, Multicall, encode_call, selector
from keeperd.oracles.checks import FeedReading
from keeperd.protocols.aave_v3.book import Reserve

_LATEST_ROUND_DATA = selector("latestRoundData()")
_DECIMALS = selector("decimals()")
_AGGREGATOR = selector("aggregator()")
_MIN_ANSWER = selector("minAnswer()")
_MAX_ANSWER = selector("maxAnswer()")


def _int(data: bytes, signed: bool = True) -> int:
    return int.from_bytes(data[:32], "big", signed=signed)


async def read_feeds(multicall: Multicall, oracle: str, reserves: Sequence[Reserve],
                     block: int | str = "latest") -> list[FeedReading]:
    sources_res = await multicall.aggregate3(
        [Call(oracle, encode_call("getSourceOfAsset(address)", ["address"], [r.asset]))
         for r in reserves], block)
    sources = [to_checksum_address(s.data[12:32]) if s.success and len(s.data) >= 32 else None
               for s in sources_res]
    calls: list[Call] = []
    for source in sources:
        if source is None or int(source, 16) == 0:
            continue
        calls += [Call(source, _LATEST_ROUND_DATA), Call(source, _DECIMALS),
                  Call(source, _AGGREGATOR), Call(source, _MIN_ANSWER),
                  Call(source, _MAX_ANSWER)]
    results = await multicall.aggregate3(calls, block)
    readings: list[FeedReading] = []
    underlying: list[tuple[int, str]] = []
    k = 0
    for reserve, source in zip(reserves, sources, strict=True):
        if source is None or int(source, 16) == 0:
            continue
        latest, dec, agg, lo, hi = results[k:k + 5]
        k += 5
        if not latest.success or not dec.success:
            readings.append(FeedReading(reserve.symbol, source, 0, 0, 0, 8))
            continue
        round_id, answer, _, updated_at, _ = decode(
            ["uint80", "int256", "uint256", "uint256", "uint80"], latest.data)
        reading = FeedReading(reserve.symbol, source, round_id, answer, updated_at,
                              _int(dec.data, signed=False),
                              _int(lo.data) if lo.success else None,
                              _int(hi.data) if hi.success else None)
        readings.append(reading)
        if agg.success and len(agg.data) >= 32 and not lo.success:
            # A proxy: the bounds live on the aggregator behind it.
            underlying.append((len(readings) - 1, to_checksum_address(agg.data[12:32])))
    if underlying:
        bounds = await multicall.aggregate3(
            [c for _, a in underlying for c in (Call(a, _MIN_ANSWER), Call(a, _MAX_ANSWER))],
            block)
        for j, (index, _) in enumerate(underlying):
            lo, hi = bounds[2 * j], bounds[2 * j + 1]
            r = readings[index]
            readings[index] = FeedReading(r.asset, r.source, r.round_id, r.answer, r.updated_at,
                                          r.decimals, _int(lo.data) if lo.success else None,
                                          _int(hi.data) if hi.success else None)
    return readings
