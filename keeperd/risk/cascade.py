"""The shock-and-cascade engine: what a price drop liquidates, how the selling of the seized
collateral deepens the drop, and what bad debt is left. Pure and vectorised (numpy).

The model, per column (one scenario at one shock size), in rounds:
- round 0 applies the shock: the prices of the scenario's assets are multiplied by (1 - shock).
  Every position whose health (Σ collateral x liquidation threshold ÷ Σ debt, at those prices)
  is below 1 is liquidated: liquidators repay `close_factor` of its debt (all of it when health
  is at or below `full_close_below`, as Aave V3 does, or when its main collateral or main debt
  is worth less than `partial_min_usd` at the column's prices, as Aave v3.3+ does) and seize
  repaid x (1 + its bonus) of its main collateral (its largest); when that collateral cannot
  cover it, they repay only what it covers and seize all of it (Aave lowers debtToCover the
  same way). Round 0 alone is the *static* model.
- the seized collateral is sold: the cumulative tokens sold of each asset, through that asset's
  depth model, give a price impact; prices become shock x impact. Positions that are now below
  1 and were not liquidated before are liquidated in the next round, and so on until no new
  position is liquidated, the impact moves less than `tolerance`, or `max_rounds`.
- bad debt is debt no longer covered by collateral, Σ max(0, debt - collateral), at the shock's
  prices (static) and at the cascade's final prices. Toxic debt: debt of positions whose
  liquidation makes them worse, loan-to-value above 1/(1 + bonus) — and, once slippage counts,
  with the collateral marked down by the price impact its sale already caused.
Prices only fall in this model (shocks and impacts are drops), so a position liquidated once per
column is a fair simplification: the protocol would liquidate it again only if it got worse.

`reference_cascade` in the tests implements the same rules with plain Python loops; the two agree
on random portfolios.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from keeperd.risk.depth import DepthModel, NoImpact
from keeperd.risk.kernels import kernels

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Asset:
    """What the cascade needs to know of one asset column, whatever the protocol."""

    symbol: str
    address: str
    decimals: int
    price_usd: float
    bonus: float  # the liquidation bonus when it is the collateral (0.05 = 5 %)
    follows: str | None = None  # the asset whose feed its price is built on (wstETH: WETH)
    # The book's unit of account (a perp book's cash): never in the joint move, where
    # falling with everything it would move nothing against it (`cascade_monitor.py`).
    numeraire: bool = False



@dataclass(frozen=True)
class Portfolio:
    """N positions over A assets, in USD at today's prices."""

    assets: tuple[str, ...]
    prices: F64  # (A,) USD per token today
    collateral_usd: F64  # (N, A)
    weighted_collateral_usd: F64  # (N, A) collateral x liquidation threshold (eMode applied)
    debt_usd: F64  # (N, A)
    bonus: F64  # (N,) liquidation bonus of the position's main collateral (0.05 = 5 %)
    main: NDArray[np.intp]  # (N,) column of the collateral that is seized
    main_debt: NDArray[np.intp]  # (N,) column of the largest debt
    close_factor: float = 0.5
    full_close_below: float = 0.95
    # A partial close needs the main collateral and the main debt each worth at least this at
    # the column's prices, else the whole debt is repaid (Aave v3.3+: $2,000; 0: no such rule).
    partial_min_usd: float = 0.0
    accounts: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.debt_usd.shape[0])

    @classmethod
    def build(cls, assets: Sequence[str], prices: Sequence[float] | F64,
              collateral_usd: F64, weighted_collateral_usd: F64, debt_usd: F64,
              bonus_by_asset: Sequence[float] | F64, *, close_factor: float = 0.5,
              full_close_below: float = 0.95, partial_min_usd: float = 0.0,
              accounts: Sequence[str] | None = None) -> Portfolio:
        """Main collateral = the largest, main debt = the largest; bonus = the main
        collateral's, from `bonus_by_asset` (A,), or (N, A) where it depends on the position
        (Aave's eMode). Positions without debt are dropped (they cannot be liquidated and owe
        nothing)."""
        collateral_usd = np.asarray(collateral_usd, dtype=np.float64)
        debt_usd = np.asarray(debt_usd, dtype=np.float64)
        keep = debt_usd.sum(axis=1) > 0
        main = np.argmax(collateral_usd, axis=1).astype(np.intp)
        main_debt = np.argmax(debt_usd, axis=1).astype(np.intp)
        bonus_table = np.asarray(bonus_by_asset, dtype=np.float64)
        bonus = (bonus_table[main] if bonus_table.ndim == 1
                 else bonus_table[np.arange(len(main)), main])
        return cls(tuple(assets), np.asarray(prices, dtype=np.float64), collateral_usd[keep],
                   np.asarray(weighted_collateral_usd, dtype=np.float64)[keep], debt_usd[keep],
                   bonus[keep], main[keep], main_debt[keep], close_factor, full_close_below,
                   partial_min_usd,
                   tuple(a for a, k in zip(accounts, keep, strict=True) if k)
                   if accounts is not None else None)


@dataclass(frozen=True)
class Columns:
    """The shock grid: one column per (scenario, shock)."""

    scenario: tuple[str, ...]  # (K,) "WETH", ..., "joint"
    shock: F64  # (K,) fractions
    multiplier: F64  # (K, A) the price multiplier each column applies before any impact
    shocked: NDArray[np.bool_]  # (K, A) the assets each column shocks


def shock_grid(assets: Sequence[str], shocks: Sequence[float],
               single: Sequence[str] | None = None,
               joint: Sequence[str] | None = None) -> Columns:
    """A scenario per asset in `single` (default: all) and a joint one over `joint` (every
    asset in it falls by the same fraction: 'everything correlated'), each over `shocks`."""
    assets = list(assets)
    scenarios: list[tuple[str, list[int]]] = [
        (a, [assets.index(a)]) for a in (single if single is not None else assets)
        if a in assets]
    if joint:
        idx = [assets.index(a) for a in joint if a in assets]
        if idx:
            scenarios.append(("joint", idx))
    names, values, mults, masks = [], [], [], []
    for name, idx in scenarios:
        for s in shocks:
            m = np.ones(len(assets))
            mask = np.zeros(len(assets), dtype=bool)
            m[idx] = 1.0 - s
            mask[idx] = True
            names.append(name)
            values.append(float(s))
            mults.append(m)
            masks.append(mask)
    return Columns(tuple(names), np.array(values), np.array(mults).reshape(-1, len(assets)),
                   np.array(masks).reshape(-1, len(assets)))


def with_followers(columns: Columns, assets: Sequence[str], follows: Mapping[str, str]
                   ) -> Columns:
    """Assets whose price the oracle derives from another's (wstETH from ETH / USD) fall with
    it: in every column that shocks the leader and not the follower, the follower takes the
    leader's multiplier. A column that shocks the follower itself (an LST depeg) is kept."""
    assets = list(assets)
    mult, shocked = columns.multiplier.copy(), columns.shocked.copy()
    for follower, leader in follows.items():
        if follower not in assets or leader not in assets:
            continue
        f, lead = assets.index(follower), assets.index(leader)
        moved = shocked[:, lead] & ~shocked[:, f]
        mult[moved, f] = mult[moved, lead]
        shocked[moved, f] = True
    return Columns(columns.scenario, columns.shock, mult, shocked)


@dataclass
class CascadeResult:
    columns: Columns
    assets: tuple[str, ...]
    # static model (round 0), per column
    static_accounts: NDArray[np.int64]
    static_repaid: F64
    static_seized: F64
    static_bonus: F64
    static_bad_debt: F64
    # cascade totals over all rounds, per column
    accounts: NDArray[np.int64]
    repaid: F64
    seized: F64
    bonus: F64
    bad_debt: F64
    final_multiplier: F64  # (K, A) shock x impact
    rounds: NDArray[np.int64]  # rounds in which something was liquidated
    seized_by_asset: F64  # (K, A) USD of collateral seized (and sold) per asset
    tokens_sold: F64  # (K, A)
    toxic_debt: F64
    toxic_debt_with_slippage: F64
    total_debt: float
    # per round: accounts, repaid, seized (K,) and the prices it ran at, multiplier (K, A)
    per_round: list[dict[str, F64]] = field(default_factory=list)
    # (N, K) whether the cascade liquidates position i in column k (the kernels' own record,
    # kept: the tests compare which positions, not only how many, with the reference)
    liquidated: NDArray[np.bool_] = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))

    @property
    def final_drop(self) -> F64:
        """Per column, the largest final drop among the assets the column shocked."""
        drop = np.where(self.columns.shocked, 1.0 - self.final_multiplier, 0.0)
        return drop.max(axis=1)

    @property
    def amplification(self) -> F64:
        """Final drop ÷ initial shock (1.0: the liquidations did not move the price)."""
        return np.divide(self.final_drop, self.columns.shock,
                         out=np.ones_like(self.columns.shock), where=self.columns.shock > 0)

    def critical_shock(self, scenario: str, min_repaid_usd: float,
                       baseline_repaid: float = 0.0) -> float | None:
        """The smallest shock (interpolated on the grid) whose cascade liquidates at least
        `min_repaid_usd` of debt beyond `baseline_repaid` (what is liquidatable at today's
        prices: counted in, every scenario's critical shock was the grid's first, a
        stablecoin's "1 %" included — a by-hand trial); None if none on the grid does."""
        idx = [i for i, s in enumerate(self.columns.scenario) if s == scenario]
        shocks = self.columns.shock[idx]
        repaid = self.repaid[idx] - baseline_repaid
        order = np.argsort(shocks)
        shocks, repaid = shocks[order], repaid[order]
        hit = np.flatnonzero(repaid >= min_repaid_usd)
        if hit.size == 0:
            return None
        j = int(hit[0])
        if j == 0 or repaid[j] == repaid[j - 1]:
            return float(shocks[j])
        # linear between the last grid point under the amount and the first over it
        t = (min_repaid_usd - repaid[j - 1]) / (repaid[j] - repaid[j - 1])
        return float(shocks[j - 1] + t * (shocks[j] - shocks[j - 1]))

    def depth_coverage(self, depth: Sequence[DepthModel], bonus_by_asset: F64,
                       baseline_sold: F64 | None = None) -> F64:
        """(K, A) collateral the market absorbs before its price falls by the liquidation
        bonus, ÷ collateral the column's liquidations sell beyond `baseline_sold` (A,: what
        today's liquidatable positions sell, in every column alike) — inf where nothing
        more is sold."""
        absorbable = np.array([d.absorbable_tokens(float(b))
                               for d, b in zip(depth, bonus_by_asset, strict=True)])
        sold = self.tokens_sold if baseline_sold is None else np.maximum(
            self.tokens_sold - baseline_sold[None, :], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sold > 1e-12, absorbable[None, :] / sold, np.inf)


class _Plan:
    """The portfolio as the kernels want it: contiguous float64 arrays."""

    def __init__(self, p: Portfolio) -> None:
        self.W = np.ascontiguousarray(p.weighted_collateral_usd, dtype=np.float64)
        self.C = np.ascontiguousarray(p.collateral_usd, dtype=np.float64)
        self.D = np.ascontiguousarray(p.debt_usd, dtype=np.float64)
        self.main = np.ascontiguousarray(p.main, dtype=np.int64)
        self.main_debt = np.ascontiguousarray(p.main_debt, dtype=np.int64)
        self.bonus1 = np.ascontiguousarray(1.0 + p.bonus, dtype=np.float64)
        cmain = p.collateral_usd[np.arange(len(p)), p.main] if len(p) else np.zeros(0)
        self.cmain_over_bonus = np.ascontiguousarray(cmain / self.bonus1, dtype=np.float64)


def run_cascade(portfolio: Portfolio, columns: Columns,
                depth: Sequence[DepthModel] | None = None, *, max_rounds: int = 10,
                tolerance: float = 1e-4, threads: int | None = None,
                implementation: str = "auto") -> CascadeResult:
    """The cascade for every column (see the module's docstring for the model).

    `implementation`: the kernels' variant, "auto" (the fastest this process can run, see
    risk/kernels.py) or one of kernels.VARIANTS.

    `tolerance`: a column has converged when no asset's price moves by more than this
    fraction of itself between rounds (1e-4: a hundredth of a percent)."""
    p = portfolio
    A = len(p.assets)
    K = len(columns.shock)
    depth = list(depth) if depth is not None else [NoImpact()] * A
    plan = _Plan(p)
    chosen = kernels(implementation)
    round_pass, final_pass = chosen.round_pass, chosen.final_pass
    blocks = 4 * (threads or min(4, os.cpu_count() or 1))
    if threads:
        chosen.set_threads(threads)
    ever = np.zeros((len(p), K), dtype=bool)  # (position, column) liquidated in a past round

    def one_round(mult: F64, cols: NDArray[np.int64], with_value: bool
                  ) -> tuple[F64, F64, F64, F64]:
        count, repaid, by_asset, short = round_pass(
            plan.W, plan.D, plan.C, plan.cmain_over_bonus, plan.bonus1, plan.main,
            plan.main_debt, np.ascontiguousarray(mult), cols, ever, p.close_factor,
            p.full_close_below, p.partial_min_usd, with_value, blocks)
        return count, repaid, by_asset, short

    mult = columns.multiplier.copy()
    active = np.arange(K, dtype=np.int64)
    acc, rep, by_asset, bad0 = one_round(mult, active, True)
    sei = by_asset.sum(axis=1)
    static = (acc.astype(np.int64), rep, sei, sei - rep, bad0)
    per_round = [{"accounts": acc, "repaid": rep, "seized": sei,
                  "multiplier": columns.multiplier.copy()}]
    tot_acc, tot_rep, tot_sei = acc.copy(), rep.copy(), sei.copy()
    tot_by_asset = by_asset.copy()
    tokens = by_asset / (p.prices[None, :] * mult)
    rounds = (acc > 0).astype(np.int64)
    impact = np.ones((K, A))
    for _ in range(max_rounds - 1):
        new_impact = np.column_stack([depth[a].multiplier(tokens[active, a])
                                      for a in range(A)]) if A else impact[active]
        # A column whose prices moved less than the tolerance has converged: it keeps its
        # prices and drops out for good (its sales no longer change).
        # (relative: a price that has collapsed still moves when it halves again)
        moved = (np.abs(new_impact - impact[active]) > tolerance * impact[active]).any(axis=1)
        if not moved.any():
            break
        active, new_impact = active[moved], new_impact[moved]
        impact[active] = new_impact
        mult = columns.multiplier[active] * new_impact
        acc, rep, by_asset, _ = one_round(mult, active, False)
        sei = by_asset.sum(axis=1)
        round_acc, round_rep, round_sei = np.zeros(K), np.zeros(K), np.zeros(K)
        round_acc[active], round_rep[active], round_sei[active] = acc, rep, sei
        per_round.append({"accounts": round_acc, "repaid": round_rep, "seized": round_sei,
                          "multiplier": columns.multiplier * impact})
        rounds[active] += (acc > 0)
        tot_acc += round_acc
        tot_rep += round_rep
        tot_sei += round_sei
        tot_by_asset[active] += by_asset
        with np.errstate(divide="ignore", invalid="ignore"):
            tokens[active] += np.nan_to_num(by_asset / (p.prices[None, :] * mult))
        if not (acc > 0).any():
            break
    final_mult = columns.multiplier * impact
    bad, toxic, toxic_slip = final_pass(plan.D, plan.C, plan.bonus1, plan.main,
                                        np.ascontiguousarray(final_mult),
                                        np.ascontiguousarray(impact), blocks)
    return CascadeResult(
        columns=columns, assets=p.assets,
        static_accounts=static[0], static_repaid=static[1], static_seized=static[2],
        static_bonus=static[3], static_bad_debt=static[4],
        accounts=tot_acc.astype(np.int64), repaid=tot_rep, seized=tot_sei,
        bonus=tot_sei - tot_rep, bad_debt=bad,
        final_multiplier=final_mult, rounds=rounds, seized_by_asset=tot_by_asset,
        tokens_sold=tokens, toxic_debt=toxic, toxic_debt_with_slippage=toxic_slip,
        total_debt=float(p.debt_usd.sum()), per_round=per_round, liquidated=ever)
