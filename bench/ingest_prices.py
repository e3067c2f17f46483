"""Benchmark daily price ingestion: Yahoo CSV parse+validate+store and Polygon grouped parsing.

Prints rows/s, seconds and peak RSS for each stage next to a baseline measured in the same run:

* ``csv``: ``read_yahoo_csv`` (parse + validate) and ``ingest_prices`` from a folder
  (parse + validate + one transaction per ticker into a fresh DuckDB file) over synthetic
  Yahoo files, versus plain ``pandas.read_csv`` + ``concat`` of the same files;
* ``grouped``: :func:`parse_polygon_aggs` on synthetic grouped-daily JSON (the whole market,
  filtered to 500 tickers), versus ``json.loads`` + ``DataFrame.from_records``;
* ``real``: the 25 real Yahoo files when ``../shared/data/real`` is present.

Usage: ``.venv/bin/python bench/ingest_prices.py [--scale 1.0]`` (scale multiplies the ticker
count; 1.0 = 400 tickers x 10 years ~ 1.0M bars, 50 grouped days of 10,000 stocks).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from darkpool_analysis.config import load_config
from darkpool_analysis.ingest.prices import ingest_prices, tickers_in_dir
from darkpool_analysis.sources.prices import parse_polygon_aggs, read_yahoo_csv, yahoo_file_name
from darkpool_analysis.store import open_writer
from darkpool_analysis.trading_calendar import sessions_index

REAL_OHLCV = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "ohlcv"
              / "McNuggett_ticker-data_2020-11_2021-02")


def peak_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_bars(n_sessions: int, rng: np.random.Generator) -> pd.DataFrame:
    """A random walk of plausible bars (low <= open, close <= high)."""
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n_sessions)))
    open_ = close * np.exp(rng.normal(0, 0.01, n_sessions))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n_sessions))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n_sessions))
    volume = rng.integers(1_000, 50_000_000, n_sessions)
    return pd.DataFrame({"High": high, "Low": low, "Open": open_, "Close": close,
                         "Volume": volume, "Adj Close": close * 0.98})


def write_yahoo_files(folder: Path, n_tickers: int, start: str, end: str) -> int:
    """``n_tickers`` files in the real files' column order; returns the number of bars."""
    rng = np.random.default_rng(7)
    dates = sessions_index(start, end).strftime("%Y-%m-%d")
    for number in range(n_tickers):
        frame = synthetic_bars(len(dates), rng)
        frame.insert(0, "Date", dates)
        frame.to_csv(folder / yahoo_file_name(f"T{number:05d}"), index=False)
    return n_tickers * len(dates)


def grouped_payloads(n_days: int, n_stocks: int) -> list[bytes]:
    """Grouped-daily JSON bodies in Polygon's shape, ``n_stocks`` results each."""
    rng = np.random.default_rng(11)
    days = sessions_index("2024-01-02", "2024-12-31")[:n_days]
    bodies = []
    for day in days:
        bars = synthetic_bars(n_stocks, rng)
        stamp = int((day.tz_localize("America/New_York") + pd.Timedelta(hours=16)).value
                    // 1_000_000)
        results = [{"T": f"T{i:05d}", "v": float(v), "vw": float(c), "o": float(o),
                    "c": float(c), "h": float(h), "l": float(lo), "t": stamp, "n": 1}
                   for i, (v, c, o, h, lo) in enumerate(zip(
                       bars["Volume"], bars["Close"], bars["Open"], bars["High"], bars["Low"],
                       strict=True))]
        bodies.append(json.dumps({"status": "OK", "adjusted": True, "results": results,
                                  "resultsCount": n_stocks}).encode())
    return bodies


def report(name: str, rows: int, seconds: float, baseline_s: float | None = None) -> None:
    ratio = f"  ({seconds / baseline_s:.2f}x baseline time)" if baseline_s else ""
    print(f"{name:<42} {rows:>10,} rows {seconds:8.3f} s {rows / seconds:>12,.0f} rows/s "
          f"peak {peak_mb():7.0f} MB{ratio}")


def bench_csv(scale: float) -> None:
    n_tickers = max(1, round(400 * scale))
    start, end = "2014-01-02", "2023-12-29"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "yahoo"
        folder.mkdir()
        rows = write_yahoo_files(folder, n_tickers, start, end)
        files = sorted(folder.glob("*.csv"))

        began = time.perf_counter()
        frames = [pd.read_csv(path) for path in files]
        baseline = pd.concat(frames, ignore_index=True)
        baseline_s = time.perf_counter() - began
        report(f"csv baseline pandas.read_csv ({n_tickers} files)", len(baseline), baseline_s)

        began = time.perf_counter()
        parsed = sum(len(read_yahoo_csv(path)) for path in files)
        report("csv read_yahoo_csv parse+validate", parsed, time.perf_counter() - began,
               baseline_s)

        settings = load_config(db_path=Path(tmp) / "db.duckdb")
        began = time.perf_counter()
        with open_writer(settings.db_path) as writer:
            summary = ingest_prices(writer, settings, start, end,
                                    tickers=tickers_in_dir(folder), from_dir=folder)
        seconds = time.perf_counter() - began
        assert summary.rows == rows, (summary.rows, rows)
        report("csv ingest_prices parse+validate+store", summary.rows, seconds, baseline_s)


def bench_grouped(scale: float) -> None:
    n_days = max(1, round(50 * scale))
    bodies = grouped_payloads(n_days, 10_000)
    wanted = [f"T{i:05d}" for i in range(0, 10_000, 20)]  # 500 tickers

    began = time.perf_counter()
    total = sum(len(pd.DataFrame.from_records(json.loads(body)["results"])) for body in bodies)
    baseline_s = time.perf_counter() - began
    report(f"grouped baseline json+from_records ({n_days}d)", total, baseline_s)

    began = time.perf_counter()
    kept = sum(len(parse_polygon_aggs(json.loads(body), source="bench", symbols=wanted))
               for body in bodies)
    seconds = time.perf_counter() - began
    assert kept == 500 * n_days
    report("grouped parse_polygon_aggs (rows scanned)", total, seconds, baseline_s)


def bench_real() -> None:
    if not REAL_OHLCV.is_dir():
        print(f"real: skipped ({REAL_OHLCV} not found)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_config(db_path=Path(tmp) / "db.duckdb")
        began = time.perf_counter()
        with open_writer(settings.db_path) as writer:
            summary = ingest_prices(writer, settings, "2020-11-30", "2021-02-12",
                                    tickers=tickers_in_dir(REAL_OHLCV), from_dir=REAL_OHLCV)
        report("real 25 Yahoo files ingest_prices", summary.rows, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies the synthetic sizes (1.0 ~ 1M CSV bars)")
    args = parser.parse_args()
    bench_csv(args.scale)
    bench_grouped(args.scale)
    bench_real()


if __name__ == "__main__":
    main()
