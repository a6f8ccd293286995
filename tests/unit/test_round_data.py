"""latestRoundData decoded by hand (`oracles/chainlink.round_data`), on the path of every
block's first liquidation: the same figures as eth_abi's strict decoder, and the same
refusals."""

from __future__ import annotations

import random

import pytest
from eth_abi import decode, encode
from eth_abi.exceptions import DecodingError

from keeperd.oracles.chainlink import round_data

TYPES = ["uint80", "int256", "uint256", "uint256", "uint80"]


def test_it_reads_what_eth_abi_reads() -> None:
    rng = random.Random(7)
    for _ in range(500):
        values = [rng.randrange(2**80), rng.randrange(-2**255, 2**255), rng.randrange(2**256),
                  rng.randrange(2**256), rng.randrange(2**80)]
        data = encode(TYPES, values)
        assert round_data(data) == tuple(values) == decode(TYPES, data)
        assert round_data(data + bytes(32)) == decode(TYPES, data + bytes(32))
    negative = encode(TYPES, [1, -5 * 10**8, 0, 0, 1])
    assert round_data(negative)[1] == -5 * 10**8


@pytest.mark.parametrize("broken", [
    encode(TYPES, [1, 2, 3, 4, 5])[:159],  # short
    b"",
    b"\x01" + encode(TYPES, [1, 2, 3, 4, 5])[1:],  # a roundId above 80 bits
    encode(TYPES, [1, 2, 3, 4, 5])[:128] + b"\x01" + bytes(31),  # answeredInRound too
])
def test_a_malformed_answer_is_refused_as_eth_abi_refuses_it(broken: bytes) -> None:
    with pytest.raises(DecodingError):
        decode(TYPES, broken)
    with pytest.raises(DecodingError):
        round_data(broken)
