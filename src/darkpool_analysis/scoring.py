"""The seed's composite accumulation score and rolling z-score, shared by every layer.

One implementation of the formula in ``metrics-spec.md`` ("Composite score"): the build, the
sandbox and the signal lab all call these, so a formula change happens in one place (and bumps
:data:`INFERENCE_VERSION`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

#: Bumped whenever a stored formula (metrics, score, confidence) changes meaning.
INFERENCE_VERSION = "2026.11.1"

ACCUMULATION_THRESHOLD = 70.0
DISTRIBUTION_THRESHOLD = 30.0


class ScoreWeights(Protocol):
    """The settings fields the score reads (``Settings`` satisfies it)."""

    composite_w_short: float
    composite_w_lit: float
    composite_w_price: float
    intensity_scale_min: float
    intensity_scale_max: float


def rolling_zscore(series: pd.Series, window: int, min_periods: int) -> pd.Series:
    """``(x - rolling mean) / rolling population std`` exactly as the seed computes it.

    Uses pandas ``rolling(window, min_periods)``: a window with fewer than ``min_periods``
    non-null values gives NaN; a zero std gives NaN (pandas returns an exact 0 for constant
    windows, and 0/0 or x/0 are mapped to NaN rather than +-inf).
    """
    values = pd.to_numeric(series, errors="coerce").astype(float)
    rolling = values.rolling(window=window, min_periods=min_periods)
    std = rolling.std(ddof=0)
    z = (values - rolling.mean()) / std.where(std > 0)
    return z


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


def composite_score(
    short_z: np.ndarray | pd.Series,
    lit_z: np.ndarray | pd.Series | None,
    price_z: np.ndarray | pd.Series | None,
    otc_z: np.ndarray | pd.Series | None,
    weights: ScoreWeights,
) -> np.ndarray:
    """Accumulation score in [-1, 1]; NaN where ``short_z`` is NaN, other NaNs count as 0.

    ``raw = w_short*tanh(0.5*short_z) + w_lit*tanh(0.5*lit_z) + w_price*tanh(0.3*price_z)``,
    ``intensity = min + (max - min) * sigmoid(otc_z)``, ``score = clip(raw * intensity, -1, 1)``.
    """
    short = _floats(short_z)

    def _zero_filled(values: np.ndarray | pd.Series | None) -> np.ndarray | float:
        # None (no such data at all) is the scalar 0.0: the same bits as an array of zeros
        # in every operation below, without allocating or computing one.
        if values is None:
            return 0.0
        arr = _floats(values)
        return np.where(np.isnan(arr), 0.0, arr)

    lit, price, otc = _zero_filled(lit_z), _zero_filled(price_z), _zero_filled(otc_z)
    raw = (
        weights.composite_w_short * np.tanh(short * 0.5)
        + weights.composite_w_lit * np.tanh(lit * 0.5)
        + weights.composite_w_price * np.tanh(price * 0.3)
    )
    span = weights.intensity_scale_max - weights.intensity_scale_min
    intensity = weights.intensity_scale_min + span * _sigmoid(otc)
    return np.clip(raw * intensity, -1.0, 1.0)  # NaN short_z stays NaN through clip


def _floats(values: np.ndarray | pd.Series) -> np.ndarray:
    """``values`` as a float64 array (non-numbers -> NaN); float arrays pass through."""
    arr = np.asarray(values)
    if arr.dtype == np.float64:
        return arr
    return np.asarray(pd.to_numeric(pd.Series(arr), errors="coerce"), dtype=float)


def score_display(
    short_z: pd.Series,
    lit_z: pd.Series | None,
    price_z: pd.Series | None,
    otc_z: pd.Series | None,
    weights: ScoreWeights,
) -> pd.Series:
    """The seed's ``_compute_score_display``: ``(score + 1) * 50`` on a 0-100 scale."""
    score = composite_score(short_z, lit_z, price_z, otc_z, weights)
    return pd.Series((score + 1.0) * 50.0, index=short_z.index, dtype=float)


def zone_label(display: np.ndarray | pd.Series) -> np.ndarray:
    """'accumulation' (>= 70), 'distribution' (<= 30), 'neutral', or None where NaN."""
    values = np.asarray(display, dtype=float)
    labels = np.where(values >= ACCUMULATION_THRESHOLD, "accumulation",
                      np.where(values <= DISTRIBUTION_THRESHOLD, "distribution", "neutral"))
    out = labels.astype(object)
    out[np.isnan(values)] = None
    return out
