"""Day files of lit trades and quotes for many sessions: finding them, fetching them, and
cutting one day into symbol buckets so a task's memory stays bounded.

Layouts (``--path`` is a local folder or an fsspec URL such as ``s3://bucket/prefix``):

``polygon-flat``
    Polygon/Massive flat files ``us_stocks_sip/{trades_v1,quotes_v1}/YYYY/MM/YYYY-MM-DD.csv.gz``;
    ``--path`` is the folder holding ``us_stocks_sip`` or that folder itself.
``taq``
    WRDS/NYSE TAQ millisecond CSV (optionally ``.gz``), per session either a folder named
    ``YYYYMMDD`` or ``YYYY-MM-DD`` holding one ``*trade*`` and one ``*quote*`` file, or files in
    ``--path`` whose names carry the date (``ctm_20190508.csv.gz`` / ``cqm_20190508.csv.gz``,
    ``taq_trades_2019-05-08.csv``); failing both, undated ``*trade*``/``*quote*`` files directly
    in ``--path`` (one downloaded day) serve every session and their ``DATE`` column selects it.

Reading is done by the shared filter (:func:`darkpool_analysis.sources.trades.load_day`).
Files behind a URL are copied to the task's scratch folder first (hashed while copying);
``fsspec`` comes with the ``dask`` extra (plus ``s3fs``/``gcsfs``/``adlfs`` for the cloud).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb

from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, DataFormatError
from darkpool_analysis.sources.trades import (
    POLYGON_TRF_EXCHANGE,
    DaySource,
    TaqReader,
    TradeReader,
    TradeSourceName,
    _polygon_conditions_ok,  # the same condition rule as every Polygon reader
    file_sha256,
    normalised_symbol_sql,
)

DayFileSource = Literal["polygon-flat", "taq"]
DAY_FILE_SOURCES: tuple[DayFileSource, ...] = ("polygon-flat", "taq")

POLYGON_ROOT = "us_stocks_sip"
POLYGON_TRADES = "trades_v1"
POLYGON_QUOTES = "quotes_v1"

#: The column that names the symbol in each layout (buckets are cut by it).
SYMBOL_COLUMN: dict[DayFileSource, str] = {"polygon-flat": "ticker", "taq": "SYM_ROOT"}

_DATED = re.compile(r"(?<!\d)(\d{8}|\d{4}-\d{2}-\d{2})(?!\d)")
_COPY_BLOCK = 1 << 22


@dataclass(frozen=True)
class DayFiles:
    """One session's input files: local paths or fsspec URLs (``quotes`` may be missing)."""

    day: dt.date
    trades: str
    quotes: str | None = None


# -- paths, local or remote --------------------------------------------------------------------
def is_url(path: str) -> bool:
    """True for fsspec URLs (``s3://``, ``gs://``, ``file://``, ...), False for local paths."""
    return "://" in path


def _fs(path: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"{path}: reading URLs needs fsspec",
                          hint="pip install darkpool-analysis[dask] (plus s3fs, gcsfs or "
                               "adlfs for cloud storage)") from None
    fs, inner = fsspec.core.url_to_fs(path)
    return fs, inner


def _join(root: str, *parts: str) -> str:
    if is_url(root):
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root, *parts))


def _exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, inner = _fs(path)
    return bool(fs.exists(inner))


def _isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs, inner = _fs(path)
    return bool(fs.isdir(inner))


def _file_names(folder: str) -> list[str]:
    """Names of the files (not folders) directly in ``folder``, sorted."""
    if not is_url(folder):
        return sorted(e.name for e in os.scandir(folder) if e.is_file())
    fs, inner = _fs(folder)
    return sorted(Path(entry["name"]).name for entry in fs.ls(inner, detail=True)
                  if entry.get("type") == "file")


def file_size(path: str) -> int:
    """Size in bytes of a local file or a URL."""
    if not is_url(path):
        return os.path.getsize(path)
    fs, inner = _fs(path)
    return int(fs.size(inner))


def fetch(path: str, scratch: Path) -> tuple[Path, str]:
    """A local copy of ``path`` (itself when local) in ``scratch`` and its sha256 (hashed
    while copying). Give each file its own ``scratch``: day files share names."""
    if not is_url(path):
        return Path(path), file_sha256(Path(path))
    fs, inner = _fs(path)
    scratch.mkdir(parents=True, exist_ok=True)
    target = scratch / Path(inner).name
    digest = hashlib.sha256()
    with fs.open(inner, "rb") as source, open(target, "wb") as sink:
        for block in iter(lambda: source.read(_COPY_BLOCK), b""):
            digest.update(block)
            sink.write(block)
    return target, digest.hexdigest()


# -- locating a session's files ---------------------------------------------------------------
def polygon_day_files(root: str, day: dt.date) -> DayFiles | None:
    """The Polygon flat files of ``day`` under ``root`` (None without a trades file)."""
    bases = [root] if root.rstrip("/").endswith(POLYGON_ROOT) else [_join(root, POLYGON_ROOT),
                                                                     root]
    name = f"{day.isoformat()}.csv.gz"
    folder = (f"{day.year:04d}", f"{day.month:02d}")
    for base in bases:
        trades = _join(base, POLYGON_TRADES, *folder, name)
        if _exists(trades):
            quotes = _join(base, POLYGON_QUOTES, *folder, name)
            return DayFiles(day, trades, quotes if _exists(quotes) else None)
    return None


def _is_trade_file(name: str) -> bool:
    lower = name.lower()
    return "trade" in lower or lower.startswith("ctm")


def _is_quote_file(name: str) -> bool:
    lower = name.lower()
    return "quote" in lower or lower.startswith("cqm")


def _pick(folder: str, names: Sequence[str], day: dt.date) -> DayFiles | None:
    trades = [n for n in names if _is_trade_file(n)]
    quotes = [n for n in names if _is_quote_file(n) and not _is_trade_file(n)]
    if not trades:
        return None
    if len(trades) > 1 or len(quotes) > 1:
        raise DataFormatError(f"more than one TAQ trades or quotes file for {day}: "
                              f"{', '.join([*trades, *quotes])}", source=folder,
                              hint="keep one trades and one quotes file per session")
    return DayFiles(day, _join(folder, trades[0]),
                    _join(folder, quotes[0]) if quotes else None)


def taq_day_files(root: str, day: dt.date) -> DayFiles | None:
    """The TAQ files of ``day`` under ``root`` in one of the layouts in the module docs."""
    if not _isdir(root):
        raise DataFormatError("no such folder", source=root)
    tokens = (day.strftime("%Y%m%d"), day.isoformat())
    for token in tokens:
        folder = _join(root, token)
        if _isdir(folder):
            return _pick(folder, _file_names(folder), day)
    names = _file_names(root)
    dated = [n for n in names if any(t in n for t in tokens)]
    if dated:
        return _pick(root, dated, day)
    undated = [n for n in names if not _DATED.search(n)]
    return _pick(root, undated, day)


def locate_day(source: DayFileSource, root: str, day: dt.date) -> DayFiles | None:
    """The input files of ``day`` for ``source`` (None when the session has none)."""
    if source == "polygon-flat":
        return polygon_day_files(root, day)
    if source == "taq":
        return taq_day_files(root, day)
    raise ConfigError(f"unknown day-file source {source!r}; valid: "
                      f"{', '.join(DAY_FILE_SOURCES)}")


# -- readers over one session's explicit files -----------------------------------------------
def _csv_text(path: Path) -> str:
    """Every column as text: the view casts explicitly, so a bucket reads like its day file."""
    quoted = str(path).replace("'", "''")
    return f"read_csv('{quoted}', header = true, all_varchar = true)"


def _require_columns(con: duckdb.DuckDBPyConnection, scan: str, source: str,
                     required: Sequence[str], what: str) -> None:
    try:
        found = [str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
    except duckdb.Error as exc:
        raise DataFormatError(f"cannot read the file: {exc}", source=source) from exc
    missing = [c for c in required if c not in found]
    if missing:
        raise DataFormatError(f"not a {what} file: missing column(s) {', '.join(missing)}; "
                              f"found {', '.join(found) or 'none'}", source=source, line=1,
                              field=missing[0])


#: Column types of a Polygon flat-file trades file as read here (the rest are not read).
FLAT_TRADE_TYPES = {"ticker": "VARCHAR", "conditions": "VARCHAR", "correction": "VARCHAR",
                    "exchange": "VARCHAR", "price": "DOUBLE", "sequence_number": "BIGINT",
                    "sip_timestamp": "BIGINT", "size": "DOUBLE", "trf_id": "VARCHAR"}
FLAT_QUOTE_TYPES = {"ticker": "VARCHAR", "ask_price": "DOUBLE", "bid_price": "DOUBLE",
                    "sequence_number": "BIGINT", "sip_timestamp": "BIGINT"}


def _typed_scan(con: duckdb.DuckDBPyConnection, path: Path, types: dict[str, str],
                location: str, what: str) -> str:
    """``SELECT`` of just the ``types`` columns of a CSV, parsed as those types."""
    _require_columns(con, _csv_text(path), location, tuple(types), what)
    quoted = str(path).replace("'", "''")
    spec = ", ".join(f"'{k}': '{v}'" for k, v in types.items())
    names = ", ".join(f'"{k}"' for k in types)
    return f"(SELECT {names} FROM read_csv('{quoted}', header = true, types = {{{spec}}}))"


@dataclass
class PolygonDayReader:
    """``raw_trades``/``raw_quotes`` over one session's Polygon flat files (every ticker).

    Same columns and meaning as :func:`~darkpool_analysis.sources.trades.define_polygon_trades`
    and ``define_polygon_quotes``, but the per-row regular expressions (symbol spelling,
    condition lists) run once per *distinct* ticker and condition list: a whole-market day
    has millions of rows and only thousands of tickers and dozens of condition lists. The
    files are read once, into temporary tables, only the needed columns, parsed as numbers
    while reading (a bad number is a read error naming the line). ``location`` and
    ``sha256`` describe the original day file (a bucket of it reads the same way).
    """

    trades: Path
    quotes: Path | None
    location: str
    sha256: str
    name: TradeSourceName = "flatfile"

    def open_day(self, con: duckdb.DuckDBPyConnection, day: dt.date,
                 symbols: Sequence[str], settings: Settings) -> DaySource:
        scan = _typed_scan(con, self.trades, FLAT_TRADE_TYPES, self.location,
                           "Polygon flat-file trades")
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE _flat_trades AS SELECT * FROM {scan}")
        except duckdb.Error as exc:
            raise DataFormatError(f"cannot read the trades: {exc}", source=self.location,
                                  hint="each row needs numeric price, size, sip_timestamp "
                                       "and sequence_number") from exc
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _flat_symbols AS
            SELECT ticker, {normalised_symbol_sql('ticker')} AS symbol
            FROM (SELECT DISTINCT ticker FROM _flat_trades)""")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _flat_conditions AS
            SELECT conditions, {_polygon_conditions_ok('conditions')} AS cond_ok
            FROM (SELECT DISTINCT conditions FROM _flat_trades)""")
        con.execute(f"""
            CREATE OR REPLACE TEMP VIEW raw_trades AS
            SELECT s.symbol, DATE '{day.isoformat()}' AS date, t.sip_timestamp AS ts,
                   t.price, t.size, t.exchange,
                   (TRY_CAST(t.exchange AS BIGINT) = {POLYGON_TRF_EXCHANGE}
                    OR coalesce(t.trf_id, '') NOT IN ('', '0')) AS is_trf,
                   coalesce(t.correction, '') NOT IN ('', '0') AS is_correction,
                   c.cond_ok, t.sequence_number AS seq
            FROM _flat_trades t JOIN _flat_symbols s USING (ticker)
            JOIN _flat_conditions c ON c.conditions IS NOT DISTINCT FROM t.conditions""")
        if self.quotes is not None:
            qscan = _typed_scan(con, self.quotes, FLAT_QUOTE_TYPES, str(self.quotes),
                                "Polygon flat-file quotes")
            try:
                # Quotes of tickers without trades are never used: dropped while reading.
                con.execute(f"""
                    CREATE OR REPLACE TEMP TABLE _flat_quotes AS
                    SELECT s.symbol, q.sip_timestamp AS ts, q.bid_price AS bid,
                           q.ask_price AS ask, q.sequence_number AS seq
                    FROM {qscan} q JOIN _flat_symbols s USING (ticker)""")
            except duckdb.Error as exc:
                raise DataFormatError(f"cannot read the quotes: {exc}",
                                      source=str(self.quotes)) from exc
            con.execute(f"""
                CREATE OR REPLACE TEMP VIEW raw_quotes AS
                SELECT symbol, DATE '{day.isoformat()}' AS date, ts, bid, ask,
                       NULL::VARCHAR AS exchange, TRUE AS cond_ok, seq FROM _flat_quotes""")
        return DaySource(location=self.location, sha256=self.sha256,
                         has_quotes=self.quotes is not None)


def day_reader(source: DayFileSource, trades: Path, quotes: Path | None, *, location: str,
               sha256: str) -> TradeReader:
    """The reader for one session's (or one bucket's) local files."""
    if source == "polygon-flat":
        return PolygonDayReader(trades, quotes, location, sha256)
    if quotes is not None and (quotes.parent != trades.parent or any(
            _is_quote_file(p.name) and p != quotes for p in trades.parent.iterdir())):
        raise ValueError("a TAQ day's trades and quotes file must be alone in one folder "
                         "(see taq_folder)")
    return TaqReader(trades)


def taq_folder(scratch: Path, trades: Path, quotes: Path | None) -> tuple[Path, Path | None]:
    """Links to a TAQ day's files, alone in a fresh folder: :class:`TaqReader` pairs a trades
    file with the quotes file beside it, which in a folder of many days could be another's."""
    home = scratch / "taq_day"
    home.mkdir()

    def link(path: Path, stem: str) -> Path:
        suffix = "".join(path.suffixes[-2:]) if path.suffix.lower() in (".gz", ".zst") \
            else path.suffix
        target = home / f"{stem}{suffix}"
        target.symlink_to(path.resolve())
        return target

    return link(trades, "trades"), (link(quotes, "quotes") if quotes is not None else None)


# -- bounded memory: symbol buckets ------------------------------------------------------------
def bucket_count(total_bytes: int, chunk_bytes: int) -> int:
    """How many symbol buckets a day of ``total_bytes`` input needs (1 = read it whole)."""
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be > 0, got {chunk_bytes}")
    return max(1, math.ceil(total_bytes / chunk_bytes))


def split_by_symbol(con: duckdb.DuckDBPyConnection, source: DayFileSource, trades: Path,
                    quotes: Path | None, buckets: int, scratch: Path
                    ) -> list[tuple[Path, Path | None]]:
    """Cut a day's files into ``buckets`` by a hash of the symbol, streaming.

    One pass per file: DuckDB reads the CSV in blocks and appends every row, as text, to its
    bucket's zstd CSV (``COPY ... PARTITION_BY``), so memory stays at DuckDB's block buffers
    however large the day is. Every symbol lands whole in one bucket, trades and quotes in the
    same one; rows keep their file order (one thread). Returns ``(trades, quotes)`` per
    non-empty bucket, each bucket in its own folder (``trades.csv.zst``, ``quotes.csv.zst``).
    """
    column = SYMBOL_COLUMN[source]
    con.execute("SET threads = 1")  # one output file per bucket, in input order
    parts: dict[int, dict[str, Path]] = {}
    for kind, path in (("trades", trades), ("quotes", quotes)):
        if path is None:
            continue
        out = scratch / f"split_{kind}"
        scan = _csv_text(path)
        _require_columns(con, scan, str(path), (column,), f"{source} {kind}")
        target = str(out).replace("'", "''")
        try:
            con.execute(f"""COPY (SELECT *, hash("{column}") % {buckets} AS _bucket FROM {scan})
                            TO '{target}' (FORMAT csv, HEADER, PARTITION_BY (_bucket),
                            FILENAME_PATTERN '{kind}_{{i}}', COMPRESSION zstd)""")
        except duckdb.Error as exc:
            raise DataFormatError(f"cannot read the file: {exc}", source=str(path)) from exc
        for folder in sorted(out.glob("_bucket=*")):
            files = sorted(folder.iterdir())
            if len(files) != 1:
                raise RuntimeError(f"expected one {kind} file in {folder}, found {len(files)}")
            bucket = int(folder.name.split("=", 1)[1])
            home = scratch / f"bucket_{bucket:04d}"
            home.mkdir(exist_ok=True)
            moved = home / f"{kind}.csv.zst"
            shutil.move(str(files[0]), moved)
            parts.setdefault(bucket, {})[kind] = moved
    return [(files["trades"], files.get("quotes")) for _, files in sorted(parts.items())
            if "trades" in files]


# -- synthetic day files (tests, benchmarks, demos) -------------------------------------------
def synthetic_tickers(count: int) -> list[str]:
    """``count`` distinct letter-only tickers (``A``..``Z``, ``AA``.., deterministic)."""
    names: list[str] = []
    width = 1
    while len(names) < count:
        for index in range(26 ** width):
            text = ""
            for _ in range(width):
                index, digit = divmod(index, 26)
                text = chr(65 + digit) + text
            names.append(text)
            if len(names) == count:
                break
        width += 1
    return names


def write_synthetic_polygon_day(root: Path, day: dt.date, *, trades: int, quotes: int,
                                symbols: int, seed: int = 0) -> DayFiles:
    """Write one session of made-up trades and NBBO quotes in the Polygon flat-file layout.

    Vectorised numpy: per ticker a random-walk midpoint, quotes a cent or more around it,
    trades at the bid, the ask, the midpoint or in between, sorted by ticker then
    ``sip_timestamp`` as the vendor's files are; about 5 % of the trades are off-exchange,
    2 % carry an excluded condition, 1 % fall outside regular hours. Numbers are synthetic;
    only the layout is real. Returns the written files.
    """
    import gzip
    from zoneinfo import ZoneInfo

    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng([seed, day.toordinal()])
    names = np.array(synthetic_tickers(symbols))
    zone = ZoneInfo("America/New_York")
    open_ns = int(dt.datetime(day.year, day.month, day.day, 9, 25, tzinfo=zone).timestamp()
                  * 1e9)
    span_ns = int((6 * 3600 + 45 * 60) * 1e9)  # 09:25-16:10: a few rows outside RTH
    weights = 1.0 / np.arange(1, symbols + 1) ** 0.8
    weights /= weights.sum()
    base = np.round(rng.uniform(5, 300, symbols), 2)

    def rows(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sym = np.sort(rng.choice(symbols, size=count, p=weights))
        ts = open_ns + rng.integers(0, span_ns, size=count)
        order = np.lexsort((ts, sym))
        sym, ts = sym[order], ts[order]
        steps = rng.normal(0, 0.0004, size=count)
        walk = np.cumsum(steps)
        first = np.searchsorted(sym, sym, side="left")
        mid = base[sym] * np.exp(walk - walk[first] + steps[first])
        return sym, ts, mid

    qsym, qts, qmid = rows(quotes)
    half = np.maximum(0.005, np.round(qmid * rng.uniform(0.0001, 0.001, quotes), 2))
    bid = np.round(qmid - half, 2)
    ask = np.maximum(np.round(qmid + half, 2), bid + 0.01)
    tsym, tts, tmid = rows(trades)
    # Trades against the quote in force (same ticker, quote time <= trade time) when there
    # is one: at the bid, at the ask, at the midpoint or a quarter of the spread inside.
    qkey = qsym.astype(np.int64) << 46 | (qts - open_ns)
    tkey = tsym.astype(np.int64) << 46 | (tts - open_ns)
    quote = np.searchsorted(qkey, tkey, side="right") - 1
    quoted = (quote >= 0) & (qsym[np.maximum(quote, 0)] == tsym)
    low = np.where(quoted, bid[np.maximum(quote, 0)], np.round(tmid - 0.01, 2))
    high = np.where(quoted, ask[np.maximum(quote, 0)], np.round(tmid + 0.01, 2))
    where = rng.choice(5, size=trades, p=[0.35, 0.35, 0.1, 0.1, 0.1])
    fraction = np.choose(where, [0.0, 1.0, 0.5, 0.25, 0.75])
    price = np.maximum(0.01, np.round(low + fraction * (high - low), 4))
    exchange = rng.choice([1, 2, 3, 4, 8, 10, 11, 12, 15, 19], size=trades,
                          p=[0.1, 0.1, 0.1, 0.05, 0.1, 0.15, 0.1, 0.1, 0.1, 0.1])
    trf = np.where(exchange == 4, "201", "")
    cond_pick = rng.random(trades)
    conditions = np.where(cond_pick < 0.02, "12", np.where(cond_pick < 0.3, "37", ""))
    conditions = np.where((cond_pick > 0.3) & (cond_pick < 0.35), "14,41", conditions)
    correction = np.where(rng.random(trades) < 0.001, "1", "")
    size = rng.choice([1, 5, 10, 50, 100, 100, 100, 200, 300, 500, 1000], size=trades)
    trade_table = pa.table({
        "ticker": names[tsym], "conditions": conditions, "correction": correction,
        "exchange": exchange, "id": np.arange(trades), "participant_timestamp": tts - 1000,
        "price": price, "sequence_number": np.arange(1, trades + 1), "sip_timestamp": tts,
        "size": size, "tape": np.ones(trades, np.int64), "trf_id": trf,
        "trf_timestamp": np.where(exchange == 4, tts, 0)})
    quote_table = pa.table({
        "ticker": names[qsym], "ask_exchange": np.full(quotes, 12), "ask_price": ask,
        "ask_size": rng.integers(1, 20, quotes), "bid_exchange": np.full(quotes, 11),
        "bid_price": bid,
        "bid_size": rng.integers(1, 20, quotes), "conditions": np.full(quotes, ""),
        "indicators": np.full(quotes, ""),
        "participant_timestamp": qts - 1000, "sequence_number": np.arange(1, quotes + 1),
        "sip_timestamp": qts, "tape": np.ones(quotes, np.int64)})
    folder = (f"{day.year:04d}", f"{day.month:02d}")
    written: dict[str, Path] = {}
    for kind, table in ((POLYGON_TRADES, trade_table), (POLYGON_QUOTES, quote_table)):
        target = Path(root, POLYGON_ROOT, kind, *folder, f"{day.isoformat()}.csv.gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(gzip.compress(sink.getvalue().to_pybytes(), compresslevel=1))
        os.replace(tmp, target)
        written[kind] = target
    return DayFiles(day, str(written[POLYGON_TRADES]), str(written[POLYGON_QUOTES]))
