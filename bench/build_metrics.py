"""Benchmark ``darkpool build`` (read + compute + write of daily_metrics) on synthetic data.

For each size SYMBOLSxSESSIONS a DuckDB database with CNMS short-sale rows and daily bars is
generated, then, each in a fresh subprocess (so peak RSS is its own):

* ``build``: ``build_metrics`` on the whole database (read, compute, one write transaction);
* ``pandas``: a straightforward pandas implementation of the same columns (merge on the
  session grid, ``groupby().rolling()`` z-scores), compute only, as the baseline.

The build line shows the wall seconds and their read / compute / write parts (the inserts
run in a worker thread while the next batch is computed, so the parts overlap), rows/s, the
process CPU seconds (user + sys: on a shared 2-core machine wall time is noisy, CPU time
much less so) and peak RSS. "ours compute" re-runs the build with the insert replaced by a
no-op (grid + every column + Arrow conversion, read excluded like the baseline's) and
"speed-up" is the pandas baseline's seconds over it. "copy" is DuckDB copying
the built table into a new one in the same run (``CREATE TABLE AS SELECT *``, same settings):
the cost of storing that many rows of the ``daily_metrics`` schema with no Python and no
computation, a floor for any build that writes the table; "vs copy" is build / copy.

Usage::

    python bench/build_metrics.py --sizes 500x250,3000x1260,10000x1260
    python bench/build_metrics.py --scale 0.1          # every size's symbols x 0.1
    python bench/build_metrics.py --sizes 500x250 --baseline-max-rows 0   # skip the baseline
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from darkpool_analysis import build as build_module
from darkpool_analysis.build import build_metrics, bulk_insert_settings
from darkpool_analysis.config import load_config
from darkpool_analysis.store import Writer, migrate, open_writer
from darkpool_analysis.trading_calendar import sessions_index


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generate(db: Path, n_symbols: int, n_sessions: int, seed: int = 0) -> int:
    """Write synthetic CNMS rows (5% missing) and bars for every symbol; return grid rows."""
    rng = np.random.default_rng(seed)
    days = sessions_index("2015-01-02", "2025-12-31")[-n_sessions:].values.astype("datetime64[D]")
    n = n_symbols * n_sessions
    names = np.array([f"S{i:05d}" for i in range(n_symbols)])
    symbol = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(n_symbols, dtype=np.int32), n_sessions)), pa.array(names))
    date = pa.array(np.tile(days, n_symbols))
    total = np.round(rng.lognormal(13, 1, n))
    short = np.round(total * rng.uniform(0.2, 0.7, n))
    keep = pa.array(rng.random(n) > 0.05)
    now = pa.array(np.full(n, np.datetime64("2025-01-01T00:00:00"), dtype="datetime64[us]"))
    short_table = pa.table({
        "trade_date": date, "facility": pa.array(np.full(n, "CNMS")), "symbol": symbol,
        "symbol_norm": symbol, "short_volume": short, "short_exempt_volume": short * 0.01,
        "total_volume": total, "market": pa.array(np.full(n, "Q")),
        "source_file": pa.array(np.full(n, "synthetic")), "sha256": pa.array(np.full(n, "0")),
        "fetched_at": now}).filter(keep)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_symbols, n_sessions)), axis=1)).ravel()
    price_table = pa.table({
        "symbol": symbol, "date": date, "open": close, "high": close * 1.01,
        "low": close * 0.99, "close": close, "vwap": close, "volume": total * 3,
        "provider": pa.array(np.full(n, "csv")), "fetched_at": now})
    with duckdb.connect(str(db)) as conn:
        migrate(conn)
        conn.register("short_rows", short_table)
        conn.register("price_rows", price_table)
        conn.execute("INSERT INTO finra_short_daily_raw BY NAME SELECT * FROM short_rows")
        conn.execute("INSERT INTO prices_daily BY NAME SELECT * FROM price_rows")
    return n


def copy_floor(writer: Writer) -> tuple[float, float]:
    """Wall and CPU seconds DuckDB takes to copy the built ``daily_metrics`` into a new table
    (``CREATE TABLE AS SELECT *`` + commit, the build's insert settings): the cost of writing
    that many rows of this schema with no Python and no computation at all, a floor for any
    build that stores the table."""
    with writer.transaction() as tx, bulk_insert_settings(tx):
        cpu = _cpu_seconds()
        started = time.perf_counter()
        tx.execute("CREATE TABLE _bench_copy AS SELECT * FROM daily_metrics")
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    with writer.transaction() as tx:
        tx.execute("DROP TABLE _bench_copy")
    return seconds, cpu


def run_build(db: Path) -> dict[str, float]:
    settings = load_config(db_path=db)
    with open_writer(db, publish_interval=1e9) as writer:
        cpu = _cpu_seconds()
        result = build_metrics(writer, settings)
        cpu = _cpu_seconds() - cpu
        peak_mb = _peak_mb()
        floor, floor_cpu = copy_floor(writer)
    return {"seconds": result.seconds, "read": result.read_seconds,
            "compute": result.compute_seconds, "write": result.write_seconds, "cpu": cpu,
            "rows": result.rows_written, "peak_mb": peak_mb, "floor": floor,
            "floor_cpu": floor_cpu}


def run_compute(db: Path) -> dict[str, float]:
    """``build_metrics`` with the insert replaced by a no-op (this bench process only): the
    grid + every column + Arrow conversion of each batch without DuckDB's writer competing
    for the cores, the figure comparable to the compute-only pandas baseline."""
    settings = load_config(db_path=db)
    build_module._insert_metrics = lambda conn, table: 0.0
    with open_writer(db, publish_interval=1e9) as writer:
        result = build_metrics(writer, settings)
    return {"seconds": result.seconds, "read": result.read_seconds,
            "compute": result.compute_seconds, "rows": result.rows_written}


def run_pandas(db: Path) -> dict[str, float]:
    """The obvious pandas implementation of the same columns (compute only)."""
    settings = load_config(db_path=db)
    w, mp = settings.short_z_window, settings.zscore_min_periods
    with duckdb.connect(str(db), read_only=True) as conn:
        short = conn.execute("SELECT symbol_norm AS symbol, trade_date AS date, short_volume, "
                             "total_volume FROM finra_short_daily_raw").df()
        prices = conn.execute("SELECT symbol, date, open, high, low, close, volume "
                              "FROM prices_daily").df()
    started = time.perf_counter()
    seen = pd.concat([short[["symbol", "date"]], prices[["symbol", "date"]]])
    spans = seen.groupby("symbol")["date"].agg(["min", "max"]).reset_index()
    sessions = pd.DataFrame({"date": sessions_index(seen["date"].min(), seen["date"].max())})
    grid = spans.merge(sessions, how="cross")
    grid = grid.loc[(grid["date"] >= grid["min"]) & (grid["date"] <= grid["max"]),
                    ["symbol", "date"]]
    df = grid.merge(short, on=["symbol", "date"], how="left").merge(
        prices, on=["symbol", "date"], how="left").sort_values(["symbol", "date"])
    b = df["short_volume"]
    s = (df["total_volume"] - b).clip(lower=0)
    df["short_ratio"] = b / df["total_volume"]
    df["short_buy_sell_ratio"] = (b / s).where(s > 0)
    df["vw_flow"] = (b.fillna(0) - s.fillna(0)).where(b.notna() | s.notna())
    df["return_1d"] = df["close"] / df.groupby("symbol")["close"].shift(1) - 1
    df["range_pct"] = (df["high"] - df["low"]) / df["close"]
    for column in ("short_buy_sell_ratio", "short_ratio", "short_volume", "vw_flow",
                   "return_1d"):
        rolling = df.groupby("symbol")[column].rolling(w, min_periods=mp)
        mean = rolling.mean().reset_index(level=0, drop=True)
        std = rolling.std(ddof=0).reset_index(level=0, drop=True)
        df[f"{column}_z"] = (df[column] - mean) / std.where(std > 0)
    return {"seconds": time.perf_counter() - started, "rows": len(df), "peak_mb": _peak_mb()}


def _child(phase: str, db: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--phase", phase, "--db", str(db)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500x250,3000x1260,10000x1260",
                        help="comma-separated SYMBOLSxSESSIONS")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every size's number of symbols by this factor")
    parser.add_argument("--baseline-max-rows", type=int, default=20_000_000,
                        help="skip the pandas baseline above this many grid rows")
    parser.add_argument("--phase", choices=["build", "compute", "pandas"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        runner = {"build": run_build, "compute": run_compute, "pandas": run_pandas}[args.phase]
        print(json.dumps(runner(args.db)))
        return
    print(f"{'size':>12} {'rows':>11} {'build s':>8} {'read':>6} {'compute':>7} {'write':>6} "
          f"{'rows/s':>11} {'cpu s':>6} {'peak MB':>8} {'copy s':>7} {'copy cpu':>8} "
          f"{'vs copy':>7} {'ours compute':>12} {'pandas s':>9} {'pandas MB':>9} "
          f"{'speed-up':>8}")
    for size in args.sizes.split(","):
        n_symbols, n_sessions = (int(v) for v in size.lower().split("x"))
        n_symbols = max(1, round(n_symbols * args.scale))
        size = f"{n_symbols}x{n_sessions}"
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.duckdb"
            generate(db, n_symbols, n_sessions)
            build = _child("build", db)
            line = (f"{size:>12} {build['rows']:>11,} {build['seconds']:>8.2f} "
                    f"{build['read']:>6.2f} {build['compute']:>7.2f} {build['write']:>6.2f} "
                    f"{build['rows'] / build['seconds']:>11,.0f} {build['cpu']:>6.1f} "
                    f"{build['peak_mb']:>8.0f} {build['floor']:>7.2f} {build['floor_cpu']:>8.1f} "
                    f"{build['seconds'] / build['floor']:>6.2f}x")
            if build["rows"] <= args.baseline_max_rows:
                ours = _child("compute", db)
                base = _child("pandas", db)
                line += (f" {ours['compute']:>12.2f} {base['seconds']:>9.2f} "
                         f"{base['peak_mb']:>9.0f} {base['seconds'] / ours['compute']:>7.1f}x")
            else:
                line += f" {'skipped':>12}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
