"""``darkpool build``: recompute ``daily_metrics`` from the ingested raw data."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from darkpool_analysis.build import build_metrics
from darkpool_analysis.cli.app import app, config, console, handle_errors
from darkpool_analysis.store import open_writer
from darkpool_analysis.trading_calendar import to_date


def _parse_date(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        return to_date(value).isoformat()
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date (expected YYYY-MM-DD)",
                                 param_hint=option) from exc


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
) -> None:
    """Recompute daily_metrics (short-sale, lit, price, OTC blocks and the composite score).

    Short volume is a proxy for dealer-filled buying, not observed buying.
    """
    settings = config()
    first, last = _parse_date(start, "--start"), _parse_date(end, "--end")
    symbols = [t for t in (tickers or "").split(",") if t.strip()] or None
    with open_writer(settings.db_path) as writer, Progress(
        TextColumn("[bold]daily_metrics"), BarColumn(), TextColumn("{task.completed:,.0f} rows"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:
        task = bar.add_task("build", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = build_metrics(writer, settings, symbols=symbols, start=first, end=last,
                               progress=advance)
    span = f" from {result.start}" if result.start else ""
    span += f" to {result.end}" if result.end else ""
    console.print(f"daily_metrics: wrote {result.rows_written:,} rows for "
                  f"{result.symbols:,} symbols{span} in {result.seconds:.2f}s")
    if result.missing_symbols:
        console.print(f"[yellow]no data for:[/] {', '.join(result.missing_symbols)}")
