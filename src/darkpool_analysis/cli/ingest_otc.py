"""``darkpool ingest finra-otc``: FINRA OTC Transparency weekly volume into the database."""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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
    prepare_build,
)

if TYPE_CHECKING:
    from darkpool_analysis.config import Settings
    from darkpool_analysis.ingest import finra_otc as ingest
    from darkpool_analysis.sources import finra_otc as source
    from darkpool_analysis.store import Writer

#: Default range: the last 12 weeks up to the newest T1 week that should be public.
DEFAULT_WEEKS = 12


class FileKind(enum.StrEnum):
    """Whether a website download lists ATSs or non-ATS dealers (the file does not say)."""

    ATS = "ATS"
    OTC = "OTC"


def _week(value: str | None, option: str) -> dt.date | None:
    from darkpool_analysis.sources import finra_otc as source

    day = parse_date(value, option)
    return None if day is None else source.monday_of(day)


def _tiers(value: str) -> list[str]:
    from darkpool_analysis.sources import finra_otc as source

    tiers = [t.strip().upper() for t in value.split(",") if t.strip()]
    unknown = [t for t in tiers if t not in source.TIERS]
    if unknown or not tiers:
        raise typer.BadParameter(f"unknown tier(s) {unknown}; use {','.join(source.TIERS)}",
                                 param_hint="--tier")
    return tiers


def _print_summary(summary: ingest.OtcIngestSummary) -> None:
    table = Table(title="FINRA OTC weekly ingest (per week + tier)", title_justify="left",
                  header_style="bold cyan")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for label, value in (("ingested", summary.ingested), ("replaced", summary.replaced),
                         ("unchanged", summary.unchanged), ("symbol rows", summary.rows),
                         ("firm rows", summary.firm_rows), ("API requests", summary.requests),
                         ("failed files", len(summary.failed))):
        table.add_row(label, f"{value:,}", style="bold red" if label == "failed files"
                      and value else "")
    for reason, count in summary.skipped.items():
        table.add_row(f"skipped rows: {reason}", f"{count:,}", style="yellow")
    console.print(table)
    for path in summary.failed:
        err_console.print(f"[bold red]failed[/] {path}", highlight=False)


@ingest_app.command("finra-otc")
@handle_errors
def finra_otc(
    start: Annotated[str | None, typer.Option(
        "--start", help="First week (any day of it, YYYY-MM-DD; default 12 weeks before "
                        "--end).")] = None,
    end: Annotated[str | None, typer.Option(
        "--end", help="Last week (default: the newest T1 week due, 3 weeks ago).")] = None,
    tickers: Annotated[str | None, typer.Option(
        "--tickers", help="Comma-separated symbols (default: configured tickers); ALL = every "
                          "symbol of the tier.")] = None,
    tier: Annotated[str, typer.Option(
        "--tier", help="Tiers: T1 (S&P 500, Russell 1000, ETPs), T2 (other NMS), OTCE.")
    ] = "T1,T2",
    by_firm: Annotated[bool, typer.Option(
        "--by-firm", help="Also store per-ATS/per-dealer rows (separate table; never summed "
                          "with symbol rows).")] = False,
    from_file: Annotated[Path | None, typer.Option(
        "--from-file", exists=True, dir_okay=False,
        help="Import a FINRA website download (pipe-delimited) or a saved API JSON "
             "response.")] = None,
    from_dir: Annotated[Path | None, typer.Option(
        "--from-dir", exists=True, file_okay=False,
        help="Import every .csv/.txt/.psv/.json file of a folder (bad files are skipped and "
             "reported).")] = None,
    file_kind: Annotated[FileKind, typer.Option(
        "--file-kind", case_sensitive=False,
        help="Website downloads only: ATS (default) or OTC (non-ATS) firms.")] = FileKind.ATS,
    week: Annotated[str | None, typer.Option(
        "--week", help="Website downloads only: the week the file describes (default: "
                       "inferred from lastUpdateDate by the publication rule).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Re-write weeks even when their data is unchanged.")] = False,
    no_build: Annotated[bool, typer.Option(
        "--no-build", help="Do not rebuild daily_metrics afterwards.")] = False,
) -> None:
    """Fetch (or import) FINRA OTC Transparency weekly ATS + non-ATS volume per symbol.

    Every revision is kept (keyed by lastUpdateDate) so backtests can ask what was known on a
    date. FINRA publishes T1 weeks 2 weeks and T2/OTCE weeks 4 weeks after the week.
    """
    from darkpool_analysis.ingest import finra_otc as ingest
    from darkpool_analysis.store import open_writer

    if from_file is not None and from_dir is not None:
        raise typer.BadParameter("use either --from-file or --from-dir")
    settings = config()
    if not no_build:
        prepare_build()
    with open_writer(settings.db_path) as writer:
        if from_file is not None or from_dir is not None:
            paths = [from_file] if from_file is not None else ingest.files_in(from_dir)
            summary = _import_files(writer, paths, kind=file_kind, week=_week(week, "--week"),
                                    by_firm=by_firm, force=force, strict=from_file is not None)
        else:
            summary = _fetch(writer, settings, start=start, end=end, tickers=tickers,
                             tiers=_tiers(tier), by_firm=by_firm, force=force)
        _print_summary(summary)
        if not no_build:
            auto_build(writer, settings)
    if summary.failed:
        raise typer.Exit(code=1)


def _progress() -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                    transient=True)


def _import_files(writer: Writer, paths: list[Path], *, kind: FileKind,
                  week: dt.date | None, by_firm: bool, force: bool,
                  strict: bool) -> ingest.OtcIngestSummary:
    from darkpool_analysis.ingest import finra_otc as ingest

    with _progress() as progress:
        task = progress.add_task("FINRA OTC files", total=len(paths))
        file_kind: source.FileKind = "ATS" if kind is FileKind.ATS else "OTC"
        return ingest.ingest_files(writer, paths, kind=file_kind, week_start=week,
                                   by_firm=by_firm, force=force, stop_on_error=strict,
                                   on_file=lambda _p: progress.advance(task))


def _fetch(writer: Writer, settings: Settings, *, start: str | None, end: str | None,
           tickers: str | None, tiers: list[str], by_firm: bool,
           force: bool) -> ingest.OtcIngestSummary:
    from darkpool_analysis.ingest import finra_otc as ingest
    from darkpool_analysis.sources import finra_otc as source
    from darkpool_analysis.sources.http import HttpPolicy, make_client
    from darkpool_analysis.symbols import normalise

    today = dt.date.today()
    last = _week(end, "--end") or source.monday_of(today - dt.timedelta(days=21))
    first = _week(start, "--start") or last - dt.timedelta(days=7 * (DEFAULT_WEEKS - 1))
    if first > last:
        raise typer.BadParameter(f"--start {first} is after --end {last}")
    if tickers is not None and tickers.strip().upper() == "ALL":
        symbols: list[str] = []
    else:
        names = tickers.split(",") if tickers is not None else settings.tickers
        symbols = sorted({normalise(s, "yahoo" if "-" in s else "cqs") for s in names
                          if s.strip()})
    policy = HttpPolicy.from_settings(settings)
    client = make_client(policy, headers={"Accept": "application/json"})
    with client, _progress() as progress:
        api = ingest.make_api_client(client, settings.finra_api_url, policy=policy,
                                     requests_per_second=settings.otc_requests_per_second)
        planned = len(source.plan_queries(first, last, tiers, source.SYMBOL_TYPES, symbols,
                                          today=today)) * (2 if by_firm else 1)
        task = progress.add_task(f"FINRA OTC {first}..{last}", total=planned if symbols
                                 else None)
        return ingest.ingest_api(writer, api, first_week=first, last_week=last,
                                 tiers=tiers, symbols=symbols, by_firm=by_firm, force=force,
                                 today=today, on_query=lambda _q: progress.advance(task))
