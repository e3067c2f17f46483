"""The compiled build kernels against exact references.

The rolling z-score kernel is checked against an exact two-pass reference in rational
arithmetic (``fractions.Fraction``) on NaN gaps, symbol boundaries, windows longer than a
symbol, constant series (zero std) and badly conditioned windows (an outlier leaving the
window, a trend), plus the re-anchoring property the range builds rely on.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest

from darkpool_analysis import kernels
from darkpool_analysis.metrics import block_size, group_starts, rolling_zscore_grouped


def _exact_z(x: np.ndarray, codes: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """z-scores by the textbook two-pass formula in exact rationals (NaN where undefined)."""
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        if math.isnan(x[i]):
            continue
        lo = i
        while lo > i - window + 1 and lo > 0 and codes[lo - 1] == codes[i]:
            lo -= 1
        values = [Fraction(v) for v in x[lo:i + 1] if not math.isnan(v)]
        if len(values) < min_periods:
            continue
        mean = sum(values, Fraction(0)) / len(values)
        variance = sum(((v - mean) ** 2 for v in values), Fraction(0)) / len(values)
        if variance == 0:
            continue
        out[i] = float(Fraction(x[i]) - mean) / math.sqrt(variance)
    return out


def _assert_close_to_exact(actual: np.ndarray, exact: np.ndarray, tol: float = 1e-11) -> None:
    assert (np.isnan(actual) == np.isnan(exact)).all(), np.flatnonzero(
        np.isnan(actual) != np.isnan(exact))
    ok = ~np.isnan(exact)
    err = np.abs(actual[ok] - exact[ok]) / np.maximum(1.0, np.abs(exact[ok]))
    assert err.max(initial=0.0) <= tol, err.max()


def _z(x: np.ndarray, codes: np.ndarray, window: int, min_periods: int,
       session: np.ndarray | None = None) -> np.ndarray:
    return rolling_zscore_grouped(x, group_starts(codes), window, min_periods,
                                  session_number=session)


@pytest.mark.parametrize("window,min_periods", [(3, 2), (5, 5), (20, 5), (70, 3)])
def test_random_groups_with_gaps_match_exact_two_pass(window: int, min_periods: int) -> None:
    rng = np.random.default_rng(window)
    lengths = rng.integers(1, 160, 25)         # some symbols shorter than the window
    codes = np.repeat(np.arange(len(lengths)), lengths)
    x = rng.lognormal(10, 1.5, len(codes))
    x[rng.random(len(x)) < 0.15] = np.nan       # NaN gaps, some longer than the window
    x[200:260] = np.nan
    z = _z(x, codes, window, min_periods)
    _assert_close_to_exact(z, _exact_z(x, codes, window, min_periods))
    assert np.isfinite(z).sum() > len(x) // 3


def test_windows_never_cross_symbol_boundaries() -> None:
    x = np.array([1.0, 2.0, 3.0, 100.0, 200.0, 400.0, 5.0])
    codes = np.array([0, 0, 0, 1, 1, 1, 2])
    z = _z(x, codes, 5, 2)
    _assert_close_to_exact(z, _exact_z(x, codes, 5, 2))
    assert np.isnan(z[3]) and np.isnan(z[6])   # first value of a symbol: one value only


def test_constant_series_and_constant_windows_give_null() -> None:
    x = np.array([7.0] * 30 + [8.0] + [7.0] * 30 + [np.nan] * 5 + [7.0] * 10)
    codes = np.zeros(len(x), dtype=np.int64)
    z = _z(x, codes, 10, 2)
    exact = _exact_z(x, codes, 10, 2)
    _assert_close_to_exact(z, exact)
    assert np.isnan(z[:30]).all()               # constant window: zero std -> NULL
    assert np.isfinite(z[30:40]).all()          # the 8.0 is inside these windows
    assert np.isnan(z[41:]).all()               # constant again once it left
    # Exactly equal values only: one ulp of difference is not constant.
    tiny = np.array([0.3, 0.3, 0.1 * 3])
    assert np.isfinite(_z(tiny, np.zeros(3, dtype=np.int64), 3, 2)[2])


def test_outlier_leaving_the_window_and_trends_stay_exact() -> None:
    # Sliding sums lose the small variance after a huge value leaves the window; the kernel
    # must detect it and recompute (pandas' own add/remove drifts here).
    # (Noise of std 1 around 1e6: doubles resolve x - mean to ~1e-10 there, so ~1e-10 is the
    # best any double-precision method can do on these z-scores.)
    rng = np.random.default_rng(3)
    base = 1e6 + rng.normal(0, 1.0, 400)
    base[50] = 1e13
    base[260:] = np.linspace(1e6, 1e12, 140)    # steep trend away from the reference
    codes = np.zeros(len(base), dtype=np.int64)
    z = _z(base, codes, 20, 5)
    _assert_close_to_exact(z, _exact_z(base, codes, 20, 5), tol=1e-9)


def test_values_depend_only_on_the_past_and_restart_at_anchors() -> None:
    # Truncating after row t changes nothing at t; a frame starting on an anchor session
    # gives the same bits as the longer frame from its next anchor on (range builds).
    rng = np.random.default_rng(5)
    window = 20
    block = block_size(window)
    x = rng.normal(50, 5, 600)
    x[rng.random(600) < 0.1] = np.nan
    session = np.arange(1000, 1600, dtype=np.int64)
    codes = np.zeros(600, dtype=np.int64)
    full = _z(x, codes, window, 5, session)
    assert np.array_equal(_z(x[:321], codes[:321], window, 5, session[:321]), full[:321],
                          equal_nan=True)
    start = int(np.flatnonzero(session % block == 0)[0])    # first anchor row
    part = _z(x[start:], codes[start:], window, 5, session[start:])
    next_anchor = start + block
    assert np.array_equal(part[next_anchor - start:], full[next_anchor:], equal_nan=True)


def test_min_periods_counts_only_non_null_values() -> None:
    x = np.array([1.0, np.nan, np.nan, 2.0, np.nan, 3.0, 5.0, np.nan, np.nan, np.nan, 4.0])
    codes = np.zeros(len(x), dtype=np.int64)
    for min_periods in (1, 2, 3):
        _assert_close_to_exact(_z(x, codes, 3, min_periods), _exact_z(x, codes, 3, min_periods))


def test_validity_bitmap_marks_nan_as_null() -> None:
    rng = np.random.default_rng(9)
    for n in (0, 1, 7, 8, 9, 1000, 1003):
        x = rng.normal(size=n)
        x[rng.random(n) < 0.3] = np.nan
        bitmap = np.empty((n + 7) // 8, dtype=np.uint8)
        nulls = kernels.validity_bitmap(x, bitmap)
        array = pa.Array.from_buffers(pa.float64(), n, [pa.py_buffer(bitmap), pa.py_buffer(x)],
                                      null_count=nulls)
        assert nulls == int(np.isnan(x).sum())
        assert array.equals(pa.array(x, from_pandas=True))


def test_grid_positions_flags_duplicates_and_off_grid_rows() -> None:
    session_days = np.array([10, 11, 12, 15, 16], dtype=np.int64)    # 13, 14 are no sessions
    slot_of_day = np.full(7, -1, dtype=np.int64)
    slot_of_day[session_days - 10] = np.arange(5)
    first_slot = np.array([0, 2], dtype=np.int64)    # symbol 0: slots 0-2, symbol 1: 2-4
    lengths = np.array([3, 3], dtype=np.int64)
    offsets = np.array([0, 3], dtype=np.int64)
    codes = np.array([0, 0, 1, 1, -1, 0, 1], dtype=np.int64)
    days = np.array([10, 12, 16, 13, 11, 15, 12], dtype=np.int64)
    flag = np.zeros(6, dtype=bool)
    pos = np.empty(len(codes), dtype=np.int64)
    duplicates = kernels.grid_positions(codes, days, slot_of_day, 10, first_slot, lengths,
                                        offsets, flag, pos)
    assert duplicates == 0
    assert pos.tolist() == [0, 2, 5, -1, -1, -1, 3]
    assert flag.tolist() == [True, False, True, True, False, True]
    again = kernels.grid_positions(codes[:1], days[:1], slot_of_day, 10, first_slot, lengths,
                                   offsets, flag, pos[:1])
    assert again == 1
