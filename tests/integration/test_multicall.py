from __future__ import annotations

from eth_abi import decode

from keeperd.chain.multicall import Call, Multicall, encode_call
from keeperd.chain.rpc import RpcPool
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from tests.conftest import metric_absent, metric_value


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
