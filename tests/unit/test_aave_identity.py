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


def test_the_libraries_a_code_links_are_in_its_fingerprint() -> None:
    """The zeroed PUSH20s are where the rules live (a pool's LiquidationLogic): the linked
    libraries' fingerprints join the code's. The same libraries deployed elsewhere keep it;
    one changed library does not; a library's own address in its code (its delegatecall
    guard), the all-ones mask and addresses without code are no libraries."""
    from keeperd.chain.code import library_addresses, linked_fingerprint, missing_codes

    mask = b"\x73" + b"\xff" * 20 + b"\x16"  # PUSH20 0xff..ff AND

    def library(own: bytes, rule: int) -> bytes:
        return b"\x73" + own + b"\x61" + rule.to_bytes(2, "big") + b"\x00" + METADATA

    def pool(lib: bytes, other: bytes) -> bytes:
        return (b"\x73" + lib + mask + b"\x73" + other + b"\x50"
                + runtime(b"\x11" * 20, lib, 1000))

    def deployment(lib: bytes, rule: int) -> dict[str, bytes]:
        return {"0x" + "aa" * 20: pool(lib, b"\x77" * 20), "0x" + lib.hex(): library(lib, rule),
                "0x" + "77" * 20: b""}

    one, two = b"\x22" * 20, b"\x44" * 20
    assert library_addresses(pool(one, b"\x77" * 20)) == ["0x" + "22" * 20, "0x" + "77" * 20]
    here, there = deployment(one, 7), deployment(two, 7)
    assert missing_codes("0x" + "aa" * 20, {}) == {"0x" + "aa" * 20}
    assert missing_codes("0x" + "aa" * 20, here) == set()
    assert missing_codes("0x" + "aa" * 20, {"0x" + "aa" * 20: here["0x" + "aa" * 20]}) == {
        "0x" + "22" * 20, "0x" + "77" * 20}
    pool_fp = linked_fingerprint("0x" + "aa" * 20, here)
    assert pool_fp == linked_fingerprint("0x" + "AA" * 20, there)
    assert pool_fp != code_fingerprint(here["0x" + "aa" * 20])  # (the library is in it)
    assert pool_fp != linked_fingerprint("0x" + "aa" * 20, deployment(one, 8))
    # A code that links nothing keeps its own fingerprint.
    alone = runtime(b"\x11" * 20, b"\x33" * 20, 5)
    assert linked_fingerprint("0x" + "bb" * 20, {"0x" + "bb" * 20: alone,
                                                "0x" + "33" * 20: b""}) == code_fingerprint(alone)


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
