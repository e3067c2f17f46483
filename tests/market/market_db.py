"""Hand-made ``daily_metrics`` databases for the market tests (through ``store.open_writer``).

Rows are given explicitly (no build), so every expected number in a test is computed by hand
from the values written here, independently of the code under test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from darkpool_analysis import store, trading_calendar

#: Defaults of a complete, consolidated row (every column the market view reads).
ROW_DEFAULTS: dict[str, Any] = {
    "short_source": "CNMS", "has_short": True, "has_price": True, "has_lit": True,
    "has_otc": True, "otc_status": "Anchored", "otc_alignment": "published",
    "data_quality": "complete",
}


def metrics_rows(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """``daily_metrics`` rows from dicts (missing columns NULL; ``date`` as text or date)."""
    frame = pd.DataFrame([{**ROW_DEFAULTS, **row} for row in rows])
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    if "short_volume" in frame and "short_buy_volume" not in frame:
        frame["short_buy_volume"] = frame["short_volume"]
    if {"short_volume", "total_volume"} <= set(frame) and "short_sell_volume" not in frame:
        frame["short_sell_volume"] = np.maximum(frame["total_volume"] - frame["short_volume"], 0)
    return frame


def write_metrics(db_path: Path, frame: pd.DataFrame, *, synthetic: bool = False) -> Path:
    """Write ``frame`` into ``daily_metrics`` of a new database at ``db_path``."""
    with store.open_writer(db_path) as writer:
        symbols = sorted(frame["symbol"].unique())
        writer.replace_partition("daily_metrics", frame,
                                 where=f"symbol IN ({', '.join('?' * len(symbols))})",
                                 params=symbols)
        if synthetic:
            writer.set_meta({store.META_SYNTHETIC: "true",
                             store.META_SYNTHETIC_NOTE: "market test fixture"})
    return db_path


def sessions(start: str, count: int) -> list[dt.date]:
    """``count`` consecutive XNYS sessions from ``start``."""
    days = trading_calendar.sessions_between(start, pd.Timestamp(start) + pd.Timedelta(
        days=2 * count + 10))
    return days[:count]


def flat(output: str) -> str:
    """Terminal output with Rich's wrapping and panel borders removed (for ``in`` checks)."""
    for border in "│╭╮╰╯─":
        output = output.replace(border, " ")
    return " ".join(output.split())
