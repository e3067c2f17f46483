"""``darkpool run`` (the main job) and ``darkpool demo`` (the same, offline, synthetic)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from darkpool_analysis.cli.app import app, config, console, err_console, handle_errors

if TYPE_CHECKING:
    from darkpool_analysis.pipeline import JobResult


class OfflineFallback(StrEnum):
    """What ``darkpool run`` does when the data sources cannot be reached."""

    none = "none"
    demo = "demo"


def _report(result: JobResult, *, synthetic: bool = False) -> None:
    """What was fetched and built (a table), then every file written, one per line (paths are
    never wrapped, so they can be copied)."""
    from darkpool_analysis.synthetic import SYNTHETIC_LABEL

    label = f" ({SYNTHETIC_LABEL})" if synthetic else ""
    table = Table(title="What the job did" + label, title_justify="left",
                  header_style="bold cyan", show_header=False)
    table.add_column("what")
    table.add_column("result")
    if result.finra is not None:
        counts = result.finra.counts
        table.add_row("FINRA short files", ", ".join(f"{k} {v:,}" for k, v in counts.items()
                                                     if v))
    if result.prices is not None:
        table.add_row("price bars", f"{result.prices.rows:,} rows from "
                      f"{result.prices.provider} for {len(result.prices.stored):,} ticker(s)"
                      + (f"; missing {', '.join(result.prices.missing)}"
                         if result.prices.missing else ""))
    table.add_row("daily_metrics", f"{result.metrics_rows:,} rows built")
    for ticker, why in result.skipped.items():
        table.add_row(f"[yellow]no chart {ticker}[/]", escape(why))
    console.print(table)
    console.print(f"[green]wrote[/] database {result.db_path}{label}", highlight=False,
                  soft_wrap=True)
    for ticker, path in result.charts.items():
        console.print(f"[green]wrote[/] chart {ticker} {path}", highlight=False, soft_wrap=True)


@app.command("run")
@handle_errors
def run(
    tickers: Annotated[str | None, typer.Option(
        "--tickers", help="Comma-separated tickers (default DARKPOOL_TICKERS).")] = None,
    days: Annotated[int, typer.Option("--days", min=1, max=2520,
                                      help="Sessions to chart (data is fetched with a "
                                           "z-score warm-up before them).")] = 60,
    provider: Annotated[str | None, typer.Option(
        "--provider", help="Price provider: polygon, yahoo (default: polygon when "
                           "POLYGON_API_KEY is set, else yahoo).")] = None,
    end: Annotated[str | None, typer.Option(
        "--end", help="Last session to fetch (YYYY-MM-DD; default: the last session up to "
                      "today).")] = None,
    offline_fallback: Annotated[OfflineFallback, typer.Option(
        "--offline-fallback", help="When the sources cannot be reached: none = fail with exit "
        "code 1; demo = say so and run the same pipeline on the synthetic demo market "
        "(demo.duckdb, labelled SYNTHETIC).")] = OfflineFallback.none,
) -> None:
    """The main job: ingest FINRA short volume and prices, build metrics, chart each ticker.

    Without internet it fails (exit code 1) unless --offline-fallback demo is given.
    """
    from darkpool_analysis.cli.ingest_finra_short import _RichProgress
    from darkpool_analysis.pipeline import SourcesUnreachable, run_demo, run_job
    from darkpool_analysis.synthetic import SYNTHETIC_LABEL
    from darkpool_analysis.trading_calendar import to_date

    settings = config()
    chosen = ([t.strip().upper() for t in tickers.split(",") if t.strip()] if tickers
              else settings.tickers)
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err_console) as bar:
            result = run_job(settings, tickers=chosen, days=days, provider=provider,
                             end=to_date(end) if end else None,
                             finra_progress=_RichProgress(bar), notify=err_console.print)
    except SourcesUnreachable as exc:
        if offline_fallback is OfflineFallback.none:
            raise
        err_console.print(f"[bold yellow]offline:[/] cannot reach {', '.join(exc.names)}; "
                          f"running the same pipeline on the synthetic demo market instead "
                          f"({SYNTHETIC_LABEL})", highlight=False, soft_wrap=True)
        demo_result = run_demo(settings, chart_tickers=chosen, chart_days=days,
                               notify=err_console.print)
        _report(demo_result, synthetic=True)
        return
    _report(result)
    if result.finra is not None and not result.finra.ok:
        err_console.print("[bold red]error:[/] some FINRA files failed (see above)")
        raise typer.Exit(code=1)


@app.command("demo")
@handle_errors
def demo(
    db: Annotated[Path | None, typer.Option(
        "--db", help="Database for the demo (default: demo.duckdb next to DARKPOOL_DB).")
    ] = None,
) -> None:
    """Fully offline: a deterministic synthetic market in the real FINRA and Yahoo formats,
    ingested through the real code path, metrics built and the seed's chart written."""
    from darkpool_analysis.pipeline import run_demo

    settings = config()
    result = run_demo(settings, db_path=db, notify=err_console.print)
    _report(result, synthetic=True)
    console.print(
        f"Point the seed notebook at it: [bold]export DARKPOOL_DB={result.db_path}[/] "
        "(it charts NKE, 2025-11-01..2025-12-31, synthetic).", highlight=False)
