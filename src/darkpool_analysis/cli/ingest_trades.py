"""``darkpool ingest trades``: classify lit-market trades into ``lit_direction_daily``.

``--source polygon-flat|taq`` reads whole-market day files, one retry-safe task per session on
``--executor`` (serial, local[:N], dask-local[:N], dask://HOST:PORT); the other sources read
per ticker in this process.
"""

from __future__ import annotations

import datetime as dt
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from darkpool_analysis.cli.app import (
    auto_build,
    config,
    console,
    err_console,
    handle_errors,
    ingest_app,
    parse_date,
)
from darkpool_analysis.errors import (
    ConfigError,
    DataFormatError,
    NoDataError,
    ctrl_c_during_queries,
)

if TYPE_CHECKING:
    from darkpool_analysis.classify import MethodName
    from darkpool_analysis.config import Settings
    from darkpool_analysis.ingest.trades import (
        DayCounts,
        DayIngestSummary,
        TradesIngestSummary,
    )
    from darkpool_analysis.sources.flatfiles import DayFileSource

#: Option defaults, spelled out so ``--help`` does not import the trade sources; equal to
#: ``sources.trades.POLYGON_MAX_PAGES`` and ``ingest.trades.DEFAULT_CHUNK_MB`` /
#: ``DEFAULT_BATCH_DAYS`` (tests/cli/test_cli_startup.py holds them equal).
POLYGON_MAX_PAGES = 2_000
DEFAULT_CHUNK_MB = 256
DEFAULT_BATCH_DAYS = 8


class SourceChoice(StrEnum):
    polygon = "polygon"
    polygon_flat = "polygon-flat"
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
        help="polygon-flat (Polygon flat files us_stocks_sip/..., every symbol, one task per "
        "session), taq (WRDS/NYSE TAQ day files, likewise), polygon (REST, needs "
        "POLYGON_API_KEY), flatfile (Polygon daily CSV.gz, per ticker) or file (generic "
        "Parquet/CSV).")] = SourceChoice.polygon,
    method: Annotated[MethodChoice, typer.Option(
        "--method", "--rule", case_sensitive=False, help="Classification rule.")
    ] = MethodChoice.lee_ready,
    path: Annotated[str | None, typer.Option(
        "--path", help="Trades file or folder; for polygon-flat/taq a folder or an fsspec "
        "URL (s3://bucket/prefix).")] = None,
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
    executor: Annotated[str | None, typer.Option(
        "--executor", help="Where the per-session tasks of polygon-flat/taq run: serial, "
        "local[:N] (N processes, default cores), dask-local[:N] or dask://HOST:PORT.")
    ] = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", file_okay=False, help="polygon-flat/taq: folder of per-session results "
        "and manifests (reused when they match). Default: lit_day_results beside the "
        "database; on a cluster a folder every worker can reach.")] = None,
    chunk_mb: Annotated[float, typer.Option(
        "--chunk-mb", min=0.01, help="polygon-flat/taq: read a session whose files exceed this "
        "many MB (compressed) in symbol buckets of about this size (bounds memory).")
    ] = DEFAULT_CHUNK_MB,
    batch_days: Annotated[int, typer.Option(
        "--batch-days", min=1, help="polygon-flat/taq: finished sessions stored per "
        "database transaction.")] = DEFAULT_BATCH_DAYS,
    no_build: Annotated[bool, typer.Option(
        "--no-build", help="Skip the daily_metrics build afterwards.")] = False,
) -> None:
    """Classify lit (exchange) trades as buys/sells and store daily totals per symbol."""
    from darkpool_analysis.classify import MethodName
    from darkpool_analysis.ingest.trades import ingest_trades
    from darkpool_analysis.sources.flatfiles import DayFileSource
    from darkpool_analysis.sources.trades import TradeSourceName
    from darkpool_analysis.store import open_writer

    settings = config()
    first, last = _range(date, start, end)
    symbols = [t.strip() for t in tickers.split(",") if t.strip()] if tickers else None
    if source.value in ("polygon-flat", "taq"):
        if path is None:
            raise ConfigError(f"--source {source.value} needs --path DIR (or an fsspec URL)")
        _day_files_command(settings, cast(DayFileSource, source.value), path, first, last,
                           method=cast(MethodName, method.value), tickers=symbols,
                           executor=executor or "serial", work_dir=work_dir,
                           quote_lag_ms=quote_lag_ms, bar_seconds=bar_seconds,
                           chunk_mb=chunk_mb, batch_days=batch_days,
                           keep_parquet=keep_parquet, build=not no_build)
        return
    if executor is not None:
        raise ConfigError(f"--executor works with --source polygon-flat or taq, not "
                          f"{source.value}", hint="those sources run one task per session")
    local_path = None
    if path is not None:
        local_path = Path(path)
        if not local_path.exists():
            raise typer.BadParameter(f"Path '{path}' does not exist.", param_hint="'--path'")
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
            end=last, tickers=symbols, method=cast(MethodName, method.value), path=local_path,
            quotes_path=quotes_path, keep_parquet=keep_parquet, quote_lag_ms=quote_lag_ms,
            bar_seconds=bar_seconds, max_pages=max_pages, build=not no_build,
            progress=on_progress)
    console.print(_summary_table(summary))
    if summary.metrics_built:
        console.print(f"daily_metrics rebuilt from {first} for the classified symbols")
    if not summary.rows_written:
        raise NoDataError(f"no lit trades classified for {first}..{last}",
                          hint="check --tickers, the dates and the --path file")


def _day_summary_table(summary: DayIngestSummary, seconds: float) -> Table:
    counts = summary.counts
    table = Table(title="lit trade direction (day files)")
    table.add_column("sessions")
    table.add_column("", justify="right")
    for name, value in (("in range", counts.total), ("classified", counts.done),
                        ("reused (manifest matched)", counts.skipped),
                        ("failed", counts.failed), ("retried", counts.retried),
                        ("without data", counts.missing)):
        table.add_row(name, f"{value:,}")
    table.add_row("rows written", f"{summary.rows_written:,}")
    table.add_row("trades", f"{counts.trades:,}")
    table.add_row("trades/s", f"{counts.trades / max(seconds, 1e-9):,.0f}")
    return table


def _day_files_command(settings: Settings, source: DayFileSource, path: str,
                       first: dt.date, last: dt.date, *, method: MethodName,
                       tickers: list[str] | None, executor: str, work_dir: Path | None,
                       quote_lag_ms: float, bar_seconds: int, chunk_mb: float,
                       batch_days: int, keep_parquet: Path | None, build: bool) -> None:
    """Run the per-session tasks of ``polygon-flat``/``taq`` on ``executor`` and store them."""
    from darkpool_analysis.executor import make_executor, parse_executor_spec
    from darkpool_analysis.ingest.trades import DayCounts, ingest_day_files
    from darkpool_analysis.sources.flatfiles import is_url
    from darkpool_analysis.store import open_writer

    spec = parse_executor_spec(executor)
    if not is_url(path) and not Path(path).is_dir():
        raise DataFormatError("no such folder", source=path,
                              hint="--path is the folder holding the day files")
    started = time.monotonic()
    latest = DayCounts(total=0)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[counts]}"))
    try:
        with ctrl_c_during_queries(), open_writer(settings.db_path) as writer:
            with make_executor(spec) as pool, Progress(*columns, console=console,
                                                       transient=True) as bar:
                task = bar.add_task(f"sessions on {spec}", total=None, counts="")

                def on_progress(counts: DayCounts) -> None:
                    nonlocal latest
                    latest = counts
                    rate = counts.trades / max(time.monotonic() - started, 1e-9)
                    bar.update(task, completed=counts.finished, total=counts.total,
                               counts=f"done {counts.done} · skipped {counts.skipped} · "
                                      f"failed {counts.failed} · retried {counts.retried} · "
                                      f"{rate:,.0f} trades/s")

                summary = ingest_day_files(
                    writer, settings, source=source, path=path, start=first, end=last,
                    method=method, tickers=tickers, executor=pool, work_dir=work_dir,
                    quote_lag_ms=quote_lag_ms, bar_seconds=bar_seconds, chunk_mb=chunk_mb,
                    batch_days=batch_days, keep_parquet=keep_parquet, progress=on_progress)
            if build:
                auto_build(writer, settings)
    except KeyboardInterrupt:
        err_console.print(
            f"[bold red]interrupted:[/] {latest.finished} of {latest.total} sessions had "
            "finished; pending tasks were cancelled and the batch in flight was not stored "
            "(the database holds only whole batches). Run the same command again to "
            "continue: finished sessions are reused from their manifests.", highlight=False)
        raise typer.Exit(code=130) from None
    console.print(_day_summary_table(summary, time.monotonic() - started))
    if summary.unchanged:
        console.print(f"{len(summary.unchanged)} session(s) already stored with the same "
                      "inputs, rule and code: nothing written for them", highlight=False)
    for day, error in sorted(summary.failures.items()):
        err_console.print(f"[bold red]failed[/] {day}: {escape(error)}", highlight=False)
    if summary.failures:
        raise typer.Exit(code=1)
    if not summary.rows_written and not summary.unchanged:
        raise NoDataError(f"no lit trades classified for {first}..{last}",
                          hint=f"check --path: no {source} day files for these sessions")
