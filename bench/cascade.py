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

`hardened_*` is what the shipped systemd unit runs: a process started under W^X (PR_SET_MDWE,
as MemoryDenyWriteExecute=yes), its kernels chosen as the daemon chooses them (`kernels()`:
the ahead-of-time ones; numba's JIT cannot run there), timed in that process beside the
in-process variants and the reference of the same run; its figures must be numba's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
from keeperd.risk.kernels import kernels  # noqa: E402
from tests.mdwe import NO_MDWE_EXIT, mdwe_python  # noqa: E402
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


# What is timed in this process, so that the ratios between them are this machine's at this
# hour: numba on one thread (`risk.cascade.threads: 1`, the daemon's default) and on every core,
# and the numpy kernels, the last resort. The hardened unit's variant is timed in a process of
# its own (`hardened`).
VARIANTS = (("numba_1_thread", "numba", 1),
            ("numba_all_cores", "numba", os.cpu_count() or 1),
            ("numpy", "numpy", None))
HARDENED = (("hardened_1_thread", 1), ("hardened_all_cores", os.cpu_count() or 1))
PR_GET_MDWE = 66


def timed(book: Portfolio, g: Columns, depth: list, implementation: str,
          threads: int | None, repeat: int) -> tuple[float, list[float], CascadeResult]:
    run_cascade(book, g, depth, implementation=implementation, threads=threads)  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = run_cascade(book, g, depth, implementation=implementation, threads=threads)
        times.append(time.perf_counter() - started)
    return min(times), times, result


def digest(result: CascadeResult) -> dict:
    """What two runs of the same book must agree on."""
    return {"accounts": int(result.accounts.sum()),
            "repaid": float(result.repaid.sum()), "bad_debt": float(result.bad_debt.sum())}


def hardened_worker(book_name: str, positions: int, shocks: int, repeat: int) -> None:
    """In the W^X process: time what `kernels()` chooses there, print one JSON line."""
    import ctypes

    mdwe = ctypes.CDLL(None).prctl(PR_GET_MDWE, 0, 0, 0, 0)
    book = synthetic(positions, book=book_name)
    depth = depth_for(book, book_name)
    g = grid(shocks)
    out: dict = {"mdwe_flags": mdwe, "variant": kernels().variant}
    for name, threads in HARDENED:
        seconds, times, result = timed(book, g, depth, "auto", threads, repeat)
        out[name] = {"threads": threads, "seconds": seconds, "seconds_all_runs": times,
                     **digest(result)}
    print(json.dumps(out))


def run_hardened(book_name: str, positions: int, shocks: int, repeat: int) -> dict:
    code = ("import runpy\n"
            f"sys.argv = ['cascade.py', '--hardened-worker', {book_name!r}, '--positions', "
            f"'{positions}', '--shocks', '{shocks}', '--repeat', '{repeat}']\n"
            f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')")
    proc = subprocess.run(mdwe_python(code), capture_output=True, text=True, cwd=ROOT,
                          check=False)
    if proc.returncode == NO_MDWE_EXIT:
        raise SystemExit("this kernel has no PR_SET_MDWE (Linux < 6.3): cannot run as the "
                         "hardened unit does")
    if proc.returncode != 0:
        raise SystemExit(f"the hardened run failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["mdwe_flags"] != 1:
        raise SystemExit(f"the hardened run was not under W^X (PR_GET_MDWE: {out['mdwe_flags']})")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=1_000_000)
    parser.add_argument("--shocks", type=int, default=64)
    parser.add_argument("--sample", type=int, default=2_000,
                        help="positions the reference runs on")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cascade.json")
    parser.add_argument("--hardened-worker", metavar="BOOK", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hardened_worker:
        hardened_worker(args.hardened_worker, args.positions, args.shocks, args.repeat)
        return 0
    from provenance import provenance, settled  # bench/, beside this script

    measured = provenance()  # (before the run: the code it loads)

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

        def speedup(seconds: float, ref_per_cell: float = ref_per_cell) -> float:
            return round(ref_per_cell / (seconds / (args.positions * k)), 1)

        f: dict = {"reference_seconds": round(ref_seconds, 3)}
        digests = {}
        for variant, implementation, threads in VARIANTS:
            seconds, times, result = timed(book, g, depth, implementation, threads,
                                           args.repeat)
            digests[variant] = digest(result)
            f[variant] = {"implementation": implementation, "threads": threads,
                          "seconds": round(seconds, 4),
                          "seconds_all_runs": [round(t, 4) for t in times],
                          "reference_speedup": speedup(seconds)}
        hardened = run_hardened(name, args.positions, args.shocks, args.repeat)
        f["hardened_kernels"] = hardened["variant"]
        for variant, threads in HARDENED:
            h = hardened[variant]
            same = {key: h[key] for key in digests["numba_1_thread"]}
            if same["accounts"] != digests["numba_1_thread"]["accounts"] or not np.allclose(
                    [same["repaid"], same["bad_debt"]],
                    [digests["numba_1_thread"]["repaid"], digests["numba_1_thread"]["bad_debt"]],
                    rtol=1e-9):
                raise SystemExit(f"{name}: the hardened run's figures {same} are not numba's "
                                 f"{digests['numba_1_thread']}")
            f[variant] = {"implementation": f"auto under PR_SET_MDWE: {hardened['variant']}",
                          "threads": threads, "seconds": round(h["seconds"], 4),
                          "seconds_all_runs": [round(t, 4) for t in h["seconds_all_runs"]],
                          "reference_speedup": speedup(h["seconds"])}
        f.update(rounds_max=int(result.rounds.max()),
                 rounds_mean=round(float(result.rounds.mean()), 2),
                 liquidated_pairs_share=round(float(result.accounts.sum()) / (len(book) * k), 4),
                 max_amplification=round(float(result.amplification.max()), 4))
        f["numpy_over_numba_1_thread"] = round(f["numpy"]["seconds"]
                                               / f["numba_1_thread"]["seconds"], 2)
        f["numba_1_thread_over_all_cores"] = round(f["numba_1_thread"]["seconds"]
                                                   / f["numba_all_cores"]["seconds"], 2)
        f["numba_1_thread_over_hardened_1_thread"] = round(
            f["numba_1_thread"]["seconds"] / f["hardened_1_thread"]["seconds"], 2)
        figures[name] = f
        print(f"{name:8}: {args.positions:,} positions x {k} shocks; rounds up to "
              f"{f['rounds_max']} (mean {f['rounds_mean']}), "
              f"{f['liquidated_pairs_share']:.1%} of position-shock pairs liquidated, "
              f"amplification up to {f['max_amplification']}")
        for variant in [v for v, _, _ in VARIANTS] + [v for v, _ in HARDENED]:
            v = f[variant]
            print(f"  {variant:18} {v['seconds']:.3f} s (runs: "
                  f"{', '.join(f'{t:.3f}' for t in v['seconds_all_runs'])}); "
                  f"{v['reference_speedup']:,.0f}x the reference ({args.sample:,} positions in "
                  f"{ref_seconds:.2f} s)")
    out = {
        "positions": args.positions,
        "shocks": k,
        "books": figures,
        "reference_sample_positions": args.sample,
        "numpy_version": np.__version__,
        **settled(measured),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
