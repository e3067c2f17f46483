"""Schema of the writer's master database: versioned migrations and small SQL helpers.

The master (``<name>.master.duckdb``) is the single writer's private working store. Readers
never open it: they read the published catalogue (see :mod:`.catalogue`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import duckdb

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
        "publication by generations: daily_metrics lives in immutable Parquet segments",
        """
        CREATE SEQUENCE store_segment_seq;
        CREATE TABLE store_segments (
            table_name VARCHAR NOT NULL,
            seq BIGINT NOT NULL DEFAULT nextval('store_segment_seq'),
            files VARCHAR[] NOT NULL,           -- Parquet files, relative to the store folder
            rows BIGINT NOT NULL,
            bytes BIGINT NOT NULL,
            cover JSON NOT NULL,                -- the rows of earlier segments this one replaces
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (table_name, seq)
        );
        CREATE TABLE store_pending (             -- raw changes not yet exported for readers
            table_name VARCHAR NOT NULL,
            symbol VARCHAR,                     -- NULL = every symbol
            from_day DATE,                      -- NULL = the whole table
            to_day DATE
        );
        CREATE TABLE store_state (
            key VARCHAR PRIMARY KEY,            -- generation, fingerprint:<table>
            value VARCHAR NOT NULL
        );
        ALTER TABLE daily_metrics RENAME TO daily_metrics_v5;
        CREATE TABLE daily_metrics_columns AS SELECT * FROM daily_metrics_v5 LIMIT 0;
        """,
    ),
    (
        7,
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

#: Large tables published as deltas: (date column, symbol column or None). Each change
#: records, in its own transaction, the (symbol, date range) it touched (``store_pending``);
#: publication exports exactly those rows of the master as a new segment. ``daily_metrics``
#: is written straight to segments by the build. Every other table is small and republished
#: whole when its fingerprint changes.
DELTA_TABLES: dict[str, tuple[str, str | None]] = {
    "finra_short_daily_raw": ("trade_date", None),
    "prices_daily": ("date", "symbol"),
    "lit_direction_daily": ("date", "symbol"),
    "finra_otc_weekly_raw": ("week_start_date", None),
    "finra_otc_weekly_firm_raw": ("week_start_date", None),
    "daily_metrics": ("date", "symbol"),
}

#: Master tables that are the store's own bookkeeping, never published.
PRIVATE_TABLES = frozenset({"store_segments", "store_pending", "store_state",
                            "daily_metrics_columns", "daily_metrics_v5"})

_SELL = ('(CASE WHEN "total_volume" - "short_volume" < 0 THEN CAST(0 AS DOUBLE) '
         'ELSE "total_volume" - "short_volume" END)')
_BUYS = '(coalesce("short_volume", 0) + coalesce("lit_buy_volume", 0))'
_SELLS = f'(coalesce({_SELL}, 0) + coalesce("lit_sell_volume", 0))'

#: ``daily_metrics`` columns the segment files do not store: each is its row-local formula
#: (metrics-spec; :func:`darkpool_analysis.kernels.row_columns` and the score display) over
#: stored columns of the same row, as SQL with the same IEEE operations in the same order,
#: so the published view returns the bits the build computed (NULL where the kernel gives
#: NaN): a build's files are a third smaller. Segments whose files do store them (files
#: from before, rows a tool wrote with their own values) are read as stored.
DAILY_METRICS_DERIVED: dict[str, str] = {
    "short_buy_volume": '"short_volume"',
    "finra_buy_volume": '"short_volume"',
    "short_sell_volume": _SELL,
    "short_ratio": '"short_volume" / nullif("total_volume", 0)',
    "short_buy_sell_ratio": f'"short_volume" / (CASE WHEN {_SELL} > 0 THEN {_SELL} END)',
    "lit_total_volume": '"lit_buy_volume" + "lit_sell_volume"',
    # NULL when short, sell, lit buy and lit sell are all NULL (sell is NULL without short)
    "vw_flow": (f'CASE WHEN "short_volume" IS NOT NULL OR "lit_buy_volume" IS NOT NULL '
                f'OR "lit_sell_volume" IS NOT NULL THEN {_BUYS} - {_SELLS} END'),
    "combined_ratio": f"{_BUYS} / nullif({_SELLS}, 0)",
    "range_pct": '("high" - "low") / nullif("close", 0)',
    "accumulation_score_display": '("accumulation_score" + 1) * 50',
}


def stored_columns(table: str, columns: Sequence[str]) -> list[str]:
    """The columns of ``table`` its segment files store (all but the derived ones)."""
    if table != "daily_metrics":
        return list(columns)
    return [c for c in columns if c not in DAILY_METRICS_DERIVED]


#: ``database_meta`` key whose value ``"true"`` marks a database of synthetic numbers.
META_SYNTHETIC = "synthetic"
#: ``database_meta`` key with a one-line description of how the synthetic data was made.
META_SYNTHETIC_NOTE = "synthetic_note"

#: How often a long-running writer publishes a fresh snapshot for readers (seconds).
PUBLISH_INTERVAL_S = 5.0


SCHEMA_VERSION = max(v for v, _, _ in MIGRATIONS)

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


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    return bool(row and row[0])
