"""Evaluation outputs: tidy numbers (CSV + Parquet), a self-contained HTML report with plots,
an alphalens-format factor export, and a Rich summary table.

Every output carries the OTC-alignment label (look-ahead mode is named as such) and the
caveat that FINRA short volume is a buying *proxy*.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from rich.table import Table

from darkpool_analysis.evaluation.assess import Assessment
from darkpool_analysis.evaluation.fmt import fmt_bps, fmt_ci, fmt_num, fmt_p, fmt_pct
from darkpool_analysis.evaluation.ic import EvaluationResult, quantile_labels
from darkpool_analysis.evaluation.returns import EvalPanel, forward_returns
from darkpool_analysis.synthetic import SYNTHETIC_LABEL
from darkpool_analysis.views.style import COLORS, apply_axis_style

PROXY_CAVEAT = ("FINRA short volume is a proxy for dealer-filled buying, not observed buying, "
                "and not short interest.")
_LINE_COLORS = ("green", "cyan", "yellow", "purple", "orange", "blue", "red", "white")


def _color(i: int) -> str:
    return COLORS[_LINE_COLORS[i % len(_LINE_COLORS)]]


def _legend(ax: Axes) -> None:
    """A legend only when something is labelled (no matplotlib warning on empty plots)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"])


def _figure(height: float = 3.6) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(10, height), facecolor=COLORS["background"])
    ax = fig.add_subplot(1, 1, 1)
    apply_axis_style(ax)
    return fig, ax


def plot_ic_over_time(ic_by_date: pd.DataFrame, horizon: int, ax: Axes,
                      window: int = 21) -> Axes:
    """Rolling mean of the daily cross-sectional IC per variant (placebos dashed grey)."""
    data = ic_by_date[ic_by_date["horizon"] == horizon]
    for i, (name, group) in enumerate(data.groupby("variant", sort=False)):
        rolling = group.set_index("date")["ic"].rolling(window, min_periods=1).mean()
        placebo = str(name).startswith("placebo:")
        ax.plot(rolling.index, rolling.to_numpy(), label=str(name), linewidth=1.2,
                color=COLORS["neutral"] if placebo else _color(i),
                linestyle="--" if placebo else "-")
    ax.axhline(0.0, color=COLORS["neutral"], linewidth=0.8)
    ax.set_title(f"IN-SAMPLE IC ({horizon}-session forward return), {window}-session rolling "
                 "mean", color=COLORS["text"], loc="left", fontsize=10)
    ax.set_xlabel("signal date", color=COLORS["text"])
    ax.set_ylabel("Spearman IC", color=COLORS["text"])
    _legend(ax)
    return ax


def plot_quantile_bars(quantiles: pd.DataFrame, horizon: int, ax: Axes) -> Axes:
    """Mean date-demeaned forward return by signal quantile, grouped bars per variant."""
    data = quantiles[(quantiles["horizon"] == horizon)
                     & ~quantiles["variant"].str.startswith("placebo:")]
    names = list(dict.fromkeys(data["variant"]))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        rows = data[data["variant"] == name]
        x = rows["quantile"].to_numpy(dtype=float) + (i - (len(names) - 1) / 2) * width
        ax.bar(x, rows["mean_demeaned"].to_numpy() * 1e4, width=width, color=_color(i),
               label=name)
    ax.axhline(0.0, color=COLORS["neutral"], linewidth=0.8)
    ax.set_xlabel("signal quantile (1 = lowest)", color=COLORS["text"])
    ax.set_ylabel("bps", color=COLORS["text"])
    ax.set_title(f"IN-SAMPLE demeaned {horizon}-session return by quantile",
                 color=COLORS["text"], loc="left", fontsize=10)
    _legend(ax)
    return ax


def plot_cumulative_spread(spread_by_date: pd.DataFrame, horizon: int, ax: Axes) -> Axes:
    """Growth of 1 from the top-minus-bottom spread on non-overlapping ``horizon`` steps."""
    data = spread_by_date[spread_by_date["horizon"] == horizon]
    for i, (name, group) in enumerate(data.groupby("variant", sort=False)):
        sparse = group.iloc[::horizon]
        placebo = str(name).startswith("placebo:")
        ax.plot(sparse["date"], np.cumprod(1 + sparse["spread"].to_numpy()), label=str(name),
                color=COLORS["neutral"] if placebo else _color(i),
                linestyle="--" if placebo else "-", linewidth=1.2)
    ax.axhline(1.0, color=COLORS["neutral"], linewidth=0.8)
    lines = [line.get_ydata() for line in ax.get_lines()]
    values = np.concatenate([np.asarray(v, dtype=float) for v in lines]) if lines else []
    values = values[np.isfinite(values) & (values > 0)] if len(values) else values
    if len(values) and values.max() / values.min() > 20:
        ax.set_yscale("log")  # a strong spread compounds beyond what a linear axis shows
    ax.set_title(f"IN-SAMPLE cumulative top-minus-bottom spread, gross ({horizon}-session "
                 "steps)", color=COLORS["text"], loc="left", fontsize=10)
    ax.set_xlabel("signal date", color=COLORS["text"])
    ax.set_ylabel("growth of 1", color=COLORS["text"])
    _legend(ax)
    return ax


def plot_equity(curves: Mapping[str, pd.DataFrame], ax: Axes) -> Axes:
    """Equity curves (daily mark-to-market) of backtests, gross dashed and net solid."""
    for i, (name, daily) in enumerate(curves.items()):
        ax.plot(daily["date"], daily["equity"], label=f"{name} gross", color=_color(i),
                linewidth=1.0, linestyle="--")
        if "equity_net" in daily:
            ax.plot(daily["date"], daily["equity_net"], label=f"{name} net", color=_color(i),
                    linewidth=1.4)
    ax.axhline(1.0, color=COLORS["neutral"], linewidth=0.8)
    ax.set_title("IN-SAMPLE backtest equity (equal weight, daily marks)", color=COLORS["text"],
                 loc="left", fontsize=10)
    ax.set_xlabel("date", color=COLORS["text"])
    ax.set_ylabel("growth of 1", color=COLORS["text"])
    _legend(ax)
    return ax


def figure_png_base64(fig: Figure) -> str:
    """Render a figure to PNG and return it base64-encoded (for inline HTML)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, facecolor=fig.get_facecolor())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def alphalens_factor_data(panel: EvalPanel, variant: str, horizons: tuple[int, ...],
                          quantiles: int) -> pd.DataFrame:
    """The factor in alphalens' ``factor_data`` layout: (date, asset) MultiIndex, one column
    per horizon (``1D``, ``5D``...: our next-open-to-close forward returns), ``factor`` and
    ``factor_quantile``. Rows: evaluation-window dates with a signal and every return."""
    signal = panel.windowed(panel.signals[variant])
    fwd = forward_returns(panel.open, panel.close, horizons)
    labels = quantile_labels(signal, quantiles)
    mask = np.isfinite(signal)
    for values in fwd.values():
        mask &= np.isfinite(values)
    rows, cols = np.nonzero(mask)
    index = pd.MultiIndex.from_arrays([panel.dates[rows], panel.symbols[cols]],
                                      names=["date", "asset"])
    data = {f"{h}D": values[rows, cols] for h, values in fwd.items()}
    data["factor"] = signal[rows, cols]
    data["factor_quantile"] = labels[rows, cols].astype(np.int64)
    return pd.DataFrame(data, index=index)


def all_numbers(result: EvaluationResult, grid: pd.DataFrame | None,
                walk: pd.DataFrame | None,
                assessment: Assessment | None = None) -> pd.DataFrame:
    """Every number in one tidy frame: section, variant, horizon, metric, value, label."""
    frames = [result.metrics]
    if assessment is not None and not assessment.oos.empty:
        numeric = [c for c in assessment.oos.columns if c not in ("variant", "horizon")]
        melted = assessment.oos.melt(id_vars=["variant", "horizon"], value_vars=numeric,
                                     var_name="metric", value_name="value")
        frames.append(melted.assign(section="out_of_sample")[
            ["section", "variant", "horizon", "metric", "value"]])
    if grid is not None and not grid.empty:
        stats = [c for c in grid.columns if c not in ("variant", "buy", "sell", "exit")]
        melted = grid.melt(id_vars=["variant", "buy", "sell", "exit"], value_vars=stats,
                           var_name="metric", value_name="value")
        sell = melted["sell"].map(lambda s: "" if pd.isna(s) else f"/{s:g}")
        melted["variant"] = (melted["variant"] + "@" + melted["buy"].map("{:g}".format) + sell
                             + ":" + melted["exit"])
        frames.append(melted.assign(section="backtest", horizon=None)[
            ["section", "variant", "horizon", "metric", "value"]])
    if walk is not None and not walk.empty:
        numeric = [c for c in walk.columns if c.startswith(("is_", "oos_"))]
        melted = walk.reset_index(names="window").melt(
            id_vars=["window", "variant"], value_vars=numeric, var_name="metric")
        melted["variant"] = "window" + melted["window"].astype(str) + ":" + melted["variant"]
        frames.append(melted.assign(section="walk_forward", horizon=None)[
            ["section", "variant", "horizon", "metric", "value"]])
    out = pd.concat([f.astype({"value": float}) for f in frames], ignore_index=True)
    out["horizon"] = pd.array(out["horizon"], dtype="Int64")
    return out.assign(label=result.label)


def headline(result: EvaluationResult) -> pd.DataFrame:
    """One row per (variant, horizon): IC mean / t / p, quantile spread gross and net."""
    ic = result.metrics[result.metrics["section"] == "ic"].pivot_table(
        index=["variant", "horizon"], columns="metric", values="value", sort=False)
    quant = result.metrics[result.metrics["section"] == "quantiles"].pivot_table(
        index=["variant", "horizon"], columns="metric", values="value", sort=False)
    table = ic.join(quant.rename(columns={"top_minus_bottom_demeaned": "spread_demeaned",
                                          "top_minus_bottom_net": "spread_net"}))
    columns = ["mean", "t_stat", "t_stat_nonoverlap", "p_value", "ir", "n_dates",
               "spread_demeaned", "spread_net"]
    return table.reindex(columns=columns).reset_index()


# ---------------------------------------------------------------- terminal


def rich_summary(result: EvaluationResult, grid: pd.DataFrame | None = None,
                 assessment: Assessment | None = None) -> list[Table]:
    """Rich tables for the terminal: verdicts and out-of-sample headline first, then the
    in-sample IC table and the best in-sample backtests (by net Sharpe)."""
    tables: list[Table] = []
    if assessment is not None:
        verdicts = Table(title=f"Verdicts ({assessment.mode.replace('_', '-')} mode, "
                               f"{assessment.n_trials:,} trials) - {result.label}",
                         caption=PROXY_CAVEAT)
        verdicts.add_column("variant", overflow="fold", min_width=12)
        verdicts.add_column("verdict")
        verdicts.add_column("why", overflow="fold")
        for v in assessment.verdicts.values():
            verdicts.add_row(v.variant, v.verdict, v.reason)
        tables.append(verdicts)
    table = Table(title=f"IN-SAMPLE signal evaluation (whole window) - {result.label}")
    for column in ("variant", "h", "IC mean", "t", "t (non-overlap)", "p", "IR",
                   "top-bottom (demeaned)", "top-bottom net"):
        table.add_column(column, justify="left" if column == "variant" else "right",
                         overflow="fold", min_width=12 if column == "variant" else None)
    for row in headline(result).itertuples(index=False):
        if not np.isfinite(row.mean):
            continue
        table.add_row(str(row.variant), f"{int(row.horizon)}", fmt_num(row.mean),
                      fmt_num(row.t_stat), fmt_num(row.t_stat_nonoverlap), fmt_p(row.p_value),
                      fmt_num(row.ir), fmt_bps(row.spread_demeaned * 1e4),
                      fmt_bps(row.spread_net * 1e4))
    if table.row_count:
        tables.append(table)
    if grid is not None and not grid.empty:
        best = grid.sort_values("net_sharpe_daily_annualised", ascending=False).head(10)
        bt = Table(title="IN-SAMPLE event backtests (top 10 by net daily Sharpe; chosen on the "
                         "data they are shown on, see the report for out-of-sample)")
        for column in ("variant", "buy", "sell", "exit", "trades", "win (net)", "PF (net)",
                       "Sharpe gross", "Sharpe net", "max DD (net)"):
            bt.add_column(column, justify="left" if column in ("variant", "exit") else "right",
                          overflow="fold")
        for row in best.itertuples(index=False):
            bt.add_row(str(row.variant), f"{row.buy:g}",
                       "" if pd.isna(row.sell) else f"{row.sell:g}", str(row.exit),
                       f"{row.trades:,.0f}", fmt_pct(row.net_win_rate),
                       fmt_num(row.net_profit_factor), fmt_num(row.sharpe_daily_annualised),
                       fmt_num(row.net_sharpe_daily_annualised), fmt_pct(row.net_max_drawdown))
        tables.append(bt)
    return tables


# ---------------------------------------------------------------- HTML

_CSS = """
body{background:#0f0f10;color:#e6e6e6;font-family:system-ui,sans-serif;margin:0 auto;
max-width:1240px;padding:1.5em 2em;line-height:1.45}
h1{margin:.2em 0}h2{border-bottom:1px solid #2a2a2d;padding-bottom:.2em;margin-top:1.8em}
h3{margin:1.2em 0 .4em}
.scroll{overflow-x:auto;max-width:100%;margin:.5em 0 1em}
table.numbers{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
table.numbers td,table.numbers th{padding:3px 10px;border-bottom:1px solid #2a2a2d;
text-align:right;white-space:nowrap}
table.numbers th{color:#b9b9c0;font-weight:600;background:#141416;position:sticky;top:0}
table.numbers td:first-child,table.numbers th:first-child{text-align:left}
table.numbers td.text{text-align:left;white-space:normal;min-width:14em}
.label{color:#ffd700;font-weight:bold}
.banner{padding:.6em 1em;border-radius:6px;margin:.5em 0;font-weight:600}
.synthetic{background:#5a1d1d;color:#ffd7d7;border:1px solid #ff6b6b}
.warn{background:#3d3413;color:#ffe9a8;border:1px solid #ffd700}
.boxes{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.box{border-radius:8px;padding:.8em 1em;background:#141416;border-left:6px solid #6b6b6b}
.box h3{margin:0 0 .3em;font-size:1.05em}.box p{margin:.2em 0;font-size:.93em}
.box .tag{font-size:.8em;font-weight:700;letter-spacing:.05em;text-transform:uppercase}
.evidence{border-left-color:#00ff88}.evidence .tag{color:#00ff88}
.no_evidence{border-left-color:#ff9f43}.no_evidence .tag{color:#ff9f43}
.insufficient_data{border-left-color:#6b6b6b}.insufficient_data .tag{color:#b9b9c0}
.note{color:#b9b9c0;font-style:italic}
img{max-width:100%;display:block;margin:.6em 0}
"""


def _table(frame: pd.DataFrame, formats: Mapping[str, Callable[[Any], str]],
           headers: Mapping[str, str], empty: str, text_columns: Sequence[str] = ()) -> str:
    """A formatted, horizontally scrollable table; ``empty`` (a sentence) instead of a table
    without rows."""
    if frame is None or frame.empty:
        return f"<p class='note'>{html.escape(empty)}</p>"
    columns = [c for c in headers if c in frame.columns]
    head = "".join(f"<th>{html.escape(headers[c])}</th>" for c in columns)
    def cell(column: str, value: Any) -> str:
        text = formats[column](value) if column in formats else (
            fmt_num(value) if isinstance(value, (int, float, np.number))
            and not isinstance(value, bool) else str(value))
        css = " class='text'" if column in text_columns else ""
        return f"<td{css}>{html.escape(text)}</td>"

    # Column by column (a report table has a handful of rows), then joined row-wise.
    cells = [[cell(c, v) for v in frame[c].tolist()] for c in columns]
    body = ["<tr>" + "".join(row) + "</tr>" for row in zip(*cells, strict=True)]
    return (f"<div class='scroll'><table class='numbers'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _img(fig: Figure, alt: str) -> str:
    fig.tight_layout()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{figure_png_base64(fig)}'/>"


def plot_oos_ic(oos: pd.DataFrame, ax: Axes) -> Axes:
    """Out-of-sample mean IC per variant and horizon with its bootstrap 95% interval."""
    names = list(dict.fromkeys(oos["variant"]))
    horizons = sorted(oos["horizon"].unique())
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        rows = oos[oos["variant"] == name].set_index("horizon").reindex(horizons)
        x = np.arange(len(horizons)) + (i - (len(names) - 1) / 2) * width
        mean = rows["ic_mean"].to_numpy(dtype=float)
        lo = mean - rows["ic_ci_lo"].to_numpy(dtype=float)
        hi = rows["ic_ci_hi"].to_numpy(dtype=float) - mean
        ok = np.isfinite(mean)
        if ok.any():
            ax.bar(x[ok], mean[ok], width=width, color=_color(i), label=name)
            err = np.vstack([np.nan_to_num(lo[ok]), np.nan_to_num(hi[ok])])
            ax.errorbar(x[ok], mean[ok], yerr=err, fmt="none", ecolor=COLORS["text"],
                        capsize=3, linewidth=0.9)
    ax.axhline(0.0, color=COLORS["neutral"], linewidth=0.8)
    ax.set_xticks(np.arange(len(horizons)), [f"{h}" for h in horizons])
    ax.set_xlabel("horizon (sessions)", color=COLORS["text"])
    ax.set_ylabel("mean IC", color=COLORS["text"])
    ax.set_title("OUT-OF-SAMPLE mean IC with block-bootstrap 95% interval",
                 color=COLORS["text"], loc="left", fontsize=10)
    _legend(ax)
    return ax


def _verdict_boxes(assessment: Assessment) -> str:
    boxes = [f"<div class='box {v.verdict}'><span class='tag'>"
             f"{html.escape(v.verdict.replace('_', ' '))}</span><h3>{html.escape(v.variant)}"
             f"</h3><p>{html.escape(v.reason)}</p></div>" for v in assessment.verdicts.values()]
    return "<div class='boxes'>" + "".join(boxes) + "</div>"


def _notes(assessment: Assessment, prefix: tuple[str, ...]) -> str:
    return "".join(f"<p class='note'>{html.escape(n)}</p>" for n in assessment.notes
                   if n.startswith(prefix))


def _placebo_sentences(assessment: Assessment) -> str:
    parts = []
    for v in assessment.verdicts.values():
        if v.horizon is None:
            continue
        row = assessment.oos[(assessment.oos["variant"] == v.variant)
                             & (assessment.oos["horizon"] == v.horizon)]
        if row.empty or not np.isfinite(row["placebo_percentile"].iloc[0]):
            continue
        pct = row["placebo_percentile"].iloc[0]
        draws = int(row["placebo_draws"].iloc[0])
        parts.append(f"{v.variant}: the out-of-sample IC at {v.horizon} session(s) sits at the "
                     f"{fmt_num(pct)}th percentile of what {draws} shuffled signals give here.")
    if not parts:
        if any(n.startswith("permutation placebo") for n in assessment.notes):
            return ""
        return "<p class='note'>No placebo percentile: no variant has an out-of-sample IC.</p>"
    return "<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in parts) + "</ul>"


def render_html(result: EvaluationResult, *, horizons: tuple[int, ...],
                grid: pd.DataFrame | None, curves: Mapping[str, pd.DataFrame],
                walk: pd.DataFrame | None, parameters: Mapping[str, Any],
                assessment: Assessment, context: Any = None,
                costs_text: str = "", panel: EvalPanel | None = None) -> str:
    """The self-contained HTML report (plots are inline base64 PNGs), in the order a reviewer
    asks: verdicts, data and coverage, timing and costs, out-of-sample, corrections,
    in-sample detail, parameters."""
    a = assessment
    synthetic = bool(getattr(context, "synthetic", False))
    parts = ["<!doctype html><html><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>darkpool signal evaluation</title><style>{_CSS}</style></head><body>",
             "<h1>Signal evaluation" + (f" ({SYNTHETIC_LABEL})" if synthetic else "") + "</h1>"]
    if synthetic:
        parts.append(f"<div class='banner synthetic'>{html.escape(SYNTHETIC_LABEL)}: this "
                     "database was generated, so no number below says anything about real "
                     "markets.</div>")
    owed = getattr(context, "owed", None)
    if owed:
        parts.append(f"<div class='banner warn'>{html.escape(owed)}</div>")
    missing = list(getattr(context, "missing", []) or [])
    if missing:
        parts.append(f"<div class='banner warn'>Not in daily_metrics (left out): "
                     f"{html.escape(', '.join(missing))}</div>")
    parts += [f"<p class='label'>{html.escape(result.label)}</p>",
              f"<p>{html.escape(PROXY_CAVEAT)}</p>",
              "<h2>Verdicts</h2>", _verdict_boxes(a),
              "<p class='note'>Rule: <b>evidence</b> needs an out-of-sample IC whose "
              "Holm-adjusted one-sided p-value (over every variant x horizon tested) is below "
              "5% and a positive out-of-sample net spread at that horizon; "
              "<b>insufficient data</b> when nothing can be tested out of sample or fewer than "
              "20 out-of-sample dates have an IC; otherwise <b>no evidence</b>.</p>"]

    # data and coverage
    parts.append("<h2>Data and coverage</h2>")
    if panel is not None:
        rows = np.flatnonzero(panel.in_window)
        per_date = np.zeros(len(rows))
        for values in panel.signals.values():
            per_date = np.maximum(per_date, np.isfinite(values[rows]).sum(axis=1))
        parts.append(
            f"<p>Window {panel.dates[rows[0]].date()} .. {panel.dates[rows[-1]].date()}: "
            f"{len(rows):,} sessions, {len(panel.symbols):,} names; names with a signal per "
            f"session: median {np.median(per_date):,.0f}, min {per_date.min():,.0f}, max "
            f"{per_date.max():,.0f}.</p>")
    parts.append(f"<p>{html.escape(a.mode_text)}.</p>")

    # timing and costs
    parts += ["<h2>Timing and costs</h2>",
              "<p>A signal of day t uses data up to the close of t (FINRA publishes short "
              "volume at about 18:00 ET); every trade enters at the next session's open. "
              "Forward return h = close[t+h] / open[t+1] - 1.</p>",
              f"<p>Costs: {html.escape(costs_text)}. Every backtest, spread and walk-forward "
              "number is shown gross and net; rankings and verdicts use net. A top-minus-bottom "
              "tranche pays a round trip on both legs.</p>"]

    # out of sample
    parts += ["<h2>Out-of-sample</h2>", f"<p>{html.escape(a.design.text)}.</p>"]
    oos_view = a.oos[a.oos["n_dates"] > 0] if "n_dates" in a.oos else a.oos
    if not oos_view.empty:
        oos_view = oos_view.assign(
            ic_ci=[fmt_ci(lo, hi) for lo, hi in zip(oos_view["ic_ci_lo"], oos_view["ic_ci_hi"],
                                                   strict=True)],
            spread_ci=[fmt_ci(lo, hi, fmt_bps) for lo, hi in zip(
                oos_view["spread_ci_lo_bps"], oos_view["spread_ci_hi_bps"], strict=True)])
    what = "time-series IC" if a.mode == "time_series" else "IC"
    parts.append(_table(oos_view, {
        "horizon": lambda v: f"{int(v)}", "n_dates": lambda v: f"{int(v):,}",
        "ic_p": fmt_p, "ic_p_adjusted": fmt_p,
        "placebo_percentile": lambda v: "n/a" if not np.isfinite(v) else f"{fmt_num(v)}th",
        "spread_net_bps_per_day": fmt_bps, "spread_gross_bps_per_day": fmt_bps}, {
        "variant": "variant", "horizon": "h", "n_dates": "OOS dates", "ic_mean": f"{what} mean",
        "ic_ci": "95% CI (block bootstrap)", "ic_se": "HAC s.e.", "ic_p": "p (one-sided)",
        "ic_p_adjusted": "p (Holm)", "placebo_percentile": "placebo pct",
        "spread_net_bps_per_day": "net spread/day", "spread_ci": "net 95% CI",
        "spread_gross_bps_per_day": "gross spread/day"},
        f"No out-of-sample numbers: {a.design.text}."))
    if not oos_view.empty and oos_view["ic_mean"].notna().any():
        fig, ax = _figure()
        plot_oos_ic(oos_view, ax)
        parts.append(_img(fig, "out-of-sample IC"))
    parts += ["<h3>Placebo</h3>", _placebo_sentences(a), _notes(a, ("permutation placebo",))]
    parts.append("<h3>Selected in-sample, reported out-of-sample (net)</h3>")
    parts.append(_table(a.selection, {"folds": lambda v: f"{int(v)}",
                                      "oos_days": lambda v: f"{int(v):,}",
                                      "oos_mean_bps_per_day": fmt_bps}, {
        "group": "choice among", "folds": "folds", "chosen": "chosen on training data",
        "is_sharpe_annualised": "in-sample Sharpe (net)",
        "oos_sharpe_annualised": "OOS Sharpe (net)", "oos_mean_bps_per_day": "OOS mean/day",
        "oos_days": "OOS days"},
        "No selection could be tested out of sample: " + a.design.text + ".",
        text_columns=("chosen",)))
    if walk is not None and not walk.empty:
        parts.append("<h3>Walk-forward event selection (variant and buy level, net objective)"
                     "</h3>")
        parts.append(_table(walk, {
            "train_start": lambda v: str(pd.Timestamp(v).date()),
            "train_end": lambda v: str(pd.Timestamp(v).date()),
            "test_start": lambda v: str(pd.Timestamp(v).date()),
            "test_end": lambda v: str(pd.Timestamp(v).date()),
            "buy": lambda v: f"{v:g}", "oos_events": lambda v: f"{v:,.0f}",
            **{c: (lambda v: fmt_bps(v * 1e4)) for c in walk.columns if "excess" in c},
            **{c: fmt_pct for c in walk.columns if "hit_rate" in c}}, {
            "train_start": "train from", "train_end": "train to", "test_start": "test from",
            "test_end": "test to", "variant": "chosen", "buy": "buy",
            "is_mean_excess": "IS excess gross", "is_mean_excess_net": "IS excess net",
            "oos_events": "OOS events", "oos_mean_excess": "OOS excess gross",
            "oos_mean_excess_net": "OOS excess net", "oos_hit_rate": "OOS hit rate",
            "oos_ic": "OOS IC"}, "no walk-forward windows"))
    parts.append(_notes(a, ("walk-forward",)))

    # corrections
    tested = int(a.oos["ic_p_adjusted"].notna().sum()) if "ic_p_adjusted" in a.oos else 0
    parts += ["<h2>Corrections for the number of tries</h2>",
              f"<p>This run evaluated <b>{a.n_trials:,} trials</b> (every backtest grid point: "
              "variant x thresholds x exit, plus one top-minus-bottom spread per variant x "
              "horizon; user formulas are variants). Per-variant p-values are Holm-adjusted "
              f"over the {tested} variant x horizon tests.</p><ul>"]
    if a.selected is not None:
        parts.append(f"<li>Best in-sample trial (net daily Sharpe): {html.escape(a.selected)}; "
                     f"deflated Sharpe ratio {fmt_num(a.selected_dsr)} (Bailey & López de "
                     "Prado 2014: the probability that its true Sharpe beats the best of "
                     f"{a.n_trials:,} skill-less trials).</li>")
    else:
        parts.append("<li>Deflated Sharpe: not computed (no trial with returns).</li>")
    parts.append(f"<li>Probability of backtest overfitting (CSCV, Bailey, Borwein, López de "
                 f"Prado & Zhu 2017): {fmt_num(a.pbo)}"
                 + (f" - {html.escape(a.pbo_reason)}" if a.pbo_reason else "")
                 + (" (per variant: " + ", ".join(f"{html.escape(k)} {fmt_num(v)}" for k, v in
                                                   a.pbo_by_variant.items()) + ")"
                    if a.pbo_by_variant else "") + ".</li>")
    spa_text = fmt_p(a.spa_pvalue)
    parts.append(f"<li>Hansen's SPA test of the best trial against always_long (arch, "
                 f"stationary bootstrap): p {'' if spa_text.startswith('<') else '= '}"
                 f"{spa_text}"
                 + (f" - {html.escape(a.spa_reason)}" if a.spa_reason else "") + ".</li></ul>")

    # in-sample detail
    parts += ["<h2>In-sample detail (whole window; chosen on the data it is shown on)</h2>"]
    if a.mode == "time_series":
        parts.append("<p class='note'>Cross-sectional IC, quantile and spread charts need "
                     "several names per date; this run is in time-series mode, so they are "
                     "replaced by the event study and the per-name correlation.</p>")
        parts.append("<h3>Event study around buy/sell signals</h3>")
        parts.append(_table(a.event_study, {
            "horizon": lambda v: f"{int(v)}", "events": lambda v: f"{int(v):,}",
            "mean_before": fmt_pct, "mean_after": fmt_pct, "hit_rate_after": fmt_pct}, {
            "variant": "variant", "signal": "signal", "horizon": "h", "events": "events",
            "mean_before": "return over the h sessions before",
            "mean_after": "forward return (next open to close t+h)",
            "hit_rate_after": "hit rate after"},
            "No buy or sell signal in the window (or no variant has thresholds)."))
        ticker = result.ticker_ic
        parts.append("<h3>Per-name rank correlation over the whole window</h3>")
        parts.append(_table(ticker, {"horizon": lambda v: f"{int(v)}",
                                     "n": lambda v: f"{int(v):,}"},
                            {"variant": "variant", "horizon": "h", "symbol": "name",
                             "ic": "Spearman", "n": "dates"},
                            "No name has 20 dates with both a signal and a return."))
    else:
        h0 = horizons[0]
        table = headline(result)
        table = table[table["mean"].notna()]
        parts.append(_table(table, {"horizon": lambda v: f"{int(v)}", "p_value": fmt_p,
                                    "n_dates": lambda v: f"{int(v):,}",
                                    "spread_demeaned": lambda v: fmt_bps(v * 1e4),
                                    "spread_net": lambda v: fmt_bps(v * 1e4)}, {
            "variant": "variant", "horizon": "h", "mean": "IC mean", "t_stat": "t",
            "t_stat_nonoverlap": "t (non-overlap)", "p_value": "p", "ir": "IR",
            "n_dates": "dates", "spread_demeaned": "top-bottom (demeaned, per tranche)",
            "spread_net": "top-bottom net (per tranche)"},
            "No date has enough names for a cross-sectional IC."))
        for draw, alt in ((lambda ax: plot_ic_over_time(result.ic_by_date, h0, ax), "IC"),
                          (lambda ax: plot_quantile_bars(result.quantiles, h0, ax), "quantiles"),
                          (lambda ax: plot_cumulative_spread(result.spread_by_date, h0, ax),
                           "spread")):
            fig, ax = _figure()
            draw(ax)
            parts.append(_img(fig, alt))
    events = result.metrics[result.metrics["section"] == "events"].pivot_table(
        index=["variant", "horizon"], columns="metric", values="value", sort=False).reset_index()
    parts.append("<h3>Threshold events (always_long = every name every day)</h3>")
    if "count" in events:
        silent = sorted(set(events.loc[events["count"] == 0, "variant"]))
        events = events[events["count"] > 0]
        if silent:
            parts.append(f"<p class='note'>No events in the window for: "
                         f"{html.escape(', '.join(silent))}.</p>")
    parts.append(_table(events, {"horizon": lambda v: f"{int(v)}",
                                 "count": lambda v: f"{v:,.0f}", "hit_rate": fmt_pct,
                                 "mean": fmt_pct, "median": fmt_pct, "mean_excess": fmt_pct}, {
        "variant": "events", "horizon": "h", "count": "count", "hit_rate": "hit rate",
        "mean": "mean", "median": "median", "mean_excess": "mean excess",
        "per_month": "per month"}, "No threshold events in the window."))
    if grid is not None and not grid.empty:
        fig, ax = _figure()
        plot_equity(curves, ax)
        parts += ["<h3>Event backtests (top 25 by net daily Sharpe)</h3>",
                  _img(fig, "equity"),
                  _table(grid.sort_values("net_sharpe_daily_annualised",
                                          ascending=False).head(25), {
                      "buy": lambda v: f"{v:g}",
                      "sell": lambda v: "" if v is None or pd.isna(v) else f"{v:g}",
                      "trades": lambda v: f"{v:,.0f}", "net_win_rate": fmt_pct,
                      "mean_trade_return": fmt_pct, "net_mean_trade_return": fmt_pct,
                      "net_total_return": fmt_pct, "net_max_drawdown": fmt_pct,
                      "exposure": fmt_pct}, {
                      "variant": "variant", "buy": "buy", "sell": "sell", "exit": "exit",
                      "trades": "trades", "net_win_rate": "win (net)",
                      "mean_trade_return": "mean trade gross",
                      "net_mean_trade_return": "mean trade net",
                      "net_profit_factor": "PF (net)",
                      "sharpe_daily_annualised": "Sharpe gross",
                      "net_sharpe_daily_annualised": "Sharpe net",
                      "net_total_return": "total net", "net_max_drawdown": "max DD (net)",
                      "exposure": "exposure"}, "No backtest trades.")]
    parts.append(_notes(a, ("event backtests",)))
    params = pd.DataFrame({"parameter": list(parameters),
                           "value": [str(v) for v in parameters.values()]})
    parts += ["<h2>Parameters</h2>",
              _table(params, {}, {"parameter": "parameter", "value": "value"}, "none",
                     text_columns=("value",)), "</body></html>"]
    return "\n".join(p for p in parts if p)


# ---------------------------------------------------------------- summary.json


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def build_summary(assessment: Assessment, *, cost_bps: float, cost_model: str,
                  synthetic: bool = False, label: str = "") -> dict[str, Any]:
    """The machine-readable summary (``summary.json``)."""
    a = assessment
    out: dict[str, Any] = {
        "n_trials": int(a.n_trials),
        "cost_bps_per_side": float(cost_bps),
        "cost_model": cost_model,
        "mode": a.mode,
        "pbo": _clean(a.pbo),
        "spa_pvalue": _clean(a.spa_pvalue),
        "synthetic": bool(synthetic),
        "label": label,
    }
    if out["pbo"] is None:
        out["pbo_reason"] = a.pbo_reason or "PBO could not be computed"
    if out["spa_pvalue"] is None:
        out["spa_reason"] = a.spa_reason or "the SPA test could not be computed"
    if synthetic:
        out["synthetic_label"] = SYNTHETIC_LABEL
    out["oos_design"] = {"kind": a.design.kind, "text": a.design.text}
    out["variants"] = {
        v.variant: {
            "verdict": v.verdict, "reason": v.reason,
            "horizon": v.horizon,
            "oos_ic_mean": _clean(v.oos_ic_mean),
            "oos_ic_ci95": ([_clean(v.oos_ic_ci95[0]), _clean(v.oos_ic_ci95[1])]
                            if v.oos_ic_ci95 is not None else None),
            "oos_ic_pvalue_adjusted": _clean(v.oos_ic_pvalue_adjusted),
            "oos_net_spread_bps_per_day": _clean(v.oos_net_spread_bps_per_day),
            "deflated_sharpe": _clean(v.deflated_sharpe),
        } for v in a.verdicts.values()}
    return out


def write_outputs(out_dir: Path, result: EvaluationResult, panel: EvalPanel, *,
                  horizons: tuple[int, ...], quantiles: int, grid: pd.DataFrame | None,
                  curves: Mapping[str, pd.DataFrame], trades: pd.DataFrame | None,
                  walk: pd.DataFrame | None, parameters: Mapping[str, Any],
                  assessment: Assessment, summary: Mapping[str, Any], context: Any = None,
                  costs_text: str = "") -> dict[str, Path]:
    """Write every output file into ``out_dir``; returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    numbers = all_numbers(result, grid, walk, assessment)
    paths["numbers_csv"] = out_dir / "evaluation_numbers.csv"
    numbers.to_csv(paths["numbers_csv"], index=False)
    paths["numbers_parquet"] = out_dir / "evaluation_numbers.parquet"
    numbers.to_parquet(paths["numbers_parquet"], index=False)
    for name, frame in (("ic_by_date", result.ic_by_date), ("quantiles", result.quantiles),
                        ("ticker_ic", result.ticker_ic), ("trades", trades),
                        ("out_of_sample", assessment.oos), ("trials", assessment.trials)):
        if frame is not None:
            paths[name] = out_dir / f"{name}.parquet"
            frame.assign(label=result.label).to_parquet(paths[name], index=False)
    for variant in panel.signals:
        path = out_dir / f"alphalens_factor_{variant}.parquet"
        alphalens_factor_data(panel, variant, horizons, quantiles).to_parquet(path)
        paths[f"alphalens_{variant}"] = path
    paths["summary"] = out_dir / "summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n",
                                encoding="utf-8")
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(render_html(result, horizons=horizons, grid=grid, curves=curves,
                                         walk=walk, parameters=parameters,
                                         assessment=assessment, context=context,
                                         costs_text=costs_text, panel=panel), encoding="utf-8")
    return paths
