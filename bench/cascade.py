"""Benchmark the cascade engine: N synthetic positions over K shock columns, with cascade
rounds on constant-product depth, against the pure-Python reference on a sample, in one run.

    python bench/cascade.py --positions 1000000 --shocks 64 --out bench/results/cascade.json

Positions: 4 assets (WETH, WBTC, USDC, DAI); collateral in one or two assets, debt in a
stablecoin or the other volatile asset. Two books, both measured:
- `typical`: health log-normal around 1.9 (about 8 % of positions below 1.3), the shape of a
  large lending market on a calm day; depth: constant-product pools holding as much of each
  volatile asset as the whole book has as collateral (on-chain plus centralised liquidity);
- `stressed`: health uniform from 1.0 to 3.0 and pools half as deep: a 1 % drop already
  cascades, and the large drops liquidate a third of all positions over many rounds.
Shocks: WETH alone, WBTC alone and both jointly, over an even grid from 1 % to 50 % (K columns
in all). `reference_speedup` is the reference's time per (position x column) divided by the
engine's, on the same book.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keeperd.risk.cascade import (  # noqa: E402
    CascadeResult,
    Columns,
    Portfolio,
    run_cascade,
    shock_grid,
)
from keeperd.risk.depth import ConstantProduct, NoImpact  # noqa: E402
from tests.unit.cascade_reference import reference_cascade  # noqa: E402

ASSETS = ["WETH", "WBTC", "USDC", "DAI"]
PRICES = np.array([2000.0, 30_000.0, 1.0, 1.0])
LT = np.array([0.825, 0.78, 0.87, 0.77])
BONUS = np.array([0.05, 0.065, 0.045, 0.05])


def synthetic(n: int, seed: int = 7, book: str = "typical") -> Portfolio:
    rng = np.random.default_rng(seed)
    c = np.zeros((n, 4))
    main = rng.choice([0, 1], size=n, p=[0.7, 0.3])
    size = rng.lognormal(mean=9.0, sigma=1.5, size=n)  # USD of collateral, median ~8k
    c[np.arange(n), main] = size
    second = rng.random(n) < 0.3
    c[second, 1 - main[second]] = size[second] * rng.uniform(0.1, 0.5, second.sum())
    weighted = c * LT
    if book == "stressed":
        health = rng.uniform(1.0, 3.0, n)
    else:
        health = np.maximum(1.01, rng.lognormal(mean=np.log(1.9), sigma=0.3, size=n))
    debt_total = weighted.sum(axis=1) / health
    d = np.zeros((n, 4))
    stable = rng.choice([2, 3], size=n)
    volatile_debt = rng.random(n) < 0.1
    d[np.arange(n), np.where(volatile_debt, 1 - main, stable)] = debt_total
    return Portfolio.build(ASSETS, PRICES, c, weighted, d, BONUS)


def grid(k: int) -> Columns:
    """k columns: three scenarios over an even grid of drops from 1 % to 50 %."""
    per = -(-k // 3)
    shocks = list(np.linspace(0.01, 0.50, per))
    g = shock_grid(ASSETS, shocks, single=["WETH", "WBTC"], joint=["WETH", "WBTC"])
    keep = np.arange(k)
    return Columns(tuple(g.scenario[i] for i in keep), g.shock[keep], g.multiplier[keep],
                   g.shocked[keep])


def depth_for(p: Portfolio, book: str = "typical") -> list:
    share = 0.5 if book == "stressed" else 1.0  # pool reserves / the book's collateral
    held = p.collateral_usd.sum(axis=0) / PRICES
    return [ConstantProduct(float(held[0] * share)), ConstantProduct(float(held[1] * share)),
            NoImpact(), NoImpact()]


# What is timed in one run, so that the ratios between them are this machine's at this hour:
# the daemon's default (numba on one thread: `risk.cascade.threads: 1`), numba on every core,
# and the numpy kernels that run where the JIT may not (systemd's MemoryDenyWriteExecute).
VARIANTS = (("numba_1_thread", "auto", 1),
            ("numba_all_cores", "auto", os.cpu_count() or 1),
            ("numpy", "numpy", None))


def timed(book: Portfolio, g: Columns, depth: list, implementation: str,
          threads: int | None, repeat: int) -> tuple[float, list[float], CascadeResult]:
    run_cascade(book, g, depth, implementation=implementation, threads=threads)  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = run_cascade(book, g, depth, implementation=implementation, threads=threads)
        times.append(time.perf_counter() - started)
    return min(times), times, result


def main() -> int:
    from provenance import provenance  # bench/, beside this script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=1_000_000)
    parser.add_argument("--shocks", type=int, default=64)
    parser.add_argument("--sample", type=int, default=2_000,
                        help="positions the reference runs on")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cascade.json")
    args = parser.parse_args()

    g = grid(args.shocks)
    k = len(g.shock)
    figures: dict[str, dict] = {}
    for name in ("typical", "stressed"):
        book = synthetic(args.positions, book=name)
        depth = depth_for(book, name)
        sample = synthetic(args.sample, seed=11, book=name)
        sample_depth = depth_for(sample, name)
        started = time.perf_counter()
        reference_cascade(sample, g, sample_depth)
        ref_seconds = time.perf_counter() - started
        ref_per_cell = ref_seconds / (args.sample * k)
        f: dict = {"reference_seconds": round(ref_seconds, 3)}
        for variant, implementation, threads in VARIANTS:
            seconds, times, result = timed(book, g, depth, implementation, threads,
                                           args.repeat)
            f[variant] = {"threads": threads, "seconds": round(seconds, 4),
                          "seconds_all_runs": [round(t, 4) for t in times],
                          "reference_speedup": round(ref_per_cell
                                                     / (seconds / (args.positions * k)), 1)}
        f.update(rounds_max=int(result.rounds.max()),
                 rounds_mean=round(float(result.rounds.mean()), 2),
                 liquidated_pairs_share=round(float(result.accounts.sum()) / (len(book) * k), 4),
                 max_amplification=round(float(result.amplification.max()), 4))
        f["numpy_over_numba_1_thread"] = round(f["numpy"]["seconds"]
                                               / f["numba_1_thread"]["seconds"], 2)
        f["numba_1_thread_over_all_cores"] = round(f["numba_1_thread"]["seconds"]
                                                   / f["numba_all_cores"]["seconds"], 2)
        figures[name] = f
        print(f"{name:8}: {args.positions:,} positions x {k} shocks; rounds up to "
              f"{f['rounds_max']} (mean {f['rounds_mean']}), "
              f"{f['liquidated_pairs_share']:.1%} of position-shock pairs liquidated, "
              f"amplification up to {f['max_amplification']}")
        for variant, _, _ in VARIANTS:
            v = f[variant]
            print(f"  {variant:16} {v['seconds']:.3f} s (runs: "
                  f"{', '.join(f'{t:.3f}' for t in v['seconds_all_runs'])}); "
                  f"{v['reference_speedup']:,.0f}x the reference ({args.sample:,} positions in "
                  f"{ref_seconds:.2f} s)")
    out = {
        "positions": args.positions,
        "shocks": k,
        "books": figures,
        "reference_sample_positions": args.sample,
        "numpy_version": np.__version__,
        **provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
