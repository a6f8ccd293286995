"""The cascade model written as plainly as possible: loops over columns, rounds and positions,
no numpy in the arithmetic. The vectorised engine must agree with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keeperd.risk.cascade import Columns, Portfolio
from keeperd.risk.depth import DepthModel


def reference_cascade(p: Portfolio, columns: Columns, depth: Sequence[DepthModel],
                      max_rounds: int = 10, tolerance: float = 1e-4) -> dict[str, list[Any]]:
    N, A = len(p), len(p.assets)
    out: dict[str, list[Any]] = {k: [] for k in (
        "static_accounts", "static_repaid", "static_seized", "static_bad_debt", "accounts",
        "repaid", "seized", "bad_debt", "final_multiplier", "rounds", "toxic_debt",
        "toxic_debt_with_slippage", "tokens_sold")}
    for k in range(len(columns.shock)):
        m0 = [float(x) for x in columns.multiplier[k]]
        impact = [1.0] * A
        tokens = [0.0] * A
        ever = [False] * N
        totals = {"accounts": 0, "repaid": 0.0, "seized": 0.0}
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
    return out
