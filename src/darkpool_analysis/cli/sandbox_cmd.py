"""``darkpool sandbox TICKER``: the seed's Accumulation Signal Sandbox chart from the database.

Heavy imports (pandas, matplotlib, the sandbox library) happen inside the command so other
commands and ``--help`` stay fast.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from darkpool_analysis.cli.app import app, config, console, handle_errors, parse_date

if TYPE_CHECKING:
    import pandas as pd

    from darkpool_analysis.config import Settings
    from darkpool_analysis.sandbox_lab import LabPlan

#: Data gaps listed by date in the summary (the rest are counted).
SHOWN_GAPS = 10


class DotModeChoice(StrEnum):
    """Which variants' >=70 / <=30 dots the score panels show."""

    current = "current"
    option_a = "option_a"
    option_b = "option_b"
    all = "all"


def _check_suffix(path: Path | None, allowed: tuple[str, ...], option: str) -> None:
    if path is not None and path.suffix.lower() not in allowed:
        raise typer.BadParameter(f"{path} must end in {', '.join(allowed)}", param_hint=option)


@app.command("sandbox")
@handle_errors
def sandbox(
    ticker: Annotated[str, typer.Argument(help="Ticker in any spelling (BRK.B, BRK/B, BRK-B).")],
    start: Annotated[str | None, typer.Option(
        "--start", help="First date (default: 60 sessions with data up to --end).")] = None,
    end: Annotated[str | None, typer.Option(
        "--end", help="Last date (default: the ticker's last date with data).")] = None,
    dot_mode: Annotated[DotModeChoice, typer.Option(
        "--dot-mode", help="Variant(s) whose >=70 / <=30 dots are drawn.")
    ] = DotModeChoice.current,
    blend_short_weight: Annotated[float, typer.Option(
        "--blend-short-weight", help="Option B weight of short_buy_sell_ratio_z.")] = 0.6,
    blend_flow_weight: Annotated[float, typer.Option(
        "--blend-flow-weight", help="Option B weight of vw_flow_z.")] = 0.4,
    seed_exact: Annotated[bool, typer.Option(
        "--seed-exact", help="Exactly the seed notebook's numbers: z windows over the shown "
        "range only (no warm-up).")] = False,
    no_warmup: Annotated[bool, typer.Option(
        "--no-warmup", help="Do not read short_z_window earlier sessions for the rolling "
        "z-scores.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Chart file (.png, .svg or .pdf); default "
        "<output_dir>/<TICKER>_sandbox_<start>_<end>.png.")] = None,
    csv: Annotated[Path | None, typer.Option(
        "--csv", help="Also write the sandbox frame as CSV.")] = None,
    experimental: Annotated[bool, typer.Option(
        "--experimental", help="Also write the imbalance x log1p(B + S) figure "
        "(<out stem>_experimental).")] = False,
    variants: Annotated[str | None, typer.Option(
        "--variants", help="Comma-separated signal variants (registry names or --formula "
        "names), one panel each in a second figure <out stem>_lab.")] = None,
    formula: Annotated[list[str] | None, typer.Option(
        "--formula", help="name=<expression> (as in `darkpool evaluate`); repeatable; "
        "drawn as a variant panel.")] = None,
    formula_file: Annotated[list[Path] | None, typer.Option(
        "--formula-file", help="TOML file with a [formulas] table; repeatable.")] = None,
    panels: Annotated[str | None, typer.Option(
        "--panels", help="Comma-separated extra panels: price, heatmap, hist, bands, otc, options; "
        "prefix with + to append below the seed's 7 panels (e.g. +otc), otherwise they go "
        "into <out stem>_lab.")] = None,
    hist_signal: Annotated[str | None, typer.Option(
        "--hist-signal", help="Signal of the hist panel (default: the first z-scale variant, "
        "else finra_buy_volume_z).")] = None,
    bands_signal: Annotated[str | None, typer.Option(
        "--bands-signal", help="Signal of the bands panel (default: as --hist-signal).")
    ] = None,
    bands_window: Annotated[int, typer.Option(
        "--bands-window", min=2, max=2520,
        help="Past sessions of the bands panel's rolling median/MAD.")] = 20,
) -> None:
    """Chart the seed's three accumulation-score variants for one ticker (read-only).

    With --variants/--formula/--panels also chart any signal variants and extra panels
    (consensus price, heatmap, histogram, median/MAD bands, weekly OTC) in <out stem>_lab.

    FINRA "buy" volume is FINRA short-sale volume: a proxy for dealer-filled buying.
    """
    from darkpool_analysis import sandbox as sandbox_lib
    from darkpool_analysis import sandbox_lab
    from darkpool_analysis.views import FIGURE_SUFFIXES, sandbox_chart, save_figure

    _check_suffix(out, FIGURE_SUFFIXES, "--out")
    _check_suffix(csv, (".csv",), "--csv")
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    if first is not None and last is not None and first > last:
        raise typer.BadParameter(f"--start {first} is after --end {last}", param_hint="--start")

    cfg = config()
    lab_plan = sandbox_lab.plan_lab(variants, formula or [], formula_file or [], panels,
                                    hist_signal, bands_signal, bands_window)
    symbol = sandbox_lib.normalise_ticker(ticker)
    first, last = sandbox_lib.default_range(symbol, first, last, settings=cfg)
    warmup = not (seed_exact or no_warmup)
    frame = sandbox_lib.load(symbol, first, last, warmup=warmup, settings=cfg,
                             blend_short_weight=blend_short_weight,
                             blend_flow_weight=blend_flow_weight)

    chart_path = out or cfg.output_dir / f"{symbol}_sandbox_{first}_{last}.png"
    if lab_plan is None:
        fig = sandbox_chart.plot(frame, dot_mode.value, blend_short_weight, blend_flow_weight)
        written = [save_figure(fig, chart_path)]
    else:
        written = _lab_figures(lab_plan, frame, chart_path, dot_mode=dot_mode.value,
                               blend_short_weight=blend_short_weight,
                               blend_flow_weight=blend_flow_weight, settings=cfg)
    if experimental:
        exp_path = chart_path.with_name(f"{chart_path.stem}_experimental{chart_path.suffix}")
        written.append(save_figure(sandbox_chart.plot_experimental(frame), exp_path))
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        frame.assign(date=frame["date"].dt.date).to_csv(csv, index=False)
        written.append(csv)

    _print_summary(frame, symbol, first, last, warmup)
    for path in written:
        console.print(f"[green]wrote[/] {path}", highlight=False, soft_wrap=True)


def _lab_figures(plan: LabPlan, frame: pd.DataFrame, chart_path: Path, *, dot_mode: str,
                 blend_short_weight: float, blend_flow_weight: float,
                 settings: Settings) -> list[Path]:
    """The seed chart (with ``+`` panels appended) and, when asked, the lab figure
    ``<stem>_lab<suffix>``; returns the paths written."""
    from darkpool_analysis import sandbox_lab
    from darkpool_analysis.views import lab_chart, sandbox_chart, save_figure

    dates = frame["date"]
    params = sandbox_lab.variant_params(plan.to_compute, settings,
                                        blend_short_weight=blend_short_weight,
                                        blend_flow_weight=blend_flow_weight)
    lab = sandbox_lab.load_lab(str(frame["symbol"].iloc[0]), dates.iloc[0], dates.iloc[-1],
                               plan.to_compute, formulas=plan.formulas, params=params,
                               bands_signal=plan.bands_signal, bands_window=plan.bands_window,
                               settings=settings)
    if plan.panels.appended:
        seed_fig = lab_chart.plot_seed_with_panels(
            frame, lab, plan.panels.appended, dot_mode=dot_mode,
            blend_short_weight=blend_short_weight, blend_flow_weight=blend_flow_weight,
            compare=plan.compare, hist_signal=plan.hist_signal)
    else:
        seed_fig = sandbox_chart.plot(frame, dot_mode, blend_short_weight, blend_flow_weight)
    written = [save_figure(seed_fig, chart_path)]
    if plan.lab_figure:
        lab_fig = lab_chart.plot_lab(lab, plan.variants, plan.panels.lab, compare=plan.compare,
                                     hist_signal=plan.hist_signal)
        lab_path = chart_path.with_name(f"{chart_path.stem}_lab{chart_path.suffix}")
        written.append(save_figure(lab_fig, lab_path))
    return written


def _print_summary(frame: pd.DataFrame, symbol: str, first: dt.date, last: dt.date,
                   warmup: bool) -> None:
    """Rows, days per zone and variant, and sessions without short data."""
    from darkpool_analysis import sandbox as sandbox_lib

    zones = sandbox_lib.zone_counts(frame)
    gaps = sandbox_lib.data_gaps(frame, first, last)
    mode = ("with warm-up (full z windows)" if warmup
            else "seed-exact z windows (shown range only)")
    console.print(f"[bold]{symbol}[/] {first} .. {last}: {len(frame)} rows, {mode}",
                  highlight=False)
    table = Table(title="Days per zone", title_justify="left", header_style="bold cyan")
    table.add_column("variant")
    for column in ("accumulation >=70", "distribution <=30", "between", "no score"):
        table.add_column(column, justify="right")
    for variant, counts in zones.to_dict("index").items():
        table.add_row(str(variant), *(str(int(counts[c])) for c in zones.columns))
    console.print(table)
    if gaps:
        shown = ", ".join(day.isoformat() for day in gaps[:SHOWN_GAPS])
        more = f" (+{len(gaps) - SHOWN_GAPS} more)" if len(gaps) > SHOWN_GAPS else ""
        console.print(f"[yellow]data gaps[/] {len(gaps)} session(s) without short data: "
                      f"{shown}{more}", highlight=False)
    else:
        console.print("[green]no data gaps[/]: every session in range has short data")
