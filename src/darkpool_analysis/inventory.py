"""What the database holds: row counts, date coverage, recent ingest outcomes and data gaps.

Read-only; used by ``darkpool db info`` and by error messages that must name existing coverage.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from darkpool_analysis import trading_calendar
from darkpool_analysis.store import connect_readonly, disk_bytes, read_owed, table_exists

#: Tables shown by ``db info`` with the date column that defines their coverage.
COVERAGE_COLUMNS: dict[str, str] = {
    "finra_short_daily_raw": "trade_date",
    "prices_daily": "date",
    "lit_direction_daily": "date",
    "daily_metrics": "date",
    "finra_otc_weekly_raw": "week_start_date",
    "finra_otc_weekly_firm_raw": "week_start_date",
}


@dataclass
class Inventory:
    """A snapshot of the database contents for display."""

    path: Path
    size_bytes: int
    schema_version: int
    tables: pd.DataFrame  # table, rows, first, last
    short_by_facility: pd.DataFrame  # facility, files, rows, first, last
    short_gaps: dict[str, list[dt.date]] = field(default_factory=dict)
    recent_log: pd.DataFrame = field(default_factory=pd.DataFrame)
    outcome_counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: ``daily_metrics`` rebuilds still owed (``store.read_owed``); empty when up to date.
    metrics_owed: pd.DataFrame = field(default_factory=pd.DataFrame)


def short_gaps(conn: duckdb.DuckDBPyConnection) -> dict[str, list[dt.date]]:
    """Sessions inside each facility's covered range that have no ingested file."""
    files = conn.execute(
        "SELECT split_part(partition_key, '/', 1) AS facility, "
        "CAST(split_part(partition_key, '/', 2) AS DATE) AS trade_date "
        "FROM source_files WHERE dataset = 'finra_short'"
    ).df()
    gaps: dict[str, list[dt.date]] = {}
    if files.empty:
        return gaps
    files["trade_date"] = pd.to_datetime(files["trade_date"])
    for facility, group in files.groupby("facility", sort=True):
        sessions = trading_calendar.sessions_index(group["trade_date"].min(),
                                                   group["trade_date"].max())
        missing = sessions.difference(pd.DatetimeIndex(group["trade_date"]))
        gaps[str(facility)] = [ts.date() for ts in missing]
    return gaps


def collect(db_path: Path, *, recent: int = 10) -> Inventory:
    """Read everything ``db info`` shows from the published database."""
    conn = connect_readonly(db_path)
    try:
        version_row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        rows = []
        for table in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'main' ORDER BY table_name"
        ).fetchall():
            name = str(table[0])
            date_col = COVERAGE_COLUMNS.get(name)
            if date_col:
                count, first, last = conn.execute(
                    f"SELECT count(*), min({date_col}), max({date_col}) FROM {name}"
                ).fetchone() or (0, None, None)
            else:
                count_row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
                count, first, last = (count_row[0] if count_row else 0), None, None
            rows.append({"table": name, "rows": int(count), "first": first, "last": last})
        by_facility = conn.execute(
            "SELECT facility, count(DISTINCT trade_date) AS files, count(*) AS rows, "
            "min(trade_date) AS first, max(trade_date) AS last "
            "FROM finra_short_daily_raw GROUP BY facility ORDER BY facility"
        ).df()
        recent_log = conn.execute(
            "SELECT logged_at, dataset, partition_key, outcome, rows, message "
            "FROM ingest_log ORDER BY id DESC LIMIT ?", [recent]
        ).df()
        outcomes = conn.execute(
            "SELECT dataset, outcome, count(*) AS n, max(logged_at) AS last "
            "FROM ingest_log GROUP BY dataset, outcome ORDER BY dataset, outcome"
        ).df()
        extra: dict[str, pd.DataFrame] = {}
        if table_exists(conn, "finra_otc_weekly_raw"):
            extra["otc_by_tier"] = conn.execute(
                "SELECT tier, count(DISTINCT week_start_date) AS weeks, count(*) AS rows, "
                "min(week_start_date) AS first_week, max(week_start_date) AS newest_week "
                "FROM finra_otc_weekly_raw GROUP BY tier ORDER BY tier"
            ).df()
        return Inventory(
            path=Path(db_path),
            size_bytes=disk_bytes(db_path),
            schema_version=int(version_row[0]) if version_row and version_row[0] else 0,
            tables=pd.DataFrame(rows),
            short_by_facility=by_facility,
            short_gaps=short_gaps(conn),
            recent_log=recent_log,
            outcome_counts=outcomes,
            extra=extra,
            metrics_owed=read_owed(conn),
        )
    finally:
        conn.close()


def symbol_coverage(db_path: Path, symbol: str) -> tuple[dt.date | None, dt.date | None]:
    """First and last ``daily_metrics`` date of a symbol (None, None when absent)."""
    conn = connect_readonly(db_path)
    try:
        row = conn.execute(
            "SELECT min(date), max(date) FROM daily_metrics WHERE symbol = ?", [symbol]
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        return None, None
    return row[0], row[1]
