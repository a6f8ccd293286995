"""Morpho Blue on the devnet: compiled from the pinned npm package's sources
(`@morpho-org/morpho-blue`, pragma 0.8.19: the pinned solc-js) with the package's own
OracleMock and IrmMock, two markets against the devnet's tokens, a lender and seeded
borrowers spread from just healthy to comfortable.

`deploy_liquidator` (after the rest of the devnet, so no other address moves) deploys keeperd's
MorphoLiquidator for the devnet keeper, and a Uniswap V3 pool for any market pair without one.

Oracle prices follow Morpho's convention: the price of one collateral unit in loan units,
scaled by 1e36 (so 1e36 x loan decimals / collateral decimals x the USD ratio).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak, to_checksum_address

from keeperd.devnet import contracts, paths
from keeperd.devnet.client import DevnetClient
from keeperd.devnet.contracts import Artifact
from keeperd.devnet.solc import compile_sources, load_sources

WAD = 10**18
ORACLE_PRICE_SCALE = 10**36
# Explicit gas: anvil estimates against the current block, but a transaction mined a second
# later first accrues interest (an IRM call and more storage writes) and ran out of gas.
GAS = 1_000_000


@dataclass(frozen=True)
class MarketSpec:
    name: str
    collateral: str
    loan: str
    lltv: float


MARKETS = (MarketSpec("WETH/USDC", "WETH", "USDC", 0.86),
           MarketSpec("WBTC/DAI", "WBTC", "DAI", 0.77))


def compiled() -> dict[str, Artifact]:
    folder = paths.node_modules() / "@morpho-org" / "morpho-blue"
    sources = {f"src/{k}": v for k, v in load_sources(folder / "src").items()
               if k.endswith(".sol")}
    out = compile_sources(sources)
    return {name: contracts.from_compiled(name, c.abi, c.bytecode)
            for name, c in out.items() if name in ("Morpho", "OracleMock", "IrmMock")}


def oracle_price(collateral_usd: float, loan_usd: float, collateral_decimals: int,
                 loan_decimals: int) -> int:
    return int(collateral_usd / loan_usd * 10 ** (36 + loan_decimals - collateral_decimals))


def market_id(params: tuple[str, str, str, str, int]) -> str:
    from eth_abi import encode

    return "0x" + keccak(encode(["address", "address", "address", "address", "uint256"],
                                list(params))).hex()


def deploy_morpho(client: DevnetClient, market: dict[str, Any], prices: dict[str, float],
                  borrowers_per_market: int = 24, seed_value: int = 1) -> dict[str, Any]:
    arts = compiled()
    morpho_art, oracle_art, irm_art = arts["Morpho"], arts["OracleMock"], arts["IrmMock"]
    token_art = contracts.aave("MintableERC20")
    admin = client.accounts()[0]
    morpho = client.deploy(admin, morpho_art.deploy_data(admin))
    irm = client.deploy(admin, irm_art.deploy_data())
    client.send(admin, morpho, morpho_art.encode_call("enableIrm", irm))
    tokens = market["tokens"]
    decimals = {s: r["decimals"] for s, r in market["aave_v3"]["reserves"].items()}
    rng = random.Random(seed_value * 7919)
    lender = to_checksum_address("0x" + "ab" * 19 + "01")
    client.call("anvil_setBalance", lender, hex(10**20))
    out_markets: dict[str, Any] = {}
    borrowers: list[dict[str, Any]] = []
    for index, spec in enumerate(MARKETS):
        oracle = client.deploy(admin, oracle_art.deploy_data())
        price = oracle_price(prices[spec.collateral], prices[spec.loan],
                             decimals[spec.collateral], decimals[spec.loan])
        client.send(admin, oracle, oracle_art.encode_call("setPrice", price))
        lltv = int(spec.lltv * WAD)
        client.send(admin, morpho, morpho_art.encode_call("enableLltv", lltv))
        params = (tokens[spec.loan], tokens[spec.collateral], oracle, irm, lltv)
        client.send(admin, morpho, morpho_art.encode_call("createMarket", params))
        mid = market_id(params)
        # The lender supplies 50M USD of the loan token.
        supply = int(50_000_000 / prices[spec.loan] * 10 ** decimals[spec.loan])
        client.send(admin, tokens[spec.loan], token_art.encode_call("mint", lender, supply))
        client.send(lender, tokens[spec.loan], token_art.encode_call("approve", morpho,
                                                                     2**256 - 1))
        client.send(lender, morpho, morpho_art.encode_call("supply", params, supply, 0,
                                                           lender, b""), gas=GAS)
        for i in range(borrowers_per_market):
            user = to_checksum_address("0x" + f"{0xB0 + index:02x}" * 18 + f"{i:04x}")
            client.call("anvil_setBalance", user, hex(10**19))
            collateral_usd = rng.uniform(5_000, 200_000)
            # health = collateral x price x lltv / debt: from just above 1 to comfortable
            health = 1.01 + 0.6 * (i / max(1, borrowers_per_market - 1)) ** 1.5
            debt_usd = collateral_usd * spec.lltv / health
            c_units = int(collateral_usd / prices[spec.collateral]
                          * 10 ** decimals[spec.collateral])
            d_units = int(debt_usd / prices[spec.loan] * 10 ** decimals[spec.loan])
            client.send(admin, tokens[spec.collateral],
                        token_art.encode_call("mint", user, c_units))
            client.send(user, tokens[spec.collateral],
                        token_art.encode_call("approve", morpho, 2**256 - 1))
            client.send(user, morpho, morpho_art.encode_call("supplyCollateral", params,
                                                             c_units, user, b""), gas=GAS)
            client.send(user, morpho, morpho_art.encode_call("borrow", params, d_units, 0,
                                                             user, user), gas=GAS)
            borrowers.append({"address": user, "market": spec.name, "planned_health":
                              round(health, 6)})
        out_markets[spec.name] = {"id": mid, "loan": spec.loan, "collateral": spec.collateral,
                                  "oracle": oracle, "irm": irm, "lltv": lltv}
    return {"morpho_blue": {"morpho": morpho, "irm": irm, "lender": lender,
                            "markets": out_markets, "borrowers": borrowers}}


def deploy_liquidator(client: DevnetClient, manifest: dict[str, Any],
                      prices: dict[str, float]) -> dict[str, Any]:
    """keeperd's MorphoLiquidator on the devnet's Morpho, owned by the devnet keeper, selling
    on the devnet's Uniswap V3 (a pool added for any market pair that has none), its profits
    going to the same beneficiary as the FlashLiquidator's. Returns the `morpho_blue` part of
    the manifest with `liquidator` added."""
    from keeperd.devnet import uniswap

    blue, dex = dict(manifest["morpho_blue"]), manifest["uniswap_v3"]
    for market in blue["markets"].values():
        try:
            uniswap.pool_between(manifest, market["collateral"], market["loan"])
        except KeyError:
            uniswap.add_pool(client, dex, manifest, prices, market["collateral"],
                             market["loan"])
    admin = client.accounts()[0]
    address = client.deploy(admin, uniswap.ours("MorphoLiquidator").deploy_data(
        blue["morpho"], uniswap.DEVNET_KEEPER, dex["factory"], uniswap.DEVNET_BENEFICIARY))
    blue["liquidator"] = {"address": address, "owner": uniswap.DEVNET_KEEPER,
                          "beneficiary": uniswap.DEVNET_BENEFICIARY}
    return {"morpho_blue": blue}
