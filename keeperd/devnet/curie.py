"""Perpetual Protocol v2 ("Curie") on the devnet, from the compiled artifacts of the pinned
`@perp/curie-contract` 2.8.4 and `@perp/perp-oracle-contract` 0.6.8 (vendored by `make setup`,
see npm-packs.json).

What is deployed (the order and every set-up call measured in ../shared/CURIE-DEVNET.md):
- an index per market that follows the devnet's own price feed of the asset: the feed's
  aggregator -> ChainlinkPriceFeedV3 (900 s TWAP cache) -> PriceFeedDispatcher -> BaseToken;
- vUSD (QuoteToken) and a base token per market (vETH for WETH, vBTC for WBTC), each deployed
  until its address sorts below vUSD's (Curie's pools need base = token0);
- their 0.3 % pools on the devnet's own Uniswap V3 factory, observation cardinality 1000 (the
  mark price reads 15 s, 15 min and 30 min pool TWAPs);
- ClearingHouseConfig (10 % initial, 6.25 % maintenance margin, 2.5 % liquidation penalty),
  MarketRegistry, OrderBook, AccountBalance, Exchange (max 1000 ticks a block), InsuranceFund
  (funded), Vault with the devnet's USDC as settlement token, ClearingHouse, all wired;
- a CollateralManager with the devnet's WETH as non-settlement collateral (80 % of its value
  counts, priced by the WETH market's own feed through the vault's 15-minute TWAP), so a WETH
  crash reaches a trader through the collateral as well as the position;
- a maker with deep liquidity around the index in both markets; an arbitrageur with a large
  margin that walks a market's mark to a new index (`walk_mark`); and a seeded, deterministic
  set of cross-margined traders, long and short, at leverages of 1.5x to 8x, a quarter of
  them with part of their margin in WETH.

Every account trades through ClearingHouse from USDC deposited in the Vault, as on mainnet.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from keeperd.chain.multicall import encode_call
from keeperd.devnet import contracts, paths
from keeperd.devnet.client import DevnetClient
from keeperd.devnet.contracts import Artifact, Deployer

FEE = 3000
TICK_SPACING = 60
CARDINALITY = 1000
MAX_TICK_CROSSED = 1000  # 0 pauses the market (EX_MIP)
MAX_UINT = 2**256 - 1
DEADLINE = 2**255
# The markets: the devnet asset whose feed is the index -> the base token's symbol.
MARKETS = {"WETH": "vETH", "WBTC": "vBTC"}
DEFAULT_TRADERS = 200
# Maker liquidity per market, USD on each side, in a band around the index.
MAKER_DEPTH_USD = 40_000_000.0
MAKER_BAND = 0.5  # ticks from price x 0.5 to price x 1.5
# ... and a thinner band far beyond it (price / 20 to price x 20), as Curie's pools on Optimism
# have liquidity well past the price: with the band alone, a few large moves took the price
# where no liquidity was, and every later swap, the keeper's own unwind included, reverted
# with CH_F0S (a swap within a region with no liquidity; a by-hand trial), in either direction.
MAKER_BACKSTOP_USD = 10_000_000.0
MAKER_BACKSTOP_RANGE = 20.0
ARB_MARGIN_USD = 50_000_000.0
INSURANCE_FUND_USD = 5_000_000.0
# Trades of one block: enough to seed quickly, few enough that a block's net flow stays far
# inside the 1000-tick limit; blocks 20 s apart (one pool observation each).
TRADES_PER_BLOCK = 40
BLOCK_GAP_S = 20
OPEN_GAS = 3_000_000
# A move of the mark is walked in steps under ~10 % (the tick limit is relative to the tick
# 15 s before), each followed by 16 s of chain time.
STEP = 0.09
SETTLE_S = 16
# Non-settlement collateral (CollateralManager.addCollateral): token -> (collateral ratio,
# discount ratio of a collateral liquidation), parts per million. The manager's own settings:
# at most 3 collateral tokens an account; collateral liquidation once USDC debt passes 80 % of
# the collateral's value or $10,000; half of it at a time; a 0.5 % buffer over the maintenance
# ratio; 3 % of it to the insurance fund; $500 of collateral counted as dust.
COLLATERALS = {"WETH": (800_000, 100_000)}
COLLATERAL_MANAGER_SETTINGS = (3, 800_000, 500_000, 5_000, 30_000, 10_000 * 10**6,
                               500 * 10**6)
COLLATERAL_DEPOSIT_CAP = 10**30


def _root(package: str) -> Path:
    root = paths.project_root() / "vendor" / "npm" / package
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is missing: run `make setup` (npm-packs.json)")
    return root


@cache
def artifact(name: str) -> Artifact:
    """A contract of @perp/curie-contract, or of @perp/perp-oracle-contract."""
    for package in ("@perp/curie-contract", "@perp/perp-oracle-contract"):
        path = _root(package) / "artifacts" / "contracts" / f"{name}.sol" / f"{name}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            return Artifact(name, data["abi"], data["bytecode"], data.get("linkReferences", {}))
    raise KeyError(f"no Perp artifact named {name}")


def source_fingerprint() -> bytes:
    """What the deployment depends on besides this file: the vendored packages' integrity."""
    return (paths.project_root() / "npm-packs.json").read_bytes()


def trader_address(seed: int, index: int) -> str:
    return to_checksum_address(f"0xc0c0{seed:04x}{index:032x}")


def sqrt_price_x96(price: float) -> int:
    """vUSD per base token, both 18 decimals: what the pool's sqrtPriceX96 encodes."""
    return int(math.sqrt(price) * 2**96)


def tick_at(price: float) -> int:
    return math.floor(math.log(price) / math.log(1.0001) / TICK_SPACING) * TICK_SPACING


@dataclass(frozen=True)
class TraderPlan:
    address: str
    collateral_usd: float  # margin deposited, USD at the prices of the seeding
    positions: tuple[tuple[str, float], ...]  # (asset symbol, signed notional in USD)
    weth_share: float = 0.0  # of collateral_usd deposited as WETH instead of USDC

    @property
    def leverage(self) -> float:
        return sum(abs(n) for _, n in self.positions) / self.collateral_usd


def plan_traders(count: int, seed: int) -> list[TraderPlan]:
    """Deterministic traders: collateral $2k-$60k; 60 % trade ETH only, 25 % BTC only, 15 %
    both (cross margin); 55 % of positions long; leverage 1.5x-8x (Curie allows 10x)."""
    rng = random.Random(f"curie-{seed}")
    plans = []
    for i in range(count):
        collateral = round(math.exp(rng.uniform(math.log(2_000), math.log(60_000))), 2)
        leverage = rng.uniform(1.5, 8.0)
        r = rng.random()
        assets = ["WETH"] if r < 0.6 else ["WBTC"] if r < 0.85 else ["WETH", "WBTC"]
        weights = [1.0] if len(assets) == 1 else [w := rng.uniform(0.3, 0.7), 1 - w]
        positions = tuple((a, round(collateral * leverage * w, 2)
                           * (1 if rng.random() < 0.55 else -1))
                          for a, w in zip(assets, weights, strict=True))
        plans.append(TraderPlan(trader_address(seed, i), collateral, positions))
    # A quarter of the traders keep 30-70 % of their margin in WETH (its own stream of
    # draws, so the positions above do not depend on it). Only 80 % of it counts, so their
    # positions shrink by the same factor: the leverage on what counts stays within 8x.
    rng = random.Random(f"curie-collateral-{seed}")
    out = []
    for p in plans:
        if rng.random() >= 0.25:
            out.append(p)
            continue
        share = round(rng.uniform(0.3, 0.7), 4)
        counted = 1 - share * (1 - COLLATERALS["WETH"][0] / 1e6)
        out.append(TraderPlan(p.address, p.collateral_usd,
                              tuple((a, round(n * counted, 2)) for a, n in p.positions),
                              share))
    return out


def open_position_call(base: str, notional_usd: float) -> bytes:
    """A taker trade of `notional_usd` (signed: + long, - short) in quote terms: a long spends
    exactly that many vUSD, a short receives exactly that many."""
    amount = int(abs(notional_usd) * 10**18)
    long = notional_usd > 0
    return artifact("ClearingHouse").encode_call(
        "openPosition", (base, not long, long, amount, 0, DEADLINE, 0, b"\0" * 32))


def deploy_curie(client: DevnetClient, manifest: dict[str, Any], prices: dict[str, float],
                 *, seed_value: int = 1, traders: int = DEFAULT_TRADERS) -> dict[str, Any]:
    accounts = client.accounts()
    admin = accounts[0]
    d = Deployer(client, admin)
    token_art = contracts.aave("MintableERC20")
    usdc = manifest["tokens"]["USDC"]
    factory = manifest["uniswap_v3"]["factory"]
    factory_art = _uniswap("UniswapV3Factory")
    pool_art = _uniswap("UniswapV3Pool")

    config = d.deploy(artifact("ClearingHouseConfig"))
    d.call(config, artifact("ClearingHouseConfig"), "initialize")
    d.call(config, artifact("ClearingHouseConfig"), "setSettlementTokenBalanceCap", 10**30)
    quote_art, base_art = artifact("QuoteToken"), artifact("BaseToken")
    quote = d.deploy(quote_art)
    d.call(quote, quote_art, "initialize", "vUSD", "vUSD")

    feeds: dict[str, dict[str, str]] = {}
    bases: dict[str, str] = {}
    pools: dict[str, str] = {}
    for symbol, name in MARKETS.items():
        aggregator = manifest["price_feeds"][symbol]
        cpf = d.deploy(artifact("ChainlinkPriceFeedV3"), aggregator, 86_400, 900)
        dispatcher = d.deploy(artifact("PriceFeedDispatcher"), cpf)
        while True:  # base must sort below quote; CREATE addresses depend on the nonce only
            base = d.deploy(base_art)
            if int(base, 16) < int(quote, 16):
                break
        d.call(base, base_art, "initialize", name, name, dispatcher)
        d.call(factory, factory_art, "createPool", base, quote, FEE)
        (pool,) = d.read(factory, factory_art, "getPool", base, quote, FEE)
        pool = to_checksum_address(pool)
        d.call(pool, pool_art, "initialize", sqrt_price_x96(prices[symbol]))
        client.send(admin, pool, pool_art.encode_call("increaseObservationCardinalityNext",
                                                      CARDINALITY), gas=30_000_000)
        feeds[symbol] = {"aggregator": aggregator, "chainlink_v3": cpf,
                         "dispatcher": dispatcher}
        bases[symbol], pools[symbol] = base, pool

    registry = d.deploy(artifact("MarketRegistry"))
    d.call(registry, artifact("MarketRegistry"), "initialize", factory, quote)
    order_book = d.deploy(artifact("OrderBook"))
    d.call(order_book, artifact("OrderBook"), "initialize", registry)
    balance = d.deploy(artifact("AccountBalance"))
    d.call(balance, artifact("AccountBalance"), "initialize", config, order_book)
    exchange = d.deploy(artifact("Exchange"))
    d.call(exchange, artifact("Exchange"), "initialize", registry, order_book, config)
    fund = d.deploy(artifact("InsuranceFund"))
    d.call(fund, artifact("InsuranceFund"), "initialize", usdc)
    vault = d.deploy(artifact("Vault"))
    d.call(vault, artifact("Vault"), "initialize", fund, config, balance, exchange)
    ch_art = artifact("ClearingHouse")
    ch = d.deploy(ch_art)
    d.call(ch, ch_art, "initialize", config, vault, quote, factory, exchange, balance, fund)
    cm_art = artifact("CollateralManager")
    collateral_manager = d.deploy(cm_art)
    d.call(collateral_manager, cm_art, "initialize", config, vault,
           *COLLATERAL_MANAGER_SETTINGS)
    collaterals = {}
    for symbol, (ratio, discount) in COLLATERALS.items():
        token = manifest["tokens"][symbol]
        d.call(collateral_manager, cm_art, "addCollateral", token,
               (feeds[symbol]["dispatcher"], ratio, discount, COLLATERAL_DEPOSIT_CAP))
        collaterals[symbol] = token
    for target, name, fn, arg in (
            (order_book, "OrderBook", "setExchange", exchange),
            (order_book, "OrderBook", "setClearingHouse", ch),
            (exchange, "Exchange", "setAccountBalance", balance),
            (exchange, "Exchange", "setClearingHouse", ch),
            (balance, "AccountBalance", "setVault", vault),
            (balance, "AccountBalance", "setClearingHouse", ch),
            (registry, "MarketRegistry", "setClearingHouse", ch),
            (vault, "Vault", "setClearingHouse", ch),
            (vault, "Vault", "setCollateralManager", collateral_manager),
            (fund, "InsuranceFund", "setVault", vault)):
        d.call(target, artifact(name), fn, arg)
    d.call(quote, quote_art, "mintMaximumTo", ch)
    d.call(quote, quote_art, "addWhitelist", ch)
    for symbol, base in bases.items():
        d.call(base, base_art, "mintMaximumTo", ch)
        d.call(base, base_art, "addWhitelist", ch)
        d.call(base, base_art, "addWhitelist", pools[symbol])
        d.call(quote, quote_art, "addWhitelist", pools[symbol])
        d.call(registry, artifact("MarketRegistry"), "addPool", base, FEE)
        d.call(registry, artifact("MarketRegistry"), "setFeeRatio", base, 1000)  # 0.1 %
        d.call(registry, artifact("MarketRegistry"), "setInsuranceFundFeeRatio", base, 100_000)
        d.call(exchange, artifact("Exchange"), "setMaxTickCrossedWithinBlock", base,
               MAX_TICK_CROSSED)
    # Bad debt is paid from the fund: give it capacity.
    d.call(usdc, token_art, "mint", int(INSURANCE_FUND_USD * 10**6))
    client.send(admin, usdc, token_art.encode_call("transfer", fund,
                                                   int(INSURANCE_FUND_USD * 10**6)))
    # The pools' 30-minute TWAP needs 30 minutes of history before anything can trade.
    client.increase_time(1_900)
    client.mine(1)
    for symbol in MARKETS:
        d.call(feeds[symbol]["chainlink_v3"], artifact("ChainlinkPriceFeedV3"), "update")

    maker, arbitrageur = accounts[6], accounts[7]
    for account, usd in ((maker, (MAKER_DEPTH_USD + MAKER_BACKSTOP_USD) * len(MARKETS)),
                         (arbitrageur, ARB_MARGIN_USD)):
        deposit(client, account, usdc, vault, usd)
    for symbol, base in bases.items():
        price = prices[symbol]
        for depth, lower, upper in (
                (MAKER_DEPTH_USD, price * (1 - MAKER_BAND), price * (1 + MAKER_BAND)),
                (MAKER_BACKSTOP_USD, price / MAKER_BACKSTOP_RANGE,
                 price * MAKER_BACKSTOP_RANGE)):
            client.send(maker, ch, ch_art.encode_call("addLiquidity", (
                base, int(depth / price * 10**18), int(depth * 10**18), tick_at(lower),
                tick_at(upper), 0, 0, False, DEADLINE)), gas=OPEN_GAS)

    plans = plan_traders(traders, seed_value)
    _seed_traders(client, plans, usdc, vault, ch, bases, collaterals["WETH"], prices["WETH"])
    client.increase_time(SETTLE_S)
    client.mine(1)
    return {
        "perp_curie": {
            "clearing_house": ch, "vault": vault, "account_balance": balance,
            "exchange": exchange, "insurance_fund": fund, "quote_token": quote,
            "market_registry": registry, "order_book": order_book,
            "clearing_house_config": config, "base_tokens": bases, "pools": pools,
            "index_feeds": feeds, "maker": maker, "arbitrageur": arbitrageur,
            "settlement_token": usdc, "collateral_manager": collateral_manager,
            "collaterals": collaterals, "version": "2.8.4"},
        "perp_traders": [
            {"address": p.address, "collateral_usd": p.collateral_usd,
             "weth_share": p.weth_share,
             "positions": {a: n for a, n in p.positions}, "leverage": round(p.leverage, 4)}
            for p in plans],
    }


def _uniswap(name: str) -> Artifact:
    path = (paths.node_modules() / "@uniswap" / "v3-core" / "artifacts" / "contracts"
            / f"{name}.sol" / f"{name}.json")
    data = json.loads(path.read_text())
    return Artifact(name, data["abi"], data["bytecode"], data.get("linkReferences", {}))


def deposit(client: DevnetClient, account: str, usdc: str, vault: str, usd: float) -> None:
    """Mint `usd` of the devnet's USDC to `account` and deposit it as margin."""
    token = contracts.aave("MintableERC20")
    units = int(usd * 10**6)
    client.send(account, usdc, token.encode_call("mint", account, units), gas=200_000)
    client.send(account, usdc, token.encode_call("approve", vault, MAX_UINT), gas=100_000)
    client.send(account, vault, artifact("Vault").encode_call("deposit", usdc, units),
                gas=300_000)


def _seed_traders(client: DevnetClient, plans: list[TraderPlan], usdc: str, vault: str,
                  ch: str, bases: dict[str, str], weth: str, weth_price: float) -> None:
    """Margin first (mint, approve, deposit: USDC, and WETH for those that keep part of
    their margin in it), then the trades, a block of them at a time, longs and shorts
    interleaved so a block's net flow stays small."""
    from keeperd.devnet.seed import _mine_all, _tx

    token = contracts.aave("MintableERC20")
    client.batch([("anvil_setBalance", [p.address, hex(10 * 10**18)]) for p in plans])
    client.call("evm_setAutomine", False)
    try:
        calls = []
        nonces = {}
        for p in plans:
            deposits = [(usdc, int(p.collateral_usd * (1 - p.weth_share) * 10**6))]
            if p.weth_share:
                deposits.append((weth, int(p.collateral_usd * p.weth_share / weth_price
                                           * 10**18)))
            n = 0
            for asset, units in deposits:
                for to, data, gas in (
                        (asset, token.encode_call("mint", p.address, units), 200_000),
                        (asset, token.encode_call("approve", vault, MAX_UINT), 100_000),
                        (vault, artifact("Vault").encode_call("deposit", asset, units),
                         400_000)):
                    calls.append(_tx(p.address, to, data, gas, n))
                    n += 1
            nonces[p.address] = n
        client.batch(calls)
        _mine_all(client, len(calls))
        trades = [(p, asset, notional) for p in plans for asset, notional in p.positions]
        longs = [t for t in trades if t[2] > 0]
        shorts = [t for t in trades if t[2] < 0]
        ordered = [t for pair in zip(longs, shorts, strict=False) for t in pair]
        ordered += longs[len(shorts):] + shorts[len(longs):]
        # Nonces in the order the trades go out (a trader's second trade may go first).
        for start in range(0, len(ordered), TRADES_PER_BLOCK):
            part = ordered[start:start + TRADES_PER_BLOCK]
            txs = []
            for p, asset, notional in part:
                txs.append(_tx(p.address, ch, open_position_call(bases[asset], notional),
                               OPEN_GAS, nonces[p.address]))
                nonces[p.address] += 1
            client.batch(txs)
            client.increase_time(BLOCK_GAP_S)
            _mine_all(client, len(part))
    finally:
        client.call("evm_setAutomine", True)
    _verify_traders(client, plans, ch)


def _verify_traders(client: DevnetClient, plans: list[TraderPlan], ch: str) -> None:
    """Every planned trader holds margin in the vault (a reverted trade leaves only the
    deposit: counted here by position size through AccountBalance)."""
    ch_art = artifact("ClearingHouse")
    (balance,) = ch_art.decode_result("getAccountBalance", client.eth_call(
        ch, ch_art.encode_call("getAccountBalance")))
    ab = artifact("AccountBalance")
    empty = []
    for p in plans:
        (tokens,) = ab.decode_result("getBaseTokens", client.eth_call(
            balance, ab.encode_call("getBaseTokens", p.address)))
        if len(tokens) != len(p.positions):
            empty.append(p.address)
    if empty:
        from keeperd.devnet.client import DevnetRpcError

        raise DevnetRpcError(f"Curie seeding: {len(empty)} of {len(plans)} traders have fewer "
                             f"positions than planned (first: {empty[:3]})")


def walk_mark(client: DevnetClient, manifest: dict[str, Any], symbol: str, target: float
              ) -> None:
    """After the index moved to `target` (the aggregator's new answer): refresh the feed's
    TWAP cache and trade the market's pool to the new price in steps of under ~10 %, 16 s of
    chain time after each, so the mark (a median of pool TWAPs and index + premium) follows."""
    curie = manifest.get("perp_curie")
    if not curie or symbol not in curie["base_tokens"]:
        return
    refresh_index(client, manifest, symbol)
    base, ch, arb = curie["base_tokens"][symbol], curie["clearing_house"], curie["arbitrageur"]
    ch_art = artifact("ClearingHouse")
    ab = artifact("AccountBalance")
    for _ in range(40):
        (mark,) = ab.decode_result("getMarkPrice", client.eth_call(
            curie["account_balance"], ab.encode_call("getMarkPrice", base)))
        current = _pool_price(client, curie["pools"][symbol])
        if abs(current / target - 1) < 1e-4 and abs(mark / 1e18 / target - 1) < 2e-3:
            return
        step = max(min(target, current * (1 + STEP)), current * (1 - STEP))
        if abs(step / current - 1) >= 1e-4:
            down = step < current
            # Exact input of far more than the move needs; the price limit stops the swap.
            amount = 10**30
            client.send(arb, ch, ch_art.encode_call("openPosition", (
                base, down, True, amount, 0, DEADLINE, sqrt_price_x96(step), b"\0" * 32)),
                gas=OPEN_GAS)
        client.increase_time(SETTLE_S)
        client.mine(1)
    raise RuntimeError(f"Curie {symbol}: the mark did not reach {target}")


def settle_collateral_twap(client: DevnetClient, manifest: dict[str, Any]) -> None:
    """A quarter hour of chain time: the vault prices non-settlement collateral (WETH
    margin) at the feed's 15-minute TWAP, which lags a move of the index by up to that long.
    (`walk_mark` cached the new answer in the feed first; the TWAP view extends the latest
    answer to now, so no further `update()` is needed.)"""
    if not manifest.get("perp_curie"):
        return
    client.increase_time(900)
    client.mine(1)


def refresh_index(client: DevnetClient, manifest: dict[str, Any], symbol: str) -> None:
    """Make the market's ChainlinkPriceFeedV3 cache the aggregator's answer now. It caches a
    round only if its timestamp differs from the cached one, so the answer is pushed again one
    second later (a new round; same answer) before `update()`: a price set in the same second
    as the last cached round would otherwise be ignored and the index would stay stale."""
    feeds = manifest["perp_curie"]["index_feeds"][symbol]
    aggregator = feeds["aggregator"]
    admin = manifest["aave_v3"]["admin"]
    from keeperd.devnet.client import DevnetRpcError

    answer = int.from_bytes(client.eth_call(aggregator, encode_call("latestAnswer()", [], [])),
                            "big", signed=True)
    for attempt in range(3):
        client.increase_time(1)
        client.send(admin, aggregator, encode_call("setAnswer(int256)", ["int256"], [answer]),
                    gas=200_000)
        try:
            client.send(admin, feeds["chainlink_v3"],
                        artifact("ChainlinkPriceFeedV3").encode_call("update"), gas=500_000)
            return
        except DevnetRpcError as exc:
            # CPF_NU: the round is not newer than the one cached — with a keeperd sending
            # beside it, blocks mined between share the second (a by-hand trial's set-price
            # said "the devnet refused it" of a move that had gone through). A round a
            # second later is cached.
            if "CPF_NU" not in str(exc) or attempt == 2:
                raise


def _pool_price(client: DevnetClient, pool: str) -> float:
    pool_art = _uniswap("UniswapV3Pool")
    (sqrt_price, *_rest) = pool_art.decode_result("slot0", client.eth_call(
        pool, pool_art.encode_call("slot0")))
    return float((sqrt_price / 2**96) ** 2)
