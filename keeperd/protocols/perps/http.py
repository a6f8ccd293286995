"""A small JSON-over-HTTP client for venue APIs: a request budget per second, retries with
backoff and jitter on transport errors, timeouts, 429 and 5xx; other answers are errors."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp

from keeperd import __version__
from keeperd.chain.rpc import redact_url
from keeperd.iokit import (
    BodyTooLarge,
    TokenBucket,
    backoff_delay,
    classify_http,
    parse_retry_after,
    read_bounded,
)

# A venue's largest answer (Hyperliquid's universe metadata, a dYdX subaccount with its
# positions) is well under a megabyte; past this an answer is refused, not read to its end.
VENUE_ANSWER_BYTES = 16 * 2**20


class VenueError(Exception):
    """The venue did not answer usefully; the message says what it said."""


class VenueClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, rate_limit: float,
                 max_attempts: int, timeout_s: float) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        # Evenly spaced: public venue APIs count requests per second, and bursts get 429s.
        self._bucket = TokenBucket(rate_limit, burst=1)
        self.requests = 0

    async def _slot(self) -> None:
        wait = self._bucket.reserve()
        if wait > 0:
            await asyncio.sleep(wait)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.max_attempts):
            await self._slot()
            self.requests += 1
            try:
                async with self.session.request(
                        method, url, json=body, timeout=self.timeout, allow_redirects=False,
                        headers={"User-Agent": f"keeperd/{__version__}"}) as resp:
                    try:
                        raw = await read_bounded(resp, VENUE_ANSWER_BYTES)
                    except BodyTooLarge as exc:
                        raise VenueError(f"{redact_url(url)}: {exc}") from None
                    text = raw.decode("utf-8", "replace")
                    if resp.status == 200:
                        try:
                            return json.loads(raw)
                        except ValueError:
                            raise VenueError(f"{redact_url(url)}: not JSON: {text[:200]}") \
                                from None
                    last = f"HTTP {resp.status}: {text[:200]}"
                    if classify_http(resp.status) in ("permanent", "refused"):
                        raise VenueError(f"{redact_url(url)}: {last}")
                    delay = parse_retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                delay = None
            if attempt + 1 < self.max_attempts:
                await asyncio.sleep(delay if delay is not None
                                    else backoff_delay(attempt, 0.2, 5.0, random.random))
        raise VenueError(f"{redact_url(url)}: gave up after {self.max_attempts} attempts; "
                         f"last: {last}")
