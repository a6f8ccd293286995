"""The cascade model written as plainly as possible: loops over columns, rounds and positions,
no numpy in the arithmetic. The vectorised engine must agree with it: the same figures, and
the same positions liquidated (`assert_engine_agrees`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from keeperd.risk.cascade import CascadeResult, Columns, Portfolio, run_cascade
from keeperd.risk.depth import DepthModel

# The reference's figures, per column; it also returns, per column, the set of positions the
# cascade liquidates ("liquidated") and the set its first round, the static model, does.
FIGURES = ("static_accounts", "static_repaid", "static_seized", "static_bad_debt", "accounts",
           "repaid", "seized", "bad_debt", "final_multiplier", "rounds", "toxic_debt",
           "toxic_debt_with_slippage", "tokens_sold")


def reference_cascade(p: Portfolio, columns: Columns, depth: Sequence[DepthModel],
                      max_rounds: int = 10, tolerance: float = 1e-4) -> dict[str, list[Any]]:
    N, A = len(p), len(p.assets)
    out: dict[str, list[Any]] = {k: [] for k in (*FIGURES, "liquidated", "static_liquidated")}
    for k in range(len(columns.shock)):
        m0 = [float(x) for x in columns.multiplier[k]]
        impact = [1.0] * A
        tokens = [0.0] * A
        ever = [False] * N
        totals = {"accounts": 0, "repaid": 0.0, "seized": 0.0}
        liquidated: set[int] = set()
        rounds = 0

        def value(i: int, rows: Any, mult: list[float]) -> float:
            return sum(float(rows[i][a]) * mult[a] for a in range(A))

        for r in range(max_rounds):
            if r > 0:
                new_impact = [float(depth[a].multiplier(tokens[a])) for a in range(A)]
                moved = any(abs(new_impact[a] - impact[a]) > tolerance * impact[a]
                            for a in range(A))
                if not moved:
                    break
                impact = new_impact
            mult = [m0[a] * impact[a] for a in range(A)]
            accounts, repaid_sum, seized_sum = 0, 0.0, 0.0
            by_asset = [0.0] * A
            bad = 0.0
            for i in range(N):
                lw = value(i, p.weighted_collateral_usd, mult)
                dm = value(i, p.debt_usd, mult)
                if r == 0:
                    bad += max(0.0, dm - value(i, p.collateral_usd, mult))
                if lw < dm and not ever[i]:
                    ever[i] = True
                    liquidated.add(i)
                    main = int(p.main[i])
                    b1 = 1.0 + float(p.bonus[i])
                    md = int(p.main_debt[i])
                    small = (float(p.collateral_usd[i][main]) * mult[main] < p.partial_min_usd
                             or float(p.debt_usd[i][md]) * mult[md] < p.partial_min_usd)
                    repaid = (dm if lw <= p.full_close_below * dm or small
                              else p.close_factor * dm)
                    repaid = min(repaid, float(p.collateral_usd[i][main]) * mult[main] / b1)
                    accounts += 1
                    repaid_sum += repaid
                    seized_sum += repaid * b1
                    by_asset[main] += repaid * b1
            for a in range(A):
                tokens[a] += by_asset[a] / (float(p.prices[a]) * mult[a])
            if r == 0:
                out["static_liquidated"].append(set(liquidated))
                out["static_accounts"].append(accounts)
                out["static_repaid"].append(repaid_sum)
                out["static_seized"].append(seized_sum)
                out["static_bad_debt"].append(bad)
            totals["accounts"] += accounts
            totals["repaid"] += repaid_sum
            totals["seized"] += seized_sum
            rounds += accounts > 0
            if r > 0 and accounts == 0:
                break
        mult = [m0[a] * impact[a] for a in range(A)]
        bad = toxic = toxic_slip = 0.0
        for i in range(N):
            dm = value(i, p.debt_usd, mult)
            cm = value(i, p.collateral_usd, mult)
            bad += max(0.0, dm - cm)
            owed = dm * (1.0 + float(p.bonus[i]))
            if owed > cm:
                toxic += dm
            if owed > cm * impact[int(p.main[i])]:
                toxic_slip += dm
        for key in ("accounts", "repaid", "seized"):
            out[key].append(totals[key])
        out["bad_debt"].append(bad)
        out["final_multiplier"].append(mult)
        out["rounds"].append(rounds)
        out["toxic_debt"].append(toxic)
        out["toxic_debt_with_slippage"].append(toxic_slip)
        out["tokens_sold"].append(list(tokens))
        out["liquidated"].append(liquidated)
    return out


def liquidated_sets(liquidated: NDArray[np.bool_]) -> list[set[int]]:
    """Per column, the positions an engine's (N, K) record says it liquidated."""
    return [set(np.flatnonzero(liquidated[:, k]).tolist()) for k in range(liquidated.shape[1])]


def assert_engine_agrees(p: Portfolio, columns: Columns, depth: Sequence[DepthModel],
                         implementation: str, **kw: Any) -> CascadeResult:
    """The engine's cascade with the kernels `implementation`, against the reference: every
    figure, and the set of positions liquidated in each column — by the whole cascade and by
    its first round (the engine run again with one round: the static model)."""
    got = run_cascade(p, columns, depth, implementation=implementation, **kw)
    static = run_cascade(p, columns, depth, implementation=implementation,
                         **{**kw, "max_rounds": 1})
    want = reference_cascade(p, columns, depth, **{k: v for k, v in kw.items()
                                                    if k in ("max_rounds", "tolerance")})
    for key in FIGURES:
        assert np.asarray(getattr(got, key), dtype=float) == pytest.approx(
            np.asarray(want[key], dtype=float), rel=1e-9, abs=1e-6), key
    assert liquidated_sets(got.liquidated) == want["liquidated"]
    assert liquidated_sets(static.liquidated) == want["static_liquidated"]
    return got
