"""The Aave V3 plug-in: the protocol contract (`protocols/sdk/contract.py`) over the indexer, the
reader, the exact math and the liquidation planner."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import structlog
from eth_utils import to_checksum_address

from keeperd.chain.calls import ContractCall
from keeperd.chain.multicall import Call, Multicall, encode_call
from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable
from keeperd.config import AaveV3Config, ConfigIssue
from keeperd.protocols.aave_v3 import abi
from keeperd.protocols.aave_v3.book import AaveBook, MarketState, Positions, Reserve
from keeperd.protocols.aave_v3.math import MAX_UINT256, FastHealth, exact_account_data
from keeperd.protocols.aave_v3.reader import AaveV3Reader
from keeperd.protocols.aave_v3.revisions import LATEST_KNOWN, rules_for
from keeperd.protocols.sdk.contract import LiquidationSeen, PluginBase, PluginContext, account_topic
from keeperd.protocols.sdk.feeds import PriceFeed
from keeperd.protocols.sdk.indexer import AccountIndexer, LogFilter
from keeperd.protocols.sdk.views import AccountRow, BookRisk, HealthView

log = structlog.get_logger(__name__)

async def revision_issues(pool: RpcPool, proto: AaveV3Config, pi: int) -> list[ConfigIssue]:
    """With `unknown_revision: hold`, an Aave pool whose POOL_REVISION keeperd does not know
    would have its liquidations held at start: say so now, with the fix. (With `verify`, the
    default, keeperd liquidates it on the chain's word: nothing to fix.)"""
    if proto.unknown_revision != "hold":
        return []
    try:
        pool_address = proto.pool or await ContractCall(
            proto.addresses_provider, "getPool()", returns=["address"]).call(pool)
        revision = await ContractCall(pool_address, "POOL_REVISION()").call(pool)
    except (RpcError, RpcUnavailable):
        return []  # a missing contract is reported above; a v3.0 fork may lack the getter
    rules = rules_for(revision, set(proto.accept_revisions))
    if rules.known and rules.tested:
        return []
    if rules.known:
        return [ConfigIssue(
            f"protocols[{pi}].accept_revisions",
            f"the pool reports POOL_REVISION {revision} ({rules.release}), whose rules keeperd "
            "follows from its sources without having run them against a real pool: "
            f"liquidations on {proto.name!r} would be held (unknown_revision: hold)",
            f"set unknown_revision: verify (each liquidation sent on the chain's own answer), "
            f"or, having checked keeperd's rules for it (docs/protocols.md), add {revision} "
            "to accept_revisions")]
    return [ConfigIssue(
        f"protocols[{pi}].accept_revisions",
        f"the pool reports POOL_REVISION {revision}, which keeperd does not know "
        f"({rules.release}): liquidations on {proto.name!r} would be held",
        f"check the upgrade's release notes, then add {revision} to accept_revisions, or "
        "set unknown_revision: verify")]


BALANCE_TRANSFER = abi.topic("BalanceTransfer(address,address,uint256,uint256)")


def extract_accounts(entry: dict[str, Any],
                     cache: dict[str, str] | None = None) -> Iterable[str]:
    """The accounts whose position a Pool or aToken log changed."""
    topics = entry.get("topics") or []
    if not topics:
        return ()
    if topics[0] == BALANCE_TRANSFER and len(topics) >= 3:
        return (abi.topic_address(topics[1], cache), abi.topic_address(topics[2], cache))
    pos = abi.ACCOUNT_TOPIC.get(topics[0])
    if pos is None or len(topics) <= pos:
        return ()
    return (abi.topic_address(topics[pos], cache),)


class RowAssets(Sequence[frozenset[str]]):
    """The symbols each account uses (collateral or debt), built only for the rows asked for:
    alerts and the breaker look at a handful of accounts of a 10k-account view."""

    def __init__(self, used: np.ndarray, symbols: Sequence[str]) -> None:
        self._used, self._symbols = used, symbols

    def __len__(self) -> int:
        return len(self._used)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return frozenset(self._symbols[int(c)] for c in np.flatnonzero(self._used[i]))


async def oracle_feeds(multicall: Multicall, oracle: str, reserves: Sequence[Reserve],
                       block: int | str) -> list[PriceFeed]:
    """The source the AaveOracle reads for each reserve (`getSourceOfAsset`), as price feeds
    under the reserve's symbol; a reserve without one is left out."""
    answers = await multicall.aggregate3(
        [Call(oracle, encode_call("getSourceOfAsset(address)", ["address"], [r.asset]))
         for r in reserves], block)
    return [PriceFeed(r.symbol, to_checksum_address(a.data[12:32]))
            for r, a in zip(reserves, answers, strict=True)
            if a.success and len(a.data) >= 32 and int.from_bytes(a.data[:32], "big")]


class AaveV3Adapter(PluginBase):
    kind = "aave_v3"
    config_model = AaveV3Config
    position_action = (
        "Add collateral or repay debt now. Below health 1.0 anyone may liquidate the position "
        "and take the liquidation bonus out of the collateral (Aave V3.3+: all of a debt, or "
        "half of a large position's debt while health stays above 0.95).")

    def __init__(self, config: AaveV3Config, ctx: PluginContext) -> None:
        chain, pool, store, metrics = ctx.chain, ctx.pool, ctx.store, ctx.metrics
        self.config = config
        self.index_interval_s = config.index_interval
        self.full_rescan_interval_s = config.full_rescan_interval
        self.name = config.name
        self.chain = chain.name
        self.chain_config = chain
        self.pool = pool
        self.store = store
        self.metrics = metrics
        self.multicall = Multicall(pool, address=chain.multicall3,
                                   chunk_size=chain.multicall_chunk_size,
                                   max_request_bytes=chain.max_request_bytes,
                                   scan_reader=chain.scan_reader)
        self.reader: AaveV3Reader | None = None
        self.indexer: AccountIndexer | None = None
        # The revision and implementation last read: a change is logged in the block it is seen.
        self._seen_rules: dict[str, Any] | None = None
        self._start_market: MarketState | None = None  # (what `started` says)
        # The parity gate: keeperd's health against getUserAccountData (see record_parity).
        self.parity_mismatch: tuple[int, int] | None = None  # (block, accounts) while held
        self._parity_suspects: set[str] = set()  # accounts whose last check disagreed
        if metrics is not None:  # exported from the start (stays zero): alerts rely on it
            metrics.health_mismatches.labels(self.chain, self.name)

    @staticmethod
    async def check_config(pool: RpcPool, proto: AaveV3Config, pi: int) -> list[ConfigIssue]:
        """`check-config` against the chain: contracts where the addresses point, and a pool
        revision keeperd knows (else its liquidations would be held at start)."""
        from keeperd.protocols.sdk.checks import contract_issues

        issues = await contract_issues(pool, proto, pi,
                                       ("addresses_provider", "pool", "oracle", "data_provider"))
        return issues + await revision_issues(pool, proto, pi)

    async def start(self) -> None:
        c = self.config
        self.reader = await AaveV3Reader.resolve(
            self.multicall, c.addresses_provider, pool=c.pool, oracle=c.oracle,
            data_provider=c.data_provider, accepted_revisions=frozenset(c.accept_revisions),
            chain_id=self.chain_config.chain_id)
        head = int(await self.pool.request("eth_blockNumber"), 16)
        market = await self.reader.read_market(head)
        self._seen_rules = self._describe_rules(market)
        self._start_market = market
        log.info("aave.pool_rules", protocol=self.name, block=head, **self._seen_rules)
        # Pool events, plus aToken transfers (which move collateral without a Pool event).
        addresses = (self.reader.addresses.pool, *(r.a_token for r in market.reserves))
        self.indexer = AccountIndexer(
            self.name, self.chain, self.pool, self.store,
            LogFilter(addresses, ((*abi.POSITION_EVENTS, BALANCE_TRANSFER),)),
            extract_accounts, start_block=c.start_block,
            confirmations=self.chain_config.confirmations, metrics=self.metrics)
        await self.indexer.start()

    def started(self) -> str | None:
        market = self._start_market
        if market is None or self.reader is None:
            return None
        rules = market.rules
        if rules.known and rules.tested:
            verdict = "rules keeperd knows"
        elif rules.known and self.config.unknown_revision == "hold":
            verdict = ("rules keeperd follows from their sources, not run against a real pool: "
                       f"its liquidations are held (unknown_revision: hold; accept_revisions: "
                       f"[{rules.revision}] trusts them)")
        elif rules.known:
            verdict = ("rules keeperd follows from their sources, not run against a real pool: "
                       "each liquidation is sent only on the chain's own answer "
                       f"(unknown_revision: verify; accept_revisions: [{rules.revision}] trusts "
                       "them)")
        elif self.config.unknown_revision == "hold":
            verdict = (f"{self._unknown_what(market)}: its liquidations are held "
                       "(unknown_revision)")
        else:
            verdict = (f"{self._unknown_what(market)}: each liquidation is sent only on the "
                       "chain's own answer (unknown_revision: verify)"
                       + ("; not pinned (`pool:`): the keeper approves it nothing"
                          if self.config.pool is None else ""))
        return (f"pool {self.reader.addresses.pool}, POOL_REVISION {rules.revision} "
                f"({rules.release}): {verdict}; {len(market.reserves)} reserves")

    # --- gates: when keeperd must not act on its own numbers --------------------------------

    async def health_elsewhere(self, book: AaveBook, accounts: Sequence[str], endpoint: Any
                               ) -> dict[str, float] | None:
        """The pool's own getUserAccountData health of `accounts` at the book's block, in one
        aggregate3 on `endpoint` (an account with no debt: inf)."""
        from eth_abi import decode

        from keeperd.chain.multicall import decode_aggregate3_columns, encode_aggregate3

        if not accounts or self.reader is None:
            return None
        calls = [Call(self.reader.addresses.pool, abi.get_user_account_data(a))
                 for a in accounts]
        tx = {"to": self.multicall.address, "data": "0x" + encode_aggregate3(calls).hex()}
        [answer] = await self.pool.batch_on(endpoint, [("eth_call", [tx, hex(book.block)])])
        if not isinstance(answer, str):
            return None
        results = decode_aggregate3_columns(bytes.fromhex(answer[2:]))
        if len(results) != len(accounts):
            return None
        found = {}
        for account, r in zip(accounts, results, strict=True):
            if r.success and len(r.data) >= 192:
                data = decode(["uint256"] * 6, r.data)
                found[account] = math.inf if data[1] == 0 else data[5] / 1e18
        return found

    def book_risk(self, book: AaveBook) -> BookRisk | None:
        """The bad debt the pool carries already: its reserves' deficit (v3.3+), written off
        when a liquidation leaves a position with debt and no collateral, until Umbrella or
        the treasury covers it. A crash's ~$820k of it on the devnet showed nowhere: the
        cascade's figures are what a shock would do, and fell once the crash had done it (a
        by-hand trial). Priced at the block's oracle prices. None before v3.3 (no deficit)."""
        market = book.market
        if not market.deficits:
            return None
        if any(d is None for d in market.deficits):
            unread = [r.symbol for r, d in zip(market.reserves, market.deficits, strict=True)
                      if d is None]
            return BookRisk(None, [f"reserve deficit unknown: getReserveDeficit failed for "
                                   f"{', '.join(unread)}"],
                            outstanding_bad_debt_usd=math.nan)  # (unknown, not $0)
        parts = {r.symbol: (d / 10**r.decimals, p / market.base_unit)
                 for r, d, p in zip(market.reserves, market.deficits, market.prices,
                                    strict=True) if d}
        total = sum(amount * usd for amount, usd in parts.values())
        lines = ([f"reserve deficit (bad debt written off, not yet covered): ${total:,.2f} "
                  "(" + ", ".join(f"{sym} ${amount * usd:,.2f}"
                                  for sym, (amount, usd) in parts.items()) + ")"]
                 if parts else ["no reserve deficit"])
        return BookRisk(None, lines, outstanding_bad_debt_usd=total, bad_debt_parts=parts)

    def liquidation_hold(self, book: AaveBook) -> str | None:
        return self.hold_for(book.market)

    def liquidation_verification(self, book: AaveBook) -> str | None:
        return self.verification_for(book.market)

    def verification_at_start(self) -> str | None:
        market = self._start_market
        return self.verification_for(market) if market is not None else None

    def verification_for(self, market: MarketState) -> str | None:
        """Why each liquidation on this market is sent only on the chain's word (rules keeperd
        does not know for sure, under `unknown_revision: verify`), or None."""
        if (market.rules.known and market.rules.tested) \
                or self.config.unknown_revision != "verify":
            return None
        unpinned = ("; the config does not pin the pool, so the keeper approves it nothing "
                    f"more until `protocols[{self.name}].pool` is set (liquidations from the "
                    "keeper's balance go only within the allowances it has; flash ones, "
                    "which need none, go on)"
                    if self.config.pool is None and not market.rules.known else "")
        return self._doubt(market) + unpinned

    @staticmethod
    def _unknown_what(market: MarketState) -> str:
        """What keeperd does not know of an unknown market: the number, or the code behind a
        number it knows (check-config said "not a revision keeperd knows" of the code)."""
        if market.rules.revision in range(1, LATEST_KNOWN + 1) and market.implementation \
                is not None and not market.implementation.recognised:
            return (f"code keeperd does not recognise at {market.implementation.address} "
                    "(a fork's, or an upgrade not yet published)")
        return "not a revision keeperd knows"

    @staticmethod
    def _doubt(market: MarketState) -> str:
        rules, impl = market.rules, market.implementation
        where = f" on implementation {impl.address}" if impl is not None else ""
        if rules.known:
            return (f"POOL_REVISION {rules.revision} ({rules.release}){where}: keeperd follows "
                    "its rules from the sources and has not run them against a real pool")
        return (f"POOL_REVISION {rules.revision} ({rules.release}){where} is not one keeperd "
                "knows")

    @staticmethod
    def _describe_rules(market: MarketState) -> dict[str, Any]:
        impl = market.implementation
        return {"revision": market.rules.revision, "release": market.rules.release,
                "known": market.rules.known, "tested": market.rules.tested,
                "implementation": impl.address if impl is not None else None,
                "fingerprint": impl.fingerprint if impl is not None else None,
                "recognised_as": impl.recognised_as if impl is not None else None}

    def hold_for(self, market: MarketState) -> str | None:
        """Why liquidations on this market are held, or None. Evaluation and alerts go on."""
        rules = market.rules
        if not (rules.known and rules.tested) and self.config.unknown_revision == "hold":
            return (f"{self._doubt(market)} (unknown_revision: hold); after checking the "
                    f"upgrade's release notes, add {rules.revision} to accept_revisions of "
                    f"protocol {self.name!r}, or set unknown_revision: verify to liquidate "
                    "on the chain's word")
        if self.config.parity_gate and self.parity_mismatch is not None:
            block, count = self.parity_mismatch
            return (f"keeperd's health factor differed from the pool's getUserAccountData for "
                    f"{count} account(s) at block {block}: keeperd's model of this market is "
                    "wrong until the accounts that disagreed agree again (they are read and "
                    "checked every block meanwhile)")
        return None

    def record_parity(self, block: int, checked: Collection[str],
                      mismatched: Collection[str]) -> None:
        """One cross-check against getUserAccountData. A mismatch holds liquidations; the
        accounts that disagreed are read and checked again every block while held (`read`),
        and the hold ends when each of them agrees at a block where no checked account
        disagrees. (It used to wait for a count of clean checks — but only accounts that
        events touch are read between full scans: on a quiet market, or blocks that only move
        prices, no check came, and a mismatch from one racing read held liquidations for
        good, through the very crash they were needed for.)"""
        if mismatched:
            self.parity_mismatch = (block, len(mismatched))
            self._parity_suspects |= set(mismatched)
        self._parity_suspects -= set(checked) - set(mismatched)
        if not mismatched and not self._parity_suspects:
            self.parity_mismatch = None

    def _need_started(self) -> tuple[AaveV3Reader, AccountIndexer]:
        if self.reader is None or self.indexer is None:
            raise RuntimeError(f"adapter {self.name!r} used before start()")
        return self.reader, self.indexer

    @property
    def accounts(self) -> set[str]:
        return self._need_started()[1].accounts

    def index_lag(self, head: int) -> int | None:
        if self.indexer is None:
            return None
        return max(0, head - self.indexer.confirmations - self.indexer.indexed_block)

    async def discover(self, head: int) -> set[str]:
        _, indexer = self._need_started()
        return (await indexer.catch_up(head)).touched

    async def on_reorg(self, ancestor: int) -> list[str]:
        _, indexer = self._need_started()
        return await indexer.on_reorg(ancestor)

    async def read_market(self, block: int) -> MarketState:
        reader, _ = self._need_started()
        return await reader.read_market(block)

    async def read_positions(self, accounts: Sequence[str], market: MarketState,
                             block: int, always_check: Collection[str] = ()) -> Positions:
        reader, _ = self._need_started()
        return await reader.read_positions(accounts, market, block,
                                           cross_check_every=self.config.cross_check_every,
                                           always_check=always_check)

    async def snapshot(self, accounts: Sequence[str], block: int) -> AaveBook:
        market = await self.read_market(block)
        return AaveBook(market, await self.read_positions(accounts, market, block))

    async def read(self, block: int, previous: AaveBook | None, touched: set[str],
                   dropped: set[str]) -> AaveBook:
        """The market (one or two multicalls) and the accounts: all of them, or on top of
        `previous` only those events touched. Accounts read carry the pool's own
        getUserAccountData now and then: keeperd's health must equal it (the parity gate)."""
        market = await self.read_market(block)
        if previous is None:
            positions = await self.read_positions(sorted(self.accounts), market, block)
            fresh = np.arange(len(positions))
        else:
            # (accounts that disagreed with the pool are read and checked again while held;
            # one that left the index has nothing left to disagree on)
            suspects = self._parity_suspects = self._parity_suspects & self.accounts
            if not suspects:  # (a hold whose every suspect left: nothing to check again)
                self.parity_mismatch = None
            update = await self.read_positions(sorted((touched | suspects) & self.accounts),
                                               market, block, always_check=suspects)
            positions = previous.positions.merge(update, drop=dropped)
            fresh = np.array([positions.position_of[a] for a in update.accounts], dtype=np.intp)
        book = AaveBook(market, positions)
        rules_now = self._describe_rules(market)
        if rules_now != self._seen_rules:
            # An upgrade (or a fork's) under the running daemon: from this block on, the
            # new revision's rules, verified if keeperd does not recognise them.
            log.warning("aave.pool_rules_changed", protocol=self.name, block=block,
                        before=self._seen_rules, **rules_now)
            self._seen_rules = rules_now
        self._check_against_chain(book, fresh)
        self.metrics.protocol_revision.labels(self.chain, self.name).set(market.rules.revision)
        return book

    def _check_against_chain(self, book: AaveBook, rows: np.ndarray) -> None:
        pos = book.positions
        if pos.chain_account_data is None or pos.chain_checked is None or len(rows) == 0:
            return
        rows = rows[pos.chain_checked[rows]]
        if len(rows) == 0:
            return
        subset = pos.take(rows)
        exact = exact_account_data(book.market, subset)
        assert subset.chain_account_data is not None
        bad = [subset.accounts[i] for i in range(len(subset))
               if exact.health_factor[i] != subset.chain_account_data[i, 5]]
        self.record_parity(book.market.block, subset.accounts, bad)
        if bad:
            self.metrics.health_mismatches.labels(self.chain, self.name).inc(len(bad))
            log.error("positions.health_mismatch", protocol=self.name, accounts=bad[:10],
                      count=len(bad),
                      meaning="local health differs from the protocol's; check the adapter")

    def first_pass(self, previous: AaveBook | None, book: AaveBook
                   ) -> tuple[np.ndarray, np.ndarray, HealthView] | None:
        """The reverse index: when prices moved, the accounts exposed to the moved assets;
        the float path finds the few near or under 1, and only those get the exact math."""
        if previous is None:
            return None
        moved = [i for i, (a, b) in enumerate(zip(previous.market.prices, book.market.prices,
                                                  strict=False)) if a != b]
        if not moved:
            return None
        positions = book.positions
        exposed = (positions.dependents(moved[0]) if len(moved) == 1  # (sorted, unique)
                   else np.unique(np.concatenate([positions.dependents(c) for c in moved])))
        near = self.candidates(book, exposed)
        return exposed, near, self.evaluate(book, rows=near)

    # --- pure ---------------------------------------------------------------------------------

    def evaluate(self, book: AaveBook, prices: Mapping[str, float] | None = None,
                 rows: np.ndarray | None = None) -> HealthView:
        """Health per account. With no price override the health factor is Aave's own, exact
        to the wei; with overrides it is the float64 what-if."""
        positions = book.positions if rows is None else book.positions.take(rows)
        fast = FastHealth(book.market, positions).evaluate(prices)
        health = fast.health
        if not prices:
            exact = exact_account_data(book.market, positions)
            health = np.array([np.inf if h == MAX_UINT256 else int(h) / 1e18
                               for h in exact.health_factor], dtype=np.float64)
        symbols = book.market.symbols
        used = positions.collateral_flag | positions.borrowing_flag
        main_price = None
        if not prices:  # (a what-if's rows have no price of today's to say)
            usd = book.market.prices_usd()
            main_price = np.where(fast.main_column >= 0, usd[np.maximum(fast.main_column, 0)],
                                  np.nan)
        return HealthView(
            accounts=positions.accounts,
            health=health,
            collateral_usd=fast.collateral_usd,
            debt_usd=fast.debt_usd,
            liquidation_threshold=fast.liquidation_threshold,
            main_collateral=[symbols[m] if m >= 0 else None for m in fast.main_column],
            drop_to_liquidation=fast.drop_to_liquidation,
            assets=RowAssets(used, symbols),
            main_price=main_price,
        )

    def candidates(self, book: AaveBook, rows: np.ndarray, below: float = 1.0005) -> np.ndarray:
        """Rows whose float health is under `below`: a cheap first cut before the exact
        evaluation (the float path is within ~1.2e-4 of the exact one)."""
        fast = FastHealth(book.market, book.positions.take(rows)).evaluate()
        return rows[fast.health < below]

    def rows(self, book: AaveBook, view: HealthView) -> list[AccountRow]:
        exact = exact_account_data(book.market, book.positions)
        base = book.market.base_unit
        out: list[AccountRow] = []
        for i, account in enumerate(view.accounts):
            hf = int(exact.health_factor[i])
            drop = float(view.drop_to_liquidation[i])
            out.append(AccountRow(
                protocol=self.name,
                account=account,
                health_factor=None if hf == MAX_UINT256 else hf / 1e18,
                collateral_usd=int(exact.total_collateral_base[i]) / base,
                debt_usd=int(exact.total_debt_base[i]) / base,
                liquidation_threshold=int(exact.liquidation_threshold[i]) / 10_000 or None,
                main_collateral=view.main_collateral[i],
                drop_to_liquidation=None if np.isnan(drop) else round(drop, 6),
                extra={"health_factor_wad": str(hf) if hf != MAX_UINT256 else None,
                       "emode": int(book.positions.emode[i]), "chain": self.chain},
            ))
        return out

    # --- risk, events, execution --------------------------------------------------------------

    def describe(self, book: AaveBook) -> tuple[Any, list[Any]]:
        from keeperd.protocols.aave_v3.portfolio import aave_assets, aave_portfolio

        return aave_portfolio(book), aave_assets(book.market)

    def liquidation_logs(self, book: AaveBook | None, accounts: Sequence[str]
                         ) -> dict[str, Any]:
        reader, _ = self._need_started()
        return {"address": reader.addresses.pool,
                "topics": [abi.LIQUIDATION_CALL, None, None,
                           [account_topic(a) for a in accounts]]}

    def decode_liquidation(self, entry: dict[str, Any], book: AaveBook | None
                           ) -> LiquidationSeen | None:
        event = abi.decode_liquidation_call(entry)
        if event is None:
            return None

        def usd(asset: str, amount: int) -> tuple[str, float | None]:
            if book is None:
                return asset, None
            try:
                c = book.market.column(asset)
            except KeyError:
                return asset, None
            r = book.market.reserves[c]
            return r.symbol, amount / 10**r.decimals * float(book.market.prices_usd()[c])

        coll, seized = usd(event.collateral_asset, event.collateral_seized)
        debt, repaid = usd(event.debt_asset, event.debt_repaid)
        summary = (f"${repaid or 0:,.2f} of {debt} debt repaid, ${seized or 0:,.2f} of {coll} "
                   "collateral seized")
        return LiquidationSeen(
            event.user, event.liquidator, event.block, event.tx_hash or "",
            event.log_index or "", summary, repaid, seized,
            {"liquidator": event.liquidator.lower(),
             "debt_repaid_usd": None if repaid is None else round(repaid, 2),
             "collateral_seized_usd": None if seized is None else round(seized, 2)}, {})

    def liquidator(self, keeper: Any, keeper_address: str | None, tx: Any) -> Any:
        from keeperd.protocols.aave_v3.liquidator import AaveLiquidator

        return AaveLiquidator(self, keeper, keeper_address, tx)

    async def price_feeds(self, book: AaveBook) -> list[PriceFeed]:
        """Every reserve's source, as the market's AaveOracle names it at the book's block (a
        source changed by governance is watched from the block it changes)."""
        if self.reader is None:
            return []
        return await oracle_feeds(self.multicall, self.reader.addresses.oracle,
                                  book.market.reserves, book.block)
