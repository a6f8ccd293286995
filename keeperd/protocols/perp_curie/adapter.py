"""The Perp Curie plug-in: traders discovered from the ClearingHouse's PositionChanged and
PositionLiquidated events; every block, in Multicall3 batches, each trader's account value,
margin requirement, free collateral and, per market, position size, value at the mark and open
notional — the contracts' own views, so keeperd's figures equal theirs to the unit; what-ifs
(an index shock) from those by `margin.py`. Cross-margined: one view row per trader.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
from eth_abi import decode
from eth_utils import to_checksum_address

from keeperd.chain.multicall import Call, CallResult, Multicall, encode_call, event_topic
from keeperd.chain.rpc import RpcPool
from keeperd.config import DEFAULT_SHOCKS, ConfigIssue, PerpCurieConfig
from keeperd.protocols.perp_curie import margin as cm
from keeperd.protocols.perp_curie.calldata import CallMemo, Checksums, word_int, word_uint
from keeperd.protocols.sdk.contract import (
    LiquidationSeen,
    LogIndexed,
    PluginBase,
    PluginContext,
    account_topic,
)
from keeperd.protocols.sdk.feeds import PriceFeed
from keeperd.protocols.sdk.indexer import AccountIndexer, LogFilter
from keeperd.protocols.sdk.views import AccountRow, BookRisk, HealthView
from keeperd.risk.health import RISK_LEVELS, bucket_label

log = structlog.get_logger(__name__)
# CollateralManager.getCollateralConfig: (price feed, collateral ratio, discount ratio, cap)
_COLLATERAL_CONFIG = ["address", "uint24", "uint24", "uint256"]


def asset_symbol_typos(mapping: Mapping[str, str], markets: Iterable[str]
                       ) -> list[tuple[str, str]]:
    """(key, market) for each key of `asset_symbols` that names no market but looks like one
    the mapping leaves out (pure): `vEHT: WETH` beside a vETH market. That market is then
    priced as its default name (ETH), which no other protocol may price: the price watch
    cannot check it against them, and a shock of WETH does not move it. A key no market is
    like may be a market with no trader yet: not told."""
    known = set(markets)
    unmapped = {m.lower(): m for m in sorted(known) if m not in mapping}  # (case aside)
    return [(key, unmapped[close[0]]) for key in sorted(mapping) if key not in known
            for close in [difflib.get_close_matches(key.lower(), list(unmapped), n=1,
                                                    cutoff=0.6)]
            if close]

POSITION_CHANGED = event_topic(
    "PositionChanged(address,address,int256,int256,uint256,int256,int256,uint256)")
POSITION_LIQUIDATED = event_topic(
    "PositionLiquidated(address,address,uint256,uint256,uint256,address)")
COLLATERAL_LIQUIDATED = event_topic(
    "CollateralLiquidated(address,address,address,uint256,uint256,uint256,uint24)")
COLLATERAL_TWAP_INTERVAL = 900  # Vault._COLLATERAL_TWAP_INTERVAL
# The CollateralManager's rules are read again this often (blocks): governance changes them
# rarely, and the vault's own isLiquidatable read each block decides a collateral liquidation.
COLLATERAL_RULES_EVERY = 300
# Horizons of `keeperd_perp_funding_to_maintenance_accounts`, hours.
FUNDING_HORIZONS_H = (24, 72, 168)
# A market's BaseToken status. Only an open market trades: on a paused one (the owner's
# `pause()`, positions valued at the index TWAP of that moment) or a closed one (settled at a
# fixed price, left by `quitMarket`) `liquidate` reverts `CH_MNO`, as do closePosition and
# openPosition. Curie is frozen upstream (no release since 2024): a market may stop any day.
OPEN, PAUSED, CLOSED = "open", "paused", "closed"
MARKET_STATUSES = (OPEN, PAUSED, CLOSED)


def _status(paused: CallResult, closed: CallResult) -> str:
    """A market's status from its BaseToken's isPaused() and isClosed() (a base token without
    them, older than the statuses, is open)."""
    if closed.success and len(closed.data) >= 32 and decode(["bool"], closed.data)[0]:
        return CLOSED
    if paused.success and len(paused.data) >= 32 and decode(["bool"], paused.data)[0]:
        return PAUSED
    return OPEN


def _trader(entry: dict[str, Any], cache: dict[str, str]) -> Iterable[str]:
    topics = entry.get("topics") or []
    if len(topics) < 2 or topics[0] not in (POSITION_CHANGED, POSITION_LIQUIDATED):
        return ()
    raw = "0x" + topics[1][-40:]
    if raw not in cache:
        cache[raw] = to_checksum_address(raw)
    return (cache[raw],)


def _address(answer: CallResult) -> str | None:
    """An address a getter answered; None for a revert or the zero address."""
    if not answer.success or len(answer.data) < 32 or not int.from_bytes(answer.data[:32], "big"):
        return None
    return to_checksum_address(answer.data[12:32])


@dataclass(frozen=True)
class Market:
    base: str
    symbol: str  # vETH
    asset: str  # WETH
    mark: int
    index: int
    status: str = OPEN  # OPEN, PAUSED or CLOSED: liquidations only on an open market

    @property
    def is_open(self) -> bool:
        return self.status == OPEN


@dataclass(frozen=True)
class CurieBook:
    block: int
    timestamp: int
    markets: dict[str, Market]  # base token -> market
    traders: tuple[cm.CurieTrader, ...]
    mm_ratio: int
    penalty_ratio: int
    im_ratio: int
    insurance_fund_capacity: int | None  # InsuranceFund.getInsuranceFundCapacity, USDC units
    collateral_rules: cm.CollateralRules | None = None  # None: no collateral manager
    # Each collateral token's latest feed price (CollateralManager.getPrice(token, 0), at its
    # feed's decimals): what a collateral liquidation's tokens are worth, booked at it.
    collateral_spot: Mapping[str, int] = field(default_factory=dict)

    def not_open(self) -> dict[str, Market]:
        """The markets whose positions cannot be liquidated now (base token -> market)."""
        return {b: m for b, m in self.markets.items() if not m.is_open}


class PerpCurieAdapter(LogIndexed, PluginBase):
    kind = "perp_curie"
    config_model = PerpCurieConfig
    position_action = ("Add margin or reduce the position: once the account value falls under "
                       "6.25 % of the positions' value anyone may liquidate them, taking a "
                       "2.5 % penalty from the account.")

    def __init__(self, config: PerpCurieConfig, ctx: PluginContext) -> None:
        chain, pool, store, metrics = ctx.chain, ctx.pool, ctx.store, ctx.metrics
        self.config = config
        self.index_interval_s = config.index_interval
        self.name = config.name
        self.chain = chain.name
        self.pool = pool
        self.metrics = metrics
        self.multicall = Multicall(pool, address=chain.multicall3,
                                   chunk_size=chain.multicall_chunk_size)
        self.indexer = AccountIndexer(
            config.name, chain.name, pool, store,
            LogFilter((config.clearing_house,), ((POSITION_CHANGED, POSITION_LIQUIDATED),)),
            _trader, start_block=config.start_block, confirmations=chain.confirmations,
            metrics=metrics)
        self.addresses: dict[str, str] = {}
        self._symbols: dict[str, str] = {}
        self._typos_told: set[str] = set()  # (asset_symbols keys told once: a typo)
        self.fee_ratios: dict[str, int] = {}  # base token -> exchange fee (parts per million)
        self.pools: dict[str, str] = {}  # base token -> its Uniswap V3 pool
        # collateral token -> (symbol, decimals, price feed decimals, collateral ratio)
        self.collaterals: dict[str, tuple[str, int, int, int]] = {}
        self.collateral_rules: cm.CollateralRules | None = None
        self._rules_read_at = 0  # (the block `collateral_rules` were last read at)
        self._statuses: dict[str, str] = {}  # base token -> the status last logged
        self._held: set[tuple[str, str]] = set()  # (trader, base): liquidatable, not open
        self._index_sources: dict[str, str | None] = {}  # base token -> its index aggregator
        # Every block's calls, encoded once; the addresses its answers name, checksummed once.
        self._calls = CallMemo()
        self._checksums = Checksums()

    # --- start-up and the index ---------------------------------------------------------------

    @staticmethod
    async def check_config(pool: RpcPool, proto: PerpCurieConfig, pi: int
                           ) -> list[ConfigIssue]:
        from keeperd.protocols.sdk.checks import contract_issues

        return await contract_issues(pool, proto, pi, ("clearing_house",))

    async def start(self) -> None:
        ch = self.config.clearing_house
        getters = ("getAccountBalance", "getVault", "getExchange", "getInsuranceFund",
                   "getClearingHouseConfig", "getQuoteToken")
        results = await self.multicall.aggregate3(
            [Call(ch, encode_call(f"{g}()", [], [])) for g in getters])
        for getter, r in zip(getters, results, strict=True):
            if not r.success or len(r.data) < 32:
                raise ValueError(f"{self.name}: {ch} is not a Curie ClearingHouse ({getter} "
                                 "failed)")
            self.addresses[getter[3:]] = to_checksum_address("0x" + r.data[12:32].hex())
        registry, manager = await self.multicall.aggregate3([
            Call(self.addresses["Exchange"], encode_call("getMarketRegistry()", [], [])),
            Call(self.addresses["Vault"], encode_call("getCollateralManager()", [], []))])
        self.addresses["MarketRegistry"] = to_checksum_address("0x" + registry.data[12:32].hex())
        # A vault without non-settlement collateral has none (the zero address): every
        # collateral read then fails and is skipped, USDC being the only margin.
        self.addresses["CollateralManager"] = to_checksum_address(
            "0x" + manager.data[12:32].hex()) if manager.success else "0x" + "0" * 40
        [settlement] = await self.multicall.aggregate3([Call(
            self.addresses["Vault"], encode_call("getSettlementToken()", [], []))])
        self.addresses["SettlementToken"] = to_checksum_address(
            "0x" + settlement.data[12:32].hex())
        if not await self._read_collateral_rules(None) \
                and int(self.addresses["CollateralManager"], 16):
            # (there is a manager, and its rules did not read: said, not passed over — a
            # trader's non-USDC margin is then not judged for a collateral liquidation)
            log.warning("curie.collateral_rules_unread", protocol=self.name,
                        collateral_manager=self.addresses["CollateralManager"],
                        meaning="non-USDC margin is not judged for collateral liquidations "
                                "until keeperd starts again and reads them")
        await self.indexer.start()

    async def _read_collateral_rules(self, block: int | None) -> bool:
        """The CollateralManager's rules (its margin buffer, debt ratio and threshold), into
        `collateral_rules`; a change since the last read is logged. False: unread. Read at
        start and every COLLATERAL_RULES_EVERY blocks (read at start only, a governance
        change left the health figures of non-USDC margin on the old rules until a
        restart, a by-hand trial)."""
        rules = await self.multicall.aggregate3([
            Call(self.addresses["CollateralManager"], encode_call(f"{g}()", [], []))
            for g in ("getMmRatioBuffer", "getDebtNonSettlementTokenValueRatio",
                      "getDebtThreshold")], "latest" if block is None else block)
        self._rules_read_at = block or 0
        if not all(r.success and len(r.data) >= 32 for r in rules):
            return False
        read = cm.CollateralRules(*(int.from_bytes(r.data[:32], "big") for r in rules))
        if self.collateral_rules is not None and read != self.collateral_rules:
            log.warning("curie.collateral_rules_changed", protocol=self.name, block=block,
                        before=str(self.collateral_rules), now=str(read))
        self.collateral_rules = read
        return True

    def started(self) -> str | None:
        a = self.addresses
        manager = a.get("CollateralManager", "0x" + "0" * 40)
        if self.collateral_rules is not None:
            rules = f"collateral manager {manager}: its rules read"
        elif int(manager, 16) == 0:
            rules = "no collateral manager: USDC is the only margin"
        else:  # (there is one, and its rules did not read: not "USDC only")
            rules = (f"collateral manager {manager}: its rules could not be read (a trader's "
                     "non-USDC margin is then not judged for a collateral liquidation)")
        return (f"ClearingHouse {self.config.clearing_house} answers as one: vault "
                f"{a.get('Vault')}, settlement token {a.get('SettlementToken')}; {rules}")


    def asset_of(self, symbol: str) -> str:
        if symbol in self.config.asset_symbols:
            return self.config.asset_symbols[symbol]
        return symbol[1:] if symbol.startswith("v") else symbol

    # --- reading ------------------------------------------------------------------------------

    async def read(self, block: int, previous: CurieBook | None, touched: set[str],
                   dropped: set[str]) -> CurieBook:
        """Every trader, every block: the mark and funding move every account's value."""
        if self.collateral_rules is not None \
                and block - self._rules_read_at >= COLLATERAL_RULES_EVERY:
            await self._read_collateral_rules(block)
        a, memo, checksum = self.addresses, self._calls, self._checksums
        header = await self.pool.request("eth_getBlockByNumber", [hex(block), False])
        traders = sorted(self.accounts)
        config_calls = [memo.call(a["ClearingHouseConfig"], f"{g}()", [])
                        for g in ("getMmRatio", "getLiquidationPenaltyRatio", "getImRatio")]
        per_trader = [c for t in traders for c in (
            memo.call(a["AccountBalance"], "getBaseTokens(address)", ["address"], [t]),
            memo.call(self.config.clearing_house, "getAccountValue(address)", ["address"], [t]),
            memo.call(a["AccountBalance"], "getMarginRequirementForLiquidation(address)",
                      ["address"], [t]),
            memo.call(a["Vault"], "getFreeCollateral(address)", ["address"], [t]),
            memo.call(a["Vault"], "getCollateralTokens(address)", ["address"], [t]))]
        first = await self.multicall.aggregate3(config_calls + per_trader, block)
        mm_ratio, penalty, im_ratio = (decode(["uint24"], r.data)[0] for r in first[:3])
        rows = []
        for i, t in enumerate(traders):
            results = first[3 + 5 * i: 8 + 5 * i]
            if not all(r.success for r in results):
                raise ValueError(f"{self.name}: reading trader {t} failed at block {block}")
            bases_r, av_r, mm_r, free_r, tokens_r = results
            rows.append((t, [checksum(b) for b in decode(["address[]"], bases_r.data)[0]],
                         word_int(av_r.data), word_int(mm_r.data), word_uint(free_r.data),
                         [checksum(c) for c in decode(["address[]"], tokens_r.data)[0]]))
        bases = sorted({b for _, bs, *_ in rows for b in bs})
        tokens = sorted({c for *_, cs in rows for c in cs})
        await self._learn_symbols(bases)
        await self._learn_collaterals(tokens)
        pairs = [(t, b) for t, bs, *_ in rows for b in bs]
        held = [(t, c) for t, *_, cs in rows for c in cs]
        with_collateral = sorted({t for t, _ in held})
        n, k = len(bases), len(tokens)
        second = await self.multicall.aggregate3(
            [memo.call(a["AccountBalance"], "getMarkPrice(address)", ["address"], [b])
             for b in bases]
            + [memo.call(b, "getIndexPrice(uint256)", ["uint256"], [0]) for b in bases]
            + [memo.call(a["CollateralManager"], "getPrice(address,uint256)",
                         ["address", "uint256"], [c, COLLATERAL_TWAP_INTERVAL])
               for c in tokens]
            + [memo.call(a["CollateralManager"], "getPrice(address,uint256)",
                         ["address", "uint256"], [c, 0]) for c in tokens]
            + [memo.call(a["InsuranceFund"], "getInsuranceFundCapacity()", [])]
            + [c for t, token in held for c in (
                memo.call(a["Vault"], "getBalanceByToken(address,address)",
                          ["address", "address"], [t, token]),
                memo.call(a["Vault"],
                          "getMaxRepaidSettlementAndLiquidatableCollateral(address,address)",
                          ["address", "address"], [t, token]))]
            + [memo.call(a["Vault"], "isLiquidatable(address)", ["address"], [t])
               for t in with_collateral]
            + [c for t, b in pairs for c in (
                memo.call(a["AccountBalance"], "getTakerPositionSize(address,address)",
                          ["address", "address"], [t, b]),
                memo.call(a["AccountBalance"], "getTotalPositionValue(address,address)",
                          ["address", "address"], [t, b]),
                memo.call(a["AccountBalance"], "getTakerOpenNotional(address,address)",
                          ["address", "address"], [t, b]))]
            + [memo.call(b, f"{g}()", []) for b in bases for g in ("isPaused", "isClosed")],
            block)
        memo.finish()
        statuses = second[len(second) - 2 * n:]
        markets = {b: Market(b, self._symbols[b], self.asset_of(self._symbols[b]),
                             word_uint(second[i].data), word_uint(second[n + i].data),
                             _status(statuses[2 * i], statuses[2 * i + 1]))
                   for i, b in enumerate(bases)}
        self._log_statuses(markets, block)
        prices = {c: word_uint(second[2 * n + i].data)
                  for i, c in enumerate(tokens) if second[2 * n + i].success}
        spot = {c: word_uint(second[2 * n + k + i].data)
                for i, c in enumerate(tokens) if second[2 * n + k + i].success}
        fund = second[2 * n + 2 * k]
        capacity = word_int(fund.data) if fund.success else None
        collateral: dict[str, list[cm.CurieCollateral]] = {}
        values = iter(second[2 * n + 2 * k + 1: len(second) - 2 * n])
        for t, c in held:
            balance_r, max_r = next(values), next(values)
            amount = word_int(balance_r.data) if balance_r.success else 0
            if amount <= 0 or c not in prices:
                continue
            repaid, taken = (decode(["uint256", "uint256"], max_r.data) if max_r.success
                             else (0, 0))
            symbol, decimals, price_decimals, ratio = self.collaterals[c]
            collateral.setdefault(t, []).append(cm.CurieCollateral(
                c, self.asset_of(symbol), amount, decimals, prices[c], price_decimals, ratio,
                repaid, taken, spot.get(c, 0)))
        collateral_liquidatable = {
            t for t in with_collateral
            if (r := next(values)).success and decode(["bool"], r.data)[0]}
        positions: dict[str, list[cm.CuriePosition]] = {}
        for t, b in pairs:
            size_r, value_r, open_r = next(values), next(values), next(values)
            size = word_int(size_r.data)
            if size == 0:
                continue
            m = markets[b]
            positions.setdefault(t, []).append(cm.CuriePosition(
                b, m.symbol, m.asset, size, word_int(value_r.data), word_int(open_r.data),
                m.mark))
        book_traders = tuple(cm.CurieTrader(t, av, mm, free, tuple(positions.get(t, ())),
                                            tuple(collateral.get(t, ())),
                                            t in collateral_liquidatable)
                             for t, _, av, mm, free, _ in rows)
        return CurieBook(block, int(header["timestamp"], 16), markets, book_traders, mm_ratio,
                         penalty, im_ratio, capacity, self.collateral_rules, spot)

    def _log_statuses(self, markets: Mapping[str, Market], block: int) -> None:
        """Once per change: a market that stops (or starts again) holds (or frees) every
        liquidation in it; the protocol's other markets go on."""
        for b, m in markets.items():
            before = self._statuses.get(b, OPEN)
            if m.status != before:
                (log.warning if m.status != OPEN else log.info)(
                    "curie.market_status", protocol=self.name, market=m.symbol, base=b,
                    status=m.status, was=before, block=block,
                    meaning="liquidations in this market are held (Curie reverts them "
                            "CH_MNO); the other markets go on" if m.status != OPEN
                            else "liquidations in this market go on again")
            self._statuses[b] = m.status

    def publish(self, book: CurieBook, view: HealthView) -> None:
        """Open interest and bad debt at risk by index move of each asset, and the accounts
        funding alone brings to maintenance (the insurance fund that pays the bad debt goes
        to the cascade monitor through `book_risk`)."""
        for asset in sorted({m.asset for m in book.markets.values()}):
            for move in [-m for m in DEFAULT_SHOCKS] + list(DEFAULT_SHOCKS):
                notional, bad = cm.at_risk(book.traders, asset, move, book.mm_ratio)
                self.metrics.perp_liquidated_notional.labels(self.name, asset,
                                                             f"{move:g}").set(notional)
                self.metrics.perp_bad_debt.labels(self.name, asset, f"{move:g}").set(bad)
        # (the accounts near liquidation, as the venues' are counted: the dashboard's perp
        # panel showed the venues' only, and nothing for a Curie operator)
        health = np.asarray(view.health, dtype=float)
        for level in RISK_LEVELS:
            self.metrics.perp_accounts_below.labels(self.name, bucket_label(level)).set(
                int(np.count_nonzero(health < level)))
        index = {b: m.index for b, m in book.markets.items()}
        hours = [h for t in book.traders
                 if (h := cm.hours_to_maintenance(t, index)) is not None]
        for within in FUNDING_HORIZONS_H:
            self.metrics.perp_funding_to_maintenance.labels(self.name, f"{within:g}").set(
                sum(1 for h in hours if h <= within))
        for m in book.markets.values():
            for status in MARKET_STATUSES:
                self.metrics.perp_market_status.labels(self.name, m.symbol, status).set(
                    1 if m.status == status else 0)
        self._log_held(book, view)

    def _log_held(self, book: CurieBook, view: HealthView) -> None:
        """Once per change: each liquidatable trader's position in a market that is not
        open, which nobody can liquidate until it reopens (the liquidator plans on the
        trader's open markets only, and counts a trader with none left as `held`)."""
        stopped = book.not_open()
        held: set[tuple[str, str]] = set()
        if stopped:
            under = {view.accounts[int(i)] for i in np.flatnonzero(view.health < 1.0)}
            held = {(t.account, p.base) for t in book.traders if t.account in under
                    for p in t.positions if p.base in stopped}
        for account, base in sorted(held - self._held):
            t = next(t for t in book.traders if t.account == account)
            m = stopped[base]
            log.warning("curie.liquidation_held", protocol=self.name, account=account,
                        market=m.symbol, status=m.status,
                        other_markets=sorted(p.market for p in t.positions
                                             if p.base not in stopped),
                        meaning=f"liquidatable, but its {m.symbol} position cannot be "
                                f"liquidated while the market is {m.status}")
        for account, base in sorted(self._held - held):
            log.info("curie.liquidation_released", protocol=self.name, account=account,
                     market=self._symbols.get(base, base))
        self._held = held

    async def _learn_collaterals(self, tokens: Sequence[str]) -> None:
        """Symbol, decimals, price-feed decimals and collateral ratio of each collateral
        token (the ratio is read once: the operator of the manager changes it by a
        governance transaction; a restart picks it up)."""
        missing = [c for c in tokens if c not in self.collaterals]
        if not missing:
            return
        manager = self.addresses["CollateralManager"]
        results = await self.multicall.aggregate3([c for t in missing for c in (
            Call(t, encode_call("symbol()", [], [])),
            Call(t, encode_call("decimals()", [], [])),
            Call(manager, encode_call("getPriceFeedDecimals(address)", ["address"], [t])),
            Call(manager, encode_call("getCollateralConfig(address)", ["address"], [t])))])
        learnt: dict[str, tuple[str, int, int, int]] = {}
        configs: dict[str, tuple[Any, ...]] = {}
        for i, t in enumerate(missing):
            symbol, decimals, feed_decimals, config = results[4 * i: 4 * i + 4]
            if not (decimals.success and feed_decimals.success and config.success):
                raise ValueError(f"{self.name}: collateral token {t} could not be read")
            configs[t] = tuple(decode(_COLLATERAL_CONFIG, config.data))
            learnt[t] = (decode(["string"], symbol.data)[0] if symbol.success else t[:10],
                         decode(["uint8"], decimals.data)[0],
                         decode(["uint8"], feed_decimals.data)[0], configs[t][1])
        await self._confirm_collaterals(learnt, configs)
        self.collaterals.update(learnt)

    async def _confirm_collaterals(self, learnt: Mapping[str, tuple[str, int, int, int]],
                                   configs: Mapping[str, tuple[Any, ...]]) -> None:
        """What the first endpoint said of each new collateral, agreed by every endpoint that
        answers before it is kept for the process's life (`confirm_reads`): its decimals, its
        feed's and its ratio value every trader's margin in it. A disagreement is raised —
        at start a refused start, later that block's read failing (nothing kept, asked again
        at the next) — never a collateral valued on one endpoint's word."""
        from keeperd.chain.calls import ContractCall
        from keeperd.protocols.sdk.confirm import confirm_reads

        manager = self.addresses["CollateralManager"]
        calls: list[ContractCall] = []
        read: list[Any] = []
        names: list[str] = []
        for t, (_symbol, decimals, feed_decimals, _ratio) in learnt.items():
            calls += [ContractCall(t, "decimals()", returns=["uint8"]),
                      ContractCall(manager, "getPriceFeedDecimals(address)", ["address"], [t],
                                   returns=["uint8"]),
                      ContractCall(manager, "getCollateralConfig(address)", ["address"], [t],
                                   returns=_COLLATERAL_CONFIG)]
            read += [decimals, feed_decimals, configs[t]]
            names += [f"collateral {t} decimals()", "its price feed's decimals",
                      "its collateral config (feed, ratio, discount, cap)"]
        if calls:
            await confirm_reads(
                self.pool, calls, read, where=f"protocols[{self.name}]", names=names,
                fix="keeperd would value every trader's margin in it wrongly. Check each "
                    "endpoint against the CollateralManager on a block explorer, then remove "
                    "or fix the one that disagrees (`chains[].rpc_urls`)")

    async def _learn_symbols(self, bases: Sequence[str]) -> None:
        missing = [b for b in bases if b not in self._symbols]
        if not missing:
            return
        registry = self.addresses["MarketRegistry"]
        results = await self.multicall.aggregate3(
            [c for b in missing for c in (
                Call(b, encode_call("symbol()", [], [])),
                Call(registry, encode_call("getFeeRatio(address)", ["address"], [b])),
                Call(registry, encode_call("getPool(address)", ["address"], [b])))])
        for i, b in enumerate(missing):
            symbol, fee, pool = results[3 * i: 3 * i + 3]
            self._symbols[b] = decode(["string"], symbol.data)[0] if symbol.success else b[:10]
            if fee.success:
                self.fee_ratios[b] = decode(["uint24"], fee.data)[0]
            if pool.success:
                self.pools[b] = to_checksum_address("0x" + pool.data[12:32].hex())
        for key, market in asset_symbol_typos(self.config.asset_symbols, self._symbols.values()):
            if key not in self._typos_told:
                self._typos_told.add(key)
                log.error("curie.asset_symbols_typo", protocol=self.name, key=key,
                          market=market, priced_as=self.asset_of(market),
                          meaning=f"asset_symbols names {key}, which no market is; market "
                                  f"{market} is priced as {self.asset_of(market)}, which "
                                  "other protocols may not price (the price watch and shocks "
                                  "pass it by)",
                          fix=f"write {market}: {self.config.asset_symbols[key]} in "
                              "asset_symbols")

    # --- evaluation (pure) ----------------------------------------------------------------------

    async def health_elsewhere(self, book: CurieBook, accounts: Sequence[str], endpoint: Any
                               ) -> dict[str, float] | None:
        """Each of `accounts`' account value over its margin requirement for liquidation,
        as the ClearingHouse and AccountBalance answer on `endpoint` at the book's block (a
        first endpoint could hide a Curie account's fall from its holder: only Aave and
        Morpho had a second reading). Its non-USDC margin's own rule is not read again: the
        reading is never lower than keeperd's for an honest pair of endpoints, so a
        disagreement is a lie or a lag, not the rule left out."""
        if not accounts:
            return None
        other = self.multicall.on(endpoint)
        calls = [c for a in accounts for c in (
            Call(self.config.clearing_house, encode_call("getAccountValue(address)",
                                                         ["address"], [a])),
            Call(self.addresses["AccountBalance"], encode_call(
                "getMarginRequirementForLiquidation(address)", ["address"], [a])))]
        results = await other.aggregate3(calls, book.block)
        found: dict[str, float] = {}
        for i, account in enumerate(accounts):
            value, margin = results[2 * i], results[2 * i + 1]
            if not (value.success and margin.success and len(value.data) >= 32
                    and len(margin.data) >= 32):
                continue
            required = word_int(margin.data)
            found[account] = word_int(value.data) / required if required > 0 else np.inf
        return found

    def evaluate(self, book: CurieBook, prices: Mapping[str, float] | None = None
                 ) -> HealthView:
        """Health = account value / margin requirement (below 1: liquidatable). With `prices`
        (asset symbol -> USD) the marks move by the same factor as each asset's index; a move
        of the numeraire (`USD`, the cascade's short squeeze: USD=-10 %) moves every asset the
        other way (it was ignored: a short's health unchanged under a squeeze, a trial)."""
        factors = {}
        usd = prices.get("USD", 1.0) if prices else 1.0
        for m in book.markets.values():
            if prices and m.index and (m.asset in prices or usd != 1.0):
                today = m.index / cm.WAD
                factors[m.asset] = prices.get(m.asset, today) / today / usd
        for asset, twap in self._collateral_prices(book).items():
            if prices and asset not in factors and twap and (asset in prices or usd != 1.0):
                factors[asset] = prices.get(asset, twap) / twap / usd
        n = len(book.traders)
        health = np.empty(n)
        value = np.empty(n)
        notional = np.empty(n)
        at_risk = np.empty(n)  # (`HealthView.at_risk_usd`)
        drop = np.full(n, np.nan)
        rise = np.full(n, np.nan)
        mark = np.full(n, np.nan)  # (the main market's, today: with the move, its price)
        main: list[str | None] = []
        index = {b: m.index for b, m in book.markets.items()}
        details: list[dict[str, Any]] = []
        notes: list[str] = []
        for i, t in enumerate(book.traders):
            if factors:
                av, mm = cm.shocked(t, factors, book.mm_ratio)
                total = sum(p.notional / cm.WAD * factors.get(p.asset, 1.0) for p in t.positions)
            else:
                av, mm = t.account_value / cm.WAD, t.margin_requirement / cm.WAD
                total = t.total_abs_value / cm.WAD
            health[i] = av / mm if mm > 0 else np.inf
            at_risk[i] = total
            if book.collateral_rules is not None and t.collateral:
                # Its WETH margin may be liquidated before (or after) its positions.
                margin_health = cm.collateral_health(t, book.collateral_rules, book.mm_ratio,
                                                     factors)
                if margin_health < health[i]:
                    # (its collateral goes first: what a liquidation repays is the USDC it
                    # owes against it, as much as the vault lets one take now — not its
                    # positions' notional; while none may be taken yet, the collateral's
                    # worth bounds it)
                    repaid = sum(c.max_repaid for c in t.collateral) / 10**6
                    at_risk[i] = repaid if repaid > 0 else sum(
                        c.amount / 10**c.decimals * c.price / 10**c.price_decimals
                        for c in t.collateral)
                    health[i] = margin_health
            value[i], notional[i] = av, total
            # Its main market: the one nearest its liquidation, with the move that gets it
            # there (a short's is a rise: said as a drop, a holder was told the wrong way);
            # the largest when none can be told (a what-if).
            main_position = max(t.positions, key=lambda p: p.notional, default=None)
            if main_position is not None and not factors:
                moves = [(abs(move), move, p) for p in t.positions
                         if (move := cm.move_to_liquidation(
                             t, p, book.mm_ratio, book.collateral_rules)) is not None]
                if moves:
                    _, move, main_position = min(moves, key=lambda x: x[0])
                    if move > 0:
                        rise[i] = move
                    else:
                        drop[i] = -move if move < 0 else 0.0
            main.append(main_position.asset if main_position else None)
            if main_position is not None and not factors:
                mark[i] = main_position.mark / cm.WAD
            if not factors:
                hours = cm.hours_to_maintenance(t, index)
                details.append({
                    "margin_ratio": av / total if total else None,
                    "funding_per_hour_usd": round(cm.funding_per_hour(t, index), 4),
                    "hours_to_maintenance_by_funding":
                        None if hours is None else round(hours, 1)})
                notes.append(f"funding at the current premium alone brings it to maintenance "
                             f"in {hours:,.0f} h" if hours is not None
                             and hours <= max(FUNDING_HORIZONS_H) else "")
        return HealthView(
            accounts=[t.account for t in book.traders], health=health, collateral_usd=value,
            debt_usd=notional, liquidation_threshold=np.full(n, book.mm_ratio / cm.RATIO),
            main_collateral=main, drop_to_liquidation=drop, rise_to_liquidation=rise,
            main_is_position=True, assets=[t.assets for t in book.traders],
            details=details or None, notes=notes or None,
            main_price=None if factors else mark, at_risk_usd=at_risk)

    def book_risk(self, book: CurieBook) -> BookRisk:
        """The insurance fund's capacity, the bad debt already realised (accounts with no
        position left and a negative value), and, for `keeperd simulate`, the accounts
        funding alone brings to maintenance."""
        index = {b: m.index for b, m in book.markets.items()}
        hours = [h for t in book.traders
                 if (h := cm.hours_to_maintenance(t, index)) is not None]
        lines = [f"funding at the current premium brings {sum(1 for h in hours if h <= w):,} "
                 f"account(s) to maintenance within {w} h" for w in FUNDING_HORIZONS_H]
        fund = (None if book.insurance_fund_capacity is None
                else book.insurance_fund_capacity / 10**6)
        # (accounts whose positions are gone and whose value is below zero: their bad debt is
        # realised, settled against the fund; the cascade models positions, and left out a
        # crash's 12 such accounts, -$131k, a by-hand trial)
        parts = {t.account: (-t.account_value / cm.WAD, 1.0) for t in book.traders
                 if not t.positions and t.account_value < 0}
        owed = sum(amount for amount, _ in parts.values())
        lines.append(f"accounts with no position left and a negative value: ${owed:,.2f} of "
                     "bad debt, owed to the insurance fund until settled")
        return BookRisk(fund, lines, outstanding_bad_debt_usd=owed, bad_debt_parts=parts)

    @staticmethod
    def _collateral_prices(book: CurieBook) -> dict[str, float]:
        """USD per unit of each collateral asset, at the vault's TWAP."""
        return {c.asset: c.price / 10**c.price_decimals
                for t in book.traders for c in t.collateral}

    def first_pass(self, previous: CurieBook | None, book: CurieBook) -> None:
        return None

    def liquidation_hold(self, book: CurieBook) -> str | None:
        return None

    def liquidation_verification(self, book: CurieBook) -> str | None:
        return None  # keeperd knows the rules it runs

    def rows(self, book: CurieBook, view: HealthView) -> list[AccountRow]:
        index = {b: m.index for b, m in book.markets.items()}
        out = []
        for i, t in enumerate(book.traders):
            health = float(view.health[i])
            drop = float(view.drop_to_liquidation[i])
            total = t.total_abs_value
            out.append(AccountRow(
                protocol=self.name, account=t.account,
                health_factor=None if not np.isfinite(health) else health,
                collateral_usd=t.account_value / cm.WAD, debt_usd=total / cm.WAD,
                liquidation_threshold=book.mm_ratio / cm.RATIO,
                main_collateral=view.main_collateral[i],
                drop_to_liquidation=None if np.isnan(drop) else round(drop, 6),
                rise_to_liquidation=None if (r := view.row_rise(i)) is None else round(r, 6),
                extra={
                    "chain": self.chain,
                    "account_value_usd": t.account_value / cm.WAD,
                    "maintenance_margin_usd": t.margin_requirement / cm.WAD,
                    "margin_ratio": t.account_value / total if total else None,
                    "free_collateral_usd": t.free_collateral / 10**6,
                    "funding_per_hour_usd": cm.funding_per_hour(t, index),
                    "hours_to_maintenance_by_funding": cm.hours_to_maintenance(t, index),
                    "collateral": [{
                        "token": c.token, "asset": c.asset,
                        "amount": c.amount / 10**c.decimals, "value_usd": c.value / cm.WAD,
                        "collateral_ratio": c.ratio / cm.RATIO,
                        "counted_usd": c.counted / cm.WAD} for c in t.collateral],
                    "positions": [{
                        "market": p.market, "asset": p.asset, "size": p.size / cm.WAD,
                        "notional_usd": p.notional / cm.WAD, "mark_price": p.mark / cm.WAD,
                        "liquidation_price": cm.liquidation_price(
                            t, p, book.mm_ratio, book.collateral_rules)}
                        for p in t.positions]}))
        return out

    def describe(self, book: CurieBook) -> tuple[Any, list[Any]]:
        """The book as the cascade engine's (lending-shaped) portfolio, exactly: a trader is
        liquidatable when Σ_long v·x·(1-m) + Σ_coll w·x + C < Σ_short v·x·(1+m), with v the
        positions' values, w the counted value of non-settlement collateral, x their price
        multipliers, m the maintenance ratio and C = account value - Σ_long v + Σ_short v -
        Σ_coll w. So longs are collateral in their asset weighted (1-m)/(1+m), WETH margin is
        collateral in WETH weighted 1/(1+m), shorts are debt in their asset, and C is USD
        collateral weighted 1/(1+m) (or, when negative, USD debt C/(1+m)). Seizing a long
        sells it (the liquidator unwinds), with the liquidator's share of the penalty as the
        bonus; Curie takes half a position a call until the account is under half its
        requirement (approximated by health 0.5)."""
        from keeperd.risk.cascade import Asset, Portfolio

        m = book.mm_ratio / cm.RATIO
        by_asset: dict[str, Market] = {}
        for market in book.markets.values():
            by_asset.setdefault(market.asset, market)
        price_of = {**self._collateral_prices(book),
                    **{s: market.index / cm.WAD for s, market in by_asset.items()}}
        symbols = [*sorted(price_of), "USD"]
        column = {s: i for i, s in enumerate(symbols)}
        usd = column["USD"]
        traders = [t for t in book.traders if t.positions]
        n, a = len(traders), len(symbols)
        collateral, weighted, debt = np.zeros((n, a)), np.zeros((n, a)), np.zeros((n, a))
        for i, t in enumerate(traders):
            c = t.account_value / cm.WAD
            for p in t.positions:
                v = p.notional / cm.WAD
                if p.size > 0:
                    collateral[i, column[p.asset]] += v
                    weighted[i, column[p.asset]] += v * (1 - m) / (1 + m)
                    c -= v
                else:
                    debt[i, column[p.asset]] += v
                    c += v
            # Non-settlement collateral: its counted value moves with its asset and is what
            # a collateral liquidation sells (at the manager's discount, not modelled).
            for col in t.collateral:
                counted = col.counted / cm.WAD
                collateral[i, column[col.asset]] += counted
                weighted[i, column[col.asset]] += counted / (1 + m)
                c -= counted
            if c >= 0:
                collateral[i, usd] += c
                weighted[i, usd] += c / (1 + m)
            else:
                debt[i, usd] += -c / (1 + m)
        share = book.penalty_ratio / cm.RATIO / 2
        prices = [price_of[s] for s in symbols[:-1]] + [1.0]
        bonus = [share] * (a - 1) + [0.0]
        portfolio = Portfolio.build(symbols, prices, collateral, weighted, debt, bonus,
                                    close_factor=0.5, full_close_below=0.5,
                                    accounts=[t.account for t in traders])
        collateral_tokens = {c.asset: c.token for t in book.traders for c in t.collateral}
        assets = [Asset(s, by_asset[s].base if s in by_asset else collateral_tokens[s], 18,
                        prices[i], share) for i, s in enumerate(symbols[:-1])]
        assets.append(Asset("USD", "0x" + "0" * 40, 6, 1.0, 0.0, numeraire=True))
        return portfolio, assets

    async def cascade_depth(self, book: CurieBook, assets: Sequence[Any], block: int
                            ) -> list[Any]:
        """The depth the unwinds of liquidated positions trade against: each market's own
        Uniswap V3 pool of virtual tokens (not the spot market), read at the block."""
        from keeperd.protocols.sdk.depth import uniswap_v3_depth
        from keeperd.risk.depth import NoImpact

        out: list[Any] = []
        for asset in assets:
            pool = self.pools.get(asset.address)
            out.append(NoImpact() if pool is None else await uniswap_v3_depth(
                self.pool, pool, asset.address, 18, block))
        return out

    # --- events ---------------------------------------------------------------------------------

    def liquidation_logs(self, book: CurieBook | None, accounts: Sequence[str]
                         ) -> dict[str, Any]:
        return {"address": [self.config.clearing_house, self.addresses["Vault"]],
                "topics": [[POSITION_LIQUIDATED, COLLATERAL_LIQUIDATED],
                           [account_topic(a) for a in accounts]]}

    def decode_liquidation(self, entry: dict[str, Any], book: CurieBook | None
                           ) -> LiquidationSeen | None:
        topics = entry.get("topics") or []
        if len(topics) == 4 and topics[0] == COLLATERAL_LIQUIDATED:
            return self._decode_collateral_liquidation(entry, topics, book)
        if len(topics) < 3 or topics[0] != POSITION_LIQUIDATED:
            return None
        notional, size, fee, liquidator = decode(["uint256", "uint256", "uint256", "address"],
                                                 bytes.fromhex(entry["data"][2:]))
        base = to_checksum_address("0x" + topics[2][-40:])
        market = self._symbols.get(base, base)
        block = entry.get("blockNumber")
        return LiquidationSeen(
            to_checksum_address("0x" + topics[1][-40:]), to_checksum_address(liquidator),
            int(block, 16) if block else None, entry.get("transactionHash") or "",
            entry.get("logIndex") or "",
            f"{size / cm.WAD:,.6g} {market} (${notional / cm.WAD:,.2f}) taken over, penalty "
            f"${fee / cm.WAD:,.2f}", None, None,
            {"market": market, "size": size / cm.WAD, "notional_usd": notional / cm.WAD,
             "penalty_usd": fee / cm.WAD, "liquidator": liquidator.lower()},
            {"market": market},
            # The takeover itself realises nothing: the liquidator's share of the penalty (half;
            # all of it when the trader is left with bad debt) is a discount in the price its
            # position opens at, realised with the rest of that position by the unwind
            # (`CurieLiquidator.realised`, from the keeper's own trades' events). Booking
            # half the penalty here counted it whatever closing the position cost.
            profit_usd=0.0, realised_later="its share of the penalty is realised when the "
            "position is unwound")

    def _decode_collateral_liquidation(self, entry: dict[str, Any], topics: list[str],
                                       book: CurieBook | None) -> LiquidationSeen:
        taken, repaid, fund_fee, _discount = decode(
            ["uint256", "uint256", "uint256", "uint24"], bytes.fromhex(entry["data"][2:]))
        token = to_checksum_address("0x" + topics[2][-40:])
        symbol, decimals, price_decimals, _ = self.collaterals.get(token, (token, 18, 18, 0))
        paid = (repaid + fund_fee) / 10**6
        block = entry.get("blockNumber")
        # What the liquidator gained: the tokens at the feed's latest price, less the USDC it
        # paid (the vault priced them at its TWAP, above the market in a crash: booking
        # nothing but the gas hid a trial's $8,695 loss). Unknown without a book's price.
        spot = book.collateral_spot.get(token) if book is not None else None
        seized = taken / 10**decimals * spot / 10**price_decimals if spot else None
        return LiquidationSeen(
            to_checksum_address("0x" + topics[1][-40:]),
            to_checksum_address("0x" + topics[3][-40:]),
            int(block, 16) if block else None, entry.get("transactionHash") or "",
            entry.get("logIndex") or "",
            f"{taken / 10**decimals:,.6g} {symbol} of margin sold for ${paid:,.2f} of its USDC "
            f"debt", repaid / 10**6, seized,
            {"collateral": symbol, "amount": taken / 10**decimals, "repaid_usd": repaid / 10**6,
             "insurance_fund_fee_usd": fund_fee / 10**6,
             "liquidator": "0x" + topics[3][-40:].lower()},
            {"market": symbol}, profit_usd=None if seized is None else seized - paid)

    async def price_feeds(self, book: CurieBook) -> list[PriceFeed]:
        """Each market's index: the Chainlink aggregator behind its base token's feed
        (BaseToken -> PriceFeedDispatcher -> ChainlinkPriceFeedV3 -> aggregator), found once
        per market; a market on Uniswap's TWAP instead names none and is not watched here."""
        unknown = [b for b in book.markets if b not in self._index_sources]
        if unknown:
            found: list[str | None] = list(unknown)
            for getter in ("getPriceFeed()", "getChainlinkPriceFeedV3()", "getAggregator()"):
                answers = await self.multicall.aggregate3(
                    [Call(a, encode_call(getter, [], [])) for a in found if a is not None],
                    book.block)
                it = iter(answers)
                found = [None if a is None else _address(next(it)) for a in found]
            self._index_sources.update(zip(unknown, found, strict=True))
        return [PriceFeed(m.asset, source, label=f"{self.name} {m.symbol} index")
                for b, m in book.markets.items()
                if (source := self._index_sources.get(b)) is not None]

    def liquidator(self, keeper: Any, keeper_address: str | None, tx: Any) -> Any:
        from keeperd.protocols.perp_curie.liquidator import CurieLiquidator

        return CurieLiquidator(self, keeper, keeper_address, tx)
