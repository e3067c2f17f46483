"""Out-of-sample design, the time-series IC, the permutation placebo and verdict sentences."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest
from eval_markets import planted_market
from scipy.stats import spearmanr

from darkpool_analysis.evaluation.assess import (
    AssessConfig,
    assess,
    make_design,
    time_series_ic_series,
)
from darkpool_analysis.evaluation.costs import side_costs
from darkpool_analysis.evaluation.ic import cross_sectional_ic
from darkpool_analysis.evaluation.placebo import percentile, placebo_stats
from darkpool_analysis.evaluation.returns import EvalPanel, forward_returns
from darkpool_analysis.signals import REGISTRY

FAST = AssessConfig(horizons=(1, 5), bootstrap_reps=100, spa_reps=100, placebos=200)


def _dates(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2023-01-02", periods=n)


def test_design_walk_forward_split_or_none_with_reasons() -> None:
    cfg = AssessConfig(horizons=(1, 20))
    wf = make_design(_dates(300), np.ones(300, dtype=bool), cfg)
    assert wf.kind == "walk_forward" and len(wf.folds) == 5
    for train, test in wf.folds:
        assert len(train) == 126 and test[0] == train[-1] + 1
    split = make_design(_dates(100), np.ones(100, dtype=bool), cfg)
    assert split.kind == "split"
    (train, test), = split.folds
    assert test[0] - train[-1] == 21  # an embargo of the longest horizon (20 sessions)
    assert "walk-forward needs 168 sessions" in split.text and "embargo 20" in split.text
    none = make_design(_dates(51), np.ones(51, dtype=bool), cfg)
    assert none.kind == "none" and not len(none.oos_rows)
    assert "needs at least 60 sessions" in none.text and "the window has 51" in none.text


def test_time_series_ic_of_one_name_is_its_spearman_correlation() -> None:
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(80, 1))
    fwd = 0.3 * signal + rng.normal(size=(80, 1))
    signal[[3, 9]] = np.nan
    fwd[[5]] = np.nan
    series = time_series_ic_series(signal, fwd, min_obs=20)
    ok = np.isfinite(signal[:, 0]) & np.isfinite(fwd[:, 0])
    expected = spearmanr(signal[ok, 0], fwd[ok, 0]).statistic
    assert np.nanmean(series) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(series[~ok]).all()
    assert np.isnan(time_series_ic_series(signal[:10], fwd[:10], min_obs=20)).all()


def test_placebo_statistic_is_the_mean_ic_and_noise_centres_on_zero() -> None:
    market = planted_market(n_days=120, n_symbols=250, beta=0.002, seed=4)
    fwd = forward_returns(market.open, market.close, [1])[1][:-1]
    signal = market.signal[:-1]
    noise = np.random.default_rng(9).normal(size=signal.shape)
    stats = placebo_stats({"planted": signal, "noise": noise}, {1: fwd}, draws=200, seed=3)
    real, draws = stats[("planted", 1)]
    assert real == pytest.approx(np.nanmean(cross_sectional_ic(signal, fwd)), rel=1e-9)
    assert len(draws) == 200 and len(np.unique(draws)) == 200
    assert percentile(real, draws) == 100.0
    noise_real, noise_draws = stats[("noise", 1)]
    assert abs(noise_draws.mean()) < 3 * noise_draws.std() / np.sqrt(200) + 1e-3
    assert 2.5 < percentile(noise_real, noise_draws) < 97.5
    # few names: more than one random order supplies the 200 draws
    small = placebo_stats({"s": signal[:, :12]}, {1: fwd[:, :12]}, draws=200, seed=3)
    assert len(small[("s", 1)][1]) == 200


def test_placebo_on_a_process_pool_equals_serial() -> None:
    market = planted_market(n_days=90, n_symbols=60, seed=2)
    fwd = {h: forward_returns(market.open, market.close, [h])[h] for h in (1, 5)}
    signals = {"a": market.signal, "b": -market.signal}
    serial = placebo_stats(signals, fwd, draws=200, seed=5)
    with ProcessPoolExecutor(2) as pool:
        parallel = placebo_stats(signals, fwd, draws=200, seed=5, executor=pool)
    assert serial.keys() == parallel.keys()
    for key, (real, draws) in serial.items():
        assert parallel[key][0] == real
        np.testing.assert_array_equal(parallel[key][1], draws)
    ts = placebo_stats({"a": market.signal[:, :2]}, {1: fwd[1][:, :2]}, draws=50, seed=1,
                       time_series=True)
    real, draws = ts[("a", 1)]
    assert len(draws) == 50 and percentile(real, draws) == 100.0


def _panel(n_days: int, n_symbols: int, beta: float, seed: int = 1) -> EvalPanel:
    market = planted_market(n_days=n_days, n_symbols=n_symbols, beta=beta, seed=seed)
    name = "short_buy_sell_ratio_z"
    return EvalPanel(market.dates, market.symbols, market.open, market.close,
                     {name: market.signal}, np.ones(n_days, dtype=bool),
                     {name: REGISTRY[name]})


def test_assess_cross_sectional_evidence_sentence() -> None:
    panel = _panel(220, 80, beta=0.004)
    result = assess(panel, side_costs(panel.shape), FAST)
    assert result.mode == "cross_sectional" and result.design.kind == "walk_forward"
    verdict = result.verdicts["short_buy_sell_ratio_z"]
    assert verdict.verdict == "evidence"
    assert verdict.reason.startswith("evidence: out-of-sample IC")
    assert "adjusted p <0.001" in verdict.reason and "bps/day" in verdict.reason
    row = result.oos[result.oos["horizon"] == 1].iloc[0]
    assert row["ic_ci_lo"] < row["ic_mean"] < row["ic_ci_hi"]
    assert row["placebo_percentile"] == 100.0 and row["placebo_draws"] == 200
    assert row["spread_net_bps_per_day"] < row["spread_gross_bps_per_day"]
    assert result.n_trials == 2  # one spread per horizon, no grid
    assert result.pbo is not None and result.pbo < 0.1  # the 1-day spread stays the best
    assert result.spa_pvalue is not None and result.spa_pvalue < 0.05


def test_assess_few_names_runs_the_time_series_and_says_so() -> None:
    panel = _panel(300, 3, beta=0.004, seed=3)
    result = assess(panel, side_costs(panel.shape), FAST)
    assert result.mode == "time_series" and "fewer than --min-names 10" in result.mode_text
    row = result.oos[result.oos["horizon"] == 1].iloc[0]
    assert row["ic_mean"] > 0.1 and row["ic_p_adjusted"] < 0.05
    assert not result.event_study.empty
    assert set(result.event_study["signal"]) == {"buy (>= 1)", "sell (<= -1)"}
    short = _panel(30, 1, beta=0.0, seed=3)
    verdict = assess(short, side_costs(short.shape), FAST).verdicts["short_buy_sell_ratio_z"]
    assert verdict.verdict == "insufficient_data" and "needs at least" in verdict.reason


def test_assess_reusing_the_in_sample_series_gives_the_same_numbers() -> None:
    from darkpool_analysis.evaluation.ic import evaluate_panel

    panel = _panel(220, 40, beta=0.002, seed=5)
    cost = side_costs(panel.shape, cost_bps=3.0)
    insample = evaluate_panel(panel, FAST.horizons, side_cost=cost)
    alone = assess(panel, cost, FAST)
    shared = assess(panel, cost, FAST, insample=insample)
    pd.testing.assert_frame_equal(shared.oos, alone.oos, rtol=1e-12)
    assert {k: v.reason for k, v in shared.verdicts.items()} == \
        {k: v.reason for k, v in alone.verdicts.items()}
    # another cost array: nothing is re-used, still the same as computing afresh
    other = assess(panel, side_costs(panel.shape, cost_bps=9.0), FAST, insample=insample)
    fresh = assess(panel, side_costs(panel.shape, cost_bps=9.0), FAST)
    pd.testing.assert_frame_equal(other.oos, fresh.oos)
