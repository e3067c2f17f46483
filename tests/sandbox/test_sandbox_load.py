"""``sandbox.load``: the seed's numbers (its own cells as the oracle), warm-up, spellings,
clear errors, read-only access."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis import sandbox
from darkpool_analysis.config import load_config
from darkpool_analysis.errors import NoDataError, StoreError
from darkpool_analysis.store import connect_readonly

SeedRunner = Callable[[str, str, str], pd.DataFrame]
Sessions = Callable[[str], list[dt.date]]

SEED_COLUMNS = [
    "short_buy_volume", "short_sell_volume", "short_buy_sell_ratio", "short_buy_sell_ratio_z",
    "combined_ratio", "vw_flow", "vw_flow_z", "finra_buy_volume", "confidence",
    "acc_score_current", "acc_score_a", "acc_score_b",
]


def assert_matches_seed(ours: pd.DataFrame, seed: pd.DataFrame) -> None:
    assert len(ours) == len(seed) > 0
    np.testing.assert_array_equal(pd.to_datetime(ours["date"]).to_numpy("datetime64[D]"),
                                  pd.to_datetime(seed["date"]).to_numpy("datetime64[D]"))
    for column in SEED_COLUMNS:
        np.testing.assert_allclose(ours[column].to_numpy(float),
                                   pd.to_numeric(seed[column]).to_numpy(float),
                                   rtol=0, atol=1e-12, equal_nan=True, err_msg=column)


@pytest.mark.parametrize(
    ("ticker", "start", "end"),
    [
        ("NKE", "2025-11-01", "2025-12-31"),  # the seed's own parameters
        ("NKE", "2025-06-01", "2025-07-15"),  # z warm-up inside the range, NULL days
        ("LITX", "2025-08-01", "2025-10-31"),  # stored ratio / ratio z / lit z all NULL
        ("BRK.B", "2025-09-01", "2025-12-31"),
    ],
)
def test_no_warmup_equals_seed_cells(run_seed: SeedRunner, ticker: str, start: str,
                                     end: str) -> None:
    seed = run_seed(ticker, start, end)
    ours = sandbox.load(ticker, start, end, warmup=False)
    assert_matches_seed(ours, seed)
    assert ours["acc_score_current"].notna().sum() > 10


def test_warmup_equals_seed_run_from_earlier_start_then_trimmed(
        run_seed: SeedRunner, sessions_of: Sessions) -> None:
    dates = sessions_of("NKE")
    start = dates[60]
    warm_start = dates[60 - load_config().short_z_window]  # every session has a row
    seed = run_seed("NKE", str(warm_start), "2025-11-28")
    seed = seed.loc[seed["date"] >= pd.Timestamp(start)].reset_index(drop=True)
    ours = sandbox.load("NKE", start, "2025-11-28")
    assert ours["date"].iloc[0] == pd.Timestamp(start)
    assert_matches_seed(ours, seed)


def test_warmup_gives_first_day_a_full_window(sandbox_env: Path, sessions_of: Sessions) -> None:
    dates = sessions_of("NKE")
    start = dates[50]
    warm = sandbox.load("NKE", start, dates[70])
    exact = sandbox.load("NKE", start, dates[70], warmup=False)
    # Plain-numpy oracle: population z of vw_flow over the 20 rows ending at `start`.
    history = sandbox.load("NKE", dates[0], dates[70], warmup=False)
    flow = history["vw_flow"].to_numpy(float)[31:51]
    window = flow[~np.isnan(flow)]
    expected = (flow[-1] - window.mean()) / window.std(ddof=0)
    assert warm["vw_flow_z"].iloc[0] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(exact["vw_flow_z"].iloc[:4]).all()  # the seed's short first windows
    assert len(warm) == len(exact) == 21


def test_derive_hand_computed() -> None:
    nan = np.nan
    raw = pd.DataFrame({
        "date": pd.to_datetime(["2025-01-02", "2025-01-03", "2025-01-06", "2025-01-07"]),
        "symbol": "T",
        "short_buy_volume": [300.0, 0.0, nan, 100.0],
        "short_sell_volume": [100.0, 0.0, nan, 0.0],
        "short_buy_sell_ratio": [3.0, nan, nan, nan],
        "short_buy_sell_ratio_z": [nan, nan, nan, 0.5],
        "lit_buy_volume": [50.0, nan, nan, 0.0],
        "lit_sell_volume": [50.0, nan, nan, 0.0],
        "lit_flow_imbalance": [0.0, nan, nan, nan],
        "lit_flow_imbalance_z": [nan, nan, nan, nan],
        "return_z": [nan, 1.0, nan, 0.0],
        "otc_participation_z": [nan, nan, nan, 0.0],
        "confidence": [0.8, nan, 0.3, nan],
    })
    out = sandbox.derive(raw, settings=load_config())
    np.testing.assert_allclose(out["combined_ratio"], [350 / 150, nan, nan, nan], equal_nan=True)
    np.testing.assert_allclose(out["vw_flow"], [200.0, nan, nan, 100.0], equal_nan=True)
    np.testing.assert_allclose(out["finra_buy_volume"], [300.0, 0.0, nan, 100.0],
                               equal_nan=True)
    np.testing.assert_allclose(out["confidence"], [0.8, 0.5, 0.3, 0.5])
    np.testing.assert_allclose(out["exp_imbalance"], [0.5, nan, nan, 1.0], equal_nan=True)
    np.testing.assert_allclose(out["exp_signal"], [0.5 * np.log1p(400), nan, nan,
                                                   np.log1p(100)], equal_nan=True)
    # short_z = 0.5, lit and price z 0 (NULL lit z everywhere, too few rows to recompute),
    # otc z 0 -> intensity 1.0: display = (0.55 * tanh(0.25) + 1) * 50.
    assert out["acc_score_current"].iloc[3] == pytest.approx((0.55 * np.tanh(0.25) + 1) * 50)
    assert out["acc_score_current"].iloc[:3].isna().all()
    assert out["acc_score_a"].isna().all()  # vw_flow_z needs 5 values
    assert raw["confidence"].isna().sum() == 2  # input untouched


@pytest.mark.parametrize("spelling", ["BRK.B", "brk.b", "BRK/B", "brk/b", "BRK-B"])
def test_any_symbol_spelling(sandbox_env: Path, spelling: str) -> None:
    frame = sandbox.load(spelling, "2025-10-01", "2025-10-31")
    assert set(frame["symbol"]) == {"BRK.B"}
    assert len(frame) == 23


def test_blend_weights_change_only_option_b(sandbox_env: Path) -> None:
    base = sandbox.load("NKE", "2025-10-01", "2025-12-31")
    flow_only = sandbox.load("NKE", "2025-10-01", "2025-12-31", blend_short_weight=0.0,
                             blend_flow_weight=1.0)
    pd.testing.assert_series_equal(base["acc_score_current"], flow_only["acc_score_current"])
    pd.testing.assert_series_equal(flow_only["acc_score_b"], flow_only["acc_score_a"],
                                   check_names=False)
    assert not np.allclose(base["acc_score_b"], flow_only["acc_score_b"], equal_nan=True)


def test_unknown_ticker_names_close_symbols_and_ingest_command(sandbox_env: Path) -> None:
    with pytest.raises(NoDataError) as info:
        sandbox.load("NKEE", "2025-10-01", "2025-10-31")
    text = str(info.value)
    assert "unknown ticker NKEE" in text
    assert "close symbols: NKE" in text
    assert "darkpool ingest finra-short" in text and "darkpool build --tickers NKEE" in text


def test_empty_range_names_existing_coverage(sandbox_env: Path) -> None:
    with pytest.raises(NoDataError) as info:
        sandbox.load("NKE", "2024-01-01", "2024-03-01")
    text = str(info.value)
    assert "no daily_metrics rows for NKE between 2024-01-01 and 2024-03-01" in text
    assert "from 2025-06-02 to 2025-12-31 (148 sessions)" in text
    assert "--start 2024-01-01 --end 2024-03-01" in text


def test_range_only_before_start_is_empty_even_with_warmup(sandbox_env: Path) -> None:
    with pytest.raises(NoDataError, match="between 2026-01-05 and 2026-01-30"):
        sandbox.load("NKE", "2026-01-05", "2026-01-30")


def test_missing_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database at"):
        sandbox.load("NKE", "2025-10-01", "2025-10-31", db_path=tmp_path / "none.duckdb")


def test_start_after_end_is_rejected(sandbox_env: Path) -> None:
    with pytest.raises(ValueError, match="after end"):
        sandbox.load("NKE", "2025-10-31", "2025-10-01")


def test_load_is_read_only(sandbox_env: Path) -> None:
    before = hashlib.sha256(sandbox_env.read_bytes()).hexdigest()
    siblings = sorted(p.name for p in sandbox_env.parent.iterdir())
    holder = connect_readonly(sandbox_env)  # another reader holding the file open
    try:
        sandbox.load("NKE", "2025-10-01", "2025-10-31")
    finally:
        holder.close()
    assert hashlib.sha256(sandbox_env.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in sandbox_env.parent.iterdir()) == siblings


def test_default_range_is_last_60_rows(sandbox_env: Path, sessions_of: Sessions) -> None:
    dates = sessions_of("NKE")
    assert sandbox.default_range("nke") == (dates[-60], dates[-1])
    assert sandbox.default_range("NKE", end=dates[100]) == (dates[41], dates[100])
    assert sandbox.default_range("NKE", start=dates[5]) == (dates[5], dates[-1])
    with pytest.raises(NoDataError, match="unknown ticker"):
        sandbox.default_range("ZZZZ")


def test_zone_counts_and_gaps(sandbox_env: Path, sessions_of: Sessions) -> None:
    dates = sessions_of("NKE")
    frame = sandbox.load("NKE", dates[0], dates[-1])
    zones = sandbox.zone_counts(frame)
    for variant, column in sandbox.VARIANT_COLUMNS.items():
        values = frame[column].to_numpy(float)
        expected = [(values >= 70).sum(), (values <= 30).sum(),
                    ((values > 30) & (values < 70)).sum(), np.isnan(values).sum()]
        assert zones.loc[variant].tolist() == expected
    assert zones.sum(axis=1).tolist() == [len(frame)] * 3
    gaps = sandbox.data_gaps(frame, dates[0], dates[-1])
    assert gaps == [dates[7], dates[31], dates[len(dates) - 9]]


def test_data_gaps_include_sessions_without_rows() -> None:
    frame = pd.DataFrame({"date": pd.to_datetime(["2025-07-01", "2025-07-07"]),
                          "short_buy_volume": [1.0, 2.0]})
    # 2025-07-04 is a holiday; the 3rd is a session with no row at all.
    assert [d.isoformat() for d in sandbox.data_gaps(frame, "2025-07-01", "2025-07-07")] == [
        "2025-07-02", "2025-07-03"]


@pytest.mark.parametrize(("typed", "expected"), [
    ("nke", "NKE"), ("fslr", "FSLR"), ("ABRpD", "ABR.PR.D"), ("brk-b", "BRK.B"),
    (" BRK/B ", "BRK.B"),
])
def test_normalise_ticker(typed: str, expected: str) -> None:
    assert sandbox.normalise_ticker(typed) == expected
