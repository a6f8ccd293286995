"""Aave V3 liquidation arithmetic, pure: what a liquidationCall would repay and seize.

Mirrors LiquidationLogic as the pool's revision runs it (revisions.py):
- v3.0-v3.2: the close factor is 50 % of the reserve debt, or all of it at health 0.95 or
  below; a reserve whose threshold is 0 cannot be seized;
- v3.3+: all of the reserve debt by default; 50 % of the user's *total* debt (in base
  currency) only when the collateral and the debt reserve are each worth at least $2,000 and
  health is above 0.95; a liquidation that takes neither all the debt nor all the collateral
  must leave at least $1,000 of each (else `MustNotLeaveDust`): where the most the rules
  allow would not, the plan repays the smaller amount that leaves the floor (with margins for
  price moves before inclusion) and is sent as that exact amount (`amount_to_send`);
  when the whole collateral goes, the user's other debts are burned (bad debt, ~75k gas each);
- v3.5+: collateral balances floor, debt balances and debt in base ceil, the debt needed for
  a capped seizure rounds up; v3.6+: zero-threshold collateral may be seized;
- v3.7+: the seized total rounds down, its base part down (the bonus part up) and the
  protocol fee up; "no collateral left" is counted in scaled aToken units.
Paused or inactive reserves, and reserves in a liquidation grace period (v3.1+), are skipped;
frozen ones are not (freezing stops supply and borrow, not liquidation). Where the collateral
reserve's virtual balance cannot pay the seized underlying out, the plan takes aTokens.
One plan per account: the (collateral, debt) pair that pays most. `capital_needed` is what the
keeper's own balance must hold for it: the most the pool may take at inclusion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from keeperd.protocols.aave_v3.book import MarketState, Positions
from keeperd.protocols.aave_v3.math import HALF_RAY, RAY, ExactAccountData

CLOSE_FACTOR_HF_THRESHOLD = 95 * 10**16
DEFAULT_CLOSE_FACTOR = 5_000
MAX_CLOSE_FACTOR = 10_000
WAD = 10**18
# v3.3+: in base-currency units of an 8-decimal USD oracle ($2,000 and $1,000); scaled to the
# oracle's unit for markets priced otherwise.
MIN_BASE_MAX_CLOSE_FACTOR_USD = 2_000
MIN_LEFTOVER_USD = 1_000


def percent_mul(value: int, pct: int) -> int:
    return (value * pct + 5_000) // 10_000


def percent_div(value: int, pct: int) -> int:
    return (value * 10_000 + pct // 2) // pct


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


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
    bad_debt_assets: int = 0  # other debts the pool burns in the same call (v3.3+)
    receive_a_token: bool = False  # the reserve cannot pay the underlying out (v3.1+)
    # The exact debtToCover to send, when the most the rules allow would leave dust
    # (MustNotLeaveDust); None: type(uint256).max, which the pool caps at inclusion.
    amount_to_send: int | None = None
    # Debt-token units the keeper's own balance must hold for it: the worst case at inclusion
    # (the whole reserve debt when the 50 % cap may no longer apply by then).
    capital_needed: int = 0

    @property
    def gross_profit_usd(self) -> float:
        """Seized value minus repaid value, before gas and swap costs."""
        return self.seized_usd - self.repaid_usd



def _price(market: MarketState, col: int, user_emode: int) -> int:
    reserve = market.reserves[col]
    if user_emode and reserve.emode_category == user_emode and not market.rules.emode_bitmaps:
        emode_price = market.emode_prices.get(user_emode, 0)
        if emode_price:
            return emode_price
    return market.prices[col]


def _max_liquidatable_debt(market: MarketState, user_debt: int, debt_price: int, debt_unit: int,
                           collateral_base: int, total_debt_base: int, hf: int) -> int:
    """How much of this reserve's debt one liquidation may repay."""
    if not market.rules.close_factor_v33:
        close = MAX_CLOSE_FACTOR if hf <= CLOSE_FACTOR_HF_THRESHOLD else DEFAULT_CLOSE_FACTOR
        return percent_mul(user_debt, close)
    threshold = MIN_BASE_MAX_CLOSE_FACTOR_USD * market.base_unit
    debt_base = _ceil_div(user_debt * debt_price, debt_unit)
    if collateral_base >= threshold and debt_base >= threshold and hf > CLOSE_FACTOR_HF_THRESHOLD:
        half_total = percent_mul(total_debt_base, DEFAULT_CLOSE_FACTOR)
        if debt_base > half_total:
            return half_total * debt_unit // debt_price
    return user_debt


@dataclass(frozen=True)
class _Seizure:
    """_calculateAvailableCollateralToLiquidate for one (collateral, debt) pair, by revision."""

    rules: Any
    bonus: int
    fee_bps: int
    balance: int
    debt_price: int
    debt_unit: int
    coll_price: int
    coll_unit: int

    def of(self, debt_to_cover: int) -> tuple[int, int, int]:
        """(collateral seized with the fee, debt covered, protocol fee) for `debt_to_cover`."""
        v35, v37, bonus = self.rules.rounding_v35, self.rules.rounding_v37, self.bonus
        base = (self.debt_price * debt_to_cover * self.coll_unit) // (self.coll_price
                                                                      * self.debt_unit)
        # v3.7: the total collateral for the debt rounds down (was half-up)
        most = base * bonus // 10_000 if v37 else percent_mul(base, bonus)
        if most > self.balance:
            seized = self.balance
            value = (self.coll_price * seized * self.debt_unit) // (self.debt_price
                                                                   * self.coll_unit)
            covered = _ceil_div(value * 10_000, bonus) if v35 else percent_div(value, bonus)
        else:
            seized, covered = most, debt_to_cover
        fee = 0
        if self.fee_bps:
            # v3.7: the base part rounds down (so the bonus part up) and the fee up
            base_part = seized * 10_000 // bonus if v37 else percent_div(seized, bonus)
            bonus_part = seized - base_part
            fee = (_ceil_div(bonus_part * self.fee_bps, 10_000) if v37
                   else percent_mul(bonus_part, self.fee_bps))
        return seized, covered, fee


# A plan that must leave the dust floor leaves it with this margin (1 %): the oracle may move
# between the snapshot and inclusion, and a leftover a hair under $1,000 reverts.
DUST_FLOOR_MARGIN = 1.01


def _within_dust_floor(market: MarketState, user_debt: int, s: _Seizure) -> int | None:
    """The largest debtToCover (with the margin) that leaves at least the floor of debt and
    of collateral — LiquidationLogic refuses a partial liquidation that leaves less — or None
    when the position is too small for any."""
    floor = int(MIN_LEFTOVER_USD * market.base_unit * DUST_FLOOR_MARGIN)
    # Debt: what is left must be worth the floor.
    keep_debt = _ceil_div(floor * s.debt_unit, s.debt_price)
    by_debt = user_debt - keep_debt
    # Collateral: what is seized (with its bonus) must leave the floor's worth. A move x of the
    # collateral/debt price ratio moves the seized *tokens* by x of themselves, so the margin
    # here is x of the reserve's whole balance, not of the floor (with the floor's 1 % only, a
    # 0.25 % fall of the collateral price reverted one collateral-bound plan in seven, fuzzed
    # on two-collateral accounts against LiquidationLogic's arithmetic).
    keep_collateral = (_ceil_div(floor * s.coll_unit, s.coll_price)
                       + _ceil_div(s.balance * round((DUST_FLOOR_MARGIN - 1) * 10_000), 10_000))
    room = s.balance - keep_collateral
    if by_debt <= 0 or room <= 0:
        return None
    by_collateral = (room * 10_000 // s.bonus) * s.coll_price * s.debt_unit // (
        s.debt_price * s.coll_unit)
    amount = min(by_debt, by_collateral)
    return amount if amount > 0 else None


# The 50 % cap may stop applying before inclusion when health is this close above 0.95, or a
# reserve's position this close above $2,000 (a price tick, a block of interest): then the
# pool takes the whole reserve debt of what `type(uint256).max` offers.
CLOSE_FACTOR_BAND_HF = 2 * 10**16  # health up to 0.97
CLOSE_FACTOR_BAND = 1.05  # positions up to $2,100


def _capital_needed(market: MarketState, s: _Seizure, user_debt: int, covered: int,
                    collateral_base: int, hf: int) -> int:
    """What the keeper's own balance must hold for a liquidation sent as type(uint256).max:
    the plan's amount or, when the close factor's cap applied at the snapshot but may not at
    inclusion, what the pool takes of the whole reserve debt (bounded by the collateral:
    LiquidationLogic then takes all of it the balance pays for)."""
    if covered >= user_debt:
        return covered
    near_095 = hf <= CLOSE_FACTOR_HF_THRESHOLD + CLOSE_FACTOR_BAND_HF
    if not market.rules.close_factor_v33:
        # v3.0-v3.2: 50 % of the reserve debt above 0.95, all of it at 0.95 or below.
        return s.of(user_debt)[1] if near_095 else covered
    threshold = MIN_BASE_MAX_CLOSE_FACTOR_USD * market.base_unit * CLOSE_FACTOR_BAND
    debt_base = _ceil_div(user_debt * s.debt_price, s.debt_unit)
    if near_095 or collateral_base < threshold or debt_base < threshold:
        return s.of(user_debt)[1]
    return covered


def _leaves_dust(market: MarketState, user_debt: int, covered: int, debt_price: int,
                 debt_unit: int, balance: int, taken: int, coll_price: int,
                 coll_unit: int, margin: float = 1.0) -> bool:
    """v3.3+: a partial liquidation must leave at least $1,000 of debt and of collateral
    (`margin` times it: an amount chosen below the rules' most keeps a margin for the moves
    until inclusion)."""
    if not market.rules.close_factor_v33 or covered >= user_debt or taken >= balance:
        return False
    floor = MIN_LEFTOVER_USD * market.base_unit
    if margin != 1.0:
        floor = int(floor * margin)
    debt_left = _ceil_div((user_debt - covered) * debt_price, debt_unit)
    collateral_left = (balance - taken) * coll_price // coll_unit
    return debt_left < floor or collateral_left < floor


def _no_collateral_left(market: MarketState, pos: Positions, row: int, col: int, seized: int,
                        fee: int, coll_price: int, coll_unit: int,
                        total_collateral_base: int) -> bool:
    """Whether the liquidation leaves the user no collateral (the pool then burns its other
    debts as bad debt). v3.3-v3.6 compare base-currency values; v3.7 counts what the two
    aToken movements consume in scaled units (each rounded up), capped at the scaled balance,
    and values that — so a few wei left over, worth $0, count as nothing left."""
    if not market.rules.rounding_v37:
        return seized * coll_price // coll_unit >= total_collateral_base
    index = market.income_index[col]
    scaled_balance = int(pos.a_scaled[row, col])
    consumed = min(_ceil_div((seized - fee) * RAY, index) + _ceil_div(fee * RAY, index),
                   scaled_balance)
    consumed_base = (consumed * index // RAY) * coll_price // coll_unit
    return consumed_base == total_collateral_base


def plan_account(market: MarketState, pos: Positions, exact: ExactAccountData,
                 row: int, caps: Mapping[tuple[str, str, str], int] | None = None
                 ) -> LiquidationPlan | None:
    """The best liquidation of one account, or None if it is not liquidatable. `caps`: the
    most debt to cover for (account, collateral asset, debt asset), lowercase (a flash sale
    too large for its pool's depth: `AaveLiquidator.sale_too_large`); a capped plan sends its
    exact amount, within the dust rules."""
    hf = int(exact.health_factor[row])
    if hf >= WAD:
        return None
    rules = market.rules
    v35 = rules.rounding_v35
    user_emode = int(pos.emode[row])
    total_debt_base = int(exact.total_debt_base[row])
    total_collateral_base = int(exact.total_collateral_base[row])
    debts_held = [d for d in range(len(market.reserves)) if pos.borrowing_flag[row, d]]
    best: LiquidationPlan | None = None
    for d in debts_held:
        debt_reserve = market.reserves[d]
        if not market.liquidatable_now(d):
            continue
        scaled = int(pos.variable_scaled[row, d])
        product = scaled * market.debt_index[d]
        variable = (-(-product // RAY) if v35 else (product + HALF_RAY) // RAY) if scaled else 0
        stable = int(pos.stable_debt[row, d])
        user_debt = variable + stable
        if user_debt == 0:
            continue
        # Scaled balances move only when the user (or a liquidator) acts; interest moves the
        # index instead. (Stable debt accrues in its balance: V3 markets have retired it, and
        # only its presence is marked.)
        debt_version = f"{scaled}{'+s' if stable else ''}"
        debt_price = _price(market, d, user_emode)
        debt_unit = 10**debt_reserve.decimals
        for c, coll_reserve in enumerate(market.reserves):
            if not pos.collateral_flag[row, c] or not market.liquidatable_now(c):
                continue
            if coll_reserve.liquidation_threshold == 0 and not rules.zero_lt_collateral:
                continue
            a_product = int(pos.a_scaled[row, c]) * market.income_index[c]
            balance = a_product // RAY if v35 else (a_product + HALF_RAY) // RAY
            if balance == 0:
                continue
            bonus = (market.emode[user_emode].liquidation_bonus
                     if market.emode_covers(user_emode, c) else coll_reserve.liquidation_bonus)
            if bonus <= 10_000:
                continue  # no bonus: nothing to gain (and percentDiv by it is meaningless)
            coll_price = _price(market, c, user_emode)
            coll_unit = 10**coll_reserve.decimals
            debt_to_cover = _max_liquidatable_debt(
                market, user_debt, debt_price, debt_unit, balance * coll_price // coll_unit,
                total_debt_base, hf)
            seizure = _Seizure(rules, bonus, coll_reserve.liquidation_protocol_fee, balance,
                               debt_price, debt_unit, coll_price, coll_unit)
            seized, covered, fee = seizure.of(debt_to_cover)
            amount_to_send: int | None = None  # None: type(uint256).max, the pool's cap
            cap = caps.get((str(pos.accounts[row]).lower(), coll_reserve.asset.lower(),
                            debt_reserve.asset.lower())) if caps else None
            capped = None
            if cap is not None and cap < covered:
                capped = seizure.of(cap)
                if capped[1] <= 0 or _leaves_dust(market, user_debt, capped[1], debt_price,
                                                  debt_unit, balance, capped[0], coll_price,
                                                  coll_unit, margin=DUST_FLOOR_MARGIN):
                    capped = None  # (a cap that would leave dust: the pair as the rules go)
            if capped is not None:
                seized, covered, fee = capped
                amount_to_send = covered
            elif _leaves_dust(market, user_debt, covered, debt_price, debt_unit, balance,
                              seized, coll_price, coll_unit):
                # MustNotLeaveDust on the most the rules allow: a smaller amount that leaves
                # the floor (and a margin) of both debt and collateral, sent as is.
                smaller = _within_dust_floor(market, user_debt, seizure)
                if smaller is None:
                    continue
                seized, covered, fee = seizure.of(smaller)
                if covered <= 0 or _leaves_dust(market, user_debt, covered, debt_price,
                                                debt_unit, balance, seized, coll_price,
                                                coll_unit):
                    continue
                amount_to_send = covered
            to_liquidator = seized - fee
            bad_debt = 0
            if rules.close_factor_v33 and _no_collateral_left(
                    market, pos, row, c, seized, fee, coll_price, coll_unit,
                    total_collateral_base):
                bad_debt = len(debts_held) - 1  # the pool burns the user's other debts
            virtual = coll_reserve.virtual_balance
            plan = LiquidationPlan(
                account=pos.accounts[row], collateral=coll_reserve.symbol,
                collateral_asset=coll_reserve.asset, debt=debt_reserve.symbol,
                debt_asset=debt_reserve.asset, health_factor=hf, debt_to_cover=covered,
                collateral_seized=to_liquidator, protocol_fee=fee,
                repaid_usd=covered * debt_price / debt_unit / market.base_unit,
                seized_usd=to_liquidator * coll_price / coll_unit / market.base_unit,
                user_debt=user_debt,
                position_version=f"{debt_version}/{int(pos.a_scaled[row, c])}",
                bad_debt_assets=bad_debt,
                receive_a_token=virtual is not None and virtual < to_liquidator,
                amount_to_send=amount_to_send,
                capital_needed=(covered if amount_to_send is not None else _capital_needed(
                    market, seizure, user_debt, covered, balance * coll_price // coll_unit,
                    hf)))
            if best is None or plan.gross_profit_usd > best.gross_profit_usd:
                best = plan
    return best


def plan_liquidations(market: MarketState, pos: Positions, exact: ExactAccountData,
                      rows: Iterable[int] | None = None,
                      caps: Mapping[tuple[str, str, str], int] | None = None
                      ) -> list[LiquidationPlan]:
    """Plans for every liquidatable account among `rows` (all by default), best first."""
    candidates = (np.flatnonzero([int(h) < WAD for h in exact.health_factor])
                  if rows is None else rows)
    plans = [p for r in candidates if (p := plan_account(market, pos, exact, int(r), caps))]
    return sorted(plans, key=lambda p: p.gross_profit_usd, reverse=True)
