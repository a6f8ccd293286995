"""The cascade's two per-round passes in numpy, a chunk of rows at a time: the variant that needs
nothing compiled, neither ahead of time nor by a JIT. The same figures as the compiled ones,
several times slower (bench/README.md): the last resort of `kernels()`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

CHUNK = 8192


def round_pass(W: NDArray[np.float64], D: NDArray[np.float64], C: NDArray[np.float64],
               cmain_over_bonus: NDArray[np.float64], bonus1: NDArray[np.float64],
               main: NDArray[np.int64], main_debt: NDArray[np.int64],
               mult: NDArray[np.float64], cols: NDArray[np.int64],
               ever: NDArray[np.bool_], close_factor: float, full_close_below: float,
               partial_min_usd: float, with_value: bool, blocks: int
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                          NDArray[np.float64]]:
    """`kernels_numba.round_pass` in numpy, a chunk of rows at a time."""
    del blocks
    n, a_count = W.shape
    k_count = mult.shape[0]
    count, repaid, short = np.zeros(k_count), np.zeros(k_count), np.zeros(k_count)
    seized = np.zeros((k_count, a_count))
    mult_t = mult.T
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        lw = W[lo:hi] @ mult_t
        dm = D[lo:hi] @ mult_t
        if with_value:
            short += np.maximum(dm - C[lo:hi] @ mult_t, 0.0).sum(axis=0)
        seen = ever[lo:hi][:, cols]
        new = (lw < dm) & ~seen
        if not new.any():
            continue
        ever[lo:hi, cols] = seen | new
        full = lw <= full_close_below * dm
        if partial_min_usd > 0.0:
            rows = np.arange(hi - lo)
            m, d = main[lo:hi], main_debt[lo:hi]
            full |= (C[lo:hi][rows, m][:, None] * mult_t[m]) < partial_min_usd
            full |= (D[lo:hi][rows, d][:, None] * mult_t[d]) < partial_min_usd
        rep = np.where(full, dm, close_factor * dm)
        rep = np.minimum(rep, cmain_over_bonus[lo:hi, None] * mult_t[main[lo:hi]])
        rep *= new
        count += new.sum(axis=0)
        repaid += rep.sum(axis=0)
        weighted = rep * bonus1[lo:hi, None]
        for a in np.unique(main[lo:hi]):
            seized[:, a] += weighted[main[lo:hi] == a].sum(axis=0)
    return count, repaid, seized, short


def final_pass(D: NDArray[np.float64], C: NDArray[np.float64],
               bonus1: NDArray[np.float64], main: NDArray[np.int64],
               mult: NDArray[np.float64], impact: NDArray[np.float64], blocks: int
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """`kernels_numba.final_pass` in numpy."""
    del blocks
    n = D.shape[0]
    k_count = mult.shape[0]
    bad, toxic, slip = np.zeros(k_count), np.zeros(k_count), np.zeros(k_count)
    mult_t = mult.T
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        dm = D[lo:hi] @ mult_t
        cm = C[lo:hi] @ mult_t
        bad += np.maximum(dm - cm, 0.0).sum(axis=0)
        owed = dm * bonus1[lo:hi, None]
        toxic += np.where(owed > cm, dm, 0.0).sum(axis=0)
        slip += np.where(owed > cm * impact.T[main[lo:hi]], dm, 0.0).sum(axis=0)
    return bad, toxic, slip


def set_threads(threads: int) -> None:
    """numpy's matrix products thread on their own (BLAS): nothing to set."""
    del threads
