"""Sandbox lab figures: one panel per signal variant plus the extra panels, on one x axis.

* :func:`plot_lab` draws the second figure of ``darkpool sandbox --variants/--panels``: the
  consensus price panel first (when asked), then one panel per requested variant (0-100 scores
  as the seed's score bars with 30/50/70 lines and dots, z and raw signals as a line with their
  buy/sell thresholds), then the other panels in the order given. Every date panel shares the
  session-position x axis of the seed chart with ``yy-mm-dd`` labels on the lowest one; the
  histogram has its own (value) x axis.
* :func:`append_panels` adds panels below the seed's 7-panel figure (``--panels +otc``): the
  seed panels are drawn by :func:`sandbox_chart.plot` unchanged and only moved up.

Drawing reuses :mod:`views.variant_panels`, :mod:`views.otc_panel` and
:mod:`views.sandbox_chart`; nothing here calls pyplot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import matplotlib.dates as mdates
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

from darkpool_analysis.errors import ConfigError
from darkpool_analysis.sandbox_lab import PANELS, Lab
from darkpool_analysis.views import options_panel, otc_panel, sandbox_chart, variant_panels
from darkpool_analysis.views.style import BASE_STYLE, COLORS, apply_axis_style

FIG_WIDTH: Final = 16.0
#: Height (inches) of one panel of the lab figure, by kind.
PANEL_HEIGHT: Final[dict[str, float]] = {
    "variant": 2.6, "price": 3.6, "heatmap": 2.4, "hist": 3.0, "bands": 2.8, "otc": 2.8,
    "options": 2.8,
}
#: Height ratio of a panel appended below the seed's 7 panels (the seed's score panels: 1.8).
APPENDED_RATIO: Final = 1.8
OTC_TITLE: Final = "Weekly OTC participation (FINRA, point-in-time; grey = stale week)"
LOOK_AHEAD_TITLE: Final = ("Weekly OTC participation - LOOK-AHEAD (week-aligned): each day shows "
                           "its own week, published 2-4 weeks later")
HEATMAP_TITLE: Final = ("Signal heatmap (variants x days): scores (s - 50) / 50, z / 3, raw / "
                        "max |raw| in range; clipped to +-1")
NO_PRICE_TEXT: Final = "No prices in daily_metrics for this range (`darkpool ingest prices`)"
#: Scales of the price panel (``darkpool sandbox --price-scale``).
PRICE_SCALES: Final = ("linear", "log")
#: z scale that fills the heatmap's colour range.
HEATMAP_Z_SPAN: Final = 3.0


def _title(ax: Axes, text: str, color: str = COLORS["text"]) -> None:
    ax.set_title(text, color=color, fontsize=10, fontweight="bold", loc="left")


def _values(lab: Lab, name: str) -> pd.Series:
    if name not in lab.signals.columns:
        raise ConfigError(f"signal {name!r} was not computed; computed: "
                          f"{', '.join(lab.signals.columns) or 'none'}")
    return lab.signals[name].astype(float)


def variant_title(lab: Lab, name: str) -> str:
    """Panel title: name, scale and the variant's description."""
    variant = lab.variants[name]
    scale = {"display": "0-100 score", "z": "z", "raw": "raw"}[variant.scale]
    return f"{name} ({scale}): {variant.description}"


def draw_variant_panel(ax: Axes, lab: Lab, name: str) -> Axes:
    """One variant: 0-100 scores as the seed's score panel (bars, confidence strip, 30/50/70
    lines, dots above at >= 70 and below at <= 30); z/raw signals as a line with the variant's
    buy/sell thresholds (a zero line when it has none)."""
    variant = lab.variants[name]
    values = _values(lab, name)
    x = np.arange(len(values))
    if variant.scale == "display":
        confidence = lab.frame.get("confidence", pd.Series(0.5, index=lab.frame.index))
        sandbox_chart.draw_score_panel(ax, x, values, confidence, variant_title(lab, name),
                                       "current", {"current": values}, no_score="hatched")
        return ax
    apply_axis_style(ax)
    mask = values.notna().to_numpy()
    ax.plot(x[mask], values[mask], color=COLORS["cyan"], linewidth=1.6)
    ax.scatter(x[mask], values[mask], color=COLORS["cyan"], s=18, edgecolors=COLORS["white"],
               linewidths=0.4, zorder=4)
    ax.axhline(variant.neutral, color=COLORS["neutral"], linestyle="--", linewidth=0.9,
               alpha=0.6)
    for level, color, label in ((variant.buy, "green", "BUY"), (variant.sell, "red", "SELL")):
        if level is not None:
            ax.axhline(level, color=COLORS[color], linestyle="--", linewidth=1.0, alpha=0.8,
                       label=f"{label} {'>=' if label == 'BUY' else '<='} {level:g}")
    if variant.buy is not None or variant.sell is not None:
        ax.legend(fontsize=7, loc="upper left", facecolor=COLORS["panel_bg"],
                  labelcolor=COLORS["text"])
    ax.set_ylabel(name, color=COLORS["text"], fontsize=8)
    _title(ax, variant_title(lab, name))
    return ax


def consensus_levels(lab: Lab, names: Sequence[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Each compared variant's own buy/sell thresholds (>= 70 / <= 30 for the scores);
    variants without thresholds take no part in the consensus."""
    buy: dict[str, float] = {}
    sell: dict[str, float] = {}
    for name in names:
        variant = lab.variants[name]
        if variant.buy is not None and variant.sell is not None:
            buy[name], sell[name] = float(variant.buy), float(variant.sell)
    return buy, sell


def draw_price_panel(ax: Axes, lab: Lab, names: Sequence[str], *,
                     price_scale: str = "linear") -> Axes:
    """OHLC bars with "k of n variants agree" dots (see
    :func:`variant_panels.draw_consensus_price`), or a note when no price is stored;
    ``price_scale`` ``log`` puts the prices on a log axis."""
    if price_scale not in PRICE_SCALES:
        raise ConfigError(f"unknown price scale {price_scale!r}; valid: "
                          f"{', '.join(PRICE_SCALES)}")
    buy, sell = consensus_levels(lab, names)
    dates = pd.DatetimeIndex(lab.frame["date"])
    prices = lab.frame[["open", "high", "low", "close"]].astype(float).set_axis(dates)
    if prices["close"].isna().all():
        apply_axis_style(ax)
        ax.text(0.5, 0.5, NO_PRICE_TEXT, transform=ax.transAxes, ha="center", va="center",
                color=COLORS["neutral"], fontsize=9)
        _title(ax, f"Price with variant consensus (of {len(buy)})")
        return ax
    signals = lab.signals[list(buy)].set_axis(dates)
    variant_panels.draw_consensus_price(ax, prices, signals, buy=buy, sell=sell,
                                        log_scale=price_scale == "log")
    ax.set_ylabel("price (log scale)" if price_scale == "log" else "price",
                  color=COLORS["text"], fontsize=8)
    return ax


def heatmap_matrix(lab: Lab, names: Sequence[str]) -> pd.DataFrame:
    """Signals on a common -1..1 colour scale: scores ``(s - 50) / 50``, z ``z / 3``, raw
    signals divided by their largest absolute value in the shown range; clipped to +-1."""
    columns: dict[str, np.ndarray] = {}
    for name in names:
        values = _values(lab, name)
        scale = lab.variants[name].scale
        if scale == "display":
            scaled = (values - 50.0) / 50.0
        elif scale == "z":
            scaled = values / HEATMAP_Z_SPAN
        else:
            largest = float(values.abs().max(skipna=True)) if values.notna().any() else 0.0
            scaled = values / largest if largest > 0 else values * 0.0
        columns[name] = scaled.clip(-1.0, 1.0).to_numpy()
    return pd.DataFrame(columns, index=pd.DatetimeIndex(lab.frame["date"]))


def draw_heatmap_panel(ax: Axes, lab: Lab, names: Sequence[str]) -> Axes:
    """Variant x day heatmap of the signals on the scale of :func:`heatmap_matrix`."""
    variant_panels.draw_signal_heatmap(ax, heatmap_matrix(lab, names), vmin=-1.0, vmax=1.0)
    _title(ax, HEATMAP_TITLE)
    return ax


def draw_hist_panel(ax: Axes, lab: Lab, name: str) -> Axes:
    """Histogram of one signal over the shown days with its buy/sell thresholds."""
    variant = lab.variants[name]
    values = _values(lab, name).rename(name)
    if variant.buy is not None and variant.sell is not None:
        variant_panels.draw_signal_histogram(ax, values, buy=variant.buy, sell=variant.sell)
    else:
        apply_axis_style(ax)
        ax.hist(values.dropna().to_numpy(), bins=40, color=COLORS["cyan"], alpha=0.7)
        _title(ax, f"Distribution of {name} ({int(values.notna().sum())} days, "
                   "no thresholds)")
    ax.set_xlabel(name, color=COLORS["text"], fontsize=8)
    return ax


def draw_bands_panel(ax: Axes, lab: Lab) -> Axes:
    """The bands signal with its past-only rolling median and median +- k MAD (computed on the
    warm-up history too, so the first shown day already has a band)."""
    name = lab.bands_signal
    if name is None or not {"median", "upper", "lower"} <= set(lab.bands.columns):
        raise ConfigError("the bands panel needs Lab.bands: load the lab with bands_signal=...")
    apply_axis_style(ax)
    values = _values(lab, name)
    x = np.arange(len(values))
    ax.plot(x, values.to_numpy(), color=COLORS["yellow"], linewidth=1.5, label=name)
    ax.plot(x, lab.bands["median"].to_numpy(), color=COLORS["neutral"], linestyle="--",
            label="median (past only)")
    ax.fill_between(x, lab.bands["lower"].to_numpy(), lab.bands["upper"].to_numpy(),
                    color=COLORS["cyan"], alpha=0.15, label="median +- 2 MAD")
    ax.legend(fontsize=7, loc="upper left", facecolor=COLORS["panel_bg"],
              labelcolor=COLORS["text"])
    _title(ax, f"{name} with median/MAD bands from the previous {lab.bands_window} sessions")
    return ax


def session_pseudo_dates(count: int) -> pd.DatetimeIndex:
    """Dates whose matplotlib date numbers are ``position - 0.5`` for positions ``0..count-1``.

    :func:`otc_panel.plot_otc_panel` draws week bands on a date axis (left edge = first day,
    width = days); the sandbox x axis is session positions. Giving each session this pseudo
    date makes a band cover exactly its sessions' bars (``i - 0.5 .. j + 0.5``).
    """
    numbers = np.arange(count, dtype=float) - 0.5
    return pd.DatetimeIndex(mdates.num2date(numbers)).tz_localize(None)


def draw_otc(ax: Axes, lab: Lab) -> Axes:
    """Weekly OTC participation bands (coloured by z, grey when stale), week-over-week delta
    bars, or the placeholder text when no week is visible; titled LOOK-AHEAD when the rows
    were built with week-aligned OTC data."""
    columns = ["otc_week_used", "otc_status", "otc_participation_rate",
               "otc_participation_z", "otc_participation_delta"]
    block = lab.frame[columns].assign(date=session_pseudo_dates(len(lab.frame)))
    otc_panel.plot_otc_panel(ax, block, ingested=lab.otc_weeks != 0, symbol=lab.symbol)
    if lab.look_ahead:
        _title(ax, LOOK_AHEAD_TITLE, COLORS["orange"])
    else:
        _title(ax, OTC_TITLE)
    return ax


def _draw(ax: Axes, panel: str, lab: Lab, compare: Sequence[str], hist_signal: str | None,
          price_scale: str = "linear") -> None:
    if panel == "price":
        draw_price_panel(ax, lab, compare, price_scale=price_scale)
    elif panel == "heatmap":
        draw_heatmap_panel(ax, lab, compare)
    elif panel == "hist":
        if hist_signal is None:
            raise ConfigError("the hist panel needs a signal (--hist-signal)")
        draw_hist_panel(ax, lab, hist_signal)
    elif panel == "bands":
        draw_bands_panel(ax, lab)
    elif panel == "otc":
        draw_otc(ax, lab)
    elif panel == "options":
        options_panel.draw_options_panel(ax, lab.frame["date"], lab.options)
    else:
        raise ConfigError(f"unknown panel {panel!r}; valid: {', '.join(PANELS)}")


def _label_dates(date_axes: Sequence[Axes], frame: pd.DataFrame) -> None:
    """``yy-mm-dd`` labels on the lowest date axis only (the shared axis of the others)."""
    for ax in date_axes[:-1]:
        ax.tick_params(labelbottom=False)
    sandbox_chart.set_date_ticks(date_axes[-1], frame)
    date_axes[-1].tick_params(labelbottom=True)
    date_axes[0].set_xlim(-0.6, len(frame) - 0.4)


def plot_lab(
    lab: Lab,
    variants: Sequence[str] = (),
    panels: Sequence[str] = (),
    *,
    compare: Sequence[str] | None = None,
    hist_signal: str | None = None,
    title: str | None = None,
    price_scale: str = "linear",
) -> Figure:
    """The lab figure: ``price`` first when asked, one panel per name in ``variants``, then the
    other ``panels`` in order. ``compare`` = the variants the price consensus and the heatmap
    use (default ``variants``)."""
    if lab.frame.empty:
        raise ValueError("nothing to plot: the lab frame has no rows")
    unknown = [p for p in panels if p not in PANELS]
    if unknown:
        raise ConfigError(f"unknown panel(s) {', '.join(unknown)}; valid: {', '.join(PANELS)}")
    if not variants and not panels:
        raise ValueError("plot_lab needs at least one variant or panel")
    compared = list(compare if compare is not None else variants)
    order = [("price", "price")] if "price" in panels else []
    order += [("variant", name) for name in variants]
    order += [(p, p) for p in panels if p != "price"]
    heights = [PANEL_HEIGHT[kind] for kind, _ in order]
    with matplotlib.style.context(BASE_STYLE):
        fig = Figure(figsize=(FIG_WIDTH, sum(heights) + 1.4))
        fig.patch.set_facecolor(COLORS["background"])
        grid = GridSpec(len(order), 1, figure=fig, height_ratios=heights)
        date_axes: list[Axes] = []
        for row, (kind, name) in enumerate(order):
            shared = date_axes[0] if date_axes and kind != "hist" else None
            ax = fig.add_subplot(grid[row], sharex=shared)
            if kind == "variant":
                draw_variant_panel(ax, lab, name)
            else:
                _draw(ax, name, lab, compared, hist_signal, price_scale)
            if kind != "hist":
                date_axes.append(ax)
        if date_axes:
            _label_dates(date_axes, lab.frame)
        label = lab.synthetic_label
        fig.suptitle(sandbox_chart.labelled_title(title or f"{lab.symbol} - Signal Lab", label),
                     color=COLORS["red"] if label else COLORS["text"], fontsize=14,
                     fontweight="bold")
        fig.text(0.01, 0.004, sandbox_chart.PROXY_NOTE, color=COLORS["neutral"], fontsize=8,
                 ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    return fig


def plot_seed_with_panels(
    frame: pd.DataFrame,
    lab: Lab,
    panels: Sequence[str],
    *,
    dot_mode: str = "current",
    blend_short_weight: float = 0.6,
    blend_flow_weight: float = 0.4,
    compare: Sequence[str] = (),
    hist_signal: str | None = None,
    price_scale: str = "linear",
) -> Figure:
    """The seed's 7-panel figure (:func:`sandbox_chart.plot`, unchanged) with ``panels``
    appended below it (``--panels +otc``). ``lab`` must hold the sandbox frame's dates."""
    seed_dates = pd.DatetimeIndex(pd.to_datetime(frame["date"]))
    if not seed_dates.equals(pd.DatetimeIndex(lab.frame["date"])):
        raise ValueError("the lab rows and the sandbox frame cover different dates; load both "
                         "for the same ticker and range")
    fig = sandbox_chart.plot(frame, dot_mode, blend_short_weight, blend_flow_weight)
    return append_panels(fig, lab, panels, compare=compare, hist_signal=hist_signal,
                         price_scale=price_scale)


def append_panels(fig: Figure, lab: Lab, panels: Sequence[str], *,
                  compare: Sequence[str] = (), hist_signal: str | None = None,
                  price_scale: str = "linear") -> Figure:
    """Add ``panels`` below the seed's 7-panel figure from :func:`sandbox_chart.plot` (same
    session x axis, date labels moved to the lowest panel); the seed panels are not redrawn.

    ``lab`` must hold the same dates as the seed frame the figure was drawn from
    (:func:`plot_seed_with_panels` checks it).
    """
    seed_axes = [ax for ax in fig.axes if ax.get_title(loc="left") in
                 sandbox_chart.PANEL_TITLES]
    if len(seed_axes) != len(sandbox_chart.PANEL_TITLES):
        raise ValueError("append_panels needs a figure from sandbox_chart.plot()")
    first, last = seed_axes[0].get_xlim()
    if not panels:
        return fig
    ratios = [*sandbox_chart.HEIGHT_RATIOS, *([APPENDED_RATIO] * len(panels))]
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height * sum(ratios) / sum(sandbox_chart.HEIGHT_RATIOS))
    with matplotlib.style.context(BASE_STYLE):
        grid = GridSpec(len(ratios), 1, figure=fig, height_ratios=ratios)
        for row, ax in enumerate(seed_axes):
            ax.set_subplotspec(grid[row])
        date_axes = list(seed_axes)
        for offset, panel in enumerate(panels):
            row = len(seed_axes) + offset
            ax = fig.add_subplot(grid[row], sharex=None if panel == "hist" else seed_axes[0])
            _draw(ax, panel, lab, compare, hist_signal, price_scale)
            if panel != "hist":
                date_axes.append(ax)
        _label_dates(date_axes, lab.frame)
        seed_axes[0].set_xlim(first, last)
        fig.tight_layout(rect=(0, 0.015, 1, 0.97))
    return fig


__all__ = [
    "append_panels",
    "consensus_levels",
    "draw_bands_panel",
    "draw_heatmap_panel",
    "draw_hist_panel",
    "draw_otc",
    "draw_price_panel",
    "draw_variant_panel",
    "heatmap_matrix",
    "plot_lab",
    "plot_seed_with_panels",
    "session_pseudo_dates",
]
