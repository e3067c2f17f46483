"""FINRA Reg SHO daily short-sale volume files: names, URLs, strict parsing and download.

A file ``<FAMILY>shvol<YYYYMMDD>.txt`` is pipe-delimited with the header
``Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume|Market`` (before 2011-02-28 without
``ShortExemptVolume``) and ends with a trailer line holding the number of data rows.
``ShortVolume`` already includes the exempt volume; ``TotalVolume`` is the volume reported to
that FINRA facility only (off-exchange), not consolidated volume. Short volume is a proxy for
dealer-filled buying, not observed buying, and not short interest.

:func:`parse_short_table` is the fast path (bytes -> Arrow, validated with vectorised
compute kernels); every problem raises :class:`DataFormatError` naming the file, line, field
and what was expected.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import logging
import re
import threading
import zlib
from dataclasses import dataclass
from typing import Final, Literal, get_args

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from darkpool_analysis.errors import DataFormatError, FetchError
from darkpool_analysis.sources import limits
from darkpool_analysis.sources.http import HttpPolicy, get, redact
from darkpool_analysis.symbols import normalise_array

log = logging.getLogger(__name__)

Facility = Literal["CNMS", "FNSQ", "FNQC", "FNYX", "FNRA", "FORF"]
FACILITIES: Final[tuple[Facility, ...]] = get_args(Facility)
#: The TRF/ADF facility files whose per-symbol sum equals CNMS (FORF is OTC, not part of it).
CNMS_COMPONENTS: Final[tuple[Facility, ...]] = ("FNSQ", "FNQC", "FNYX", "FNRA")
#: First trade date of each family that did not exist from the start (2009).
FIRST_DATE: Final[dict[str, dt.date]] = {"CNMS": dt.date(2018, 8, 1),
                                         "FNQC": dt.date(2018, 9, 10)}

HEADER: Final = "Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume|Market"
#: Layout before 2011-02-28: no ShortExemptVolume column (stored as NULL).
HEADER_PRE_2011: Final = "Date|Symbol|ShortVolume|TotalVolume|Market"
_HEADERS: Final = {HEADER.encode(): HEADER.split("|"),
                   HEADER_PRE_2011.encode(): HEADER_PRE_2011.split("|")}
_VOLUME_FIELDS: Final = ("ShortVolume", "ShortExemptVolume", "TotalVolume")
_OUTPUT_NAMES: Final = {"ShortVolume": "short_volume", "ShortExemptVolume": "short_exempt_volume",
                        "TotalVolume": "total_volume", "Market": "market"}

#: Longest data line accepted (real rows are under 100 characters).
MAX_LINE_LENGTH: Final = 1024

FILE_NAME_RE: Final = re.compile(
    r"^(?P<facility>CNMS|FNSQ|FNQC|FNYX|FNRA|FORF)shvol(?P<date>\d{8})\.txt(?P<gz>\.gz)?$"
)

#: The data contract of a parsed file (one row per symbol), in this column order.
SCHEMA: Final = pa.schema([
    ("trade_date", pa.date32()),
    ("symbol", pa.string()),
    ("symbol_norm", pa.string()),
    ("short_volume", pa.float64()),
    ("short_exempt_volume", pa.float64()),
    ("total_volume", pa.float64()),
    ("market", pa.string()),
])


def file_name(facility: Facility, trade_date: dt.date) -> str:
    """``CNMSshvol20201201.txt`` for (``CNMS``, 2020-12-01).

    Examples
    --------
    >>> file_name("FNSQ", dt.date(2020, 1, 2))
    'FNSQshvol20200102.txt'
    """
    return f"{facility}shvol{trade_date:%Y%m%d}.txt"


def file_url(base_url: str, facility: Facility, trade_date: dt.date) -> str:
    """The CDN address of one file (``Settings.finra_cdn_url`` + file name)."""
    return f"{base_url.rstrip('/')}/{file_name(facility, trade_date)}"


def parse_file_name(name: str) -> tuple[Facility, dt.date] | None:
    """(facility, trade date) from a Reg SHO file name (``.txt`` or ``.txt.gz``), else None."""
    match = FILE_NAME_RE.match(name)
    if match is None:
        return None
    try:
        day = dt.datetime.strptime(match["date"], "%Y%m%d").date()
    except ValueError:
        return None
    return match["facility"], day  # type: ignore[return-value]


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of a file's (decompressed) bytes: the unit of change detection."""
    return hashlib.sha256(data).hexdigest()


def decompress_if_gzip(data: bytes, source_name: str) -> bytes:
    """Gunzip ``data`` when it is gzip (magic bytes); clear error when the archive is bad."""
    if not data.startswith(b"\x1f\x8b"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"corrupt gzip data: {exc}", source=source_name,
                              hint="download the file again") from exc


# -- parsing -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    """Where the parts of a file are: header, data block, trailer."""

    columns: list[str]
    data: bytes          # the data rows, each ending with a newline
    trailer: int
    trailer_line: int    # 1-based line number of the trailer


def _fail(message: str, source: str, line: int | None = None, field: str | None = None,
          hint: str | None = None) -> DataFormatError:
    return DataFormatError(message, source=source, line=line, field=field, hint=hint)


def _check_text(data: bytes, source: str) -> None:
    if not data.strip():
        raise _fail("empty file: expected the header line, data rows and a trailer row count",
                    source, hint="the download was interrupted or the file is not published")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise _fail(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}",
                        source, line, hint="the file is corrupt or not a Reg SHO file") from exc
    head = data.lstrip()[:512].lower()
    if head.startswith((b"<", b"\xef\xbb\xbf<")) or b"<html" in head:
        raise _fail("this is an HTML/XML page (e.g. an error page saved as .txt), expected "
                    f"the header {HEADER!r}", source, 1, "header",
                    hint="FINRA answers missing dates with an XML AccessDenied page")


def _split_layout(data: bytes, source: str) -> _Layout:
    """Validate the header and trailer lines and cut out the data block (no row parsing)."""
    header_end = data.find(b"\n")
    header = (data if header_end < 0 else data[:header_end]).rstrip(b"\r")
    header = header.removeprefix(b"\xef\xbb\xbf")
    if header not in _HEADERS:
        shown = header[:120].decode("utf-8", "replace")
        raise _fail(f"unexpected header {shown!r}; expected {HEADER!r} (or {HEADER_PRE_2011!r} "
                    "before 2011-02-28)", source, 1, "header")
    body = data.rstrip(b"\r\n\t ")
    if header_end < 0 or len(body) <= header_end:
        raise _fail("no trailer: expected a last line with the number of data rows after the "
                    "header", source, 2, "trailer", hint="the file is truncated")
    last_start = body.rfind(b"\n") + 1
    trailer_text = body[last_start:].strip()
    trailer_line = body.count(b"\n") + 1
    if not trailer_text.isdigit():
        shown = trailer_text[:80].decode("utf-8", "replace")
        raise _fail(f"no trailer: the last line must be the bare data row count, got {shown!r}",
                    source, trailer_line, "trailer", hint="the file is truncated")
    block = data[header_end + 1:last_start]
    if block.startswith((b"\n", b"\r\n")):
        raise _fail("blank line after the header; expected a data row", source, 2)
    blank = min((at for at in (block.find(b"\n\n"), block.find(b"\n\r\n")) if at >= 0),
                default=-1)
    if blank >= 0:
        line = block.count(b"\n", 0, blank) + 3
        raise _fail("blank line inside the data rows; expected one row per line", source, line)
    return _Layout(_HEADERS[header], block, int(trailer_text), trailer_line)


def _read_block(layout: _Layout, source: str) -> pa.Table:
    """Parse the data rows with explicit column types (strings for Date/Symbol/Market)."""
    types = {name: (pa.float64() if name in _VOLUME_FIELDS else pa.string())
             for name in layout.columns}
    if not layout.data:
        return pa.table({name: pa.array([], type) for name, type in types.items()})
    try:
        return pacsv.read_csv(
            pa.py_buffer(layout.data),
            read_options=pacsv.ReadOptions(column_names=layout.columns, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter="|", quote_char=False,
                                              double_quote=False, escape_char=False,
                                              newlines_in_values=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=False, null_values=[""],
                quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise _locate_parse_error(layout, source) from exc


def _locate_parse_error(layout: _Layout, source: str) -> DataFormatError:
    """Slow path, errors only: find the first line with a wrong field count or a bad number."""
    text = layout.data.decode("utf-8")
    lines = pd.Series(text.split("\n")[:-1], dtype="string").str.removesuffix("\r")
    fields = len(layout.columns)
    long_lines = np.flatnonzero(lines.str.len().to_numpy() > MAX_LINE_LENGTH)
    if long_lines.size:
        i = int(long_lines[0])
        return _fail(f"line of {len(str(lines.iloc[i])):,} characters "
                     f"({str(lines.iloc[i])[:40]!r}...); expected at most {MAX_LINE_LENGTH:,} "
                     "(a Reg SHO row is under 100)", source, i + 2)
    counts = lines.str.count(r"\|").to_numpy() + 1
    bad = np.flatnonzero(counts != fields)
    if bad.size:
        i = int(bad[0])
        return _fail(f"expected {fields} '|'-separated fields ({'|'.join(layout.columns)}), "
                     f"got {counts[i]}: {str(lines.iloc[i])[:120]!r}", source, i + 2)
    parts = lines.str.split("|", expand=True, regex=False)
    parts.columns = layout.columns
    for name in _VOLUME_FIELDS:
        if name not in parts:
            continue
        raw = parts[name]
        numbers = pd.to_numeric(raw, errors="coerce")
        invalid = np.flatnonzero(numbers.isna().to_numpy() & raw.notna().to_numpy()
                                 & (raw.str.len() > 0).to_numpy())
        if invalid.size:
            i = int(invalid[0])
            return _fail(f"expected a number, got {raw.iloc[i]!r}", source, i + 2, name)
    return _fail("could not parse the data rows", source)


def _first(mask: pa.Array | pa.ChunkedArray) -> int | None:
    """Index of the first true value of a boolean array (None if none)."""
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def _validate_rows(table: pa.Table, layout: _Layout, source: str,
                   expected_date: dt.date | None) -> dt.date:
    """Vectorised row checks; return the file's trade date."""
    rows = table.num_rows
    if rows != layout.trailer:
        raise _fail(f"trailer says {layout.trailer} data rows but the file has {rows}: the file "
                    "is truncated or corrupt", source, layout.trailer_line, "trailer",
                    hint="download the file again")
    for name in ("Date", "Symbol", *_VOLUME_FIELDS):
        if name not in table.column_names:
            continue
        at = _first(pc.is_null(table[name]))
        if at is not None:
            raise _fail("empty value; expected a value", source, at + 2, name)
    for name in _VOLUME_FIELDS:
        if name not in table.column_names:
            continue
        column = table[name]
        at = _first(pc.invert(pc.is_finite(column)))
        if at is not None:
            raise _fail(f"expected a finite number, got {column[at].as_py()!r}", source, at + 2,
                        name)
        at = _first(pc.less(column, 0))
        if at is not None:
            raise _fail(f"negative volume {column[at].as_py()!r}; expected >= 0", source,
                        at + 2, name)
        at = _first(pc.greater(column, limits.MAX_DAILY_SHARES))
        if at is not None:
            raise _fail(f"implausible volume {column[at].as_py()!r}; expected at most "
                        f"{limits.MAX_DAILY_SHARES:g} shares a day", source, at + 2, name)
    at = _first(pc.greater(table["ShortVolume"], table["TotalVolume"]))
    if at is not None:
        raise _fail(f"ShortVolume {table['ShortVolume'][at].as_py()!r} exceeds TotalVolume "
                    f"{table['TotalVolume'][at].as_py()!r}; expected ShortVolume <= TotalVolume",
                    source, at + 2, "ShortVolume")
    if "ShortExemptVolume" in table.column_names:
        over = pc.greater(table["ShortExemptVolume"], table["ShortVolume"])
        at = _first(over)
        if at is not None:
            count = pc.sum(over).as_py()
            more = f" ({count - 1} more row(s) like it)" if count > 1 else ""
            raise _fail(f"ShortExemptVolume {table['ShortExemptVolume'][at].as_py()!r} exceeds "
                        f"ShortVolume {table['ShortVolume'][at].as_py()!r}; expected "
                        f"ShortExemptVolume <= ShortVolume (exempt volume is part of short "
                        f"volume){more}", source, at + 2, "ShortExemptVolume")
    symbols = table["Symbol"]
    at = _first(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(symbols)), 0))
    if at is not None:
        raise _fail("blank symbol; expected a ticker", source, at + 2, "Symbol")
    at = limits.bad_symbol(symbols)
    if at is not None:
        raise _fail(limits.describe_symbol_problem(symbols[at].as_py()), source, at + 2,
                    "Symbol")
    at = limits.bad_market(table["Market"])
    if at is not None:
        raise _fail(f"Market {limits.shown(table['Market'][at].as_py())} is not a list of "
                    f"venue letters; expected letters and commas such as 'B,Q,N', at most "
                    f"{limits.MAX_MARKET_LENGTH} characters", source, at + 2, "Market")
    if pc.count_distinct(symbols).as_py() != rows:
        duplicated = pd.Series(symbols.to_numpy(zero_copy_only=False)).duplicated().to_numpy()
        at = int(np.flatnonzero(duplicated)[0])
        raise _fail(f"duplicate symbol {symbols[at].as_py()!r}; expected one row per symbol",
                    source, at + 2, "Symbol")
    return _check_dates(table["Date"], source, expected_date)


def _check_dates(dates: pa.ChunkedArray, source: str, expected: dt.date | None) -> dt.date:
    if expected is not None:
        wanted = f"{expected:%Y%m%d}"
    elif len(dates):
        wanted = str(dates[0].as_py())
    else:
        raise _fail("no rows and no date in the file name; cannot tell the trade date", source)
    at = _first(pc.not_equal(dates, wanted))
    if at is not None:
        where = "the file name date" if expected is not None else "the first row"
        raise _fail(f"Date {dates[at].as_py()!r} disagrees with {where}; expected {wanted!r}",
                    source, at + 2, "Date")
    try:
        return dt.datetime.strptime(wanted, "%Y%m%d").date()
    except ValueError as exc:
        raise _fail(f"expected a YYYYMMDD date, got {wanted!r}", source, 2, "Date") from exc


class _NormalisedSymbolCache:
    """Memo of :func:`symbols.normalise_array` for suffixed tickers (``BRK/B``, ``ABRpD``).

    The same ~1,000 suffixed tickers recur in every daily file; looking them up with an Arrow
    hash join (``index_in``) instead of re-normalising keeps parsing vectorised. Thread-safe:
    files are parsed in worker threads.
    """

    def __init__(self, max_size: int = 200_000) -> None:
        self._max_size = max_size
        self._keys = pa.array([], pa.string())
        self._values = pa.array([], pa.string())
        self._lock = threading.Lock()

    def normalise(self, symbols: pa.Array) -> pa.Array:
        with self._lock:
            keys, values = self._keys, self._values
        index = pc.index_in(symbols, value_set=keys)
        unknown = pc.is_null(index)
        if pc.any(unknown).as_py():
            missing = pc.unique(pc.filter(symbols, unknown))
            computed = pa.array(normalise_array(missing.to_numpy(zero_copy_only=False)),
                                pa.string())
            with self._lock:
                if len(self._keys) + len(missing) > self._max_size:
                    self._keys, self._values = missing, computed
                else:
                    self._keys = pa.concat_arrays([self._keys, missing])
                    self._values = pa.concat_arrays([self._values, computed])
                keys, values = self._keys, self._values
            index = pc.index_in(symbols, value_set=keys)
        return pc.take(values, index)


_SYMBOL_CACHE: Final = _NormalisedSymbolCache()


def _normalised_symbols(symbols: pa.ChunkedArray) -> pa.Array:
    """``symbols.normalise_array`` applied (through a memo) to tickers with suffixes only."""
    column = symbols.combine_chunks()
    plain = pc.match_substring_regex(column, r"^[A-Z0-9]+$")
    if pc.all(plain).as_py():
        return column
    odd = pc.invert(plain)
    normalised = _SYMBOL_CACHE.normalise(pc.filter(column, odd))
    return pc.replace_with_mask(column, odd, normalised)


def _check_one_row_per_security(symbols: pa.ChunkedArray, normalised: pa.Array,
                                 source: str) -> None:
    """Reject two spellings of one security in a file (``BRK/B`` and ``BRK.B``): the build
    keys rows by the normalised symbol, so they would be one security counted twice."""
    if pc.count_distinct(normalised).as_py() == len(normalised):
        return
    names = pd.Series(normalised.to_numpy(zero_copy_only=False))
    at = int(np.flatnonzero(names.duplicated().to_numpy())[0])
    first = int(np.flatnonzero((names == names[at]).to_numpy())[0])
    raise _fail(f"symbol {symbols[at].as_py()!r} and {symbols[first].as_py()!r} on line "
                f"{first + 2} are both {names[at]!r}; expected one row per security",
                source, at + 2, "Symbol")


def parse_short_table(data: bytes, source_name: str) -> pa.Table:
    """Parse and validate one Reg SHO file into an Arrow table with :data:`SCHEMA`.

    ``source_name`` is the file name (or URL) used in errors; when it is a Reg SHO file name
    its date must match every ``Date`` value. Accepts CRLF or LF, gzip bytes, fractional
    volumes; rejects anything that is not exactly the published layout.
    """
    data = decompress_if_gzip(data, source_name)
    _check_text(data, source_name)
    base = source_name.replace("\\", "/").rsplit("/", 1)[-1]
    named = parse_file_name(base)
    layout = _split_layout(data, source_name)
    table = _read_block(layout, source_name)
    trade_date = _validate_rows(table, layout, source_name, named[1] if named else None)
    rows = table.num_rows
    exempt = (table["ShortExemptVolume"] if "ShortExemptVolume" in table.column_names
              else pa.nulls(rows, pa.float64()))
    symbols = table["Symbol"]
    normalised = _normalised_symbols(symbols) if rows else pa.array([], pa.string())
    _check_one_row_per_security(symbols, normalised, source_name)
    return pa.table({
        "trade_date": pa.repeat(pa.scalar(trade_date, pa.date32()), rows),
        "symbol": symbols,
        "symbol_norm": normalised,
        "short_volume": table["ShortVolume"],
        "short_exempt_volume": exempt,
        "total_volume": table["TotalVolume"],
        "market": table["Market"],
    }, schema=SCHEMA)


def parse_short_file(data: bytes, source_name: str) -> pd.DataFrame:
    """Parse one Reg SHO file into a DataFrame (columns of :data:`SCHEMA`).

    Examples
    --------
    >>> raw = (b"Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume|Market\\r\\n"
    ...        b"20210802|BRK/B|10|0|25.5|B,Q,N\\r\\n1\\r\\n")
    >>> parse_short_file(raw, "CNMSshvol20210802.txt")[["symbol", "symbol_norm"]].iloc[0].tolist()
    ['BRK/B', 'BRK.B']
    """
    return parse_short_table(data, source_name).to_pandas()


# -- download ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Download:
    """One CDN answer: the bytes, or ``None`` when FINRA has no file for that date."""

    url: str
    content: bytes | None
    status: int

    @property
    def published(self) -> bool:
        return self.content is not None


def _is_not_published(response: httpx.Response) -> bool:
    """FINRA's S3 answers missing dates with 403 + an ``AccessDenied`` XML body (or 404)."""
    if response.status_code == 404:
        return True
    return response.status_code == 403 and b"AccessDenied" in response.content


def fetch_short_file(client: httpx.Client, base_url: str, facility: Facility,
                     trade_date: dt.date, *, policy: HttpPolicy) -> Download:
    """Download one file with retries; ``content`` is None when it is not published.

    Raises :class:`FetchError` for every other failure (after retries for 5xx/429/timeouts).
    """
    url = file_url(base_url, facility, trade_date)
    response = get(client, url, policy=policy)
    if response.status_code == 200:
        return Download(url, response.content, 200)
    if _is_not_published(response):
        return Download(url, None, response.status_code)
    snippet = response.text[:200].strip()
    raise FetchError(f"HTTP {response.status_code} for {redact(url)}: {snippet!r}", url=url,
                     status=response.status_code)
