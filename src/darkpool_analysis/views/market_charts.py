"""Market charts in the seed's dark style: the dark index and the multi-ticker overlay.

Both take the frames of :mod:`darkpool_analysis.market` and return a
:class:`~matplotlib.figure.Figure` (object API only; the caller saves it). Sessions are laid out
on positions with date labels, as the seed does, so weekends and holidays leave no holes.
A frame whose ``attrs["label"]`` is set (a synthetic database) gets it in the title, in red.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from darkpool_analysis.views.style import COLORS, apply_axis_style

#: Level read as bullish in SqueezeMetrics' DIX commentary (typical range 0.35-0.55).
DIX_REFERENCE: Final = 0.45
#: Above this many names the overlay draws no legend (it would hide the lines).
LEGEND_MAX: Final = 14
_LINE_COLOURS: Final = (COLORS["cyan"], COLORS["yellow"], COLORS["green"], COLORS["orange"],
                        COLORS["purple"], COLORS["blue"], COLORS["red"], COLORS["white"],
                        "#7fffd4", "#ff77c8", "#c8e64a", "#a0a0ff")
CAVEAT: Final = ("FINRA short volume is a proxy for dealer-filled buying (SqueezeMetrics, "
                 "'Short is Long'), not observed buying and not short interest; FINRA total "
                 "volume is off-exchange volume only.")


def _title(ax: Axes, text: str) -> None:
    ax.set_title(text, color=COLORS["text"], fontsize=10, fontweight="bold", loc="left")


def _date_axis(ax: Axes, dates: pd.DatetimeIndex, max_ticks: int = 14) -> None:
    step = max(1, int(np.ceil(len(dates) / max_ticks)))
    ticks = np.arange(0, len(dates), step)
    ax.set_xticks(ticks)
    ax.set_xticklabels(dates[ticks].strftime("%Y-%m-%d"), rotation=35, ha="right", fontsize=8)
    ax.set_xlim(-0.8, len(dates) - 0.2)


def _suptitle(fig: Figure, text: str, synthetic: str | None) -> None:
    if synthetic:
        text = f"{text}  ({synthetic})"
    fig.suptitle(text, color=COLORS["red"] if synthetic else COLORS["text"], fontsize=14,
                 fontweight="bold")


def _shade_gaps(ax: Axes, gap: np.ndarray) -> None:
    for position in np.flatnonzero(gap):
        ax.axvspan(position - 0.5, position + 0.5, color=COLORS["neutral"], alpha=0.18, lw=0)


def plot_index(frame: pd.DataFrame, proxy: pd.Series | None = None) -> Figure:
    """The dark index: ``dix`` (and the equal-weighted DPI) with gaps shaded, its rolling z,
    and the proxy's close (e.g. SPY) on the same sessions.

    ``frame`` is a :func:`market.index` frame; ``proxy`` a close series indexed by date
    (:func:`market.proxy_close`), or ``None``/empty for a note instead of the panel's line.
    """
    attrs = frame.attrs
    dates = pd.DatetimeIndex(pd.to_datetime(frame["date"]))
    x = np.arange(len(dates))
    dix = frame["dix"].to_numpy(dtype=float)
    gap = ~np.isfinite(dix)
    fig = Figure(figsize=(13, 9.5), facecolor=COLORS["background"])
    grid = fig.add_gridspec(3, 1, height_ratios=(3.0, 1.8, 1.8), hspace=0.42,
                            left=0.07, right=0.98, top=0.9, bottom=0.13)
    ax_dix, ax_z, ax_px = (fig.add_subplot(grid[i]) for i in range(3))
    for ax in (ax_dix, ax_z, ax_px):
        apply_axis_style(ax)
        _shade_gaps(ax, gap)

    ax_dix.plot(x, dix, color=COLORS["cyan"], linewidth=1.8, label="dix (dollar-weighted)")
    ax_dix.scatter(x, dix, color=COLORS["cyan"], s=14, edgecolors=COLORS["white"],
                   linewidths=0.3, zorder=3)
    ax_dix.plot(x, frame["dpi_equal_weight"].to_numpy(dtype=float), color=COLORS["orange"],
                linewidth=1.0, linestyle="--", alpha=0.8, label="equal-weighted DPI")
    ax_dix.axhline(DIX_REFERENCE, color=COLORS["neutral"], linestyle="--", linewidth=1.0,
                   alpha=0.7, label=f"{DIX_REFERENCE:.2f}")
    ax_dix.set_ylabel(r"short \$ / total \$", color=COLORS["text"])
    ax_dix.legend(fontsize=8, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"],
                  loc="best", ncols=3)
    n_gaps = int(gap.sum())
    _title(ax_dix, "Dark index: sum(short x close) / sum(total x close) over members with data"
           + (f"  - {n_gaps} gap session(s) shaded" if n_gaps else ""))

    z = frame["dix_z"].to_numpy(dtype=float)
    colours = np.where(z >= 0, COLORS["green"], COLORS["red"])
    ax_z.bar(x, np.nan_to_num(z, nan=0.0), color=colours, alpha=0.75, width=0.75)
    for level, colour in ((1.0, COLORS["green"]), (-1.0, COLORS["red"])):
        ax_z.axhline(level, color=colour, linestyle="--", linewidth=0.9, alpha=0.7)
    ax_z.axhline(0.0, color=COLORS["neutral"], linewidth=0.9)
    ax_z.set_ylabel("z", color=COLORS["text"])
    _title(ax_z, f"dix rolling z ({attrs.get('z_window', '')} sessions, past and today)")

    proxy_name = proxy.name if proxy is not None and proxy.name else "proxy"
    aligned = (proxy.reindex(dates).to_numpy(dtype=float) if proxy is not None and len(proxy)
               else np.full(len(dates), np.nan))
    if np.isfinite(aligned).any():
        ax_px.plot(x, aligned, color=COLORS["yellow"], linewidth=1.6)
        _title(ax_px, f"{proxy_name} close")
    else:
        ax_px.text(0.5, 0.5, f"no prices for {proxy_name} in the database", color=COLORS["text"],
                   ha="center", va="center", transform=ax_px.transAxes)
        ax_px.set_yticks([])
        _title(ax_px, f"{proxy_name} close (not available)")
    for ax in (ax_dix, ax_z, ax_px):
        _date_axis(ax, dates)

    members = frame["members_with_data"].to_numpy(dtype=float)
    coverage = frame["dollar_coverage"].to_numpy(dtype=float)
    cover_text = (f"{np.nanmean(coverage):.0%}" if np.isfinite(coverage).any() else "NA")
    fig.text(0.07, 0.025,
             f"members with data per session: {int(np.min(members))}-{int(np.max(members))} "
             f"of {int(frame['members'].max())}; mean dollar coverage {cover_text}; a session "
             f"with fewer than half of its members with data is a gap.\n{CAVEAT}",
             color=COLORS["neutral"], fontsize=8, ha="left")
    name = attrs.get("name", "index")
    _suptitle(fig, f"{name} dark index (DIX-style)  {dates[0].date()} .. {dates[-1].date()}",
              attrs.get("label"))
    return fig


def plot_overlay(lines: pd.DataFrame, breadth: pd.DataFrame) -> Figure:
    """Multi-ticker overlay: normalised prices, each name's ``ln(B/S)`` with the group mean,
    and breadth ``(#score >= 70 - #score <= 30) / #scored`` per session.

    ``lines`` is a :func:`market.overlay` frame, ``breadth`` its :func:`market.compute_breadth`.
    """
    attrs = lines.attrs
    dates = pd.DatetimeIndex(pd.to_datetime(breadth["date"]))
    prices = lines.pivot(index="date", columns="symbol", values="norm_price").reindex(dates)
    ratios = lines.pivot(index="date", columns="symbol", values="log_short_ratio").reindex(dates)
    x = np.arange(len(dates))
    fig = Figure(figsize=(13, 10), facecolor=COLORS["background"])
    grid = fig.add_gridspec(3, 1, height_ratios=(2.6, 2.2, 1.6), hspace=0.42,
                            left=0.07, right=0.86, top=0.9, bottom=0.12)
    ax_px, ax_ratio, ax_breadth = (fig.add_subplot(grid[i]) for i in range(3))
    for ax in (ax_px, ax_ratio, ax_breadth):
        apply_axis_style(ax)

    symbols = list(prices.columns)
    for i, symbol in enumerate(symbols):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        ax_px.plot(x, prices[symbol].to_numpy(dtype=float), color=colour, linewidth=1.3,
                   label=str(symbol))
        ax_ratio.plot(x, ratios[symbol].to_numpy(dtype=float), color=colour, linewidth=0.9,
                      alpha=0.45)
    ax_px.axhline(100.0, color=COLORS["neutral"], linestyle="--", linewidth=0.9, alpha=0.7)
    if np.isfinite(prices.to_numpy(dtype=float)).any():
        ax_px.set_yscale("log")  # one squeeze must not flatten every other line
        ax_px.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax_px.set_ylabel("close, first = 100 (log)", color=COLORS["text"])
    _title(ax_px, "Normalised prices (each name's first close in the range = 100)")
    if len(symbols) <= LEGEND_MAX:
        ax_px.legend(fontsize=8, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"],
                     loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0)
    else:
        ax_px.text(1.01, 1.0, f"{len(symbols)} names\n(no legend)", color=COLORS["text"],
                   fontsize=8, va="top", transform=ax_px.transAxes)

    mean = breadth["mean_log_short_ratio"].to_numpy(dtype=float)
    ax_ratio.plot(x, mean, color=COLORS["yellow"], linewidth=2.4, label="group mean")
    ax_ratio.axhline(0.0, color=COLORS["neutral"], linestyle="--", linewidth=1.0, alpha=0.7)
    ax_ratio.set_ylabel("ln(B / S)", color=COLORS["text"])
    ax_ratio.legend(fontsize=8, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"],
                    loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0)
    _title(ax_ratio, "Log short buy/sell ratio per name (thin) and the group mean")

    values = breadth["breadth"].to_numpy(dtype=float)
    colours = np.where(values >= 0, COLORS["green"], COLORS["red"])
    ax_breadth.bar(x, np.nan_to_num(values, nan=0.0), color=colours, alpha=0.8, width=0.75)
    ax_breadth.axhline(0.0, color=COLORS["neutral"], linewidth=0.9)
    ax_breadth.set_ylim(-1.05, 1.05)
    ax_breadth.set_ylabel("breadth", color=COLORS["text"])
    no_score = int((breadth["scored"] == 0).sum())
    _title(ax_breadth, "Breadth = (#score >= 70 - #score <= 30) / #names with a score"
           + (f"  - {no_score} session(s) without any score" if no_score else ""))
    for ax in (ax_px, ax_ratio, ax_breadth):
        _date_axis(ax, dates)

    missing = attrs.get("without_data") or []
    note = (f"{attrs.get('names', len(symbols))} names in {attrs.get('group', 'the group')}"
            + (f"; without data: {', '.join(missing[:12])}" + (" ..." if len(missing) > 12
                                                                else "") if missing else "")
            + f".\n{CAVEAT}")
    fig.text(0.07, 0.02, note, color=COLORS["neutral"], fontsize=8, ha="left")
    _suptitle(fig, f"{attrs.get('group', 'group')} overlay  {dates[0].date()} .. "
              f"{dates[-1].date()}", attrs.get("label"))
    return fig


__all__ = ["CAVEAT", "DIX_REFERENCE", "plot_index", "plot_overlay"]
