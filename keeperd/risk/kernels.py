"""The cascade's hot loops, compiled with numba: one fused pass over positions x columns per
round, with no N x K temporaries (the numpy version spent its time writing and reading those).

Per position the sums run over assets in order, exactly as the plain reference does, so the
liquidation decisions are the same to the last bit; column totals are summed per thread and
then added, which differs from the reference only by rounding.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(parallel=True, cache=True, nogil=True)
def round_pass(W: NDArray[np.float64], D: NDArray[np.float64], C: NDArray[np.float64],
               cmain_over_bonus: NDArray[np.float64], bonus1: NDArray[np.float64],
               main: NDArray[np.int64], mult: NDArray[np.float64], cols: NDArray[np.int64],
               ever: NDArray[np.bool_], close_factor: float, full_close_below: float,
               with_value: bool, blocks: int
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                          NDArray[np.float64]]:
    """One round for the columns `cols` (mult[j] is column cols[j]'s price multipliers).
    Returns per column: new liquidations, debt repaid, collateral seized per asset (K, A),
    and the shortfall Σ max(0, debt - collateral) when `with_value`."""
    n, a_count = W.shape
    k_count = mult.shape[0]
    count = np.zeros((blocks, k_count))
    repaid = np.zeros((blocks, k_count))
    seized = np.zeros((blocks, k_count, a_count))
    short = np.zeros((blocks, k_count))
    per = (n + blocks - 1) // blocks
    for b in numba.prange(blocks):
        lo = b * per
        hi = min(n, lo + per)
        for i in range(lo, hi):
            m_i = main[i]
            for j in range(k_count):
                lw = 0.0
                dm = 0.0
                for a in range(a_count):
                    lw += W[i, a] * mult[j, a]
                    dm += D[i, a] * mult[j, a]
                if with_value:
                    cm = 0.0
                    for a in range(a_count):
                        cm += C[i, a] * mult[j, a]
                    if dm - cm > 0.0:
                        short[b, j] += dm - cm
                col = cols[j]
                if lw < dm and not ever[i, col]:
                    ever[i, col] = True
                    rep = dm if lw <= full_close_below * dm else close_factor * dm
                    cap = cmain_over_bonus[i] * mult[j, m_i]
                    if rep > cap:
                        rep = cap
                    count[b, j] += 1.0
                    repaid[b, j] += rep
                    seized[b, j, m_i] += rep * bonus1[i]
    return count.sum(axis=0), repaid.sum(axis=0), seized.sum(axis=0), short.sum(axis=0)


@numba.njit(parallel=True, cache=True, nogil=True)
def final_pass(D: NDArray[np.float64], C: NDArray[np.float64], bonus1: NDArray[np.float64],
               main: NDArray[np.int64], mult: NDArray[np.float64],
               impact: NDArray[np.float64], blocks: int
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """At the final prices: bad debt, toxic debt, toxic debt once the collateral is marked
    down by the impact its asset's sale caused."""
    n, a_count = D.shape
    k_count = mult.shape[0]
    bad = np.zeros((blocks, k_count))
    toxic = np.zeros((blocks, k_count))
    toxic_slip = np.zeros((blocks, k_count))
    per = (n + blocks - 1) // blocks
    for b in numba.prange(blocks):
        lo = b * per
        hi = min(n, lo + per)
        for i in range(lo, hi):
            for j in range(k_count):
                dm = 0.0
                cm = 0.0
                for a in range(a_count):
                    dm += D[i, a] * mult[j, a]
                    cm += C[i, a] * mult[j, a]
                if dm - cm > 0.0:
                    bad[b, j] += dm - cm
                owed = dm * bonus1[i]
                if owed > cm:
                    toxic[b, j] += dm
                if owed > cm * impact[j, main[i]]:
                    toxic_slip[b, j] += dm
    return bad.sum(axis=0), toxic.sum(axis=0), toxic_slip.sum(axis=0)
