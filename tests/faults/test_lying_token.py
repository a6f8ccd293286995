"""A Morpho market's tokens' decimals and symbols rest on no single endpoint (an audit): one
endpoint's 6 decimals for an 18-decimals loan token counted every profit 10^12 times larger
and shrank the MorphoLiquidator's minProfit as much, for the life of the process. Every voter
endpoint is asked at start; one that disagrees refuses it, naming what each said."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from keeperd.chain.rpc import RpcPool
from keeperd.config import parse_config
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.protocols.morpho_blue.adapter import MorphoBlueAdapter
from keeperd.protocols.sdk.contract import PluginContext, StartRefused
from keeperd.storage.account_index import IndexStore
from tests.faults.chaos_proxy import ChaosProxy
from tests.keeper_harness import devnet_chain, morpho_protocol

DECIMALS = "0x" + function_signature_to_4byte_selector("decimals()").hex()


async def started(devnet: Devnet, tmp_path: Path, urls: list[str]) -> MorphoBlueAdapter:
    config = parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [{**devnet_chain(devnet), "rpc_urls": urls}],
        "protocols": [morpho_protocol(devnet)], "metrics": {"enabled": False}})
    metrics = Metrics()
    pool = RpcPool.from_urls("devnet", urls, metrics=metrics)
    async with pool:
        adapter = MorphoBlueAdapter(config.protocols[0], PluginContext(  # type: ignore[arg-type]
            config.chains[0], pool, await IndexStore.open(tmp_path), metrics))
        await adapter.start()
    return adapter


async def test_an_endpoint_lying_on_a_tokens_decimals_refuses_the_start(
        devnet: Devnet, tmp_path: Path) -> None:
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.call_lies[DECIMALS] = "0x" + encode(["uint8"], [6]).hex()
        with pytest.raises(StartRefused) as refused:
            await started(devnet, tmp_path, [liar.url, devnet.manifest["rpc_url"]])
    said = str(refused.value)
    assert said.startswith("protocols[morpho].markets: the RPC endpoints disagree")
    assert "decimals(): read 18, rpc_urls[0] said 6, rpc_urls[1] said 18" in said
    assert liar.faulted["eth_call"] >= 1


async def test_endpoints_that_agree_start_every_market(devnet: Devnet, tmp_path: Path) -> None:
    async with ChaosProxy(devnet.manifest["rpc_url"]) as honest:
        adapter = await started(devnet, tmp_path, [honest.url, devnet.manifest["rpc_url"]])
    assert len(adapter.markets) == len(devnet.manifest["morpho_blue"]["markets"])
    assert honest.seen["eth_call"] >= 4  # (the tokens asked of it apart, not only the first)
