"""Deploy Aave V3 v3.6 (POOL_REVISION 10, the newest published release) from its compiled
sources, shaped like Aave V3 Ethereum where keeperd's behaviour depends on it:

- price sources as Aave's oracle has them: WETH on a Chainlink-style aggregator, stablecoins
  behind price-cap adapters, WBTC behind a WBTC/BTC x BTC/USD adapter, wstETH behind a ratio
  adapter over ETH/USD — the adapters answer `latestAnswer()` only (contracts/AavePriceAdapters);
- eMode through the category bitmaps (v3.2+): "Stablecoins" and "ETH correlated", whose
  wstETH collateral has a zero threshold outside eMode (v3.6 counts it, with eMode's threshold);
- USDT as a token that returns nothing from transfer/approve and approves only from zero;
- a liquidation protocol fee of 10 % of the bonus and a 5 bps flash-loan premium, as on mainnet;
- after seeding, DAI frozen (`freeze_after_seeding`), as governance freezes reserves.
The deploy order and its pitfalls are the measured ones in ../shared/AAVE-V3.6-DEVNET.md.
"""

from __future__ import annotations

from typing import Any

from eth_abi import encode
from eth_utils import to_checksum_address

from keeperd.devnet import aave_origin, contracts
from keeperd.devnet.aave import (
    PRICE_DECIMALS,
    ZERO,
    EModeSpec,
    ReserveSpec,
    emode_entries,
    reserve_entries,
)
from keeperd.devnet.client import DevnetClient
from keeperd.devnet.contracts import Deployer
from keeperd.devnet.solc import compile_project_contracts

REVISION = 10

RESERVES: tuple[ReserveSpec, ...] = (
    ReserveSpec("WETH", 18, 3000.0, 8000, 8250, 10500, 1500, emode_category=2),
    ReserveSpec("WBTC", 8, 60000.0, 7300, 7800, 10500, 2000),
    ReserveSpec("USDC", 6, 1.0, 7500, 7800, 10450, 1000, emode_category=1),
    ReserveSpec("DAI", 18, 1.0, 6300, 7700, 10500, 1000),
    ReserveSpec("USDT", 6, 1.0, 7500, 7800, 10450, 1000, emode_category=1),
    # Collateral only inside eMode: zero LTV, threshold and bonus in the base configuration.
    ReserveSpec("wstETH", 18, 3600.0, 0, 0, 0, 1500, emode_category=2),
)
EMODES: tuple[EModeSpec, ...] = (
    EModeSpec(1, "Stablecoins", 9300, 9500, 10100),
    EModeSpec(2, "ETH correlated", 9300, 9500, 10100),
)
# category → (collateral symbols, borrowable symbols)
EMODE_ASSETS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    1: (("USDC", "USDT"), ("USDC", "DAI", "USDT")),
    2: (("wstETH", "WETH"), ("WETH",)),
}
TETHER_LIKE = frozenset({"USDT"})
FROZEN_AFTER_SEEDING = ("DAI",)
WSTETH_RATIO = 12 * 10**17  # 1 wstETH = 1.2 ETH
LIQUIDATION_PROTOCOL_FEE = 1000  # 10 % of the bonus, as on Aave V3 Ethereum
FLASHLOAN_PREMIUM = 5  # bps
STABLE_CAP = 104 * 10**6  # $1.04, 8 decimals
# interestRateData, bps: optimal usage, base, slope1, slope2
RATE_DATA = (8000, 0, 400, 6000)


def deploy_market(client: DevnetClient, *, market_id: str = "keeperd-devnet-v3.6"
                  ) -> dict[str, Any]:
    """Deploy the market; return the manifest's Aave part (addresses and reserve parameters)."""
    accounts = client.accounts()
    admin, treasury = accounts[0], accounts[9]
    ours = {n: contracts.from_compiled(n, c.abi, c.bytecode) for n, c in compile_project_contracts(
        ["TestAggregator.sol", "TetherLikeToken.sol", "AavePriceAdapters.sol"]).items()}
    art = aave_origin.artifact

    admin_deployer = Deployer(client, admin)
    deploy, call, read = admin_deployer.deploy, admin_deployer.call, admin_deployer.read

    # 1. Tokens, the aggregators keeperd's devnet moves, and the adapters Aave's oracle reads.
    tokens: dict[str, str] = {}
    for r in RESERVES:
        token_art = ours["TetherLikeToken"] if r.symbol in TETHER_LIKE else contracts.aave(
            "MintableERC20")
        tokens[r.symbol] = deploy(token_art, f"{r.symbol} (devnet)", r.symbol, r.decimals)
    aggregator = ours["TestAggregator"]

    def feed(description: str, usd: float) -> str:
        return deploy(aggregator, PRICE_DECIMALS, description, round(usd * 10**PRICE_DECIMALS))

    prices = {r.symbol: r.price_usd for r in RESERVES}
    eth_usd = feed("ETH / USD", prices["WETH"])
    btc_usd = feed("BTC / USD", prices["WBTC"])
    wbtc_btc = feed("WBTC / BTC", 1.0)
    feeds = {"WETH": eth_usd, "WBTC": btc_usd}
    sources = {"WETH": eth_usd}
    source_kinds = {"WETH": "chainlink"}
    for symbol in ("USDC", "DAI", "USDT"):
        feeds[symbol] = feed(f"{symbol} / USD", prices[symbol])
        sources[symbol] = deploy(ours["StableCapAdapter"], feeds[symbol], STABLE_CAP,
                                 f"Capped {symbol} / USD")
        source_kinds[symbol] = "price-cap-stable"
    sources["WBTC"] = deploy(ours["PegToBaseAdapter"], wbtc_btc, btc_usd, "WBTC / BTC / USD")
    source_kinds["WBTC"] = "peg-to-base"
    sources["wstETH"] = deploy(ours["RatioCapAdapter"], eth_usd, WSTETH_RATIO,
                               WSTETH_RATIO * 104 // 100, "Capped wstETH / stETH(ETH) / USD")
    source_kinds["wstETH"] = "price-cap-ratio"
    prices["wstETH"] = prices["WETH"] * WSTETH_RATIO / 10**18

    # 2. Addresses provider; the ACL admin before ACLManager (its constructor checks it).
    provider_art = art("PoolAddressesProvider")
    provider = deploy(provider_art, market_id, admin)
    call(provider, provider_art, "setACLAdmin", admin)
    acl_art = art("ACLManager")
    acl = deploy(acl_art, provider)
    call(provider, provider_art, "setACLManager", acl)
    for role in ("addPoolAdmin", "addEmergencyAdmin", "addRiskAdmin", "addAssetListingAdmin"):
        call(acl, acl_art, role, admin)

    # 3. One interest-rate strategy (an immutable of the Pool since v3.4), libraries, the Pool.
    strategy = deploy(art("DefaultReserveInterestRateStrategyV2"), provider)
    libraries: dict[str, str] = {}
    for lib in ("BorrowLogic", "SupplyLogic", "LiquidationLogic", "PoolLogic", "FlashLoanLogic"):
        libraries[lib] = deploy(art(lib), libraries=libraries)
    pool_impl = deploy(art("PoolInstance"), provider, strategy, libraries=libraries)
    call(provider, provider_art, "setPoolImpl", pool_impl)
    pool = to_checksum_address(read(provider, provider_art, "getPool")[0])
    configurator_logic = deploy(art("ConfiguratorLogic"))
    configurator_impl = deploy(art("PoolConfiguratorInstance"),
                               libraries={"ConfiguratorLogic": configurator_logic})
    call(provider, provider_art, "setPoolConfiguratorImpl", configurator_impl)
    configurator = to_checksum_address(read(provider, provider_art, "getPoolConfigurator")[0])

    # 4. Oracle and data provider.
    oracle = deploy(art("AaveOracle"), provider, [tokens[r.symbol] for r in RESERVES],
                    [sources[r.symbol] for r in RESERVES], ZERO, ZERO, 10**PRICE_DECIMALS)
    call(provider, provider_art, "setPriceOracle", oracle)
    data_provider = deploy(art("AaveProtocolDataProvider"), provider)
    call(provider, provider_art, "setPoolDataProvider", data_provider)

    # 5. Token implementations bound to the pool proxy (treasury is immutable in the aToken).
    a_token_impl = deploy(art("ATokenInstance"), pool, ZERO, treasury)
    variable_impl = deploy(art("VariableDebtTokenInstance"), pool, ZERO)
    cfg = art("PoolConfiguratorInstance")
    rate_data = encode(["(uint16,uint32,uint32,uint32)"], [RATE_DATA])
    call(configurator, cfg, "initReserves", [
        (a_token_impl, variable_impl, tokens[r.symbol], f"Aave devnet {r.symbol}",
         f"a{r.symbol}", f"Aave devnet variable debt {r.symbol}", f"variableDebt{r.symbol}",
         b"", rate_data)
        for r in RESERVES])
    for r in RESERVES:
        asset = tokens[r.symbol]
        if r.liquidation_threshold:
            call(configurator, cfg, "configureReserveAsCollateral", asset, r.ltv,
                 r.liquidation_threshold, r.liquidation_bonus)
            call(configurator, cfg, "setLiquidationProtocolFee", asset, LIQUIDATION_PROTOCOL_FEE)
        call(configurator, cfg, "setReserveBorrowing", asset, True)
        call(configurator, cfg, "setReserveFactor", asset, r.reserve_factor)
        call(configurator, cfg, "setReserveFlashLoaning", asset, True)
    call(configurator, cfg, "updateFlashloanPremium", FLASHLOAN_PREMIUM)

    # 6. eMode through the bitmaps.
    for e in EMODES:
        call(configurator, cfg, "setEModeCategory", e.category_id, e.ltv,
             e.liquidation_threshold, e.liquidation_bonus, e.label)
        collateral, borrowable = EMODE_ASSETS[e.category_id]
        for symbol in collateral:
            call(configurator, cfg, "setAssetCollateralInEMode", tokens[symbol], e.category_id,
                 True)
        for symbol in borrowable:
            call(configurator, cfg, "setAssetBorrowableInEMode", tokens[symbol], e.category_id,
                 True)

    pool_art = art("PoolInstance")
    reserve_tokens: dict[str, dict[str, str]] = {}
    for r in RESERVES:
        a_tok = read(pool, pool_art, "getReserveAToken", tokens[r.symbol])[0]
        var_tok = read(pool, pool_art, "getReserveVariableDebtToken", tokens[r.symbol])[0]
        reserve_tokens[r.symbol] = {"a_token": to_checksum_address(a_tok),
                                    "stable_debt_token": ZERO,
                                    "variable_debt_token": to_checksum_address(var_tok)}
    (revision,) = read(pool, pool_art, "POOL_REVISION")
    if revision != REVISION:
        raise RuntimeError(f"deployed Aave pool reports POOL_REVISION {revision}, "
                           f"expected {REVISION}")

    return {
        "tokens": tokens,
        "price_feeds": feeds,
        # Aggregators behind the adapters that no asset's price is set through, refreshed
        # with the others so that freshness read through the adapters stays current.
        "extra_feeds": {"WBTC/BTC": wbtc_btc},
        "prices_usd": prices,
        "aave_v3": {
            "revision": REVISION,
            "version": "v3.6",
            "addresses_provider": provider,
            "pool": pool,
            "pool_configurator": configurator,
            "oracle": oracle,
            "data_provider": data_provider,
            "acl_manager": acl,
            "admin": admin,
            "treasury": treasury,
            "oracle_sources": {s: {"source": sources[s], "kind": source_kinds[s]}
                               for s in sources},
            "tether_like": sorted(TETHER_LIKE),
            "frozen": list(FROZEN_AFTER_SEEDING),
            "reserves": reserve_entries(RESERVES, tokens, reserve_tokens),
            "emode_categories": emode_entries(EMODES, EMODE_ASSETS),
        },
    }


def freeze_after_seeding(client: DevnetClient, manifest: dict[str, Any]) -> None:
    """Freeze the reserves governance froze: positions stay, liquidations go on."""
    aave = manifest["aave_v3"]
    cfg = aave_origin.artifact("PoolConfiguratorInstance")
    for symbol in aave.get("frozen", ()):
        client.send(aave["admin"], aave["pool_configurator"],
                    cfg.encode_call("setReserveFreeze", manifest["tokens"][symbol], True))
