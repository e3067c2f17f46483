"""XNYS trading sessions from ``exchange_calendars`` with explicit bounds.

Every date loop in the package is driven from here: a weekday that is not a session (a holiday,
or an unscheduled closure such as 2018-12-05 and 2025-01-09) is never requested or expected.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import exchange_calendars as xcals

log = logging.getLogger(__name__)

CALENDAR_NAME = "XNYS"
#: Reg SHO files start in 2009; keep a margin before that for price history.
CALENDAR_START = pd.Timestamp("2000-01-03")

DateLike = str | dt.date | pd.Timestamp


def _calendar_end() -> pd.Timestamp:
    # exchange_calendars knows scheduled holidays about a year ahead; stay inside that.
    return pd.Timestamp(dt.date.today().year + 1, 12, 31)


@lru_cache(maxsize=2)
def _calendar(end: pd.Timestamp) -> xcals.ExchangeCalendar:
    import exchange_calendars as xcals

    with warnings.catch_warnings():
        # exchange_calendars (<= 4.13) calls Series.values on tz-aware data, which pandas 3.1
        # deprecates; the result is unaffected. Silence only that message.
        warnings.filterwarnings("ignore", message=r"Series\.values returning an ndarray")
        return xcals.get_calendar(CALENDAR_NAME, start=CALENDAR_START, end=end)


def calendar() -> xcals.ExchangeCalendar:
    """The XNYS calendar, bounded from 2000-01-03 to the end of next year."""
    return _calendar(_calendar_end())


def _cache_file(end: pd.Timestamp) -> Path:
    from importlib.metadata import version

    import platformdirs

    name = (f"{CALENDAR_NAME}-{version('exchange-calendars')}-"
            f"{CALENDAR_START:%Y%m%d}-{end:%Y%m%d}.npy")
    return Path(platformdirs.user_cache_dir("darkpool-analysis")) / name


@lru_cache(maxsize=2)
def _session_days(end: pd.Timestamp) -> np.ndarray:
    """Every session as sorted ``datetime64[D]``. Building the calendar computes 27 years of
    holiday rules (most of a command's start-up), so the result is cached on disk per
    exchange_calendars version and bounds; a missing or unreadable cache is rebuilt."""
    path = _cache_file(end)
    try:
        days = np.load(path, allow_pickle=False)
        if days.dtype == np.dtype("datetime64[D]") and len(days):
            return days
    except (OSError, ValueError):
        pass
    days = _calendar(end).sessions.to_numpy().astype("datetime64[D]")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, days, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: compute it each time
        log.debug("could not cache the session calendar at %s: %s", path, exc)
    return days


def _sessions() -> np.ndarray:
    return _session_days(_calendar_end())


def _day64(day: DateLike) -> np.datetime64:
    return np.datetime64(to_date(day), "D")


def _at_or_before(day: np.datetime64) -> int:
    """Position of the last session on or before ``day`` (ValueError before the first)."""
    sessions = _sessions()
    pos = int(np.searchsorted(sessions, day, side="right")) - 1
    if pos < 0:
        raise ValueError(f"{day} is before the first session {sessions[0]}")
    return pos


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


def _range(first: dt.date, last: dt.date) -> np.ndarray:
    sessions = _sessions()
    lo = np.searchsorted(sessions, np.datetime64(first, "D"), side="left")
    hi = np.searchsorted(sessions, np.datetime64(last, "D"), side="right")
    return sessions[lo:hi]


def sessions_between(start: DateLike, end: DateLike) -> list[dt.date]:
    """All XNYS sessions with ``start <= session <= end`` (empty if none)."""
    first, last = to_date(start), to_date(end)
    if first > last:
        return []
    return _range(first, last).astype(object).tolist()


def sessions_index(start: DateLike, end: DateLike) -> pd.DatetimeIndex:
    """Like :func:`sessions_between` but as a tz-naive ``DatetimeIndex`` (fast for joins)."""
    first, last = to_date(start), to_date(end)
    if first > last:
        return pd.DatetimeIndex([])
    return pd.DatetimeIndex(_range(first, last).astype("datetime64[ns]"))


def is_session(day: DateLike) -> bool:
    """True when ``day`` is an XNYS trading session."""
    sessions = _sessions()
    target = _day64(day)
    pos = int(np.searchsorted(sessions, target))
    return pos < len(sessions) and sessions[pos] == target


def previous_session(day: DateLike) -> dt.date:
    """The last session strictly before ``day`` (``day`` need not be a session)."""
    return _sessions()[_at_or_before(_day64(day) - np.timedelta64(1, "D"))].astype(object)


def last_n_sessions(n: int, end: DateLike | None = None) -> list[dt.date]:
    """The ``n`` sessions ending at ``end`` (or the last session on or before it)."""
    if n <= 0:
        return []
    sessions = _sessions()
    end_day = np.datetime64(to_date(end) if end is not None else dt.date.today(), "D")
    last = _at_or_before(min(end_day, sessions[-1]))
    if last + 1 < n:
        raise ValueError(f"fewer than {n} sessions end at {sessions[last]}")
    return sessions[last + 1 - n:last + 1].astype(object).tolist()


def session_offset(day: DateLike, count: int) -> dt.date:
    """The session ``count`` sessions after (count > 0) or before (count < 0) session ``day``."""
    sessions = _sessions()
    pos = _at_or_before(_day64(day)) + count
    if not 0 <= pos < len(sessions):
        raise ValueError(f"{count} sessions from {to_date(day)} is outside the calendar "
                         f"({sessions[0]} .. {sessions[-1]})")
    return sessions[pos].astype(object)
