"""Compiled IC statistics (:mod:`ic_kernels`) against straightforward per-date loops."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from darkpool_analysis.evaluation.ic import (
    cross_sectional_ic,
    quantile_labels,
    quantile_spreads,
    rank_autocorrelation,
    time_series_ic,
)


def _spearman(a: np.ndarray, b: np.ndarray, min_count: int) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < min_count:
        return np.nan
    ra, rb = rankdata(a[ok]), rankdata(b[ok])
    if ra.std() == 0 or rb.std() == 0:
        return np.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _matrices(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = np.round(rng.normal(size=(60, 23)), 1)  # many ties
    fwd = rng.normal(0, 0.02, (60, 23))
    signal[rng.random(signal.shape) < 0.1] = np.nan
    fwd[rng.random(fwd.shape) < 0.1] = np.nan
    signal[3] = 1.0  # a constant date: no spread, NaN
    fwd[-4:] = np.nan
    signal[7, :20] = np.nan  # too few names
    return signal, fwd


@pytest.mark.parametrize("seed", [0, 1])
def test_spearman_kernel_equals_rankdata_per_date_and_per_name(seed: int) -> None:
    signal, fwd = _matrices(seed)
    expected = [_spearman(signal[t], fwd[t], 5) for t in range(len(signal))]
    np.testing.assert_allclose(cross_sectional_ic(signal, fwd, 5), expected, rtol=1e-12,
                               atol=1e-14)
    ic, n_obs = time_series_ic(signal, fwd, min_obs=20)
    expected = [_spearman(signal[:, s], fwd[:, s], 20) for s in range(signal.shape[1])]
    np.testing.assert_allclose(ic, expected, rtol=1e-12, atol=1e-14)
    assert n_obs.tolist() == (np.isfinite(signal) & np.isfinite(fwd)).sum(axis=0).tolist()
    lagged = [_spearman(signal[t], signal[t - 1], 5) for t in range(1, len(signal))]
    assert rank_autocorrelation(signal) == pytest.approx(np.nanmean(lagged), rel=1e-12)


def test_quantile_kernel_equals_masked_means_per_date() -> None:
    signal, fwd = _matrices(4)
    rng = np.random.default_rng(9)
    cost = rng.uniform(0.0005, 0.002, signal.shape)
    labels = quantile_labels(signal, 5)
    horizon = 3
    table, spread, trip = quantile_spreads(labels, fwd, 5, cost, horizon)
    n = len(signal)
    for t in range(n):
        valid = (labels[t] > 0) & np.isfinite(fwd[t])
        top, bottom = valid & (labels[t] == 5), valid & (labels[t] == 1)
        want = fwd[t, top].mean() - fwd[t, bottom].mean() if top.any() and bottom.any() \
            else np.nan
        assert spread[t] == pytest.approx(want, rel=1e-12, abs=1e-15, nan_ok=True)
        legs = []
        for q in (5, 1):
            if t + horizon < n:
                legs.append((cost[t + 1] + cost[t + horizon])[labels[t] == q])
        want = sum(leg.mean() for leg in legs) if len(legs) == 2 and all(
            len(leg) for leg in legs) else np.nan
        assert trip[t] == pytest.approx(want, rel=1e-12, nan_ok=True)
    for q in range(1, 6):
        per_date = [fwd[t, (labels[t] == q) & np.isfinite(fwd[t])] for t in range(n)]
        means = [v.mean() for v in per_date if len(v)]
        row = table.iloc[q - 1]
        assert row["count"] == sum(len(v) for v in per_date)
        assert row["dates"] == len(means)
        assert row["mean"] == pytest.approx(np.mean(means), rel=1e-12)
        centred = []
        for t in range(n):
            valid = (labels[t] > 0) & np.isfinite(fwd[t])
            cell = valid & (labels[t] == q)
            if cell.any():
                centred.append((fwd[t, cell] - fwd[t, valid].mean()).mean())
        assert row["mean_demeaned"] == pytest.approx(np.mean(centred), rel=1e-10, abs=1e-15)
    _table, _spread, free = quantile_spreads(labels, fwd, 5)
    assert (free == 0).all()


def test_threshold_events_equal_the_mask_form() -> None:
    from darkpool_analysis.evaluation.ic import date_demeaned, event_stats, threshold_event_stats

    signal, fwd = _matrices(6)
    excess = date_demeaned(fwd, np.isfinite(fwd))
    with np.errstate(invalid="ignore"):
        for level, sign, mask in ((0.5, 1, signal >= 0.5), (-0.5, -1, signal <= -0.5),
                                  (np.nan, 1, np.isfinite(fwd))):
            assert threshold_event_stats(signal, level, fwd, excess, sign=sign, months=3.0) \
                == event_stats(mask, fwd, excess, sign=sign, months=3.0)
