"""The seed's Accumulation Signal Sandbox figures: the 7-panel chart and the experiment.

Same panels, titles, colours, thresholds (ratio 0.75 / 1.0 / 1.25, score 30 / 50 / 70), dots,
confidence strips, ``yy-mm-dd`` labels, figure size and height ratios as the seed notebook, drawn
with the object API under ``matplotlib.style.context('dark_background')`` (no global pyplot
state). The seed's per-day bar loop (one ``ax.bar`` call, hence one ``Rectangle`` artist, per
day and panel) becomes one :class:`~matplotlib.collections.PolyCollection` per bar series with
per-bar RGBA colours (:func:`draw_bars`): the same rectangles and colours, but a year of data
draws in a fraction of the time (``ax.bar`` costs about 0.5 ms per bar).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal

import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.colors import LinearSegmentedColormap, to_rgba_array
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from darkpool_analysis.sandbox import DOT_MODES, VARIANT_COLUMNS, experimental_signal
from darkpool_analysis.views.style import (
    BASE_STYLE,
    COLORS,
    apply_axis_style,
    set_flow_axis,
    set_ratio_axis,
    set_volume_axis,
)

FIGSIZE: Final = (16, 22)
HEIGHT_RATIOS: Final = (2.2, 2.2, 1.6, 2.2, 1.8, 1.8, 1.8)
EXPERIMENTAL_FIGSIZE: Final = (16, 4)

#: Panel titles, top to bottom (the seed's, unchanged).
PANEL_TITLES: Final = (
    "Combined Buy/Sell Ratio",
    "Volume Weighted Directional Flow",
    "FINRA Buy Volume (B)",
    "Short Sale Buy/Sell Ratio",
    "Accumulation Score (Current)",
    "Accumulation Score (Option A: vw_flow_z)",
    "Accumulation Score (Option B: blended)",
)
EXPERIMENTAL_TITLE: Final = "Imbalance * log1p(B + S)"
#: Beyond this many days, date labels go on every k-th day only.
MAX_DATE_LABELS: Final = 64

#: Per variant: dot colours above 70 / below 30 and the x offset used in 'all' mode.
DOT_SPECS: Final[dict[str, dict[str, str | float]]] = {
    "current": {"accum": COLORS["green"], "dist": COLORS["red"], "offset": -0.18},
    "option_a": {"accum": COLORS["blue"], "dist": COLORS["purple"], "offset": 0.0},
    "option_b": {"accum": COLORS["yellow"], "dist": COLORS["orange"], "offset": 0.18},
}
#: How a day without a score is drawn (see :func:`draw_score_panel`).
NoScoreStyle = Literal["as_50", "hatched"]
NO_SCORE_HATCH: Final = "////"
NO_SCORE_LABEL: Final = "no score (missing data)"
#: Dot modes of the 7-panel figure: the seed's (:data:`DOT_MODES`) and ``own`` (each score
#: panel shows the dots of its own variant).
PANEL_DOT_MODES: Final = (*DOT_MODES, "own")
CONFIDENCE_NOTE: Final = (
    "Strip under the bars = confidence (OTC week staleness x coverage of short, lit and price "
    "data): green >= 0.7, yellow >= 0.4, red below; bars are solid at confidence >= 0.6, "
    "faint below."
)
ACCUM_DOT_Y: Final = 1.02
DIST_DOT_Y: Final = -0.06

SCORE_CMAP: Final = LinearSegmentedColormap.from_list(
    "score_cmap", [(0.0, COLORS["purple"]), (0.5, "#555555"), (1.0, COLORS["green"])]
)

PROXY_NOTE: Final = (
    'FINRA "buy" volume (B) = FINRA Reg SHO short-sale volume: a proxy for dealer-filled '
    "customer buying, not observed buying and not short interest. S = total - short volume."
)


def _title(ax: Axes, text: str) -> None:
    ax.set_title(text, color=COLORS["text"], fontsize=10, fontweight="bold", loc="left")


def _date_labels(frame: pd.DataFrame) -> list[str]:
    return pd.to_datetime(frame["date"]).dt.strftime("%y-%m-%d").tolist()


def set_date_ticks(ax: Axes, frame: pd.DataFrame) -> None:
    """``yy-mm-dd`` labels, rotated 45 degrees, on every day as in the seed while there are at
    most :data:`MAX_DATE_LABELS` days; on every k-th day beyond (a year of daily labels is
    unreadable, and thousands of tick objects make drawing slow)."""
    step = max(1, -(-len(frame) // MAX_DATE_LABELS))
    positions = np.arange(len(frame))[::step]
    ax.set_xticks(positions)
    ax.set_xticklabels(_date_labels(frame)[::step], rotation=45, ha="right", fontsize=8)


def _check_dot_mode(dot_mode: str, *, own: bool = False) -> tuple[str, ...]:
    """The variants whose dots ``dot_mode`` draws; ``own`` is valid where panels are known."""
    if own and dot_mode == "own":
        return DOT_MODES["all"]
    if dot_mode not in DOT_MODES:
        valid = PANEL_DOT_MODES if own else tuple(DOT_MODES)
        raise ValueError(f"unknown dot mode {dot_mode!r}; expected one of {', '.join(valid)}")
    return DOT_MODES[dot_mode]


def draw_bars(
    ax: Axes,
    x: np.ndarray,
    heights: np.ndarray,
    *,
    width: float,
    colors: np.ndarray | str,
    bottom: float = 0.0,
    zorder: float | None = None,
) -> PolyCollection:
    """Vertical bars centred on ``x`` as one collection (what ``ax.bar`` draws, vectorised).

    ``colors`` is one colour or an (n, 4) RGBA array (alpha included). Edges are not drawn,
    as with ``ax.bar``'s default.
    """
    x = np.asarray(x, dtype=float)
    heights = np.asarray(heights, dtype=float)
    left, right = x - width / 2.0, x + width / 2.0
    low = np.full_like(x, bottom)
    high = low + heights
    verts = np.stack([np.column_stack(corner) for corner in
                      ((left, low), (left, high), (right, high), (right, low))], axis=1)
    bars = PolyCollection(verts, facecolors=colors, edgecolors="none", linewidths=0.0)
    if zorder is not None:
        bars.set_zorder(zorder)
    ax.add_collection(bars, autolim=True)
    ax.autoscale_view()
    return bars


def draw_line_panel(
    ax: Axes,
    x: np.ndarray,
    values: pd.Series,
    *,
    title: str,
    ylabel: str,
    set_axis: Callable[[Axes, pd.Series], None],
    color: str = COLORS["cyan"],
) -> None:
    """A cyan line with white-edged markers over the non-null days, then the panel's axis."""
    apply_axis_style(ax)
    series = pd.to_numeric(values, errors="coerce").astype(float)
    mask = series.notna().to_numpy()
    ax.plot(x[mask], series[mask], color=color, linewidth=1.8)
    ax.scatter(x[mask], series[mask], color=color, s=25, edgecolors=COLORS["white"],
               linewidths=0.4)
    set_axis(ax, series)
    ax.set_ylabel(ylabel, color=COLORS["text"])
    _title(ax, title)


def draw_volume_panel(ax: Axes, x: np.ndarray, values: pd.Series, *, title: str,
                      ylabel: str) -> None:
    """Yellow translucent bars of a share volume (non-null days only)."""
    apply_axis_style(ax)
    series = pd.to_numeric(values, errors="coerce").astype(float)
    mask = series.notna().to_numpy()
    draw_bars(ax, x[mask], series.to_numpy()[mask], width=0.7,
              colors=to_rgba_array([COLORS["yellow"]], alpha=0.5))
    set_volume_axis(ax, series)
    ax.set_ylabel(ylabel, color=COLORS["text"])
    _title(ax, title)


def score_bar_colors(scores: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """RGBA per bar: purple-grey-green colormap of the 0-100 score (deviation from 50 raised to
    0.85, as in the seed), alpha 0.8 when confidence >= 0.6 else 0.4."""
    norm = np.clip(scores / 100.0, 0, 1)
    deviation = norm - 0.5
    norm = np.clip(0.5 + np.sign(deviation) * np.abs(deviation) ** 0.85, 0, 1)
    colors = np.asarray(SCORE_CMAP(norm), dtype=float).reshape(len(scores), 4)
    colors[:, 3] = np.where(confidence >= 0.6, 0.8, 0.4)
    return colors


def confidence_strip_colors(confidence: np.ndarray) -> np.ndarray:
    """RGBA per day: green >= 0.7, yellow >= 0.4, red below; alpha 0.6."""
    palette = to_rgba_array([COLORS["green"], COLORS["yellow"], COLORS["red"]], alpha=0.6)
    band = np.where(confidence >= 0.7, 0, np.where(confidence >= 0.4, 1, 2))
    return palette[band]


def draw_no_score(ax: Axes, x: np.ndarray) -> PolyCollection:
    """Days without a score: an empty hatched bar over the score range (0-100), so a missing
    day never looks like a neutral 50."""
    bars = draw_bars(ax, x, np.ones(len(x)), width=0.8, colors="none", zorder=2)
    bars.set_edgecolor(to_rgba_array([COLORS["neutral"]], alpha=0.55))
    bars.set_hatch(NO_SCORE_HATCH)
    bars.set_linewidth(0.0)
    bars.set_label(NO_SCORE_LABEL)
    return bars


def draw_score_panel(
    ax: Axes,
    x: np.ndarray,
    scores: pd.Series,
    confidence: pd.Series,
    title: str,
    dot_mode: str,
    dot_sources: Mapping[str, pd.Series],
    *,
    no_score: NoScoreStyle = "as_50",
) -> None:
    """Score bars, the confidence strip below 0, threshold lines at 30/50/70 and the dots of
    ``dot_mode``'s variants: above the panel at >= 70, below it at <= 30.

    ``no_score`` says how a day without a score is drawn: ``"as_50"`` is the seed's drawing (a
    grey bar at 50 with a strip, kept so this function reproduces the seed's own panel);
    ``"hatched"`` (what :func:`plot` uses) draws an empty hatched bar and no strip.
    """
    apply_axis_style(ax)
    variants = _check_dot_mode(dot_mode)
    if no_score not in ("as_50", "hatched"):
        raise ValueError(f"unknown no_score style {no_score!r}; expected as_50 or hatched")
    raw = pd.to_numeric(scores, errors="coerce").astype(float).to_numpy()
    conf = pd.to_numeric(confidence, errors="coerce").astype(float).fillna(0.5).to_numpy()
    shown = np.ones(len(raw), dtype=bool) if no_score == "as_50" else ~np.isnan(raw)
    filled = np.where(np.isnan(raw), 50.0, raw)[shown]
    conf_shown = conf[shown]
    draw_bars(ax, x[shown], filled / 100.0, width=0.8,
              colors=score_bar_colors(filled, conf_shown), zorder=2)
    draw_bars(ax, x[shown], 0.08 * conf_shown, bottom=-0.12, width=0.6,
              colors=confidence_strip_colors(conf_shown), zorder=3)
    if not shown.all():
        draw_no_score(ax, x[~shown])
    for level, color in ((0.30, "red"), (0.50, "neutral"), (0.70, "green")):
        ax.axhline(y=level, color=COLORS[color], linestyle="--", linewidth=0.8, alpha=0.4,
                   zorder=1)
    ax.set_ylim(-0.15, 1.05)
    ax.set_yticks([0, 0.3, 0.5, 0.7, 1.0])
    ax.set_yticklabels(["0", "30", "50", "70", "100"])
    _title(ax, title)

    for variant in variants:
        source = dot_sources.get(variant)
        if source is None:
            continue
        spec = DOT_SPECS[variant]
        offset = float(spec["offset"]) if dot_mode == "all" else 0.0
        values = pd.to_numeric(source, errors="coerce").astype(float).to_numpy()
        for mask, y, color in ((values >= 70, ACCUM_DOT_Y, spec["accum"]),
                               (values <= 30, DIST_DOT_Y, spec["dist"])):
            if mask.any():
                ax.scatter(x[mask] + offset, np.full(int(mask.sum()), y), s=60, c=color,
                           edgecolors=COLORS["white"], linewidths=0.6, zorder=6)


def draw_sandbox(axes: Sequence[Axes], frame: pd.DataFrame, dot_mode: str = "current", *,
                 no_score: NoScoreStyle = "hatched") -> None:
    """Draw the seed's seven panels onto ``axes`` (top to bottom) from a sandbox frame.

    ``dot_mode`` ``own`` gives each score panel its own variant's dots; ``no_score`` as in
    :func:`draw_score_panel`.
    """
    if len(axes) != len(PANEL_TITLES):
        raise ValueError(f"draw_sandbox needs {len(PANEL_TITLES)} axes, got {len(axes)}")
    _check_dot_mode(dot_mode, own=True)
    x = np.arange(len(frame))
    draw_line_panel(axes[0], x, frame["combined_ratio"], title=PANEL_TITLES[0],
                    ylabel="Combined Ratio", set_axis=set_ratio_axis)
    draw_line_panel(axes[1], x, frame["vw_flow"], title=PANEL_TITLES[1], ylabel="VW Flow",
                    set_axis=set_flow_axis)
    draw_volume_panel(axes[2], x, frame["finra_buy_volume"], title=PANEL_TITLES[2],
                      ylabel="FINRA B")
    draw_line_panel(axes[3], x, frame["short_buy_sell_ratio"], title=PANEL_TITLES[3],
                    ylabel="Short Ratio", set_axis=set_ratio_axis)
    dot_sources = {variant: frame[column] for variant, column in VARIANT_COLUMNS.items()}
    for ax, (variant, column), title in zip(axes[4:], VARIANT_COLUMNS.items(),
                                            PANEL_TITLES[4:], strict=True):
        draw_score_panel(ax, x, frame[column], frame["confidence"], title,
                         variant if dot_mode == "own" else dot_mode, dot_sources,
                         no_score=no_score)
    set_date_ticks(axes[-1], frame)


def _check_blend(frame: pd.DataFrame, blend_short_weight: float,
                 blend_flow_weight: float) -> None:
    stored = frame.attrs.get("blend_weights")
    if stored is not None and tuple(stored) != (blend_short_weight, blend_flow_weight):
        raise ValueError(
            f"the frame's option B was computed with blend weights {tuple(stored)}, not "
            f"({blend_short_weight}, {blend_flow_weight}); pass the same weights to plot() or "
            "reload with sandbox.load(..., blend_short_weight=..., blend_flow_weight=...)"
        )


def _symbol(frame: pd.DataFrame) -> str:
    if "symbol" in frame.columns and frame["symbol"].notna().any():
        return str(frame["symbol"].dropna().iloc[0])
    return "?"


def synthetic_label(frame: pd.DataFrame) -> str | None:
    """The synthetic-data label a :func:`~darkpool_analysis.sandbox.load` frame carries
    (``attrs['synthetic_label']``), None for real data."""
    label = frame.attrs.get("synthetic_label")
    return str(label) if label else None


def labelled_title(text: str, label: str | None) -> str:
    """``text`` with `` — <label>`` appended for synthetic data (once)."""
    return f"{text} — {label}" if label and label not in text else text


def legend_handles(frame: pd.DataFrame, dot_mode: str) -> list[Artist]:
    """What the seed's chart leaves unexplained: the dot colours of ``dot_mode`` (per variant
    in ``all``/``own``), the confidence strip's colours and, when the frame has days without
    a score, the hatched bar."""
    variants = _check_dot_mode(dot_mode, own=True)
    named = dot_mode in ("all", "own")
    handles: list[Artist] = []
    for variant in variants:
        spec = DOT_SPECS[variant]
        prefix = f"{variant} " if named else "score "
        for key, sign in (("accum", ">= 70"), ("dist", "<= 30")):
            handles.append(Line2D([], [], linestyle="none", marker="o", markersize=7,
                                  markerfacecolor=str(spec[key]), markeredgecolor=COLORS["white"],
                                  markeredgewidth=0.6, label=f"{prefix}{sign}"))
    strip = confidence_strip_colors(np.array([1.0, 0.5, 0.0]))
    for rgba, text in zip(strip, ("confidence >= 0.7", "confidence 0.4-0.7", "confidence < 0.4"),
                          strict=True):
        handles.append(Patch(facecolor=tuple(rgba), edgecolor="none", label=text))
    if frame[list(VARIANT_COLUMNS.values())].isna().to_numpy().any():
        handles.append(Patch(facecolor="none", edgecolor=to_rgba_array(
            [COLORS["neutral"]], alpha=0.55)[0], hatch=NO_SCORE_HATCH, linewidth=0.0,
            label=NO_SCORE_LABEL))
    return handles


def plot(
    frame: pd.DataFrame,
    dot_mode: str = "current",
    blend_short_weight: float = 0.6,
    blend_flow_weight: float = 0.4,
    title: str | None = None,
) -> Figure:
    """The seed's 7-panel sandbox figure for a :func:`darkpool_analysis.sandbox.load` frame.

    ``dot_mode`` is ``current``, ``option_a``, ``option_b``, ``all`` (all three, offset) or
    ``own`` (each score panel its own variant's dots). Days without a score are hatched; a
    legend under the title names the dot colours, the confidence strip and the hatching.
    The blend weights are named in the footnote (and must match the frame's, when known);
    ``title`` defaults to ``'{TICKER} - Accumulation Signal Sandbox'``; a frame from a
    synthetic database gets `` — SYNTHETIC DATA ...`` appended, in red.
    """
    if frame.empty:
        raise ValueError("nothing to plot: the sandbox frame has no rows")
    _check_dot_mode(dot_mode, own=True)
    _check_blend(frame, blend_short_weight, blend_flow_weight)
    with matplotlib.style.context(BASE_STYLE):
        fig = Figure(figsize=FIGSIZE)
        axes = fig.subplots(7, 1, sharex=True,
                            gridspec_kw={"height_ratios": list(HEIGHT_RATIOS)})
        fig.patch.set_facecolor(COLORS["background"])
        draw_sandbox(list(axes), frame, dot_mode)
        handles = legend_handles(frame, dot_mode)
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.972),
                   ncol=min(len(handles), 11), fontsize=8, frameon=False,
                   labelcolor=COLORS["text"], handlelength=1.6, columnspacing=1.4)
        label = synthetic_label(frame)
        fig.suptitle(labelled_title(title or f"{_symbol(frame)} - Accumulation Signal Sandbox",
                                    label),
                     color=COLORS["red"] if label else COLORS["text"], fontsize=14,
                     fontweight="bold")
        fig.text(
            0.01, 0.004,
            f"{PROXY_NOTE}\nOption A: short z = vw_flow_z.  Option B: short z = "
            f"{blend_short_weight:g} x short_buy_sell_ratio_z + {blend_flow_weight:g} x "
            f"vw_flow_z.  Dots: score >= 70 above, <= 30 below.\n{CONFIDENCE_NOTE}",
            color=COLORS["neutral"], fontsize=8, ha="left", va="bottom",
        )
        fig.tight_layout(rect=(0, 0.022, 1, 0.962))
    return fig


def draw_experimental(ax: Axes, frame: pd.DataFrame) -> None:
    """The seed's experimental signal ``imbalance * log1p(B + S)`` as a yellow line."""
    apply_axis_style(ax)
    signal = (frame["exp_signal"] if "exp_signal" in frame.columns
              else experimental_signal(frame)["exp_signal"]).astype(float)
    x = np.arange(len(frame))
    mask = signal.notna().to_numpy()
    ax.plot(x[mask], signal[mask], color=COLORS["yellow"], linewidth=1.8)
    ax.scatter(x[mask], signal[mask], color=COLORS["yellow"], s=20,
               edgecolors=COLORS["white"], linewidths=0.4)
    ax.axhline(0.0, color=COLORS["neutral"], linestyle="--", linewidth=1.0, alpha=0.7)
    _title(ax, EXPERIMENTAL_TITLE)
    ax.set_ylabel("Signal", color=COLORS["text"])
    set_date_ticks(ax, frame)


def plot_experimental(frame: pd.DataFrame) -> Figure:
    """The seed's experimental figure (imbalance x log1p(B + S)), B being the short-volume
    proxy named in the footnote."""
    if frame.empty:
        raise ValueError("nothing to plot: the sandbox frame has no rows")
    with matplotlib.style.context(BASE_STYLE):
        fig = Figure(figsize=EXPERIMENTAL_FIGSIZE)
        ax = fig.subplots()
        fig.patch.set_facecolor(COLORS["background"])
        draw_experimental(ax, frame)
        label = synthetic_label(frame)
        if label:
            ax.set_title(label, color=COLORS["red"], fontsize=10, fontweight="bold",
                         loc="right")
        fig.text(0.01, 0.01, labelled_title(f"{_symbol(frame)}. {PROXY_NOTE}", label),
                 color=COLORS["neutral"], fontsize=7, ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


__all__ = [
    "DOT_SPECS",
    "PANEL_DOT_MODES",
    "PANEL_TITLES",
    "draw_bars",
    "draw_experimental",
    "draw_no_score",
    "draw_sandbox",
    "draw_score_panel",
    "legend_handles",
    "plot",
    "plot_experimental",
    "synthetic_label",
]
