"""IC, quantiles, events and placebo: against alphalens, planted effects and hand values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from eval_markets import Market, planted_market

from darkpool_analysis.evaluation.ic import (
    cross_sectional_ic,
    event_stats,
    permute_within_dates,
    quantile_labels,
    quantile_returns,
    quantile_turnover,
    summarize_ic,
)
from darkpool_analysis.evaluation.returns import EvalPanel, forward_returns, shift_rows
from darkpool_analysis.signals import REGISTRY


def test_forward_return_is_next_open_to_close_h() -> None:
    open_ = np.array([[10.0], [11.0], [12.0], [13.0]])
    close = np.array([[10.5], [11.5], [12.5], [13.5]])
    fwd = forward_returns(open_, close, [1, 2])
    assert fwd[1][0, 0] == pytest.approx(11.5 / 11.0 - 1)  # enter open t+1, exit close t+1
    assert fwd[2][0, 0] == pytest.approx(12.5 / 11.0 - 1)
    assert np.isnan(fwd[1][3, 0]) and np.isnan(fwd[2][2, 0])  # past the data


@pytest.mark.filterwarnings("ignore:::alphalens")
@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")
def test_ic_and_quantile_returns_equal_alphalens() -> None:
    """alphalens uses close-to-close returns of one price table; with gapless prices
    (open[t+1] = close[t]) our next-open definition is the same number."""
    from alphalens.performance import factor_information_coefficient, mean_return_by_quantile
    from alphalens.utils import get_clean_factor_and_forward_returns

    market = planted_market(n_days=90, n_symbols=37, beta=0.002, seed=3)
    horizons = (1, 5, 10)
    signal = market.signal.copy()
    signal[-max(horizons):] = np.nan  # alphalens drops dates lacking any horizon
    signal[np.random.default_rng(0).random(signal.shape) < 0.05] = np.nan
    factor = pd.DataFrame(signal, index=market.dates, columns=market.symbols).stack()
    factor.index.names = ["date", "asset"]
    prices = pd.DataFrame(market.close, index=market.dates, columns=market.symbols)
    factor_data = get_clean_factor_and_forward_returns(factor, prices, quantiles=5,
                                                       periods=horizons, max_loss=1.0)
    theirs_ic = factor_information_coefficient(factor_data)
    theirs_q = mean_return_by_quantile(factor_data, demeaned=False)[0]
    theirs_qd = mean_return_by_quantile(factor_data, demeaned=True)[0]
    fwd = forward_returns(market.open, market.close, horizons)
    labels = quantile_labels(signal, 5)
    for h in horizons:
        ours = pd.Series(cross_sectional_ic(signal, fwd[h]), index=market.dates).dropna()
        np.testing.assert_allclose(ours.to_numpy(), theirs_ic[f"{h}D"].to_numpy(), atol=1e-9)
        assert ours.index.equals(theirs_ic.index)
        table, _spread = quantile_returns(labels, fwd[h], 5)
        np.testing.assert_allclose(table["mean"], theirs_q[f"{h}D"], atol=1e-9)
        np.testing.assert_allclose(table["mean_demeaned"], theirs_qd[f"{h}D"], atol=1e-9)


def test_planted_signal_is_recovered_with_the_expected_ic() -> None:
    beta, noise = 0.01, 0.02
    market = planted_market(beta=beta, noise=noise)
    fwd = forward_returns(market.open, market.close, [1])[1]
    summary = summarize_ic(cross_sectional_ic(market.signal, fwd), 1)
    rho = beta / math.hypot(beta, noise)
    expected = 6 / math.pi * math.asin(rho / 2)  # Spearman of a bivariate normal
    assert summary["mean"] == pytest.approx(expected, abs=0.02)
    assert summary["t_stat"] > 20
    labels = quantile_labels(market.signal, 5)
    table, spread = quantile_returns(labels, fwd, 5)
    assert table["mean"].is_monotonic_increasing
    assert np.nanmean(spread) > 0


def test_random_signal_has_no_ic() -> None:
    market = planted_market(beta=0.0)
    fwd = forward_returns(market.open, market.close, [1, 5])
    for h in (1, 5):
        summary = summarize_ic(cross_sectional_ic(market.signal, fwd[h]), h)
        assert abs(summary["mean"]) < 0.02
        assert abs(summary["t_stat_nonoverlap"]) < 4


def _ic_mean(market: Market, signal: np.ndarray) -> float:
    fwd = forward_returns(market.open, market.close, [1])[1]
    return summarize_ic(cross_sectional_ic(signal, fwd), 1)["mean"]


def test_alignment_a_one_day_shift_changes_the_result() -> None:
    market = planted_market()
    honest = _ic_mean(market, market.signal)
    stale = _ic_mean(market, shift_rows(market.signal, 1))  # known a day later
    assert honest > 0.3 and abs(stale) < 0.03
    # A signal equal to the same day's return (known at t) must not look predictive: the
    # label starts at the NEXT open.
    same_day = market.close / market.open - 1
    assert abs(_ic_mean(market, same_day)) < 0.05
    # A look-ahead signal (tomorrow's realised return) is perfectly 'predictive'.
    cheat = forward_returns(market.open, market.close, [1])[1]
    assert _ic_mean(market, cheat) == pytest.approx(1.0)


def test_quantile_labels_hand_case() -> None:
    signal = np.array([[1.0, 2.0, 3.0, 4.0, np.nan], [5.0, 5.0, np.nan, np.nan, np.nan]])
    labels = quantile_labels(signal, 2)
    assert labels[0].tolist() == [1, 1, 2, 2, 0]
    assert labels[1].tolist() == [1, 1, 0, 0, 0]  # ties on an edge go to the lower bin
    assert quantile_turnover(np.array([[2, 2, 1], [2, 1, 2]]), 2) == pytest.approx(0.5)


def test_placebo_permutes_within_dates_only() -> None:
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(30, 12))
    signal[rng.random(signal.shape) < 0.2] = np.nan
    shuffled = permute_within_dates(signal, seed=1)
    assert np.array_equal(np.isnan(shuffled), np.isnan(signal))
    np.testing.assert_array_equal(np.sort(shuffled, axis=1), np.sort(signal, axis=1))
    assert not np.array_equal(shuffled, signal, equal_nan=True)
    np.testing.assert_array_equal(shuffled, permute_within_dates(signal, seed=1))


def test_event_stats_hand_case() -> None:
    fwd = np.array([[0.1, -0.2, 0.3], [np.nan, 0.05, -0.05]])
    mask = np.array([[True, True, False], [True, True, True]])
    stats = event_stats(mask, fwd, fwd, sign=1, months=1.0)
    assert stats["count"] == 4
    assert stats["hit_rate"] == 0.5
    assert stats["mean"] == pytest.approx((0.1 - 0.2 + 0.05 - 0.05) / 4)
    assert event_stats(mask, fwd, fwd, sign=-1, months=1.0)["hit_rate"] == 0.5


def test_evaluate_panel_has_benchmarks_and_placebo() -> None:
    from darkpool_analysis.evaluation.ic import evaluate_panel

    market = planted_market(n_days=120, n_symbols=60)
    in_window = np.ones(len(market.dates), dtype=bool)
    panel = EvalPanel(market.dates, market.symbols, market.open, market.close,
                      {"short_buy_sell_ratio_z": market.signal}, in_window,
                      {"short_buy_sell_ratio_z": REGISTRY["short_buy_sell_ratio_z"]})
    result = evaluate_panel(panel, (1, 5))
    metrics = result.metrics.set_index(["section", "variant", "horizon", "metric"])["value"]
    assert metrics[("ic", "short_buy_sell_ratio_z", 1, "mean")] > 0.3
    assert abs(metrics[("ic", "placebo:short_buy_sell_ratio_z", 1, "mean")]) < 0.05
    assert metrics[("events", "always_long", 1, "count")] > 0
    assert ("events", "short_buy_sell_ratio_z>=1", 1, "hit_rate") in metrics.index
    assert result.label.startswith("point-in-time")


def test_masked_ranks_equal_scipy_rankdata_with_ties() -> None:
    from scipy.stats import rankdata

    from darkpool_analysis.evaluation.ic import RowSorter

    rng = np.random.default_rng(5)
    values = rng.integers(0, 6, size=(40, 25)).astype(float)  # many ties
    values[rng.random(values.shape) < 0.1] = np.nan
    mask = rng.random(values.shape) < 0.8
    ranks = RowSorter(values).ranks(mask)
    for row in range(len(values)):
        keep = mask[row] & np.isfinite(values[row])
        np.testing.assert_array_equal(ranks[row, keep], rankdata(values[row, keep]))
        assert np.isnan(ranks[row, ~keep]).all()
    edges = RowSorter(values).percentiles(np.linspace(0, 1, 6))
    for row in range(len(values)):
        finite = values[row][np.isfinite(values[row])]
        np.testing.assert_array_equal(edges[:, row],
                                      np.percentile(finite, np.linspace(0, 1, 6) * 100))
