"""``darkpool build``: recompute ``daily_metrics`` from the ingested raw data."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from darkpool_analysis.cli.app import app, config, console, handle_errors, parse_date


class OtcAlignmentChoice(StrEnum):
    """Values of ``--otc-alignment`` (see ``otc_metrics``)."""

    published = "published"
    week = "week"


@app.command("build")
@handle_errors
def build(
    tickers: Annotated[str | None, typer.Option(
        "--tickers", help="Comma-separated symbols (any spelling: BRK/B, BRK-B, BRK.B). "
        "Default: every symbol in the database.")] = None,
    start: Annotated[str | None, typer.Option(
        "--start", help="First date to rewrite (YYYY-MM-DD). Earlier history is still read "
        "so rolling statistics equal a full build.")] = None,
    end: Annotated[str | None, typer.Option(
        "--end", help="Last date to rewrite (YYYY-MM-DD).")] = None,
    otc_alignment: Annotated[OtcAlignmentChoice | None, typer.Option(
        "--otc-alignment", help="OTC weekly rule: 'published' (a week is used from its FINRA "
        "publication date on; point in time) or 'week' (the original system's LOOK-AHEAD: a "
        "week's values on its own sessions; never for backtests). Default: the "
        "DARKPOOL_OTC_ALIGNMENT setting.", case_sensitive=False)] = None,
) -> None:
    """Recompute daily_metrics (short-sale, lit, price, OTC blocks and the composite score).

    Short volume is a proxy for dealer-filled buying, not observed buying.
    """
    from darkpool_analysis.build import build_metrics, settle_owed
    from darkpool_analysis.store import open_writer

    settings = config()
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    symbols = [t for t in (tickers or "").split(",") if t.strip()] or None
    alignment = otc_alignment.value if otc_alignment is not None else settings.otc_alignment
    if alignment == "week":
        console.print("[bold yellow]LOOK-AHEAD WARNING:[/] --otc-alignment week attaches each "
                      "OTC week's values to that week's own sessions, 2-4 weeks before FINRA "
                      "published them. Rows are stored with otc_alignment='week'; do not "
                      "backtest on them.", highlight=False)
    with open_writer(settings.db_path) as writer, Progress(
        TextColumn("[bold]daily_metrics"), BarColumn(), TextColumn("{task.completed:,.0f} rows"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:
        task = bar.add_task("build", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = build_metrics(writer, settings, symbols=symbols, start=first, end=last,
                               progress=advance, otc_alignment=alignment)
        # A partial build still finishes whatever an interrupted run left owed.
        owed = settle_owed(writer, settings, progress=advance, otc_alignment=alignment)
    span = f" from {result.start}" if result.start else ""
    span += f" to {result.end}" if result.end else ""
    console.print(f"daily_metrics: wrote {result.rows_written:,} rows for "
                  f"{result.symbols:,} symbols{span} in {result.seconds:.2f}s "
                  f"(read {result.read_seconds:.2f}s, compute {result.compute_seconds:.2f}s, "
                  f"write {result.write_seconds:.2f}s; OTC alignment {result.otc_alignment})")
    if owed is not None:
        console.print(f"daily_metrics: also finished the rebuild still owed from {owed.start} "
                      f"({owed.rows_written:,} rows)", highlight=False)
    if result.missing_symbols:
        console.print(f"[yellow]no data for:[/] {', '.join(result.missing_symbols)}")
