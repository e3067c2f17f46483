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
    own = "own"


class PriceScale(StrEnum):
    """Scale of the price panel (``--panels price``)."""

    linear = "linear"
    log = "log"


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
        "--dot-mode", help="Variant(s) whose >=70 / <=30 dots are drawn; own = each score "
        "panel its own variant's.")
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
        "<output_dir>/<TICKER>_sandbox_<start>_<end>[_<options>].png, the non-default "
        "options named so different charts never share a file (an existing file is "
        "reported as overwritten).")] = None,
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
    price_scale: Annotated[PriceScale, typer.Option(
        "--price-scale", help="Price panel axis (needs --panels price): linear or log (equal "
        "heights = equal percentage moves).")] = PriceScale.linear,
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
    if price_scale is PriceScale.log and (
            lab_plan is None or "price" not in (*lab_plan.panels.lab, *lab_plan.panels.appended)):
        raise typer.BadParameter("--price-scale log needs a price panel (--panels price or "
                                 "+price)", param_hint="--price-scale")
    symbol = sandbox_lib.normalise_ticker(ticker)
    first, last = sandbox_lib.default_range(symbol, first, last, settings=cfg)
    warmup = not (seed_exact or no_warmup)
    frame = sandbox_lib.load(symbol, first, last, warmup=warmup, settings=cfg,
                             blend_short_weight=blend_short_weight,
                             blend_flow_weight=blend_flow_weight)

    tag = option_tag(dot_mode=dot_mode.value, seed_exact=seed_exact, no_warmup=no_warmup,
                     blend=(blend_short_weight, blend_flow_weight), variants=variants,
                     formulas=[*(formula or []), *map(str, formula_file or [])],
                     panels=panels, price_scale=price_scale.value)
    chart_path = out or cfg.output_dir / f"{symbol}_sandbox_{first}_{last}{tag}.png"
    existed = {path for path in (chart_path, _sibling(chart_path, "lab"),
                                 _sibling(chart_path, "experimental"), csv)
               if path is not None and path.exists()}
    if lab_plan is None:
        fig = sandbox_chart.plot(frame, dot_mode.value, blend_short_weight, blend_flow_weight)
        written = [save_figure(fig, chart_path)]
    else:
        written = _lab_figures(lab_plan, frame, chart_path, dot_mode=dot_mode.value,
                               blend_short_weight=blend_short_weight,
                               blend_flow_weight=blend_flow_weight, settings=cfg,
                               price_scale=price_scale.value)
    if experimental:
        exp_path = _sibling(chart_path, "experimental")
        written.append(save_figure(sandbox_chart.plot_experimental(frame), exp_path))
    if csv is not None:
        written.append(_write_csv(frame, csv))

    _print_summary(frame, symbol, first, last, warmup)
    for path in written:
        verb = "[yellow]overwrote[/]" if path in existed else "[green]wrote[/]"
        console.print(f"{verb} {path}", highlight=False, soft_wrap=True)


#: Longest option tag spelled out in a default file name; longer ones end in a short hash.
MAX_TAG = 48


def option_tag(*, dot_mode: str, seed_exact: bool, no_warmup: bool,
               blend: tuple[float, float], variants: str | None, formulas: list[str],
               panels: str | None, price_scale: str) -> str:
    """The part of the default file name that tells non-default options apart
    (``_dots-all_seed-exact_blend-0.3-0.7``); empty with every option at its default, so
    different options never write the same default file."""
    parts = []
    if dot_mode != DotModeChoice.current.value:
        parts.append(f"dots-{dot_mode}")
    if seed_exact:
        parts.append("seed-exact")
    elif no_warmup:
        parts.append("no-warmup")
    if blend != (0.6, 0.4):
        parts.append(f"blend-{blend[0]:g}-{blend[1]:g}")
    if variants:
        parts.append("v-" + "-".join(v.strip() for v in variants.split(",") if v.strip()))
    if panels:
        parts.append("p-" + "-".join(p.strip().replace("+", "plus")
                                     for p in panels.split(",") if p.strip()))
    if price_scale != PriceScale.linear.value:
        parts.append(f"price-{price_scale}")
    if formulas:
        import hashlib

        digest = hashlib.sha256("\n".join(formulas).encode()).hexdigest()[:8]
        parts.append(f"f-{digest}")
    tag = "_".join(parts)
    if len(tag) > MAX_TAG:
        import hashlib

        tag = tag[:MAX_TAG - 9] + "-" + hashlib.sha256(tag.encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-._" else "-" for c in tag)
    return f"_{safe}" if safe else ""


def _sibling(chart_path: Path, name: str) -> Path:
    """``<stem>_<name><suffix>`` next to the chart (the lab and experimental figures)."""
    return chart_path.with_name(f"{chart_path.stem}_{name}{chart_path.suffix}")


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The sandbox frame as CSV; a ``# SYNTHETIC ...`` first line for synthetic data (read it
    back with ``pandas.read_csv(path, comment="#")``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    label = frame.attrs.get("synthetic_label")
    with path.open("w", encoding="utf-8", newline="") as handle:
        if label:
            handle.write(f"# {label}\n")
        frame.assign(date=frame["date"].dt.date).to_csv(handle, index=False)
    return path


def _lab_figures(plan: LabPlan, frame: pd.DataFrame, chart_path: Path, *, dot_mode: str,
                 blend_short_weight: float, blend_flow_weight: float,
                 settings: Settings, price_scale: str = "linear") -> list[Path]:
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
            compare=plan.compare, hist_signal=plan.hist_signal, price_scale=price_scale)
    else:
        seed_fig = sandbox_chart.plot(frame, dot_mode, blend_short_weight, blend_flow_weight)
    written = [save_figure(seed_fig, chart_path)]
    if plan.lab_figure:
        lab_fig = lab_chart.plot_lab(lab, plan.variants, plan.panels.lab, compare=plan.compare,
                                     hist_signal=plan.hist_signal, price_scale=price_scale)
        lab_path = _sibling(chart_path, "lab")
        written.append(save_figure(lab_fig, lab_path))
    return written


def warmup_sentence(frame: pd.DataFrame, warmup: bool) -> str:
    """How the rolling z windows were filled: the warm-up sessions actually found (not only
    asked for), and how many shown sessions still have a short window."""
    from darkpool_analysis import sandbox as sandbox_lib

    if not warmup:
        return "seed-exact z windows (shown range only)"
    found, asked = int(frame.attrs["warmup_rows"]), int(frame.attrs["warmup_asked"])
    short = sandbox_lib.short_window_days(frame)
    if found == 0:
        text = f"with warm-up asked ({asked:,} sessions) but no earlier data in the database"
    elif found < asked:
        text = f"with warm-up of {found:,} of {asked:,} sessions (no earlier data)"
    else:
        text = f"with warm-up of {found:,} earlier sessions"
    return text + (f": the first {short:,} shown session(s) have short z windows" if short
                   else " (full z windows)")


#: Per chart source: how to say it is absent from the whole range, and what that means.
ABSENT_SOURCE: dict[str, tuple[str, str]] = {
    "short data": ("no short data", "`darkpool ingest finra-short` adds it"),
    "a price bar": ("no price bars", "return_z counts as 0 in every score; "
                    "`darkpool ingest prices` adds them"),
    "lit trade direction": ("no lit trade direction", "the lit terms count as 0; "
                            "`darkpool ingest trades` adds them"),
}


def _gap_lines(frame: pd.DataFrame, first: dt.date, last: dt.date) -> list[str]:
    """One line per source the chart uses that misses sessions (a source missing from the
    whole range is one line saying so); ``no data gaps`` when every source is complete."""
    from darkpool_analysis import sandbox as sandbox_lib

    sessions = len(trading_sessions(first, last))
    lines = []
    complete = []
    for source, gaps in sandbox_lib.source_gaps(frame, first, last).items():
        if not gaps:
            complete.append(source)
        elif len(gaps) == sessions:
            absent, meaning = ABSENT_SOURCE[source]
            style = "dim" if source == "lit trade direction" else "yellow"
            lines.append(f"[{style}]{absent} in range[/{style}]: {meaning}")
        else:
            shown = ", ".join(day.isoformat() for day in gaps[:SHOWN_GAPS])
            more = f" (+{len(gaps) - SHOWN_GAPS:,} more)" if len(gaps) > SHOWN_GAPS else ""
            lines.append(f"[yellow]data gaps[/] {len(gaps):,} session(s) without {source}: "
                         f"{shown}{more}")
    if not any(line.startswith("[yellow]") for line in lines):
        lines.insert(0, f"[green]no data gaps[/]: every session in range has "
                        f"{', '.join(complete)}")
    return lines


def trading_sessions(first: dt.date, last: dt.date) -> list[dt.date]:
    """XNYS sessions in ``[first, last]`` capped at today (what the gap check counts)."""
    from darkpool_analysis import trading_calendar

    return trading_calendar.sessions_between(first, min(last, dt.date.today()))


def _print_summary(frame: pd.DataFrame, symbol: str, first: dt.date, last: dt.date,
                   warmup: bool) -> None:
    """Rows and warm-up, days per zone and variant, and sessions each source misses."""
    from darkpool_analysis import sandbox as sandbox_lib

    zones = sandbox_lib.zone_counts(frame)
    console.print(f"[bold]{symbol}[/] {first} .. {last}: {len(frame):,} rows, "
                  f"{warmup_sentence(frame, warmup)}", highlight=False)
    table = Table(title="Days per zone", title_justify="left", header_style="bold cyan")
    table.add_column("variant")
    for column in ("accumulation >=70", "distribution <=30", "between", "no score"):
        table.add_column(column, justify="right")
    for variant, counts in zones.to_dict("index").items():
        table.add_row(str(variant), *(f"{int(counts[c]):,}" for c in zones.columns))
    console.print(table)
    for line in _gap_lines(frame, first, last):
        console.print(line, highlight=False)
