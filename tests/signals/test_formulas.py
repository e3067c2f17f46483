"""User formulas: results against plain pandas, and every unsafe input rejected clearly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis.errors import DataFormatError
from darkpool_analysis.formulas import (
    FormulaError,
    formulas_as_variants,
    load_formula_file,
    parse_formula,
)
from darkpool_analysis.scoring import rolling_zscore
from darkpool_analysis.signals import compute_variant

Factory = Callable[..., pd.DataFrame]


def test_time_operations_run_per_symbol(metrics: Factory) -> None:
    frame = metrics(n_symbols=3, n_days=40, seed=4)
    formula = parse_formula("f = z(short_sell_volume, 10) * 2 + lag(close, 2) - mean(open, 3)")
    result = formula.evaluate(frame)
    for _symbol, group in frame.groupby("symbol"):
        expected = (rolling_zscore(group["short_sell_volume"], 10, 5) * 2
                    + group["close"].shift(2) - group["open"].rolling(3).mean())
        np.testing.assert_allclose(result.loc[group.index], expected, rtol=1e-12)


def test_rank_is_cross_sectional_per_date(metrics: Factory) -> None:
    frame = metrics(n_symbols=5, n_days=4)
    result = parse_formula("r=rank(close)").evaluate(frame)
    expected = frame.groupby("date")["close"].rank(pct=True)
    np.testing.assert_allclose(result, expected)


def test_functions_and_comparisons(metrics: Factory) -> None:
    frame = metrics(n_symbols=2, n_days=5)
    out = parse_formula("c = (close > open) + clip(return_z, -1, 1) * 0 + abs(-1) "
                        "+ sign(-2) + tanh(0) + log1p(0)").evaluate(frame)
    np.testing.assert_allclose(out, (frame["close"] > frame["open"]).astype(float))
    zero_div = parse_formula("d = close / (open - open)").evaluate(frame)
    assert zero_div.isna().all()  # never +-inf


def test_score_function_equals_current_variant(metrics: Factory) -> None:
    frame = metrics(n_symbols=3, n_days=10)
    out = parse_formula("s = score(short_buy_sell_ratio_z)").evaluate(frame)
    np.testing.assert_allclose(out, compute_variant(frame, "current"), rtol=1e-12)


def test_formula_at_t_ignores_later_rows(metrics: Factory) -> None:
    frame = metrics(n_symbols=4, n_days=60)
    formula = parse_formula("f = rank(z(short_buy_volume, 20)) + lag(mean(close, 5), 3)")
    cut = frame[frame["date"] <= frame["date"].sort_values().unique()[40]]
    pd.testing.assert_series_equal(formula.evaluate(frame).loc[cut.index],
                                   formula.evaluate(cut))


@pytest.mark.parametrize(("spec", "needle"), [
    ("x='; DROP TABLE daily_metrics; --", "character \"'\""),
    ("x=close; DROP TABLE daily_metrics", "character ';'"),
    ("x=__import__('os')", "character \"'\""),
    ("x=__import__(os)", "unknown function '__import__'"),
    ("x=close.__class__", "Attribute"),
    ("x=close[0]", "character '['"),
    ("x=lambda: close", "character ':'"),
    ("x=volumes * 2", "unknown name 'volumes'; valid columns:"),
    ("x=exp(close)", "unknown function 'exp'"),
    ("x=z(close, 5000)", "1..2520"),
    ("x=z(close, 2.5)", "integer literal"),
    ("x=z(close, open)", "integer literal"),
    ("x=lag(close, -1)", "integer literal"),
    ("x=lag(close, 0)", "1..2520"),
    ("x=mean(close)", "exactly 2"),
    ("x=clip(close, open, 1)", "clip() bounds must be numbers"),
    ("x=close if open else 1", "IfExp"),
    ("x=close and open", "BoolOp"),
    ("x=True", "only numbers"),
    ("x=close % 2", "character '%'"),
    ("x=close ** ", "syntax error"),
    ("x=" + "close + " * 80 + "1", "characters long"),
    ("1x=close", "formula name"),
    ("noequals", "name=<expression>"),
])
def test_unsafe_or_invalid_formulas_are_rejected(spec: str, needle: str) -> None:
    with pytest.raises(FormulaError) as info:
        parse_formula(spec)
    assert needle in info.value.message


def test_rejection_names_the_position() -> None:
    with pytest.raises(FormulaError) as info:
        parse_formula("x=close + open.real")
    assert "position 8" in info.value.message  # 0-based offset of "open"
    assert "^" in info.value.message


def test_formula_file(tmp_path: Path, metrics: Factory) -> None:
    path = tmp_path / "f.toml"
    path.write_text('[formulas]\nflow = "z(short_buy_volume, 20)"\n'
                    'blend = { expr = "score(0.5 * finra_buy_volume_z)", buy = 65, sell = 35, '
                    'scale = "display" }\n', encoding="utf-8")
    formulas = load_formula_file(path)
    assert [f.name for f in formulas] == ["flow", "blend"]
    variants = formulas_as_variants(["extra=close"], [path])
    assert variants["blend"].buy == 65 and variants["blend"].neutral == 50.0
    assert variants["extra"].compute(metrics(n_symbols=1, n_days=3)).notna().all()
    path.write_text('[formulas]\nbad = { expr = "close", colour = "red" }\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"formulas\.bad"):
        load_formula_file(path)
    path.write_text("[formulas\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="invalid TOML"):
        load_formula_file(path)
    with pytest.raises(FormulaError, match="defined twice"):
        formulas_as_variants(["a=close", "a=open"], [])
