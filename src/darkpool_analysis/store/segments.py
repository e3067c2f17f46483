"""Writing segment files straight from Arrow (the build's write path, off DuckDB's writer).

``daily_metrics`` batches go to one Parquet file per calendar year (rows arrive sorted by
symbol and date, so each file is too): a one-date scan reads one year's file and a
one-symbol read prunes row groups by their symbol statistics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from darkpool_analysis.store.writer import Writer

#: Rows per Parquet row group: small enough for symbol pruning, large enough to scan fast.
ROW_GROUP_ROWS = 131_072

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(), "DOUBLE": pa.float64(), "DATE": pa.date32(),
    "BOOLEAN": pa.bool_(), "BIGINT": pa.int64(), "INTEGER": pa.int32(),
    "TIMESTAMP": pa.timestamp("us"), "FLOAT": pa.float32(),
}


def arrow_schema(writer: Writer, table: str) -> pa.Schema:
    """The Arrow schema matching ``table``'s SQL types (``daily_metrics_columns`` for
    ``daily_metrics``), so every file of a table has identical physical types."""
    source = "daily_metrics_columns" if table == "daily_metrics" else table
    rows = writer.conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' "
        "AND table_name = ? ORDER BY ordinal_position", [source]).fetchall()
    return pa.schema([pa.field(str(c), _ARROW_TYPES[str(t)]) for c, t in rows])


class YearSegmentWriter:
    """Append Arrow batches of one table into per-year Parquet files of one new segment.

    Files are fsynced by :meth:`finish`; until :meth:`Writer.add_segment` commits them they
    are unreferenced (a crash leaves them to garbage collection, never to readers).
    """

    def __init__(self, writer: Writer, table: str, date_column: str = "date") -> None:
        self._writer = writer
        self._table = table
        self._date_column = date_column
        self.schema = arrow_schema(writer, table)
        self._files: dict[int, tuple[Path, pq.ParquetWriter]] = {}
        self.rows = 0

    def write(self, batch: pa.Table) -> None:
        """Cast ``batch`` to the table's schema and append it, split by year."""
        if batch.num_rows == 0:
            return
        batch = batch.select(self.schema.names).cast(self.schema)
        years = pc.year(batch.column(self._date_column)).to_numpy(zero_copy_only=False)
        # Rows are sorted by (symbol, date), not by year: split with one stable argsort.
        order = np.argsort(years, kind="stable")
        sorted_years = years[order]
        bounds = np.flatnonzero(np.diff(sorted_years)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(order)]])
        single = len(starts) == 1
        for lo, hi in zip(starts, ends, strict=True):
            year = int(sorted_years[lo])
            part = batch if single else batch.take(pa.array(order[lo:hi]))
            self._file(year).write_table(part, row_group_size=ROW_GROUP_ROWS)
        self.rows += batch.num_rows

    def _file(self, year: int) -> pq.ParquetWriter:
        if year not in self._files:
            path = self._writer.new_segment_path(self._table, f"-{year}")
            self._files[year] = (path, pq.ParquetWriter(path, self.schema,
                                                        compression="snappy"))
        return self._files[year][1]

    def finish(self) -> list[Path]:
        """Close and fsync every file; returns them in year order."""
        paths = []
        for year in sorted(self._files):
            path, handle = self._files[year]
            handle.close()
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            paths.append(path)
        self._files.clear()
        return paths

    def abort(self) -> None:
        """Close and delete what was written (the build failed before committing)."""
        for path, handle in self._files.values():
            handle.close()
            path.unlink(missing_ok=True)
        self._files.clear()


__all__ = ["ROW_GROUP_ROWS", "YearSegmentWriter", "arrow_schema"]
