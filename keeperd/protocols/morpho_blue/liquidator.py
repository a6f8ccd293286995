"""Morpho Blue's execution half: unhealthy positions as opportunities, and `liquidate` calls.

Plan: repay all the debt when the collateral covers it with the market's incentive, else seize
all the collateral (the rest is bad debt, which lowers what a borrow share is worth). Interest
is accrued a block ahead (the transaction lands later). Liquidations of one block in the same
market are planned on the market each leaves behind, in the book's order. Values are in the
loan token, USD for USD-pegged loan tokens (others are not priced: not sent). The keeper repays
from its own loan-token balance (Morpho has no flash path here); the pool is approved once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from keeperd.chain.calls import ContractCall
from keeperd.chain.multicall import encode_call
from keeperd.config import KeeperConfig
from keeperd.execution.capital import Need
from keeperd.execution.signer_policy import Allowed
from keeperd.protocols.morpho_blue import math as mm
from keeperd.protocols.morpho_blue.adapter import (
    LIQUIDATE_CALL,
    MorphoBook,
    encode_liquidate,
    loan_usd,
)
from keeperd.protocols.plugin import Call, Opportunity, OpportunityKey

if TYPE_CHECKING:
    from keeperd.protocols.morpho_blue.adapter import MorphoBlueAdapter

log = structlog.get_logger(__name__)

GAS_LIMIT = 400_000
MAX_UINT = 2**256 - 1
# Seconds of interest between the snapshot and inclusion.
AHEAD_S = 12


class MorphoLiquidator:
    flash_premium_bps = 0
    supports_flash = False

    def __init__(self, adapter: MorphoBlueAdapter, config: KeeperConfig, keeper: str | None,
                 tx: Any) -> None:
        self.adapter = adapter
        self.config = config
        self.keeper = keeper
        self.tx = tx
        self._gas_used: dict[str, int] = {}

    def signing_rules(self) -> list[Allowed]:
        morpho = self.adapter.config.morpho
        return [Allowed(morpho, LIQUIDATE_CALL, "morpho liquidation"),
                Allowed.approval(morpho, "approval of morpho")]

    async def prepare(self, head: int) -> None:
        if self.tx is None or self.config.mode != "liquidate" or self.keeper is None:
            return
        morpho = self.adapter.config.morpho
        pool = self.adapter.pool
        for token in sorted({m.loan_token for m in self.adapter.markets.values()}):
            allowance = await ContractCall(token, "allowance(address,address)",
                                           ["address", "address"], [self.keeper, morpho]
                                           ).call(pool)
            if allowance >= MAX_UINT // 2:
                continue
            data = encode_call("approve(address,uint256)", ["address", "uint256"],
                               [morpho, MAX_UINT])
            record = await self.tx.send(f"approve:{self.adapter.name}:{token}:max", token, data,
                                        100_000, budget_wei=10**18, block=head)
            log.info("keeper.approval_sent", protocol=self.adapter.name, token=token,
                     tx_hash=record.tx_hash)

    def plan(self, result: Any, accounts: set[str]) -> list[Opportunity]:
        book: MorphoBook = result.book
        at = book.timestamp + AHEAD_S
        states = {market_id: book.accrued(market_id, at) for market_id in book.markets}
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
            plan = mm.plan_liquidation(p.collateral, p.borrow_shares, state, price, info.lltv)
            states[info.id] = mm.after_liquidation(state, p.collateral, p.borrow_shares, plan,
                                                   price, info.lltv)
            unit = 10**info.loan_decimals
            usd = loan_usd(info.loan_symbol)
            seized_usd = mm.mul_div_down(plan.expected_seized, price,
                                         mm.ORACLE_PRICE_SCALE) / unit * usd
            repaid_usd = plan.expected_repaid / unit * usd
            out.append(Opportunity(
                OpportunityKey(self.adapter.name, p.account, info.id[:18],
                               str(p.borrow_shares)),
                info.collateral_symbol, info.loan_symbol, plan.expected_repaid,
                frozenset({info.collateral_symbol, info.loan_symbol}),
                Need(info.loan_token, info.loan_symbol, info.loan_decimals,
                     plan.expected_repaid * 1001 // 1000 + 1,  # interest until inclusion
                     seized_usd - repaid_usd),
                seized_usd - repaid_usd, seized_usd, repaid_usd,
                int(self._gas_used.get(info.id[:18], GAS_LIMIT) * self.config.gas_limit_margin),
                (p, plan),
                f"market={info.id} seized={plan.expected_seized} bad_debt={plan.bad_debt}"))
        return out

    def adjust(self, opportunities: list[Opportunity], book: MorphoBook) -> list[Opportunity]:
        return opportunities

    async def calls(self, chosen: list[tuple[Opportunity, bool]], book: MorphoBook,
                    base_fee: int, native_usd: float) -> list[Call | None]:
        out: list[Call | None] = []
        for opp, flash in chosen:
            if flash:
                out.append(None)
                continue
            position, plan = opp.plan
            out.append(Call(opp, self.adapter.config.morpho, encode_liquidate(
                position.market.params, position.account, plan.seized_assets,
                plan.repaid_shares)))
        return out

    def learn(self, key: str, gas_used: int) -> None:
        parts = key.split("#", 1)[0].split(":")
        if len(parts) >= 4:
            self._gas_used[parts[2]] = max(self._gas_used.get(parts[2], 0), gas_used)

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
