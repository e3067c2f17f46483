"""A DIX-style dark index over a dated membership (SqueezeMetrics' DIX, "Short is Long").

Per session ``t`` over the members ``i`` on ``t`` that have data on ``t``::

    dix_t              = sum_i(ShortVolume_i x close_i) / sum_i(TotalVolume_i x close_i)
    dpi_equal_weight_t = mean_i(ShortVolume_i / TotalVolume_i)
    dollar_coverage_t  = sum_{i with data}(volume_i x close_i) / sum_{all i}(volume_i x close_i)

ShortVolume/TotalVolume are the consolidated FINRA Reg SHO row (``daily_metrics.short_volume``
and ``total_volume`` with ``short_source`` CNMS or FACILITY_SUM), ``close`` and ``volume``
(consolidated) the session's price bar. A member *has data* on ``t`` when it has that short row
with TotalVolume > 0 and a close > 0. A session where fewer than half the members have data
(or with no members) is a **gap**: ``dix``, ``dpi_equal_weight`` and ``dix_z`` are NaN, the
counts and the coverage are still reported. ``dix_z`` is the rolling z of ``dix`` over the last
``z_window`` sessions (population std, at least ``min_periods`` values, gaps skipped); a
warm-up of ``z_window - 1`` sessions before ``start`` is read so the first day has a full window.

The aggregation is one DuckDB query (a range join of the sessions with the spans, a join with
``daily_metrics``, a GROUP BY date); nothing loops per member or per date in Python.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import duckdb
import numpy as np
import pandas as pd

from darkpool_analysis import scoring, trading_calendar
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, NoDataError
from darkpool_analysis.market import _db
from darkpool_analysis.market.membership import (
    Membership,
    load_membership,
    static_membership,
    universe_membership,
)
from darkpool_analysis.market.universes import get_universe, load_universes
from darkpool_analysis.store import settle

log = logging.getLogger(__name__)

#: The index frame's (and CSV's) columns, in order.
INDEX_COLUMNS: Final[tuple[str, ...]] = ("date", "dix", "dpi_equal_weight", "members",
                                         "members_with_data", "dollar_coverage", "dix_z")
#: Short-row sources that are the consolidated NMS row (FORF = OTC equities, not included).
CONSOLIDATED_SOURCES: Final[tuple[str, ...]] = ("CNMS", "FACILITY_SUM")
#: A session with fewer than this share of its members with data is a gap.
MIN_MEMBER_SHARE: Final = 0.5

MembersLike = Membership | Path | str | Sequence[str]

_INDEX_SQL = f"""
WITH sessions AS (
    SELECT CAST(unnest($sessions::TIMESTAMP[]) AS DATE) AS date
), spans AS (
    SELECT symbol, CAST(start_date AS DATE) AS start_date, CAST(end_date AS DATE) AS end_date
    FROM _market_spans
), member_days AS (
    SELECT s.date, m.symbol
    FROM sessions s JOIN spans m
      ON s.date >= m.start_date AND (m.end_date IS NULL OR s.date < m.end_date)
), metrics AS (
    SELECT symbol, date, short_volume, total_volume, close, volume,
           short_source IN {CONSOLIDATED_SOURCES} AND short_volume IS NOT NULL
               AND total_volume > 0 AND close > 0 AS has_data
    FROM daily_metrics
    WHERE date BETWEEN $first AND $last
      AND symbol IN (SELECT DISTINCT symbol FROM spans)
), member_rows AS (
    SELECT md.date, md.symbol, m.short_volume, m.total_volume, m.close, m.volume,
           coalesce(m.has_data, false) AS has_data,
           m.volume > 0 AND m.close > 0 AS has_dollars
    FROM member_days md LEFT JOIN metrics m ON m.symbol = md.symbol AND m.date = md.date
)
SELECT CAST(grouping(date) AS INTEGER) AS by_symbol, date, symbol,
       count(*) AS members,
       count(*) FILTER (WHERE has_data) AS members_with_data,
       sum(short_volume * close) FILTER (WHERE has_data) AS short_dollars,
       sum(total_volume * close) FILTER (WHERE has_data) AS total_dollars,
       avg(short_volume / total_volume) FILTER (WHERE has_data) AS dpi_equal_weight,
       sum(volume * close) FILTER (WHERE has_data AND has_dollars) AS covered_dollars,
       sum(volume * close) FILTER (WHERE has_dollars) AS member_dollars,
       count(*) FILTER (WHERE date >= $shown) AS shown_days,
       count(*) FILTER (WHERE has_data AND date >= $shown) AS shown_data_days
FROM member_rows
GROUP BY GROUPING SETS ((date), (symbol))
"""

def resolve_members(members: MembersLike, *, name: str | None = None,
                    symbols: Sequence[str] | None = None) -> Membership:
    """A :class:`Membership` from a membership object, a CSV path, a universe name (``all``
    needs ``symbols``) or a list of tickers (static: member on every session)."""
    if isinstance(members, Membership):
        return members if name is None else Membership(name, members.spans, members.source)
    if isinstance(members, Path) or (isinstance(members, str) and (
            members.lower().endswith(".csv") or Path(members).is_file())):
        return load_membership(members, name=name)
    if isinstance(members, str):
        universe = get_universe(members, load_universes())
        membership = universe_membership(universe, symbols)
        return membership if name is None else Membership(name, membership.spans,
                                                          membership.source)
    tickers = list(members)
    return static_membership(tickers, name=name or "custom", source="tickers")


def finish_index(raw: pd.DataFrame, first: dt.date, *, z_window: int,
                 min_periods: int, min_member_share: float = MIN_MEMBER_SHARE) -> pd.DataFrame:
    """Apply the gap rule and the rolling z to the per-session aggregate, then drop the
    warm-up before ``first`` (pure). ``raw`` has every :data:`INDEX_COLUMNS` but ``dix_z``."""
    frame = raw.copy()
    frame["date"] = pd.to_datetime(frame["date"])
    members = frame["members"].to_numpy(dtype=np.int64)
    with_data = frame["members_with_data"].to_numpy(dtype=np.int64)
    gap = (members == 0) | (with_data < min_member_share * members)
    frame.loc[gap, ["dix", "dpi_equal_weight"]] = np.nan
    frame["dix_z"] = scoring.rolling_zscore(frame["dix"], z_window, min(min_periods, z_window))
    frame["members"] = members
    frame["members_with_data"] = with_data
    frame = frame.loc[frame["date"] >= pd.Timestamp(first), list(INDEX_COLUMNS)]
    return frame.reset_index(drop=True)


def query_index(conn: duckdb.DuckDBPyConnection, membership: Membership,
                sessions: pd.DatetimeIndex, shown: dt.date | None = None) -> pd.DataFrame:
    """Run the aggregation for ``sessions`` (sorted) on an open read-only connection.

    One scan gives both the per-session sums (every column of :data:`INDEX_COLUMNS` but
    ``dix_z``) and, per member, whether it had data on any session from ``shown`` on (default
    the first session): those that never did are in ``attrs["members_without_data"]``.
    """
    settle(conn)
    conn.register("_market_spans", membership.frame())
    try:
        params = {"sessions": list(sessions.to_pydatetime()),
                  "first": sessions[0].date(), "last": sessions[-1].date(),
                  "shown": shown or sessions[0].date()}
        grouped = conn.execute(_INDEX_SQL, params).df()
    finally:
        settle(conn)
        conn.unregister("_market_spans")
    per_symbol = grouped.loc[grouped["by_symbol"] == 1]
    silent = sorted(per_symbol.loc[(per_symbol["shown_days"] > 0)
                                   & (per_symbol["shown_data_days"] == 0), "symbol"])
    per_date = grouped.loc[grouped["by_symbol"] == 0].copy()
    per_date["date"] = pd.to_datetime(per_date["date"])
    per_date = per_date.set_index("date").reindex(pd.DatetimeIndex(sessions, name="date"))
    frame = pd.DataFrame({
        "date": per_date.index,
        "dix": (per_date["short_dollars"] / per_date["total_dollars"]).to_numpy(dtype=float),
        "dpi_equal_weight": per_date["dpi_equal_weight"].to_numpy(dtype=float),
        "members": per_date["members"].fillna(0).to_numpy(dtype=np.int64),
        "members_with_data": per_date["members_with_data"].fillna(0).to_numpy(dtype=np.int64),
        "dollar_coverage": (per_date["covered_dollars"]
                            / per_date["member_dollars"]).to_numpy(dtype=float),
    })
    frame.attrs["members_without_data"] = [str(x) for x in silent]
    return frame


def index(
    members: MembersLike,
    start: trading_calendar.DateLike,
    end: trading_calendar.DateLike,
    *,
    name: str | None = None,
    z_window: int | None = None,
    min_periods: int | None = None,
    db_path: Path | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """The DIX-style dark index per XNYS session in ``[start, end]``.

    Parameters
    ----------
    members
        A membership CSV path (``ticker,start_date,end_date``), a :class:`Membership`, a
        universe name (static membership; ``all`` = every symbol) or a list of tickers.
    start, end
        Inclusive range; clipped to the dates ``daily_metrics`` covers.
    name
        Index name for titles (default: the file stem or universe name).
    z_window, min_periods
        Rolling z of ``dix`` (default ``short_z_window`` / ``zscore_min_periods``).
    db_path, settings
        Published database (opened read-only) and settings (default :func:`load_config`).

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`INDEX_COLUMNS`, one row per session (gaps included, as NaN).
        ``attrs``: ``name``, ``source``, ``start``, ``end``, ``z_window``,
        ``members_without_data`` (members that never had data in the range), ``synthetic``,
        ``label`` (the synthetic-data label or ``None``) and ``db_path``.

    Raises
    ------
    NoDataError
        No member has data on any session of the range (the message names the membership
        file and its lines), or the range holds no session of the database.
    DataFormatError
        A malformed membership file (names the file, line and field).

    Examples
    --------
    >>> frame = index("spx_members.csv", "2021-01-04", "2021-02-12", name="SPX")  # doctest: +SKIP
    >>> frame[["date", "dix", "dix_z", "members_with_data"]].tail(3)  # doctest: +SKIP
    """
    first, last = trading_calendar.to_date(start), trading_calendar.to_date(end)
    if first > last:
        raise ConfigError(f"start {first} is after end {last}")
    with _db.open_db(db_path, settings) as (conn, context):
        cfg = context.settings
        window = int(z_window if z_window is not None else cfg.short_z_window)
        periods = int(min_periods if min_periods is not None else cfg.zscore_min_periods)
        if window < 2:
            raise ConfigError(f"z window must be at least 2 sessions, got {window}")
        symbols = (_db.database_symbols(conn)
                   if isinstance(members, str) and members.strip().lower() == "all" else None)
        membership = resolve_members(members, name=name, symbols=symbols)
        db_first, db_last = _db.coverage(conn)
        shown = trading_calendar.sessions_index(max(first, db_first), min(last, db_last))
        if shown.empty:
            raise NoDataError(
                f"no XNYS session between {first} and {last} inside the database's dates "
                f"({db_first} .. {db_last})", hint="pick dates inside that coverage")
        warm_start = trading_calendar.session_offset(shown[0].date(), -(window - 1))
        sessions = trading_calendar.sessions_index(warm_start, shown[-1].date())
        raw = query_index(conn, membership, sessions, shown[0].date())
        silent = raw.attrs["members_without_data"]
        raw.attrs = {}
        frame = finish_index(raw, shown[0].date(), z_window=window, min_periods=periods)
        if not bool((frame["members_with_data"] > 0).any()):
            lines = membership.spans["line"].dropna()
            where = (f" (lines {int(lines.min())}-{int(lines.max())})" if len(lines) else "")
            raise NoDataError(
                f"{membership.source}: none of its {membership.spans['symbol'].nunique()} "
                f"members{where} has FINRA short volume and a close on any session between "
                f"{shown[0].date()} and {shown[-1].date()}",
                hint="ingest short volume and prices for the members "
                     "(`darkpool ingest finra-short`, `darkpool ingest prices`), or check the "
                     "tickers and dates in the membership file")
    frame.attrs.update(context.attrs())
    frame.attrs.update({"name": membership.name, "source": membership.source,
                        "start": shown[0].date().isoformat(),
                        "end": shown[-1].date().isoformat(),
                        "z_window": window, "members_without_data": silent})
    log.debug("dark index %s %s..%s: %d sessions, %d gaps", membership.name, shown[0].date(),
              shown[-1].date(), len(frame), int(frame["dix"].isna().sum()))
    return frame


def proxy_close(symbol: str, start: trading_calendar.DateLike, end: trading_calendar.DateLike,
                *, db_path: Path | None = None,
                settings: Settings | None = None) -> pd.Series:
    """Closing prices of ``symbol`` (e.g. the index proxy ``SPY``) on ``[start, end]``, indexed
    by date (empty when the database has none)."""
    from darkpool_analysis.market.universes import normalise_ticker

    ticker = normalise_ticker(symbol, source="--proxy")
    with _db.open_db(db_path, settings) as (conn, _context):
        rows = conn.execute(
            "SELECT date, close FROM daily_metrics WHERE symbol = ? AND date BETWEEN ? AND ? "
            "AND close IS NOT NULL ORDER BY date",
            [ticker, trading_calendar.to_date(start), trading_calendar.to_date(end)]).df()
    series = pd.Series(rows["close"].to_numpy(dtype=float),
                       index=pd.DatetimeIndex(pd.to_datetime(rows["date"]), name="date"),
                       name=ticker)
    return series


__all__ = ["CONSOLIDATED_SOURCES", "INDEX_COLUMNS", "MIN_MEMBER_SHARE", "finish_index",
           "index", "proxy_close", "query_index", "resolve_members"]
