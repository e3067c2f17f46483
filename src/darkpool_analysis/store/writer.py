"""The single writer: the master database, transactions, segments and publication.

Writers (``darkpool ingest``, ``darkpool build``) take an exclusive advisory lock
(``<db>.lock``) and work on the private master (``<name>.master.duckdb``), one short
transaction per file or batch. Raw changes record, in the same transaction, what they make
``daily_metrics`` owe (``metrics_owed``) and which rows readers have not seen yet
(``store_pending``). ``daily_metrics`` itself is not a master table: the build writes
immutable Parquet segments and commits their catalogue rows (``store_segments``); the writer's
connection sees it through a temporary view. Publication (every few seconds and when the
writer finishes, see :mod:`.publication`) exports only the pending rows and swaps in a new
catalogue.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from darkpool_analysis.errors import StoreError
from darkpool_analysis.store import covers
from darkpool_analysis.store.catalogue import current_generation, store_dir_for, view_sql
from darkpool_analysis.store.schema import (
    DAILY_METRICS_DERIVED,
    DELTA_TABLES,
    METRIC_INPUTS,
    PUBLISH_INTERVAL_S,
    migrate,
    run,
    schema_version,
    settle,
    table_exists,
    utcnow,
)

log = logging.getLogger(__name__)


def gives_derived(table: Any) -> bool:
    """Whether an Arrow table of ``daily_metrics`` rows gives a value of a derived column."""
    return any(c in table.column_names and table.column(c).null_count < table.num_rows
               for c in DAILY_METRICS_DERIVED)


#: Seconds an unreferenced segment file or catalogue is kept, so a reader that opened the
#: previous generation keeps a consistent view (``DARKPOOL_STORE_GC_GRACE_SECONDS``).
GC_GRACE_S = 900.0


def master_path_for(db_path: Path) -> Path:
    """The writer's private working store that sits next to the published database."""
    db_path = Path(db_path)
    return db_path.with_name(f"{db_path.stem}.master{db_path.suffix or '.duckdb'}")


def lock_path_for(db_path: Path) -> Path:
    db_path = Path(db_path)
    return db_path.with_name(f"{db_path.name}.lock")


@dataclass(frozen=True)
class SegmentRow:
    """One committed segment of a table (``store_segments``)."""

    seq: int
    files: tuple[str, ...]
    rows: int
    cover: covers.Cover


@dataclass(frozen=True)
class SourceFile:
    """Provenance of one ingested file or response (the unit of idempotency)."""

    dataset: str
    partition_key: str
    source_file: str
    location: str
    sha256: str
    rows: int
    fetched_at: dt.datetime


@dataclass(frozen=True)
class LogEntry:
    """One ``ingest_log`` row (for :meth:`Writer.replace_partitions`)."""

    dataset: str
    partition_key: str | None
    trade_date: dt.date | None
    location: str | None
    outcome: str
    rows: int | None = None
    sha256: str | None = None
    message: str | None = None




class Writer:
    """The single writer: owns the master database, transactions, segments and publication.

    Use :func:`open_writer`; do not construct directly.
    """

    def __init__(self, db_path: Path, run_id: str, publish_interval: float,
                 gc_grace_seconds: float = GC_GRACE_S) -> None:
        self.db_path = Path(db_path).resolve()
        self.master_path = master_path_for(self.db_path)
        self.store_dir = store_dir_for(self.db_path)
        self.run_id = run_id
        self.publish_interval = publish_interval
        self.gc_grace_seconds = gc_grace_seconds
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._dirty = False
        self._depth = 0
        self._last_publish = time.monotonic()
        self._builder: duckdb.DuckDBPyConnection | None = None

    # -- connection --------------------------------------------------------------------------
    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            raise StoreError("writer is closed")
        return self._conn

    def _open(self) -> None:
        from darkpool_analysis.store import publication

        adopt_catalogue = (not self.master_path.exists()
                           and current_generation(self.store_dir) is not None)
        adopt_legacy = (not self.master_path.exists() and not adopt_catalogue
                        and self.db_path.exists())
        if adopt_legacy:
            publication.refuse_catalogue_as_master(self.db_path)
            # A single-file database (the layout before generations, or one built
            # elsewhere): it becomes the master; its tables are published as segments.
            publication.copy_file(self.db_path, self.master_path)
        self._conn = duckdb.connect(str(self.master_path))
        before = schema_version(self._conn)
        after = migrate(self._conn)
        if adopt_catalogue:
            publication.adopt_catalogue(self)
        publication.migrate_legacy_metrics(self)
        if after != before and before:
            publication.mark_all_pending(self)
        self.refresh_metrics_view()
        # Publish a schema upgrade of an existing database; a brand-new database is published
        # only once something is committed (a failed first ingest leaves no database behind).
        self._dirty = (after != before and self.db_path.exists()) or adopt_legacy \
            or adopt_catalogue

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._builder is not None:
            self._builder.close()
            self._builder = None

    def catalogue_builder(self) -> duckdb.DuckDBPyConnection:
        """An in-memory connection that writes catalogues (it caches Parquet footers, so
        binding the views of a new generation does not re-read every file)."""
        if self._builder is None:
            self._builder = duckdb.connect(":memory:")
            run(self._builder, "SET parquet_metadata_cache = true")
        return self._builder

    # -- segments ----------------------------------------------------------------------------
    def segments(self, table: str | None = None) -> dict[str, list[SegmentRow]]:
        """Committed segments in order, by table (one table with ``table``)."""
        where, params = ("WHERE table_name = ?", [table]) if table else ("", [])
        out: dict[str, list[SegmentRow]] = {}
        for name, seq, files, rows, cover in self.conn.execute(
                f"SELECT table_name, seq, files, rows, cover FROM store_segments {where} "
                "ORDER BY table_name, seq", params).fetchall():
            out.setdefault(str(name), []).append(
                SegmentRow(int(seq), tuple(files), int(rows), covers.loads(cover)))
        return out

    def new_segment_path(self, table: str, suffix: str = "") -> Path:
        """A fresh, unique file name for a segment of ``table`` (not referenced until
        :meth:`add_segment` commits it; garbage collection removes it otherwise)."""
        folder = self.store_dir / "data" / table
        folder.mkdir(parents=True, exist_ok=True)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        return folder / f"{stamp}-{uuid.uuid4().hex[:12]}{suffix}.parquet"

    def add_segment(self, table: str, files: Sequence[Path], rows: int,
                    cover: covers.Cover, *, replaces: Sequence[int] = ()) -> None:
        """Commit a segment (already written, fsynced files) at the end of ``table``'s list.

        ``cover`` is what it replaces in earlier segments; a cover of everything drops every
        earlier segment, and ``replaces`` names segments (by seq) it supersedes outright.
        Joins the caller's transaction.
        """
        cover = covers.simplify(cover)
        relative = [str(Path(f).resolve().relative_to(self.store_dir.resolve())) for f in files]
        size = sum(Path(f).stat().st_size for f in files)
        with self.transaction() as conn:
            if covers.covers_everything(cover):
                run(conn, "DELETE FROM store_segments WHERE table_name = ?", [table])
            elif replaces:
                run(conn, "DELETE FROM store_segments WHERE table_name = ? "
                          "AND list_contains(?::BIGINT[], seq)", [table, list(replaces)])
            run(conn, "INSERT INTO store_segments (table_name, files, rows, bytes, cover, "
                      "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [table, relative, rows, size, covers.dumps(cover), utcnow()])
            if table == "daily_metrics":
                self.refresh_metrics_view()

    def replace_metrics(self, frame: Any = None, cover: covers.Cover | None = None) -> int:
        """Write ``frame`` (Arrow or pandas, ``daily_metrics`` columns; None = no rows) as a
        new ``daily_metrics`` segment replacing ``cover`` (default: the whole table), in the
        build's tiled row order. The build writes through the same files; this is for tools
        and tests."""
        import pyarrow as pa

        from darkpool_analysis.store.segments import SegmentFileWriter, tiled

        table = frame
        if frame is not None and not isinstance(frame, pa.Table):
            table = pa.Table.from_pandas(frame, preserve_index=False)
        # Derived columns a tool gives are stored as given (read back unchanged); otherwise
        # the table computes them, as for the build's rows.
        files = SegmentFileWriter(self, "daily_metrics",
                                  every_column=table is not None and gives_derived(table))
        try:
            if table is not None:
                for name in files.schema.names:  # columns a tool left out are NULL
                    if name not in table.column_names:
                        table = table.append_column(
                            name, pa.nulls(table.num_rows, files.schema.field(name).type))
                files.write(tiled(table))
            paths = files.finish()
        except BaseException:
            files.abort()
            raise
        self.add_segment("daily_metrics", paths, files.rows,
                         list(covers.EVERYTHING) if cover is None else cover)
        return files.rows

    def _replace_metrics_where(self, frame: Any, where: str, params: Sequence[Any]) -> None:
        """``replace_partition`` for ``daily_metrics``: a new segment holding ``frame`` plus
        the stored rows its cover would hide that ``where`` does not match, so the result is
        exactly "delete ``where``, insert ``frame``"."""
        import pyarrow as pa

        batch = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(
            frame, preserve_index=False)
        conn = self.conn
        settle(conn)
        conn.register("_darkpool_batch", batch.select(["symbol", "date"]))
        try:
            spans = conn.execute(f"""
                SELECT lo, hi, list(symbol ORDER BY symbol) FROM (
                    SELECT symbol, min(date)::DATE AS lo, max(date)::DATE AS hi FROM (
                        SELECT symbol, date FROM daily_metrics WHERE {where}
                        UNION ALL SELECT symbol, date::DATE FROM _darkpool_batch)
                    GROUP BY symbol)
                GROUP BY lo, hi
            """, list(params)).fetchall()
        finally:
            settle(conn)
            conn.unregister("_darkpool_batch")
        cover = [covers.clause(names, lo, hi) for lo, hi, names in spans]
        if not cover:
            return
        hidden = covers.predicate(cover, "date", "symbol")
        kept = conn.sql(f"SELECT * FROM daily_metrics WHERE ({hidden}) "
                        f"AND NOT coalesce(({where}), false)",
                        params=list(params)).to_arrow_table()
        from darkpool_analysis.store.segments import arrow_schema

        schema = arrow_schema(self, "daily_metrics", every_column=gives_derived(batch))
        for name in schema.names:
            if name not in batch.column_names:
                batch = batch.append_column(name, pa.nulls(batch.num_rows,
                                                           schema.field(name).type))
        both = pa.concat_tables([batch.select(schema.names).cast(schema),
                                 kept.select(schema.names).cast(schema)])
        self.replace_metrics(both, cover)

    def metrics_spec(self) -> Any:
        """The :class:`~.catalogue.TableSpec` of ``daily_metrics`` from the master's segments."""
        from darkpool_analysis.store import publication

        return publication.table_spec(self, "daily_metrics")

    def refresh_metrics_view(self) -> None:
        """Point the writer's temporary ``daily_metrics`` view at the current segments."""
        if not table_exists(self.conn, "daily_metrics_columns"):
            return
        run(self.conn, view_sql(self.metrics_spec(), self.store_dir, temporary=True))

    # -- transactions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing block: commit on success, roll back and re-raise on any error.

        Nested blocks join the outermost transaction, so a caller can group several
        already-validated files into one commit (much faster than a commit per file) while
        each write helper stays atomic on its own.
        """
        conn = self.conn
        if self._depth:
            self._depth += 1
            try:
                yield conn
            finally:
                self._depth -= 1
            return
        run(conn, "BEGIN TRANSACTION")
        self._depth = 1
        try:
            yield conn
        except BaseException as exc:
            self._depth = 0
            run(conn, "ROLLBACK")
            self.refresh_metrics_view()
            if isinstance(exc, duckdb.InterruptException):
                # Ctrl-C reached DuckDB mid-query: the same as a KeyboardInterrupt for the
                # caller (nothing of this transaction was stored).
                raise KeyboardInterrupt from exc
            raise
        self._depth = 0
        run(conn, "COMMIT")
        self._dirty = True
    def replace_partition(
        self,
        table: str,
        frame: Any,
        *,
        where: str,
        params: Sequence[Any],
        source: SourceFile | None = None,
        outcome: str = "ingested",
        trade_date: dt.date | None = None,
        message: str | None = None,
    ) -> int:
        """Atomically replace the rows matching ``where`` with ``frame`` (pandas or Arrow).

        The delete, the insert (by column name), the provenance row and the ingest-log entry
        commit together or not at all, so re-ingesting a file never duplicates rows.
        """
        rows = frame.num_rows if hasattr(frame, "num_rows") else len(frame)
        if table == "daily_metrics":
            with self.transaction() as conn:
                self._replace_metrics_where(frame, where, params)
                if source is not None:
                    self._record_source(conn, source)
                    self._log(conn, source.dataset, source.partition_key, trade_date,
                              source.location, outcome, source.rows, source.sha256, message)
            return rows
        settle(self.conn)
        self.conn.register("_darkpool_batch", frame)
        try:
            with self.transaction() as conn:
                self._record_change(conn, table, f"SELECT * FROM {table} WHERE {where}",
                                  params, with_batch=bool(rows))
                run(conn, f"DELETE FROM {table} WHERE {where}", params)
                if rows:
                    run(conn, f"INSERT INTO {table} BY NAME SELECT * FROM _darkpool_batch")
                if source is not None:
                    self._record_source(conn, source)
                    self._log(conn, source.dataset, source.partition_key, trade_date,
                              source.location, outcome, source.rows, source.sha256, message)
        finally:
            settle(self.conn)
            self.conn.unregister("_darkpool_batch")
        return rows

    def replace_partitions(
        self,
        table: str,
        keys: pd.DataFrame,
        frames: Sequence[Any],
        *,
        sources: Sequence[SourceFile] = (),
        log_entries: Sequence[LogEntry] = (),
    ) -> int:
        """Replace many partitions of ``table`` in one transaction with a handful of statements.

        ``keys`` has one row per partition (its columns name the partition columns, e.g.
        ``facility, trade_date``); every row of ``table`` matching a key is deleted, then all
        ``frames`` (Arrow tables with identical schemas) are inserted by column name, the
        provenance rows upserted and the log entries appended. Statement count no longer grows
        with the number of files, which is what a commit per small file used to cost.
        """
        import pyarrow as pa

        key_columns = list(keys.columns)
        match = " AND ".join(f"{table}.{c} = _darkpool_keys.{c}" for c in key_columns)
        batch = pa.concat_tables(frames) if frames else None
        rows = batch.num_rows if batch is not None else 0
        provenance = pd.DataFrame([s.__dict__ for s in sources],
                                  columns=list(SourceFile.__dataclass_fields__))
        log_rows = pd.DataFrame([e.__dict__ for e in log_entries],
                                columns=list(LogEntry.__dataclass_fields__))
        log_rows = log_rows.assign(run_id=self.run_id, logged_at=utcnow())
        registered = {"_darkpool_keys": keys, "_darkpool_sources": provenance,
                      "_darkpool_log": log_rows}
        if batch is not None:
            registered["_darkpool_batch"] = batch
        settle(self.conn)
        for name, frame in registered.items():
            self.conn.register(name, frame)
        try:
            with self.transaction() as conn:
                if len(keys):
                    self._record_change(conn, table, f"SELECT {table}.* FROM {table} "
                                      f"SEMI JOIN _darkpool_keys ON {match}", (),
                                      with_batch=bool(rows))
                    run(conn, f"DELETE FROM {table} USING _darkpool_keys WHERE {match}")
                elif rows:
                    self._record_change(conn, table, None, (), with_batch=True)
                if rows:
                    run(conn, f"INSERT INTO {table} BY NAME SELECT * FROM _darkpool_batch")
                if len(provenance):
                    run(conn, "INSERT OR REPLACE INTO source_files BY NAME "
                              "SELECT * FROM _darkpool_sources")
                if len(log_rows):
                    run(conn, "INSERT INTO ingest_log BY NAME SELECT * FROM _darkpool_log")
        finally:
            settle(self.conn)
            for name in registered:
                self.conn.unregister(name)
        return rows

    def set_meta(self, entries: dict[str, str]) -> None:
        """Upsert ``database_meta`` entries in one transaction."""
        with self.transaction() as conn:
            for key, value in entries.items():
                run(conn, "INSERT OR REPLACE INTO database_meta VALUES (?, ?)", [key, value])

    def log_outcome(self, dataset: str, partition_key: str | None, *, outcome: str,
                    trade_date: dt.date | None = None, location: str | None = None,
                    rows: int | None = None, sha256: str | None = None,
                    message: str | None = None) -> None:
        """Record an outcome that writes no data (``unchanged``, ``not_published``)."""
        with self.transaction() as conn:
            self._log(conn, dataset, partition_key, trade_date, location, outcome, rows,
                      sha256, message)

    def known_sha256s(self, dataset: str) -> dict[str, str]:
        """Every stored partition's sha256 for ``dataset`` (one query instead of one per file)."""
        rows = self.conn.execute(
            "SELECT partition_key, sha256 FROM source_files WHERE dataset = ?", [dataset]
        ).fetchall()
        return {str(key): str(sha) for key, sha in rows}

    def known_sha256(self, dataset: str, partition_key: str) -> str | None:
        row = self.conn.execute(
            "SELECT sha256 FROM source_files WHERE dataset = ? AND partition_key = ?",
            [dataset, partition_key],
        ).fetchone()
        return None if row is None else str(row[0])


    def _record_change(self, conn: duckdb.DuckDBPyConnection, table: str,
                       replaced: str | None, params: Sequence[Any], *,
                       with_batch: bool) -> None:
        """Record, in the caller's transaction, what replacing ``replaced`` (a query of the
        rows about to be deleted) by ``_darkpool_batch`` changes: the ``daily_metrics``
        rebuild it makes owed and the rows readers have not seen yet. Nothing is recorded
        when neither side has a row."""
        parts_for = self._change_parts
        if table in METRIC_INPUTS:
            date_column, symbol_column = METRIC_INPUTS[table]
            parts = parts_for(replaced, with_batch, date_column, symbol_column)
            if parts:
                run(conn, f"""
                    INSERT INTO metrics_owed (symbol, from_date, source_table, recorded_at)
                    SELECT symbol, min(day), ?, ? FROM ({" UNION ALL ".join(parts)})
                    GROUP BY symbol HAVING min(day) IS NOT NULL
                """, [table, utcnow(), *params * len([p for p in parts if "?" in p])])
        if table in DELTA_TABLES:
            date_column, symbol_column = DELTA_TABLES[table]
            parts = parts_for(replaced, with_batch, date_column, symbol_column)
            if not parts:
                return
            union = " UNION ALL ".join(parts)
            n_params = len([p for p in parts if "?" in p])
            if symbol_column is None:
                # Whole days (or weeks): one mark per distinct day keeps deltas exact.
                run(conn, f"""
                    INSERT INTO store_pending (table_name, symbol, from_day, to_day)
                    SELECT DISTINCT ?, NULL, day, day FROM ({union}) WHERE day IS NOT NULL
                """, [table, *params * n_params])
            else:
                run(conn, f"""
                    INSERT INTO store_pending (table_name, symbol, from_day, to_day)
                    SELECT ?, symbol, min(day), max(day) FROM ({union})
                    GROUP BY symbol HAVING min(day) IS NOT NULL
                """, [table, *params * n_params])

    @staticmethod
    def _change_parts(replaced: str | None, with_batch: bool, date_column: str,
                      symbol_column: str | None) -> list[str]:
        picked = (f"{symbol_column} AS symbol, " if symbol_column
                  else "NULL::VARCHAR AS symbol, ")
        parts = []
        if replaced is not None:
            parts.append(f"SELECT {picked}{date_column} AS day FROM ({replaced})")
        if with_batch:
            parts.append(f"SELECT {picked}{date_column} AS day FROM _darkpool_batch")
        return parts

    def _record_source(self, conn: duckdb.DuckDBPyConnection, source: SourceFile) -> None:
        run(
            conn,
            "INSERT OR REPLACE INTO source_files "
            "(dataset, partition_key, source_file, location, sha256, rows, fetched_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [source.dataset, source.partition_key, source.source_file, source.location,
             source.sha256, source.rows, source.fetched_at],
        )

    def _log(self, conn: duckdb.DuckDBPyConnection, dataset: str, partition_key: str | None,
             trade_date: dt.date | None, location: str | None, outcome: str,
             rows: int | None, sha256: str | None, message: str | None) -> None:
        run(
            conn,
            "INSERT INTO ingest_log (run_id, dataset, partition_key, trade_date, location, "
            "outcome, rows, sha256, message, logged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [self.run_id, dataset, partition_key, trade_date, location, outcome, rows, sha256,
             message, utcnow()],
        )

    # -- publication -------------------------------------------------------------------------
    def maybe_publish(self) -> bool:
        """Publish if the last generation is older than ``publish_interval``; return whether.

        Never inside a transaction."""
        if self._depth:
            return False
        if self._dirty and time.monotonic() - self._last_publish >= self.publish_interval:
            self.publish()
            return True
        return False

    def publish(self) -> None:
        """Export what changed since the last generation and swap in a new catalogue."""
        if not self._dirty:
            return
        if self._depth:
            raise StoreError("cannot publish inside a transaction")
        from darkpool_analysis.store import publication

        try:
            publication.publish(self)
        except duckdb.InterruptException as exc:
            # Ctrl-C during an export: the last generation stays published, the pending
            # changes stay pending, and the caller sees an ordinary KeyboardInterrupt.
            raise KeyboardInterrupt from exc
        self._dirty = False
        self._last_publish = time.monotonic()

    def compact(self, *, full: bool = False) -> bool:
        """Merge piled-up deltas (and rewrite a table whose deltas outgrew it, or every table
        with ``full``); returns whether anything changed. Publish afterwards."""
        from darkpool_analysis.store import publication

        changed = publication.compact(self, full=full)
        self._dirty = self._dirty or changed
        self._compact_master(force=full)
        return changed

    def _compact_master(self, *, force: bool = False) -> None:
        """Rewrite the master when a third of its blocks are free (DuckDB reuses free blocks
        but never shrinks a file): ``COPY FROM DATABASE`` into a new file, then an atomic
        rename. Sequences keep their values; a crash leaves the old master."""
        if self._depth:
            return
        row = self.conn.execute("SELECT total_blocks, free_blocks FROM pragma_database_size() "
                                "WHERE database_name = current_database()").fetchone()
        if row is None:
            return
        total, free = int(row[0]), int(row[1])
        if total < 8 or (not force and free * 3 < total):
            return
        name = self.conn.execute("SELECT current_database()").fetchone()[0]
        tmp = self.master_path.with_name(f".{self.master_path.name}.compact.tmp")
        tmp.unlink(missing_ok=True)
        run(self.conn, f"ATTACH '{tmp}' AS darkpool_compact")
        try:
            run(self.conn, f'COPY FROM DATABASE "{name}" TO darkpool_compact')
        finally:
            run(self.conn, "DETACH darkpool_compact")
        self._conn.close()  # type: ignore[union-attr]
        self._conn = None
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.master_path)
        self._conn = duckdb.connect(str(self.master_path))
        self.refresh_metrics_view()


def _grace_from_env() -> float:
    text = os.environ.get("DARKPOOL_STORE_GC_GRACE_SECONDS")
    if text is None:
        return GC_GRACE_S
    try:
        return max(0.0, float(text))
    except ValueError:
        raise StoreError(f"DARKPOOL_STORE_GC_GRACE_SECONDS={text!r} is not a number of "
                         "seconds") from None


@contextlib.contextmanager
def open_writer(
    db_path: Path,
    *,
    run_id: str | None = None,
    lock_timeout: float = 600.0,
    publish_interval: float = PUBLISH_INTERVAL_S,
    gc_grace_seconds: float | None = None,
) -> Iterator[Writer]:
    """Become the single writer of ``db_path``; on exit compact what piled up and publish a
    generation (also on error: every committed transaction is complete on its own)."""
    db_path = Path(db_path).expanduser()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = open(lock_path_for(db_path), "a+")  # noqa: SIM115 - held for the whole block
    try:
        deadline = time.monotonic() + lock_timeout
        waited = False
        while True:
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"another darkpool writer has held {db_path} for {lock_timeout:.0f}s",
                        hint="wait for the other ingest/build to finish",
                    ) from None
                if not waited:
                    log.warning("waiting for another darkpool writer on %s", db_path)
                    waited = True
                time.sleep(0.1)
        writer = Writer(db_path, run_id or utcnow().strftime("%Y%m%dT%H%M%S%f"),
                        publish_interval,
                        _grace_from_env() if gc_grace_seconds is None else gc_grace_seconds)
        writer._open()
        try:
            yield writer
            if writer._dirty:
                writer.compact()
        finally:
            try:
                try:
                    writer.publish()
                except KeyboardInterrupt:
                    writer.publish()  # the signal is spent: publish what was committed
            finally:
                writer.close()
    finally:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
        lock_file.close()
