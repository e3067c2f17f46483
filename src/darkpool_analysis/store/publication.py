"""Publication by generations: export what changed, compact, collect garbage.

Every published table is an ordered list of immutable Parquet segments (see
:mod:`.catalogue` and :mod:`.covers`). Publishing exports only the rows raw changes marked
(``store_pending``) and the small tables whose fingerprint changed, then writes a new
catalogue: its cost follows the change, not the history. Deltas are merged when they pile
up (tiered: the newest ones together), and a table is rewritten whole when its deltas
outgrow a quarter of it. Files are deleted only when neither the master nor the current or
previous catalogue refers to them and they are older than the grace period.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from darkpool_analysis.errors import StoreError
from darkpool_analysis.store import covers
from darkpool_analysis.store.catalogue import (
    Segment,
    TableSpec,
    catalogue_paths,
    current_generation,
    referenced_files,
    store_dir_for,
    write_catalogue,
)
from darkpool_analysis.store.schema import (
    DAILY_METRICS_DERIVED,
    DELTA_TABLES,
    PRIVATE_TABLES,
    run,
    schema_version,
    stored_columns,
    table_exists,
)
from darkpool_analysis.store.segments import ROW_GROUP_ROWS, TILE_DAYS, file_columns

if TYPE_CHECKING:
    from darkpool_analysis.store.writer import SegmentRow, Writer

log = logging.getLogger(__name__)

#: Merge the newest deltas into one when a table has more segments than this.
MAX_SEGMENTS = 10
#: How many of the newest deltas one merge combines.
MERGE_FANOUT = 8
#: Rewrite a table whole when its deltas hold more than this share of its base rows ...
REWRITE_SHARE = 0.25
#: ... or when their covers have more literal terms than this (every read pays for them).
MAX_COVER_TERMS = 4000


def copy_file(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


# -- what is published ------------------------------------------------------------------------
def published_tables(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Master tables readers see (plus ``daily_metrics``, which lives only in segments)."""
    rows = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND NOT temporary ORDER BY table_name").fetchall()
    names = [str(r[0]) for r in rows if str(r[0]) not in PRIVATE_TABLES]
    return sorted({*names, "daily_metrics"})


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> tuple[tuple[str, str], ...]:
    source = "daily_metrics_columns" if table == "daily_metrics" else table
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' "
        "AND table_name = ? ORDER BY ordinal_position", [source]).fetchall()
    return tuple((str(c), str(t)) for c, t in rows)


def _all_columns(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[tuple[str, str], ...]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = 'main' "
            "ORDER BY table_name, ordinal_position").fetchall():
        out.setdefault(str(table), []).append((str(column), str(kind)))
    out["daily_metrics"] = out.get("daily_metrics_columns", [])
    return {t: tuple(c) for t, c in out.items()}


def stores_derived(store_dir: Path, table: str, segment: SegmentRow) -> bool:
    """Whether ``segment``'s files store ``table``'s derived columns (a tool's rows as
    given, or files from before they were derived) instead of leaving them to the view."""
    if table != "daily_metrics" or not segment.files:
        return False
    stored = file_columns(str(store_dir / segment.files[0]))
    return any(c in stored for c in DAILY_METRICS_DERIVED)


def _spec(store_dir: Path, table: str, columns: tuple[tuple[str, str], ...],
          segments: list[SegmentRow]) -> TableSpec:
    date_column, symbol_column = DELTA_TABLES.get(table, (None, None))
    names = {c for c, _ in columns}
    derived = tuple((c, sql) for c, sql in DAILY_METRICS_DERIVED.items()
                    if c in names) if table == "daily_metrics" else ()
    return TableSpec(name=table, columns=columns, date_column=date_column,
                     symbol_column=symbol_column, derived=derived,
                     segments=tuple(Segment(files=s.files, cover=s.cover, rows=s.rows,
                                            stores_derived=stores_derived(store_dir, table, s))
                                    for s in segments))


def table_spec(writer: Writer, table: str) -> TableSpec:
    """The published shape of ``table``: columns, keys and committed segments."""
    return _spec(writer.store_dir, table, _columns(writer.conn, table),
                 writer.segments(table).get(table, []))


def table_specs(writer: Writer, tables: list[str]) -> list[TableSpec]:
    """:func:`table_spec` of every table in two queries."""
    columns = _all_columns(writer.conn)
    segments = writer.segments()
    return [_spec(writer.store_dir, t, columns.get(t, ()), segments.get(t, []))
            for t in tables]


# -- exports --------------------------------------------------------------------------------
def _copy_to_segment(writer: Writer, table: str, select_sql: str) -> tuple[list[Path], int]:
    """``COPY (select_sql)`` into one new segment file; ([], 0) when it has no rows."""
    path = writer.new_segment_path(table)
    rows = int(writer.conn.execute(
        f"COPY ({select_sql}) TO {_literal(path)} (FORMAT parquet)").fetchall()[0][0])
    if rows == 0:
        path.unlink(missing_ok=True)
        return [], 0
    _fsync(path)
    return [path], rows


def _pending_cover(conn: duckdb.DuckDBPyConnection, table: str) -> covers.Cover | None:
    """The cover of ``table``'s unpublished changes (None = nothing pending; everything when
    a whole-table mark is present)."""
    groups = conn.execute("""
        SELECT from_day, to_day, bool_or(symbol IS NULL) AS every,
               list(DISTINCT symbol) FILTER (WHERE symbol IS NOT NULL) AS symbols
        FROM store_pending WHERE table_name = ? GROUP BY from_day, to_day
    """, [table]).fetchall()
    if not groups:
        return None
    if any(start is None for start, _, _, _ in groups):
        return list(covers.EVERYTHING)
    return covers.simplify([covers.clause(None if every else symbols, start, end)
                            for start, end, every, symbols in groups])


def _export_pending(writer: Writer, table: str) -> bool:
    conn = writer.conn
    cover = _pending_cover(conn, table)
    has_segments = bool(writer.segments(table))
    if cover is None:
        return False
    if not has_segments:
        cover = list(covers.EVERYTHING)
    date_column, symbol_column = DELTA_TABLES[table]
    where = covers.predicate(cover, _quote(date_column),
                             _quote(symbol_column) if symbol_column else None)
    files, rows = _copy_to_segment(writer, table, f"SELECT * FROM {_quote(table)} "
                                                  f"WHERE {where}")
    with writer.transaction() as tx:
        writer.add_segment(table, files, rows, cover)
        run(tx, "DELETE FROM store_pending WHERE table_name = ?", [table])
    return True


def _fingerprints(conn: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[str, str]:
    if not tables:
        return {}
    sql = " UNION ALL ".join(
        f"SELECT '{t}' AS t, count(*)::VARCHAR || ':' || "
        f"coalesce(sum(hash({_quote(t)}))::VARCHAR, '0') AS f FROM {_quote(t)}"
        for t in tables)
    return {str(t): str(f) for t, f in conn.execute(sql).fetchall()}


def _state(conn: duckdb.DuckDBPyConnection, prefix: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in conn.execute(
        "SELECT key, value FROM store_state WHERE starts_with(key, ?)", [prefix]).fetchall()}


def _export_small(writer: Writer, tables: list[str]) -> None:
    conn = writer.conn
    known = _state(conn, "fingerprint:")
    published = writer.segments()
    for table, fingerprint in _fingerprints(conn, tables).items():
        key = f"fingerprint:{table}"
        if known.get(key) == fingerprint and published.get(table):
            continue
        files, rows = _copy_to_segment(writer, table, f"SELECT * FROM {_quote(table)}")
        with writer.transaction() as tx:
            writer.add_segment(table, files, rows, list(covers.EVERYTHING))
            run(tx, "INSERT OR REPLACE INTO store_state VALUES (?, ?)", [key, fingerprint])


def publish(writer: Writer) -> int:
    """Export every pending change, write and swap in the next generation; return it."""
    started = time.perf_counter()
    conn = writer.conn
    tables = published_tables(conn)
    pending = {str(r[0]) for r in conn.execute(
        "SELECT DISTINCT table_name FROM store_pending").fetchall()}
    for table in sorted(pending & set(tables)):
        _export_pending(writer, table)
    _export_small(writer, [t for t in tables if t not in DELTA_TABLES])
    piled = [t for t, segs in writer.segments().items()
             if t in DELTA_TABLES and len(segs) > MAX_SEGMENTS]
    for table in piled:
        _merge_newest(writer, table)
    stored = _state(conn, "generation")
    generation = max(int(stored.get("generation", 0)),
                     current_generation(writer.store_dir) or 0) + 1
    specs = table_specs(writer, tables)
    write_catalogue(writer.catalogue_builder(), writer.db_path, writer.store_dir, generation,
                    schema_version(conn), specs)
    run(conn, "INSERT OR REPLACE INTO store_state VALUES ('generation', ?)", [str(generation)])
    collect_garbage(writer)
    log.debug("published generation %d of %s in %.3fs", generation, writer.db_path,
              time.perf_counter() - started)
    return generation


# -- compaction -----------------------------------------------------------------------------
def _stored_select(conn: duckdb.DuckDBPyConnection, table: str, source: str,
                   every_column: bool) -> str:
    """``SELECT`` of the columns ``table``'s segment files store (every column when some
    of the rows were given with their derived columns), from ``source``."""
    names = [c for c, _ in _columns(conn, table)]
    if not every_column:
        names = stored_columns(table, names)
    return f"SELECT {', '.join(map(_quote, names))} FROM {source}"


def _source_sql(writer: Writer, table: str, segments: list[SegmentRow]) -> str:
    """Where a table's current rows come from: the master table, or for ``daily_metrics``
    the writer's view of its segments (the columns ``segments``, the ones rewritten, store)."""
    if table == "daily_metrics":
        every_column = any(stores_derived(writer.store_dir, table, s) for s in segments)
        return _stored_select(writer.conn, table, _quote(table), every_column)
    return f"SELECT * FROM {_quote(table)}"


def _merge_newest(writer: Writer, table: str) -> bool:
    """Tiered merge: when ``table`` has more than :data:`MAX_SEGMENTS` segments, rewrite its
    :data:`MERGE_FANOUT` newest ones as one (their union cover, the rows visible in it)."""
    segments = writer.segments(table).get(table, [])
    if len(segments) <= MAX_SEGMENTS:
        return False
    newest = segments[-MERGE_FANOUT:]
    cover = covers.simplify([c for s in newest for c in s.cover])
    date_column, symbol_column = DELTA_TABLES[table]
    where = covers.predicate(cover, _quote(date_column),
                             _quote(symbol_column) if symbol_column else None)
    files, rows = _copy_to_segment(writer, table,
                                   f"{_source_sql(writer, table, newest)} WHERE {where}")
    writer.add_segment(table, files, rows, cover, replaces=[s.seq for s in newest])
    return True


def _rewrite_metrics(writer: Writer, source: str,
                     every_column: bool) -> tuple[list[Path], int]:
    """``daily_metrics`` as one file per year in the build's tiles (half a year of every
    symbol, symbol then date inside; row groups of ``ROW_GROUP_ROWS``): a one-date read
    decodes one tile, a one-symbol read one row group per tile. ``every_column``: store
    the derived columns too (some rows were given with theirs)."""

    conn = writer.conn
    years = [int(r[0]) for r in conn.execute(
        f"SELECT DISTINCT year(date) FROM {source} ORDER BY 1").fetchall()]
    select = _stored_select(conn, "daily_metrics", source, every_column)
    files: list[Path] = []
    total = 0
    for year in years:
        path = writer.new_segment_path("daily_metrics", f"-{year}")
        total += int(conn.execute(
            f"COPY ({select} WHERE year(date) = {year} ORDER BY "
            f"(date - DATE '1970-01-01') // {TILE_DAYS}, symbol, date) "
            f"TO {_literal(path)} (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
        ).fetchall()[0][0])
        _fsync(path)
        files.append(path)
    return files, total


def _rewrite(writer: Writer, table: str) -> None:
    segments = writer.segments(table).get(table, [])
    if table == "daily_metrics":
        files, rows = _rewrite_metrics(writer, "daily_metrics", any(
            stores_derived(writer.store_dir, table, s) for s in segments))
    else:
        files, rows = _copy_to_segment(writer, table, _source_sql(writer, table, segments))
    writer.add_segment(table, files, rows, list(covers.EVERYTHING))


def compact(writer: Writer, *, full: bool = False) -> bool:
    """Merge piled-up deltas; rewrite a table whose deltas outgrew :data:`REWRITE_SHARE` of
    its base or whose covers grew too long (every table with more than one segment when
    ``full``). Returns whether anything changed."""
    changed = False
    for table in published_tables(writer.conn):
        if table not in DELTA_TABLES:
            continue
        segments = writer.segments(table).get(table, [])
        if len(segments) <= 1:
            continue
        first = segments[0]
        base_rows = first.rows if covers.covers_everything(first.cover) else 0
        deltas = segments[1:] if covers.covers_everything(first.cover) else segments
        delta_rows = sum(s.rows for s in deltas)
        terms = sum(covers.size(s.cover) for s in deltas)
        if full or delta_rows > REWRITE_SHARE * base_rows or terms > MAX_COVER_TERMS:
            _rewrite(writer, table)
            changed = True
        else:
            while _merge_newest(writer, table):
                changed = True
    return changed


# -- garbage collection ---------------------------------------------------------------------
def collect_garbage(writer: Writer) -> int:
    """Delete catalogues other than the current and previous one and segment files nobody
    refers to, once older than the grace period; returns bytes freed."""
    store_dir = writer.store_dir
    grace = writer.gc_grace_seconds
    now = time.time()
    catalogue_dir = store_dir / "catalogues"
    generations = sorted(int(p.stem) for p in catalogue_dir.glob("*.json"))
    current = current_generation(store_dir)
    keep: set[int] = set()
    if current is not None:
        keep.add(current)
        older = [g for g in generations if g < current]
        if older:
            keep.add(older[-1])
    referenced: set[str] = set()
    for files in writer.conn.execute("SELECT files FROM store_segments").fetchall():
        referenced.update(files[0])
    freed = 0
    for generation in generations:
        json_path, duck_path = catalogue_paths(store_dir, generation)
        young = now - json_path.stat().st_mtime < grace
        if generation in keep or young:
            referenced |= referenced_files(json.loads(json_path.read_text()))
            continue
        for path in (duck_path, json_path):
            if path.exists():
                freed += path.stat().st_size
                path.unlink()
    data_dir = store_dir / "data"
    for path in data_dir.glob("*/*.parquet"):
        relative = str(path.relative_to(store_dir))
        if relative in referenced:
            continue
        if now - path.stat().st_mtime >= grace:
            freed += path.stat().st_size
            path.unlink()
    for folder in (catalogue_dir, writer.db_path.parent):
        for path in folder.glob(".*.tmp"):
            if now - path.stat().st_mtime >= max(grace, 60.0):
                path.unlink(missing_ok=True)
    return freed


# -- adoption and migration -----------------------------------------------------------------
def mark_all_pending(writer: Writer) -> None:
    """Republish every table whole (after a schema change or adopting a single file)."""
    with writer.transaction() as tx:
        for table in DELTA_TABLES:
            if table != "daily_metrics" and table_exists(tx, table):
                run(tx, "INSERT INTO store_pending VALUES (?, NULL, NULL, NULL)", [table])
        run(tx, "DELETE FROM store_state WHERE starts_with(key, 'fingerprint:')")


def migrate_legacy_metrics(writer: Writer) -> None:
    """Move a ``daily_metrics`` table of the single-file layout into segments (once)."""
    conn = writer.conn
    if not table_exists(conn, "daily_metrics_v5"):
        return
    rows = int(conn.execute("SELECT count(*) FROM daily_metrics_v5").fetchall()[0][0])
    # rows of the old table are kept exactly as they were, derived columns included
    files, written = (_rewrite_metrics(writer, "daily_metrics_v5", every_column=True)
                      if rows else ([], 0))
    with writer.transaction() as tx:
        writer.add_segment("daily_metrics", files, written, list(covers.EVERYTHING))
        run(tx, "DROP TABLE daily_metrics_v5")


def adopt_catalogue(writer: Writer) -> None:
    """Rebuild a lost master from the published generation: every table's rows are read
    back from its segments, and the segments themselves are reused as they are."""
    conn = writer.conn
    generation = current_generation(writer.store_dir)
    assert generation is not None
    json_path, duck_path = catalogue_paths(writer.store_dir, generation)
    catalogue: dict[str, Any] = json.loads(json_path.read_text())
    log.warning("rebuilding the master database from published generation %d", generation)
    run(conn, f"ATTACH {_literal(duck_path)} AS published (READ_ONLY)")
    try:
        with writer.transaction() as tx:
            for table, entry in catalogue["tables"].items():
                if table not in ("daily_metrics", "schema_version") and table_exists(tx, table):
                    names = [c for c, _ in entry["columns"] if not (table == "ingest_log"
                                                                     and c == "id")]
                    cols = ", ".join(map(_quote, names))
                    run(tx, f"INSERT INTO main.{_quote(table)} ({cols}) "
                            f"SELECT {cols} FROM published.{_quote(table)}")
                run(tx, "DELETE FROM store_segments WHERE table_name = ?", [table])
                for segment in entry["segments"]:
                    run(tx, "INSERT INTO store_segments (table_name, files, rows, bytes, "
                            "cover, created_at) VALUES (?, ?, ?, 0, ?, now()::TIMESTAMP)",
                        [table, segment["files"], segment["rows"],
                         covers.dumps(segment["cover"])])
    finally:
        run(conn, "DETACH published")


def refuse_catalogue_as_master(db_path: Path) -> None:
    """A published catalogue copied without its store cannot become a master."""
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        tables = conn.execute("SELECT count(*) FROM duckdb_tables() "
                              "WHERE table_name = 'schema_version'").fetchall()[0][0]
        views = conn.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal"
                             ).fetchall()[0][0]
    finally:
        conn.close()
    if not tables and views:
        raise StoreError(
            f"{db_path} is a published catalogue, but its store folder "
            f"{store_dir_for(db_path)} and master are missing",
            hint="point DARKPOOL_DB at the original location, or rebuild with `darkpool run`",
        )


# -- inspection -----------------------------------------------------------------------------
def disk_bytes(db_path: Path) -> int:
    """Bytes on disk of everything the database consists of: the published catalogue, the
    writer's master and the store folder (segments and catalogues)."""
    from darkpool_analysis.store.writer import master_path_for

    db_path = Path(db_path)
    paths = [db_path, master_path_for(db_path), *store_dir_for(db_path).rglob("*")]
    return sum(p.stat().st_size for p in paths if p.is_file())


def describe_storage(db_path: Path) -> dict[str, Any] | None:
    """Generations, segment sizes and reclaimable bytes of ``db_path``'s store (None for a
    single-file database)."""
    store_dir = store_dir_for(Path(db_path).resolve())
    current = current_generation(store_dir)
    if current is None:
        return None
    json_path, _ = catalogue_paths(store_dir, current)
    catalogue = json.loads(json_path.read_text())
    live = referenced_files(catalogue)
    sizes = {str(p.relative_to(store_dir)): p.stat().st_size
             for p in (store_dir / "data").glob("*/*.parquet")}
    tables = []
    for name, entry in sorted(catalogue["tables"].items()):
        files = [f for s in entry["segments"] for f in s["files"]]
        tables.append({"table": name, "segments": len(entry["segments"]),
                       "files": len(files), "rows": sum(s["rows"] for s in entry["segments"]),
                       "bytes": sum(sizes.get(f, 0) for f in files)})
    catalogues = list((store_dir / "catalogues").glob("*.json"))
    total = sum(sizes.values())
    used = sum(sizes.get(f, 0) for f in live)
    return {
        "generation": current,
        "generations_kept": len(catalogues),
        "data_bytes": total,
        "live_bytes": used,
        "reclaimable_bytes": total - used,
        "tables": pd.DataFrame(tables),
    }
