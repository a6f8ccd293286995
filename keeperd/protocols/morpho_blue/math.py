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


def repaid_shares_for_seizure(seized: int, market: MarketState, price: int, lltv: int) -> int:
    """The borrow shares Morpho.liquidate takes for seizing `seized` collateral units."""
    quoted = mul_div_up(seized, price, ORACLE_PRICE_SCALE)
    return to_shares_up(w_div_up(quoted, liquidation_incentive_factor(lltv)),
                        market.total_borrow_assets, market.total_borrow_shares)


def plan_liquidation(collateral: int, borrow_shares: int, market: MarketState, price: int,
                     lltv: int, edge_buffer_bps: int = 10,
                     most_seized: int | None = None) -> MorphoLiquidation:
    """What to ask Morpho.liquidate for, with `market` accrued to about when the transaction
    lands:
    - the collateral covers all the debt with the incentive, with room to spare: repay all the
      borrow shares;
    - it does not cover it: seize all the collateral (Morpho books the rest as bad debt);
    - near the edge (seizing for all the shares would take within `edge_buffer_bps` of all the
      collateral): seize what the shares allow, less that buffer. Interest until inclusion
      makes each share worth more, so the shares this seizure takes only shrink — neither the
      collateral nor the borrow shares can underflow (all-or-nothing would revert there).
    `most_seized`: a flash sale too large for its pool's depth (`MorphoLiquidator.
    sale_too_large`) seizes at most that, by assets (Morpho has no close factor and no dust
    rule: the rest stays a position, liquidatable next block)."""
    planned = _plan_whole(collateral, borrow_shares, market, price, lltv, edge_buffer_bps)
    if most_seized is None or most_seized <= 0 or most_seized >= (
            planned.expected_seized * (10_000 - edge_buffer_bps) // 10_000):
        # (a cap within the edge buffer of the whole: the whole, whose shares cannot
        # underflow, not a seizure whose rounded-up shares might)
        return planned
    shares = repaid_shares_for_seizure(most_seized, market, price, lltv)
    return MorphoLiquidation(most_seized, 0, most_seized,
                             to_assets_up(shares, market.total_borrow_assets,
                                          market.total_borrow_shares), False)


def _plan_whole(collateral: int, borrow_shares: int, market: MarketState, price: int,
                lltv: int, edge_buffer_bps: int) -> MorphoLiquidation:
    lif = liquidation_incentive_factor(lltv)
    total_assets, total_shares = market.total_borrow_assets, market.total_borrow_shares
    repaid_assets = to_assets_up(borrow_shares, total_assets, total_shares)
    seized_for_all = mul_div_down(
        w_mul_down(to_assets_down(borrow_shares, total_assets, total_shares), lif),
        ORACLE_PRICE_SCALE, price)
    if seized_for_all * (10_000 + edge_buffer_bps) // 10_000 <= collateral:
        return MorphoLiquidation(0, borrow_shares, seized_for_all, repaid_assets, False)
    if seized_for_all > collateral:
        shares = repaid_shares_for_seizure(collateral, market, price, lltv)
        if shares <= borrow_shares:
            assets = to_assets_up(shares, total_assets, total_shares)
            return MorphoLiquidation(collateral, 0, collateral, assets, True)
    seized = min(collateral, seized_for_all) * (10_000 - edge_buffer_bps) // 10_000
    shares = repaid_shares_for_seizure(seized, market, price, lltv)
    return MorphoLiquidation(seized, 0, seized, to_assets_up(shares, total_assets, total_shares),
                             False)


def after_liquidation(market: MarketState, collateral: int, borrow_shares: int,
                      plan: MorphoLiquidation, price: int, lltv: int) -> MarketState:
    """The market once `plan` has run, as Morpho.liquidate leaves it: the repaid shares and
    assets out of the totals and, when the position's collateral is gone, its remaining debt
    written off against the suppliers (bad debt). A bad debt lowers every borrow share's
    worth, so the next liquidation in the same market takes more shares for the same
    collateral: several liquidations of one block are planned one after the other on this."""
    shares = (repaid_shares_for_seizure(plan.seized_assets, market, price, lltv)
              if plan.seized_assets else plan.repaid_shares)
    seized = plan.seized_assets or plan.expected_seized
    repaid = to_assets_up(shares, market.total_borrow_assets, market.total_borrow_shares)
    borrow_assets = max(0, market.total_borrow_assets - repaid)
    borrow_shares_total = market.total_borrow_shares - shares
    supply_assets = market.total_supply_assets
    if collateral - seized <= 0:
        bad_shares = borrow_shares - shares
        bad_assets = min(borrow_assets,
                         to_assets_up(bad_shares, borrow_assets, borrow_shares_total))
        borrow_assets -= bad_assets
        supply_assets -= bad_assets
        borrow_shares_total -= bad_shares
    return MarketState(supply_assets, market.total_supply_shares, borrow_assets,
                       borrow_shares_total, market.last_update, market.fee)
