"""The Morpho Blue plug-in: positions discovered from the contract's events, read in
Multicall3 batches (markets, oracle prices, borrow rates, every position), health computed
locally with interest accrued to the block's timestamp, exactly as `_isHealthy` does.

A view's rows are positions, one per (market, account): `labels` name the market."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import structlog
from eth_abi import decode
from eth_utils import keccak, to_checksum_address

from keeperd.chain.calls import ContractCall
from keeperd.chain.multicall import (
    Call,
    CallResult,
    Multicall,
    MulticallError,
    encode_call,
    event_topic,
)
from keeperd.chain.rpc import RpcPool
from keeperd.config import ConfigIssue, MorphoBlueConfig
from keeperd.protocols.morpho_blue import math as mm
from keeperd.protocols.morpho_blue.book import (
    MarketInfo,
    MorphoBook,
    MorphoPosition,
    loan_usd,
    market_key,
)
from keeperd.protocols.sdk.confirm import confirm_reads
from keeperd.protocols.sdk.contract import (
    FieldProblem,
    LiquidationSeen,
    LogIndexed,
    Outlook,
    PluginBase,
    PluginContext,
    StartRefused,
    account_topic,
)
from keeperd.protocols.sdk.feeds import PriceFeed
from keeperd.protocols.sdk.indexer import AccountIndexer, LogFilter
from keeperd.protocols.sdk.views import AccountRow, BookRisk, HealthView, row_key

log = structlog.get_logger(__name__)

MARKET_PARAMS = "(address,address,address,address,uint256)"
LIQUIDATE_CALL = f"liquidate({MARKET_PARAMS},address,uint256,uint256,bytes)"  # (the function)


topic = event_topic

SUPPLY_COLLATERAL = topic("SupplyCollateral(bytes32,address,address,uint256)")
BORROW = topic("Borrow(bytes32,address,address,address,uint256,uint256)")
REPAY = topic("Repay(bytes32,address,address,uint256,uint256)")
WITHDRAW_COLLATERAL = topic("WithdrawCollateral(bytes32,address,address,address,uint256)")
LIQUIDATE = topic("Liquidate(bytes32,address,address,uint256,uint256,uint256,uint256,uint256)")
# Which topic holds the account: onBehalf, or the borrower for Liquidate.
_ACCOUNT_TOPIC = {SUPPLY_COLLATERAL: 3, BORROW: 2, REPAY: 3, WITHDRAW_COLLATERAL: 2,
                  LIQUIDATE: 3}


# MorphoChainlinkOracleV2's getters of the feeds it composes (a zero address: unused).
ORACLE_FEED_GETTERS = tuple(encode_call(f"{name}()", [], []) for name in (
    "BASE_FEED_1", "BASE_FEED_2", "QUOTE_FEED_1", "QUOTE_FEED_2"))


def extract(entry: dict[str, Any], cache: dict[str, str]) -> Iterable[str]:
    topics = entry.get("topics", [])
    where = _ACCOUNT_TOPIC.get(topics[0]) if topics else None
    if where is None or len(topics) <= where:
        return ()
    raw = "0x" + topics[where][-40:]
    if raw not in cache:
        cache[raw] = to_checksum_address(raw)
    return (cache[raw],)


def params_problem(market_id: str, params: bytes) -> str | None:
    """A market's id is the keccak of its ABI-encoded parameters (Morpho's MarketParamsLib):
    parameters read from an endpoint that do not hash to the configured id are not that
    market's — a lying or broken endpoint would have keeperd price, approve and liquidate
    against an oracle and tokens of its choosing. None when they agree."""
    if len(params) < 160:
        return f"market {market_id}: idToMarketParams answered {len(params)} bytes, not 160"
    actual = "0x" + keccak(params[:160]).hex()
    if actual != market_id.lower():
        return (f"market {market_id}: the parameters the endpoint returned hash to {actual}, "
                "not to the market's id; refusing to watch or liquidate it (check the RPC "
                "endpoint)")
    return None


# A block's header and its markets' (state, oracle price) results, in market order.
_Markets = tuple[dict[str, Any], Sequence[CallResult]]


class MorphoBlueAdapter(LogIndexed, PluginBase):
    kind = "morpho_blue"
    config_model = MorphoBlueConfig
    position_action = ("Add collateral or repay: below 1.0 anyone may liquidate the whole "
                       "debt, with the market's liquidation incentive.")

    def __init__(self, config: MorphoBlueConfig, ctx: PluginContext) -> None:
        chain, pool, store, metrics = ctx.chain, ctx.pool, ctx.store, ctx.metrics
        self.config = config
        self.index_interval_s = config.index_interval
        self.name = config.name
        self.chain = chain.name
        self.pool = pool
        self.metrics = metrics
        self.multicall = Multicall(pool, address=chain.multicall3,
                                   chunk_size=chain.multicall_chunk_size)
        self.markets: dict[str, MarketInfo] = {}
        # The markets read ahead for a block by `quiet`, taken by the read of that block.
        self._ahead: tuple[int, asyncio.Future[_Markets]] | None = None
        # The last book evaluated and its health per position (`outlook` screens with it).
        self._evaluated: tuple[MorphoBook, np.ndarray] | None = None
        self._behind: dict[str, tuple[str, ...]] = {}  # oracle -> the feeds it composes
        self.indexer = AccountIndexer(
            config.name, chain.name, pool, store,
            LogFilter((config.morpho,), (tuple(_ACCOUNT_TOPIC),
                                         tuple(m.lower() for m in config.markets))),
            extract, start_block=config.start_block, confirmations=chain.confirmations,
            metrics=metrics)


    @staticmethod
    async def check_config(pool: RpcPool, proto: MorphoBlueConfig, pi: int
                           ) -> list[ConfigIssue]:
        from keeperd.protocols.sdk.checks import contract_issues

        return await contract_issues(pool, proto, pi, ("morpho", "liquidator_contract"))

    async def start(self) -> None:
        calls = [Call(self.config.morpho, encode_call("idToMarketParams(bytes32)",
                                                       ["bytes32"], [bytes.fromhex(m[2:])]))
                 for m in self.config.markets]
        results = await self.multicall.aggregate3(calls)
        for i, (market_id, result) in enumerate(zip(self.config.markets, results,
                                                    strict=True)):
            if not result.success or len(result.data) < 5 * 32:
                # (a contract that is not Morpho: "InsufficientDataBytes", naming nothing —
                # a by-hand trial)
                raise StartRefused(
                    f"protocols[{self.name}].morpho: {self.config.morpho} does not answer "
                    f"idToMarketParams as Morpho Blue does (for market {market_id}): not the "
                    "Morpho contract; check the address (the chain's Morpho Blue)")
            loan, collateral, oracle, irm, lltv = decode(
                ["address", "address", "address", "address", "uint256"], result.data)
            if int(loan, 16) == 0:
                raise FieldProblem(
                    f"{self.name}: market {market_id} does not exist on {self.config.morpho} "
                    "(idToMarketParams answers an empty market)", field=f"markets[{i}]",
                    fix="copy the market's id again (0x and 64 hex digits, from the Morpho "
                        "app's market page or its CreateMarket event): it is the id on this "
                        "chain of one of Morpho Blue's markets")
            if (problem := params_problem(market_id, result.data)) is not None:
                raise ValueError(f"{self.name}: {problem}")
            loan_symbol, loan_decimals, collateral_symbol, collateral_decimals = \
                await self._tokens(market_id, loan, collateral)
            self.markets[market_id.lower()] = MarketInfo(
                market_id.lower(), to_checksum_address(loan), to_checksum_address(collateral),
                to_checksum_address(oracle), to_checksum_address(irm), lltv,
                loan_symbol, collateral_symbol, loan_decimals, collateral_decimals)
        # (After the markets: a market that does not exist is a config error, said first.)
        await self.indexer.start()

    async def _tokens(self, market_id: str, loan: str, collateral: str
                      ) -> tuple[str, int, str, int]:
        """The market's loan and collateral tokens' symbol and decimals, agreed by every
        endpoint that answers. The market's id vouches for the tokens' addresses, not for
        these: a first endpoint's 6 decimals for an 18-decimals loan token made every profit
        10^12 times larger, and the contract's minProfit as much smaller (dust sent, each
        losing its gas); its "USDC" for a cheap token priced it at $1; the collateral as the
        native token priced Morpho's gas."""
        loan, collateral = to_checksum_address(loan), to_checksum_address(collateral)
        calls = [ContractCall(token, f"{getter}()", returns=[kind])
                 for token in (loan, collateral)
                 for getter, kind in (("symbol", "string"), ("decimals", "uint8"))]
        meta = await self.multicall.aggregate3([Call(c.to, c.data) for c in calls])
        read = (decode(["string"], meta[0].data)[0], decode(["uint8"], meta[1].data)[0],
                decode(["string"], meta[2].data)[0], decode(["uint8"], meta[3].data)[0])
        await confirm_reads(
            self.pool, calls, read, where=f"protocols[{self.name}].markets",
            names=[f"market {market_id}'s {role} token {token} {getter}()"
                   for role, token in (("loan", loan), ("collateral", collateral))
                   for getter in ("symbol", "decimals")],
            fix="keeperd would count the market's profit, its contract's minProfit and its "
                "gas in the wrong unit. Check each endpoint against the token on a block "
                "explorer, then remove or fix the one that disagrees (`chains[].rpc_urls`), "
                "or take the market out of `markets`")
        return read

    def started(self) -> str | None:
        markets = ", ".join(f"{m.name} (LLTV {m.lltv / 1e16:g} %)"
                            for m in self.markets.values())
        return (f"Morpho {self.config.morpho}: {len(self.markets)} market(s) exist with the "
                f"configured ids: {markets}")


    async def _markets_at(self, block: int) -> _Markets:
        """The block's header and, per market, its state and its oracle's price (one round
        trip: the two requests go together)."""
        header, first = await asyncio.gather(
            self.pool.request("eth_getBlockByNumber", [hex(block), False]),
            self.multicall.aggregate3(
                [c for m in self.markets.values() for c in (
                    Call(self.config.morpho, encode_call("market(bytes32)", ["bytes32"],
                                                         [bytes.fromhex(m.id[2:])])),
                    Call(m.oracle, encode_call("price()", [], [])))], block))
        return header, first

    async def outlook(self, block: int, previous: MorphoBook | None) -> Outlook | None:
        """The markets' states and oracle prices are what the read starts with: read here,
        beside the discovery, and kept for the read of the same block that follows. Quiet:
        every market as in `previous` (same state, same price), so only interest moved.
        Under: a position of `previous` is under water at the block's prices and states."""
        if previous is None:
            return None
        task = asyncio.ensure_future(self._markets_at(block))
        self._ahead = (block, task)  # (the read of this block takes it: `snapshot`)
        header, first = await task
        infos = list(self.markets.values())
        now: dict[str, tuple[mm.MarketState, int]] = {}
        for i, m in enumerate(infos):
            state_res, price_res = first[2 * i], first[2 * i + 1]
            if (m.id not in previous.markets or not (state_res.success
                                                     and len(state_res.data) >= 192)
                    or not (price_res.success and len(price_res.data) >= 32)):
                return "moved"  # (the read says what is wrong)
            now[m.id] = (mm.MarketState(*decode(["uint128"] * 6, state_res.data)),
                         decode(["uint256"], price_res.data)[0])
        moved = {i for i, (state, price) in now.items()
                 if (state, price) != previous.markets[i][1:3]}
        if not moved:
            return "quiet" if len(infos) == len(previous.markets) else "moved"
        return "under" if self._under_water(previous, int(header["timestamp"], 16), now,
                                            moved) else "moved"

    def _under_water(self, previous: MorphoBook, timestamp: int,
                     now: dict[str, tuple[mm.MarketState, int]], moved: set[str]) -> bool:
        """Whether a position of `previous`, in a market that moved, is under water at its
        market's new state and price (interest to `timestamp` at the previous rate, which
        the read of the block reads again). Screened by the health last evaluated: a
        position stays where its collateral's price ratio moves it, and one more than 5 %
        above it is left (a block's interest moves no health that far)."""
        markets = {i: (info, *now[i], rate) if i in now else (info, state, price, rate)
                   for i, (info, state, price, rate) in previous.markets.items()}
        book = MorphoBook(previous.block, timestamp, markets, previous.positions)
        evaluated = self._evaluated
        health = evaluated[1] if evaluated is not None and evaluated[0] is previous else None
        for row, p in enumerate(previous.positions):
            if p.market.id not in moved or not p.borrow_shares:
                continue
            if health is not None:
                before, after = previous.markets[p.market.id][2], now[p.market.id][1]
                if before and health[row] * after / before >= 1.05:
                    continue
            if book.health(p) < 1.0:
                return True
        return False

    async def snapshot(self, accounts: Sequence[str], block: int) -> MorphoBook:
        ahead, self._ahead = self._ahead, None  # (asked by `outlook` for this block, or stale)
        if ahead is not None and ahead[0] == block and not (
                ahead[1].done() and ahead[1].exception() is not None):
            header, first = await ahead[1]
        else:
            header, first = await self._markets_at(block)
        timestamp = int(header["timestamp"], 16)
        infos = list(self.markets.values())
        # A market whose oracle or rate model reverts is left out of this block (Morpho's own
        # liquidate would revert on it too): the others are evaluated and liquidated as usual.
        states: dict[str, tuple[mm.MarketState, int]] = {}
        for i, m in enumerate(infos):
            state_res, price_res = first[2 * i], first[2 * i + 1]
            if not (state_res.success and len(state_res.data) >= 192):
                self._unreadable(m, "market", block)
                continue
            if not (price_res.success and len(price_res.data) >= 32):
                self._unreadable(m, "oracle", block)
                continue
            states[m.id] = (mm.MarketState(*decode(["uint128"] * 6, state_res.data)),
                            decode(["uint256"], price_res.data)[0])
        readable = [m for m in infos if m.id in states]
        with_irm = [m for m in readable if int(m.irm, 16)]  # a market may have no rate model
        rate_calls = [Call(m.irm, encode_call(
            f"borrowRateView({MARKET_PARAMS},(uint128,uint128,uint128,uint128,uint128,uint128))",
            [MARKET_PARAMS, "(uint128,uint128,uint128,uint128,uint128,uint128)"],
            [m.params, tuple(states[m.id][0].__dict__.values())])) for m in with_irm]
        rates = dict.fromkeys((m.id for m in readable), 0)
        for m, r in zip(with_irm, await self.multicall.aggregate3(rate_calls, block)
                        if rate_calls else [], strict=True):
            if r.success and len(r.data) >= 32:
                rates[m.id] = decode(["uint256"], r.data)[0]
            else:
                self._unreadable(m, "irm", block)
                del rates[m.id]
        markets = {m.id: (m, states[m.id][0], states[m.id][1], rates[m.id])
                   for m in readable if m.id in rates}
        infos = [m for m in readable if m.id in markets]
        pairs = [(m, a) for a in sorted(accounts) for m in infos]
        results = await self.multicall.aggregate3(
            [Call(self.config.morpho, encode_call("position(bytes32,address)",
                                                  ["bytes32", "address"],
                                                  [bytes.fromhex(m.id[2:]), a]))
             for m, a in pairs], block)
        positions = []
        for (m, a), r in zip(pairs, results, strict=True):
            if not r.success:
                raise MulticallError(f"Morpho position({m.id}, {a}) failed at block {block}")
            _, borrow_shares, collateral = decode(["uint256", "uint128", "uint128"], r.data)
            if borrow_shares or collateral:
                positions.append(MorphoPosition(m, a, collateral, borrow_shares))
        return MorphoBook(block, timestamp, markets, tuple(positions))

    def _unreadable(self, market: MarketInfo, part: str, block: int) -> None:
        self.metrics.market_read_failures.labels(self.chain, self.name, market.name, part).inc()
        log.warning("morpho.market_unreadable", protocol=self.name, market=market.name,
                    part=part, block=block,
                    meaning="left out of this block; the other markets go on")

    async def health_elsewhere(self, book: MorphoBook, accounts: Sequence[str], endpoint: Any
                               ) -> dict[str, float] | None:
        """Each of `accounts`' positions' health at the book's block, read on `endpoint`
        alone the way the book is read (its markets' states, oracle prices, rate models and
        the positions, interest accrued to the block's time), keyed per position
        (`row_key`: an account's markets are rows of their own). A market the endpoint
        cannot read is left out (the first's reading stands there)."""
        if not accounts:
            return None
        other = copy.copy(self)
        other.multicall = self.multicall.on(endpoint)
        other.pool = other.multicall.pool
        other._ahead = None
        other._unreadable = lambda *args: None  # type: ignore[method-assign]
        second = await other.snapshot(accounts, book.block)
        return {row_key(p.account, {"market": p.market.name}): second.health(p)
                for p in second.positions}

    async def read(self, block: int, previous: MorphoBook | None, touched: set[str],
                   dropped: set[str]) -> MorphoBook:
        """Every position, every block: interest moves every health, and one multicall reads
        them all."""
        return await self.snapshot(sorted(self.accounts), block)

    def evaluate(self, book: MorphoBook, prices: Mapping[str, float] | None = None
                 ) -> HealthView:
        positions = book.positions
        health = np.array([book.health(p) for p in positions], dtype=np.float64)
        unit = np.array([10**p.market.loan_decimals for p in positions], dtype=np.float64)
        usd = np.array([loan_usd(p.market.loan_symbol) for p in positions], dtype=np.float64)
        debt = np.array([book.debt(p) for p in positions], dtype=np.float64) / unit * usd \
            if positions else np.zeros(0)
        coll = np.array([book.collateral_value(p) for p in positions], dtype=np.float64) \
            / unit * usd if positions else np.zeros(0)
        if prices:
            # A what-if (keeperd simulate's alerts): each side by its USD move from the price
            # the cascade's portfolio gives it today (a market's health is linear in its
            # oracle's rate, collateral over loan). It was ignored: "no alert" for a holder
            # the shock's cascade liquidated (a by-hand trial).
            from keeperd.protocols.morpho_blue.portfolio import morpho_usd_prices

            today = morpho_usd_prices(book)
            move = {s: prices[s] / today[s] for s in prices if today.get(s)}
            c = np.array([move.get(p.market.collateral_symbol, 1.0) for p in positions])
            d = np.array([move.get(p.market.loan_symbol, 1.0) for p in positions])
            health, coll, debt = health * c / d, coll * c, debt * d
        else:
            self._evaluated = (book, health)
        with np.errstate(divide="ignore", invalid="ignore"):
            drop = np.where(np.isfinite(health) & (health > 0),
                            np.maximum(0.0, 1.0 - 1.0 / health), np.nan)
        # (its oracle's rate, a whole collateral token in loan tokens: what a drop is of)
        rate = None if prices else np.array([
            book.markets[p.market.id][2] * 10**p.market.collateral_decimals
            / mm.ORACLE_PRICE_SCALE / 10**p.market.loan_decimals
            if p.market.id in book.markets else np.nan for p in positions], dtype=np.float64)
        return HealthView(
            accounts=[p.account for p in positions], health=health, collateral_usd=coll,
            debt_usd=debt,
            liquidation_threshold=np.array([p.market.lltv / mm.WAD for p in positions]),
            main_collateral=[p.market.collateral_symbol for p in positions],
            drop_to_liquidation=drop,
            labels=[{"market": p.market.name} for p in positions],
            # (and the market's own oracle, by its breaker name: a watched position's alert
            # says when the rate it is judged by is untrusted, as Aave's does for its feeds)
            assets=[frozenset({p.market.collateral_symbol, p.market.loan_symbol,
                               market_key(p.market.id)}) for p in positions],
            unread=[{"market": m.name} for market_id, m in self.markets.items()
                    if market_id not in book.markets],
            main_price=rate, price_unit=[p.market.loan_symbol for p in positions])

    def first_pass(self, previous: MorphoBook | None, book: MorphoBook) -> None:
        return None  # every position is evaluated at once (one multicall, no reverse index)

    def book_risk(self, book: MorphoBook) -> BookRisk:
        """Morpho Blue has no insurance fund: a position's bad debt is realised at its
        liquidation as a loss to its market's lenders. The fund is $0 (known), not unknown
        (the dashboard's line, the alert's "no insurance fund covers it"), but no fund, not
        one drained: no coverage ratio, whose 0 fired `KeeperdFundShortOfBadDebt` for good (a
        trial; a rule that skipped $0 funds would miss a real one drained, a review). A fund
        configured for this protocol, in risk.cascade.insurance_fund, is the operator's word
        and stands instead."""
        return BookRisk(0.0, ["no insurance fund: a market's bad debt is a loss to its "
                              "lenders, realised at the liquidation that leaves it"],
                        no_fund=True)

    def liquidation_hold(self, book: MorphoBook) -> str | None:
        return None

    def liquidation_verification(self, book: MorphoBook) -> str | None:
        return None  # keeperd knows the rules it runs

    def rows(self, book: MorphoBook, view: HealthView) -> list[AccountRow]:
        """Scan rows: one per (market, account)."""
        out = []
        for i, p in enumerate(book.positions):
            health, drop = float(view.health[i]), float(view.drop_to_liquidation[i])
            out.append(AccountRow(
                protocol=self.name, account=p.account,
                health_factor=None if not np.isfinite(health) else health,
                collateral_usd=float(view.collateral_usd[i]), debt_usd=float(view.debt_usd[i]),
                liquidation_threshold=p.market.lltv / mm.WAD,
                main_collateral=p.market.collateral_symbol,
                drop_to_liquidation=None if np.isnan(drop) else drop,
                extra={"market": p.market.name, "market_id": p.market.id, "chain": self.chain}))
        return out

    def describe(self, book: MorphoBook) -> tuple[Any, list[Any]]:
        from keeperd.protocols.morpho_blue.portfolio import describe_morpho

        return describe_morpho(book)

    def liquidation_logs(self, book: MorphoBook | None, accounts: Sequence[str]
                         ) -> dict[str, Any]:
        return {"address": self.config.morpho,
                "topics": [LIQUIDATE, [m for m in self.markets], None,
                           [account_topic(a) for a in accounts]]}

    def decode_liquidation(self, entry: dict[str, Any], book: MorphoBook | None
                           ) -> LiquidationSeen | None:
        topics = entry.get("topics") or []
        if len(topics) < 4 or topics[0] != LIQUIDATE:
            return None
        data = entry["data"][2:]
        words = [int(data[64 * i:64 * (i + 1)], 16) for i in range(5)]
        repaid, seized, bad_debt = words[0], words[2], words[3]
        info = self.markets.get(topics[1].lower())
        liquidator = to_checksum_address("0x" + topics[2][-40:])
        block = entry.get("blockNumber")
        repaid_usd = seized_usd = None
        if info is None:
            summary, details, labels = "", {"liquidator": liquidator.lower()}, {}
        else:
            loan, coll = 10**info.loan_decimals, 10**info.collateral_decimals
            usd = loan_usd(info.loan_symbol)
            if usd == usd:
                repaid_usd = repaid / loan * usd
                if book is not None and info.id in book.markets:
                    price = book.markets[info.id][2]
                    seized_usd = mm.mul_div_down(seized, price, mm.ORACLE_PRICE_SCALE) / loan * usd
            summary = (f"{repaid / loan:,.2f} {info.loan_symbol} repaid, {seized / coll:,.6g} "
                       f"{info.collateral_symbol} seized in {info.name}"
                       + (f", {bad_debt / loan:,.2f} {info.loan_symbol} of bad debt"
                          if bad_debt else ""))
            details = {"market": info.name, "debt_repaid": repaid / loan,
                       "collateral_seized": seized / coll, "bad_debt": bad_debt / loan,
                       "liquidator": liquidator.lower()}
            labels = {"market": info.name}
        return LiquidationSeen(
            to_checksum_address("0x" + topics[3][-40:]), liquidator,
            int(block, 16) if block else None, entry.get("transactionHash") or "",
            entry.get("logIndex") or "", summary, repaid_usd, seized_usd, details, labels)

    async def price_feeds(self, book: MorphoBook) -> list[PriceFeed]:
        """Each market rests on its own oracle: its rate (read into the book) is checked
        against its two assets' reference prices, and the Chainlink feeds behind a
        MorphoChainlinkOracleV2 (its BASE_/QUOTE_FEED getters, immutable: read once) are
        judged for age like any feed. Both under the market's key: a bad one pauses that
        market, not the assets' other markets."""
        feeds: list[PriceFeed] = []
        unknown = [m for m, _, _, _ in book.markets.values() if m.oracle not in self._behind]
        if unknown:
            answers = await self.multicall.aggregate3(
                [Call(m.oracle, g) for m in unknown for g in ORACLE_FEED_GETTERS], book.block)
            for i, m in enumerate(unknown):
                found = answers[i * len(ORACLE_FEED_GETTERS):(i + 1) * len(ORACLE_FEED_GETTERS)]
                self._behind[m.oracle] = tuple(
                    to_checksum_address(a.data[12:32]) for a in found
                    if a.success and len(a.data) >= 32 and int.from_bytes(a.data[:32], "big"))
        for info, _, price, _ in book.markets.values():
            key = market_key(info.id)
            rate = price / 10 ** (36 + info.loan_decimals - info.collateral_decimals)
            feeds.append(PriceFeed(key, info.oracle, rate, info.collateral_symbol,
                                   info.loan_symbol, f"{self.name} {info.name}"))
            feeds += [PriceFeed(key, f, label=f"{self.name} {info.name}")
                      for f in self._behind[info.oracle]]
        return feeds

    def liquidator(self, keeper: Any, keeper_address: str | None, tx: Any) -> Any:
        from keeperd.protocols.morpho_blue.liquidator import MorphoLiquidator

        return MorphoLiquidator(self, keeper, keeper_address, tx)


def encode_liquidate(params: tuple[str, str, str, str, int], borrower: str, seized: int,
                     repaid_shares: int) -> bytes:
    return encode_call(LIQUIDATE_CALL,
                       [MARKET_PARAMS, "address", "uint256", "uint256", "bytes"],
                       [params, borrower, seized, repaid_shares, b""])



