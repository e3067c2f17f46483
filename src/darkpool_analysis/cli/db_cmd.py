"""``darkpool db info``: what the database holds, where, and what is missing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from darkpool_analysis.cli.app import config, console, db_app, handle_errors

if TYPE_CHECKING:
    import pandas as pd


def _frame_table(title: str, frame: pd.DataFrame) -> Table:

    table = Table(title=title, title_justify="left", header_style="bold cyan")
    for column in frame.columns:
        table.add_column(str(column), justify="right" if frame[column].dtype.kind in "iuf"
                         else "left")
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


@db_app.command("info")
@handle_errors
def info(recent: int = 10) -> None:
    """Path, schema version, row counts, coverage, recent ingest outcomes and data gaps."""
    from darkpool_analysis import inventory
    from darkpool_analysis.store import describe_owed

    cfg = config()
    inv = inventory.collect(cfg.db_path, recent=recent)
    console.print(f"[bold]database[/] {inv.path}  ({inv.size_bytes / 1e6:,.1f} MB)")
    console.print(f"[bold]schema version[/] {inv.schema_version}")
    console.print(_frame_table("Tables", inv.tables))
    _print_storage(cfg.db_path)
    owed = describe_owed(inv.metrics_owed)
    if owed is not None:
        console.print(f"[bold yellow]warning:[/] {owed}", highlight=False)
    if not inv.short_by_facility.empty:
        console.print(_frame_table("FINRA Reg SHO short volume by facility",
                                   inv.short_by_facility))
    for name, frame in inv.extra.items():
        if not frame.empty:
            console.print(_frame_table(name.replace("_", " "), frame))
    if inv.short_gaps:
        for facility, missing in inv.short_gaps.items():
            if missing:
                shown = ", ".join(d.isoformat() for d in missing[:12])
                more = f" (+{len(missing) - 12} more)" if len(missing) > 12 else ""
                console.print(f"[yellow]data gaps[/] {facility}: {len(missing)} session(s) "
                              f"without a file: {shown}{more}")
            else:
                console.print(f"[green]no gaps[/] {facility}: every session in range has a file")
    if not inv.outcome_counts.empty:
        console.print(_frame_table("Ingest outcomes", inv.outcome_counts))
    if not inv.recent_log.empty:
        console.print(_frame_table("Last ingest log entries", inv.recent_log))


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
