"""anvil's state dump, streamed from the node to a file with its call traces dropped.

`anvil_dumpState` answers with one JSON-RPC string: the hex of a gzip of the whole state as
JSON — blocks, transactions with their receipts, accounts. At 100,000 borrowers that is
gigabytes, and anvil's call traces are 80 % of it. Read whole and parsed, it needed 7 GB in
this process (#18). Here it never is whole: the answer is read in chunks, hex-decoded and
gunzipped as it comes, and the JSON is re-written member by member (each block, transaction
and account parsed alone, its traces emptied), so memory stays at the size of the largest one.
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


def dump_state(rpc_url: str, path: Path, *, compress: bool = False,
               timeout: float = 3600.0) -> None:
    """Write the node's state to `path` (gzip-compressed if `compress`), traces dropped.
    Written beside and renamed into place: a failed dump leaves no half file."""
    tmp = path.with_name(path.name + ".part")
    out: IO[str]
    with (gzip.open(tmp, "wt", compresslevel=5) if compress else open(tmp, "w")) as out:
        _write_filtered(_json_text(_dump_bytes(rpc_url, timeout)), out)
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


def _write_filtered(chunks: Iterator[str], out: IO[str]) -> None:
    """The dump's top-level object, its large members (blocks, transactions, accounts) written
    element by element; every transaction's `info.traces` emptied."""
    r = _Reader(chunks)
    for _ in _entries(r, out, "{", "}"):
        key = _key(r, out)
        opening = r.peek()
        if opening == "[":
            for _ in _entries(r, out, "[", "]"):
                item = r.value()
                if key == "transactions" and isinstance(item, dict) \
                        and isinstance(item.get("info"), dict):
                    item["info"]["traces"] = []
                out.write(json.dumps(item))
        elif opening == "{":
            for _ in _entries(r, out, "{", "}"):
                _key(r, out)
                out.write(json.dumps(r.value()))
        else:
            out.write(json.dumps(r.value()))


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
