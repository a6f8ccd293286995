"""Protocol-independent health summaries over arrays of accounts (pure, vectorised)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Upper bounds of the health buckets exported as metrics; accounts without debt are not counted.
HEALTH_BUCKETS: tuple[float, ...] = (1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 5.0)
RISK_LEVELS: tuple[float, ...] = (1.0, 1.05, 1.1)


@dataclass(frozen=True)
class HealthSummary:
    buckets: dict[str, int]
    debt_below: dict[str, float]
    collateral_below: dict[str, float]
    total_debt: float
    total_collateral: float
    with_debt: int


def bucket_label(bound: float) -> str:
    return f"{bound:g}"


def summarize(health: NDArray[np.float64], collateral_usd: NDArray[np.float64],
              debt_usd: NDArray[np.float64],
              at_risk_usd: NDArray[np.float64] | None = None) -> HealthSummary:
    """Bucket counts and exposure below each risk level. `health` is inf where no debt.
    `at_risk_usd`: what a liquidation of each account would repay, where it differs from its
    debt (`HealthView.at_risk_usd`): the debt below each level sums it."""
    has_debt = np.isfinite(health)
    at_risk = debt_usd if at_risk_usd is None else at_risk_usd
    h = health[has_debt]
    edges = np.array((-np.inf, *HEALTH_BUCKETS, np.inf))
    counts, _ = np.histogram(h, bins=edges)
    labels = [bucket_label(b) for b in HEALTH_BUCKETS] + ["inf"]
    buckets = {label: int(c) for label, c in zip(labels, counts, strict=True)}
    debt_below = {bucket_label(level): float(at_risk[has_debt & (health < level)].sum())
                  for level in RISK_LEVELS}
    coll_below = {bucket_label(level): float(collateral_usd[has_debt & (health < level)].sum())
                  for level in RISK_LEVELS}
    return HealthSummary(buckets, debt_below, coll_below, float(debt_usd.sum()),
                         float(collateral_usd.sum()), int(has_debt.sum()))


def drop_to_liquidation(main_weighted_collateral: NDArray[np.float64],
                        other_weighted_collateral: NDArray[np.float64],
                        main_debt: NDArray[np.float64],
                        other_debt: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fractional price drop of one asset that brings health to 1, per account.

    Health after the asset's price is scaled by (1 - d):
        (Cm (1-d) + Co) / (Dm (1-d) + Do)          (C: threshold-weighted collateral)
    equals 1 at 1 - d = (Do - Co) / (Cm - Dm). Returns 0 for accounts already liquidatable
    and NaN where no drop of that asset can liquidate (it backs no more than it owes, or the
    rest of the account alone is underwater only at a negative price).
    """
    cm, co, dm, do = (main_weighted_collateral, other_weighted_collateral, main_debt, other_debt)
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (do - co) / (cm - dm)
    d = 1.0 - keep
    already = (cm + co) <= (dm + do)
    out = np.where(already, 0.0, d)
    impossible = ~already & ((cm - dm <= 0) | (d > 1.0) | ~np.isfinite(d))
    return np.where(impossible, np.nan, np.clip(out, 0.0, 1.0))
