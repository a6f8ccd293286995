"""Multicall3 `aggregate3` over raw JSON-RPC, with chunking and per-call failures.

Encoding and decoding use eth_abi directly: going through a web3 contract object costs about
ten times more per call (docs/architecture.md, "where the time goes"). Large batches are cut
into chunks (real providers cap eth_call gas and response size) and the chunks are sent
concurrently, a few at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import structlog
from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from numpy.typing import NDArray

from keeperd.chain import scan_reader
from keeperd.chain.rpc import Endpoint, HexData, OnEndpoint, RpcError, RpcPool, aggregate3_answer

log = structlog.get_logger(__name__)

MULTICALL3_ADDRESS = to_checksum_address("0xcA11bde05977b3631167028862bE2a173976CA11")
_AGGREGATE3 = function_signature_to_4byte_selector("aggregate3((address,bool,bytes)[])")


@dataclass(frozen=True, slots=True)
class Call:
    """One call inside a multicall: `target` gets `calldata` (selector + ABI-encoded args)."""

    target: str
    calldata: bytes
    allow_failure: bool = True


@dataclass(frozen=True, slots=True)
class CallResult:
    success: bool
    data: bytes


class MulticallError(Exception):
    """A whole chunk failed (the aggregate call itself reverted or could not be decoded)."""


def selector(signature: str) -> bytes:
    """4-byte selector of a function signature such as `getUserAccountData(address)`."""
    return function_signature_to_4byte_selector(signature)


def event_topic(signature: str) -> str:
    """topic0 of an event, e.g. `Liquidate(bytes32,address,...)`, 0x-prefixed hex."""
    return "0x" + keccak(text=signature).hex()


def encode_call(signature: str, arg_types: Sequence[str], args: Sequence[object]) -> bytes:
    return selector(signature) + (encode(list(arg_types), list(args)) if arg_types else b"")


def address_call(selector_bytes: bytes, address: str) -> bytes:
    """Calldata of `f(address)`: the hot path's most common shape, built without eth_abi."""
    return selector_bytes + b"\0" * 12 + bytes.fromhex(address[2:])


_WORD = 32
_TRUE = (1).to_bytes(32, "big")
_FALSE = bytes(32)
_OFFSET_96 = (96).to_bytes(32, "big")


def encode_aggregate3(calls: Sequence[Call]) -> bytes:
    """ABI-encode aggregate3((address,bool,bytes)[]) by hand.

    Equal to eth_abi's output (a test checks it) and about twenty times faster, which matters
    when a scan encodes hundreds of thousands of calls.
    """
    heads: list[bytes] = []
    tails: list[bytes] = []
    offset = _WORD * len(calls)
    for c in calls:
        heads.append(offset.to_bytes(32, "big"))
        data = c.calldata
        padded = data + b"\0" * (-len(data) % _WORD)
        tail = b"".join((b"\0" * 12, bytes.fromhex(c.target[2:]),
                         _TRUE if c.allow_failure else _FALSE, _OFFSET_96,
                         len(data).to_bytes(32, "big"), padded))
        tails.append(tail)
        offset += len(tail)
    return b"".join((_AGGREGATE3, (32).to_bytes(32, "big"), len(calls).to_bytes(32, "big"),
                     *heads, *tails))


def decode_aggregate3(data: bytes) -> list[CallResult]:
    """Decode the (bool,bytes)[] that aggregate3 returns, by hand (see encode_aggregate3)."""
    return list(decode_aggregate3_columns(data))


def decode_aggregate3_reference(data: bytes) -> list[CallResult]:
    """The same with eth_abi (tests compare the two)."""
    (results,) = decode(["(bool,bytes)[]"], data)
    return [CallResult(bool(ok), bytes(ret)) for ok, ret in results]


def encode_aggregate3_reference(calls: Sequence[Call]) -> bytes:
    return _AGGREGATE3 + encode(
        ["(address,bool,bytes)[]"],
        [[(c.target, c.allow_failure, c.calldata) for c in calls]],
    )


# --- columns: a scan's calls and answers as byte arrays -----------------------------------------
# A full scan sends ~5 calls per account (50,000 at 10,000 accounts). One `Call` object, one
# bytes join and one slice per call made the Python side as slow as the node (#31), so the
# scan's calls — all of the shape f(address) — are encoded as rows of a byte matrix and the
# answers decoded with array indexing; only the returned words become Python integers.

_TAIL_WORDS = 6  # target, allowFailure, offset of calldata, its length, 36 bytes padded to 64
_ADDRESS_CALL_TAIL = _WORD * _TAIL_WORDS
_BYTES32 = np.arange(_WORD)


def address_bytes(addresses: Sequence[str]) -> NDArray[np.uint8]:
    """(n, 20) byte matrix of 0x-prefixed hex addresses (checksummed or not)."""
    if any(len(a) != 42 for a in addresses):
        bad = next(a for a in addresses if len(a) != 42)
        raise ValueError(f"not a 20-byte hex address: {bad!r}")
    raw = bytes.fromhex("".join(a[2:] for a in addresses))
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(addresses), 20)


@dataclass(frozen=True)
class AddressCalls:
    """Calls of the shape `f(address)` (allowed to fail), as byte columns: row i calls
    `targets[i]` with `selectors[i]` and the address `arguments[i]`, and reads the first
    `words[i]` words of its answer."""

    targets: NDArray[np.uint8]  # (m, 20)
    selectors: NDArray[np.uint8]  # (m, 4)
    arguments: NDArray[np.uint8]  # (m, 20)
    words: NDArray[np.uint8]  # (m,)

    @classmethod
    def to(cls, target: str, selector_bytes: bytes, arguments: NDArray[np.uint8],
           words: int = 1) -> AddressCalls:
        """The same function of one contract, for each address in `arguments`."""
        m = len(arguments)
        return cls(np.broadcast_to(address_bytes([target])[0], (m, 20)),
                   np.broadcast_to(np.frombuffer(selector_bytes, dtype=np.uint8), (m, 4)),
                   arguments, np.full(m, words, dtype=np.uint8))

    @classmethod
    def concat(cls, parts: Sequence[AddressCalls]) -> AddressCalls:
        if not parts:
            return cls(np.empty((0, 20), np.uint8), np.empty((0, 4), np.uint8),
                       np.empty((0, 20), np.uint8), np.empty(0, np.uint8))
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("targets", "selectors", "arguments", "words")))

    def __len__(self) -> int:
        return len(self.arguments)

    def __getitem__(self, rows: slice) -> AddressCalls:
        return AddressCalls(self.targets[rows], self.selectors[rows], self.arguments[rows],
                            self.words[rows])

    def calls(self) -> list[Call]:
        """The same as `Call`s (tests compare the two encodings)."""
        return [Call("0x" + t.tobytes().hex(), s.tobytes() + bytes(12) + a.tobytes())
                for t, s, a in zip(self.targets, self.selectors, self.arguments, strict=True)]


def encode_address_calls(calls: AddressCalls) -> bytes:
    """aggregate3 calldata for `calls`: equal to `encode_aggregate3(calls.calls())`."""
    m = len(calls)
    tails = np.zeros((m, _ADDRESS_CALL_TAIL), dtype=np.uint8)
    tails[:, 12:32] = calls.targets
    tails[:, 63] = 1  # allowFailure
    tails[:, 95] = 96  # the calldata's offset in the tuple
    tails[:, 127] = 36  # its length
    tails[:, 128:132] = calls.selectors
    tails[:, 144:164] = calls.arguments
    heads = np.zeros((m, _WORD), dtype=np.uint8)
    offsets = _WORD * m + _ADDRESS_CALL_TAIL * np.arange(m, dtype=np.uint64)
    heads[:, 24:] = offsets.astype(">u8").view(np.uint8).reshape(m, 8)
    return b"".join((_AGGREGATE3, (32).to_bytes(32, "big"), m.to_bytes(32, "big"),
                     heads.tobytes(), tails.tobytes()))


def _words_at(raw: NDArray[np.uint8], at: NDArray[np.int64]) -> NDArray[np.uint8]:
    """The 32-byte words at byte positions `at`, as a (len(at), 32) matrix. A node's answer
    puts every word on a multiple of 32: then they are whole rows of the answer."""
    if len(raw) % _WORD == 0 and not (at % _WORD).any():
        return raw.reshape(-1, _WORD)[at // _WORD]
    return raw[at[:, None] + _BYTES32]


def _offsets(raw: NDArray[np.uint8], at: NDArray[np.int64], what: str) -> NDArray[np.int64]:
    """The big-endian words at byte positions `at`, which must fit in 48 bits (they are
    offsets and lengths inside an answer of a few megabytes)."""
    limbs = _words_at(raw, at).view(">u8")
    if limbs[:, :3].any() or (limbs[:, 3] >> 48).any():
        raise MulticallError(f"aggregate3 answer has an impossible {what}")
    return limbs[:, 3].astype(np.int64)


class ResultColumns(Sequence[CallResult]):
    """Answers in place (aggregate3's or the scan reader's): whether each call succeeded, and
    where its return data lies in the answer. Indexing gives `CallResult`s; `words` reads
    many at once."""

    def __init__(self, data: bytes, success: NDArray[np.bool_], start: NDArray[np.int64],
                 length: NDArray[np.int64]) -> None:
        self.data, self.success, self.start, self.length = data, success, start, length

    @classmethod
    def concat(cls, parts: Sequence[ResultColumns]) -> ResultColumns:
        if len(parts) == 1:
            return parts[0]
        shift = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
        return cls(b"".join(p.data for p in parts), np.concatenate([p.success for p in parts]),
                   np.concatenate([p.start + s for p, s in zip(parts, shift, strict=True)]),
                   np.concatenate([p.length for p in parts]))

    def __len__(self) -> int:
        return len(self.success)

    def __getitem__(self, i: int) -> CallResult:  # type: ignore[override]
        start = int(self.start[i])
        return CallResult(bool(self.success[i]), self.data[start:start + int(self.length[i])])

    def __iter__(self) -> Iterator[CallResult]:
        data = self.data
        for ok, start, length in zip(self.success.tolist(), self.start.tolist(),
                                     self.length.tolist(), strict=True):
            yield CallResult(ok, data[start:start + length])

    def answered(self, words: int = 1) -> NDArray[np.bool_]:
        """Calls that succeeded with at least `words` 32-byte words of return data."""
        return self.success & (self.length >= _WORD * words)

    def words(self, rows: slice | NDArray[np.intp] = slice(None), word: int = 0
              ) -> NDArray[np.object_]:
        """The `word`-th returned word of each call in `rows`, as Python integers (uint256).
        Only for rows that `answered(word + 1)`."""
        data = self.data
        return np.array([int.from_bytes(data[s:s + _WORD], "big")
                         for s in (self.start[rows] + _WORD * word).tolist()], dtype=object)

    def raw_words(self, rows: slice | NDArray[np.intp] = slice(None), word: int = 0
                  ) -> NDArray[np.uint8]:
        """The same words as a (rows, 32) byte matrix (bitmaps are read bit by bit)."""
        raw = np.frombuffer(self.data, dtype=np.uint8)
        return _words_at(raw, self.start[rows] + _WORD * word)


def decode_aggregate3_columns(data: bytes) -> ResultColumns:
    """Decode the (bool,bytes)[] that aggregate3 returns with array indexing. Every offset and
    length is checked against the answer's size: a lying node gets a MulticallError, never an
    answer read out of bounds."""
    size = len(data)
    if size < 64:
        raise MulticallError(f"aggregate3 answer of {size} bytes is too short")
    raw = np.frombuffer(data, dtype=np.uint8)
    (base,) = _offsets(raw, np.array([0]), "array offset")
    if base + _WORD > size:
        raise MulticallError("aggregate3 answer's array offset is past its end")
    (count,) = _offsets(raw, np.array([base]), "array length")
    heads = base + _WORD
    if heads + _WORD * count > size:
        raise MulticallError(f"aggregate3 answer too short for its {count} results")
    elem = heads + _offsets(raw, heads + _WORD * np.arange(count, dtype=np.int64), "offset")
    if count and int(elem.max()) + 2 * _WORD > size:
        raise MulticallError("aggregate3 answer has a result past its end")
    success = raw[elem + 31] == 1
    data_at = elem + _offsets(raw, elem + _WORD, "data offset")
    if count and int(data_at.max()) + _WORD > size:
        raise MulticallError("aggregate3 answer has return data past its end")
    length = _offsets(raw, data_at, "data length")
    start = data_at + _WORD
    if count and int((start + length).max()) > size:
        raise MulticallError("aggregate3 answer has return data past its end")
    return ResultColumns(data, success, start, length)


class Multicall:
    """Batches calls through Multicall3 on one chain."""

    def __init__(
        self,
        pool: RpcPool,
        *,
        address: str = MULTICALL3_ADDRESS,
        chunk_size: int = 1000,
        max_request_bytes: int = 2_000_000,
        max_concurrency: int = 4,
        scan_reader: bool = True,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.pool = pool
        self.address = to_checksum_address(address)
        self.chunk_size = chunk_size
        # Nodes cap request bodies (anvil at 2 MiB); a chunk also ends before its hex-encoded
        # calldata would pass this size.
        self.max_request_bytes = max_request_bytes
        self._limit = asyncio.Semaphore(max_concurrency)
        # Whether the node runs the scan reader (state overrides): None until first tried.
        self._reader_works: bool | None = None if scan_reader else False

    def on(self, endpoint: Endpoint) -> Multicall:
        """The same batching, asked of `endpoint` alone (a second reading of a block: no
        failover, or the answer would be the first endpoint's again), through Multicall3:
        the scan reader's overrides are not tried on an endpoint for one reading."""
        return Multicall(OnEndpoint(self.pool, endpoint),  # type: ignore[arg-type]
                         address=self.address, chunk_size=self.chunk_size,
                         max_request_bytes=self.max_request_bytes, scan_reader=False)

    async def aggregate3(
        self, calls: Sequence[Call], block: int | str = "latest"
    ) -> list[CallResult]:
        """Run every call at `block`; results come back in order, failures in place."""
        if not calls:
            return []
        block_tag = hex(block) if isinstance(block, int) else block
        chunks = self._chunks(calls)
        parts = await asyncio.gather(*(self._run_chunk(c, block_tag) for c in chunks))
        return [r for part in parts for r in part]

    def _chunks(self, calls: Sequence[Call]) -> list[Sequence[Call]]:
        chunks: list[Sequence[Call]] = []
        start, size = 0, 200  # hex size of the request envelope
        for i, c in enumerate(calls):
            # head offset + address + bool + offset + length + padded data, hex-encoded
            cost = 2 * (32 * 5 + len(c.calldata) + (-len(c.calldata) % 32))
            if i > start and (i - start >= self.chunk_size or size + cost > self.max_request_bytes):
                chunks.append(calls[start:i])
                start, size = i, 200
            size += cost
        chunks.append(calls[start:])
        return chunks

    async def read_columns(self, calls: AddressCalls, block: int | str = "latest"
                                 ) -> ResultColumns:
        """Calls held as columns (a scan's), answered as columns: through the scan reader
        (scan_reader.py) while the node honours state overrides, else through aggregate3."""
        if not len(calls):
            return ResultColumns(b"", np.zeros(0, bool), np.zeros(0, np.int64),
                                 np.zeros(0, np.int64))
        block_tag = hex(block) if isinstance(block, int) else block
        # Every call costs the same: a chunk holds as many as the size cap allows (see _chunks).
        per_call = (2 * scan_reader.RECORD if self._reader_works is not False
                    else 2 * (_WORD + _ADDRESS_CALL_TAIL))
        room = self.max_request_bytes - 400 - len(scan_reader.READER_CODE)
        size = max(1, min(self.chunk_size, room // per_call))
        parts = await asyncio.gather(*(self._run_columns(calls[lo:lo + size], block_tag)
                                       for lo in range(0, len(calls), size)))
        return ResultColumns.concat(parts)

    async def _run_columns(self, calls: AddressCalls, block_tag: str) -> ResultColumns:
        if self._reader_works is not False:
            try:
                answer = await self._run_reader(calls, block_tag)
            except MulticallError as exc:
                reader_error: MulticallError | None = exc
            else:
                self._reader_works = True
                return answer
        else:
            reader_error = None
        results = await self._run_encoded(encode_address_calls(calls), len(calls), block_tag)
        if reader_error is not None and self._reader_works is None:
            # aggregate3 answered where the reader did not: the node refuses (or ignores)
            # state overrides. Read through aggregate3 from now on.
            self._reader_works = False
            log.warning("multicall.reader_unavailable", reason=str(reader_error),
                        meaning="this node does not honour eth_call state overrides: scans "
                        "go through Multicall3's aggregate3, slower for the node")
        return results

    async def _run_reader(self, calls: AddressCalls, block_tag: str) -> ResultColumns:
        calldata = scan_reader.encode_reader_calls(calls.targets, calls.selectors,
                                                   calls.arguments, calls.words)
        tx = {"to": scan_reader.READER_ADDRESS, "data": HexData("0x" + calldata.hex())}
        override = {scan_reader.READER_ADDRESS: {"code": scan_reader.READER_CODE}}
        async with self._limit:
            try:
                # ("0x" is a node's answer that ignores state overrides: the reader's
                # fallback, not the endpoint's fault)
                raw = await self.pool.request("eth_call", [tx, block_tag, override])
            except RpcError as exc:
                raise MulticallError(f"the scan reader's {len(calls)} calls failed at block "
                                     f"{block_tag}: {exc.message}") from exc
        try:
            data = bytes.fromhex(raw[2:])
            success, start, length = scan_reader.decode_reader_answer(data, calls.words)
        except (ValueError, TypeError) as exc:
            raise MulticallError(f"the scan reader's answer could not be decoded: {exc}"
                                 ) from exc
        return ResultColumns(data, success, start, length)

    @property
    def reads_through(self) -> str:
        """How a scan's calls went (or will go): "scan reader", "aggregate3" or "untried"."""
        return {True: "scan reader", False: "aggregate3", None: "untried"}[self._reader_works]

    async def _run_chunk(self, calls: Sequence[Call], block_tag: str) -> list[CallResult]:
        return list(await self._run_encoded(encode_aggregate3(calls), len(calls), block_tag))

    async def _run_encoded(self, calldata: bytes, count: int, block_tag: str) -> ResultColumns:
        tx: dict[str, str] = {"to": self.address, "data": HexData("0x" + calldata.hex())}
        async with self._limit:
            try:
                raw = await self.pool.request("eth_call", [tx, block_tag],
                                              shape=aggregate3_answer(count))
            except RpcError as exc:
                raise MulticallError(
                    f"aggregate3 of {count} calls failed at block {block_tag}: {exc.message}"
                ) from exc
        try:
            results = decode_aggregate3_columns(bytes.fromhex(raw[2:]))
        except MulticallError:
            raise
        except Exception as exc:  # not hex, not a string: the answer is not one
            raise MulticallError(f"aggregate3 answer could not be decoded: {exc}") from exc
        if len(results) != count:
            raise MulticallError(
                f"aggregate3 returned {len(results)} results for {count} calls")
        return results
