"""Deploy a real Aave V3 market from the compiled artifacts of the pinned @aave/core-v3.

The sequence follows Aave's own deployment (PoolAddressesProvider → libraries → Pool proxy →
PoolConfigurator → ACL → oracle → reserves) and the measured notes in docs/architecture.md.
Prices come from our Chainlink-style `TestAggregator` (contracts/), which AaveOracle reads
through `latestAnswer()` like any Chainlink feed, and which, unlike Aave's MockAggregator, can
be updated and answers `latestRoundData`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from keeperd.devnet import contracts
from keeperd.devnet.client import DevnetClient
from keeperd.devnet.contracts import Artifact, Deployer
from keeperd.devnet.solc import compile_project_contracts

RAY = 10**27
ZERO = "0x0000000000000000000000000000000000000000"
MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
PRICE_DECIMALS = 8

# Pool libraries in link order: FlashLoanLogic links BorrowLogic, so it comes last.
POOL_LIBRARIES = ("SupplyLogic", "BorrowLogic", "LiquidationLogic", "EModeLogic",
                  "BridgeLogic", "PoolLogic", "FlashLoanLogic")


@dataclass(frozen=True)
class ReserveSpec:
    symbol: str
    decimals: int
    price_usd: float
    ltv: int  # basis points
    liquidation_threshold: int
    liquidation_bonus: int  # 10500 = 5 % bonus
    reserve_factor: int
    emode_category: int = 0


@dataclass(frozen=True)
class EModeSpec:
    category_id: int
    label: str
    ltv: int
    liquidation_threshold: int
    liquidation_bonus: int


# Risk parameters in the range of Aave V3 Ethereum's (LTV / threshold / bonus).
DEFAULT_RESERVES: tuple[ReserveSpec, ...] = (
    ReserveSpec("WETH", 18, 3000.0, 8000, 8250, 10500, 1500),
    ReserveSpec("WBTC", 8, 60000.0, 7300, 7800, 10500, 2000),
    ReserveSpec("USDC", 6, 1.0, 7700, 8000, 10450, 1000, emode_category=1),
    ReserveSpec("DAI", 18, 1.0, 6300, 7700, 10500, 1000, emode_category=1),
)
DEFAULT_EMODES: tuple[EModeSpec, ...] = (EModeSpec(1, "Stablecoins", 9300, 9500, 10100),)


def _solidity_artifacts() -> dict[str, Artifact]:
    compiled = compile_project_contracts(["Multicall3.sol", "TestAggregator.sol"])
    return {n: contracts.from_compiled(n, c.abi, c.bytecode) for n, c in compiled.items()}


def install_multicall3(client: DevnetClient) -> str:
    """Put a Multicall3-compatible contract at the canonical address (anvil has none)."""
    compiled = compile_project_contracts(["Multicall3.sol"])["Multicall3"]
    client.call("anvil_setCode", MULTICALL3, compiled.deployed_bytecode)
    return to_checksum_address(MULTICALL3)


def deploy_market(
    client: DevnetClient,
    *,
    reserves: tuple[ReserveSpec, ...] = DEFAULT_RESERVES,
    emodes: tuple[EModeSpec, ...] = DEFAULT_EMODES,
    market_id: str = "keeperd-devnet",
) -> dict[str, Any]:
    """Deploy the market; return the manifest's Aave part (addresses and reserve parameters)."""
    accounts = client.accounts()
    admin, treasury = accounts[0], accounts[9]
    ours = _solidity_artifacts()
    aave = contracts.aave

    admin_deployer = Deployer(client, admin)
    deploy, call, read = admin_deployer.deploy, admin_deployer.call, admin_deployer.read

    # 1. Tokens and price feeds.
    tokens: dict[str, str] = {}
    feeds: dict[str, str] = {}
    for r in reserves:
        tokens[r.symbol] = deploy(aave("MintableERC20"), f"{r.symbol} (devnet)", r.symbol,
                                  r.decimals)
        feeds[r.symbol] = deploy(ours["TestAggregator"], PRICE_DECIMALS, f"{r.symbol} / USD",
                                 round(r.price_usd * 10**PRICE_DECIMALS))

    # 2. Addresses provider and data provider.
    provider_art = aave("PoolAddressesProvider")
    provider = deploy(provider_art, market_id, admin)
    data_provider = deploy(aave("AaveProtocolDataProvider"), provider)
    call(provider, provider_art, "setPoolDataProvider", data_provider)

    # 3. Libraries, then the Pool implementation linked to them; the provider makes the proxy.
    libraries: dict[str, str] = {}
    for lib in POOL_LIBRARIES:
        libraries[lib] = deploy(aave(lib), libraries=libraries)
    pool_impl = deploy(aave("Pool"), provider, libraries=libraries)
    call(provider, provider_art, "setPoolImpl", pool_impl)
    pool = to_checksum_address(read(provider, provider_art, "getPool")[0])

    # 4. Configurator (stores getPool() when initialised, so after the pool).
    configurator_logic = deploy(aave("ConfiguratorLogic"))
    configurator_impl = deploy(aave("PoolConfigurator"),
                               libraries={"ConfiguratorLogic": configurator_logic})
    call(provider, provider_art, "setPoolConfiguratorImpl", configurator_impl)
    configurator = to_checksum_address(read(provider, provider_art, "getPoolConfigurator")[0])

    # 5. ACL: the ACL admin must be set before ACLManager's constructor runs.
    call(provider, provider_art, "setACLAdmin", admin)
    acl_art = aave("ACLManager")
    acl = deploy(acl_art, provider)
    call(provider, provider_art, "setACLManager", acl)
    for role in ("addPoolAdmin", "addEmergencyAdmin", "addRiskAdmin", "addAssetListingAdmin"):
        call(acl, acl_art, role, admin)

    # 6. Oracle in USD with 8 decimals, like Aave V3 Ethereum.
    oracle = deploy(aave("AaveOracle"), provider, [tokens[r.symbol] for r in reserves],
                    [feeds[r.symbol] for r in reserves], ZERO, ZERO, 10**PRICE_DECIMALS)
    call(provider, provider_art, "setPriceOracle", oracle)

    # 7. Token implementations (bound to the pool proxy) and one interest-rate strategy.
    a_token_impl = deploy(aave("AToken"), pool)
    stable_impl = deploy(aave("StableDebtToken"), pool)
    variable_impl = deploy(aave("VariableDebtToken"), pool)
    strategy = deploy(aave("DefaultReserveInterestRateStrategy"), provider,
                      RAY * 80 // 100, 0, RAY * 4 // 100, RAY * 75 // 100,
                      0, 0, 0, 0, RAY * 20 // 100)

    # 8. Reserves.
    cfg = aave("PoolConfigurator")
    inputs = [
        (a_token_impl, stable_impl, variable_impl, r.decimals, strategy, tokens[r.symbol],
         treasury, ZERO, f"Aave devnet {r.symbol}", f"a{r.symbol}",
         f"Aave devnet variable debt {r.symbol}", f"variableDebt{r.symbol}",
         f"Aave devnet stable debt {r.symbol}", f"stableDebt{r.symbol}", b"")
        for r in reserves
    ]
    call(configurator, cfg, "initReserves", inputs)
    for r in reserves:
        asset = tokens[r.symbol]
        call(configurator, cfg, "configureReserveAsCollateral", asset, r.ltv,
             r.liquidation_threshold, r.liquidation_bonus)
        call(configurator, cfg, "setReserveBorrowing", asset, True)
        call(configurator, cfg, "setReserveFactor", asset, r.reserve_factor)
        call(configurator, cfg, "setReserveFlashLoaning", asset, True)
    for e in emodes:
        call(configurator, cfg, "setEModeCategory", e.category_id, e.ltv,
             e.liquidation_threshold, e.liquidation_bonus, ZERO, e.label)
    for r in reserves:
        if r.emode_category:
            call(configurator, cfg, "setAssetEModeCategory", tokens[r.symbol], r.emode_category)

    dp_art = aave("AaveProtocolDataProvider")
    reserve_tokens: dict[str, dict[str, str]] = {}
    for r in reserves:
        a_tok, stable_tok, var_tok = read(data_provider, dp_art, "getReserveTokensAddresses",
                                          tokens[r.symbol])
        reserve_tokens[r.symbol] = {"a_token": to_checksum_address(a_tok),
                                    "stable_debt_token": to_checksum_address(stable_tok),
                                    "variable_debt_token": to_checksum_address(var_tok)}

    return {
        "tokens": tokens,
        "price_feeds": feeds,
        "aave_v3": {
            "addresses_provider": provider,
            "pool": pool,
            "pool_configurator": configurator,
            "oracle": oracle,
            "data_provider": data_provider,
            "acl_manager": acl,
            "admin": admin,
            "treasury": treasury,
            "reserves": reserve_entries(reserves, tokens, reserve_tokens),
            "emode_categories": emode_entries(emodes),
        },
    }


def reserve_entries(reserves: tuple[ReserveSpec, ...], tokens: dict[str, str],
                    reserve_tokens: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    """The manifest's `aave_v3.reserves`: what seeding, tests and the demo read."""
    return {r.symbol: {"asset": tokens[r.symbol], "decimals": r.decimals, "ltv": r.ltv,
                       "liquidation_threshold": r.liquidation_threshold,
                       "liquidation_bonus": r.liquidation_bonus,
                       "emode_category": r.emode_category, **reserve_tokens[r.symbol]}
            for r in reserves}


def emode_entries(emodes: tuple[EModeSpec, ...],
                  assets: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """The manifest's `aave_v3.emode_categories` (with their collateral and borrowable
    symbols where the category is configured through bitmaps)."""
    out: dict[str, dict[str, Any]] = {}
    for e in emodes:
        entry: dict[str, Any] = {"label": e.label, "ltv": e.ltv,
                                 "liquidation_threshold": e.liquidation_threshold,
                                 "liquidation_bonus": e.liquidation_bonus}
        if assets is not None:
            collateral, borrowable = assets[e.category_id]
            entry.update(collateral=list(collateral), borrowable=list(borrowable))
        out[str(e.category_id)] = entry
    return out
