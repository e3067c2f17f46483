"""``darkpool build``: recompute ``daily_metrics`` from the raw tables of the master database.

Reads the inputs through the :class:`~darkpool_analysis.store.Writer` connection (DuckDB SQL
consolidates the FINRA facility rows), computes every column with the pure functions of
:mod:`darkpool_analysis.metrics`, writes them straight from Arrow into a new Parquet segment
(:mod:`darkpool_analysis.store.segments`) and commits that segment, whose cover replaces the
(symbols, date range) it rebuilt, in ONE master transaction; a failure deletes the files and
leaves the table exactly as it was.

Incremental builds give the same values as a full build, bit for bit: each symbol's grid runs
from its first appearance in any source, and a range build loads a warm-up of at least
``max(window) + 1`` sessions before ``start`` (every rolling statistic and ``return_1d`` only
look that far back), aligned to the rolling kernel's exact re-anchoring sessions
(:func:`~darkpool_analysis.metrics.warmup_block_floor`), then writes only rows inside
``[start, end]``. Rows of other symbols or dates are never touched, and
``daily_metrics`` holds no timestamps, so rebuilding is deterministic.

The OTC weekly columns come from :mod:`darkpool_analysis.otc_metrics` (point in time by
default; ``otc_alignment='week'`` is the original look-ahead, warned about and stored on every
row). Speed: the raw tables are read once per read group of a few batches (one scan and
join of every raw row per group, fetched through Arrow) and assembled into one grid, which the
batches are slices of; a reading thread prepares batch k+1 while batch k is computed (compiled
kernels, Arrow arrays straight from numpy) and two writing threads write the halves of batch
k-1 (see ``bench/build_metrics.py`` and BENCHMARKS.md for the measured figures).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from darkpool_analysis.config import OtcAlignment, Settings
from darkpool_analysis.errors import NoDataError
from darkpool_analysis.metrics import (
    LIT_INPUT_COLUMNS,
    OTC_COLUMNS,
    PRICE_INPUT_COLUMNS,
    SHORT_INPUT_COLUMNS,
    SHORT_SOURCES,
    GridArrays,
    assemble_grid_arrays,
    compute_daily_metrics_arrow,
    session_numbers_of,
    warmup_block_floor,
)
from darkpool_analysis.otc_metrics import load_otc_inputs, otc_daily_block
from darkpool_analysis.store import Writer, covers, read_owed, run
from darkpool_analysis.store.segments import TILE_DAYS, SegmentFileWriter
from darkpool_analysis.symbols import to_feed
from darkpool_analysis.trading_calendar import (
    CALENDAR_START,
    DateLike,
    is_session,
    previous_session,
    session_offset,
    sessions_index,
    to_date,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Grid rows computed and written per batch (bounds peak memory; ~60 columns per row).
ROWS_PER_BATCH = 1_500_000

#: Grid rows read from the raw tables in one pass (a group of whole batches): each pass scans
#: and joins every raw row once, so fewer passes cost less CPU, but the first batch waits for
#: its whole group and the group's grid (~130 bytes a row) is held until its last batch is
#: computed. Two batches a group measured best at 12.6 M rows (build 14.0-14.7 s against
#: 14.0-17.0 s one read per batch through ``fetchnumpy`` and 14.5-16.1 s in 8 M-row groups).
ROWS_PER_READ = 3_000_000

#: Batches of at least this many rows are written as two halves by two threads.
WRITE_SPLIT_ROWS = 262_144

#: Facilities whose rows sum to the consolidated (CNMS) row when no CNMS file exists.
NMS_FACILITIES = ("FNSQ", "FNQC", "FNYX", "FNRA")

_EPOCH = "DATE '1970-01-01'"


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote, and where its time went.

    ``read_seconds``/``compute_seconds`` are spent in the calling thread;
    ``write_seconds`` is the Parquet writes (summed over the two writing threads) + commit,
    the writes running while the next batch is computed, so the three parts can add up to
    more than ``seconds``.
    """

    symbols: int
    rows_written: int
    start: dt.date | None
    end: dt.date | None
    seconds: float
    missing_symbols: tuple[str, ...] = field(default_factory=tuple)
    read_seconds: float = 0.0
    compute_seconds: float = 0.0
    write_seconds: float = 0.0
    otc_alignment: OtcAlignment = "published"


ProgressCallback = Callable[[int, int], None]


def _days_to_datetime(days: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 as ``datetime64[s]`` (a unit pandas keeps; the grid turns it
    back into days with one integer division)."""
    return days.astype("datetime64[D]").astype("datetime64[s]")


def _symbol_spans(conn: duckdb.DuckDBPyConnection,
                  symbols: Sequence[str] | None) -> pd.DataFrame:
    """First and last appearance (short-sale rows or price bars) of every symbol, sorted."""
    requested = "" if symbols is None else "WHERE symbol IN (SELECT unnest($1::VARCHAR[]))"
    params = [] if symbols is None else [list(symbols)]
    return conn.execute(f"""
        SELECT symbol, min(date) AS first_date, max(date) AS last_date
        FROM (SELECT symbol_norm AS symbol, trade_date AS date FROM finra_short_daily_raw
              UNION ALL SELECT symbol, date FROM prices_daily)
        {requested}
        GROUP BY symbol ORDER BY symbol
    """, params).df()


def _fetch_arrays(conn: duckdb.DuckDBPyConnection, query: str,
                  params: Sequence[object]) -> dict[str, np.ndarray]:
    """The columns of a query without NULLs as numpy arrays, through Arrow (3x less CPU than
    ``fetchnumpy`` for the build's millions of rows)."""
    table = conn.sql(query, params=list(params)).to_arrow_table()
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _read_short(conn: duckdb.DuckDBPyConnection, load_start: dt.date,
                end: dt.date) -> dict[str, np.ndarray]:
    """Consolidated short-sale volume per (symbol id, day) of the batch symbols.

    The consolidated row is the CNMS row; on dates without any CNMS row (before CNMS began in
    2018-08, or a missing file) it is the sum of the FNSQ+FNQC+FNYX+FNRA rows. FORF (OTC
    equities, not part of CNMS) rows stand alone and are used only when the symbol has no NMS
    row that day.

    CNMS rows are unique per (symbol, day) and pass straight through; only the few other rows
    (facility files before CNMS, FORF) are grouped, and an OTC-only group is dropped where a
    CNMS row exists (3x faster than grouping every row).
    """
    nms = ", ".join(f"'{f}'" for f in NMS_FACILITIES)
    return _fetch_arrays(conn, f"""
        WITH batch_rows AS (
            SELECT b.symbol_id, r.trade_date, r.facility, r.short_volume,
                   r.short_exempt_volume, r.total_volume
            FROM finra_short_daily_raw r JOIN _build_batch b ON r.symbol_norm = b.symbol
            WHERE r.trade_date BETWEEN $1 AND $2
        ), cnms AS (
            SELECT symbol_id, trade_date, short_volume, short_exempt_volume, total_volume,
                   0 AS source_code
            FROM batch_rows WHERE facility = 'CNMS'
        ), cnms_dates AS (
            SELECT DISTINCT trade_date FROM finra_short_daily_raw
            WHERE facility = 'CNMS' AND trade_date BETWEEN $1 AND $2
        ), others AS (
            SELECT symbol_id, trade_date,
                   bool_or(facility <> 'FORF') AS has_nms,
                   sum(short_volume) FILTER (WHERE facility <> 'FORF') AS nms_short,
                   sum(short_exempt_volume) FILTER (WHERE facility <> 'FORF') AS nms_exempt,
                   sum(total_volume) FILTER (WHERE facility <> 'FORF') AS nms_total,
                   sum(short_volume) FILTER (WHERE facility = 'FORF') AS orf_short,
                   sum(short_exempt_volume) FILTER (WHERE facility = 'FORF') AS orf_exempt,
                   sum(total_volume) FILTER (WHERE facility = 'FORF') AS orf_total
            FROM batch_rows
            WHERE facility = 'FORF'
               OR (facility IN ({nms})
                   AND trade_date NOT IN (SELECT trade_date FROM cnms_dates))
            GROUP BY symbol_id, trade_date
        ), consolidated AS (
            SELECT * FROM cnms
            UNION ALL
            SELECT o.symbol_id, o.trade_date,
                   CASE WHEN o.has_nms THEN o.nms_short ELSE o.orf_short END,
                   CASE WHEN o.has_nms THEN o.nms_exempt ELSE o.orf_exempt END,
                   CASE WHEN o.has_nms THEN o.nms_total ELSE o.orf_total END,
                   CASE WHEN o.has_nms THEN 1 ELSE 2 END
            FROM others o ANTI JOIN cnms c
                 ON o.symbol_id = c.symbol_id AND o.trade_date = c.trade_date
        )
        SELECT symbol_id,
               CAST(trade_date - {_EPOCH} AS BIGINT) AS day,
               coalesce(short_volume, 'NaN'::DOUBLE) AS short_volume,
               coalesce(short_exempt_volume, 'NaN'::DOUBLE) AS short_exempt_volume,
               coalesce(total_volume, 'NaN'::DOUBLE) AS total_volume,
               CAST(source_code AS TINYINT) AS source_code
        FROM consolidated
    """, [load_start, end])


def _read_prices(conn: duckdb.DuckDBPyConnection, load_start: dt.date,
                 end: dt.date) -> dict[str, np.ndarray]:
    return _fetch_arrays(conn, f"""
        SELECT b.symbol_id, CAST(p.date - {_EPOCH} AS BIGINT) AS day,
               coalesce(p.open, 'NaN'::DOUBLE) AS open, coalesce(p.high, 'NaN'::DOUBLE) AS high,
               coalesce(p.low, 'NaN'::DOUBLE) AS low, coalesce(p.close, 'NaN'::DOUBLE) AS close,
               coalesce(p.vwap, 'NaN'::DOUBLE) AS vwap,
               coalesce(p.volume, 'NaN'::DOUBLE) AS volume
        FROM prices_daily p JOIN _build_batch b ON p.symbol = b.symbol
        WHERE p.date BETWEEN $1 AND $2
    """, [load_start, end])


def _read_lit(conn: duckdb.DuckDBPyConnection, load_start: dt.date,
              end: dt.date) -> pd.DataFrame:
    table = conn.sql("""
        SELECT b.symbol_id, l.date, l.lit_buy_volume, l.lit_sell_volume,
               l.method AS lit_method, l.coverage_pct AS lit_coverage_pct
        FROM lit_direction_daily l JOIN _build_batch b ON l.symbol = b.symbol
        WHERE l.date BETWEEN $1 AND $2
    """, params=[load_start, end]).to_arrow_table()
    # Methods as a categorical (a handful of distinct strings, not one object per row).
    method = table.column("lit_method").dictionary_encode()
    return table.set_column(table.schema.get_field_index("lit_method"), "lit_method",
                            method).to_pandas(date_as_object=False)


def _otc_block(conn: duckdb.DuckDBPyConnection, symbols: Sequence[str], start: dt.date,
               end: dt.date, settings: Settings, alignment: OtcAlignment) -> pd.DataFrame:
    """The point-in-time OTC weekly columns (``otc_metrics``) of ``symbols`` on ``[start, end]``.

    Only symbols with rows in ``finra_otc_weekly_raw`` are computed (the others get the
    defaults of :func:`~darkpool_analysis.metrics.compute_daily_metrics`); with no such row
    this is one cheap query. Returns a frame with :data:`~darkpool_analysis.metrics.OTC_COLUMNS`.
    """
    conn.register("_build_otc_symbols", pd.DataFrame({"symbol": list(symbols)}))
    try:
        with_otc = [row[0] for row in conn.execute("""
            SELECT DISTINCT r.symbol_norm FROM finra_otc_weekly_raw r
            SEMI JOIN _build_otc_symbols b ON r.symbol_norm = b.symbol
            ORDER BY 1
        """).fetchall()]
    finally:
        conn.unregister("_build_otc_symbols")
    if not with_otc:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in OTC_COLUMNS})
    weekly, daily_volume = load_otc_inputs(conn, with_otc, start, end,
                                           z_window=settings.otc_z_window)
    if weekly.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in OTC_COLUMNS})
    return otc_daily_block(weekly, daily_volume, sessions_index(start, end),
                           alignment=alignment, z_window=settings.otc_z_window,
                           z_min_periods=settings.otc_z_min_periods, symbols=with_otc)


def _load_from(first: dt.date, settings: Settings) -> pd.Timestamp:
    """First session to read for a build starting at ``first`` (warm-up, block aligned)."""
    start_session = pd.Timestamp(session_offset(first, 0) if is_session(first)
                                 else session_offset(first, 1))
    number = int(session_numbers_of(pd.Series([start_session]))[0])
    sessions = sessions_index(CALENDAR_START, start_session)
    return pd.Timestamp(sessions[warmup_block_floor(number, settings)])


def _normalise_request(symbols: Sequence[str] | None) -> list[str] | None:
    if symbols is None:
        return None
    return sorted({to_feed(s.strip(), "normalised") for s in symbols if s.strip()})


def _batches(lengths: np.ndarray, rows_per_batch: int) -> list[slice]:
    """Contiguous symbol ranges of about ``rows_per_batch`` grid rows each."""
    ends = np.cumsum(lengths)
    cuts = np.searchsorted(ends, np.arange(rows_per_batch, ends[-1], rows_per_batch),
                           side="left") + 1 if len(ends) and ends[-1] > 0 else np.array([])
    bounds = np.unique(np.concatenate([[0], cuts, [len(lengths)]]).astype(int))
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def _read_groups(batches: Sequence[slice], approx_rows: np.ndarray,
                 rows_per_read: int) -> list[slice]:
    """Consecutive batches merged into read groups of about ``rows_per_read`` grid rows (at
    least one batch each; the groups are about equal so that no small remainder pays a
    whole scan of its own)."""
    if not batches:
        return []
    total = int(approx_rows.sum())
    n_groups = max(1, min(len(batches), -(-total // max(rows_per_read, 1))))
    ends = np.cumsum([int(approx_rows[b].sum()) for b in batches])
    targets = total * np.arange(1, n_groups) / n_groups
    cuts = np.unique(np.searchsorted(ends, targets, side="left") + 1)
    bounds = [0, *[int(c) for c in cuts if 0 < c < len(batches)], len(batches)]
    return [slice(batches[a].start, batches[b - 1].stop) for a, b in itertools.pairwise(bounds)]


def _batch_inputs(conn: duckdb.DuckDBPyConnection, names: np.ndarray, load_start: dt.date,
                  end: dt.date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Short, price and lit frames (categorical symbols) of the symbols ``names``."""
    categories = pd.Index(names)
    conn.register("_build_batch", pd.DataFrame({
        "symbol": names, "symbol_id": np.arange(len(names), dtype=np.int32)}))
    try:
        short = _read_short(conn, load_start, end)
        prices = _read_prices(conn, load_start, end)
        lit = _read_lit(conn, load_start, end)
    finally:
        conn.unregister("_build_batch")

    def symbols_of(ids: np.ndarray) -> pd.Categorical:
        return pd.Categorical.from_codes(np.asarray(ids, dtype=np.int32), categories=categories)

    short_frame = pd.DataFrame({
        "symbol": symbols_of(short["symbol_id"]),
        "date": _days_to_datetime(short["day"]),
        "short_volume": short["short_volume"],
        "short_exempt_volume": short["short_exempt_volume"],
        "total_volume": short["total_volume"],
        "short_source": pd.Categorical.from_codes(
            short["source_code"], categories=list(SHORT_SOURCES)),
    }, columns=list(SHORT_INPUT_COLUMNS), copy=False)
    price_frame = pd.DataFrame({
        "symbol": symbols_of(prices["symbol_id"]),
        "date": _days_to_datetime(prices["day"]),
        **{c: prices[c] for c in PRICE_INPUT_COLUMNS[2:]},
    }, columns=list(PRICE_INPUT_COLUMNS), copy=False)
    lit["symbol"] = symbols_of(lit.pop("symbol_id").to_numpy())
    return short_frame, price_frame, lit[list(LIT_INPUT_COLUMNS)]


def _warm_up_kernels() -> None:
    """Load the compiled kernels (imported here, not at module import: the CLI's start never
    pays for numba)."""
    from darkpool_analysis import kernels

    kernels.warm_up()


_kernels_ready: Future[None] | None = None
_kernels_lock = threading.Lock()


def warm_up_kernels_in_background() -> Future[None]:
    """Start loading the compiled kernels in a daemon thread, once per process.

    Importing numba and loading the cached machine code takes about half a second; a daily
    update calls this before it parses its files (and every build before its first query),
    so that cost overlaps the ingest and the reads instead of adding to them. The returned
    future raises what the warm-up raised.
    """
    global _kernels_ready
    with _kernels_lock:
        if _kernels_ready is None:
            ready: Future[None] = Future()

            def warm_up() -> None:
                try:
                    _warm_up_kernels()
                except Exception as exc:  # noqa: BLE001 - raised by the build that waits
                    ready.set_exception(exc)
                else:
                    ready.set_result(None)

            threading.Thread(target=warm_up, name="kernel-warm-up", daemon=True).start()
            _kernels_ready = ready
        return _kernels_ready


def _timed(function: Callable[[T], R], argument: T) -> tuple[float, R]:
    """``function(argument)`` and its seconds (for work handed to another thread)."""
    started = time.perf_counter()
    result = function(argument)
    return time.perf_counter() - started, result


def _write_part(files: SegmentFileWriter, table: pa.Table, part: int) -> float:
    """Append ``table`` to file ``part`` of the segment; returns its seconds (pyarrow writes
    without the GIL, so this overlaps the next batch's compute)."""
    started = time.perf_counter()
    files.write(table, part)
    return time.perf_counter() - started


def _write_batch(pool: ThreadPoolExecutor, files: SegmentFileWriter,
                 table: pa.Table) -> list[Future[float]]:
    """Hand one computed batch to the writing threads: a large batch in two halves, one per
    file and thread (Parquet encoding is the build's largest CPU cost), a small one whole."""
    if table.num_rows < WRITE_SPLIT_ROWS:
        return [pool.submit(_write_part, files, table, 0)]
    half = table.num_rows // 2
    return [pool.submit(_write_part, files, table.slice(0, half), 0),
            pool.submit(_write_part, files, table.slice(half), 1)]


def _cover_of(symbols: Sequence[str] | None, start: dt.date | None, end: dt.date | None,
              ended: pd.DataFrame | None = None) -> covers.Cover:
    """The rows a build replaces: the requested symbols and range, plus (``ended``:
    ``symbol, last_date``) rows between a symbol's new last date and ``start``, which a
    change that removed its later data leaves behind."""
    cover = [covers.clause(symbols, start, end)]
    if ended is not None and len(ended) and start is not None:
        day_before = start - dt.timedelta(days=1)
        for last_date, group in ended.groupby("last_date"):
            after = pd.Timestamp(last_date).date() + dt.timedelta(days=1)
            if after <= day_before:
                cover.append(covers.clause(group["symbol"], after, day_before))
    return cover


def build_metrics(
    writer: Writer,
    settings: Settings,
    symbols: Sequence[str] | None = None,
    start: DateLike | None = None,
    end: DateLike | None = None,
    *,
    progress: ProgressCallback | None = None,
    rows_per_batch: int = ROWS_PER_BATCH,
    rows_per_read: int = ROWS_PER_READ,
    otc_alignment: OtcAlignment | None = None,
    require_data: bool = True,
) -> BuildResult:
    """Recompute ``daily_metrics`` for ``symbols`` (default: all) on ``[start, end]``.

    Values equal those of a full build; rows outside the symbols/range are not touched.
    Symbols are normalised (``BRK/B``, ``BRK-B`` -> ``BRK.B``). ``progress(done, total)`` is
    called with grid rows after each batch. ``otc_alignment`` (default
    ``settings.otc_alignment``) picks the OTC rule: ``published`` (point in time) or ``week``
    (the original look-ahead, logged as a warning and stored on every row). Raises
    :class:`NoDataError` when the database holds no short-sale or price data for the request.

    Batch k+1 is read (its read group's grid, assembled once per ``rows_per_read`` grid
    rows, then sliced) while batch k is computed and two worker threads write the halves of
    batch k-1 (numpy, numba, DuckDB and pyarrow release the GIL); at most two computed
    batches and two read groups are alive at a time.

    The table stays a function of the raw data alone, whatever order the data came in: a
    range build also writes the no-data session rows that a symbol's new data turns into
    gaps before ``start`` (the symbol was last seen earlier), and removes rows past a
    symbol's new last date. A build that reaches the end of the data settles the
    ``metrics_owed`` entries it covers in the same transaction. With ``require_data=False``
    a request without any data empties its rows instead of raising (raw data was removed).
    """
    started = time.perf_counter()
    kernels_ready = warm_up_kernels_in_background()
    alignment: OtcAlignment = otc_alignment or settings.otc_alignment
    if alignment not in ("published", "week"):
        raise ValueError(f"otc_alignment must be 'published' or 'week', got {alignment!r}")
    if alignment == "week":
        log.warning("LOOK-AHEAD: otc_alignment='week' attaches each OTC week's final values to "
                    "the sessions of that week, 2-4 weeks before FINRA published them; rows "
                    "are labelled otc_alignment='week' and must not be used for backtests")
    conn = writer.conn
    requested = _normalise_request(symbols)
    first = to_date(start) if start is not None else None
    last = to_date(end) if end is not None else None
    if first is not None and last is not None and first > last:
        raise ValueError(f"start {first} is after end {last}")

    spans = _symbol_spans(conn, requested)
    missing = tuple(sorted(set(requested or ()) - set(spans["symbol"])))
    if missing and require_data:
        log.warning("no short-sale or price data for %s", ", ".join(missing))
    if spans.empty:
        if require_data:
            raise NoDataError(
                "no short-sale or price data to build from"
                + (f" for {', '.join(requested)}" if requested else ""),
                hint="run `darkpool ingest finra-short` / `darkpool ingest prices` first",
            )
        with writer.transaction() as tx:
            writer.add_segment("daily_metrics", [], 0, _cover_of(requested, first, last))
            if last is None:
                _settle_covered(tx, requested, first)
        return BuildResult(symbols=0, rows_written=0, start=first, end=last,
                           seconds=time.perf_counter() - started, missing_symbols=missing,
                           otc_alignment=alignment)
    holes = (_holes_before(conn, spans, first) if first is not None and last is None
             else pd.DataFrame({"symbol": [], "hole_start": []}))
    full_spans = spans

    write_from = pd.Timestamp(first) if first is not None else None
    load_from = _load_from(first, settings) if first is not None else None
    first_dates = pd.to_datetime(spans["first_date"])
    last_dates = pd.to_datetime(spans["last_date"])
    if load_from is not None:
        first_dates = first_dates.where(first_dates > load_from, load_from)
    if last is not None:
        last_dates = last_dates.where(last_dates < pd.Timestamp(last), pd.Timestamp(last))
    spans = pd.DataFrame({"symbol": spans["symbol"].to_numpy(dtype=object),
                          "first_date": first_dates, "last_date": last_dates})
    spans = spans.loc[spans["first_date"] <= spans["last_date"]].reset_index(drop=True)

    # Approximate grid rows per symbol (calendar days * 5/7) to size the batches.
    approx_rows = ((spans["last_date"] - spans["first_date"]).dt.days.to_numpy() * 5 // 7) + 1
    batches = _batches(approx_rows, rows_per_batch) if len(spans) else []
    load_start = (load_from.date() if load_from is not None
                  else spans["first_date"].min().date() if len(spans) else dt.date(2000, 1, 3))
    load_end = last if last is not None else (spans["last_date"].max().date()
                                              if len(spans) else load_start)
    otc_start = first if first is not None else load_start
    total_rows = int(approx_rows.sum()) if len(spans) else 0

    groups = _read_groups(batches, approx_rows, rows_per_read)
    group_of_batch = {batch.start: group for group in groups for batch in batches
                      if group.start <= batch.start < group.stop}
    group_grid: dict[int, GridArrays] = {}

    def read(part: slice) -> tuple[GridArrays, pd.DataFrame]:
        """Batch ``part``'s grid (a slice of its read group's grid, read and assembled once
        per group: one scan of the raw tables per group instead of per batch) and OTC block."""
        group = group_of_batch[part.start]
        if group.start not in group_grid:
            group_grid.clear()  # the previous group's batches are all handed out
            names = spans["symbol"].iloc[group].to_numpy(dtype=object)
            short, prices, lit = _batch_inputs(tx, names, load_start, load_end)
            group_grid[group.start] = assemble_grid_arrays(short, prices, lit,
                                                           spans=spans.iloc[group])
            del short, prices, lit
        grid = group_grid[group.start].symbols(part.start - group.start,
                                               part.stop - group.start)
        names = spans["symbol"].iloc[part].to_numpy(dtype=object)
        otc = _otc_block(tx, list(names), otc_start, load_end, settings, alignment)
        return grid, otc

    def compute(grid: GridArrays, otc: pd.DataFrame, columns: Sequence[str]) -> pa.Table:
        return compute_daily_metrics_arrow(grid, settings, otc, otc_alignment=alignment,
                                           write_from=write_from, tile_days=TILE_DAYS,
                                           columns=columns)

    written = done = 0
    read_seconds = compute_seconds = write_seconds = 0.0
    ended = (full_spans.loc[pd.to_datetime(full_spans["last_date"]) < pd.Timestamp(first),
                            ["symbol", "last_date"]]
             if first is not None and last is None else None)
    with writer.transaction() as tx:
        files = SegmentFileWriter(writer, "daily_metrics")
        columns = files.schema.names
        try:
            with ThreadPoolExecutor(max_workers=2,
                                    thread_name_prefix="daily-metrics-write") as pool, \
                    ThreadPoolExecutor(max_workers=1,
                                       thread_name_prefix="daily-metrics-read") as reader:
                # Schedule: read k+1 || compute k || write k-1 (DuckDB, numpy/numba and
                # pyarrow release the GIL; only the reading thread uses the connection).
                pending: list[Future[float]] = []
                next_read = reader.submit(_timed, read, batches[0]) if batches else None
                for k, part in enumerate(batches):
                    assert next_read is not None
                    seconds_read, (grid, otc) = next_read.result()
                    kernels_ready.result()
                    read_seconds += seconds_read
                    next_read = (reader.submit(_timed, read, batches[k + 1])
                                 if k + 1 < len(batches) else None)
                    tick = time.perf_counter()
                    metrics = compute(grid, otc, columns)
                    compute_seconds += time.perf_counter() - tick
                    del grid, otc
                    write_seconds += sum(f.result() for f in pending)
                    pending = _write_batch(pool, files, metrics)
                    written += metrics.num_rows
                    del metrics
                    done += int(approx_rows[part].sum())
                    if progress is not None:
                        progress(done, total_rows)
                write_seconds += sum(f.result() for f in pending)
            tick = time.perf_counter()
            paths = files.finish()
        except BaseException:
            files.abort()
            raise
        writer.add_segment("daily_metrics", paths, written,
                           _cover_of(requested, first, last, ended))
        write_seconds += time.perf_counter() - tick
        if len(holes) and first is not None:
            # Sessions between a symbol's previous last date and ``first`` became no-data
            # gap rows when its new data arrived: write them (same values as a full build).
            gap_fill = build_metrics(
                writer, settings, symbols=list(holes["symbol"]),
                start=pd.Timestamp(holes["hole_start"].min()).date(),
                end=previous_session(first),
                rows_per_batch=rows_per_batch, rows_per_read=rows_per_read,
                otc_alignment=alignment, require_data=False)
            written += gap_fill.rows_written
        if last is None:
            _settle_covered(tx, requested, first)
        tick = time.perf_counter()
    write_seconds += time.perf_counter() - tick   # the commit
    seconds = time.perf_counter() - started
    log.info("daily_metrics: %d rows for %d symbols in %.2fs (read %.2fs, compute %.2fs, "
             "write %.2fs)", written, len(spans), seconds, read_seconds, compute_seconds,
             write_seconds)
    return BuildResult(symbols=len(spans), rows_written=written, start=first, end=last,
                       seconds=seconds, missing_symbols=missing, read_seconds=read_seconds,
                       compute_seconds=compute_seconds, write_seconds=write_seconds,
                       otc_alignment=alignment)


def _holes_before(conn: duckdb.DuckDBPyConnection, spans: pd.DataFrame,
                  first: dt.date) -> pd.DataFrame:
    """Symbols whose stored rows end before the session preceding ``first`` while their raw
    data reaches ``first`` or later: the sessions in between are no-data rows a full build
    has. Returns ``symbol, hole_start`` (the first missing session).

    A symbol with a row on the preceding session has no hole, so only the others (usually
    none) are looked up: a daily update reads one date of the table, not all of it.
    """
    empty = pd.DataFrame({"symbol": [], "hole_start": []})
    reaching = spans.loc[pd.to_datetime(spans["last_date"]) >= pd.Timestamp(first), "symbol"]
    if reaching.empty:
        return empty
    before = previous_session(first)
    present = {str(r[0]) for r in conn.execute(
        "SELECT symbol FROM daily_metrics WHERE date = ?", [before]).fetchall()}
    candidates = [str(s) for s in reaching if str(s) not in present]
    if not candidates:
        return empty
    stored = conn.execute("""
        SELECT symbol, max(date) AS stored_last FROM daily_metrics
        WHERE symbol IN (SELECT unnest(?::VARCHAR[])) AND date < ?
        GROUP BY symbol
    """, [candidates, first]).df()
    if stored.empty:
        return empty
    sessions = sessions_index(pd.Timestamp(stored["stored_last"].min()), pd.Timestamp(first))
    after = sessions.searchsorted(pd.to_datetime(stored["stored_last"]), side="right")
    before_first = sessions.searchsorted(pd.Timestamp(first), side="left")
    hole = after < before_first
    return pd.DataFrame({"symbol": stored["symbol"].to_numpy(dtype=object)[hole],
                         "hole_start": sessions[after[hole]]})


def _settle_covered(conn: duckdb.DuckDBPyConnection, symbols: Sequence[str] | None,
                    start: dt.date | None) -> None:
    """Remove the ``metrics_owed`` entries a build of ``symbols`` from ``start`` to the end
    of the data has just paid (same transaction as its rows)."""
    clauses, params = [], []
    if symbols is not None:
        clauses.append("symbol IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(symbols))
    if start is not None:
        clauses.append("from_date >= ?")
        params.append(start)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    run(conn, f"DELETE FROM metrics_owed{where}", params)


def settle_owed(writer: Writer, settings: Settings, *,
                progress: ProgressCallback | None = None,
                otc_alignment: OtcAlignment | None = None) -> BuildResult | None:
    """Finish every ``daily_metrics`` rebuild still owed (``metrics_owed``); None if none.

    Raw changes record what they owe in their own transaction, so this also finishes a
    rebuild that a crash or ``--no-build`` left undone. Changes owed by every symbol are
    rebuilt from their earliest date; per-symbol debts before that date are rebuilt for
    those symbols from their earliest date. Everything commits in one transaction.
    """
    owed = read_owed(writer.conn)
    if owed.empty:
        return None
    started = time.perf_counter()
    log.info("rebuilding daily_metrics from %s (owed by raw changes)",
             pd.Timestamp(owed["from_date"].min()).date())
    every = owed.loc[owed["symbol"].isna(), "from_date"]
    every_from = pd.Timestamp(every.min()).date() if len(every) else None
    per_symbol = owed.dropna(subset=["symbol"])
    if every_from is not None:
        per_symbol = per_symbol.loc[pd.to_datetime(per_symbol["from_date"])
                                    < pd.Timestamp(every_from)]
    results: list[BuildResult] = []
    with writer.transaction():
        if len(per_symbol):
            results.append(build_metrics(
                writer, settings, symbols=sorted(per_symbol["symbol"].unique()),
                start=pd.Timestamp(per_symbol["from_date"].min()).date(), progress=progress,
                otc_alignment=otc_alignment, require_data=False))
        if every_from is not None:
            results.append(build_metrics(writer, settings, start=every_from,
                                         progress=progress, otc_alignment=otc_alignment,
                                         require_data=False))
        if not read_owed(writer.conn).empty:
            raise AssertionError("a settling build left metrics_owed entries behind")
    first = min((r.start for r in results if r.start is not None), default=None)
    return BuildResult(
        symbols=max(r.symbols for r in results), rows_written=sum(r.rows_written for r in results),
        start=first, end=None, seconds=time.perf_counter() - started,
        read_seconds=sum(r.read_seconds for r in results),
        compute_seconds=sum(r.compute_seconds for r in results),
        write_seconds=sum(r.write_seconds for r in results),
        otc_alignment=results[-1].otc_alignment)
