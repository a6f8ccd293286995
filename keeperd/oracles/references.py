"""Independent reference prices over HTTP: exchanges' public tickers and Pyth's Hermes.

Each source speaks its documented public format:
- binance: GET {url}/api/v3/ticker/price?symbol=ETHUSDT
    {"symbol": "ETHUSDT", "price": "3000.1"}
- coinbase: GET {url}/v2/prices/ETH-USD/spot
    {"data": {"amount": "3000.1", "base": "ETH", "currency": "USD"}}
- kraken: GET {url}/0/public/Ticker?pair=XETHZUSD
    {"error": [], "result": {"XETHZUSD": {"c": ["3000.1", "0.5"], ...}}}
- pyth_hermes: GET {url}/v2/updates/price/latest?ids[]=<price id>
    {"parsed": [{"id": ..., "price": {"price": "300010000000", "expo": -8, ...}}]}
A source that errs, times out or answers garbage yields no quote (counted, logged), never an
exception: the median is taken over the sources that answered, and only when at least
`min_sources` did.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from keeperd.config import ReferenceSourceConfig
from keeperd.iokit import read_bounded
from keeperd.metrics import Metrics

# A price answer is a few hundred bytes; past this it is refused, not read to its end.
REFERENCE_ANSWER_BYTES = 1 * 2**20

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Quote:
    source: str
    asset: str
    price: float


class BadAnswer(ValueError):
    pass


def parse(kind: str, body: Any, market: str) -> float:
    """The price in a source's answer; BadAnswer if the answer is not what the docs say."""
    try:
        if kind == "binance":
            value = body["price"]
        elif kind == "coinbase":
            value = body["data"]["amount"]
        elif kind == "kraken":
            if body.get("error"):
                raise BadAnswer(f"kraken error: {body['error']}")
            result = body["result"]
            value = (result.get(market) or next(iter(result.values())))["c"][0]
        elif kind == "pyth_hermes":
            price = body["parsed"][0]["price"]
            return float(int(price["price"]) * 10 ** int(price["expo"]))
        else:
            raise BadAnswer(f"unknown source kind {kind}")
        price = float(value)
    except (KeyError, IndexError, TypeError, AttributeError, StopIteration, ValueError) as exc:
        raise BadAnswer(f"{kind}: unexpected answer ({type(exc).__name__})") from None
    if not price > 0:
        raise BadAnswer(f"{kind}: non-positive price {price}")
    return price


def request_url(kind: str, base: str, market: str) -> tuple[str, dict[str, str]]:
    base = base.rstrip("/")
    if kind == "binance":
        return f"{base}/api/v3/ticker/price", {"symbol": market}
    if kind == "coinbase":
        return f"{base}/v2/prices/{market}/spot", {}
    if kind == "kraken":
        return f"{base}/0/public/Ticker", {"pair": market}
    if kind == "pyth_hermes":
        return f"{base}/v2/updates/price/latest", {"ids[]": market}
    raise ValueError(kind)


def median_price(quotes: list[Quote], min_sources: int) -> float | None:
    if len(quotes) < min_sources:
        return None
    return float(statistics.median(q.price for q in quotes))


class References:
    """Fetches every configured source for an asset concurrently, with per-source timeouts."""

    def __init__(self, sources: list[ReferenceSourceConfig], metrics: Metrics,
                 timeout_s: float = 3.0) -> None:
        self.sources = sources
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        # Why each source last gave no price (by source name), for what check-config says: a
        # bare "gave no price" left the operator to guess between a firewall and a typo.
        self.last_failure: dict[str, str] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def sources_for(self, asset: str) -> int:
        """How many sources price `asset`."""
        return sum(1 for s in self.sources if asset in s.markets)

    async def quotes(self, asset: str) -> list[Quote]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        wanted = [s for s in self.sources if asset in s.markets]
        got = await asyncio.gather(*(self._one(s, asset) for s in wanted))
        return [q for q in got if q is not None]

    async def _one(self, source: ReferenceSourceConfig, asset: str) -> Quote | None:
        assert self._session is not None
        market = source.markets[asset]
        url, params = request_url(source.kind, source.url, market)
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with self._session.get(
                    url, params=params, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                if resp.status != 200:
                    raise BadAnswer(f"HTTP {resp.status}")
                body = json.loads(await read_bounded(resp, REFERENCE_ANSWER_BYTES))
            price = parse(source.kind, body, market)
        except TimeoutError:
            outcome = "timeout"
            self.last_failure[source.name] = f"no answer within {self.timeout_s:g} s"
        except (aiohttp.ClientError, BadAnswer, ValueError) as exc:  # BodyTooLarge too
            outcome = "error"
            self.last_failure[source.name] = (str(exc) or type(exc).__name__)[:200]
            log.info("reference.failed", source=source.name, asset=asset, error=str(exc)[:200])
        finally:
            self.metrics.reference_requests.labels(source.name, outcome).inc()
            self.metrics.reference_latency.labels(source.name).observe(
                time.perf_counter() - started)
        if outcome != "ok":
            return None
        self.metrics.reference_price.labels(source.name, asset).set(price)
        return Quote(source.name, asset, price)
