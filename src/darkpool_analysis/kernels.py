"""Compiled (numba) kernels of the ``daily_metrics`` build: per-symbol rolling z-scores.

Imported lazily (only by the functions of :mod:`darkpool_analysis.metrics` that compute), so
neither ``import darkpool_analysis`` nor the CLI's start pays for numba. Kernels are compiled
with ``cache=True`` (the machine code is kept in ``__pycache__`` after the first call in any
process) and ``nogil=True``, so symbol chunks run on several threads at once.

Rolling z-score numerics (:func:`rolling_zscore_kernel`): one pass per symbol keeps the
window's count, sum and sum of squares of values centred on a reference value ``c``, adding
the newest row and removing the one that leaves. Sliding sums pick up rounding from every
value they ever held, so they are **re-anchored exactly** at every row whose absolute session
number is a multiple of ``block`` (and at each symbol's first row): the window is summed
afresh and ``c`` is reset to its first non-null value. Between anchors the error is bounded by
a few ulps of ``mag``, the sum of squares added since the anchor; a window whose centred
second moment ``m2`` is small against ``mag`` (an outlier that left, a trend away from ``c``:
``m2 * CONDITION_LIMIT < mag``) is recomputed by exact two-pass summation. Because the anchors
depend only on the session calendar, a frame that starts on a block boundary gives the same
bits as a longer frame from its second block on (the warm-up rule of range builds), and every
value at row ``t`` depends only on rows ``<= t`` of the same symbol (point in time).

Constant windows (all non-null values equal) give NaN exactly, as pandas' exact 0 std does:
the kernel counts the run of equal trailing values; the window is constant when that run
covers every non-null value in it (no rounding residue involved).
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: Recompute a window by two-pass summation when its centred second moment is below
#: ``mag / CONDITION_LIMIT`` (sliding sums may then have lost more than ~1e-12 relative).
CONDITION_LIMIT = 1e3

#: Set bits of every byte value.
_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _two_pass(x: np.ndarray, lo: int, hi: int) -> tuple[float, float, int]:
    """Mean, centred second moment and count of the non-null ``x[lo:hi + 1]`` (two-pass
    with the compensating correction term of the textbook corrected two-pass algorithm)."""
    total = 0.0
    count = 0
    for j in range(lo, hi + 1):
        v = x[j]
        if v == v:
            total += v
            count += 1
    mean = total / count
    dev = 0.0
    dev2 = 0.0
    for j in range(lo, hi + 1):
        v = x[j]
        if v == v:
            d = v - mean
            dev += d
            dev2 += d * d
    return mean + dev / count, dev2 - dev * dev / count, count


@nb.njit(cache=True, nogil=True, boundscheck=False)
def rolling_zscore_kernel(x: np.ndarray, group_start: np.ndarray, session: np.ndarray,
                          lo: int, hi: int, window: int, block: int, min_periods: int,
                          limit: float, out: np.ndarray) -> None:
    """Write the per-symbol rolling z-score of ``x[lo:hi]`` into ``out[lo:hi]``.

    ``group_start[i]`` is the first row of row i's symbol (rows sorted by symbol, then
    session, no gaps; ``[lo, hi)`` never splits a symbol); ``session[i]`` the absolute
    session number of row i (fixes the anchors). ``out[i]`` is NaN when ``x[i]`` is NaN,
    when the window holds fewer than ``min_periods`` non-null values, or when its
    population std is 0.
    """
    c = 0.0        # reference value the sums are centred on
    s1 = 0.0       # sum of (x - c) over the window's non-null values
    s2 = 0.0       # sum of (x - c)^2
    mag = 0.0      # sum of (x - c)^2 of every value added since the anchor
    count = 0      # non-null values in the window
    run = 0        # trailing non-null values equal to the last one
    last = 0.0     # the last non-null value (meaningful when count > 0)
    phase = 0      # session[i] % block, kept by counting (sessions of a symbol are
    #                consecutive): no integer division per row
    for i in range(lo, hi):
        g = group_start[i]
        if i == g:
            phase = session[i] % block
        else:
            phase += 1
            if phase == block:
                phase = 0
        ws = i - window + 1
        if ws < g:
            ws = g
        v = x[i]
        if i == g or phase == 0:
            # Exact re-anchor: sum the window afresh around its first non-null value.
            count = 0
            s1 = 0.0
            s2 = 0.0
            run = 0
            for j in range(ws, i + 1):
                u = x[j]
                if u == u:
                    if count == 0:
                        c = u
                        run = 1
                    elif u == last:
                        run += 1
                    else:
                        run = 1
                    d = u - c
                    s1 += d
                    s2 += d * d
                    count += 1
                    last = u
            mag = s2
        else:
            old = i - window
            if old >= g:
                u = x[old]
                if u == u:
                    count -= 1
                    if count == 0:
                        s1 = 0.0
                        s2 = 0.0
                        mag = 0.0
                        run = 0
                    else:
                        d = u - c
                        s1 -= d
                        s2 -= d * d
            if v == v:
                if count == 0:
                    c = v
                    s1 = 0.0
                    s2 = 0.0
                    mag = 0.0
                    run = 1
                elif v == last:
                    run += 1
                else:
                    run = 1
                d = v - c
                s1 += d
                s2 += d * d
                mag += d * d
                count += 1
                last = v
        if v != v or count < min_periods or run >= count:
            out[i] = np.nan
            continue
        m2 = s2 - s1 * s1 / count
        if m2 * limit < mag:
            mean, m2, _ = _two_pass(x, ws, i)
            deviation = v - mean
        else:
            deviation = (v - c) - s1 / count
        if m2 > 0.0:
            out[i] = deviation / np.sqrt(m2 / count)
        else:
            out[i] = np.nan


@nb.njit(cache=True, nogil=True, boundscheck=False)
def validity_bitmap(x: np.ndarray, bitmap: np.ndarray) -> int:
    """Arrow validity bitmap of ``x`` (bit set = not NaN, LSB first) into ``bitmap``
    (``ceil(len(x) / 8)`` bytes); returns the number of NaNs (Arrow NULLs). Branch-free."""
    n = len(x)
    valid = 0
    full = n // 8
    for k in range(full):
        base = k * 8
        byte = 0
        for b in range(8):
            v = x[base + b]
            byte |= np.int64(v == v) << b
        valid += _POPCOUNT[byte]
        bitmap[k] = byte
    if full * 8 < n:
        byte = 0
        for b in range(n - full * 8):
            v = x[full * 8 + b]
            byte |= np.int64(v == v) << b
        valid += _POPCOUNT[byte]
        bitmap[full] = byte
    return n - valid


@nb.njit(cache=True, nogil=True, boundscheck=False)
def grid_positions(codes: np.ndarray, days: np.ndarray, slot_of_day: np.ndarray, day0: int,
                   first_slot: np.ndarray, lengths: np.ndarray, offsets: np.ndarray,
                   flag: np.ndarray, pos: np.ndarray) -> int:
    """Grid row of each input row (symbol code, day) into ``pos`` (-1: unknown symbol, not a
    session, outside the symbol's span), setting ``flag`` at every row hit; returns the
    number of rows that hit an already flagged grid row (duplicate (symbol, date) keys)."""
    duplicates = 0
    n_days = len(slot_of_day)
    for k in range(len(codes)):
        code = codes[k]
        offset = days[k] - day0
        pos[k] = -1
        if code < 0 or offset < 0 or offset >= n_days:
            continue
        slot = slot_of_day[offset]
        if slot < 0:
            continue
        rel = slot - first_slot[code]
        if rel < 0 or rel >= lengths[code]:
            continue
        row = offsets[code] + rel
        if flag[row]:
            duplicates += 1
        flag[row] = True
        pos[k] = row
    return duplicates


@nb.njit(cache=True, nogil=True, boundscheck=False)
def row_columns(buy: np.ndarray, total: np.ndarray, close: np.ndarray, high: np.ndarray,
                low: np.ndarray, group_start: np.ndarray, lit_buy: np.ndarray,
                lit_sell: np.ndarray, any_lit: bool, min_lit_volume: float,
                sell: np.ndarray, short_ratio: np.ndarray, buy_sell: np.ndarray,
                return_1d: np.ndarray, range_pct: np.ndarray, vw_flow: np.ndarray,
                combined_ratio: np.ndarray, lit_total: np.ndarray, lit_buy_ratio: np.ndarray,
                imbalance: np.ndarray) -> None:
    """The row-local ``daily_metrics`` columns in one pass (metrics-spec formulas; the same
    IEEE operations as their numpy form, so the same bits). Lit outputs are written only
    when ``any_lit`` (otherwise the lit inputs are all NULL and so are those columns)."""
    nan = np.nan
    for i in range(len(buy)):
        b = buy[i]
        t = total[i]
        d = t - b
        s = d if d != d or d > 0.0 else 0.0          # max(total - buy, 0), NaN stays NaN
        if d == 0.0:
            s = d
        sell[i] = s
        short_ratio[i] = b / t if t != 0.0 else nan
        buy_sell[i] = b / s if s > 0.0 else nan
        c = close[i]
        if i == group_start[i]:
            return_1d[i] = nan
        else:
            p = close[i - 1]
            return_1d[i] = (c / p if p != 0.0 else nan) - 1.0
        range_pct[i] = (high[i] - low[i]) / c if c != 0.0 else nan
        b0 = 0.0 if b != b else b
        s0 = 0.0 if s != s else s
        if any_lit:
            lb = lit_buy[i]
            ls = lit_sell[i]
            any_part = (b == b) or (s == s) or (lb == lb) or (ls == ls)
            buys = b0 + (0.0 if lb != lb else lb)
            sells = s0 + (0.0 if ls != ls else ls)
            lt = lb + ls
            lit_total[i] = lt
            if lt >= min_lit_volume and lt > 0.0:
                lit_buy_ratio[i] = lb / lt
                imbalance[i] = (lb - ls) / lt
            else:
                lit_buy_ratio[i] = nan
                imbalance[i] = nan
        else:
            any_part = (b == b) or (s == s)
            buys = b0 + 0.0
            sells = s0 + 0.0
        vw_flow[i] = buys - sells if any_part else nan
        combined_ratio[i] = buys / sells if sells != 0.0 else nan


def warm_up() -> None:
    """Call every kernel once on tiny inputs: loads (or, with a cold cache, compiles) their
    machine code. The build runs this in an idle thread while DuckDB reads its first batch,
    so numba's first-call cost overlaps the read instead of adding to it."""
    x = np.array([1.0, np.nan, 2.0, 4.0])
    zeros = np.zeros(4, dtype=np.int64)
    sessions = np.arange(4, dtype=np.int64)
    out = np.empty(4)
    rolling_zscore_kernel(x, zeros, sessions, 0, 4, 3, 64, 2, CONDITION_LIMIT, out)
    validity_bitmap(x, np.empty(1, dtype=np.uint8))
    row_columns(x, x, x, x, x, zeros, x, x, True, 0.0, *[np.empty(4) for _ in range(10)])
    grid_positions(zeros, zeros, zeros, 0, zeros[:1], zeros[:1] + 4, zeros[:1],
                   np.zeros(4, dtype=bool), np.empty(4, dtype=np.int64))
