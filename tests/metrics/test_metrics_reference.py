"""``darkpool build`` equals a plain pandas implementation of metrics-spec.md on real data.

Inputs: the 51 real CNMS files (2020-12-01..2021-02-12, ~9,000 symbols a day) and the 25 real
Yahoo CSVs. The reference below is deliberately straightforward (merge on a session grid,
``groupby().rolling()``) and shares no code with ``metrics.py``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dm_fixtures import (
    CNMS_DIR,
    YAHOO_DIR,
    read_cnms_dir,
    read_yahoo_dir,
    write_prices,
    write_short,
)

from darkpool_analysis.build import build_metrics
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.store import open_writer
from darkpool_analysis.symbols import normalise_array
from darkpool_analysis.trading_calendar import sessions_index

pytestmark = pytest.mark.realdata

Z_SHORT = ["short_buy_sell_ratio_z", "short_ratio_z", "finra_buy_volume_z", "vw_flow_z"]
NUMERIC = ["short_volume", "short_exempt_volume", "total_volume", "short_buy_volume",
           "finra_buy_volume", "short_sell_volume", "short_ratio", "short_buy_sell_ratio",
           *Z_SHORT, "vw_flow", "combined_ratio", "open", "high", "low", "close", "volume",
           "return_1d", "return_z", "range_pct", "accumulation_score",
           "accumulation_score_display", "confidence"]


def _reference(short: pd.DataFrame, prices: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The spec, written the obvious way with pandas."""
    short = short.rename(columns={"trade_date": "date"}).assign(
        date=lambda f: pd.to_datetime(f["date"]))
    prices = prices.assign(date=lambda f: pd.to_datetime(f["date"]))
    seen = pd.concat([short[["symbol", "date"]], prices[["symbol", "date"]]])
    spans = seen.groupby("symbol")["date"].agg(["min", "max"]).reset_index()
    sessions = pd.DataFrame({"date": sessions_index(seen["date"].min(), seen["date"].max())})
    grid = spans.merge(sessions, how="cross")
    grid = grid[(grid["date"] >= grid["min"]) & (grid["date"] <= grid["max"])]
    grid = grid[["symbol", "date"]].sort_values(["symbol", "date"]).reset_index(drop=True)
    df = grid.merge(short[["symbol", "date", "short_volume", "short_exempt_volume",
                           "total_volume"]], on=["symbol", "date"], how="left")
    df = df.merge(prices[["symbol", "date", "open", "high", "low", "close", "volume"]],
                  on=["symbol", "date"], how="left")

    b = df["short_volume"]
    s = (df["total_volume"] - b).clip(lower=0)
    df["short_buy_volume"] = b
    df["finra_buy_volume"] = b
    df["short_sell_volume"] = s
    df["short_ratio"] = b / df["total_volume"]
    df["short_buy_sell_ratio"] = (b / s).where(s > 0)
    any_part = b.notna() | s.notna()
    df["vw_flow"] = (b.fillna(0) - s.fillna(0)).where(any_part)
    df["combined_ratio"] = (b.fillna(0) / s.fillna(0)).where(s.fillna(0) != 0)
    prev_close = df.groupby("symbol")["close"].shift(1)
    df["return_1d"] = df["close"] / prev_close - 1
    df["range_pct"] = (df["high"] - df["low"]) / df["close"]

    def z(column: str, window: int) -> pd.Series:
        rolling = df.groupby("symbol")[column].rolling(window, min_periods=settings
                                                       .zscore_min_periods)
        mean = rolling.mean().reset_index(level=0, drop=True)
        std = rolling.std(ddof=0).reset_index(level=0, drop=True)
        return (df[column] - mean) / std.where(std > 0)

    df["short_buy_sell_ratio_z"] = z("short_buy_sell_ratio", settings.short_z_window)
    df["short_ratio_z"] = z("short_ratio", settings.short_z_window)
    df["finra_buy_volume_z"] = z("short_volume", settings.short_z_window)
    df["vw_flow_z"] = z("vw_flow", settings.short_z_window)
    df["return_z"] = z("return_1d", settings.return_z_window)

    short_z = df["short_buy_sell_ratio_z"]
    raw = 0.55 * np.tanh(0.5 * short_z) + 0.15 * np.tanh(0.3 * df["return_z"].fillna(0))
    df["accumulation_score"] = (raw * 1.0).clip(-1, 1)  # otc_z NULL -> sigmoid(0) -> 1.0
    df["accumulation_score_display"] = (df["accumulation_score"] + 1) * 50
    missing = 3 - (df["short_volume"].notna().astype(int) + df["close"].notna().astype(int))
    coverage = missing.map({1: 0.8, 2: 0.5, 3: 0.5})
    df["confidence"] = (0.5 * coverage * 0.9).clip(0.25, 1.0)
    df["data_quality"] = np.where(missing == 3, "no_data", "partial")
    return df


def _exact_z(ref: pd.DataFrame, column: str, row: int, window: int) -> float:
    """The z-score of ``ref[column]`` at ``row`` in exact rational arithmetic."""
    start = row
    while start > row - window + 1 and start > 0 and ref["symbol"].iat[start - 1] == \
            ref["symbol"].iat[row]:
        start -= 1
    values = [Fraction(v) for v in ref[column].iloc[start:row + 1] if not math.isnan(v)]
    mean = sum(values, Fraction(0)) / len(values)
    variance = sum(((v - mean) ** 2 for v in values), Fraction(0)) / len(values)
    return float(Fraction(ref[column].iat[row]) - mean) / math.sqrt(variance)


@pytest.fixture
def real_inputs(real_data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    real = real_data
    return read_cnms_dir(real.joinpath(*CNMS_DIR)), read_yahoo_dir(real.joinpath(*YAHOO_DIR))


def test_build_matches_pandas_reference_on_real_data(real_inputs, db_path: Path) -> None:
    short, prices = real_inputs
    settings = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        write_short(writer, short)
        write_prices(writer, prices)
        result = build_metrics(writer, settings)
        ours = writer.conn.execute("SELECT * FROM daily_metrics ORDER BY symbol, date").df()
    assert result.rows_written == len(ours)

    # Reference on every yahoo ticker plus every 7th symbol (the build ran on all of them).
    short = short.assign(symbol=normalise_array(short["symbol"]))
    universe = sorted(short["symbol"].unique())
    chosen = set(universe[::7]) | set(prices["symbol"])
    ref = _reference(short[short["symbol"].isin(chosen)], prices, settings)
    ours = ours[ours["symbol"].isin(chosen)].reset_index(drop=True)
    ours["date"] = pd.to_datetime(ours["date"])

    assert len(ref) == len(ours) > 40_000
    assert (ref["symbol"].to_numpy() == ours["symbol"].to_numpy()).all()
    assert (ref["date"].to_numpy() == ours["date"].to_numpy()).all()
    sources = {"short_buy_sell_ratio_z": "short_buy_sell_ratio", "short_ratio_z": "short_ratio",
               "finra_buy_volume_z": "short_volume", "vw_flow_z": "vw_flow",
               "return_z": "return_1d"}
    for column in NUMERIC:
        expected = ref[column].to_numpy(dtype=float)
        actual = ours[column].to_numpy(dtype=float)
        nulls = np.isnan(expected)
        assert (nulls == np.isnan(actual)).all(), column
        off = np.flatnonzero(~nulls & ~np.isclose(actual, expected, rtol=1e-9, atol=1e-9))
        window = settings.return_z_window if column == "return_z" else settings.short_z_window
        for row in off:
            # pandas' add/remove rolling variance drifts after an outlier leaves the window;
            # where we differ from it by > 1e-9 we must be at least as close to exact.
            assert column in sources, (column, row, actual[row], expected[row])
            exact = _exact_z(ref, sources[column], int(row), window)
            assert abs(actual[row] - exact) <= max(abs(expected[row] - exact), 1e-12), (
                column, row, actual[row], expected[row], exact)
        assert len(off) < 100, (column, len(off))
    assert (ours["data_quality"].to_numpy() == ref["data_quality"].to_numpy()).all()
    assert (ours["short_source"].fillna("-") == np.where(ref["short_volume"].notna(), "CNMS",
                                                         "-")).all()
    # The squeeze left real z-scores in the frame: the comparison is not vacuous.
    gme = ours[ours["symbol"] == "GME"]
    assert gme["short_buy_sell_ratio_z"].notna().sum() >= 40
    assert gme["return_z"].notna().sum() >= 15  # bars start 2021-01-11
    assert not math.isnan(gme["accumulation_score"].iloc[-1])
