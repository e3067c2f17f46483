"""Benchmark the signal lab end to end: panel, in-sample evaluation, costs, the backtest grid,
and the out-of-sample assessment (HAC + block-bootstrap intervals, permutation placebo, PBO,
SPA, deflated Sharpe, verdicts), plus alphalens on a subset for a ratio.

Full size (``--scale 1``): 5 variants x 3,000 symbols x 1,260 sessions x 4 horizons, the
1,000-combination grid, SPA with 1,000 bootstrap replications, PBO with 16 partitions,
200 placebo permutations (issue 11 target: all of it <= 60 s and <= 4 GB on the 2-core
machine). Each part prints its seconds and the peak RSS so far. alphalens runs on a subset
of the same input (``--alphalens-symbols``) because it is much slower; our time on that
subset is measured in the same run for the ratio.

    .venv/bin/python bench/evaluate.py --scale 0.1
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
import warnings

import numpy as np
import pandas as pd

from darkpool_analysis.evaluation.assess import AssessConfig, assess
from darkpool_analysis.evaluation.backtest import BacktestEngine, grid_points, parse_exits, run_grid
from darkpool_analysis.evaluation.costs import side_costs
from darkpool_analysis.evaluation.ic import evaluate_panel
from darkpool_analysis.evaluation.returns import EvalPanel, build_panel
from darkpool_analysis.signals import REGISTRY
from darkpool_analysis.trading_calendar import sessions_index

VARIANTS = ("current", "option_a", "option_b", "blend_ab", "imbalance_log1p_z")
HORIZONS = (1, 5, 10, 20)


def peak_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_frame(n_symbols: int, n_days: int, seed: int = 0) -> pd.DataFrame:
    """A long daily_metrics frame with every column the five variants read."""
    rng = np.random.default_rng(seed)
    dates = sessions_index("2015-01-02", "2030-12-31")[:n_days]
    n = n_symbols * n_days
    step = rng.normal(0, 0.02, (n_days, n_symbols))
    close = 50 * np.exp(step.cumsum(axis=0))
    total = rng.uniform(1e5, 1e7, n)
    short = total * rng.uniform(0.3, 0.7, n)
    return pd.DataFrame({
        "symbol": np.tile(np.array([f"S{i:04d}" for i in range(n_symbols)]), n_days),
        "date": np.repeat(dates.to_numpy(), n_symbols),
        "open": (close * np.exp(rng.normal(0, 0.003, close.shape))).ravel(),
        "close": close.ravel(),
        "short_buy_volume": short, "short_sell_volume": total - short,
        **{c: rng.normal(size=n) for c in ("short_buy_sell_ratio_z", "vw_flow_z",
                                            "finra_buy_volume_z", "lit_flow_imbalance_z",
                                            "return_z", "otc_participation_z")},
    })


def ours_vs_alphalens(panel: EvalPanel, n_symbols: int) -> tuple[float, float]:
    """Seconds for our evaluation and alphalens' on the same one-variant subset."""
    from alphalens.performance import factor_information_coefficient, mean_return_by_quantile
    from alphalens.utils import get_clean_factor_and_forward_returns

    cols = slice(0, n_symbols)
    signal = panel.signals["current"][:, cols].copy()
    signal[-max(HORIZONS):] = np.nan
    gapless_open = np.vstack([panel.close[:1, cols], panel.close[:-1, cols]])
    sub = EvalPanel(panel.dates, panel.symbols[cols], gapless_open, panel.close[:, cols],
                    {"current": signal}, panel.in_window, {"current": REGISTRY["current"]})
    started = time.perf_counter()
    evaluate_panel(sub, HORIZONS, placebo=False)
    ours = time.perf_counter() - started
    factor = pd.DataFrame(signal, index=panel.dates, columns=sub.symbols).stack()
    factor.index.names = ["date", "asset"]
    prices = pd.DataFrame(panel.close[:, cols], index=panel.dates, columns=sub.symbols)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = get_clean_factor_and_forward_returns(factor, prices, quantiles=5,
                                                    periods=HORIZONS, max_loss=1.0)
        factor_information_coefficient(data)
        mean_return_by_quantile(data)
    return ours, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of 3,000 symbols (sessions stay 1,260)")
    parser.add_argument("--grid", type=int, default=1000, help="backtest combinations")
    parser.add_argument("--placebos", type=int, default=200)
    parser.add_argument("--spa-reps", type=int, default=1000)
    parser.add_argument("--pbo-partitions", type=int, default=16)
    parser.add_argument("--bootstrap-reps", type=int, default=1000)
    parser.add_argument("--alphalens-symbols", type=int, default=300,
                        help="0 skips the alphalens baseline")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n_symbols, n_days = max(int(3000 * args.scale), 20), 1260

    started = time.perf_counter()
    frame = synthetic_frame(n_symbols, n_days)
    frame["high"] = np.maximum(frame["open"], frame["close"]) * 1.004
    frame["low"] = np.minimum(frame["open"], frame["close"]) * 0.996
    print(f"generated {len(frame):,} rows in {time.perf_counter() - started:.1f}s "
          "(not counted)")
    parts: list[tuple[str, float, float]] = []
    cpu_mark = [time.process_time()]

    def part(name: str, seconds: float, cpu: bool = True) -> None:
        """One line per part: wall seconds, CPU seconds of this process since the previous
        line (blank for the assessment's sub-parts, which report wall only) and peak RSS."""
        parts.append((name, seconds, peak_mb()))
        now = time.process_time()
        used = f"{now - cpu_mark[0]:7.2f} s cpu" if cpu else " " * 13
        cpu_mark[0] = now
        print(f"  {name:<44} {seconds:7.2f} s  {used}   peak {peak_mb():7,.0f} MB", flush=True)

    total_started = time.perf_counter()
    cpu_started = time.process_time()
    started = time.perf_counter()
    panel = build_panel(frame, [REGISTRY[v] for v in VARIANTS])
    del frame
    part(f"panel ({len(VARIANTS)} variants)", time.perf_counter() - started)

    started = time.perf_counter()
    cost = side_costs(panel.shape, cost_bps=5.0, model="chl", high=panel.high, low=panel.low,
                      close=panel.close)
    part("costs (chl spread estimate)", time.perf_counter() - started)

    started = time.perf_counter()
    result = evaluate_panel(panel, HORIZONS, placebo=True, side_cost=cost)
    part("in-sample IC/quantiles/events (+placebo)", time.perf_counter() - started)

    engine = BacktestEngine(panel.dates, panel.symbols, panel.open, panel.close,
                            panel.in_window, side_cost=cost)
    exits = parse_exits("fixed:1,fixed:5,fixed:10,fixed:20,fixed:30,first_dist,two_dist,"
                        "hybrid:30,decay:3,hybrid:10")
    levels = [(b, s) for b in (60, 62, 64, 66, 68, 70, 72, 74, 76, 78)
              for s in (30, 40)]  # 20 pairs
    thresholds = {v: levels for v in VARIANTS if REGISTRY[v].scale == "display"}
    z_levels = [(b / 10, s / 10) for b in range(5, 25, 2) for s in (-10, -5)]
    thresholds.update({v: z_levels for v in VARIANTS if REGISTRY[v].scale == "z"})
    points = grid_points({v: (REGISTRY[v].buy, REGISTRY[v].sell, REGISTRY[v].neutral)
                          for v in VARIANTS}, thresholds, exits)[: args.grid]
    started = time.perf_counter()
    grid = run_grid(engine, panel.signals, {v: REGISTRY[v].neutral for v in VARIANTS}, points)
    part(f"backtest grid ({len(grid.table):,} combinations, gross+net)",
         time.perf_counter() - started)

    timings: dict[str, float] = {}
    config = AssessConfig(horizons=HORIZONS, placebos=args.placebos, spa_reps=args.spa_reps,
                          pbo_partitions=args.pbo_partitions,
                          bootstrap_reps=args.bootstrap_reps)
    assess_cpu = time.process_time()
    assessment = assess(panel, cost, config, grid=grid, timings=timings, insample=result)
    assess_cpu = time.process_time() - assess_cpu
    for name, seconds in timings.items():
        part(name, seconds, cpu=False)
    cpu_mark[0] = time.process_time()
    print(f"  {'(out-of-sample assessment, all parts)':<44} {sum(timings.values()):7.2f} s  "
          f"{assess_cpu:7.2f} s cpu")
    total = time.perf_counter() - total_started
    total_cpu = time.process_time() - cpu_started
    cells = n_symbols * n_days * len(VARIANTS) * len(HORIZONS)
    print(f"TOTAL {total:.1f} s ({total_cpu:.1f} s cpu) for {len(VARIANTS)} variants x "
          f"{n_symbols:,} symbols x {n_days:,} sessions x {len(HORIZONS)} horizons "
          f"({cells / total:,.0f} cell-horizons/s), {assessment.n_trials:,} trials, "
          f"peak {peak_mb():,.0f} MB; "
          f"{len(result.metrics):,} in-sample numbers; verdicts "
          + ", ".join(f"{k}={v.verdict}" for k, v in assessment.verdicts.items()))

    if args.alphalens_symbols:
        subset = min(args.alphalens_symbols, n_symbols)
        ours, theirs = ours_vs_alphalens(panel, subset)
        print(f"alphalens baseline (1 variant x {subset} symbols x {n_days} sessions x "
              f"{len(HORIZONS)} horizons): alphalens {theirs:.1f}s, ours {ours:.2f}s, "
              f"ratio {theirs / ours:.1f}x faster")


if __name__ == "__main__":
    main()
