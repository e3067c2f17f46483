"""One evaluation run end to end: load ``daily_metrics`` read-only, compute the variants,
IC / quantiles / events, backtests, walk-forward, and write the outputs.

The database is written only when ``save=True`` (tables ``evaluation_runs`` /
``evaluation_results``). ``darkpool evaluate`` is a thin wrapper around :func:`run_evaluation`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import re
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from darkpool_analysis import __version__
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, NoDataError
from darkpool_analysis.evaluation.assess import AssessConfig, assess
from darkpool_analysis.evaluation.backtest import (
    DEFAULT_EXITS,
    BacktestEngine,
    grid_points,
    parse_exits,
    run_grid,
)
from darkpool_analysis.evaluation.costs import DEFAULT_COST_BPS, describe_costs, side_costs
from darkpool_analysis.evaluation.ic import evaluate_panel
from darkpool_analysis.evaluation.report import (
    all_numbers,
    build_summary,
    rich_summary,
    write_outputs,
)
from darkpool_analysis.evaluation.returns import build_panel, check_horizons
from darkpool_analysis.evaluation.walkforward import (
    Candidate,
    summarize_walk_forward,
    walk_forward,
)
from darkpool_analysis.formulas import formulas_as_variants
from darkpool_analysis.signals import Variant, WeightsValues, get_variant
from darkpool_analysis.store import (
    connect_readonly,
    describe_owed,
    is_synthetic,
    open_writer,
    read_meta,
    read_owed,
    table_exists,
    utcnow,
)
from darkpool_analysis.symbols import normalise
from darkpool_analysis.trading_calendar import session_offset, to_date

log = logging.getLogger(__name__)

_THRESHOLD_RE = re.compile(r"^(-?[\d.]+)(?:/(-?[\d.]+))?$")


def parse_thresholds(text: str | None) -> dict[str, list[tuple[float, float | None]]]:
    """``"current=60/40,70/30;finra_buy_volume_z=1.5/-1.5"`` -> {name: [(buy, sell), ...]}."""
    out: dict[str, list[tuple[float, float | None]]] = {}
    for block in (text or "").split(";"):
        if not block.strip():
            continue
        name, sep, pairs = block.partition("=")
        if not sep:
            raise ConfigError(f"--thresholds block {block!r} must look like name=buy/sell,...")
        parsed = []
        for pair in pairs.split(","):
            match = _THRESHOLD_RE.match(pair.strip())
            if not match:
                raise ConfigError(f"--thresholds: {pair!r} is not buy/sell (e.g. 70/30)")
            buy = float(match.group(1))
            sell = None if match.group(2) is None else float(match.group(2))
            if sell is not None and sell >= buy:
                raise ConfigError(f"--thresholds: sell {sell} must be below buy {buy}")
            parsed.append((buy, sell))
        out[name.strip()] = parsed
    return out


def normalise_ticker(text: str) -> str:
    """A ticker typed in any spelling (BRK.B, BRK-B, BRK/B) -> the normalised form."""
    text = text.strip().upper()
    return normalise(text, feed="yahoo" if "-" in text else "cqs")


@dataclass
class DataContext:
    """What the report must say about the data: synthetic label, metrics owed, unknown names."""

    synthetic: bool = False
    owed: str | None = None
    missing: list[str] = field(default_factory=list)


def check_universe(conn: Any, symbols: list[str]) -> list[str]:
    """The requested symbols absent from daily_metrics; raises when none is present, naming
    the unknown tickers and suggesting close spellings (difflib)."""
    known = [r[0] for r in conn.execute("SELECT DISTINCT symbol FROM daily_metrics").fetchall()]
    present = set(known)
    missing = [s for s in symbols if s not in present]
    if missing and len(missing) == len(symbols):
        hints = []
        for symbol in missing[:5]:
            close = difflib.get_close_matches(symbol, known, n=5, cutoff=0.5)
            hints.append(f"{symbol}: did you mean {', '.join(close)}?" if close
                         else f"{symbol}: no similar symbol")
        raise NoDataError(
            f"daily_metrics has no rows for {', '.join(missing)} "
            f"({len(known):,} symbols are stored)",
            hint="; ".join(hints) + " (`darkpool db symbols` lists them)")
    return missing


def load_metrics(settings: Settings, symbols: list[str] | None, start: dt.date | None,
                  end: dt.date | None, warmup: int, lookahead: int,
                  otc_alignment: str) -> tuple[pd.DataFrame, dt.date, dt.date, DataContext]:
    """Read daily_metrics (with warm-up before and forward prices after the window) and what
    the report must say about the database."""
    conn = connect_readonly(settings.db_path)
    try:
        if not table_exists(conn, "daily_metrics"):
            raise NoDataError("the database has no daily_metrics table",
                              hint="run `darkpool build` first")
        context = DataContext(synthetic=is_synthetic(read_meta(conn)),
                              owed=describe_owed(read_owed(conn)))
        where, params = "", []
        if symbols:
            context.missing = check_universe(conn, symbols)
            where = " AND symbol IN (SELECT unnest(?::VARCHAR[]))"
            params = [symbols]
        row = conn.execute(f"SELECT min(date), max(date) FROM daily_metrics WHERE true{where}",
                           params).fetchone()
        if row is None or row[0] is None:
            raise NoDataError("daily_metrics has no rows for this universe",
                              hint="check --universe or run `darkpool build`")
        first, last = row[0], row[1]
        start = max(start or first, first)
        end = min(end or last, last)
        if start > end:
            raise NoDataError(f"daily_metrics covers {first}..{last}; nothing in the window")
        stored = conn.execute(
            f"SELECT count(*) FROM daily_metrics WHERE otc_alignment = 'week'{where}",
            params).fetchone()
        if stored and stored[0] and otc_alignment != "week":
            raise ConfigError(
                "this database was built with week-aligned (look-ahead) OTC data",
                hint="rebuild with DARKPOOL_OTC_ALIGNMENT=published, or pass "
                     "--otc-alignment week to evaluate it with the look-ahead label")
        load_from = session_offset(start, -warmup)
        load_to = session_offset(end, lookahead)
        select = "SELECT * FROM daily_metrics m"
        if otc_alignment == "week":
            # Look-ahead on request: each day gets the z of the week it falls in, although
            # FINRA publishes that week 2-4 weeks later.
            select = (
                "WITH weeks AS (SELECT symbol, otc_week_used AS week, "
                "any_value(otc_participation_z) AS week_z FROM daily_metrics "
                "WHERE otc_week_used IS NOT NULL GROUP BY ALL) "
                "SELECT m.* REPLACE (w.week_z AS otc_participation_z) FROM daily_metrics m "
                "LEFT JOIN weeks w ON w.symbol = m.symbol "
                "AND w.week = CAST(date_trunc('week', m.date) AS DATE)")
        sql = (f"{select} WHERE m.date BETWEEN ? AND ?"
               f"{where.replace('symbol IN', 'm.symbol IN')} ORDER BY m.symbol, m.date")
        frame = conn.execute(sql, [load_from, load_to, *params]).df()
    finally:
        conn.close()
    frame["date"] = pd.to_datetime(frame["date"])
    return frame, start, end, context


def save_run(settings: Settings, run_id: str, parameters: dict[str, Any],
          numbers: pd.DataFrame, summary: dict[str, Any]) -> None:
    """Write the run and its numbers in one transaction (only with --save)."""
    results = numbers.assign(run_id=run_id)[
        ["run_id", "section", "variant", "horizon", "metric", "value"]]
    results = results.astype({"horizon": "float64"})
    with open_writer(settings.db_path) as writer, writer.transaction() as conn:
        conn.execute(
            "INSERT INTO evaluation_runs (run_id, created_at, code_version, parameters, "
            "summary) VALUES (?, ?, ?, ?, ?)",
            [run_id, utcnow(), __version__, json.dumps(parameters, default=str),
             json.dumps(summary, default=str)])
        conn.register("_evaluation_batch", results)
        try:
            conn.execute("INSERT INTO evaluation_results BY NAME SELECT run_id, section, "
                         "variant, CAST(horizon AS INTEGER) AS horizon, metric, value "
                         "FROM _evaluation_batch")
        finally:
            conn.unregister("_evaluation_batch")


@dataclass
class EvaluationOutcome:
    """Everything one run produced (the CLI prints it)."""

    run_id: str
    label: str
    paths: dict[str, Path]
    tables: list[Any]
    walk_summary: dict[str, Any] = field(default_factory=dict)
    saved: bool = False
    summary: dict[str, Any] = field(default_factory=dict)


def run_evaluation(
    settings: Settings,
    *,
    variants: str = "current,option_a,option_b",
    formulas: list[str] | None = None,
    formula_files: list[Path] | None = None,
    universe: str | None = None,
    start: str | None = None,
    end: str | None = None,
    horizons: str = "1,5,10,20",
    quantiles: int = 5,
    exits: str = DEFAULT_EXITS,
    thresholds: str | None = None,
    walk: bool = True,
    train: int = 126,
    test: int = 42,
    out: Path | None = None,
    save: bool = False,
    otc_alignment: str = "published",
    placebo: bool = True,
    seed: int = 20240101,
    warmup: int = 260,
    cost_bps: float = DEFAULT_COST_BPS,
    cost_model: str = "fixed",
    min_names: int = 10,
    placebos: int = 200,
    bootstrap_reps: int = 1000,
    spa_reps: int = 1000,
    pbo_partitions: int = 16,
    executor: Executor | None = None,
    on_grid: Callable[[int], Callable[[], None]] | None = None,
) -> EvaluationOutcome:
    """Evaluate signal variants against forward returns; see ``darkpool evaluate --help``.

    ``on_grid(total)`` is called before the backtest grid and returns a callable that is
    called once per finished combination (a progress bar). ``executor`` runs the grid and
    the placebo chunks (None = in process).
    """
    if otc_alignment not in ("published", "week"):
        raise ConfigError(f"--otc-alignment must be published or week, got {otc_alignment!r}")
    horizon_list = check_horizons([int(h) for h in horizons.split(",") if h.strip()])
    if pbo_partitions < 2 or pbo_partitions % 2:
        raise ConfigError(f"--pbo-partitions must be an even number >= 2, got {pbo_partitions}")
    extra = formulas_as_variants(formulas or [], formula_files or [])
    names = [n.strip() for n in variants.split(",") if n.strip()]
    chosen: list[Variant] = [get_variant(n, extra) for n in names]
    chosen += [v for name, v in extra.items() if name not in names]
    if not chosen:
        raise ConfigError("nothing to evaluate: give --variants and/or --formula")
    if universe is None:
        symbols: list[str] | None = [normalise_ticker(t) for t in settings.tickers]
    elif universe.strip().lower() == "all":
        symbols = None
    else:
        symbols = [normalise_ticker(t) for t in universe.split(",") if t.strip()]
    frame, first, last, context = load_metrics(
        settings, symbols, to_date(start) if start else None, to_date(end) if end else None,
        warmup, horizon_list[-1] + 1, otc_alignment)
    weights = WeightsValues.from_settings(settings)
    params = {v.name: {"weights": weights} for v in chosen if "weights" in v.defaults}
    panel = build_panel(frame, chosen, start=pd.Timestamp(first), end=pd.Timestamp(last),
                        params=params, otc_alignment=otc_alignment)
    side_cost = side_costs(panel.shape, cost_bps=cost_bps, model=cost_model,
                           high=panel.high, low=panel.low, close=panel.close)
    result = evaluate_panel(panel, horizon_list, quantiles=quantiles, placebo=placebo,
                            seed=seed, side_cost=side_cost)

    grid_levels = parse_thresholds(thresholds)
    unknown = sorted(set(grid_levels) - {v.name for v in chosen})
    if unknown:
        raise ConfigError(f"--thresholds names unknown variant(s) {', '.join(unknown)}")
    tradable = {v.name: (v.buy, v.sell, v.neutral) for v in chosen
                if v.buy is not None or v.name in grid_levels}
    grid = trades = None
    grid_result = None
    curves: dict[str, pd.DataFrame] = {}
    rules = parse_exits(exits)
    if rules and tradable:
        engine = BacktestEngine(panel.dates, panel.symbols, panel.open, panel.close,
                                panel.in_window, side_cost=side_cost)
        points = grid_points({k: (b if b is not None else grid_levels[k][0][0], s, n)
                              for k, (b, s, n) in tradable.items()}, grid_levels, rules)
        neutrals = {v.name: v.neutral for v in chosen}
        advance = on_grid(len(points)) if on_grid is not None else None
        grid_result = run_grid(engine, panel.signals, neutrals, points, progress=advance,
                               executor=executor)
        grid = grid_result.table
        for name in tradable:
            first_point = next((p for p in points if p.variant == name), None)
            if first_point is not None:
                bt = engine.run(panel.signals[name], buy=first_point.buy,
                                sell=first_point.sell, rule=first_point.rule,
                                neutral=neutrals[name])
                curves[f"{name} {first_point.rule.name}"] = bt.daily
                trades = pd.concat([trades, bt.trades.assign(variant=name,
                                                             exit=first_point.rule.name)])
    walk_table = None
    walk_note: str | None = None
    if not walk:
        walk_note = "walk-forward event selection: not run (--no-walk-forward)"
    elif not tradable:
        walk_note = ("walk-forward event selection: not run (no variant has a buy threshold; "
                     "give --thresholds)")
    if walk and tradable:
        candidates = [Candidate(name, buy) for name, (b, _s, _n) in tradable.items()
                      for buy in ([p[0] for p in grid_levels.get(name, [])] or [b])
                      if buy is not None]
        try:
            walk_table = walk_forward(panel, candidates, horizon=horizon_list[0],
                                      train_sessions=train, test_sessions=test,
                                      side_cost=side_cost)
        except NoDataError as exc:
            walk_note = (f"walk-forward event selection: not run ({exc.message}; a window of "
                         f"at least {train + test} sessions, or smaller --train-sessions / "
                         "--test-sessions, would allow it)")
    config = AssessConfig(horizons=horizon_list, quantiles=quantiles, min_names=min_names,
                          train_sessions=train, test_sessions=test, placebos=placebos,
                          bootstrap_reps=bootstrap_reps, spa_reps=spa_reps,
                          pbo_partitions=pbo_partitions, seed=seed)
    assessment = assess(panel, side_cost, config, grid=grid_result, executor=executor,
                        insample=result)
    if walk_note:
        assessment.notes.append(walk_note)
    if rules and not tradable:
        assessment.notes.append("event backtests: not run (no variant has a buy threshold)")
    elif not rules:
        assessment.notes.append("event backtests: not run (--exits '')")

    run_id = f"eval-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    parameters: dict[str, Any] = {
        "variants": [v.name for v in chosen],
        "formulas": {n: v.description for n, v in extra.items()},
        "universe": symbols or "all", "start": str(first), "end": str(last),
        "horizons": list(horizon_list), "quantiles": quantiles, "exits": exits,
        "thresholds": thresholds, "otc_alignment": otc_alignment, "label": result.label,
        "placebo_seed": seed, "warmup": warmup, "weights": weights.__dict__,
        "train_sessions": train, "test_sessions": test, "code_version": __version__,
        "cost_bps_per_side": cost_bps, "cost_model": cost_model, "min_names": min_names,
        "placebos": placebos, "bootstrap_reps": bootstrap_reps, "spa_reps": spa_reps,
        "pbo_partitions": pbo_partitions,
    }
    out_dir = out or settings.output_dir / "evaluation" / run_id
    summary = build_summary(assessment, cost_bps=cost_bps, cost_model=cost_model,
                            synthetic=context.synthetic, label=result.label)
    paths = write_outputs(out_dir, result, panel, horizons=horizon_list, quantiles=quantiles,
                          grid=grid, curves=curves, trades=trades, walk=walk_table,
                          parameters=parameters, assessment=assessment, summary=summary,
                          context=context, costs_text=describe_costs(cost_bps, cost_model))
    walk_summary = summarize_walk_forward(walk_table) if walk_table is not None else {}
    if save:
        save_run(settings, run_id, parameters, all_numbers(result, grid, walk_table),
                 {"label": result.label, "walk_forward": walk_summary, **summary})
    return EvaluationOutcome(run_id=run_id, label=result.label, paths=paths,
                             tables=rich_summary(result, grid, assessment),
                             walk_summary=walk_summary if walk_table is not None
                             and not walk_table.empty else {},
                             saved=save, summary=summary)
