"""Contract code as the chain holds it: the EIP-1967 implementation slot, and a fingerprint
of runtime code that is the same for every deployment of the same sources (keccak of the code
with every PUSH20 and PUSH32 operand zeroed and solc's metadata trailer cut off: linked
library addresses and immutables are what differ between deployments)."""

from __future__ import annotations

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
