"""The flash path's swap pool is derived, not asked for (#28 item 3): Uniswap V3's CREATE2
address of (factory, sorted tokens, fee) and the pool creation code hash — checked against a
known mainnet pool, and against the devnet factory's own `getPool` and the FlashLiquidator's
on-chain derivation."""

from __future__ import annotations

from itertools import combinations

import pytest
from eth_utils import keccak

from keeperd.chain.multicall import encode_call
from keeperd.devnet import paths
from keeperd.devnet.handle import Devnet
from keeperd.protocols.sdk.swap import POOL_INIT_CODE_HASH, uniswap_v3_pool

MAINNET_FACTORY = "0x1F98431c8aD98523631AE4a59f267346ea31F984"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
WETH = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"


def test_the_mainnet_usdc_weth_pool_is_derived_from_its_factory() -> None:
    pool = "0x88e6A0c2dDD26FEEb64F039a2c41296FcB3f5640"  # USDC/WETH 0.05 %
    assert uniswap_v3_pool(MAINNET_FACTORY, USDC, WETH, 500) == pool
    assert uniswap_v3_pool(MAINNET_FACTORY, WETH, USDC, 500) == pool  # either order
    assert uniswap_v3_pool(MAINNET_FACTORY, USDC, WETH, 3000) != pool  # the fee is salt


def test_the_init_code_hash_is_the_pinned_v3_core_pools() -> None:
    import json

    artifact = (paths.node_modules() / "@uniswap" / "v3-core" / "artifacts" / "contracts"
                / "UniswapV3Pool.sol" / "UniswapV3Pool.json")
    assert keccak(hexstr=json.loads(artifact.read_text())["bytecode"]) == POOL_INIT_CODE_HASH


def _address(raw: bytes) -> str:
    return "0x" + raw[12:32].hex()


@pytest.mark.devnet
def test_derivation_matches_the_devnet_factory_and_the_contract(devnet: Devnet) -> None:
    client, manifest = devnet.client, devnet.manifest
    factory = manifest["uniswap_v3"]["factory"]
    flash = manifest["flash_liquidator"]["address"]
    tokens = manifest["tokens"]

    def get_pool(a: str, b: str, fee: int) -> str:
        return _address(client.eth_call(factory, encode_call(
            "getPool(address,address,uint24)", ["address", "address", "uint24"], [a, b, fee])))

    def pool_for(a: str, b: str, fee: int) -> str:
        return _address(client.eth_call(flash, encode_call(
            "poolFor(address,address,uint24)", ["address", "address", "uint24"], [a, b, fee])))

    pairs = list(combinations(sorted(tokens), 2))
    assert len(pairs) == len(manifest["uniswap_v3"]["pools"])
    for a, b in pairs:
        derived = uniswap_v3_pool(factory, tokens[a], tokens[b], manifest["uniswap_v3"]["fee"])
        assert get_pool(tokens[a], tokens[b], manifest["uniswap_v3"]["fee"]) == derived.lower()
        assert pool_for(tokens[b], tokens[a], manifest["uniswap_v3"]["fee"]) == derived.lower()
    # A pool created now, at another fee tier, lands where the derivation said it would.
    a, b = tokens["WETH"], tokens["USDC"]
    expected = uniswap_v3_pool(factory, a, b, 500)
    assert client.call("eth_getCode", expected, "latest") == "0x"
    client.send(client.accounts()[0], factory, encode_call(
        "createPool(address,address,uint24)", ["address", "address", "uint24"], [a, b, 500]))
    assert get_pool(b, a, 500) == expected.lower() == pool_for(a, b, 500)
    assert client.call("eth_getCode", expected, "latest") != "0x"
