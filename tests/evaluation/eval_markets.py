"""Synthetic markets with planted effects for the evaluation tests (imported by the tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from darkpool_analysis.trading_calendar import sessions_index


@dataclass
class Market:
    """Gapless prices (open[t+1] = close[t]) and a signal that predicts the next session."""

    dates: pd.DatetimeIndex
    symbols: pd.Index
    open: np.ndarray
    close: np.ndarray
    signal: np.ndarray


def planted_market(n_days: int = 250, n_symbols: int = 200, beta: float = 0.01,
                   noise: float = 0.02, seed: int = 7) -> Market:
    """``close[t+1] / close[t] - 1 = beta * signal[t] + noise * e``: the next-open-to-close
    return of session t+1 follows the signal of t (corr = beta / sqrt(beta^2 + noise^2))."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_days, n_symbols))
    step = np.zeros((n_days, n_symbols))
    step[1:] = beta * signal[:-1] + noise * rng.normal(size=(n_days - 1, n_symbols))
    close = 100 * np.cumprod(1 + step, axis=0)
    open_ = np.vstack([close[:1], close[:-1]])
    dates = sessions_index("2022-01-03", "2024-12-31")[:n_days]
    return Market(dates, pd.Index([f"S{i:03d}" for i in range(n_symbols)]), open_, close,
                  signal)


def metrics_frame(market: Market) -> pd.DataFrame:
    """The market as a long daily_metrics frame (the signal stored as short_buy_sell_ratio_z)."""
    n, m = market.signal.shape
    return pd.DataFrame({
        "symbol": np.tile(market.symbols.to_numpy(), n),
        "date": np.repeat(market.dates.to_numpy(), m),
        "open": market.open.ravel(), "close": market.close.ravel(),
        "short_buy_sell_ratio_z": market.signal.ravel(),
        "finra_buy_volume_z": np.random.default_rng(1).normal(size=n * m),
        "vw_flow_z": market.signal.ravel() * 0.5,
        "lit_flow_imbalance_z": 0.0, "return_z": 0.0, "otc_participation_z": 0.0,
        "short_volume": 5000.0, "total_volume": 9000.0, "short_buy_volume": 5000.0,
        "short_sell_volume": 4000.0,
    })


def score_market(n_symbols: int = 300, n_days: int = 400, ic: float = 0.0, seed: int = 0,
                 vol: float = 0.02) -> pd.DataFrame:
    """A daily_metrics frame for the seed-score variants (current, option_a, option_b):
    every z column is independent standard normal noise, and the next session's
    open-to-close return loads on ``short_buy_sell_ratio_z`` with correlation ``ic`` (0 = the
    signal is independent of returns). Gapless prices with a 1% high/low range."""
    rng = np.random.default_rng(seed)
    shape = (n_days, n_symbols)
    z = {c: rng.normal(size=shape) for c in ("short_buy_sell_ratio_z", "vw_flow_z",
                                             "lit_flow_imbalance_z", "return_z",
                                             "otc_participation_z", "finra_buy_volume_z")}
    step = np.zeros(shape)
    step[1:] = vol * (ic * z["short_buy_sell_ratio_z"][:-1]
                      + np.sqrt(1 - ic**2) * rng.normal(size=(n_days - 1, n_symbols)))
    close = 50 * np.cumprod(1 + step, axis=0)
    open_ = np.vstack([close[:1], close[:-1]])
    dates = sessions_index("2021-01-04", "2024-12-31")[:n_days]
    frame = pd.DataFrame({
        "symbol": np.tile(np.array([f"S{i:03d}" for i in range(n_symbols)]), n_days),
        "date": np.repeat(dates.to_numpy(), n_symbols),
        "open": open_.ravel(), "close": close.ravel(),
        "high": (np.maximum(open_, close) * 1.005).ravel(),
        "low": (np.minimum(open_, close) * 0.995).ravel(),
        **{c: v.ravel() for c, v in z.items()}})
    return frame
