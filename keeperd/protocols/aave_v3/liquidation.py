"""Aave V3 liquidation arithmetic, pure: what a liquidationCall would repay and seize.

Mirrors LiquidationLogic (V3.0): the close factor (50 % of the debt, or all of it once health
is at or below 0.95), the collateral seized with the liquidation bonus (eMode's bonus and
price source where they apply), the cap at the user's collateral balance and the protocol's
cut of the bonus. One plan per account: the (collateral, debt) pair that pays most.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from keeperd.protocols.aave_v3.book import MarketState, Positions
from keeperd.protocols.aave_v3.math import HALF_RAY, RAY, ExactAccountData

CLOSE_FACTOR_HF_THRESHOLD = 95 * 10**16
DEFAULT_CLOSE_FACTOR = 5_000
MAX_CLOSE_FACTOR = 10_000
WAD = 10**18


def percent_mul(value: int, pct: int) -> int:
    return (value * pct + 5_000) // 10_000


def percent_div(value: int, pct: int) -> int:
    return (value * 10_000 + pct // 2) // pct


@dataclass(frozen=True)
class LiquidationPlan:
    account: str
    collateral: str  # symbol
    collateral_asset: str
    debt: str  # symbol
    debt_asset: str
    health_factor: int  # wad, at the snapshot's block
    debt_to_cover: int  # debt-token units the liquidator repays
    collateral_seized: int  # collateral-token units the liquidator receives
    protocol_fee: int  # collateral-token units that go to the treasury
    repaid_usd: float
    seized_usd: float
    user_debt: int  # the user's whole debt in this asset
    position_version: str  # changes when the user's position changes, not with interest

    @property
    def gross_profit_usd(self) -> float:
        """Seized value minus repaid value, before gas and swap costs."""
        return self.seized_usd - self.repaid_usd

    def key(self, protocol: str) -> str:
        """Identifies the opportunity: the same position seen again (on the next block, after
        a restart) has the same key, although interest keeps growing its debt; once someone
        repays or liquidates part of it, it is a new opportunity."""
        return f"{protocol}:{self.account}:{self.collateral_asset}:{self.debt_asset}:" \
               f"{self.position_version}"


def _price(market: MarketState, col: int, user_emode: int) -> int:
    reserve = market.reserves[col]
    if user_emode and reserve.emode_category == user_emode:
        emode_price = market.emode_prices.get(user_emode, 0)
        if emode_price:
            return emode_price
    return market.prices[col]


def plan_account(market: MarketState, pos: Positions, exact: ExactAccountData,
                 row: int) -> LiquidationPlan | None:
    """The best liquidation of one account, or None if it is not liquidatable."""
    hf = int(exact.health_factor[row])
    if hf >= WAD:
        return None
    close_factor = MAX_CLOSE_FACTOR if hf <= CLOSE_FACTOR_HF_THRESHOLD else DEFAULT_CLOSE_FACTOR
    user_emode = int(pos.emode[row])
    best: LiquidationPlan | None = None
    for d, debt_reserve in enumerate(market.reserves):
        if not pos.borrowing_flag[row, d]:
            continue
        scaled = int(pos.variable_scaled[row, d])
        variable = (scaled * market.debt_index[d] + HALF_RAY) // RAY if scaled else 0
        stable = int(pos.stable_debt[row, d])
        user_debt = variable + stable
        if user_debt == 0:
            continue
        # Scaled balances move only when the user (or a liquidator) acts; interest moves the
        # index instead. (Stable debt accrues in its balance: V3 markets have retired it, and
        # only its presence is marked.)
        debt_version = f"{scaled}{'+s' if stable else ''}"
        debt_to_cover = percent_mul(user_debt, close_factor)
        debt_price = _price(market, d, user_emode)
        debt_unit = 10**debt_reserve.decimals
        for c, coll_reserve in enumerate(market.reserves):
            if not pos.collateral_flag[row, c] or coll_reserve.liquidation_threshold == 0:
                continue
            balance = (int(pos.a_scaled[row, c]) * market.income_index[c] + HALF_RAY) // RAY
            if balance == 0:
                continue
            in_emode = user_emode != 0 and coll_reserve.emode_category == user_emode
            bonus = (market.emode[user_emode].liquidation_bonus if in_emode
                     else coll_reserve.liquidation_bonus)
            coll_price = _price(market, c, user_emode)
            coll_unit = 10**coll_reserve.decimals
            base_collateral = (debt_price * debt_to_cover * coll_unit) // (coll_price * debt_unit)
            max_collateral = percent_mul(base_collateral, bonus)
            if max_collateral > balance:
                seized = balance
                covered = percent_div((coll_price * seized * debt_unit) // (debt_price * coll_unit),
                                      bonus)
            else:
                seized, covered = max_collateral, debt_to_cover
            fee = 0
            fee_bps = coll_reserve.liquidation_protocol_fee
            if fee_bps:
                bonus_part = seized - percent_div(seized, bonus)
                fee = percent_mul(bonus_part, fee_bps)
            to_liquidator = seized - fee
            plan = LiquidationPlan(
                account=pos.accounts[row], collateral=coll_reserve.symbol,
                collateral_asset=coll_reserve.asset, debt=debt_reserve.symbol,
                debt_asset=debt_reserve.asset, health_factor=hf, debt_to_cover=covered,
                collateral_seized=to_liquidator, protocol_fee=fee,
                repaid_usd=covered * debt_price / debt_unit / market.base_unit,
                seized_usd=to_liquidator * coll_price / coll_unit / market.base_unit,
                user_debt=user_debt,
                position_version=f"{debt_version}/{int(pos.a_scaled[row, c])}")
            if best is None or plan.gross_profit_usd > best.gross_profit_usd:
                best = plan
    return best


def plan_liquidations(market: MarketState, pos: Positions, exact: ExactAccountData,
                      rows: Iterable[int] | None = None) -> list[LiquidationPlan]:
    """Plans for every liquidatable account among `rows` (all by default), best first."""
    candidates = (np.flatnonzero([int(h) < WAD for h in exact.health_factor])
                  if rows is None else rows)
    plans = [p for r in candidates if (p := plan_account(market, pos, exact, int(r)))]
    return sorted(plans, key=lambda p: p.gross_profit_usd, reverse=True)
