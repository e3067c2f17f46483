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


# -- issue 10 items 5 and 7, issue 12 item 9 ---------------------------------------------------

def _caret(message: str) -> tuple[str, str]:
    """The expression line and the pointer line of a rejection message."""
    lines = message.split("\n")
    pointer = next(i for i, line in enumerate(lines) if line.lstrip().startswith("^"))
    return lines[pointer - 1], lines[pointer]


@pytest.mark.parametrize("expression, token", [
    ("z(nonexistent_col, 20)", "nonexistent_col"),
    ("1 + rank(nonexistent_col) * 2", "nonexistent_col"),
    ("clip(close, -1, 1) - volumes", "volumes"),
    ("exp(close)", "exp"),
])
def test_caret_sits_under_the_whole_offending_name(expression: str, token: str) -> None:
    with pytest.raises(FormulaError) as info:
        parse_formula(f"x={expression}")
    shown, pointer = _caret(info.value.message)
    start = shown.index(token)
    assert pointer.index("^") == start
    assert pointer[start:start + len(token)] == "^" * len(token)
    assert pointer[start + len(token)] != "^"
    assert f"position {expression.index(token)}" in info.value.message
    assert f"column {expression.index(token) + 1}" in pointer


@pytest.mark.parametrize("literal", ["1" + "0" * 400, "9" * 309, "1e400", "2.5e308"])
def test_number_beyond_float_range_is_a_clear_error(literal: str, metrics: Factory) -> None:
    spec = f"big=close + {literal}"
    with pytest.raises(FormulaError) as info:
        parse_formula(spec)
    assert "position 8" in info.value.message and "floating-point range" in info.value.message
    assert len(info.value.message.split("\n")[0]) < 300
    finite = parse_formula("ok=close + " + "9" * 300)  # large but finite: fine
    assert finite.evaluate(metrics(n_symbols=1, n_days=2)).notna().all()


def test_formula_count_and_length_are_bounded(tmp_path: Path) -> None:
    from darkpool_analysis.formulas import MAX_FORMULAS, MAX_SPEC_LENGTH, collect_formulas

    specs = [f"f{i}=z(short_volume, 20) + rank(close)" for i in range(200)]
    with pytest.raises(FormulaError, match=f"200 formulas given; the limit is {MAX_FORMULAS}"):
        collect_formulas(specs, [])
    assert len(collect_formulas(specs[:MAX_FORMULAS], [])) == MAX_FORMULAS
    with pytest.raises(FormulaError, match="characters long"):
        parse_formula("x=" + "close+" * 5000 + "1")
    with pytest.raises(FormulaError, match=f"limit is {MAX_SPEC_LENGTH}"):
        parse_formula("x" * 30_000)
    path = tmp_path / "many.toml"
    path.write_text("[formulas]\n" + "".join(f'f{i} = "close"\n' for i in range(21)))
    with pytest.raises(FormulaError, match="21 formulas given"):
        load_formula_file(path)
    few = tmp_path / "few.toml"
    few.write_text("[formulas]\n" + "".join(f'g{i} = "close"\n' for i in range(15)))
    with pytest.raises(FormulaError, match="25 formulas given"):
        collect_formulas(specs[:10], [few])


@pytest.mark.parametrize("command", [["evaluate"], ["sandbox", "GME"]])
def test_cli_overflowing_literal_exits_1_without_traceback(command: list[str]) -> None:
    from typer.testing import CliRunner

    from darkpool_analysis.cli import app

    result = CliRunner().invoke(app, [*command, "--formula", "big=close + " + "9" * 400])
    assert result.exit_code == 1, result.output
    assert "floating-point range" in result.output
    assert not isinstance(result.exception, OverflowError)
