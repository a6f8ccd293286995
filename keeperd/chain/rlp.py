"""RLP encoding of what a transaction is made of (pure): unsigned integers, byte strings and
lists of them.

pyrlp infers a serializer for every item it is given, which made its `encode` some three
quarters of the time it took to sign a liquidation (a hundred liquidations found in one block
are signed one after another on the event loop: issue #31 item 2). The encoding itself is a few
lines (Ethereum yellow paper, appendix B); `tests/unit/test_rlp.py` checks it byte for byte
against pyrlp, and the signed transactions against eth_account's.
"""

from __future__ import annotations

from collections.abc import Sequence

Item = int | bytes | Sequence["Item"]


def encode(item: Item) -> bytes:
    # (exact types first: a signature encodes lists of ints and short byte strings, and the
    # isinstance chain and a recursion per integer were half of it)
    kind = type(item)
    if kind is int:
        return _uint(item)  # type: ignore[arg-type]
    if kind is bytes:
        return _string(item)  # type: ignore[arg-type]
    if isinstance(item, bytes | bytearray):
        return _string(bytes(item))
    if isinstance(item, int):
        return _uint(item)
    payload = b"".join([encode(x) for x in item])
    return _length(len(payload), 0xC0) + payload


def _string(data: bytes) -> bytes:
    if len(data) == 1 and data[0] < 0x80:
        return data
    return _length(len(data), 0x80) + data


def _uint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"RLP encodes unsigned integers only, not {value}")
    if value < 0x80:
        return b"\x80" if value == 0 else bytes((value,))
    return _string(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _length(length: int, offset: int) -> bytes:
    if length <= 55:
        return bytes((offset + length,))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(size),)) + size
