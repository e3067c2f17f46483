"""Writing segment files straight from Arrow (the build's write path, off DuckDB's writer).

A build's ``daily_metrics`` batches (tiles of symbols x half a year, symbol then date inside
each tile) go to the Parquet files of one segment (two, written by two threads, for a large
build), row groups of :data:`ROW_GROUP_ROWS`, text columns kept dictionary-encoded and floats
stored plain: the write costs little more than the bytes, and both one symbol's history and
one date of every symbol prune row groups by their statistics. Compaction rewrites the table
as one file per calendar year.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import io
import logging
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from darkpool_analysis.store.schema import stored_columns

if TYPE_CHECKING:
    from darkpool_analysis.store.writer import Writer

log = logging.getLogger(__name__)

#: Rows per Parquet row group. The build writes tiles of about 1,200 symbols x half a year
#: (:func:`~darkpool_analysis.metrics.tile_order`); row groups this small let one symbol's
#: read decode one group per tile and one date's read the groups of one tile (measured on a
#: 3 M-row file: one symbol 35 ms, one date 44 ms; 131,072-row groups: 101 ms and 46 ms; a
#: plain symbol-major file: 16 ms and 265-480 ms).
ROW_GROUP_ROWS = 16_384

#: Calendar days per tile of ``daily_metrics`` rows in its files (about half a year of
#: sessions; see :func:`~darkpool_analysis.metrics.tile_order`).
TILE_DAYS = 183

#: Write segment files with ``O_DIRECT`` where the file system allows it (see
#: :class:`DirectFile`); otherwise through the page cache with a flushing thread.
DIRECT_WRITES = True
#: Bytes per direct write: a multiple of every device's logical block size.
DIRECT_BLOCK = 4 << 20
_DIRECT_ALIGN = 4096

#: Columns whose row-group min/max statistics readers prune by (a symbol, a date range).
_PRUNING_COLUMNS = ("symbol", "symbol_norm", "date", "trade_date", "week_start_date")

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(), "DOUBLE": pa.float64(), "DATE": pa.date32(),
    "BOOLEAN": pa.bool_(), "BIGINT": pa.int64(), "INTEGER": pa.int32(),
    "TIMESTAMP": pa.timestamp("us"), "FLOAT": pa.float32(),
}


def arrow_schema(writer: Writer, table: str, *, every_column: bool = False) -> pa.Schema:
    """The Arrow schema of ``table``'s segment files: its stored columns (not the derived
    ones, see :data:`~.schema.DAILY_METRICS_DERIVED`, unless ``every_column``) with types
    matching their SQL types (``daily_metrics_columns`` for ``daily_metrics``), so every
    file of a table has identical physical types."""
    source = "daily_metrics_columns" if table == "daily_metrics" else table
    rows = writer.conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' "
        "AND table_name = ? ORDER BY ordinal_position", [source]).fetchall()
    types = {str(c): _ARROW_TYPES[str(t)] for c, t in rows}
    names = list(types) if every_column else stored_columns(table, list(types))
    return pa.schema([pa.field(c, types[c]) for c in names])


@functools.lru_cache(maxsize=4096)
def file_columns(path: str) -> frozenset[str]:
    """The column names a segment file stores (its footer; files never change)."""
    return frozenset(pq.read_schema(path).names)


def _file_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet options measured side by side on a 1.5 M-row build batch (CPU s: pyarrow's
    defaults 13x, snappy everywhere 0.73, these 0.46; IPC 0.14): dictionary pages and snappy
    only for the small columns (text, dates, flags), floats stored plain (snappy finds nothing
    in them), min/max statistics only on the key columns readers prune by."""
    text = [f.name for f in schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
    keys = [name for name in _PRUNING_COLUMNS if name in schema.names]
    return {"compression": {f.name: "none" if pa.types.is_floating(f.type) else "snappy"
                            for f in schema},
            "use_dictionary": text, "write_statistics": keys}


def tiled(table: pa.Table) -> pa.Table:
    """``daily_metrics`` rows (any order) in the order the build writes them: tiles of
    :data:`TILE_DAYS` calendar days, symbol then date inside each (for rows written by tools
    and tests, so every file of the table prunes the same way)."""
    if table.num_rows == 0:
        return table
    days = pc.cast(pc.cast(table.column("date"), pa.date32()), pa.int32())
    keys = pa.table({"tile": pc.divide(days, TILE_DAYS),
                     "symbol": pc.cast(table.column("symbol"), pa.string()), "day": days})
    order = pc.sort_indices(keys, sort_keys=[("tile", "ascending"), ("symbol", "ascending"),
                                             ("day", "ascending")])
    return table.take(order)


def _normalise(batch: pa.Table, target: pa.Schema) -> pa.Table:
    """``batch`` in ``target``'s column order and types, except that text columns may stay
    dictionary-encoded (the build's label columns: Parquet keeps the dictionaries, which is
    much cheaper than re-encoding plain strings)."""
    columns = []
    fields = []
    for field in target:
        column = batch.column(field.name)
        kind = column.type
        if pa.types.is_string(field.type) and pa.types.is_dictionary(kind) and \
                pa.types.is_string(kind.value_type):
            fields.append(pa.field(field.name, kind))
        else:
            if kind != field.type:
                column = column.cast(field.type)
            fields.append(field)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


class DirectFile(io.RawIOBase):
    """A new file written with ``O_DIRECT``: bytes go from one page-aligned buffer straight
    to the device, never through the page cache.

    Measured on the 2-core machine, 1.7 GB (a full build's segment files): buffered writes
    cost 0.4-4.0 s of system CPU (copying into page-cache pages the virtual machine backs
    on first touch; the spread is that first touch), ``O_DIRECT`` 0.08 s, at the same wall
    time as a buffered write plus ``fsync`` (1.0 s). The writing thread waits for the
    device instead of using a core. :meth:`close` writes the unaligned tail without
    ``O_DIRECT`` and ``fsync``s: the file is durable when it returns.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._buffer = mmap.mmap(-1, DIRECT_BLOCK)   # page-aligned, as O_DIRECT needs
        self._view = memoryview(self._buffer)
        self._fill = 0
        self._position = 0

    @classmethod
    def create(cls, path: Path) -> DirectFile | None:
        """Open ``path`` for direct writes; None where the file system refuses ``O_DIRECT``
        (tmpfs, some overlays: ``EINVAL``)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0)
        if flags & getattr(os, "O_DIRECT", 0) == 0:
            return None
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return None
            raise
        return cls(fd)

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        done = 0
        while done < size:
            take = min(size - done, DIRECT_BLOCK - self._fill)
            self._view[self._fill:self._fill + take] = view[done:done + take]
            self._fill += take
            done += take
            if self._fill == DIRECT_BLOCK:
                self._write_out(self._view)
                self._fill = 0
        self._position += size
        return size

    def _write_out(self, view: memoryview) -> None:
        while len(view):
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        """Write the buffered tail, ``fsync`` and close (once)."""
        if self.closed:
            return
        try:
            aligned = self._fill // _DIRECT_ALIGN * _DIRECT_ALIGN
            if aligned:
                self._write_out(self._view[:aligned])
            if self._fill > aligned:  # the unaligned tail: through the page cache
                flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
                self._write_out(self._view[aligned:self._fill])
            os.fsync(self._fd)
        finally:
            self._release()

    def discard(self) -> None:
        """Close without writing what is buffered (the segment is being deleted)."""
        if not self.closed:
            self._release()

    def _release(self) -> None:
        os.close(self._fd)
        self._view.release()
        self._buffer.close()
        super().close()


class SegmentFileWriter:
    """Append Arrow batches of one table into the Parquet file(s) of one new segment.

    ``write(batch, part)`` appends to file ``part`` (created on first use): the build writes
    the two halves of each batch to two files from two threads, since Parquet encoding is
    the build's largest CPU cost. Each file keeps its rows in order (e.g. symbol then date);
    one ``part`` must not be written by two threads at once. Files are durable when
    :meth:`finish` returns; until :meth:`Writer.add_segment` commits them they are
    unreferenced (a crash leaves them to garbage collection, never to readers).

    Durability is paid while the build still computes: files are written with ``O_DIRECT``
    (:class:`DirectFile`), so the data is on the device as it is written; where the file
    system refuses that, after each write a flushing thread starts ``fdatasync`` of the
    file, so the disk writes the data behind the CPU work instead of all of it in
    :meth:`finish` (where the final ``fsync`` then finds little left).
    """

    def __init__(self, writer: Writer, table: str, *, every_column: bool = False) -> None:
        self._writer = writer
        self._table = table
        self.schema = arrow_schema(writer, table, every_column=every_column)
        self._file_schema: pa.Schema | None = None
        self._files: dict[int, tuple[Path, pq.ParquetWriter]] = {}
        self._direct: dict[int, DirectFile] = {}
        self._descriptors: dict[int, int] = {}     # buffered files, for their flushes
        self._lock = threading.Lock()
        self._flusher: ThreadPoolExecutor | None = None
        self._flushing: dict[int, Future[None]] = {}
        self.rows = 0

    def write(self, batch: pa.Table, part: int = 0) -> None:
        """Append ``batch`` (the table's columns; text may be dictionary-encoded) to file
        ``part``."""
        if batch.num_rows == 0:
            return
        batch = _normalise(batch, self.schema)
        with self._lock:
            if self._file_schema is None:
                self._file_schema = batch.schema
            handle = self._file(part)
            self.rows += batch.num_rows
        if batch.schema != self._file_schema:
            batch = batch.cast(self._file_schema)
        handle.write_table(batch, row_group_size=ROW_GROUP_ROWS)
        self._start_flush(part)

    def _file(self, part: int) -> pq.ParquetWriter:
        if part not in self._files:
            path = self._writer.new_segment_path(self._table, f"-{part}" if part else "")
            assert self._file_schema is not None
            options = _file_options(self._file_schema)
            direct = DirectFile.create(path) if DIRECT_WRITES else None
            if direct is not None:
                self._direct[part] = direct
                self._files[part] = (path, pq.ParquetWriter(direct, self._file_schema,
                                                            **options))
            else:
                self._files[part] = (path, pq.ParquetWriter(path, self._file_schema,
                                                            **options))
                self._descriptors[part] = os.open(path, os.O_RDONLY)
        return self._files[part][1]

    def _start_flush(self, part: int) -> None:
        """Have the flushing thread write file ``part``'s new data to disk (one flush per
        file in flight: a newer one would find the same pages)."""
        with self._lock:
            if part in self._direct:
                return  # on the device already: nothing in the page cache to flush
            running = self._flushing.get(part)
            if running is not None and not running.done():
                return
            if running is not None:
                running.result()  # a failed flush fails the write that follows it
            if self._flusher is None:
                self._flusher = ThreadPoolExecutor(max_workers=1,
                                                   thread_name_prefix=f"{self._table}-flush")
            self._flushing[part] = self._flusher.submit(os.fdatasync, self._descriptors[part])

    def _stop_flushing(self) -> None:
        """Wait for the flushes in flight (raising their error) and stop the thread."""
        try:
            for flush in list(self._flushing.values()):
                flush.result()
        finally:
            self._flushing.clear()
            if self._flusher is not None:
                self._flusher.shutdown(wait=True)
                self._flusher = None

    def _close_descriptors(self) -> None:
        for fd in self._descriptors.values():
            os.close(fd)
        self._descriptors.clear()

    def finish(self) -> list[Path]:
        """Close and fsync every file (the flushes have written most of it already);
        returns them in part order."""
        paths = []
        try:
            self._stop_flushing()
            for key in sorted(self._files):
                path, handle = self._files[key]
                handle.close()
                if key in self._direct:
                    self._direct.pop(key).close()   # the tail, then fsync
                else:
                    os.fsync(self._descriptors[key])
                paths.append(path)
        finally:
            self._close_descriptors()
        self._files.clear()
        return paths

    def abort(self) -> None:
        """Close and delete what was written (the build failed before committing)."""
        try:
            self._stop_flushing()
        except OSError as exc:  # the files are deleted below: their flush no longer matters
            log.debug("flush of an aborted %s segment failed: %s", self._table, exc)
        finally:
            self._close_descriptors()
            for key, (path, handle) in self._files.items():
                try:
                    handle.close()
                except OSError as exc:  # e.g. the device write that failed the build
                    log.debug("closing an aborted %s segment failed: %s", self._table, exc)
                finally:
                    if key in self._direct:
                        self._direct.pop(key).discard()
                    path.unlink(missing_ok=True)
            self._files.clear()


__all__ = ["DIRECT_WRITES", "ROW_GROUP_ROWS", "TILE_DAYS", "DirectFile", "SegmentFileWriter",
           "arrow_schema", "file_columns", "tiled"]
