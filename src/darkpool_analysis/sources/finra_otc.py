"""FINRA OTC Transparency weekly volume: Query API client and strict parsers.

Two inputs, one data contract:

* The keyless Query API (``POST {api}/data/group/otcMarket/name/weeklySummary``, and
  ``weeklySummaryHistoric`` for weeks older than about 12 months). Bodies carry
  ``compareFilters``/``dateRangeFilters``/``domainFilters``; pages of at most 5,000 records are
  walked by ``offset`` up to the ``record-total`` response header (offset cap 500,000); an
  empty result is HTTP 204 (or ``[]`` with ``record-total: 0``). Requests are spaced below
  FINRA's 20 requests/second limit; 429/5xx are retried by :mod:`darkpool_analysis.sources.http`.
* FINRA's website download (pipe-delimited, one row per symbol *per firm*):
  ``tierDescription|issueSymbolIdentifier|issueName|marketParticipantName|MPID|
  totalWeeklyShareQuantity|totalWeeklyTradeCount|lastUpdateDate``. It carries neither the
  week nor whether the firms are ATSs or non-ATS dealers (FINRA serves the two as separate
  downloads with the same header), so the caller says which (``kind``), and the week defaults to
  ``lastUpdateDate - 7 x (1 + publication delay)`` (the publication rule; the API cassettes
  show ``lastUpdateDate = weekStartDate + 21 days`` for T1 and ``+ 35 days`` for T2). The
  symbol-level row is derived explicitly as the **sum over the firm rows of that symbol**
  (``ATS_W_SMBL`` from ``ATS_W_SMBL_FIRM`` rows): the file has no symbol rows, so nothing is
  counted twice. Firm rows themselves go to the firm table only.

Symbol-level rows (``ATS_W_SMBL``, ``OTC_W_SMBL``) and firm-level rows (``*_SMBL_FIRM``) are
returned as separate frames and must never be added together (the firm rows split the same
volume). Every problem raises :class:`DataFormatError` naming the source, line/record and field;
rows of an unknown tier or summary type are skipped, logged and counted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx
import numpy as np
import pandas as pd

from darkpool_analysis.errors import DataFormatError, FetchError
from darkpool_analysis.sources import limits
from darkpool_analysis.sources.http import HttpPolicy, request
from darkpool_analysis.symbols import normalise_array

log = logging.getLogger(__name__)

Tier = Literal["T1", "T2", "OTCE"]
TIERS: Final[tuple[Tier, ...]] = ("T1", "T2", "OTCE")
#: Weeks between the end of a week and its publication, per tier (finra-data.md section 2).
TIER_DELAY_WEEKS: Final[dict[str, int]] = {"T1": 2, "T2": 4, "OTCE": 4}
#: ``tierDescription`` of the website download -> tier code.
TIER_DESCRIPTIONS: Final[dict[str, str]] = {
    "NMS Tier 1": "T1", "NMS Tier 2": "T2", "OTC": "OTCE", "OTC Equity": "OTCE",
    "T1": "T1", "T2": "T2", "OTCE": "OTCE",
}
SYMBOL_TYPES: Final[tuple[str, ...]] = ("ATS_W_SMBL", "OTC_W_SMBL")
FIRM_TYPES: Final[tuple[str, ...]] = ("ATS_W_SMBL_FIRM", "OTC_W_SMBL_FIRM")

DATASET_CURRENT: Final = "weeklySummary"
DATASET_HISTORIC: Final = "weeklySummaryHistoric"
#: ``weeklySummary`` keeps a rolling 12 months; older weeks live in ``weeklySummaryHistoric``.
CURRENT_DATASET_DAYS: Final = 364
MAX_LIMIT: Final = 5000
MAX_OFFSET: Final = 500_000

#: Query API field -> stored column.
API_FIELDS: Final[dict[str, str]] = {
    "weekStartDate": "week_start_date",
    "tierIdentifier": "tier",
    "summaryTypeCode": "summary_type",
    "issueSymbolIdentifier": "symbol",
    "issueName": "issue_name",
    "productTypeCode": "product_type",
    "totalWeeklyShareQuantity": "share_quantity",
    "totalWeeklyTradeCount": "trade_count",
    "totalNotionalSum": "notional",
    "initialPublishedDate": "initial_published_date",
    "lastUpdateDate": "last_update_date",
    "MPID": "mpid",
    "marketParticipantName": "market_participant_name",
}
_REQUIRED_API_FIELDS: Final = ("weekStartDate", "tierIdentifier", "summaryTypeCode",
                               "issueSymbolIdentifier", "totalWeeklyShareQuantity",
                               "lastUpdateDate")

#: Columns of the symbol-level frame (``finra_otc_weekly_raw`` minus provenance).
SYMBOL_COLUMNS: Final = ["week_start_date", "tier", "summary_type", "symbol", "symbol_norm",
                         "issue_name", "product_type", "share_quantity", "trade_count",
                         "notional", "initial_published_date", "last_update_date"]
#: Columns of the firm-level frame (``finra_otc_weekly_firm_raw`` minus provenance).
FIRM_COLUMNS: Final = ["week_start_date", "tier", "summary_type", "symbol", "symbol_norm",
                       "issue_name", "mpid", "market_participant_name", "share_quantity",
                       "trade_count", "notional", "initial_published_date", "last_update_date"]

#: The website download layout (one row per symbol per firm).
DOWNLOAD_FIRM_HEADER: Final = ("tierDescription|issueSymbolIdentifier|issueName|"
                               "marketParticipantName|MPID|totalWeeklyShareQuantity|"
                               "totalWeeklyTradeCount|lastUpdateDate")
KNOWN_FILE_HEADERS: Final = (DOWNLOAD_FIRM_HEADER,)

FileKind = Literal["ATS", "OTC"]


@dataclass
class ParsedOtc:
    """Symbol-level and firm-level rows of one source, plus the rows skipped and why."""

    symbol_rows: pd.DataFrame
    firm_rows: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def empty_symbol_frame() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in SYMBOL_COLUMNS}), SYMBOL_COLUMNS)


def empty_firm_frame() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in FIRM_COLUMNS}), FIRM_COLUMNS)


def publication_rule_date(week_start: pd.Series, tier: pd.Series) -> pd.Series:
    """Week start + 7 x (1 + delay) days: when a week should be public (vectorised)."""
    delay = tier.map(TIER_DELAY_WEEKS).astype("float64")
    return week_start + pd.to_timedelta(7 * (1 + delay), unit="D")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Shared validation
# --------------------------------------------------------------------------------------------
def _typed(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Coerce the contract's dtypes (dates as datetime64, counts as nullable Int64)."""
    out = frame.reindex(columns=list(columns))
    for col in ("week_start_date", "initial_published_date", "last_update_date"):
        out[col] = pd.to_datetime(out[col]).astype("datetime64[us]")
    for col in ("share_quantity", "notional"):
        out[col] = out[col].astype("float64")
    out["trade_count"] = out["trade_count"].astype("Int64")
    for col in set(columns) - {"week_start_date", "initial_published_date", "last_update_date",
                               "share_quantity", "notional", "trade_count"}:
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out.reset_index(drop=True)


def _first_index(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _parse_dates(values: pd.Series, *, required: bool, source: str, field_name: str,
                 where: str, offset: int) -> pd.Series:
    text = values.astype("string").str.strip().str.slice(0, 10)
    parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    bad = (parsed.isna() & text.notna() & (text != "")).to_numpy()
    if required:
        bad |= parsed.isna().to_numpy()
    first = _first_index(bad)
    if first is not None:
        raise DataFormatError(
            f"{where} {first + offset}: expected a date YYYY-MM-DD, got {values.iloc[first]!r}",
            source=source, line=first + offset if where == "line" else None, field=field_name)
    return parsed


def _json_numbers(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Numbers from JSON values (Python objects): floats, and a mask of values that are not
    numbers or numeric strings (booleans, objects, lists, integers beyond float range)."""
    parsed = np.full(len(values), np.nan)
    wrong = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values.tolist()):  # JSON records are Python objects already
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            wrong[i] = True
            continue
        try:
            parsed[i] = float(value)
        except (ValueError, OverflowError):
            wrong[i] = not isinstance(value, int)
            parsed[i] = np.inf if isinstance(value, int) else np.nan
    return pd.Series(parsed, index=values.index), wrong


def _parse_numbers(values: pd.Series, *, required: bool, source: str, field_name: str,
                   where: str, offset: int, maximum: float,
                   integer: bool = False) -> pd.Series:
    """Validated float64 numbers: finite, >= 0, <= ``maximum`` (whole numbers when
    ``integer``); the error names the first offending line/record and the field."""
    if where == "record":  # JSON values: numbers, strings, or anything else
        parsed, wrong = _json_numbers(values)
    else:
        parsed = pd.to_numeric(values, errors="coerce").astype("float64")
        wrong = np.zeros(len(values), dtype=bool)

    def fail(mask: np.ndarray, expected: str, problem: str = "") -> None:
        first = _first_index(mask)
        if first is not None:
            raise DataFormatError(
                f"{where} {first + offset}: {problem}expected {expected}, got "
                f"{limits.shown(values.iloc[first])}", source=source,
                line=first + offset if where == "line" else None, field=field_name)

    present = (values.notna() & (values.astype("string").str.strip() != "")).to_numpy(
        dtype=bool, na_value=False)
    numbers = parsed.to_numpy(dtype="float64")
    fail(wrong | (np.isnan(numbers) & present) | (required & ~present), "a number")
    fail(np.isinf(numbers), "a finite number")
    fail(numbers < 0, "a quantity >= 0", "negative quantity; ")
    fail(numbers > maximum, f"at most {maximum:g} (an implausible magnitude)")
    if integer:
        fail(np.isfinite(numbers) & (numbers != np.floor(numbers)), "a whole number")
    return parsed


def _drop_unknown(frame: pd.DataFrame, column: str, allowed: Iterable[str], reason: str,
                  skipped: dict[str, int], source: str) -> pd.DataFrame:
    known = frame[column].isin(list(allowed)).to_numpy(dtype=bool)
    if known.all():
        return frame
    values = sorted({str(v) for v in frame.loc[~known, column].unique()})
    count = int((~known).sum())
    skipped[reason] = skipped.get(reason, 0) + count
    log.warning("%s: skipped %d row(s) with %s %s", source, count, reason, ", ".join(values))
    return frame.loc[known]


#: Stored column -> the source's field name, for error messages.
API_NAMES: Final = {column: api for api, column in API_FIELDS.items()}
DOWNLOAD_NAMES: Final = {"symbol": "issueSymbolIdentifier", "issue_name": "issueName",
                         "market_participant_name": "marketParticipantName", "mpid": "MPID"}
#: Text columns and the check each must pass (symbol spelling, MPID, free text).
_TEXT_CHECKS: Final = (("symbol", limits.bad_symbol), ("mpid", limits.bad_mpid),
                       ("issue_name", limits.bad_text),
                       ("market_participant_name", limits.bad_text),
                       ("product_type", limits.bad_text))


def _where(where: str, position: int, source: str, field_name: str) -> dict[str, Any]:
    return {"source": source, "field": field_name,
            "line": position if where == "line" else None}


def _check_monday(weeks: pd.Series, index: pd.Index, *, source: str, where: str, offset: int,
                  field_name: str) -> None:
    """Every week start must be a Monday (FINRA weeks run Monday to Friday)."""
    first = _first_index((weeks.dt.day_of_week != 0).to_numpy(dtype=bool))
    if first is not None:
        position = int(index[first]) + offset
        day = weeks.iloc[first].date()
        raise DataFormatError(f"{where} {position}: week start {day} is a {day:%A}; expected "
                              "the Monday of the week", **_where(where, position, source,
                                                                  field_name))


def _check_text_fields(frame: pd.DataFrame, *, source: str, where: str, offset: int,
                       names: Mapping[str, str]) -> None:
    """Symbols, MPIDs and free text within the layout's limits (see :mod:`limits`)."""
    for column, check in _TEXT_CHECKS:
        if column not in frame:
            continue
        values = frame[column].astype("string")
        first = check(values)
        if first is None:
            continue
        position = int(frame.index[first]) + offset
        value = str(values.iloc[first])
        problem = (limits.describe_symbol_problem(value) if column == "symbol" else
                   f"{limits.shown(value)} is not 1..{limits.MAX_MPID_LENGTH} letters/digits"
                   if column == "mpid" else
                   f"text of {len(value):,} characters or with control characters "
                   f"({limits.shown(value)}); expected at most {limits.MAX_TEXT_LENGTH:,} "
                   "printable characters")
        raise DataFormatError(f"{where} {position}: {problem}",
                              **_where(where, position, source, names.get(column, column)))


def _check_unique(frame: pd.DataFrame, keys: list[str], *, source: str, where: str,
                  offset: int) -> None:
    """One row per revision key: a repeated record would be stored twice."""
    if frame.empty:
        return
    duplicated = frame.duplicated(keys, keep="first").to_numpy()
    again = _first_index(duplicated)
    if again is None:
        return
    row = frame.iloc[again]
    same = np.ones(len(frame), dtype=bool)
    for key in keys:
        same &= (frame[key] == row[key]).to_numpy(dtype=bool, na_value=False)
    first = int(frame.index[_first_index(same) or 0]) + offset
    position = int(frame.index[again]) + offset
    firm = f" and MPID {row['mpid']!r}" if "mpid" in keys else ""
    raise DataFormatError(
        f"{where} {position} repeats {where} {first} (week {row['week_start_date'].date()}, "
        f"tier {row['tier']}, {row['summary_type']}, symbol {row['symbol']!r}{firm}, "
        f"lastUpdateDate {row['last_update_date'].date()}); expected one {where} per revision",
        **_where(where, position, source, "issueSymbolIdentifier"))


# --------------------------------------------------------------------------------------------
# JSON (Query API responses, live or saved to disk)
# --------------------------------------------------------------------------------------------
def defaults_from_request(body: Mapping[str, Any]) -> dict[str, str]:
    """Field values fixed by a request's ``EQUAL`` compare filters (e.g. the week and tier).

    The API only returns the ``fields`` asked for; a response to a query filtered on
    ``weekStartDate = 2021-11-08`` may omit that column, and these defaults fill it in.
    """
    defaults: dict[str, str] = {}
    for item in body.get("compareFilters") or []:
        if str(item.get("compareType", "")).upper() == "EQUAL" and "fieldName" in item:
            defaults[str(item["fieldName"])] = str(item.get("fieldValue"))
    return defaults


def decode_json_records(data: bytes | str, source: str) -> list[dict[str, Any]]:
    """The list of records in a response body; HTML error pages and non-lists are errors."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped.startswith("<"):
        raise DataFormatError("got an HTML page instead of JSON records (an error page or a "
                              f"proxy/login page): {stripped[:80]!r}", source=source,
                              hint="check FINRA_API_URL and retry later")
    payload = limits.load_json(stripped, source)
    if isinstance(payload, dict) and isinstance(payload.get("records"), list):
        payload = payload["records"]
    if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
        raise DataFormatError("expected a JSON array of records (objects)", source=source)
    return payload


def parse_api_records(records: Sequence[Mapping[str, Any]], *, source: str,
                      defaults: Mapping[str, str] | None = None) -> ParsedOtc:
    """Validate Query API records and split them into symbol-level and firm-level frames.

    ``defaults`` (see :func:`defaults_from_request`) fill fields the response left out.
    Missing required fields, bad numbers/dates and negative quantities raise
    :class:`DataFormatError` naming the record (1-based) and field; unknown tiers and summary
    types (``*_W_FIRM``, ``*_VOL_STATS``) are skipped and counted.
    """
    if not records:
        return ParsedOtc(empty_symbol_frame(), empty_firm_frame())
    raw = pd.DataFrame.from_records(list(records))
    for name, value in (defaults or {}).items():
        if name in API_FIELDS:
            if name in raw.columns:
                raw[name] = raw[name].where(raw[name].notna(), value)
            else:
                raw[name] = value
    for name in _REQUIRED_API_FIELDS:
        if name not in raw.columns:
            raise DataFormatError(f"records lack the field {name!r} (got "
                                  f"{', '.join(map(str, raw.columns))})", source=source,
                                  field=name)
        missing = _first_index(raw[name].isna().to_numpy())
        if missing is not None:
            raise DataFormatError(f"record {missing + 1}: {name} is missing", source=source,
                                  field=name)
    frame = pd.DataFrame({API_FIELDS[c]: raw[c] for c in API_FIELDS if c in raw.columns})
    parse = {"source": source, "where": "record", "offset": 1}
    frame["week_start_date"] = _parse_dates(frame["week_start_date"], required=True,
                                            field_name="weekStartDate", **parse)
    frame["last_update_date"] = _parse_dates(frame["last_update_date"], required=True,
                                             field_name="lastUpdateDate", **parse)
    if "initial_published_date" in frame:
        frame["initial_published_date"] = _parse_dates(
            frame["initial_published_date"], required=False, field_name="initialPublishedDate",
            **parse)
    frame["share_quantity"] = _parse_numbers(frame["share_quantity"], required=True,
                                             field_name="totalWeeklyShareQuantity",
                                             maximum=limits.MAX_WEEKLY_SHARES, **parse)
    if "trade_count" in frame:
        frame["trade_count"] = _parse_numbers(frame["trade_count"], required=False,
                                              field_name="totalWeeklyTradeCount",
                                              maximum=limits.MAX_WEEKLY_TRADES, integer=True,
                                              **parse)
    if "notional" in frame:
        frame["notional"] = _parse_numbers(frame["notional"], required=False,
                                           field_name="totalNotionalSum",
                                           maximum=limits.MAX_WEEKLY_NOTIONAL, **parse)
    skipped: dict[str, int] = {}
    frame["tier"] = frame["tier"].astype("string").str.strip()
    frame["summary_type"] = frame["summary_type"].astype("string").str.strip()
    frame = _drop_unknown(frame, "tier", TIERS, "unknown tier", skipped, source)
    frame = _drop_unknown(frame, "summary_type", SYMBOL_TYPES + FIRM_TYPES,
                          "other summary type", skipped, source)
    frame["symbol"] = frame["symbol"].astype("string").str.strip()
    _check_monday(frame["week_start_date"], frame.index, source=source, where="record",
                  offset=1, field_name="weekStartDate")
    _check_text_fields(frame, source=source, where="record", offset=1, names=API_NAMES)
    frame["symbol_norm"] = normalise_array(frame["symbol"], feed="finra")
    is_firm = frame["summary_type"].isin(list(FIRM_TYPES)).to_numpy(dtype=bool)
    firm = frame.loc[is_firm]
    if ("mpid" not in firm.columns or firm["mpid"].isna().any()) and len(firm):
        raise DataFormatError("firm-level records need an MPID", source=source,
                              field="MPID")
    keys = ["week_start_date", "tier", "summary_type", "symbol", "last_update_date"]
    _check_unique(frame.loc[~is_firm], keys, source=source, where="record", offset=1)
    _check_unique(firm, [*keys, "mpid"], source=source, where="record", offset=1)
    return ParsedOtc(_typed(frame.loc[~is_firm], SYMBOL_COLUMNS), _typed(firm, FIRM_COLUMNS),
                     skipped)


# --------------------------------------------------------------------------------------------
# Website download files (pipe-delimited, firm level)
# --------------------------------------------------------------------------------------------
def parse_download_file(data: bytes, source: str, *, kind: FileKind = "ATS",
                        week_start: dt.date | None = None) -> ParsedOtc:
    """Parse FINRA's pipe-delimited website download (one row per symbol per firm).

    ``kind`` says whether the firms are ATSs (``ATS``) or non-ATS dealers (``OTC``); the file
    does not. ``week_start`` (a Monday) overrides the week inferred from ``lastUpdateDate``
    by the publication rule (earliest ``lastUpdateDate`` of each tier minus 7 x (1 + delay)
    days). Returns the firm rows and the derived symbol rows (sum over firms, see module doc).
    """
    text = data.decode("utf-8-sig", errors="replace")
    if text.lstrip().startswith("<"):
        raise DataFormatError("got an HTML page instead of a pipe-delimited download",
                              source=source)
    header = text.split("\n", 1)[0].rstrip("\r")
    if header not in KNOWN_FILE_HEADERS:
        raise DataFormatError(f"unknown header {header[:160]!r}; expected the FINRA download "
                              f"layout {DOWNLOAD_FIRM_HEADER!r}", source=source, line=1)
    if week_start is not None and week_start.weekday() != 0:
        raise DataFormatError(f"week start {week_start} is not a Monday", source=source)
    try:
        raw = pd.read_csv(io.StringIO(text), sep="|", dtype=str, keep_default_na=False,
                          na_values=[""], quoting=3, engine="c")
    except pd.errors.ParserError as exc:
        raise DataFormatError(f"malformed row: {exc}", source=source) from exc
    skipped: dict[str, int] = {}
    if raw.empty:
        return ParsedOtc(empty_symbol_frame(), empty_firm_frame())
    parse = {"source": source, "where": "line", "offset": 2}  # header is line 1
    frame = pd.DataFrame({
        "tier_description": raw["tierDescription"].str.strip(),
        "symbol": raw["issueSymbolIdentifier"].str.strip(),
        "issue_name": raw["issueName"],
        "market_participant_name": raw["marketParticipantName"],
        "mpid": raw["MPID"].str.strip(),
        "share_quantity": _parse_numbers(raw["totalWeeklyShareQuantity"], required=True,
                                         field_name="totalWeeklyShareQuantity",
                                         maximum=limits.MAX_WEEKLY_SHARES, **parse),
        "trade_count": _parse_numbers(raw["totalWeeklyTradeCount"], required=False,
                                      field_name="totalWeeklyTradeCount",
                                      maximum=limits.MAX_WEEKLY_TRADES, integer=True, **parse),
        "last_update_date": _parse_dates(raw["lastUpdateDate"], required=True,
                                         field_name="lastUpdateDate", **parse),
    })
    missing = _first_index(frame["mpid"].isna().to_numpy())
    if missing is not None:
        raise DataFormatError(f"line {missing + 2}: MPID is empty", source=source,
                              line=missing + 2, field="MPID")
    # Real downloads carry rows without a symbol (unlisted private securities on an ATS such
    # as PPEX): they cannot be attributed to a stock, so they are skipped and counted.
    no_symbol = frame["symbol"].isna().to_numpy()
    if no_symbol.any():
        skipped["no symbol"] = int(no_symbol.sum())
        log.warning("%s: skipped %d row(s) without issueSymbolIdentifier (first at line %d)",
                    source, int(no_symbol.sum()), int(np.flatnonzero(no_symbol)[0]) + 2)
        frame = frame.loc[~no_symbol]
    frame["tier"] = frame["tier_description"].map(TIER_DESCRIPTIONS)
    unknown = frame["tier"].isna().to_numpy()
    if unknown.any():
        names = sorted(set(frame.loc[unknown, "tier_description"].astype(str)))
        skipped["unknown tier"] = int(unknown.sum())
        log.warning("%s: skipped %d row(s) with unknown tierDescription %s (known: %s)",
                    source, int(unknown.sum()), ", ".join(names), ", ".join(TIER_DESCRIPTIONS))
        frame = frame.loc[~unknown]
    _check_text_fields(frame, source=source, where="line", offset=2, names=DOWNLOAD_NAMES)
    if frame.empty:
        return ParsedOtc(empty_symbol_frame(), empty_firm_frame(), skipped)
    if week_start is not None:
        frame["week_start_date"] = pd.Timestamp(week_start)
    else:
        first_update = frame.groupby("tier")["last_update_date"].transform("min")
        delay_days = pd.to_timedelta(7 * (1 + frame["tier"].map(TIER_DELAY_WEEKS)), unit="D")
        guess = first_update - delay_days
        frame["week_start_date"] = guess - pd.to_timedelta(guess.dt.day_of_week, unit="D")
        for tier, week in frame.groupby("tier")["week_start_date"].first().items():
            log.info("%s: tier %s week inferred as %s from lastUpdateDate (publication rule)",
                     source, tier, week.date())
    frame["summary_type"] = f"{kind}_W_SMBL_FIRM"
    frame["symbol_norm"] = normalise_array(frame["symbol"], feed="finra")
    frame["notional"] = np.nan
    frame["initial_published_date"] = pd.NaT
    duplicated = frame.duplicated(["week_start_date", "tier", "symbol", "mpid",
                                   "last_update_date"]).to_numpy()
    dup = _first_index(duplicated)
    if dup is not None:
        line = int(frame.index[dup]) + 2
        raise DataFormatError(f"line {line}: duplicate row for symbol "
                              f"{frame['symbol'].iloc[dup]!r} and MPID "
                              f"{frame['mpid'].iloc[dup]!r}", source=source, line=line)
    firm = _typed(frame, FIRM_COLUMNS)
    groups = frame.groupby(["week_start_date", "tier", "symbol"], sort=True, dropna=False)
    symbol = groups.agg(symbol_norm=("symbol_norm", "first"), issue_name=("issue_name", "first"),
                        share_quantity=("share_quantity", "sum"),
                        last_update_date=("last_update_date", "max"))
    symbol["trade_count"] = groups["trade_count"].sum(min_count=1)
    symbol = symbol.reset_index()
    symbol["summary_type"] = f"{kind}_W_SMBL"
    symbol["product_type"] = None
    symbol["notional"] = np.nan
    symbol["initial_published_date"] = pd.NaT
    return ParsedOtc(_typed(symbol, SYMBOL_COLUMNS), firm, skipped)


def parse_saved_json(data: bytes, source: str) -> ParsedOtc:
    """A Query API response saved to disk: an array of records with all key fields.

    An object ``{"request": {...}, "records": [...]}`` is also accepted; the request's
    ``EQUAL`` filters then fill fields the records leave out.
    """
    text = data.decode("utf-8", errors="replace")
    defaults: dict[str, str] = {}
    stripped = text.lstrip()
    if stripped.startswith("{"):
        payload = limits.load_json(stripped, source)
        if isinstance(payload, dict) and isinstance(payload.get("request"), dict):
            defaults = defaults_from_request(payload["request"])
    return parse_api_records(decode_json_records(text, source), source=source,
                             defaults=defaults)


# --------------------------------------------------------------------------------------------
# Query API client
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OtcQuery:
    """One logical API query: a dataset, a tier, summary types, a week range, symbols."""

    dataset: str
    tier: str
    summary_types: tuple[str, ...]
    first_week: dt.date
    last_week: dt.date
    symbols: tuple[str, ...] = ()

    def body(self, *, limit: int, offset: int) -> dict[str, Any]:
        """The JSON request body of one page."""
        domain = [{"fieldName": "summaryTypeCode", "values": list(self.summary_types)}]
        if self.symbols:
            domain.append({"fieldName": "issueSymbolIdentifier", "values": list(self.symbols)})
        return {
            "compareFilters": [{"compareType": "EQUAL", "fieldName": "tierIdentifier",
                                "fieldValue": self.tier}],
            "dateRangeFilters": [{"fieldName": "weekStartDate",
                                  "startDate": self.first_week.isoformat(),
                                  "endDate": self.last_week.isoformat()}],
            "domainFilters": domain,
            "fields": list(API_FIELDS),
            "sortFields": ["weekStartDate", "summaryTypeCode", "issueSymbolIdentifier"],
            "limit": limit,
            "offset": offset,
        }

    def split_by_week(self) -> list[OtcQuery]:
        """One query per week of the range (to stay under the offset cap)."""
        weeks = pd.date_range(self.first_week, self.last_week, freq="7D")
        return [OtcQuery(self.dataset, self.tier, self.summary_types, w.date(), w.date(),
                         self.symbols) for w in weeks]

    def describe(self) -> str:
        span = (self.first_week.isoformat() if self.first_week == self.last_week
                else f"{self.first_week}..{self.last_week}")
        return f"{self.dataset} {self.tier} {'+'.join(self.summary_types)} {span}"


class OffsetCapError(FetchError):
    """A query matches more records than the API lets one page through (offset cap)."""


@dataclass
class FetchedPages:
    """All records of one query, with the raw bodies' digest for provenance."""

    query: OtcQuery
    records: list[dict[str, Any]]
    pages: int
    url: str
    sha256: str


class RateLimiter:
    """Spaces request starts at least ``1 / per_second`` seconds apart (one process)."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be > 0")
        self.interval = 1.0 / per_second
        self._next = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


class OtcApiClient:
    """Pages through ``weeklySummary``/``weeklySummaryHistoric`` queries (see module doc)."""

    def __init__(self, client: httpx.Client, base_url: str, *, policy: HttpPolicy,
                 requests_per_second: float, limit: int = MAX_LIMIT) -> None:
        if not 0 < limit <= MAX_LIMIT:
            raise ValueError(f"limit must be in 1..{MAX_LIMIT}")
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.limit = limit
        self.rate = RateLimiter(requests_per_second)
        self.requests = 0

    def url(self, dataset: str) -> str:
        return f"{self.base_url}/data/group/otcMarket/name/{dataset}"

    def fetch(self, query: OtcQuery) -> FetchedPages:
        """Every record of ``query``; raises instead of ever returning a truncated result.

        Raises :class:`OffsetCapError` (before fetching more than the first page) when the
        total would pass the offset cap, :class:`DataFormatError` for a page without
        ``record-total``, an HTML page or a page shorter than promised, and
        :class:`FetchError` for HTTP errors left after retries.
        """
        url = self.url(query.dataset)
        digest = hashlib.sha256()
        records: list[dict[str, Any]] = []
        offset, total, pages = 0, None, 0
        while total is None or offset < total:
            page, page_total = self._page(url, query, offset)
            pages += 1
            digest.update(json.dumps(page, sort_keys=True).encode())
            if total is None:
                total = page_total
                if total > MAX_OFFSET + self.limit:
                    raise OffsetCapError(
                        f"{query.describe()}: {total:,} records would pass the API offset cap "
                        f"({MAX_OFFSET:,})", url=url,
                        hint="split the query into smaller week ranges")
            elif page_total != total:
                raise DataFormatError(f"record-total changed from {total} to {page_total} "
                                      f"while paging {query.describe()}", source=url,
                                      field="record-total",
                                      hint="the data was republished mid-query; run again")
            expected = min(self.limit, total - offset)
            if len(page) != expected:
                raise DataFormatError(
                    f"page at offset {offset} of {query.describe()} has {len(page)} record(s), "
                    f"expected {expected} (record-total {total}): truncated response",
                    source=url, field="record-total", hint="retry later")
            records.extend(page)
            offset += len(page)
            if not page:
                break
        log.debug("%s: %d record(s) in %d page(s)", query.describe(), len(records), pages)
        return FetchedPages(query, records, pages, url, digest.hexdigest())

    def _page(self, url: str, query: OtcQuery, offset: int) -> tuple[list[dict[str, Any]], int]:
        self.rate.wait()
        self.requests += 1
        response = request(self.client, "POST", url, policy=self.policy,
                           json=query.body(limit=self.limit, offset=offset),
                           headers={"Accept": "application/json"})
        if response.status_code == 204:
            return [], 0
        if response.status_code != 200:
            raise FetchError(f"HTTP {response.status_code} from {url} for {query.describe()}: "
                             f"{response.text[:200]!r}", url=url, status=response.status_code)
        content_type = response.headers.get("content-type", "")
        if "html" in content_type.lower():
            raise DataFormatError(f"got an HTML page ({content_type}) instead of JSON records: "
                                  f"{response.text[:80]!r}", source=url,
                                  hint="check FINRA_API_URL and retry later")
        page = decode_json_records(response.content, url)
        header = response.headers.get("record-total")
        if header is None or not header.strip().isdigit():
            raise DataFormatError(f"response for {query.describe()} at offset {offset} has no "
                                  f"valid record-total header (got {header!r}); cannot tell "
                                  "whether the result is complete", source=url,
                                  field="record-total")
        return page, int(header)


def dataset_for_week(week: dt.date, today: dt.date) -> str:
    """``weeklySummary`` for the last 12 months, ``weeklySummaryHistoric`` before."""
    return DATASET_CURRENT if (today - week).days <= CURRENT_DATASET_DAYS else DATASET_HISTORIC


def monday_of(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def plan_queries(first_week: dt.date, last_week: dt.date, tiers: Sequence[str],
                 summary_types: Sequence[str], symbols: Sequence[str], *, today: dt.date,
                 symbols_per_query: int = 200) -> list[OtcQuery]:
    """Queries covering the range: per tier, dataset (current/historic) and symbol chunk."""
    first, last = monday_of(first_week), monday_of(last_week)
    if first > last:
        return []
    boundary = monday_of(today - dt.timedelta(days=CURRENT_DATASET_DAYS))
    spans: list[tuple[str, dt.date, dt.date]] = []
    if first < boundary:
        spans.append((DATASET_HISTORIC, first, min(last, boundary - dt.timedelta(days=7))))
    if last >= boundary:
        spans.append((DATASET_CURRENT, max(first, boundary), last))
    chunks: list[tuple[str, ...]] = [()]
    if symbols:
        ordered = sorted(set(symbols))
        chunks = [tuple(ordered[i:i + symbols_per_query])
                  for i in range(0, len(ordered), symbols_per_query)]
    return [OtcQuery(dataset, tier, tuple(summary_types), start, end, chunk)
            for tier in tiers for dataset, start, end in spans for chunk in chunks]
