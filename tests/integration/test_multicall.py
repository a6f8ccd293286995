from __future__ import annotations

import numpy as np
import pytest
from eth_abi import decode

from keeperd.chain import scan_reader
from keeperd.chain.multicall import (
    AddressCalls,
    Call,
    CallResult,
    Multicall,
    MulticallError,
    ResultColumns,
    address_bytes,
    decode_aggregate3_columns,
    encode_address_calls,
    encode_aggregate3,
    encode_call,
    selector,
)
from keeperd.chain.rpc import RpcPool
from keeperd.devnet import contracts, paths
from keeperd.devnet.handle import Devnet
from keeperd.devnet.solc import compile_sources
from tests.conftest import metric_absent, metric_value
from tests.faults.chaos_proxy import ChaosProxy


async def test_aggregate3_chunks_and_keeps_order(pool: RpcPool, devnet: Devnet, metrics) -> None:
    pool_address = devnet.manifest["aave_v3"]["pool"]
    borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
    calls = [Call(pool_address, encode_call("getUserAccountData(address)", ["address"], [a]))
             for a in borrowers]
    mc = Multicall(pool, chunk_size=64)
    results = await mc.aggregate3(calls)
    assert len(results) == len(borrowers)
    # 300 calls in chunks of 64 = 5 eth_calls.
    assert metric_value(metrics, "keeperd_rpc_requests_total",
                        {"chain": "devnet", "endpoint": "0", "method": "eth_call",
                         "outcome": "ok"}) == 5
    # Spot-check against single calls made by the devnet's own client.
    art = contracts.aave("Pool")
    for i in (0, 150, 299):
        expected = art.decode_result("getUserAccountData",
                                     devnet.client.eth_call(pool_address, calls[i].calldata))
        got = decode(["uint256"] * 6, results[i].data)
        assert results[i].success and tuple(got) == expected


async def test_failed_calls_come_back_in_place(pool: RpcPool, devnet: Devnet) -> None:
    weth = devnet.manifest["tokens"]["WETH"]
    calls = [
        Call(weth, encode_call("decimals()", [], [])),
        Call(weth, bytes.fromhex("deadbeef")),  # no such function: reverts
        Call(weth, encode_call("symbol()", [], [])),
    ]
    results = await Multicall(pool).aggregate3(calls)
    assert [r.success for r in results] == [True, False, True]
    assert decode(["uint8"], results[0].data) == (18,)
    assert decode(["string"], results[2].data) == ("WETH",)


async def test_empty_batch_sends_nothing(pool: RpcPool, metrics) -> None:
    assert await Multicall(pool).aggregate3([]) == []
    assert metric_absent(metrics, "keeperd_rpc_requests_total",
                         {"chain": "devnet", "endpoint": "0", "method": "eth_call",
                          "outcome": "ok"})


def test_hand_rolled_codec_equals_eth_abi() -> None:
    from keeperd.chain.multicall import (
        CallResult,
        decode_aggregate3,
        decode_aggregate3_reference,
        encode_aggregate3,
        encode_aggregate3_reference,
    )

    calls = [Call("0x" + f"{i:040x}", bytes(range(i % 70)), allow_failure=i % 2 == 0)
             for i in range(50)]
    assert encode_aggregate3(calls) == encode_aggregate3_reference(calls)
    from eth_abi import encode as abi_encode

    results = [CallResult(i % 3 != 0, bytes([i]) * (i % 45)) for i in range(40)]
    blob = abi_encode(["(bool,bytes)[]"], [[(r.success, r.data) for r in results]])
    assert decode_aggregate3(blob) == decode_aggregate3_reference(blob) == results


async def test_chunks_stay_under_the_request_size_limit(pool: RpcPool, devnet: Devnet) -> None:
    # anvil refuses bodies over 2 MiB: 6,000 calls in one request would be ~2.7 MB.
    weth = devnet.manifest["tokens"]["WETH"]
    calls = [Call(weth, encode_call("balanceOf(address)", ["address"], ["0x" + f"{i:040x}"]))
             for i in range(6000)]
    mc = Multicall(pool, chunk_size=10_000, max_request_bytes=2_000_000)
    from keeperd.chain.multicall import encode_aggregate3

    chunks = mc._chunks(calls)
    assert len(chunks) == 2 and sum(len(c) for c in chunks) == 6000
    assert all(2 * len(encode_aggregate3(c)) + 200 <= 2_000_000 for c in chunks)
    results = await mc.aggregate3(calls)
    assert len(results) == 6000 and all(r.success for r in results)


# --- a scan's calls as columns, through the scan reader or aggregate3 -------------------------

def _scan_calls(devnet: Devnet) -> AddressCalls:
    """Calls as a scan makes them, with failures among them: a reverting selector and a
    target without code (which answers nothing)."""
    pool_address = devnet.manifest["aave_v3"]["pool"]
    people = address_bytes([b["address"] for b in devnet.manifest["borrowers"][:40]])
    return AddressCalls.concat([
        AddressCalls.to(pool_address, selector("getUserConfiguration(address)"), people),
        AddressCalls.to(pool_address, selector("getUserAccountData(address)"), people[:7],
                        words=6),
        AddressCalls.to(pool_address, bytes.fromhex("deadbeef"), people[:3]),
        AddressCalls.to("0x" + "00" * 19 + "ff", selector("balanceOf(address)"), people[:2]),
    ])


def _answers(results: ResultColumns, calls: AddressCalls) -> list[tuple[int, ...] | None]:
    """Each call's words, or None where it did not answer them."""
    out: list[tuple[int, ...] | None] = []
    for i in range(len(calls)):
        words = int(calls.words[i])
        out.append(tuple(int(results.words(np.array([i]), w)[0]) for w in range(words))
                   if results.answered(words)[i] else None)
    return out


async def test_the_scan_reader_answers_as_aggregate3(pool: RpcPool, devnet: Devnet,
                                                     metrics) -> None:
    calls = _scan_calls(devnet)
    reader = Multicall(pool, chunk_size=30)
    through_reader = await reader.read_columns(calls)
    assert reader.reads_through == "scan reader"
    told_not_to = Multicall(pool, scan_reader=False)  # (chains[].scan_reader: false)
    through_aggregate3 = await told_not_to.read_columns(calls)
    assert told_not_to.reads_through == "aggregate3"
    assert _answers(through_aggregate3, calls) == _answers(through_reader, calls)
    plain = await Multicall(pool).aggregate3(calls.calls())
    expected = [tuple(int.from_bytes(r.data[32 * w:32 * w + 32], "big")
                      for w in range(int(calls.words[i])))
                if r.success and len(r.data) >= 32 * int(calls.words[i]) else None
                for i, r in enumerate(plain)]
    assert _answers(through_reader, calls) == expected
    assert expected[:40] == [(w,) for w in expected_configurations(devnet, 40)]
    assert expected[-5:] == [None] * 5  # the reverts and the empty answers
    assert all(e is not None for e in expected[:47])


def expected_configurations(devnet: Devnet, n: int) -> list[int]:
    art = contracts.aave("Pool")
    pool_address = devnet.manifest["aave_v3"]["pool"]
    return [art.decode_result("getUserConfiguration", devnet.client.eth_call(
        pool_address, art.encode_call("getUserConfiguration", b["address"])))[0][0]
        for b in devnet.manifest["borrowers"][:n]]


@pytest.mark.parametrize("node", ["refuse", "ignore"])
async def test_a_node_without_state_overrides_is_read_through_aggregate3(
        devnet: Devnet, metrics, node: str) -> None:
    calls = _scan_calls(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy:
        proxy.state_overrides = node
        async with RpcPool.from_urls("devnet", [proxy.url], metrics=metrics) as pool:
            mc = Multicall(pool)
            first = await mc.read_columns(calls)
            assert mc.reads_through == "aggregate3" and proxy.faulted["eth_call"] == 1
            again = await mc.read_columns(calls)
            assert proxy.faulted["eth_call"] == 1  # the reader is not tried again
    async with RpcPool.from_urls("devnet", [devnet.manifest["rpc_url"]]) as direct:
        honest = await Multicall(direct).read_columns(calls)
    assert _answers(first, calls) == _answers(again, calls) == _answers(honest, calls)


def test_the_scan_reader_code_is_its_source_compiled() -> None:
    source = (paths.project_root() / "contracts" / "readers" / "ScanReader.sol").read_text()
    compiled = compile_sources({"ScanReader.sol": source})["ScanReader"]
    assert compiled.deployed_bytecode == scan_reader.READER_CODE


def test_column_codecs_equal_the_call_by_call_ones() -> None:
    rng = np.random.default_rng(7)
    m = 60
    calls = AddressCalls(rng.integers(0, 256, (m, 20), dtype=np.uint8),
                         rng.integers(0, 256, (m, 4), dtype=np.uint8),
                         rng.integers(0, 256, (m, 20), dtype=np.uint8),
                         np.ones(m, dtype=np.uint8))
    assert encode_address_calls(calls) == encode_aggregate3(calls.calls())
    from eth_abi import encode as abi_encode

    results = [CallResult(i % 3 != 0, (i * 2**190).to_bytes(32, "big") * (i % 3))
               for i in range(40)]
    blob = abi_encode(["(bool,bytes)[]"], [[(r.success, r.data) for r in results]])
    columns = decode_aggregate3_columns(blob)
    assert list(columns) == results
    rows = np.flatnonzero(columns.answered())
    assert list(columns.words(rows)) == [int(i) * 2**190 for i in rows]


def test_answers_pointing_outside_themselves_are_refused() -> None:
    from eth_abi import encode as abi_encode

    blob = abi_encode(["(bool,bytes)[]"], [[(True, bytes(32))] * 4])
    word = lambda v: v.to_bytes(32, "big")  # noqa: E731
    lies = {"array offset past the end": word(10**6) + blob[32:],
            "more results than bytes": blob[:32] + word(10**6) + blob[64:],
            "a result's offset past the end": blob[:64] + word(10**6) + blob[96:],
            "return data cut short": blob[:-8],
            "a length word cut short": blob[:-40],
            "an offset of 2**255": blob[:64] + word(2**255) + blob[96:]}
    for what, lie in lies.items():
        with pytest.raises(MulticallError):
            decode_aggregate3_columns(lie)
            pytest.fail(what)
    words = np.array([1, 6, 1], dtype=np.uint8)
    good = bytes([1, 0, 1]) + bytes(29) + bytes(32 * 8)
    success, start, length = scan_reader.decode_reader_answer(good, words)
    assert success.tolist() == [True, False, True] and start.tolist() == [32, 64, 256]
    assert length.tolist() == [32, 0, 32]
    for lie in (good[:-1], good + bytes(32), bytes([2]) + good[1:]):
        with pytest.raises(ValueError):
            scan_reader.decode_reader_answer(lie, words)
