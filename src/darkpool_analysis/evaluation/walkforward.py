"""Walk-forward selection: pick the best (variant, buy threshold) on a training window, report
it on the following test window, roll forward; in-sample next to out-of-sample.

Objective: the mean *net excess* forward return of accumulation events (signal >= buy) at
one horizon, excess = the event's return minus the same date's mean over all names, net =
minus the event's round-trip cost (entry at the open of ``t+1``, exit at the close of
``t+h``), with at least ``min_events`` events. Gross numbers are shown next to the net
ones. Training labels are purged: a training date ``t`` is used only if ``t + h`` is still
inside the training window, so no test-window price leaks into the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from darkpool_analysis.errors import ConfigError, NoDataError
from darkpool_analysis.evaluation.ic import cross_sectional_ic, date_demeaned
from darkpool_analysis.evaluation.returns import EvalPanel, forward_returns, shift_rows


@dataclass(frozen=True)
class Candidate:
    """One choice the walk-forward may select."""

    variant: str
    buy: float


def _window_sum(cumulative: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Sum over rows lo..hi inclusive of the series whose cumulative sums are given."""
    if hi < lo:
        return np.zeros(cumulative.shape[1:])
    return cumulative[hi + 1] - cumulative[lo]


def walk_forward(panel: EvalPanel, candidates: Sequence[Candidate], *, horizon: int,
                 train_sessions: int = 126, test_sessions: int = 42,
                 min_events: int = 20, side_cost: np.ndarray | None = None) -> pd.DataFrame:
    """One row per test window: the chosen candidate and its in- and out-of-sample numbers
    (selected on the net objective; ``side_cost`` = per-side cost fractions, default none)."""
    if not candidates:
        raise ConfigError("walk-forward needs at least one variant with a buy threshold")
    if train_sessions <= horizon or test_sessions < 1:
        raise ConfigError("walk-forward training window must be longer than the horizon")
    fwd = panel.windowed(forward_returns(panel.open, panel.close, [horizon])[horizon])
    finite = np.isfinite(fwd)
    excess = date_demeaned(fwd, finite)
    cost = (np.zeros(fwd.shape) if side_cost is None
            else shift_rows(side_cost, -1) + shift_rows(side_cost, -horizon))
    excess_net = excess - np.nan_to_num(cost, nan=0.0)
    k = len(candidates)
    sums = np.zeros((len(fwd) + 1, k))
    net_sums = np.zeros((len(fwd) + 1, k))
    counts = np.zeros((len(fwd) + 1, k))
    wins = np.zeros((len(fwd) + 1, k))
    ic_daily = {}
    for j, cand in enumerate(candidates):
        signal = panel.windowed(panel.signals[cand.variant])
        with np.errstate(invalid="ignore"):
            events = (signal >= cand.buy) & finite
        sums[1:, j] = np.cumsum(np.where(events, excess, 0.0).sum(axis=1))
        net_sums[1:, j] = np.cumsum(np.where(events, excess_net, 0.0).sum(axis=1))
        counts[1:, j] = np.cumsum(events.sum(axis=1))
        wins[1:, j] = np.cumsum((events & (fwd > 0)).sum(axis=1))
        if cand.variant not in ic_daily:
            ic_daily[cand.variant] = cross_sectional_ic(signal, fwd)
    rows_in = np.nonzero(panel.in_window)[0]
    if len(rows_in) < train_sessions + test_sessions:
        raise NoDataError(f"walk-forward needs {train_sessions + test_sessions} sessions, the "
                          f"window has {len(rows_in)}")
    out = []
    start = 0
    while start + train_sessions < len(rows_in):
        train = rows_in[start:start + train_sessions]
        test = rows_in[start + train_sessions:start + train_sessions + test_sessions]
        purged_end = train[-1] - horizon
        is_sum = _window_sum(sums, train[0], purged_end)
        is_net = _window_sum(net_sums, train[0], purged_end)
        is_n = _window_sum(counts, train[0], purged_end)
        with np.errstate(invalid="ignore", divide="ignore"):
            is_mean_net = np.where(is_n >= min_events, is_net / np.maximum(is_n, 1), -np.inf)
            is_mean = is_sum / np.maximum(is_n, 1)
        if np.isfinite(is_mean_net).any():
            best = int(np.argmax(is_mean_net))
            cand = candidates[best]
            oos_n = _window_sum(counts, test[0], test[-1])[best]
            oos_sum = _window_sum(sums, test[0], test[-1])[best]
            oos_net = _window_sum(net_sums, test[0], test[-1])[best]
            oos_win = _window_sum(wins, test[0], test[-1])[best]
            is_win = _window_sum(wins, train[0], purged_end)[best]
            ic = ic_daily[cand.variant]
            out.append({
                "train_start": panel.dates[train[0]], "train_end": panel.dates[train[-1]],
                "test_start": panel.dates[test[0]], "test_end": panel.dates[test[-1]],
                "variant": cand.variant, "buy": cand.buy,
                "is_events": float(is_n[best]), "is_mean_excess": float(is_mean[best]),
                "is_mean_excess_net": float(is_mean_net[best]),
                "is_hit_rate": float(is_win / is_n[best]),
                "is_ic": float(np.nanmean(ic[train[0]:purged_end + 1]))
                if np.isfinite(ic[train[0]:purged_end + 1]).any() else np.nan,
                "oos_events": float(oos_n),
                "oos_mean_excess": float(oos_sum / oos_n) if oos_n else np.nan,
                "oos_mean_excess_net": float(oos_net / oos_n) if oos_n else np.nan,
                "oos_hit_rate": float(oos_win / oos_n) if oos_n else np.nan,
                "oos_ic": float(np.nanmean(ic[test[0]:test[-1] + 1]))
                if np.isfinite(ic[test[0]:test[-1] + 1]).any() else np.nan,
            })
        start += test_sessions
    return pd.DataFrame(out)


def summarize_walk_forward(windows: pd.DataFrame) -> dict[str, float]:
    """Event-weighted in-sample vs out-of-sample mean excess return and IC across windows."""
    if windows.empty:
        return {"windows": 0.0}
    def weighted(value: str, weight: str) -> float:
        ok = windows[value].notna() & (windows[weight] > 0)
        w = windows.loc[ok, weight]
        return float((windows.loc[ok, value] * w).sum() / w.sum()) if w.sum() else np.nan

    return {"windows": float(len(windows)),
            "is_mean_excess": weighted("is_mean_excess", "is_events"),
            "oos_mean_excess": weighted("oos_mean_excess", "oos_events"),
            "is_mean_excess_net": weighted("is_mean_excess_net", "is_events"),
            "oos_mean_excess_net": weighted("oos_mean_excess_net", "oos_events"),
            "is_ic": float(windows["is_ic"].mean()), "oos_ic": float(windows["oos_ic"].mean())}
