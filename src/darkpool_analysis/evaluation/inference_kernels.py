"""Compiled (numba) loops of :mod:`inference`: CSCV over every split, and the two loops of
Hansen's SPA that ``arch`` runs in numpy (the HAC variance over every lag and the mean of
every bootstrap resample).

Imported lazily (numba's start-up is paid only when a test runs). The SPA loops add in the
same order as the numpy expressions they replace (rows one after another, columns
independent), so they give the same floating-point sums; they are tested against ``arch``
itself in ``tests/evaluation/test_inference.py``.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _sharpe(total: float, squares: float, count: float) -> float:
    """Per-period Sharpe from sums over rows (population variance), NaN when flat."""
    mean = total / count
    var = max(squares / count - mean**2, 0.0)
    return mean / np.sqrt(var) if var > 0 else np.nan


@nb.njit(cache=True, nogil=True, boundscheck=False)
def cscv_logits(total: np.ndarray, squares: np.ndarray, count: np.ndarray,
                member: np.ndarray) -> np.ndarray:
    """Logit of the out-of-sample relative rank of the in-sample best strategy, per split.

    ``total``/``squares``: (blocks, strategies) sums of returns and squared returns per
    block; ``count``: rows per block; ``member``: (splits, blocks), 1 for the in-sample
    half. The best in-sample Sharpe (first on ties, NaN never best) gets the average rank
    of its out-of-sample Sharpe among all strategies' (NaN lowest), ``w = rank / (N + 1)``.
    """
    splits, blocks = member.shape
    n = total.shape[1]
    logits = np.empty(splits)
    is_total = np.empty(n)
    is_squares = np.empty(n)
    oos_total = np.empty(n)
    oos_squares = np.empty(n)
    oos = np.empty(n)
    for c in range(splits):
        is_total[:] = 0.0
        is_squares[:] = 0.0
        oos_total[:] = 0.0
        oos_squares[:] = 0.0
        is_count = 0.0
        oos_count = 0.0
        for b in range(blocks):
            if member[c, b] > 0:
                is_count += count[b]
                for j in range(n):
                    is_total[j] += total[b, j]
                    is_squares[j] += squares[b, j]
            else:
                oos_count += count[b]
                for j in range(n):
                    oos_total[j] += total[b, j]
                    oos_squares[j] += squares[b, j]
        best = 0
        best_sharpe = -np.inf
        for j in range(n):
            value = _sharpe(is_total[j], is_squares[j], is_count)
            if value > best_sharpe:  # NaN never compares greater
                best, best_sharpe = j, value
        for j in range(n):
            value = _sharpe(oos_total[j], oos_squares[j], oos_count)
            oos[j] = value if value == value else -np.inf
        chosen = oos[best]
        below = 0
        ties = 0
        for j in range(n):
            if oos[j] < chosen:
                below += 1
            elif oos[j] == chosen:
                ties += 1
        omega = (below + (ties + 1) / 2.0) / (n + 1)
        logits[c] = np.log(omega / (1 - omega))
    return logits


@nb.njit(cache=True, nogil=True, boundscheck=False)
def lagged_cross_sums(demeaned: np.ndarray, weights: np.ndarray, t: int,
                      start: np.ndarray) -> np.ndarray:
    """``start + sum_i weights[i] * sum(demeaned[:t - i] * demeaned[i:], 0) / t`` over lags
    ``i = 1..t-1`` (``weights[i]`` = 2 kappa_i), added lag after lag and each inner sum
    row by row, as numpy reduces axis 0; columns in blocks that stay in cache."""
    k = demeaned.shape[1]
    out = start.copy()
    acc = np.empty(k)
    width = 128
    for lo in range(0, k, width):
        hi = min(lo + width, k)
        for i in range(1, t):
            for j in range(lo, hi):
                acc[j] = demeaned[0, j] * demeaned[i, j]
            for r in range(1, t - i):
                for j in range(lo, hi):
                    acc[j] += demeaned[r, j] * demeaned[r + i, j]
            for j in range(lo, hi):
                out[j] += weights[i] * acc[j] / t
    return out


@nb.njit(cache=True, nogil=True, boundscheck=False)
def resampled_means(data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``data[indices[r]].mean(0)`` for every replication ``r`` (rows added one after
    another, as numpy reduces axis 0), without materialising the resamples."""
    reps, t = indices.shape
    k = data.shape[1]
    out = np.empty((reps, k))
    for r in range(reps):
        acc = out[r]
        first = data[indices[r, 0]]
        for j in range(k):
            acc[j] = first[j]
        for s in range(1, t):
            row = data[indices[r, s]]
            for j in range(k):
                acc[j] += row[j]
        for j in range(k):
            acc[j] /= t
    return out
