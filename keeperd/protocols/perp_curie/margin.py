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
  the account value is negative (bad debt, which the insurance fund then covers);
- non-settlement collateral (WETH through the CollateralManager) counts at its value at the
  vault's 15-minute TWAP of the collateral's feed times its collateral ratio; it is in the
  account value, and it moves with its asset: a long ETH position on WETH margin is exposed
  twice.
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
class CurieCollateral:
    """A non-settlement collateral token in the vault (Vault.getBalanceByToken)."""
    token: str
    asset: str  # the asset symbol keeperd prices it by (WETH)
    amount: int  # token units
    decimals: int
    price: int  # CollateralManager.getPrice(token, 900), `price_decimals`
    price_decimals: int
    ratio: int  # collateral ratio, parts per million
    # Vault.getMaxRepaidSettlementAndLiquidatableCollateral: what one collateral liquidation
    # may repay (settlement-token units) and take (token units); 0 while not liquidatable.
    max_repaid: int = 0
    max_liquidatable: int = 0
    # CollateralManager.getPrice(token, 0): the feed's latest, `price_decimals` (0: not
    # read). The vault prices a liquidation at its TWAP; what the tokens are worth is this.
    spot_price: int = 0

    @property
    def value(self) -> int:
        """USD, 18 decimals, before the ratio (Vault._getSettlementByCollateral)."""
        if self.decimals > 18:
            return self.amount * self.price // 10**self.price_decimals \
                // 10**(self.decimals - 18)
        return self.amount * 10**(18 - self.decimals) * self.price // 10**self.price_decimals

    @property
    def counted(self) -> int:
        """What the account value counts of it: value x collateral ratio."""
        return mul_ratio(self.value, self.ratio)


@dataclass(frozen=True)
class CurieTrader:
    account: str
    account_value: int  # ClearingHouse.getAccountValue, 18 decimals
    margin_requirement: int  # AccountBalance.getMarginRequirementForLiquidation
    free_collateral: int  # Vault.getFreeCollateral, settlement-token units
    positions: tuple[CuriePosition, ...]
    collateral: tuple[CurieCollateral, ...] = ()
    # Vault.isLiquidatable: its non-settlement collateral may be sold for its USDC debt (the
    # account value under the requirement plus the manager's buffer, or USDC debt over 80 %
    # of the collateral's counted value or over the debt threshold).
    collateral_liquidatable: bool = False

    @property
    def total_abs_value(self) -> int:
        return sum(p.notional for p in self.positions)

    def collateral_exposure(self, asset: str) -> float:
        """USD of the account value that moves one for one with `asset` through its
        non-settlement collateral."""
        return sum(c.counted for c in self.collateral if c.asset == asset) / WAD

    @property
    def assets(self) -> frozenset[str]:
        """Every asset whose price moves this account's value."""
        return frozenset(p.asset for p in self.positions) | {c.asset for c in self.collateral}


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


@dataclass(frozen=True)
class CollateralRules:
    """The CollateralManager's settings that make collateral liquidatable."""

    mm_buffer: int  # added to the maintenance ratio, parts per million
    debt_ratio: int  # USDC debt over this share of the counted collateral: liquidatable
    debt_threshold: int  # USDC debt over this (settlement-token units): liquidatable


def collateral_health(trader: CurieTrader, rules: CollateralRules, mm_ratio: int,
                      factors: Mapping[str, float] | None = None) -> float:
    """Vault.isLiquidatable as a ratio (below 1: liquidatable), under `factors` as
    `shocked`: the least of account value / (Σ|value| x (mmRatio + buffer)), counted
    collateral x debt ratio / USDC debt, and debt threshold / USDC debt — the USDC debt being
    the negative of the settlement-token value (account value - counted collateral)."""
    if not trader.collateral:
        return float("inf")
    factors = factors or {}
    av, _ = shocked(trader, factors, mm_ratio)
    total = sum(p.notional / WAD * factors.get(p.asset, 1.0) for p in trader.positions)
    counted = sum(c.counted / WAD * factors.get(c.asset, 1.0) for c in trader.collateral)
    measures = []
    requirement = total * (mm_ratio + rules.mm_buffer) / RATIO
    if requirement > 0:
        measures.append(av / requirement)
    debt = counted - av
    if debt > 0:
        measures += [counted * rules.debt_ratio / RATIO / debt,
                     rules.debt_threshold / 10**6 / debt]
    return min(measures, default=float("inf"))


def collateral_liquidation_value(c: CurieCollateral) -> int:
    """USD (18 decimals) of the collateral one collateral liquidation takes, at the lower of
    the vault's TWAP and the feed's latest price: the liquidator pays `max_repaid` USDC for
    `max_liquidatable` tokens priced at the TWAP less the discount (10 % for WETH), 3 % of
    the payment going to the insurance fund — and in a crash the 15-minute TWAP lags above
    the price the tokens sell for (a by-hand trial paid $63,348 for WETH worth $54,653, each
    planned as a profit)."""
    price = min(c.price, c.spot_price) if c.spot_price > 0 else c.price
    return CurieCollateral(c.token, c.asset, c.max_liquidatable, c.decimals, price,
                           c.price_decimals, c.ratio).value


def liquidation_fee(notional: int, penalty_ratio: int, account_value: int) -> tuple[int, int]:
    """(the whole penalty, the liquidator's share) of liquidating `notional`."""
    penalty = mul_ratio(abs(notional), penalty_ratio)
    return penalty, penalty if account_value < 0 else penalty // 2


def shocked(trader: CurieTrader, factors: Mapping[str, float], mm_ratio: int
            ) -> tuple[float, float]:
    """(account value, margin requirement) in USD when each asset's mark moves by its factor
    (1.0: unchanged): the position values scale, the difference is unrealised PnL; collateral
    in a moved asset moves with it (at once: the vault's 15-minute TWAP would follow within
    the quarter hour)."""
    av = trader.account_value / WAD
    total = 0.0
    for p in trader.positions:
        f = factors.get(p.asset, 1.0)
        av += p.value / WAD * (f - 1.0)
        total += p.notional / WAD * f
    for c in trader.collateral:
        av += c.counted / WAD * (factors.get(c.asset, 1.0) - 1.0)
    return av, total * mm_ratio / RATIO


def _multiplier_at(slope: float, level: float) -> float | None:
    """x > 0 solving slope * x = level (None: none)."""
    if slope == 0:
        return None
    x = level / slope
    return x if x > 0 else None


def liquidation_multipliers(trader: CurieTrader, position: CuriePosition, mm_ratio: int,
                            rules: CollateralRules | None = None) -> list[float]:
    """The multipliers x of this market's mark (the other markets unchanged, collateral in
    the same asset moving with it) at which a liquidation rule is met: the account at its
    maintenance margin (the position's takeover); with `rules` and non-settlement collateral,
    each of the Vault's collateral rules (`collateral_health`'s three measures: its WETH margin
    sold). Each is linear in x, so it is met beyond its root, away from today's price."""
    asset = position.asset
    v = sum(p.value for p in trader.positions if p.asset == asset) / WAD
    n = sum(p.notional for p in trader.positions if p.asset == asset) / WAD
    others = trader.total_abs_value / WAD - n
    w = trader.collateral_exposure(asset)
    av = trader.account_value / WAD
    # av(x) = av + (v + w)(x - 1); the requirement at ratio r: r (others + n x).
    roots = []
    for ratio in [mm_ratio / RATIO] + (
            [(mm_ratio + rules.mm_buffer) / RATIO] if rules and trader.collateral else []):
        roots.append(_multiplier_at(v + w - ratio * n, v + w - av + ratio * others))
    if rules is not None and trader.collateral:
        # The USDC debt: counted collateral - account value, with counted(x) = c_o + w x.
        c_o = sum(c.counted for c in trader.collateral) / WAD - w
        r = rules.debt_ratio / RATIO
        # debt(x) = r counted(x)  <=>  av(x) = (1 - r) counted(x)
        roots.append(_multiplier_at(v + w - (1 - r) * w, (1 - r) * c_o - av + v + w))
        # debt(x) = threshold  <=>  c_o + w x - av(x) = threshold
        roots.append(_multiplier_at(-v, rules.debt_threshold / 10**6 - c_o + av - v - w))
    return [x for x in roots if x is not None]


def liquidation_price(trader: CurieTrader, position: CuriePosition, mm_ratio: int,
                      rules: CollateralRules | None = None) -> float | None:
    """The mark of this market, nearest today's, at which the account is liquidated —
    reaches its maintenance margin or, with `rules`, its WETH margin may be sold by the
    Vault's rules (which `health` counts too: a holder with WETH margin was told a distance
    its collateral passed first, a by-hand trial) — the other markets unchanged, collateral
    in the same asset moving with it (None: no such price above zero)."""
    if position.size == 0 or not position.mark:
        return None
    roots = liquidation_multipliers(trader, position, mm_ratio, rules)
    if not roots:
        return None
    return min(roots, key=lambda x: abs(x - 1.0)) * position.mark / WAD


def move_to_liquidation(trader: CurieTrader, position: CuriePosition, mm_ratio: int,
                        rules: CollateralRules | None = None) -> float | None:
    """The move of this market's mark, as a signed fraction of it, at which the account is
    liquidated (`liquidation_price`): -0.04 a 4 % drop, +0.04 a 4 % rise; 0 when it is there
    already; None when no price above zero gets it there. A short is liquidated by a rise, a
    long by a drop — and a short margined in its own asset (WETH margin behind a vETH short)
    may be by a drop: which way is read from where the price is, not from the position's
    side."""
    price = liquidation_price(trader, position, mm_ratio, rules)
    if price is None:
        return None
    if is_liquidatable(trader) or (rules is not None and trader.collateral and
                                   collateral_health(trader, rules, mm_ratio) < 1.0):
        return 0.0  # already there
    return price / (position.mark / WAD) - 1.0


def at_risk(traders: list[CurieTrader] | tuple[CurieTrader, ...], asset: str, move: float,
            mm_ratio: int) -> tuple[float, float]:
    """(notional of the accounts a `move` of `asset` makes liquidatable, the bad debt they
    leave: their negative account value), in USD, the other marks unchanged. Cross margin:
    an account that goes under takes all its positions with it."""
    notional = bad_debt = 0.0
    for t in traders:
        if not t.positions or asset not in t.assets:
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
