"""``darkpool ingest trades``: classify lit-market trades into ``lit_direction_daily``."""

from __future__ import annotations

import datetime as dt
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from darkpool_analysis.classify import MethodName
from darkpool_analysis.cli.app import config, console, handle_errors, ingest_app, parse_date
from darkpool_analysis.errors import ConfigError, NoDataError
from darkpool_analysis.ingest.trades import TradesIngestSummary, ingest_trades
from darkpool_analysis.sources.trades import POLYGON_MAX_PAGES, TradeSourceName
from darkpool_analysis.store import open_writer


class SourceChoice(StrEnum):
    polygon = "polygon"
    flatfile = "flatfile"
    taq = "taq"
    file = "file"


class MethodChoice(StrEnum):
    lee_ready = "lee_ready"
    tick = "tick"
    quote = "quote"
    emo = "emo"
    clnv = "clnv"
    bvc = "bvc"


def _range(date: str | None, start: str | None, end: str | None) -> tuple[dt.date, dt.date]:
    if date is not None and (start is not None or end is not None):
        raise ConfigError("pass either --date or --start/--end, not both")
    if date is not None:
        day = cast(dt.date, parse_date(date, "--date"))
        return day, day
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    if first is None:
        raise ConfigError("pass --date D or --start D [--end D]")
    return first, last or first


def _summary_table(summary: TradesIngestSummary) -> Table:
    table = Table(title="lit trade direction")
    table.add_column("rows written", justify="right")
    table.add_column("trades classified", justify="right")
    table.add_column("sessions", justify="right")
    table.add_column("without data", justify="right")
    table.add_column("dropped trades", justify="right")
    dropped = int(summary.skipped["trades"].sum()) if not summary.skipped.empty else 0
    table.add_row(str(summary.rows_written), f"{summary.trades_classified:,}",
                  str(summary.sessions), str(len(summary.missing)), f"{dropped:,}")
    return table


@ingest_app.command("trades")
@handle_errors
def trades_command(
    date: Annotated[str | None, typer.Option("--date", help="One session (YYYY-MM-DD).")
                    ] = None,
    start: Annotated[str | None, typer.Option("--start", help="First session, inclusive.")
                     ] = None,
    end: Annotated[str | None, typer.Option("--end", help="Last session, inclusive.")] = None,
    tickers: Annotated[str | None, typer.Option(
        "--tickers", help="Comma-separated tickers. Default: DARKPOOL_TICKERS.")] = None,
    source: Annotated[SourceChoice, typer.Option(
        "--source", case_sensitive=False,
        help="polygon (REST, needs POLYGON_API_KEY), flatfile (Polygon daily CSV.gz), "
        "taq (WRDS/NYSE TAQ CSV) or file (generic Parquet/CSV).")] = SourceChoice.polygon,
    method: Annotated[MethodChoice, typer.Option(
        "--method", case_sensitive=False, help="Classification rule.")
    ] = MethodChoice.lee_ready,
    path: Annotated[Path | None, typer.Option(
        "--path", exists=True, help="Trades file or folder (flatfile/taq/file sources).")
    ] = None,
    quotes_path: Annotated[Path | None, typer.Option(
        "--quotes-path", exists=True, dir_okay=False,
        help="Quotes file for --source file (symbol, timestamp, bid, ask).")] = None,
    keep_parquet: Annotated[Path | None, typer.Option(
        "--keep-parquet", file_okay=False,
        help="Also keep each day's normalised ticks as Parquet in this folder.")] = None,
    quote_lag_ms: Annotated[float, typer.Option(
        "--quote-lag-ms", min=0, help="Match each trade to the quote in force this many "
        "ms earlier (0 = contemporaneous; Lee-Ready 1991 used 5000).")] = 0.0,
    bar_seconds: Annotated[int, typer.Option(
        "--bar-seconds", min=1, help="BVC bar width in seconds.")] = 60,
    max_pages: Annotated[int, typer.Option(
        "--max-pages", min=1, help="Polygon pages per request chain; a capped day is "
        "stored with complete = false.")] = POLYGON_MAX_PAGES,
    no_build: Annotated[bool, typer.Option(
        "--no-build", help="Skip the daily_metrics build afterwards.")] = False,
) -> None:
    """Classify lit (exchange) trades as buys/sells and store daily totals per symbol."""
    settings = config()
    first, last = _range(date, start, end)
    symbols = [t.strip() for t in tickers.split(",") if t.strip()] if tickers else None
    started = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[rate]}"))
    with open_writer(settings.db_path) as writer, Progress(
            *columns, console=console, transient=True) as bar:
        task = bar.add_task("sessions", total=None, rate="")

        def on_progress(day: dt.date, done: int, total: int, trades: int) -> None:
            rate = trades / max(time.monotonic() - started, 1e-9)
            bar.update(task, completed=done, total=total, description=str(day),
                       rate=f"{trades:,} trades, {rate:,.0f} trades/s")

        summary = ingest_trades(
            writer, settings, source=cast(TradeSourceName, source.value), start=first,
            end=last, tickers=symbols, method=cast(MethodName, method.value), path=path,
            quotes_path=quotes_path, keep_parquet=keep_parquet, quote_lag_ms=quote_lag_ms,
            bar_seconds=bar_seconds, max_pages=max_pages, build=not no_build,
            progress=on_progress)
    console.print(_summary_table(summary))
    if summary.metrics_built:
        console.print(f"daily_metrics rebuilt from {first} for the classified symbols")
    if not summary.rows_written:
        raise NoDataError(f"no lit trades classified for {first}..{last}",
                          hint="check --tickers, the dates and the --path file")
