"""The signal-variant registry: named, documented signal definitions over ``daily_metrics``.

Data contract
-------------
Every variant takes a *long* ``daily_metrics``-shaped frame (one row per ``(symbol, date)``,
columns as in ``store.py`` migration 1 and ``metrics-spec.md``) and returns a float
``pd.Series`` aligned to the frame's index. Time-series operations run per symbol over the
frame's session grid (the sorted union of its dates), vectorised on a dates x symbols matrix:
no per-symbol Python loops.

Point in time
-------------
Each variant's docstring states what data it may use as of date ``t``. None uses anything
after ``t``; ``tests/signals`` proves it by truncating the input after ``t``.

FINRA short volume (``short_buy_volume``, "B") is a *proxy* for dealer-filled customer buying
(SqueezeMetrics, "Short is Long"), never observed buying, and it is not short interest.

Adding a variant = a function + a :data:`REGISTRY` entry + a test + a row in
``docs/signal-lab.md``.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"symbol": ["A", "A"], "date": pd.to_datetime(["2024-01-02",
...     "2024-01-03"]), "short_buy_sell_ratio_z": [1.0, -0.5]})
>>> compute_variant(frame, "short_buy_sell_ratio_z").tolist()
[1.0, -0.5]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, DataFormatError
from darkpool_analysis.scoring import (
    ACCUMULATION_THRESHOLD,
    DISTRIBUTION_THRESHOLD,
    score_display,
)

Scale = Literal["display", "z", "raw"]
SignalFunc = Callable[..., pd.Series]

#: Longest rolling window any variant or formula may ask for (10 years of sessions).
MAX_WINDOW = 2520


class UnknownVariantError(ConfigError):
    """A variant name that is not in the registry (the message lists the valid names)."""


@dataclass(frozen=True)
class WeightsValues:
    """Composite-score weights (satisfies ``scoring.ScoreWeights``); defaults = ``Settings``."""

    composite_w_short: float = Settings.model_fields["composite_w_short"].default
    composite_w_lit: float = Settings.model_fields["composite_w_lit"].default
    composite_w_price: float = Settings.model_fields["composite_w_price"].default
    intensity_scale_min: float = Settings.model_fields["intensity_scale_min"].default
    intensity_scale_max: float = Settings.model_fields["intensity_scale_max"].default

    @classmethod
    def from_settings(cls, settings: Settings) -> WeightsValues:
        """Copy the five score fields out of loaded settings."""
        return cls(settings.composite_w_short, settings.composite_w_lit,
                   settings.composite_w_price, settings.intensity_scale_min,
                   settings.intensity_scale_max)


DEFAULT_WEIGHTS = WeightsValues()
DEFAULT_Z_WINDOW: int = Settings.model_fields["short_z_window"].default
DEFAULT_MIN_PERIODS: int = Settings.model_fields["zscore_min_periods"].default


# -- the dates x symbols grid -----------------------------------------------------------------
@dataclass(frozen=True)
class PanelGrid:
    """Positions of a long frame's rows in a dense dates x symbols matrix.

    ``to_wide`` scatters a row-aligned vector into the matrix (NaN where a symbol has no row);
    ``to_long`` gathers it back. Rolling windows on the matrix therefore run per symbol over
    the session grid, exactly like pandas ``rolling`` on each symbol's full series.
    """

    dates: pd.DatetimeIndex
    symbols: pd.Index
    date_pos: np.ndarray
    symbol_pos: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> PanelGrid:
        """Build the grid; raises :class:`DataFormatError` on missing keys or duplicates."""
        for key in ("symbol", "date"):
            if key not in frame.columns:
                raise DataFormatError("daily_metrics frame has no key column",
                                      source="daily_metrics frame", field=key,
                                      hint="pass a frame with 'symbol' and 'date' columns")
        date_values = pd.to_datetime(frame["date"]).to_numpy(dtype="datetime64[ns]")
        date_pos, dates = pd.factorize(date_values, sort=True)
        symbol_pos, symbols = pd.factorize(frame["symbol"].to_numpy(), sort=True)
        if (date_pos < 0).any() or (symbol_pos < 0).any():
            raise DataFormatError("NULL symbol or date", source="daily_metrics frame",
                                  field="symbol" if (symbol_pos < 0).any() else "date")
        flat = date_pos.astype(np.int64) * len(symbols) + symbol_pos
        seen = np.zeros(len(dates) * len(symbols), dtype=bool)  # O(rows), no sort or hash
        seen[flat] = True
        if np.count_nonzero(seen) != len(flat):
            dup = frame.loc[pd.Series(flat).duplicated().to_numpy(), ["symbol", "date"]].iloc[0]
            raise DataFormatError(
                f"duplicate (symbol, date) row: {dup['symbol']} {dup['date']}",
                source="daily_metrics frame", field="date",
                hint="daily_metrics has one row per (symbol, session)")
        return cls(pd.DatetimeIndex(dates), pd.Index(symbols), date_pos, symbol_pos)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.dates), len(self.symbols)

    def to_wide(self, values: np.ndarray | pd.Series) -> np.ndarray:
        """Row-aligned values -> float matrix (dates x symbols), NaN where no row exists."""
        wide = np.full(self.shape, np.nan)
        wide[self.date_pos, self.symbol_pos] = pd.to_numeric(
            pd.Series(np.asarray(values)), errors="coerce").to_numpy(dtype=float)
        return wide

    def to_long(self, wide: np.ndarray) -> np.ndarray:
        """Matrix -> values aligned with the frame's rows."""
        return wide[self.date_pos, self.symbol_pos]

    def column(self, frame: pd.DataFrame, name: str) -> np.ndarray:
        """One numeric column of ``frame`` as a dates x symbols matrix."""
        if name not in frame.columns:
            raise DataFormatError("required column missing", source="daily_metrics frame",
                                  field=name)
        return self.to_wide(frame[name])


def check_window(window: int, what: str = "window") -> int:
    """Validate a rolling window length (1..:data:`MAX_WINDOW`)."""
    if isinstance(window, bool) or not isinstance(window, int | np.integer):
        raise ConfigError(f"{what} must be an integer, got {window!r}")
    if not 1 <= int(window) <= MAX_WINDOW:
        raise ConfigError(f"{what} must be between 1 and {MAX_WINDOW} sessions, got {window}")
    return int(window)


def rolling_mean(wide: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Per-column trailing mean over ``window`` rows (>= ``min_periods`` non-null values)."""
    return pd.DataFrame(wide).rolling(window, min_periods=min_periods).mean().to_numpy()


def rolling_sum(wide: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Per-column trailing sum over ``window`` rows (>= ``min_periods`` non-null values)."""
    return pd.DataFrame(wide).rolling(window, min_periods=min_periods).sum().to_numpy()


def rolling_z(wide: np.ndarray, window: int, min_periods: int, *,
              exclude_current: bool = False) -> np.ndarray:
    """Column-wise version of :func:`scoring.rolling_zscore` on a dates x symbols matrix.

    ``(x_t - mean) / std_pop`` over the last ``window`` rows including ``t``; NaN with fewer
    than ``min_periods`` values or a zero std. With ``exclude_current`` the mean and std come
    from the ``window`` rows *before* ``t`` only (today is compared with its past).
    """
    check_window(window)
    frame = pd.DataFrame(wide)
    base = frame.shift(1) if exclude_current else frame
    rolling = base.rolling(window, min_periods=min(min_periods, window))
    std = rolling.std(ddof=0)
    z = (frame - rolling.mean()) / std.where(std > 0)
    return z.to_numpy()


def median_mad_bands(values: pd.Series, window: int = 20, k: float = 2.0) -> pd.DataFrame:
    """Rolling median and median +- k * MAD from the PREVIOUS ``window`` values only.

    The band at t never contains x_t (point in time: values t-window .. t-1), so a value can be
    compared with its own band without look-ahead. NaN until a full window of finite values
    exists. Returns ``median``, ``upper`` and ``lower`` on ``values``' index.

    Examples
    --------
    >>> bands = median_mad_bands(pd.Series([1.0, 2, 3, 4, 100.0]), window=3, k=1.0)
    >>> bands["median"].tolist()[3:], bands["upper"].iloc[3]
    ([2.0, 3.0], 3.0)
    """
    series = pd.to_numeric(values, errors="coerce").astype(float)
    past = series.shift(1).to_numpy()
    median = np.full(len(series), np.nan)
    mad = np.full(len(series), np.nan)
    if len(series) >= window:
        windows = sliding_window_view(past, window)  # row i = past[i : i + window]
        full = np.isfinite(windows).all(axis=1)
        med = np.full(len(windows), np.nan)
        dev = np.full(len(windows), np.nan)
        if full.any():
            med[full] = np.median(windows[full], axis=1)
            dev[full] = np.median(np.abs(windows[full] - med[full, None]), axis=1)
        median[window - 1:] = med
        mad[window - 1:] = dev
    return pd.DataFrame({"median": median, "upper": median + k * mad,
                         "lower": median - k * mad}, index=series.index)


# -- the registry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One named signal definition.

    ``buy``/``sell`` are the event thresholds (signal >= buy is an accumulation event,
    <= sell a distribution event; ``None`` = no events); ``neutral`` is the level a
    score-decay exit compares with.
    """

    name: str
    description: str
    required_columns: tuple[str, ...]
    func: SignalFunc
    scale: Scale
    buy: float | None
    sell: float | None
    neutral: float
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def compute(self, frame: pd.DataFrame, **params: Any) -> pd.Series:
        """Evaluate on ``frame`` (parameters override :attr:`defaults`)."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"variant {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(self.defaults)) or '(none)'}")
        missing = [c for c in self.required_columns if c not in frame.columns]
        if missing:
            raise DataFormatError(
                f"variant {self.name!r} needs column(s) {', '.join(missing)}",
                source="daily_metrics frame", field=missing[0])
        merged = {**self.defaults, **params}
        result = self.func(frame, **merged)
        return result.rename(self.name)


def _series(frame: pd.DataFrame, values: np.ndarray) -> pd.Series:
    return pd.Series(values, index=frame.index, dtype=float)


def _num(frame: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(frame[name], errors="coerce").astype(float)


def _display(frame: pd.DataFrame, short_z: pd.Series, weights: Any) -> pd.Series:
    return score_display(short_z, _num(frame, "lit_flow_imbalance_z"), _num(frame, "return_z"),
                         _num(frame, "otc_participation_z"), weights)


_SCORE_COLS = ("lit_flow_imbalance_z", "return_z", "otc_participation_z")


def score_current(frame: pd.DataFrame, *, weights: Any = DEFAULT_WEIGHTS) -> pd.Series:
    """The seed's ``current`` score: composite display score with short_z =
    ``short_buy_sell_ratio_z``.

    As of t: the stored z columns at t (each a trailing window ending at t, full history) and
    the OTC week *published* by t.
    """
    return _display(frame, _num(frame, "short_buy_sell_ratio_z"), weights)


def score_option_a(frame: pd.DataFrame, *, weights: Any = DEFAULT_WEIGHTS) -> pd.Series:
    """The seed's ``option_a``: composite display score with short_z = stored ``vw_flow_z``.

    As of t: like ``current``. Unlike the seed (which recomputes vw_flow_z over the loaded
    range only), this uses the stored full-history column.
    """
    return _display(frame, _num(frame, "vw_flow_z"), weights)


def score_option_b(frame: pd.DataFrame, *, short_weight: float = 0.6, flow_weight: float = 0.4,
                   weights: Any = DEFAULT_WEIGHTS) -> pd.Series:
    """The seed's ``option_b``: score with short_z = ``short_weight * short_buy_sell_ratio_z +
    flow_weight * vw_flow_z`` (NaN if either is NaN, as in the seed).

    As of t: like ``current``.
    """
    blended = (short_weight * _num(frame, "short_buy_sell_ratio_z")
               + flow_weight * _num(frame, "vw_flow_z"))
    return _display(frame, blended, weights)


def finra_buy_volume_z(frame: pd.DataFrame) -> pd.Series:
    """Experiment A: the stored rolling z of FINRA short ("buy" proxy) volume B.

    As of t: B over the trailing ``short_z_window`` sessions ending at t.
    """
    return _num(frame, "finra_buy_volume_z")


def short_buy_sell_ratio_z(frame: pd.DataFrame) -> pd.Series:
    """Experiment B: the stored rolling z of B / S.

    As of t: B and S over the trailing ``short_z_window`` sessions ending at t.
    """
    return _num(frame, "short_buy_sell_ratio_z")


def blend_ab(frame: pd.DataFrame, *, weight_a: float = 0.5, weight_b: float = 0.5) -> pd.Series:
    """Experiment C: ``weight_a * finra_buy_volume_z + weight_b * short_buy_sell_ratio_z``.

    As of t: the two stored z columns at t.
    """
    return (weight_a * _num(frame, "finra_buy_volume_z")
            + weight_b * _num(frame, "short_buy_sell_ratio_z"))


def imbalance_log1p_z(frame: pd.DataFrame, *, window: int = DEFAULT_Z_WINDOW,
                      min_periods: int = DEFAULT_MIN_PERIODS) -> pd.Series:
    """Experiment D: rolling z of ``imbalance * log1p(B + S)``, imbalance = (B - S) / (B + S).

    As of t: B and S of the trailing ``window`` sessions ending at t (per symbol).
    """
    grid = PanelGrid.from_frame(frame)
    buy, sell = grid.column(frame, "short_buy_volume"), grid.column(frame, "short_sell_volume")
    total = buy + sell
    with np.errstate(invalid="ignore", divide="ignore"):
        imbalance = np.where(total > 0, (buy - sell) / total, np.nan)
        raw = imbalance * np.log1p(np.where(total > 0, total, np.nan))
    return _series(frame, grid.to_long(rolling_z(raw, check_window(window), min_periods)))


def buy_volume_z_raw(frame: pd.DataFrame, *, window: int = DEFAULT_Z_WINDOW,
                     min_periods: int = DEFAULT_MIN_PERIODS) -> pd.Series:
    """Raw buy-volume z: ``(B_t - mean) / std_pop`` of B over the PREVIOUS ``window`` sessions.

    As of t: B_t and B of sessions t-window .. t-1 (today is excluded from its own baseline).
    The seed marks BUY at z >= 1.1 and SELL at z <= -1.1.
    """
    grid = PanelGrid.from_frame(frame)
    buy = grid.column(frame, "short_buy_volume")
    z = rolling_z(buy, check_window(window), min_periods, exclude_current=True)
    return _series(frame, grid.to_long(z))


def _net_short(frame: pd.DataFrame) -> pd.Series:
    short = _num(frame, "short_volume")
    return short - (_num(frame, "total_volume") - short)


def net_short_volume(frame: pd.DataFrame) -> pd.Series:
    """stockgrid-style net short volume in shares: ``short - (total - short)`` (FINRA-reported
    volume only).

    As of t: the day's FINRA short and total volume.
    """
    return _net_short(frame)


def net_short_dollar_volume(frame: pd.DataFrame) -> pd.Series:
    """Net short volume x close (dollars).

    As of t: the day's FINRA volumes and closing price.
    """
    return _net_short(frame) * _num(frame, "close")


def dark_pool_position(frame: pd.DataFrame, *, window: int = 20,
                       min_periods: int = 20) -> pd.Series:
    """stockgrid's "dark pool position": trailing ``window``-session sum of net short dollars.

    As of t: sessions t-window+1 .. t.
    """
    grid = PanelGrid.from_frame(frame)
    dollars = grid.to_wide(net_short_dollar_volume(frame))
    summed = rolling_sum(dollars, check_window(window), min(min_periods, window))
    return _series(frame, grid.to_long(summed))


_W = {"weights": DEFAULT_WEIGHTS}
_ZW = {"window": DEFAULT_Z_WINDOW, "min_periods": DEFAULT_MIN_PERIODS}
_ACC, _DIST = ACCUMULATION_THRESHOLD, DISTRIBUTION_THRESHOLD

REGISTRY: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("current", "seed score, short_z = short_buy_sell_ratio_z",
                ("short_buy_sell_ratio_z", *_SCORE_COLS), score_current, "display",
                _ACC, _DIST, 50.0, _W),
        Variant("option_a", "seed score, short_z = vw_flow_z (stored, full history)",
                ("vw_flow_z", *_SCORE_COLS), score_option_a, "display", _ACC, _DIST, 50.0, _W),
        Variant("option_b", "seed score, short_z = 0.6 ratio_z + 0.4 vw_flow_z",
                ("short_buy_sell_ratio_z", "vw_flow_z", *_SCORE_COLS), score_option_b,
                "display", _ACC, _DIST, 50.0,
                {"short_weight": 0.6, "flow_weight": 0.4, **_W}),
        Variant("finra_buy_volume_z", "A: rolling z of FINRA short (buy-proxy) volume",
                ("finra_buy_volume_z",), finra_buy_volume_z, "z", 1.0, -1.0, 0.0),
        Variant("short_buy_sell_ratio_z", "B: rolling z of B/S",
                ("short_buy_sell_ratio_z",), short_buy_sell_ratio_z, "z", 1.0, -1.0, 0.0),
        Variant("blend_ab", "C: 50/50 blend of A and B",
                ("finra_buy_volume_z", "short_buy_sell_ratio_z"), blend_ab, "z", 1.0, -1.0,
                0.0, {"weight_a": 0.5, "weight_b": 0.5}),
        Variant("imbalance_log1p_z", "D: rolling z of (B-S)/(B+S) x log1p(B+S)",
                ("short_buy_volume", "short_sell_volume"), imbalance_log1p_z, "z", 1.0, -1.0,
                0.0, _ZW),
        Variant("buy_volume_z_raw", "z of B vs the previous 20 sessions (BUY >= 1.1)",
                ("short_buy_volume",), buy_volume_z_raw, "z", 1.1, -1.1, 0.0, _ZW),
        Variant("net_short_volume", "stockgrid net short volume (shares)",
                ("short_volume", "total_volume"), net_short_volume, "raw", None, None, 0.0),
        Variant("net_short_dollar_volume", "stockgrid net short volume x close ($)",
                ("short_volume", "total_volume", "close"), net_short_dollar_volume, "raw",
                None, None, 0.0),
        Variant("dark_pool_position", "stockgrid 20-day sum of net short $",
                ("short_volume", "total_volume", "close"), dark_pool_position, "raw",
                None, None, 0.0, {"window": 20, "min_periods": 20}),
    )
}


def variant_names() -> list[str]:
    """All registered variant names, in registry order."""
    return list(REGISTRY)


def get_variant(name: str, extra: Mapping[str, Variant] | None = None) -> Variant:
    """Look a variant up (``extra`` = user formulas); unknown names list the valid ones."""
    pool = {**REGISTRY, **(extra or {})}
    try:
        return pool[name]
    except KeyError:
        raise UnknownVariantError(
            f"unknown signal variant {name!r}; valid: {', '.join(pool)}",
            hint="use --formula 'name=expression' for a custom signal") from None


def compute_variant(frame: pd.DataFrame, name: str, **params: Any) -> pd.Series:
    """Evaluate one registered variant on ``frame`` (see :class:`Variant`)."""
    return get_variant(name).compute(frame, **params)


def compute_variants(frame: pd.DataFrame, variants: Iterable[Variant],
                     params: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Evaluate several variants; one column per variant, aligned with ``frame``'s index."""
    params = params or {}
    columns = {v.name: v.compute(frame, **params.get(v.name, {})) for v in variants}
    return pd.DataFrame(columns, index=frame.index)
