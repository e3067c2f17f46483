"""Lit-market trade and quote readers: Polygon REST, Polygon flat files, WRDS/NYSE TAQ, generic.

Every reader turns its input into two DuckDB views with one documented layout, in a private
in-memory DuckDB connection (never the store):

``raw_trades``: ``symbol, date, ts (ns UTC), price, size, exchange, is_trf, is_correction,
cond_ok, seq`` and ``raw_quotes``: ``symbol, date, ts, bid, ask, exchange, cond_ok, seq``.

:func:`load_day` then applies the shared filters (regular hours, lit venues only, regular
sale conditions, no corrections, positive price and size) in SQL, counts every dropped trade
by reason, and returns sorted numpy arrays ready for :mod:`darkpool_analysis.classify`.
Raw ticks never reach the database; ``keep_parquet`` keeps a Parquet copy on request.
The excluded conditions are listed in ``docs/trade-classification.md``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import duckdb
import httpx
import numpy as np
import pandas as pd

from darkpool_analysis import trading_calendar
from darkpool_analysis.classify import QuoteArrays, TradeArrays, nbbo_from_exchange_quotes
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, DataFormatError, FetchError
from darkpool_analysis.sources.http import HttpPolicy, get, redact
from darkpool_analysis.symbols import to_feed

log = logging.getLogger(__name__)

TradeSourceName = Literal["polygon", "flatfile", "taq", "file"]
SOURCES: tuple[TradeSourceName, ...] = ("polygon", "flatfile", "taq", "file")

#: TAQ/CTA/UTP sale-condition letters of regular trades: blank/@ regular sale, E automatic
#: execution, F intermarket sweep, I odd lot. A trade with any other letter is excluded.
TAQ_REGULAR_CONDITIONS = " @EFI"
#: Polygon condition ids of regular trades: 0 regular sale, 3 automatic execution,
#: 14 intermarket sweep, 37 odd lot, 41 trade-through exempt.
POLYGON_REGULAR_CONDITIONS: tuple[int, ...] = (0, 3, 14, 37, 41)
#: Polygon's exchange id of FINRA's trade reporting facilities (off-exchange prints).
POLYGON_TRF_EXCHANGE = 4
#: TAQ quote conditions of firm, regular quotes (Holden-Jacobsen 2014); others withdraw.
TAQ_QUOTE_CONDITIONS = "ABHORW"
#: Exchange codes treated as off-exchange in the generic format.
GENERIC_TRF_EXCHANGES: tuple[str, ...] = ("D", "4", "TRF", "FINRA", "ADF")

#: Polygon REST page size (the maximum it allows) and the default page cap per request chain.
POLYGON_PAGE_LIMIT = 50_000
POLYGON_MAX_PAGES = 2_000

SKIP_REASONS = ("bad_price", "bad_size", "correction", "off_exchange", "condition",
                "outside_rth")

TAQ_TRADE_COLUMNS = ("DATE", "TIME_M", "EX", "SYM_ROOT", "SIZE", "PRICE", "TR_SCOND", "TR_CORR")
TAQ_QUOTE_COLUMNS = ("DATE", "TIME_M", "EX", "SYM_ROOT", "BID", "ASK")
FLAT_TRADE_COLUMNS = ("ticker", "conditions", "correction", "exchange", "price",
                      "sequence_number", "sip_timestamp", "size", "trf_id")
FLAT_QUOTE_COLUMNS = ("ticker", "ask_price", "bid_price", "sequence_number", "sip_timestamp")
GENERIC_TRADE_COLUMNS = ("symbol", "timestamp", "price", "size")
GENERIC_QUOTE_COLUMNS = ("symbol", "timestamp", "bid", "ask")


# -- session windows --------------------------------------------------------------------------
def session_window(day: dt.date, settings: Settings) -> tuple[int, int, int]:
    """(local midnight, RTH start, RTH end) of ``day`` as ns since the epoch (UTC).

    RTH is ``settings.rth_start``-``rth_end`` in ``settings.market_timezone`` (default
    09:30-16:00 ET), ending earlier on early-close days (XNYS calendar).
    """
    zone = ZoneInfo(settings.market_timezone)

    def at(clock: str) -> int:
        hour, minute = (int(part) for part in clock.split(":"))
        local = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        return int(local.timestamp()) * 1_000_000_000

    start, end = at(settings.rth_start), at(settings.rth_end)
    if trading_calendar.is_session(day):
        close = trading_calendar.calendar().session_close(pd.Timestamp(day))
        end = min(end, int(close.value))
    # Local midnight via noon's UTC offset: TAQ clocks are local times after the 02:00 DST switch.
    noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=zone)
    offset = noon.utcoffset() or dt.timedelta(0)
    midnight = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
                   - offset.total_seconds()) * 1_000_000_000
    return midnight, start, end


# -- results ----------------------------------------------------------------------------------
@dataclass
class DayTicks:
    """The filtered, sorted lit trades and best quotes of one session (all symbols)."""

    day: dt.date
    symbols: list[str]                 # group code -> normalised symbol
    trades: TradeArrays
    quotes: QuoteArrays | None         # None when the source has no quotes for the day
    skipped: pd.DataFrame              # symbol, reason, trades, volume (dropped trades)
    location: str
    sha256: str
    incomplete: set[str] = field(default_factory=set)  # symbols whose fetch hit a page cap


class TradeReader(Protocol):
    """A source that can define ``raw_trades``/``raw_quotes`` for one session."""

    name: TradeSourceName

    def open_day(self, con: duckdb.DuckDBPyConnection, day: dt.date,
                 symbols: Sequence[str], settings: Settings) -> DaySource | None:
        """Create the views for ``day``; None when the source has nothing for that day."""
        ...


@dataclass
class DaySource:
    """Provenance of the views a reader created for one session."""

    location: str
    sha256: str
    has_quotes: bool
    exchange_quotes: bool = False      # TAQ: per-exchange quotes, NBBO built here
    incomplete: set[str] = field(default_factory=set)


# -- helpers ----------------------------------------------------------------------------------
def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(_sql_str(v) for v in values) + ")"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _columns(con: duckdb.DuckDBPyConnection, relation_sql: str, source: str) -> dict[str, str]:
    """Column name -> DuckDB type of a file scan, as a clear error when it is unreadable."""
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {relation_sql}").fetchall()
    except duckdb.Error as exc:
        raise DataFormatError(f"cannot read the file: {exc}", source=source) from exc
    return {str(r[0]): str(r[1]) for r in rows}


def _require(columns: dict[str, str], required: Sequence[str], source: str, what: str) -> None:
    lookup = {c.lower() for c in columns}
    missing = [c for c in required if c.lower() not in lookup]
    if missing:
        raise DataFormatError(
            f"not a {what} file: missing column(s) {', '.join(missing)}; found "
            f"{', '.join(columns) or 'none'}", source=source, line=1, field=missing[0])


def _text_types(columns: dict[str, str], names: Sequence[str]) -> dict[str, str]:
    """Read these columns (those present) as text: codes like ``00`` and dates stay exact."""
    return {name: "VARCHAR" for name in names if name in columns}


def _csv(path: Path, types: dict[str, str] | None = None) -> str:
    opts = ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in (types or {}).items())
    type_arg = f", types = {{{opts}}}" if opts else ""
    return f"read_csv({_sql_str(str(path))}, header = true{type_arg})"


def _scan(path: Path, types: dict[str, str] | None = None) -> str:
    if path.suffix.lower() == ".parquet":
        return f"read_parquet({_sql_str(str(path))})"
    return _csv(path, types)


def _polygon_conditions_ok(column: str) -> str:
    """SQL: every id in a comma-separated Polygon condition list is a regular-trade id."""
    allowed = "|".join(str(c) for c in POLYGON_REGULAR_CONDITIONS)
    return (f"NOT regexp_matches(regexp_replace(coalesce(CAST({column} AS VARCHAR), ''), "
            f"'\\b({allowed})\\b', '', 'g'), '[0-9]')")


def _taq_conditions_ok(column: str) -> str:
    allowed = re.escape(TAQ_REGULAR_CONDITIONS).replace("\\ ", " ")
    return f"regexp_full_match(coalesce({column}, ''), '[{allowed}]*')"


# -- readers ----------------------------------------------------------------------------------
@dataclass
class TaqReader:
    """WRDS/NYSE TAQ millisecond CSV (optionally .gz): a trades file and a quotes file.

    ``path`` is the trades file or a folder holding one ``*trade*`` and one ``*quote*``
    file. TAQ clocks (``TIME_M``) are local New York times; the quotes are per exchange and
    the NBBO is rebuilt from them.
    """

    path: Path
    name: TradeSourceName = "taq"
    _ready: bool = False

    def _files(self) -> tuple[Path, Path | None]:
        if self.path.is_file():
            siblings = [p for p in self.path.parent.iterdir() if "quote" in p.name.lower()]
            return self.path, (sorted(siblings)[0] if siblings else None)
        if not self.path.is_dir():
            raise DataFormatError("no such file or folder", source=str(self.path))
        files = sorted(p for p in self.path.iterdir() if p.is_file())
        trades = [p for p in files if "trade" in p.name.lower()]
        quotes = [p for p in files if "quote" in p.name.lower()]
        if not trades:
            raise DataFormatError("no TAQ trades file (name containing 'trade') in the folder",
                                  source=str(self.path))
        return trades[0], (quotes[0] if quotes else None)

    def open_day(self, con: duckdb.DuckDBPyConnection, day: dt.date,
                 symbols: Sequence[str], settings: Settings) -> DaySource | None:
        trades_path, quotes_path = self._files()
        if not self._ready:
            self._define(con, trades_path, quotes_path)
            self._ready = True
        return DaySource(location=str(trades_path), sha256=file_sha256(trades_path),
                         has_quotes=quotes_path is not None, exchange_quotes=True)

    def _define(self, con: duckdb.DuckDBPyConnection, trades: Path, quotes: Path | None) -> None:
        columns = _columns(con, _csv(trades), str(trades))
        _require(columns, TAQ_TRADE_COLUMNS, str(trades), "TAQ trades")
        scan = _csv(trades, _text_types(columns, ("DATE", "TIME_M", "EX", "SYM_ROOT",
                                                  "SYM_SUFFIX", "TR_SCOND", "TR_CORR")))
        suffix = "SYM_SUFFIX" if "SYM_SUFFIX" in columns else "NULL"
        seq = "TR_SEQNUM" if "TR_SEQNUM" in columns else "row_number() OVER ()"
        con.execute(f"""
            CREATE OR REPLACE TEMP VIEW raw_trades AS
            SELECT {_taq_symbol(suffix)} AS symbol,
                   strptime(DATE, '%Y%m%d')::DATE AS date,
                   {_taq_clock_ns('TIME_M')} AS tod_ns,
                   CAST(PRICE AS DOUBLE) AS price, CAST(SIZE AS DOUBLE) AS size,
                   EX AS exchange, EX = 'D' AS is_trf,
                   coalesce(TR_CORR, '00') NOT IN ('00', '0') AS is_correction,
                   {_taq_conditions_ok('TR_SCOND')} AS cond_ok,
                   CAST({seq} AS BIGINT) AS seq
            FROM {scan}""")
        if quotes is None:
            return
        qcolumns = _columns(con, _csv(quotes), str(quotes))
        _require(qcolumns, TAQ_QUOTE_COLUMNS, str(quotes), "TAQ quotes")
        qscan = _csv(quotes, _text_types(qcolumns, ("DATE", "TIME_M", "EX", "SYM_ROOT",
                                                    "SYM_SUFFIX", "QU_COND", "QU_CANCEL")))
        qsuffix = "SYM_SUFFIX" if "SYM_SUFFIX" in qcolumns else "NULL"
        cancel = "coalesce(QU_CANCEL, '') <> 'B'" if "QU_CANCEL" in qcolumns else "TRUE"
        cond = (f"coalesce(QU_COND, 'R') IN {_sql_list(TAQ_QUOTE_CONDITIONS)}"
                if "QU_COND" in qcolumns else "TRUE")
        qseq = "QU_SEQNUM" if "QU_SEQNUM" in qcolumns else "row_number() OVER ()"
        con.execute(f"""
            CREATE OR REPLACE TEMP VIEW raw_quotes AS
            SELECT {_taq_symbol(qsuffix)} AS symbol,
                   strptime(DATE, '%Y%m%d')::DATE AS date,
                   {_taq_clock_ns('TIME_M')} AS tod_ns,
                   CASE WHEN {cond} THEN CAST(BID AS DOUBLE) END AS bid,
                   CASE WHEN {cond} THEN CAST(ASK AS DOUBLE) END AS ask,
                   EX AS exchange, TRUE AS cond_ok, CAST({qseq} AS BIGINT) AS seq
            FROM {qscan} WHERE {cancel}""")


def normalised_symbol_sql(expr: str) -> str:
    """SQL for :func:`darkpool_analysis.symbols.normalise` of a CQS/Polygon spelling.

    ``BRK/B`` and ``BRK.B`` -> ``BRK.B``; the CQS lower-case suffixes ``p`` (preferred),
    ``r`` (rights) and ``w`` (when issued) -> ``.PR``/``.RT``/``.WI`` plus the series
    (``ABRpD`` -> ``ABR.PR.D``). Evaluated per row inside DuckDB; a test checks it against
    the Python function so trade symbols join the rest of the database.
    """
    text = f"replace(trim({expr}), '/', '.')"
    for letter, suffix in (("p", "PR"), ("r", "RT"), ("w", "WI")):
        text = (f"regexp_replace({text}, '^(.*[A-Z0-9])({letter})([A-Z]?)$', "
                f"'\\1.{suffix}.\\3')")
    return f"upper(rtrim({text}, '.'))"


def _taq_symbol(suffix: str) -> str:
    """``SYM_ROOT`` + ``SYM_SUFFIX`` (``PRD`` = preferred D, ``B`` = class B) normalised."""
    return (f"CASE WHEN coalesce({suffix}, '') = '' THEN upper(trim(SYM_ROOT)) "
            f"WHEN upper(trim({suffix})) LIKE 'PR%' THEN upper(trim(SYM_ROOT)) || '.PR' || "
            f"CASE WHEN length(trim({suffix})) > 2 THEN '.' || upper(substr(trim({suffix}), 3)) "
            f"ELSE '' END "
            f"ELSE upper(trim(SYM_ROOT)) || '.' || upper(trim({suffix})) END")


def _taq_clock_ns(column: str) -> str:
    """SQL: ``H:MM:SS.fffffffff`` local clock -> ns since local midnight (exact decimal)."""
    seconds = f"split_part({column}, ':', 3)"
    return (f"(CAST(split_part({column}, ':', 1) AS BIGINT) * 3600 "
            f"+ CAST(split_part({column}, ':', 2) AS BIGINT) * 60 "
            f"+ CAST(split_part({seconds}, '.', 1) AS BIGINT)) * 1000000000 "
            f"+ CAST(rpad(left(split_part({seconds}, '.', 2), 9), 9, '0') AS BIGINT)")


@dataclass
class FlatFileReader:
    """Polygon flat files: ``trades`` and ``quotes`` daily ``YYYY-MM-DD.csv.gz``.

    ``path`` is a folder searched recursively (e.g. the S3 layout
    ``us_stocks_sip/trades_v1/2024/03/2024-03-07.csv.gz``): a file named after the day under
    a folder whose name contains ``trades`` (``quotes``). Tickers are filtered while reading.
    """

    path: Path
    name: TradeSourceName = "flatfile"

    def _find(self, day: dt.date, kind: str) -> Path | None:
        if self.path.is_file():
            return self.path if kind == "trades" else None
        for pattern in (f"{day.isoformat()}.csv.gz", f"{day.isoformat()}.csv"):
            for candidate in sorted(self.path.rglob(pattern)):
                parts = [p.lower() for p in candidate.relative_to(self.path).parts[:-1]]
                if any(kind in part for part in parts):
                    return candidate
        return None

    def open_day(self, con: duckdb.DuckDBPyConnection, day: dt.date,
                 symbols: Sequence[str], settings: Settings) -> DaySource | None:
        if not self.path.exists():
            raise DataFormatError("no such file or folder", source=str(self.path))
        trades = self._find(day, "trades")
        if trades is None:
            return None
        quotes = self._find(day, "quotes")
        tickers = _sql_list(to_feed(s, "polygon") for s in symbols)
        scan = _csv(trades, {"conditions": "VARCHAR", "trf_id": "VARCHAR",
                             "correction": "VARCHAR", "ticker": "VARCHAR"})
        _require(_columns(con, scan, str(trades)), FLAT_TRADE_COLUMNS, str(trades),
                 "Polygon flat-file trades")
        define_polygon_trades(con, f"(SELECT * FROM {scan} WHERE ticker IN {tickers})", day)
        if quotes is not None:
            qscan = _csv(quotes, {"ticker": "VARCHAR"})
            _require(_columns(con, qscan, str(quotes)), FLAT_QUOTE_COLUMNS, str(quotes),
                     "Polygon flat-file quotes")
            define_polygon_quotes(con, f"(SELECT * FROM {qscan} WHERE ticker IN {tickers})", day)
        return DaySource(location=str(trades), sha256=file_sha256(trades),
                         has_quotes=quotes is not None)


def define_polygon_trades(con: duckdb.DuckDBPyConnection, relation: str, day: dt.date) -> None:
    """``raw_trades`` from rows in Polygon's trade layout (flat file or REST results)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW raw_trades AS
        SELECT {normalised_symbol_sql('ticker')} AS symbol, DATE '{day.isoformat()}' AS date,
               CAST(sip_timestamp AS BIGINT) AS ts,
               CAST(price AS DOUBLE) AS price, CAST(size AS DOUBLE) AS size,
               CAST(exchange AS VARCHAR) AS exchange,
               (CAST(exchange AS BIGINT) = {POLYGON_TRF_EXCHANGE}
                OR coalesce(CAST(trf_id AS VARCHAR), '') NOT IN ('', '0')) AS is_trf,
               coalesce(CAST(correction AS VARCHAR), '') NOT IN ('', '0') AS is_correction,
               {_polygon_conditions_ok('conditions')} AS cond_ok,
               CAST(sequence_number AS BIGINT) AS seq
        FROM {relation}""")


def define_polygon_quotes(con: duckdb.DuckDBPyConnection, relation: str, day: dt.date) -> None:
    """``raw_quotes`` from Polygon NBBO quote rows (already national best bid/offer)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW raw_quotes AS
        SELECT {normalised_symbol_sql('ticker')} AS symbol, DATE '{day.isoformat()}' AS date,
               CAST(sip_timestamp AS BIGINT) AS ts,
               CAST(bid_price AS DOUBLE) AS bid, CAST(ask_price AS DOUBLE) AS ask,
               NULL::VARCHAR AS exchange, TRUE AS cond_ok,
               CAST(sequence_number AS BIGINT) AS seq
        FROM {relation}""")


@dataclass
class GenericReader:
    """A Parquet/CSV file with ``symbol, timestamp, price, size[, exchange, conditions]``.

    ``timestamp``: integers are ns since the epoch (UTC), zone-aware timestamps are
    converted, naive timestamps are read as ``settings.market_timezone`` wall-clock time.
    ``conditions`` use TAQ letters; ``exchange`` in :data:`GENERIC_TRF_EXCHANGES` marks an
    off-exchange print. Quotes (``quotes_path``): ``symbol, timestamp, bid, ask``, taken as
    best bid/offer.
    """

    path: Path
    quotes_path: Path | None = None
    name: TradeSourceName = "file"
    _ready: bool = False

    def open_day(self, con: duckdb.DuckDBPyConnection, day: dt.date,
                 symbols: Sequence[str], settings: Settings) -> DaySource | None:
        if not self.path.is_file():
            raise DataFormatError("no such file", source=str(self.path))
        if not self._ready:
            self._define(con, settings)
            self._ready = True
        return DaySource(location=str(self.path), sha256=file_sha256(self.path),
                         has_quotes=self.quotes_path is not None)

    def _define(self, con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
        zone = _sql_str(settings.market_timezone)
        scan = _scan(self.path, {"symbol": "VARCHAR"})
        columns = {k.lower(): v for k, v in _columns(con, scan, str(self.path)).items()}
        _require(columns, GENERIC_TRADE_COLUMNS, str(self.path), "trades")
        ts = _generic_ts(columns["timestamp"], zone)
        exchange = "CAST(exchange AS VARCHAR)" if "exchange" in columns else "NULL::VARCHAR"
        cond = _taq_conditions_ok("CAST(conditions AS VARCHAR)") if "conditions" in columns \
            else "TRUE"
        con.execute(f"""
            CREATE OR REPLACE TEMP VIEW raw_trades AS
            WITH src AS (SELECT *, {ts} AS _ts, row_number() OVER () AS _row FROM {scan})
            SELECT {normalised_symbol_sql('symbol')} AS symbol,
                   CAST(timezone({zone}, to_timestamp(_ts // 1000000000)) AS DATE) AS date,
                   _ts AS ts, CAST(price AS DOUBLE) AS price, CAST(size AS DOUBLE) AS size,
                   {exchange} AS exchange,
                   coalesce(upper({exchange}) IN {_sql_list(GENERIC_TRF_EXCHANGES)}, FALSE)
                       AS is_trf,
                   FALSE AS is_correction, {cond} AS cond_ok, _row AS seq
            FROM src""")
        if self.quotes_path is None:
            return
        qscan = _scan(self.quotes_path, {"symbol": "VARCHAR"})
        qcolumns = {k.lower(): v for k, v in _columns(con, qscan, str(self.quotes_path)).items()}
        _require(qcolumns, GENERIC_QUOTE_COLUMNS, str(self.quotes_path), "quotes")
        qts = _generic_ts(qcolumns["timestamp"], zone)
        con.execute(f"""
            CREATE OR REPLACE TEMP VIEW raw_quotes AS
            WITH src AS (SELECT *, {qts} AS _ts, row_number() OVER () AS _row FROM {qscan})
            SELECT {normalised_symbol_sql('symbol')} AS symbol,
                   CAST(timezone({zone}, to_timestamp(_ts // 1000000000)) AS DATE) AS date,
                   _ts AS ts, CAST(bid AS DOUBLE) AS bid, CAST(ask AS DOUBLE) AS ask,
                   NULL::VARCHAR AS exchange, TRUE AS cond_ok, _row AS seq
            FROM src""")


def _generic_ts(duck_type: str, zone: str) -> str:
    kind = duck_type.upper()
    if "WITH TIME ZONE" in kind:
        return "epoch_ns(timestamp)"
    if kind.startswith("TIMESTAMP"):
        return f"epoch_ns(timezone({zone}, CAST(timestamp AS TIMESTAMP)))"
    if kind in ("BIGINT", "HUGEINT", "INTEGER", "UBIGINT"):
        return "CAST(timestamp AS BIGINT)"
    # Text: ISO timestamps; an explicit offset is honoured, a naive one is market time.
    return (f"epoch_ns(CASE WHEN regexp_matches(timestamp, '([+-]\\d\\d:?\\d\\d|Z)$') "
            f"THEN CAST(timestamp AS TIMESTAMPTZ) "
            f"ELSE timezone({zone}, CAST(timestamp AS TIMESTAMP)) END)")


# -- Polygon REST -----------------------------------------------------------------------------
@dataclass
class PolygonTicksClient:
    """``/v3/trades/{T}`` and ``/v3/quotes/{T}`` over a caller-supplied ``httpx.Client``.

    Pages are followed through ``next_url`` (only under the configured base URL, so the key
    never goes elsewhere); the key travels in an ``Authorization`` header and is never logged.
    A chain that still has a ``next_url`` after ``max_pages`` pages is returned as incomplete.
    """

    client: httpx.Client
    settings: Settings
    max_pages: int = POLYGON_MAX_PAGES
    requests: int = 0

    def __post_init__(self) -> None:
        if self.settings.polygon_api_key is None:
            raise ConfigError("the Polygon trade source needs an API key",
                              hint="set POLYGON_API_KEY (or use --source flatfile|taq|file)")
        self._key = self.settings.polygon_api_key.get_secret_value()
        self._base = self.settings.polygon_api_url
        self._policy = HttpPolicy.from_settings(self.settings)

    def fetch(self, kind: Literal["trades", "quotes"], symbol: str, start_ns: int,
              end_ns: int) -> tuple[list[dict[str, Any]], bool, bytes]:
        """All records with ``start_ns <= sip_timestamp < end_ns``; (rows, complete, digest)."""
        ticker = to_feed(symbol, "polygon")
        url: str | None = f"{self._base}/v3/{kind}/{ticker}"
        params: dict[str, str] | None = {
            "timestamp.gte": str(start_ns), "timestamp.lt": str(end_ns),
            "order": "asc", "sort": "timestamp", "limit": str(POLYGON_PAGE_LIMIT)}
        rows: list[dict[str, Any]] = []
        digest = hashlib.sha256()
        pages = 0
        while url is not None:
            if pages >= self.max_pages:
                log.warning("polygon %s %s: stopped after %d pages (max_pages); the day is "
                            "marked incomplete", kind, ticker, pages)
                return rows, False, digest.digest()
            payload, raw = self._get_json(url, params)
            digest.update(raw)
            pages += 1
            results = payload.get("results") or []
            if not isinstance(results, list):
                raise DataFormatError("'results' is not a list", source=redact(url),
                                      field="results")
            rows.extend(results)
            url, params = self._next_page(payload.get("next_url"), source=url), None
        return rows, True, digest.digest()

    def _get_json(self, url: str, params: dict[str, str] | None) -> tuple[dict[str, Any], bytes]:
        self.requests += 1
        response = get(self.client, url, policy=self._policy, params=params,
                       headers={"Authorization": f"Bearer {self._key}"})
        shown = redact(response.request.url)
        if response.status_code in (401, 403):
            raise FetchError(f"Polygon refused the request (HTTP {response.status_code}): "
                             f"{shown}", url=shown, status=response.status_code,
                             hint="check POLYGON_API_KEY and that your plan includes "
                                  "tick data for these dates")
        if response.status_code != 200:
            raise FetchError(f"Polygon answered HTTP {response.status_code}: {shown}",
                             url=shown, status=response.status_code)
        try:
            payload = json.loads(response.content)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"response is not JSON: {exc}", source=shown) from exc
        if not isinstance(payload, dict):
            raise DataFormatError("response is not a JSON object", source=shown)
        if payload.get("status") not in (None, "OK", "DELAYED"):
            raise FetchError(f"Polygon status {payload.get('status')!r}: "
                             f"{str(payload.get('error') or '').replace(self._key, '***')}",
                             url=shown)
        return payload, response.content

    def _next_page(self, next_url: object, *, source: str) -> str | None:
        if not next_url:
            return None
        text = str(next_url)
        if not text.startswith(f"{self._base}/"):
            raise DataFormatError(f"next_url {redact(text)!r} is not under {self._base}",
                                  source=redact(source), field="next_url")
        return text


TRADE_FIELDS = ("conditions", "correction", "exchange", "price", "sequence_number",
                "sip_timestamp", "size", "trf_id")
QUOTE_FIELDS = ("ask_price", "bid_price", "sequence_number", "sip_timestamp")


def polygon_records_frame(rows: list[dict[str, Any]], ticker: str,
                          fields: Sequence[str], source: str) -> pd.DataFrame:
    """Polygon REST result records -> the flat-file column layout (lists joined by commas)."""
    frame = pd.DataFrame.from_records(rows, columns=list(fields))
    for required in ("price", "size") if "price" in fields else ("bid_price", "ask_price"):
        if frame[required].isna().any():
            i = int(np.argmax(frame[required].isna().to_numpy()))
            raise DataFormatError(f"record {i} has no {required}", source=source,
                                  field=required)
    if "conditions" in frame:
        frame["conditions"] = [",".join(str(c) for c in v) if isinstance(v, list) else ""
                               for v in frame["conditions"]]
        frame["trf_id"] = frame["trf_id"].astype("string")
        frame["correction"] = frame["correction"].astype("string")
    frame.insert(0, "ticker", ticker)
    return frame


@dataclass
class PolygonRestReader:
    """Trades and NBBO quotes per ticker and day from the Polygon REST API.

    Trades are fetched for the regular-hours window only; quotes from
    ``quote_lookback_min`` minutes before the open so the quote in force at the open is known.
    """

    api: PolygonTicksClient
    quote_lookback_min: int = 30
    name: TradeSourceName = "polygon"

    def open_day(self, con: duckdb.DuckDBPyConnection, day: dt.date,
                 symbols: Sequence[str], settings: Settings) -> DaySource | None:
        _, start, end = session_window(day, settings)
        trades, quotes, incomplete = [], [], set()
        digest = hashlib.sha256()
        for symbol in symbols:  # one request chain per ticker: the API is per ticker
            ticker = to_feed(symbol, "polygon")
            rows, complete, raw = self.api.fetch("trades", symbol, start, end)
            digest.update(raw)
            trades.append(polygon_records_frame(rows, ticker, TRADE_FIELDS, f"trades/{ticker}"))
            qrows, qcomplete, qraw = self.api.fetch(
                "quotes", symbol, start - self.quote_lookback_min * 60 * 1_000_000_000, end)
            digest.update(qraw)
            quotes.append(polygon_records_frame(qrows, ticker, QUOTE_FIELDS, f"quotes/{ticker}"))
            if not (complete and qcomplete):
                incomplete.add(symbol)
        con.register("_polygon_trades", pd.concat(trades, ignore_index=True))
        con.register("_polygon_quotes", pd.concat(quotes, ignore_index=True))
        define_polygon_trades(con, "_polygon_trades", day)
        define_polygon_quotes(con, "_polygon_quotes", day)
        return DaySource(location=f"{self.api.settings.polygon_api_url}/v3/trades",
                         sha256=digest.hexdigest(), has_quotes=True, incomplete=incomplete)


# -- the shared filter ------------------------------------------------------------------------
def load_day(con: duckdb.DuckDBPyConnection, reader: TradeReader, day: dt.date,
             symbols: Sequence[str] | None, settings: Settings, *,
             keep_parquet: Path | None = None) -> DayTicks | None:
    """Read, filter and sort one session of ``symbols`` (None: every symbol in the files);
    None when the source has no file.

    Dropped trades are counted by reason in :attr:`DayTicks.skipped`; trades sorted by
    (symbol, time, feed sequence) and quotes likewise.
    """
    source = reader.open_day(con, day, symbols or (), settings)
    if source is None:
        return None
    midnight, start, end = session_window(day, settings)
    wanted = "" if symbols is None else f" AND symbol IN {_sql_list(symbols)}"
    # TAQ views carry a local clock (tod_ns); the others an absolute ts.
    ts_expr = (f"({midnight} + tod_ns)" if reader.name == "taq" else "ts")
    try:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE day_trades AS
            SELECT symbol, {ts_expr} AS ts, price, size, exchange, seq,
                   CASE WHEN price IS NULL OR NOT isfinite(price) OR price <= 0 THEN 'bad_price'
                        WHEN size IS NULL OR NOT isfinite(size) OR size <= 0 THEN 'bad_size'
                        WHEN is_correction THEN 'correction'
                        WHEN is_trf THEN 'off_exchange'
                        WHEN NOT coalesce(cond_ok, FALSE) THEN 'condition'
                        WHEN {ts_expr} < {start} OR {ts_expr} >= {end} THEN 'outside_rth'
                   END AS skip_reason
            FROM raw_trades WHERE date = DATE '{day.isoformat()}'{wanted}""")
    except duckdb.Error as exc:
        raise DataFormatError(f"cannot read trades for {day}: {exc}",
                              source=source.location) from exc
    skipped = con.execute("""
        SELECT symbol, skip_reason AS reason, count(*) AS trades, sum(size) AS volume
        FROM day_trades WHERE skip_reason IS NOT NULL GROUP BY ALL ORDER BY ALL""").df()
    con.execute("""
        CREATE OR REPLACE TEMP TABLE day_symbols AS
        SELECT symbol, CAST(row_number() OVER (ORDER BY symbol) - 1 AS BIGINT) AS g
        FROM (SELECT DISTINCT symbol FROM day_trades WHERE skip_reason IS NULL)""")
    kept = con.execute("""
        SELECT s.g, t.ts, t.price, t.size FROM day_trades t JOIN day_symbols s USING (symbol)
        WHERE t.skip_reason IS NULL ORDER BY s.g, t.ts, t.seq""").fetchnumpy()
    names = [str(s) for s in con.execute(
        "SELECT symbol FROM day_symbols ORDER BY g").fetchnumpy()["symbol"]]
    trades = TradeArrays(np.asarray(kept["ts"]), np.asarray(kept["price"]),
                         np.asarray(kept["size"]), np.asarray(kept["g"]))
    quotes = _load_quotes(con, reader, source, day, midnight, end) if source.has_quotes \
        else None
    if keep_parquet is not None:
        _keep_parquet(con, keep_parquet, reader.name, day, source.has_quotes)
    return DayTicks(day, names, trades, quotes, skipped, source.location, source.sha256,
                    source.incomplete)


def _load_quotes(con: duckdb.DuckDBPyConnection, reader: TradeReader, source: DaySource,
                 day: dt.date, midnight: int, end: int) -> QuoteArrays:
    ts_expr = f"({midnight} + q.tod_ns)" if reader.name == "taq" else "q.ts"
    exchange = "ascii(coalesce(q.exchange, '?'))" if source.exchange_quotes else "0"
    try:
        rows = con.execute(f"""
            SELECT s.g, {ts_expr} AS ts, q.bid, q.ask, {exchange} AS ex
            FROM raw_quotes q JOIN day_symbols s USING (symbol)
            WHERE q.date = DATE '{day.isoformat()}' AND {ts_expr} < {end}
            ORDER BY s.g, ts, q.seq""").fetchnumpy()
    except duckdb.Error as exc:
        raise DataFormatError(f"cannot read quotes for {day}: {exc}",
                              source=source.location) from exc
    ts, group = np.asarray(rows["ts"], dtype=np.int64), np.asarray(rows["g"], dtype=np.int64)
    bid = np.asarray(rows["bid"], dtype=np.float64)
    ask = np.asarray(rows["ask"], dtype=np.float64)
    if source.exchange_quotes:
        return nbbo_from_exchange_quotes(ts, np.asarray(rows["ex"]), bid, ask, group)
    return QuoteArrays(ts, bid, ask, group)


def _keep_parquet(con: duckdb.DuckDBPyConnection, folder: Path, source: str, day: dt.date,
                  has_quotes: bool) -> None:
    """Keep the day's normalised ticks (trades with their skip reason, quotes) as Parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{source}_{day.isoformat()}"
    con.execute(f"COPY day_trades TO {_sql_str(str(folder / f'{stem}_trades.parquet'))} "
                "(FORMAT parquet)")
    if has_quotes:
        con.execute(f"""COPY (SELECT q.* FROM raw_quotes q JOIN day_symbols USING (symbol)
                     WHERE q.date = DATE '{day.isoformat()}')
                     TO {_sql_str(str(folder / f'{stem}_quotes.parquet'))} (FORMAT parquet)""")


def check_coverage(con: duckdb.DuckDBPyConnection, reader: TradeReader,
                   days: Sequence[dt.date], symbols: Sequence[str],
                   settings: Settings) -> None:
    """For single-file sources: fail clearly when the file has none of the requested days or
    symbols (a file for another symbol or date), naming what it does contain."""
    if reader.name not in ("taq", "file") or not days:
        return
    reader.open_day(con, days[0], symbols, settings)
    try:
        present = con.execute("""SELECT date, list(DISTINCT symbol ORDER BY symbol)[1:5] AS s,
                                 count(DISTINCT symbol) AS n FROM raw_trades GROUP BY date
                                 ORDER BY date""").fetchall()
    except duckdb.Error as exc:
        raise DataFormatError(f"cannot read trades: {exc}",
                              source=str(getattr(reader, "path", reader.name))) from exc
    where = str(getattr(reader, "path", reader.name))
    dates = {row[0] for row in present}
    if not dates & set(days):
        shown = ", ".join(str(d) for d in sorted(dates)[:5]) or "no rows"
        raise DataFormatError(f"the file holds trades of {shown}, none of the requested "
                              f"sessions {days[0]}..{days[-1]}", source=where, field="date",
                              hint="pass the matching --date/--start/--end")
    found = con.execute(f"SELECT count(*) FROM raw_trades WHERE symbol IN "
                        f"{_sql_list(symbols)}").fetchone()
    if not found or not found[0]:
        sample = sorted({s for row in present for s in row[1]})[:5]
        raise DataFormatError(f"the file has no trades of {', '.join(symbols)}; it holds "
                              f"{', '.join(sample)}", source=where, field="symbol",
                              hint="pass --tickers with the file's symbol(s)")


def make_reader(source: TradeSourceName, *, path: Path | None, quotes_path: Path | None,
                settings: Settings, client_factory: Callable[[], httpx.Client] | None = None,
                max_pages: int = POLYGON_MAX_PAGES) -> TradeReader:
    """The reader for ``--source``; file sources need ``path``."""
    if source == "polygon":
        if client_factory is None:
            raise ConfigError("the polygon source needs an HTTP client")
        return PolygonRestReader(PolygonTicksClient(client_factory(), settings,
                                                    max_pages=max_pages))
    if path is None:
        raise ConfigError(f"--source {source} needs --path FILE_OR_DIR")
    if source == "taq":
        return TaqReader(path)
    if source == "flatfile":
        return FlatFileReader(path)
    if source == "file":
        return GenericReader(path, quotes_path)
    raise ConfigError(f"unknown trade source {source!r}; valid: {', '.join(SOURCES)}")
