"""``darkpool ingest finra-short``: FINRA Reg SHO daily short-sale files into the database."""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from darkpool_analysis.cli.app import (
    auto_build,
    config,
    console,
    err_console,
    handle_errors,
    ingest_app,
    prepare_build,
    required_date,
)

if TYPE_CHECKING:
    from darkpool_analysis.ingest.finra_short import (
        FileResult,
        IngestSummary,
    )


class Family(enum.StrEnum):
    """Reg SHO file families accepted by ``--family``."""

    CNMS = "CNMS"
    FNSQ = "FNSQ"
    FNQC = "FNQC"
    FNYX = "FNYX"
    FNRA = "FNRA"
    FORF = "FORF"
    ALL = "all"


class _RichProgress:
    """Files done / total and rows per second on a Rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None
        self.rows = 0
        self.started_at = time.perf_counter()

    def started(self, total: int) -> None:
        self.started_at = time.perf_counter()
        self.task = self.progress.add_task("FINRA short files", total=total, rate="")

    def file_done(self, result: FileResult) -> None:
        self.rows += result.rows
        elapsed = max(time.perf_counter() - self.started_at, 1e-9)
        if self.task is not None:
            self.progress.update(self.task, advance=1,
                                 rate=f"{self.rows:,} rows, {self.rows / elapsed:,.0f} rows/s")


def _print_summary(summary: IngestSummary) -> None:
    table = Table(title="FINRA Reg SHO ingest", title_justify="left", header_style="bold cyan")
    table.add_column("outcome")
    table.add_column("files", justify="right")
    labels = {"ingested": "ingested", "replaced": "replaced", "unchanged": "unchanged",
              "not_published": "not published", "failed": "failed", "missing": "data gaps"}
    for outcome, count in summary.counts.items():
        style = "bold red" if outcome == "failed" and count else ""
        table.add_row(labels[outcome], f"{count:,}", style=style)
    console.print(table)
    console.print(f"{summary.rows_written:,} rows written in {summary.seconds:,.1f}s",
                  highlight=False)
    for note in summary.notes:
        console.print(f"[yellow]note[/] {note}", highlight=False)
    if summary.gaps:
        shown = ", ".join(f"{g.facility} {g.trade_date}" for g in summary.gaps[:12])
        more = f" (+{len(summary.gaps) - 12} more)" if len(summary.gaps) > 12 else ""
        console.print(f"[yellow]data gaps[/] {len(summary.gaps)} session file(s) not in the "
                      f"folder: {shown}{more}", highlight=False)
    if summary.unreachable is not None:
        return  # one clear error line follows; the single failed attempt says nothing more
    for failure in summary.failed:
        err_console.print(f"[bold red]failed[/] {failure.facility} {failure.trade_date}: "
                          f"{escape(failure.message or '')}", highlight=False)


@ingest_app.command("finra-short")
@handle_errors
def finra_short(
    start: Annotated[str, typer.Option("--start", help="First trade date (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--end", help="Last trade date (YYYY-MM-DD).")],
    family: Annotated[list[Family] | None, typer.Option(
        "--family", case_sensitive=False,
        help="File family (repeatable; default CNMS). CNMS is consolidated from 2018-08-01 "
             "(earlier dates fetch the facility files instead); FNSQ, FNQC, FNYX, FNRA, FORF, "
             "or all.")] = None,
    from_dir: Annotated[Path | None, typer.Option(
        "--from-dir", exists=True, file_okay=False, dir_okay=True,
        help="Import <FAMILY>shvol<YYYYMMDD>.txt[.gz] from this folder instead of "
             "downloading.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Re-write files even when their sha256 is unchanged, and apply an "
        "empty file over a session with stored rows.")] = False,
    no_build: Annotated[bool, typer.Option(
        "--no-build", help="Do not rebuild daily_metrics afterwards.")] = False,
) -> None:
    """Download (or import) FINRA Reg SHO daily short-sale volume files for XNYS sessions.

    Short volume is a proxy for dealer-filled buying, not observed buying or short interest.
    """
    from darkpool_analysis.ingest.finra_short import ingest_finra_short
    from darkpool_analysis.store import open_writer

    first, last = required_date(start, "--start"), required_date(end, "--end")
    if first > last:
        raise typer.BadParameter(f"--start {first} is after --end {last}")
    settings = config()
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    families = [f.value for f in family or [Family.CNMS]]
    if not no_build:
        prepare_build()
    with open_writer(settings.db_path) as writer:
        with Progress(*columns, console=err_console, transient=False) as bar:
            summary = ingest_finra_short(settings, first, last, families, writer=writer,
                                         from_dir=from_dir, force=force,
                                         progress=_RichProgress(bar))
        _print_summary(summary)
        if not no_build:
            auto_build(writer, settings)
    if not summary.ok:
        err_console.print(f"[bold red]error:[/] {escape(summary.describe_failure())}",
                          highlight=False)
        if summary.unreachable is not None:
            err_console.print("[yellow]hint:[/] without internet, import files you have with "
                              "--from-dir DIR, or run `darkpool demo` for a synthetic "
                              "database to explore", highlight=False)
        raise typer.Exit(code=1)
