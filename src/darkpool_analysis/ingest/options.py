"""Options premium per underlying and session from Polygon, into ``options_premium_daily``.

For every ticker the underlying's daily bars give each session's close; each session's
*near-the-money* contracts are the calls and puts listed that day (``as_of``) with a strike
within ``close x (1 +- band)`` (default 10%) expiring within ``max_days`` (default 30)
calendar days. Each selected contract's daily bar on that session gives its premium in
dollars, ``volume x VWAP x shares_per_contract`` (100 for standard contracts), and:

* ``call_premium`` / ``put_premium``: the sums over the session's selected contracts;
* ITM / OTM by **that session's close**: a call is in the money when its strike is below the
  close, a put when its strike is above it (a strike equal to the close counts as OTM);
* ``premium_score = 100 x call_premium / (call_premium + put_premium)``: the directional
  premium score on the system's 0-100 scale (50 = balanced, >= 70 call-heavy, <= 30
  put-heavy; NULL on a session without option trades). Bars carry no trade side, so this is
  where the money went, not whether it bought or sold.

Idempotency and provenance as for prices: one ``source_files`` row per (ticker, range,
parameters) with the sha256 of the canonical result; an unchanged result is logged
``unchanged`` and not rewritten; otherwise the ticker's rows in the range are replaced in one
transaction with their ``ingest_log`` entry.

Cost: one underlying request per ticker, one contract-list request per session (two for a
session whose expiry window reaches today), one bars request per distinct selected contract.
Set ``DARKPOOL_HTTP_CONCURRENCY=1`` on Polygon's free tier (5 requests a minute).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import duckdb
import httpx
import numpy as np
import pandas as pd

from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError
from darkpool_analysis.ingest.prices import keep_sessions, normalise_tickers
from darkpool_analysis.sources.http import make_client
from darkpool_analysis.sources.polygon_options import (
    PolygonOptionsClient,
    empty_contract_bars,
    empty_contracts,
    strike_band,
)
from darkpool_analysis.store import SourceFile, Writer, table_exists, utcnow
from darkpool_analysis.trading_calendar import DateLike, sessions_between, to_date

log = logging.getLogger(__name__)

DATASET: Final = "options"
TABLE: Final = "options_premium_daily"
PARTITION_WHERE: Final = "symbol = ? AND date BETWEEN ? AND ?"
DEFAULT_BAND: Final = 0.10
DEFAULT_MAX_DAYS: Final = 30
#: The premium columns, in table order (after symbol, date, underlying_close).
PREMIUM_COLUMNS: Final = (
    "call_premium", "put_premium", "call_itm_premium", "call_otm_premium", "put_itm_premium",
    "put_otm_premium", "call_volume", "put_volume", "contracts", "contracts_traded",
)

#: ``(phase, done, total)``: ``contracts`` or ``bars`` requests of one ticker.
OptionsProgress = Callable[[str, int, int], None]


@dataclass
class OptionsIngestSummary:
    """What one :func:`ingest_options` run did, ticker by ticker."""

    start: dt.date
    end: dt.date
    band: float
    max_days: int
    requests: int = 0
    rows: int = 0
    contracts: int = 0
    ingested: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    bars_without_vwap: int = 0

    @property
    def stored(self) -> list[str]:
        return [*self.ingested, *self.replaced, *self.unchanged]


def premium_by_session(sessions: pd.DataFrame, selected: pd.DataFrame,
                       bars: pd.DataFrame) -> pd.DataFrame:
    """Premium sums per (symbol, session) (pure, vectorised).

    ``sessions``: ``symbol, date, close`` (every session gets a row, zeros without contracts);
    ``selected``: ``symbol, date, ticker, contract_type, strike_price, shares_per_contract``
    (the contracts near the money that session); ``bars``: ``ticker, date, volume, vwap``.
    A selected contract without a bar that session did not trade; a bar without a VWAP is
    left out (its premium is unknown). Returns ``symbol, date, underlying_close``,
    :data:`PREMIUM_COLUMNS` and ``premium_score``.
    """
    keys = ["symbol", "date"]
    key_types = {"symbol": object, "date": "datetime64[ns]"}  # empty frames have no dtypes
    sessions = sessions.astype({**key_types, "close": "float64"})
    selected = selected.astype(key_types)
    bars = bars.astype({"date": "datetime64[ns]"})
    merged = selected.merge(sessions[[*keys, "close"]], on=keys, how="inner")
    merged = merged.merge(bars[["ticker", "date", "volume", "vwap"]], on=["ticker", "date"],
                          how="left")
    traded = (merged["volume"].notna() & merged["vwap"].notna()).to_numpy()
    volume = merged["volume"].fillna(0.0).to_numpy(dtype="float64") * traded
    premium = np.where(traded, merged["volume"].to_numpy(dtype="float64")
                       * merged["vwap"].to_numpy(dtype="float64")
                       * merged["shares_per_contract"].to_numpy(dtype="float64"), 0.0)
    call = (merged["contract_type"] == "call").to_numpy()
    strike = merged["strike_price"].to_numpy(dtype="float64")
    close = merged["close"].to_numpy(dtype="float64")
    itm = np.where(call, strike < close, strike > close)
    parts = pd.DataFrame({
        "symbol": merged["symbol"].to_numpy(), "date": merged["date"].to_numpy(),
        "call_premium": premium * call, "put_premium": premium * ~call,
        "call_itm_premium": premium * (call & itm), "call_otm_premium": premium * (call & ~itm),
        "put_itm_premium": premium * (~call & itm), "put_otm_premium": premium * (~call & ~itm),
        "call_volume": volume * call, "put_volume": volume * ~call,
        "contracts": np.ones(len(merged), dtype="int64"),
        "contracts_traded": traded.astype("int64"),
    })
    sums = parts.groupby(keys, sort=True).sum()
    out = sessions[[*keys, "close"]].rename(columns={"close": "underlying_close"})
    out = out.merge(sums, left_on=keys, right_index=True, how="left")
    for column in PREMIUM_COLUMNS:
        out[column] = out[column].fillna(0)
    out["contracts"] = out["contracts"].astype("int64")
    out["contracts_traded"] = out["contracts_traded"].astype("int64")
    total = out["call_premium"] + out["put_premium"]
    out["premium_score"] = (100.0 * out["call_premium"] / total.where(total > 0)).astype(float)
    return out.sort_values(keys, ignore_index=True)


def _canonical_sha256(frame: pd.DataFrame, band: float, max_days: int) -> str:
    text = frame.to_csv(index=False, float_format="%.10g") + f"band={band:g};max={max_days}"
    return hashlib.sha256(text.encode()).hexdigest()


def _map(client: PolygonOptionsClient, fn: Callable[..., pd.DataFrame],
         jobs: Sequence[tuple[object, ...]], phase: str,
         progress: OptionsProgress | None) -> list[pd.DataFrame]:
    """Run ``fn(*job)`` for every job on the client's threads, results in job order."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(client.concurrency, len(jobs))) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        results: list[pd.DataFrame] = []
        try:
            for done, future in enumerate(futures, start=1):
                results.append(future.result())
                if progress is not None:
                    progress(phase, done, len(jobs))
        finally:
            for future in futures:  # after an error, do not start the remaining requests
                future.cancel()
    return results


def fetch_premium(client: PolygonOptionsClient, symbol: str, first: dt.date, last: dt.date,
                  *, band: float = DEFAULT_BAND, max_days: int = DEFAULT_MAX_DAYS,
                  today: dt.date | None = None,
                  progress: OptionsProgress | None = None) -> tuple[pd.DataFrame, int, int]:
    """One ticker's premium rows over the XNYS sessions of ``[first, last]``; also the number
    of distinct contracts selected and of bars without a VWAP. Empty without underlying bars."""
    underlying, _ = keep_sessions(client.ticker_range(symbol, first, last), first, last)
    if underlying.empty:
        return premium_by_session(pd.DataFrame(columns=["symbol", "date", "close"]),
                                  empty_contracts().assign(symbol=[], date=[]),
                                  empty_contract_bars()), 0, 0
    sessions = underlying[["symbol", "date", "close"]].reset_index(drop=True)
    jobs = []
    for day, close in zip(sessions["date"], sessions["close"], strict=True):
        low, high = strike_band(float(close), band)
        session = pd.Timestamp(day).date()
        jobs.append((symbol, session, low, high, session + dt.timedelta(days=max_days)))

    def contracts_for(underlying_symbol: str, session: dt.date, low: float, high: float,
                      max_expiry: dt.date) -> pd.DataFrame:
        listed = client.contracts(underlying_symbol, session, min_strike=low, max_strike=high,
                                  max_expiry=max_expiry, today=today)
        return listed.assign(symbol=underlying_symbol, date=pd.Timestamp(session))

    listed = [frame for frame in _map(client, contracts_for, jobs, "contracts", progress)
              if not frame.empty]
    selected = (pd.concat(listed, ignore_index=True) if listed
                else empty_contracts().assign(symbol=[], date=[]))
    spans = (selected.groupby("ticker")["date"].agg(["min", "max"]) if len(selected)
             else pd.DataFrame(columns=["min", "max"]))
    bar_jobs = [(str(ticker), pd.Timestamp(lo).date(), pd.Timestamp(hi).date())
                for ticker, lo, hi in zip(spans.index, spans["min"], spans["max"], strict=True)]
    fetched = [frame for frame in _map(client, client.contract_bars, bar_jobs, "bars",
                                       progress) if not frame.empty]
    bars = pd.concat(fetched, ignore_index=True) if fetched else empty_contract_bars()
    without_vwap = int(bars["vwap"].isna().sum())
    if without_vwap:
        log.warning("%s: %d option bar(s) without a VWAP left out of the premium", symbol,
                    without_vwap)
    return premium_by_session(sessions, selected, bars), len(spans), without_vwap


def require_key(settings: Settings) -> None:
    """A clear error when no Polygon key is configured (options only come from Polygon)."""
    if settings.polygon_api_key is None:
        raise ConfigError(
            "options premium comes from Polygon and needs an API key: POLYGON_API_KEY is "
            "not set",
            hint="set POLYGON_API_KEY in the environment or .env to a key whose plan includes "
                 "options aggregates and reference data; nothing was fetched or written")


def ingest_options(
    writer: Writer,
    settings: Settings,
    start: DateLike,
    end: DateLike,
    tickers: Sequence[str] | None = None,
    *,
    band: float = DEFAULT_BAND,
    max_days: int = DEFAULT_MAX_DAYS,
    force: bool = False,
    client: httpx.Client | None = None,
    today: dt.date | None = None,
    progress: OptionsProgress | None = None,
) -> OptionsIngestSummary:
    """Fetch and store the options premium of ``tickers`` (default ``settings.tickers``) for
    the XNYS sessions of ``[start, end]``.

    ``band`` (0 < band <= 0.5) and ``max_days`` (0..365) choose the near-the-money contracts;
    ``client`` is an optional ``httpx.Client`` (tests point it at a local server). Raises
    :class:`ConfigError` without ``POLYGON_API_KEY``, ``FetchError`` when a request fails
    after retries, ``DataFormatError`` for a malformed response (that ticker writes nothing).
    """
    require_key(settings)
    first, last = to_date(start), to_date(end)
    if first > last:
        raise ConfigError(f"start {first} is after end {last}")
    if not 0 < band <= 0.5:
        raise ConfigError(f"--band must be in (0, 0.5] (a fraction of the close), got {band}")
    if not 0 <= max_days <= 365:
        raise ConfigError(f"--max-days must be between 0 and 365, got {max_days}")
    symbols = normalise_tickers(settings.tickers if tickers is None else tickers)
    if not symbols:
        raise ConfigError("no tickers given", hint="pass --tickers or set DARKPOOL_TICKERS")
    summary = OptionsIngestSummary(first, last, band, max_days)
    if not sessions_between(first, last):
        log.warning("no XNYS session between %s and %s: nothing to ingest", first, last)
        return summary
    own = client is None
    http = make_client(settings) if client is None else client
    polygon = PolygonOptionsClient(http, settings)
    try:
        for symbol in symbols:
            frame, contracts, without_vwap = fetch_premium(
                polygon, symbol, first, last, band=band, max_days=max_days, today=today,
                progress=progress)
            summary.contracts += contracts
            summary.bars_without_vwap += without_vwap
            if frame.empty:
                summary.missing.append(symbol)
                continue
            _write(writer, settings, frame, symbol, summary, force=force)
    finally:
        summary.requests = polygon.requests
        if own:
            http.close()
    log.info("options %s..%s: %d row(s), %d contract(s), %d request(s); ingested %d, "
             "replaced %d, unchanged %d, missing %d", first, last, summary.rows,
             summary.contracts, summary.requests, len(summary.ingested), len(summary.replaced),
             len(summary.unchanged), len(summary.missing))
    return summary


def _write(writer: Writer, settings: Settings, frame: pd.DataFrame, symbol: str,
           summary: OptionsIngestSummary, *, force: bool) -> None:
    first, last, band, max_days = summary.start, summary.end, summary.band, summary.max_days
    key = f"polygon/{symbol}/{first.isoformat()}/{last.isoformat()}"
    sha = _canonical_sha256(frame, band, max_days)
    known = writer.known_sha256(DATASET, key)
    location = settings.polygon_api_url
    if known == sha and not force:
        writer.log_outcome(DATASET, key, outcome="unchanged", location=location,
                           rows=len(frame), sha256=sha)
        summary.unchanged.append(symbol)
        return
    fetched_at = utcnow()
    source_file = f"polygon-options/{symbol}"
    rows = frame.assign(date=pd.to_datetime(frame["date"]).dt.date, moneyness_band=band,
                        max_days_to_expiry=max_days, source_file=source_file,
                        fetched_at=fetched_at)
    outcome = "ingested" if known is None else "replaced"
    source = SourceFile(DATASET, key, source_file, location, sha, len(rows), fetched_at)
    summary.rows += writer.replace_partition(TABLE, rows, where=PARTITION_WHERE,
                                             params=[symbol, first, last], source=source,
                                             outcome=outcome,
                                             message=f"band {band:g}, max {max_days} days")
    (summary.ingested if outcome == "ingested" else summary.replaced).append(symbol)
    writer.maybe_publish()


def read_premium(conn: duckdb.DuckDBPyConnection, symbol: str, start: DateLike,
                 end: DateLike) -> pd.DataFrame:
    """Stored premium rows of ``symbol`` on ``[start, end]`` (``date`` as Timestamp); empty
    when none (or for databases without the table)."""
    if not table_exists(conn, TABLE):
        return pd.DataFrame(columns=["symbol", "date", "underlying_close",
                                     *PREMIUM_COLUMNS, "premium_score"])
    frame = conn.execute(
        f"SELECT symbol, date, underlying_close, {', '.join(PREMIUM_COLUMNS)}, premium_score "
        f"FROM {TABLE} WHERE symbol = ? AND date BETWEEN ? AND ? ORDER BY date",
        [symbol, to_date(start), to_date(end)]).df()
    frame["date"] = pd.to_datetime(frame["date"])
    return frame


__all__ = [
    "DATASET",
    "PREMIUM_COLUMNS",
    "TABLE",
    "OptionsIngestSummary",
    "fetch_premium",
    "ingest_options",
    "premium_by_session",
    "read_premium",
    "require_key",
]
