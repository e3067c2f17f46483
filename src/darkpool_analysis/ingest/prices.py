"""Daily price bar ingestion: pick a provider, get bars, keep XNYS sessions in ``[start, end]``
and replace each ticker's rows of ``prices_daily`` in one transaction.

Idempotency: the unit is (provider, symbol, start, end). Its fingerprint is the sha256 of the
CSV file's bytes, or of the canonical bars of an API response (responses carry request ids,
so their raw bytes change on every call). An unchanged fingerprint is skipped unless
``force``; otherwise the ticker's rows in ``[start, end]`` are deleted and re-inserted with the
provenance row and log entry, all in one transaction, so running twice never duplicates.

Bad input never half-writes: CSV files are all parsed and validated before the first write;
an API response is validated before its ticker is written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa

from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, DataFormatError
from darkpool_analysis.ingest import failures_logged
from darkpool_analysis.sources.http import make_client
from darkpool_analysis.sources.prices import (
    BAR_COLUMNS,
    PROVIDERS,
    PolygonClient,
    PriceProvider,
    fetch_polygon_bars,
    fetch_yahoo_bars,
    parse_yahoo_csv,
    yahoo_file_name,
    yahoo_file_symbol,
    yfinance_available,
)
from darkpool_analysis.store import SourceFile, Writer, settle, utcnow
from darkpool_analysis.symbols import to_feed
from darkpool_analysis.trading_calendar import DateLike, sessions_between, sessions_index, to_date

log = logging.getLogger(__name__)

DATASET = "prices"
#: Tickers committed per transaction.
WRITE_GROUP = 64
TABLE = "prices_daily"
PARTITION_WHERE = "symbol = ? AND date BETWEEN ? AND ?"

#: ``(phase, done, total)``: phase is ``"fetch"`` or ``"write"``; drives the CLI progress bar.
IngestProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TickerBars:
    """One ticker's bars from one file or response, with its provenance."""

    symbol: str
    bars: pd.DataFrame
    source_file: str
    location: str
    sha256: str
    fetched_at: dt.datetime


@dataclass
class PriceIngestSummary:
    """What one :func:`ingest_prices` run did, ticker by ticker (normalised symbols)."""

    provider: PriceProvider
    start: dt.date
    end: dt.date
    endpoint: str | None = None
    requests: int = 0
    rows: int = 0
    ingested: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    non_session_rows: int = 0

    @property
    def stored(self) -> list[str]:
        """Tickers whose bars are now in the database (written or already current)."""
        return [*self.ingested, *self.replaced, *self.unchanged]


def normalise_tickers(tickers: Sequence[str]) -> list[str]:
    """User-typed tickers in any feed spelling -> unique normalised symbols, order kept."""
    symbols = [to_feed(ticker.strip().upper(), "normalised") for ticker in tickers
               if ticker.strip()]
    return list(dict.fromkeys(symbols))


def tickers_in_dir(from_dir: Path) -> list[str]:
    """Normalised symbols of every ``<TICKER>.csv`` (Yahoo spelling) in ``from_dir``.

    A folder without any ``.csv`` file is an error saying what was expected and found."""
    folder = Path(from_dir)
    found = sorted(yahoo_file_symbol(path) for path in folder.glob("*.csv") if path.is_file())
    if not found:
        others = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        shown = ", ".join(others[:5]) + (f" (+{len(others) - 5} more)" if len(others) > 5
                                         else "")
        raise ConfigError(
            f"--from-dir {folder} holds no price file: expected Yahoo-format <TICKER>.csv "
            "files (e.g. GME.csv, BRK-B.csv), found "
            + (f"{len(others)} other file(s): {shown}" if others else "nothing (it is empty)"),
            hint="pass the folder of price CSVs (darkpool ingest finra-short --from-dir takes "
                 "the FINRA <FAMILY>shvol<YYYYMMDD>.txt files)")
    return found


def resolve_provider(settings: Settings, provider: str | None = None,
                     from_dir: Path | None = None, *,
                     yahoo_installed: bool | None = None) -> PriceProvider:
    """The provider to use: the explicit one, else csv when a folder is given, else
    ``DARKPOOL_PRICE_PROVIDER``, else polygon when ``POLYGON_API_KEY`` is set, else yahoo when
    yfinance is installed. Raises :class:`ConfigError` explaining the options when none
    applies."""
    installed = yfinance_available() if yahoo_installed is None else yahoo_installed
    chosen = provider or ("csv" if from_dir is not None else settings.price_provider)
    if chosen is None:
        if settings.polygon_api_key is not None:
            chosen = "polygon"
        elif installed:
            chosen = "yahoo"
        else:
            raise ConfigError(
                "no price provider available",
                hint="set POLYGON_API_KEY for Polygon, or pip install "
                "'darkpool-analysis[yahoo]' for Yahoo (keyless), or pass --from-dir with "
                "Yahoo-format <TICKER>.csv files")
    if chosen not in PROVIDERS:
        raise ConfigError(f"unknown price provider {chosen!r}; expected one of "
                          f"{', '.join(PROVIDERS)}")
    if chosen == "polygon" and settings.polygon_api_key is None:
        raise ConfigError("the Polygon provider needs an API key",
                          hint="set POLYGON_API_KEY, or use --provider yahoo or --from-dir")
    if chosen == "yahoo" and not installed:
        raise ConfigError("the Yahoo provider needs the optional package yfinance",
                          hint="pip install 'darkpool-analysis[yahoo]', or use --from-dir")
    if chosen == "csv" and from_dir is None:
        raise ConfigError("the csv provider reads files from a folder: pass --from-dir DIR")
    if chosen != "csv" and from_dir is not None:
        raise ConfigError(f"--from-dir only applies to the csv provider, not {chosen}")
    return cast(PriceProvider, chosen)


def keep_sessions(bars: pd.DataFrame, start: dt.date, end: dt.date,
                  sessions: pd.DatetimeIndex | None = None) -> tuple[pd.DataFrame, int]:
    """Bars dated on an XNYS session within ``[start, end]``, and how many bars inside the
    range fell on a non-session (weekend, holiday, closure) and were dropped.

    ``sessions`` is ``sessions_index(start, end)``, passed in to compute it once per run.
    """
    dates = bars["date"]
    in_range = dates.between(pd.Timestamp(start), pd.Timestamp(end)).to_numpy()
    valid = sessions_index(start, end) if sessions is None else sessions
    is_session = dates.isin(valid).to_numpy()
    return bars.loc[in_range & is_session].reset_index(drop=True), int(
        np.count_nonzero(in_range & ~is_session))


def _canonical_sha256(bars: pd.DataFrame) -> str:
    """Fingerprint of bars independent of response noise (request ids, row order)."""
    ordered = bars.sort_values(["symbol", "date"])[list(BAR_COLUMNS)]
    return hashlib.sha256(ordered.to_csv(index=False, float_format="%.10g").encode()).hexdigest()


def _split_by_symbol(bars: pd.DataFrame, *, location: str, source_prefix: str,
                     fetched_at: dt.datetime) -> dict[str, TickerBars]:
    return {
        str(symbol): TickerBars(
            symbol=str(symbol), bars=group.reset_index(drop=True),
            source_file=f"{source_prefix}/{symbol}", location=location,
            sha256=_canonical_sha256(group), fetched_at=fetched_at)
        for symbol, group in bars.groupby("symbol", sort=True)
    }


def _collect_csv(from_dir: Path, symbols: Sequence[str],
                 progress: IngestProgress | None) -> dict[str, TickerBars]:
    """Parse and validate every requested file before anything is written."""
    found: dict[str, TickerBars] = {}
    for done, symbol in enumerate(symbols, start=1):
        path = Path(from_dir) / yahoo_file_name(symbol)
        if path.is_file():
            data = path.read_bytes()
            found[symbol] = TickerBars(
                symbol=symbol, bars=parse_yahoo_csv(data, symbol=symbol, source_name=path.name),
                source_file=path.name, location=str(path.resolve()),
                sha256=hashlib.sha256(data).hexdigest(), fetched_at=utcnow())
        if progress is not None:
            progress("fetch", done, len(symbols))
    return found


def _collect_polygon(settings: Settings, client: httpx.Client | None, symbols: Sequence[str],
                     sessions: Sequence[dt.date], summary: PriceIngestSummary,
                     progress: IngestProgress | None) -> dict[str, TickerBars]:
    own_client = client is None
    http = make_client(settings) if client is None else client
    try:
        polygon = PolygonClient(http, settings)
        bars, plan = fetch_polygon_bars(
            polygon, symbols, sessions,
            progress=None if progress is None else lambda done, total: progress(
                "fetch", done, total))
    finally:
        if own_client:
            http.close()
    summary.endpoint, summary.requests = plan.endpoint, polygon.requests
    return _split_by_symbol(bars, location=settings.polygon_api_url,
                            source_prefix=f"polygon-{plan.endpoint}", fetched_at=utcnow())


def _collect_yahoo(settings: Settings, symbols: Sequence[str], start: dt.date, end: dt.date,
                   progress: IngestProgress | None) -> dict[str, TickerBars]:
    bars = fetch_yahoo_bars(symbols, start, end, settings=settings)
    if progress is not None:
        progress("fetch", 1, 1)
    wanted = bars.loc[bars["symbol"].isin(list(symbols))]
    return _split_by_symbol(wanted, location="yfinance", source_prefix="yahoo",
                            fetched_at=utcnow())


def _write_ticker(writer: Writer, item: TickerBars, *, provider: PriceProvider,
                  start: dt.date, end: dt.date, force: bool,
                  summary: PriceIngestSummary) -> None:
    key = f"{provider}/{item.symbol}/{start.isoformat()}/{end.isoformat()}"
    known = writer.known_sha256(DATASET, key)
    if known == item.sha256 and not force:
        writer.log_outcome(DATASET, key, outcome="unchanged", location=item.location,
                           rows=len(item.bars), sha256=item.sha256)
        summary.unchanged.append(item.symbol)
        return
    frame = item.bars.assign(provider=provider, source_file=item.source_file,
                             fetched_at=item.fetched_at)
    outcome = "ingested" if known is None else "replaced"
    source = SourceFile(dataset=DATASET, partition_key=key, source_file=item.source_file,
                        location=item.location, sha256=item.sha256, rows=len(frame),
                        fetched_at=item.fetched_at)
    summary.rows += writer.replace_partition(TABLE, frame, where=PARTITION_WHERE,
                                             params=[item.symbol, start, end], source=source,
                                             outcome=outcome)
    (summary.ingested if outcome == "ingested" else summary.replaced).append(item.symbol)
    writer.maybe_publish()


def _refuse_shrinking(writer: Writer, items: Sequence[TickerBars], first: dt.date,
                      last: dt.date) -> None:
    """Refuse (before anything is written) a run that would delete stored bars: replacing a
    ticker's rows in ``[first, last]`` with bars that lack some stored session means the new
    file or response covers less than the database (a truncated file, a provider gap).

    One anti join of the stored bars in range against the new (symbol, date) pairs."""
    if not items:
        return
    symbols = np.concatenate([item.bars["symbol"].to_numpy(dtype=object) for item in items])
    dates = np.concatenate([item.bars["date"].to_numpy(dtype="datetime64[D]")
                            for item in items])
    new = pa.table({"symbol": pa.array(symbols, pa.string()),
                    "date": pa.array(dates, pa.date32())})
    conn = writer.conn
    settle(conn)
    conn.register("_darkpool_new_bars", new)
    try:
        lost = conn.execute(f"""
            SELECT p.symbol, count(*), min(p.date), max(p.date)
            FROM (SELECT symbol, date FROM {TABLE}
                  WHERE date BETWEEN ? AND ?
                    AND symbol IN (SELECT DISTINCT symbol FROM _darkpool_new_bars)) p
            ANTI JOIN _darkpool_new_bars n ON p.symbol = n.symbol AND p.date = n.date
            GROUP BY p.symbol ORDER BY p.symbol
        """, [first, last]).fetchall()
    finally:
        settle(conn)
        conn.unregister("_darkpool_new_bars")
    if not lost:
        return
    symbol, count, first_lost, last_lost = lost[0]
    item = next(i for i in items if i.symbol == symbol)
    new_first, new_last = (item.bars["date"].min().date(), item.bars["date"].max().date())
    more = (f" (and {len(lost) - 1} more ticker(s): {', '.join(r[0] for r in lost[1:6])})"
            if len(lost) > 1 else "")
    raise DataFormatError(
        f"would delete {count} stored {symbol} bar(s) between {first_lost} and {last_lost}: "
        f"the new data covers {new_first}..{new_last} and lacks them{more}; expected new data "
        f"covering every stored session of {first}..{last}",
        source=item.source_file, field="Date",
        hint="a truncated file? re-download it, narrow --start/--end to what it covers, or "
             "pass --force to replace the stored bars anyway")


def ingest_prices(
    writer: Writer,
    settings: Settings,
    start: DateLike,
    end: DateLike,
    tickers: Sequence[str] | None = None,
    provider: PriceProvider | None = None,
    from_dir: Path | None = None,
    force: bool = False,
    client: httpx.Client | None = None,
    progress: IngestProgress | None = None,
) -> PriceIngestSummary:
    """Load daily bars for ``tickers`` (default ``settings.tickers``) over the XNYS sessions of
    ``[start, end]`` into ``prices_daily``.

    ``provider`` defaults as in :func:`resolve_provider`; ``client`` is an optional
    ``httpx.Client`` for Polygon (tests point it at a local server); ``progress`` receives
    ``(phase, done, total)``. Tickers without any bar in the range are listed in
    ``summary.missing`` and leave their rows untouched. Raises ``DataFormatError`` for bad
    input (nothing of that file/response is written; bars covering fewer stored sessions
    than the database holds count as bad input unless ``force``), ``FetchError`` when a
    download fails; either is recorded in ``ingest_log`` as ``failed``.
    """
    location = str(from_dir) if from_dir is not None else provider or settings.price_provider
    with failures_logged(writer, DATASET, location):
        return _ingest_prices(writer, settings, start, end, tickers, provider, from_dir, force,
                              client, progress)


def _ingest_prices(
    writer: Writer,
    settings: Settings,
    start: DateLike,
    end: DateLike,
    tickers: Sequence[str] | None = None,
    provider: PriceProvider | None = None,
    from_dir: Path | None = None,
    force: bool = False,
    client: httpx.Client | None = None,
    progress: IngestProgress | None = None,
) -> PriceIngestSummary:
    first, last = to_date(start), to_date(end)
    if first > last:
        raise ConfigError(f"start {first} is after end {last}")
    chosen = resolve_provider(settings, provider, from_dir)
    symbols = normalise_tickers(settings.tickers if tickers is None else tickers)
    if not symbols:
        raise ConfigError("no tickers given", hint="pass --tickers or set DARKPOOL_TICKERS")
    summary = PriceIngestSummary(provider=chosen, start=first, end=last)
    sessions = sessions_between(first, last)
    if not sessions:
        log.warning("no XNYS session between %s and %s: nothing to ingest", first, last)
        return summary

    if from_dir is not None:  # resolve_provider allows a folder only for csv
        collected = _collect_csv(from_dir, symbols, progress)
    elif chosen == "polygon":
        collected = _collect_polygon(settings, client, symbols, sessions, summary, progress)
    else:
        collected = _collect_yahoo(settings, symbols, first, last, progress)

    to_write: list[TickerBars] = []
    session_index = pd.DatetimeIndex(sessions)
    for symbol in symbols:
        item = collected.get(symbol)
        if item is None:
            summary.missing.append(symbol)
            continue
        kept, off_session = keep_sessions(item.bars, first, last, session_index)
        if off_session:
            log.warning("%s: %d bar(s) dated on a non-session day between %s and %s dropped",
                        item.source_file, off_session, first, last)
            summary.non_session_rows += off_session
        if kept.empty:
            summary.missing.append(symbol)
            continue
        to_write.append(TickerBars(symbol=symbol, bars=kept, source_file=item.source_file,
                                   location=item.location, sha256=item.sha256,
                                   fetched_at=item.fetched_at))
    if summary.missing:
        log.warning("%s: no bars between %s and %s for %s", chosen, first, last,
                    ", ".join(summary.missing))

    if not force:
        _refuse_shrinking(writer, to_write, first, last)
    # Everything in to_write is parsed and validated: commit it in groups (a commit per
    # ticker costs more than the rows), each ticker's replacement still all-or-nothing.
    for offset in range(0, len(to_write), WRITE_GROUP):
        group = to_write[offset:offset + WRITE_GROUP]
        with writer.transaction():
            for done, item in enumerate(group, start=offset + 1):
                _write_ticker(writer, item, provider=chosen, start=first, end=last,
                              force=force, summary=summary)
                if progress is not None:
                    progress("write", done, len(to_write))
        writer.maybe_publish()
    log.info("prices (%s) %s..%s: %d row(s); ingested %d, replaced %d, unchanged %d, "
             "missing %d", chosen, first, last, summary.rows, len(summary.ingested),
             len(summary.replaced), len(summary.unchanged), len(summary.missing))
    return summary
