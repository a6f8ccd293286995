"""A pool of JSON-RPC endpoints for one chain: health, failover, retries, rate limits.

Everything keeperd says to a node goes through `RpcPool`. The hot path stays on raw JSON-RPC
over one aiohttp session (web3.py's per-call machinery costs milliseconds, see
docs/architecture.md); web3.py's async API sits on top through `keeperd.chain.web3_provider`.

Policy, in short:
- endpoints are ranked by health (not benched, not lagging the best head, no fresh failure,
  not far slower than the fastest), then by the order the operator configured;
- a transient failure (connection, timeout, HTTP 429/5xx, a body that is not JSON-RPC, a
  node-side "try again" error) is retried on the next endpoint, with exponential backoff and
  full jitter between rounds; an answer that is a real JSON-RPC error (a revert, a bad param)
  is returned at once and never retried;
- an endpoint that fails `bench_after` times in a row is benched for a cooldown that doubles
  while it keeps failing; `probe()` (run by the daemon each poll interval) brings it back;
- each endpoint has a token-bucket request-rate limit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog

from keeperd.chain.prefetch import HeadPrefetch
from keeperd.iokit import TokenBucket, backoff_delay
from keeperd.metrics import Metrics, method_label

log = structlog.get_logger(__name__)

# Two other endpoints this many blocks past an endpoint's head rank it after them.
QUORUM_BEHIND_BLOCKS = 2
# ... or, while its head still moves, after this many probes in a row behind them.
BEHIND_PROBES = 3
# An endpoint whose head has not moved for this long outvotes no one (`best_head`).
VOTE_FRESH_S = 30.0
PREFETCH_MAX_BYTES = 32 * 1024 * 1024  # a head's reads asked ahead answer no more than this
# JSON-RPC error codes and messages that mean "this node cannot answer now", not "your request
# is wrong". -32005 is the EIP-1474 "limit exceeded"; the messages are what geth, erigon,
# nethermind and the big providers say when a node is overloaded or missing recent state.
_TRANSIENT_RPC_CODES = frozenset({-32005, -32016, 429})
_TRANSIENT_RPC_MESSAGE = re.compile(
    r"rate limit|too many requests|timeout|timed out|header not found|missing trie node|"
    r"try again|temporarily unavailable|busy|overloaded|capacity",
    re.IGNORECASE,
)


# "Limit exceeded" answers that no retry fixes: the request asks for too much at once.
_QUERY_TOO_LARGE = re.compile(
    r"more than \d+ results|too many results|block range|range (is )?too (large|wide)|"
    r"response (size|is too)|query returned more", re.IGNORECASE)


class HexData(str):
    """A 0x-hex string keeperd built itself (a multicall's calldata: megabytes in a scan),
    written into a request body as it is. json escapes a string character by character: a
    2 MB eth_call took 11 ms to serialise, a tenth of a scan's Python time (#31)."""


def dumps(payload: Any) -> str:
    """json.dumps, but HexData goes in unescaped (hex needs no escaping), copied once."""
    parts: list[str] = []
    _write_json(payload, parts)
    return "".join(parts)


# What json.dumps writes at C speed. A request with no HexData in it (a signed transaction's
# broadcast, a simulation's call) is written in one call: ~3 us instead of ~8-10 when each
# key and value went through Python here, a liquidation's share of a crash's waves (#31).
_SCALARS = frozenset({str, int, float, bool, type(None)})
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # (as the rest of a body is written)


def _plain(value: Any) -> bool:
    """Nothing but JSON's own types inside (no HexData, no subclass)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    return False


def _write_json(value: Any, parts: list[str]) -> None:
    if isinstance(value, HexData):
        parts += ('"', value, '"')
    elif _plain(value):
        parts.append(_COMPACT.encode(value))
    elif isinstance(value, dict) and all(type(k) is str for k in value):
        parts.append("{")
        for i, (k, v) in enumerate(value.items()):
            parts += ("," if i else "", json.dumps(k), ":")
            _write_json(v, parts)
        parts.append("}")
    elif isinstance(value, list | tuple):
        parts.append("[")
        for i, v in enumerate(value):
            if i:
                parts.append(",")
            _write_json(v, parts)
        parts.append("]")
    else:
        parts.append(json.dumps(value))


class RpcError(Exception):
    """The node answered with a JSON-RPC error. Not retried: the request itself is at fault."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class ResponseTooLarge(RpcError):
    """The answer was larger than the caller allowed; it was not read. Ask for less."""

    def __init__(self, method: str, size: int | None, limit: int) -> None:
        super().__init__(method, -32000,
                         f"response of {size or 'more than ' + str(limit)} bytes exceeds the "
                         f"{limit}-byte limit")
        self.size = size
        self.limit = limit


class RpcUnavailable(Exception):
    """No endpoint of the chain gave a usable answer within the retry budget."""


class EndpointsBehind(RpcUnavailable):
    """No endpoint asked had the block an answer must include yet (`batch_at`)."""


# Why a result is not what its method returns, or None when it is (`request(shape=...)`).
Shape = Callable[[Any], "str | None"]
_HEX = re.compile(r"0x[0-9a-fA-F]*")


def hex_quantity(result: Any) -> str | None:
    """A quantity (eth_blockNumber, eth_getTransactionCount): 0x and hex digits."""
    if isinstance(result, str) and len(result) > 2 and _HEX.fullmatch(result):
        return None
    return f"not a hex quantity: {str(result)[:60]!r}"


def hex_data(result: Any) -> str | None:
    """Data (eth_call): 0x and whole bytes."""
    if isinstance(result, str) and len(result) % 2 == 0 and _HEX.fullmatch(result):
        return None
    return f"not hex data: {str(result)[:60]!r}"


def block_header(result: Any) -> str | None:
    """A block (eth_getBlockByNumber): its number and hash at least; None (no such block
    yet) is an answer."""
    if result is None or (isinstance(result, dict)
                          and hex_quantity(result.get("number")) is None
                          and hex_data(result.get("hash")) is None):
        return None
    return f"not a block header: {str(result)[:80]!r}"


def aggregate3_answer(count: int) -> Shape:
    """Multicall3's aggregate3 of `count` calls: ABI data holding `count` results ("0x", a
    liar's empty answer, failed every block's evaluation with no failover, a by-hand
    trial)."""
    def shape(result: Any) -> str | None:
        if (why := hex_data(result)) is not None:
            return why
        if len(result) < 2 + 128:
            return f"an aggregate3 answer of {(len(result) - 2) // 2} bytes"
        offset = int(result[2:66], 16)
        if offset > (len(result) - 2) // 2 - 32:
            return "an aggregate3 answer whose array offset is past its end"
        found = int(result[2 + 2 * offset: 2 + 2 * offset + 64], 16)
        return None if found == count else f"{found} aggregate3 results for {count} calls"
    return shape


def quantity_at_most(most: int) -> Shape:
    """A quantity no greater than `most`: a count past what can be (a nonce count thousands
    past the key's next nonce) is the endpoint's fault, not a number to act on."""
    def shape(result: Any) -> str | None:
        if (why := hex_quantity(result)) is not None:
            return why
        return None if int(result, 16) <= most else f"{result[:20]} is past {most}"
    return shape


def _hash(result: Any) -> bool:
    return isinstance(result, str) and len(result) == 66 and hex_data(result) is None


def transaction_receipt(result: Any) -> str | None:
    """A receipt (eth_getTransactionReceipt): None (not mined, not known) is an answer; else
    the fields keeperd reads, of their types — `status` 0x0 or 0x1, `gasUsed` and
    `blockNumber` quantities, `transactionHash` and `blockHash` 32-byte data, the optional
    quantities (`effectiveGasPrice`, `transactionIndex`, `l1Fee`) where given, and `logs` a
    list of objects. (`{"status": "0x1"}`, `"0x1"` or `[]` raised in the watch at every block
    while a transaction was pending, no endpoint blamed, every full pass aborted: an audit.)"""
    if result is None:
        return None
    if not isinstance(result, dict):
        return f"not a receipt: {str(result)[:80]!r}"
    if result.get("status") not in ("0x0", "0x1"):
        return f"a receipt whose status is {str(result.get('status'))[:20]!r}"
    for name in ("gasUsed", "blockNumber"):
        if hex_quantity(result.get(name)) is not None:
            return f"a receipt whose {name} is {str(result.get(name))[:20]!r}"
    for name in ("effectiveGasPrice", "transactionIndex", "l1Fee"):
        if result.get(name) is not None and hex_quantity(result[name]) is not None:
            return f"a receipt whose {name} is {str(result[name])[:20]!r}"
    if not (_hash(result.get("transactionHash")) and _hash(result.get("blockHash"))):
        return "a receipt without a transaction hash and a block hash"
    logs = result.get("logs")
    if logs is not None and not (isinstance(logs, list)
                                 and all(isinstance(entry, dict) for entry in logs)):
        return f"a receipt whose logs are {str(logs)[:40]!r}"
    return None


def receipt_of(tx_hash: str) -> Shape:
    """A receipt of `tx_hash` (or None): another transaction's receipt does not answer."""
    def shape(result: Any) -> str | None:
        if (why := transaction_receipt(result)) is not None or result is None:
            return why
        found = str(result["transactionHash"])
        return None if found.lower() == tx_hash.lower() else \
            f"the receipt of {found[:18]}..., asked {tx_hash[:18]}..."
    return shape


# What each method returns, judged on every answer `request` gets (the callers read them as
# that: "0xZZ" for a head raised in the probe and crashed the daemon at every start, a
# by-hand trial) and on each answer in a batch (`batch`, `batch_at`, `batch_on`). Methods not
# here are the caller's to judge.
METHOD_SHAPES: dict[str, Shape] = {
    "eth_blockNumber": hex_quantity, "eth_chainId": hex_quantity,
    "eth_getTransactionCount": hex_quantity, "eth_getBalance": hex_quantity,
    "eth_gasPrice": hex_quantity, "eth_maxPriorityFeePerGas": hex_quantity,
    "eth_estimateGas": hex_quantity, "eth_call": hex_data, "eth_getCode": hex_data,
    "eth_getBlockByNumber": block_header, "eth_getBlockByHash": block_header,
    "eth_getTransactionReceipt": transaction_receipt,
}
# ... narrowed by what was asked (`shape_for`).
ASKED_SHAPES: dict[str, Callable[[Sequence[Any]], Shape | None]] = {
    "eth_getTransactionReceipt": lambda params: (
        receipt_of(params[0]) if params and isinstance(params[0], str) else None),
}


def shape_for(method: str, params: Sequence[Any]) -> Shape | None:
    """What an answer to `method` asked with `params` must look like (None: the caller's to
    judge): METHOD_SHAPES's, or ASKED_SHAPES's where the question narrows it."""
    asked = ASKED_SHAPES.get(method)
    return (asked(params) if asked is not None else None) or METHOD_SHAPES.get(method)


class _TransientError(Exception):
    """One attempt on one endpoint failed in a way another attempt may not."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


# The path segments a logged URL shows (letter case aside): versions (`v2`, `v0.1`) and the
# public route and network words of providers', venues' and alert sinks' URLs. Any other
# segment is shown as `***`, whatever it looks like: see `redact_url`.
_PUBLIC_VERSION = re.compile(r"v\d{1,2}(?:\.\d{1,2}){0,2}", re.IGNORECASE)
_PUBLIC_SEGMENTS = frozenset({
    "rpc", "jsonrpc", "api", "ws", "wss", "http", "https", "ext", "bc", "c", "lb", "ogrpc",
    "evm", "eth", "ethereum", "mainnet", "arbitrum", "arbitrum-one", "optimism", "base",
    "polygon", "bsc", "avalanche", "gnosis", "sepolia", "holesky",
    "info", "exchange", "perpetualmarkets", "addresses", "subaccountnumber",
    "parentsubaccountnumber", "hook", "hooks", "webhook", "webhooks", "alerts", "services",
    "sendmessage",
})


def redact_url(url: str) -> str:
    """The URL without credentials, query string, fragment, or any path segment that may be a
    key: the scheme, host and port stay (which endpoint it was).

    Providers put keys in the userinfo, in the query, or anywhere in the path, of any length
    and alphabet: `https://eth-mainnet.g.alchemy.com/v2/<key>`, `https://mainnet.infura.io/
    v3/<key>`, `https://<name>.quiknode.pro/<token>/`, `https://rpc.ankr.com/eth/<key>`;
    Telegram puts its bot token in the path. A short key cannot be told from a word by its
    looks (`/v2/abc`), so no rule of length or letters is safe: a segment is shown only if it
    is known to be public — a version, or a word on `_PUBLIC_SEGMENTS` — and every other one
    is `***`. An over-redacted URL in a log costs a little reading; a leaked key costs the key.
    Punctuation that ends it (a URL at the end of a sentence, `<url>: refused`) stays.
    """
    tail = url[len(url.rstrip(".,:;!?")):]
    url = url[:len(url) - len(tail)]
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "[unparseable url]"
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    segments = [
        seg if not seg or seg.lower() in _PUBLIC_SEGMENTS or _PUBLIC_VERSION.fullmatch(seg)
        else "***"
        for seg in parts.path.split("/")
    ]
    return urlunsplit((parts.scheme, host, "/".join(segments), "", "")) + tail


def url_secrets(url: str) -> list[str]:
    """What `redact_url` hides of `url` (its user and password, every path segment not known
    to be public, its query and fragment): the strings to scrub from a text that may echo the
    URL in part — an error page that says the path it was asked, an exception's message."""
    try:
        parts = urlsplit(url)
        found = [parts.username, parts.password]
    except ValueError:
        return [url]
    found += [seg for seg in parts.path.split("/") if seg and seg.lower() not in
              _PUBLIC_SEGMENTS and not _PUBLIC_VERSION.fullmatch(seg)]
    found += [parts.query, parts.fragment]
    found += [value for pair in parts.query.split("&") for value in pair.split("=")[1:]]
    return [s for s in found if s]


PROBE_BENCHED_MAX_S = 10.0  # the longest a benched endpoint goes unprobed


@dataclass
class EndpointHealth:
    latency_ewma: float | None = None
    consecutive_failures: int = 0
    # When the first request of its current run of failures was sent (time.monotonic()),
    # None after a success: a hung node fails a request only at its timeout, and is benched
    # only after `bench_after` of them — "every endpoint down" counted from the bench fired
    # rpc_down ~25 s later than `after_s`, and a 50 s hang told no one (a by-hand trial).
    failing_since: float | None = None
    errors: int = 0
    requests: int = 0
    head: int | None = None
    benched_until: float = 0.0
    bench_seconds: float = 0.0
    # While benched, the next probe no sooner than this (a dead endpoint was probed every
    # poll interval, for good: twice a second on the devnet, each a transport error counted)
    probe_after: float = 0.0
    # Whether it serves the pool's chain: unknown until asked (eth_chainId), and an endpoint
    # found on another network is never used again.
    chain_ok: bool | None = None
    # When a probe last found its head higher (time.monotonic()), and how many probes in a
    # row since found it where it was: a frozen node's head stops, a live one's moves.
    head_moved_at: float | None = None
    probes_unmoved: int = 0
    # The head the last probe found: movement is judged against it, not against `head`,
    # which a read that found no block lowers (`_batch_at`) — a frozen endpoint's next probe
    # read as a head that moved, and it voted and ranked as live (a review).
    probed_head: int | None = None
    # Probes in a row that found two other endpoints QUORUM_BEHIND_BLOCKS or more past it
    # (`RpcPool.behind_quorum`): one that moves but stays behind stays behind.
    probes_behind: int = 0

    def probed(self, head: int, now: float) -> None:
        """A probe's answer: the endpoint's head now."""
        if self.probed_head is None or head > self.probed_head:
            self.head_moved_at, self.probes_unmoved = now, 0
        else:
            self.probes_unmoved += 1
        self.head = self.probed_head = head


@dataclass
class Endpoint:
    name: str
    url: str
    rate_limit: float | None  # requests per second; None = unlimited
    health: EndpointHealth = field(default_factory=EndpointHealth)
    _bucket: TokenBucket | None = None

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def take_token(self, now: float) -> float:
        """Consume one request token; return how long to wait first (0 if none)."""
        if self.rate_limit is None:
            return 0.0
        if self._bucket is None:
            self._bucket = TokenBucket(self.rate_limit, now=now)
        return self._bucket.reserve(now)


@dataclass(frozen=True)
class RpcPoolSettings:
    timeout: float = 10.0
    max_attempts: int = 4
    backoff_base: float = 0.1
    backoff_max: float = 5.0
    bench_after: int = 3
    bench_min_seconds: float = 2.0
    bench_max_seconds: float = 60.0
    max_head_lag: int = 3
    # The reference head may move on at most one block per this many seconds of wall time
    # (plus max_head_lag): faster is a claim, not a chain (L2s: set it to their block time).
    min_block_seconds: float = 0.25
    ewma_alpha: float = 0.2
    # No answer is read past this (a lying or misrouted endpoint streaming without end would
    # otherwise be read until memory runs out); past it the endpoint is failed over. Callers
    # ask for less where they know better (eth_getLogs halves its range instead).
    max_response_bytes: int = 128 * 2**20


class RpcPool:
    """JSON-RPC over a ranked set of endpoints. Use as `async with RpcPool(...) as pool`."""

    def __init__(
        self,
        chain: str,
        endpoints: Sequence[Endpoint],
        *,
        settings: RpcPoolSettings | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        expected_chain_id: int | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError(f"chain {chain!r}: an RPC pool needs at least one endpoint")
        self.chain = chain
        self.endpoints = list(endpoints)
        self.settings = settings or RpcPoolSettings()
        self.metrics = metrics or Metrics()
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._last_used: Endpoint | None = None
        # When set, an endpoint answers nothing else until it has answered eth_chainId with
        # it: one down at start that comes back serving another network is never followed.
        self.expected_chain_id = expected_chain_id
        self._reference: tuple[int, float] | None = None  # (head, when): best_head
        # The head's reads asked ahead in one batch (chain/prefetch.py); the block source
        # tells it each head. A pool no block source follows never asks ahead.
        self.prefetch = HeadPrefetch(self._prefetch_batch)
        for ep in self.endpoints:
            self.metrics.rpc_endpoint_up.labels(chain, ep.name).set(1)

    @classmethod
    def from_urls(cls, chain: str, urls: Sequence[str], **kwargs: Any) -> RpcPool:
        rate_limit = kwargs.pop("rate_limit", None)
        return cls(chain, [Endpoint(str(i), u, rate_limit) for i, u in enumerate(urls)], **kwargs)

    async def __aenter__(self) -> RpcPool:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is None:
            # One connection pool for all endpoints; per-request timeouts are set below.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300),
                json_serialize=dumps,
            )

    async def close(self) -> None:
        self.prefetch.forget()  # (a batch still in flight is not waited for)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- public calls -------------------------------------------------------------------

    async def request(self, method: str, params: Sequence[Any] = (), *,
                      max_response_bytes: int | None = None,
                      shape: Shape | None = None) -> Any:
        """Send one call and return its `result`; raise RpcError or RpcUnavailable.

        With `max_response_bytes`, an answer larger than that is not read: the call fails
        with `ResponseTooLarge` (the caller should ask for less), so one huge eth_getLogs
        answer cannot blow up the process's memory.
        """
        shape = shape or shape_for(method, params)
        hit, answer = await self.prefetch.answer(method, params)
        if hit and (shape is None or shape(answer) is None):
            return answer  # (one asked ahead that is not what the method returns: asked again)
        response = await self.request_raw(method, params, max_response_bytes=max_response_bytes,
                                          shape=shape)
        error = response.get("error")
        if error is not None:
            raise RpcError(method, int(error.get("code", 0)), str(error.get("message")),
                           error.get("data"))
        return response.get("result")

    async def request_raw(self, method: str, params: Sequence[Any] = (), *,
                          max_response_bytes: int | None = None,
                          shape: Shape | None = None) -> dict[str, Any]:
        """Send one call and return the whole JSON-RPC response (errors included). `shape`:
        why a result is not what the method returns (None: it is), judged on each answer;
        one that is not is the endpoint's fault, failed over like a dead one."""
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                   "params": list(params)}
        body = await self._send(method, payload, expect_list=False,
                                max_response_bytes=max_response_bytes,
                                shape=shape or shape_for(method, params))
        assert isinstance(body, dict)
        return body

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send calls as one JSON-RPC batch. Each item is a result or an `RpcError`.

        A batch is retried and failed over as a whole; per-call JSON-RPC errors are returned
        in place so one bad call does not sink the others.
        """
        if not calls:
            return []
        found = [await self.prefetch.answer(m, p) for m, p in calls]
        missing = [call for call, (hit, _) in zip(calls, found, strict=True) if not hit]
        asked: list[Any] = []
        if missing:
            first_id, payload = self._batch_payload(missing)
            body = await self._send("batch", payload, expect_list=True,
                                    shape=self._batch_shape(missing, first_id))
            asked = self._batch_results(missing, first_id, body)
        answers = iter(asked)
        return [answer if hit else next(answers) for hit, answer in found]

    async def batch_at(self, block: int, calls: Sequence[tuple[str, Sequence[Any]]], *,
                       max_response_bytes: int | None = None) -> tuple[dict[str, Any],
                                                                        list[Any]]:
        """`calls` as one batch answered by an endpoint that has block `block`: the header of
        `block`, then each call's result or `RpcError`.

        A node behind the head (a lagging provider, a fallback a few blocks back) answers
        `eth_getLogs` for the blocks it has and nothing for the rest — no error, logs
        silently missing. So the header is asked first in the same batch: an endpoint
        without it is behind; its answer is dropped, counted (`outcome="behind"`), and the
        next endpoint asked. `EndpointsBehind` when none had it.
        """
        found = [await self.prefetch.answer(m, p)
                 for m, p in [("eth_getBlockByNumber", [hex(block), False]), *calls]]
        if all(hit for hit, _ in found):
            header, *results = (answer for _, answer in found)
            return header, results
        return await self._batch_at(block, calls, max_response_bytes=max_response_bytes)

    async def _prefetch_batch(self, block: int, calls: list[tuple[str, list[Any]]]
                              ) -> tuple[dict[str, Any], list[Any]]:
        return await self._batch_at(block, calls, max_response_bytes=PREFETCH_MAX_BYTES)

    async def _batch_at(self, block: int, calls: Sequence[tuple[str, Sequence[Any]]], *,
                        max_response_bytes: int | None = None
                        ) -> tuple[dict[str, Any], list[Any]]:
        asked = [("eth_getBlockByNumber", [hex(block), False]), *calls]
        first_id, payload = self._batch_payload(asked)

        def has_block(ep: Endpoint, body: Any) -> str | None:
            header = next((item.get("result") for item in body
                           if item.get("id") == first_id), None)
            if isinstance(header, dict) and header.get("number") == hex(block) \
                    and isinstance(header.get("hash"), str):
                return None
            if ep.health.head is None or ep.health.head >= block:
                ep.health.head = block - 1  # as far as we know now
            return f"has no block {block} yet (its answer: {str(header)[:120]})"

        body = await self._send("batch", payload, expect_list=True,
                                max_response_bytes=max_response_bytes, check=has_block,
                                shape=self._batch_shape(asked, first_id))
        header, *results = self._batch_results(asked, first_id, body)
        return header, results

    @staticmethod
    def _batch_shape(calls: Sequence[tuple[str, Sequence[Any]]], first_id: int) -> Shape:
        """A batch's answers judged as `request` judges each (METHOD_SHAPES): one that is not
        what its method returns fails the batch over, as a bad response."""
        shapes = {first_id + i: shape_for(m, p) for i, (m, p) in enumerate(calls)}

        def shape(body: Any) -> str | None:
            for item in body:
                judge = shapes.get(item.get("id"))
                if judge is not None and item.get("error") is None and \
                        (why := judge(item.get("result"))) is not None:
                    return why
            return None
        return shape

    def _batch_payload(self, calls: Sequence[tuple[str, Sequence[Any]]]
                       ) -> tuple[int, list[dict[str, Any]]]:
        first_id = next(self._ids)
        self._ids = itertools.count(first_id + len(calls))
        return first_id, [
            {"jsonrpc": "2.0", "id": first_id + i, "method": m, "params": list(p)}
            for i, (m, p) in enumerate(calls)
        ]

    @staticmethod
    def _batch_results(calls: Sequence[tuple[str, Sequence[Any]]], first_id: int,
                       body: Any) -> list[Any]:
        by_id = {item.get("id"): item for item in body}
        results: list[Any] = []
        for i, (method, _) in enumerate(calls):
            item = by_id.get(first_id + i)
            if item is None:
                results.append(RpcError(method, -32603, "missing from batch response"))
            elif item.get("error") is not None:
                err = item["error"]
                results.append(RpcError(method, int(err.get("code", 0)),
                                        str(err.get("message")), err.get("data")))
            else:
                results.append(item.get("result"))
        return results

    async def batch_on(self, ep: Endpoint, calls: Sequence[tuple[str, Sequence[Any]]]
                       ) -> list[Any]:
        """`batch` on one given endpoint, one attempt, no failover (a second opinion must
        come from that endpoint or from none). `RpcUnavailable` when it does not answer."""
        if not calls:
            return []
        first_id, payload = self._batch_payload(calls)
        try:
            await self._of_our_chain(ep)
            body = await self._attempt(ep, "batch", payload, expect_list=True,
                                       shape=self._batch_shape(calls, first_id))
        except _TransientError as exc:
            raise RpcUnavailable(f"endpoint {ep.name} ({ep.safe_url}): {exc}") from None
        return self._batch_results(calls, first_id, body)

    async def _of_our_chain(self, ep: Endpoint) -> None:
        """An endpoint asked by name (a vote, a second opinion) is of this chain, asked its
        chain id first if that is not known yet (one down at start, back since): the answer
        of one serving another network is another chain's."""
        if not await self._serves_our_chain(ep):
            raise _TransientError("wrong_chain", "serves another network (never used)")

    @property
    def voters(self) -> list[Endpoint]:
        """The endpoints whose answers count when several are asked the same question (an
        address to approve, a block still there, the keeper's code or balances): all but those
        known to serve another network, whose answers are another chain's."""
        return [ep for ep in self.endpoints if ep.health.chain_ok is not False]

    async def call_endpoint(self, ep: Endpoint, method: str, params: Sequence[Any] = (), *,
                            judged: bool = True, shape: Shape | None = None) -> Any:
        """One attempt on one given endpoint, no failover (start-up checks, probes, votes);
        an endpoint whose network is not known yet is asked its chain id first, and one of
        another network is refused (`RpcUnavailable`) without being asked. `judged=False`: its
        failure does not count against the endpoint (a method many providers limit or do not
        serve, asked for the log's sake: `debug_traceTransaction`). `shape`: an answer not of
        it is the endpoint's bad response (counted, `RpcUnavailable`); without it the caller
        judges the answer."""
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                   "params": list(params)}
        try:
            if method != "eth_chainId":  # (the start's own check of it)
                await self._of_our_chain(ep)
            body = await self._attempt(ep, method, payload, expect_list=False, judged=judged,
                                       shape=shape)
        except _TransientError as exc:
            raise RpcUnavailable(f"endpoint {ep.name} ({ep.safe_url}): {exc}") from None
        if body.get("error") is not None:
            err = body["error"]
            raise RpcError(method, int(err.get("code", 0)), str(err.get("message")))
        return body.get("result")

    async def probe(self) -> None:
        """Ask every endpoint for its head, so lag is known and benched endpoints can return.

        Called once per poll interval by the daemon. A probe goes to one endpoint only and is
        not retried: its job is to measure that endpoint.
        """
        await asyncio.gather(*(self._probe_one(ep) for ep in self.endpoints))
        self.count_behind()
        self._publish_health()

    def count_behind(self) -> None:
        """After a probe round: each endpoint's run of probes behind two others
        (`EndpointHealth.probes_behind`)."""
        for ep in self.endpoints:
            ep.health.probes_behind = (ep.health.probes_behind + 1
                                       if self._two_past(ep) else 0)

    def _two_past(self, ep: Endpoint) -> bool:
        """Two other endpoints have a head QUORUM_BEHIND_BLOCKS or more past this one's."""
        if ep.health.head is None:
            return False
        others = sorted((o.health.head for o in self.endpoints
                         if o is not ep and o.health.head is not None
                         and o.health.chain_ok is not False), reverse=True)
        return len(others) >= 2 and others[1] - ep.health.head >= QUORUM_BEHIND_BLOCKS

    async def _serves_our_chain(self, ep: Endpoint) -> bool:
        """Ask an endpoint of unknown network for its chain id once (transient failures
        propagate: it is then just down)."""
        if self.expected_chain_id is None or ep.health.chain_ok is not None:
            return ep.health.chain_ok is not False
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": "eth_chainId",
                   "params": []}
        body = await self._attempt(ep, "eth_chainId", payload, expect_list=False)
        try:
            got = int(body.get("result"), 16)
        except (TypeError, ValueError):
            raise _TransientError("bad_response", f"eth_chainId: {str(body)[:200]}") from None
        ep.health.chain_ok = got == self.expected_chain_id
        if not ep.health.chain_ok:
            self.metrics.rpc_endpoint_up.labels(self.chain, ep.name).set(0)
            log.error("rpc.endpoint_wrong_chain", chain=self.chain, endpoint=ep.name,
                      url=ep.safe_url, chain_id=got, expected=self.expected_chain_id,
                      action="never used; point the URL at the right network")
        return ep.health.chain_ok

    async def _probe_one(self, ep: Endpoint) -> None:
        now = time.monotonic()
        if ep.health.benched_until > now:
            # A benched endpoint is probed as often as its cooldown says, at most every
            # PROBE_BENCHED_MAX_S: it still comes back that soon once it answers.
            if now < ep.health.probe_after:
                return
            ep.health.probe_after = now + min(max(ep.health.bench_seconds, 1.0),
                                              PROBE_BENCHED_MAX_S)
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": "eth_blockNumber",
                   "params": []}
        try:
            if not await self._serves_our_chain(ep):
                return
            body = await self._attempt(ep, "eth_blockNumber", payload, expect_list=False,
                                       shape=hex_quantity)
            if body.get("error") is None:
                ep.health.probed(int(body["result"], 16), time.monotonic())
                ep.health.benched_until = 0.0
        except _TransientError:
            pass

    @property
    def best_head(self) -> int | None:
        """The head other endpoints' lag is judged against. Not simply the highest claim: one
        endpoint that overstates its head (a liar, a misrouted node) would become it and mark
        the operator's own node lagging. A head counts when another endpoint is near it (or
        beyond); when none is, when it is as far past the last reference as the time since
        allows; failing both, the lower median of the heads.

        A claim credited by time alone does not count against two endpoints it is past by
        more than the lag whose heads still move (`_votes`): with the time rule open to every
        claim, one endpoint answering four blocks past two agreeing ones became the reference
        in the next probe, made both of them lagging (unhealthy: no second opinion, no second
        feed reading) and was followed alone. Two frozen together at one height outvote no
        one once their heads have stood still for VOTE_FRESH_S. (With two endpoints, one far
        past the other, nothing tells a lagging node from a liar but time: it decides.)"""
        now = time.monotonic()
        known = sorted((ep.health.head, self._votes(ep, now))
                       for ep in self.endpoints if ep.health.head is not None)
        heads = [head for head, _ in known]
        if not heads:
            return None
        lag = self.settings.max_head_lag
        previous = self._reference

        def credible(i: int, head: int) -> bool:
            others = heads[:i] + heads[i + 1:]
            if not others or any(o >= head - lag for o in others):
                return True
            # (every other is past the lag here: two whose heads still move outvote it — a
            # pair frozen at one height does not, or it would hide the chain from the one
            # endpoint that follows it)
            if previous is None or sum(votes for j, (_, votes) in enumerate(known)
                                       if j != i) >= 2:
                return False
            # (the reference's time is when it last moved: a chain's head moves every block)
            ref, since = previous
            return head <= ref + lag + (now - since) / self.settings.min_block_seconds
        candidates = [h for i, h in enumerate(heads) if credible(i, h)]
        best = max(candidates) if candidates else heads[(len(heads) - 1) // 2]
        if previous is None or best > previous[0] or best < previous[0] - lag:
            # (down too, past the lag: a claim credited once and outvoted since must not stay
            # the reference the time rule counts from)
            self._reference = (best, now)
        return best

    def contested(self) -> str | None:
        """Why the head keeperd follows is one endpoint's word against two or more others
        whose heads stand still, more than the lag behind it, or None. `best_head` credits
        such a claim by time once their heads have stood still for VOTE_FRESH_S, so that a
        stalled pair does not hide the chain: that is also what a chain halt looks like to an
        endpoint inventing blocks past it, and followed alone, with no second opinion, its
        word would have decided the keeper's sends. Reads follow it; what moves the keeper's
        money waits (`Executor.send_pause`, approvals and deposits, follow-ups, new
        signatures of transactions in flight), alerted, until two endpoints agree again.

        The endpoints counted are those `best_head` counts (benched ones too: a few 429s of
        an honest endpoint must not end the hold); an endpoint behind that still moves (a
        lagging public node on a fast chain) votes, and does not make the head contested."""
        best = self.best_head
        if best is None:
            return None
        lag = self.settings.max_head_lag
        now = time.monotonic()
        known = [ep for ep in self.endpoints
                 if ep.health.head is not None and ep.health.chain_ok is not False]
        near = [ep for ep in known if ep.health.head >= best - lag]  # type: ignore[operator]
        still = [ep for ep in known if ep.health.head < best - lag  # type: ignore[operator]
                 and not self._votes(ep, now)]
        if len(near) != 1 or len(still) < 2:
            return None
        heads = sorted(ep.health.head for ep in still if ep.health.head is not None)
        at = f"{heads[0]}" if heads[0] == heads[-1] else f"{heads[0]}-{heads[-1]}"
        return (f"the head followed (block {best}) is one endpoint's word "
                f"({near[0].safe_url}): {len(still)} others stand at block {at}, more than "
                f"max_head_lag ({lag}) behind it, their heads still for {VOTE_FRESH_S:g} s or "
                "more (a chain halted while one endpoint invents blocks past it, or those "
                "endpoints stalled): nothing that moves the keeper's money goes until two "
                "endpoints agree")

    @staticmethod
    def _votes(ep: Endpoint, now: float) -> bool:
        """Whether an endpoint's head may outvote a lone claim: its head moved within
        VOTE_FRESH_S (benched or not: a few 429s must not hand the head to a liar)."""
        moved = ep.health.head_moved_at
        return moved is not None and now - moved <= VOTE_FRESH_S

    def behind_quorum(self, ep: Endpoint) -> bool:
        """Two other endpoints both have a block at least QUORUM_BEHIND_BLOCKS past this
        one's head, and its head did not move at the last probe (or it stayed behind them for
        BEHIND_PROBES probes in a row): it is frozen or slow, though still within
        `max_head_lag` (a first endpoint stuck a block or three back hid those
        blocks from the keeper until it lagged). Ranked after the endpoints that are not,
        still healthy. Two others, not the best head: one endpoint's claim alone must not
        move the honest ones down (with two endpoints there is no quorum, and nothing is
        demoted this way)."""
        if ep.health.head is None or (ep.health.probes_unmoved < 1
                                      and ep.health.probes_behind < BEHIND_PROBES):
            # (not while its head still moves, for a probe or two: on a fast chain one
            # endpoint routinely two blocks past it, and a liar claiming the same, put the
            # liar first — a review; but one that moves and stays behind hid those blocks
            # for good)
            return False
        return self._two_past(ep)

    def second(self) -> Endpoint | None:
        """The endpoint a second opinion (or a second reading) comes from: the first after
        `ranked()[0]` that is healthy and not behind two others (one behind answers nothing
        at the block asked, and that silence read as agreement — a review), or None."""
        ranked = self.ranked()
        now = time.monotonic()
        return next((ep for ep in ranked[1:] if self.is_healthy(ep, now)
                     and not self.behind_quorum(ep)), None)

    def is_healthy(self, ep: Endpoint, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return (ep.health.chain_ok is not False and ep.health.benched_until <= now
                and not self._is_lagging(ep))

    def healthy_count(self) -> int:
        now = time.monotonic()
        return sum(1 for ep in self.endpoints if self.is_healthy(ep, now))

    def failing_for(self, now: float | None = None) -> float:
        """How long every endpoint has been failing (seconds): since the latest of their
        current runs of failures began, counted from the first failed request's send; 0
        when one has not failed since its last success (an endpoint out for its lag or for
        another chain is `healthy_count`'s to count)."""
        now = time.monotonic() if now is None else now
        # (one found on another network is never asked again: its run never starts, and it
        # held the figure at 0 for the chain's endpoints that hang — a review)
        runs = [ep.health.failing_since for ep in self.endpoints
                if ep.health.chain_ok is not False]
        if not runs or any(since is None for since in runs):
            return 0.0
        return max(0.0, now - max(since for since in runs if since is not None))

    # --- internals ----------------------------------------------------------------------

    def _is_lagging(self, ep: Endpoint) -> bool:
        best = self.best_head
        return (
            best is not None
            and ep.health.head is not None
            and best - ep.health.head > self.settings.max_head_lag
        )

    def ranked(self) -> list[Endpoint]:
        """Endpoints best first.

        Operators list their endpoints best first (their own node, then a paid provider, then
        a public one), so among usable endpoints the configured order wins. An endpoint is
        demoted when it is benched, lags the best head, is behind two others (`behind_quorum`),
        failed since its last success, or is much slower than the fastest one (latency EWMA
        above 4x the best plus 50 ms).
        """
        now = time.monotonic()
        latencies = [ep.health.latency_ewma for ep in self.endpoints
                     if ep.health.latency_ewma is not None]
        slow_above = 4 * min(latencies) + 0.05 if latencies else float("inf")

        def key(ep: Endpoint) -> tuple[int, float, int, int, int, int]:
            benched = ep.health.benched_until > now
            tier = 2 if benched else (1 if self._is_lagging(ep) else 0)
            latency = ep.health.latency_ewma
            slow = 1 if latency is not None and latency > slow_above else 0
            return (tier, ep.health.benched_until if benched else 0.0,
                    1 if self.behind_quorum(ep) else 0,
                    min(ep.health.consecutive_failures, 1), slow, self.endpoints.index(ep))

        return sorted((ep for ep in self.endpoints if ep.health.chain_ok is not False), key=key)

    async def _send(self, method: str, payload: Any, *, expect_list: bool,
                    max_response_bytes: int | None = None,
                    check: Callable[[Endpoint, Any], str | None] | None = None,
                    shape: Shape | None = None) -> Any:
        s = self.settings
        last_error = "no attempt made"
        last_outcome = ""
        previous: Endpoint | None = None
        tried: set[str] = set()
        for attempt in range(s.max_attempts):
            order = self.ranked()
            if not order:
                raise RpcUnavailable(f"{self.chain}: every endpoint answers for another chain "
                                     f"than {self.expected_chain_id}")
            untried = [e for e in order if e.name not in tried]
            if not untried:
                # Every endpoint has had its chance this round: back off, then start again.
                tried.clear()
                untried = order
                await asyncio.sleep(backoff_delay(attempt - len(order), s.backoff_base,
                                                  s.backoff_max, self._rng.random))
            ep = untried[0]
            tried.add(ep.name)
            if attempt > 0:
                self.metrics.rpc_retries.labels(self.chain, method_label(method)).inc()
                if previous is not None and ep is not previous:
                    self.metrics.rpc_failovers.labels(self.chain, previous.name, ep.name).inc()
            try:
                if not await self._serves_our_chain(ep):
                    last_error = f"endpoint {ep.name} ({ep.safe_url}): another chain"
                    continue
                body = await self._attempt(ep, method, payload, expect_list=expect_list,
                                           max_response_bytes=max_response_bytes, check=check,
                                           shape=shape)
            except _TransientError as exc:
                last_error = f"endpoint {ep.name} ({ep.safe_url}): {exc}"
                last_outcome = exc.outcome
                previous = ep
                continue
            self._last_used = ep
            self.metrics.rpc_all_down.labels(self.chain).set(0)
            return body
        if last_outcome == "behind":  # (they answer: only not that far yet)
            raise EndpointsBehind(f"chain {self.chain!r}: {method}: {last_error}")
        self.metrics.rpc_all_down.labels(self.chain).set(1 if self.healthy_count() == 0 else 0)
        raise RpcUnavailable(
            f"chain {self.chain!r}: {method} failed on every endpoint after "
            f"{s.max_attempts} attempts; last error: {last_error}"
        )

    async def _attempt(self, ep: Endpoint, method: str, payload: Any, *,
                       expect_list: bool, max_response_bytes: int | None = None,
                       check: Callable[[Endpoint, Any], str | None] | None = None,
                       shape: Shape | None = None, judged: bool = True) -> Any:
        assert self._session is not None, "RpcPool used outside `async with` (call open())"
        wait = ep.take_token(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
        label = method_label(method)
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                async with self._session.post(
                    ep.url,
                    json=payload,
                    timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                    # A redirect is an answer of its own, never followed: it could take the
                    # request (and a provider key in its URL) to plain http or elsewhere.
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    # The caller's bound is theirs to handle (ResponseTooLarge); the pool's
                    # own is the endpoint's fault (failed over).
                    limit = (max_response_bytes if max_response_bytes is not None
                             else self.settings.max_response_bytes)
                    too_large: Exception = (
                        ResponseTooLarge(method, resp.content_length, limit)
                        if max_response_bytes is not None
                        else _TransientError("too_large", f"answer over {limit} bytes"))
                    length = resp.content_length
                    if length is not None and length > limit:
                        outcome = "too_large"
                        raise too_large
                    parts: list[bytes] = []
                    received = 0
                    async for part in resp.content.iter_chunked(1 << 16):
                        received += len(part)
                        if received > limit:
                            outcome = "too_large"
                            raise too_large
                        parts.append(part)
                    raw = b"".join(parts)
            except TimeoutError as exc:
                outcome = "timeout"
                raise _TransientError(outcome, f"timed out after {self.settings.timeout}s") \
                    from exc
            except aiohttp.ClientError as exc:
                outcome = "transport_error"
                raise _TransientError(outcome, type(exc).__name__) from exc
            if status == 429:
                outcome = "rate_limited"
                raise _TransientError(outcome, "HTTP 429 Too Many Requests")
            if status >= 500:
                outcome = "transport_error"
                raise _TransientError(outcome, f"HTTP {status}")
            if 300 <= status < 400:
                outcome = "bad_response"
                raise _TransientError(outcome, f"HTTP {status}: a redirect, not followed "
                                               "(configure the endpoint's final URL)")
            body = self._decode(raw, expect_list)
            if body is None:
                outcome = "bad_response"
                raise _TransientError(outcome, f"HTTP {status}: not a JSON-RPC response")
            if not expect_list and body.get("error") is not None:
                err = body["error"]
                if _is_transient_rpc_error(err):
                    outcome = "rate_limited" if err.get("code") in (-32005, 429) else "rpc_error"
                    raise _TransientError(outcome, f"node said: {err.get('message')}")
                outcome = "rpc_error"
            if shape is not None and (expect_list or body.get("error") is None) and \
                    (reason := shape(body if expect_list else body.get("result"))) is not None:
                # (a result the method never returns — "0xZZ" for a head, {} for a header,
                # "0x" for a multicall: the endpoint's fault, failed over and benched; it was
                # an exception in the caller that crashed the daemon or failed every block,
                # a by-hand trial)
                outcome = "bad_response"
                raise _TransientError(outcome, f"{method}: {reason}")
            if check is not None and (reason := check(ep, body)) is not None:
                outcome = "behind"
                raise _TransientError(outcome, reason)
            if judged:
                self._record_success(ep, time.perf_counter() - started)
            return body
        except _TransientError:
            if judged:  # (a question the endpoint may well not serve: not its health)
                self._record_failure(ep, time.monotonic() - (time.perf_counter() - started))
            raise
        except ResponseTooLarge:
            self._record_success(ep, time.perf_counter() - started)  # the node is fine
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.rpc_requests.labels(self.chain, ep.name, label, outcome).inc()
            self.metrics.rpc_latency.labels(self.chain, ep.name, label).observe(elapsed)

    @staticmethod
    def _decode(raw: bytes, expect_list: bool) -> Any:
        """The JSON-RPC envelope, or None when it is not one: such an answer is the endpoint's
        fault (counted as a bad response, failed over, benched), never an exception in the
        caller. An `error` must be an object with an integer code (some proxies answer a bare
        string), and an answer must have a `result` or an `error`."""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        items = body if expect_list else [body]
        if expect_list and not isinstance(body, list):
            return None
        for item in items:
            if not isinstance(item, dict) or ("result" not in item and "error" not in item):
                return None
            if expect_list and not isinstance(item.get("id"), int | str | None):
                return None  # (a list as an id raised TypeError in the caller, a trial)
            err = item.get("error")
            if err is not None and not (isinstance(err, dict)
                                        and isinstance(err.get("code", 0), int)):
                return None
        return body

    def _record_success(self, ep: Endpoint, elapsed: float) -> None:
        h = ep.health
        h.requests += 1
        h.consecutive_failures = 0
        h.failing_since = None
        h.bench_seconds = 0.0
        a = self.settings.ewma_alpha
        h.latency_ewma = (elapsed if h.latency_ewma is None
                          else a * elapsed + (1 - a) * h.latency_ewma)
        if h.benched_until:
            h.benched_until = 0.0
            self.metrics.rpc_endpoint_up.labels(self.chain, ep.name).set(1)

    def _record_failure(self, ep: Endpoint, sent_at: float | None = None) -> None:
        h = ep.health
        h.requests += 1
        h.errors += 1
        h.consecutive_failures += 1
        if h.failing_since is None:
            h.failing_since = time.monotonic() if sent_at is None else sent_at
        if h.consecutive_failures >= self.settings.bench_after:
            s = self.settings
            h.bench_seconds = min(s.bench_max_seconds,
                                  max(s.bench_min_seconds, h.bench_seconds * 2))
            h.benched_until = time.monotonic() + h.bench_seconds
            self.metrics.rpc_endpoint_up.labels(self.chain, ep.name).set(0)

    def _publish_health(self) -> None:
        best = self.best_head
        now = time.monotonic()
        for ep in self.endpoints:
            up = self.is_healthy(ep, now)
            self.metrics.rpc_endpoint_up.labels(self.chain, ep.name).set(1 if up else 0)
            if ep.health.latency_ewma is not None:
                self.metrics.rpc_endpoint_latency_ewma.labels(self.chain, ep.name).set(
                    ep.health.latency_ewma)
            if best is not None and ep.health.head is not None:
                self.metrics.rpc_endpoint_head_lag.labels(self.chain, ep.name).set(
                    best - ep.health.head)
        self.metrics.rpc_all_down.labels(self.chain).set(
            1 if self.healthy_count() == 0 else 0)


def _is_transient_rpc_error(error: dict[str, Any]) -> bool:
    code = error.get("code")
    message = str(error.get("message", ""))
    if _QUERY_TOO_LARGE.search(message):
        return False  # the caller must ask for less (e.g. a smaller eth_getLogs range)
    if code in _TRANSIENT_RPC_CODES:
        return True
    # A revert is the contract's answer, whatever words its reason string contains.
    if code == 3 or "revert" in message.lower():
        return False
    return bool(_TRANSIENT_RPC_MESSAGE.search(message))


class OnEndpoint:
    """A pool's face that asks one of its endpoints only (a second reading of the same
    block: no failover, or the answer would be the first endpoint's again)."""

    def __init__(self, pool: RpcPool, endpoint: Endpoint) -> None:
        self.pool, self.endpoint = pool, endpoint

    async def request(self, method: str, params: Sequence[Any] = (), **_: Any) -> Any:
        # (not judged: a second a block behind answers "header not found", and that must
        # not bench it for the chain's other uses — a review)
        return await self.pool.call_endpoint(self.endpoint, method, params, judged=False)
