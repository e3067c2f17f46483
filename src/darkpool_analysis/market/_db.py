"""The market view's database edge: read-only connections, coverage and the synthetic label."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.errors import NoDataError, StoreError
from darkpool_analysis.store import connect_readonly, is_synthetic, read_meta, table_exists
from darkpool_analysis.synthetic import SYNTHETIC_LABEL


@dataclass(frozen=True)
class DbContext:
    """What every market query needs to know about the database it reads."""

    path: Path
    settings: Settings
    synthetic: bool

    @property
    def label(self) -> str | None:
        """:data:`~darkpool_analysis.synthetic.SYNTHETIC_LABEL` for a synthetic database."""
        return SYNTHETIC_LABEL if self.synthetic else None

    def attrs(self) -> dict[str, object]:
        """The frame ``attrs`` every market result carries (outputs label themselves from it)."""
        return {"db_path": str(self.path), "synthetic": self.synthetic, "label": self.label}


def resolve(db_path: Path | None, settings: Settings | None) -> tuple[Path, Settings]:
    """The database path (default ``settings.db_path``) and settings (default loaded)."""
    cfg = settings if settings is not None else load_config()
    return (Path(db_path) if db_path is not None else cfg.db_path), cfg


@contextlib.contextmanager
def open_db(db_path: Path | None = None,
            settings: Settings | None = None) -> Iterator[tuple[duckdb.DuckDBPyConnection,
                                                                DbContext]]:
    """Open the published database read-only; raise :class:`StoreError` without daily_metrics."""
    path, cfg = resolve(db_path, settings)
    conn = connect_readonly(path)
    try:
        if not table_exists(conn, "daily_metrics"):
            raise StoreError(f"{path} has no daily_metrics table",
                             hint="run `darkpool build` to create and fill it")
        yield conn, DbContext(path, cfg, is_synthetic(read_meta(conn)))
    finally:
        conn.close()


def coverage(conn: duckdb.DuckDBPyConnection) -> tuple[dt.date, dt.date]:
    """First and last date of ``daily_metrics``; :class:`NoDataError` when it is empty."""
    row = conn.execute("SELECT min(date), max(date) FROM daily_metrics").fetchone()
    if row is None or row[0] is None:
        raise NoDataError("daily_metrics is empty",
                          hint="ingest data and run `darkpool build` first")
    return row[0], row[1]


def numeric_columns(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The numeric ``daily_metrics`` columns (DOUBLE/INTEGER/...), in table order."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'daily_metrics' ORDER BY ordinal_position").fetchall()
    numeric = ("DOUBLE", "FLOAT", "REAL", "DECIMAL", "INTEGER", "BIGINT", "SMALLINT",
               "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER")
    return [str(name) for name, kind in rows if str(kind).upper().startswith(numeric)]


def database_symbols(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every symbol in ``daily_metrics`` (the ``all`` universe), sorted."""
    return [str(r[0]) for r in conn.execute(
        "SELECT DISTINCT symbol FROM daily_metrics ORDER BY symbol").fetchall()]


def to_timestamp(day: dt.date | str | pd.Timestamp) -> pd.Timestamp:
    """A date-like value as a midnight Timestamp."""
    return pd.Timestamp(day).normalize()
