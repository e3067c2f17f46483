"""``darkpool ingest prices``: daily bars from Polygon, Yahoo or Yahoo-format CSV files."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from darkpool_analysis.cli.app import (
    auto_build,
    config,
    console,
    handle_errors,
    ingest_app,
    prepare_build,
    required_date,
)
from darkpool_analysis.errors import ConfigError, NoDataError

if TYPE_CHECKING:
    from darkpool_analysis.ingest.prices import (
        PriceIngestSummary,
    )


class ProviderChoice(StrEnum):
    """``--provider`` values."""

    polygon = "polygon"
    yahoo = "yahoo"
    csv = "csv"


def _summary_table(summary: PriceIngestSummary) -> Table:
    via = f" via {summary.endpoint} ({summary.requests} requests)" if summary.endpoint else ""
    table = Table(title=f"prices {summary.start}..{summary.end} from {summary.provider}{via}")
    table.add_column("outcome")
    table.add_column("tickers", justify="right")
    table.add_column("symbols")
    for outcome, symbols in (("ingested", summary.ingested), ("replaced", summary.replaced),
                             ("unchanged", summary.unchanged), ("missing", summary.missing)):
        shown = ", ".join(symbols[:12]) + (" ..." if len(symbols) > 12 else "")
        table.add_row(outcome, str(len(symbols)), shown)
    table.caption = f"{summary.rows} row(s) written"
    if summary.non_session_rows:
        table.caption += f"; {summary.non_session_rows} bar(s) on non-session days dropped"
    return table


@ingest_app.command("prices")
@handle_errors
def prices_command(
    start: Annotated[str, typer.Option("--start", help="First date (YYYY-MM-DD), inclusive.")],
    end: Annotated[str, typer.Option("--end", help="Last date (YYYY-MM-DD), inclusive.")],
    tickers: Annotated[str | None, typer.Option(
        "--tickers", help="Comma-separated tickers in any spelling (BRK.B, BRK-B, BRK/B). "
        "Default: every file with --from-dir, else DARKPOOL_TICKERS.")] = None,
    provider: Annotated[ProviderChoice | None, typer.Option(
        "--provider", case_sensitive=False,
        help="Default: csv with --from-dir, else polygon when POLYGON_API_KEY is set, "
        "else yahoo when yfinance is installed.")] = None,
    from_dir: Annotated[Path | None, typer.Option(
        "--from-dir", exists=True, file_okay=False, dir_okay=True,
        help="Folder of Yahoo-format <TICKER>.csv files (Yahoo spelling, e.g. BRK-B.csv).",
    )] = None,
    all_files: Annotated[bool, typer.Option(
        "--all", help="With --from-dir: every <TICKER>.csv in the folder (the default "
        "without --tickers).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Re-write even unchanged inputs, and let data covering fewer sessions "
        "than stored replace them.")] = False,
    no_build: Annotated[bool, typer.Option(
        "--no-build", help="Do not rebuild daily_metrics afterwards.")] = False,
) -> None:
    """Ingest daily OHLCV bars into prices_daily (XNYS sessions only; re-runs replace)."""
    from darkpool_analysis.ingest.prices import (
        PriceProvider,
        ingest_prices,
        normalise_tickers,
        tickers_in_dir,
    )
    from darkpool_analysis.store import open_writer

    settings = config()
    first, last = required_date(start, "--start"), required_date(end, "--end")
    if all_files and tickers:
        raise ConfigError("pass either --tickers or --all, not both")
    if all_files and from_dir is None:
        raise ConfigError("--all needs --from-dir")
    # With a folder and no --tickers, every <TICKER>.csv of the folder (--all says the same).
    symbols = (normalise_tickers(tickers.split(",")) if tickers
               else tickers_in_dir(from_dir) if from_dir is not None else None)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    if not no_build:
        prepare_build()
    with open_writer(settings.db_path) as writer, Progress(
            *columns, console=console, transient=True) as bar:
        tasks = {"fetch": bar.add_task("fetch", total=None),
                 "write": bar.add_task("write", total=None)}

        def on_progress(phase: str, done: int, total: int) -> None:
            bar.update(tasks[phase], completed=done, total=total)

        summary = ingest_prices(writer, settings, first, last, tickers=symbols,
                                provider=cast(PriceProvider, provider.value) if provider else None,
                                from_dir=from_dir, force=force, progress=on_progress)
        bar.stop()
        console.print(_summary_table(summary))
        if not no_build:
            auto_build(writer, settings)
    if not summary.stored:
        raise NoDataError(f"no price bars stored for {first}..{last}",
                          hint="check the tickers, the dates and the provider's coverage")
