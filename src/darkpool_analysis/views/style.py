"""The seed notebook's dark chart style: colours, axis styling and volume tick formatting."""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

#: The seed's palette.
COLORS: Final[dict[str, str]] = {
    "background": "#0f0f10",
    "panel_bg": "#141416",
    "text": "#e6e6e6",
    "grid": "#2a2a2d",
    "white": "#ffffff",
    "green": "#00ff88",
    "red": "#ff6b6b",
    "yellow": "#ffd700",
    "cyan": "#00d4ff",
    "orange": "#ff9f43",
    "purple": "#b026ff",
    "neutral": "#6b6b6b",
    "blue": "#4aa3ff",
}
GRID_ALPHA: Final = 0.18
#: matplotlib style the seed draws under (applied with ``matplotlib.style.context``).
BASE_STYLE: Final = "dark_background"


def apply_axis_style(ax: Axes) -> None:
    """Dark panel, light ticks, no top/right spines, dashed faint grid (the seed's look)."""
    ax.set_facecolor(COLORS["panel_bg"])
    ax.tick_params(colors=COLORS["text"], labelsize=9)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.spines["left"].set_color(COLORS["grid"])
    ax.spines["bottom"].set_color(COLORS["grid"])
    ax.grid(True, alpha=GRID_ALPHA, color=COLORS["grid"], linestyle="--")


def format_volume(value: float | None) -> str:
    """Compact share count: ``1.2B``, ``3.4M``, ``56K``, ``789``; ``NA`` for missing.

    Examples
    --------
    >>> format_volume(1_234_567), format_volume(-56_000), format_volume(float("nan"))
    ('1.2M', '-56K', 'NA')
    """
    if value is None or pd.isna(value):
        return "NA"
    number = float(value)
    if abs(number) >= 1_000_000_000:
        return f"{number / 1_000_000_000:.1f}B"
    if abs(number) >= 1_000_000:
        return f"{number / 1_000_000:.1f}M"
    if abs(number) >= 1_000:
        return f"{number / 1_000:.0f}K"
    return f"{number:,.0f}"


def volume_formatter() -> FuncFormatter:
    """A fresh tick formatter using :func:`format_volume` (a formatter belongs to one axis)."""
    return FuncFormatter(lambda value, _pos: format_volume(value))


def _finite_max(values: pd.Series, *, absolute: bool = False) -> float:
    series = pd.to_numeric(values, errors="coerce").astype(float)
    if absolute:
        series = series.abs()
    result = series.max(skipna=True)
    return float("nan") if pd.isna(result) else float(result)


def set_flow_axis(ax: Axes, values: pd.Series) -> None:
    """Symmetric y axis around 0 with 5 volume-formatted ticks and a dashed zero line."""
    max_abs = _finite_max(values, absolute=True)
    if math.isnan(max_abs) or max_abs == 0:
        max_abs = 1.0
    y_max = max_abs + max(max_abs * 0.1, 1.0)
    ax.set_ylim(-y_max, y_max)
    ax.set_yticks(np.linspace(-y_max, y_max, 5))
    ax.yaxis.set_major_formatter(volume_formatter())
    ax.axhline(0.0, color=COLORS["neutral"], linestyle="--", linewidth=1.2, alpha=0.7)


def set_ratio_axis(ax: Axes, values: pd.Series, bot: float = 1.25, sell: float = 0.75) -> None:
    """y from 0 to max(2, 1.1 x max) with lines at 1.0 (neutral), ``bot`` and ``sell``."""
    max_val = _finite_max(values)
    if math.isnan(max_val):
        max_val = 2.0
    ax.set_ylim(0, max(2.0, max_val * 1.1))
    ax.axhline(1.0, color=COLORS["neutral"], linestyle="--", linewidth=1.0, alpha=0.6)
    ax.axhline(bot, color=COLORS["green"], linestyle="--", linewidth=1.0, alpha=0.8)
    ax.axhline(sell, color=COLORS["red"], linestyle="--", linewidth=1.0, alpha=0.8)


def set_volume_axis(ax: Axes, values: pd.Series) -> None:
    """y from 0 to 1.1 x max with 5 volume-formatted ticks."""
    max_val = _finite_max(values)
    if math.isnan(max_val) or max_val <= 0:
        max_val = 1.0
    y_max = max_val * 1.1
    ax.set_ylim(0, y_max)
    ax.set_yticks(np.linspace(0, y_max, 5))
    ax.yaxis.set_major_formatter(volume_formatter())
