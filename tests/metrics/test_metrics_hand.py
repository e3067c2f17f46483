"""daily_metrics on a tiny fixture: every expected value below is worked out by hand.

Windows are shrunk (short/return window 3, min_periods 2) so each rolling value can be
checked on paper. Inputs go through a real DuckDB file and ``build_metrics``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dm_fixtures import write_prices, write_short

from darkpool_analysis import metrics as metrics_module
from darkpool_analysis.build import build_metrics
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.metrics import (
    assemble_grid,
    compute_daily_metrics,
    rolling_zscore_grouped,
    symbol_chunks,
)
from darkpool_analysis.scoring import INFERENCE_VERSION
from darkpool_analysis.store import open_writer
from darkpool_analysis.trading_calendar import sessions_index

NAN = math.nan
DAYS = ["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07", "2021-01-08", "2021-01-11",
        "2021-01-12", "2021-01-13"]
# AAA: short volume B, total T and close per session (None = no row that day).
AAA_B = [40, 50, None, 80, 30, 50, None, None]
AAA_T = [100, 100, None, 100, 20, 100, None, None]
AAA_CLOSE = [10, 12, 15, None, 15, 15, None, 18]
SCORE_UNIT = 0.55 * math.tanh(0.5)  # w_short * tanh(0.5 * 1), lit/price/otc z = 0


def _settings(db: Path) -> Settings:
    return load_config(db_path=db, short_z_window=3, return_z_window=3, zscore_min_periods=2)


def _short_rows() -> pd.DataFrame:
    rows = [(d, "CNMS", "AAA", b, 0.0, t) for d, b, t in zip(DAYS, AAA_B, AAA_T, strict=True)
            if b is not None]
    # Constant short ratio 0.1 from different volumes: the ratio's std is exactly 0.
    rows += [(d, "CNMS", "CON", b, 0.0, 10.0 * b)
             for d, b in zip(DAYS[:4], [7.0, 3.0, 11.0, 5.0], strict=True)]
    # 2018-07-31: no CNMS file anywhere -> FNSQ+FNYX+FNQC sum. 2018-08-01: CNMS exists -> the
    # CNMS row (the facility rows are not added). 2018-08-02: a CNMS file exists but has no FAC
    # row -> no consolidated row (the lone FNSQ row is not used).
    rows += [
        ("2018-07-31", "FNSQ", "FAC", 10.0, 1.0, 30.0),
        ("2018-07-31", "FNYX", "FAC", 5.0, 2.0, 20.0),
        ("2018-07-31", "FNQC", "FAC", 1.0, 0.0, 2.0),
        ("2018-08-01", "CNMS", "FAC", 100.0, 4.0, 200.0),
        ("2018-08-01", "FNSQ", "FAC", 60.0, 3.0, 120.0),
        ("2018-08-02", "CNMS", "ZZZ", 1.0, 0.0, 2.0),
        ("2018-08-02", "FNSQ", "FAC", 9.0, 0.0, 9.0),
        ("2018-08-03", "CNMS", "FAC", 30.0, 0.0, 40.0),
        # ORF (OTC equity) rows stand alone.
        ("2021-01-04", "FORF", "OTCX", 5.0, 0.0, 10.0),
        # MIX has an ORF row every day: a facility sum (07-31) or a CNMS row (08-01) wins
        # over it; alone (08-02) it is used.
        ("2018-07-31", "FNSQ", "MIX", 10.0, 0.0, 20.0),
        ("2018-07-31", "FORF", "MIX", 99.0, 0.0, 100.0),
        ("2018-08-01", "CNMS", "MIX", 7.0, 1.0, 14.0),
        ("2018-08-01", "FORF", "MIX", 50.0, 0.0, 60.0),
        ("2018-08-02", "FORF", "MIX", 3.0, 0.0, 4.0),
    ]
    return pd.DataFrame(rows, columns=["trade_date", "facility", "symbol", "short_volume",
                                       "short_exempt_volume", "total_volume"])


def _price_rows() -> pd.DataFrame:
    rows = [(d, "AAA", c) for d, c in zip(DAYS, AAA_CLOSE, strict=True) if c is not None]
    frame = pd.DataFrame(rows, columns=["date", "symbol", "close"])
    frame["open"] = frame["close"]
    frame["high"] = frame["close"] + 1.0
    frame["low"] = frame["close"] - 1.0
    frame["volume"] = 1000.0
    frame["vwap"] = frame["close"]
    return frame


@pytest.fixture
def built(db_path: Path) -> dict[str, pd.DataFrame]:
    settings = _settings(db_path)
    lit = pd.DataFrame({
        "symbol": ["CON", "CON"], "date": pd.to_datetime(["2021-01-04", "2021-01-05"]).date,
        "lit_buy_volume": [6000.0, 600.0], "lit_sell_volume": [4000.0, 400.0],
        "method": "lee_ready", "coverage_pct": [99.0, 98.0], "source": "test",
        "inference_version": "t", "fetched_at": pd.Timestamp("2024-01-01"),
    })
    with open_writer(db_path) as writer:
        write_short(writer, _short_rows())
        write_prices(writer, _price_rows())
        writer.replace_partition("lit_direction_daily", lit, where="symbol = ?", params=["CON"])
        build_metrics(writer, settings)
        frame = writer.conn.execute(
            "SELECT * FROM daily_metrics ORDER BY symbol, date").df()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    return {sym: part.set_index("date") for sym, part in frame.groupby("symbol")}


def _col(frame: pd.DataFrame, column: str) -> list[float]:
    return frame[column].astype(float).tolist()


def _assert_close(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        if math.isnan(want):
            assert math.isnan(got), (actual, expected)
        else:
            assert got == pytest.approx(want, abs=1e-12), (actual, expected)


def test_grid_has_every_session_between_first_and_last_appearance(built):
    assert list(built["AAA"].index) == DAYS
    assert list(built["FAC"].index) == ["2018-07-31", "2018-08-01", "2018-08-02", "2018-08-03"]
    assert list(built["OTCX"].index) == ["2021-01-04"]


def test_short_block_columns(built):
    aaa = built["AAA"]
    _assert_close(_col(aaa, "short_volume"), [40, 50, NAN, 80, 30, 50, NAN, NAN])
    _assert_close(_col(aaa, "short_buy_volume"), [40, 50, NAN, 80, 30, 50, NAN, NAN])
    _assert_close(_col(aaa, "finra_buy_volume"), [40, 50, NAN, 80, 30, 50, NAN, NAN])
    _assert_close(_col(aaa, "total_volume"), [100, 100, NAN, 100, 20, 100, NAN, NAN])
    _assert_close(_col(aaa, "short_exempt_volume"), [0, 0, NAN, 0, 0, 0, NAN, NAN])
    # S = max(T - B, 0): 2021-01-08 has B > T -> 0.
    _assert_close(_col(aaa, "short_sell_volume"), [60, 50, NAN, 20, 0, 50, NAN, NAN])
    _assert_close(_col(aaa, "short_ratio"), [0.4, 0.5, NAN, 0.8, 1.5, 0.5, NAN, NAN])
    # B / S, NULL when S = 0.
    _assert_close(_col(aaa, "short_buy_sell_ratio"), [2 / 3, 1, NAN, 4, NAN, 1, NAN, NAN])
    assert aaa["short_source"].tolist()[:2] == ["CNMS", "CNMS"]
    assert aaa["short_source"].isna().tolist() == [False, False, True, False, False, False,
                                                   True, True]


def test_short_z_scores_at_window_edges(built):
    aaa = built["AAA"]
    # finra_buy_volume_z, window 3, min 2: [40] -> NULL; [40,50] -> (50-45)/5;
    # 01-06 x NULL; [50,_,80] -> (80-65)/15; [_,80,30] -> (30-55)/25; [80,30,50] below.
    last = (50 - 160 / 3) / math.sqrt(((80 - 160 / 3) ** 2 + (30 - 160 / 3) ** 2
                                       + (50 - 160 / 3) ** 2) / 3)
    _assert_close(_col(aaa, "finra_buy_volume_z"), [NAN, 1, NAN, 1, -1, last, NAN, NAN])
    # short_buy_sell_ratio 2/3, 1, _, 4, _, 1 -> [2/3,1]: 1; [1,_,4]: 1; x NULL; [4,_,1]: -1.
    _assert_close(_col(aaa, "short_buy_sell_ratio_z"), [NAN, 1, NAN, 1, NAN, -1, NAN, NAN])
    mean = (0.8 + 1.5 + 0.5) / 3
    last = (0.5 - mean) / math.sqrt(((0.8 - mean) ** 2 + (1.5 - mean) ** 2
                                     + (0.5 - mean) ** 2) / 3)
    _assert_close(_col(aaa, "short_ratio_z"), [NAN, 1, NAN, 1, 1, last, NAN, NAN])


def test_zero_std_gives_null_even_with_rounding_residue(built):
    con = built["CON"]
    _assert_close(_col(con, "short_ratio"), [0.1, 0.1, 0.1, 0.1])
    _assert_close(_col(con, "short_ratio_z"), [NAN, NAN, NAN, NAN])
    # Volumes vary, so their z exists: [7,3] -> (3-5)/2; [7,3,11] -> (11-7)/sqrt(32/3).
    _assert_close(_col(con, "finra_buy_volume_z")[:3], [NAN, -1, 4 / math.sqrt(32 / 3)])


def test_constant_window_detection_is_exact():
    # 0.1*3 != 0.3 in floating point: a window of [0.3, 0.1*3] is NOT constant, while
    # [0.3, 0.3, 0.3] is; pandas gives an exact 0 std only for the latter.
    values = np.array([0.3, 0.3, 0.3, 0.1 * 3, np.nan, 0.3])
    z = rolling_zscore_grouped(values, np.zeros(6, dtype=np.int64), 3, 2)
    assert np.isnan(z[:3]).all()
    assert z[3] == pytest.approx(math.sqrt(2), rel=1e-6)  # one value differs by 1 ulp
    assert np.isnan(z[4])
    assert z[5] == pytest.approx(-1.0, rel=1e-6)


def test_min_periods_counts_non_null_values_only():
    values = np.array([1.0, np.nan, np.nan, 2.0, np.nan, 3.0, 5.0])
    z = rolling_zscore_grouped(values, np.zeros(7, dtype=np.int64), 3, 2)
    # rows 3 ([_,_,2]) -> 1 value; row 5 ([2,_,3]) -> 1; row 6 ([_,3,5]) -> 1.
    _assert_close(z.tolist(), [NAN, NAN, NAN, NAN, NAN, 1.0, 1.0])


def test_rolling_windows_never_cross_symbols():
    values = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    starts = np.array([0, 0, 0, 3, 3])
    z = rolling_zscore_grouped(values, starts, 3, 2)
    _assert_close(z.tolist(), [NAN, 1.0, math.sqrt(1.5), NAN, 1.0])


def test_symbol_chunks_never_split_a_symbol():
    starts = np.array([0, 0, 0, 3, 3, 5, 5, 5, 5, 9])
    assert symbol_chunks(starts, 4) == [(0, 5), (5, 9), (9, 10)]
    assert symbol_chunks(starts, 100) == [(0, 10)]
    assert symbol_chunks(np.array([0, 0, 0, 0]), 1) == [(0, 4)]  # one long symbol
    assert symbol_chunks(np.array([], dtype=np.int64), 4) == []


def test_chunked_rolling_equals_one_pass(monkeypatch: pytest.MonkeyPatch):
    # Chunking (for CPU caches) must not change a single bit: each symbol's values only
    # depend on its own rows.
    rng = np.random.default_rng(11)
    days = pd.bdate_range("2021-01-04", periods=300)
    days = days[days.isin(sessions_index("2021-01-04", "2022-06-30"))]
    frames = []
    for k in range(12):
        sym_days = days[k * 7: len(days) - k * 3]
        n = len(sym_days)
        total = rng.lognormal(12, 1.5, n).round()
        frames.append(pd.DataFrame({"symbol": f"S{k:02d}", "date": sym_days,
                                    "short_volume": (total * rng.uniform(0.1, 0.9, n)).round(),
                                    "short_exempt_volume": 0.0, "total_volume": total,
                                    "short_source": "CNMS"}))
    short = pd.concat(frames, ignore_index=True)
    short = short.loc[rng.random(len(short)) > 0.08]
    prices = short[["symbol", "date"]].assign(
        open=1.0, high=1.1, low=0.9, close=rng.lognormal(3, 0.2, len(short)), vwap=1.0,
        volume=1e6)
    cfg = load_config(short_z_window=20, return_z_window=10, zscore_min_periods=5)
    grid = assemble_grid(short, prices)
    monkeypatch.setattr(metrics_module, "ROLLING_CHUNK_ROWS", 10**9)
    one_pass = compute_daily_metrics(grid, cfg)
    monkeypatch.setattr(metrics_module, "ROLLING_CHUNK_ROWS", 50)
    chunked = compute_daily_metrics(grid, cfg)
    assert one_pass["short_ratio_z"].notna().sum() > 2000
    pd.testing.assert_frame_equal(chunked, one_pass, check_exact=True)


def test_price_block_columns(built):
    aaa = built["AAA"]
    _assert_close(_col(aaa, "close"), [10, 12, 15, NAN, 15, 15, NAN, 18])
    _assert_close(_col(aaa, "open"), [10, 12, 15, NAN, 15, 15, NAN, 18])
    _assert_close(_col(aaa, "high"), [11, 13, 16, NAN, 16, 16, NAN, 19])
    _assert_close(_col(aaa, "low"), [9, 11, 14, NAN, 14, 14, NAN, 17])
    _assert_close(_col(aaa, "vwap"), [10, 12, 15, NAN, 15, 15, NAN, 18])
    _assert_close(_col(aaa, "volume"), [1000, 1000, 1000, NAN, 1000, 1000, NAN, 1000])
    # return_1d: previous SESSION close; NULL when it is missing (01-08, 01-13).
    _assert_close(_col(aaa, "return_1d"), [NAN, 0.2, 0.25, NAN, NAN, 0.0, NAN, NAN])
    # return_z: only 01-06 has 2 returns in its window ([0.2, 0.25] -> 1).
    _assert_close(_col(aaa, "return_z"), [NAN, NAN, 1, NAN, NAN, NAN, NAN, NAN])
    _assert_close(_col(aaa, "range_pct"), [0.2, 2 / 12, 2 / 15, NAN, 2 / 15, 2 / 15, NAN,
                                           2 / 18])


def test_combined_flow(built):
    aaa = built["AAA"]
    # (B + LB) - (S + LS), NULL parts as 0; NULL when all four are NULL.
    _assert_close(_col(aaa, "vw_flow"), [-20, 0, NAN, 60, 30, 0, NAN, NAN])
    _assert_close(_col(aaa, "vw_flow_z"), [NAN, 1, NAN, 1, -1, -30 / math.sqrt(600), NAN,
                                           NAN])
    _assert_close(_col(aaa, "combined_ratio"), [2 / 3, 1, NAN, 4, NAN, 1, NAN, NAN])
    con = built["CON"]
    # CON 01-04: B=7, S=63, LB=6000, LS=4000.
    assert con["vw_flow"].iloc[0] == pytest.approx((7 + 6000) - (63 + 4000))
    assert con["combined_ratio"].iloc[0] == pytest.approx(6007 / 4063)


def test_lit_block(built):
    con = built["CON"]
    _assert_close(_col(con, "lit_total_volume"), [10000, 1000, NAN, NAN])
    # ratio and imbalance need LB + LS >= 10,000; log(LB/LS) only needs both > 0.
    _assert_close(_col(con, "lit_buy_ratio"), [0.6, NAN, NAN, NAN])
    _assert_close(_col(con, "lit_flow_imbalance"), [0.2, NAN, NAN, NAN])
    _assert_close(_col(con, "log_buy_sell"), [math.log(1.5), math.log(1.5), NAN, NAN])
    assert con["lit_method"].tolist()[:2] == ["lee_ready", "lee_ready"]
    _assert_close(_col(con, "lit_coverage_pct"), [99, 98, NAN, NAN])


def test_score_confidence_and_provenance(built):
    aaa = built["AAA"]
    # short_z = short_buy_sell_ratio_z; other z NULL -> 0; otc_z 0 -> intensity 1.0.
    _assert_close(_col(aaa, "accumulation_score"),
                  [NAN, SCORE_UNIT, NAN, SCORE_UNIT, NAN, -SCORE_UNIT, NAN, NAN])
    _assert_close(_col(aaa, "accumulation_score_display"),
                  [NAN, (SCORE_UNIT + 1) * 50, NAN, (SCORE_UNIT + 1) * 50, NAN,
                   (1 - SCORE_UNIT) * 50, NAN, NAN])
    assert aaa["pressure_context_label"].tolist()[1] == "neutral"
    assert aaa["pressure_context_label"].isna().tolist()[:3] == [True, False, True]
    # staleness 0.5 (no OTC) * coverage (0.8 one missing / 0.5 two+) * 0.9 (no lit imbalance),
    # clamped at 0.25.
    _assert_close(_col(aaa, "confidence"), [0.36, 0.36, 0.25, 0.25, 0.36, 0.36, 0.25, 0.25])
    assert aaa["has_short"].tolist() == [True, True, False, True, True, True, False, False]
    assert aaa["has_price"].tolist() == [True, True, True, False, True, True, False, True]
    assert not aaa["has_lit"].any() and not aaa["has_otc"].any()
    assert aaa["data_quality"].tolist() == ["partial"] * 6 + ["no_data", "partial"]
    assert set(aaa["otc_status"]) == {"None"}
    assert aaa["otc_participation_z"].isna().all() and aaa["otc_week_used"].isna().all()
    assert set(aaa["accumulation_short_z_source"]) == {"short_buy_sell_ratio_z"}
    assert set(aaa["inference_version"]) == {INFERENCE_VERSION}
    con = built["CON"]
    # CON 01-04 has short + lit, no price, lit imbalance present: 0.5 * 0.8 = 0.4.
    assert con["confidence"].iloc[0] == pytest.approx(0.4)
    assert con["has_lit"].tolist() == [True, True, False, False]


def test_facility_sum_before_cnms_and_forf(built):
    fac = built["FAC"]
    # 07-31 sum of facilities; 08-01 CNMS only; 08-02 CNMS file exists without FAC -> NULL.
    _assert_close(_col(fac, "short_volume"), [16, 100, NAN, 30])
    _assert_close(_col(fac, "short_exempt_volume"), [3, 4, NAN, 0])
    _assert_close(_col(fac, "total_volume"), [52, 200, NAN, 40])
    assert fac["short_source"].tolist()[:2] == ["FACILITY_SUM", "CNMS"]
    assert pd.isna(fac["short_source"].iloc[2])
    otcx = built["OTCX"]
    assert otcx["short_source"].tolist() == ["FORF"]
    mix = built["MIX"]
    _assert_close(_col(mix, "short_volume"), [10, 7, 3])
    _assert_close(_col(mix, "short_exempt_volume"), [0, 1, 0])
    _assert_close(_col(mix, "total_volume"), [20, 14, 4])
    assert mix["short_source"].tolist() == ["FACILITY_SUM", "CNMS", "FORF"]
    _assert_close(_col(otcx, "short_sell_volume"), [5])
    _assert_close(_col(otcx, "short_ratio"), [0.5])
