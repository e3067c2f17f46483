"""The point-in-time OTC weekly block of ``daily_metrics`` (metrics-spec.md, "OTC weekly block").

:func:`otc_daily_block` is pure (frames in, frame out). The weekly-scale steps (revision
states, publication events, window statistics) run as SQL in a private in-memory DuckDB; the
symbol x session expansion (millions of rows) is numpy on integer symbol codes and day numbers,
and the string columns are built with Arrow. Definitions, for symbol s and session t:

* Weekly off-exchange volume = ``ATS_W_SMBL`` + ``OTC_W_SMBL`` share quantity of the week (a
  missing part counts as 0: FINRA lists no row when a symbol had no such volume).
* A revision row is *known* from ``max(publication date, last_update_date)``; the publication
  date is ``initial_published_date``, else week start + 7 x (1 + delay) days (delay 2 weeks for
  T1, 4 for T2/OTCE). A week is visible on its publication date, not a day earlier; a later
  revision (``Updated``) changes the days from its ``last_update_date`` on, never earlier ones.
* ``otc_week_used`` = the newest week visible on t; its volume and participation use the values
  known on t (an as-of join per symbol, no loops).
* ``otc_participation_rate`` = weekly off-exchange volume / consolidated volume of that week
  (sum of the daily bar ``volume`` over the week's XNYS sessions), capped at 1; NULL when a
  session of the week has no bar volume (an incomplete week would overstate the share) or the
  sum is 0.
* ``otc_participation_z`` = (rate_k - mean) / std_pop over the ``z_window`` calendar weeks
  ending at the week used (k), each at its value known on t; at least ``z_min_periods``
  non-null rates, NULL when the std is 0. ``otc_participation_delta`` = rate_k - rate_{k-1 week}.
* ``otc_status``: ``Anchored`` when the week used is the newest week that should be visible on
  t under the publication rule, ``Staled`` when an older week is carried, ``None`` when nothing
  is visible; ``has_otc`` = status != ``None``.

``alignment='week'`` reproduces the original system's look-ahead: each week's final values
(newest revision) are attached to the sessions inside that week, although FINRA published them
2-4 weeks later. It is labelled ``otc_alignment = 'week'`` and must not be used for backtests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from darkpool_analysis import trading_calendar

OtcAlignment = Literal["published", "week"]

OUTPUT_COLUMNS = ["symbol", "date", "otc_week_used", "otc_off_exchange_volume",
                  "otc_participation_rate", "otc_participation_z", "otc_participation_delta",
                  "otc_status", "otc_alignment", "has_otc"]
WEEKLY_COLUMNS = ["symbol", "week_start_date", "tier", "summary_type", "share_quantity",
                  "initial_published_date", "last_update_date"]
#: Weeks of OTC history loaded before ``start``: the z window plus the longest publication
#: delay and a margin, so the first day of a build already has a full window.
EXTRA_WARMUP_WEEKS = 6
_STD_EPSILON = 1e-12
_FAR_FUTURE = "9999-12-31"

_SQL_ROWS = """
CREATE TEMP TABLE otc_rows AS
SELECT symbol, week, tier, summary_type, share_quantity, last_update_date,
       greatest(coalesce(initial_published_date,
                         week + CAST(7 * (1 + CASE tier WHEN 'T1' THEN 2 ELSE 4 END) AS INTEGER)),
                last_update_date) AS known_from
FROM (
    SELECT CAST(sid AS INTEGER) AS symbol, CAST(week_start_date AS DATE) AS week,
           CAST(tier AS VARCHAR) AS tier, CAST(summary_type AS VARCHAR) AS summary_type,
           CAST(share_quantity AS DOUBLE) AS share_quantity,
           CAST(initial_published_date AS DATE) AS initial_published_date,
           CAST(last_update_date AS DATE) AS last_update_date
    FROM weekly_input WHERE sid >= 0
)
WHERE summary_type IN ('ATS_W_SMBL', 'OTC_W_SMBL') AND share_quantity IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY symbol, week, summary_type, known_from
                           ORDER BY last_update_date DESC) = 1
"""

# One state per (symbol, week, change point): ATS and OTC parts as known at that point.
_SQL_STATES = """
CREATE TEMP TABLE otc_states AS
WITH change_points AS (
    SELECT symbol, week, known_from, max(tier) AS tier FROM otc_rows GROUP BY ALL
), ats AS (
    SELECT symbol, week, known_from, share_quantity FROM otc_rows
    WHERE summary_type = 'ATS_W_SMBL'
), otc AS (
    SELECT symbol, week, known_from, share_quantity FROM otc_rows
    WHERE summary_type = 'OTC_W_SMBL'
), session_weeks AS (
    SELECT CAST(date AS DATE) - CAST(isodow(date) - 1 AS INTEGER) AS week,
           count(*) AS sessions
    FROM calendar_input GROUP BY ALL
), consolidated AS (
    SELECT CAST(v.sid AS INTEGER) AS symbol,
           CAST(v.date AS DATE) - CAST(isodow(v.date) - 1 AS INTEGER) AS week,
           sum(CAST(v.volume AS DOUBLE)) AS volume, count(v.volume) AS days
    FROM volume_input v SEMI JOIN calendar_input c ON CAST(v.date AS DATE) = c.date
    WHERE v.sid >= 0
    GROUP BY ALL
), parts AS (
    SELECT cp.symbol, cp.week, cp.known_from, cp.tier,
           coalesce(ats.share_quantity, 0) + coalesce(otc.share_quantity, 0) AS off_volume
    FROM change_points cp
    ASOF LEFT JOIN ats ON cp.symbol = ats.symbol AND cp.week = ats.week
                      AND cp.known_from >= ats.known_from
    ASOF LEFT JOIN otc ON cp.symbol = otc.symbol AND cp.week = otc.week
                      AND cp.known_from >= otc.known_from
)
SELECT p.symbol, p.week, p.known_from, p.tier, p.off_volume,
       CASE WHEN c.days = w.sessions AND c.volume > 0
            THEN least(p.off_volume / c.volume, 1.0) END AS rate,
       coalesce(lead(p.known_from) OVER (PARTITION BY p.symbol, p.week ORDER BY p.known_from),
                DATE '9999-12-31') AS valid_to
FROM parts p
LEFT JOIN consolidated c ON p.symbol = c.symbol AND p.week = c.week
LEFT JOIN session_weeks w ON p.week = w.week
"""

# Events: (symbol, e = date the state changes, k = week shown from e on).
_SQL_EVENTS_PUBLISHED = """
CREATE TEMP TABLE otc_events AS
SELECT symbol, known_from AS e, max(newest) AS k
FROM (SELECT symbol, known_from,
             max(week) OVER (PARTITION BY symbol ORDER BY known_from
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS newest
      FROM otc_states)
GROUP BY ALL
"""
_SQL_EVENTS_WEEK = f"""
CREATE TEMP TABLE otc_events AS
SELECT DISTINCT symbol, DATE '{_FAR_FUTURE}' - 1 AS e, week AS k FROM otc_states
"""

# Each event's window of weeks, each at its value known on e; then the window statistics.
_SQL_STATS = """
CREATE TEMP TABLE otc_event_stats AS
WITH window_weeks AS (
    SELECT ev.symbol, ev.e, ev.k, i.lag,
           CAST(ev.k - CAST(7 * i.lag AS INTEGER) AS DATE) AS week
    FROM otc_events ev CROSS JOIN (SELECT range AS lag FROM range($z_window)) i
), valued AS (
    -- each week at the state valid on e (states of a week tile time: [known_from, valid_to))
    SELECT ww.symbol, ww.e, ww.k, ww.lag, s.rate, s.off_volume, s.tier
    FROM window_weeks ww
    JOIN otc_states s ON ww.symbol = s.symbol AND ww.week = s.week
                     AND ww.e >= s.known_from AND ww.e < s.valid_to
), stats AS (
    SELECT symbol, e, k,
           max(off_volume) FILTER (WHERE lag = 0) AS off_volume,
           max(rate) FILTER (WHERE lag = 0) AS rate,
           max(rate) FILTER (WHERE lag = 1) AS previous_rate,
           max(tier) FILTER (WHERE lag = 0) AS tier,
           count(rate) AS n, avg(rate) AS mean, stddev_pop(rate) AS sd
    FROM valued GROUP BY ALL
)
SELECT symbol, e, k, tier, off_volume, rate,
       CASE WHEN n >= $z_min_periods AND sd > $epsilon AND rate IS NOT NULL
            THEN (rate - mean) / sd END AS z,
       rate - previous_rate AS delta
FROM stats
"""

# The last step (one row per symbol x session) runs in numpy on these per-event arrays (days
# as int64 day numbers, no NULLs): an as-of fill over the sid-major grid (:func:`_daily_arrays`)
# instead of a DuckDB ASOF JOIN on a materialised grid and a DATE/VARCHAR round trip to pandas.
_SQL_EVENT_ARRAYS = """
SELECT symbol, e - DATE '1970-01-01' AS e, k - DATE '1970-01-01' AS k,
       coalesce(tier = 'T1', false) AS t1,
       coalesce(off_volume, 'NaN'::DOUBLE) AS off_volume, coalesce(rate, 'NaN'::DOUBLE) AS rate,
       coalesce(z, 'NaN'::DOUBLE) AS z, coalesce(delta, 'NaN'::DOUBLE) AS delta
FROM otc_event_stats
ORDER BY symbol, e, k
"""

_EVENT_VALUE_COLUMNS = ("off_volume", "rate", "z", "delta")


def _monday(days: np.ndarray) -> np.ndarray:
    """The Monday on or before each day number (1970-01-01, day 0, was a Thursday)."""
    return days - (days + 3) % 7


def _day_numbers(values: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 (int64) of timestamps, truncated like ``CAST(ts AS DATE)``."""
    return np.asarray(values, dtype="datetime64[us]").astype("datetime64[D]").astype(np.int64)


def _symbol_strings(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Factorise a symbol column: ``(codes, names)`` with -1 for missing, names as ``str``.

    Only the distinct values are converted, which is what makes 4 M-row inputs cheap; the
    conversion is ``astype("string")``, as for a whole column.
    """
    if not isinstance(column.dtype, pd.StringDtype):
        column = column.astype("string")
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    names = pd.Series(uniques, dtype=object).to_numpy(dtype=object)
    return codes, names


def _ids_for(codes: np.ndarray, names: np.ndarray, categories: pd.Index) -> np.ndarray:
    """Map factorised symbols to their position in ``categories`` (-1 if absent or missing)."""
    lookup = np.append(categories.get_indexer(names), -1).astype(np.int32)
    return lookup[codes]  # code -1 (missing) picks the trailing -1


def _daily_arrays(events: dict[str, np.ndarray], n_symbols: int, days: np.ndarray,
                  alignment: str) -> tuple[np.ndarray, np.ndarray]:
    """For each (symbol, session) of the sid-major grid: the event row used and a status code.

    ``published``: the newest event of the symbol with ``e <= day`` (as-of). ``week``: the
    event whose week ``k`` is the session's own week. Status 0 = None, 1 = Anchored (the week
    used is the newest the publication rule expects), 2 = Staled. Returns ``(row, status)``
    with ``row = -1`` where no event applies.

    Events are sorted by (symbol, e, k), so each one takes effect at grid position
    ``sid * n_days + first session on/after its start``; a running maximum of the event index
    over the grid is then the as-of match (checked against the symbol, and for ``week`` against
    the session's week). Linear in the grid size, no per-symbol loop.
    """
    n_days = len(days)
    n_grid = n_symbols * n_days
    event_sid = events["symbol"].astype(np.int64)
    effective = events["e"] if alignment == "published" else events["k"]
    first = np.searchsorted(days, effective, side="left")
    inside = first < n_days
    starts = event_sid[inside] * n_days + first[inside]
    index = np.flatnonzero(inside)
    # several events starting at one position: the last one (newest e) wins
    last = np.append(starts[1:] != starts[:-1], True) if len(starts) else starts.astype(bool)
    marks = np.full(n_grid, -1, dtype=np.int64)
    marks[starts[last]] = index[last]
    row = np.maximum.accumulate(marks) if n_grid else marks
    grid_sid = np.repeat(np.arange(n_symbols, dtype=np.int64), n_days)
    day_index = np.tile(np.arange(n_days, dtype=np.int64), n_symbols)
    found = row >= 0
    found[found] = event_sid[row[found]] == grid_sid[found]
    used = row[found]
    if alignment == "week":
        found[found] = events["k"][used] == _monday(days)[day_index[found]]
        used = row[found]
    row[~found] = -1
    status = found.astype(np.int8)
    if alignment == "published":
        # the newest Monday w with w + 7 x (1 + delay) <= day, for the week's tier
        expected_t1, expected_other = _monday(days - 21), _monday(days - 35)
        on_day = day_index[found]
        expected = np.where(events["t1"][used], expected_t1[on_day], expected_other[on_day])
        status[found] = np.where(events["k"][used] >= expected, 1, 2)
    return row, status


def _take(values: np.ndarray, row: np.ndarray, missing: object) -> np.ndarray:
    """``values[row]`` with ``missing`` where ``row == -1``."""
    out = values[np.maximum(row, 0)] if len(values) else np.empty(len(row), values.dtype)
    out[row < 0] = missing
    return out


def _strings(names: np.ndarray, codes: np.ndarray) -> pd.Series:
    """A ``str`` column of ``names[codes]`` built with one Arrow ``take`` (no Python objects)."""
    if len(codes) == 0:
        return pd.Series(names[codes])  # same dtype pandas infers for an empty object array
    dictionary = pa.array(names.tolist(), type=pa.large_string())
    return pd.Series(dictionary.take(pa.array(codes)), dtype="str")


_STATUS_NAMES = np.array(["None", "Anchored", "Staled"], dtype=object)


def _finish(events: dict[str, np.ndarray], row: np.ndarray, status: np.ndarray,
            dates: pd.DatetimeIndex, days: np.ndarray, symbol_names: np.ndarray,
            alignment: str) -> pd.DataFrame:
    """Assemble the output frame (names back on the integer codes, the output dtypes)."""
    target = dates.dtype if len(dates) else np.dtype("datetime64[ns]")
    n_symbols = len(symbol_names)
    week_used = _take(events["k"], row, 0).astype("datetime64[D]")
    week_used[row < 0] = np.datetime64("NaT")
    out = pd.DataFrame({
        "symbol": _strings(symbol_names, np.repeat(np.arange(n_symbols, dtype=np.int32),
                                                   len(days))),
        "date": pd.Series(np.tile(days.astype("datetime64[D]"), n_symbols)).astype(target),
        "otc_week_used": pd.Series(week_used).astype(target),
    })
    for name, col in zip(("otc_off_exchange_volume", "otc_participation_rate",
                          "otc_participation_z", "otc_participation_delta"),
                         _EVENT_VALUE_COLUMNS, strict=True):
        out[name] = _take(events[col].astype(np.float64), row, np.nan)
    out["otc_status"] = _strings(_STATUS_NAMES, status)
    out["otc_alignment"] = _strings(np.array([alignment], dtype=object),
                                    np.zeros(len(out), dtype=np.int8))
    out["has_otc"] = status > 0
    return out


def _weekly_frame(weekly: pd.DataFrame) -> pd.DataFrame:
    """The weekly input with fixed dtypes; ``symbol`` is factorised separately."""
    missing = [c for c in WEEKLY_COLUMNS if c not in weekly.columns
               and c != "initial_published_date"]
    if missing:
        raise ValueError(f"weekly frame lacks column(s) {missing}; expected {WEEKLY_COLUMNS}")
    out = weekly.reindex(columns=WEEKLY_COLUMNS[1:]).copy()
    for col in ("week_start_date", "initial_published_date", "last_update_date"):
        out[col] = pd.to_datetime(out[col]).astype("datetime64[us]")
    out["share_quantity"] = pd.to_numeric(out["share_quantity"]).astype("float64")
    for col in ("tier", "summary_type"):
        out[col] = out[col].astype("string")
    return out


def _volume_frame(daily_volume: pd.DataFrame) -> pd.DataFrame:
    """``date, volume`` with fixed dtypes; ``symbol`` is factorised separately."""
    missing = [c for c in ("symbol", "date", "volume") if c not in daily_volume.columns]
    if missing:
        raise ValueError(f"daily_volume frame lacks column(s) {missing}")
    return pd.DataFrame({
        "date": pd.to_datetime(daily_volume["date"]).astype("datetime64[us]"),
        "volume": pd.to_numeric(daily_volume["volume"]).astype("float64"),
    })


def otc_daily_block(weekly: pd.DataFrame, daily_volume: pd.DataFrame,
                    sessions: pd.DatetimeIndex, *, alignment: OtcAlignment = "published",
                    z_window: int = 12, z_min_periods: int = 4,
                    symbols: Sequence[str] | None = None) -> pd.DataFrame:
    """The OTC columns for every (symbol, session) — see the module docstring for the rules.

    Parameters
    ----------
    weekly
        Symbol-level revision rows: ``symbol`` (normalised), ``week_start_date``, ``tier``,
        ``summary_type`` (``ATS_W_SMBL``/``OTC_W_SMBL``; other types are ignored),
        ``share_quantity``, ``last_update_date`` and optionally ``initial_published_date``.
        Include the weeks before the first session that the z window needs.
    daily_volume
        Daily bars ``symbol, date, volume`` (consolidated volume) covering those weeks.
    sessions
        The output dates (XNYS sessions).
    symbols
        The output symbols; default: every symbol of ``weekly`` or ``daily_volume``.

    Returns one row per (symbol, session) with :data:`OUTPUT_COLUMNS`, sorted by both.
    The weekly-scale steps (revision states, events, window statistics) run in DuckDB; the
    symbol x session expansion is a numpy as-of lookup (:func:`_daily_arrays`).
    """
    if alignment not in ("published", "week"):
        raise ValueError(f"alignment must be 'published' or 'week', got {alignment!r}")
    if not 1 <= z_min_periods <= z_window:
        raise ValueError("need 1 <= z_min_periods <= z_window")
    weekly_in = _weekly_frame(weekly)
    volume_in = _volume_frame(daily_volume)
    weekly_codes, weekly_names = _symbol_strings(weekly["symbol"])
    volume_codes, volume_names = _symbol_strings(daily_volume["symbol"])
    if symbols is None:
        names = pd.unique(pd.Series(np.concatenate([weekly_names, volume_names]),
                                    dtype=object).dropna())
        symbols = sorted(str(s) for s in names)
    symbol_names = np.asarray(list(dict.fromkeys(symbols)), dtype=object)
    # Integer symbol ids make every join and sort cheap; names are put back at the end.
    categories = pd.Index(symbol_names)
    weekly_in["sid"] = _ids_for(weekly_codes, weekly_names, categories)
    volume_in["sid"] = _ids_for(volume_codes, volume_names, categories)
    dates = pd.DatetimeIndex(sessions).unique().sort_values()
    days = _day_numbers(dates)
    calendar = _calendar_frame(weekly_in, dates)
    conn = duckdb.connect(":memory:")
    try:
        for name, frame in (("weekly_input", weekly_in), ("volume_input", volume_in),
                            ("calendar_src", calendar)):
            conn.register(name, frame)
        conn.execute("CREATE TEMP TABLE calendar_input AS "
                     "SELECT CAST(date AS DATE) AS date FROM calendar_src")
        conn.execute(_SQL_ROWS)
        conn.execute(_SQL_STATES)
        conn.execute(_SQL_EVENTS_PUBLISHED if alignment == "published" else _SQL_EVENTS_WEEK)
        conn.execute(_SQL_STATS, {"z_window": z_window, "z_min_periods": z_min_periods,
                                  "epsilon": _STD_EPSILON})
        # no NULLs (coalesced in the SQL), so plain arrays, not masked ones
        events = {name: np.asarray(values)
                  for name, values in conn.execute(_SQL_EVENT_ARRAYS).fetchnumpy().items()}
    finally:
        conn.close()
    row, status = _daily_arrays(events, len(symbol_names), days, alignment)
    return _finish(events, row, status, dates, days, symbol_names, alignment)


def _calendar_frame(weekly_in: pd.DataFrame, dates: pd.DatetimeIndex) -> pd.DataFrame:
    """XNYS sessions of every week the weekly data or the output touches."""
    bounds = [d for d in (weekly_in["week_start_date"].min(), dates.min() if len(dates) else None)
              if d is not None and not pd.isna(d)]
    ends = [d for d in (weekly_in["week_start_date"].max(), dates.max() if len(dates) else None)
            if d is not None and not pd.isna(d)]
    if not bounds:
        return pd.DataFrame({"date": pd.Series([], dtype="datetime64[us]")})
    first = min(bounds) - pd.Timedelta(days=7)
    last = max(ends) + pd.Timedelta(days=7)
    index = trading_calendar.sessions_index(first.date(), last.date())
    return pd.DataFrame({"date": index.astype("datetime64[us]")})


def load_otc_inputs(conn: duckdb.DuckDBPyConnection, symbols: Sequence[str],
                    start: dt.date | str, end: dt.date | str, *, z_window: int = 12,
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the inputs of :func:`otc_daily_block` for ``symbols`` (normalised) and a date range.

    Loads weekly revisions from ``z_window + EXTRA_WARMUP_WEEKS`` weeks before ``start`` up to
    ``end`` (so the first day has a full z window) and the daily bar volumes of the same span.
    Returns ``(weekly, daily_volume)``.
    """
    first_day = trading_calendar.to_date(start)
    last_day = trading_calendar.to_date(end)
    warm = first_day - dt.timedelta(days=7 * (z_window + EXTRA_WARMUP_WEEKS))
    warm -= dt.timedelta(days=warm.weekday())
    names = list(symbols)
    weekly = conn.execute(
        "SELECT symbol_norm AS symbol, week_start_date, tier, summary_type, share_quantity, "
        "initial_published_date, last_update_date FROM finra_otc_weekly_raw "
        "WHERE list_contains(?, symbol_norm) AND week_start_date BETWEEN ? AND ? "
        "ORDER BY symbol_norm, week_start_date", [names, warm, last_day]).df()
    volume = conn.execute(
        "SELECT symbol, date, volume FROM prices_daily "
        "WHERE list_contains(?, symbol) AND date BETWEEN ? AND ? ORDER BY symbol, date",
        [names, warm, last_day]).df()
    return weekly, volume
