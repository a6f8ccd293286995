"""Morpho Blue's arithmetic, in integers, as the contract does it (MathLib, SharesMathLib,
Morpho._isHealthy, _accrueInterest, liquidate): health with interest accrued to a timestamp,
the liquidation incentive, and what a liquidation repays and seizes.
"""

from __future__ import annotations

from dataclasses import dataclass

WAD = 10**18
ORACLE_PRICE_SCALE = 10**36
VIRTUAL_SHARES = 10**6
VIRTUAL_ASSETS = 1
MAX_LIQUIDATION_INCENTIVE_FACTOR = 115 * WAD // 100  # 1.15
LIQUIDATION_CURSOR = 3 * WAD // 10  # 0.3


def mul_div_down(x: int, y: int, d: int) -> int:
    return x * y // d


def mul_div_up(x: int, y: int, d: int) -> int:
    return (x * y + (d - 1)) // d


def w_mul_down(x: int, y: int) -> int:
    return mul_div_down(x, y, WAD)


def w_div_down(x: int, y: int) -> int:
    return mul_div_down(x, WAD, y)


def w_div_up(x: int, y: int) -> int:
    return mul_div_up(x, WAD, y)


def w_taylor_compounded(x: int, n: int) -> int:
    """e^(x n) - 1 to the third term, as MathLib.wTaylorCompounded."""
    first = x * n
    second = mul_div_down(first, first, 2 * WAD)
    third = mul_div_down(second, first, 3 * WAD)
    return first + second + third


def to_assets_up(shares: int, total_assets: int, total_shares: int) -> int:
    return mul_div_up(shares, total_assets + VIRTUAL_ASSETS, total_shares + VIRTUAL_SHARES)


def to_assets_down(shares: int, total_assets: int, total_shares: int) -> int:
    return mul_div_down(shares, total_assets + VIRTUAL_ASSETS, total_shares + VIRTUAL_SHARES)


def to_shares_up(assets: int, total_assets: int, total_shares: int) -> int:
    return mul_div_up(assets, total_shares + VIRTUAL_SHARES, total_assets + VIRTUAL_ASSETS)


@dataclass(frozen=True)
class MarketState:
    total_supply_assets: int
    total_supply_shares: int
    total_borrow_assets: int
    total_borrow_shares: int
    last_update: int
    fee: int

    def accrued(self, borrow_rate: int, timestamp: int) -> MarketState:
        """The market after _accrueInterest at `timestamp` (the supply side's fee shares do
        not matter for borrowers' health and are left out)."""
        elapsed = timestamp - self.last_update
        if elapsed <= 0 or borrow_rate == 0:
            return self
        interest = w_mul_down(self.total_borrow_assets, w_taylor_compounded(borrow_rate,
                                                                             elapsed))
        return MarketState(self.total_supply_assets + interest, self.total_supply_shares,
                           self.total_borrow_assets + interest, self.total_borrow_shares,
                           timestamp, self.fee)


def borrowed(borrow_shares: int, market: MarketState) -> int:
    return to_assets_up(borrow_shares, market.total_borrow_assets, market.total_borrow_shares)


def max_borrow(collateral: int, price: int, lltv: int) -> int:
    return w_mul_down(mul_div_down(collateral, price, ORACLE_PRICE_SCALE), lltv)


def is_healthy(collateral: int, borrow_shares: int, market: MarketState, price: int,
               lltv: int) -> bool:
    if borrow_shares == 0:
        return True
    return max_borrow(collateral, price, lltv) >= borrowed(borrow_shares, market)


def health_factor(collateral: int, borrow_shares: int, market: MarketState, price: int,
                  lltv: int) -> float:
    debt = borrowed(borrow_shares, market)
    if debt == 0:
        return float("inf")
    return max_borrow(collateral, price, lltv) / debt


def liquidation_incentive_factor(lltv: int) -> int:
    return min(MAX_LIQUIDATION_INCENTIVE_FACTOR,
               w_div_down(WAD, WAD - w_mul_down(LIQUIDATION_CURSOR, WAD - lltv)))


@dataclass(frozen=True)
class MorphoLiquidation:
    seized_assets: int  # the argument to pass (0 when repaying by shares)
    repaid_shares: int  # the argument to pass (0 when seizing by assets)
    expected_seized: int  # collateral units we receive
    expected_repaid: int  # loan units we pay
    bad_debt: bool  # the collateral does not cover the debt: all of it is seized


def plan_liquidation(collateral: int, borrow_shares: int, market: MarketState, price: int,
                     lltv: int) -> MorphoLiquidation:
    """Repay all the debt when the collateral covers it with the incentive; otherwise seize
    all the collateral (Morpho then books the rest as bad debt)."""
    lif = liquidation_incentive_factor(lltv)
    repaid_assets = to_assets_up(borrow_shares, market.total_borrow_assets,
                                 market.total_borrow_shares)
    seized = mul_div_down(w_mul_down(repaid_assets, lif), ORACLE_PRICE_SCALE, price)
    if seized <= collateral:
        return MorphoLiquidation(0, borrow_shares, seized, repaid_assets, False)
    # Seize everything: Morpho derives the shares repaid from the collateral's value.
    repaid_from_seized = w_div_up(mul_div_up(collateral, price, ORACLE_PRICE_SCALE), lif)
    shares = to_shares_up(repaid_from_seized, market.total_borrow_assets,
                          market.total_borrow_shares)
    assets = to_assets_up(shares, market.total_borrow_assets, market.total_borrow_shares)
    return MorphoLiquidation(collateral, 0, collateral, assets, True)
