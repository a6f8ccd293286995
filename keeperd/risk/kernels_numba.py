"""The cascade's hot loops, compiled with numba: one fused pass over positions x columns per
round, with no N x K temporaries (the numpy version spent its time writing and reading those).

Per position the sums run over assets in order, exactly as the plain reference does, so the
liquidation decisions are the same to the last bit; column totals are summed per block of rows
and then added, which differs from the reference only by rounding.

Importing this module raises OSError where the process may not map executable memory (systemd's
MemoryDenyWriteExecute, SELinux's execmem): numba checks at import. `kernels.py` imports it only
when it chooses numba.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

_jit: Callable[[Any], Any] = numba.njit(parallel=True, cache=True, nogil=True)
_prange: Any = numba.prange


@_jit
def round_pass(W: NDArray[np.float64], D: NDArray[np.float64], C: NDArray[np.float64],
               cmain_over_bonus: NDArray[np.float64], bonus1: NDArray[np.float64],
               main: NDArray[np.int64], main_debt: NDArray[np.int64],
               mult: NDArray[np.float64], cols: NDArray[np.int64], ever: NDArray[np.bool_],
               close_factor: float, full_close_below: float, partial_min_usd: float,
               with_value: bool, blocks: int
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                          NDArray[np.float64]]:
    """One round for the columns `cols` (mult[j] is column cols[j]'s price multipliers).
    Returns per column: new liquidations, debt repaid, collateral seized per asset (K, A),
    and the shortfall Σ max(0, debt - collateral) when `with_value`. The whole debt is repaid
    at health <= `full_close_below`, or when the main collateral or the main debt is worth
    less than `partial_min_usd` (Aave v3.3+), else `close_factor` of it."""
    n, a_count = W.shape
    k_count = mult.shape[0]
    count = np.zeros((blocks, k_count))
    repaid = np.zeros((blocks, k_count))
    seized = np.zeros((blocks, k_count, a_count))
    short = np.zeros((blocks, k_count))
    per = (n + blocks - 1) // blocks
    for b in _prange(blocks):
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
                    rep = close_factor * dm
                    if lw <= full_close_below * dm:
                        rep = dm
                    elif partial_min_usd > 0.0:
                        d_i = main_debt[i]
                        if (C[i, m_i] * mult[j, m_i] < partial_min_usd
                                or D[i, d_i] * mult[j, d_i] < partial_min_usd):
                            rep = dm
                    cap = cmain_over_bonus[i] * mult[j, m_i]
                    if rep > cap:
                        rep = cap
                    count[b, j] += 1.0
                    repaid[b, j] += rep
                    seized[b, j, m_i] += rep * bonus1[i]
    return count.sum(axis=0), repaid.sum(axis=0), seized.sum(axis=0), short.sum(axis=0)


@_jit
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
    for b in _prange(blocks):
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


def warm_up() -> None:
    """Compile (first run in an environment, ~seconds) or load the cached kernels (ms). The
    daemon calls it before it is ready, so the first block's cascade never stalls the loop;
    `make setup` calls it so the cache exists before anything runs. Raises where the JIT
    cannot run."""
    one = np.ones((1, 1))
    vec = np.ones(1)
    idx = np.zeros(1, dtype=np.int64)
    round_pass(one, one, one, vec, vec, idx, idx, one, idx, np.zeros((1, 1), dtype=np.bool_),
               0.5, 0.95, 0.0, True, 1)
    final_pass(one, one, vec, idx, one, one, 1)


def set_threads(threads: int) -> None:
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
