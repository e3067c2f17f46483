"""Fixture databases for the sandbox tests: realistic ``daily_metrics`` rows written through
``store.open_writer`` (NULL days, zero-flow days, NULL z / confidence, fallback-only tickers)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis import store, trading_calendar
from seed_support import seed_cells, with_params

WINDOW, MIN_PERIODS = 20, 5

#: symbol -> (first session, last session, layout)
FIXTURE_SYMBOLS: dict[str, tuple[str, str, str]] = {
    "NKE": ("2025-06-02", "2025-12-31", "full"),
    "BRK.B": ("2025-09-02", "2025-12-31", "full"),
    "LITX": ("2025-08-01", "2025-12-31", "fallback"),
}


def _rolling_z(values: pd.Series) -> pd.Series:
    """Plain pandas reference of the spec's rolling z (what a build would have stored)."""
    rolling = values.rolling(WINDOW, min_periods=MIN_PERIODS)
    std = rolling.std(ddof=0)
    return (values - rolling.mean()) / std.where(std > 0)


def metrics_frame(symbol: str, start: str, end: str, layout: str, seed: int) -> pd.DataFrame:
    """``daily_metrics`` rows of one symbol on every XNYS session in ``[start, end]``.

    ``full``: stored z columns, a few sessions with no data at all, zero-volume days, NULL
    return_z / otc z / confidence. ``fallback``: the stored ratio, ratio z and lit z are NULL
    everywhere, so the seed's recompute-when-all-NULL paths run.
    """
    rng = np.random.default_rng(seed)
    dates = trading_calendar.sessions_index(start, end)
    n = len(dates)
    total = rng.lognormal(np.log(4e6), 0.35, n).round()
    short = (total * rng.uniform(0.35, 0.62, n)).round()
    lit_buy = rng.lognormal(np.log(9e5), 0.4, n).round()
    lit_sell = rng.lognormal(np.log(9e5), 0.4, n).round()
    frame = pd.DataFrame({"symbol": symbol, "date": dates.date})
    frame["short_volume"] = short
    frame["total_volume"] = total
    frame["short_buy_volume"] = short
    frame["short_sell_volume"] = np.maximum(total - short, 0.0)
    frame["lit_buy_volume"] = lit_buy
    frame["lit_sell_volume"] = lit_sell

    no_data = np.zeros(n, dtype=bool)
    no_data[[7, 31, n - 9]] = True  # sessions with a row but no measures (data gaps)
    zero_flow = np.zeros(n, dtype=bool)
    zero_flow[[12, n - 15]] = True  # a halted day: everything reported as 0
    no_lit = np.zeros(n, dtype=bool)
    no_lit[[3, 4, 40, n - 4]] = True
    volume_cols = ["short_volume", "total_volume", "short_buy_volume", "short_sell_volume"]
    frame.loc[no_data, [*volume_cols, "lit_buy_volume", "lit_sell_volume"]] = np.nan
    frame.loc[zero_flow, [*volume_cols, "lit_buy_volume", "lit_sell_volume"]] = 0.0
    frame.loc[no_lit, ["lit_buy_volume", "lit_sell_volume"]] = np.nan

    buy, sell = frame["short_buy_volume"], frame["short_sell_volume"]
    frame["short_buy_sell_ratio"] = buy / sell.where(sell > 0)
    lb, ls = frame["lit_buy_volume"], frame["lit_sell_volume"]
    lit_total = lb + ls
    frame["lit_flow_imbalance"] = ((lb - ls) / lit_total).where(lit_total >= 10_000)
    # Daily bars on every session with data (none on the sessions without any measure).
    close = 40.0 * np.exp(np.cumsum(rng.normal(0, 0.015, n)))
    frame["close"] = np.where(no_data, np.nan, close.round(2))
    frame["open"] = (frame["close"] * rng.uniform(0.98, 1.02, n)).round(2)
    frame["high"] = (np.maximum(frame["open"], frame["close"]) * 1.01).round(2)
    frame["low"] = (np.minimum(frame["open"], frame["close"]) * 0.99).round(2)
    frame["has_price"] = ~no_data
    frame["return_z"] = rng.normal(0, 1.1, n)
    frame.loc[rng.random(n) < 0.1, "return_z"] = np.nan
    frame["otc_participation_z"] = rng.normal(0, 1.0, n)
    frame.loc[rng.random(n) < 0.15, "otc_participation_z"] = np.nan
    frame["confidence"] = rng.choice([1.0, 0.9, 0.7, 0.56, 0.45, 0.35, 0.25], n)
    frame.loc[rng.random(n) < 0.1, "confidence"] = np.nan
    if layout == "full":
        frame["short_buy_sell_ratio_z"] = _rolling_z(frame["short_buy_sell_ratio"])
        frame["lit_flow_imbalance_z"] = _rolling_z(frame["lit_flow_imbalance"])
    else:
        frame["short_buy_sell_ratio"] = np.nan
        frame["short_buy_sell_ratio_z"] = np.nan
        frame["lit_flow_imbalance_z"] = np.nan
    frame["has_short"] = frame["short_volume"].notna()
    frame["inference_version"] = "test"
    return frame


def write_metrics(db_path: Path, frames: list[pd.DataFrame]) -> None:
    """Write ``daily_metrics`` rows through the store's single writer."""
    with store.open_writer(db_path) as writer:
        for frame in frames:
            symbol = str(frame["symbol"].iloc[0])
            writer.replace_partition("daily_metrics", frame, where="symbol = ?",
                                     params=[symbol])


@pytest.fixture(scope="session")
def sandbox_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published database with NKE, BRK.B and LITX (read-only use in the tests)."""
    db = tmp_path_factory.mktemp("sandbox_db") / "darkpool.duckdb"
    write_metrics(db, [metrics_frame(sym, first, last, layout, seed=i)
                       for i, (sym, (first, last, layout)) in enumerate(FIXTURE_SYMBOLS.items())])
    return db


@pytest.fixture
def sandbox_env(sandbox_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point DARKPOOL_DB at the shared fixture database."""
    monkeypatch.setenv("DARKPOOL_DB", str(sandbox_db))
    return sandbox_db


def session_dates(symbol: str) -> list[dt.date]:
    first, last, _ = FIXTURE_SYMBOLS[symbol]
    return trading_calendar.sessions_between(first, last)


# -- the seed notebook as an independent oracle ---------------------------------------------

def run_seed_data(seed_dir: Path, ticker: str, start: str, end: str) -> dict[str, object]:
    """Run seed cells 1-3 (parameters, helpers, data) and return their namespace."""
    cells = seed_cells(seed_dir)
    namespace: dict[str, object] = {"__name__": "seed_notebook"}
    exec(compile(with_params(cells[0], ticker, start, end), "seed-cell-1", "exec"), namespace)
    for number, cell in ((2, cells[1]), (3, cells[2])):
        exec(compile(cell, f"seed-cell-{number}", "exec"), namespace)
    return namespace


@pytest.fixture
def run_seed(seed_dir: Path, sandbox_env: Path) -> Callable[[str, str, str], pd.DataFrame]:
    """Run the seed's cells 1-3 against the fixture database and return its ``df``."""

    def run(ticker: str, start: str, end: str) -> pd.DataFrame:
        frame = run_seed_data(seed_dir, ticker, start, end)["df"]
        assert isinstance(frame, pd.DataFrame)
        return frame

    return run


@pytest.fixture
def sessions_of() -> Callable[[str], list[dt.date]]:
    """Sessions (one stored row each) of a fixture symbol."""
    return session_dates


@pytest.fixture
def seed_helpers(seed_dir: Path) -> dict[str, object]:
    """The seed's cell 2 (COLORS, axis helpers, ``_plot_score_panel``) run in a namespace."""
    import matplotlib.pyplot as plt

    namespace: dict[str, object] = {"np": np, "pd": pd, "plt": plt}
    exec(compile(seed_cells(seed_dir)[1], "seed-cell-2", "exec"), namespace)
    return namespace


@pytest.fixture
def seed_notebook(seed_dir: Path) -> Callable[[str, str, str], list[str]]:
    """All five seed cells, with only the three parameter assignments replaced."""

    def cells(ticker: str, start: str, end: str) -> list[str]:
        sources = seed_cells(seed_dir)
        sources[0] = with_params(sources[0], ticker, start, end)
        return sources

    return cells
