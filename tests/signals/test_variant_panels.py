"""Variant sandbox panels: draw without warnings, consensus counts, past-only MAD bands."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from darkpool_analysis.signals import median_mad_bands
from darkpool_analysis.views.variant_panels import (
    consensus_counts,
    draw_consensus_price,
    draw_median_mad_bands,
    draw_signal_heatmap,
    draw_signal_histogram,
)

DATES = pd.bdate_range("2024-01-01", periods=30)


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    close = 50 + rng.normal(0, 1, 30).cumsum()
    prices = pd.DataFrame({"open": close - 0.2, "high": close + 1, "low": close - 1,
                           "close": close}, index=DATES)
    signals = pd.DataFrame(rng.uniform(0, 100, (30, 3)), index=DATES,
                           columns=["current", "option_a", "option_b"])
    return prices, signals


def test_consensus_counts_hand_case() -> None:
    signals = pd.DataFrame({"a": [75.0, 20.0, np.nan], "b": [70.0, 50.0, 10.0]})
    counts = consensus_counts(signals)
    assert counts["agree_buy"].tolist() == [2, 0, 0]
    assert counts["agree_sell"].tolist() == [0, 1, 1]
    assert counts["n"].tolist() == [2, 2, 1]


def test_mad_bands_use_only_past_values() -> None:
    values = pd.Series([1.0, 2, 3, 4, 100.0])
    bands = median_mad_bands(values, window=3, k=1.0)
    assert bands["median"].isna().tolist() == [True, True, True, False, False]
    assert bands["median"].iloc[3] == 2.0  # median of 1, 2, 3
    assert bands["upper"].iloc[3] == 3.0  # MAD of 1, 2, 3 is 1
    assert bands["median"].iloc[4] == 3.0  # 100 (today) is not in its own band


def test_mad_bands_live_with_the_signal_computations() -> None:
    """Views only draw: the bands are a signal computation (issue 14 layout move)."""
    from darkpool_analysis import sandbox_lab
    from darkpool_analysis.views import variant_panels

    assert median_mad_bands.__module__ == "darkpool_analysis.signals"
    assert "median_mad_bands" not in variant_panels.__all__
    assert sandbox_lab.median_mad_bands is median_mad_bands


@pytest.mark.parametrize("panel", ["price", "heatmap", "histogram", "bands"])
def test_panels_draw_and_return_axes(panel: str) -> None:
    prices, signals = _frames()
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    if panel == "price":
        out = draw_consensus_price(ax, prices, signals)
        assert len(ax.collections) >= 3
    elif panel == "heatmap":
        out = draw_signal_heatmap(ax, signals)
        assert len(ax.images) == 1
    elif panel == "histogram":
        out = draw_signal_histogram(ax, (signals["current"] - 50) / 20, buy=1.1, sell=-1.1)
        assert len(ax.patches) > 0
    else:
        out = draw_median_mad_bands(ax, signals["current"])
        assert len(ax.lines) == 2
    assert out is ax
    fig.savefig(io.BytesIO(), format="png")
