"""Discovers a protocol's accounts from its event logs and keeps a persisted, reorg-safe index.

- Logs are read with eth_getLogs in block ranges that shrink when the provider refuses
  ("too many results", response too large, timeouts) or an answer passes `target_logs`, and
  double while answers stay small, so memory stays bounded on dense chains.
- Only blocks buried under `confirmations` are indexed. The hash of each indexed range's last
  block is stored; at start-up the stored hashes are compared with the chain, so a reorg that
  happened while keeperd was down rewinds the index too.
- A live reorg (from the block source) rewinds the index to the common ancestor: accounts first
  seen on the dropped branch disappear, and the new branch is indexed afresh.
- The cursor and the known accounts are kept in memory too (loaded by `start`): a write the
  state directory refuses (a full disk) costs the persisted copy, never the watching.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from eth_utils import to_checksum_address

from keeperd.chain.rpc import (
    EndpointsBehind,
    ResponseTooLarge,
    RpcError,
    RpcPool,
    RpcUnavailable,
)
from keeperd.crashpoints import crash_point
from keeperd.metrics import Metrics
from keeperd.storage.account_index import IndexStore  # (re-exported: a plug-in's store)

log = structlog.get_logger(__name__)

# A catch-up that runs longer than this logs `index.progress` this often.
PROGRESS_EVERY_S = 30.0

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")

_RANGE_TOO_BIG = re.compile(
    r"too many|more than|limit|range|exceed|response size|query timeout|timed out|"
    r"block range|too large", re.IGNORECASE)


@dataclass(frozen=True)
class LogFilter:
    addresses: tuple[str, ...]
    topics: tuple[tuple[str, ...], ...]  # topic0 alternatives, then further positions

    def elements(self) -> set[str]:
        """What the filter matches on, one string each: its addresses and every topic value
        at each position. A config that adds a market (a topic value) or a reserve (its
        aToken's address) adds elements whose past the index has not read."""
        return ({f"address:{a.lower()}" for a in self.addresses}
                | {f"topic{i}:{v.lower()}" for i, values in enumerate(self.topics)
                   for v in values})

    def narrowed_to(self, new: set[str]) -> list[LogFilter]:
        """Filters that match exactly what the `new` elements add to the filter without them:
        the new addresses with every topic, and, per position, the new values at that position
        with every address."""
        out = []
        addresses = tuple(a for a in self.addresses if f"address:{a.lower()}" in new)
        if addresses:
            out.append(LogFilter(addresses, self.topics))
        for i, values in enumerate(self.topics):
            fresh = tuple(v for v in values if f"topic{i}:{v.lower()}" in new)
            if fresh:
                out.append(LogFilter(self.addresses, (*self.topics[:i], fresh,
                                                      *self.topics[i + 1:])))
        return out


# (log, checksum cache) -> accounts the log touches
Extractor = Callable[[dict[str, Any], dict[str, str]], Iterable[str]]
# Checksummed addresses kept across ranges: the logs of a block name the same borrowers block
# after block (a crash's liquidations touch the accounts already watched), and checksumming
# costs a keccak each. Emptied when it passes this size (a backfill over years of logs).
CHECKSUM_CACHE_MAX = 200_000


@dataclass
class IndexUpdate:
    from_block: int
    to_block: int
    touched: set[str]
    new: set[str]
    logs: int


class AccountIndexer:
    def __init__(
        self,
        protocol: str,
        chain: str,
        pool: RpcPool,
        store: IndexStore,
        log_filter: LogFilter,
        extract: Extractor,
        *,
        start_block: int = 0,
        confirmations: int = 0,
        metrics: Metrics | None = None,
        initial_chunk: int = 1,
        max_chunk: int = 200_000,
        target_logs: int = 10_000,
    ) -> None:
        self.protocol = protocol
        self.chain = chain
        self.pool = pool
        self.store = store
        self.filter = log_filter
        self.extract = extract
        self.start_block = start_block
        self.confirmations = confirmations
        self.metrics = metrics or pool.metrics
        self.chunk = initial_chunk
        self.max_chunk = max_chunk
        # Responses are kept near this many logs: memory stays bounded on dense chains and
        # ranges grow fast on sparse ones.
        self.target_logs = target_logs
        # A log is ~1 kB of JSON; an answer past this is refused unread and the range halved.
        self.max_response_bytes = 4 * 1024 * target_logs
        self._known: set[str] = set()
        self._checksums: dict[str, str] = {}
        self._indexed = start_block - 1  # what the persisted cursor says (loaded by `start`)
        # Read but not yet persisted (the state directory refused the write: a full disk, a
        # locked file): the last block read and its hash, and the accounts first seen since
        # the persisted cursor, with their blocks. Reading goes on from `_read_to` — every
        # borrower is watched from memory — and the backlog is written with the next range
        # (or alone) once the directory takes it.
        self._read_to = start_block - 1
        self._told_ahead = self._told_empty = False  # (said once each: start_block's doubts)
        self._read_to_hash: str | None = None
        self._unwritten: dict[str, int] = {}
        self._started = False
        # The scanner and the periodic index job may both ask; one catch-up at a time.
        self._lock = asyncio.Lock()
        # Counts rewinds. A rewind does not wait for a catch-up in flight (the block source
        # awaits it, and an initial catch-up can take minutes): the catch-up sees the count
        # move and drops the range it read, which may be of the replaced branch.
        self._rewinds = 0

    def _checksum_cache(self) -> dict[str, str]:
        if len(self._checksums) > CHECKSUM_CACHE_MAX:
            self._checksums.clear()
        return self._checksums

    @property
    def accounts(self) -> set[str]:
        return set(self._known)

    @property
    def indexed_block(self) -> int:
        """The last block whose accounts are persisted (what was read past it while the
        state directory refused writes is watched from memory, and written later)."""
        return self._indexed

    async def start(self) -> int | None:
        """Load what was indexed before, then rewind past any stored block whose hash the
        chain no longer has (a reorg while we were down). Returns the block rewound to, or
        None if nothing changed."""
        cursor = await self.store.cursor(self.protocol)
        self._indexed = cursor.block if cursor else self.start_block - 1
        self._read_to = self._indexed
        self._known, unreadable = _addresses(await self.store.accounts(self.protocol))
        if unreadable:
            # (one row no extractor wrote, not an address, failed the protocol's whole batch of
            # position reads at every block: no liquidation nor watchlist alert of it — a
            # review)
            log.warning("index.accounts_unreadable", protocol=self.protocol,
                        accounts=unreadable[:20], count=len(unreadable),
                        meaning="rows of the account index that are not addresses (no "
                                "keeperd wrote them): not watched",
                        fix="check who can write the state directory; delete these rows")
        self._started = True
        rewound = await self._rewind_past_replaced_blocks("restart")
        await self._backfill_new_elements()
        return rewound

    async def _backfill_new_elements(self) -> None:
        """A filter that grew since the cursor last moved (a market added to the config, a
        reserve listed): the cursor says nothing of the new elements' past, so it is read now,
        from `start_block` to the cursor, with a filter narrowed to them — else a market added
        after the first run would be watched only from its addition on."""
        current = self.filter.elements()
        try:
            before = await self.store.filter_elements(self.protocol)
        except Exception as exc:  # (an old state file: migrated by the daemon first)
            self._write_failed("filter", self._indexed, exc)
            return
        new = current - before
        if before and new and self._indexed >= self.start_block:
            found: dict[str, int] = {}
            for narrowed in self.filter.narrowed_to(new):
                await self._read_range(narrowed, self.start_block, self._indexed, found)
            fresh = {a: b for a, b in found.items() if a not in self._known}
            cursor = await self.store.cursor(self.protocol)
            if fresh:
                await self.store.record_indexed(self.protocol, self._indexed,
                                                cursor.hash if cursor else None, fresh.items())
                self._known.update(fresh)
            log.info("index.backfilled", protocol=self.protocol, elements=sorted(new),
                     to_block=self._indexed, accounts_found=len(found), new_accounts=len(fresh))
        elif not before and self._indexed >= self.start_block:
            # An index from before filters were recorded: what it held is not known, so its
            # filter is taken as the current one (a market added before this upgrade needs
            # `keeperd`'s state for the protocol indexed anew).
            log.info("index.filter_recorded", protocol=self.protocol, elements=len(current))
        if new or before - current:
            try:
                await self.store.set_filter_elements(self.protocol, current)
            except Exception as exc:
                self._write_failed("filter", self._indexed, exc)

    async def _read_range(self, log_filter: LogFilter, start: int, end: int,
                          found: dict[str, int]) -> None:
        """Every account `log_filter` shows in [start, end], with the block first seen (ranges
        as wide as the provider takes, halved when it refuses)."""
        chunk = self.max_chunk
        while start <= end:
            stop = min(end, start + chunk - 1)
            try:
                logs = await self.pool.request("eth_getLogs", [{
                    "fromBlock": hex(start), "toBlock": hex(stop),
                    "address": list(log_filter.addresses),
                    "topics": [list(t) for t in log_filter.topics]}],
                    max_response_bytes=self.max_response_bytes if chunk > 1 else None)
            except (RpcError, RpcUnavailable) as exc:
                if chunk > 1 and (isinstance(exc, RpcUnavailable | ResponseTooLarge)
                                  or _RANGE_TOO_BIG.search(str(exc))):
                    chunk = max(1, chunk // 2)
                    continue
                raise
            cache = self._checksum_cache()
            for entry in logs:
                if not entry.get("removed"):
                    block = int(entry["blockNumber"], 16)
                    for account in self.extract(entry, cache):
                        found.setdefault(account, block)
            start = stop + 1

    async def on_reorg(self, ancestor: int) -> list[str]:
        """The chain above `ancestor` was replaced; forget what was indexed there. The block
        source knows only its window of recent blocks: a reorg deeper than that comes with
        the oldest block it remembers as the ancestor, so the stored hashes at and below it
        are checked against the chain too (one request when they still hold)."""
        self._rewinds += 1  # (a range being read now may be of the replaced branch)
        dropped = []
        if self._read_to > ancestor:
            dropped = await self._rewind(ancestor, reason="reorg")
        before = set(self._known)
        if await self._rewind_past_replaced_blocks("deep_reorg") is not None:
            dropped += sorted(before - self._known)
        return dropped

    async def _rewind_past_replaced_blocks(self, reason: str) -> int | None:
        """Rewind to the newest stored block the chain still has; the block rewound to, or
        None when the newest stored one is still there."""
        stored = await self.store.indexed_block_hashes(self.protocol)
        stored = [(n, h) for n, h in stored if n <= self._indexed]
        if not stored:
            return None
        newest = stored[0][0]
        for number, block_hash in stored:
            raw = await self.pool.request("eth_getBlockByNumber", [hex(number), False])
            if raw is not None and raw["hash"] == block_hash:
                if number == newest:
                    return None
                await self._rewind(number, reason=reason)
                return number
        # Not one block the index remembers is on the chain: a chain started again (a devnet
        # brought up from its state: the remembered blocks above its head do not exist), or
        # a reorg deeper than every remembered hash. Nothing of the index can be vouched for:
        # it is read anew from `start_block`. (Rewinding to just below the oldest remembered
        # block left a cursor thousands of blocks above the new chain's head, and every
        # account opened since unseen.)
        target = self.start_block - 1
        await self._rewind(target, reason=f"{reason}: no remembered block on the chain")
        return target

    async def _rewind(self, to_block: int, reason: str) -> list[str]:
        self._rewinds += 1  # (first: a catch-up's write not yet begun is dropped)
        try:
            dropped = sorted(_addresses(await self.store.rewind(self.protocol, to_block))[0])
        except Exception as exc:
            # The persisted index keeps the dropped branch (its block hashes too): the next
            # start finds them gone from the chain and rewinds then. Meanwhile the new branch
            # is read from the ancestor on; the accounts of the old one stay watched (an
            # account without a position reads as nothing to watch).
            self._write_failed("rewind", to_block, exc)
            dropped = []
        # What was only read, not persisted, above the ancestor goes too.
        dropped += [a for a, block in self._unwritten.items() if block > to_block]
        self._unwritten = {a: b for a, b in self._unwritten.items() if b <= to_block}
        self._known.difference_update(dropped)
        self._indexed = min(self._indexed, to_block)
        if self._read_to > to_block:
            self._read_to, self._read_to_hash = to_block, None
        log.warning("index.rewound", protocol=self.protocol, to_block=to_block, reason=reason,
                    accounts_dropped=len(dropped))
        return dropped

    async def _write_backlog(self) -> bool:
        """Persist what was read while the state directory refused writes, up to the last
        block read; False while it still refuses (the catch-up then only reads)."""
        if self._read_to <= self._indexed:
            return True
        rewinds = self._rewinds
        try:
            written = await self.store.record_indexed(
                self.protocol, self._read_to, self._read_to_hash, self._unwritten.items(),
                still_valid=lambda: self._rewinds == rewinds)
        except Exception as exc:
            self._write_failed("backlog", self._read_to, exc)
            return False
        if written:
            log.info("index.backlog_persisted", protocol=self.protocol, to_block=self._read_to,
                     accounts=len(self._unwritten))
            self._indexed = self._read_to
            self._unwritten = {}
        return True

    def _write_failed(self, what: str, to_block: int, exc: Exception) -> None:
        self.metrics.state_write_errors.labels("index").inc()
        log.warning(f"index.{what}_not_persisted", protocol=self.protocol, to_block=to_block,
                    error=f"{type(exc).__name__}: {exc}",
                    meaning="watched from memory; written when the state directory takes it")

    async def catch_up(self, head: int) -> IndexUpdate:
        """Index every confirmed block up to head - confirmations."""
        async with self._lock:
            try:
                return await self._catch_up(head)
            finally:  # (a failed read too: the lag an alert watches must keep growing)
                self.metrics.index_lag.labels(self.chain, self.protocol).set(
                    max(0, head - self.indexed_block))

    async def _catch_up(self, head: int) -> IndexUpdate:
        if not self._started:
            raise RuntimeError(f"{self.protocol}: AccountIndexer.start() was not awaited")
        target = head - self.confirmations
        if head < self.start_block and not self._told_ahead:
            # (a start_block past the head indexed nothing and said nothing: a by-hand trial
            # watched no account, check-config and the start both silent)
            self._told_ahead = True
            log.error("index.start_block_ahead", protocol=self.protocol,
                      start_block=self.start_block, head=head,
                      meaning="nothing is indexed until the chain reaches start_block: no "
                              "position is watched meanwhile",
                      fix=f"set protocols[{self.protocol}].start_block to the block the "
                          "protocol's contracts were deployed at (or leave it out)")
        writable = await self._write_backlog()
        start = self._read_to + 1
        update = IndexUpdate(start, start - 1, set(), set(), 0)
        started = last_progress = time.perf_counter()
        while start <= target:
            end = min(target, start + self.chunk - 1)
            rewinds = self._rewinds
            try:
                # Logs only from an endpoint that has `end` (its header, asked in the same
                # batch): a node behind would answer the blocks it has and silently nothing
                # for the rest, and the cursor would pass borrowers it never saw.
                header, (logs,) = await self.pool.batch_at(end, [("eth_getLogs", [{
                    "fromBlock": hex(start), "toBlock": hex(end),
                    "address": list(self.filter.addresses),
                    "topics": [list(t) for t in self.filter.topics],
                    # One block is the smallest range there is: read it whatever its size.
                }])], max_response_bytes=self.max_response_bytes if self.chunk > 1 else None)
                if isinstance(logs, RpcError):
                    raise logs
            except EndpointsBehind as exc:
                # Every endpoint asked is behind `end` (the head came from a faster node):
                # what is indexed stays; this range is read at the next catch-up.
                self.metrics.index_waits.labels(self.chain, self.protocol).inc()
                log.info("index.endpoints_behind", protocol=self.protocol, to_block=end,
                         error=str(exc)[:300])
                break
            except (RpcError, RpcUnavailable) as exc:
                if self.chunk > 1 and (isinstance(exc, RpcUnavailable | ResponseTooLarge)
                                       or _RANGE_TOO_BIG.search(str(exc))):
                    self.chunk = max(1, self.chunk // 2)
                    log.info("index.range_shrunk", protocol=self.protocol, chunk=self.chunk,
                             error=str(exc)[:200])
                    continue
                raise
            count = len(logs)
            seen: dict[str, int] = {}
            cache = self._checksum_cache()
            for entry in logs:
                if entry.get("removed"):
                    continue
                block = int(entry["blockNumber"], 16)
                for account in self.extract(entry, cache):
                    seen.setdefault(account, block)
            del logs[:]
            crash_point("index.logs_read")

            def current(expected: int = rewinds) -> bool:
                return self._rewinds == expected

            if not current():
                break  # (read across a rewind: maybe of the replaced branch)
            backlog = dict(self._unwritten)
            for account, block in seen.items():
                backlog.setdefault(account, block)
            if writable:
                try:
                    written = await self.store.record_indexed(
                        self.protocol, end, header["hash"], backlog.items(),
                        still_valid=current)
                except Exception as exc:
                    # A full disk (or a locked file): the accounts are watched from memory
                    # and reading goes on; the persisted cursor stays, and what was read
                    # since is written with the next range once the directory takes it.
                    self._write_failed("range", end, exc)
                    writable = False
                else:
                    if not (written and current()):
                        # A reorg rewound the index while this range was read (before the
                        # write: nothing written; after: the rewind removed it): read again
                        # from the rewound cursor at the next catch-up.
                        log.info("index.range_dropped_by_reorg", protocol=self.protocol,
                                 from_block=start, to_block=end)
                        break
                    self._indexed = end
                    backlog = {}
            self._unwritten = backlog
            self._read_to, self._read_to_hash = end, header["hash"]
            update.touched.update(seen)
            update.new.update(a for a in seen if a not in self._known)
            self._known.update(seen)
            update.to_block = end
            update.logs += count
            if count > self.target_logs:
                self.chunk = max(1, self.chunk // 2)
            elif count < self.target_logs // 4:
                self.chunk = min(self.max_chunk, self.chunk * 2)
            start = end + 1
            now = time.perf_counter()
            if now - last_progress >= PROGRESS_EVERY_S and start <= target:
                # A first index reads years of blocks: say how far it is, and how fast.
                last_progress, done = now, end - update.from_block + 1
                log.info("index.progress", protocol=self.protocol, to_block=end, target=target,
                         blocks_done=done, blocks_total=target - update.from_block + 1,
                         blocks_per_s=round(done / (now - started)), chunk=self.chunk,
                         accounts=len(self._known))
        self.metrics.accounts_tracked.labels(self.chain, self.protocol).set(len(self._known))
        if not self._known and not self._told_empty and update.to_block >= target >= \
                self.start_block:
            # (a start_block after the borrowers' first events watched none of them, silently)
            self._told_empty = True
            log.warning("index.no_accounts", protocol=self.protocol,
                        from_block=self.start_block, to_block=update.to_block,
                        meaning="no event of this protocol names an account in these blocks: "
                                "nothing is watched",
                        fix=f"if it has positions, set protocols[{self.protocol}].start_block "
                            "to the block its contracts were deployed at (or leave it out), "
                            "and check its addresses")
        if update.logs:
            log.info("index.caught_up", protocol=self.protocol, to_block=update.to_block,
                     logs=update.logs, new_accounts=len(update.new),
                     accounts=len(self._known), seconds=round(time.perf_counter() - started, 3))
        return update


def _addresses(rows: Iterable[object]) -> tuple[set[str], list[str]]:
    """The index's rows that are addresses, checksummed as the extractors write them, and the
    others (as stored)."""
    kept: set[str] = set()
    unreadable: list[str] = []
    for row in rows:
        if isinstance(row, str) and _ADDRESS.fullmatch(row):
            kept.add(to_checksum_address(row))
        else:
            unreadable.append(str(row)[:80])
    return kept, unreadable
