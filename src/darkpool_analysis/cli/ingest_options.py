"""``darkpool ingest options``: near-the-money options premium from Polygon."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from darkpool_analysis.cli.app import config, console, handle_errors, ingest_app, required_date
from darkpool_analysis.errors import NoDataError


@ingest_app.command("options")
@handle_errors
def options_command(
    start: Annotated[str, typer.Option("--start", help="First date (YYYY-MM-DD), inclusive.")],
    end: Annotated[str, typer.Option("--end", help="Last date (YYYY-MM-DD), inclusive.")],
    tickers: Annotated[str | None, typer.Option(
        "--tickers", help="Comma-separated underlyings (default: DARKPOOL_TICKERS).")] = None,
    band: Annotated[float, typer.Option(
        "--band", help="Near the money: strikes within close x (1 +- band).")] = 0.10,
    max_days: Annotated[int, typer.Option(
        "--max-days", help="Contracts expiring within this many calendar days.")] = 30,
    force: Annotated[bool, typer.Option("--force", help="Re-write even unchanged results.")
                     ] = False,
) -> None:
    """Call and put premium (volume x VWAP x 100, in dollars) of each session's near-the-money
    contracts, split ITM/OTM by the session's close, with the 0-100 directional premium score,
    into options_premium_daily (Polygon; needs POLYGON_API_KEY)."""
    from darkpool_analysis.ingest.options import ingest_options, require_key
    from darkpool_analysis.ingest.prices import normalise_tickers
    from darkpool_analysis.store import open_writer

    settings = config()
    require_key(settings)  # before opening the database
    first, last = required_date(start, "--start"), required_date(end, "--end")
    symbols = normalise_tickers(tickers.split(",")) if tickers else None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with open_writer(settings.db_path) as writer, Progress(
            *columns, console=console, transient=True) as bar:
        tasks = {"contracts": bar.add_task("contract lists", total=None),
                 "bars": bar.add_task("contract bars", total=None)}

        def on_progress(phase: str, done: int, total: int) -> None:
            bar.update(tasks[phase], completed=done, total=total)

        summary = ingest_options(writer, settings, first, last, symbols, band=band,
                                 max_days=max_days, force=force, progress=on_progress)
        bar.stop()
    table = Table(title=f"options premium {first}..{last} (strikes +-{band:.0%}, expiry <= "
                        f"{max_days} days; {summary.requests} requests)")
    table.add_column("outcome")
    table.add_column("tickers", justify="right")
    table.add_column("symbols")
    for outcome, names in (("ingested", summary.ingested), ("replaced", summary.replaced),
                           ("unchanged", summary.unchanged), ("missing", summary.missing)):
        table.add_row(outcome, str(len(names)), ", ".join(names[:12])
                      + (" ..." if len(names) > 12 else ""))
    table.caption = (f"{summary.rows} row(s) written from {summary.contracts} contract(s)"
                     + (f"; {summary.bars_without_vwap} bar(s) without VWAP left out"
                        if summary.bars_without_vwap else ""))
    console.print(table)
    if not summary.stored:
        raise NoDataError(f"no options premium stored for {first}..{last}",
                          hint="check the tickers and dates (Polygon has no underlying bars "
                               "for them)")
