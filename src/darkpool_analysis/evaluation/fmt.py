"""Numbers formatted for people: 3 significant digits, thousands separators, %, bps, p-values
(no raw exponents such as ``-2.621e-19``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def fmt_num(value: Any, digits: int = 3) -> str:
    """3 significant digits, thousands separators, no exponent for everyday sizes."""
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    a = abs(v)
    if a < 1e-12:
        return "0"
    if a >= 10 ** digits:
        return f"{v:,.0f}"
    if a < 1e-6:
        return "~0"  # below a millionth: noise for every quantity the lab reports
    decimals = digits - 1 - math.floor(math.log10(a))
    return f"{v:,.{max(decimals, 0)}f}"


def fmt_pct(value: Any) -> str:
    """A fraction as a percentage with 3 significant digits."""
    text = fmt_num(None if value is None else float(value) * 100)
    return text if text == "n/a" else text + "%"


def fmt_bps(value: Any) -> str:
    """A value already in basis points."""
    text = fmt_num(value)
    return text if text == "n/a" else text + " bps"


def fmt_p(value: Any) -> str:
    """A p-value: ``<0.001`` below a thousandth."""
    if value is None or not np.isfinite(float(value)):
        return "n/a"
    return "<0.001" if float(value) < 0.001 else fmt_num(value)


def fmt_ci(lo: Any, hi: Any, fmt: Callable[[Any], str] = fmt_num) -> str:
    """``lo..hi`` or n/a."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a"
    return f"{fmt(lo)} .. {fmt(hi)}"
