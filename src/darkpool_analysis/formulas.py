"""Safe user formulas: ``name=<expression>`` over ``daily_metrics`` columns.

The expression is parsed with :mod:`ast` and every node is checked against a whitelist
before anything is evaluated; nothing is ever passed to ``eval`` or to SQL. Allowed:

* numbers, ``daily_metrics`` numeric column names (:data:`FORMULA_COLUMNS`),
* ``+ - * / **``, unary ``-``/``+``, comparisons ``< <= > >= == !=`` (1.0 / 0.0),
* functions ``z(x, window)``, ``rank(x)`` (cross-sectional percentile per date),
  ``log1p``, ``tanh``, ``sign``, ``abs``, ``clip(x, lo, hi)``, ``lag(x, n)``, ``mean(x, n)``
  and ``score(short_z)`` (the seed's 0-100 composite score with the row's
  ``lit_flow_imbalance_z``, ``return_z`` and ``otc_participation_z``).

Windows and lags are integer literals in 1..:data:`signals.MAX_WINDOW`; a lag is always
positive (a negative lag would read the future). Evaluation is vectorised on a dates x symbols
matrix: time operations run per symbol, ``rank`` per date. Division by zero and invalid logs
give NaN, never +-inf.

As of t, a formula uses only rows at or before t (every operation is trailing or same-date).

Examples
--------
>>> f = parse_formula("flow=z(short_buy_volume, 20) - lag(short_ratio, 1)")
>>> f.name, sorted(f.columns)
('flow', ['short_buy_volume', 'short_ratio'])
"""

from __future__ import annotations

import ast
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from darkpool_analysis.errors import ConfigError, DataFormatError
from darkpool_analysis.scoring import composite_score
from darkpool_analysis.signals import (
    DEFAULT_MIN_PERIODS,
    DEFAULT_WEIGHTS,
    MAX_WINDOW,
    PanelGrid,
    Scale,
    Variant,
    rolling_mean,
    rolling_z,
)

#: Longest expression accepted (characters), most elements (AST nodes) in one expression,
#: and most formulas in one request or command: each formula is a full dates x symbols
#: computation, so their number bounds the work one command (or web request) may ask for.
#: The web page reuses these limits.
MAX_EXPRESSION_LENGTH = 500
MAX_NODES = 200
MAX_FORMULAS = 20
#: Longest ``name=<expression>`` spec (name of at most 64 characters, ``=``, expression).
MAX_SPEC_LENGTH = 64 + 1 + MAX_EXPRESSION_LENGTH + 16

#: Numeric ``daily_metrics`` columns a formula may read (store.py migration 1).
FORMULA_COLUMNS: tuple[str, ...] = (
    "short_volume", "short_exempt_volume", "total_volume", "short_buy_volume",
    "finra_buy_volume", "short_sell_volume", "short_ratio", "short_buy_sell_ratio",
    "short_buy_sell_ratio_z", "short_ratio_z", "finra_buy_volume_z", "lit_buy_volume",
    "lit_sell_volume", "lit_total_volume", "lit_buy_ratio", "log_buy_sell",
    "lit_flow_imbalance", "lit_flow_imbalance_z", "lit_buy_ratio_z", "lit_coverage_pct",
    "vw_flow", "vw_flow_z", "combined_ratio", "open", "high", "low", "close", "vwap", "volume",
    "return_1d", "return_z", "range_pct", "otc_off_exchange_volume", "otc_participation_rate",
    "otc_participation_z", "otc_participation_delta", "accumulation_score",
    "accumulation_score_display", "confidence",
)

_SCORE_INPUTS = ("lit_flow_imbalance_z", "return_z", "otc_participation_z")
#: name -> (number of arguments, indexes of integer-window arguments)
FUNCTIONS: dict[str, tuple[int, tuple[int, ...]]] = {
    "z": (2, (1,)), "rank": (1, ()), "log1p": (1, ()), "tanh": (1, ()), "sign": (1, ()),
    "abs": (1, ()), "clip": (3, ()), "lag": (2, (1,)), "mean": (2, (1,)), "score": (1, ()),
}
_ALLOWED_CHARS = re.compile(r"[A-Za-z0-9_.+\-*/(),<>=!\s]")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
    ast.Pow: np.power,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
    ast.Eq: np.equal, ast.NotEq: np.not_equal,
}


class FormulaError(ConfigError):
    """A formula was rejected; the message names the offending token and its position."""


@dataclass(frozen=True)
class Formula:
    """A validated formula: its name, source text, parsed tree and the columns it reads."""

    name: str
    expression: str
    tree: ast.Expression
    columns: frozenset[str]
    buy: float | None = None
    sell: float | None = None
    scale: Scale = "raw"

    def evaluate(self, frame: pd.DataFrame) -> pd.Series:
        """Compute the formula on a long ``daily_metrics`` frame (Series aligned to it)."""
        missing = sorted(c for c in self.columns if c not in frame.columns)
        if missing:
            raise DataFormatError(f"formula {self.name!r} needs column(s) {', '.join(missing)}",
                                  source="daily_metrics frame", field=missing[0])
        grid = PanelGrid.from_frame(frame)
        evaluator = _Evaluator(frame, grid)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            wide = np.asarray(evaluator.visit(self.tree.body), dtype=float)
        if wide.ndim == 0:  # a constant expression
            wide = np.full(grid.shape, float(wide))
        wide = np.where(np.isfinite(wide), wide, np.nan)
        return pd.Series(grid.to_long(wide), index=frame.index, dtype=float, name=self.name)

    def as_variant(self) -> Variant:
        """Wrap as a registry :class:`Variant` so evaluation treats it like the built-ins."""
        def _compute(frame: pd.DataFrame) -> pd.Series:
            return self.evaluate(frame)

        _compute.__doc__ = f"User formula {self.expression}; as of t uses rows <= t only."
        neutral = 50.0 if self.scale == "display" else 0.0
        return Variant(self.name, f"formula: {self.expression}", tuple(sorted(self.columns)),
                       _compute, self.scale, self.buy, self.sell, neutral)


def _fail(expression: str, position: int, message: str, length: int = 1) -> FormulaError:
    """The error, with the expression and ``^`` marks under the offending token (``position``
    is the 0-based offset; the pointer line also gives the 1-based column)."""
    length = max(1, min(length, len(expression) - position))
    pointer = (f"\n  {expression}\n  {' ' * position}{'^' * length} column {position + 1}")
    return FormulaError(f"formula rejected at position {position}: {message}{pointer}",
                        hint=f"allowed: column names, numbers, + - * / ** and comparisons, "
                             f"functions {', '.join(FUNCTIONS)}")


def _int_literal(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _number_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return _number_literal(node.operand)
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


class _Checker(ast.NodeVisitor):
    """Walks the tree and raises on the first node outside the whitelist."""

    def __init__(self, expression: str, columns: frozenset[str]) -> None:
        self.expression = expression
        self.valid_columns = columns
        self.used: set[str] = set()
        self.nodes = 0

    def fail(self, node: ast.AST, message: str) -> FormulaError:
        target = node.func if isinstance(node, ast.Call) else node
        start = getattr(target, "col_offset", 0)
        end = getattr(target, "end_col_offset", None)
        same_line = getattr(target, "end_lineno", 1) == getattr(target, "lineno", 1)
        length = end - start if end is not None and same_line else 1
        return _fail(self.expression, start, message, length)

    def generic_visit(self, node: ast.AST) -> None:
        raise self.fail(node, f"{type(node).__name__} ({self._snippet(node)!r}) is not allowed")

    def _snippet(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.expression, node) or type(node).__name__

    def visit(self, node: ast.AST) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(node, f"expression has more than {MAX_NODES} elements")
        super().visit(node)

    def visit_Expression(self, node: ast.Expression) -> None:
        self.visit(node.body)

    def visit_Constant(self, node: ast.Constant) -> None:
        if type(node.value) not in (int, float):
            raise self.fail(node, f"only numbers are allowed as constants, got "
                                  f"{self._snippet(node)!r}")
        try:
            finite = math.isfinite(float(node.value))
        except OverflowError:
            finite = False
        if not finite:
            shown = self._snippet(node)
            shown = shown if len(shown) <= 24 else f"{shown[:20]}... ({len(shown)} digits)"
            raise self.fail(node, f"number {shown} is beyond the floating-point range; "
                                  "expected a finite number (at most about 1.8e308)")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id not in self.valid_columns:
            if node.id in FUNCTIONS:
                raise self.fail(node, f"function {node.id!r} must be called with arguments")
            raise self.fail(node, f"unknown name {node.id!r}; valid columns: "
                                  f"{', '.join(sorted(self.valid_columns))}")
        self.used.add(node.id)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if type(node.op) not in _BINOPS:
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        self.visit(node.left)
        self.visit(node.right)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if not isinstance(node.op, ast.USub | ast.UAdd):
            raise self.fail(node, f"unary {type(node.op).__name__} is not allowed")
        self.visit(node.operand)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op in node.ops:
            if type(op) not in _CMPOPS:
                raise self.fail(node, f"comparison {type(op).__name__} is not allowed")
        self.visit(node.left)
        for comparator in node.comparators:
            self.visit(comparator)

    def visit_Call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise self.fail(node, f"unknown function {self._snippet(node.func)!r}; valid: "
                                  f"{', '.join(FUNCTIONS)}")
        name = node.func.id
        arity, window_args = FUNCTIONS[name]
        if node.keywords or len(node.args) != arity:
            raise self.fail(node, f"{name}() takes exactly {arity} positional argument(s)")
        for index, arg in enumerate(node.args):
            if index in window_args:
                value = _int_literal(arg)
                if value is None or not 1 <= value <= MAX_WINDOW:
                    raise self.fail(arg, f"{name}() window/lag must be an integer literal in "
                                         f"1..{MAX_WINDOW}, got {self._snippet(arg)!r}")
            elif name == "clip" and index > 0:
                if not _number_literal(arg):
                    raise self.fail(arg, "clip() bounds must be numbers")
                self.visit(arg)
            else:
                self.visit(arg)
        if name == "score":
            self.used.update(_SCORE_INPUTS)


def parse_formula(spec: str, *, columns: frozenset[str] | None = None,
                  buy: float | None = None, sell: float | None = None,
                  scale: Scale = "raw") -> Formula:
    """Parse and validate ``"name=<expression>"``; raise :class:`FormulaError` if unsafe.

    ``columns`` restricts the readable columns (default :data:`FORMULA_COLUMNS`).
    """
    if len(spec) > MAX_SPEC_LENGTH:
        raise FormulaError(f"formula {spec[:40]!r}... is {len(spec):,} characters long; the "
                           f"limit is {MAX_SPEC_LENGTH} (an expression of at most "
                           f"{MAX_EXPRESSION_LENGTH})")
    if "=" not in spec:
        raise FormulaError(f"formula {spec[:60]!r} must look like name=<expression>")
    name, expression = (part.strip() for part in spec.split("=", 1))
    return compile_expression(name, expression, columns=columns, buy=buy, sell=sell,
                              scale=scale)


def compile_expression(name: str, expression: str, *, columns: frozenset[str] | None = None,
                       buy: float | None = None, sell: float | None = None,
                       scale: Scale = "raw") -> Formula:
    """Validate one named expression (see :func:`parse_formula`)."""
    if not _NAME_RE.match(name):
        raise FormulaError(f"formula name {name!r} must be letters, digits and _ "
                           "(not starting with a digit, at most 64 characters)")
    if not expression:
        raise FormulaError(f"formula {name!r} has an empty expression")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise FormulaError(f"formula {name!r} is {len(expression)} characters long; the limit "
                           f"is {MAX_EXPRESSION_LENGTH}")
    for position, char in enumerate(expression):
        if not _ALLOWED_CHARS.fullmatch(char):
            raise _fail(expression, position, f"character {char!r} is not allowed")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        position = max((exc.offset or 1) - 1, 0)
        raise _fail(expression, position, f"syntax error ({exc.msg})") from None
    checker = _Checker(expression, columns or frozenset(FORMULA_COLUMNS))
    checker.visit(tree)
    if buy is not None and sell is not None and buy <= sell:
        raise FormulaError(f"formula {name!r}: buy threshold {buy} must exceed sell {sell}")
    return Formula(name, expression, tree, frozenset(checker.used), buy, sell, scale)


def load_formula_file(path: Path) -> list[Formula]:
    """Read a TOML formula file.

    ``[formulas]`` maps names to expressions, or to tables with ``expr`` and optional ``buy``,
    ``sell`` and ``scale`` (``raw``/``z``/``display``)::

        [formulas]
        flow = "z(short_buy_volume, 20)"
        blend = { expr = "score(0.5 * finra_buy_volume_z)", buy = 65, sell = 35,
                  scale = "display" }
    """
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"formula file not found: {source}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataFormatError(f"invalid TOML: {exc}", source=source) from exc
    table = data.get("formulas")
    if not isinstance(table, dict) or not table:
        raise DataFormatError("expected a non-empty [formulas] table", source=source,
                              field="formulas")
    _check_count(len(table))
    formulas = []
    for name, entry in table.items():
        options: Mapping[str, Any] = {"expr": entry} if isinstance(entry, str) else entry
        if not isinstance(options, Mapping) or not isinstance(options.get("expr"), str):
            raise DataFormatError("expected a string expression or a table with 'expr'",
                                  source=source, field=f"formulas.{name}")
        unknown = set(options) - {"expr", "buy", "sell", "scale"}
        if unknown:
            raise DataFormatError(f"unknown key(s) {', '.join(sorted(unknown))}; valid: expr, "
                                  "buy, sell, scale", source=source, field=f"formulas.{name}")
        scale = options.get("scale", "raw")
        if scale not in ("raw", "z", "display"):
            raise DataFormatError(f"scale must be raw, z or display, got {scale!r}",
                                  source=source, field=f"formulas.{name}.scale")
        try:
            buy = None if options.get("buy") is None else float(options["buy"])
            sell = None if options.get("sell") is None else float(options["sell"])
        except (TypeError, ValueError):
            raise DataFormatError("buy/sell must be numbers", source=source,
                                  field=f"formulas.{name}") from None
        formulas.append(compile_expression(name, options["expr"], buy=buy, sell=sell,
                                           scale=scale))
    return formulas


class _Evaluator:
    """Evaluates a checked tree on dates x symbols matrices (axis 0 = time, axis 1 = symbol)."""

    def __init__(self, frame: pd.DataFrame, grid: PanelGrid) -> None:
        self.frame = frame
        self.grid = grid
        self.cache: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        if name not in self.cache:
            self.cache[name] = self.grid.column(self.frame, name)
        return self.cache[name]

    def matrix(self, value: Any) -> np.ndarray:
        arr = np.asarray(value, dtype=float)
        return np.broadcast_to(arr, self.grid.shape) if arr.ndim == 0 else arr

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return self.column(node.id)
        if isinstance(node, ast.UnaryOp):
            operand = self.visit(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](self.visit(node.left), self.visit(node.right))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node.func.id, node.args)
        raise FormulaError(f"cannot evaluate {type(node).__name__}")  # unreachable after check

    def compare(self, node: ast.Compare) -> np.ndarray:
        left = self.visit(node.left)
        result: Any = True
        missing: Any = False
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.visit(comparator)
            result = result & _CMPOPS[type(op)](left, right)
            missing = missing | np.isnan(left) | np.isnan(right)
            left = right
        return np.where(missing, np.nan, np.asarray(result, dtype=float))

    def call(self, name: str, args: list[ast.expr]) -> np.ndarray:
        if name in ("z", "lag", "mean"):
            values = self.matrix(self.visit(args[0]))
            window = _int_literal(args[1])
            assert window is not None  # guaranteed by the checker
            if name == "z":
                return rolling_z(values, window, min(DEFAULT_MIN_PERIODS, window))
            if name == "mean":
                return rolling_mean(values, window, window)
            shifted = np.full(values.shape, np.nan)
            if window < len(values):
                shifted[window:] = values[:-window]
            return shifted
        if name == "rank":
            values = self.matrix(self.visit(args[0]))
            return pd.DataFrame(values).rank(axis=1, pct=True).to_numpy()
        if name == "clip":
            lo, hi = (self.visit(a) for a in args[1:])
            return np.clip(self.visit(args[0]), min(lo, hi), max(lo, hi))
        if name == "score":
            return self.score(self.matrix(self.visit(args[0])))
        unary: dict[str, Callable[[Any], Any]] = {
            "log1p": np.log1p, "tanh": np.tanh, "sign": np.sign, "abs": np.abs}
        return unary[name](self.visit(args[0]))

    def score(self, short_z: np.ndarray) -> np.ndarray:
        """The seed's display score on matrices (weights = settings defaults)."""
        inputs = [self.column(c).ravel() for c in _SCORE_INPUTS]
        flat = composite_score(short_z.ravel(), *inputs, weights=DEFAULT_WEIGHTS)
        return ((flat + 1.0) * 50.0).reshape(short_z.shape)


def _check_count(count: int) -> None:
    if count > MAX_FORMULAS:
        raise FormulaError(f"{count:,} formulas given; the limit is {MAX_FORMULAS} per command "
                           "(each one is computed over every symbol and session)",
                           hint="split them over several runs, or put the ones you compare "
                                "in one formula file")


def collect_formulas(specs: Iterable[str], files: Iterable[Path]) -> dict[str, Formula]:
    """``--formula`` strings and ``--formula-file`` files -> formulas keyed by name; a name
    defined twice is an error."""
    specs = list(specs)
    _check_count(len(specs))
    formulas = [parse_formula(s) for s in specs]
    for path in files:
        formulas.extend(load_formula_file(path))
        _check_count(len(formulas))
    out: dict[str, Formula] = {}
    for formula in formulas:
        if formula.name in out:
            raise FormulaError(f"formula name {formula.name!r} is defined twice")
        out[formula.name] = formula
    return out


def formulas_as_variants(specs: list[str], files: list[Path]) -> dict[str, Variant]:
    """``--formula`` strings and ``--formula-file`` files -> variants keyed by name."""
    return {name: f.as_variant() for name, f in collect_formulas(specs, files).items()}


__all__ = ["FORMULA_COLUMNS", "FUNCTIONS", "MAX_EXPRESSION_LENGTH", "MAX_FORMULAS", "MAX_NODES",
           "MAX_SPEC_LENGTH", "Formula", "FormulaError", "compile_expression",
           "formulas_as_variants", "load_formula_file", "parse_formula"]
