"""The OTC panel draws one band per shown week (grey when stale), delta bars, or a placeholder."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import pandas as pd

from darkpool_analysis import trading_calendar as tc
from darkpool_analysis.otc_metrics import otc_daily_block
from darkpool_analysis.views.otc_panel import (
    NO_DATA_TEXT,
    PALETTE,
    plot_otc_panel,
    week_segments,
)


def _block() -> pd.DataFrame:
    weeks = pd.date_range("2024-01-01", periods=8, freq="7D")
    rows = [{"symbol": "AAA", "week_start_date": w, "tier": "T1", "summary_type": "ATS_W_SMBL",
             "share_quantity": 500.0 + 100 * i, "last_update_date": w + pd.Timedelta(days=21)}
            for i, w in enumerate(weeks)]
    days = tc.sessions_index("2023-12-26", "2024-04-12")
    volume = pd.DataFrame({"symbol": "AAA", "date": days, "volume": 1000.0})
    return otc_daily_block(pd.DataFrame(rows), volume, days, z_min_periods=2)


def test_bands_per_week_and_grey_when_stale() -> None:
    block = _block()
    segments = week_segments(block)
    assert len(segments) == 9  # 8 anchored weeks + the last week carried stale
    assert list(segments["status"]).count("Staled") == 1
    fig, ax = plt.subplots()
    try:
        plot_otc_panel(ax, block)
        bands = ax.patches
        assert len(bands) == len(segments)
        stale = segments.index[segments["status"] == "Staled"][0]
        assert mcolors.to_hex(bands[stale].get_facecolor()) == PALETTE["neutral"]
        assert mcolors.to_hex(bands[stale - 1].get_facecolor()) == PALETTE["green"]  # rising z
        delta_axes = [a for a in fig.axes if a is not ax]
        assert len(delta_axes) == 1
        assert len(delta_axes[0].patches) == int(segments["delta"].notna().sum())
        assert not [t for t in ax.texts if t.get_text() == NO_DATA_TEXT]
    finally:
        plt.close(fig)


def test_placeholder_when_no_week_is_visible() -> None:
    block = _block()
    early = block[block["date"] < "2024-01-22"]
    assert not early["has_otc"].any()
    fig, ax = plt.subplots()
    try:
        plot_otc_panel(ax, early)
        assert [t.get_text() for t in ax.texts] == [NO_DATA_TEXT]
        assert not ax.patches
    finally:
        plt.close(fig)
