"""Trading costs: a fixed cost per side, optionally plus half of an estimated bid-ask spread.

``--cost-model fixed``: every trade pays ``cost_bps`` (per side: once to enter, once to exit).
``--cost-model chl``: each trade also pays half of the name's relative spread estimated from
its own daily close, high and low (Abdi & Ranaldo 2017, "A Simple Estimation of Bid-Ask
Spreads from Daily Close, High, and Low Prices", RFS 30(12)):

    eta_t = (ln H_t + ln L_t) / 2,  c_t = ln C_t
    s2_t  = 4 (c_t - eta_t)(c_t - eta_{t+1})        (a pair of days t, t+1)
    S     = sqrt(max(mean of s2 over a window of pairs, 0))

The pair (t, t+1) is complete at the close of ``t+1``. The estimate used for a trade executed
during session ``r`` averages the pairs that ended by the close of ``r - 1`` (the signal day),
so no cost uses data from the trade date or later. Names without an estimate yet (warm-up,
missing high/low) get the median estimate of that date, or none when no name has one.
"""

from __future__ import annotations

import numpy as np

from darkpool_analysis.errors import ConfigError

COST_MODELS = ("fixed", "chl")
DEFAULT_COST_BPS = 5.0
CHL_WINDOW = 21
CHL_MIN_PAIRS = 5


def _rolling_mean(values: np.ndarray, window: int, min_count: int) -> np.ndarray:
    """Trailing mean down each column over ``window`` rows, ignoring NaN (cumulative sums)."""
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    zeros = np.zeros((1, values.shape[1]))
    total = np.vstack([zeros, np.cumsum(filled, axis=0)])
    count = np.vstack([zeros, np.cumsum(finite, axis=0)])
    hi = np.arange(1, len(values) + 1)
    lo = np.maximum(hi - window, 0)
    n = count[hi] - count[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total[hi] - total[lo]) / n
    return np.where(n >= min_count, mean, np.nan)


def chl_spread(high: np.ndarray, low: np.ndarray, close: np.ndarray, *,
               window: int = CHL_WINDOW, min_pairs: int = CHL_MIN_PAIRS) -> np.ndarray:
    """Abdi-Ranaldo relative spread per (date, name) known at that date's close (NaN = none).

    Row ``t`` averages the two-day estimates of the pairs ending at rows ``t-window+1..t``.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (high > 0) & (low > 0) & (close > 0) & (high >= low)
        eta = np.where(ok, (np.log(np.where(ok, high, 1.0))
                            + np.log(np.where(ok, low, 1.0))) / 2, np.nan)
        c = np.where(ok, np.log(np.where(ok, close, 1.0)), np.nan)
    pair = np.full(close.shape, np.nan)  # pair[t] = pair (t-1, t), complete at the close of t
    pair[1:] = 4.0 * (c[:-1] - eta[:-1]) * (c[:-1] - eta[1:])
    mean = _rolling_mean(pair, window, min_pairs)
    return np.sqrt(np.maximum(mean, 0.0), where=np.isfinite(mean),
                   out=np.full(mean.shape, np.nan))


def side_costs(shape: tuple[int, int], *, cost_bps: float = DEFAULT_COST_BPS,
               model: str = "fixed", high: np.ndarray | None = None,
               low: np.ndarray | None = None, close: np.ndarray | None = None) -> np.ndarray:
    """Cost per side (a fraction) of a trade executed during session ``r``, dates x names.

    ``fixed``: ``cost_bps / 1e4`` everywhere. ``chl``: plus half the spread estimated as of the
    close of ``r - 1`` (see the module docstring).
    """
    if model not in COST_MODELS:
        raise ConfigError(f"--cost-model must be one of {', '.join(COST_MODELS)}, got {model!r}")
    if not np.isfinite(cost_bps) or cost_bps < 0 or cost_bps > 1000:
        raise ConfigError(f"--cost-bps must be between 0 and 1000, got {cost_bps}")
    base = np.full(shape, cost_bps / 1e4)
    if model == "fixed":
        return base
    if high is None or low is None or close is None:
        raise ConfigError("--cost-model chl needs high, low and close prices")
    spread = chl_spread(high, low, close)
    known = np.full(shape, np.nan)
    known[1:] = spread[:-1]  # trade in session r uses the estimate of r - 1
    has = np.isfinite(known)
    counts = has.sum(axis=1)
    with np.errstate(invalid="ignore"):
        sorted_rows = np.sort(np.where(has, known, np.inf), axis=1)
    mid_lo = np.take_along_axis(sorted_rows, np.maximum((counts - 1) // 2, 0)[:, None], 1)[:, 0]
    mid_hi = np.take_along_axis(sorted_rows, np.maximum(counts // 2, 0)[:, None], 1)[:, 0]
    median = np.where(counts > 0, (mid_lo + mid_hi) / 2, 0.0)
    filled = np.where(has, known, median[:, None])
    return base + 0.5 * filled


def describe_costs(cost_bps: float, model: str) -> str:
    """One phrase for reports: what every trade pays."""
    text = f"{cost_bps:g} bps per side"
    if model == "chl":
        text += (" plus half the name's close-high-low spread estimate (Abdi & Ranaldo 2017, "
                 f"{CHL_WINDOW}-session window, data up to the signal day)")
    return text
