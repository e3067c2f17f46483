"""Compiled evaluation kernels against their straightforward numpy definitions."""

from __future__ import annotations

import numpy as np
import pytest

from darkpool_analysis.evaluation.kernels import median, trade_moments


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    a = 0.0123
    cases = [
        np.array([1.0]), np.array([2.0, 1.0]), np.array([-0.0, 0.0]),
        np.array([np.inf, -np.inf, 1.0]), np.array([3.0, 3.0, 3.0, 1.0]),
        rng.normal(size=1001), rng.normal(size=1000), rng.normal(0, 0.03, 200_000),
        np.round(rng.normal(size=100_000), 2), rng.integers(-3, 3, 77_777).astype(float),
        np.full(5000, 0.25), np.r_[np.full(5000, 0.25), np.full(5000, 0.5)],
        np.r_[np.full(500, -1.0), np.full(500, 1.0)],  # middle ranks straddle the sign
        -np.abs(rng.normal(size=4096)) * 1e-300, np.full(3, 1.5e308),
    ]
    # the two middle values differ only in the last bits: straddles at every digit level
    for ulps in (1, 2**9, 2**20, 2**31, 2**42):
        above = np.frombuffer((np.array([a]).view(np.uint64) + ulps).tobytes(), dtype=float)[0]
        cases.append(rng.permutation(np.r_[np.full(700, a), np.full(700, above)]))
        cases.append(rng.permutation(np.r_[np.full(700, a), np.full(701, above)]))
    return cases


@pytest.mark.parametrize("values", _cases(), ids=lambda v: f"n{len(v)}")
def test_radix_median_equals_numpy(values: np.ndarray) -> None:
    assert median(values) == np.median(values)


def test_median_of_nothing_or_nan_is_nan() -> None:
    assert np.isnan(median(np.array([])))
    assert np.isnan(median(np.array([1.0, np.nan, 3.0] * 200)))


def test_trade_moments_equal_numpy() -> None:
    returns = np.random.default_rng(8).normal(0.001, 0.04, 50_001)
    wins, total, won, lost, middle = trade_moments(returns)
    assert wins == (returns > 0).sum()
    assert total == pytest.approx(returns.sum(), rel=1e-12)
    assert won == pytest.approx(returns[returns > 0].sum(), rel=1e-12)
    assert lost == pytest.approx(returns[returns < 0].sum(), rel=1e-12)
    assert middle == np.median(returns)
