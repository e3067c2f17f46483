"""Reads of the store's own bookkeeping: metadata, metrics still owed."""

from __future__ import annotations

import duckdb
import pandas as pd

from darkpool_analysis.store.schema import META_SYNTHETIC, table_exists


def read_meta(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Every ``database_meta`` entry (empty for databases older than schema version 4)."""
    if not table_exists(conn, "database_meta"):
        return {}
    return {str(k): str(v) for k, v in
            conn.execute("SELECT key, value FROM database_meta ORDER BY key").fetchall()}


def read_owed(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The ``daily_metrics`` rebuilds still owed: ``symbol`` (None = every symbol),
    ``from_date``, ``source_table``, one row per (symbol, source table) with its earliest date.
    Empty when nothing is owed (or for databases older than schema version 5)."""
    if not table_exists(conn, "metrics_owed"):
        return pd.DataFrame({"symbol": [], "from_date": [], "source_table": []})
    return conn.execute("""
        SELECT symbol, min(from_date) AS from_date, source_table FROM metrics_owed
        GROUP BY symbol, source_table ORDER BY from_date, symbol NULLS FIRST, source_table
    """).df()


def describe_owed(owed: pd.DataFrame) -> str | None:
    """One sentence saying what ``daily_metrics`` still owes (None when nothing)."""
    if owed.empty:
        return None
    first = pd.Timestamp(owed["from_date"].min()).date()
    every = owed["symbol"].isna().any()
    symbols = owed["symbol"].dropna().unique()
    who = "every symbol" if every else (
        ", ".join(sorted(symbols)[:5]) + (f" (+{len(symbols) - 5} more)" if len(symbols) > 5
                                          else ""))
    return (f"daily_metrics is out of date: raw data changed from {first} on ({who}) and the "
            "rebuild has not finished; run `darkpool build` (or any ingest) to bring it up "
            "to date")


def is_synthetic(meta: dict[str, str]) -> bool:
    """Whether the metadata of :func:`read_meta` marks the database as synthetic."""
    return meta.get(META_SYNTHETIC, "").lower() == "true"


