"""A real Uniswap V3 on the devnet: the factory from the pinned `@uniswap/v3-core`
artifacts, 0.3 % pools for the market's pairs initialised at the oracle prices, with
full-range liquidity added through our small `DevnetLiquidity` helper — so that swapping
seized collateral has real price impact.

Also deploys keeperd's `FlashLiquidator` for the devnet keeper (anvil's test account 5),
its profits going to account 6 (`morpho.deploy_liquidator` does the MorphoLiquidator so).
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from typing import Any

from eth_utils import to_checksum_address

from keeperd.devnet import contracts, paths
from keeperd.devnet.client import DevnetClient
from keeperd.devnet.contracts import Artifact
from keeperd.devnet.solc import compile_project_contracts

FEE = 3000  # 0.3 %
TICK_SPACING = 60
# The devnet keeper: anvil's default-mnemonic account 5 (a published test key).
DEVNET_KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
# Where the devnet FlashLiquidator sends its profits: account 6 (not the keeper, so a test
# can tell profit from the keeper's own balance).
DEVNET_BENEFICIARY = "0x976EA74026E726554dB657fA54763abd0C3a0aa9"


def _artifact(name: str) -> Artifact:
    path = (paths.node_modules() / "@uniswap" / "v3-core" / "artifacts" / "contracts"
            / f"{name}.sol" / f"{name}.json")
    data = json.loads(path.read_text())
    return Artifact(name, data["abi"], data["bytecode"], data.get("linkReferences", {}))


def pool_between(manifest: dict[str, Any], a: str, b: str) -> str:
    """The devnet's 0.3 % pool of two symbols, whichever token sorts first by address."""
    pools = manifest["uniswap_v3"]["pools"]
    found = pools.get(f"{a}/{b}") or pools.get(f"{b}/{a}")
    if found is None:
        raise KeyError(f"no Uniswap V3 pool {a}/{b} on the devnet (pools: {sorted(pools)})")
    return str(found)


def deploy_uniswap(client: DevnetClient, market: dict[str, Any], prices: dict[str, float],
                   depth_usd: float = 50_000_000.0) -> dict[str, Any]:
    """Deploy the factory and a pool per pair with `depth_usd` of each token in range."""
    admin = client.accounts()[0]
    factory = client.deploy(admin, _artifact("UniswapV3Factory").deploy_data())
    helper = client.deploy(admin, ours("DevnetLiquidity").deploy_data())
    dex = {"factory": factory, "fee": FEE, "pools": {}, "liquidity_helper": helper}
    for a, b in combinations(sorted(market["tokens"]), 2):
        add_pool(client, dex, market, prices, a, b, depth_usd)
    flash = client.deploy(admin, ours("FlashLiquidator").deploy_data(
        market["aave_v3"]["pool"], DEVNET_KEEPER, factory, DEVNET_BENEFICIARY))
    return {"uniswap_v3": dex,
            "flash_liquidator": {"address": flash, "owner": DEVNET_KEEPER,
                                 "beneficiary": DEVNET_BENEFICIARY}}


def add_pool(client: DevnetClient, dex: dict[str, Any], market: dict[str, Any],
             prices: dict[str, float], a: str, b: str, depth_usd: float = 50_000_000.0
             ) -> str:
    """The 0.3 % pool of two symbols, initialised at their prices with `depth_usd` of each in
    full range; recorded in `dex["pools"]` (the manifest's `uniswap_v3`)."""
    admin = client.accounts()[0]
    factory_art, pool_art = _artifact("UniswapV3Factory"), _artifact("UniswapV3Pool")
    helper_art = ours("DevnetLiquidity")
    token_art = contracts.aave("MintableERC20")
    tokens: dict[str, str] = market["tokens"]
    decimals = {s: r["decimals"] for s, r in market["aave_v3"]["reserves"].items()}
    factory, helper = dex["factory"], dex["liquidity_helper"]
    t0, t1 = sorted((a, b), key=lambda s: int(tokens[s], 16))
    client.send(admin, factory, factory_art.encode_call("createPool", tokens[t0], tokens[t1],
                                                        FEE))
    (pool,) = factory_art.decode_result("getPool", client.eth_call(
        factory, factory_art.encode_call("getPool", tokens[t0], tokens[t1], FEE)))
    pool = to_checksum_address(pool)
    # Price of token0 in token1, in raw units: what sqrtPriceX96 encodes.
    raw_price = prices[t0] / prices[t1] * 10 ** (decimals[t1] - decimals[t0])
    sqrt_price = math.sqrt(raw_price)
    client.send(admin, pool, pool_art.encode_call("initialize", int(sqrt_price * 2**96)))
    amount0 = depth_usd / prices[t0] * 10 ** decimals[t0]
    liquidity = int(amount0 * sqrt_price)
    for sym, amount in ((t0, amount0 * 1.01 + 10), (t1, amount0 * raw_price * 1.01 + 10)):
        client.send(admin, tokens[sym], token_art.encode_call("mint", helper, int(amount)))
    # Explicit gas: Uniswap writes a price observation only in a new block, so the gas
    # anvil estimates (against the current block) can fall short when the transaction
    # lands one second later; that made this revert once in a clean build.
    client.send(admin, helper, helper_art.encode_call("addFullRange", pool, TICK_SPACING,
                                                      liquidity), gas=2_000_000)
    dex["pools"][f"{t0}/{t1}"] = pool
    return pool


def ours(name: str) -> Artifact:
    """One of keeperd's own contracts (contracts/NAME.sol)."""
    compiled = compile_project_contracts([f"{name}.sol"])[name]
    return contracts.from_compiled(name, compiled.abi, compiled.bytecode)
