# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True, nonecheck=False
"""The cascade's two per-round passes compiled ahead of time (Cython, OpenMP): a shared library
the process maps from a file, so they run where no memory may be both writable and executable
(systemd's MemoryDenyWriteExecute), where numba's JIT cannot.

The arithmetic is `kernels_numba`'s, with the loops turned so the compiler vectorises them: for
a row, each asset's value is added into all K columns at once, and the (rare) new liquidations
are found by a branch-free pass over the columns. Each column's sum still adds the assets in
order, with no fused multiply-add (setup.py: -ffp-contract=off), so every health factor, and
so every liquidation decision, is the reference's to the last bit; the totals are summed per
block of rows in row order, then over blocks, as numba's are.
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

import numpy as np

cdef int _threads = 0  # 0: OpenMP's default (every core)


def set_num_threads(int threads):
    """Threads the next passes use (the engine's `threads`, as numba's set_num_threads)."""
    global _threads
    _threads = threads if threads > 0 else 0


cdef inline int _threads_for(int blocks) noexcept nogil:
    if 0 < _threads < blocks:
        return _threads
    return blocks


cdef inline void _column_sums(const double* row, const double* mult_t, Py_ssize_t a_count,
                              Py_ssize_t k_count, double* out) noexcept nogil:
    """out[j] = Σ_a row[a] x mult[j, a], the assets added in order (mult_t is mult.T).

    An asset the position does not hold is skipped: adding 0 x m (m finite) leaves a sum as it
    was, and most positions hold one or two of the assets."""
    cdef Py_ssize_t a, j
    cdef double x
    cdef const double* m
    cdef bint first = True
    for a in range(a_count):
        x = row[a]
        if x == 0.0:
            continue
        m = mult_t + a * k_count
        if first:  # 0.0 + x*m is x*m: one pass less over the columns
            for j in range(k_count):
                out[j] = x * m[j]
            first = False
        else:
            for j in range(k_count):
                out[j] += x * m[j]
    if first:
        for j in range(k_count):
            out[j] = 0.0


cdef inline bint _flag_new(const double* lw, const double* dm, const unsigned char* row_ever,
                           const Py_ssize_t* run_start, const Py_ssize_t* run_shift,
                           Py_ssize_t runs, unsigned char* flag) noexcept nogil:
    """flag[j] = the position is liquidatable in column j and was not liquidated there
    before; True if any is. The columns come as runs of consecutive `ever` columns (column j
    of run r is ever's j + run_shift[r]), so the loop reads `ever` without a gather."""
    cdef Py_ssize_t r, j
    cdef const unsigned char* seen
    cdef unsigned char new, some = 0
    for r in range(runs):
        seen = row_ever + run_shift[r]
        for j in range(run_start[r], run_start[r + 1]):
            new = (lw[j] < dm[j]) & (seen[j] == 0)
            flag[j] = new
            some |= new
    return some


cdef inline bint _all_seen(const unsigned char* row_ever, const Py_ssize_t* run_start,
                           const Py_ssize_t* run_shift, Py_ssize_t runs) noexcept nogil:
    """Whether the position was liquidated in every one of the columns already: then a round
    without the value sums has nothing to do for it (most rows, late in a deep cascade)."""
    cdef Py_ssize_t r, j
    cdef const unsigned char* seen
    cdef unsigned char unseen = 0
    for r in range(runs):
        seen = row_ever + run_shift[r]
        for j in range(run_start[r], run_start[r + 1]):
            unseen |= seen[j] == 0
    return not unseen


cdef inline void _liquidate_flagged(
        const unsigned char* flag, Py_ssize_t k_count, Py_ssize_t a_count, const double* lw,
        const double* dm, unsigned char* row_ever, const int64_t* cols,
        const double* main_mult, const double* debt_mult, double main_collateral,
        double main_debt, double cmain_over_bonus, double bonus1, Py_ssize_t main,
        double close_factor, double full_close_below, double partial_min_usd,
        double* count, double* repaid, double* seized) noexcept nogil:
    """Liquidates the position in each flagged column, as `kernels_numba.round_pass` does;
    `main_mult`/`debt_mult`: the columns' multipliers of its main collateral / main debt."""
    cdef Py_ssize_t w, j
    cdef uint64_t word
    cdef double rep, cap
    for w in range(0, k_count, 8):  # eight flags at a time: a row has few new liquidations
        memcpy(&word, flag + w, 8)
        if word == 0:
            continue
        for j in range(w, w + 8 if w + 8 < k_count else k_count):
            if not flag[j]:
                continue
            row_ever[cols[j]] = 1
            rep = close_factor * dm[j]
            if lw[j] <= full_close_below * dm[j]:
                rep = dm[j]
            elif partial_min_usd > 0.0 and (main_collateral * main_mult[j] < partial_min_usd
                                            or main_debt * debt_mult[j] < partial_min_usd):
                rep = dm[j]
            cap = cmain_over_bonus * main_mult[j]
            if rep > cap:
                rep = cap
            count[j] += 1.0
            repaid[j] += rep
            seized[j * a_count + main] += rep * bonus1


def _runs(const int64_t[::1] cols):
    """(start, shift): the runs of consecutive values in `cols`; run r is
    cols[start[r]:start[r + 1]], whose j-th entry is j + shift[r]."""
    if cols.shape[0] == 0:
        return np.zeros(2, dtype=np.intp), np.zeros(1, dtype=np.intp)
    starts = [0]
    for j in range(1, cols.shape[0]):
        if cols[j] != cols[j - 1] + 1:
            starts.append(j)
    shifts = [cols[s] - s for s in starts]
    starts.append(cols.shape[0])
    return np.array(starts, dtype=np.intp), np.array(shifts, dtype=np.intp)


def round_pass(const double[:, ::1] W, const double[:, ::1] D, const double[:, ::1] C,
               const double[::1] cmain_over_bonus, const double[::1] bonus1,
               const int64_t[::1] main, const int64_t[::1] main_debt,
               const double[:, ::1] mult, const int64_t[::1] cols, ever_bool,
               double close_factor, double full_close_below, double partial_min_usd,
               bint with_value, int blocks):
    """One round for the columns `cols`: the contract of `kernels_numba.round_pass` (`ever`,
    the engine's bool array, is read and written as bytes)."""
    cdef unsigned char[:, ::1] ever = np.asarray(ever_bool).view(np.uint8)
    cdef Py_ssize_t n = W.shape[0], a_count = W.shape[1], k_count = mult.shape[0]
    if (D.shape[0] != n or C.shape[0] != n or ever.shape[0] != n
            or cmain_over_bonus.shape[0] != n or bonus1.shape[0] != n
            or main.shape[0] != n or main_debt.shape[0] != n
            or D.shape[1] != a_count or C.shape[1] != a_count or mult.shape[1] != a_count
            or cols.shape[0] != k_count):
        raise ValueError("round_pass: arrays of inconsistent shapes")
    cdef Py_ssize_t j
    for j in range(k_count):
        if not 0 <= cols[j] < ever.shape[1]:
            raise ValueError("round_pass: a column index outside `ever`")
    for j in range(n):
        if not (0 <= main[j] < a_count and 0 <= main_debt[j] < a_count):
            raise ValueError("round_pass: a main asset index outside the assets")
    blocks = max(1, blocks)
    count_arr = np.zeros((blocks, k_count))
    repaid_arr = np.zeros((blocks, k_count))
    seized_arr = np.zeros((blocks, k_count, a_count))
    short_arr = np.zeros((blocks, k_count))
    cdef double[:, ::1] count = count_arr, repaid = repaid_arr, short = short_arr
    cdef double[:, :, ::1] seized = seized_arr
    cdef const double[:, ::1] mult_t_view = (np.ascontiguousarray(np.asarray(mult).T)
                                             if a_count * k_count else np.zeros((1, 1)))
    cdef const double* mult_t = &mult_t_view[0, 0]
    # per block: lw, dm, cm (K each), and the new-liquidation flags (K, padded to 8 bytes)
    cdef double[:, ::1] sums = np.zeros((blocks, 3 * k_count + 1))
    cdef unsigned char[:, ::1] flags = np.zeros((blocks, k_count + 8), dtype=np.uint8)
    start_arr, shift_arr = _runs(cols)
    cdef const Py_ssize_t[::1] run_start = start_arr, run_shift = shift_arr
    cdef Py_ssize_t runs = run_shift.shape[0]
    cdef Py_ssize_t per = (n + blocks - 1) // blocks
    cdef Py_ssize_t b, i, lo, hi, m_i, d_i
    cdef double* lw
    cdef double* dm
    cdef double* cm
    cdef unsigned char* flag
    with nogil:
        for b in prange(blocks, schedule="dynamic", num_threads=_threads_for(blocks)):
            lw = &sums[b, 0]
            dm = lw + k_count
            cm = dm + k_count
            flag = &flags[b, 0]
            lo = b * per
            hi = n if lo + per > n else lo + per
            for i in range(lo, hi):
                if not with_value and _all_seen(&ever[i, 0], &run_start[0], &run_shift[0],
                                                runs):
                    continue
                _column_sums(&W[i, 0], mult_t, a_count, k_count, lw)
                _column_sums(&D[i, 0], mult_t, a_count, k_count, dm)
                if with_value:
                    _column_sums(&C[i, 0], mult_t, a_count, k_count, cm)
                    for j in range(k_count):
                        short[b, j] += dm[j] - cm[j] if dm[j] - cm[j] > 0.0 else 0.0
                if not _flag_new(lw, dm, &ever[i, 0], &run_start[0], &run_shift[0], runs,
                                 flag):
                    continue
                m_i = main[i]
                d_i = main_debt[i]
                _liquidate_flagged(
                    flag, k_count, a_count, lw, dm, &ever[i, 0], &cols[0],
                    mult_t + m_i * k_count, mult_t + d_i * k_count, C[i, m_i], D[i, d_i],
                    cmain_over_bonus[i], bonus1[i], m_i, close_factor, full_close_below,
                    partial_min_usd, &count[b, 0], &repaid[b, 0], &seized[b, 0, 0])
    return (count_arr.sum(axis=0), repaid_arr.sum(axis=0), seized_arr.sum(axis=0),
            short_arr.sum(axis=0))


def final_pass(const double[:, ::1] D, const double[:, ::1] C, const double[::1] bonus1,
               const int64_t[::1] main, const double[:, ::1] mult,
               const double[:, ::1] impact, int blocks):
    """At the final prices: bad debt, toxic debt, toxic debt with the collateral marked down
    by its sale's impact: the contract of `kernels_numba.final_pass`."""
    cdef Py_ssize_t n = D.shape[0], a_count = D.shape[1], k_count = mult.shape[0]
    if (C.shape[0] != n or bonus1.shape[0] != n or main.shape[0] != n
            or C.shape[1] != a_count or mult.shape[1] != a_count
            or impact.shape[0] != k_count or impact.shape[1] != a_count):
        raise ValueError("final_pass: arrays of inconsistent shapes")
    cdef Py_ssize_t j
    for j in range(n):
        if not 0 <= main[j] < a_count:
            raise ValueError("final_pass: a main asset index outside the assets")
    blocks = max(1, blocks)
    bad_arr = np.zeros((blocks, k_count))
    toxic_arr = np.zeros((blocks, k_count))
    slip_arr = np.zeros((blocks, k_count))
    cdef double[:, ::1] bad = bad_arr, toxic = toxic_arr, slip = slip_arr
    cdef const double[:, ::1] mult_t_view = (np.ascontiguousarray(np.asarray(mult).T)
                                             if a_count * k_count else np.zeros((1, 1)))
    cdef const double* mult_t = &mult_t_view[0, 0]
    # impact.T: a row's main asset picks one contiguous row of it
    cdef const double[:, ::1] impact_t = (np.ascontiguousarray(np.asarray(impact).T)
                                          if a_count * k_count else np.zeros((1, 1)))
    cdef double[:, ::1] sums = np.zeros((blocks, 2 * k_count + 1))  # dm, cm per block
    cdef Py_ssize_t per = (n + blocks - 1) // blocks
    cdef Py_ssize_t b, i, lo, hi
    cdef double* dm
    cdef double* cm
    cdef const double* row_impact
    cdef double owed, b1
    with nogil:
        for b in prange(blocks, schedule="dynamic", num_threads=_threads_for(blocks)):
            dm = &sums[b, 0]
            cm = dm + k_count
            lo = b * per
            hi = n if lo + per > n else lo + per
            for i in range(lo, hi):
                _column_sums(&D[i, 0], mult_t, a_count, k_count, dm)
                _column_sums(&C[i, 0], mult_t, a_count, k_count, cm)
                row_impact = &impact_t[main[i], 0]
                b1 = bonus1[i]
                # (adding 0.0 where a condition fails leaves the total as the branch would)
                for j in range(k_count):
                    owed = dm[j] * b1
                    bad[b, j] += dm[j] - cm[j] if dm[j] - cm[j] > 0.0 else 0.0
                    toxic[b, j] += dm[j] if owed > cm[j] else 0.0
                    slip[b, j] += dm[j] if owed > cm[j] * row_impact[j] else 0.0
    return bad_arr.sum(axis=0), toxic_arr.sum(axis=0), slip_arr.sum(axis=0)
