"""``darkpool evaluate``: honest evaluation of signal variants against forward returns.

Reads ``daily_metrics`` read-only; writes files into ``--out``; writes the database only with
``--save``. The work is :func:`darkpool_analysis.evaluation.runner.run_evaluation`, imported
inside the command so ``darkpool --help`` and other commands stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from darkpool_analysis.cli.app import app, config, console, handle_errors

#: Mirrors ``evaluation.backtest.DEFAULT_EXITS``/``EXIT_HELP`` (a test keeps them equal) so the
#: CLI does not import pandas just to show --help.
DEFAULT_EXITS = "fixed:5,fixed:10,fixed:20,first_dist,two_dist,hybrid:30,decay:3"
EXIT_HELP = ("fixed:N (N sessions), first_dist (first distribution signal), two_dist (two "
             "consecutive), hybrid:N (first distribution or N sessions), decay:D[:LEVEL] "
             "(D sessions below LEVEL, default the neutral level, max 60 sessions)")


@app.command("evaluate")
@handle_errors
def evaluate(
    variants: str = typer.Option("current,option_a,option_b", "--variants",
                                 help="Comma-separated registered variants ('' for none)."),
    formula: Annotated[list[str] | None, typer.Option(
        "--formula", help="name=<expression>; repeatable.")] = None,
    formula_file: Annotated[list[Path] | None, typer.Option(
        "--formula-file", help="TOML file with a [formulas] table; repeatable.")] = None,
    universe: str | None = typer.Option(None, "--universe",
                                        help="Comma-separated tickers or 'all' "
                                             "(default: DARKPOOL_TICKERS)."),
    start: str | None = typer.Option(None, "--start", help="First signal date (YYYY-MM-DD)."),
    end: str | None = typer.Option(None, "--end", help="Last signal date (YYYY-MM-DD)."),
    horizons: str = typer.Option("1,5,10,20", "--horizons", help="Forward horizons, sessions."),
    quantiles: int = typer.Option(5, "--quantiles", min=2, max=20),
    exits: str = typer.Option(DEFAULT_EXITS, "--exits",
                              help=EXIT_HELP + "; '' = no backtest."),
    thresholds: str | None = typer.Option(
        None, "--thresholds", help="Grid of buy/sell levels per variant, e.g. "
                                   "'current=60/40,70/30;finra_buy_volume_z=1.5/-1.5'."),
    walk: bool = typer.Option(True, "--walk-forward/--no-walk-forward"),
    train: int = typer.Option(126, "--train-sessions", min=20, max=2520),
    test: int = typer.Option(42, "--test-sessions", min=5, max=2520),
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output folder (default <output_dir>/evaluation/<run id>).")] = None,
    save: bool = typer.Option(False, "--save", help="Also store the numbers in the database."),
    otc_alignment: str = typer.Option("published", "--otc-alignment",
                                      help="published (point in time) or week (LOOK-AHEAD)."),
    placebo: bool = typer.Option(True, "--placebo/--no-placebo"),
    seed: int = typer.Option(20240101, "--seed", help="Placebo shuffle seed."),
    warmup: int = typer.Option(260, "--warmup", min=0, max=2520,
                               help="Sessions loaded before --start for rolling windows."),
    cost_bps: float = typer.Option(5.0, "--cost-bps", min=0.0, max=1000.0,
                                   help="Trading cost per side in basis points."),
    cost_model: str = typer.Option(
        "fixed", "--cost-model", help="fixed (--cost-bps only) or chl (plus half the name's "
                                      "close-high-low spread estimate, Abdi & Ranaldo 2017)."),
    min_names: int = typer.Option(
        10, "--min-names", min=2, max=100000,
        help="Fewer names per date than this: time-series mode instead of cross-sectional."),
    placebos: int = typer.Option(200, "--placebos", min=0, max=100000,
                                 help="Permutation placebo draws for the out-of-sample IC."),
    bootstrap_reps: int = typer.Option(1000, "--bootstrap-reps", min=50, max=100000,
                                       help="Block-bootstrap replications for the intervals."),
    spa_reps: int = typer.Option(1000, "--spa-reps", min=50, max=100000,
                                 help="Bootstrap replications of Hansen's SPA test."),
    pbo_partitions: int = typer.Option(16, "--pbo-partitions", min=2, max=20,
                                       help="CSCV blocks for the PBO (even number)."),
    executor: str = typer.Option(
        "serial", "--executor", help="Where the backtest grid and placebo chunks run: serial, "
                                     "local[:N], dask-local[:N] or dask://HOST:PORT."),
) -> None:
    """Evaluate signal variants out of sample, net of costs, corrected for the number of
    tries: a verdict per variant, then IC, quantiles, events, backtests, walk-forward."""
    from darkpool_analysis.evaluation.runner import run_evaluation
    from darkpool_analysis.executor import make_executor, parse_executor_spec

    spec = parse_executor_spec(executor)
    settings = config()
    with make_executor(spec) as pool, Progress(console=console, transient=True) as progress:

        def on_grid(total: int) -> Callable[[], None]:
            task = progress.add_task("backtests", total=total)
            return lambda: progress.advance(task)

        outcome = run_evaluation(
            settings, variants=variants, formulas=formula, formula_files=formula_file,
            universe=universe, start=start, end=end, horizons=horizons, quantiles=quantiles,
            exits=exits, thresholds=thresholds, walk=walk, train=train, test=test, out=out,
            save=save, otc_alignment=otc_alignment, placebo=placebo, seed=seed,
            warmup=warmup, cost_bps=cost_bps, cost_model=cost_model, min_names=min_names,
            placebos=placebos, bootstrap_reps=bootstrap_reps, spa_reps=spa_reps,
            pbo_partitions=pbo_partitions, executor=pool, on_grid=on_grid)
    for table in outcome.tables:
        console.print(table)
    if outcome.walk_summary:
        summary = outcome.walk_summary
        console.print(f"walk-forward: in-sample mean excess {summary['is_mean_excess']:+.4%}, "
                      f"out-of-sample {summary['oos_mean_excess']:+.4%} "
                      f"over {summary['windows']:.0f} windows")
    if outcome.saved:
        console.print(f"saved run {outcome.run_id} to {settings.db_path}")
    console.print(f"[bold]{outcome.label}[/]")
    console.print(f"report: {outcome.paths['html']}")
    console.print(f"summary: {outcome.paths['summary']}")
