"""Event backtest: long on accumulation signals, one position per ticker, several exit rules.

Timing (fixes the original system's bugs): a signal at session ``t`` is known after the close
(FINRA publishes around 18:00 ET), so the entry is at the OPEN of ``t+1``. Signal-driven exits
(a distribution signal at ``u``) also execute at the open of ``u+1``; a maximum holding period
of ``N`` sessions exits at the close of ``t+N`` (the same span as the forward return
``fwd_N``). A ticker holds at most one position: signals while a position is open are ignored,
and the next entry needs a signal on or after the exit session. A position still open at the
end of the data is closed at the last close and flagged ``end_of_data``.

Portfolio returns are DAILY: each session, the equal-weighted mean return of the positions
exposed during it (marked to market on closes; the entry day earns close/entry-open, an
open-exit day earns exit-open/previous-close), 0 when flat. Sharpe and drawdown use those
daily returns, never multi-day trade returns.

Costs: with ``side_cost`` (a dates x names matrix of per-side cost fractions, see
:mod:`costs`) a trade entered in session ``e`` at price ``P0`` and left in session ``x`` at
``P1`` returns ``P1 (1 - c[x]) / (P0 (1 + c[e])) - 1`` net; the daily series charge the same
factors on the entry and exit days, so compounding the daily net marks gives the net trade.
Every statistic exists gross and net (``net_`` prefix).

Compiled (:mod:`kernels`): per signal and buy threshold one array "next entry at or after"
and per exit condition one "next trigger at or after" (cached across a grid's
combinations); a combination then walks each name's chain of non-overlapping trades with
those jumps and adds each held cell's mark to its date, so it costs the trades plus the held
cells, not dense passes over the panel.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from darkpool_analysis.errors import ConfigError

TRADING_DAYS = 252


@dataclass(frozen=True)
class ExitRule:
    """When to leave a position. ``None`` disables a condition; at least one must be set.

    ``max_days``: exit at the close of the N-th session after the signal;
    ``distribution_run``: exit after k consecutive signals <= the sell threshold;
    ``decay_days``: exit after d consecutive signals below ``decay_level`` (default: the
    variant's neutral level, 50 for display scores).
    """

    name: str
    max_days: int | None = None
    distribution_run: int | None = None
    decay_days: int | None = None
    decay_level: float | None = None

    def __post_init__(self) -> None:
        if self.max_days is None and self.distribution_run is None and self.decay_days is None:
            raise ConfigError(f"exit rule {self.name!r} never exits")
        for value in (self.max_days, self.distribution_run, self.decay_days):
            if value is not None and not 1 <= value <= 2520:
                raise ConfigError(f"exit rule {self.name!r}: day counts must be in 1..2520")


_EXIT_RE = re.compile(r"^(fixed|first_dist|two_dist|hybrid|decay)(?::(\d+))?(?::(-?[\d.]+))?$")
EXIT_HELP = ("fixed:N (N sessions), first_dist (first distribution signal), two_dist (two "
             "consecutive), hybrid:N (first distribution or N sessions), decay:D[:LEVEL] "
             "(D sessions below LEVEL, default the neutral level, max 60 sessions)")


def parse_exit(spec: str) -> ExitRule:
    """``fixed:10``, ``first_dist``, ``two_dist``, ``hybrid:30``, ``decay:3`` or ``decay:3:50``."""
    match = _EXIT_RE.match(spec.strip())
    if not match:
        raise ConfigError(f"unknown exit {spec!r}; valid: {EXIT_HELP}")
    kind, number, level = match.group(1), match.group(2), match.group(3)
    count = int(number) if number else None
    if kind in ("fixed", "hybrid") and count is None:
        raise ConfigError(f"exit {spec!r} needs a session count, e.g. {kind}:10")
    if kind == "fixed":
        return ExitRule(f"fixed_{count}", max_days=count)
    if kind == "first_dist":
        return ExitRule("first_dist", distribution_run=1)
    if kind == "two_dist":
        return ExitRule("two_dist", distribution_run=2)
    if kind == "hybrid":
        return ExitRule(f"hybrid_{count}", max_days=count, distribution_run=1)
    days = count or 3
    return ExitRule(f"decay_{days}" + (f"_{level}" if level else ""), max_days=60,
                    decay_days=days, decay_level=float(level) if level else None)


def parse_exits(text: str) -> list[ExitRule]:
    """Comma-separated exit specs."""
    return [parse_exit(part) for part in text.split(",") if part.strip()]


DEFAULT_EXITS = "fixed:5,fixed:10,fixed:20,first_dist,two_dist,hybrid:30,decay:3"


@dataclass
class BacktestResult:
    """Trades (one row each), the daily portfolio series, and summary statistics."""

    trades: pd.DataFrame
    daily: pd.DataFrame  # date, return, return_net, positions, equity, equity_net
    stats: dict[str, float]
    net_daily: np.ndarray = field(default_factory=lambda: np.zeros(0))  # net, every row


def ffill_rows(values: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs down each column (last known price)."""
    n = len(values)
    idx = np.where(np.isfinite(values), np.arange(n)[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return np.take_along_axis(values, idx, axis=0)


class BacktestEngine:
    """Prices prepared once; :meth:`run` backtests one (signal, thresholds, exit) combination.

    ``in_window`` restricts entry signals to the evaluation window; exits may use later data.
    The walk itself is compiled (:mod:`kernels`, names x dates layout); the arrays it needs
    are transposed here once.
    """

    def __init__(self, dates: pd.DatetimeIndex, symbols: pd.Index, open_: np.ndarray,
                 close: np.ndarray, in_window: np.ndarray | None = None,
                 side_cost: np.ndarray | None = None) -> None:
        self.dates, self.symbols = dates, symbols
        self.n, self.m = open_.shape
        cost = (np.zeros(open_.shape) if side_cost is None
                else np.nan_to_num(np.asarray(side_cost, dtype=float), nan=0.0))
        if cost.shape != open_.shape:
            raise ConfigError("side_cost must have the prices' dates x symbols shape")
        open_ = np.where(open_ > 0, open_, np.nan)
        close_ff = ffill_rows(np.where(close > 0, close, np.nan))
        with np.errstate(invalid="ignore", divide="ignore"):
            daily = np.full(open_.shape, np.nan)
            daily[1:] = close_ff[1:] / close_ff[:-1] - 1.0
        self.in_window = np.ones(self.n, dtype=bool) if in_window is None else in_window
        self.window_rows = np.arange(self.n)[self.in_window]
        # the entry open (t+1) must exist; a missing exit open falls back to that day's close
        next_open = np.zeros(open_.shape, dtype=bool)
        next_open[:-1] = np.isfinite(open_[1:])

        def names_by_dates(values: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(values.T)

        self._open = names_by_dates(open_)
        self._close_ff = names_by_dates(close_ff)
        self._exit_open = names_by_dates(np.where(np.isfinite(open_), open_, close_ff))
        self._close_to_close = names_by_dates(np.nan_to_num(daily, nan=0.0))
        self._cost = names_by_dates(cost)
        self._eligible = names_by_dates(next_open & self.in_window[:, None])
        # small bounded caches so a grid re-uses the transposed signal and the entry/exit
        # arrays across combinations
        self._signals: OrderedDict[tuple[object, ...], np.ndarray] = OrderedDict()
        self._entries: OrderedDict[tuple[object, ...], np.ndarray] = OrderedDict()
        self._triggers: OrderedDict[tuple[object, ...], np.ndarray] = OrderedDict()

    @staticmethod
    def _cached(cache: OrderedDict[tuple[object, ...], Any], key: tuple[object, ...] | None,
                size: int, build: Callable[[], Any]) -> Any:
        if key is None:
            return build()
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = build()
        cache[key] = value
        if len(cache) > size:
            cache.popitem(last=False)
        return value

    def run(self, signal: np.ndarray, *, buy: float, sell: float | None, rule: ExitRule,
            neutral: float = 0.0, key: str | None = None, detail: bool = True) -> BacktestResult:
        """Backtest one combination (see the module docstring for the exact timing).

        ``key`` names the signal so entry/exit arrays can be cached across calls (a grid);
        ``detail=False`` skips the trade table and daily frame (statistics only).
        """
        return self._walk(signal, buy, [(sell, rule)], neutral, key, detail)[0]

    def run_many(self, signal: np.ndarray, *, buy: float,
                 exits: Sequence[tuple[float | None, ExitRule]], neutral: float = 0.0,
                 key: str | None = None) -> list[BacktestResult]:
        """Statistics-only backtests of every (sell threshold, exit rule) of ``exits`` with
        one buy threshold, in one compiled pass (each name's rows are read once for all)."""
        return self._walk(signal, buy, exits, neutral, key, False)

    def _walk(self, signal: np.ndarray, buy: float,
              exits: Sequence[tuple[float | None, ExitRule]], neutral: float,
              key: str | None, detail: bool) -> list[BacktestResult]:
        from darkpool_analysis.evaluation import kernels

        rule_keys = []
        for sell, rule in exits:
            if sell is not None and sell >= buy:
                raise ConfigError(f"sell threshold {sell} must be below buy threshold {buy}")
            level = rule.decay_level if rule.decay_level is not None else neutral
            if rule.decay_days is not None and level > buy:
                raise ConfigError(f"decay level {level} must not exceed buy threshold {buy}")
            if rule.distribution_run is not None and sell is None:
                raise ConfigError(f"exit {rule.name!r} needs a sell threshold")
            rule_keys.append(None if rule.distribution_run is None and rule.decay_days is None
                             else (rule.distribution_run or 0, rule.decay_days or 0,
                                   float(level), float(sell) if rule.distribution_run
                                   is not None and sell is not None else np.nan))
        values = self._cached(self._signals, None if key is None else (key,), 1,
                              lambda: np.ascontiguousarray(np.asarray(signal, dtype=float).T))
        entries, bound = self._cached(
            self._entries, None if key is None else (key, buy), 16,
            lambda: kernels.next_entry(values, float(buy), self._eligible))
        distinct = tuple(dict.fromkeys(k for k in rule_keys if k is not None))

        def stack() -> np.ndarray:
            out = np.empty((len(distinct), self.m, self.n + 1), dtype=np.int32)
            for i, (run, decay_days, level, sell) in enumerate(distinct):
                out[i] = kernels.next_trigger(values, sell, run, level, decay_days)
            return out

        triggers = self._cached(self._triggers, None if key is None else (key, distinct), 1,
                                stack)
        trigger_of = np.array([-1 if k is None else distinct.index(k) for k in rule_keys],
                              dtype=np.int64)
        max_days = np.array([rule.max_days or 0 for _sell, rule in exits], dtype=np.int64)
        n, combos = self.n, len(exits)
        trade_return, net_return = np.empty((combos, bound)), np.empty((combos, bound))
        trades, sessions, at_end = (np.zeros(combos, dtype=np.int64) for _ in range(3))
        gross_sum, adjust = np.zeros((combos, n)), np.zeros((combos, n))
        change = np.zeros((combos, n + 1), dtype=np.int64)
        rows = np.empty((4, bound) if detail else (0, 0), dtype=np.int32)
        kernels.walk_trades(entries, triggers, trigger_of, max_days, self._open,
                            self._exit_open, self._close_ff, self._close_to_close, self._cost,
                            trade_return, net_return, trades, sessions, at_end, gross_sum,
                            adjust, change, rows)
        results = []
        for j in range(combos):
            k = int(trades[j])
            results.append(self._collect(
                trade_return[j, :k], net_return[j, :k], sessions[j] / k if k else np.nan,
                float(at_end[j]), gross_sum[j], adjust[j], np.cumsum(change[j, :n]),
                rows[:, :k] if detail else None))
        return results

    def _collect(self, trade_return: np.ndarray, net_return: np.ndarray, mean_held: float,
                 open_at_end: float, gross_sum: np.ndarray, adjust: np.ndarray,
                 positions: np.ndarray, rows: np.ndarray | None) -> BacktestResult:
        """The equal-weight daily portfolio series (gross and net: the mean mark of the
        positions held each date, 0 when flat), the statistics and, given the trades' rows
        (name, signal date, exit date, reason), the trade table and the daily frame."""
        scale = np.maximum(positions, 1)
        gross = np.where(positions > 0, gross_sum / scale, 0.0)
        net = np.where(positions > 0, (gross_sum + adjust) / scale, 0.0)
        first = int(self.window_rows[0]) if len(self.window_rows) else 0
        last_held = int(np.flatnonzero(positions)[-1]) if positions.any() else first
        end = max(last_held, int(self.window_rows[-1]) if len(self.window_rows) else first)
        span = slice(first, end + 1)
        returns, returns_net, held = gross[span], net[span], positions[span]
        stats = _statistics(trade_return, mean_held, open_at_end, returns, held)
        net_stats = _statistics(net_return, mean_held, open_at_end, returns_net, held)
        stats.update({f"net_{k}": net_stats[k] for k in NET_STATS})
        if rows is None:
            return BacktestResult(pd.DataFrame(), pd.DataFrame(), stats, net)
        sym, t, exit_row, reason = (r.astype(np.int64) for r in rows)
        entry_row = t + 1
        at_open = reason == 0
        entry_price = self._open[sym, entry_row]
        exit_price = np.where(at_open, self._exit_open[sym, exit_row],
                              self._close_ff[sym, exit_row])
        entry_cost, exit_cost = self._cost[sym, entry_row], self._cost[sym, exit_row]
        trades = pd.DataFrame({
            "symbol": self.symbols[sym], "signal_date": self.dates[t],
            "entry_date": self.dates[entry_row], "entry_price": entry_price,
            "exit_date": self.dates[exit_row], "exit_price": exit_price,
            "exit_reason": np.array(["signal", "max_days", "end_of_data"])[reason],
            "sessions_held": exit_row - t, "return": trade_return,
            "cost": 1.0 - (1.0 - exit_cost) / (1.0 + entry_cost), "return_net": net_return,
        }).sort_values(["entry_date", "symbol"], kind="stable", ignore_index=True)
        daily = pd.DataFrame({"date": self.dates[span], "return": returns,
                              "return_net": returns_net, "positions": held,
                              "equity": np.cumprod(1.0 + returns),
                              "equity_net": np.cumprod(1.0 + returns_net)})
        return BacktestResult(trades, daily, stats, net)


def summarize(trade_returns: np.ndarray, sessions_held: np.ndarray, end_of_data: np.ndarray,
              daily_returns: np.ndarray, positions: np.ndarray) -> dict[str, float]:
    """Trade-level and daily-portfolio statistics (Sharpe on daily returns, annualised)."""
    has = len(sessions_held) > 0
    return _statistics(np.asarray(trade_returns, dtype=float),
                       float(np.mean(sessions_held)) if has else np.nan,
                       float(np.count_nonzero(end_of_data)), daily_returns, positions)


def _statistics(trade_returns: np.ndarray, mean_held: float, open_at_end: float,
                daily_returns: np.ndarray, positions: np.ndarray) -> dict[str, float]:
    """:func:`summarize` from the trades' mean holding period and open-at-end count (what
    the compiled walk accumulates). The trade-level sums and the median are one compiled
    pass (:func:`kernels.trade_moments`: a grid summarises millions of trades)."""
    from darkpool_analysis.evaluation import kernels

    returns = np.ascontiguousarray(trade_returns, dtype=float)
    count = len(returns)
    wins, total, won, lost, median = kernels.trade_moments(returns)
    equity = np.cumprod(1.0 + daily_returns)
    std = daily_returns.std(ddof=1) if len(daily_returns) > 1 else np.nan
    drawdown = equity / np.maximum.accumulate(equity) - 1.0 if len(equity) else np.array([0.0])
    has = count > 0
    return {
        "trades": float(count),
        "win_rate": wins / count if has else np.nan,
        "mean_trade_return": total / count if has else np.nan,
        "median_trade_return": float(median) if has else np.nan,
        # No losing trade: infinite profit factor (as vectorbt reports it); no trade at all: NaN.
        "profit_factor": (won / -lost if lost < 0 else np.inf if wins else np.nan),
        "mean_sessions_held": mean_held if has else np.nan,
        "open_at_end": open_at_end,
        "total_return": float(equity[-1] - 1.0) if len(equity) else 0.0,
        "sharpe_daily_annualised": float(daily_returns.mean() / std * np.sqrt(TRADING_DAYS))
        if np.isfinite(std) and std > 0 else np.nan,
        "max_drawdown": float(drawdown.min()),
        "mean_positions": float(positions.mean()) if len(positions) else 0.0,
        "exposure": float((positions > 0).mean()) if len(positions) else 0.0,
    }


#: Statistics that depend on costs (the grid reports them gross and with a ``net_`` prefix).
NET_STATS = ("win_rate", "mean_trade_return", "median_trade_return", "profit_factor",
             "total_return", "sharpe_daily_annualised", "max_drawdown")


@dataclass(frozen=True)
class GridPoint:
    """One backtest combination of a grid."""

    variant: str
    buy: float
    sell: float | None
    rule: ExitRule


def grid_points(variants: dict[str, tuple[float, float | None, float]],
                thresholds: dict[str, Sequence[tuple[float, float | None]]] | None,
                exits: Sequence[ExitRule]) -> list[GridPoint]:
    """Every (variant, (buy, sell), exit); ``variants`` maps name -> (buy, sell, neutral).

    Exits that need a sell threshold are skipped for pairs without one.
    """
    thresholds = thresholds or {}
    points = []
    for name, (buy, sell, _neutral) in variants.items():
        pairs = thresholds.get(name) or [(buy, sell)]
        for (b, s), rule in itertools.product(pairs, exits):
            if rule.distribution_run is not None and s is None:
                continue
            points.append(GridPoint(name, b, s, rule))
    return points


@dataclass
class GridResult:
    """One row of statistics per grid point and, per point, its net daily return series
    (``returns[:, j]`` for ``table.iloc[j]``, on every panel row): the trial matrix."""

    table: pd.DataFrame
    returns: np.ndarray


def _sorted_points(points: Iterable[GridPoint]) -> list[tuple[int, GridPoint]]:
    """Points ordered so combinations sharing a signal and a buy threshold are adjacent (one
    compiled pass each)."""
    return sorted(enumerate(points), key=lambda ip: (ip[1].variant, ip[1].buy))


def grid_chunk(engine: BacktestEngine, signal: np.ndarray, neutral: float,
               points: Sequence[tuple[int, GridPoint]]
               ) -> tuple[list[int], list[dict[str, Any]], np.ndarray]:
    """Backtest the points of one variant (top level, so a process pool can pickle it):
    (original positions, statistic rows, net daily returns rows x points). Points with the
    same buy threshold run together (:meth:`BacktestEngine.run_many`)."""
    rows, series = [], []
    for buy, group in itertools.groupby(points, key=lambda ip: ip[1].buy):
        group = list(group)
        results = engine.run_many(signal, buy=buy, exits=[(p.sell, p.rule) for _, p in group],
                                  neutral=neutral, key=group[0][1].variant)
        for (_position, point), result in zip(group, results, strict=True):
            rows.append({"variant": point.variant, "buy": point.buy, "sell": point.sell,
                         "exit": point.rule.name, **result.stats})
            series.append(result.net_daily)
    matrix = np.column_stack(series) if series else np.zeros((engine.n, 0))
    return [p for p, _ in points], rows, matrix


def run_grid(engine: BacktestEngine, signals: dict[str, np.ndarray],
             neutrals: dict[str, float], points: Iterable[GridPoint],
             progress: object | None = None, *,
             executor: Executor | None = None) -> GridResult:
    """Backtest every grid point: a statistics table (input order) and the trial matrix.

    Work is split into one chunk per variant; with ``executor`` (any
    ``concurrent.futures.Executor``) the chunks run there, otherwise serially in process.
    The result is the same either way. ``progress`` is an optional callable invoked once per
    finished point (e.g. a Rich progress-bar advance).
    """
    ordered = _sorted_points(list(points))
    by_variant: dict[str, list[tuple[int, GridPoint]]] = {}
    for item in ordered:
        by_variant.setdefault(item[1].variant, []).append(item)
    names = list(by_variant)
    args = ([engine] * len(names), [signals[n] for n in names],
            [neutrals.get(n, 0.0) for n in names], [by_variant[n] for n in names])
    mapper = executor.map if executor is not None else map
    total = len(ordered)
    rows: list[dict[str, Any] | None] = [None] * total
    matrix = np.zeros((engine.n, total))
    for positions, chunk_rows, chunk_matrix in mapper(grid_chunk, *args):
        for j, (position, row) in enumerate(zip(positions, chunk_rows, strict=True)):
            rows[position] = row
            matrix[:, position] = chunk_matrix[:, j]
            if callable(progress):
                progress()
    return GridResult(pd.DataFrame([r for r in rows if r is not None]), matrix)


__all__ = ["DEFAULT_EXITS", "EXIT_HELP", "NET_STATS", "BacktestEngine", "BacktestResult",
           "ExitRule", "GridPoint", "GridResult", "grid_chunk", "grid_points", "parse_exit",
           "parse_exits", "run_grid", "summarize"]
