"""XNYS trading sessions from ``exchange_calendars`` with explicit bounds.

Every date loop in the package is driven from here: a weekday that is not a session (a holiday,
or an unscheduled closure such as 2018-12-05 and 2025-01-09) is never requested or expected.
"""

from __future__ import annotations

import datetime as dt
import warnings
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd

CALENDAR_NAME = "XNYS"
#: Reg SHO files start in 2009; keep a margin before that for price history.
CALENDAR_START = pd.Timestamp("2000-01-03")

DateLike = str | dt.date | pd.Timestamp


def _calendar_end() -> pd.Timestamp:
    # exchange_calendars knows scheduled holidays about a year ahead; stay inside that.
    return pd.Timestamp(dt.date.today().year + 1, 12, 31)


@lru_cache(maxsize=2)
def _calendar(end: pd.Timestamp) -> xcals.ExchangeCalendar:
    with warnings.catch_warnings():
        # exchange_calendars (<= 4.13) calls Series.values on tz-aware data, which pandas 3.1
        # deprecates; the result is unaffected. Silence only that message.
        warnings.filterwarnings("ignore", message=r"Series\.values returning an ndarray")
        return xcals.get_calendar(CALENDAR_NAME, start=CALENDAR_START, end=end)


def calendar() -> xcals.ExchangeCalendar:
    """The XNYS calendar, bounded from 2000-01-03 to the end of next year."""
    return _calendar(_calendar_end())


def to_date(value: DateLike) -> dt.date:
    """Parse a date given as ``YYYY-MM-DD``/``YYYYMMDD`` text, a date or a Timestamp."""
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        if len(text) == 8 and text.isdigit():
            return dt.datetime.strptime(text, "%Y%m%d").date()
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not a date: {value!r} (expected YYYY-MM-DD)") from exc


def _clip(day: dt.date) -> pd.Timestamp:
    cal = calendar()
    ts = pd.Timestamp(day)
    first, last = cal.first_session, cal.last_session
    return min(max(ts, first), last)


def sessions_between(start: DateLike, end: DateLike) -> list[dt.date]:
    """All XNYS sessions with ``start <= session <= end`` (empty if none)."""
    first, last = to_date(start), to_date(end)
    if first > last:
        return []
    index = calendar().sessions_in_range(_clip(first), _clip(last))
    return [ts.date() for ts in index]


def sessions_index(start: DateLike, end: DateLike) -> pd.DatetimeIndex:
    """Like :func:`sessions_between` but as a tz-naive ``DatetimeIndex`` (fast for joins)."""
    first, last = to_date(start), to_date(end)
    if first > last:
        return pd.DatetimeIndex([])
    return pd.DatetimeIndex(calendar().sessions_in_range(_clip(first), _clip(last)))


def is_session(day: DateLike) -> bool:
    """True when ``day`` is an XNYS trading session."""
    return bool(calendar().is_session(pd.Timestamp(to_date(day))))


def previous_session(day: DateLike) -> dt.date:
    """The last session strictly before ``day`` (``day`` need not be a session)."""
    cal = calendar()
    return cal.date_to_session(pd.Timestamp(to_date(day)) - pd.Timedelta(days=1), "previous").date()


def last_n_sessions(n: int, end: DateLike | None = None) -> list[dt.date]:
    """The ``n`` sessions ending at ``end`` (or the last session on or before it)."""
    if n <= 0:
        return []
    cal = calendar()
    end_day = to_date(end) if end is not None else dt.date.today()
    last = cal.date_to_session(_clip(end_day), "previous")
    index = cal.sessions_window(last, -n)
    return [ts.date() for ts in index]


def session_offset(day: DateLike, count: int) -> dt.date:
    """The session ``count`` sessions after (count > 0) or before (count < 0) session ``day``."""
    cal = calendar()
    return cal.session_offset(cal.date_to_session(pd.Timestamp(to_date(day)), "previous"),
                              count).date()
