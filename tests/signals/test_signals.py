"""The variant registry: definitions against hand-computed values and plain pandas references,
point-in-time (truncation) invariance, and clear errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis.errors import ConfigError, DataFormatError
from darkpool_analysis.scoring import rolling_zscore
from darkpool_analysis.signals import (
    REGISTRY,
    PanelGrid,
    UnknownVariantError,
    compute_variant,
    compute_variants,
    get_variant,
    rolling_z,
)

Factory = Callable[..., pd.DataFrame]


def test_unknown_variant_lists_valid_names() -> None:
    with pytest.raises(UnknownVariantError) as info:
        get_variant("nope")
    for name in ("current", "option_a", "imbalance_log1p_z", "dark_pool_position"):
        assert name in info.value.message


@pytest.mark.parametrize("name", list(REGISTRY))
def test_signal_at_t_ignores_data_after_t(metrics: Factory, name: str) -> None:
    frame = metrics(n_symbols=4, n_days=70, seed=1)
    full = compute_variant(frame, name)
    cut = frame["date"].sort_values().unique()[45]
    truncated_frame = frame[frame["date"] <= cut]
    truncated = compute_variant(truncated_frame, name)
    pd.testing.assert_series_equal(full.loc[truncated_frame.index], truncated)
    assert truncated.notna().sum() > 0


def test_every_variant_has_a_point_in_time_docstring() -> None:
    for variant in REGISTRY.values():
        assert "As of t" in (variant.func.__doc__ or ""), variant.name


def test_current_score_hand_computed() -> None:
    frame = pd.DataFrame({"symbol": ["A"], "date": [pd.Timestamp("2024-01-02")],
                          "short_buy_sell_ratio_z": [1.0], "lit_flow_imbalance_z": [0.0],
                          "return_z": [np.nan], "otc_participation_z": [0.0]})
    # raw = 0.55 tanh(0.5); intensity = 0.7 + 0.6 * sigmoid(0) = 1.0
    expected = (0.55 * math.tanh(0.5) + 1.0) * 50.0
    assert compute_variant(frame, "current").iloc[0] == pytest.approx(expected, abs=1e-12)


def test_option_b_blend_weights_are_parameters(metrics: Factory) -> None:
    frame = metrics(n_symbols=2, n_days=10)
    only_ratio = compute_variant(frame, "option_b", short_weight=1.0, flow_weight=0.0)
    pd.testing.assert_series_equal(only_ratio.rename("current"),
                                   compute_variant(frame, "current"))
    with pytest.raises(ConfigError, match="no parameter"):
        compute_variant(frame, "option_b", bogus=1)


def test_imbalance_log1p_z_matches_per_symbol_pandas(metrics: Factory) -> None:
    frame = metrics(n_symbols=3, n_days=60, seed=2).sample(frac=1.0, random_state=3)
    result = compute_variant(frame, "imbalance_log1p_z")
    for _symbol, group in frame.groupby("symbol"):
        group = group.sort_values("date")
        b, s = group["short_buy_volume"], group["short_sell_volume"]
        raw = (b - s) / (b + s) * np.log1p(b + s)
        expected = rolling_zscore(raw, 20, 5)
        np.testing.assert_allclose(result.loc[group.index], expected, rtol=1e-12)


def test_buy_volume_z_raw_excludes_today() -> None:
    volumes = [100.0, 120, 90, 110, 105, 95, 130, 500.0]
    frame = pd.DataFrame({"symbol": "A", "date": pd.bdate_range("2024-01-02", periods=8),
                          "short_buy_volume": volumes})
    z = compute_variant(frame, "buy_volume_z_raw", window=5, min_periods=5)
    past = np.array(volumes[2:7])
    assert z.iloc[7] == pytest.approx((500 - past.mean()) / past.std(ddof=0))
    assert z.iloc[:5].isna().all()  # fewer than 5 previous sessions
    assert get_variant("buy_volume_z_raw").buy == 1.1


def test_stockgrid_net_short_and_position() -> None:
    n = 25
    frame = pd.DataFrame({"symbol": "A", "date": pd.bdate_range("2024-01-02", periods=n),
                          "short_volume": 600.0, "total_volume": 1000.0,
                          "close": np.arange(1, n + 1, dtype=float)})
    net = compute_variant(frame, "net_short_volume")
    dollars = compute_variant(frame, "net_short_dollar_volume")
    position = compute_variant(frame, "dark_pool_position")
    assert (net == 200.0).all()
    assert dollars.iloc[4] == 200.0 * 5
    assert position.iloc[:19].isna().all()
    assert position.iloc[19] == 200.0 * sum(range(1, 21))
    assert position.iloc[24] == 200.0 * sum(range(6, 26))


def test_compute_variants_keeps_index(metrics: Factory) -> None:
    frame = metrics(n_symbols=2, n_days=15)
    frame.index = frame.index + 1000
    out = compute_variants(frame, [REGISTRY["current"], REGISTRY["blend_ab"]])
    assert list(out.columns) == ["current", "blend_ab"]
    assert out.index.equals(frame.index)


def test_rolling_z_matches_scoring(metrics: Factory) -> None:
    frame = metrics(n_symbols=3, n_days=50)
    grid = PanelGrid.from_frame(frame)
    wide = grid.column(frame, "short_buy_volume")
    z = grid.to_long(rolling_z(wide, 20, 5))
    for _symbol, group in frame.groupby("symbol"):
        expected = rolling_zscore(group["short_buy_volume"], 20, 5)
        np.testing.assert_allclose(z[group.index], expected, rtol=1e-12)


def test_bad_frames_give_clear_errors(metrics: Factory) -> None:
    frame = metrics(n_symbols=1, n_days=5)
    with pytest.raises(DataFormatError, match="duplicate"):
        PanelGrid.from_frame(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(DataFormatError, match="vw_flow_z"):
        compute_variant(frame.drop(columns="vw_flow_z"), "option_a")
    with pytest.raises(ConfigError, match="2520"):
        compute_variant(frame, "imbalance_log1p_z", window=5000)
