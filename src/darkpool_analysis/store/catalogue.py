"""The published catalogue: a small DuckDB file of views over immutable Parquet segments.

Layout next to ``DARKPOOL_DB`` (say ``/x/darkpool.duckdb``)::

    /x/darkpool.duckdb                  the catalogue readers (and the seed notebook) open
    /x/darkpool.master.duckdb           the single writer's private working store
    /x/darkpool.store/CURRENT           number of the current generation
    /x/darkpool.store/catalogues/N.json what generation N publishes (tables, segments, covers)
    /x/darkpool.store/catalogues/N.duckdb  the same views; the tool's own readers open this
    /x/darkpool.store/data/<table>/*.parquet  immutable segment files

Publishing writes the new rows and a new catalogue, never the history, and swaps the
catalogue in with an atomic rename. The tool's readers open the current generation's private
catalogue copy read-only, so a notebook holding ``duckdb.connect(DARKPOOL_DB)`` (read-write)
locks nobody out; the notebook keeps the generation it opened until it reconnects.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from darkpool_analysis.errors import StoreError
from darkpool_analysis.store import covers

CATALOGUE_FORMAT = 1


def store_dir_for(db_path: Path) -> Path:
    """The folder of segment files and catalogues that belongs to ``db_path``."""
    db_path = Path(db_path)
    return db_path.with_name(f"{db_path.stem}.store")


def catalogue_paths(store_dir: Path, generation: int) -> tuple[Path, Path]:
    """(JSON, DuckDB) paths of one generation's catalogue."""
    base = store_dir / "catalogues" / f"{generation:08d}"
    return base.with_suffix(".json"), base.with_suffix(".duckdb")


def current_generation(store_dir: Path) -> int | None:
    """The published generation (None before the first publication)."""
    try:
        return int((store_dir / "CURRENT").read_text().strip())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Segment:
    """One immutable piece of a published table."""

    files: tuple[str, ...]          # relative to the store folder
    cover: covers.Cover
    rows: int = 0
    #: its files store the table's derived columns too (rows written by a tool as given)
    stores_derived: bool = False


@dataclass(frozen=True)
class TableSpec:
    """A published table: column names and SQL types, its keys and ordered segments."""

    name: str
    columns: tuple[tuple[str, str], ...]
    date_column: str | None
    symbol_column: str | None
    segments: tuple[Segment, ...]
    #: (column, SQL expression over the stored columns) for columns the files do not store
    derived: tuple[tuple[str, str], ...] = ()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _path_literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def view_sql(spec: TableSpec, store_dir: Path, *, temporary: bool = False) -> str:
    """``CREATE VIEW`` of ``spec``: the union of its segments, each minus the rows that later
    segments cover, with the column names and SQL types readers had before (explicit casts);
    derived columns computed from the stored ones of the same row (except in segments whose
    files store them: a tool's rows read back as they were written)."""
    derived = dict(spec.derived)
    stored_casts = ", ".join(f"CAST({_ident(c)} AS {t}) AS {_ident(c)}" for c, t in spec.columns)
    derived_casts = ", ".join(
        f"CAST({derived[c] if c in derived else _ident(c)} AS {t}) AS {_ident(c)}"
        for c, t in spec.columns)
    selects = []
    for i, segment in enumerate(spec.segments):
        if not segment.files:
            continue
        casts = stored_casts if segment.stores_derived else derived_casts
        later = [s.cover for s in spec.segments[i + 1:] if s.cover]
        where = ""
        if later:
            if spec.date_column is None:
                raise StoreError(f"{spec.name}: a table without keys has several segments")
            hidden = " OR ".join(
                f"({covers.predicate(c, _ident(spec.date_column), _ident(spec.symbol_column) if spec.symbol_column else None)})"  # noqa: E501
                for c in later)
            where = f" WHERE NOT coalesce({hidden}, false)"
        files = ", ".join(_path_literal(store_dir / f) for f in segment.files)
        selects.append(f"SELECT {casts} FROM read_parquet([{files}]){where}")
    if not selects:
        empty = ", ".join(f"CAST(NULL AS {t}) AS {_ident(c)}" for c, t in spec.columns)
        selects.append(f"SELECT {empty} WHERE false")
    kind = "TEMP VIEW" if temporary else "VIEW"
    return f"CREATE OR REPLACE {kind} {_ident(spec.name)} AS " + "\nUNION ALL ".join(selects)


def to_json(generation: int, schema_version: int, specs: Sequence[TableSpec]) -> dict[str, Any]:
    return {
        "format": CATALOGUE_FORMAT,
        "generation": generation,
        "schema_version": schema_version,
        "created_at": time.time(),
        "tables": {
            s.name: {
                "columns": [list(c) for c in s.columns],
                "date_column": s.date_column,
                "symbol_column": s.symbol_column,
                **({"derived": [list(d) for d in s.derived]} if s.derived else {}),
                "segments": [{"files": list(g.files), "cover": g.cover, "rows": g.rows,
                              **({"stores_derived": True} if g.stores_derived else {})}
                             for g in s.segments],
            }
            for s in specs
        },
    }


def referenced_files(catalogue: dict[str, Any]) -> set[str]:
    """Every segment file a catalogue JSON refers to (relative to the store folder)."""
    return {f for table in catalogue["tables"].values() for seg in table["segments"]
            for f in seg["files"]}


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_catalogue(builder: duckdb.DuckDBPyConnection, db_path: Path, store_dir: Path,
                    generation: int, schema_version: int, specs: Sequence[TableSpec]) -> None:
    """Write generation ``generation``'s catalogue (JSON + DuckDB), swap it in over
    ``db_path`` with an atomic rename, then point ``CURRENT`` at it.

    The DuckDB catalogue starts as a copy of the previous generation's and only the views of
    tables whose segments changed are replaced (``builder`` is an in-memory connection that
    caches Parquet footers across publications). A crash at any moment leaves the previous
    generation published and intact.
    """
    json_path, duck_path = catalogue_paths(store_dir, generation)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    document = to_json(generation, schema_version, specs)
    document["store_dir"] = str(store_dir)
    previous_tables: dict[str, Any] | None = None
    tmp_duck = duck_path.with_name(f".{duck_path.name}.tmp")
    tmp_duck.unlink(missing_ok=True)
    previous = current_generation(store_dir)
    if previous is not None:
        prev_json, prev_duck = catalogue_paths(store_dir, previous)
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            old = json.loads(prev_json.read_text())
            if (old.get("format") == CATALOGUE_FORMAT and old.get("store_dir") == str(store_dir)
                    and prev_duck.exists()):
                shutil.copyfile(prev_duck, tmp_duck)
                previous_tables = old["tables"]
    alias = f"darkpool_catalogue_{generation}"
    builder.execute(f"ATTACH {_path_literal(tmp_duck)} AS {alias}").fetchall()
    try:
        builder.execute(f"USE {alias}").fetchall()
        for spec in specs:
            if previous_tables is None or previous_tables.get(spec.name) != \
                    document["tables"][spec.name]:
                builder.execute(view_sql(spec, store_dir)).fetchall()
        for gone in set(previous_tables or ()) - {s.name for s in specs}:
            builder.execute(f"DROP VIEW IF EXISTS {_ident(gone)}").fetchall()
    finally:
        builder.execute("USE memory").fetchall()
        builder.execute(f"DETACH {alias}").fetchall()
    with open(tmp_duck, "rb+") as handle:
        os.fsync(handle.fileno())
    _fsync_write(json_path, json.dumps(document).encode())
    os.replace(tmp_duck, duck_path)
    # The published file is a copy: a notebook's read-write handle on it never touches the
    # tool's own readers, which open ``duck_path`` read-only.
    tmp_pub = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    shutil.copyfile(duck_path, tmp_pub)
    with open(tmp_pub, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp_pub, db_path)
    _fsync_write(store_dir / "CURRENT", f"{generation}\n".encode())


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used" in text


def connect_readonly(db_path: Path, *, timeout: float = 30.0) -> duckdb.DuckDBPyConnection:
    """Open the published database for reading.

    With a generation store, opens the current generation's private catalogue read-only
    (nobody else ever opens it read-write, so this cannot meet a lock). A plain DuckDB file
    (an older layout, or a copy) is opened read-only, retrying briefly while another process
    holds it read-write. Raises :class:`StoreError` when there is no database.
    """
    path = Path(db_path)
    store_dir = store_dir_for(path)
    deadline = time.monotonic() + timeout
    while (generation := current_generation(store_dir)) is not None:
        _, duck_path = catalogue_paths(store_dir, generation)
        try:
            conn = duckdb.connect(str(duck_path), read_only=True)
        except duckdb.IOException as exc:
            # Collected between reading CURRENT and opening it (a reader paused for longer
            # than the grace period): read CURRENT again.
            if duck_path.exists() or time.monotonic() >= deadline:
                raise StoreError(f"could not open {duck_path} read-only: {exc}") from exc
            continue
        # Segment files never change once written: each file's footer is parsed once per
        # connection, not once per query.
        conn.execute("SET parquet_metadata_cache = true")
        return conn
    if not path.exists():
        raise StoreError(
            f"no database at {path}",
            hint="run `darkpool ingest finra-short ...` (or `darkpool demo`) first, "
            "or point DARKPOOL_DB at an existing database",
        )
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() >= deadline:
                raise StoreError(
                    f"could not open {path} read-only: {exc}",
                    hint="another program holds it read-write; close that connection",
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def read_frame(db_path: Path, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
    """Run one read-only query against the published database and return a DataFrame."""
    conn = connect_readonly(db_path)
    try:
        return conn.execute(sql, list(params or [])).df()
    finally:
        conn.close()
