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

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pandas as pd

from darkpool_analysis import classify
from darkpool_analysis.classify import CLASSIFY_VERSION, METHODS, QUOTE_RULES, MethodName
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError
from darkpool_analysis.sources.http import make_client
from darkpool_analysis.sources.trades import (
    POLYGON_MAX_PAGES,
    DayTicks,
    TradeReader,
    TradeSourceName,
    check_coverage,
    load_day,
    make_reader,
)
from darkpool_analysis.store import SourceFile, Writer, utcnow
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
             fetched_at: dt.datetime | None = None) -> pd.DataFrame:
    """Classify one session's ticks and return one ``lit_direction_daily`` row per symbol."""
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
            labels = classify.tick_test(trades)
        else:
            labels = classify.get_rule(method)(trades, matched)
        if method == "quote" and matched is not None and not quoted_groups.all():
            # Symbols without any valid quote: the tick test, named in `method`. (The hybrid
            # rules already give unquoted trades their tick label: no second pass for them.)
            tick = classify.tick_test(trades)
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
