"""Synthetic CNMS (Reg SHO consolidated) files in FINRA's layout, for store and build tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

HEADER = "Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume|Market"


def write_cnms_files(folder: Path, days: list[dt.date], n_symbols: int, *, seed: int = 3,
                     drop: float = 0.15) -> None:
    """CNMS files in FINRA's layout; each symbol misses about ``drop`` of the sessions (gaps
    inside its span, late listings and early delistings included)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = np.array([f"S{i:04d}" for i in range(n_symbols)])
    for day in days:
        keep = rng.random(n_symbols) > drop
        total = rng.integers(10_000, 5_000_000, n_symbols)
        short = (total * rng.uniform(0.2, 0.7, n_symbols)).astype(np.int64)
        stamp = day.strftime("%Y%m%d")
        lines = [f"{stamp}|{s}|{b}|{b // 100}|{t}|B,Q,N"
                 for s, b, t in zip(names[keep], short[keep], total[keep], strict=True)]
        body = "\r\n".join([HEADER, *lines, str(len(lines))]) + "\r\n"
        (folder / f"CNMSshvol{stamp}.txt").write_bytes(body.encode())
