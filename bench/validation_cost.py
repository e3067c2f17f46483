"""Benchmark: what the input validation added for issue 10 costs, next to the full ingest.

Side by side in one run, on the same data (best of ``--repeat``):

* ``ingest``: the shipped ingest (:func:`ingest_finra_short` from a folder, :func:`ingest_prices`
  from a folder) into a fresh DuckDB file: parse, every validation, store, publish;
* ``added checks``: exactly the checks this work added, run alone on the same parsed data --
  Reg SHO: implausible volumes, ShortExemptVolume <= ShortVolume, symbol and Market layout,
  the stored-rows lookup for empty files; prices: implausible magnitudes, open/close inside
  [low, high], symbol layout, the strict date check of the fast path, and the query that
  refuses data covering fewer sessions than stored.

The ratio ``added / ingest`` is the share of the ingest the new validation costs (target < 10%).
Reg SHO data: the real CNMS files when present plus ``--files`` synthetic files of
``--symbols`` rows; prices: ``--tickers`` synthetic Yahoo files of 10 years.

Usage: ``.venv/bin/python bench/validation_cost.py [--files 60] [--symbols 10000]
[--tickers 200] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from darkpool_analysis.config import load_config
from darkpool_analysis.ingest.finra_short import _stored_rows, ingest_finra_short
from darkpool_analysis.ingest.prices import (
    TickerBars,
    _refuse_shrinking,
    ingest_prices,
    tickers_in_dir,
)
from darkpool_analysis.sources import limits
from darkpool_analysis.sources.finra_short import parse_short_table
from darkpool_analysis.sources.prices import read_yahoo_csv
from darkpool_analysis.store import open_writer
from ingest_finra import DEFAULT_REAL, write_synthetic_year
from ingest_prices import write_yahoo_files


def best(repeat: int, work: Callable[[], object]) -> float:
    """Best wall time of ``repeat`` runs (seconds)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def regsho_added_checks(tables: list[pa.Table]) -> None:
    """The Reg SHO checks added (sources/finra_short.py ``_validate_rows``), on parsed tables."""
    for table in tables:
        for name in ("short_volume", "short_exempt_volume", "total_volume"):
            pc.any(pc.greater(table[name], limits.MAX_DAILY_SHARES)).as_py()
        pc.any(pc.greater(table["short_exempt_volume"], table["short_volume"])).as_py()
        limits.bad_symbol(table["symbol"])
        limits.bad_market(table["market"])


def prices_added_checks(frames: list[pd.DataFrame], texts: list[pd.Series]) -> None:
    """The price checks added (sources/prices.py ``validate_bars`` and the fast path)."""
    for frame, dates in zip(frames, texts, strict=True):
        dates.str.len().eq(10).all()
        high = frame["high"].to_numpy(dtype="float64")
        low = frame["low"].to_numpy(dtype="float64")
        for column in ("open", "high", "low", "close", "adj_close", "vwap", "volume"):
            values = frame[column].to_numpy(dtype="float64")
            limit = limits.MAX_DAILY_SHARES if column == "volume" else limits.MAX_PRICE
            np.flatnonzero(values > limit)
        for column in ("open", "close"):
            values = frame[column].to_numpy(dtype="float64")
            np.flatnonzero(values > high)
            np.flatnonzero(values < low)
        symbols = pd.unique(frame["symbol"].to_numpy(dtype=object))
        [limits.symbol_ok(str(s)) for s in symbols]


def line(label: str, seconds: float, rows: int, base: float | None = None) -> None:
    share = f"  = {100 * seconds / base:5.2f}% of the ingest" if base else ""
    print(f"  {label:<44} {seconds:8.3f} s {rows:>10,} rows {rows / seconds:>12,.0f} rows/s"
          f"{share}")


def bench_regsho(folder: Path, title: str, repeat: int, workdir: Path) -> None:
    workdir.mkdir(exist_ok=True)
    paths = sorted(folder.glob("CNMSshvol*.txt"))
    start, end = paths[0].name[9:17], paths[-1].name[9:17]
    tables = [parse_short_table(p.read_bytes(), p.name) for p in paths]
    rows = sum(t.num_rows for t in tables)
    print(f"Reg SHO {title}: {len(paths)} files")
    counter = iter(range(1_000_000))

    def ingest() -> None:
        settings = load_config(db_path=workdir / f"regsho_{next(counter)}.duckdb")
        summary = ingest_finra_short(settings, start, end, "CNMS", from_dir=folder)
        assert summary.ok

    full = best(repeat, ingest)
    line("ingest_finra_short (shipped)", full, rows)
    checks = best(repeat, lambda: regsho_added_checks(tables))
    db = workdir / "regsho_0.duckdb"
    with open_writer(db) as writer:
        lookup = best(repeat, lambda: _stored_rows(writer))
    line("added checks (parse-level)", checks, rows, full)
    line("added stored-rows lookup (once per run)", lookup, rows, full)
    line("added total", checks + lookup, rows, full)


def bench_prices(n_tickers: int, repeat: int, workdir: Path) -> None:
    start, end = "2014-01-02", "2023-12-29"
    folder = workdir / "yahoo"
    folder.mkdir()
    rows = write_yahoo_files(folder, n_tickers, start, end)
    files = sorted(folder.glob("*.csv"))
    frames = [read_yahoo_csv(path) for path in files]
    texts = [pd.read_csv(path, usecols=["Date"], dtype=str)["Date"] for path in files]
    print(f"prices: {n_tickers} synthetic Yahoo files, 10 years")
    counter = iter(range(1_000_000))
    tickers = tickers_in_dir(folder)

    def ingest() -> None:
        db = workdir / f"prices_{next(counter)}.duckdb"
        with open_writer(db) as writer:
            summary = ingest_prices(writer, load_config(), start, end, tickers=tickers,
                                    from_dir=folder)
        assert summary.rows == rows

    full = best(repeat, ingest)
    line("ingest_prices (shipped)", full, rows)
    checks = best(repeat, lambda: prices_added_checks(frames, texts))
    items = [TickerBars(symbol=str(f["symbol"].iloc[0]), bars=f, source_file=p.name,
                        location=str(p), sha256="", fetched_at=pd.Timestamp(0).to_pydatetime())
             for f, p in zip(frames, files, strict=True)]
    with open_writer(workdir / "prices_0.duckdb") as writer:
        shrink = best(repeat, lambda: _refuse_shrinking(
            writer, items, pd.Timestamp(start).date(), pd.Timestamp(end).date()))
    line("added checks (parse-level)", checks, rows, full)
    line("added shrink query (stored bars present)", shrink, rows, full)
    line("added total", checks + shrink, rows, full)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-dir", type=Path, default=DEFAULT_REAL)
    parser.add_argument("--files", type=int, default=60, help="synthetic CNMS files")
    parser.add_argument("--symbols", type=int, default=10_000, help="rows per CNMS file")
    parser.add_argument("--tickers", type=int, default=200, help="synthetic price files")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} (1/5/15 min), best of {args.repeat}")
    with tempfile.TemporaryDirectory(prefix="bench_validation_") as tmp:
        workdir = Path(tmp)
        if args.from_dir.is_dir():
            bench_regsho(args.from_dir, "real files", args.repeat, workdir / "real")
        synthetic = workdir / "cnms"
        synthetic.mkdir()
        write_synthetic_year(synthetic, args.files, args.symbols)
        bench_regsho(synthetic, f"synthetic ({args.symbols:,} rows each)", args.repeat,
                     workdir / "syn")
        bench_prices(args.tickers, args.repeat, workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
