"""Point-in-time OTC block: visibility, revisions, participation, z oracle, week alignment."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from darkpool_analysis import trading_calendar as tc
from darkpool_analysis.otc_metrics import OUTPUT_COLUMNS, load_otc_inputs, otc_daily_block
from darkpool_analysis.store import migrate


def _row(symbol: str, week: str, kind: str, qty: float, updated: str, tier: str = "T1",
         published: str | None = None) -> dict[str, object]:
    return {"symbol": symbol, "week_start_date": pd.Timestamp(week), "tier": tier,
            "summary_type": f"{kind}_W_SMBL", "share_quantity": qty,
            "last_update_date": pd.Timestamp(updated),
            "initial_published_date": pd.Timestamp(published) if published else pd.NaT}


def _volume(symbol: str, start: str, end: str, volume: float = 1000.0) -> pd.DataFrame:
    days = tc.sessions_index(start, end)
    return pd.DataFrame({"symbol": symbol, "date": days, "volume": volume})


def _day(frame: pd.DataFrame, day: str, symbol: str = "AAA") -> pd.Series:
    hit = frame[(frame["symbol"] == symbol) & (frame["date"] == pd.Timestamp(day))]
    assert len(hit) == 1
    return hit.iloc[0]


def test_week_visible_on_publication_date_not_a_day_earlier() -> None:
    # Week of Mon 2024-03-04 (T1): rule date = +21 days = Mon 2024-03-25.
    weekly = pd.DataFrame([_row("AAA", "2024-03-04", "ATS", 300, "2024-03-25"),
                           _row("AAA", "2024-03-04", "OTC", 200, "2024-03-25")])
    sessions = tc.sessions_index("2024-03-18", "2024-03-28")
    out = otc_daily_block(weekly, _volume("AAA", "2024-02-26", "2024-03-29"), sessions)
    assert list(out.columns) == OUTPUT_COLUMNS
    before, on = _day(out, "2024-03-22"), _day(out, "2024-03-25")
    assert before["otc_status"] == "None" and not before["has_otc"]
    assert pd.isna(before["otc_week_used"]) and pd.isna(before["otc_participation_rate"])
    assert on["otc_week_used"] == pd.Timestamp("2024-03-04") and on["has_otc"]
    assert on["otc_off_exchange_volume"] == 500  # ATS + OTC
    assert on["otc_participation_rate"] == pytest.approx(500 / 5000)
    assert on["otc_status"] == "Anchored" and on["otc_alignment"] == "published"


def test_initial_published_date_wins_over_the_rule_and_t2_waits_four_weeks() -> None:
    weekly = pd.DataFrame([
        # Published late (Wednesday) although the rule says Monday 2024-03-25.
        _row("AAA", "2024-03-04", "ATS", 100, "2024-03-27", published="2024-03-27"),
        # T2 without a publication date: visible from 2024-03-04 + 35 days = 2024-04-08.
        _row("BBB", "2024-03-04", "ATS", 100, "2024-04-08", tier="T2"),
    ])
    sessions = tc.sessions_index("2024-03-25", "2024-04-09")
    volume = pd.concat([_volume(s, "2024-03-01", "2024-04-10") for s in ("AAA", "BBB")])
    out = otc_daily_block(weekly, volume, sessions)
    assert _day(out, "2024-03-26")["otc_status"] == "None"
    assert _day(out, "2024-03-27")["otc_status"] == "Anchored"
    assert _day(out, "2024-04-05", "BBB")["otc_status"] == "None"
    assert _day(out, "2024-04-08", "BBB")["otc_week_used"] == pd.Timestamp("2024-03-04")


def test_updated_week_changes_later_days_only() -> None:
    weekly = pd.DataFrame([
        _row("AAA", "2024-03-04", "ATS", 400, "2024-03-25"),
        _row("AAA", "2024-03-04", "ATS", 900, "2024-04-03"),  # revision ("Updated")
    ])
    sessions = tc.sessions_index("2024-03-25", "2024-04-05")
    out = otc_daily_block(weekly, _volume("AAA", "2024-03-01", "2024-04-05"), sessions)
    assert _day(out, "2024-04-02")["otc_off_exchange_volume"] == 400
    assert _day(out, "2024-04-03")["otc_off_exchange_volume"] == 900
    assert (out.loc[out["date"] < "2024-04-03", "otc_off_exchange_volume"] == 400).all()


def test_week_alignment_is_look_ahead_and_labelled() -> None:
    weekly = pd.DataFrame([_row("AAA", "2024-03-04", "ATS", 400, "2024-03-25"),
                           _row("AAA", "2024-03-04", "ATS", 900, "2024-04-03")])
    sessions = tc.sessions_index("2024-03-04", "2024-03-29")
    volume = _volume("AAA", "2024-03-01", "2024-04-05")
    week = otc_daily_block(weekly, volume, sessions, alignment="week")
    published = otc_daily_block(weekly, volume, sessions)
    inside = week[(week["date"] >= "2024-03-04") & (week["date"] <= "2024-03-08")]
    # The week's final values on the days inside it, although FINRA published them later.
    assert (inside["otc_off_exchange_volume"] == 900).all() and inside["has_otc"].all()
    assert (week["otc_alignment"] == "week").all()
    assert _day(week, "2024-03-11")["otc_status"] == "None"
    assert _day(published, "2024-03-06")["otc_status"] == "None"
    assert (published["otc_alignment"] == "published").all()


def test_participation_uses_week_sessions_caps_at_one_and_needs_complete_bars() -> None:
    weekly = pd.DataFrame([
        _row("AAA", "2024-01-15", "ATS", 3000, "2024-02-05"),  # MLK week: 4 sessions
        _row("AAA", "2024-01-22", "ATS", 9000, "2024-02-12"),  # more than consolidated
        _row("AAA", "2024-01-29", "ATS", 100, "2024-02-20"),  # bars missing one session
    ])
    volume = _volume("AAA", "2024-01-10", "2024-02-23")
    volume = volume[volume["date"] != pd.Timestamp("2024-01-31")]
    out = otc_daily_block(weekly, volume, tc.sessions_index("2024-02-05", "2024-02-23"))
    assert _day(out, "2024-02-05")["otc_participation_rate"] == pytest.approx(3000 / 4000)
    assert _day(out, "2024-02-12")["otc_participation_rate"] == 1.0
    assert _day(out, "2024-02-12")["otc_participation_delta"] == pytest.approx(0.25)
    assert pd.isna(_day(out, "2024-02-20")["otc_participation_rate"])
    assert _day(out, "2024-02-20")["otc_off_exchange_volume"] == 100


def test_status_staled_when_an_expected_week_is_missing() -> None:
    weekly = pd.DataFrame([_row("AAA", "2024-03-04", "ATS", 100, "2024-03-25")])
    out = otc_daily_block(weekly, _volume("AAA", "2024-03-01", "2024-04-05"),
                          tc.sessions_index("2024-03-25", "2024-04-05"))
    assert (out.loc[out["date"] < "2024-04-01", "otc_status"] == "Anchored").all()
    # From Monday 2024-04-01 the week of 2024-03-11 is due but absent: the old week is carried.
    later = out[out["date"] >= "2024-04-01"]
    assert (later["otc_status"] == "Staled").all() and later["has_otc"].all()
    assert (later["otc_week_used"] == pd.Timestamp("2024-03-04")).all()


def _pandas_reference(weekly: pd.DataFrame, volume: pd.DataFrame, sessions: pd.DatetimeIndex,
                      window: int, min_periods: int) -> pd.DataFrame:
    """Plain, loop-based oracle for data without revisions (T1, rule publication)."""
    rows = []
    for symbol, group in weekly.groupby("symbol"):
        off = group.groupby("week_start_date")["share_quantity"].sum()
        weeks = pd.date_range(off.index.min(), off.index.max(), freq="7D")
        vol = volume[volume["symbol"] == symbol].set_index("date")["volume"]
        rate = pd.Series(np.nan, index=weeks)
        for week in weeks:
            days = tc.sessions_index(week, week + pd.Timedelta(days=6))
            if week in off.index and vol.reindex(days).notna().all():
                rate[week] = min(off[week] / vol.reindex(days).sum(), 1.0)
        mean = rate.rolling(window, min_periods=min_periods).mean()
        std = rate.rolling(window, min_periods=min_periods).std(ddof=0)
        z = ((rate - mean) / std).where(std > 1e-12)
        delta = rate - rate.shift(1)
        for day in sessions:
            visible = [w for w in off.index if w + pd.Timedelta(days=21) <= day]
            if not visible:
                rows.append((symbol, day, np.nan, np.nan, np.nan))
                continue
            week = max(visible)
            rows.append((symbol, day, rate[week], z[week], delta[week]))
    return pd.DataFrame(rows, columns=["symbol", "date", "rate", "z", "delta"])


def test_z_and_delta_match_a_plain_pandas_reference() -> None:
    rng = np.random.default_rng(7)
    weeks = pd.date_range("2023-01-02", periods=40, freq="7D")
    rows = []
    for symbol in ("AAA", "BBB", "CCC"):
        for week in weeks:
            if rng.random() < 0.1:
                continue  # a week without OTC volume
            for kind in ("ATS", "OTC"):
                rows.append(_row(symbol, str(week.date()), kind, float(rng.integers(1, 5000)),
                                 str((week + pd.Timedelta(days=21)).date())))
    weekly = pd.DataFrame(rows)
    volume = pd.concat([_volume(s, "2022-12-26", "2023-12-29", 20_000.0)
                        for s in ("AAA", "BBB", "CCC")])
    volume["volume"] = rng.integers(5_000, 40_000, len(volume)).astype(float)
    sessions = tc.sessions_index("2023-02-01", "2023-11-30")
    got = otc_daily_block(weekly, volume, sessions, z_window=8, z_min_periods=3)
    want = _pandas_reference(weekly, volume, sessions, 8, 3)
    np.testing.assert_allclose(got["otc_participation_rate"], want["rate"], rtol=1e-12)
    np.testing.assert_allclose(got["otc_participation_z"], want["z"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["otc_participation_delta"], want["delta"], rtol=1e-9,
                               atol=1e-15)
    assert got["otc_participation_z"].notna().sum() > 500  # the comparison is not vacuous


def test_empty_weekly_input_gives_none_rows() -> None:
    weekly = pd.DataFrame(columns=["symbol", "week_start_date", "tier", "summary_type",
                                   "share_quantity", "last_update_date"])
    out = otc_daily_block(weekly, _volume("AAA", "2024-03-01", "2024-03-08"),
                          tc.sessions_index("2024-03-04", "2024-03-08"))
    assert len(out) == 5 and (out["otc_status"] == "None").all() and not out["has_otc"].any()


def test_load_otc_inputs_reads_a_real_duckdb_file(tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / "t.duckdb"))
    migrate(conn)
    conn.execute(
        "INSERT INTO finra_otc_weekly_raw (week_start_date, tier, summary_type, symbol, "
        "symbol_norm, share_quantity, last_update_date, source, fetched_at) VALUES "
        "('2024-03-04', 'T1', 'ATS_W_SMBL', 'BRK.B', 'BRK.B', 500, '2024-03-25', 'api', now()),"
        "('2022-03-07', 'T1', 'ATS_W_SMBL', 'BRK.B', 'BRK.B', 1, '2022-03-28', 'api', now()),"
        "('2024-03-04', 'T1', 'ATS_W_SMBL', 'MSFT', 'MSFT', 7, '2024-03-25', 'api', now())")
    conn.execute("INSERT INTO prices_daily (symbol, date, volume, provider, fetched_at) "
                 "SELECT 'BRK.B', d, 1000, 'csv', now() FROM "
                 "unnest(generate_series(DATE '2024-03-04', DATE '2024-03-08', "
                 "INTERVAL 1 DAY)) t(d)")
    weekly, volume = load_otc_inputs(conn, ["BRK.B"], dt.date(2024, 3, 25), "2024-03-29")
    conn.close()
    assert list(weekly["symbol"]) == ["BRK.B"]  # MSFT not asked, 2022 outside the warm-up
    assert len(volume) == 5
    out = otc_daily_block(weekly, volume, tc.sessions_index("2024-03-25", "2024-03-29"))
    assert (out["otc_participation_rate"] == 0.1).all()
