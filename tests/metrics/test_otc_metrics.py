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


_DELAY_DAYS = {"T1": 21, "T2": 35, "OTCE": 35}


def _random_otc_inputs(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DatetimeIndex]:
    """Random weekly revisions (missing weeks and parts, late revisions, explicit publication
    dates, T1/T2/OTCE) and daily bars with a few sessions missing."""
    rng = np.random.default_rng(seed)
    weeks = pd.date_range("2023-01-02", periods=30, freq="7D")
    rows = []
    for symbol, tier in (("AAA", "T1"), ("BBB", "T2"), ("CCC", "OTCE"), ("DDD", "T1")):
        for week in weeks:
            if rng.random() < 0.15:
                continue  # a missing week: later days carry an older week (Staled)
            published = None
            if rng.random() < 0.3:
                published = week + pd.Timedelta(days=int(rng.integers(15, 40)))
            rule = week + pd.Timedelta(days=_DELAY_DAYS[tier])
            for kind in ("ATS", "OTC"):
                if rng.random() < 0.15:
                    continue  # only one part reported this week
                updated = rule if published is None else published
                rows.append(_row(symbol, str(week.date()), kind, float(rng.integers(1, 9000)),
                                 str(updated.date()), tier,
                                 str(published.date()) if published is not None else None))
                for _ in range(int(rng.integers(0, 3))):  # revisions, each strictly later
                    updated = updated + pd.Timedelta(days=int(rng.integers(1, 25)))
                    rows.append(_row(symbol, str(week.date()), kind,
                                     float(rng.integers(1, 9000)), str(updated.date()), tier,
                                     str(published.date()) if published is not None else None))
    weekly = pd.DataFrame(rows).sample(frac=1.0, random_state=seed)  # input order is irrelevant
    volume = pd.concat([_volume(s, "2022-12-26", "2023-10-31") for s in ("AAA", "BBB", "CCC")])
    volume["volume"] = rng.integers(2_000, 60_000, len(volume)).astype(float)
    volume = volume[rng.random(len(volume)) > 0.02]  # some weeks lack a bar: NULL rate
    return weekly, volume, tc.sessions_index("2023-02-15", "2023-09-29")


def _slow_reference(weekly: pd.DataFrame, volume: pd.DataFrame, sessions: pd.DatetimeIndex,
                    symbols: list[str], alignment: str, window: int,
                    min_periods: int) -> pd.DataFrame:
    """The module docstring's rules as plain loops over (symbol, session): the oracle."""
    rows = weekly.copy()
    rule = rows["week_start_date"] + pd.to_timedelta(
        rows["tier"].map(_DELAY_DAYS).fillna(35), unit="D")
    rows["known"] = np.maximum(rows["initial_published_date"].fillna(rule),
                               rows["last_update_date"])
    bars = volume.set_index(["symbol", "date"])["volume"].to_dict()
    far_future = pd.Timestamp("2262-01-01")
    revisions: dict[tuple[str, pd.Timestamp], list[tuple]] = {}
    for rec in rows.itertuples(index=False):
        revisions.setdefault((rec.symbol, rec.week_start_date), []).append(
            (rec.known, rec.summary_type, rec.share_quantity, rec.tier))

    def value(symbol: str, week: pd.Timestamp, day: pd.Timestamp) -> tuple | None:
        """(off-exchange volume, rate, tier) of a week as known on ``day``; None if unknown."""
        mine = sorted(r for r in revisions.get((symbol, week), []) if r[0] <= day)
        if not mine:
            return None
        latest = {kind: qty for _, kind, qty, _ in mine}  # sorted by known: newest wins
        off = latest.get("ATS_W_SMBL", 0.0) + latest.get("OTC_W_SMBL", 0.0)
        tier = mine[-1][3]
        days = tc.sessions_index(week, week + pd.Timedelta(days=6))
        total = sum(bars.get((symbol, d), np.nan) for d in days)
        rate = min(off / total, 1.0) if not np.isnan(total) and total > 0 else np.nan
        return off, rate, tier

    out = []
    for symbol in symbols:
        for day in sessions:
            seen = day if alignment == "published" else far_future
            visible = [w for (s, w), revs in revisions.items()
                       if s == symbol and min(r[0] for r in revs) <= seen]
            if alignment == "published":
                week = max(visible, default=None)
            else:
                monday = day - pd.Timedelta(days=day.weekday())
                week = monday if monday in visible else None
            if week is None:
                out.append((symbol, day, pd.NaT, np.nan, np.nan, np.nan, np.nan, "None"))
                continue
            off, rate, tier = value(symbol, week, seen)
            rates = []
            for lag in range(window):
                known = value(symbol, week - pd.Timedelta(days=7 * lag), seen)
                rates.append(known[1] if known is not None else np.nan)
            valid = np.array([r for r in rates if not np.isnan(r)])
            z = np.nan
            if len(valid) >= min_periods and valid.std() > 1e-12 and not np.isnan(rate):
                z = (rate - valid.mean()) / valid.std()
            status = "Anchored"
            if alignment == "published":
                due = day - pd.Timedelta(days=_DELAY_DAYS.get(tier, 35))
                status = "Anchored" if week >= due - pd.Timedelta(days=due.weekday()) else "Staled"
            out.append((symbol, day, week, off, rate, z, rate - rates[1], status))
    return pd.DataFrame(out, columns=["symbol", "date", "otc_week_used",
                                      "otc_off_exchange_volume", "otc_participation_rate",
                                      "otc_participation_z", "otc_participation_delta",
                                      "otc_status"])


@pytest.mark.parametrize("alignment", ["published", "week"])
@pytest.mark.parametrize("seed", [11, 12])
def test_fast_path_equals_a_slow_reference_on_random_revisions(alignment: str,
                                                               seed: int) -> None:
    weekly, volume, sessions = _random_otc_inputs(seed)
    symbols = ["DDD", "AAA", "ZZZ", "CCC", "BBB"]  # caller's order; ZZZ has no data at all
    got = otc_daily_block(weekly, volume, sessions, alignment=alignment, z_window=6,
                          z_min_periods=3, symbols=symbols)
    want = _slow_reference(weekly, volume, sessions, symbols, alignment, 6, 3)
    assert list(got.columns) == OUTPUT_COLUMNS and len(got) == len(want)
    for col in ("symbol", "date", "otc_week_used", "otc_status"):
        assert got[col].tolist() == want[col].tolist(), col
    for col in ("otc_off_exchange_volume", "otc_participation_rate", "otc_participation_z",
                "otc_participation_delta"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-12, atol=1e-12, err_msg=col)
    assert (got["has_otc"] == (want["otc_status"] != "None")).all()
    assert (got["otc_alignment"] == alignment).all()
    # the comparison is not vacuous: every kind of day occurs
    statuses = set(want["otc_status"])
    assert statuses == ({"None", "Anchored", "Staled"} if alignment == "published"
                        else {"None", "Anchored"})
    assert want["otc_participation_z"].notna().sum() > 100
    assert want["otc_participation_rate"].isna().sum() > 10  # incomplete weeks
