"""The options premium panel (``darkpool sandbox --panels +options``), seed palette.

Per session on the sandbox's session-position x axis: call premium as bars above zero and put
premium below it, each split into OTM (bright, next to the axis) and ITM (dark, stacked
outside), in dollars; the 0-100 directional premium score (100 x call / (call + put)) as a
yellow line on the right axis with its 30 / 70 guides. Sessions without stored premium draw
nothing; with none at all the panel says how to get it.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba_array
from matplotlib.ticker import FuncFormatter

from darkpool_analysis.views.style import COLORS, apply_axis_style

TITLE: Final = ("Options premium, near the money (calls up, puts down; bright = OTM, dark = ITM "
                "by the session close) and premium score 100 x C / (C + P)")
NO_DATA_TEXT: Final = ("No options premium stored for this range "
                       "(`darkpool ingest options`, needs POLYGON_API_KEY)")
#: Bar colours: OTM bright, ITM dark.
SHADES: Final[dict[str, str]] = {"call_otm": COLORS["green"], "call_itm": "#00995a",
                                 "put_otm": COLORS["red"], "put_itm": "#a63c3c"}
BAR_WIDTH: Final = 0.7


def format_dollars(value: float, _: object = None) -> str:
    """``$1.2B``, ``$3.4M``, ``$56K``, ``$789`` (sign kept: puts are drawn below zero).

    Examples
    --------
    >>> format_dollars(-2_500_000)
    '-$2.5M'
    """
    sign = "-" if value < 0 else ""
    number = abs(float(value))
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if number >= limit:
            return f"{sign}${number / limit:.1f}{suffix}"
    return f"{sign}${number:.0f}"


def session_positions(dates: pd.Series, rows: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The sandbox x position of each premium row (rows on other dates are dropped)."""
    index = pd.DatetimeIndex(pd.to_datetime(dates)).normalize()
    if rows.empty:
        return np.array([], dtype=float), rows
    when = pd.DatetimeIndex(pd.to_datetime(rows["date"])).normalize()
    positions = index.get_indexer(when)
    keep = positions >= 0
    return positions[keep].astype(float), rows.loc[keep].reset_index(drop=True)


def draw_options_panel(ax: Axes, dates: pd.Series, rows: pd.DataFrame | None) -> Axes:
    """Draw the premium of ``rows`` (``ingest.options.read_premium`` columns) on the sessions
    ``dates`` (the sandbox frame's); return ``ax``."""
    apply_axis_style(ax)
    ax.set_title(TITLE, color=COLORS["text"], fontsize=10, fontweight="bold", loc="left")
    ax.set_ylabel("premium ($)", color=COLORS["text"], fontsize=8)
    x, shown = session_positions(dates, rows if rows is not None else pd.DataFrame())
    if shown.empty:
        ax.text(0.5, 0.5, NO_DATA_TEXT, transform=ax.transAxes, ha="center", va="center",
                color=COLORS["neutral"], fontsize=9)
        ax.set_yticks([])
        return ax
    call_otm = shown["call_otm_premium"].to_numpy(dtype=float)
    call_itm = shown["call_itm_premium"].to_numpy(dtype=float)
    put_otm = shown["put_otm_premium"].to_numpy(dtype=float)
    put_itm = shown["put_itm_premium"].to_numpy(dtype=float)
    for heights, bottoms, shade in ((call_otm, 0.0, "call_otm"), (call_itm, call_otm, "call_itm"),
                                    (-put_otm, 0.0, "put_otm"), (-put_itm, -put_otm, "put_itm")):
        colors = to_rgba_array([SHADES[shade]] * len(x), alpha=0.85)
        stacked_bars(ax, x, bottoms, np.asarray(bottoms) + heights, colors)
    largest = float(np.nanmax(np.concatenate([call_otm + call_itm, put_otm + put_itm])))
    limit = largest * 1.15 if largest > 0 else 1.0
    ax.set_ylim(-limit, limit)
    ax.axhline(0.0, color=COLORS["neutral"], linewidth=0.8)
    ax.yaxis.set_major_formatter(FuncFormatter(format_dollars))

    score_ax = ax.twinx()
    score_ax.tick_params(colors=COLORS["text"], labelsize=7)
    score_ax.set_ylim(0, 100)
    score_ax.set_yticks([0, 30, 50, 70, 100])
    score_ax.set_ylabel("premium score", color=COLORS["yellow"], fontsize=8)
    for level in (30, 70):
        score_ax.axhline(level, color=COLORS["yellow"], linestyle=":", linewidth=0.8, alpha=0.5)
    score = shown["premium_score"].to_numpy(dtype=float)
    has = np.isfinite(score)
    line_x, line_y = break_gaps(x[has], score[has])
    score_ax.plot(line_x, line_y, color=COLORS["yellow"], linewidth=1.4)
    score_ax.scatter(x[has], score[has], color=COLORS["yellow"], s=14,
                     edgecolors=COLORS["white"], linewidths=0.3, zorder=5)
    return ax


def break_gaps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x, y`` with a NaN point inserted wherever sessions are missing (``x`` jumps by more
    than 1), so a line is not drawn across a data gap.

    Examples
    --------
    >>> break_gaps(np.array([0.0, 1.0, 4.0]), np.array([1.0, 2.0, 3.0]))[1].tolist()
    [1.0, 2.0, nan, 3.0]
    """
    if len(x) < 2:
        return x, y
    gaps = np.flatnonzero(np.diff(x) > 1) + 1
    return np.insert(x, gaps, np.nan), np.insert(y.astype(float), gaps, np.nan)


def stacked_bars(ax: Axes, x: np.ndarray, bottom: np.ndarray | float, top: np.ndarray,
                 colors: np.ndarray) -> PolyCollection:
    """Bars from per-bar ``bottom`` to ``top`` centred on ``x``, as one collection (a stacked
    version of :func:`sandbox_chart.draw_bars`)."""
    low = np.broadcast_to(np.asarray(bottom, dtype=float), np.shape(x))
    left, right = x - BAR_WIDTH / 2.0, x + BAR_WIDTH / 2.0
    verts = np.stack([np.column_stack(corner) for corner in
                      ((left, low), (left, top), (right, top), (right, low))], axis=1)
    bars = PolyCollection(verts, facecolors=colors, edgecolors="none", linewidths=0.0)
    bars.set_zorder(2)
    ax.add_collection(bars, autolim=True)
    ax.autoscale_view()
    return bars


__all__ = [
    "NO_DATA_TEXT",
    "TITLE",
    "break_gaps",
    "draw_options_panel",
    "format_dollars",
    "session_positions",
    "stacked_bars",
]
