"""Dated index membership: which tickers belong to an index on which sessions.

File format (how public S&P 500 membership histories are usually laid out)::

    ticker,start_date,end_date
    AAPL,1982-11-30,
    BRK-B,2010-02-16,
    XYZ,2001-01-02,2008-03-20
    XYZ,2012-06-01,

* ``start_date`` is the first session the name is a member; ``end_date`` is the first date it
  is **no longer** a member (exclusive); empty means still a member. ISO dates (YYYY-MM-DD).
* A ticker may have several rows (it left and came back); its spans must not overlap.
* Tickers in any spelling (``BRK.B``, ``BRK-B``, ``BRK/B``); they are normalised, so two
  spellings of one name are one name (and their spans must not overlap either).
* Blank lines and lines starting with ``#`` are ignored; a UTF-8 byte-order mark is accepted.

A name counts only on sessions inside one of its spans, so an index computed over a known
history has no survivorship bias.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from darkpool_analysis.errors import DataFormatError
from darkpool_analysis.market.universes import Universe, normalise_ticker

#: The membership file's columns, in order.
COLUMNS: Final[tuple[str, ...]] = ("ticker", "start_date", "end_date")
#: Start of the open-ended spans of a static ticker list.
EARLIEST: Final = dt.date(1900, 1, 1)

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Membership:
    """Membership spans of one index.

    Attributes
    ----------
    name
        The index name (``SPX``); used in titles.
    spans
        One row per span: ``symbol`` (normalised), ``start_date`` (date, inclusive),
        ``end_date`` (date, exclusive; ``None`` = still a member), ``line`` (1-based line in
        the file, ``None`` for a ticker list) and ``ticker`` (as written).
    source
        The file (or ``universe NAME`` / ``tickers``) the spans came from.
    """

    name: str
    spans: pd.DataFrame
    source: str

    @property
    def symbols(self) -> list[str]:
        """Every member that has a span, sorted."""
        return sorted(self.spans["symbol"].unique())

    def members_on(self, day: dt.date | str) -> list[str]:
        """The members on ``day`` (a span with ``start_date <= day < end_date``), sorted."""
        when = pd.Timestamp(day)
        spans = self.frame()
        inside = (spans["start_date"] <= when) & (spans["end_date"].isna()
                                                  | (when < spans["end_date"]))
        return sorted(self.spans.loc[inside, "symbol"].unique())

    def frame(self) -> pd.DataFrame:
        """``symbol, start_date, end_date`` as datetime64 (NaT = open), for a query."""
        return pd.DataFrame({
            "symbol": self.spans["symbol"].astype(str).to_numpy(),
            "start_date": pd.to_datetime(self.spans["start_date"]).to_numpy(),
            "end_date": pd.to_datetime(self.spans["end_date"]).to_numpy(),
        })


def _parse_date(text: str, *, source: str, line: int, field: str) -> dt.date:
    value = text.strip()
    if not _ISO_DATE.fullmatch(value):
        raise DataFormatError(f"{value!r} is not a date", source=source, line=line, field=field,
                              hint="write dates as YYYY-MM-DD, e.g. 2021-01-04")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise DataFormatError(f"{value!r} is not a valid date ({exc})", source=source,
                              line=line, field=field,
                              hint="write dates as YYYY-MM-DD, e.g. 2021-01-04") from exc


def parse_membership(text: str, source: str, *, name: str | None = None) -> Membership:
    """Parse and validate a membership CSV (pure: text in, :class:`Membership` out).

    Raises
    ------
    DataFormatError
        A missing or unknown column, a bad date, an end before its start, an empty ticker,
        overlapping spans of one name, or no member at all; the message names ``source``,
        the line and the field.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header: list[str] | None = None
    header_line = 0
    rows: list[tuple[int, str, str, dt.date, dt.date | None]] = []
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [f.strip().lower() for f in fields]
            header_line = line
            unknown = [c for c in header if c not in COLUMNS]
            if unknown:
                raise DataFormatError(f"unknown column {unknown[0]!r}", source=source,
                                      line=line, field=unknown[0],
                                      hint=f"the columns are {','.join(COLUMNS)}")
            missing = [c for c in COLUMNS if c not in header]
            if missing or len(header) != len(set(header)):
                raise DataFormatError(
                    f"header must name {','.join(COLUMNS)} once each, got {','.join(fields)}",
                    source=source, line=line, field=(missing or [header[0]])[0],
                    hint=f"first line: {','.join(COLUMNS)}")
            continue
        if len(fields) != len(header):
            raise DataFormatError(f"expected {len(header)} fields, got {len(fields)}",
                                  source=source, line=line,
                                  hint=f"each line is {','.join(COLUMNS)} (end_date may be "
                                       "empty)")
        record = dict(zip(header, fields, strict=True))
        ticker = record["ticker"].strip()
        if not ticker:
            raise DataFormatError("empty ticker", source=source, line=line, field="ticker")
        symbol = normalise_ticker(ticker, source=source, line=line)
        if not record["start_date"].strip():
            raise DataFormatError("start_date is required", source=source, line=line,
                                  field="start_date")
        start = _parse_date(record["start_date"], source=source, line=line, field="start_date")
        end = (None if not record["end_date"].strip() else
               _parse_date(record["end_date"], source=source, line=line, field="end_date"))
        if end is not None and end <= start:
            raise DataFormatError(
                f"end_date {end} is not after start_date {start} (end_date is the first date "
                "the name is no longer a member)", source=source, line=line, field="end_date")
        rows.append((line, ticker, symbol, start, end))
    if header is None:
        raise DataFormatError("empty membership file", source=source, line=1,
                              hint=f"first line: {','.join(COLUMNS)}")
    if not rows:
        raise DataFormatError("no members: the file has a header but no rows", source=source,
                              line=header_line + 1)
    spans = pd.DataFrame(rows, columns=["line", "ticker", "symbol", "start_date", "end_date"])
    _check_overlaps(spans, source)
    spans = spans.sort_values(["symbol", "start_date"], kind="stable").reset_index(drop=True)
    return Membership(name or Path(source).stem, spans[["symbol", "start_date", "end_date",
                                                        "line", "ticker"]], source)


def _check_overlaps(spans: pd.DataFrame, source: str) -> None:
    """Two spans of one (normalised) name that share a session -> an error naming both lines."""
    ordered = spans.sort_values(["symbol", "start_date"], kind="stable")
    same = ordered["symbol"].to_numpy()[1:] == ordered["symbol"].to_numpy()[:-1]
    starts = pd.to_datetime(ordered["start_date"]).to_numpy()
    ends = pd.to_datetime(ordered["end_date"]).to_numpy()  # None -> NaT (open)
    previous_end = ends[:-1]
    overlap = same & (np.isnat(previous_end) | (starts[1:] < previous_end))
    if overlap.any():
        i = int(np.flatnonzero(overlap)[0])
        first, second = ordered.iloc[i], ordered.iloc[i + 1]
        until = first["end_date"] or "open end"
        raise DataFormatError(
            f"spans of {second['symbol']} overlap: line {first['line']} "
            f"({first['ticker']} {first['start_date']}..{until}) and line {second['line']} "
            f"({second['ticker']} from {second['start_date']})",
            source=source, line=int(second["line"]), field="start_date",
            hint="end_date is exclusive: a span may start on the previous span's end_date")


def load_membership(path: Path | str, *, name: str | None = None) -> Membership:
    """Read a membership CSV (see the module docstring); ``name`` defaults to the file stem.

    Examples
    --------
    >>> spx = load_membership("spx_members.csv", name="SPX")  # doctest: +SKIP
    >>> spx.members_on("2021-01-04")[:3]  # doctest: +SKIP
    ['A', 'AAL', 'AAP']
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataFormatError(f"cannot read the membership file: {exc.strerror or exc}",
                              source=str(file)) from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError("not a UTF-8 text file", source=str(file)) from exc
    return parse_membership(text, str(file), name=name)


def static_membership(tickers: Iterable[str], *, name: str, source: str) -> Membership:
    """Members of every session (no history known): e.g. a universe or a ticker list."""
    symbols = list(dict.fromkeys(normalise_ticker(t, source=source) for t in tickers))
    if not symbols:
        raise DataFormatError("no members", source=source)
    spans = pd.DataFrame({"symbol": symbols, "start_date": EARLIEST, "end_date": None,
                          "line": None, "ticker": symbols})
    return Membership(name, spans, source)


def universe_membership(universe: Universe, symbols: Sequence[str] | None = None) -> Membership:
    """A universe as static membership (``symbols`` = the database's symbols for ``all``)."""
    tickers = list(symbols or []) if universe.is_all else list(universe.tickers)
    return static_membership(tickers, name=universe.name, source=f"universe {universe.name}")


__all__ = ["COLUMNS", "Membership", "load_membership", "parse_membership",
           "static_membership", "universe_membership"]
