"""Event backtest: a hand-made 10-day case, and the vectorised engine against a slow
day-by-day reference on random data for every exit rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis.errors import ConfigError
from darkpool_analysis.evaluation.backtest import (
    NET_STATS,
    BacktestEngine,
    ExitRule,
    parse_exit,
    parse_exits,
    summarize,
)

DATES = pd.bdate_range("2024-01-01", periods=10)


def _engine(open_: np.ndarray, close: np.ndarray, in_window: np.ndarray | None = None,
            dates: pd.DatetimeIndex = DATES) -> BacktestEngine:
    symbols = pd.Index([f"S{i}" for i in range(open_.shape[1])])
    return BacktestEngine(dates[: len(open_)], symbols, open_, close, in_window)


def test_hand_made_ten_day_case() -> None:
    signal = np.array([50, 75, 60, 55, 25, 50, 80, 50, 50, 50], dtype=float)[:, None]
    open_ = np.arange(10, 20, dtype=float)[:, None]
    close = open_ + 0.5
    engine = _engine(open_, close)
    first = engine.run(signal, buy=70, sell=30, rule=parse_exit("first_dist"), neutral=50)
    trades = first.trades
    assert trades["entry_price"].tolist() == [12.0, 17.0]  # next open, never the close
    assert trades["exit_price"].tolist() == [15.0, 19.5]   # open after the sell signal; end
    assert trades["exit_reason"].tolist() == ["signal", "end_of_data"]
    assert trades["return"].tolist() == pytest.approx([15 / 12 - 1, 19.5 / 17 - 1])
    fixed = engine.run(signal, buy=70, sell=30, rule=parse_exit("fixed:2"), neutral=50).trades
    assert fixed["entry_date"].tolist() == [DATES[2], DATES[7]]
    assert fixed["exit_price"].tolist() == [13.5, 18.5]  # close of t + 2
    assert fixed["sessions_held"].tolist() == [2, 2]
    daily = engine.run(signal, buy=70, sell=30, rule=parse_exit("fixed:2"), neutral=50).daily
    assert daily.loc[daily["date"] == DATES[2], "return"].item() == pytest.approx(12.5 / 12 - 1)
    assert daily.loc[daily["date"] == DATES[3], "return"].item() == pytest.approx(13.5 / 12.5 - 1)
    assert daily.loc[daily["date"] == DATES[4], "return"].item() == 0.0  # flat
    decay = engine.run(signal, buy=70, sell=30, rule=parse_exit("decay:2"), neutral=50).trades
    # below 50 on days 4 only (25); 50 is not below 50 -> no decay exit, ends at max 60 / data
    assert decay["exit_reason"].tolist() == ["end_of_data"]
    two = engine.run(signal, buy=70, sell=30, rule=parse_exit("two_dist"), neutral=50).trades
    assert len(two) == 1  # one distribution day is not two; signal on day 6 is ignored


def test_overlapping_signals_do_not_stack() -> None:
    signal = np.full((10, 1), 80.0)
    open_ = np.linspace(10, 11, 10)[:, None]
    result = _engine(open_, open_).run(signal, buy=70, sell=30, rule=parse_exit("fixed:3"))
    trades = result.trades
    assert len(trades) == 3  # entries at 1, 4, 7 (the next signal on/after each exit)
    assert trades["entry_date"].tolist() == [DATES[1], DATES[4], DATES[7]]
    assert result.daily["positions"].max() == 1


def _reference(signal: np.ndarray, open_: np.ndarray, close: np.ndarray, buy: float,
               sell: float, rule: ExitRule, neutral: float, in_window: np.ndarray,
               cost: np.ndarray | None = None,
               net: dict[str, object] | None = None
               ) -> tuple[list[tuple[int, int, int, float]], np.ndarray]:
    """Slow day-by-day state machine: trades (symbol, entry, exit, return) and daily mean.

    With ``cost`` (per-side fractions) and a ``net`` dict, also fills ``net["daily"]`` (the
    net daily mean: the entry mark divided by 1 + entry cost, the exit mark multiplied by
    1 - exit cost), ``net["trades"]`` (net trade returns in ``trades`` order) and
    ``net["positions"]`` (positions held per day)."""
    n, m = signal.shape
    close_ff = pd.DataFrame(close).ffill().to_numpy()
    level = rule.decay_level if rule.decay_level is not None else neutral
    cost = np.zeros((n, m)) if cost is None else cost
    trades = []
    net_trades: dict[tuple[int, int], float] = {}
    day_sum, day_count = np.zeros(n), np.zeros(n)
    net_sum = np.zeros(n)
    for s in range(m):
        position = None  # (signal_day, entry_day, entry_price)
        pending_entry = pending_exit = False
        dist_run = decay_run = 0

        def close_trade(s: int, position: tuple[int, int, float], day: int, price: float,
                        at_open: bool) -> None:
            _t, e, p0 = position
            trades.append((s, e, day, price / p0 - 1))
            net_trades[(s, e)] = price * (1 - cost[day, s]) / (p0 * (1 + cost[e, s])) - 1
            for d in range(e, day + 1):
                start = p0 if d == e else close_ff[d - 1, s]
                end = price if d == day else close_ff[d, s]
                if at_open and d == day:
                    end = price
                day_sum[d] += end / start - 1
                mark = end / start - 1
                growth = 1 + (mark if np.isfinite(mark) else 0.0)
                if d == e:
                    growth /= 1 + cost[e, s]
                if d == day:
                    growth *= 1 - cost[day, s]
                net_sum[d] += growth - 1
                day_count[d] += 1

        for d in range(n):
            if position is None and pending_entry:
                position = (d - 1, d, open_[d, s])
                dist_run = decay_run = 0
                pending_entry = False
            elif position is not None and pending_exit:
                price = open_[d, s] if np.isfinite(open_[d, s]) else close_ff[d, s]
                close_trade(s, position, d, price, True)
                position, pending_exit = None, False
            if position is not None and rule.max_days is not None \
                    and d == position[0] + rule.max_days:
                close_trade(s, position, d, close_ff[d, s], False)
                position = None
            value = signal[d, s]
            if position is not None:
                dist_run = dist_run + 1 if value <= sell else 0
                decay_run = decay_run + 1 if value < level else 0
                if (rule.distribution_run and dist_run >= rule.distribution_run) or \
                        (rule.decay_days and decay_run >= rule.decay_days):
                    pending_exit = True
            elif value >= buy and in_window[d] and d + 1 < n and np.isfinite(open_[d + 1, s]):
                pending_entry = True
        if position is not None:
            close_trade(s, position, n - 1, close_ff[n - 1, s], False)
    with np.errstate(invalid="ignore"):
        daily = np.where(day_count > 0, day_sum / np.maximum(day_count, 1), 0.0)
    if net is not None:
        net["daily"] = np.where(day_count > 0, net_sum / np.maximum(day_count, 1), 0.0)
        net["trades"] = [net_trades[(s, e)] for s, e, _x, _r in sorted(trades)]
        net["positions"] = day_count
    return sorted(trades), daily


@pytest.mark.parametrize("spec", ["fixed:1", "fixed:5", "first_dist", "two_dist", "hybrid:4",
                                  "decay:2", "decay:3:45"])
def test_engine_equals_slow_reference(spec: str) -> None:
    rng = np.random.default_rng(11)
    n, m = 120, 9
    dates = pd.bdate_range("2023-01-02", periods=n)
    signal = np.clip(50 + 15 * rng.normal(size=(n, m)).cumsum(axis=0) / 4, 0, 100)
    signal[rng.random((n, m)) < 0.03] = np.nan
    close = 20 * np.exp(rng.normal(0, 0.02, (n, m)).cumsum(axis=0))
    open_ = close * np.exp(rng.normal(0, 0.005, (n, m)))
    open_[rng.random((n, m)) < 0.04] = np.nan
    close[rng.random((n, m)) < 0.04] = np.nan
    close[0] = 20.0
    in_window = np.arange(n) >= 10
    rule = parse_exit(spec)
    result = _engine(open_, close, in_window, dates).run(signal, buy=65, sell=35, rule=rule,
                                                         neutral=50)
    expected_trades, expected_daily = _reference(signal, open_, close, 65, 35, rule, 50,
                                                 in_window)
    got = sorted(zip(result.trades["symbol"].str[1:].astype(int),
                     dates.get_indexer(result.trades["entry_date"]),
                     dates.get_indexer(result.trades["exit_date"]),
                     result.trades["return"], strict=True))
    assert [g[:3] for g in got] == [e[:3] for e in expected_trades]
    np.testing.assert_allclose([g[3] for g in got], [e[3] for e in expected_trades], rtol=1e-12)
    span = dates.get_indexer(result.daily["date"])
    np.testing.assert_allclose(result.daily["return"], expected_daily[span], atol=1e-12)
    assert len(got) > 5


def test_daily_returns_compound_to_the_trade_return() -> None:
    rng = np.random.default_rng(2)
    close = 10 * np.exp(rng.normal(0, 0.02, (30, 1)).cumsum(axis=0))
    open_ = close * 1.003
    signal = np.zeros((30, 1))
    signal[3] = 2.0
    result = _engine(open_, close, dates=pd.bdate_range("2024-01-01", periods=30)).run(
        signal, buy=1.0, sell=-1.0, rule=parse_exit("fixed:7"))
    assert np.prod(1 + result.daily["return"]) - 1 == pytest.approx(
        result.trades["return"].item(), rel=1e-12)
    stats = result.stats
    assert stats["trades"] == 1 and np.isfinite(stats["sharpe_daily_annualised"])


def test_exit_parsing_and_validation() -> None:
    assert [r.name for r in parse_exits("fixed:5,first_dist,two_dist,hybrid:30,decay:3")] == [
        "fixed_5", "first_dist", "two_dist", "hybrid_30", "decay_3"]
    with pytest.raises(ConfigError, match="unknown exit"):
        parse_exit("trailing:5")
    with pytest.raises(ConfigError, match="session count"):
        parse_exit("fixed")
    engine = _engine(np.ones((10, 1)), np.ones((10, 1)))
    with pytest.raises(ConfigError, match="below buy"):
        engine.run(np.ones((10, 1)), buy=30, sell=70, rule=parse_exit("fixed:2"))


def test_grid_with_cached_arrays_equals_individual_runs() -> None:
    from darkpool_analysis.evaluation.backtest import grid_points, run_grid

    rng = np.random.default_rng(3)
    n, m = 80, 6
    signal = np.clip(50 + 20 * rng.normal(size=(n, m)), 0, 100)
    close = 10 * np.exp(rng.normal(0, 0.02, (n, m)).cumsum(axis=0))
    engine = _engine(close * 1.001, close, dates=pd.bdate_range("2024-01-01", periods=n))
    points = grid_points({"v": (70.0, 30.0, 50.0)}, {"v": [(60, 40), (70, 30), (65, 40)]},
                         parse_exits("fixed:3,first_dist,two_dist,decay:2,hybrid:5"))
    grid = run_grid(engine, {"v": signal}, {"v": 50.0}, points).table
    assert len(grid) == 15
    for row in grid.itertuples(index=False):
        alone = engine.run(signal, buy=row.buy, sell=row.sell, rule=parse_exit(
            {"fixed_3": "fixed:3", "first_dist": "first_dist", "two_dist": "two_dist",
             "decay_2": "decay:2", "hybrid_5": "hybrid:5"}[row.exit]), neutral=50.0)
        assert alone.stats["trades"] == row.trades
        assert alone.stats["total_return"] == pytest.approx(row.total_return, rel=1e-12)


def test_summary_statistics_by_hand() -> None:
    daily = np.array([0.01, -0.02, 0.03, 0.0])
    stats = summarize(np.array([0.10, -0.05, 0.02]), np.array([3, 2, 5]),
                      np.array([False, False, True]), daily, np.array([1, 1, 2, 0]))
    assert stats["trades"] == 3
    assert stats["win_rate"] == pytest.approx(2 / 3)
    assert stats["profit_factor"] == pytest.approx(0.12 / 0.05)
    assert stats["mean_trade_return"] == pytest.approx(0.07 / 3)
    assert stats["open_at_end"] == 1
    equity = np.cumprod(1 + daily)
    assert stats["total_return"] == pytest.approx(equity[-1] - 1)
    # Sharpe on DAILY portfolio returns, annualised with sqrt(252), never on trade returns
    assert stats["sharpe_daily_annualised"] == pytest.approx(
        daily.mean() / daily.std(ddof=1) * np.sqrt(252))
    only_wins = summarize(np.array([0.1]), np.array([2]), np.array([False]), daily,
                          np.array([1, 1, 0, 0]))
    assert only_wins["profit_factor"] == np.inf
    nothing = summarize(np.array([]), np.array([]), np.array([], dtype=bool), np.zeros(4),
                        np.zeros(4))
    assert np.isnan(nothing["profit_factor"]) and np.isnan(nothing["win_rate"])


@pytest.mark.parametrize("spec", ["fixed:1", "fixed:6", "first_dist", "two_dist", "hybrid:4",
                                  "decay:2"])
def test_engine_net_series_and_statistics_equal_slow_reference(spec: str) -> None:
    """Costs on every path: the compiled walk's net daily series, net trade returns and the
    whole statistics row equal the day-by-day state machine's."""
    rng = np.random.default_rng(29)
    n, m = 150, 11
    dates = pd.bdate_range("2022-01-03", periods=n)
    signal = np.clip(50 + 15 * rng.normal(size=(n, m)).cumsum(axis=0) / 4, 0, 100)
    signal[rng.random((n, m)) < 0.03] = np.nan
    close = 20 * np.exp(rng.normal(0, 0.02, (n, m)).cumsum(axis=0))
    open_ = close * np.exp(rng.normal(0, 0.005, (n, m)))
    open_[rng.random((n, m)) < 0.04] = np.nan
    close[rng.random((n, m)) < 0.04] = np.nan
    close[0] = 20.0
    cost = rng.uniform(0.0002, 0.003, (n, m))
    in_window = (np.arange(n) >= 12) & (np.arange(n) < n - 15)
    rule = parse_exit(spec)
    engine = BacktestEngine(dates, pd.Index([f"S{i}" for i in range(m)]), open_, close,
                            in_window, side_cost=cost)
    result = engine.run(signal, buy=62, sell=38, rule=rule, neutral=50)
    net: dict[str, object] = {}
    expected, gross_daily = _reference(signal, open_, close, 62, 38, rule, 50, in_window,
                                       cost, net)
    got = sorted(zip(result.trades["symbol"].str[1:].astype(int),
                     dates.get_indexer(result.trades["entry_date"]),
                     dates.get_indexer(result.trades["exit_date"]),
                     result.trades["return_net"], strict=True))
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    np.testing.assert_allclose([g[3] for g in got], net["trades"], rtol=1e-12)
    np.testing.assert_allclose(result.net_daily, net["daily"], atol=1e-12)
    span = dates.get_indexer(result.daily["date"])
    np.testing.assert_allclose(result.daily["return_net"], net["daily"][span], atol=1e-12)
    exit_reason = result.trades.sort_values(["symbol", "entry_date"])["exit_reason"]
    assert set(exit_reason) <= {"signal", "max_days", "end_of_data"}
    trades = result.trades.assign(sym=result.trades["symbol"].str[1:].astype(int))
    trades = trades.sort_values(["sym", "entry_date"])
    end = trades["exit_reason"].to_numpy() == "end_of_data"
    held = trades["sessions_held"].to_numpy()
    positions = np.asarray(net["positions"])[span]
    want = summarize(np.array([e[3] for e in expected]), held, end, gross_daily[span],
                     positions)
    want_net = summarize(np.asarray(net["trades"]), held, end, net["daily"][span], positions)
    for k, v in want.items():
        assert result.stats[k] == pytest.approx(v, rel=1e-10, abs=1e-12, nan_ok=True), k
    for k in NET_STATS:
        assert result.stats[f"net_{k}"] == pytest.approx(want_net[k], rel=1e-10, abs=1e-12,
                                                       nan_ok=True), k
    assert len(got) > 5
