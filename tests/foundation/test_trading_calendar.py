"""XNYS sessions: holidays, unscheduled closures and the helper functions."""

from __future__ import annotations

import datetime as dt

import pytest

from darkpool_analysis import trading_calendar as tc


def test_sessions_skip_weekends_holidays_and_unscheduled_closures() -> None:
    days = tc.sessions_between("2018-12-03", "2018-12-07")
    assert dt.date(2018, 12, 5) not in days  # national day of mourning (G.H.W. Bush)
    assert len(days) == 4
    assert not tc.is_session("2025-01-09")  # national day of mourning (Carter)
    assert not tc.is_session("2020-12-25")
    assert not tc.is_session("2021-01-16")  # Saturday
    assert tc.is_session("2021-01-15")


def test_session_count_of_the_real_regsho_sample() -> None:
    # ../shared/data/real/regsho_daily/McNuggett_2020-12_2021-02 holds 51 consecutive sessions
    assert len(tc.sessions_between("2020-12-01", "2021-02-12")) == 51


def test_previous_and_last_n() -> None:
    assert tc.previous_session("2020-12-28") == dt.date(2020, 12, 24)
    assert tc.previous_session("2021-01-04") == dt.date(2020, 12, 31)
    assert tc.last_n_sessions(3, "2021-01-03") == [
        dt.date(2020, 12, 29), dt.date(2020, 12, 30), dt.date(2020, 12, 31)
    ]
    assert tc.last_n_sessions(0, "2021-01-03") == []
    assert tc.session_offset("2020-12-31", 1) == dt.date(2021, 1, 4)
    assert tc.session_offset("2021-01-04", -1) == dt.date(2020, 12, 31)


def test_empty_and_reversed_ranges() -> None:
    assert tc.sessions_between("2021-01-16", "2021-01-17") == []
    assert tc.sessions_between("2021-02-01", "2021-01-01") == []
    assert len(tc.sessions_index("2021-01-01", "2021-01-31")) == 19


@pytest.mark.parametrize("text", ["2021-13-01", "yesterday", "2021/01/04"])
def test_bad_dates_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="expected YYYY-MM-DD"):
        tc.to_date(text)


def test_compact_date_format() -> None:
    assert tc.to_date("20210104") == dt.date(2021, 1, 4)


def test_cached_sessions_equal_exchange_calendars() -> None:
    """The on-disk session cache (start-up speed) gives exchange_calendars' own answers."""
    import pandas as pd

    cal = tc.calendar()
    expected = cal.sessions_in_range("2009-01-02", "2025-12-31")
    assert tc.sessions_index("2009-01-02", "2025-12-31").equals(pd.DatetimeIndex(expected))
    for day in pd.date_range("2019-12-20", "2020-01-10"):
        assert tc.is_session(day) == cal.is_session(day)
        assert tc.previous_session(day) == cal.date_to_session(
            day - pd.Timedelta(days=1), "previous").date()
        session = cal.date_to_session(day, "previous")
        assert tc.session_offset(day, 3) == cal.session_offset(session, 3).date()
        assert tc.session_offset(day, -3) == cal.session_offset(session, -3).date()
    assert tc._cache_file(tc._calendar_end()).exists()
    tc._session_days.cache_clear()  # read back from the file: the same sessions
    assert tc.sessions_index("2009-01-02", "2025-12-31").equals(pd.DatetimeIndex(expected))
