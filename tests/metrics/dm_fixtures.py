"""Test helpers for daily_metrics: write raw inputs through ``Writer.replace_partition``.

Independent of the ingestion code on purpose: the real FINRA/Yahoo files are read with plain
pandas so the metrics tests do not depend on (or re-test) the parsers.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from darkpool_analysis.store import Writer
from darkpool_analysis.symbols import normalise_array

FETCHED_AT = dt.datetime(2024, 1, 2, 3, 4, 5)
CNMS_DIR = ("regsho_daily", "McNuggett_2020-12_2021-02")
YAHOO_DIR = ("ohlcv", "McNuggett_ticker-data_2020-11_2021-02")


def write_short(writer: Writer, rows: pd.DataFrame) -> None:
    """Write ``finra_short_daily_raw`` rows (trade_date, facility, symbol, volumes)."""
    frame = rows.copy()
    frame["trade_date"] = pd.to_datetime(frame["trade_date"]).dt.date
    frame["symbol_norm"] = normalise_array(frame["symbol"])
    if "short_exempt_volume" not in frame:
        frame["short_exempt_volume"] = 0.0
    frame["market"] = frame.get("market", "Q")
    frame["source_file"] = "test"
    frame["sha256"] = "0" * 64
    frame["fetched_at"] = FETCHED_AT
    days = frame["trade_date"]
    writer.replace_partition("finra_short_daily_raw", frame,
                             where="trade_date BETWEEN ? AND ?",
                             params=[days.min(), days.max()])


def write_prices(writer: Writer, rows: pd.DataFrame) -> None:
    """Write ``prices_daily`` rows (symbol, date, open, high, low, close, volume[, vwap])."""
    frame = rows.copy()
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    frame["provider"] = "csv"
    frame["fetched_at"] = FETCHED_AT
    symbols = sorted(frame["symbol"].unique())
    writer.replace_partition("prices_daily", frame,
                             where=f"symbol IN ({', '.join('?' * len(symbols))})",
                             params=symbols)


def read_cnms_dir(folder: Path) -> pd.DataFrame:
    """All ``CNMSshvol*.txt`` files of ``folder`` as raw rows (trailer line dropped)."""
    frames = []
    for path in sorted(folder.glob("CNMSshvol*.txt")):
        raw = pd.read_csv(path, sep="|", dtype={"Date": str, "Symbol": str},
                          keep_default_na=False, na_values=[""])
        raw = raw.loc[raw["Symbol"].notna()]
        frames.append(pd.DataFrame({
            "trade_date": pd.to_datetime(raw["Date"], format="%Y%m%d"),
            "facility": "CNMS",
            "symbol": raw["Symbol"].astype(str),
            "short_volume": raw["ShortVolume"].astype(float),
            "short_exempt_volume": raw["ShortExemptVolume"].astype(float),
            "total_volume": raw["TotalVolume"].astype(float),
            "market": raw["Market"].astype(str),
        }))
    return pd.concat(frames, ignore_index=True)


def read_yahoo_dir(folder: Path) -> pd.DataFrame:
    """All Yahoo CSVs (``Date,High,Low,Open,Close,Volume,Adj Close``) as ``prices_daily`` rows."""
    frames = []
    for path in sorted(folder.glob("*.csv")):
        raw = pd.read_csv(path)
        frames.append(pd.DataFrame({
            "symbol": path.stem.upper(),
            "date": pd.to_datetime(raw["Date"]),
            "open": raw["Open"].astype(float), "high": raw["High"].astype(float),
            "low": raw["Low"].astype(float), "close": raw["Close"].astype(float),
            "adj_close": raw["Adj Close"].astype(float), "volume": raw["Volume"].astype(float),
            "vwap": np.nan,
        }))
    return pd.concat(frames, ignore_index=True)
