"""Out-of-sample first: the headline numbers and the verdict of every variant.

Design (:func:`make_design`): walk-forward folds (``train`` sessions to choose, the next
``test`` sessions to report, rolled by ``test``) when the evaluation window holds
``train + test`` sessions; otherwise one chronological split (the first half chooses, then an
embargo of the longest horizon, the rest reports); otherwise nothing out of sample, said so.
A configuration is chosen on a training fold without its last ``longest horizon`` rows
(purged: a spread's return at ``t`` is only realised at ``t + h``).

Mode: ``cross_sectional`` when the median date has at least ``min_names`` names with a signal
and a return, else ``time_series`` (a cross-sectional IC over a handful of names is noise, and
undefined for one).

Per (variant, horizon), on the out-of-sample dates only:

* IC: the cross-sectional Spearman IC per date (time-series mode: each name's rank
  correlation over time, as a per-date series whose mean is that correlation); mean,
  Newey-West standard error with lag = horizon, one-sided p-value (H1: IC > 0, the direction
  every variant claims), a circular block-bootstrap 95% interval, and the percentile among
  seeded permutation placebos (:mod:`placebo`);
* net spread: the top-minus-bottom quantile tranche (time series: long on buy signals, short
  on sell signals) after the round-trip costs of both legs, per day (divided by the
  horizon), with its bootstrap interval.

p-values are Holm-adjusted over every (variant, horizon) tested. Trials (the backtest grid
plus every variant x horizon spread) give the deflated Sharpe ratio, PBO (CSCV) and Hansen's
SPA against ``always_long``.

Verdict rule (docs/signal-lab.md): ``evidence`` when, at some horizon, the adjusted
out-of-sample IC p-value is below ``alpha`` (5%) and the out-of-sample net spread at that
horizon is positive (the headline is the qualifying horizon with the smallest adjusted p;
without one, the horizon with the smallest adjusted p); ``insufficient_data`` when there is
no out-of-sample design or fewer than ``min_oos_dates`` out-of-sample dates with an IC;
``no_evidence`` otherwise.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from darkpool_analysis.evaluation.backtest import GridResult
from darkpool_analysis.evaluation.fmt import fmt_num, fmt_p
from darkpool_analysis.evaluation.ic import (
    EvaluationResult,
    RowSorter,
    cross_sectional_ic,
    quantile_labels,
    quantile_spreads,
)
from darkpool_analysis.evaluation.inference import (
    bootstrap_mean_ci,
    deflated_sharpe,
    hac_mean_test,
    holm,
    pbo_cscv,
    sharpe_moments,
    spa_pvalue,
)
from darkpool_analysis.evaluation.placebo import percentile, placebo_stats
from darkpool_analysis.evaluation.returns import EvalPanel, forward_returns, shift_rows

TRADING_DAYS = 252


@dataclass(frozen=True)
class AssessConfig:
    """Knobs of the out-of-sample assessment (defaults = ``darkpool evaluate``'s)."""

    horizons: tuple[int, ...] = (1, 5, 10, 20)
    quantiles: int = 5
    min_names: int = 10
    train_sessions: int = 126
    test_sessions: int = 42
    split_train_fraction: float = 0.5
    min_oos_dates: int = 20
    placebos: int = 200
    bootstrap_reps: int = 1000
    spa_reps: int = 1000
    pbo_partitions: int = 16
    alpha: float = 0.05
    seed: int = 20240101


@dataclass
class Design:
    """Where the numbers come from: folds of (train rows, test rows) in panel rows."""

    kind: str  # walk_forward | split | none
    folds: list[tuple[np.ndarray, np.ndarray]]
    oos_rows: np.ndarray
    text: str


def _span(dates: pd.DatetimeIndex, rows: np.ndarray) -> str:
    return f"{dates[rows[0]].date()}..{dates[rows[-1]].date()} ({len(rows)} sessions)"


def make_design(dates: pd.DatetimeIndex, in_window: np.ndarray, cfg: AssessConfig) -> Design:
    """Walk-forward if the window allows it, else a chronological split with an embargo of
    the longest horizon, else none; ``text`` says which, why, and what would allow more."""
    rows = np.flatnonzero(in_window)
    n = len(rows)
    train, test = cfg.train_sessions, cfg.test_sessions
    longest = max(cfg.horizons)
    wf_needs = train + test
    if n >= wf_needs:
        folds = []
        start = 0
        while start + train < n:
            folds.append((rows[start:start + train], rows[start + train:start + train + test]))
            start += test
        oos = np.concatenate([t for _, t in folds])
        return Design("walk_forward", folds, oos,
                      f"walk-forward: {len(folds)} folds of {train} training and up to {test} "
                      f"test sessions; out-of-sample {_span(dates, oos)}")
    n_train = int((n - longest) * cfg.split_train_fraction)
    test_rows = rows[n_train + longest:]
    why_not = (f"walk-forward needs {wf_needs} sessions ({train} training + {test} test); "
               f"the window has {n}")
    if n_train >= cfg.min_oos_dates and len(test_rows) >= cfg.min_oos_dates:
        train_rows = rows[:n_train]
        return Design("split", [(train_rows, test_rows)], test_rows,
                      f"{why_not}, so one chronological split was used: train "
                      f"{_span(dates, train_rows)}, embargo {longest} sessions (the longest "
                      f"horizon), test {_span(dates, test_rows)}")
    needs = math.ceil(cfg.min_oos_dates / cfg.split_train_fraction) + longest
    return Design("none", [], np.array([], dtype=int),
                  f"nothing can be tested out of sample: {why_not}, and a train/test split "
                  f"with a {longest}-session embargo needs at least {needs} sessions "
                  f"({cfg.min_oos_dates} to train, {cfg.min_oos_dates} to test); widen "
                  f"--start/--end or use shorter --horizons")


def names_per_date(panel: EvalPanel, fwd: np.ndarray) -> np.ndarray:
    """Names with a return and at least one variant's signal, per in-window date."""
    has_signal = np.zeros(panel.shape, dtype=bool)
    for values in panel.signals.values():
        has_signal |= np.isfinite(values)
    return (has_signal & np.isfinite(fwd))[panel.in_window].sum(axis=1)


def time_series_ic_series(signal: np.ndarray, fwd: np.ndarray, min_obs: int) -> np.ndarray:
    """Per-date series whose mean is a name's Spearman correlation of signal and forward
    return over these rows: ``n * a_t * b_t`` with ``a``, ``b`` the name's centred ranks
    scaled to unit length. With several names, the date's mean over the names that have
    ``min_obs`` joint observations (exactly the correlation for one name)."""
    s, f = np.ascontiguousarray(signal.T), np.ascontiguousarray(fwd.T)
    mask = np.isfinite(s) & np.isfinite(f)
    count = mask.sum(axis=1, keepdims=True)
    rs, rf = RowSorter(s).ranks(mask), RowSorter(f).ranks(mask)
    safe = np.maximum(count, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ds = np.where(mask, rs - np.nansum(rs, axis=1, keepdims=True) / safe, 0.0)
        df = np.where(mask, rf - np.nansum(rf, axis=1, keepdims=True) / safe, 0.0)
        norm = np.sqrt((ds**2).sum(axis=1, keepdims=True) * (df**2).sum(axis=1, keepdims=True))
    usable = (count >= min_obs) & (norm > 0)
    cells = mask & usable
    product = np.where(cells, count * ds * df / np.where(norm > 0, norm, 1.0), 0.0)
    present = cells.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present > 0, product.sum(axis=0) / np.maximum(present, 1), np.nan)


def _ts_position(signal: np.ndarray, buy: float | None, sell: float | None) -> np.ndarray:
    """+1 on buy signals, -1 on sell signals, 0 otherwise (NaN without a signal)."""
    position = np.where(np.isfinite(signal), 0.0, np.nan)
    with np.errstate(invalid="ignore"):
        if buy is not None:
            position = np.where(signal >= buy, 1.0, position)
        if sell is not None:
            position = np.where(signal <= sell, -1.0, position)
    return position


@dataclass
class Verdict:
    """The computed verdict of one variant and the numbers behind its sentence."""

    variant: str
    verdict: str  # evidence | no_evidence | insufficient_data
    reason: str
    horizon: int | None = None
    oos_ic_mean: float | None = None
    oos_ic_ci95: tuple[float, float] | None = None
    oos_ic_pvalue_adjusted: float | None = None
    oos_net_spread_bps_per_day: float | None = None
    deflated_sharpe: float | None = None


@dataclass
class Assessment:
    """Everything out of sample plus the corrections for the number of tries."""

    mode: str
    mode_text: str
    design: Design
    oos: pd.DataFrame                 # one row per (variant, horizon)
    verdicts: dict[str, Verdict]
    n_trials: int
    trials: pd.DataFrame              # one row per trial: name, variant, kind, Sharpe...
    selection: pd.DataFrame           # per variant (and "all"): selected in-sample, OOS
    pbo: float | None
    pbo_reason: str | None
    pbo_by_variant: dict[str, float | None]
    spa_pvalue: float | None
    spa_reason: str | None
    selected: str | None
    selected_dsr: float | None
    event_study: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _sharpe(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if len(x) < 3:
        return math.nan
    std = x.std(ddof=1)
    return float(x.mean() / std) if std > 0 else math.nan


def _best_column(returns: np.ndarray, columns: np.ndarray) -> int | None:
    """Column (of ``columns``) with the best Sharpe over the rows of ``returns``."""
    if not len(columns):
        return None
    sub = returns[:, columns]
    with np.errstate(invalid="ignore", divide="ignore"):
        std = sub.std(axis=0, ddof=1)
        sharpe = np.where(std > 0, sub.mean(axis=0) / np.where(std > 0, std, 1), -np.inf)
    return int(columns[int(np.argmax(sharpe))])


def assess(panel: EvalPanel, side_cost: np.ndarray, cfg: AssessConfig, *,
           grid: GridResult | None = None, executor: Executor | None = None,
           timings: dict[str, float] | None = None,
           insample: EvaluationResult | None = None) -> Assessment:
    """The out-of-sample assessment of every variant of ``panel`` (see the module doc).

    ``timings``, if given, receives the seconds of each part (for ``bench/evaluate.py``).
    ``insample``: :func:`ic.evaluate_panel`'s result on the same panel; its per-date IC and
    spreads are re-used (same numbers) when its quantiles, minimum names and cost array
    fit ``cfg`` and ``side_cost``.
    """
    clock = [time.perf_counter()]

    def lap(part: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + now - clock[0]
        clock[0] = now

    horizons = tuple(sorted(cfg.horizons))
    fwd_all = {h: panel.windowed(f) for h, f in
               forward_returns(panel.open, panel.close, horizons).items()}
    signals = {name: panel.windowed(values) for name, values in panel.signals.items()}
    design = make_design(panel.dates, panel.in_window, cfg)
    counts = names_per_date(panel, fwd_all[horizons[0]])
    counts = counts[counts > 0]  # dates without any price say nothing about breadth
    median_names = float(np.median(counts)) if len(counts) else 0.0
    time_series = median_names < cfg.min_names
    mode = "time_series" if time_series else "cross_sectional"
    mode_text = (f"time-series mode: the median date with data has {median_names:g} name(s) "
                 f"with a signal and a return, fewer than --min-names {cfg.min_names}, so each "
                 "name's signal is correlated with its own forward returns over time "
                 "(a cross-sectional IC needs several names per date)"
                 if time_series else
                 f"cross-sectional mode: the median date has {median_names:,.0f} names with a "
                 f"signal and a return (--min-names {cfg.min_names})")
    notes: list[str] = []
    oos = design.oos_rows
    rows: list[dict[str, Any]] = []
    spread_daily: dict[tuple[str, int], np.ndarray] = {}
    ic_oos: dict[tuple[str, int], np.ndarray] = {}
    fwd_sorters: dict[int, RowSorter] = {}
    shared = insample.per_date if insample is not None else None
    if shared is not None and (time_series or shared.quantiles != cfg.quantiles
                               or shared.min_assets > cfg.min_names
                               or shared.side_cost is not side_cost
                               or not all((n, h) in shared.ic for n in signals
                                          for h in horizons)):
        shared = None
    for name, signal in signals.items():
        variant = panel.variants.get(name)
        labels = (None if time_series or shared is not None
                  else quantile_labels(signal, cfg.quantiles))
        sorter = (RowSorter(signal[oos]) if len(oos) and not time_series and shared is None
                  else None)
        for h, fwd in fwd_all.items():
            if time_series:
                position = _ts_position(signal, getattr(variant, "buy", None),
                                        getattr(variant, "sell", None))
                round_trip = shift_rows(side_cost, -1) + shift_rows(side_cost, -h)
                with np.errstate(invalid="ignore"):
                    pnl = position * fwd - np.abs(position) * round_trip
                    held = np.isfinite(pnl)
                    net = np.where(held.any(axis=1), np.nansum(np.where(held, pnl, 0), axis=1)
                                   / np.maximum(held.sum(axis=1), 1), np.nan)
                    gross_pnl = position * fwd
                    gross = np.where(held.any(axis=1), np.nansum(
                        np.where(held, gross_pnl, 0), axis=1) / np.maximum(held.sum(axis=1), 1),
                        np.nan)
                if variant is None or (variant.buy is None and variant.sell is None):
                    net = gross = np.full(len(net), np.nan)
            elif shared is not None:
                gross = shared.spread[(name, h)]
                net = gross - shared.cost[(name, h)]
            elif labels is not None:
                _table, gross, trip = quantile_spreads(labels, fwd, cfg.quantiles, side_cost, h)
                net = gross - trip
            spread_daily[(name, h)] = net / h
            if not len(oos):
                ic_oos[(name, h)] = np.array([])
                rows.append({"variant": name, "horizon": h, "n_dates": 0})
                continue
            if time_series:
                ic = time_series_ic_series(signal[oos], fwd[oos], min_obs=cfg.min_oos_dates)
            elif shared is not None:  # the same per-date IC, with at least min_names names
                ic = np.where(shared.names[(name, h)][oos] >= cfg.min_names,
                              shared.ic[(name, h)][oos], np.nan)
            else:
                if h not in fwd_sorters:
                    fwd_sorters[h] = RowSorter(fwd[oos])
                ic = cross_sectional_ic(signal[oos], fwd[oos], cfg.min_names,
                                        signal_sorter=sorter, fwd_sorter=fwd_sorters[h])
            ic_oos[(name, h)] = ic
            test = hac_mean_test(ic, h)
            sp = net[oos] / h
            rows.append({"variant": name, "horizon": h, "n_dates": test.n,
                         "ic_mean": test.mean, "ic_se": test.se, "ic_t": test.t_stat,
                         "ic_p": test.p_value,
                         "spread_gross_bps_per_day": float(np.nanmean(gross[oos] / h) * 1e4)
                         if np.isfinite(gross[oos]).any() else np.nan,
                         "spread_net_bps_per_day": float(np.nanmean(sp) * 1e4)
                         if np.isfinite(sp).any() else np.nan,
                         "spread_days": int(np.isfinite(sp).sum())})
    table = pd.DataFrame(rows)
    for column in ("ic_mean", "ic_se", "ic_t", "ic_p", "spread_gross_bps_per_day",
                   "spread_net_bps_per_day"):
        if column not in table:
            table[column] = np.nan
    lap("oos IC + net spread (HAC)")
    enough = table["n_dates"] >= cfg.min_oos_dates
    table["ic_p_adjusted"] = holm(np.where(enough, table["ic_p"], np.nan))
    for column in ("ic_ci_lo", "ic_ci_hi", "spread_ci_lo_bps", "spread_ci_hi_bps",
                   "placebo_percentile"):
        table[column] = np.nan
    if len(oos):
        names = list(signals)
        for h in horizons:
            block = max(h, 5)
            ics = np.column_stack([ic_oos[(n, h)] for n in names])
            spreads = np.column_stack([spread_daily[(n, h)][oos] for n in names])
            ci = bootstrap_mean_ci(np.column_stack([ics, spreads]), block=block,
                                   reps=cfg.bootstrap_reps, seed=cfg.seed + h)
            order = [table.index[(table["horizon"] == h) & (table["variant"] == n)][0]
                     for n in names]
            table.loc[order, "ic_ci_lo"] = ci[:len(names), 0]
            table.loc[order, "ic_ci_hi"] = ci[:len(names), 1]
            table.loc[order, "spread_ci_lo_bps"] = ci[len(names):, 0] * 1e4
            table.loc[order, "spread_ci_hi_bps"] = ci[len(names):, 1] * 1e4
        lap("block bootstrap intervals")
        if cfg.placebos > 0:
            placebo = placebo_stats({n: signals[n][oos] for n in names},
                                    {h: fwd_all[h][oos] for h in horizons},
                                    draws=cfg.placebos, seed=cfg.seed, time_series=time_series,
                                    executor=executor)
            for (name, h), (real, draws) in placebo.items():
                where = (table["variant"] == name) & (table["horizon"] == h)
                table.loc[where, "placebo_percentile"] = percentile(real, draws)
                table.loc[where, "placebo_draws"] = len(draws)
        else:
            notes.append("permutation placebo: not run (--placebos 0)")
        lap("permutation placebo")

    # ---- trials: backtest grid + one spread strategy per (variant, horizon) ----
    window = np.flatnonzero(panel.in_window)
    trial_series = []
    trial_rows: list[dict[str, Any]] = []
    if grid is not None and len(grid.table):
        for j, row in enumerate(grid.table.itertuples(index=False)):
            sell = "" if row.sell is None or pd.isna(row.sell) else f"/{row.sell:g}"
            trial_rows.append({"trial": f"{row.variant} {row.buy:g}{sell} {row.exit}",
                               "variant": row.variant, "kind": "backtest"})
            trial_series.append(grid.returns[:, j])
    for (name, h), series in spread_daily.items():
        trial_rows.append({"trial": f"{name} top-bottom {h}d", "variant": name,
                           "kind": "spread"})
        trial_series.append(np.nan_to_num(series, nan=0.0))
    matrix = np.column_stack(trial_series)[window] if trial_series else np.zeros((len(window),
                                                                                  0))
    n_trials = matrix.shape[1]
    trials = pd.DataFrame(trial_rows)
    sharpe = np.array([_sharpe(matrix[:, j]) for j in range(n_trials)])
    trials["sharpe_annualised"] = sharpe * math.sqrt(TRADING_DAYS)
    finite_sharpe = sharpe[np.isfinite(sharpe)]
    sharpe_var = float(finite_sharpe.var(ddof=1)) if len(finite_sharpe) > 1 else 0.0

    def dsr_of(column: int | None) -> float | None:
        if column is None:
            return None
        sr, skew, kurt, n_obs = sharpe_moments(matrix[:, column])
        value = deflated_sharpe(sr, n_trials=n_trials, variance=sharpe_var, n_obs=n_obs,
                                skew=skew, kurtosis=kurt)
        return value if np.isfinite(value) else None

    # selection in-sample, reported out of sample (fold by fold)
    longest = max(horizons)
    position_of = {r: i for i, r in enumerate(window)}
    selection_rows = []
    groups = {"all": np.arange(n_trials)}
    groups.update({n: np.flatnonzero(trials["variant"].to_numpy() == n) for n in signals}
                  if n_trials else {})
    best_full: dict[str, int | None] = {}
    for group, columns in groups.items():
        best_full[group] = _best_column(matrix, columns) if len(window) > 2 else None
        if not design.folds or not len(columns):
            continue
        pieces, picks = [], []
        for train_rows, test_rows in design.folds:
            # purge: a spread trial's return at row t is realised by t + h, so the last
            # ``longest`` training rows would peek into the test window
            kept = train_rows[:-longest] if len(train_rows) > longest + 2 else train_rows
            tr = np.array([position_of[r] for r in kept])
            te = np.array([position_of[r] for r in test_rows])
            pick = _best_column(matrix[tr], columns)
            if pick is None:
                continue
            picks.append(trials["trial"].iloc[pick])
            pieces.append(matrix[te, pick])
        if pieces:
            series = np.concatenate(pieces)
            selection_rows.append({
                "group": group, "folds": len(pieces),
                "chosen": ", ".join(dict.fromkeys(picks)),
                "is_sharpe_annualised": float(trials["sharpe_annualised"].iloc[
                    best_full[group]]) if best_full[group] is not None else np.nan,
                "oos_sharpe_annualised": _sharpe(series) * math.sqrt(TRADING_DAYS),
                "oos_mean_bps_per_day": float(series.mean() * 1e4),
                "oos_days": len(series)})
    selection = pd.DataFrame(selection_rows)

    lap("trials, selection out of sample")
    pbo = pbo_reason = None
    pbo_by_variant: dict[str, float | None] = {}
    min_rows = cfg.pbo_partitions * 4
    if n_trials < 2:
        pbo_reason = f"PBO needs at least 2 trials; this run has {n_trials}"
    elif len(window) < min_rows:
        pbo_reason = (f"PBO with {cfg.pbo_partitions} partitions needs at least {min_rows} "
                      f"sessions (4 per partition); the window has {len(window)}")
    else:
        pbo = pbo_cscv(matrix, cfg.pbo_partitions).pbo
        for name in signals:
            columns = groups.get(name, np.array([], dtype=int))
            pbo_by_variant[name] = (pbo_cscv(matrix[:, columns], cfg.pbo_partitions).pbo
                                    if len(columns) >= 2 else None)
    lap("PBO (CSCV)")
    spa = spa_reason = None
    if n_trials == 0:
        spa_reason = "no trials to test"
    elif len(window) < 30:
        spa_reason = f"SPA needs at least 30 sessions; the window has {len(window)}"
    else:
        close = panel.close
        with np.errstate(invalid="ignore", divide="ignore"):
            daily = shift_rows(close, 0) / shift_rows(close, 1) - 1
        finite = np.isfinite(daily)
        always_long = np.where(finite.any(axis=1), np.nansum(np.where(finite, daily, 0), axis=1)
                               / np.maximum(finite.sum(axis=1), 1), 0.0)[window]
        spa = spa_pvalue(always_long, matrix, reps=cfg.spa_reps, block_size=10,
                         seed=cfg.seed)
    lap("SPA (arch)")
    selected = best_full.get("all")
    selected_name = trials["trial"].iloc[selected] if selected is not None else None
    selected_dsr = dsr_of(selected)

    verdicts = {name: _verdict(name, table, design, cfg, dsr_of(best_full.get(name)),
                               n_trials, time_series) for name in signals}
    events = _event_study(panel, signals, fwd_all) if time_series else pd.DataFrame()
    if not events.empty:
        events = events[events["events"] > 0].reset_index(drop=True)
    lap("deflated Sharpe, verdicts")
    return Assessment(mode, mode_text, design, table, verdicts, n_trials, trials, selection,
                      pbo, pbo_reason, pbo_by_variant, spa, spa_reason, selected_name,
                      selected_dsr, events, notes)


def _verdict(name: str, table: pd.DataFrame, design: Design, cfg: AssessConfig,
             dsr: float | None, n_trials: int, time_series: bool) -> Verdict:
    """evidence / no_evidence / insufficient_data with its sentence (see the module doc)."""
    if design.kind == "none":
        return Verdict(name, "insufficient_data", f"insufficient data: {design.text}",
                       deflated_sharpe=dsr)
    rows = table[(table["variant"] == name) & (table["n_dates"] >= cfg.min_oos_dates)
                 & table["ic_p_adjusted"].notna()]
    if rows.empty:
        most = int(table.loc[table["variant"] == name, "n_dates"].max() or 0)
        what = "time-series correlation" if time_series else "cross-sectional IC"
        return Verdict(name, "insufficient_data",
                       f"insufficient data: at most {most} out-of-sample dates with a {what} "
                       f"(needs {cfg.min_oos_dates}); {design.text}", deflated_sharpe=dsr)
    ranked = rows.sort_values(["ic_p_adjusted", "horizon"], kind="stable")
    qualifies = (ranked["ic_p_adjusted"] < cfg.alpha) & (ranked["spread_net_bps_per_day"] > 0)
    best = ranked[qualifies].iloc[0] if qualifies.any() else ranked.iloc[0]
    h = int(best["horizon"])
    spread = float(best["spread_net_bps_per_day"])
    p_adj = float(best["ic_p_adjusted"])
    survives = p_adj < cfg.alpha
    positive = bool(np.isfinite(spread) and spread > 0)
    verdict = "evidence" if survives and positive else "no_evidence"
    what = "time-series IC" if time_series else "IC"
    dsr_text = (f"deflated Sharpe {fmt_p(dsr)} over {n_trials:,} trials" if dsr is not None
                else f"no deflated Sharpe ({n_trials:,} trials)")
    numbers = (f"out-of-sample {what} {fmt_num(best['ic_mean'])} at {h} session(s) (95% CI "
               f"{fmt_num(best['ic_ci_lo'])}..{fmt_num(best['ic_ci_hi'])}, adjusted p "
               f"{fmt_p(p_adj)}), net spread {fmt_num(spread)} bps/day, {dsr_text}")
    if verdict == "evidence":
        reason = f"evidence: {numbers}"
    elif survives:
        reason = f"no evidence: the IC survives the adjustment but the net spread is not " \
                 f"positive; {numbers}"
    else:
        reason = f"no evidence: {numbers}"
    return Verdict(name, verdict, reason, h, float(best["ic_mean"]),
                   (float(best["ic_ci_lo"]), float(best["ic_ci_hi"])), p_adj,
                   spread if np.isfinite(spread) else None, dsr)


def _event_study(panel: EvalPanel, signals: dict[str, np.ndarray],
                 fwd_all: dict[int, np.ndarray]) -> pd.DataFrame:
    """Mean return before (close[t] / close[t-h] - 1) and after (the forward return) buy and
    sell signals, per variant and horizon, over the whole window (descriptive)."""
    rows = []
    for name, signal in signals.items():
        variant = panel.variants.get(name)
        if variant is None:
            continue
        for kind, level in (("buy", variant.buy), ("sell", variant.sell)):
            if level is None:
                continue
            with np.errstate(invalid="ignore"):
                events = signal >= level if kind == "buy" else signal <= level
            for h, fwd in fwd_all.items():
                with np.errstate(invalid="ignore", divide="ignore"):
                    before = panel.close / shift_rows(panel.close, h) - 1
                after_cells = events & np.isfinite(fwd)
                before_cells = events & np.isfinite(before)
                rows.append({"variant": name, "signal": f"{kind} ({'>=' if kind == 'buy' else '<='}"
                                                        f" {level:g})",
                             "horizon": h, "events": int(events.sum()),
                             "mean_before": float(before[before_cells].mean())
                             if before_cells.any() else np.nan,
                             "mean_after": float(fwd[after_cells].mean())
                             if after_cells.any() else np.nan,
                             "hit_rate_after": float(((fwd[after_cells] > 0) if kind == "buy"
                                                      else (fwd[after_cells] < 0)).mean())
                             if after_cells.any() else np.nan})
    return pd.DataFrame(rows)
