"""Synthetic daily_metrics-shaped frames for the signal-registry and formula tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis.trading_calendar import sessions_index


def make_metrics(n_symbols: int = 6, n_days: int = 80, seed: int = 0) -> pd.DataFrame:
    """Random but plausible daily_metrics rows (every column a variant or formula reads)."""
    rng = np.random.default_rng(seed)
    dates = sessions_index("2024-01-02", "2024-12-31")[:n_days]
    symbols = [f"S{i:02d}" for i in range(n_symbols)]
    index = pd.MultiIndex.from_product([symbols, dates], names=["symbol", "date"])
    frame = index.to_frame(index=False)
    n = len(frame)
    total = rng.integers(100_000, 1_000_000, n).astype(float)
    short = total * rng.uniform(0.3, 0.7, n)
    close = 50 * np.exp(rng.normal(0, 0.02, n).cumsum())
    frame = frame.assign(
        short_volume=short, total_volume=total, short_buy_volume=short,
        finra_buy_volume=short, short_sell_volume=total - short,
        short_buy_sell_ratio=short / (total - short),
        short_buy_sell_ratio_z=rng.normal(0, 1.2, n), finra_buy_volume_z=rng.normal(0, 1.2, n),
        vw_flow_z=rng.normal(0, 1.2, n), lit_flow_imbalance_z=rng.normal(0, 1, n),
        return_z=rng.normal(0, 1, n), otc_participation_z=rng.normal(0, 1, n),
        open=close * rng.uniform(0.99, 1.01, n), close=close,
    )
    # some holes, as in real data (a missing short file, a missing OTC week)
    frame.loc[rng.random(n) < 0.03, "short_buy_volume"] = np.nan
    frame.loc[rng.random(n) < 0.05, "otc_participation_z"] = np.nan
    return frame


@pytest.fixture
def metrics() -> Callable[..., pd.DataFrame]:
    """Factory: ``metrics(n_symbols=, n_days=, seed=)``."""
    return make_metrics
