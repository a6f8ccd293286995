"""The streamed rewrite of anvil's state dump (keeperd/devnet/dump.py): whatever the chunking
of the text, the result is the dump itself with every transaction's call traces emptied."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from keeperd.devnet.dump import DumpError, StageHistory, _write_filtered

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


def stage_dump(head: int, first: int, txs: list[str]) -> dict[str, object]:
    """A stage node's dump: its own genesis, the head it started from (or block 0), and the
    blocks it mined, in anvil's order (not sorted)."""
    blocks = [{"header": {"number": hex(n)}, "transactions": [], "ommers": []}
              for n in [head, *range(first, head), 0]]
    return {"block": {"number": head}, "accounts": {"0x" + "11" * 20: {"nonce": head}},
            "best_block_number": hex(head), "blocks": blocks,
            "transactions": [{"info": {"transaction_hash": h, "traces": [{"x": 1}]},
                              "receipt": {"logs": [{"data": h}]}} for h in txs],
            "historical_states": None}


@pytest.mark.parametrize("size", [1, 5, 10**6])
def test_stages_set_their_history_aside_and_the_last_dump_puts_it_back(
        tmp_path: Path, size: int) -> None:
    history = StageHistory(tmp_path / "history")
    # Stage 1 mined blocks 1-3; stage 2 (started from head 3) mined 4-5; the last, 6-7.
    for dump in (stage_dump(3, 1, ["0xa1", "0xa2"]), stage_dump(5, 4, ["0xb1"])):
        tip = io.StringIO()
        _write_filtered(chunked(json.dumps(dump), size), tip, set_aside=history)
        tip_state = json.loads(tip.getvalue())
        # The next node gets the accounts and its head block, nothing older, no transaction.
        assert tip_state["accounts"] == dump["accounts"]
        assert [b["header"]["number"] for b in tip_state["blocks"]] == \
            [dump["best_block_number"]]
        assert tip_state["transactions"] == []
    built = io.StringIO()
    _write_filtered(chunked(json.dumps(stage_dump(7, 6, ["0xc1"])), size), built,
                    put_back=history)
    state = json.loads(built.getvalue())
    assert state["best_block_number"] == "0x7" and state["accounts"]["0x" + "11" * 20] == \
        {"nonce": 7}
    assert sorted(int(b["header"]["number"], 16) for b in state["blocks"]) == list(range(8))
    assert [t["info"]["transaction_hash"] for t in state["transactions"]] == \
        ["0xa1", "0xa2", "0xb1", "0xc1"]
    assert all(t["info"]["traces"] == [] and t["receipt"]["logs"] for t in state["transactions"])


def test_a_dump_that_names_its_blocks_before_its_head_is_refused(tmp_path: Path) -> None:
    dump = stage_dump(3, 1, [])
    reordered = {"blocks": dump.pop("blocks"), **dump}
    with pytest.raises(DumpError, match="before best_block_number"):
        _write_filtered(iter([json.dumps(reordered)]), io.StringIO(),
                        set_aside=StageHistory(tmp_path))


def test_a_new_build_does_not_inherit_the_history_a_killed_one_left(tmp_path: Path) -> None:
    (tmp_path / "blocks.ndjson").write_text('{"header": {"number": "0x9"}}\n')
    history = StageHistory(tmp_path)
    assert list(history.lines("blocks")) == [] and list(history.lines("transactions")) == []
