"""Follows a chain's head (websocket newHeads when configured, polling otherwise) and detects
reorganisations by parent hash.

The source keeps a window of recent headers. A new head whose parent is not the header it
remembers at that height means the chain it knew was replaced: it walks back by parent hash to
the common ancestor, tells subscribers `Reorg(ancestor, dropped)`, then `NewBlock` for each
header of the new branch in order. Handlers are awaited in turn, which is the back-pressure: the
source does not fetch the next head while a handler is busy. A handler that needs long work
must hand it to its own task.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable, redact_url
from keeperd.metrics import Metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    number: int
    hash: str
    parent_hash: str
    timestamp: int

    @classmethod
    def from_rpc(cls, raw: dict[str, Any]) -> BlockHeader:
        """Raises MalformedHeader for an answer that is not a header (a misbehaving node)."""
        try:
            return cls(
                number=int(raw["number"], 16),
                hash=str(raw["hash"]),
                parent_hash=str(raw["parentHash"]),
                timestamp=int(raw["timestamp"], 16),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedHeader(f"not a block header ({type(exc).__name__}: {exc}): "
                                  f"{str(raw)[:200]}") from None


class MalformedHeader(ValueError):
    """A node answered something that is not a block header."""


class WrongChain(ConnectionError):
    """An endpoint answers for another network than the configured one."""


@dataclass(frozen=True, slots=True)
class NewBlock:
    header: BlockHeader


@dataclass(frozen=True, slots=True)
class Reorg:
    """The blocks above `ancestor` that keeperd saw are no longer on the chain."""

    ancestor: BlockHeader
    dropped: tuple[BlockHeader, ...]
    # Deeper than the remembered blocks: the true ancestor is at or below `ancestor`, and
    # what keeperd saw below it may be gone too.
    past_window: bool = False

    @property
    def depth(self) -> int:
        return len(self.dropped)


BlockEvent = NewBlock | Reorg
Handler = Callable[[BlockEvent], Awaitable[None]]


# How far past the HTTP endpoints' head a first head not yet known to them by its hash may be
# (a websocket's node a block or two ahead of a provider's load-balanced HTTP nodes).
FIRST_HEAD_LEAD = 2


class BlockSource:
    def __init__(
        self,
        pool: RpcPool,
        *,
        poll_interval: float = 1.0,
        ws_url: str | None = None,
        window: int = 128,
        metrics: Metrics | None = None,
        ws_retry_after: float = 10.0,
        ws_stall_after: float = 60.0,
        chain_id: int | None = None,
    ) -> None:
        self.pool = pool
        # When set, the websocket must answer eth_chainId with it before it is followed.
        self.chain_id = chain_id
        self.chain = pool.chain
        self.poll_interval = poll_interval
        self.ws_url = ws_url
        self.window_size = window
        self.metrics = metrics or pool.metrics
        self.ws_retry_after = ws_retry_after
        # A subscription that stays open but says nothing this long is treated as dead: the
        # socket's pings keep answering while the node has stopped sending heads.
        self.ws_stall_after = ws_stall_after
        self._window: OrderedDict[int, BlockHeader] = OrderedDict()
        # A head far past the window, not trusted until a block built on it arrives.
        self._far_ahead: BlockHeader | None = None
        self._handlers: list[Handler] = []
        self.head: BlockHeader | None = None
        # time.monotonic() of the last attempt to hear from the chain, answered or not: a
        # follower that stops trying (a hung await) is stuck, whatever the chain does —
        # /healthz and the systemd watchdog say so.
        self.last_attempt: float | None = None

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def run(self) -> None:
        """Follow the head until cancelled. Errors are counted and logged, never raised."""
        while True:
            if self.ws_url:
                try:
                    await self._follow_ws(self.ws_url)
                except asyncio.CancelledError:
                    raise
                except WrongChain as exc:
                    # Not a hiccup: heads from another network must never be followed. The
                    # websocket is dropped for good; polling (chain-checked endpoints) goes on.
                    self.metrics.block_source_errors.labels(self.chain, "wrong_chain").inc()
                    log.error("block_source.websocket_wrong_chain", chain=self.chain,
                              error=str(exc), fallback="polling only",
                              fix="point chains[].ws_url at the same network as rpc_urls")
                    self.ws_url = None
                    continue
                except Exception as exc:
                    self.metrics.block_source_errors.labels(self.chain, "websocket").inc()
                    log.warning("block_source.websocket_failed", chain=self.chain,
                                error=str(exc), fallback="polling",
                                retry_in_s=self.ws_retry_after)
                try:
                    await asyncio.wait_for(self._follow_poll(), timeout=self.ws_retry_after)
                except TimeoutError:
                    continue
            else:
                await self._follow_poll()

    async def poll_once(self) -> None:
        """Fetch the latest header once and process it (used by `run` and by tests)."""
        self.last_attempt = time.monotonic()
        raw = await self.pool.request("eth_getBlockByNumber", ["latest", False])
        if raw is None:
            return
        await self.process_header(BlockHeader.from_rpc(raw))

    async def _follow_poll(self) -> None:
        while True:
            try:
                await self.poll_once()
            except (RpcUnavailable, RpcError, MalformedHeader) as exc:
                self.metrics.block_source_errors.labels(self.chain, "poll").inc()
                log.warning("block_source.poll_failed", chain=self.chain, error=str(exc))
            await asyncio.sleep(self.poll_interval)

    async def _follow_ws(self, url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(
            url, heartbeat=30
        ) as ws:
            if self.chain_id is not None:
                await self._check_chain_id(ws)
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                "params": ["newHeads"]})
            log.info("block_source.websocket_subscribed", chain=self.chain)
            # Catch up once: heads mined while we were polling or reconnecting.
            await self.poll_once()
            heard = time.monotonic()
            while True:
                self.last_attempt = time.monotonic()
                try:
                    msg = await ws.receive(timeout=min(self.poll_interval, self.ws_stall_after))
                except TimeoutError:
                    if time.monotonic() - heard >= self.ws_stall_after:
                        raise ConnectionError(f"subscription stalled: no message for "
                                              f"{self.ws_stall_after:g} s") from None
                    await self._catch_up_with_the_pool()
                    continue
                heard = time.monotonic()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.CLOSING):
                        raise ConnectionError("websocket closed")
                    continue
                data = json.loads(msg.data)
                if data.get("method") != "eth_subscription":
                    if "error" in data:
                        raise ConnectionError(f"eth_subscribe refused: {data['error']}")
                    continue
                raw = data["params"]["result"]
                await self.process_header(BlockHeader.from_rpc(raw))
                # (a socket that speaks but lags: on a fast chain it is never quiet)
                await self._catch_up_with_the_pool(behind_by=2)

    async def _catch_up_with_the_pool(self, behind_by: int = 1) -> None:
        """A subscription quiet for a poll interval while the HTTP endpoints' probes credit a
        later head (or one that speaks but is `behind_by` blocks behind it): the socket's
        node may be frozen or lagging while its socket lives (the stall limit is minutes on
        L1). The head is asked as polling asks it, of the ranked endpoints (a claim alone
        ranks no endpoint first: `RpcPool.best_head`, `behind_quorum`): a lone liar's claim
        costs a request. Before, a frozen socket hid every block until `ws_stall_s`."""
        best = self.pool.best_head
        if best is None or self.head is None or best < self.head.number + behind_by:
            return
        before = self.head.number
        try:
            await self.poll_once()
        except (RpcUnavailable, RpcError, MalformedHeader) as exc:
            self.metrics.block_source_errors.labels(self.chain, "poll").inc()
            log.warning("block_source.poll_failed", chain=self.chain, error=str(exc))
            return
        if self.head.number > before:
            self.metrics.block_source_errors.labels(self.chain, "websocket_behind").inc()
            log.info("block_source.websocket_behind", chain=self.chain, socket_head=before,
                     polled_head=self.head.number,
                     meaning="the subscription said nothing of blocks the HTTP endpoints "
                             "have, or said them late: followed by polling meanwhile")

    async def _check_chain_id(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The websocket must serve the configured chain: asked once per connection, before
        any head from it is believed."""
        await ws.send_json({"jsonrpc": "2.0", "id": 0, "method": "eth_chainId", "params": []})
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError("websocket closed before answering eth_chainId")
            data = json.loads(msg.data)
            if data.get("id") != 0:
                continue
            try:
                got = int(data["result"], 16)
            except (KeyError, TypeError, ValueError):
                raise ConnectionError(f"eth_chainId answer unusable: {str(data)[:200]}"
                                      ) from None
            if got != self.chain_id:
                raise WrongChain(f"{redact_url(self.ws_url or '')} answers with chain id "
                                 f"{got}, the config says {self.chain_id}")
            return

    async def process_header(self, header: BlockHeader) -> None:
        """Fold one observed head into the window and emit what changed."""
        known = self._window.get(header.number)
        if known is not None and known.hash == header.hash:
            return  # already seen
        tip = self.head
        if tip is None:
            # The first head has nothing to be checked against: a made-up one (a lying or
            # misrouted node) would become the tip, and every real head after it would be
            # ignored as old. It must be a block the chain has, asked by its hash — or, for a
            # websocket a block or two ahead of the HTTP endpoints, no further than that past
            # their head.
            if not await self._plausible_first(header):
                self.metrics.block_source_errors.labels(self.chain, "unknown_head").inc()
                log.warning("block_source.unknown_first_head", chain=self.chain,
                            claimed=header.number, hash=header.hash,
                            note="no block has that hash: not followed from it")
                return
            self._remember(header)
            await self._emit(NewBlock(header))
            return
        if header.number < tip.number and known is None:
            return  # an old head from a slow endpoint; nothing we can link it to
        if header.number - tip.number > self.window_size:
            # A jump past the window: a long outage — or a lying or misrouted endpoint. Trusted
            # only once a block built on it arrives; meanwhile nothing moves.
            candidate = self._far_ahead
            if candidate is None or not await self._builds_on(header, candidate):
                if candidate is None or candidate.hash != header.hash:
                    self.metrics.block_source_errors.labels(self.chain, "unconfirmed_jump").inc()
                    log.warning("block_source.unconfirmed_jump", chain=self.chain,
                                head=tip.number, claimed=header.number,
                                note="held until a block built on it arrives")
                self._far_ahead = header
                return
            # Confirmed: nothing to link it to, start afresh from it. Consumers that index by
            # block range catch up from their own cursors.
            self._far_ahead = None
            log.warning("block_source.gap", chain=self.chain, last=tip.number,
                        new_head=candidate.number)
            self._window.clear()
            self._remember(candidate)
            await self._emit(NewBlock(candidate))
            await self.process_header(header)
            return
        self._far_ahead = None  # the chain goes on where we are: that jump was not real

        # Walk back from the new head to a header we know, collecting the new branch.
        branch = [header]
        cursor = header
        ancestor: BlockHeader | None
        while True:
            parent_known = self._window.get(cursor.number - 1)
            if parent_known is not None and parent_known.hash == cursor.parent_hash:
                ancestor = parent_known
                break
            if cursor.number - 1 < self._oldest_number():
                # Fell off the window: treat the oldest remembered block as the ancestor
                # boundary and report everything we knew as dropped (deep reorg or a long gap).
                ancestor = None
                break
            raw = await self.pool.request("eth_getBlockByHash", [cursor.parent_hash, False])
            if raw is None:
                raise RpcError("eth_getBlockByHash", -32000, "parent block not found")
            cursor = BlockHeader.from_rpc(raw)
            branch.append(cursor)
        branch.reverse()

        dropped: list[BlockHeader] = []
        if ancestor is None:
            dropped = [h for h in self._window.values() if h.number >= branch[0].number]
            ancestor_header = self._window.get(branch[0].number - 1) or branch[0]
        else:
            dropped = [h for n, h in self._window.items() if n > ancestor.number]
            ancestor_header = ancestor
        # A gap is not a reorg: only blocks we saw and that the new branch replaced count.
        replaced = [h for h in dropped
                    if not any(b.number == h.number and b.hash == h.hash for b in branch)]
        if replaced:
            for h in replaced:
                self._window.pop(h.number, None)
            self.metrics.reorgs.labels(self.chain).inc()
            self.metrics.reorg_depth.labels(self.chain).observe(len(replaced))
            log.warning("block_source.reorg", chain=self.chain,
                        ancestor=ancestor_header.number, depth=len(replaced),
                        new_head=header.number, **({} if ancestor is not None else {
                            "past_window": True, "meaning": "deeper than the remembered "
                            "blocks: the true ancestor is at or below the one reported; "
                            "the account index checks its own block hashes"}))
            await self._emit(Reorg(ancestor_header, tuple(replaced),
                                   past_window=ancestor is None))
        for h in branch:
            if self._window.get(h.number) == h:
                continue
            self._remember(h)
            await self._emit(NewBlock(h))

    async def _plausible_first(self, header: BlockHeader) -> bool:
        raw = await self.pool.request("eth_getBlockByHash", [header.hash, False])
        if raw is not None:
            return bool(raw.get("number") == hex(header.number))
        pool_head = int(await self.pool.request("eth_blockNumber"), 16)
        return pool_head < header.number <= pool_head + FIRST_HEAD_LEAD

    async def _builds_on(self, header: BlockHeader, candidate: BlockHeader) -> bool:
        """A later head confirms a far-ahead one: its child, or a descendant whose chain
        (asked by number) holds the same block."""
        if header.number <= candidate.number:
            return False
        if header.parent_hash == candidate.hash:
            return True
        raw = await self.pool.request("eth_getBlockByNumber", [hex(candidate.number), False])
        return raw is not None and raw.get("hash") == candidate.hash

    def _oldest_number(self) -> int:
        return next(iter(self._window)) if self._window else 0

    def _remember(self, header: BlockHeader) -> None:
        # Anything at or above this height belongs to a branch we just left.
        for n in [n for n in self._window if n >= header.number]:
            del self._window[n]
        self._window[header.number] = header
        while len(self._window) > self.window_size:
            self._window.popitem(last=False)
        self.head = header

    async def _emit(self, event: BlockEvent) -> None:
        if isinstance(event, Reorg):
            self.pool.prefetch.forget()
        if isinstance(event, NewBlock):
            # This head's reads (those the last head needed) asked now, in one batch, while
            # the subscribers start: chain/prefetch.py.
            self.pool.prefetch.head(event.header.number, event.header.hash)
            self.metrics.blocks_seen.labels(self.chain).inc()
            self.metrics.head_block.labels(self.chain).set(event.header.number)
            self.metrics.head_timestamp.labels(self.chain).set(event.header.timestamp)
        # The scanner's listener policy: each subscriber in turn; one that raises is logged and
        # counted, and the next still gets the event. (A subscriber raising on a Reorg — an RPC
        # error in one protocol's index rewind, a database error in the alerts' retraction —
        # hid that reorg from every subscriber after it for good, the replaced headers being
        # dropped already; in polling mode the exception ended the daemon.)
        for handler in self._handlers:
            try:
                await handler(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                name = getattr(handler, "__qualname__", repr(handler)).split(".<locals>")[0]
                self.metrics.block_source_errors.labels(self.chain, "subscriber").inc()
                log.exception("block_source.subscriber_failed", chain=self.chain,
                              block_event=type(event).__name__, subscriber=name,
                              error=f"{type(exc).__name__}: {exc}")


async def confirmed_head(pool: RpcPool, tries: int = 5) -> int:
    """The chain's head as the pool answers it, confirmed by its own header: a number no
    block has (an endpoint's made-up far-future head, which the block source holds back) is
    asked again. For what a start pins to one block: the executors' reconciliation and
    preparation read the pool's rules at it, and one lying answer failed the start ("block
    height is 474 but requested was 10474": the fault suite)."""
    for attempt in range(tries):
        if attempt:  # (an endpoint a block behind another: a moment for it to catch up)
            await asyncio.sleep(0.5 * attempt)
        head = int(await pool.request("eth_blockNumber"), 16)
        header = await pool.request("eth_getBlockByNumber", [hex(head), False])
        if isinstance(header, dict) and int(str(header.get("number") or "0x0"), 16) == head:
            return head
        log.warning("chain.head_unconfirmed", chain=pool.chain, head=head,
                    meaning="no block has that number: asked again")
    raise RpcUnavailable(f"{pool.chain}: no head the chain confirms in {tries} tries")
