"""Compiled (numba) loops of :mod:`ic`: rank correlations, quantile means and event
selections, one pass per date (row) instead of a dozen dense numpy passes.

Imported lazily by the functions of :mod:`ic` that compute. Inputs are the panel's dates x
names matrices (or their transposes for per-name statistics) and the per-row sort order
and sorted values of a :class:`ic.RowSorter` (NaN sorted last), so each matrix is sorted
once and ranked under any mask here. Ties get average ranks, exactly as
``scipy.stats.rankdata``; tested against the numpy definitions in
``tests/evaluation/test_ic.py``.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _masked_ranks(order: np.ndarray, ordered: np.ndarray, other: np.ndarray,
                  out: np.ndarray) -> None:
    """Average ranks (1..k) of one row among its cells where ``other`` is finite too (NaN
    elsewhere), from the row's sort order and sorted values."""
    m = len(order)
    out[:] = np.nan
    before = 0
    p = 0
    while p < m:
        value = ordered[p]
        if value != value:  # NaN sort last
            break
        q = p + 1
        while q < m and ordered[q] == value:
            q += 1
        count = 0
        for r in range(p, q):
            j = order[r]
            if other[j] == other[j]:
                count += 1
        if count:
            average = before + (count + 1) / 2.0
            for r in range(p, q):
                j = order[r]
                if other[j] == other[j]:
                    out[j] = average
            before += count
        p = q


@nb.njit(cache=True, nogil=True, boundscheck=False)
def average_ranks(values: np.ndarray, order: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Average ranks (1..k) of each row among its finite cells, NaN elsewhere."""
    out = np.empty(values.shape)
    for i in range(values.shape[0]):
        _masked_ranks(order[i], ordered[i], values[i], out[i])
    return out


@nb.njit(cache=True, nogil=True, boundscheck=False)
def spearman_rows(a: np.ndarray, a_order: np.ndarray, a_sorted: np.ndarray,
                  a_ranks: np.ndarray, b: np.ndarray, b_order: np.ndarray,
                  b_sorted: np.ndarray, b_ranks: np.ndarray, min_count: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation of each row pair of ``a`` and ``b`` over the cells where both
    are finite (ranks among those cells), NaN below ``min_count`` cells or without spread;
    and the number of those cells per row.
    ``*_order``/``*_sorted``: each row's argsort (NaN last) and sorted values;
    ``*_ranks``: each row's ranks among all its finite cells (:func:`average_ranks`), used
    as they are when both rows are finite on the same cells (the usual case), else the
    row pair is re-ranked on its joint cells."""
    rows, m = a.shape
    out = np.empty(rows)
    counts = np.empty(rows, dtype=np.int64)
    ra_joint = np.empty(m)
    rb_joint = np.empty(m)
    for i in range(rows):
        joint = 0
        only = 0
        ai, bi = a[i], b[i]
        for j in range(m):
            fa = ai[j] == ai[j]
            fb = bi[j] == bi[j]
            joint += fa and fb
            only += fa != fb
        counts[i] = joint
        if joint < min_count:
            out[i] = np.nan
            continue
        if only == 0:
            ra, rb = a_ranks[i], b_ranks[i]
        else:
            _masked_ranks(a_order[i], a_sorted[i], bi, ra_joint)
            _masked_ranks(b_order[i], b_sorted[i], ai, rb_joint)
            ra, rb = ra_joint, rb_joint
        sa = 0.0
        sb = 0.0
        for j in range(m):
            if ra[j] == ra[j] and rb[j] == rb[j]:
                sa += ra[j]
                sb += rb[j]
        ma = sa / joint
        mb = sb / joint
        sab = 0.0
        saa = 0.0
        sbb = 0.0
        for j in range(m):
            if ra[j] == ra[j] and rb[j] == rb[j]:
                da = ra[j] - ma
                db = rb[j] - mb
                sab += da * db
                saa += da * da
                sbb += db * db
        denom = np.sqrt(saa * sbb)
        out[i] = sab / denom if denom > 0 else np.nan
    return out, counts


@nb.njit(cache=True, nogil=True, boundscheck=False)
def quantile_means(labels: np.ndarray, fwd: np.ndarray, side_cost: np.ndarray,
                   quantiles: int, horizon: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per date and quantile: cells (label ``q`` with a forward return), their mean forward
    return and their mean return minus the date's mean over every labelled cell with a
    return (NaN when empty); per date, the round-trip cost of the top-minus-bottom
    tranche: the mean over each leg's names of ``cost[t + 1] + cost[t + horizon]`` (both
    legs; NaN when a leg has none). ``side_cost`` of shape (0, 0): no costs (all NaN)."""
    rows, m = labels.shape
    counts = np.zeros((rows, quantiles), dtype=np.int64)
    raw = np.full((rows, quantiles), np.nan)
    centred = np.full((rows, quantiles), np.nan)
    cost = np.full(rows, np.nan)
    has_cost = side_cost.shape[0] > 0
    raw_sum = np.empty(quantiles)
    centred_sum = np.empty(quantiles)
    for i in range(rows):
        total = 0.0
        valid = 0
        for j in range(m):
            if labels[i, j] > 0 and fwd[i, j] == fwd[i, j]:
                total += fwd[i, j]
                valid += 1
        mean = total / valid if valid else np.nan
        raw_sum[:] = 0.0
        centred_sum[:] = 0.0
        top = 0.0
        bottom = 0.0
        top_n = 0
        bottom_n = 0
        entry = i + 1
        leave = i + horizon
        for j in range(m):
            q = labels[i, j]
            if q <= 0:
                continue
            value = fwd[i, j]
            if value == value:
                counts[i, q - 1] += 1
                raw_sum[q - 1] += value
                centred_sum[q - 1] += value - mean
            if has_cost and (q == quantiles or q == 1):
                trip = (side_cost[entry, j] if entry < rows else np.nan) + (
                    side_cost[leave, j] if leave < rows else np.nan)
                if trip == trip:
                    if q == quantiles:
                        top += trip
                        top_n += 1
                    if q == 1:
                        bottom += trip
                        bottom_n += 1
        for q in range(quantiles):
            if counts[i, q]:
                raw[i, q] = raw_sum[q] / counts[i, q]
                centred[i, q] = centred_sum[q] / counts[i, q]
        if top_n and bottom_n:
            cost[i] = top / top_n + bottom / bottom_n
    return counts, raw, centred, cost


@nb.njit(cache=True, nogil=True, boundscheck=False)
def select_events(signal: np.ndarray, level: float, above: bool, fwd: np.ndarray
                  ) -> np.ndarray:
    """Flat indices (row-major, as boolean indexing orders them) of the cells with a
    forward return where ``signal >= level`` (``above``) or ``signal <= level``; NaN
    ``level`` selects every cell with a return."""
    rows, m = signal.shape
    every = level != level
    count = 0
    for i in range(rows):
        for j in range(m):
            if fwd[i, j] == fwd[i, j] and (every or (signal[i, j] >= level if above
                                                     else signal[i, j] <= level)):
                count += 1
    out = np.empty(count, dtype=np.int64)
    k = 0
    for i in range(rows):
        for j in range(m):
            if fwd[i, j] == fwd[i, j] and (every or (signal[i, j] >= level if above
                                                     else signal[i, j] <= level)):
                out[k] = i * m + j
                k += 1
    return out
