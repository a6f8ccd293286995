"""The JSON-RPC body writer (keeperd/chain/rpc.py `dumps`): what json.dumps writes (compact),
with keeperd's own hex (HexData: a multicall's megabytes of calldata) copied in unescaped."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeperd.chain.rpc import HexData, dumps

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**300, 2**300),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
payloads = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=40)


@given(payloads)
@settings(max_examples=300, deadline=None)
def test_a_body_without_hexdata_is_json_dumps_compact(payload: Any) -> None:
    assert dumps(payload) == json.dumps(payload, separators=(",", ":"))


@given(payloads, st.binary(max_size=64))
@settings(max_examples=200, deadline=None)
def test_hexdata_anywhere_reads_back_as_the_same_string(payload: Any, data: bytes) -> None:
    hexdata = HexData("0x" + data.hex())
    body = [{"jsonrpc": "2.0", "id": 1, "method": "eth_call",
             "params": [{"to": "0x" + "ab" * 20, "data": hexdata}, "latest"]}, payload,
            (hexdata, [payload, hexdata])]
    assert json.loads(dumps(body)) == json.loads(json.dumps(body))
    # (three values; a payload's own keys or strings may spell the same text: hypothesis
    # drew {"0x": null} beside the empty data "0x")
    assert dumps(body).count(f'"{hexdata}"') == json.dumps(
        body, separators=(",", ":")).count(f'"{hexdata}"')


def test_a_batch_of_signed_transactions_is_written_as_json_writes_it() -> None:
    raw = "0x02" + "ab" * 200
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": [raw]}
             for i in range(16)]
    assert dumps(batch) == json.dumps(batch, separators=(",", ":"))
