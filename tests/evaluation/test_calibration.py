"""Calibration: on markets where the signal is independent of returns the verdict says
`evidence` rarely; where returns load on the short ratio z (IC about 0.05) `current` gets
`evidence` almost always and its PBO is small. Same pure functions as `darkpool evaluate`."""

from __future__ import annotations

import numpy as np
import pytest
from eval_markets import score_market

from darkpool_analysis.evaluation.assess import AssessConfig, Assessment, assess
from darkpool_analysis.evaluation.backtest import (
    BacktestEngine,
    grid_points,
    parse_exits,
    run_grid,
)
from darkpool_analysis.evaluation.costs import side_costs
from darkpool_analysis.evaluation.returns import build_panel
from darkpool_analysis.signals import REGISTRY

VARIANTS = ("current", "option_a", "option_b")
SEEDS = range(40)
# verdicts depend on the HAC p-values, Holm and the net spread, not on the interval or
# placebo replications, so those are kept small here to keep the suite quick
CONFIG = AssessConfig(bootstrap_reps=50, spa_reps=50, placebos=0)


def _assess(ic: float, seed: int, variants: tuple[str, ...] = VARIANTS) -> Assessment:
    frame = score_market(300, 400, ic=ic, seed=seed)
    chosen = [REGISTRY[v] for v in variants]
    panel = build_panel(frame, chosen)
    cost = side_costs(panel.shape, cost_bps=5.0)
    engine = BacktestEngine(panel.dates, panel.symbols, panel.open, panel.close,
                            panel.in_window, side_cost=cost)
    points = grid_points({v.name: (v.buy, v.sell, v.neutral) for v in chosen}, None,
                         parse_exits("fixed:1,fixed:5"))
    grid = run_grid(engine, panel.signals, {v.name: v.neutral for v in chosen}, points)
    return assess(panel, cost, CONFIG, grid=grid)


@pytest.mark.slow
def test_noise_markets_rarely_give_evidence() -> None:
    evidence = {v: 0 for v in VARIANTS}
    for seed in SEEDS:
        result = _assess(0.0, 1000 + seed)
        assert result.mode == "cross_sectional" and result.design.kind == "walk_forward"
        for name, verdict in result.verdicts.items():
            assert verdict.verdict in ("evidence", "no_evidence")
            evidence[name] += verdict.verdict == "evidence"
    for name, count in evidence.items():
        assert count <= 0.10 * len(SEEDS), (name, count)


@pytest.mark.slow
def test_a_planted_signal_is_found_with_low_overfitting() -> None:
    """``current`` carries the planted signal, ``option_a`` (vw_flow_z) is unrelated noise
    (``option_b`` would carry 0.6 of the signal too). The grid's PBO is the probability that
    the configuration chosen in-sample ranks in the bottom half out of sample."""
    found, unrelated, pbos = 0, 0, []
    for seed in SEEDS:
        result = _assess(0.05, 2000 + seed, ("current", "option_a"))
        found += result.verdicts["current"].verdict == "evidence"
        unrelated += result.verdicts["option_a"].verdict == "evidence"
        assert result.pbo is not None
        pbos.append(result.pbo)
    assert found >= 0.9 * len(SEEDS), found
    assert unrelated <= 0.1 * len(SEEDS), unrelated
    assert float(np.median(pbos)) < 0.2 and float(np.mean(np.array(pbos) < 0.2)) >= 0.9, pbos
