"""Contract code as the chain holds it: the EIP-1967 implementation slot, and a fingerprint
of runtime code that is the same for every deployment of the same sources (keccak of the code
with every PUSH20 and PUSH32 operand zeroed and solc's metadata trailer cut off: linked
library addresses and immutables are what differ between deployments) — with the
fingerprints of the libraries it links (`linked_fingerprint`), where the zeroed addresses
point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from eth_utils import keccak

# keccak256("eip1967.proxy.implementation") - 1: where Aave's pool proxy keeps its logic.
IMPLEMENTATION_SLOT = "0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc"
PUSH1, PUSH20, PUSH32 = 0x60, 0x73, 0x7F


def strip_metadata(code: bytes) -> bytes:
    """The runtime code without solc's CBOR metadata trailer (its length is the last two
    bytes); code without a plausible trailer is returned whole."""
    if len(code) < 2:
        return code
    length = int.from_bytes(code[-2:], "big")
    # The trailer is a CBOR map (0xa1-0xa5 for solc's one to five entries).
    if 0 < length <= len(code) - 2 and 0xA1 <= code[-2 - length] <= 0xA5:
        return code[:-2 - length]
    return code


def code_fingerprint(code: bytes) -> str:
    """keccak of the code with its deployment-specific operands zeroed (module docstring)."""
    body = bytearray(strip_metadata(code))
    i = 0
    while i < len(body):
        op = body[i]
        if PUSH1 <= op <= PUSH32:
            width = op - PUSH1 + 1
            if op in (PUSH20, PUSH32):
                end = min(i + 1 + width, len(body))
                body[i + 1:end] = bytes(end - i - 1)
            i += 1 + width
        else:
            i += 1
    return "0x" + keccak(bytes(body)).hex()


# Libraries linked into a code (Aave's Pool delegatecalls LiquidationLogic, PoolLogic and the
# rest, whose addresses are PUSH20 operands), fingerprinted to this many levels.
LIBRARY_DEPTH = 2
ALL_ONES_20 = b"\xff" * 20


def library_addresses(code: bytes) -> list[str]:
    """The PUSH20 operands of `code` that may be linked libraries (lowercase 0x-hex): each
    distinct one but zero and the all-ones mask, in order of first appearance. (Which of them
    hold code is the chain's to say: `linked_fingerprint` counts those that do.)"""
    body = strip_metadata(code)
    found: list[str] = []
    i = 0
    while i < len(body):
        op = body[i]
        if PUSH1 <= op <= PUSH32:
            width = op - PUSH1 + 1
            if op == PUSH20 and i + 21 <= len(body):
                operand = bytes(body[i + 1:i + 21])
                address = "0x" + operand.hex()
                if any(operand) and operand != ALL_ONES_20 and address not in found:
                    found.append(address)
            i += 1 + width
        else:
            i += 1
    return found


def missing_codes(address: str, codes: Mapping[str, bytes], depth: int = LIBRARY_DEPTH
                  ) -> set[str]:
    """The addresses `linked_fingerprint(address, codes, depth)` needs whose code is not in
    `codes` yet (lowercase): ask them, add them (b"" for none), ask again until empty."""
    address = address.lower()
    if address not in codes:
        return {address}
    wanted: set[str] = set()
    if depth > 0:
        for library in library_addresses(codes[address]):
            if library != address:
                wanted |= missing_codes(library, codes, depth - 1)
    return wanted


def linked_fingerprint(address: str, codes: Mapping[str, bytes], depth: int = LIBRARY_DEPTH,
                       _seen: frozenset[str] = frozenset()) -> str:
    """The code's fingerprint with the libraries it links: keccak of its own fingerprint and
    then, in order of first appearance, each linked library's (recursively, `depth` levels).
    A code linking none keeps its own fingerprint. Zeroing the library addresses makes a
    fingerprint the same for every deployment — and blind to the libraries, where Aave's
    Pool keeps its liquidation rules: a pool linked to a changed LiquidationLogic passed as
    the v3.6 keeperd tested, and its liquidations lost $254k on a devnet (a by-hand trial).
    `codes`: lowercase address -> runtime code (b"": none), `missing_codes` says which."""
    address = address.lower()
    own = code_fingerprint(codes[address])
    if depth <= 0:
        return own
    seen = _seen | {address}
    parts = [linked_fingerprint(library, codes, depth - 1, seen)
             for library in library_addresses(codes[address])
             if library not in seen and codes.get(library)]
    if not parts:
        return own
    return "0x" + keccak(b"".join(bytes.fromhex(p[2:]) for p in (own, *parts))).hex()


async def read_linked_fingerprint(address: str,
                                  get_codes: Callable[[list[str]], Awaitable[list[bytes]]]
                                  ) -> str:
    """`linked_fingerprint` of the code at `address`, its codes asked with `get_codes`
    (addresses -> runtime codes, b"" for none), a level at a time."""
    codes: dict[str, bytes] = {}
    wanted = {address.lower()}
    while wanted:
        asked = sorted(wanted)
        codes.update(zip(asked, await get_codes(asked), strict=True))
        wanted = missing_codes(address, codes)
    return linked_fingerprint(address, codes)
