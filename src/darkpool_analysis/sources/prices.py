"""Daily price bars from Polygon, Yahoo (``yfinance``) and Yahoo-format CSV files.

Every provider returns the same *bar frame* (the data contract of this module):

========== ============== ==========================================================
column     dtype          meaning
========== ============== ==========================================================
symbol     str            normalised symbol (``BRK.B``), see :mod:`darkpool_analysis.symbols`
date       datetime64     session date (tz-naive midnight)
open ...   float64        ``open, high, low, close``: split-adjusted, not dividend-adjusted
adj_close  float64        split- and dividend-adjusted close (Yahoo only; NULL for Polygon)
vwap       float64        volume-weighted average price (Polygon only; NULL otherwise)
volume     float64        consolidated volume, all venues (off-exchange included)
========== ============== ==========================================================

Parsers take bytes or frames and return bar frames; fetchers take an ``httpx.Client``. Every
frame is checked by :func:`validate_bars` before it leaves this module, so bad input raises
:class:`~darkpool_analysis.errors.DataFormatError` naming the file/URL, line and field.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import importlib.util
import io
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd

from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, DataFormatError, FetchError
from darkpool_analysis.sources import limits
from darkpool_analysis.sources.http import HttpPolicy, get, redact
from darkpool_analysis.symbols import normalise, normalise_array, to_feed

log = logging.getLogger(__name__)

PriceProvider = Literal["polygon", "yahoo", "csv"]
PROVIDERS: tuple[PriceProvider, ...] = ("polygon", "yahoo", "csv")
PolygonEndpoint = Literal["grouped", "range"]

BAR_COLUMNS: tuple[str, ...] = (
    "symbol", "date", "open", "high", "low", "close", "adj_close", "vwap", "volume",
)
PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "adj_close", "vwap")
#: Fields every bar must have (adj_close and vwap depend on the provider).
REQUIRED_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")

#: Yahoo CSV header -> bar column. ``Adj Close`` is optional: yfinance >= 0.2.51 exports
#: auto-adjusted bars without it (then ``adj_close`` is NULL).
YAHOO_CSV_COLUMNS: dict[str, str] = {
    "Date": "date", "Open": "open", "High": "high", "Low": "low", "Close": "close",
    "Adj Close": "adj_close", "Volume": "volume",
}
YAHOO_CSV_REQUIRED: tuple[str, ...] = ("Date", "Open", "High", "Low", "Close", "Volume")

#: Polygon daily bars are stamped at the start of the session day in New York time.
MARKET_TZ = "America/New_York"
#: Polygon's maximum ``limit`` for aggregates (one request covers ~200 years of daily bars).
POLYGON_RANGE_LIMIT = 50_000
POLYGON_OK_STATUSES = frozenset({"OK", "DELAYED"})
#: Stop following ``next_url`` after this many pages (a server that loops is a bug).
POLYGON_MAX_PAGES = 1_000

#: ``(done, total)`` after each request or file; the CLI turns it into a progress bar.
ProgressCallback = Callable[[int, int], None]


def empty_bars() -> pd.DataFrame:
    """A bar frame with no rows and the contract's dtypes."""
    frame = pd.DataFrame({name: pd.Series(dtype="float64") for name in BAR_COLUMNS})
    frame["symbol"] = pd.Series(dtype="str")
    frame["date"] = pd.Series(dtype="datetime64[ns]")
    return frame


# -- validation ---------------------------------------------------------------------------------

def _fail_first(mask: np.ndarray, message: str, *, source: str, field: str,
                lines: np.ndarray | None, frame: pd.DataFrame) -> None:
    """Raise a DataFormatError for the first row where ``mask`` holds (if any)."""
    bad = np.flatnonzero(mask)
    if bad.size == 0:
        return
    first = int(bad[0])
    line = int(lines[first]) if lines is not None else None
    symbol = frame["symbol"].iloc[first]
    day = pd.Timestamp(frame["date"].iloc[first]).date()
    more = f" ({bad.size - 1} more row(s) like it)" if bad.size > 1 else ""
    raise DataFormatError(f"{message} ({symbol} {day}){more}", source=source, line=line,
                          field=field)


def validate_bars(frame: pd.DataFrame, *, source: str,
                  lines: np.ndarray | None = None,
                  field_names: Mapping[str, str] | None = None) -> None:
    """Reject bars that cannot be real: missing/non-finite, negative or zero prices, negative
    volume, implausible magnitudes, ``high < low``, open or close outside ``[low, high]``,
    a symbol outside the layout, duplicate (symbol, date). ``adj_close`` and ``vwap`` may be
    missing and are not range-checked (an adjusted close sits below the traded range after
    dividends; a VWAP can include trades outside the regular session's range).

    ``lines`` (1-based, aligned with ``frame``) and ``field_names`` (bar column -> the
    source's column name) make the error point at the offending cell of the input.
    """
    names = dict(field_names or {})
    for column in (*REQUIRED_FIELDS, "adj_close", "vwap"):
        values = frame[column].to_numpy(dtype="float64")
        shown = names.get(column, column)
        if column in REQUIRED_FIELDS:
            _fail_first(~np.isfinite(values), "missing or non-finite value", source=source,
                        field=shown, lines=lines, frame=frame)
        else:
            _fail_first(np.isinf(values), "non-finite value", source=source, field=shown,
                        lines=lines, frame=frame)
        if column == "volume":
            _fail_first(values < 0, f"negative volume {_first(values, values < 0)}; "
                        "expected a volume >= 0", source=source, field=shown, lines=lines,
                        frame=frame)
        else:
            _fail_first(values <= 0, f"price {_first(values, values <= 0)} is not positive; "
                        "expected a price > 0", source=source, field=shown, lines=lines,
                        frame=frame)
        limit = limits.MAX_DAILY_SHARES if column == "volume" else limits.MAX_PRICE
        _fail_first(values > limit, f"implausible value {_first(values, values > limit)}; "
                    f"expected at most {limit:g}", source=source, field=shown, lines=lines,
                    frame=frame)
    high = frame["high"].to_numpy(dtype="float64")
    low = frame["low"].to_numpy(dtype="float64")
    _fail_first(high < low, "high is below low; expected high >= low", source=source,
                field=names.get("high", "high"), lines=lines, frame=frame)
    for column in ("open", "close"):
        values = frame[column].to_numpy(dtype="float64")
        _fail_first(values > high, f"{column} above high; expected low <= {column} <= high",
                    source=source, field=names.get(column, column), lines=lines, frame=frame)
        _fail_first(values < low, f"{column} below low; expected low <= {column} <= high",
                    source=source, field=names.get(column, column), lines=lines, frame=frame)
    symbols = pd.unique(frame["symbol"].to_numpy(dtype=object))
    odd = (next((i for i, s in enumerate(symbols) if not limits.symbol_ok(str(s))), None)
           if len(symbols) <= 64 else limits.bad_symbol(pd.Series(symbols, dtype="string")))
    if odd is not None:
        raise DataFormatError(limits.describe_symbol_problem(str(symbols[odd])), source=source,
                              field=names.get("symbol", "symbol"))
    duplicated = frame.duplicated(["symbol", "date"], keep="first").to_numpy()
    if duplicated.any():
        again = int(np.flatnonzero(duplicated)[0])
        same = ((frame["symbol"] == frame["symbol"].iloc[again])
                & (frame["date"] == frame["date"].iloc[again])).to_numpy()
        original = int(np.flatnonzero(same)[0])
        where = f"line {int(lines[original])}" if lines is not None else f"row {original}"
        _fail_first(duplicated, f"duplicate date (first seen on {where}); expected one bar "
                    "per symbol and session", source=source, field=names.get("date", "date"),
                    lines=lines, frame=frame)


def _first(values: np.ndarray, mask: np.ndarray) -> str:
    bad = values[mask]
    return f"{bad[0]:g}" if bad.size else ""


# -- Yahoo CSV ----------------------------------------------------------------------------------

def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataFormatError(f"not UTF-8 text (byte 0x{data[exc.start]:02x}); expected a "
                              "Yahoo-format CSV file", source=source, line=line) from exc


def _yahoo_header(text: str, source_name: str) -> list[str]:
    """The file's known columns (in our order) after checking the required ones are there."""
    first_line = text.split("\n", 1)[0]
    try:
        found = [name.strip() for name in next(csv.reader([first_line]))]
    except (csv.Error, StopIteration) as exc:
        raise DataFormatError(f"unreadable header: {exc}", source=source_name, line=1) from exc
    missing = [name for name in YAHOO_CSV_REQUIRED if name not in found]
    if missing:
        raise DataFormatError(
            f"missing column(s) {', '.join(missing)}; expected columns "
            f"{', '.join(YAHOO_CSV_COLUMNS)} in any order, found {', '.join(found)}",
            source=source_name, line=1, field=missing[0])
    return [name for name in YAHOO_CSV_COLUMNS if name in found]


def _bars_frame(symbol: str, dates: pd.Series, values: Mapping[str, np.ndarray]) -> pd.DataFrame:
    size = len(dates)
    columns: dict[str, Any] = {
        "symbol": np.full(size, normalise(symbol, "yahoo"), dtype=object),
        "date": dates.astype("datetime64[ns]").to_numpy(),
    }
    for name in BAR_COLUMNS[2:]:
        columns[name] = values.get(name, np.full(size, np.nan))
    return pd.DataFrame(columns).astype({"symbol": "str"})


def _parse_yahoo_typed(text: str, present: Sequence[str], symbol: str) -> pd.DataFrame | None:
    """Fast path for clean files: typed C parsing. Returns None at the first irregularity
    (a non-number, an empty or ``null`` cell, a blank line, a non-ISO date) so that
    :func:`_parse_yahoo_text` can find and name it."""
    value_columns = [name for name in present if name != "Date"]
    try:
        raw = pd.read_csv(io.StringIO(text), skipinitialspace=True, skip_blank_lines=False,
                          keep_default_na=False, na_values=[""],
                          dtype={"Date": str, **dict.fromkeys(value_columns, "float64")})
    except (ValueError, pd.errors.ParserError):
        return None
    raw.columns = [str(name).strip() for name in raw.columns]
    try:
        values = raw[value_columns].to_numpy(dtype="float64")
    except (ValueError, TypeError):
        return None
    if np.isnan(values).any():
        return None
    if not raw["Date"].str.len().eq(10).all():
        return None  # e.g. a date cut short (2021-01-1) or with a time zone: the slow path
    dates = pd.to_datetime(raw["Date"], format="%Y-%m-%d", errors="coerce")
    if dates.isna().any():
        return None
    return _bars_frame(symbol, dates, {YAHOO_CSV_COLUMNS[name]: values[:, i]
                                       for i, name in enumerate(value_columns)})


def _parse_yahoo_text(text: str, present: Sequence[str], symbol: str,
                      source_name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Diagnostic path: read every cell as text, skip blank lines and all-``null`` rows, and
    raise a DataFormatError naming the first bad cell. Returns bars and their line numbers."""
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                          skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(f"not a valid CSV file: {exc}", source=source_name) from exc
    raw.columns = [str(name).strip() for name in raw.columns]
    cells = pd.DataFrame({name: raw[name].fillna("").str.strip() for name in present})
    lines = np.arange(len(cells)) + 2  # 1-based; line 1 is the header

    value_columns = [name for name in present if name != "Date"]
    values_text = cells[value_columns]
    blank_line = (values_text.eq("").all(axis=1) & cells["Date"].eq("")).to_numpy()
    # Yahoo marks a day without data with the word null in every price cell; empty cells
    # after a date are a line cut short (a truncated file), never a "no data" day.
    null_bar = values_text.eq("null").all(axis=1).to_numpy() & ~blank_line
    if null_bar.any():
        log.warning("%s: %d row(s) with 'null' prices (no data that day) skipped, first on "
                    "line %d", source_name, int(null_bar.sum()), lines[null_bar][0])
    keep = ~(blank_line | null_bar)
    cells, lines = cells.loc[keep].reset_index(drop=True), lines[keep]

    # ``2021-01-25 00:00:00-05:00`` (yfinance to_csv of a tz-aware index): the local date.
    date_text = cells["Date"].str.extract(r"^(\d{4}-\d{2}-\d{2})(?:[ T][0-9:.+\-]*)?$")[0]
    dates = pd.to_datetime(date_text, format="%Y-%m-%d", errors="coerce")
    bad_date = dates.isna().to_numpy()
    if bad_date.any():
        first = int(np.flatnonzero(bad_date)[0])
        raise DataFormatError(f"unparseable date {cells['Date'].iloc[first]!r}; expected "
                              "YYYY-MM-DD", source=source_name, line=int(lines[first]),
                              field="Date")
    values: dict[str, np.ndarray] = {}
    for name in value_columns:
        numbers = pd.to_numeric(cells[name], errors="coerce")
        bad = numbers.isna().to_numpy()
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            got = cells[name].iloc[first]
            cut = " (a line cut short: the file may be truncated)" if got == "" else ""
            raise DataFormatError(f"expected a number, got {got!r}{cut}",
                                  source=source_name, line=int(lines[first]), field=name)
        values[YAHOO_CSV_COLUMNS[name]] = numbers.to_numpy(dtype="float64")
    return _bars_frame(symbol, dates, values), lines


def parse_yahoo_csv(data: bytes, *, symbol: str, source_name: str) -> pd.DataFrame:
    """Parse one Yahoo-format CSV (``Date,Open,High,Low,Close,Adj Close,Volume`` in any order,
    extra columns ignored) into a validated bar frame for ``symbol``.

    Rows whose prices are all ``null`` (Yahoo's marker for a day without data) are dropped
    with a warning; any other non-numeric value, an unparseable date, a negative price or
    volume, ``High < Low`` or a repeated date raises :class:`DataFormatError`.
    """
    text = _decode(data, source_name)
    if not text.strip():
        raise DataFormatError("empty file; expected a header line "
                              f"{','.join(YAHOO_CSV_COLUMNS)}", source=source_name, line=1)
    present = _yahoo_header(text, source_name)
    bars = _parse_yahoo_typed(text, present, symbol)
    lines: np.ndarray | None = np.arange(len(bars)) + 2 if bars is not None else None
    if bars is None:
        bars, lines = _parse_yahoo_text(text, present, symbol, source_name)
    validate_bars(bars, source=source_name, lines=lines,
                  field_names={bar: yahoo for yahoo, bar in YAHOO_CSV_COLUMNS.items()})
    return bars


def read_yahoo_csv(path_or_bytes: str | Path | bytes, *, symbol: str | None = None,
                   source_name: str | None = None) -> pd.DataFrame:
    """Read a Yahoo-format CSV file (or its bytes) into a validated bar frame.

    The symbol defaults to the file name in Yahoo spelling (``BRK-B.csv`` -> ``BRK.B``);
    with bytes, pass ``symbol``.

    Examples
    --------
    >>> csv = (b"Date,High,Low,Open,Close,Volume,Adj Close\\n"
    ...        b"2021-01-27,380,249,354.83,347.51,93396700,347.51\\n")
    >>> read_yahoo_csv(csv, symbol="GME")[["symbol", "close", "volume"]].to_numpy().tolist()
    [['GME', 347.51, 93396700.0]]
    """
    if isinstance(path_or_bytes, bytes):
        if symbol is None:
            raise TypeError("read_yahoo_csv(bytes) needs symbol=")
        return parse_yahoo_csv(path_or_bytes, symbol=symbol,
                               source_name=source_name or f"{symbol}.csv")
    path = Path(path_or_bytes)
    return parse_yahoo_csv(path.read_bytes(), symbol=symbol or yahoo_file_symbol(path),
                           source_name=source_name or path.name)


def yahoo_file_name(symbol: str) -> str:
    """The file name a Yahoo CSV for ``symbol`` has: ``BRK.B`` -> ``BRK-B.csv``."""
    return f"{to_feed(symbol, 'yahoo')}.csv"


def yahoo_file_symbol(path: Path) -> str:
    """The normalised symbol of a Yahoo CSV file name: ``BRK-B.csv`` -> ``BRK.B``."""
    return normalise(path.stem, "yahoo")


# -- yfinance -----------------------------------------------------------------------------------

def yfinance_available() -> bool:
    """Whether the optional ``yfinance`` package (extra ``yahoo``) is installed."""
    return importlib.util.find_spec("yfinance") is not None


def normalise_yfinance_frame(frame: pd.DataFrame, *, ticker: str | None = None,
                             source_name: str = "yfinance") -> pd.DataFrame:
    """Turn ``yfinance.download`` output into a validated bar frame.

    Accepts the wide layouts ``download`` returns: columns ``(Price, Ticker)`` (the default
    ``group_by="column"``), ``(Ticker, Price)`` (``group_by="ticker"``), or flat price columns
    for one ticker (then pass ``ticker``). Download with ``auto_adjust=False`` so ``Close``
    is the traded close and ``Adj Close`` the dividend-adjusted one. Dates where a ticker has
    no bar (NaN everywhere, from aligning tickers on one index) are dropped.
    """
    if isinstance(frame.columns, pd.MultiIndex):
        price_level = next((level for level in range(frame.columns.nlevels)
                            if "Close" in frame.columns.get_level_values(level)), None)
        if price_level is None or frame.columns.nlevels != 2:
            raise DataFormatError("expected (Price, Ticker) columns with a 'Close' level, got "
                                  f"{list(frame.columns[:4])}", source=source_name)
        ticker_level = 1 - price_level
        long = frame.stack(level=ticker_level, future_stack=True)
        long.index = long.index.set_names(["date", "ticker"])
        long = long.reset_index()
    else:
        if ticker is None:
            raise TypeError("normalise_yfinance_frame: flat columns need ticker=")
        long = frame.copy()
        long.index = long.index.set_names("date")
        long = long.reset_index()
        long["ticker"] = ticker
    long.columns = [str(name) for name in long.columns]
    missing = [name for name in YAHOO_CSV_REQUIRED[1:] if name not in long.columns]
    if missing:
        raise DataFormatError(f"missing column(s) {', '.join(missing)}", source=source_name,
                              field=missing[0])
    dates = pd.DatetimeIndex(long["date"])
    if dates.tz is not None:  # the exchange-local wall-clock date is the session
        dates = dates.tz_localize(None)
    bars = pd.DataFrame({
        "symbol": normalise_array(long["ticker"].astype(str).str.upper(), "yahoo"),
        "date": dates.normalize().astype("datetime64[ns]"),
    })
    for yahoo, column in YAHOO_CSV_COLUMNS.items():
        if yahoo != "Date":
            bars[column] = (pd.to_numeric(long[yahoo], errors="coerce").to_numpy("float64")
                            if yahoo in long.columns else np.nan)
    bars["vwap"] = np.nan
    no_bar = bars[list(REQUIRED_FIELDS)].isna().all(axis=1)
    bars = bars.loc[~no_bar, list(BAR_COLUMNS)].sort_values(["symbol", "date"])
    bars = bars.reset_index(drop=True)
    validate_bars(bars, source=source_name)
    return bars


def fetch_yahoo_bars(tickers: Sequence[str], start: dt.date, end: dt.date, *,
                     settings: Settings) -> pd.DataFrame:
    """Download daily bars for ``tickers`` over ``[start, end]`` with ``yfinance`` (keyless,
    unofficial; imported lazily because it is an optional extra)."""
    try:
        yfinance: Any = importlib.import_module("yfinance")
    except ImportError as exc:
        raise ConfigError("the Yahoo provider needs the optional package yfinance",
                          hint="pip install 'darkpool-analysis[yahoo]'") from exc
    feed_tickers = [to_feed(ticker, "yahoo") for ticker in tickers]
    raw = yfinance.download(
        tickers=feed_tickers, start=start.isoformat(),
        end=(end + dt.timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
        interval="1d", auto_adjust=False, actions=False, group_by="ticker",
        multi_level_index=True, progress=False, threads=True, timeout=settings.http_timeout,
    )
    if raw is None or raw.empty:
        return empty_bars()
    return normalise_yfinance_frame(raw, source_name="yfinance")


# -- Polygon ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolygonPlan:
    """Which Polygon endpoint a fetch uses and how many requests it costs (before paging)."""

    endpoint: PolygonEndpoint
    requests: int


def plan_polygon(n_tickers: int, n_sessions: int) -> PolygonPlan:
    """Choose the cheaper endpoint by request count: grouped daily costs one call per session
    (the whole market), the ticker range one call per ticker (``limit=50000`` bars).

    Examples
    --------
    >>> plan_polygon(500, 20), plan_polygon(5, 250)
    (PolygonPlan(endpoint='grouped', requests=20), PolygonPlan(endpoint='range', requests=5))
    """
    range_cost = n_tickers * max(1, -(-n_sessions // POLYGON_RANGE_LIMIT))
    if n_sessions < range_cost:
        return PolygonPlan("grouped", n_sessions)
    return PolygonPlan("range", range_cost)


def _polygon_json(content: bytes, source: str) -> dict[str, Any]:
    payload = limits.load_json(content, source)
    if not isinstance(payload, dict):
        raise DataFormatError("expected a JSON object", source=source)
    status = payload.get("status")
    if status not in POLYGON_OK_STATUSES:
        detail = payload.get("error") or payload.get("message") or ""
        raise DataFormatError(f"Polygon status {status!r} {detail}".rstrip()
                              + f"; expected one of {sorted(POLYGON_OK_STATUSES)}",
                              source=source, field="status")
    return payload


def parse_polygon_aggs(payload: Mapping[str, Any], *, source: str,
                       symbol: str | None = None,
                       symbols: Sequence[str] | None = None) -> pd.DataFrame:
    """Polygon aggregates ``results`` -> validated bar frame.

    Ticker range responses carry no ticker per bar: pass ``symbol``. Grouped-daily responses
    carry ``T`` (Polygon spelling, ``BRK.B``); ``symbols`` (normalised) keeps only those, so a
    malformed bar of an unrelated stock does not reject the day. ``t`` is the session's
    start in New York time as Unix milliseconds.
    """
    results = payload.get("results") or []
    if not isinstance(results, list):
        raise DataFormatError("'results' is not a list", source=source, field="results")
    if not results:
        return empty_bars()
    records = pd.DataFrame.from_records(results)
    if symbol is None:
        if "T" not in records:
            raise DataFormatError("bars without a ticker; expected field 'T'", source=source,
                                  field="results[0].T")
        records["symbol"] = normalise_array(records["T"].astype(str), "polygon")
        if symbols is not None:
            records = records.loc[records["symbol"].isin(list(symbols))]
            records = records.reset_index(drop=True)
    else:
        records["symbol"] = normalise(symbol, "polygon")
    for key in ("t", "o", "h", "l", "c", "v"):
        values = (pd.to_numeric(records[key], errors="coerce") if key in records
                  else pd.Series(np.nan, index=records.index))
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            raise DataFormatError(f"missing or non-numeric {key!r} in {bad.size} bar(s)",
                                  source=source, field=f"results[{int(bad[0])}].{key}")
    stamps = pd.to_datetime(records["t"].astype("int64"), unit="ms", utc=True)
    bars = pd.DataFrame({
        "symbol": records["symbol"].astype(str),
        "date": stamps.dt.tz_convert(MARKET_TZ).dt.tz_localize(None).dt.normalize()
        .astype("datetime64[ns]"),
        "open": records["o"].astype("float64"),
        "high": records["h"].astype("float64"),
        "low": records["l"].astype("float64"),
        "close": records["c"].astype("float64"),
        "adj_close": np.nan,  # adjusted=true is split-adjusted only, not for dividends
        "vwap": (pd.to_numeric(records["vw"], errors="coerce").astype("float64")
                 if "vw" in records else np.nan),
        "volume": records["v"].astype("float64"),
    })
    validate_bars(bars, source=source, field_names={
        "open": "o", "high": "h", "low": "l", "close": "c", "vwap": "vw", "volume": "v",
        "date": "t"})
    return bars


class PolygonClient:
    """Polygon aggregates over a caller-supplied ``httpx.Client`` with the shared retry policy.

    The key travels in an ``Authorization: Bearer`` header, never in a URL, so it cannot
    reach a log line, an error message or the ``source_files`` table.
    """

    def __init__(self, client: httpx.Client, settings: Settings) -> None:
        if settings.polygon_api_key is None:
            raise ConfigError("the Polygon provider needs an API key",
                              hint="set POLYGON_API_KEY (or choose --provider yahoo|csv)")
        self._client = client
        self._key = settings.polygon_api_key.get_secret_value()
        self._base = settings.polygon_api_url
        self._policy = HttpPolicy.from_settings(settings)
        self.concurrency = settings.http_concurrency
        self._lock = threading.Lock()
        self.requests = 0

    def _get_json(self, url: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        with self._lock:  # requests may run on several threads
            self.requests += 1
        response = get(self._client, url, policy=self._policy, params=params,
                       headers={"Authorization": f"Bearer {self._key}"})
        shown = redact(response.request.url)
        if response.status_code in (401, 403):
            raise FetchError(
                f"Polygon refused the request (HTTP {response.status_code}"
                f"{self._error_detail(response)}): {shown}",
                url=shown, status=response.status_code,
                hint="check POLYGON_API_KEY and that your plan covers this endpoint and dates")
        if response.status_code != 200:
            raise FetchError(f"Polygon answered HTTP {response.status_code}"
                             f"{self._error_detail(response)}: {shown}",
                             url=shown, status=response.status_code)
        return _polygon_json(response.content, shown)

    def _error_detail(self, response: httpx.Response) -> str:
        """Polygon's own error text (``error``/``message``), with the key masked if echoed."""
        try:
            payload = response.json()
        except (UnicodeDecodeError, json.JSONDecodeError):
            return ""
        if not isinstance(payload, dict):
            return ""
        detail = payload.get("error") or payload.get("message")
        return f": {str(detail).replace(self._key, '***')}" if detail else ""

    def grouped_daily(self, day: dt.date, symbols: Sequence[str]) -> pd.DataFrame:
        """All US stocks' bars for one session, filtered to ``symbols`` (normalised)."""
        url = f"{self._base}/v2/aggs/grouped/locale/us/market/stocks/{day.isoformat()}"
        payload = self._get_json(url, {"adjusted": "true"})
        return parse_polygon_aggs(payload, source=url, symbols=symbols)

    def ticker_range(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """One ticker's bars over ``[start, end]``, following ``next_url`` pages."""
        ticker = to_feed(symbol, "polygon")
        url: str | None = (f"{self._base}/v2/aggs/ticker/{ticker}/range/1/day/"
                           f"{start.isoformat()}/{end.isoformat()}")
        params: dict[str, str] | None = {"adjusted": "true", "sort": "asc",
                                         "limit": str(POLYGON_RANGE_LIMIT)}
        pages: list[pd.DataFrame] = []
        seen: set[str] = set()
        while url is not None:
            if url in seen or len(seen) >= POLYGON_MAX_PAGES:
                raise DataFormatError("next_url repeats or paging does not end",
                                      source=url, field="next_url")
            seen.add(url)
            payload = self._get_json(url, params)
            pages.append(parse_polygon_aggs(payload, source=url, symbol=symbol))
            url, params = self._next_page(payload.get("next_url"), source=url), None
        bars = pd.concat(pages, ignore_index=True) if len(pages) > 1 else pages[0]
        validate_bars(bars, source=f"{self._base}/v2/aggs/ticker/{ticker}")
        return bars

    def _next_page(self, next_url: object, *, source: str) -> str | None:
        if not next_url:
            return None
        text = str(next_url)
        if not text.startswith(f"{self._base}/"):  # never send the key to another host
            raise DataFormatError(f"next_url {redact(text)!r} is not under {self._base}",
                                  source=source, field="next_url")
        return text


def fetch_polygon_bars(client: PolygonClient, symbols: Sequence[str], sessions: Sequence[dt.date],
                       *, progress: ProgressCallback | None = None) -> tuple[pd.DataFrame,
                                                                             PolygonPlan]:
    """Bars for ``symbols`` over ``sessions`` through the cheaper endpoint (see
    :func:`plan_polygon`); returns the bars and the plan used.

    Requests run on up to ``http_concurrency`` threads (set it to 1 on Polygon's free tier,
    which allows 5 requests a minute); the first failure cancels the rest and is raised.
    """
    plan = plan_polygon(len(symbols), len(sessions))
    log.info("polygon: %s endpoint, %d request(s) for %d ticker(s) x %d session(s)",
             plan.endpoint, plan.requests, len(symbols), len(sessions))

    def fetch_one(unit: Any) -> pd.DataFrame:
        if plan.endpoint == "grouped":
            return client.grouped_daily(unit, symbols)
        return client.ticker_range(unit, sessions[0], sessions[-1])

    units: Sequence[Any] = sessions if plan.endpoint == "grouped" else symbols
    frames: list[pd.DataFrame] = []
    with ThreadPoolExecutor(max_workers=min(client.concurrency, len(units))) as pool:
        futures = [pool.submit(fetch_one, unit) for unit in units]
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                frames.append(future.result())
                if progress is not None:
                    progress(done, len(units))
        finally:
            for future in futures:  # after an error, do not start the remaining requests
                future.cancel()
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return empty_bars(), plan
    # completion order varies between runs: sort for deterministic output
    return pd.concat(frames).sort_values(["symbol", "date"], ignore_index=True), plan
