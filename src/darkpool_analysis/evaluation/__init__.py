"""Honest evaluation of signals against forward returns (the signal lab).

Pipeline: :func:`returns.build_panel` (signals + prices on the session grid) ->
:func:`ic.evaluate_panel` (IC, quantiles, events, turnover, placebo) ->
:func:`backtest.run_backtest` / :func:`backtest.run_grid` (event backtests) ->
:func:`walkforward.walk_forward` -> :mod:`report` (tables, HTML, CSV/Parquet, alphalens export).
Computation modules never touch the database; the CLI reads it read-only.
"""
