"""``darkpool index|scan|table|overlay|universes``: the market view (read-only).

Thin wrappers over :mod:`darkpool_analysis.market`; heavy imports (pandas, DuckDB,
matplotlib) happen inside the commands so ``darkpool --help`` and a terminal ``scan`` stay fast
(``scan`` never imports matplotlib). Every output made from a synthetic database says so: the
terminal titles, a ``# SYNTHETIC ...`` first line in CSV files, a banner in Markdown and HTML,
the chart titles.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from darkpool_analysis.cli.app import (
    app,
    config,
    console,
    err_console,
    handle_errors,
    parse_date,
    required_date,
)

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd

    from darkpool_analysis.config import Settings

#: Sessions of the dark index listed in the terminal.
SHOWN_SESSIONS = 10


class ScanFormat(StrEnum):
    table = "table"
    csv = "csv"
    md = "md"
    html = "html"


class TableFormat(StrEnum):
    html = "html"
    png = "png"
    csv = "csv"
    md = "md"


def _check_suffix(path: Path | None, allowed: tuple[str, ...], option: str) -> None:
    if path is not None and path.suffix.lower() not in allowed:
        raise typer.BadParameter(f"{path} must end in {', '.join(allowed)}", param_hint=option)


def _print_wide(table: Table) -> None:
    """Print a wide table: at the terminal's width, or at least 160 columns when the output
    is not a terminal (a pipe or a file keeps every column readable)."""
    if console.is_terminal:
        console.print(table)
    else:
        from rich.console import Console

        Console(width=max(console.width, 160), highlight=False).print(table)


def _wrote(path: Path) -> None:
    console.print(f"[green]wrote[/] {path}", highlight=False, soft_wrap=True)


def _label_title(title: str, label: object) -> str:
    return f"{title} [bold red]({label})[/]" if label else title


def _emit(text: str, out: Path | None) -> None:
    """Write ``text`` to ``out``, or to stdout (plain, no Rich markup) when ``out`` is None."""
    from darkpool_analysis.market.format import write_text

    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        _wrote(write_text(out, text))


def _md_banner(label: object) -> str:
    return f"> **{label}**\n\n" if label else ""


# -- darkpool index --------------------------------------------------------------------------
@app.command("index")
@handle_errors
def index_cmd(
    start: Annotated[str, typer.Option("--start", help="First session (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--end", help="Last session (YYYY-MM-DD).")],
    members: Annotated[Path | None, typer.Option(
        "--members", help="Membership CSV: ticker,start_date,end_date (end exclusive, empty = "
        "still a member; ISO dates; a ticker may have several rows).")] = None,
    universe: Annotated[str | None, typer.Option(
        "--universe", help="Or a named universe as a static membership (e.g. mega_caps, "
        "all).")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Index name in titles (default: the file stem / universe).")] = None,
    csv: Annotated[Path | None, typer.Option(
        "--csv", help="Write the index per session as CSV.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Chart file (.png, .svg or .pdf).")] = None,
    proxy: Annotated[str, typer.Option(
        "--proxy", help="Ticker whose close the chart shows under the index.")] = "SPY",
    z_window: Annotated[int | None, typer.Option(
        "--z-window", min=2, max=2520,
        help="Sessions of the rolling z of dix (default DARKPOOL_SHORT_Z_WINDOW).")] = None,
) -> None:
    """DIX-style dark index: dollar-weighted FINRA short volume / total volume over members.

    Per session: dix = sum(ShortVolume x close) / sum(TotalVolume x close) over the members
    with data, the equal-weighted DPI, member counts, dollar coverage and the rolling z of
    dix. A session where fewer than half the members have data is a gap (no value).
    """
    from darkpool_analysis import market
    from darkpool_analysis.market.format import csv_text, write_text

    first, last = required_date(start, "--start"), required_date(end, "--end")
    if first > last:
        raise typer.BadParameter(f"--start {first} is after --end {last}", param_hint="--start")
    if (members is None) == (universe is None):
        raise typer.BadParameter("give exactly one of --members FILE or --universe NAME",
                                 param_hint="--members")
    _check_suffix(csv, (".csv",), "--csv")
    if out is not None:
        from darkpool_analysis.views import FIGURE_SUFFIXES

        _check_suffix(out, FIGURE_SUFFIXES, "--out")
    settings = config()
    frame = market.index(members if members is not None else str(universe), first, last,
                         name=name, z_window=z_window, settings=settings)
    label = frame.attrs.get("label")
    _print_index(frame)
    if csv is not None:
        _wrote(write_text(csv, csv_text(frame, label_line=label)))
    if out is not None:
        from darkpool_analysis.views import save_figure
        from darkpool_analysis.views.market_charts import plot_index

        closes = market.proxy_close(proxy, frame.attrs["start"], frame.attrs["end"],
                                    settings=settings)
        _wrote(save_figure(plot_index(frame, closes), out))


def _print_index(frame: pd.DataFrame) -> None:
    from darkpool_analysis.market.format import MISSING

    attrs = frame.attrs
    gaps = int(frame["dix"].isna().sum())
    title = _label_title(f"{attrs['name']} dark index {attrs['start']} .. {attrs['end']}: "
                         f"{len(frame):,} sessions, {gaps:,} gap(s)", attrs.get("label"))
    table = Table(title=title, title_justify="left", header_style="bold cyan")
    for column in ("date", "dix", "dpi_equal_weight", "members", "members_with_data",
                   "dollar_coverage", "dix_z"):
        table.add_column(column, justify="left" if column == "date" else "right")
    for row in frame.tail(SHOWN_SESSIONS).to_dict("records"):
        def cell(value: object, spec: str) -> str:
            return MISSING if value is None or value != value else format(value, spec)
        table.add_row(row["date"].date().isoformat(), cell(row["dix"], ".4f"),
                      cell(row["dpi_equal_weight"], ".4f"), str(row["members"]),
                      str(row["members_with_data"]), cell(row["dollar_coverage"], ".1%"),
                      cell(row["dix_z"], "+.2f"))
    console.print(table)
    silent = attrs.get("members_without_data") or []
    if silent:
        shown = ", ".join(silent[:15]) + (f" (+{len(silent) - 15} more)" if len(silent) > 15
                                          else "")
        err_console.print(f"[yellow]{len(silent):,} member(s) never had data in the range:[/] "
                          f"{shown}", highlight=False)


# -- darkpool scan ---------------------------------------------------------------------------
@app.command("scan")
@handle_errors
def scan_cmd(
    date: Annotated[str | None, typer.Option(
        "--date", help="Session to scan (default: the last date in the database).")] = None,
    top: Annotated[int, typer.Option("--top", min=1, max=100_000,
                                     help="Rows at each end.")] = 25,
    by: Annotated[str, typer.Option(
        "--by", help="Signal-lab variant (current, option_a, finra_buy_volume_z, ...), a "
        "--formula name, or a numeric daily_metrics column.")] = "current",
    universe: Annotated[str, typer.Option(
        "--universe", help="Named universe (`darkpool universes` lists them); all = every "
        "symbol.")] = "all",
    tickers: Annotated[str | None, typer.Option(
        "--tickers", help="Comma-separated tickers instead of a universe.")] = None,
    min_dollar_volume: Annotated[float | None, typer.Option(
        "--min-dollar-volume", min=0.0,
        help="Keep symbols with close x volume >= this (drops those without a bar).")] = None,
    output_format: Annotated[ScanFormat, typer.Option(
        "--format", help="table (terminal), csv, md or html.")] = ScanFormat.table,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write csv/md/html to this file instead of stdout.")] = None,
    every: Annotated[bool, typer.Option(
        "--all", help="The full ranking instead of the two ends.")] = False,
    formula: Annotated[list[str] | None, typer.Option(
        "--formula", help="name=<expression> (as in `darkpool evaluate`); repeatable.")] = None,
) -> None:
    """Rank every symbol on one date by a signal: the accumulation and distribution ends.

    Missing data is shown as NA (empty in CSV), never as 0; symbols without a value are not
    ranked and are counted.
    """
    from darkpool_analysis import market
    from darkpool_analysis.formulas import collect_formulas

    settings = config()
    day = parse_date(date, "--date") or _last_date(settings)
    ticker_list = ([t for t in (tickers or "").split(",") if t.strip()]
                   if tickers is not None else None)
    frame = market.scan(day, by=by, universe=universe, tickers=ticker_list,
                        min_dollar_volume=min_dollar_volume, top=None if every else top,
                        formulas=collect_formulas(formula or [], []), settings=settings)
    if output_format is ScanFormat.table:
        if out is not None:
            raise typer.BadParameter("--out needs --format csv, md or html", param_hint="--out")
        _print_scan(frame)
    elif output_format is ScanFormat.csv:
        from darkpool_analysis.market.format import csv_text

        _emit(csv_text(frame, label_line=frame.attrs.get("label")), out)
    elif output_format is ScanFormat.md:
        _emit(_scan_markdown(frame), out)
    else:
        from darkpool_analysis.views.market_tables import scan_html

        _emit(scan_html(frame), out)


def _last_date(settings: Settings) -> dt.date:
    """The newest date in daily_metrics (the default ``--date``)."""
    from darkpool_analysis.market import _db

    with _db.open_db(settings=settings) as (conn, _context):
        return _db.coverage(conn)[1]


def _scan_blocks(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    by = frame.attrs.get("by")
    if "end" not in frame.columns:
        return [(f"Every symbol by {by}", frame)]
    return [(f"Highest {by} (accumulation end)", frame.loc[frame["end"] == "top"]),
            (f"Lowest {by} (distribution end)", frame.loc[frame["end"] == "bottom"])]


def _scan_heading(frame: pd.DataFrame) -> str:
    attrs = frame.attrs
    text = (f"Scan {attrs['date']} by {attrs['by']} over {attrs['universe']}: "
            f"{attrs['ranked']:,} of {attrs['symbols']:,} symbols ranked")
    if attrs.get("min_dollar_volume") is not None:
        text += (f", dollar volume >= {attrs['min_dollar_volume']:,.0f} "
                 f"({attrs['filtered_out']:,} below and {attrs['unknown_dollar_volume']:,} without "
                 "a bar dropped)")
    return text


def _scan_markdown(frame: pd.DataFrame) -> str:
    from darkpool_analysis.market.format import markdown_table, scan_columns

    columns = scan_columns(frame)
    scale = str(frame.attrs.get("scale", "raw"))
    parts = [_md_banner(frame.attrs.get("label")) + f"## {_scan_heading(frame)}"]
    for caption, block in _scan_blocks(frame):
        parts.append(f"### {caption}\n\n{markdown_table(block, columns, scale)}")
    missing = frame.attrs.get("without_value") or []
    if missing:
        parts.append(f"Without a value on {frame.attrs['date']}: {', '.join(missing)}")
    return "\n\n".join(parts) + "\n"


def _print_scan(frame: pd.DataFrame) -> None:
    from darkpool_analysis.market.format import MISSING, format_frame, label, scan_columns

    by = str(frame.attrs.get("by"))
    columns = scan_columns(frame)
    scale = str(frame.attrs.get("scale", "raw"))
    console.print(_label_title(_scan_heading(frame), frame.attrs.get("label")),
                  highlight=False)
    zone_style = {"accumulation": "green", "distribution": "red"}
    for caption, block in _scan_blocks(frame):
        table = Table(title=_label_title(caption, frame.attrs.get("label")),
                      title_justify="left", header_style="bold cyan")
        for column in columns:
            table.add_column(label(column), justify="left" if column in (
                "symbol", "otc_status", "zone", "flags") else "right",
                no_wrap=column != "flags")
        text = format_frame(block, columns, scale)
        for values in text.itertuples(index=False, name=None):
            cells = [f"[dim]{v}[/]" if v == MISSING else v for v in values]
            zone = values[columns.index("zone")]
            if zone in zone_style:
                cells[columns.index("zone")] = f"[{zone_style[zone]}]{zone}[/]"
            table.add_row(*cells)
        _print_wide(table)
    missing = frame.attrs.get("without_value") or []
    if missing:
        shown = ", ".join(missing[:20]) + (f" (+{len(missing) - 20} more)"
                                           if len(missing) > 20 else "")
        console.print(f"[yellow]{len(missing):,} symbol(s) without a {by} value:[/] {shown}",
                      highlight=False)


# -- darkpool table --------------------------------------------------------------------------
@app.command("table")
@handle_errors
def table_cmd(
    group: Annotated[str, typer.Option("--group", help="Universe name (sections = its "
                                                       "sub-groups).")],
    date: Annotated[str | None, typer.Option(
        "--date", help="Session (default: the last date in the database).")] = None,
    output_format: Annotated[TableFormat, typer.Option(
        "--format", help="html, png, csv or md.")] = TableFormat.html,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output file (default for html/png: <output_dir>/<group>_table_<date>; "
        "csv/md go to stdout).")] = None,
) -> None:
    """The original system's grouped daily table: members, group averages and zones."""
    from darkpool_analysis import market

    settings = config()
    day = parse_date(date, "--date") or _last_date(settings)
    rows = market.table(day, group, settings=settings)
    summary = market.summarise(rows)
    label = rows.attrs.get("label")
    if output_format in (TableFormat.html, TableFormat.png):
        suffix = f".{output_format.value}"
        _check_suffix(out, (suffix,), "--out")
        path = out or settings.output_dir / f"{rows.attrs['group']}_table_{day}{suffix}"
        if output_format is TableFormat.html:
            from darkpool_analysis.market.format import write_text
            from darkpool_analysis.views.market_tables import group_table_html

            _wrote(write_text(path, group_table_html(rows, summary)))
        else:
            from darkpool_analysis.views import save_figure
            from darkpool_analysis.views.market_tables import group_table_figure

            _wrote(save_figure(group_table_figure(rows, summary), path, dpi=110))
    elif output_format is TableFormat.csv:
        from darkpool_analysis.market.format import csv_text

        _emit(csv_text(rows, label_line=label), out)
    else:
        from darkpool_analysis.market.format import (
            GROUP_DISPLAY,
            SUMMARY_DISPLAY,
            markdown_table,
        )

        shown = rows.assign(symbol=rows["symbol"].where(rows["row_type"] == "member",
                                                        "**average**"))
        parts = [_md_banner(label) + f"## {rows.attrs['group']} {day}",
                 markdown_table(summary, SUMMARY_DISPLAY)]
        for section, block in shown.groupby("section", sort=False):
            parts.append(f"### {section}\n\n{markdown_table(block, GROUP_DISPLAY)}")
        _emit("\n\n".join(parts) + "\n", out)
    if out is not None or output_format in (TableFormat.html, TableFormat.png):
        _print_summary(summary, label)  # stdout stays clean CSV / Markdown otherwise


def _print_summary(summary: pd.DataFrame, label: object) -> None:
    from darkpool_analysis.market.format import MISSING, format_value

    table = Table(title=_label_title("Groups", label), title_justify="left",
                  header_style="bold cyan")
    for column in ("section", "names", "scored", "acc >= 70", "dist <= 30", "breadth",
                   "avg score", "zone"):
        table.add_column(column, justify="left" if column in ("section", "zone") else "right")
    for row in summary.to_dict("records"):
        breadth = row["breadth"]
        score = row["mean_score"]
        table.add_row(str(row["section"]), f"{row['names']:,}", f"{row['scored']:,}",
                      f"{row['accumulation']:,}", f"{row['distribution']:,}",
                      MISSING if breadth != breadth else f"{breadth:+.2f}",
                      MISSING if score != score else f"{score:.1f}",
                      format_value("zone", row["zone"]))
    _print_wide(table)


# -- darkpool overlay ------------------------------------------------------------------------
@app.command("overlay")
@handle_errors
def overlay_cmd(
    group: Annotated[str, typer.Option("--group", help="Universe name.")],
    start: Annotated[str, typer.Option("--start", help="First session (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--end", help="Last session (YYYY-MM-DD).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Chart file (.png, .svg, .pdf; default "
        "<output_dir>/<group>_overlay_<start>_<end>.png).")] = None,
    csv: Annotated[Path | None, typer.Option(
        "--csv", help="Also write the breadth per session as CSV.")] = None,
) -> None:
    """Multi-ticker overlay: normalised prices, log short ratios and breadth per day.

    Breadth = (#score >= 70 - #score <= 30) / #names with a score.
    """
    from darkpool_analysis import market
    from darkpool_analysis.views import FIGURE_SUFFIXES, save_figure
    from darkpool_analysis.views.market_charts import plot_overlay

    first, last = required_date(start, "--start"), required_date(end, "--end")
    if first > last:
        raise typer.BadParameter(f"--start {first} is after --end {last}", param_hint="--start")
    _check_suffix(out, FIGURE_SUFFIXES, "--out")
    _check_suffix(csv, (".csv",), "--csv")
    settings = config()
    lines = market.overlay(group, first, last, settings=settings)
    breadth = market.compute_breadth(lines)
    path = out or settings.output_dir / f"{lines.attrs['group']}_overlay_{first}_{last}.png"
    _wrote(save_figure(plot_overlay(lines, breadth), path))
    if csv is not None:
        from darkpool_analysis.market.format import csv_text, write_text

        _wrote(write_text(csv, csv_text(breadth, label_line=lines.attrs.get("label"))))
    scored = breadth["breadth"].dropna()
    label = lines.attrs.get("label")
    console.print(_label_title(
        f"{lines.attrs['group']}: {lines['symbol'].nunique():,} of {lines.attrs['names']:,} names "
        f"with data, {len(breadth):,} sessions; breadth mean "
        + (f"{scored.mean():+.2f}, last {scored.iloc[-1]:+.2f}" if len(scored) else "NA"),
        label), highlight=False)


# -- darkpool universes ----------------------------------------------------------------------
@app.command("universes")
@handle_errors
def universes_cmd() -> None:
    """List the named universes (packaged, darkpool.toml, DARKPOOL_UNIVERSES)."""
    from darkpool_analysis.market.universes import load_universes

    table = Table(title="Universes", title_justify="left", header_style="bold cyan")
    for column in ("name", "names", "sections", "description", "source"):
        table.add_column(column, justify="right" if column in ("names", "sections") else "left")
    for universe in load_universes().values():
        table.add_row(universe.name, "db" if universe.is_all else str(len(universe.tickers)),
                      str(len(universe.sections)), universe.description, universe.source)
    console.print(table)
