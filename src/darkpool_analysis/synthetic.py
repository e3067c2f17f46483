"""A deterministic synthetic market written in the real file formats (for ``darkpool demo``).

Files: FINRA Reg SHO CNMS daily files (``CNMSshvolYYYYMMDD.txt``, pipe-delimited, CRLF, trailer
row count) and Yahoo-format daily bars (``<TICKER>.csv``). Nothing here is real market data:
the demo ingests these files through the same code path as real ones and labels every output
as synthetic.

The generator plants a weak, known effect: a persistent short-ratio factor leads next-day
returns slightly, so the signal lab has something to find (IC around 0.03-0.05).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from darkpool_analysis import trading_calendar
from darkpool_analysis.symbols import to_feed

#: The seed notebook's ticker and a small mixed universe around it.
DEMO_TICKERS: tuple[str, ...] = (
    "NKE", "AAPL", "TSLA", "GME", "SPY", "MSFT", "AMD", "NVDA", "AMZN", "META",
    "GOOGL", "PLTR", "NIO", "F", "T", "KO", "PEP", "XOM", "JPM", "BAC",
    "BRK.B", "DIS", "INTC", "PFE", "WMT",
)
DEMO_START = dt.date(2025, 3, 3)
DEMO_END = dt.date(2025, 12, 31)
SYNTHETIC_LABEL = "SYNTHETIC DATA - not real market data"


@dataclass(frozen=True)
class SyntheticMarket:
    """Where the generated files are and what they cover."""

    folder: Path
    finra_dir: Path
    prices_dir: Path
    tickers: tuple[str, ...]
    start: dt.date
    end: dt.date
    sessions: int


def generate_frames(
    tickers: tuple[str, ...] = DEMO_TICKERS,
    start: dt.date = DEMO_START,
    end: dt.date = DEMO_END,
    seed: int = 7,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (short_volume, bars) frames in long format; deterministic for a given seed."""
    sessions = trading_calendar.sessions_index(start, end)
    n_days, n_sym = len(sessions), len(tickers)
    rng = np.random.default_rng(seed)

    # Persistent short-ratio factor per symbol (AR(1)), centred on a typical ~0.45 DPI.
    base_ratio = rng.uniform(0.38, 0.52, n_sym)
    shocks = rng.normal(0.0, 0.035, (n_days, n_sym))
    factor = np.zeros((n_days, n_sym))
    for t in range(1, n_days):  # recursion over days, vectorised across symbols
        factor[t] = 0.85 * factor[t - 1] + shocks[t]
    short_ratio = np.clip(base_ratio + factor, 0.05, 0.95)

    # Returns: market + idiosyncratic noise + a small planted lead from yesterday's factor.
    market = rng.normal(0.0003, 0.011, n_days)[:, None]
    idio = rng.normal(0.0, 0.02, (n_days, n_sym))
    lead = np.vstack([np.zeros((1, n_sym)), factor[:-1]]) * 0.025
    returns = market + idio + lead
    start_price = rng.uniform(15.0, 450.0, n_sym)
    close = start_price * np.exp(np.cumsum(returns, axis=0))
    gap = rng.normal(0.0, 0.004, (n_days, n_sym))
    open_ = np.vstack([start_price[None, :], close[:-1]]) * np.exp(gap)
    spread = np.abs(rng.normal(0.0, 0.012, (n_days, n_sym)))
    high = np.maximum(open_, close) * (1.0 + spread)
    low = np.minimum(open_, close) * (1.0 - spread)

    avg_volume = rng.uniform(2e6, 6e7, n_sym)
    volume = np.round(avg_volume * np.exp(rng.normal(0.0, 0.35, (n_days, n_sym))))
    finra_share = np.clip(rng.normal(0.42, 0.05, (n_days, n_sym)), 0.2, 0.7)
    total = np.round(volume * finra_share)
    short = np.round(total * short_ratio)
    exempt = np.round(short * rng.uniform(0.0, 0.02, (n_days, n_sym)))

    dates = np.repeat(sessions.to_numpy(), n_sym)
    symbols = np.tile(np.asarray(tickers, dtype=object), n_days)
    short_frame = pd.DataFrame({
        "date": dates,
        "symbol": [to_feed(s, "cqs") for s in symbols],
        "short_volume": short.ravel(),
        "short_exempt_volume": exempt.ravel(),
        "total_volume": total.ravel(),
    })
    bars = pd.DataFrame({
        "date": dates,
        "symbol": symbols,
        "open": open_.ravel(),
        "high": high.ravel(),
        "low": low.ravel(),
        "close": close.ravel(),
        "volume": volume.ravel(),
    })
    return short_frame, bars


def write_market(
    folder: Path,
    tickers: tuple[str, ...] = DEMO_TICKERS,
    start: dt.date = DEMO_START,
    end: dt.date = DEMO_END,
    seed: int = 7,
) -> SyntheticMarket:
    """Write the synthetic market as FINRA CNMS files and Yahoo CSVs under ``folder``."""
    short_frame, bars = generate_frames(tickers, start, end, seed)
    finra_dir, prices_dir = folder / "finra", folder / "prices"
    finra_dir.mkdir(parents=True, exist_ok=True)
    prices_dir.mkdir(parents=True, exist_ok=True)

    header = "Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume|Market"
    stamp = short_frame["date"].dt.strftime("%Y%m%d")
    lines = (
        stamp + "|" + short_frame["symbol"] + "|"
        + short_frame["short_volume"].astype("int64").astype(str) + "|"
        + short_frame["short_exempt_volume"].astype("int64").astype(str) + "|"
        + short_frame["total_volume"].astype("int64").astype(str) + "|B,Q,N"
    )
    for day, day_lines in lines.groupby(stamp, sort=True):  # one file per session
        body = "\r\n".join([header, *sorted(day_lines.tolist()), str(len(day_lines))])
        (finra_dir / f"CNMSshvol{day}.txt").write_bytes((body + "\r\n").encode())

    yahoo = bars.assign(
        Date=bars["date"].dt.strftime("%Y-%m-%d"),
        Open=bars["open"].round(4), High=bars["high"].round(4), Low=bars["low"].round(4),
        Close=bars["close"].round(4), **{"Adj Close": bars["close"].round(4)},
        Volume=bars["volume"].astype("int64"),
    )
    columns = ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
    for symbol, group in yahoo.groupby("symbol", sort=True):  # one file per ticker
        group[columns].to_csv(prices_dir / f"{to_feed(str(symbol), 'yahoo')}.csv", index=False)

    sessions = int(short_frame["date"].nunique())
    return SyntheticMarket(folder, finra_dir, prices_dir, tuple(tickers), start, end, sessions)
