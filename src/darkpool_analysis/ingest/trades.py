"""Lit trade direction ingestion: read ticks per session, classify, write ``lit_direction_daily``.

For each XNYS session in ``[start, end]`` the reader's ticks for all requested symbols are
filtered and classified in one vectorised pass (:mod:`darkpool_analysis.classify`), summed per
symbol, and each (symbol, date) row is replaced in its own transaction
(:meth:`Writer.replace_partition`) together with its provenance and ingest-log entry. Ticks
are never stored. When a day has no usable quotes, quote-based methods fall back to the tick
test and say so in ``method`` (``lee_ready->tick``). Afterwards ``daily_metrics`` is
rebuilt from the first ingested date on (unless ``build=False``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

from darkpool_analysis import classify
from darkpool_analysis.classify import CLASSIFY_VERSION, METHODS, QUOTE_RULES, MethodName
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import (
    ConfigError,
    DarkpoolError,
    DataFormatError,
    ctrl_c_during_queries,
)
from darkpool_analysis.executor import make_executor, parallelism, task_threads
from darkpool_analysis.sources.flatfiles import (
    DAY_FILE_SOURCES,
    DayFiles,
    DayFileSource,
    bucket_count,
    day_reader,
    fetch,
    file_size,
    is_url,
    locate_day,
    split_by_symbol,
    taq_folder,
)
from darkpool_analysis.sources.http import make_client
from darkpool_analysis.sources.trades import (
    POLYGON_MAX_PAGES,
    DayTicks,
    TradeReader,
    TradeSourceName,
    check_coverage,
    file_sha256,
    load_day,
    make_reader,
)
from darkpool_analysis.store import LogEntry, SourceFile, Writer, utcnow
from darkpool_analysis.symbols import normalise
from darkpool_analysis.trading_calendar import sessions_between

log = logging.getLogger(__name__)

DATASET = "lit"
TABLE = "lit_direction_daily"

#: ``(session, sessions_done, sessions_total, trades_so_far)``: drives the progress bar.
TradesProgress = Callable[[dt.date, int, int, int], None]


@dataclass
class TradesIngestSummary:
    """What one run did: rows written, trades classified, days without data, skips."""

    rows_written: int = 0
    trades_classified: int = 0
    sessions: int = 0
    missing: list[str] = field(default_factory=list)       # "SYM 2024-01-02" without data
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)  # symbol, reason, trades
    methods: dict[str, str] = field(default_factory=dict)   # "SYM date" -> method stored
    metrics_built: bool = False                             # daily_metrics rebuilt


def day_rows(ticks: DayTicks, method: MethodName, *, quote_lag_ns: int = 0,
             bar_ns: int = 60_000_000_000, source: str, complete: bool = True,
             fetched_at: dt.datetime | None = None, threads: int | None = None
             ) -> pd.DataFrame:
    """Classify one session's ticks and return one ``lit_direction_daily`` row per symbol.

    ``threads``: threads of the classification rules (None: their default; the rows never
    depend on it)."""
    trades, n_groups = ticks.trades, len(ticks.symbols)
    fetched = fetched_at or utcnow()
    matched = None
    quoted_groups = np.zeros(n_groups, dtype=bool)
    if method in QUOTE_RULES and ticks.quotes is not None and len(ticks.quotes):
        matched = classify.match_quotes(trades, ticks.quotes, lag_ns=quote_lag_ns)
        group = trades.group if trades.group is not None else np.zeros(len(trades), np.int64)
        quoted_groups = np.bincount(group, weights=matched.matched, minlength=n_groups) > 0
    frame = pd.DataFrame({"symbol": ticks.symbols, "date": ticks.day})
    if method == "bvc":
        bars = classify.bvc_bars(trades, bar_ns=bar_ns)
        buy = np.bincount(bars.group, weights=bars.buy_volume, minlength=n_groups)
        volume = np.bincount(bars.group, weights=bars.volume, minlength=n_groups)
        no_counts = pd.array([pd.NA] * n_groups, dtype="Int64")  # BVC signs volume, not trades
        frame = frame.assign(lit_buy_volume=buy, lit_sell_volume=volume - buy,
                             unclassified_volume=0.0, buy_trades=no_counts,
                             sell_trades=no_counts, unclassified_trades=no_counts,
                             method="bvc", coverage_pct=100.0, quote_coverage_pct=np.nan)
    else:
        if matched is None and method in QUOTE_RULES:  # no quotes at all this day
            labels = classify.tick_test(trades, threads=threads)
        else:
            labels = classify.get_rule(method)(trades, matched, threads=threads)
        if method == "quote" and matched is not None and not quoted_groups.all():
            # Symbols without any valid quote: the tick test, named in `method`. (The hybrid
            # rules already give unquoted trades their tick label: no second pass for them.)
            tick = classify.tick_test(trades, threads=threads)
            group = trades.group if trades.group is not None else np.zeros(len(trades), np.int64)
            unquoted = ~quoted_groups[group]
            labels[unquoted] = tick[unquoted]
        totals = classify.summarise(labels, trades, n_groups, matched)
        n_trades = totals.buy_trades + totals.sell_trades + totals.unclassified_trades
        with np.errstate(invalid="ignore", divide="ignore"):
            coverage = 100.0 * (totals.buy_trades + totals.sell_trades) / n_trades
            quote_cov = 100.0 * totals.quoted_trades / n_trades
        names = np.where(quoted_groups | (method not in QUOTE_RULES), method, f"{method}->tick")
        frame = frame.assign(
            lit_buy_volume=totals.buy_volume, lit_sell_volume=totals.sell_volume,
            unclassified_volume=totals.unclassified_volume, buy_trades=totals.buy_trades,
            sell_trades=totals.sell_trades, unclassified_trades=totals.unclassified_trades,
            method=names, coverage_pct=coverage,
            quote_coverage_pct=quote_cov if method in QUOTE_RULES else np.nan)
    incomplete = frame["symbol"].isin(ticks.incomplete)
    return frame.assign(source=source, inference_version=CLASSIFY_VERSION,
                        complete=complete & ~incomplete.to_numpy(), fetched_at=fetched)


def _skip_message(skipped: pd.DataFrame, symbol: str) -> str | None:
    rows = skipped[skipped["symbol"] == symbol]
    if rows.empty:
        return None
    parts = [f"{r.reason}={int(r.trades)}" for r in rows.itertuples(index=False)]
    return "dropped trades: " + ", ".join(parts)


def _build_metrics(writer: Writer, settings: Settings) -> bool:
    """Finish the ``daily_metrics`` rebuild the stored lit rows made owed (from their first
    date to the end of the data: later rows depend on those days through rolling windows)."""
    from darkpool_analysis.build import settle_owed

    result = settle_owed(writer, settings)
    return result is not None and result.rows_written > 0


def ingest_trades(
    writer: Writer,
    settings: Settings,
    *,
    source: TradeSourceName,
    start: dt.date,
    end: dt.date,
    tickers: Sequence[str] | None = None,
    method: MethodName = "lee_ready",
    path: Path | None = None,
    quotes_path: Path | None = None,
    keep_parquet: Path | None = None,
    quote_lag_ms: float = 0.0,
    bar_seconds: int = 60,
    max_pages: int = POLYGON_MAX_PAGES,
    client: httpx.Client | None = None,
    build: bool = True,
    progress: TradesProgress | None = None,
) -> TradesIngestSummary:
    """Classify lit trades of ``tickers`` for every session in ``[start, end]`` and store them.

    Bad input (a wrong file, missing columns, unsorted data that cannot be sorted) raises a
    :class:`~darkpool_analysis.errors.DataFormatError` before that session writes anything.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}; valid: {', '.join(METHODS)}")
    if start > end:
        raise ConfigError(f"--start {start} is after --end {end}")
    symbols = sorted({normalise(t, "polygon") for t in (tickers or settings.tickers)})
    if not symbols:
        raise ConfigError("no tickers given", hint="pass --tickers or set DARKPOOL_TICKERS")
    days = sessions_between(start, end)
    summary = TradesIngestSummary()
    owned_client = client is None and source == "polygon"
    http = make_client(settings) if owned_client else client
    try:
        reader = make_reader(source, path=path, quotes_path=quotes_path, settings=settings,
                             client_factory=(lambda: http) if http is not None else None,
                             max_pages=max_pages)
        con = duckdb.connect()
        try:
            check_coverage(con, reader, days, symbols, settings)
            skipped: list[pd.DataFrame] = []
            for done, day in enumerate(days, start=1):  # one session at a time: bounded memory
                _ingest_day(writer, con, reader, day, symbols, settings, method=method,
                            keep_parquet=keep_parquet, quote_lag_ns=int(quote_lag_ms * 1e6),
                            bar_ns=bar_seconds * 1_000_000_000, summary=summary,
                            skipped=skipped)
                summary.sessions += 1
                writer.maybe_publish()
                if progress is not None:
                    progress(day, done, len(days), summary.trades_classified)
            summary.skipped = (pd.concat(skipped, ignore_index=True) if skipped
                               else pd.DataFrame(columns=["symbol", "reason", "trades"]))
        finally:
            con.close()
    finally:
        if owned_client and http is not None:
            http.close()
    if build:
        summary.metrics_built = _build_metrics(writer, settings)
    return summary


def _ingest_day(writer: Writer, con: duckdb.DuckDBPyConnection, reader: TradeReader,
                day: dt.date, symbols: Sequence[str], settings: Settings, *,
                method: MethodName, keep_parquet: Path | None, quote_lag_ns: int, bar_ns: int,
                summary: TradesIngestSummary, skipped: list[pd.DataFrame]) -> None:
    ticks = load_day(con, reader, day, symbols, settings, keep_parquet=keep_parquet)
    if ticks is None:
        for symbol in symbols:
            summary.missing.append(f"{symbol} {day}")
            writer.log_outcome(DATASET, f"{reader.name}/{symbol}/{day}", outcome="not_published",
                               trade_date=day, message=f"no {reader.name} trade file for {day}")
        return
    if not ticks.skipped.empty:
        skipped.append(ticks.skipped.assign(date=day))
    if ticks.quotes is None and method in QUOTE_RULES:
        log.warning("%s: no quotes for %s; %s falls back to the tick test", reader.name, day,
                    method)
    rows = day_rows(ticks, method, quote_lag_ns=quote_lag_ns, bar_ns=bar_ns,
                    source=reader.name)
    summary.trades_classified += len(ticks.trades)
    group = ticks.trades.group
    counts = (np.bincount(group, minlength=len(ticks.symbols)) if group is not None
              else np.array([len(ticks.trades)]))
    # One transaction per (symbol, date), by design: each row commits or fails on its own.
    for code, row in enumerate(rows.itertuples(index=False)):
        frame = rows.iloc[[code]]
        existed = writer.conn.execute(f"SELECT count(*) FROM {TABLE} WHERE symbol = ? AND "
                                      "date = ?", [row.symbol, day]).fetchone()
        source = SourceFile(dataset=DATASET, partition_key=f"{reader.name}/{row.symbol}/{day}",
                            source_file=Path(ticks.location).name, location=ticks.location,
                            sha256=ticks.sha256, rows=int(counts[code]),
                            fetched_at=row.fetched_at)
        writer.replace_partition(TABLE, frame, where="symbol = ? AND date = ?",
                                 params=[row.symbol, day], source=source, trade_date=day,
                                 outcome="replaced" if existed and existed[0] else "ingested",
                                 message=_skip_message(ticks.skipped, str(row.symbol)))
        summary.rows_written += 1
        summary.methods[f"{row.symbol} {day}"] = str(row.method)
    for symbol in sorted(set(symbols) - set(ticks.symbols)):
        summary.missing.append(f"{symbol} {day}")
        writer.log_outcome(DATASET, f"{reader.name}/{symbol}/{day}", outcome="not_published",
                           trade_date=day, location=ticks.location,
                           message=f"no lit regular-hours trades of {symbol} on {day}")


# == many sessions of day files on an executor =================================================
#: Bumped whenever the per-day task changes what it computes (part of every manifest).
TASK_VERSION = "day-task-1"

#: Environment variable for fault-injection tests: comma-separated sessions (YYYY-MM-DD) whose
#: task kills its own worker process (``os._exit``) half-way through its first attempt. A
#: marker file in the work folder makes the retry succeed. Never set it in production.
FAULT_KILL_ENV = "DARKPOOL_FAULT_KILL_DAY"

#: Default size of one symbol bucket (compressed input bytes of trades + quotes).
DEFAULT_CHUNK_MB = 256

#: Finished sessions stored per database transaction.
DEFAULT_BATCH_DAYS = 8

LIT_SCHEMA = pa.schema([
    ("symbol", pa.string()), ("date", pa.date32()), ("lit_buy_volume", pa.float64()),
    ("lit_sell_volume", pa.float64()), ("unclassified_volume", pa.float64()),
    ("buy_trades", pa.int64()), ("sell_trades", pa.int64()),
    ("unclassified_trades", pa.int64()), ("method", pa.string()),
    ("coverage_pct", pa.float64()), ("quote_coverage_pct", pa.float64()),
    ("source", pa.string()), ("inference_version", pa.string()), ("complete", pa.bool_()),
    ("fetched_at", pa.timestamp("us")),
])

DayStatus = Literal["done", "skipped", "failed", "missing"]


@dataclass(frozen=True)
class DayTask:
    """Everything one session's task needs; picklable, so it runs on any worker.

    ``work_dir`` must be reachable by the worker (a local folder, or shared storage on a
    cluster): the task's result and manifest live there. ``threads`` only sets how many
    threads the task may use (None: the worker's cap, :func:`~darkpool_analysis.executor.
    task_threads`, else each library's default); it is not part of the manifest (results
    never depend on it).
    """

    source: DayFileSource
    files: DayFiles
    method: MethodName
    work_dir: str
    settings: Settings
    symbols: tuple[str, ...] | None = None
    quote_lag_ns: int = 0
    bar_ns: int = 60_000_000_000
    chunk_bytes: int = DEFAULT_CHUNK_MB << 20
    threads: int | None = None
    keep_parquet: str | None = None

    @property
    def day(self) -> dt.date:
        return self.files.day


@dataclass
class DayResult:
    """What a task returns: its rows (Arrow, :data:`LIT_SCHEMA`) and manifest, or its error."""

    day: dt.date
    status: DayStatus
    table: pa.Table | None = None
    manifest: dict[str, Any] | None = None
    error: str | None = None
    trades: int = 0
    retried: bool = False          # an earlier attempt of this task died half-way
    seconds: float = 0.0
    buckets: int = 1
    peak_rss_mb: float = 0.0       # the worker process's peak RSS so far
    cpu_seconds: float = 0.0       # CPU time of the task's process (all its threads)
    #: Wall and CPU seconds by part of the task: fetch (+ sha256), read (CSV -> sorted
    #: arrays, the bucket split included), classify, write (Parquet + manifest).
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        """The manifest key digest stored as the day's ``source_files.sha256``."""
        return None if self.manifest is None else str(self.manifest["key_sha256"])


class _Phases:
    """Wall and CPU seconds of a task's parts, summed over repeats (``with phases("read")``)."""

    def __init__(self) -> None:
        self.totals: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            before = self.totals.get(name, (0.0, 0.0))
            self.totals[name] = (before[0] + time.perf_counter() - wall,
                                 before[1] + time.process_time() - cpu)


def task_paths(task: DayTask) -> dict[str, Path]:
    """Result, manifest and in-progress marker of ``task`` in its work folder."""
    base = Path(task.work_dir) / task.source / task.method
    stem = task.day.isoformat()
    return {"dir": base, "result": base / f"{stem}.parquet",
            "manifest": base / f"{stem}.manifest.json", "running": base / f"{stem}.running"}


def _manifest_key(task: DayTask, inputs: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The part of a manifest that decides whether a stored result can be reused."""
    settings = task.settings
    from darkpool_analysis import __version__

    return {
        "day": task.day.isoformat(), "source": task.source, "inputs": inputs,
        "rule": task.method,
        "options": {"quote_lag_ns": task.quote_lag_ns, "bar_ns": task.bar_ns,
                    "symbols": list(task.symbols) if task.symbols is not None else None,
                    "rth_start": settings.rth_start, "rth_end": settings.rth_end,
                    "market_timezone": settings.market_timezone},
        "code_version": {"package": __version__, "classify": CLASSIFY_VERSION,
                         "task": TASK_VERSION},
    }


def _key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, fsync, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_stale_temporaries(paths: dict[str, Path]) -> None:
    """Remove the temporary files an earlier, dead attempt of the day left half-written (a
    process pool terminates every worker when one dies, whatever they were writing)."""
    for final in (paths["result"], paths["manifest"]):
        for stale in final.parent.glob(f".{final.name}.*.tmp"):
            stale.unlink(missing_ok=True)


def _stored_result(paths: dict[str, Path], key_sha: str) -> tuple[pa.Table, dict[str, Any]] | None:
    """The stored result when its manifest matches ``key_sha`` and its file is intact."""
    try:
        manifest = json.loads(paths["manifest"].read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("key_sha256") != key_sha or not paths["result"].is_file():
        return None
    if file_sha256(paths["result"]) != manifest.get("result", {}).get("sha256"):
        return None
    return pq.read_table(paths["result"], schema=LIT_SCHEMA), manifest


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` on Linux (``ru_maxrss`` is
    carried across fork + exec, so a spawned worker would report its parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _inject_fault(task: DayTask) -> None:
    """Fault injection for tests (:data:`FAULT_KILL_ENV`): die once, half-way through."""
    days = {d.strip() for d in os.environ.get(FAULT_KILL_ENV, "").split(",") if d.strip()}
    if task.day.isoformat() not in days:
        return
    marker = Path(task.work_dir) / f".fault-killed-{task.day.isoformat()}"
    if marker.exists():
        return
    marker.touch()
    log.warning("fault injection: killing the worker process in the task of %s", task.day)
    os._exit(70)


def _classify_files(task: DayTask, trades: Path, quotes: Path | None, location: str,
                    sha256: str, scratch: Path, phases: _Phases
                    ) -> tuple[pd.DataFrame, int, pd.DataFrame, int]:
    """Read (in symbol buckets when large), filter and classify one session.

    Returns the day's rows (sorted by symbol), the trades classified, the dropped trades by
    reason and the number of buckets read.
    """
    total = trades.stat().st_size + (quotes.stat().st_size if quotes is not None else 0)
    buckets = bucket_count(total, task.chunk_bytes)
    threads = task.threads if task.threads is not None else task_threads()
    if threads is not None and pa.cpu_count() != threads:
        pa.set_cpu_count(threads)  # a worker process's own pool (set once per process)
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")  # the CLI shows the day bar
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        if buckets == 1:
            parts = [taq_folder(scratch, trades, quotes) if task.source == "taq"
                     else (trades, quotes)]
        else:
            with phases("read"):
                parts = split_by_symbol(con, task.source, trades, quotes, buckets, scratch)
            if threads is not None:
                con.execute(f"SET threads = {int(threads)}")
            else:
                con.execute("RESET threads")
        frames: list[pd.DataFrame] = []
        dropped: list[pd.DataFrame] = []
        n_trades = 0
        for index, (part_trades, part_quotes) in enumerate(parts):
            keep = None
            if task.keep_parquet is not None:
                keep = Path(task.keep_parquet) / (f"part{index:04d}" if len(parts) > 1 else "")
            reader = day_reader(task.source, part_trades, part_quotes, location=location,
                                sha256=sha256)
            with phases("read"):
                ticks = load_day(con, reader, task.day, task.symbols, task.settings,
                                 keep_parquet=keep)
            if index == 0:
                _inject_fault(task)
            if ticks is None:
                continue
            if not ticks.skipped.empty:
                dropped.append(ticks.skipped)
            if not ticks.symbols:
                continue
            with phases("classify"):
                frames.append(day_rows(ticks, task.method, quote_lag_ns=task.quote_lag_ns,
                                       bar_ns=task.bar_ns, source=task.source,
                                       fetched_at=utcnow(), threads=threads))
            n_trades += len(ticks.trades)
            del ticks
    finally:
        con.close()
    rows = (pd.concat(frames, ignore_index=True).sort_values("symbol", kind="stable")
            .reset_index(drop=True) if frames else pd.DataFrame(columns=LIT_SCHEMA.names))
    skipped = (pd.concat(dropped, ignore_index=True) if dropped
               else pd.DataFrame(columns=["symbol", "reason", "trades", "volume"]))
    return rows, n_trades, skipped, len(parts)


def _dropped_counts(skipped: pd.DataFrame) -> dict[str, int]:
    if skipped.empty:
        return {}
    return {str(k): int(v) for k, v in skipped.groupby("reason")["trades"].sum().items()}


def run_day_task(task: DayTask) -> DayResult:
    """Classify one session's day files; reuse the stored result when its manifest matches.

    Safe to retry and to repeat: the result (Parquet) and then its manifest (input sha256s,
    rule, options, code version, result sha256) are written under temporary names and
    renamed into place, so a task killed at any point leaves either the previous complete
    result or none, and a rerun whose manifest matches returns the stored rows unchanged
    (``status="skipped"``). Bad input is returned as ``status="failed"`` with the error
    naming the file, so one bad day never fails the others. Runs in the worker process.
    """
    started = time.perf_counter()
    cpu_started = time.process_time()
    paths = task_paths(task)
    paths["dir"].mkdir(parents=True, exist_ok=True)
    phases = _Phases()
    with tempfile.TemporaryDirectory(prefix=f"darkpool-{task.day}-") as scratch_name:
        scratch = Path(scratch_name)
        try:
            with phases("fetch"):
                trades, trades_sha = fetch(task.files.trades, scratch / "trades")
                inputs = {"trades": {"name": Path(task.files.trades).name,
                                     "sha256": trades_sha}}
                quotes = None
                if task.files.quotes is not None:
                    quotes, quotes_sha = fetch(task.files.quotes, scratch / "quotes")
                    inputs["quotes"] = {"name": Path(task.files.quotes).name,
                                        "sha256": quotes_sha}
        except OSError as exc:
            return DayResult(task.day, "failed", error=f"{task.files.trades}: cannot read the "
                             f"day's files: {exc}", seconds=time.perf_counter() - started)
        key = _manifest_key(task, inputs)
        key_sha = _key_digest(key)
        stored = _stored_result(paths, key_sha)
        if stored is not None:
            table, manifest = stored
            return DayResult(task.day, "skipped", table, manifest,
                             trades=int(manifest["result"]["trades"]),
                             seconds=time.perf_counter() - started,
                             peak_rss_mb=_peak_rss_mb())
        retried = paths["running"].exists()
        if retried:
            _remove_stale_temporaries(paths)
        paths["running"].touch()
        try:
            rows, n_trades, skipped, buckets = _classify_files(
                task, trades, quotes, task.files.trades, trades_sha, scratch, phases)
        except (DarkpoolError, duckdb.Error, ValueError, OSError, pa.ArrowException) as exc:
            paths["running"].unlink(missing_ok=True)
            return DayResult(task.day, "failed", error=str(exc), retried=retried,
                             seconds=time.perf_counter() - started,
                             peak_rss_mb=_peak_rss_mb())
    with phases("write"):
        table = pa.Table.from_pandas(rows, schema=LIT_SCHEMA, preserve_index=False)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        _write_atomic(paths["result"], data)
        manifest = {**key, "key_sha256": key_sha,
                    "result": {"file": paths["result"].name,
                               "sha256": hashlib.sha256(data).hexdigest(),
                               "rows": table.num_rows, "trades": n_trades},
                    "dropped_trades": _dropped_counts(skipped),
                    "created_at": utcnow().isoformat()}
        _write_atomic(paths["manifest"],
                      json.dumps(manifest, indent=1, sort_keys=True).encode())
        paths["running"].unlink(missing_ok=True)
    status: DayStatus = "done" if table.num_rows else "missing"
    return DayResult(task.day, status, table, manifest, trades=n_trades, retried=retried,
                     seconds=time.perf_counter() - started, buckets=buckets,
                     peak_rss_mb=_peak_rss_mb(),
                     cpu_seconds=time.process_time() - cpu_started, phases=phases.totals)


@dataclass
class DayCounts:
    """Progress of a many-day run (what the progress bar shows)."""

    total: int
    done: int = 0          # classified and stored
    skipped: int = 0       # manifest matched: nothing recomputed (nor stored, if unchanged)
    failed: int = 0
    retried: int = 0       # tasks that ran again after their worker died
    missing: int = 0       # no files or no lit trades for the session
    trades: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.skipped + self.failed + self.missing


#: Called after every finished session with the running counts.
DayProgress = Callable[[DayCounts], None]


@dataclass
class DayIngestSummary:
    """What :func:`ingest_day_files` did."""

    counts: DayCounts
    rows_written: int = 0
    days_written: list[dt.date] = field(default_factory=list)
    unchanged: list[dt.date] = field(default_factory=list)   # stored already, nothing written
    failures: dict[dt.date, str] = field(default_factory=dict)
    missing: list[dt.date] = field(default_factory=list)
    results: list[DayResult] = field(default_factory=list)   # without tables (for reports)
    interrupted: bool = False
    #: The parent's own work, wall and CPU seconds: ``store`` (the batched transactions).
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)


def _sanitised(settings: Settings) -> Settings:
    """Settings safe to ship to workers: no API keys travel to a cluster."""
    secrets = {name: None for name, value in settings.__dict__.items()
               if isinstance(value, SecretStr)}
    return settings.model_copy(update=secrets)


def default_work_dir(settings: Settings) -> Path:
    """Where per-day results live by default: ``<database folder>/lit_day_results``."""
    return Path(settings.db_path).expanduser().parent / "lit_day_results"


def ingest_day_files(
    writer: Writer,
    settings: Settings,
    *,
    source: DayFileSource,
    path: str | Path,
    start: dt.date,
    end: dt.date,
    method: MethodName = "lee_ready",
    tickers: Sequence[str] | None = None,
    executor: Executor | None = None,
    work_dir: str | Path | None = None,
    quote_lag_ms: float = 0.0,
    bar_seconds: int = 60,
    chunk_mb: float = DEFAULT_CHUNK_MB,
    batch_days: int = DEFAULT_BATCH_DAYS,
    keep_parquet: Path | None = None,
    progress: DayProgress | None = None,
) -> DayIngestSummary:
    """Classify every symbol of every session in ``[start, end]`` from day files, one task
    per session on ``executor`` (None: serially in this process), and store the rows.

    Only this (the parent) process writes the database: finished sessions are stored
    ``batch_days`` at a time, each batch in one transaction (delete the sessions' rows,
    insert the new ones, provenance and log entries), so an interrupted run (Ctrl-C) leaves
    the database as it was before the batch in flight. A session whose stored provenance
    already equals its manifest key is left alone (nothing written). A failed session is
    reported by name with its error; the others are stored. ``daily_metrics`` is not rebuilt
    here: call ``auto_build``/``settle_owed`` afterwards (the CLI does unless ``--no-build``).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown rule {method!r}; valid: {', '.join(METHODS)}")
    if source not in DAY_FILE_SOURCES:
        raise ConfigError(f"unknown day-file source {source!r}; valid: "
                          f"{', '.join(DAY_FILE_SOURCES)}")
    if start > end:
        raise ConfigError(f"--start {start} is after --end {end}")
    if batch_days < 1:
        raise ConfigError(f"--batch-days must be >= 1, got {batch_days}")
    if chunk_mb <= 0:
        raise ConfigError(f"--chunk-mb must be > 0, got {chunk_mb}")
    root = str(path)
    if not is_url(root) and not Path(root).exists():
        raise DataFormatError("no such folder", source=root)
    symbols = (tuple(sorted({normalise(t, "polygon") for t in tickers}))
               if tickers else None)
    days = sessions_between(start, end)
    work = Path(work_dir) if work_dir is not None else default_work_dir(settings)
    counts = DayCounts(total=len(days))
    summary = DayIngestSummary(counts)
    worker_settings = _sanitised(settings)
    tasks: list[DayTask] = []
    missing_log: list[LogEntry] = []
    for day in days:
        files = locate_day(source, root, day)
        if files is None:
            summary.missing.append(day)
            counts.missing += 1
            missing_log.append(LogEntry(DATASET, f"{source}/{day}", day, root, "not_published",
                                        message=f"no {source} trades file for {day}"))
            continue
        tasks.append(DayTask(source=source, files=files, method=method, work_dir=str(work),
                             settings=worker_settings, symbols=symbols,
                             quote_lag_ns=int(quote_lag_ms * 1e6),
                             bar_ns=bar_seconds * 1_000_000_000,
                             chunk_bytes=max(1, int(chunk_mb * (1 << 20))),
                             keep_parquet=str(keep_parquet) if keep_parquet else None))
    if progress is not None and counts.missing:
        progress(counts)
    known = writer.known_sha256s(DATASET)
    batch: list[DayResult] = []
    pending_log = missing_log
    phases = _Phases()
    summary.phases = phases.totals

    def flush() -> None:
        nonlocal batch, pending_log
        if batch or pending_log:
            with phases("store"):
                summary.rows_written += _store_batch(writer, source, batch, symbols,
                                                     pending_log)
                summary.days_written.extend(r.day for r in batch)
                writer.maybe_publish()
        batch, pending_log = [], []

    def finished(task: DayTask, result: DayResult) -> None:
        counts.retried += int(result.retried)
        if result.status == "failed":
            counts.failed += 1
            summary.failures[task.day] = result.error or "unknown error"
            pending_log.append(LogEntry(DATASET, f"{source}/{task.day}", task.day,
                                        task.files.trades, "failed",
                                        message=result.error))
        elif result.status == "missing":
            counts.missing += 1
            summary.missing.append(task.day)
            pending_log.append(LogEntry(DATASET, f"{source}/{task.day}", task.day,
                                        task.files.trades, "not_published",
                                        message=f"no lit regular-hours trades on {task.day}"))
        else:
            counts.trades += result.trades
            if result.status == "skipped":
                counts.skipped += 1
            else:
                counts.done += 1
            if known.get(f"{source}/{task.day}") == result.key:
                summary.unchanged.append(task.day)
            else:
                batch.append(result)
        summary.results.append(DayResult(result.day, result.status, None, result.manifest,
                                         result.error, result.trades, result.retried,
                                         result.seconds, result.buckets, result.peak_rss_mb,
                                         result.cpu_seconds, result.phases))
        if progress is not None:
            progress(counts)
        if len(batch) >= batch_days:
            flush()

    own = executor is None
    with contextlib.ExitStack() as stack:
        if own:
            executor = stack.enter_context(make_executor("serial"))
        assert executor is not None
        try:
            with ctrl_c_during_queries():
                _run_tasks(executor, tasks, finished)
                flush()
        except KeyboardInterrupt:
            summary.interrupted = True
            raise
    summary.unchanged.sort()
    summary.missing.sort()
    summary.days_written.sort()
    summary.results.sort(key=lambda r: r.day)
    return summary


def _input_bytes(task: DayTask) -> int:
    """Size of a day's input files (0 when unknown: the task itself reports the error)."""
    try:
        return sum(file_size(p) for p in (task.files.trades, task.files.quotes) if p)
    except OSError:
        return 0


def _run_tasks(executor: Executor, tasks: Sequence[DayTask],
               finished: Callable[[DayTask, DayResult], None]) -> None:
    """Submit ``tasks`` keeping a window of about two per worker in flight; call ``finished``
    in the parent as each completes. On any exception (Ctrl-C included) the tasks not yet
    started are cancelled before it propagates.

    With more than one worker the largest days (input bytes) go first, so the run does not
    end with one worker busy on a large day while the others idle; serially, date order."""
    workers = parallelism(executor)
    window = max(1, 2 * workers)
    ordered = sorted(tasks, key=_input_bytes, reverse=True) if workers > 1 else list(tasks)
    queue = list(reversed(ordered))
    running: dict[Future[DayResult], DayTask] = {}
    try:
        while queue or running:
            while queue and len(running) < window:
                task = queue.pop()
                running[executor.submit(run_day_task, task)] = task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: running[f].day):
                task = running.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - any task failure is reported by day
                    result = DayResult(task.day, "failed",
                                       error=f"{type(exc).__name__}: {exc}")
                finished(task, result)
    except BaseException:
        for future in running:
            future.cancel()
        raise


def _store_batch(writer: Writer, source: DayFileSource, results: Sequence[DayResult],
                 symbols: tuple[str, ...] | None, log_entries: Sequence[LogEntry]) -> int:
    """Store finished sessions in one transaction; returns the rows written.

    Without a ticker filter a session's day file is the whole market, so every stored row
    of that date is replaced; with ``--tickers`` only those symbols' rows of the date.
    """
    tables = [r.table for r in results if r.table is not None]
    if symbols is None:
        keys = pd.DataFrame({"date": [r.day for r in results]})
    else:
        keys = pd.DataFrame([(s, r.day) for r in results for s in symbols],
                            columns=["symbol", "date"])
    sources = [SourceFile(dataset=DATASET, partition_key=f"{source}/{r.day}",
                          source_file=Path(r.manifest["inputs"]["trades"]["name"]).name,
                          location=str(r.manifest["inputs"]["trades"]["name"]),
                          sha256=str(r.key), rows=int(r.manifest["result"]["trades"]),
                          fetched_at=utcnow())
               for r in results if r.manifest is not None]
    entries = [*log_entries]
    for r in results:
        assert r.manifest is not None
        dropped = r.manifest.get("dropped_trades") or {}
        message = (f"{r.table.num_rows if r.table is not None else 0} symbols, "
                   f"{r.trades:,} trades classified"
                   + ("; dropped trades: " + ", ".join(f"{k}={v}" for k, v in
                                                       sorted(dropped.items()))
                      if dropped else ""))
        entries.append(LogEntry(DATASET, f"{source}/{r.day}", r.day,
                                str(r.manifest["inputs"]["trades"]["name"]), "ingested",
                                rows=r.table.num_rows if r.table is not None else 0,
                                sha256=r.key, message=message))
    if not tables and not entries:
        return 0
    return writer.replace_partitions(TABLE, keys, tables, sources=sources,
                                     log_entries=entries)
