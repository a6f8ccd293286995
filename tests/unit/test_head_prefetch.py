"""What the pool asks ahead at a new head (chain/prefetch.py), how the executor splits a
block into waves, and how the delay proxy counts the round trips on a path
(devnet/delay_proxy.py): the pure parts."""

from __future__ import annotations

from keeperd.chain.prefetch import MAX_PARAMS_CHARS, at_block, shape
from keeperd.devnet.delay_proxy import Seen, sequential_depth
from keeperd.execution.executor import LATER_WAVE, WAVE, wave_split

TX = {"to": "0x" + "11" * 20, "data": "0xabcdef"}


def test_a_read_at_the_head_is_asked_again_at_the_next_head() -> None:
    call = shape("eth_call", [TX, hex(100)], 100)
    assert call is not None
    assert at_block(call, 101) == ("eth_call", [TX, hex(101)])
    storage = shape("eth_getStorageAt", ["0x" + "22" * 20, "0x0", hex(100)], 100)
    assert storage is not None and at_block(storage, 105)[1][2] == hex(105)
    header = shape("eth_getBlockByNumber", [hex(100), False], 100)
    assert header is not None and at_block(header, 101) == ("eth_getBlockByNumber",
                                                            [hex(101), False])


def test_a_log_range_ending_at_the_head_keeps_its_width() -> None:
    logs = shape("eth_getLogs", [{"address": TX["to"], "fromBlock": hex(98),
                                  "toBlock": hex(100)}], 100)
    assert logs is not None
    _, [f] = at_block(logs, 110)
    assert (f["fromBlock"], f["toBlock"], f["address"]) == (hex(108), hex(110), TX["to"])


def test_what_is_not_a_read_at_the_head_is_never_asked_ahead() -> None:
    assert shape("eth_call", [TX, "latest"], 100) is None  # (a simulation: its own moment)
    assert shape("eth_call", [TX, hex(99)], 100) is None  # a late read of an older block
    assert shape("eth_sendRawTransaction", ["0x00"], 100) is None
    assert shape("eth_estimateGas", [TX, hex(100)], 100) is None
    assert shape("eth_getLogs", [{"fromBlock": hex(1), "toBlock": hex(100)}], 100) is None
    assert shape("eth_getLogs", [{"blockHash": "0x" + "33" * 32}], 100) is None
    big = {**TX, "data": "0x" + "00" * MAX_PARAMS_CHARS}
    assert shape("eth_call", [big, hex(100)], 100) is None  # a full scan's chunk


def test_the_first_wave_is_small_and_the_later_ones_larger() -> None:
    calls = list(range(WAVE + 2 * LATER_WAVE + 3))
    waves = wave_split(calls)
    assert [len(w) for w in waves] == [WAVE, LATER_WAVE, LATER_WAVE, 3]
    assert [c for w in waves for c in w] == calls  # most profitable first, none lost
    assert wave_split([]) == []
    # A block of at most a later wave's size goes in one.
    assert wave_split(list(range(LATER_WAVE))) == [list(range(LATER_WAVE))]
    assert [len(w) for w in wave_split(list(range(LATER_WAVE + 1)))] == [WAVE, LATER_WAVE + 1
                                                                         - WAVE]


def test_requests_that_overlap_are_one_round_trip() -> None:
    read = Seen(("eth_getLogs",), 0.0, 0.05)
    beside = Seen(("eth_call",), 0.001, 0.052)
    simulate = Seen(("eth_call",), 0.06, 0.11)
    send = Seen(("eth_sendRawTransaction",), 0.12, 0.17)
    assert sequential_depth([read, beside, simulate, send], 0.0, send) == 3
    later = Seen(("eth_call",), 0.053, 0.1)  # after the read: a step of its own
    send2 = Seen(("eth_sendRawTransaction",), 0.101, 0.15)
    assert sequential_depth([read, beside, later, send2], 0.0, send2) == 3
    assert sequential_depth([read, send], 0.0, send) == 2


async def test_the_reads_of_a_head_are_asked_again_in_one_batch_and_answered_from_it() -> None:
    from keeperd.chain.prefetch import HeadPrefetch

    asked: list[tuple[int, list[object]]] = []

    async def fetch(block: int, calls: list[tuple[str, list[object]]]
                    ) -> tuple[dict[str, object], list[object]]:
        asked.append((block, calls))
        return {"number": hex(block)}, [f"{m}@{block}#{i}" for i, (m, _) in enumerate(calls)]

    prefetch = HeadPrefetch(fetch)
    logs = [{"address": TX["to"], "fromBlock": hex(98), "toBlock": hex(100)}]
    prefetch.head(100)
    # At the first head nothing was remembered: the code asks for itself (and is remembered).
    assert await prefetch.answer("eth_call", [TX, hex(100)]) == (False, None)
    assert await prefetch.answer("eth_getLogs", logs) == (False, None)
    assert await prefetch.answer("eth_call", [TX, "latest"]) == (False, None)  # never kept
    prefetch.head(101)
    # The next head's reads: the same calls at 101, one batch, the answers waiting for them.
    assert await prefetch.answer("eth_getLogs", [{**logs[0], "fromBlock": hex(99),
                                                  "toBlock": hex(101)}]) == (
        True, "eth_getLogs@101#1")
    assert await prefetch.answer("eth_call", [TX, hex(101)]) == (True, "eth_call@101#0")
    assert await prefetch.answer("eth_getBlockByNumber", [hex(101), False]) == (
        True, {"number": hex(101)})
    assert [(b, [m for m, _ in calls]) for b, calls in asked] == [
        (101, ["eth_call", "eth_getLogs"])]
    assert asked[0][1][0] == ("eth_call", [TX, hex(101)])
    # Another call (other data) at this head is not in the batch: asked by the code.
    other = {**TX, "data": "0x1234"}
    assert await prefetch.answer("eth_call", [other, hex(101)]) == (False, None)
    assert (prefetch.hits, prefetch.misses) == (3, 3)  # (two at the first head)
