"""Curie's calls encoded once (`perp_curie/calldata.py`): the same bytes as encoding afresh,
only what the last read asked kept, and one-word answers read as eth_abi reads them."""

from __future__ import annotations

import pytest
from eth_abi import decode, encode
from eth_abi.exceptions import InsufficientDataBytes
from eth_utils import to_checksum_address

from keeperd.chain.multicall import Call, encode_call
from keeperd.protocols.perp_curie.calldata import CallMemo, Checksums, word_int, word_uint

VAULT = "0x" + "11" * 20
BALANCE = "0x" + "22" * 20
TRADER = to_checksum_address("0x" + "ab" * 20)
OTHER = to_checksum_address("0x" + "cd" * 20)


def test_a_memoised_call_is_the_call_encoded_afresh() -> None:
    memo = CallMemo()
    for _read in range(3):
        got = [memo.call(VAULT, "getFreeCollateral(address)", ["address"], [TRADER]),
               memo.call(BALANCE, "getFreeCollateral(address)", ["address"], [TRADER]),
               memo.call(VAULT, "getFreeCollateral(address)", ["address"], [OTHER]),
               memo.call(VAULT, "getAccountValue(address)", ["address"], [TRADER]),
               memo.call(VAULT, "getIndexPrice(uint256)", ["uint256"], [0]),
               memo.call(VAULT, "isPaused()", [])]
        assert got == [
            Call(VAULT, encode_call("getFreeCollateral(address)", ["address"], [TRADER])),
            Call(BALANCE, encode_call("getFreeCollateral(address)", ["address"], [TRADER])),
            Call(VAULT, encode_call("getFreeCollateral(address)", ["address"], [OTHER])),
            Call(VAULT, encode_call("getAccountValue(address)", ["address"], [TRADER])),
            Call(VAULT, encode_call("getIndexPrice(uint256)", ["uint256"], [0])),
            Call(VAULT, encode_call("isPaused()", [], []))]
        memo.finish()


def test_a_read_keeps_only_what_it_asked() -> None:
    memo = CallMemo()
    first = memo.call(VAULT, "getFreeCollateral(address)", ["address"], [TRADER])
    memo.call(VAULT, "getFreeCollateral(address)", ["address"], [OTHER])
    memo.finish()
    # The next read asks TRADER only: OTHER (who left) is dropped, TRADER's call is reused.
    assert memo.call(VAULT, "getFreeCollateral(address)", ["address"], [TRADER]) is first
    memo.finish()
    assert len(memo) == 1


def test_a_failed_read_drops_nothing() -> None:
    memo = CallMemo()
    kept = memo.call(VAULT, "getFreeCollateral(address)", ["address"], [TRADER])
    memo.finish()
    memo.call(VAULT, "getFreeCollateral(address)", ["address"], [OTHER])  # (then it raised)
    assert memo.call(VAULT, "getFreeCollateral(address)", ["address"], [TRADER]) is kept


@pytest.mark.parametrize("value", [0, 1, -1, 2**255 - 1, -(2**255), 123456789 * 10**18,
                                   -987654321 * 10**12])
def test_an_int256_answer_reads_as_eth_abi_reads_it(value: int) -> None:
    data = encode(["int256"], [value])
    assert word_int(data) == decode(["int256"], data)[0] == value
    assert word_int(data + b"\0" * 32) == decode(["int256"], data + b"\0" * 32)[0]


@pytest.mark.parametrize("value", [0, 1, 2**256 - 1, 2**255, 3000 * 10**18])
def test_a_uint256_answer_reads_as_eth_abi_reads_it(value: int) -> None:
    data = encode(["uint256"], [value])
    assert word_uint(data) == decode(["uint256"], data)[0] == value


@pytest.mark.parametrize("reader", [word_int, word_uint])
def test_a_short_answer_is_refused_as_before(reader: object) -> None:
    with pytest.raises(InsufficientDataBytes):
        reader(b"\x01" * 31)  # type: ignore[operator]


def test_checksums_are_eip55() -> None:
    checksum = Checksums()
    raw = "0x" + "ab" * 20
    assert checksum(raw) == to_checksum_address(raw) == checksum(raw)
