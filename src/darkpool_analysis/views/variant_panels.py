"""Extra sandbox panels for comparing signal variants on one ticker (seed palette).

Each ``draw_*`` function draws onto an axes the caller owns and returns it; none calls pyplot.
Inputs: a one-ticker frame indexed by date (``open/high/low/close``) and a frame of variant
signals on the same index (one column per variant, from ``signals.compute_variants``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.ticker import LogFormatter

from darkpool_analysis.signals import median_mad_bands
from darkpool_analysis.views.style import COLORS, apply_axis_style

SCORE_CMAP = LinearSegmentedColormap.from_list(
    "score_cmap", [(0.0, COLORS["purple"]), (0.5, "#555555"), (1.0, COLORS["green"])])


def _title(ax: Axes, text: str) -> None:
    ax.set_title(text, color=COLORS["text"], fontsize=10, fontweight="bold", loc="left")


def consensus_counts(signals: pd.DataFrame, buy: Mapping[str, float] | float = 70.0,
                     sell: Mapping[str, float] | float = 30.0) -> pd.DataFrame:
    """Per date: how many variants are at/above their buy level and at/below their sell
    level, and how many have a value at all (``agree_buy``, ``agree_sell``, ``n``)."""
    buy_levels = pd.Series({c: buy[c] if isinstance(buy, Mapping) else buy for c in signals})
    sell_levels = pd.Series({c: sell[c] if isinstance(sell, Mapping) else sell for c in signals})
    values = signals.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        agree_buy = (values >= buy_levels.to_numpy()).sum(axis=1)
        agree_sell = (values <= sell_levels.to_numpy()).sum(axis=1)
    return pd.DataFrame({"agree_buy": agree_buy, "agree_sell": agree_sell,
                         "n": np.isfinite(values).sum(axis=1)}, index=signals.index)


def draw_consensus_price(ax: Axes, prices: pd.DataFrame, signals: pd.DataFrame, *,
                         buy: Mapping[str, float] | float = 70.0,
                         sell: Mapping[str, float] | float = 30.0, min_agree: int = 1,
                         log_scale: bool = False) -> Axes:
    """OHLC bars with "k of n variants agree" dots: green above the high when k variants are
    at/above buy, red below the low for sell; the label says k/n. ``log_scale`` draws prices
    on a log axis (equal heights = equal percentage moves; the dots keep a constant gap)."""
    apply_axis_style(ax)
    x = np.arange(len(prices))
    o, h, low, c = (prices[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    up = c >= o
    colors = np.where(up, COLORS["green"], COLORS["red"])
    ax.vlines(x, low, h, colors=colors, linewidth=1.0)
    ax.hlines(o, x - 0.3, x, colors=colors, linewidth=1.2)
    ax.hlines(c, x, x + 0.3, colors=colors, linewidth=1.2)
    counts = consensus_counts(signals.reindex(prices.index), buy, sell)
    span = np.nanmax(h) - np.nanmin(low) if np.isfinite(h).any() else 1.0
    pad = 0.04 * (span if span > 0 else 1.0)
    if log_scale:
        ax.set_yscale("log")
        # Plain price labels (40, 45) rather than 4 x 10^1, on the minor ticks of a narrow
        # range too; LogFormatter thins them out when the range spans decades.
        for formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    n_variants = signals.shape[1]
    for column, y, color, offset in (("agree_buy", h, COLORS["green"], pad),
                                     ("agree_sell", low, COLORS["red"], -pad)):
        k = counts[column].to_numpy()
        show = k >= min_agree
        placed = y * (1.03 if offset > 0 else 1 / 1.03) if log_scale else y + offset
        ax.scatter(x[show], placed[show], s=20 + 60 * k[show] / max(n_variants, 1),
                   c=color, edgecolors=COLORS["white"], linewidths=0.5, zorder=5)
        for xi, yi, ki in zip(x[show], placed[show], k[show], strict=True):
            ax.annotate(f"{ki}/{n_variants}", (xi, yi), textcoords="offset points",
                        xytext=(0, 6 if offset > 0 else -10), ha="center", fontsize=6,
                        color=COLORS["text"])
    ax.set_xticks(x)
    ax.set_xticklabels(pd.DatetimeIndex(prices.index).strftime("%y-%m-%d"), rotation=45,
                       ha="right", fontsize=7)
    _title(ax, f"Price with variant consensus (of {n_variants})")
    return ax


def draw_signal_heatmap(ax: Axes, signals: pd.DataFrame, *, vmin: float = 0.0,
                        vmax: float = 100.0) -> Axes:
    """Variants (rows) x days (columns), coloured purple (low) - grey - green (high)."""
    apply_axis_style(ax)
    values = np.ma.masked_invalid(signals.to_numpy(dtype=float).T)
    ax.imshow(values, aspect="auto", cmap=SCORE_CMAP, vmin=vmin, vmax=vmax,
              interpolation="nearest")
    ax.set_yticks(np.arange(signals.shape[1]))
    ax.set_yticklabels(list(signals.columns), fontsize=8)
    ticks = np.arange(len(signals))
    ax.set_xticks(ticks)
    ax.set_xticklabels(pd.DatetimeIndex(signals.index).strftime("%y-%m-%d"), rotation=45,
                       ha="right", fontsize=7)
    ax.grid(False)
    _title(ax, "Signal heatmap (variants x days)")
    return ax


def draw_signal_histogram(ax: Axes, values: pd.Series, *, buy: float = 1.1,
                          sell: float = -1.1, bins: int = 40) -> Axes:
    """Histogram of a z signal with its BUY/SELL thresholds."""
    apply_axis_style(ax)
    finite = pd.to_numeric(values, errors="coerce").dropna().to_numpy()
    ax.hist(finite, bins=bins, color=COLORS["cyan"], alpha=0.7)
    ax.axvline(buy, color=COLORS["green"], linestyle="--", label=f"BUY >= {buy:g}")
    ax.axvline(sell, color=COLORS["red"], linestyle="--", label=f"SELL <= {sell:g}")
    ax.legend(fontsize=7, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"])
    _title(ax, f"Distribution of {values.name or 'signal'} ({len(finite)} days)")
    return ax


def draw_median_mad_bands(ax: Axes, values: pd.Series, *, window: int = 20,
                          k: float = 2.0) -> Axes:
    """A signal with its past-only median and median +- k * MAD bands."""
    apply_axis_style(ax)
    bands = median_mad_bands(values, window, k)
    x = np.arange(len(values))
    ax.plot(x, pd.to_numeric(values, errors="coerce").to_numpy(), color=COLORS["yellow"],
            linewidth=1.5, label=str(values.name or "signal"))
    ax.plot(x, bands["median"], color=COLORS["neutral"], linestyle="--", label="median")
    ax.fill_between(x, bands["lower"], bands["upper"], color=COLORS["cyan"], alpha=0.15,
                    label=f"median +- {k:g} MAD")
    ax.legend(fontsize=7, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"])
    _title(ax, f"{values.name or 'signal'} with past-only median/MAD bands ({window} sessions)")
    return ax


__all__ = ["consensus_counts", "draw_consensus_price", "draw_median_mad_bands",
           "draw_signal_heatmap", "draw_signal_histogram"]
