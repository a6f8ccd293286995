"""Aave V3's execution half: plans (the pure planner in `liquidation.py`) as opportunities,
and the calls that carry them out — `liquidationCall` on the pool with the keeper's own
balance, or the FlashLiquidator (Aave flash loan -> liquidationCall -> Uniswap V3 swap ->
repay) when the capital stage sends it down the flash path.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from eth_abi import decode as abi_decode
from eth_utils import to_checksum_address

from keeperd.chain.calls import ContractCall
from keeperd.chain.multicall import encode_call
from keeperd.config import KeeperConfig
from keeperd.protocols.aave_v3 import abi
from keeperd.protocols.aave_v3.book import AaveBook, MarketState
from keeperd.protocols.aave_v3.errors import ERRORS
from keeperd.protocols.aave_v3.liquidation import LiquidationPlan, plan_liquidations
from keeperd.protocols.aave_v3.math import exact_account_data
from keeperd.protocols.sdk import approvals
from keeperd.protocols.sdk.contract import (
    Allowed,
    Call,
    GasQuote,
    LiquidatorBase,
    Need,
    Opportunity,
    OpportunityKey,
    StartRefused,
    Verdict,
    Verification,
)
from keeperd.protocols.sdk.sale_caps import SaleCaps
from keeperd.protocols.sdk.swap import (
    SwapPools,
    answer,
    confirm_seller,
    min_out_per_in,
    uniswap_v3_pool,
)

if TYPE_CHECKING:
    from keeperd.protocols.aave_v3.adapter import AaveV3Adapter

log = structlog.get_logger(__name__)

MAX_UINT = 2**256 - 1
# Gas limit of a liquidationCall until receipts teach better (Aave V3 uses 250k-400k).
GAS_DEFAULT = 600_000
# v3.3+: when a liquidation takes the last collateral, the pool burns every other debt of
# the user into the reserve deficit, ~75k gas each (LiquidationLogic); with a margin.
BAD_DEBT_GAS_PER_ASSET = 100_000
# Flash-loan path: the amount borrowed is a bound above the planned repayment (the pool takes
# what the rules allow at inclusion, the rest goes back with the loan).
FLASH_BOUND_MARGIN = 1.001
FLASH_LIQUIDATE = "liquidate(address,address,address,uint256,uint24,uint256,uint256)"
LIQUIDATION_CALL = "liquidationCall(address,address,address,uint256,bool)"


def liquidation_calldata(plan: LiquidationPlan) -> bytes:
    """liquidationCall with `type(uint256).max`: the pool caps it at what its rules allow at
    inclusion, so a block of interest cannot leave a dust leftover (MustNotLeaveDust) — unless
    the most the rules allow would leave dust: then the plan's smaller amount, exactly."""
    amount = plan.amount_to_send if plan.amount_to_send is not None else MAX_UINT
    return encode_call(LIQUIDATION_CALL,
                       ["address", "address", "address", "uint256", "bool"],
                       [plan.collateral_asset, plan.debt_asset, plan.account,
                        amount, plan.receive_a_token])


def flash_amount(plan: LiquidationPlan) -> int:
    """What the flash-loan path borrows: a bound above the planned repayment."""
    if plan.amount_to_send is not None:
        return plan.amount_to_send  # exact: the contract offers the pool what it borrowed
    return int(plan.debt_to_cover * FLASH_BOUND_MARGIN) + 1


def swap_min_out_per_in(market: MarketState, collateral_col: int, debt_col: int,
                        slippage_bps: int) -> int:
    """The least the flash swap may pay, in debt-asset units per collateral unit sold (x 1e18):
    the oracle rate the plan was priced at, less the operator's `max_swap_slippage_bps`
    (the profit decision expects `swap_slippage_bps`; the bound leaves room for the pool's
    fee and the sale's own price impact, and stops a sandwich taking more). A rate, not an
    amount, so a seizure that differs from the plan at inclusion is bounded alike; rounded
    down."""
    collateral, debt = market.reserves[collateral_col], market.reserves[debt_col]
    return min_out_per_in(market.prices[collateral_col] * 10**debt.decimals,
                          market.prices[debt_col] * 10**collateral.decimals, slippage_bps)


def flash_calldata(collateral: str, debt: str, user: str, amount: int, swap_fee: int,
                   min_profit: int, min_out_per_in: int) -> bytes:
    """FlashLiquidator.liquidate: the contract derives the swap pool from the pair and the
    fee itself, and reverts below `min_out_per_in` (SwapBelowBound) or `min_profit`."""
    return encode_call(FLASH_LIQUIDATE,
                       ["address", "address", "address", "uint256", "uint24", "uint256",
                        "uint256"],
                       [collateral, debt, user, amount, swap_fee, min_profit, min_out_per_in])


def within_virtual_balances(opportunities: list[Opportunity], market: MarketState
                            ) -> list[Opportunity]:
    """Liquidations of one block that seize the same collateral draw on one reserve's virtual
    balance (v3.1+): once what they take together would exceed it, the rest take aTokens."""
    left = {r.asset: r.virtual_balance for r in market.reserves
            if r.virtual_balance is not None}
    out = []
    for opp in opportunities:
        plan: LiquidationPlan = opp.plan
        balance = left.get(plan.collateral_asset)
        if balance is not None and not plan.receive_a_token:
            if plan.collateral_seized > balance:
                opp = replace(opp, plan=replace(plan, receive_a_token=True))
            else:
                left[plan.collateral_asset] = balance - plan.collateral_seized
        out.append(opp)
    return out


class AaveLiquidator(LiquidatorBase):
    def __init__(self, adapter: AaveV3Adapter, config: KeeperConfig, keeper: str | None,
                 tx: Any) -> None:
        self.adapter = adapter
        self.config = config
        self.keeper = keeper
        self.tx = tx
        self.pool = adapter.pool
        self.flash_premium_bps = 9  # Aave V3's default FLASHLOAN_PREMIUM_TOTAL; read at start
        self._gas_used: dict[tuple[str, str], int] = {}
        self.supports_flash = config.flash_liquidator is not None
        self._market_read: MarketState | None = None  # (`confirm`'s, for `prepare`)
        # Why the keeper's approvals of the pool are held (`_approval_hold`), or None.
        self._approvals_held: str | None = None
        # The most debt to cover by (account, collateral, debt), lowercase: a flash sale too
        # large for its pool's depth (`sale_too_large`).
        self.sale_caps: SaleCaps[tuple[str, str, str]] = SaleCaps()

    @cached_property
    def swap_pools(self) -> SwapPools:
        return SwapPools(self.pool, self.config.uniswap_v3_factory, self.config.swap_fee)

    @property
    def _pool_address(self) -> str:
        reader = self.adapter.reader
        return reader.addresses.pool if reader is not None else ""

    def error_names(self) -> Mapping[str, str]:
        return ERRORS  # (v3.6's custom errors: "45" is HealthFactorNotBelowThreshold)

    def signing_rules(self) -> list[Allowed]:
        """The pool's liquidationCall and the pool as the one spender (own capital); the
        FlashLiquidator's entry point (flash capital)."""
        rules = []
        if self.config.capital in ("own-balance", "auto"):
            rules += [Allowed(self._pool_address, LIQUIDATION_CALL, "aave liquidation"),
                      Allowed.approval(self._pool_address, "approval of the aave pool")]
        if self.config.capital in ("flash-loan", "auto") and self.config.flash_liquidator:
            rules.append(Allowed(self.config.flash_liquidator, FLASH_LIQUIDATE,
                                 "aave flash liquidation"))
        return rules

    async def confirm(self, head: int) -> None:
        """The pool the keeper approves (liquidate mode) and the FlashLiquidator (when the
        flash path is configured), confirmed; the market read is kept for `prepare`."""
        self._market_read = None
        if self.config.mode == "liquidate":
            self._market_read = await self.adapter.read_market(head)
            await self._confirm_pool(self._market_read)
        if (self.config.capital in ("flash-loan", "auto") and self.adapter.reader is not None
                and self.config.flash_liquidator is not None):
            await self._confirm_flash_liquidator()

    async def prepare(self, head: int) -> None:
        """`confirm`; approve the pool once per reserve (own capital); read the flash
        premium."""
        await self.confirm(head)
        market = self._market_read
        if self.tx is not None and self.config.mode == "liquidate" and market is not None \
                and self.config.capital in ("own-balance", "auto") \
                and self._approvals_held is None:
            await self._ensure_approvals(head, market)
        if self.config.capital in ("flash-loan", "auto") and self.adapter.reader is not None:
            self.flash_premium_bps = await ContractCall(
                self._pool_address, "FLASHLOAN_PREMIUM_TOTAL()", returns=["uint128"]
            ).call(self.pool)

    async def _confirm_flash_liquidator(self) -> None:
        """Its factory and owner (`confirm_seller`), and the pool it flash-borrows from and
        liquidates on: this protocol's, or every liquidation through it would revert."""
        contract, field = str(self.config.flash_liquidator), "keeper.flash_liquidator"
        await confirm_seller(self.pool, contract, self.config.uniswap_v3_factory, field=field,
                             name="FlashLiquidator", owner=self.keeper)
        theirs = to_checksum_address(await answer(self.pool, contract, "aavePool()", "address",
                                                  field=field, name="FlashLiquidator"))
        if theirs != to_checksum_address(self._pool_address):
            raise StartRefused(
                f"{field}: {contract} liquidates on the Aave pool at {theirs}, not on "
                f"protocols[{self.adapter.name}]'s pool {self._pool_address}; deploy one for "
                "that pool (one FlashLiquidator per pool)")

    async def _confirm_pool(self, market: MarketState | None = None) -> None:
        """The pool gets the keeper's approvals and, through liquidationCall, its tokens:
        pinned in the config (`pool`, as the mainnet profiles do), or agreed by the endpoints
        (`protocols/confirm.py`) and running code keeperd recognises (a published Aave
        implementation, or a devnet build: `identity.py`). An operator who pins a pool has
        checked it; one keeperd found by asking is approved only if its code is known."""
        if self.adapter.config.pool is not None:
            return
        from keeperd.protocols.sdk.confirm import confirm_address

        where = f"protocols[{self.adapter.name}].pool"
        await confirm_address(self.pool, self.adapter.config.addresses_provider, "getPool()",
                              expected=self._pool_address, what="the Aave pool",
                              where=where, pin="pool")
        if market is not None:
            self._note_approval_hold(market)

    def _approval_hold(self, market: MarketState) -> str | None:
        """Why the keeper approves nothing more to the pool, or None: liquidate mode
        approves a pool keeperd found by asking (not pinned) only while it runs code keeperd
        recognises. At a start on unrecognised code this refused the start, while a running
        daemon seeing the same upgrade went on approving (a by-hand trial): one rule now, at
        start and every block — approvals held, told, the daemon up (alerts, verified
        liquidations within the allowances it has, the flash path)."""
        if self.adapter.config.pool is not None or market.rules.known \
                or self.config.capital == "flash-loan":  # (nothing to approve there)
            return None
        return (f"the pool behind {self.adapter.config.addresses_provider} "
                f"({self._pool_address}) runs code keeperd does not recognise as a published "
                "Aave deployment, and the config does not pin it: the keeper's approvals of it "
                "are held (liquidations from the keeper's balance go only within the "
                "allowances it has). Check the address, then set "
                f"`protocols[{self.adapter.name}].pool`")

    def _note_approval_hold(self, market: MarketState) -> None:
        held = self._approval_hold(market)
        if (held is None) != (self._approvals_held is None):
            (log.error if held else log.info)(
                "aave.approvals_held" if held else "aave.approvals_resumed",
                protocol=self.adapter.name, reason=held or self._approvals_held)
        self._approvals_held = held

    def approvals_held(self) -> str | None:
        """Why the keeper approves nothing more to the pool (`_approval_hold`), or None.
        Not a liquidations hold (`hold`): verified and flash liquidations go on — told as
        such, it said "keeperd sends nothing" while 58 went out (a by-hand trial); the
        adapter's verification reason says it (`AaveV3Adapter.verification_for`)."""
        return self._approvals_held

    async def _ensure_approvals(self, head: int, market: MarketState) -> None:
        """The pool approved the keeper's balance of each reserve (protocols/sdk/approvals.py)."""
        assert self.tx is not None and self.keeper is not None
        for _ in await approvals.keep_allowances(
                self.tx, self.pool, protocol=self.adapter.name, keeper=self.keeper,
                spender=self._pool_address, head=head,
                tokens=[(r.asset, r.symbol) for r in market.reserves]):
            self.adapter.metrics.tx_sent.labels(self.adapter.chain, "approval").inc()

    def spender(self, asset: str) -> str | None:
        """The pool pulls the debt asset its own-capital liquidations repay (None while the
        keeper approves it nothing more, `approvals_held`: no top-up would come)."""
        if self._approvals_held is not None:
            return None
        return self._pool_address or None

    async def keep_allowances(self, head: int, book: AaveBook) -> None:
        """Every few blocks, on the block's book: a top-up approved in turn."""
        if self.config.mode == "liquidate":
            self._note_approval_hold(book.market)
        if (self.tx is not None and self.keeper is not None and self.config.mode == "liquidate"
                and self.config.capital in ("own-balance", "auto")
                and self._approvals_held is None):
            await self._ensure_approvals(head, book.market)

    # --- planning (pure) ---------------------------------------------------------------------

    def plan(self, result: Any, accounts: set[str]) -> list[Opportunity]:
        book: AaveBook = result.book
        if self.config.mode == "liquidate":
            self._note_approval_hold(book.market)
        positions = book.positions
        rows = [positions.position_of[a] for a in sorted(accounts)]
        subset = positions.take(rows)
        caps = self.sale_caps.at(book.block)
        plans = plan_liquidations(book.market, subset, exact_account_data(book.market, subset),
                                  caps=caps or None)
        symbols = book.market.symbols
        out = []
        for plan in plans:
            row = positions.position_of[plan.account]
            used = positions.collateral_flag[row] | positions.borrowing_flag[row]
            reserve = book.market.reserves[book.market.column(plan.debt_asset)]
            # The key: the same position seen again (next block, after a restart) keeps it
            # while interest grows its debt; once someone acts on it, it is a new one.
            out.append(Opportunity(
                OpportunityKey(self.adapter.name, plan.account,
                               (plan.collateral_asset, plan.debt_asset),
                               plan.position_version),
                plan.collateral, plan.debt, plan.debt_to_cover,
                frozenset(symbols[c] for c in np.flatnonzero(used)),
                # (own capital reserves the worst case the pool may take at inclusion)
                Need(plan.debt_asset, reserve.symbol, reserve.decimals,
                     max(flash_amount(plan), int(plan.capital_needed * FLASH_BOUND_MARGIN) + 1),
                     plan.gross_profit_usd),
                plan.gross_profit_usd, plan.seized_usd, plan.repaid_usd, self._gas_limit(plan),
                plan, planned={"debtToCover": plan.debt_to_cover,
                               "liquidatedCollateralAmount": plan.collateral_seized,
                               "protocolFee": plan.protocol_fee}))
        return out

    def adjust(self, opportunities: list[Opportunity], book: AaveBook) -> list[Opportunity]:
        return within_virtual_balances(opportunities, book.market)

    def _gas_limit(self, plan: LiquidationPlan) -> int:
        """The most this (collateral, debt) pair has used so far, with the configured margin;
        a conservative default until a receipt has been seen. A liquidation that clears bad
        debt burns each other debt of the user too."""
        used = self._gas_used.get((plan.collateral_asset, plan.debt_asset))
        extra = BAD_DEBT_GAS_PER_ASSET * plan.bad_debt_assets
        return int(((used or GAS_DEFAULT) + extra) * self.config.gas_limit_margin)

    def learn(self, key: OpportunityKey, gas_used: int) -> None:
        if len(key.position) == 2:  # (collateral, debt): what this pair costs
            pair = (key.position[0], key.position[1])
            self._gas_used[pair] = max(self._gas_used.get(pair, 0), gas_used)

    def native_usd(self, book: AaveBook) -> float | None:
        market = book.market
        try:
            return float(market.prices_usd()[market.column(self.config.native_symbol)])
        except KeyError:
            return None

    # --- encoding ------------------------------------------------------------------------------

    async def calls(self, chosen: list[tuple[Opportunity, bool]], book: AaveBook,
                    gas: GasQuote) -> list[Call | None]:
        await self.swap_pools.find((o.plan.collateral_asset, o.plan.debt_asset)
                                   for o, f in chosen if f)
        calls = [self._call(o, flash, book.market, gas) for o, flash in chosen]
        why = self.adapter.verification_for(book.market)
        if why is None:
            return calls
        return [None if c is None else replace(
            c, verification=self._verification(c.opportunity, book.market, why))
            for c in calls]

    def _verification(self, opp: Opportunity, market: MarketState, why: str) -> Verification:
        """On rules keeperd does not know for sure, the chain decides: the pool's own
        getUserAccountData must put the account below 1 in the simulated block, and the
        profit is priced from the LiquidationCall the simulated liquidation emitted (what it
        really repaid and seized), at the oracle prices of the block — never from the plan."""
        plan: LiquidationPlan = opp.plan
        pool = self._pool_address.lower()
        prices = market.prices_usd()
        columns = {r.asset.lower(): i for i, r in enumerate(market.reserves)}

        def judge(reads: list[bytes], logs: list[dict[str, Any]]) -> Verdict:
            if len(reads[0]) < 192:
                return Verdict(False, "getUserAccountData answered nothing usable")
            health = abi.decode_account_data(reads[0])[5]
            if health >= 10**18:
                return Verdict(False, f"the pool's own health factor is {health / 1e18:.6f}")
            events = [e for entry in logs
                      if str(entry.get("address", "")).lower() == pool
                      and (e := abi.decode_liquidation_call(entry)) is not None
                      and e.user.lower() == plan.account.lower()]
            if len(events) != 1:
                return Verdict(False, f"{len(events)} LiquidationCall events for the account "
                                      "in the simulation")
            event = events[0]
            c = columns.get(event.collateral_asset.lower())
            d = columns.get(event.debt_asset.lower())
            if c is None or d is None:
                return Verdict(False, "the simulated liquidation moved assets not in the market")
            seized = (event.collateral_seized / 10**market.reserves[c].decimals
                      * float(prices[c]))
            repaid = event.debt_repaid / 10**market.reserves[d].decimals * float(prices[d])
            return Verdict(True, f"pool health {health / 1e18:.6f}, simulated: "
                                 f"${repaid:,.2f} repaid, ${seized:,.2f} seized", seized, repaid)

        return Verification(why, ((self._pool_address, abi.get_user_account_data(plan.account)),),
                            judge)

    def _call(self, opp: Opportunity, flash: bool, market: MarketState,
              gas: GasQuote) -> Call | None:
        plan: LiquidationPlan = opp.plan
        if not flash:
            return Call(opp, self._pool_address, liquidation_calldata(plan))
        swap_pool = self.swap_pools.get(plan.collateral_asset, plan.debt_asset)
        if not swap_pool or plan.receive_a_token:
            return None  # no pool to sell into, or the seized underlying cannot be paid out
        debt_col = market.column(plan.debt_asset)
        virtual = market.reserves[debt_col].virtual_balance
        if virtual is not None and virtual < flash_amount(plan):
            return None  # the reserve cannot lend that much (v3.1+ virtual balance)
        # The contract reverts unless it keeps enough of the debt asset to pay for the gas
        # and still clear min_profit_usd.
        min_profit = gas.least_profit(opp.gas_limit, float(market.prices_usd()[debt_col]),
                                      market.reserves[debt_col].decimals)
        min_out = swap_min_out_per_in(market, market.column(plan.collateral_asset), debt_col,
                                      self.config.max_swap_slippage_bps)
        data = flash_calldata(plan.collateral_asset, plan.debt_asset, plan.account,
                              flash_amount(plan), self.config.swap_fee, min_profit, min_out)
        assert self.config.flash_liquidator is not None
        return Call(opp, self.config.flash_liquidator, data, flash=True,
                    sells_through=swap_pool)

    def sale_pool(self, target: str, data: bytes) -> str | None:
        """A FlashLiquidator.liquidate's pool: its pair and fee tier, derived (CREATE2)."""
        flash, factory = self.config.flash_liquidator, self.config.uniswap_v3_factory
        if flash is None or factory is None or target.lower() != str(flash).lower() \
                or data[:4] != encode_call(FLASH_LIQUIDATE, [], [])[:4]:
            return None
        collateral, debt, _, _, fee, _, _ = abi_decode(
            ["address", "address", "address", "uint256", "uint24", "uint256", "uint256"],
            data[4:])
        return uniswap_v3_pool(factory, collateral, debt, fee)

    def sale_too_large(self, opp: Opportunity, block: int) -> int | None:
        """A flash sale of `opp` failed its bound alone (SwapBelowBound: the pool's depth pays
        too little for it at its size): the pair is planned at half that debt to cover from
        the next block (`SaleCaps`). Returns the new cap, or None at the smallest."""
        plan: LiquidationPlan = opp.plan
        pair = (plan.account.lower(), plan.collateral_asset.lower(), plan.debt_asset.lower())
        return self.sale_caps.halve(pair, plan.debt_to_cover, block)

    def unplanned(self, result: Any, accounts: Collection[str],
                  planned: Collection[str]) -> Mapping[str, int]:
        """A reserve the account uses that the pool will not liquidate now: paused or
        inactive, or in its grace period (v3.1+)."""
        book: AaveBook = result.book
        market, positions = book.market, book.positions
        closed = {c: ("paused" if r.paused else "inactive" if not r.active
                      else "in its liquidation grace period until "
                      + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r.grace_until)))
                  for c, r in enumerate(market.reserves) if not market.liquidatable_now(c)}
        if not closed:
            return {}
        out: dict[str, int] = {}
        for account in set(accounts) - set(planned):
            row = positions.position_of.get(account)
            if row is None:
                continue
            used = positions.collateral_flag[row] | positions.borrowing_flag[row]
            why = sorted({f"{market.reserves[c].symbol} {closed[c]}" for c in closed
                          if used[c]})
            if why:
                key = "reserve " + ", ".join(why)
                out[key] = out.get(key, 0) + 1
        return out

    def paid_short(self, receipt: Mapping[str, Any], account: str,
                   planned: Mapping[str, int] | None) -> float | None:
        """The LiquidationCall's collateral per debt repaid against the plan's (both the
        liquidator's share, the protocol fee apart)."""
        debt = (planned or {}).get("debtToCover")
        collateral = (planned or {}).get("liquidatedCollateralAmount")
        if not debt or not collateral:
            return None
        for entry in receipt.get("logs") or []:
            event = abi.decode_liquidation_call(entry)
            if event is None or event.user.lower() != account.lower() or not event.debt_repaid \
                    or str(entry.get("address", "")).lower() != self._pool_address.lower():
                continue
            return 1 - (event.collateral_seized / event.debt_repaid) / (collateral / debt)
        return None

    def tokens(self, book: AaveBook) -> list[tuple[str, str, int]]:
        """(address, symbol, decimals) of what the keeper repays with."""
        return [(r.asset, r.symbol, r.decimals) for r in book.market.reserves]
