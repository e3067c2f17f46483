"""Costs: the close-high-low spread estimator by hand, point-in-time costs, and a hand-made
three-trade backtest gross vs net."""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis.errors import ConfigError
from darkpool_analysis.evaluation.backtest import (
    BacktestEngine,
    grid_points,
    parse_exit,
    parse_exits,
    run_grid,
)
from darkpool_analysis.evaluation.costs import chl_spread, side_costs

DATES = pd.bdate_range("2024-01-01", periods=10)


def _three_trade_engine(side_cost: np.ndarray | None) -> tuple[BacktestEngine, np.ndarray]:
    signal = np.full((10, 1), 50.0)
    signal[[0, 3, 6]] = 80.0  # fixed:2 -> trades (entry open 1, exit close 2), (4, 5), (7, 8)
    open_ = np.arange(10, 20, dtype=float)[:, None]
    close = open_ + 0.5
    engine = BacktestEngine(DATES, pd.Index(["S0"]), open_, close, side_cost=side_cost)
    return engine, signal


def test_three_trades_gross_vs_net_by_hand() -> None:
    cost = np.arange(10, dtype=float)[:, None] * 1e-4  # session r costs r bps per side
    engine, signal = _three_trade_engine(cost)
    result = engine.run(signal, buy=70, sell=30, rule=parse_exit("fixed:2"), neutral=50)
    trades = result.trades
    assert trades["entry_price"].tolist() == [11.0, 14.0, 17.0]
    assert trades["exit_price"].tolist() == [12.5, 15.5, 18.5]
    gross = [12.5 / 11 - 1, 15.5 / 14 - 1, 18.5 / 17 - 1]
    # entry in session 1 pays 1 bp, exit in session 2 pays 2 bps, and so on
    net = [12.5 * (1 - 0.0002) / (11 * 1.0001) - 1, 15.5 * (1 - 0.0005) / (14 * 1.0004) - 1,
           18.5 * (1 - 0.0008) / (17 * 1.0007) - 1]
    assert trades["return"].tolist() == pytest.approx(gross, rel=1e-12)
    assert trades["return_net"].tolist() == pytest.approx(net, rel=1e-12)
    assert result.stats["mean_trade_return"] == pytest.approx(np.mean(gross), rel=1e-12)
    assert result.stats["net_mean_trade_return"] == pytest.approx(np.mean(net), rel=1e-12)
    # compounding the daily net marks over each trade gives the net trade return
    daily = result.daily.set_index("date")
    for (_, trade), expected in zip(trades.iterrows(), net, strict=True):
        span = daily.loc[trade["entry_date"]:trade["exit_date"], "return_net"]
        assert np.prod(1 + span.to_numpy()) - 1 == pytest.approx(expected, rel=1e-12)
    assert daily["equity_net"].iloc[-1] == pytest.approx(np.prod(1 + np.array(net)), rel=1e-12)
    assert result.stats["net_total_return"] < result.stats["total_return"]


def test_fixed_five_bps_per_side_costs_ten_bps_a_round_trip() -> None:
    engine, signal = _three_trade_engine(side_costs((10, 1), cost_bps=5))
    trades = engine.run(signal, buy=70, sell=30, rule=parse_exit("fixed:2")).trades
    expected = trades["exit_price"] * 0.9995 / (trades["entry_price"] * 1.0005) - 1
    np.testing.assert_allclose(trades["return_net"], expected, rtol=1e-12)
    free, _ = _three_trade_engine(None)
    same = free.run(signal, buy=70, sell=30, rule=parse_exit("fixed:2")).trades
    np.testing.assert_array_equal(same["return_net"], same["return"])


def test_chl_estimator_by_hand() -> None:
    high = np.array([[102.0], [103.0], [101.0]])
    low = np.array([[98.0], [99.0], [97.0]])
    close = np.array([[101.0], [100.0], [98.0]])

    def pair(t: int) -> float:
        eta0 = (math.log(high[t, 0]) + math.log(low[t, 0])) / 2
        eta1 = (math.log(high[t + 1, 0]) + math.log(low[t + 1, 0])) / 2
        c0 = math.log(close[t, 0])
        return 4 * (c0 - eta0) * (c0 - eta1)

    spread = chl_spread(high, low, close, window=2, min_pairs=1)
    assert np.isnan(spread[0, 0])  # no complete pair by the first close
    assert spread[1, 0] == pytest.approx(math.sqrt(max(pair(0), 0.0)))
    assert spread[2, 0] == pytest.approx(math.sqrt(max((pair(0) + pair(1)) / 2, 0.0)))


def test_chl_costs_use_only_data_before_the_trade_session() -> None:
    rng = np.random.default_rng(2)
    n, m = 60, 4
    close = 50 * np.exp(rng.normal(0, 0.02, (n, m)).cumsum(axis=0))
    high = close * (1 + rng.uniform(0, 0.02, (n, m)))
    low = close * (1 - rng.uniform(0, 0.02, (n, m)))
    costs = side_costs((n, m), cost_bps=5, model="chl", high=high, low=low, close=close)
    assert (costs >= 5e-4).all() and (costs[30:] > 5e-4).any()
    for r in (10, 30, 59):
        changed = [a.copy() for a in (high, low, close)]
        for a in changed:
            a[r:] *= rng.uniform(0.5, 1.5, a[r:].shape)  # rewrite the trade day and after
        again = side_costs((n, m), cost_bps=5, model="chl", high=changed[0], low=changed[1],
                           close=changed[2])
        np.testing.assert_array_equal(again[: r + 1], costs[: r + 1])
    # a name without its own estimate pays the date's median estimate
    high[:, 0] = np.nan
    filled = side_costs((n, m), cost_bps=5, model="chl", high=high, low=low, close=close)
    np.testing.assert_allclose(filled[40, 0], np.median(filled[40, 1:]))


def test_bad_cost_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="cost-model"):
        side_costs((2, 2), model="spread")
    with pytest.raises(ConfigError, match="cost-bps"):
        side_costs((2, 2), cost_bps=-1)


def _grid_inputs() -> tuple[BacktestEngine, dict[str, np.ndarray], list]:
    rng = np.random.default_rng(8)
    n, m = 90, 7
    close = 10 * np.exp(rng.normal(0, 0.02, (n, m)).cumsum(axis=0))
    engine = BacktestEngine(pd.bdate_range("2024-01-01", periods=n), pd.Index(list("ABCDEFG")),
                            close * 1.001, close, side_cost=np.full((n, m), 5e-4))
    signals = {name: np.clip(50 + 20 * rng.normal(size=(n, m)), 0, 100) for name in "vw"}
    points = grid_points({"v": (70.0, 30.0, 50.0), "w": (70.0, 30.0, 50.0)},
                         {"v": [(60, 40), (70, 30)], "w": [(65, 35)]},
                         parse_exits("fixed:3,first_dist,hybrid:5"))
    return engine, signals, points


def test_grid_trial_matrix_is_each_points_net_daily_series() -> None:
    engine, signals, points = _grid_inputs()
    grid = run_grid(engine, signals, {"v": 50.0, "w": 50.0}, points)
    assert len(grid.table) == len(points) == grid.returns.shape[1]
    for j, point in enumerate(points):  # rows keep the input order
        row = grid.table.iloc[j]
        assert (row["variant"], row["buy"], row["exit"]) == (point.variant, point.buy,
                                                            point.rule.name)
        alone = engine.run(signals[point.variant], buy=point.buy, sell=point.sell,
                           rule=point.rule, neutral=50.0)
        np.testing.assert_array_equal(grid.returns[:, j], alone.net_daily)
        assert row["net_sharpe_daily_annualised"] < row["sharpe_daily_annualised"] or \
            row["trades"] == 0


def test_grid_on_a_process_pool_equals_serial() -> None:
    engine, signals, points = _grid_inputs()
    serial = run_grid(engine, signals, {"v": 50.0, "w": 50.0}, points)
    with ProcessPoolExecutor(2) as pool:
        parallel = run_grid(engine, signals, {"v": 50.0, "w": 50.0}, points, executor=pool)
    pd.testing.assert_frame_equal(serial.table, parallel.table)
    np.testing.assert_array_equal(serial.returns, parallel.returns)
