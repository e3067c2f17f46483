"""``darkpool db info``: what the database holds, where, and what is missing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from darkpool_analysis.cli.app import config, console, db_app, handle_errors

if TYPE_CHECKING:
    import pandas as pd

    from darkpool_analysis.inventory import Coverage


def _frame_table(title: str, frame: pd.DataFrame, *, compact: bool = False) -> Table:
    """A Rich table of a small frame; ``compact`` drops the vertical borders (wide tables)."""
    from rich import box

    table = Table(title=title, title_justify="left", header_style="bold cyan",
                  box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD)
    for column in frame.columns:
        values = frame[column].dropna()
        is_date = frame[column].dtype.kind == "M" or (
            len(values) > 0 and isinstance(values.iloc[0], dt.date))
        # Dates never wrap or shorten (other columns give way at 80 columns).
        table.add_column(str(column), justify="right" if frame[column].dtype.kind in "iuf"
                         else "left", min_width=10 if is_date else None, no_wrap=is_date)
    for row in frame.itertuples(index=False):  # display only, a handful of rows
        table.add_row(*[_cell(v) for v in row])
    return table


def _cell(value: object) -> str:
    """Text for one cell: thousands separators, dates without a midnight time."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, pd.Timestamp) and value == value.normalize():
        return value.date().isoformat()
    return str(value)


#: Gap dates listed per source (the rest are counted).
SHOWN_GAPS = 12


def _dates(days: Sequence[dt.date]) -> str:
    shown = ", ".join(d.isoformat() for d in days[:SHOWN_GAPS])
    return shown + (f" (+{len(days) - SHOWN_GAPS:,} more)" if len(days) > SHOWN_GAPS else "")


def _print_overlap(pairs: list[tuple[Coverage, Coverage]], who: str) -> None:
    for left, right in pairs:
        console.print(f"[bold yellow]warning:[/] {who}{left.source.name} ({left.first} .. "
                      f"{left.last}) and {right.source.name} ({right.first} .. {right.last}) "
                      "do not overlap: no day combines them", highlight=False)


def _print_ticker(db_path: Path, ticker: str) -> None:
    """Each source's first/last date and gaps for one ticker, and sources that never meet."""
    from darkpool_analysis import inventory
    from darkpool_analysis.sandbox import normalise_ticker

    coverage = inventory.ticker_coverage(db_path, ticker)
    symbol = normalise_ticker(ticker)
    table = Table(title=f"{symbol}: coverage per source", title_justify="left",
                  header_style="bold cyan")
    for column in ("source", "days", "first", "last", "gaps"):
        table.add_column(column, justify="right" if column in ("days", "gaps") else "left")
    for item in coverage:
        unit = "weeks" if item.source.weekly else "sessions"
        table.add_row(item.source.name,
                      f"{item.days:,} {unit}" if item.days else "[dim]none[/]",
                      str(item.first or ""), str(item.last or ""),
                      f"{len(item.gaps):,}" if item.days else "")
    console.print(table)
    for item in coverage:
        if item.gaps:
            unit = "week(s)" if item.source.weekly else "session(s)"
            console.print(f"[yellow]data gaps[/] {item.source.name}: {len(item.gaps):,} {unit} "
                          f"without data between {item.first} and {item.last}: "
                          f"{_dates(item.gaps)}", highlight=False)
    pairs = inventory.non_overlapping(coverage)
    _print_overlap(pairs, f"{symbol}: ")
    apart = {id(c) for pair in pairs for c in pair}
    for item, sentence in inventory.starts_or_ends_apart(coverage):
        if id(item) not in apart:
            console.print(f"[yellow]note:[/] {symbol} {item.source.name}: {sentence}; those "
                          "days have none", highlight=False)


@db_app.command("info")
@handle_errors
def info(
    recent: Annotated[int, typer.Option("--recent", min=0,
                                        help="Ingest log entries shown.")] = 10,
    ticker: Annotated[str | None, typer.Option(
        "--ticker", help="One ticker's coverage: each source's first/last date and gaps.")
    ] = None,
) -> None:
    """Path, schema version, row counts, coverage, recent ingest outcomes and data gaps.

    With --ticker: that ticker's coverage per source (FINRA short, prices, lit direction,
    OTC weekly, daily_metrics), its gaps, and sources whose date ranges do not overlap.
    """
    from darkpool_analysis import inventory
    from darkpool_analysis.store import describe_owed

    cfg = config()
    inv = inventory.collect(cfg.db_path, recent=recent)
    if inv.synthetic:
        from darkpool_analysis.store import META_SYNTHETIC_NOTE
        from darkpool_analysis.synthetic import SYNTHETIC_LABEL

        note = inv.meta.get(META_SYNTHETIC_NOTE, "").removeprefix(SYNTHETIC_LABEL)
        note = note.removeprefix(":").strip()
        console.print(f"[bold red]{SYNTHETIC_LABEL}[/]" + (f": {escape(note)}" if note else ""),
                      highlight=False, soft_wrap=True)
    console.print(f"[bold]database[/] {inv.path}  ({inv.size_bytes / 1e6:,.1f} MB)"
                  + ("  [bold red](SYNTHETIC)[/]" if inv.synthetic else ""), highlight=False,
                  soft_wrap=True)
    console.print(f"[bold]schema version[/] {inv.schema_version}")
    owed = describe_owed(inv.metrics_owed)
    if owed is not None:
        console.print(f"[bold yellow]warning:[/] {owed}", highlight=False)
    if ticker is not None:
        _print_ticker(cfg.db_path, ticker)
        return
    console.print(_frame_table("Tables", inv.tables))
    _print_storage(cfg.db_path)
    if not inv.short_by_facility.empty:
        console.print(_frame_table("FINRA Reg SHO short volume by facility",
                                   inv.short_by_facility))
    for name, frame in inv.extra.items():
        if not frame.empty:
            console.print(_frame_table(name.replace("_", " "), frame))
    if inv.short_gaps:
        for facility, missing in inv.short_gaps.items():
            if missing:
                console.print(f"[yellow]data gaps[/] {facility}: {len(missing):,} session(s) "
                              f"without a file: {_dates(missing)}", highlight=False)
            else:
                console.print(f"[green]no gaps[/] {facility}: every session in range has a file")
    _print_overlap(inventory.non_overlapping(inventory.database_coverage(cfg.db_path)), "")
    if not inv.outcome_counts.empty:
        console.print(_frame_table("Ingest outcomes", inv.outcome_counts))
    if not inv.recent_log.empty:
        console.print(_frame_table("Last ingest log entries", inv.recent_log))


@db_app.command("symbols")
@handle_errors
def symbols_cmd(
    like: Annotated[str | None, typer.Option(
        "--like", help="Only symbols containing this text (case-insensitive), e.g. GM.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1,
                                       help="Symbols listed (the rest are counted).")] = 200,
) -> None:
    """Every symbol in the database: days per source (weeks for OTC) and its first/last date."""
    from darkpool_analysis import inventory

    cfg = config()
    frame = inventory.symbols(cfg.db_path, like)
    what = f"symbol(s) containing {like!r}" if like else "symbol(s)"
    if frame.empty:
        console.print(f"no {what} in {cfg.db_path}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1 if like else 0)
    shown = frame.head(limit)
    title = (f"{len(frame):,} {what}" + (f" (first {limit:,}; --limit)"
                                         if len(frame) > limit else "")
             + ": sessions with data per source (OTC: weeks)")
    console.print(_frame_table(title, shown, compact=True))


def _print_storage(db_path: object) -> None:
    """Generations, segment sizes and reclaimable space of the store."""
    from pathlib import Path

    from darkpool_analysis.store import describe_storage

    storage = describe_storage(Path(str(db_path)))
    if storage is None:
        return
    console.print(
        f"[bold]storage[/] generation {storage['generation']:,} "
        f"({storage['generations_kept']:,} catalogue(s) kept), "
        f"{storage['data_bytes'] / 1e6:,.1f} MB of segment files, "
        f"{storage['live_bytes'] / 1e6:,.1f} MB in use, "
        f"{storage['reclaimable_bytes'] / 1e6:,.1f} MB reclaimable "
        "(held for readers of older generations until the grace period ends; "
        "`darkpool db compact` merges deltas and collects garbage)", highlight=False)
    tables = storage["tables"].assign(MB=lambda f: (f["bytes"] / 1e6).round(2)).drop(
        columns="bytes")
    console.print(_frame_table("Published segments", tables))


@db_app.command("compact")
@handle_errors
def compact(
    full: bool = typer.Option(False, "--full", help="Rewrite every table as one segment."),
    now: bool = typer.Option(False, "--now",
                             help="Delete unreferenced files at once (no grace period: a "
                                  "reader holding an older generation may fail)."),
) -> None:
    """Merge piled-up deltas, publish, and delete files no generation needs any more."""
    from darkpool_analysis.store import describe_storage, open_writer

    cfg = config()
    before = describe_storage(cfg.db_path)
    with open_writer(cfg.db_path, gc_grace_seconds=0.0 if now else None) as writer:
        changed = writer.compact(full=full)
    after = describe_storage(cfg.db_path)
    if before is None or after is None:
        console.print("nothing to compact (a single-file database)")
        return
    console.print(
        f"{'compacted' if changed else 'nothing to merge'}; segment files "
        f"{before['data_bytes'] / 1e6:,.1f} MB -> {after['data_bytes'] / 1e6:,.1f} MB, "
        f"{after['reclaimable_bytes'] / 1e6:,.1f} MB still held for readers", highlight=False)
