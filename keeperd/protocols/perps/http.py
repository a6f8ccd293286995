"""A small JSON-over-HTTP client for venue APIs: a request budget per second, retries with
backoff and jitter on transport errors, timeouts, 429 and 5xx; other answers are errors."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp

from keeperd import __version__
from keeperd.chain.rpc import redact_url, url_secrets
from keeperd.iokit import (
    BodyTooLarge,
    TokenBucket,
    backoff_delay,
    classify_http,
    parse_retry_after,
    read_bounded,
)
from keeperd.logs import Redactor

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
        # What the venue says back is scrubbed of what the configured URL holds secret (a key
        # in its path, as QuickNode's): a 404 page that echoes the path asked, a message that
        # names the URL. Its errors go to venue_down's summary, to every sink, and to the
        # alert state, which the log's redaction does not cover.
        self._redactor = Redactor()
        for secret in url_secrets(self.base_url):
            self._redactor.add(secret)

    def _said(self, text: str) -> str:
        """The start of an answer's body, fit for an error message: scrubbed whole, then cut
        (cut first, a key split at the cut would go out in part)."""
        return self._redactor.scrub(text)[:200]

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
                            raise VenueError(f"{redact_url(url)}: not JSON: {self._said(text)}") \
                                from None
                    last = f"HTTP {resp.status}: {self._said(text)}"
                    if classify_http(resp.status) in ("permanent", "refused"):
                        raise VenueError(f"{redact_url(url)}: {last}")
                    delay = parse_retry_after(resp.headers.get("Retry-After"))
            except TimeoutError:
                last = f"timed out after {self.timeout.total}s"
                delay = None
            except aiohttp.ClientError as exc:
                # Its type (and status), never its text: aiohttp's names the URL whole,
                # `url='https://x.quiknode.pro/<token>/info'` (as the RPC pool's transport
                # errors, chain/rpc.py).
                status = getattr(exc, "status", None)
                last = type(exc).__name__ + (f": {status}" if status else "")
                delay = None
            if attempt + 1 < self.max_attempts:
                await asyncio.sleep(delay if delay is not None
                                    else backoff_delay(attempt, 0.2, 5.0, random.random))
        raise VenueError(f"{redact_url(url)}: gave up after {self.max_attempts} attempts; "
                         f"last: {last}")
