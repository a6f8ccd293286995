"""A pool implementation is known by its code, not by the number it reports (identity.py)."""

from __future__ import annotations

from keeperd.protocols.aave_v3.identity import code_fingerprint, strip_metadata

# solc's trailer: a CBOR map (a2: two entries) and its length in the last two bytes.
METADATA = bytes.fromhex("a264697066735822") + bytes(34) + bytes.fromhex("64736f6c6343") \
    + bytes.fromhex("00081b0033")


def runtime(provider: bytes, library: bytes, rule: int) -> bytes:
    """PUSH32 <immutable> PUSH20 <library> PUSH2 <rule constant> STOP, then the trailer."""
    return (b"\x7f" + provider.rjust(32, b"\0") + b"\x73" + library
            + b"\x61" + rule.to_bytes(2, "big") + b"\x00" + METADATA)


def test_the_same_code_deployed_elsewhere_has_one_fingerprint() -> None:
    a = runtime(b"\x11" * 20, b"\x22" * 20, 1000)
    b = runtime(b"\x33" * 20, b"\x44" * 20, 1000)  # other provider, other linked library
    assert a != b and code_fingerprint(a) == code_fingerprint(b)


def test_other_rules_or_other_code_have_another() -> None:
    base = runtime(b"\x11" * 20, b"\x22" * 20, 1000)
    assert code_fingerprint(runtime(b"\x11" * 20, b"\x22" * 20, 2000)) != code_fingerprint(base)
    assert code_fingerprint(base + b"\x00") != code_fingerprint(base)  # trailer no longer one


def test_the_metadata_trailer_is_cut_and_push_data_is_not_read_as_opcodes() -> None:
    code = runtime(b"\x11" * 20, b"\x22" * 20, 1000)
    assert strip_metadata(code) == code[:-len(METADATA)]
    # A PUSH2 whose operand holds a PUSH20 opcode byte (0x73) must not zero what follows.
    tricky = b"\x61\x73\x00" + b"\x60\x05" + METADATA
    other = b"\x61\x73\x00" + b"\x60\x06" + METADATA
    assert code_fingerprint(tricky) != code_fingerprint(other)
    assert strip_metadata(b"\x00") == b"\x00"


def test_aaves_published_implementations_are_recognised_on_their_chain_only() -> None:
    from keeperd.protocols.aave_v3.identity import recognise
    from keeperd.protocols.aave_v3.published import published_markets

    markets = published_markets()
    core = markets["AaveV3Ethereum"]
    assert recognise(1, core.pool_impl.lower(), None, 11) == "published: AaveV3Ethereum"
    assert recognise(8453, core.pool_impl, None, 11) is None  # another chain's address
    assert recognise(1, "0x" + "ab" * 20, None, 11) is None
    # Aave's own, but not the standard rules: verified like a fork's.
    horizon = markets["AaveV3EthereumHorizon"]
    assert recognise(horizon.chain_id, horizon.pool_impl, None, 11) is None
