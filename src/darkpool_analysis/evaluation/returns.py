"""Forward returns and the dates x symbols evaluation panel.

Timing contract (the original system got this wrong): a signal at session ``t`` uses data up to
the close of ``t`` (FINRA publishes the day's short volume at about 18:00 ET), so the earliest
trade is at the NEXT session's open. The forward return of horizon ``h`` is therefore

    fwd_h(t) = close[t + h] / open[t + 1] - 1

(``h`` sessions of exposure: from the open of ``t+1`` to the close of ``t+h``). It is NaN when
either price is missing or ``t + h`` is past the data. Sessions are positions in the panel's
date grid, which is the XNYS session calendar over the loaded range.

alphalens mapping: alphalens computes ``prices.shift(-h) / prices - 1`` from one price table.
Fed the table ``P[t] = close[t]`` it equals ``fwd_h`` whenever ``open[t+1] = close[t]``; the
tests use such gapless prices to compare both libraries number for number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from darkpool_analysis.errors import ConfigError, NoDataError
from darkpool_analysis.signals import PanelGrid, Variant
from darkpool_analysis.trading_calendar import sessions_index


def shift_rows(values: np.ndarray, periods: int) -> np.ndarray:
    """Shift a dates x symbols matrix along time: ``out[t] = values[t - periods]`` (NaN fill)."""
    out = np.full(values.shape, np.nan)
    if periods == 0:
        return values.astype(float, copy=True)
    if abs(periods) >= len(values):
        return out
    if periods > 0:
        out[periods:] = values[:-periods]
    else:
        out[:periods] = values[-periods:]
    return out


def check_horizons(horizons: Sequence[int]) -> tuple[int, ...]:
    """Validate forward-return horizons: distinct integers in 1..252, sorted."""
    cleaned = sorted({int(h) for h in horizons})
    if not cleaned or cleaned[0] < 1 or cleaned[-1] > 252:
        raise ConfigError(f"horizons must be integers in 1..252 sessions, got {list(horizons)}")
    return tuple(cleaned)


def forward_returns(open_: np.ndarray, close: np.ndarray,
                    horizons: Sequence[int]) -> dict[int, np.ndarray]:
    """``{h: close[t+h] / open[t+1] - 1}`` for each horizon (dates x symbols matrices)."""
    entry = shift_rows(open_, -1)
    entry = np.where(entry > 0, entry, np.nan)
    return {h: shift_rows(close, -h) / entry - 1.0 for h in check_horizons(horizons)}


@dataclass
class EvalPanel:
    """Everything the evaluation needs, as dates x symbols float matrices.

    ``in_window`` marks the dates whose signals are evaluated (``--start``..``--end``); the
    rows before are warm-up for rolling windows, the rows after supply forward prices.
    """

    dates: pd.DatetimeIndex
    symbols: pd.Index
    open: np.ndarray
    close: np.ndarray
    signals: dict[str, np.ndarray]
    in_window: np.ndarray
    variants: dict[str, Variant] = field(default_factory=dict)
    otc_alignment: str = "published"
    high: np.ndarray | None = None
    low: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.dates), len(self.symbols)

    def windowed(self, values: np.ndarray) -> np.ndarray:
        """``values`` with rows outside the evaluation window set to NaN."""
        return np.where(self.in_window[:, None], values, np.nan)


def build_panel(frame: pd.DataFrame, variants: Sequence[Variant], *,
                start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
                params: Mapping[str, Mapping[str, object]] | None = None,
                otc_alignment: str = "published") -> EvalPanel:
    """Compute every variant on ``frame`` and lay it out with prices on the session grid.

    The date grid is the XNYS sessions over the frame's range (plus any non-session dates the
    frame contains), so ``t + 1`` is always the next session even if a day is missing.
    """
    if frame.empty:
        raise NoDataError("no daily_metrics rows to evaluate")
    params = params or {}
    grid = PanelGrid.from_frame(frame)
    sessions = sessions_index(grid.dates[0], grid.dates[-1])
    dates = pd.DatetimeIndex(sessions.union(grid.dates))
    row_of = dates.get_indexer(grid.dates)
    shape = (len(dates), len(grid.symbols))

    def place(values: pd.Series | np.ndarray) -> np.ndarray:
        wide = np.full(shape, np.nan)
        wide[row_of[grid.date_pos], grid.symbol_pos] = pd.to_numeric(
            pd.Series(np.asarray(values)), errors="coerce").to_numpy(dtype=float)
        return wide

    signals = {v.name: place(v.compute(frame, **params.get(v.name, {}))) for v in variants}
    lo = dates[0] if start is None else pd.Timestamp(start)
    hi = dates[-1] if end is None else pd.Timestamp(end)
    in_window = np.asarray((dates >= lo) & (dates <= hi))
    if not in_window.any():
        raise NoDataError(f"no sessions between {lo.date()} and {hi.date()} in the data")
    extremes = {k: place(frame[k]) for k in ("high", "low") if k in frame.columns}
    return EvalPanel(dates, grid.symbols, place(frame["open"]), place(frame["close"]), signals,
                     in_window, {v.name: v for v in variants}, otc_alignment, **extremes)
