"""The streamed rewrite of anvil's state dump (keeperd/devnet/dump.py): whatever the chunking
of the text, the result is the dump itself with every transaction's call traces emptied."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from keeperd.devnet.dump import _write_filtered

DUMP = {
    "block": {"number": 12, "coinbase": "0x" + "00" * 20, "basefee": 7},
    "accounts": {"0x" + "11" * 20: {"nonce": 3, "balance": "0x10", "code": "0x",
                                    "storage": {"0x01": "0x02"}},
                 "0x" + "22" * 20: {"nonce": 0, "balance": "0x0", "code": "0x6001",
                                    "storage": {}}},
    "best_block_number": 12,
    "blocks": [{"header": {"number": "0x1", "extraData": "0x"}, "transactions": [],
                "ommers": []}],
    "transactions": [
        {"info": {"transaction_hash": "0xab", "traces": [{"parent": None, "children": [1],
                                                          "trace": {"data": "0x[]{}\"\\"}}],
                  "gas_used": 21000, "out": None},
         "receipt": {"status": True, "logs": [{"data": "0x", "topics": []}]},
         "block_hash": "0xcd", "block_number": 1},
        {"info": {"transaction_hash": "0xef", "traces": [], "nonce": 1},
         "receipt": {"status": False, "logs": []}, "block_hash": "0xcd", "block_number": 1},
    ],
    "historical_states": None,
    "unicode": "naïve ✓",
    "big": 123456789012345678901234567890,
    "ratio": -1.5e-7,
}


def chunked(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), size):
        yield text[i:i + size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10**6])
@pytest.mark.parametrize("indent", [None, 2])
def test_traces_are_dropped_and_nothing_else_changes(size: int, indent: int | None) -> None:
    out = io.StringIO()
    _write_filtered(chunked(json.dumps(DUMP, indent=indent, ensure_ascii=False), size), out)
    expected = json.loads(json.dumps(DUMP))
    for tx in expected["transactions"]:
        tx["info"]["traces"] = []
    assert json.loads(out.getvalue()) == expected
