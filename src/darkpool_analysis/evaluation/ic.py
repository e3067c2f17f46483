"""Signal quality against forward returns: IC, quantiles, threshold events, turnover, placebo.

All functions take dates x symbols float matrices (NaN = no value). Each matrix is sorted
once (:class:`RowSorter`); the per-date statistics are compiled passes over those sorts
(:mod:`ic_kernels`), and :func:`evaluate_panel` keeps the per-date IC and spreads that the
out-of-sample assessment needs (:class:`PerDate`). Definitions follow alphalens
(``performance.factor_information_coefficient``, ``mean_return_by_quantile``) so the numbers
can be checked against it, with two deliberate differences, both to avoid look-ahead:

* quantiles are formed each date among all names that have a signal that date, not only among
  names that later turn out to have a forward return (alphalens drops those rows first);
* every horizon uses the dates on which that horizon's return exists.

The t-statistic of a mean IC over overlapping ``h``-day returns is overstated; ``t_stat_nonoverlap``
uses every ``h``-th date only.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from darkpool_analysis.evaluation.returns import EvalPanel, forward_returns

log = logging.getLogger(__name__)

DEFAULT_SEED = 20240101
MIN_ASSETS = 5


class RowSorter:
    """One argsort per matrix, reused for ranks under many masks and for percentiles.

    Sorting each row once (NaN last) lets any subset of the cells (e.g. the cells where the
    signal AND a horizon's return exist) be ranked with counts instead of a new sort:
    average ranks for ties, exactly like ``scipy.stats.rankdata``. The compiled statistics
    (:mod:`ic_kernels`) read ``order`` and ``sorted``; :meth:`ranks` is the numpy form.
    """

    def __init__(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=float)
        self.values = values
        self.order = np.argsort(values, axis=1)  # tie order is irrelevant: ties are averaged
        self.sorted = np.take_along_axis(values, self.order, axis=1)
        self.count = np.isfinite(values).sum(axis=1)

    @functools.cached_property
    def full_ranks(self) -> np.ndarray:
        """Average ranks of each row among all its finite cells (NaN elsewhere)."""
        from darkpool_analysis.evaluation.ic_kernels import average_ranks

        return average_ranks(self.values, self.order, self.sorted)

    @functools.cached_property
    def _groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Per sorted cell, the first and last position of its group of equal values."""
        width = self.sorted.shape[1]
        new_group = np.ones(self.sorted.shape, dtype=bool)
        new_group[:, 1:] = self.sorted[:, 1:] != self.sorted[:, :-1]  # NaN != NaN: singletons
        positions = np.arange(width)
        first = np.maximum.accumulate(np.where(new_group, positions, 0), axis=1)
        ends = np.ones(self.sorted.shape, dtype=bool)
        ends[:, :-1] = new_group[:, 1:]
        last = np.minimum.accumulate(np.where(ends, positions, width)[:, ::-1],
                                     axis=1)[:, ::-1]
        return first, last

    def ranks(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Average ranks (1..k) among the ``mask`` cells of each row; NaN elsewhere."""
        in_mask = np.isfinite(self.sorted)
        if mask is not None:
            in_mask &= np.take_along_axis(mask, self.order, axis=1)
        first, last = self._groups
        through = np.cumsum(in_mask, axis=1, dtype=np.int32)
        before_group = np.take_along_axis(through - in_mask, first, axis=1)
        through_group = np.take_along_axis(through, last, axis=1)
        average = np.where(in_mask, (before_group + 1 + through_group) / 2.0, np.nan)
        out = np.empty(average.shape)
        np.put_along_axis(out, self.order, average, axis=1)
        return out

    def percentiles(self, fractions: np.ndarray) -> np.ndarray:
        """Per-row linear-interpolated quantiles of the finite values, (len(fractions), rows);
        the same arithmetic as ``numpy.percentile(method="linear")`` that ``pd.qcut`` uses."""
        n = self.count.astype(float)[None, :]
        q = (fractions * 100.0 / 100.0)[:, None]
        virtual = (n - 1) * q
        below = np.floor(virtual)
        gamma = virtual - below
        lo = np.clip(below, 0, np.maximum(n - 1, 0)).astype(np.intp)
        hi = np.clip(below + 1, 0, np.maximum(n - 1, 0)).astype(np.intp)
        a = np.take_along_axis(self.sorted.T, lo, axis=0)
        b = np.take_along_axis(self.sorted.T, hi, axis=0)
        diff = b - a
        with np.errstate(invalid="ignore"):
            edges = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
            edges = np.where(virtual >= n - 1, b, edges)
        return np.where(n > 0, edges, np.nan)


def row_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1..n) within each row; NaN stays NaN."""
    return RowSorter(values).ranks()


def cross_sectional_ic(signal: np.ndarray, fwd: np.ndarray, min_assets: int = MIN_ASSETS,
                       *, signal_sorter: RowSorter | None = None,
                       fwd_sorter: RowSorter | None = None) -> np.ndarray:
    """Spearman rank correlation across symbols, one value per date (over the cells where
    both exist). Pass prebuilt sorters to avoid re-sorting the same matrix."""
    return cross_sectional_ic_names(signal, fwd, min_assets, signal_sorter=signal_sorter,
                                    fwd_sorter=fwd_sorter)[0]


def cross_sectional_ic_names(signal: np.ndarray, fwd: np.ndarray,
                             min_assets: int = MIN_ASSETS, *,
                             signal_sorter: RowSorter | None = None,
                             fwd_sorter: RowSorter | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cross_sectional_ic` and the number of names it used per date."""
    from darkpool_analysis.evaluation.ic_kernels import spearman_rows

    signal, fwd = np.asarray(signal, dtype=float), np.asarray(fwd, dtype=float)
    a, b = signal_sorter or RowSorter(signal), fwd_sorter or RowSorter(fwd)
    return spearman_rows(signal, a.order, a.sorted, a.full_ranks, fwd, b.order, b.sorted,
                         b.full_ranks, min_assets)


def time_series_ic(signal: np.ndarray, fwd: np.ndarray, min_obs: int = 20, *,
                   signal_sorter: RowSorter | None = None,
                   fwd_sorter: RowSorter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-symbol Spearman correlation over time; returns (ic, observations) per symbol.
    Sorters, if given, must be built on the transposed (symbols x dates) matrices."""
    s = (signal_sorter.values if signal_sorter is not None
         else np.ascontiguousarray(signal.T, dtype=float))
    f = fwd_sorter.values if fwd_sorter is not None else np.ascontiguousarray(fwd.T, dtype=float)
    ic = cross_sectional_ic(s, f, min_obs, signal_sorter=signal_sorter, fwd_sorter=fwd_sorter)
    return ic, (np.isfinite(s) & np.isfinite(f)).sum(axis=1)


def summarize_ic(ic: np.ndarray, horizon: int) -> dict[str, float]:
    """Mean, std, IR, t-stat and two-sided p-value of a daily IC series."""
    values = ic[np.isfinite(ic)]
    n = len(values)
    out: dict[str, float] = {"n_dates": float(n)}
    if n < 3:
        return {**out, "mean": float(values.mean()) if n else np.nan, "std": np.nan,
                "ir": np.nan, "t_stat": np.nan, "p_value": np.nan,
                "t_stat_nonoverlap": np.nan, "p_value_nonoverlap": np.nan, "positive_share": np.nan}
    mean, std = float(values.mean()), float(values.std(ddof=1))
    t_stat = mean / (std / np.sqrt(n)) if std > 0 else np.nan
    sparse = ic[::horizon]
    sparse = sparse[np.isfinite(sparse)]
    ns = len(sparse)
    std_s = float(sparse.std(ddof=1)) if ns >= 3 else np.nan
    t_sparse = float(sparse.mean()) / (std_s / np.sqrt(ns)) if ns >= 3 and std_s > 0 else np.nan
    return {
        **out, "mean": mean, "std": std, "ir": mean / std if std > 0 else np.nan,
        "t_stat": t_stat, "p_value": float(2 * stats.t.sf(abs(t_stat), n - 1)),
        "t_stat_nonoverlap": t_sparse,
        "p_value_nonoverlap": float(2 * stats.t.sf(abs(t_sparse), ns - 1))
        if np.isfinite(t_sparse) else np.nan,
        "positive_share": float((values > 0).mean()),
    }


def quantile_labels(signal: np.ndarray, quantiles: int,
                    sorter: RowSorter | None = None) -> np.ndarray:
    """Per-date quantile of each cell (1..q, 0 = no signal), like ``pd.qcut`` on each date.

    Edges are the linear-interpolated percentiles of the date's values; bins are right-closed
    and the lowest edge is included. Dates with fewer than ``quantiles`` values get 0.
    """
    sorter = sorter or RowSorter(signal)
    finite = np.isfinite(signal)
    enough = sorter.count >= quantiles
    edges = sorter.percentiles(np.linspace(0, 1, quantiles + 1))  # (q + 1, dates)
    labels = np.ones(signal.shape, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        for interior in edges[1:-1]:  # q - 1 steps, each vectorised over the whole matrix
            labels += (signal > interior[:, None]).astype(np.int8)
    return np.where(finite & enough[:, None], labels, 0).astype(np.int8)


def date_demeaned(fwd: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``fwd`` minus the mean of ``fwd`` over the ``mask`` cells of the same date."""
    return fwd - _masked_row_mean(fwd, mask)[:, None]


def _masked_row_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over the ``mask`` cells of each row (NaN for an empty row)."""
    count = mask.sum(axis=1)
    total = np.where(mask, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def quantile_spreads(labels: np.ndarray, fwd: np.ndarray, quantiles: int,
                     side_cost: np.ndarray | None = None, horizon: int = 1
                     ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """:func:`quantile_returns` and :func:`spread_costs` in one compiled pass per date:
    (table, per-date top-minus-bottom spread, per-date round-trip cost; zeros without
    ``side_cost``)."""
    from darkpool_analysis.evaluation.ic_kernels import quantile_means

    costs = (np.zeros((0, 0)) if side_cost is None
             else np.ascontiguousarray(side_cost, dtype=float))
    counts, raw, centred, cost = quantile_means(np.ascontiguousarray(labels, dtype=np.int8),
                                                np.asarray(fwd, dtype=float), costs,
                                                quantiles, horizon)
    rows = []
    for q in range(quantiles):
        has = counts[:, q] > 0
        rows.append({"quantile": q + 1, "count": int(counts[:, q].sum()),
                     "dates": int(has.sum()),
                     "mean": float(raw[has, q].mean()) if has.any() else np.nan,
                     "mean_demeaned": float(centred[has, q].mean()) if has.any() else np.nan})
    if side_cost is None:
        cost = np.zeros(len(labels))
    return pd.DataFrame(rows), raw[:, quantiles - 1] - raw[:, 0], cost


def quantile_returns(labels: np.ndarray, fwd: np.ndarray,
                     quantiles: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Mean forward return per quantile (raw and date-demeaned) and the per-date
    top-minus-bottom spread.

    Like alphalens' ``mean_return_by_quantile``: the mean of each (quantile, date) cell group,
    then the average over dates (every date weighs the same, however many names it has).
    Demeaned: each return minus the date's mean over every labelled cell with a return.
    """
    table, spread, _cost = quantile_spreads(labels, fwd, quantiles)
    return table, spread


def spread_costs(labels: np.ndarray, side_cost: np.ndarray, quantiles: int,
                 horizon: int) -> np.ndarray:
    """Per-date round-trip cost of the top-minus-bottom tranche formed at ``t``: each leg
    buys (or sells short) at the open of ``t+1`` and closes at the close of ``t+h``, paying
    the per-side cost of those sessions, averaged over the leg's names (NaN when a leg is
    empty)."""
    no_returns = np.full(labels.shape, np.nan)
    return quantile_spreads(labels, no_returns, quantiles, side_cost, horizon)[2]


def quantile_turnover(labels: np.ndarray, quantile: int) -> float:
    """Mean share of names in ``quantile`` today that were not in it the previous session."""
    current = labels[1:] == quantile
    previous = labels[:-1] == quantile
    size = current.sum(axis=1)
    stayed = (current & previous).sum(axis=1)
    ok = size > 0
    return float(np.mean(1 - stayed[ok] / size[ok])) if ok.any() else np.nan


def rank_autocorrelation(signal: np.ndarray, sorter: RowSorter | None = None) -> float:
    """Mean Spearman correlation of each date's signal with the previous session's (over
    the names that have both)."""
    from darkpool_analysis.evaluation.ic_kernels import spearman_rows

    if len(signal) < 2:
        return np.nan
    signal = np.asarray(signal, dtype=float)
    sorter = sorter or RowSorter(signal)
    ranks = sorter.full_ranks
    values, _names = spearman_rows(signal[1:], sorter.order[1:], sorter.sorted[1:], ranks[1:],
                                   signal[:-1], sorter.order[:-1], sorter.sorted[:-1],
                                   ranks[:-1], MIN_ASSETS)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else np.nan


def event_stats(mask: np.ndarray, fwd: np.ndarray, excess: np.ndarray, *, sign: int,
                months: float) -> dict[str, float]:
    """Hit rate and returns of the cells in ``mask`` (``sign`` -1: a hit is a fall)."""
    return _event_summary(np.flatnonzero(mask & np.isfinite(fwd)), fwd, excess, sign, months)


def threshold_event_stats(signal: np.ndarray, level: float, fwd: np.ndarray,
                          excess: np.ndarray, *, sign: int, months: float) -> dict[str, float]:
    """:func:`event_stats` of ``signal >= level`` (``sign`` 1) or ``signal <= level``
    (``sign`` -1), every cell with a return for a NaN ``level``, selected in one compiled
    pass (no mask matrices)."""
    from darkpool_analysis.evaluation.ic_kernels import select_events

    cells = select_events(np.asarray(signal, dtype=float), level, sign > 0,
                          np.asarray(fwd, dtype=float))
    return _event_summary(cells, fwd, excess, sign, months)


def _event_summary(cells: np.ndarray, fwd: np.ndarray, excess: np.ndarray, sign: int,
                   months: float) -> dict[str, float]:
    """The statistics of :func:`event_stats` over the flat (row-major) ``cells``."""
    from darkpool_analysis.evaluation.kernels import median

    values, extra = fwd.ravel()[cells], excess.ravel()[cells]
    n = len(values)
    if n == 0:
        return {"count": 0.0}
    return {"count": float(n), "hit_rate": float((sign * values > 0).mean()),
            "mean": float(values.mean()), "median": float(median(values)),
            "mean_excess": float(np.nanmean(extra)) if np.isfinite(extra).any() else np.nan,
            "per_month": n / months if months > 0 else np.nan}


def permute_within_dates(signal: np.ndarray, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Placebo: shuffle each date's values among the names that have one (fixed seed)."""
    rng = np.random.default_rng(seed)
    valid = np.isfinite(signal)
    keys = np.where(valid, rng.random(signal.shape), 2.0)
    source = np.argsort(keys, axis=1)  # random order of each row's valid cells first
    target = np.argsort(~valid, axis=1, kind="stable")  # valid positions in order first
    take = np.arange(signal.shape[1])[None, :] < valid.sum(axis=1)[:, None]
    rows, ranks = np.nonzero(take)
    shuffled = np.full(signal.shape, np.nan)
    shuffled[rows, target[rows, ranks]] = signal[rows, source[rows, ranks]]
    return shuffled


@dataclass
class EvaluationResult:
    """Tidy outputs of :func:`evaluate_panel` (and, once added, the backtests)."""

    metrics: pd.DataFrame          # section, variant, horizon, metric, value
    ic_by_date: pd.DataFrame       # date, variant, horizon, ic
    quantiles: pd.DataFrame        # variant, horizon, quantile, count, mean, mean_demeaned
    spread_by_date: pd.DataFrame   # date, variant, horizon, spread
    ticker_ic: pd.DataFrame        # variant, horizon, symbol, ic, n
    label: str                     # the OTC-alignment label every output carries
    per_date: PerDate | None = None  # arrays the out-of-sample assessment re-uses


@dataclass(frozen=True)
class PerDate:
    """Per-date series of every (variant, horizon) that :func:`assess.assess` would compute
    again on the same panel: the cross-sectional IC (``min_assets``) with its number of
    names, and the gross top-minus-bottom spread of ``quantiles`` quantiles with its
    round-trip cost under ``side_cost`` (the very array passed; compared by identity)."""

    quantiles: int
    min_assets: int
    side_cost: np.ndarray | None
    ic: dict[tuple[str, int], np.ndarray]
    names: dict[tuple[str, int], np.ndarray]
    spread: dict[tuple[str, int], np.ndarray]
    cost: dict[tuple[str, int], np.ndarray]


def alignment_label(otc_alignment: str) -> str:
    """Human label for the OTC alignment (look-ahead mode is named as such everywhere)."""
    if otc_alignment == "week":
        return "LOOK-AHEAD: OTC weekly data aligned to the week it describes (not point in time)"
    return "point-in-time OTC (weeks used from their publication date)"


def _metric_rows(section: str, variant: str, horizon: int | None,
                 values: dict[str, float]) -> list[dict[str, Any]]:
    return [{"section": section, "variant": variant, "horizon": horizon, "metric": k,
             "value": float(v)} for k, v in values.items()]


def evaluate_panel(panel: EvalPanel, horizons: tuple[int, ...], *, quantiles: int = 5,
                   placebo: bool = True, seed: int = DEFAULT_SEED,
                   min_assets: int = MIN_ASSETS,
                   side_cost: np.ndarray | None = None) -> EvaluationResult:
    """IC, quantile returns, threshold events, turnover and benchmarks for every variant.

    ``side_cost`` (per-side cost fractions, dates x names; default none) gives the net
    top-minus-bottom spread next to the gross one.

    Adds a benchmark variant ``always_long`` (every name every date) and, with ``placebo``,
    ``placebo:<variant>`` (each date's values shuffled across names) to show what noise
    looks like.
    """
    fwd_all = forward_returns(panel.open, panel.close, horizons)
    fwd_all = {h: panel.windowed(f) for h, f in fwd_all.items()}
    months = panel.in_window.sum() / 21.0
    signals = {name: panel.windowed(values) for name, values in panel.signals.items()}
    if placebo:
        signals.update({f"placebo:{name}": permute_within_dates(values, seed)
                        for name, values in list(signals.items())})
    rows: list[dict[str, Any]] = []
    ic_frames, quantile_frames, spread_frames, ticker_frames = [], [], [], []
    shared = PerDate(quantiles, min_assets, side_cost, {}, {}, {}, {})
    universe = {h: date_demeaned(f, np.isfinite(f)) for h, f in fwd_all.items()}
    fwd_sorters = {h: RowSorter(f) for h, f in fwd_all.items()}
    fwd_sorters_t = {h: RowSorter(np.ascontiguousarray(f.T)) for h, f in fwd_all.items()}
    for h, fwd in fwd_all.items():
        rows += _metric_rows("events", "always_long", h, threshold_event_stats(
            fwd, np.nan, fwd, universe[h], sign=1, months=months))
    for name, signal in signals.items():
        base = name.removeprefix("placebo:")
        variant = panel.variants.get(base)
        sorter = RowSorter(signal)
        sorter_t = (None if name.startswith("placebo:")
                    else RowSorter(np.ascontiguousarray(signal.T)))
        labels = quantile_labels(signal, quantiles, sorter)
        if sorter_t is not None:  # turnover of a shuffled signal says nothing
            rows += _metric_rows("turnover", name, None, {
                "top_quantile_turnover": quantile_turnover(labels, quantiles),
                "bottom_quantile_turnover": quantile_turnover(labels, 1),
                "rank_autocorrelation": rank_autocorrelation(signal, sorter)})
        for h, fwd in fwd_all.items():
            ic, names = cross_sectional_ic_names(signal, fwd, min_assets, signal_sorter=sorter,
                                                 fwd_sorter=fwd_sorters[h])
            rows += _metric_rows("ic", name, h, summarize_ic(ic, h))
            ic_frames.append(pd.DataFrame({"date": panel.dates, "variant": name, "horizon": h,
                                           "ic": ic}).dropna(subset=["ic"]))
            table, spread, cost = quantile_spreads(labels, fwd, quantiles, side_cost, h)
            if not name.startswith("placebo:"):
                for store, value in ((shared.ic, ic), (shared.names, names),
                                     (shared.spread, spread), (shared.cost, cost)):
                    store[(name, h)] = value
            quantile_frames.append(table.assign(variant=name, horizon=h))
            spread_net = spread - cost
            spread_frames.append(pd.DataFrame({"date": panel.dates, "variant": name,
                                               "horizon": h, "spread": spread,
                                               "spread_net": spread_net})
                                 .dropna(subset=["spread"]))
            top, bottom = table["mean"].iloc[-1], table["mean"].iloc[0]
            has_net = np.isfinite(spread_net)
            rows += _metric_rows("quantiles", name, h, {
                "top_minus_bottom": top - bottom,
                "top_minus_bottom_demeaned": table["mean_demeaned"].iloc[-1]
                - table["mean_demeaned"].iloc[0],
                "top_minus_bottom_net": float(spread_net[has_net].mean())
                if has_net.any() else np.nan})
            if not name.startswith("placebo:"):
                ts_ic, n_obs = time_series_ic(signal, fwd, signal_sorter=sorter_t,
                                              fwd_sorter=fwd_sorters_t[h])
                ticker_frames.append(pd.DataFrame({"variant": name, "horizon": h,
                                                   "symbol": panel.symbols, "ic": ts_ic,
                                                   "n": n_obs}).dropna(subset=["ic"]))
                finite = ts_ic[np.isfinite(ts_ic)]
                rows += _metric_rows("ticker_ic", name, h, {
                    "symbols": float(len(finite)),
                    "mean": float(finite.mean()) if len(finite) else np.nan,
                    "median": float(np.median(finite)) if len(finite) else np.nan,
                    "positive_share": float((finite > 0).mean()) if len(finite) else np.nan})
            if variant is not None and variant.buy is not None:
                rows += _metric_rows("events", f"{name}>={variant.buy:g}", h,
                                     threshold_event_stats(signal, variant.buy, fwd,
                                                           universe[h], sign=1, months=months))
            if variant is not None and variant.sell is not None:
                rows += _metric_rows("events", f"{name}<={variant.sell:g}", h,
                                     threshold_event_stats(signal, variant.sell, fwd,
                                                           universe[h], sign=-1, months=months))
    def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    return EvaluationResult(
        metrics=pd.DataFrame(rows, columns=["section", "variant", "horizon", "metric", "value"]),
        ic_by_date=_concat(ic_frames, ["date", "variant", "horizon", "ic"]),
        quantiles=_concat(quantile_frames, ["quantile", "count", "dates", "mean", "mean_demeaned",
                                            "variant", "horizon"]),
        spread_by_date=_concat(spread_frames, ["date", "variant", "horizon", "spread",
                                               "spread_net"]),
        ticker_ic=_concat(ticker_frames, ["variant", "horizon", "symbol", "ic", "n"]),
        label=alignment_label(panel.otc_alignment),
        per_date=shared,
    )
