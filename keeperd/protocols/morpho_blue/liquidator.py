"""Morpho Blue's execution half: unhealthy positions as opportunities, and `liquidate` calls.

Plan: repay all the debt when the collateral covers it with the market's incentive, else seize
all the collateral (the rest is bad debt, which lowers what a borrow share is worth). Interest
is accrued a block ahead (the transaction lands later). Liquidations of one block in the same
market are planned on the market each leaves behind, in the book's order. Values are in the
loan token, USD for USD-pegged loan tokens (others are not priced: not sent).

Capital: the keeper's own loan-token balance (Morpho approved that balance), or none,
through the keeper's MorphoLiquidator (`liquidator_contract`) when the capital stage sends a
liquidation down the flash path: Morpho's `liquidate` sends the seized collateral first and
calls the contract back before it pulls the loan token, so the contract sells the collateral
in the callback and repays from the sale (no flash loan, no premium).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from eth_abi import decode as abi_decode
from eth_utils import to_checksum_address

from keeperd.chain.multicall import encode_call
from keeperd.config import KeeperConfig
from keeperd.protocols.morpho_blue import math as mm
from keeperd.protocols.morpho_blue.adapter import (
    LIQUIDATE,
    LIQUIDATE_CALL,
    MARKET_PARAMS,
    encode_liquidate,
)
from keeperd.protocols.morpho_blue.book import MorphoBook, loan_usd, market_key
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
    from keeperd.protocols.morpho_blue.adapter import MorphoBlueAdapter

log = structlog.get_logger(__name__)

GAS_LIMIT = 400_000
# Through the MorphoLiquidator: the liquidation, a Uniswap V3 swap and the token transfers
# (270-315k gas measured on the devnet; real tokens behind proxies cost more).
CALLBACK_GAS_LIMIT = 450_000
CALLBACK_LIQUIDATE = (f"liquidate({MARKET_PARAMS},address,uint256,uint256,uint24,uint256,"
                      "uint256)")
# Seconds of interest between the snapshot and inclusion.
AHEAD_S = 12


def callback_calldata(params: tuple[str, str, str, str, int], borrower: str, seized: int,
                      repaid_shares: int, swap_fee: int, min_profit: int,
                      min_out_per_in: int) -> bytes:
    """MorphoLiquidator.liquidate: Morpho's arguments, then how the contract sells — the fee
    tier (it derives the pool itself), the least profit and the least rate of the sale."""
    return encode_call(CALLBACK_LIQUIDATE,
                       [MARKET_PARAMS, "address", "uint256", "uint256", "uint24", "uint256",
                        "uint256"],
                       [params, borrower, seized, repaid_shares, swap_fee, min_profit,
                        min_out_per_in])


class MorphoLiquidator(LiquidatorBase):
    flash_premium_bps = 0  # the callback path borrows nothing

    def __init__(self, adapter: MorphoBlueAdapter, config: KeeperConfig, keeper: str | None,
                 tx: Any) -> None:
        self.adapter = adapter
        self.config = config
        self.keeper = keeper
        self.tx = tx
        self._gas_used: dict[str, int] = {}
        # The most collateral to seize by (account, market id), lowercase: a flash sale too
        # large for its pool's depth (`sale_too_large`).
        self.sale_caps: SaleCaps[tuple[str, str]] = SaleCaps()
        self.contract = adapter.config.liquidator_contract
        # ("flash" is the executor's name for the capital-free path: here, the callback)
        self.supports_flash = (self.contract is not None
                               and config.uniswap_v3_factory is not None)
        self.swap_pools = SwapPools(adapter.pool, config.uniswap_v3_factory, config.swap_fee)

    def signing_rules(self) -> list[Allowed]:
        """Morpho's liquidate and Morpho as the one spender (own capital); the
        MorphoLiquidator's entry point (the capital-free path)."""
        morpho = self.adapter.config.morpho
        rules = [Allowed(morpho, LIQUIDATE_CALL, "morpho liquidation"),
                 Allowed.approval(morpho, "approval of morpho")]
        if self.supports_flash:
            assert self.contract is not None
            rules.append(Allowed(self.contract, CALLBACK_LIQUIDATE,
                                 "morpho liquidation through its liquidate callback"))
        return rules

    async def confirm(self, head: int) -> None:
        """The contract the capital-free path trusts."""
        if self._callback_path:
            await self._confirm_contract()

    async def prepare(self, head: int) -> None:
        """`confirm`; approve Morpho the keeper's balance of each loan token for its own
        capital (not needed when none of it is used)."""
        await self.confirm(head)
        await self.keep_allowances(head)

    def spender(self, asset: str) -> str | None:
        """Morpho pulls the loan token its own-capital liquidations repay."""
        return str(self.adapter.config.morpho)

    async def keep_allowances(self, head: int, book: Any = None) -> None:
        """At start and every few blocks: Morpho approved the keeper's balance of each loan
        token (protocols/sdk/approvals.py: bounded, a top-up approved in turn)."""
        if self.tx is None or self.config.mode != "liquidate" or self.keeper is None:
            return
        if self.supports_flash and self.config.capital == "flash-loan":
            return
        await approvals.keep_allowances(
            self.tx, self.adapter.pool, protocol=self.adapter.name, keeper=self.keeper,
            spender=self.adapter.config.morpho, head=head,
            tokens=[(t, t) for t in sorted({m.loan_token for m in self.adapter.markets.values()})])

    async def _confirm_contract(self) -> None:
        """The MorphoLiquidator must sell on the configured factory's pools, liquidate on this
        entry's Morpho, and take orders from the keeper: otherwise every liquidation through
        it would revert (or, on another Morpho, never be what keeperd planned)."""
        contract, pool = str(self.contract), self.adapter.pool
        field = f"protocols[{self.adapter.name}].liquidator_contract"
        await confirm_seller(pool, contract, self.config.uniswap_v3_factory, field=field,
                             name="MorphoLiquidator", owner=self.keeper)
        morpho = to_checksum_address(await answer(pool, contract, "morpho()", "address",
                                                  field=field, name="MorphoLiquidator"))
        if morpho != to_checksum_address(self.adapter.config.morpho):
            raise StartRefused(
                f"{field}: {contract} liquidates on the Morpho at {morpho}, not on this "
                f"entry's morpho {self.adapter.config.morpho}; deploy one for that Morpho")

    def plan(self, result: Any, accounts: set[str]) -> list[Opportunity]:
        book: MorphoBook = result.book
        at = book.timestamp + AHEAD_S
        states = {market_id: book.accrued(market_id, at) for market_id in book.markets}
        caps = self.sale_caps.at(book.block)
        out = []
        for p in book.positions:
            info = p.market
            if p.account not in accounts:
                continue
            _, _, price, _ = book.markets[info.id]
            if mm.is_healthy(p.collateral, p.borrow_shares, book.accrued(info.id), price,
                             info.lltv):
                continue
            state = states[info.id]
            plan = mm.plan_liquidation(p.collateral, p.borrow_shares, state, price, info.lltv,
                                       most_seized=caps.get((p.account.lower(),
                                                             info.id.lower())))
            after = mm.after_liquidation(state, p.collateral, p.borrow_shares, plan, price,
                                         info.lltv)
            states[info.id] = after
            unit = 10**info.loan_decimals
            usd = loan_usd(info.loan_symbol)
            seized_usd = mm.mul_div_down(plan.expected_seized, price,
                                         mm.ORACLE_PRICE_SCALE) / unit * usd
            repaid_usd = plan.expected_repaid / unit * usd
            out.append(Opportunity(
                OpportunityKey(self.adapter.name, p.account, (info.id[:18],),
                               str(p.borrow_shares)),
                info.collateral_symbol, info.loan_symbol, plan.expected_repaid,
                frozenset({info.collateral_symbol, info.loan_symbol, market_key(info.id)}),
                Need(info.loan_token, info.loan_symbol, info.loan_decimals,
                     plan.expected_repaid * 1001 // 1000 + 1,  # interest until inclusion
                     seized_usd - repaid_usd),
                seized_usd - repaid_usd, seized_usd, repaid_usd,
                int(self._gas_used.get(info.id[:18], self._gas_default)
                    * self.config.gas_limit_margin),
                (p, plan),
                f"market={info.id} seized={plan.expected_seized} bad_debt={plan.bad_debt}",
                planned={"repaidAssets": plan.expected_repaid,
                         "repaidShares": (plan.repaid_shares or mm.repaid_shares_for_seizure(
                             plan.seized_assets, state, price, info.lltv)),
                         "seizedAssets": plan.expected_seized,
                         # (only a bad debt takes assets from the suppliers)
                         "badDebtAssets": state.total_supply_assets
                         - after.total_supply_assets}))
        return out

    @property
    def _callback_path(self) -> bool:
        """Liquidations may go through the contract (with own-balance it is only suggested,
        in the shortfall's fix, and not checked)."""
        return self.supports_flash and self.config.capital in ("flash-loan", "auto")

    @property
    def _gas_default(self) -> int:
        """Until a receipt teaches better: the callback path's when it may be taken."""
        return CALLBACK_GAS_LIMIT if self._callback_path else GAS_LIMIT

    def adjust(self, opportunities: list[Opportunity], book: MorphoBook) -> list[Opportunity]:
        return opportunities

    async def calls(self, chosen: list[tuple[Opportunity, bool]], book: MorphoBook,
                    gas: GasQuote) -> list[Call | None]:
        await self.swap_pools.find((o.plan[0].market.collateral_token,
                                    o.plan[0].market.loan_token) for o, f in chosen if f)
        out: list[Call | None] = []
        for opp, flash in chosen:
            position, plan = opp.plan
            if flash:
                out.append(self._callback_call(opp, book, gas))
                continue
            out.append(Call(opp, self.adapter.config.morpho, encode_liquidate(
                position.market.params, position.account, plan.seized_assets,
                plan.repaid_shares)))
        return out

    def _callback_call(self, opp: Opportunity, book: MorphoBook,
                       gas: GasQuote) -> Call | None:
        """Through the MorphoLiquidator: it reverts unless the sale pays at least the oracle
        rate less `max_swap_slippage_bps` and it keeps enough of the loan token to pay for
        the gas and clear `min_profit_usd`. None: no pool to sell into, or a loan token
        keeperd does not price (its profit could not be bounded)."""
        position, plan = opp.plan
        info = position.market
        usd = loan_usd(info.loan_symbol)
        swap_pool = self.swap_pools.get(info.collateral_token, info.loan_token)
        if self.contract is None or math.isnan(usd) or not swap_pool:
            return None
        _, _, price, _ = book.markets[info.id]
        data = callback_calldata(
            info.params, position.account, plan.seized_assets, plan.repaid_shares,
            self.config.swap_fee,
            gas.least_profit(opp.gas_limit, usd, info.loan_decimals),
            # (the oracle's price is loan units per collateral unit, scaled by 1e36)
            min_out_per_in(price, mm.ORACLE_PRICE_SCALE, self.config.max_swap_slippage_bps))
        return Call(opp, self.contract, data, flash=True, sells_through=swap_pool)

    def sale_too_large(self, opp: Opportunity, block: int) -> int | None:
        """A sale through the MorphoLiquidator failed its bound alone (SwapBelowBound: the
        pool's depth pays too little for it at its size): the position is planned to seize
        half that collateral from the next block (`SaleCaps`). Returns the new cap, or None
        at the smallest."""
        position, plan = opp.plan
        return self.sale_caps.halve((position.account.lower(), position.market.id.lower()),
                                    plan.expected_seized, block)

    def sale_pool(self, target: str, data: bytes) -> str | None:
        """A MorphoLiquidator.liquidate's pool: its market's pair and the fee tier, derived."""
        factory = self.config.uniswap_v3_factory
        if self.contract is None or factory is None \
                or target.lower() != str(self.contract).lower() \
                or data[:4] != encode_call(CALLBACK_LIQUIDATE, [], [])[:4]:
            return None
        params, _, _, _, fee, _, _ = abi_decode(
            [MARKET_PARAMS, "address", "uint256", "uint256", "uint24", "uint256", "uint256"],
            data[4:])
        loan, collateral = params[0], params[1]
        return uniswap_v3_pool(factory, collateral, loan, fee)

    def paid_short(self, receipt: Mapping[str, Any], account: str,
                   planned: Mapping[str, int] | None) -> float | None:
        """Morpho's Liquidate event's collateral seized per loan repaid against the plan's."""
        repaid_plan = (planned or {}).get("repaidAssets")
        seized_plan = (planned or {}).get("seizedAssets")
        if not repaid_plan or not seized_plan:
            return None
        for entry in receipt.get("logs") or []:
            topics = entry.get("topics") or []
            if len(topics) < 4 or topics[0] != LIQUIDATE \
                    or str(entry.get("address", "")).lower() \
                    != self.adapter.config.morpho.lower() \
                    or topics[3][-40:].lower() != account[-40:].lower():
                continue
            data = str(entry["data"])[2:]
            repaid, seized = int(data[:64], 16), int(data[128:192], 16)
            if not repaid:
                return None
            return 1 - (seized / repaid) / (seized_plan / repaid_plan)
        return None

    def learn(self, key: OpportunityKey, gas_used: int) -> None:
        market = key.position[0]  # (its id's first 18 characters)
        self._gas_used[market] = max(self._gas_used.get(market, 0), gas_used)

    def native_usd(self, book: MorphoBook) -> float | None:
        """From a market lending a USD-pegged token against the native token, if any."""
        for info, _, price, _ in book.markets.values():
            if info.collateral_symbol == self.config.native_symbol:
                usd = loan_usd(info.loan_symbol)
                if usd == usd:  # not NaN
                    return (price * 10**info.collateral_decimals / mm.ORACLE_PRICE_SCALE
                            / 10**info.loan_decimals * usd)
        return None

    def tokens(self, book: MorphoBook) -> list[tuple[str, str, int]]:
        """(address, symbol, decimals) of what the keeper repays with."""
        seen = {(m.loan_token, m.loan_symbol, m.loan_decimals) for m in self.adapter.markets
                .values()}
        return sorted(seen)
