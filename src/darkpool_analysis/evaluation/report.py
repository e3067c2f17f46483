"""Evaluation outputs: tidy numbers (CSV + Parquet), a self-contained HTML report with plots,
an alphalens-format factor export, and a Rich summary table.

Every output carries the OTC-alignment label (look-ahead mode is named as such) and the
caveat that FINRA short volume is a buying *proxy*.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from rich.table import Table

from darkpool_analysis.evaluation.ic import EvaluationResult, quantile_labels
from darkpool_analysis.evaluation.returns import EvalPanel, forward_returns
from darkpool_analysis.views.style import COLORS, apply_axis_style

PROXY_CAVEAT = ("FINRA short volume is a proxy for dealer-filled buying, not observed buying, "
                "and not short interest.")
_LINE_COLORS = ("green", "cyan", "yellow", "purple", "orange", "blue", "red", "white")


def _color(i: int) -> str:
    return COLORS[_LINE_COLORS[i % len(_LINE_COLORS)]]


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
    ax.set_title(f"IC ({horizon}-session forward return), {window}-session rolling mean",
                 color=COLORS["text"], loc="left", fontsize=10)
    ax.legend(fontsize=7, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"])
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
    ax.set_title(f"Demeaned {horizon}-session return by quantile", color=COLORS["text"],
                 loc="left", fontsize=10)
    if names:
        ax.legend(fontsize=7, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"])
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
    ax.set_title(f"Cumulative top-minus-bottom spread ({horizon}-session steps)",
                 color=COLORS["text"], loc="left", fontsize=10)
    ax.legend(fontsize=7, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"])
    return ax


def plot_equity(curves: Mapping[str, pd.DataFrame], ax: Axes) -> Axes:
    """Equity curves (daily mark-to-market) of backtests, one line per label."""
    for i, (name, daily) in enumerate(curves.items()):
        ax.plot(daily["date"], daily["equity"], label=name, color=_color(i), linewidth=1.2)
    ax.axhline(1.0, color=COLORS["neutral"], linewidth=0.8)
    ax.set_title("Backtest equity (equal weight, daily marks)", color=COLORS["text"],
                 loc="left", fontsize=10)
    if curves:
        ax.legend(fontsize=7, facecolor=COLORS["panel_bg"], labelcolor=COLORS["text"])
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
                walk: pd.DataFrame | None) -> pd.DataFrame:
    """Every number in one tidy frame: section, variant, horizon, metric, value, label."""
    frames = [result.metrics]
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
    """One row per (variant, horizon): IC mean / t / p, quantile spread, placebo next to it."""
    ic = result.metrics[result.metrics["section"] == "ic"].pivot_table(
        index=["variant", "horizon"], columns="metric", values="value", sort=False)
    spread = result.metrics[(result.metrics["section"] == "quantiles")
                            & (result.metrics["metric"] == "top_minus_bottom_demeaned")]
    spread = spread.set_index(["variant", "horizon"])["value"].rename("spread_demeaned")
    table = ic.join(spread)
    columns = ["mean", "t_stat", "t_stat_nonoverlap", "p_value", "ir", "n_dates",
               "spread_demeaned"]
    return table.reindex(columns=columns).reset_index()


def rich_summary(result: EvaluationResult, grid: pd.DataFrame | None = None) -> list[Table]:
    """Rich tables for the terminal: headline IC/spread, and the best backtests."""
    table = Table(title=f"Signal evaluation - {result.label}", caption=PROXY_CAVEAT)
    for column in ("variant", "h", "IC mean", "t", "t (non-overlap)", "p", "IR",
                   "top-bottom (demeaned)"):
        table.add_column(column, justify="left" if column == "variant" else "right",
                         overflow="fold", min_width=12 if column == "variant" else None)
    for row in headline(result).itertuples(index=False):
        table.add_row(str(row.variant), f"{int(row.horizon)}", f"{row.mean:+.4f}",
                      f"{row.t_stat:+.2f}", f"{row.t_stat_nonoverlap:+.2f}",
                      f"{row.p_value:.3f}", f"{row.ir:+.3f}", f"{row.spread_demeaned:+.4%}")
    tables = [table]
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
                       f"{row.trades:.0f}", f"{row.net_win_rate:.1%}",
                       f"{row.net_profit_factor:.2f}", f"{row.sharpe_daily_annualised:.2f}",
                       f"{row.net_sharpe_daily_annualised:.2f}", f"{row.net_max_drawdown:.1%}")
        tables.append(bt)
    return tables


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0,
                         classes="numbers", na_rep="")


def render_html(result: EvaluationResult, *, horizons: tuple[int, ...],
                grid: pd.DataFrame | None, curves: Mapping[str, pd.DataFrame],
                walk: pd.DataFrame | None, parameters: Mapping[str, Any]) -> str:
    """The self-contained HTML report (plots are inline base64 PNGs)."""
    h0 = horizons[0]
    images = []
    for draw in (lambda ax: plot_ic_over_time(result.ic_by_date, h0, ax),
                 lambda ax: plot_quantile_bars(result.quantiles, h0, ax),
                 lambda ax: plot_cumulative_spread(result.spread_by_date, h0, ax),
                 lambda ax: plot_equity(curves, ax)):
        fig, ax = _figure()
        draw(ax)
        fig.tight_layout()
        images.append(figure_png_base64(fig))
    events = result.metrics[result.metrics["section"] == "events"].pivot_table(
        index=["variant", "horizon"], columns="metric", values="value", sort=False).reset_index()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>darkpool signal evaluation"
        "</title><style>body{background:#0f0f10;color:#e6e6e6;font-family:sans-serif;"
        "margin:2em}table.numbers{border-collapse:collapse;font-size:12px}"
        "table.numbers td,table.numbers th{padding:2px 8px;border-bottom:1px solid #2a2a2d}"
        ".label{color:#ffd700;font-weight:bold}img{max-width:100%}</style></head><body>",
        "<h1>Signal evaluation</h1>",
        f"<p class='label'>{html.escape(result.label)}</p>",
        f"<p>{html.escape(PROXY_CAVEAT)} Forward return h = close[t+h] / open[t+1] - 1: the "
        "signal of day t is traded at the next session's open.</p>",
        "<h2>IC and quantile spread</h2>", _html_table(headline(result)),
        *(f"<img alt='plot' src='data:image/png;base64,{img}'/>" for img in images[:3]),
        "<h2>Threshold events (always_long = every name every day)</h2>", _html_table(events),
    ]
    if grid is not None and not grid.empty:
        parts += ["<h2>Event backtests</h2>",
                  f"<img alt='equity' src='data:image/png;base64,{images[3]}'/>",
                  _html_table(grid.sort_values("net_sharpe_daily_annualised", ascending=False))]
    if walk is not None and not walk.empty:
        parts += ["<h2>Walk-forward: in-sample vs out-of-sample</h2>", _html_table(walk)]
    params = pd.DataFrame({"parameter": list(parameters),
                           "value": [str(v) for v in parameters.values()]})
    parts += ["<h2>Parameters</h2>", _html_table(params), "</body></html>"]
    return "\n".join(parts)


def write_outputs(out_dir: Path, result: EvaluationResult, panel: EvalPanel, *,
                  horizons: tuple[int, ...], quantiles: int, grid: pd.DataFrame | None,
                  curves: Mapping[str, pd.DataFrame], trades: pd.DataFrame | None,
                  walk: pd.DataFrame | None, parameters: Mapping[str, Any]) -> dict[str, Path]:
    """Write every output file into ``out_dir``; returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    numbers = all_numbers(result, grid, walk)
    paths["numbers_csv"] = out_dir / "evaluation_numbers.csv"
    numbers.to_csv(paths["numbers_csv"], index=False)
    paths["numbers_parquet"] = out_dir / "evaluation_numbers.parquet"
    numbers.to_parquet(paths["numbers_parquet"], index=False)
    for name, frame in (("ic_by_date", result.ic_by_date), ("quantiles", result.quantiles),
                        ("ticker_ic", result.ticker_ic), ("trades", trades)):
        if frame is not None:
            paths[name] = out_dir / f"{name}.parquet"
            frame.assign(label=result.label).to_parquet(paths[name], index=False)
    for variant in panel.signals:
        path = out_dir / f"alphalens_factor_{variant}.parquet"
        alphalens_factor_data(panel, variant, horizons, quantiles).to_parquet(path)
        paths[f"alphalens_{variant}"] = path
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(render_html(result, horizons=horizons, grid=grid, curves=curves,
                                         walk=walk, parameters=parameters), encoding="utf-8")
    return paths
