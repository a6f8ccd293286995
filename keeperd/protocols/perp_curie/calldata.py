"""What a Curie read asks, block after block, encoded once (issue #31 item 4).

Every block the plug-in asks the same views of the same traders, pairs and markets: only the
block changes, never the calldata. ABI encoding (eth_abi, ~50 µs a call on the project's
machine) of some 2,000 calls for 200 traders held the event loop about a quarter of a second a
block, ahead of other protocols' liquidations. `CallMemo` keeps each `Call` from one read to
the next, keyed by what it encodes, and forgets those the last read did not ask (a trader who
left, a closed pair): the same bytes as encoding afresh, bounded by one read's calls.

`word_int` / `word_uint` read a one-word answer as eth_abi does (a 256-bit integer: every bit
is the value, no padding to check), without its decoder's per-call overhead; a short answer
goes to eth_abi, which raises as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import decode
from eth_utils import to_checksum_address

from keeperd.chain.multicall import Call, encode_call

WORD = 32
KNOWN_LIMIT = 4096  # checksummed addresses kept: markets and collateral tokens are a few


class CallMemo:
    """Calls encoded once and kept while reads keep asking them: `finish()` ends a read, and
    what it did not ask is dropped (a read that failed half-way drops nothing)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, tuple[object, ...]], Call] = {}
        self._now: dict[tuple[str, str, tuple[object, ...]], Call] = {}

    def finish(self) -> None:
        """The read is over: only what it asked is kept."""
        self._last, self._now = self._now, {}

    def call(self, target: str, signature: str, arg_types: Sequence[str],
             args: Sequence[object] = ()) -> Call:
        key = (target, signature, tuple(args))
        found = self._now.get(key)
        if found is None:
            found = self._last.get(key)
            if found is None:
                found = Call(target, encode_call(signature, arg_types, args))
            self._now[key] = found
        return found

    def __len__(self) -> int:
        return len(self._last) + len(self._now)


class Checksums:
    """Checksummed addresses by the hex eth_abi decoded: the same few markets and collateral
    tokens every block, in every trader's answer (EIP-55 hashes each one, ~60 µs)."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def __call__(self, address: str) -> str:
        found = self._known.get(address)
        if found is None:
            if len(self._known) >= KNOWN_LIMIT:
                self._known.clear()  # (an endpoint answering new addresses every block)
            found = self._known[address] = str(to_checksum_address(address))
        return found


def word_int(data: bytes) -> int:
    """An int256 answer, as `decode(["int256"], data)[0]`."""
    if len(data) < WORD:
        return int(decode(["int256"], data)[0])
    return int.from_bytes(data[:WORD], "big", signed=True)


def word_uint(data: bytes) -> int:
    """A uint256 answer, as `decode(["uint256"], data)[0]`."""
    if len(data) < WORD:
        return int(decode(["uint256"], data)[0])
    return int.from_bytes(data[:WORD], "big")
