"""keeperd's own RLP encoder (keeperd/chain/rlp.py) against pyrlp, and the transactions the
keeper signs with it against eth_account's, byte for byte."""

from __future__ import annotations

import pytest
import rlp as pyrlp
from eth_account import Account
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from keeperd.chain import rlp
from keeperd.execution.signer import UnsignedTx, signed_by
from keeperd.keys import _from_hex

# anvil's default mnemonic, account 5 (a published test key).
KEY = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"

uints = st.integers(min_value=0, max_value=2**256 - 1)
items = st.recursive(st.one_of(uints, st.binary(max_size=80)),
                     lambda inner: st.lists(inner, max_size=6), max_leaves=30)


@given(items)
@settings(max_examples=400, deadline=None)
def test_the_encoding_is_pyrlps(item: rlp.Item) -> None:
    assert rlp.encode(item) == pyrlp.encode(item)


@pytest.mark.parametrize("item", [b"", b"\x00", b"\x7f", b"\x80", b"x" * 55, b"x" * 56,
                                  b"x" * 1024, 0, 1, 127, 128, 255, 256, 2**64, [], [[]],
                                  [b"x" * 60], [0] * 60])
def test_the_edges_of_each_length_form(item: rlp.Item) -> None:
    assert rlp.encode(item) == pyrlp.encode(item)


def test_a_negative_integer_is_refused() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        rlp.encode(-1)


@given(nonce=st.integers(0, 2**64 - 1), gas=st.integers(21_000, 30_000_000),
       max_fee=st.integers(1, 10**15), tip=st.integers(0, 10**12),
       data=st.binary(max_size=300), to=st.binary(min_size=20, max_size=20),
       chain_id=st.sampled_from([1, 10, 8453, 42161, 31337]))
@settings(max_examples=60, deadline=None)
def test_the_signed_transaction_is_eth_accounts(nonce: int, gas: int, max_fee: int, tip: int,
                                                data: bytes, to: bytes, chain_id: int) -> None:
    key = _from_hex(KEY, "test")
    address = to_checksum_address("0x" + to.hex())
    ours = key.sign_eip1559(chain_id=chain_id, nonce=nonce, to=address, value=0, data=data,
                            gas=gas, max_fee=max_fee, tip=tip)
    theirs = Account.from_key(KEY).sign_transaction({
        "type": 2, "chainId": chain_id, "nonce": nonce, "to": address, "value": 0,
        "data": data, "gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip})
    assert ours == bytes(theirs.raw_transaction)
    tx = UnsignedTx(chain_id, nonce, address, 0, data, gas, max_fee, tip)
    assert signed_by(ours, tx) == key.address
