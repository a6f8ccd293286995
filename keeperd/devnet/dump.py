"""anvil's state dump, streamed from the node to a file with its call traces dropped.

`anvil_dumpState` answers with one JSON-RPC string: the hex of a gzip of the whole state as
JSON — blocks, transactions with their receipts, accounts. At 100,000 borrowers that is
gigabytes, and anvil's call traces are 80 % of it. Read whole and parsed, it needed 7 GB in
this process (#18). Here it never is whole: the answer is read in chunks, hex-decoded and
gunzipped as it comes, and the JSON is re-written member by member (each block, transaction
and account parsed alone, its traces emptied), so memory stays at the size of the largest one.

A build in stages (`StageHistory`) goes further: between stages the node's blocks and
transactions are set aside on disk and the next node starts from its accounts and head block
alone, so no node ever holds more history than one stage's; the last dump puts it all back.
"""

from __future__ import annotations

import codecs
import gzip
import http.client
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

_CHUNK = 1 << 20
_RESULT = b'"result":"0x'
_DECODER = json.JSONDecoder()


class DumpError(RuntimeError):
    pass


class StageHistory:
    """Blocks and transactions a staged build has set aside, one JSON value per line, in
    the order the stages dumped them."""

    KINDS = ("blocks", "transactions")

    def __init__(self, folder: Path) -> None:
        """Empty at the start: what a killed build left there belongs to no chain now."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for kind in self.KINDS:
            self._path(kind).write_text("")

    def _path(self, kind: str) -> Path:
        return self.folder / f"{kind}.ndjson"

    def open_for_append(self, kind: str) -> IO[str]:
        return open(self._path(kind), "a")

    def lines(self, kind: str) -> Iterator[str]:
        with open(self._path(kind)) as f:
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")

    def remove(self) -> None:
        for kind in self.KINDS:
            self._path(kind).unlink(missing_ok=True)


def dump_state(rpc_url: str, path: Path, *, compress: bool = False,
               timeout: float = 3600.0, history: StageHistory | None = None,
               set_aside: bool = False) -> None:
    """Write the node's state to `path` (gzip-compressed if `compress`), traces dropped.
    Written beside and renamed into place: a failed dump leaves no half file.

    With `history` and `set_aside`, the dump is a stage's end: its transactions and every
    block but the head go to `history`, and `path` gets the accounts and the head block, from
    which the next stage's node starts (anvil needs its head block to load). With `history`
    alone, it is the build's end: what the stages set aside is written back in front of the
    node's own blocks and transactions, and `path` holds the whole chain."""
    tmp = path.with_name(path.name + ".part")
    out: IO[str]
    with (gzip.open(tmp, "wt", compresslevel=5) if compress else open(tmp, "w")) as out:
        chunks = _json_text(_dump_bytes(rpc_url, timeout))
        if history is None:
            _write_filtered(chunks, out)
        elif set_aside:
            _write_filtered(chunks, out, set_aside=history)
        else:
            _write_filtered(chunks, out, put_back=history)
    tmp.replace(path)


def _dump_bytes(rpc_url: str, timeout: float) -> Iterator[bytes]:
    """The gunzipped JSON of `anvil_dumpState`, in chunks, as it arrives."""
    parts = urlsplit(rpc_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                      timeout=timeout)
    try:
        conn.request("POST", "/", json.dumps({"jsonrpc": "2.0", "id": 1,
                                              "method": "anvil_dumpState", "params": []}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        head = b""
        while _RESULT not in head:
            more = resp.read(4096)
            if not more:
                raise DumpError(f"anvil_dumpState answered without a result: {head[:300]!r}")
            head += more
        hexed = head.split(_RESULT, 1)[1]
        gunzip = zlib.decompressobj(wbits=31)
        done = False
        while not done:
            end = hexed.find(b'"')
            if end >= 0:
                hexed, done = hexed[:end], True
            even = len(hexed) - len(hexed) % 2
            if even:
                yield gunzip.decompress(bytes.fromhex(hexed[:even].decode()))
            hexed = hexed[even:]
            if not done:
                more = resp.read(_CHUNK)
                if not more:
                    raise DumpError("anvil_dumpState's answer ended early")
                hexed += more
        yield gunzip.flush()
    finally:
        conn.close()


def _json_text(chunks: Iterator[bytes]) -> Iterator[str]:
    utf8 = codecs.getincrementaldecoder("utf-8")()  # (a character may straddle two chunks)
    for chunk in chunks:
        text = utf8.decode(chunk)
        if text:
            yield text
    tail = utf8.decode(b"", final=True)
    if tail:
        yield tail


class _Reader:
    """A JSON text read from chunks, parsed a value at a time."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        self.buf = ""
        self.pos = 0
        self._ended = False

    def _fill(self) -> bool:
        if self._ended:
            return False
        try:
            more = next(self._chunks)
        except StopIteration:
            self._ended = True
            return False
        self.buf = self.buf[self.pos:] + more
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ("" at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def expect(self, char: str) -> None:
        got = self.peek()
        if got != char:
            raise DumpError(f"unexpected {got!r} in the dump, wanted {char!r}")
        self.pos += 1

    def value(self) -> Any:
        """One whole JSON value (refilled until it parses)."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                if not self._fill():
                    raise
                continue
            # A number cut by the end of the buffer parses as its head ("-1" of "-1.5e-7"):
            # it is whole only if something that cannot continue it follows.
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    end == len(self.buf) or self.buf[end] in ".eE+-") and self._fill():
                continue
            self.pos = end
            return value


def _block_number(block: Any) -> int:
    try:
        return int(block["header"]["number"], 16)
    except (TypeError, KeyError, ValueError) as exc:
        raise DumpError(f"a block without a header number in the dump: {str(block)[:200]}") \
            from exc


def _write_filtered(chunks: Iterator[str], out: IO[str], *,
                    set_aside: StageHistory | None = None,
                    put_back: StageHistory | None = None) -> None:
    """The dump's top-level object, its large members (blocks, transactions, accounts) written
    element by element; every transaction's `info.traces` emptied. Blocks and transactions
    go to `set_aside` (the head block excepted), or are preceded by those of `put_back`."""
    r = _Reader(chunks)
    head: int | None = None
    for _ in _entries(r, out, "{", "}"):
        key = _key(r, out)
        opening = r.peek()
        if opening == "[" and key in StageHistory.KINDS and set_aside is not None:
            if key == "blocks" and head is None:
                raise DumpError("the dump lists its blocks before best_block_number: "
                                "cannot tell which block the next stage starts from")
            _set_aside(r, out, key, set_aside, head)
        elif opening == "[" and key in StageHistory.KINDS and put_back is not None:
            _put_back(r, out, key, put_back)
        elif opening == "[":
            for _ in _entries(r, out, "[", "]"):
                out.write(json.dumps(_without_traces(key, r.value())))
        elif opening == "{":
            for _ in _entries(r, out, "{", "}"):
                _key(r, out)
                out.write(json.dumps(r.value()))
        else:
            value = r.value()
            if key == "best_block_number":
                head = int(value, 16) if isinstance(value, str) else int(value)
            out.write(json.dumps(value))


def _without_traces(key: Any, item: Any) -> Any:
    if key == "transactions" and isinstance(item, dict) and isinstance(item.get("info"), dict):
        item["info"]["traces"] = []
    return item


def _items(r: _Reader, key: str) -> Iterator[Any]:
    """The elements of the array at the reader, traces dropped (the brackets consumed)."""
    r.expect("[")
    first = True
    while r.peek() != "]":
        if not first:
            r.expect(",")
        first = False
        yield _without_traces(key, r.value())
    r.expect("]")


def _put_back(r: _Reader, out: IO[str], key: str, history: StageHistory) -> None:
    """The blocks or transactions the stages set aside, then the dump's own; the head block
    a stage started from (in two stages' dumps) written once."""
    written: set[int] = set()
    separator = ""
    out.write("[")
    for line in history.lines(key):
        if key == "blocks":
            number = _block_number(json.loads(line))
            if number in written:
                continue
            written.add(number)
        out.write(separator + line)
        separator = ","
    for item in _items(r, key):
        if key == "blocks" and _block_number(item) in written:
            continue
        out.write(separator + json.dumps(item))
        separator = ","
    out.write("]")


def _set_aside(r: _Reader, out: IO[str], key: str, history: StageHistory,
               head: int | None) -> None:
    """A stage's blocks or transactions, read from the dump into `history`; only the head
    block is written to `out`."""
    out.write("[")
    with history.open_for_append(key) as aside:
        for item in _items(r, key):
            if key == "blocks" and _block_number(item) == head:
                out.write(json.dumps(item))
            aside.write(json.dumps(item) + "\n")
    out.write("]")


def _entries(r: _Reader, out: IO[str], opening: str, closing: str) -> Iterator[None]:
    """Once per element (or member) of the array (or object) at the reader, the brackets and
    commas around them copied to `out`; the caller reads and writes each."""
    r.expect(opening)
    out.write(opening)
    first = True
    while r.peek() != closing:
        if not first:
            r.expect(",")
            out.write(",")
        first = False
        yield
    r.expect(closing)
    out.write(closing)


def _key(r: _Reader, out: IO[str]) -> Any:
    key = r.value()
    r.expect(":")
    out.write(json.dumps(key) + ":")
    return key
