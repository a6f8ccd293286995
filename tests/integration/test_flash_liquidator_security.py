"""Issue #28 item 3: the FlashLiquidator pays only the pool its own CREATE2 derivation names
(the factory's pool of the job's tokens and fee), once per swap, in the token the swap sells
and no more than was seized; the profit goes to the beneficiary in the same transaction; a
swap below the keeper's bound reverts. On the devnet's real Aave and Uniswap V3, with a fake
pool whose code is put at the real pool's address (where the derivation points) to misbehave,
and the contract holding leftovers a thief would want."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from eth_utils import keccak, to_checksum_address

from keeperd.chain.multicall import encode_call
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.devnet.uniswap import pool_between
from keeperd.protocols.aave_v3.liquidator import flash_calldata, swap_min_out_per_in
from tests.integration.seller_conformance import (  # noqa: F401 - the shared suite
    GAS,
    HONEST,
    INVENTORY,
    Holdings,
    fake_pool,
    impostor,
    refused,
    selector,
    test_a_callback_outside_a_swap_pays_nothing,
    test_a_pool_that_misbehaves_in_the_swap_is_paid_nothing,
    transfers,
)
from tests.keeper_harness import (
    KEEPER,
    chain_health,
)

pytestmark = pytest.mark.devnet

LIQUIDATED_TOPIC = "0x" + keccak(
    text="Liquidated(address,address,address,uint256,uint256,uint256)").hex()



@dataclass
class Scene(Holdings):
    devnet: Devnet
    flash: str
    beneficiary: str
    account: str
    to_cover: int  # USDC units: a quarter of the account's debt
    pool: str  # the real WETH/USDC pool: where the contract's derivation points
    token0: str
    token1: str

    @property
    def contract(self) -> str:
        return self.flash

    @property
    def impostor_out(self) -> int:
        return 3 * self.to_cover  # (USDC: plenty for the profit check)

    def liquidate(self, min_profit: int = 1, min_out_per_in: int = 0) -> bytes:
        return flash_calldata(self.token("WETH"), self.token("USDC"), self.account,
                              self.to_cover, self.devnet.manifest["uniswap_v3"]["fee"],
                              min_profit, min_out_per_in)


@pytest.fixture
def scene(devnet: Devnet) -> Scene:
    manifest = devnet.manifest
    devnet.set_price("WETH", 2100.0)
    account = next(b["address"] for b in manifest["borrowers"]
                   if b["collateral"] == ["WETH"] and b["debts"] == ["USDC"]
                   and chain_health(devnet, b["address"]) < 1.0)
    to_cover = int(devnet.account_data(account)[1] / 1e8 * 0.25 * 1e6)
    tokens = manifest["tokens"]
    token0, token1 = sorted((tokens["WETH"], tokens["USDC"]), key=lambda a: int(a, 16))
    s = Scene(devnet, manifest["flash_liquidator"]["address"],
              manifest["flash_liquidator"]["beneficiary"], account, to_cover,
              pool_between(manifest, "WETH", "USDC"), token0, token1)
    erc20 = contracts.aave("MintableERC20")
    admin = devnet.client.accounts()[0]
    for symbol, amount in INVENTORY.items():
        devnet.client.send(admin, tokens[symbol], erc20.encode_call("mint", s.flash, amount))
    devnet.client.call("anvil_setBalance", KEEPER, hex(100 * 10**18))
    return s


@pytest.fixture
def seller(scene: Scene) -> Scene:
    return scene


def test_the_impostor_that_behaves_is_paid_what_it_asks(scene: Scene,
                                                        fake_pool: contracts.Artifact  # noqa: F811
                                                        ) -> None:
    """The control: the fake pool's own mechanics work, so the refusals above are the
    contract's doing."""
    impostor(scene, fake_pool, HONEST)
    before = scene.holdings()
    scene.devnet.client.send(KEEPER, scene.flash, scene.liquidate(), gas=GAS)
    assert scene.holdings()[("WETH", scene.flash)] == before[("WETH", scene.flash)]
    assert scene.holdings()[("WETH", scene.pool)] > before[("WETH", scene.pool)]


def test_the_profit_lands_at_the_beneficiary_in_the_same_transaction(scene: Scene) -> None:
    before = scene.holdings()
    receipt = scene.devnet.client.send(KEEPER, scene.flash, scene.liquidate(), gas=GAS)
    [event] = [e for e in receipt["logs"] if e["address"].lower() == scene.flash.lower()
               and e["topics"][0] == LIQUIDATED_TOPIC]
    profit = int(event["data"][2 + 128:2 + 192], 16)
    assert profit > 0
    assert (to_checksum_address(scene.flash), to_checksum_address(scene.beneficiary),
            profit) in transfers(receipt, scene.token("USDC"))
    after = scene.holdings()
    assert after[("USDC", scene.beneficiary)] - before[("USDC", scene.beneficiary)] == profit
    for symbol in INVENTORY:  # nothing piles up in the contract, nothing of its own leaves
        assert after[(symbol, scene.flash)] == before[(symbol, scene.flash)]
    # Nor does an allowance outlive it: the pool was approved exactly what it pulled (it was
    # left the unused part of 2 x the loan + premium before the review of this session).
    erc20 = contracts.aave("MintableERC20")
    for symbol in INVENTORY:
        left = erc20.decode_result("allowance", scene.devnet.client.eth_call(
            scene.token(symbol), erc20.encode_call(
                "allowance", scene.flash, scene.devnet.manifest["aave_v3"]["pool"])))[0]
        assert left == 0, symbol


def test_only_the_owner_moves_the_beneficiary(scene: Scene) -> None:
    flash = contracts.from_compiled("FlashLiquidator", [
        {"type": "function", "name": "setBeneficiary", "stateMutability": "nonpayable",
         "inputs": [{"name": "b", "type": "address"}], "outputs": []}], "0x")
    elsewhere = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"  # anvil's account 7
    stranger = scene.devnet.client.accounts()[0]
    assert selector("NotOwner()") in refused(scene, stranger, scene.flash, flash.encode_call(
        "setBeneficiary", stranger))
    assert selector("ZeroBeneficiary()") in refused(
        scene, KEEPER, scene.flash, flash.encode_call("setBeneficiary", "0x" + "00" * 20))
    scene.devnet.client.send(KEEPER, scene.flash, flash.encode_call("setBeneficiary",
                                                                    elsewhere))
    usdc = scene.balance("USDC", elsewhere)
    scene.devnet.client.send(KEEPER, scene.flash, scene.liquidate(), gas=GAS)
    assert scene.balance("USDC", elsewhere) > usdc


def test_a_swap_below_the_bound_reverts(scene: Scene) -> None:
    """The bound is a rate (debt-asset units per collateral unit, x 1e18): 1 % above the
    pool's own price no swap can pay; 1 % below it, a sale this small does."""
    sqrt_price = int.from_bytes(scene.devnet.client.eth_call(
        scene.pool, encode_call("slot0()", [], []))[:32], "big")
    token1_per_token0 = (sqrt_price**2, 2**192)  # raw units, as a fraction
    num, den = token1_per_token0 if scene.token0 == scene.token("WETH") \
        else token1_per_token0[::-1]
    usdc_per_weth = num * 10**18 // den
    before = scene.holdings()
    why = refused(scene, KEEPER, scene.flash, scene.liquidate(
        min_out_per_in=usdc_per_weth * 101 // 100))
    assert selector("SwapBelowBound(uint256,uint256)") in why, why
    assert scene.holdings() == before
    scene.devnet.client.send(KEEPER, scene.flash, scene.liquidate(
        min_out_per_in=usdc_per_weth * 99 // 100), gas=GAS)


def test_the_keepers_bound_is_the_oracle_rate_less_the_slippage_it_allowed_for() -> None:
    market: Any = SimpleNamespace(
        prices=(2100 * 10**8, 10**8, 60_000 * 10**8),
        reserves=(SimpleNamespace(decimals=18), SimpleNamespace(decimals=6),
                  SimpleNamespace(decimals=8)))
    # 1 WETH (1e18 units) for 2100 USDC less 0.5 %: 2089.5e6 units, x 1e18 per 1e18.
    assert swap_min_out_per_in(market, 0, 1, 50) == 2_089_500_000
    assert swap_min_out_per_in(market, 2, 1, 0) == 600 * 10**18  # 1e-8 WBTC: 600e-6 USDC
    assert swap_min_out_per_in(market, 1, 0, 10_000) == 0
