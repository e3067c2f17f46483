"""The weekly OTC participation panel (seed palette): bands per published week, delta bars.

Each run of sessions that show the same week (``otc_week_used``) becomes one band whose height is
the week's participation rate, coloured by its z-score (green above the mean, red below,
stronger with |z|) and grey while the week is carried stale. Week-over-week deltas are bars on a
second axis at the first session that shows the week. Dates without a visible week draw nothing;
with none at all the panel says which it is: no week ingested for the symbol at all, or none
published yet for the range shown.
"""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from darkpool_analysis.views.style import COLORS as PALETTE
from darkpool_analysis.views.style import apply_axis_style

NO_DATA_TEXT = "No FINRA OTC week published yet for this range"
#: When the symbol has no OTC week anywhere in the database (nothing was ever ingested).
NEVER_INGESTED_TEXT = ("No FINRA OTC data ingested for {symbol}: "
                       "`darkpool ingest finra-otc --tickers {symbol}` adds it")


def week_segments(frame: pd.DataFrame) -> pd.DataFrame:
    """Consecutive sessions showing the same week and status, one row per run (vectorised)."""
    shown = frame.loc[frame["otc_week_used"].notna()].sort_values("date")
    if shown.empty:
        return pd.DataFrame(columns=["week", "start", "end", "rate", "z", "delta", "status"])
    new_run = ((shown["otc_week_used"] != shown["otc_week_used"].shift())
               | (shown["otc_status"] != shown["otc_status"].shift()))
    runs = shown.assign(run=new_run.cumsum())
    return runs.groupby("run").agg(
        week=("otc_week_used", "first"), start=("date", "first"), end=("date", "last"),
        rate=("otc_participation_rate", "first"), z=("otc_participation_z", "first"),
        delta=("otc_participation_delta", "first"), status=("otc_status", "first"),
    ).reset_index(drop=True)


def _band_colours(segments: pd.DataFrame) -> np.ndarray:
    z = segments["z"].to_numpy(dtype=float)
    base = np.where(z >= 0, PALETTE["green"], PALETTE["red"])
    stale = (segments["status"] != "Anchored").to_numpy() | np.isnan(z)
    base = np.where(stale, PALETTE["neutral"], base)
    colours = mcolors.to_rgba_array(base)
    colours[:, 3] = np.where(stale, 0.45, 0.35 + 0.55 * np.clip(np.abs(np.nan_to_num(z)) / 3,
                                                                0, 1))
    return colours


def plot_otc_panel(ax: Axes, frame: pd.DataFrame, *, ingested: bool = True,
                   symbol: str = "this ticker") -> Axes:
    """Draw one symbol's OTC block (columns of ``otc_daily_block``) on ``ax``; return ``ax``.

    ``ingested`` = whether the database holds any OTC week for ``symbol`` at all: the empty
    panel then says "never ingested" rather than "not published yet for this range".
    """
    apply_axis_style(ax)
    ax.set_ylabel("OTC share of volume", color=PALETTE["text"], fontsize=8)
    segments = week_segments(frame) if len(frame) else week_segments(
        pd.DataFrame(columns=["date", "otc_week_used", "otc_status"]))
    if segments.empty or segments["rate"].isna().all():
        text = NO_DATA_TEXT if ingested else NEVER_INGESTED_TEXT.format(symbol=symbol)
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
                color=PALETTE["neutral"], fontsize=9)
        return ax
    start = pd.to_datetime(segments["start"])
    width = (pd.to_datetime(segments["end"]) - start + pd.Timedelta(days=1)).dt.days
    heights = segments["rate"].fillna(0.0).to_numpy(dtype=float)
    ax.bar(start, heights, width=width.to_numpy(), align="edge", color=_band_colours(segments),
           edgecolor="none", label="weekly participation")
    ax.set_ylim(0, max(float(np.nanmax(heights)) * 1.25, 0.05))
    delta = segments["delta"].to_numpy(dtype=float)
    has_delta = ~np.isnan(delta)
    delta_ax = ax.twinx()
    delta_ax.tick_params(colors=PALETTE["text"], labelsize=7)
    delta_ax.set_ylabel("week-over-week change", color=PALETTE["text"], fontsize=7)
    if has_delta.any():
        delta_colours = np.where(delta[has_delta] >= 0, PALETTE["green"], PALETTE["red"])
        delta_ax.bar(start[has_delta], delta[has_delta], width=1.2, color=delta_colours,
                     alpha=0.9, label="delta")
        limit = float(np.nanmax(np.abs(delta[has_delta]))) * 1.4 or 0.01
        delta_ax.set_ylim(-limit, limit)
        delta_ax.axhline(0, color=PALETTE["grid"], linewidth=0.8)
    return ax
