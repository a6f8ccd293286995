"""Issue #27 item 12: the MorphoLiquidator (Morpho Blue's liquidate callback, no capital)
cannot be turned against its holdings. Morpho's callback is taken only from Morpho and only
inside the contract's own liquidation; only the owner liquidates or moves the beneficiary;
the sale goes to the pool the contract derives (the Uniswap factory's CREATE2 address of the
pair and fee), paid once, in the token sold, at most what was seized; a sale below the
keeper's bound reverts; the profit lands at the beneficiary in the same transaction. On the
devnet's real Morpho Blue and Uniswap V3, with a misbehaving pool's code put at the real
pool's address, and the contract holding leftovers a thief would want."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from keeperd.chain.multicall import encode_call
from keeperd.config import KeeperConfig
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.devnet.morpho import compiled
from keeperd.devnet.uniswap import pool_between
from keeperd.protocols.morpho_blue import math as mm
from keeperd.protocols.morpho_blue.liquidator import MorphoLiquidator, callback_calldata
from keeperd.protocols.sdk.contract import StartRefused
from keeperd.protocols.sdk.swap import min_out_per_in, uniswap_v3_pool
from tests.integration.seller_conformance import (  # noqa: F401 - the shared suite
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
from tests.integration.test_morpho import drop_oracle
from tests.keeper_harness import KEEPER

pytestmark = pytest.mark.devnet

GAS = 3_000_000
LIQUIDATED_TOPIC = "0x" + keccak(
    text="Liquidated(address,bytes32,uint256,uint256,uint256)").hex()
STRANGER = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"  # anvil's account 7


@dataclass
class Scene(Holdings):
    devnet: Devnet
    contract: str
    beneficiary: str
    morpho: str
    params: tuple[str, str, str, str, int]  # WETH/USDC's MarketParams
    account: str  # underwater in WETH/USDC
    seize: int  # WETH units: a tenth of the account's collateral
    price: int  # the market oracle's, loan units per collateral unit x 1e36
    pool: str  # the real WETH/USDC pool: where the contract's derivation points
    token0: str
    token1: str

    def allowance_to_morpho(self, symbol: str) -> int:
        return int.from_bytes(self.devnet.client.eth_call(self.token(symbol), encode_call(
            "allowance(address,address)", ["address", "address"],
            [self.contract, self.morpho])), "big")

    @property
    def impostor_out(self) -> int:
        """Three times what the seizure is worth in USDC: plenty to repay Morpho."""
        return 3 * self.seize * self.price // mm.ORACLE_PRICE_SCALE

    def liquidate(self, min_profit: int = 1, min_out_per_in: int = 0) -> bytes:
        return callback_calldata(self.params, self.account, self.seize, 0,
                                 self.devnet.manifest["uniswap_v3"]["fee"], min_profit,
                                 min_out_per_in)


@pytest.fixture
def scene(devnet: Devnet) -> Scene:
    manifest, blue = devnet.manifest, devnet.manifest["morpho_blue"]
    market = blue["markets"]["WETH/USDC"]
    tokens = manifest["tokens"]
    params = (tokens["USDC"], tokens["WETH"], market["oracle"], market["irm"], market["lltv"])
    account = min((b for b in blue["borrowers"] if b["market"] == "WETH/USDC"),
                  key=lambda b: b["planned_health"])["address"]
    drop_oracle(devnet, "WETH/USDC", 0.88)  # planned health 1.01 -> 0.89
    morpho_art, oracle_art = compiled()["Morpho"], compiled()["OracleMock"]
    _, _, collateral = morpho_art.decode_result("position", devnet.client.eth_call(
        blue["morpho"], morpho_art.encode_call("position", bytes.fromhex(market["id"][2:]),
                                               account)))
    (price,) = oracle_art.decode_result("price", devnet.client.eth_call(
        market["oracle"], oracle_art.encode_call("price")))
    token0, token1 = sorted((tokens["WETH"], tokens["USDC"]), key=lambda a: int(a, 16))
    s = Scene(devnet, blue["liquidator"]["address"], blue["liquidator"]["beneficiary"],
              blue["morpho"], params, account, collateral // 10, price,
              pool_between(manifest, "WETH", "USDC"), token0, token1)
    erc20 = contracts.aave("MintableERC20")
    admin = devnet.client.accounts()[0]
    for symbol, amount in INVENTORY.items():
        devnet.client.send(admin, tokens[symbol], erc20.encode_call("mint", s.contract, amount))
    for who in (KEEPER, STRANGER):
        devnet.client.call("anvil_setBalance", who, hex(100 * 10**18))
    return s


def test_the_profit_lands_at_the_beneficiary_in_the_same_transaction(scene: Scene) -> None:
    before = scene.holdings()
    receipt = scene.devnet.client.send(KEEPER, scene.contract, scene.liquidate(), gas=GAS)
    [event] = [e for e in receipt["logs"] if e["address"].lower() == scene.contract.lower()
               and e["topics"][0] == LIQUIDATED_TOPIC]
    assert to_checksum_address("0x" + event["topics"][1][-40:]) == scene.account
    repaid, seized, profit = (int(event["data"][2 + 64 * i:2 + 64 * (i + 1)], 16)
                              for i in range(3))
    assert seized == scene.seize and repaid > 0 and profit > 0
    assert (to_checksum_address(scene.contract), to_checksum_address(scene.beneficiary),
            profit) in transfers(receipt, scene.token("USDC"))
    after = scene.holdings()
    assert after[("USDC", scene.beneficiary)] - before[("USDC", scene.beneficiary)] == profit
    for symbol in INVENTORY:  # nothing piles up in the contract, nothing of its own leaves
        assert after[(symbol, scene.contract)] == before[(symbol, scene.contract)]
    assert scene.allowance_to_morpho("USDC") == 0  # Morpho pulled exactly what it was let


def test_only_the_owner_liquidates_moves_the_beneficiary_or_withdraws(scene: Scene) -> None:
    before = scene.holdings()
    for data in (scene.liquidate(),
                 encode_call("setBeneficiary(address)", ["address"], [STRANGER]),
                 encode_call("withdraw(address,address,uint256)",
                             ["address", "address", "uint256"],
                             [scene.token("USDC"), STRANGER, 1])):
        assert selector("NotOwner()") in refused(scene, STRANGER, scene.contract, data)
    assert scene.holdings() == before
    scene.devnet.client.send(KEEPER, scene.contract, encode_call(
        "setBeneficiary(address)", ["address"], [STRANGER]))
    usdc = scene.balance("USDC", STRANGER)
    scene.devnet.client.send(KEEPER, scene.contract, scene.liquidate(), gas=GAS)
    assert scene.balance("USDC", STRANGER) > usdc


def callback(repaid: int, job: bytes) -> bytes:
    return encode_call("onMorphoLiquidate(uint256,bytes)", ["uint256", "bytes"], [repaid, job])


def test_the_callback_is_taken_only_from_morpho_inside_its_own_liquidation(
        scene: Scene) -> None:
    """Were the callback taken from anyone, or from Morpho outside the contract's own
    liquidation, it would approve Morpho for the contract's tokens (and sell its WETH): a
    job asking for that is refused from a stranger, and from Morpho itself."""
    job = abi_encode(["address", "address", "uint24", "uint256", "uint256"],
                     [scene.token("USDC"), scene.token("WETH"), 3000, 0, 0])
    before = scene.holdings()
    assert selector("NotMorpho()") in refused(scene, STRANGER, scene.contract,
                                              callback(10**6, job))
    scene.devnet.client.call("anvil_impersonateAccount", scene.morpho)
    scene.devnet.client.call("anvil_setBalance", scene.morpho, hex(10**18))
    try:
        assert selector("NoLiquidationInFlight()") in refused(
            scene, scene.morpho, scene.contract, callback(10**6, job))
    finally:
        scene.devnet.client.call("anvil_stopImpersonatingAccount", scene.morpho)
    assert scene.holdings() == before
    assert scene.allowance_to_morpho("USDC") == 0


@pytest.fixture
def seller(scene: Scene) -> Scene:
    return scene


def test_the_impostor_that_behaves_is_paid_what_it_asks(scene: Scene,
                                                        fake_pool: contracts.Artifact  # noqa: F811
                                                        ) -> None:
    """The control: the fake pool's own mechanics work with this contract, so the refusals
    above are the contract's doing; and the pool it paid is the derived one."""
    impostor(scene, fake_pool, HONEST)
    before = scene.holdings()
    scene.devnet.client.send(KEEPER, scene.contract, scene.liquidate(), gas=GAS)
    after = scene.holdings()
    assert after[("WETH", scene.contract)] == before[("WETH", scene.contract)]
    assert after[("WETH", scene.pool)] - before[("WETH", scene.pool)] == scene.seize
    factory = scene.devnet.manifest["uniswap_v3"]["factory"]
    assert scene.pool == uniswap_v3_pool(factory, scene.token("WETH"), scene.token("USDC"),
                                         scene.devnet.manifest["uniswap_v3"]["fee"])


def pool_rate(scene: Scene) -> int:
    """USDC units per WETH unit at the pool's current price, x 1e18."""
    sqrt_price = int.from_bytes(scene.devnet.client.eth_call(
        scene.pool, encode_call("slot0()", [], []))[:32], "big")
    num, den = sqrt_price**2, 2**192  # token1 per token0, raw units
    if scene.token0 != scene.token("WETH"):
        num, den = den, num
    return num * 10**18 // den


def test_a_sale_below_the_bound_or_a_profit_below_the_minimum_reverts(scene: Scene) -> None:
    """The bound is a rate (loan units per collateral unit, x 1e18): 1 % above the pool's own
    price no sale can pay; 1 % below it, a sale this small does. A minimum profit the sale
    cannot leave reverts too (NotEnoughProfit, which keeperd counts as unprofitable)."""
    rate = pool_rate(scene)
    before = scene.holdings()
    why = refused(scene, KEEPER, scene.contract, scene.liquidate(
        min_out_per_in=rate * 101 // 100))
    assert selector("SwapBelowBound(uint256,uint256)") in why, why
    worth = scene.seize * scene.price // mm.ORACLE_PRICE_SCALE  # USDC units
    why = refused(scene, KEEPER, scene.contract, scene.liquidate(min_profit=worth))
    assert selector("NotEnoughProfit(uint256,uint256)") in why, why
    assert scene.holdings() == before
    scene.devnet.client.send(KEEPER, scene.contract, scene.liquidate(
        min_out_per_in=rate * 99 // 100), gas=GAS)


def test_the_keepers_bound_is_the_oracle_rate_less_the_slippage_it_allowed_for() -> None:
    # Morpho's oracle: 2100 USDC (6 decimals) per WETH (18), scaled by 1e36.
    price = 2100 * 10**(36 + 6 - 18)
    assert min_out_per_in(price, mm.ORACLE_PRICE_SCALE, 50) == 2_089_500_000
    assert min_out_per_in(price, mm.ORACLE_PRICE_SCALE, 0) == 2_100_000_000
    assert min_out_per_in(price, mm.ORACLE_PRICE_SCALE, 10_000) == 0


async def refusal(devnet: Devnet, pool: Any, *, contract: str, factory: str,
                  keeper: str = KEEPER) -> str:
    blue = devnet.manifest["morpho_blue"]
    adapter: Any = SimpleNamespace(
        name="morpho", pool=pool,
        config=SimpleNamespace(morpho=blue["morpho"], liquidator_contract=contract))
    config = KeeperConfig(capital="flash-loan", flash_liquidator=contract,
                          uniswap_v3_factory=factory)
    with pytest.raises(StartRefused) as refused_:
        await MorphoLiquidator(adapter, config, keeper, None).prepare(0)
    return str(refused_.value)


async def test_keeperd_refuses_a_contract_it_cannot_trust(devnet: Devnet, pool: Any) -> None:
    """At start: another factory's seller, another contract (the Aave FlashLiquidator: no
    morpho()), another owner — each refused in one line naming the field."""
    blue, factory = devnet.manifest["morpho_blue"], devnet.manifest["uniswap_v3"]["factory"]
    ours = blue["liquidator"]["address"]
    field = "protocols[morpho].liquidator_contract"
    elsewhere = "0x1F98431c8aD98523631AE4a59f267346ea31F984"
    why = await refusal(devnet, pool, contract=ours, factory=elsewhere)
    assert "keeper.uniswap_v3_factory" in why and "sells on the pools of" in why
    why = await refusal(devnet, pool, contract=devnet.manifest["flash_liquidator"]["address"],
                        factory=factory)
    assert why.startswith(f"{field}: ") and "answers no morpho()" in why
    why = await refusal(devnet, pool, contract=ours, factory=factory, keeper=STRANGER)
    assert why.startswith(f"{field}: ") and "is owned by" in why
    # The control: the devnet's own contract, factory and keeper pass.
    adapter: Any = SimpleNamespace(
        name="morpho", pool=pool,
        config=SimpleNamespace(morpho=blue["morpho"], liquidator_contract=ours))
    await MorphoLiquidator(adapter, KeeperConfig(
        capital="flash-loan", flash_liquidator=ours, uniswap_v3_factory=factory),
        KEEPER, None).prepare(0)
    # With own capital the contract is not used, so not checked (a dry-run from any address).
    await MorphoLiquidator(adapter, KeeperConfig(uniswap_v3_factory=elsewhere), STRANGER,
                           None).prepare(0)
