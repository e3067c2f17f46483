"""The DuckDB store: schema (versioned migrations), every write, and safe concurrent reads.

Concurrency design (DuckDB allows one read-write process per file, and a read-write handle
excludes all readers):

* Writers (``darkpool ingest``, ``darkpool build``) never open the published database. They take
  an exclusive advisory lock (``<db>.lock``) and work on a private *master* copy
  (``<name>.master.duckdb`` next to it), one short transaction per file or batch.
* Every few seconds and when a writer finishes, the master is checkpointed, copied to a temporary
  file in the same folder and atomically renamed over the published path (``os.replace``).
* Readers (``darkpool sandbox``, the web page, the seed notebook, which opens the file read-write
  but only reads) always see a complete, consistent snapshot and never contend with the writer.
  A reader that started before a swap keeps reading the old snapshot until it reconnects.

So neither side can fail with a lock error because of the other. Two *readers* of the published
file can still collide when one of them opens it read-write (the seed does);
:func:`connect_readonly` retries with a short backoff for that case.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from darkpool_analysis.errors import StoreError

log = logging.getLogger(__name__)

#: (version, name, DDL). Append only; never edit an applied migration.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "foundation: raw FINRA short volume, source files, ingest log, prices, daily_metrics",
        """
        CREATE TABLE finra_short_daily_raw (
            trade_date DATE NOT NULL,
            facility VARCHAR NOT NULL,          -- CNMS, FNSQ, FNQC, FNYX, FNRA, FORF
            symbol VARCHAR NOT NULL,            -- as published (CQS spelling: BRK/B, ABRpD)
            symbol_norm VARCHAR NOT NULL,       -- normalised (BRK.B, ABR.PR.D)
            short_volume DOUBLE NOT NULL,       -- short + short-exempt, RTH, this facility only
            short_exempt_volume DOUBLE,         -- NULL in pre-2011-02-28 layouts
            total_volume DOUBLE NOT NULL,       -- all volume reported to this FINRA facility
            market VARCHAR,
            source_file VARCHAR NOT NULL,
            sha256 VARCHAR NOT NULL,
            fetched_at TIMESTAMP NOT NULL
            -- No PRIMARY KEY on purpose: the parser rejects duplicate symbols within a file and
            -- every write replaces a whole (facility, trade_date) partition in one transaction,
            -- so (trade_date, facility, symbol) is unique; the index cost 2x ingest speed.
        );
        CREATE TABLE source_files (
            dataset VARCHAR NOT NULL,           -- finra_short, prices, finra_otc, lit
            partition_key VARCHAR NOT NULL,     -- e.g. CNMS/2020-12-01
            source_file VARCHAR NOT NULL,
            location VARCHAR NOT NULL,          -- URL or local path it came from
            sha256 VARCHAR NOT NULL,
            rows BIGINT NOT NULL,
            fetched_at TIMESTAMP NOT NULL,
            PRIMARY KEY (dataset, partition_key)
        );
        CREATE SEQUENCE ingest_log_id;
        CREATE TABLE ingest_log (
            id BIGINT PRIMARY KEY DEFAULT nextval('ingest_log_id'),
            run_id VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            partition_key VARCHAR,
            trade_date DATE,
            location VARCHAR,
            outcome VARCHAR NOT NULL,           -- ingested, replaced, unchanged, not_published
            rows BIGINT,
            sha256 VARCHAR,
            message VARCHAR,
            logged_at TIMESTAMP NOT NULL
        );
        CREATE TABLE prices_daily (
            symbol VARCHAR NOT NULL,            -- normalised
            date DATE NOT NULL,
            open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE,
            adj_close DOUBLE,
            vwap DOUBLE,
            volume DOUBLE,                      -- consolidated volume, all venues
            provider VARCHAR NOT NULL,
            source_file VARCHAR,
            fetched_at TIMESTAMP NOT NULL,
            PRIMARY KEY (symbol, date)
        );
        CREATE TABLE lit_direction_daily (
            symbol VARCHAR NOT NULL,
            date DATE NOT NULL,
            lit_buy_volume DOUBLE,
            lit_sell_volume DOUBLE,
            unclassified_volume DOUBLE,
            buy_trades BIGINT,
            sell_trades BIGINT,
            unclassified_trades BIGINT,
            method VARCHAR NOT NULL,
            coverage_pct DOUBLE,
            quote_coverage_pct DOUBLE,
            source VARCHAR NOT NULL,
            inference_version VARCHAR NOT NULL,
            complete BOOLEAN NOT NULL DEFAULT TRUE,
            fetched_at TIMESTAMP NOT NULL,
            PRIMARY KEY (symbol, date)
        );
        CREATE TABLE daily_metrics (
            symbol VARCHAR NOT NULL,
            date DATE NOT NULL,
            -- short-sale block (FINRA Reg SHO; "buy" = short volume, a proxy, not observed)
            short_volume DOUBLE,
            short_exempt_volume DOUBLE,
            total_volume DOUBLE,
            short_source VARCHAR,
            short_buy_volume DOUBLE,
            finra_buy_volume DOUBLE,
            short_sell_volume DOUBLE,
            short_ratio DOUBLE,
            short_buy_sell_ratio DOUBLE,
            short_buy_sell_ratio_z DOUBLE,
            short_ratio_z DOUBLE,
            finra_buy_volume_z DOUBLE,
            -- lit block
            lit_buy_volume DOUBLE,
            lit_sell_volume DOUBLE,
            lit_total_volume DOUBLE,
            lit_buy_ratio DOUBLE,
            log_buy_sell DOUBLE,
            lit_flow_imbalance DOUBLE,
            lit_flow_imbalance_z DOUBLE,
            lit_buy_ratio_z DOUBLE,
            lit_method VARCHAR,
            lit_coverage_pct DOUBLE,
            -- combined flow
            vw_flow DOUBLE,
            vw_flow_z DOUBLE,
            combined_ratio DOUBLE,
            -- price block
            open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, vwap DOUBLE, volume DOUBLE,
            return_1d DOUBLE,
            return_z DOUBLE,
            range_pct DOUBLE,
            -- OTC weekly block (point-in-time)
            otc_week_used DATE,
            otc_off_exchange_volume DOUBLE,
            otc_participation_rate DOUBLE,
            otc_participation_z DOUBLE,
            otc_participation_delta DOUBLE,
            otc_status VARCHAR,
            otc_alignment VARCHAR,
            -- composite
            accumulation_score DOUBLE,
            accumulation_score_display DOUBLE,
            pressure_context_label VARCHAR,
            confidence DOUBLE,
            -- provenance
            has_short BOOLEAN,
            has_lit BOOLEAN,
            has_price BOOLEAN,
            has_otc BOOLEAN,
            data_quality VARCHAR,
            accumulation_short_z_source VARCHAR,
            inference_version VARCHAR
            -- No PRIMARY KEY on purpose: `darkpool build` deletes the (symbols, range) it writes
            -- and inserts one row per (symbol, session) in the same transaction, so
            -- (symbol, date) is unique by construction (tests/metrics/test_build.py checks it);
            -- the index cost ~30% of the build.
        );
        """,
    ),
    (
        2,
        "FINRA OTC Transparency weekly volume (symbol-level and firm-level, every revision)",
        """
        CREATE TABLE finra_otc_weekly_raw (
            week_start_date DATE NOT NULL,      -- Monday of the week described
            tier VARCHAR NOT NULL,              -- T1, T2, OTCE
            summary_type VARCHAR NOT NULL,      -- ATS_W_SMBL or OTC_W_SMBL (never *_FIRM here)
            symbol VARCHAR NOT NULL,            -- as published
            symbol_norm VARCHAR NOT NULL,
            issue_name VARCHAR,
            product_type VARCHAR,
            share_quantity DOUBLE NOT NULL,
            trade_count BIGINT,
            notional DOUBLE,
            initial_published_date DATE,
            last_update_date DATE NOT NULL,     -- one row per revision: history stays queryable
            source VARCHAR NOT NULL,            -- api, api_historic, file
            source_file VARCHAR,
            fetched_at TIMESTAMP NOT NULL,
            PRIMARY KEY (week_start_date, tier, summary_type, symbol, last_update_date)
        );
        CREATE TABLE finra_otc_weekly_firm_raw (
            week_start_date DATE NOT NULL,
            tier VARCHAR NOT NULL,
            summary_type VARCHAR NOT NULL,      -- ATS_W_SMBL_FIRM, OTC_W_SMBL_FIRM: never add to
            symbol VARCHAR NOT NULL,            -- the symbol-level table (it splits that volume)
            symbol_norm VARCHAR NOT NULL,
            issue_name VARCHAR,
            mpid VARCHAR NOT NULL,
            market_participant_name VARCHAR,
            share_quantity DOUBLE NOT NULL,
            trade_count BIGINT,
            notional DOUBLE,
            initial_published_date DATE,
            last_update_date DATE NOT NULL,
            source VARCHAR NOT NULL,
            source_file VARCHAR,
            fetched_at TIMESTAMP NOT NULL,
            PRIMARY KEY (week_start_date, tier, summary_type, symbol, mpid, last_update_date)
        );
        """,
    ),
    (
        3,
        "signal evaluation runs (written only with `darkpool evaluate --save`)",
        """
        CREATE TABLE evaluation_runs (
            run_id VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            code_version VARCHAR NOT NULL,
            parameters JSON NOT NULL,           -- every option of the run
            summary JSON                        -- headline numbers
        );
        CREATE TABLE evaluation_results (
            run_id VARCHAR NOT NULL,
            section VARCHAR NOT NULL,           -- ic, quantiles, events, backtest, walk_forward
            variant VARCHAR,
            horizon INTEGER,
            metric VARCHAR NOT NULL,
            value DOUBLE
        );
        """,
    ),
    (
        4,
        "database metadata (e.g. synthetic = true for the demo's database)",
        """
        CREATE TABLE database_meta (
            key VARCHAR PRIMARY KEY,            -- synthetic, synthetic_note, ...
            value VARCHAR NOT NULL
        );
        """,
    ),
    (
        5,
        "daily_metrics rebuilds still owed after raw changes (written with each raw change)",
        """
        CREATE TABLE metrics_owed (
            symbol VARCHAR,                     -- normalised; NULL = every symbol
            from_date DATE NOT NULL,            -- first date whose rows may have changed
            source_table VARCHAR NOT NULL,      -- the raw table whose change created the debt
            recorded_at TIMESTAMP NOT NULL
        );
        """,
    ),
    (
        6,
        "watch alerts already posted; Polygon options premium per symbol and session",
        """
        CREATE TABLE alerts_sent (
            alert_key VARCHAR PRIMARY KEY,      -- sha256 of (session, rule, destination)
            session DATE NOT NULL,
            rule VARCHAR NOT NULL,
            destination VARCHAR NOT NULL,       -- webhook kind + fingerprint (never the URL)
            symbols VARCHAR,                    -- comma-separated symbols the rule matched
            status VARCHAR NOT NULL,            -- sending (delivery unknown) or sent
            message VARCHAR,
            recorded_at TIMESTAMP NOT NULL
        );
        CREATE TABLE options_premium_daily (
            symbol VARCHAR NOT NULL,            -- normalised underlying
            date DATE NOT NULL,
            underlying_close DOUBLE NOT NULL,   -- the session close that splits ITM / OTM
            call_premium DOUBLE NOT NULL,       -- dollars: sum of volume x VWAP x shares
            put_premium DOUBLE NOT NULL,
            call_itm_premium DOUBLE NOT NULL,
            call_otm_premium DOUBLE NOT NULL,
            put_itm_premium DOUBLE NOT NULL,
            put_otm_premium DOUBLE NOT NULL,
            call_volume DOUBLE NOT NULL,        -- contracts traded
            put_volume DOUBLE NOT NULL,
            contracts BIGINT NOT NULL,          -- near-the-money contracts selected
            contracts_traded BIGINT NOT NULL,   -- of which had a daily bar
            premium_score DOUBLE,               -- 100 x call / (call + put); NULL without trades
            moneyness_band DOUBLE NOT NULL,     -- strikes within close x (1 +- band)
            max_days_to_expiry INTEGER NOT NULL,
            source_file VARCHAR NOT NULL,
            fetched_at TIMESTAMP NOT NULL,
            PRIMARY KEY (symbol, date)
        );
        """,
    ),
]

#: Raw tables that ``daily_metrics`` is computed from: (date column, symbol column or None
#: when a change is owed for every symbol). Every write of one of them records, in the same
#: transaction, the rebuild it makes ``daily_metrics`` owe (``metrics_owed``), so a crash
#: between an ingest and its rebuild can never leave stale metrics that nobody knows about.
#: Short-sale files owe every symbol: a new or corrected day can add or remove symbols.
METRIC_INPUTS: dict[str, tuple[str, str | None]] = {
    "finra_short_daily_raw": ("trade_date", None),
    "prices_daily": ("date", "symbol"),
    "lit_direction_daily": ("date", "symbol"),
    "finra_otc_weekly_raw": ("week_start_date", "symbol_norm"),
}


SCHEMA_VERSION = max(v for v, _, _ in MIGRATIONS)

#: ``database_meta`` key whose value ``"true"`` marks a database of synthetic numbers.
META_SYNTHETIC = "synthetic"
#: ``database_meta`` key with a one-line description of how the synthetic data was made.
META_SYNTHETIC_NOTE = "synthetic_note"

#: How often a long-running writer publishes a fresh snapshot for readers (seconds).
PUBLISH_INTERVAL_S = 5.0


def master_path_for(db_path: Path) -> Path:
    """The writer's private working copy that sits next to the published database."""
    db_path = Path(db_path)
    return db_path.with_name(f"{db_path.stem}.master{db_path.suffix or '.duckdb'}")


def lock_path_for(db_path: Path) -> Path:
    db_path = Path(db_path)
    return db_path.with_name(f"{db_path.name}.lock")


def utcnow() -> dt.datetime:
    """Naive UTC timestamp (DuckDB TIMESTAMP columns are zone-less)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def run(conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> None:
    """Execute a statement and drain its result.

    DuckDB 2 refuses ``register``/``unregister`` and some other calls while a result is still
    open on the connection, so statements whose result we do not need are always drained.
    """
    conn.execute(sql, list(params) if params is not None else None).fetchall()


def settle(conn: duckdb.DuckDBPyConnection) -> None:
    """Finish any result still open on ``conn`` (DuckDB 2 requires it before ``register``)."""
    complete = getattr(conn, "complete", None)
    if complete is not None:
        complete()


def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The applied schema version (0 for an empty database)."""
    if not table_exists(conn, "schema_version"):
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()
    return int(row[0][0])


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Apply pending migrations in order, each in its own transaction; return the version."""
    run(conn, "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    current = int(row[0]) if row else 0
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {current} is newer than this darkpool-analysis "
            f"({SCHEMA_VERSION})",
            hint="upgrade darkpool-analysis",
        )
    for version, name, ddl in MIGRATIONS:
        if version <= current:
            continue
        run(conn, "BEGIN TRANSACTION")
        try:
            run(conn, ddl)
            run(conn, "INSERT INTO schema_version VALUES (?, ?, ?)",
                [version, name, utcnow()])
            run(conn, "COMMIT")
        except duckdb.Error:
            run(conn, "ROLLBACK")
            raise
        log.info("applied migration %d: %s", version, name)
        current = version
    return current


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used" in text


def connect_readonly(db_path: Path, *, timeout: float = 30.0) -> duckdb.DuckDBPyConnection:
    """Open the published database read-only, retrying briefly if another process holds it.

    Raises :class:`StoreError` when the database does not exist or stays locked.
    """
    path = Path(db_path)
    if not path.exists():
        raise StoreError(
            f"no database at {path}",
            hint="run `darkpool ingest finra-short ...` (or `darkpool demo`) first, "
            "or point DARKPOOL_DB at an existing database",
        )
    deadline = time.monotonic() + timeout
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
    """The single writer: owns the master database, transactions and publication.

    Use :func:`open_writer`; do not construct directly.
    """

    def __init__(self, db_path: Path, run_id: str, publish_interval: float) -> None:
        self.db_path = Path(db_path)
        self.master_path = master_path_for(self.db_path)
        self.run_id = run_id
        self.publish_interval = publish_interval
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._dirty = False
        self._depth = 0
        self._last_publish = time.monotonic()

    # -- connection --------------------------------------------------------------------------
    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            raise StoreError("writer is closed")
        return self._conn

    def _open(self) -> None:
        if not self.master_path.exists() and self.db_path.exists():
            # Adopt a published database (e.g. built elsewhere) as the new master.
            shutil.copyfile(self.db_path, self.master_path)
        self._conn = duckdb.connect(str(self.master_path))
        before = schema_version(self._conn)
        after = migrate(self._conn)
        # Publish a schema upgrade of an existing database; a brand-new database is published
        # only once something is committed (a failed first ingest leaves no database behind).
        self._dirty = after != before and self.db_path.exists()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

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
        except BaseException:
            self._depth = 0
            run(conn, "ROLLBACK")
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
        settle(self.conn)
        self.conn.register("_darkpool_batch", frame)
        try:
            with self.transaction() as conn:
                self._record_owed(conn, table, f"SELECT * FROM {table} WHERE {where}",
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
                    self._record_owed(conn, table, f"SELECT {table}.* FROM {table} "
                                      f"SEMI JOIN _darkpool_keys ON {match}", (),
                                      with_batch=bool(rows))
                    run(conn, f"DELETE FROM {table} USING _darkpool_keys WHERE {match}")
                elif rows:
                    self._record_owed(conn, table, None, (), with_batch=True)
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

    def _record_owed(self, conn: duckdb.DuckDBPyConnection, table: str, replaced: str | None,
                     params: Sequence[Any], *, with_batch: bool) -> None:
        """Record the ``daily_metrics`` rebuild that replacing ``replaced`` (a query of the
        rows about to be deleted) by ``_darkpool_batch`` makes owed, in the caller's
        transaction. Nothing is owed when neither side has a row."""
        if table not in METRIC_INPUTS:
            return
        date_column, symbol_column = METRIC_INPUTS[table]
        picked = f"{symbol_column} AS symbol, " if symbol_column else "NULL::VARCHAR AS symbol, "
        parts = []
        if replaced is not None:
            parts.append(f"SELECT {picked}{date_column} AS day FROM ({replaced})")
        if with_batch:
            parts.append(f"SELECT {picked}{date_column} AS day FROM _darkpool_batch")
        if not parts:
            return
        run(conn, f"""
            INSERT INTO metrics_owed (symbol, from_date, source_table, recorded_at)
            SELECT symbol, min(day), ?, ? FROM ({" UNION ALL ".join(parts)})
            GROUP BY symbol HAVING min(day) IS NOT NULL
        """, [table, utcnow(), *params])

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
        """Publish if the last snapshot is older than ``publish_interval``; return whether.

        Never inside a transaction (publication closes the connection)."""
        if self._depth:
            return False
        if self._dirty and time.monotonic() - self._last_publish >= self.publish_interval:
            self.publish()
            return True
        return False

    def publish(self) -> None:
        """Checkpoint the master and atomically swap a copy of it into the published path."""
        if not self._dirty:
            return
        if self._depth:
            raise StoreError("cannot publish inside a transaction")
        reopen = self._conn is not None
        self.close()  # closing checkpoints the WAL into the file
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.db_path.name}.", suffix=".tmp",
                                        dir=self.db_path.parent)
        os.close(fd)
        try:
            shutil.copyfile(self.master_path, tmp_name)
            with open(tmp_name, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.db_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        finally:
            if reopen:
                self._conn = duckdb.connect(str(self.master_path))
        self._dirty = False
        self._last_publish = time.monotonic()
        log.debug("published snapshot %s", self.db_path)


@contextlib.contextmanager
def open_writer(
    db_path: Path,
    *,
    run_id: str | None = None,
    lock_timeout: float = 600.0,
    publish_interval: float = PUBLISH_INTERVAL_S,
) -> Iterator[Writer]:
    """Become the single writer of ``db_path``; publish a snapshot on exit (also on error:
    every committed transaction is complete and consistent on its own)."""
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
                        publish_interval)
        writer._open()
        try:
            yield writer
        finally:
            try:
                writer.publish()
            finally:
                writer.close()
    finally:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
        lock_file.close()


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


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    return bool(row and row[0])
