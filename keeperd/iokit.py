"""The one set of I/O manners every client of keeperd's uses (RPC pool, alert delivery, perp
venue client): a token-bucket rate limit, exponential backoff with jitter, a bounded reading
of `Retry-After`, and one classification of HTTP statuses. Pure; clocks and randomness come
in from the caller.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable
from typing import Any, Literal

# The longest a server's Retry-After is obeyed: a longer (or broken) answer must not park a
# sink or a client for hours; it is retried on keeperd's own schedule instead.
MAX_RETRY_AFTER_S = 600.0


class TokenBucket:
    """`rate` requests a second on average, bursts of up to `burst`; starts full. Each method
    takes the time (`now`, monotonic seconds) or reads the clock."""

    def __init__(self, rate: float, burst: float | None = None, *, now: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self.tokens = self.capacity
        self._clock = clock
        self.updated = clock() if now is None else now

    def _refill(self, now: float | None) -> None:
        now = self._clock() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, now: float | None = None) -> float:
        """How long until a token is there (0: now); takes nothing."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1

    def reserve(self, now: float | None = None) -> float:
        """Take a token now, possibly on credit; return how long to wait before using it."""
        self._refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Exponential backoff, `base x 2^attempt` up to `cap`, with jitter of ±50 % so that many
    clients (or keeperd replicas) do not retry in step."""
    return min(cap, base * 2 ** max(0, attempt)) * (0.5 + rng())


def parse_retry_after(value: str | float | None, *, now: float | None = None,
                      cap: float = MAX_RETRY_AFTER_S) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date) or a
    platform's `retry_after` field, bounded to [0, cap]; None when absent, not a str, int or
    float, or not a finite number (nan, inf, garbage): the caller then backs off on its own
    schedule. Never raises: what a server sends cannot stop its caller."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None  # (a JSON body's `{}`, `[1]`, `null`: it does not say)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # (an integer of 400 digits)
            return None
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:  # (a year of 20 digits: OverflowError — a review)
                when = email.utils.parsedate_to_datetime(text)
                if when is None:
                    return None
                seconds = when.timestamp() - (time.time() if now is None else now)
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
    if not math.isfinite(seconds):
        return None
    return min(cap, max(0.0, seconds))


# Deeper than this, an answer's JSON is refused unread (`loads_shallow`).
MAX_JSON_DEPTH = 64


def loads_shallow(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` of a small answer (an error body), refusing (ValueError) one nested past
    `max_depth`. Under py_ecc's recursion limit of 100,000 (it raises it at import; keeperd
    puts it back to 1,000: `keeperd/__init__.py`) 64 kB of `[` overflowed the C stack —
    SIGSEGV, the whole process, from one 429 body (measured): kept as a second guard, and an
    error body needs no depth. A linear scan; the nesting cannot exceed the brackets' count,
    so a small one is not scanned."""
    if text.count("[") + text.count("{") > max_depth:
        depth, in_string, escaped = 0, False, False
        for ch in text:
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
                if depth > max_depth:
                    raise ValueError(f"JSON nested deeper than {max_depth}")
            elif ch in "]}":
                depth -= 1
    return json.loads(text)


HttpOutcome = Literal["ok", "rate_limited", "transient", "refused", "permanent"]

# The request itself is wrong (its body, its size): sending it unchanged again cannot help.
MALFORMED = frozenset({400, 413, 422})


def classify_http(status: int) -> HttpOutcome:
    """What an HTTP status means for a retrying client: 2xx done; 429 rate-limited (come back
    after Retry-After); 408, 425 and 5xx transient; 400, 413 and 422 permanent (the request is
    malformed); any other 4xx refused — 401, 403, 404, 410 are what a receiver answers in the
    middle of a deploy or a credentials rotation: worth retrying for a while, not for ever."""
    if 200 <= status < 300:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status in (408, 425) or status >= 500:
        return "transient"
    if status in MALFORMED:
        return "permanent"
    return "refused"


class BodyTooLarge(ValueError):
    """A response body past the reader's bound: refused, not read to its end."""


async def read_bounded(resp: Any, limit: int, *, truncate: bool = False) -> bytes:
    """At most `limit` bytes of an aiohttp response's body, read in chunks: a body without end
    (a lying or misrouted server) cannot exhaust memory. Past the limit: `BodyTooLarge`, or
    with `truncate` the first `limit` bytes (enough for an error message)."""
    parts: list[bytes] = []
    received = 0
    async for part in resp.content.iter_chunked(1 << 16):
        parts.append(part)
        received += len(part)
        if received > limit:
            if truncate:
                break
            raise BodyTooLarge(f"response body over {limit} bytes")
    return b"".join(parts)[:limit]
