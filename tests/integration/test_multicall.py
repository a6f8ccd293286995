from __future__ import annotations

from eth_abi import decode

from keeperd.chain.multicall import Call, Multicall, encode_call
from keeperd.chain.rpc import RpcPool
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from tests.conftest import metric_value


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
    assert metrics.registry.get_sample_value(
        "keeperd_rpc_requests_total",
        {"chain": "devnet", "endpoint": "0", "method": "eth_call", "outcome": "ok"}) is None
