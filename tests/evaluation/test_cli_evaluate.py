"""``darkpool evaluate`` end to end on a real DuckDB file, plus walk-forward and the report."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from eval_markets import metrics_frame, planted_market
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.evaluation.returns import EvalPanel
from darkpool_analysis.evaluation.walkforward import (
    Candidate,
    summarize_walk_forward,
    walk_forward,
)
from darkpool_analysis.store import open_writer


@pytest.fixture
def metrics_db(db_path: Path) -> Path:
    frame = metrics_frame(planted_market(n_days=230, n_symbols=40, seed=5))
    with open_writer(db_path) as writer:
        writer.replace_metrics(frame)
    return db_path


def _counts(db_path: Path) -> tuple[int, int]:
    with duckdb.connect(str(db_path), read_only=True) as conn:
        runs = conn.execute("SELECT count(*) FROM evaluation_runs").fetchone()
        results = conn.execute("SELECT count(*) FROM evaluation_results").fetchone()
    assert runs is not None and results is not None
    return int(runs[0]), int(results[0])


def test_evaluate_end_to_end(metrics_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["evaluate", "--variants", "short_buy_sell_ratio_z,current", "--universe", "all",
            "--formula", "neg=-short_buy_sell_ratio_z", "--horizons", "1,5",
            "--exits", "fixed:5,first_dist", "--thresholds", "current=60/40,70/30",
            "--train-sessions", "60", "--test-sessions", "20", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "point-in-time" in result.output
    numbers = pd.read_csv(out / "evaluation_numbers.csv")
    ic = numbers[(numbers["section"] == "ic") & (numbers["metric"] == "mean")
                 & (numbers["horizon"] == 1)].set_index("variant")["value"]
    assert ic["short_buy_sell_ratio_z"] > 0.3 and ic["neg"] < -0.3
    assert abs(ic["placebo:short_buy_sell_ratio_z"]) < 0.05
    assert {"backtest", "walk_forward", "events", "turnover"} <= set(numbers["section"])
    html = (out / "report.html").read_text(encoding="utf-8")
    # out-of-sample IC, in-sample IC, quantiles, spread, equity
    assert html.count("data:image/png;base64,") == 5 and "point-in-time" in html
    sections = ["<h2>Verdicts", "<h2>Data and coverage", "<h2>Timing and costs",
                "<h2>Out-of-sample", "<h2>Corrections", "<h2>In-sample detail"]
    positions = [html.index(s) for s in sections]
    assert positions == sorted(positions)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert not re.search(r">\s*[+-]?nan\s*<", text, flags=re.IGNORECASE)
    assert not re.search(r"\de-\d", text)  # no raw exponents such as -2.621e-19
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["mode"] == "cross_sectional" and summary["cost_bps_per_side"] == 5.0
    assert summary["synthetic"] is False
    assert isinstance(summary["n_trials"], int) and summary["n_trials"] == 4 + 2 + 3 * 2
    # (current: 2 levels x 2 exits; short_buy_sell_ratio_z: 1 x 2; neg has no buy level;
    # plus a spread per variant x horizon)
    assert set(summary["variants"]) == {"short_buy_sell_ratio_z", "current", "neg"}
    planted = summary["variants"]["short_buy_sell_ratio_z"]
    assert set(planted) >= {"verdict", "reason", "oos_ic_mean", "oos_ic_ci95",
                            "oos_ic_pvalue_adjusted", "oos_net_spread_bps_per_day",
                            "deflated_sharpe"}
    assert planted["verdict"] == "evidence" and planted["reason"].startswith("evidence:")
    lo, hi = planted["oos_ic_ci95"]
    assert lo < planted["oos_ic_mean"] < hi and planted["oos_ic_pvalue_adjusted"] < 0.05
    assert summary["variants"]["neg"]["verdict"] == "no_evidence"
    assert (summary["pbo"] is None) == ("pbo_reason" in summary)
    assert (summary["spa_pvalue"] is None) == ("spa_reason" in summary)
    factor = pd.read_parquet(out / "alphalens_factor_current.parquet")
    assert factor.index.names == ["date", "asset"]
    assert {"1D", "5D", "factor", "factor_quantile"} <= set(factor.columns)
    assert _counts(metrics_db) == (0, 0)  # nothing written without --save


def test_evaluate_save_and_lookahead_label(metrics_db: Path, tmp_path: Path) -> None:
    args = ["evaluate", "--variants", "finra_buy_volume_z", "--universe", "all",
            "--horizons", "1", "--exits", "", "--no-walk-forward", "--otc-alignment", "week",
            "--out", str(tmp_path / "r"), "--save"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "LOOK-AHEAD" in result.output
    runs, results = _counts(metrics_db)
    assert runs == 1 and results > 10
    with duckdb.connect(str(metrics_db), read_only=True) as conn:
        params = conn.execute("SELECT parameters->>'otc_alignment' FROM evaluation_runs").fetchone()
    assert params is not None and params[0] == "week"
    assert "LOOK-AHEAD" in (tmp_path / "r" / "report.html").read_text(encoding="utf-8")


def test_evaluate_rejects_bad_input(metrics_db: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["evaluate", "--variants", "nope", "--universe", "all"])
    assert bad.exit_code == 1 and "valid:" in bad.output
    unsafe = runner.invoke(app, ["evaluate", "--formula", "x=__import__(os)", "--universe",
                                 "all"])
    assert unsafe.exit_code == 1 and "__import__" in unsafe.output
    assert _counts(metrics_db) == (0, 0)


def test_walk_forward_picks_the_informative_variant() -> None:
    market = planted_market(n_days=260, n_symbols=80, seed=9)
    noise = np.random.default_rng(4).normal(size=market.signal.shape)
    panel = EvalPanel(market.dates, market.symbols, market.open, market.close,
                      {"good": market.signal, "noise": noise},
                      np.ones(len(market.dates), dtype=bool))
    candidates = [Candidate("good", 1.0), Candidate("noise", 1.0), Candidate("noise", 0.5)]
    windows = walk_forward(panel, candidates, horizon=1, train_sessions=100,
                           test_sessions=40)
    assert len(windows) == 4
    assert (windows["variant"] == "good").all()
    assert (windows["test_start"] > windows["train_end"]).all()
    summary = summarize_walk_forward(windows)
    assert summary["oos_mean_excess"] > 0.005 and summary["oos_ic"] > 0.2


def test_cli_mirrors_backtest_exit_defaults() -> None:
    from darkpool_analysis.cli import evaluate_cmd
    from darkpool_analysis.evaluation import backtest

    assert evaluate_cmd.DEFAULT_EXITS == backtest.DEFAULT_EXITS
    assert evaluate_cmd.EXIT_HELP == backtest.EXIT_HELP


def test_synthetic_owed_and_unknown_tickers_are_said(metrics_db: Path, tmp_path: Path) -> None:
    from darkpool_analysis.store import META_SYNTHETIC
    from darkpool_analysis.synthetic import SYNTHETIC_LABEL

    with open_writer(metrics_db) as writer:
        writer.set_meta({META_SYNTHETIC: "true"})
        with writer.transaction() as conn:
            conn.execute("INSERT INTO metrics_owed VALUES ('S001', DATE '2022-03-01', "
                         "'prices_daily', now())")
    out = tmp_path / "syn"
    args = ["evaluate", "--variants", "short_buy_sell_ratio_z", "--universe", "S001,S002,ZZZZ",
            "--horizons", "1", "--exits", "", "--placebos", "0", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["synthetic"] is True and summary["synthetic_label"] == SYNTHETIC_LABEL
    assert summary["mode"] == "time_series"  # two names per date < --min-names 10
    html = unescape((out / "report.html").read_text(encoding="utf-8"))
    assert SYNTHETIC_LABEL in html
    assert "daily_metrics is out of date" in html
    assert "left out): ZZZZ" in html
    assert "not run (--placebos 0)" in html and "event backtests: not run (--exits '')" in html
    unknown = CliRunner().invoke(app, ["evaluate", "--universe", "XS001", "--out",
                                       str(tmp_path / "none")])
    assert unknown.exit_code == 1
    assert "XS001" in unknown.output and "did you mean" in unknown.output
    assert "did you mean S001" in unknown.output
    assert not (tmp_path / "none").exists()


def test_executor_local_pool_gives_the_serial_numbers(metrics_db: Path, tmp_path: Path) -> None:
    base = ["evaluate", "--variants", "short_buy_sell_ratio_z,current", "--universe", "all",
            "--horizons", "1,5", "--exits", "fixed:5,first_dist", "--train-sessions", "60",
            "--test-sessions", "20", "--bootstrap-reps", "100", "--spa-reps", "100"]
    summaries, tables = [], []
    for spec in ("serial", "local:2"):
        out = tmp_path / spec.replace(":", "_")
        result = CliRunner().invoke(app, [*base, "--executor", spec, "--out", str(out)])
        assert result.exit_code == 0, result.output
        summaries.append(json.loads((out / "summary.json").read_text(encoding="utf-8")))
        oos = pd.read_parquet(out / "out_of_sample.parquet")
        assert oos["placebo_draws"].eq(200).all()
        tables.append(oos)
    assert summaries[0] == summaries[1]
    pd.testing.assert_frame_equal(tables[0], tables[1])  # placebo percentiles included
    bad = CliRunner().invoke(app, [*base, "--executor", "cluster", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 1 and "local[:N]" in bad.output
