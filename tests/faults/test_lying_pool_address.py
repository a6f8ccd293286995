"""One lying answer at start must not get the keeper's balance approved to an attacker (#28
item 1): the Aave pool keeperd approves and calls is pinned in the config, or agreed by every
endpoint that answers (and, with one endpoint, only one on this machine is believed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from eth_utils import function_signature_to_4byte_selector

from keeperd.devnet.handle import Devnet
from keeperd.protocols.aave_v3.liquidator import AaveLiquidator
from keeperd.protocols.plugin import StartRefused
from tests.faults.chaos_proxy import ChaosProxy
from tests.integration.test_liquidation import (  # noqa: F401 - fixtures
    KEEPER,
    config_for,
    fund_keeper,
    keeper_key_env,
    run_daemon,
)

ATTACKER = "0x000000000000000000000000000000000000bad1"
GET_POOL = "0x" + function_signature_to_4byte_selector("getPool()").hex()


def allowance(devnet: Devnet, token: str, spender: str) -> int:
    data = "0xdd62ed3e" + KEEPER[2:].lower().rjust(64, "0") + spender[2:].lower().rjust(64, "0")
    return int(devnet.client.call("eth_call", {"to": token, "data": data}, "latest"), 16)


async def test_endpoints_that_disagree_on_the_pool_refuse_the_start(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:  # noqa: F811
    fund_keeper(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.call_lies[GET_POOL] = "0x" + ATTACKER[2:].rjust(64, "0")
        config = config_for(devnet, tmp_path, "liquidate", rpc_urls=[
            liar.url, devnet.manifest["rpc_url"]], key={"source": "env", "env": "KEEPER_KEY"})
        with pytest.raises(StartRefused, match="disagree on the Aave pool"):
            await run_daemon(config)
    # The invariant: nothing of the keeper's went anywhere — not one approval to the liar's.
    for token in devnet.manifest["tokens"].values():
        assert allowance(devnet, token, ATTACKER) == 0


async def test_a_pinned_pool_is_used_whatever_an_endpoint_says(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:  # noqa: F811
    fund_keeper(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.call_lies[GET_POOL] = "0x" + ATTACKER[2:].rjust(64, "0")
        config = config_for(devnet, tmp_path, "liquidate", rpc_urls=[liar.url],
                            key={"source": "env", "env": "KEEPER_KEY"})
        aave = config.protocols[0].model_copy(update={"pool": devnet.manifest["aave_v3"]["pool"]})
        keeper = await run_daemon(config.model_copy(update={"protocols": [aave]}))
        await keeper.evaluated_at(devnet.client.block_number())
    for token in devnet.manifest["tokens"].values():
        assert allowance(devnet, token, ATTACKER) == 0
    pool = devnet.manifest["aave_v3"]["pool"]
    assert all(allowance(devnet, t, pool) > 0 for t in devnet.manifest["tokens"].values())


async def test_one_remote_endpoint_alone_is_not_believed() -> None:
    class Pool:
        endpoints = [SimpleNamespace(safe_url="https://eth.provider.example/v2/***")]

        async def call_endpoint(self, ep: object, method: str, params: object) -> str:
            return "0x" + "00" * 12 + "11" * 20

    adapter = SimpleNamespace(
        name="aave", config=SimpleNamespace(pool=None, addresses_provider="0x" + "22" * 20),
        reader=SimpleNamespace(addresses=SimpleNamespace(pool="0x" + "11" * 20)), pool=Pool())
    liquidator = AaveLiquidator(adapter, SimpleNamespace(flash_liquidator=None),  # type: ignore[arg-type]
                                None, None)
    with pytest.raises(StartRefused, match="one remote RPC endpoint"):
        await liquidator._confirm_pool()
