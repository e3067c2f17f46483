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
from darkpool_analysis.store import (
    connect_readonly,
    disk_bytes,
    is_synthetic,
    read_meta,
    read_owed,
    table_exists,
)

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
    #: ``database_meta`` entries (``synthetic``, ``synthetic_note``, ...).
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """Whether the database is marked synthetic (``darkpool demo``)."""
        return is_synthetic(self.meta)


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
            meta=read_meta(conn),
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


# -- per-ticker coverage, symbols and overlap --------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A table one ticker's data comes from, with its date and symbol columns."""

    name: str
    table: str
    date_column: str
    symbol_column: str
    weekly: bool = False
    #: Column name in :func:`symbols` (sessions, or weeks for a weekly source, with data).
    column: str = ""


#: The sources ``db info --ticker`` and ``db symbols`` report, raw first, then the build.
SOURCES: tuple[Source, ...] = (
    Source("FINRA short", "finra_short_daily_raw", "trade_date", "symbol_norm",
           column="short"),
    Source("prices", "prices_daily", "date", "symbol", column="prices"),
    Source("lit direction", "lit_direction_daily", "date", "symbol", column="lit"),
    Source("FINRA OTC weekly", "finra_otc_weekly_raw", "week_start_date", "symbol_norm",
           weekly=True, column="otc"),
    Source("daily_metrics", "daily_metrics", "date", "symbol", column="metrics"),
)
#: Sources compared for overlap (the build's own table is derived, not a source).
RAW_SOURCES: tuple[Source, ...] = tuple(s for s in SOURCES if s.table != "daily_metrics")


@dataclass(frozen=True)
class Coverage:
    """One source's coverage of a ticker (or of the whole database): dates with data, the
    first and last, and the sessions (weeks, for a weekly source) missing in between."""

    source: Source
    days: int
    first: dt.date | None
    last: dt.date | None
    gaps: tuple[dt.date, ...] = ()

    @property
    def span_end(self) -> dt.date | None:
        """Last day covered: a weekly source's last week runs to its Friday."""
        if self.last is None:
            return None
        return self.last + dt.timedelta(days=4) if self.source.weekly else self.last


def _expected(first: dt.date, last: dt.date, weekly: bool) -> pd.DatetimeIndex:
    if weekly:
        return pd.date_range(first, last, freq="W-MON")
    return trading_calendar.sessions_index(first, last)


def _coverage(conn: duckdb.DuckDBPyConnection, source: Source, symbol: str) -> Coverage:
    if not table_exists(conn, source.table):
        return Coverage(source, 0, None, None)
    dates = conn.execute(
        f"SELECT DISTINCT {source.date_column} AS d FROM {source.table} "
        f"WHERE {source.symbol_column} = ? ORDER BY d", [symbol]).df()["d"]
    if dates.empty:
        return Coverage(source, 0, None, None)
    have = pd.DatetimeIndex(pd.to_datetime(dates))
    first, last = have[0].date(), have[-1].date()
    expected = _expected(first, last, source.weekly)
    missing = expected.difference(have.as_unit(expected.unit))
    return Coverage(source, len(have), first, last, tuple(ts.date() for ts in missing))


def _all_symbols(conn: duckdb.DuckDBPyConnection) -> list[str]:
    parts = [f"SELECT DISTINCT {s.symbol_column} AS symbol FROM {s.table}"
             for s in SOURCES if table_exists(conn, s.table)]
    if not parts:
        return []
    return [str(r[0]) for r in conn.execute(
        " UNION ".join(parts) + " ORDER BY symbol").fetchall()]


def ticker_coverage(db_path: Path, ticker: str) -> list[Coverage]:
    """Each source's first/last date and gaps for one ticker (any spelling).

    Raises :class:`NoDataError` naming close symbols when no source has the ticker.
    """
    import difflib

    from darkpool_analysis.errors import NoDataError
    from darkpool_analysis.sandbox import normalise_ticker

    symbol = normalise_ticker(ticker)
    conn = connect_readonly(db_path)
    try:
        coverage = [_coverage(conn, source, symbol) for source in SOURCES]
        if not any(c.days for c in coverage):
            known = _all_symbols(conn)
            close = difflib.get_close_matches(symbol, known, n=5, cutoff=0.5)
            detail = (f"close symbols: {', '.join(close)}" if close
                      else f"none of its {len(known):,} symbols is close")
            raise NoDataError(f"unknown ticker {symbol}: no source has it ({detail})",
                              hint="`darkpool db symbols --like ...` lists what is there")
    finally:
        conn.close()
    return coverage


def non_overlapping(coverage: list[Coverage]) -> list[tuple[Coverage, Coverage]]:
    """Pairs of raw sources that both have data but whose date ranges do not overlap (the
    metrics then never combine them: e.g. prices for 2019, short volume for 2021)."""
    present = [c for c in coverage if c.days and c.source in RAW_SOURCES]
    pairs = []
    for i, left in enumerate(present):
        for right in present[i + 1:]:
            assert left.first and right.first and left.span_end and right.span_end
            if left.span_end < right.first or right.span_end < left.first:
                pairs.append((left, right))
    return pairs


def starts_or_ends_apart(coverage: list[Coverage]) -> list[tuple[Coverage, str]]:
    """Raw sources that start later or end earlier than the FINRA short data (which every
    panel uses): e.g. prices from 2021-01-11 under short data from 2020-12-01. Returns
    (source, sentence) pairs."""
    short = next((c for c in coverage if c.source.table == "finra_short_daily_raw"), None)
    if short is None or not short.days or short.first is None or short.last is None:
        return []
    out = []
    for item in coverage:
        if item is short or not item.days or item.source not in RAW_SOURCES:
            continue
        assert item.first is not None and item.span_end is not None
        parts = []
        if item.first > short.first:
            lag = len(trading_calendar.sessions_between(short.first, item.first)) - 1
            parts.append(f"starts {item.first}, {lag:,} session(s) after the FINRA short data "
                         f"({short.first})")
        if item.span_end < short.last:
            lag = len(trading_calendar.sessions_between(item.span_end, short.last)) - 1
            parts.append(f"ends {item.last}, {lag:,} session(s) before it ({short.last})")
        if parts:
            out.append((item, " and ".join(parts)))
    return out


def database_coverage(db_path: Path) -> list[Coverage]:
    """Each raw source's first/last date over every symbol (no gap list: ``db info`` shows the
    short-file gaps per facility)."""
    conn = connect_readonly(db_path)
    try:
        out = []
        for source in RAW_SOURCES:
            if not table_exists(conn, source.table):
                out.append(Coverage(source, 0, None, None))
                continue
            days, first, last = conn.execute(
                f"SELECT count(DISTINCT {source.date_column}), min({source.date_column}), "
                f"max({source.date_column}) FROM {source.table}").fetchone() or (0, None, None)
            out.append(Coverage(source, int(days), first, last))
        return out
    finally:
        conn.close()


def symbols(db_path: Path, like: str | None = None) -> pd.DataFrame:
    """Every symbol in any source: days (weeks for OTC) per source and the overall first/last
    date, sorted by symbol; ``like`` keeps symbols containing it (case-insensitive)."""
    conn = connect_readonly(db_path)
    try:
        parts = [
            f"SELECT {s.symbol_column} AS symbol, '{s.column}' AS source, "
            f"count(DISTINCT {s.date_column}) AS n, min({s.date_column}) AS first, "
            f"max({s.date_column}) AS last FROM {s.table} "
            f"WHERE $like IS NULL OR {s.symbol_column} ILIKE '%' || $like || '%' GROUP BY 1"
            for s in SOURCES if table_exists(conn, s.table)]
        names = [s.column for s in SOURCES]
        if not parts:
            return pd.DataFrame(columns=["symbol", *names, "first", "last"])
        pivot = ", ".join(f"coalesce(max(n) FILTER (WHERE source = '{name}'), 0) AS \"{name}\""
                          for name in names)
        return conn.execute(
            f"WITH per AS ({' UNION ALL '.join(parts)}) "
            f"SELECT symbol, {pivot}, min(first) AS first, max(last) AS last "
            "FROM per GROUP BY symbol ORDER BY symbol",
            {"like": like.strip() if like else None}).df()
    finally:
        conn.close()
