"""Perp Curie margin, pure: what the ClearingHouse and AccountBalance compute, from what they
store. Values are 18-decimal integers as on chain (USD).

- position value = size x mark (AccountBalance._getPositionValue, at the mark price: the median
  of the 15 s and 30 min pool TWAPs and index + 15 min premium);
- margin requirement for liquidation = Σ |position value| x mmRatio (mulRatio: floor of
  x * ratio / 1e6);
- liquidatable when account value < that requirement;
- how much one call may take (getLiquidatablePositionSize): all of it when the position is
  worth at most $100 or the account value is under half the requirement; otherwise
  min(1, Σ|value| / (2 |value of this market|)) of it;
- the penalty (2.5 % of the liquidated notional) goes half to the liquidator, all of it when
  the account value is negative (bad debt, which the insurance fund then covers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

RATIO = 10**6  # Curie's ratios are uint24 parts per million
WAD = 10**18
MIN_PARTIAL_LIQUIDATE_VALUE = 100 * WAD


def mul_ratio(value: int, ratio: int) -> int:
    """PerpMath.mulRatio: value * ratio / 1e6, rounded toward zero (FullMath.mulDiv on abs)."""
    out = abs(value) * ratio // RATIO
    return out if value >= 0 else -out


@dataclass(frozen=True)
class CuriePosition:
    base: str  # base token address
    market: str  # base token symbol (vETH)
    asset: str  # the asset symbol keeperd prices it by (WETH)
    size: int  # signed, 18 decimals: + long, - short
    value: int  # size x mark, 18 decimals (AccountBalance.getTotalPositionValue)
    open_notional: int  # signed quote, 18 decimals
    mark: int  # 18 decimals

    @property
    def notional(self) -> int:
        return abs(self.value)


@dataclass(frozen=True)
class CurieTrader:
    account: str
    account_value: int  # ClearingHouse.getAccountValue, 18 decimals
    margin_requirement: int  # AccountBalance.getMarginRequirementForLiquidation
    free_collateral: int  # Vault.getFreeCollateral, settlement-token units
    positions: tuple[CuriePosition, ...]

    @property
    def total_abs_value(self) -> int:
        return sum(p.notional for p in self.positions)


def margin_requirement(trader: CurieTrader, mm_ratio: int) -> int:
    """The requirement as AccountBalance computes it from the positions' values."""
    return mul_ratio(trader.total_abs_value, mm_ratio)


def is_liquidatable(trader: CurieTrader) -> bool:
    return trader.account_value < trader.margin_requirement


def liquidatable_size(trader: CurieTrader, position: CuriePosition) -> int:
    """AccountBalance.getLiquidatablePositionSize for one market."""
    if not is_liquidatable(trader) or position.size == 0:
        return 0
    if position.notional <= MIN_PARTIAL_LIQUIDATE_VALUE:
        return position.size
    ratio = RATIO
    if trader.account_value >= trader.margin_requirement // 2:
        ratio = min(RATIO, trader.total_abs_value * RATIO // (position.notional * 2))
    return mul_ratio(position.size, ratio)


def liquidation_fee(notional: int, penalty_ratio: int, account_value: int) -> tuple[int, int]:
    """(the whole penalty, the liquidator's share) of liquidating `notional`."""
    penalty = mul_ratio(abs(notional), penalty_ratio)
    return penalty, penalty if account_value < 0 else penalty // 2


def shocked(trader: CurieTrader, factors: Mapping[str, float], mm_ratio: int
            ) -> tuple[float, float]:
    """(account value, margin requirement) in USD when each asset's mark moves by its factor
    (1.0: unchanged): the position values scale, the difference is unrealised PnL."""
    av = trader.account_value / WAD
    total = 0.0
    for p in trader.positions:
        f = factors.get(p.asset, 1.0)
        av += p.value / WAD * (f - 1.0)
        total += p.notional / WAD * f
    return av, total * mm_ratio / RATIO


def liquidation_price(trader: CurieTrader, position: CuriePosition, mm_ratio: int
                      ) -> float | None:
    """The mark of this market at which the account reaches its maintenance margin, the
    other markets unchanged (None: no such price above zero)."""
    if position.size == 0:
        return None
    m = mm_ratio / RATIO
    v = position.value / WAD
    others = (trader.total_abs_value - position.notional) / WAD
    av = trader.account_value / WAD
    # av + v (x - 1) = m (others + |v| x), for the multiplier x of this mark.
    denominator = v - m * abs(v)
    if denominator == 0:
        return None
    x = (v - av + m * others) / denominator
    return x * position.mark / WAD if x > 0 else None


def at_risk(traders: list[CurieTrader] | tuple[CurieTrader, ...], asset: str, move: float,
            mm_ratio: int) -> tuple[float, float]:
    """(notional of the accounts a `move` of `asset` makes liquidatable, the bad debt they
    leave: their negative account value), in USD, the other marks unchanged. Cross margin:
    an account that goes under takes all its positions with it."""
    notional = bad_debt = 0.0
    for t in traders:
        if not any(p.asset == asset for p in t.positions):
            continue
        av, mm = shocked(t, {asset: 1.0 + move}, mm_ratio)
        if av < mm:
            notional += sum(p.notional / WAD * (1.0 + move if p.asset == asset else 1.0)
                            for p in t.positions)
            bad_debt += max(0.0, -av)
    return notional, bad_debt


def funding_per_hour(trader: CurieTrader, index_by_base: Mapping[str, int]) -> float:
    """USD the trader pays per hour at the current premium (negative: receives). Curie's
    funding over Δt is size x (mark TWAP - index TWAP) x Δt / 1 day; the current mark and
    index stand in for the TWAPs."""
    return sum(p.size / WAD * (p.mark - index_by_base[p.base]) / WAD
               for p in trader.positions if p.base in index_by_base) / 24.0


def hours_to_maintenance(trader: CurieTrader, index_by_base: Mapping[str, int]
                         ) -> float | None:
    """Hours until funding alone brings the account to its requirement (None: it is not
    paying, or already there)."""
    paying = funding_per_hour(trader, index_by_base)
    room = (trader.account_value - trader.margin_requirement) / WAD
    if paying <= 0 or room <= 0:
        return None
    return room / paying
