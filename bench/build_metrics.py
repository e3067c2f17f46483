"""Benchmark ``darkpool build`` (read + compute + write of daily_metrics) on synthetic data.

For each size SYMBOLSxSESSIONS a DuckDB database with CNMS short-sale rows and daily bars is
generated, then, each in a fresh subprocess (so peak RSS is its own):

* ``build``: ``build_metrics`` on the whole database (read, compute, one write transaction);
* ``pandas``: a straightforward pandas implementation of the same columns (merge on the
  session grid, ``groupby().rolling()`` z-scores), compute only, as the baseline.

The build line shows the wall seconds and their read / compute / write parts (the Parquet
writes run in a worker thread while the next batch is computed, so the parts overlap),
rows/s, the process CPU seconds (user + sys) and peak RSS. "ipc s" is the physical floor
measured in the same process: writing the finished table (read back as one Arrow table) as
uncompressed Arrow IPC; "vs ipc" is build / ipc (target <= 2.5x).

The compute line re-runs the build with the file write replaced by a no-op (read + grid +
every column + Arrow table per batch; the read runs in its own thread, overlapped): its wall
seconds ("no-write s"), process CPU seconds, rows/s and peak RSS, its compute part ("comp",
the computing thread's seconds; "speed-up" is the pandas baseline over it), and "JIT s", the
numba kernels' first call in a fresh process (loading their cached machine code; a compile
when the cache is cold). Build and compute figures are the best of ``--repeat`` runs.

The storage line (issue 13): "update s" is a one-session daily update through the CLI as a
user runs it (``darkpool ingest finra-short`` of one new CNMS file, automatic rebuild and
publication: the whole process, wall seconds), and "publish s" the publication of a small
change at full size and on a ~30 MB database (best of 3 each).

Usage::

    python bench/build_metrics.py --sizes 500x250,3000x1260,10000x1260
    python bench/build_metrics.py --scale 0.1          # every size's symbols x 0.1
    python bench/build_metrics.py --sizes 500x250 --baseline-max-rows 0   # skip the baseline
"""

from __future__ import annotations

import argparse
import json
import os
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
from darkpool_analysis.build import build_metrics
from darkpool_analysis.config import load_config
from darkpool_analysis.store import Writer, master_path_for, migrate, open_writer
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
    with duckdb.connect(str(master_path_for(db))) as conn:
        migrate(conn)
        conn.register("short_rows", short_table)
        conn.register("price_rows", price_table)
        conn.execute("INSERT INTO finra_short_daily_raw BY NAME SELECT * FROM short_rows")
        conn.execute("INSERT INTO prices_daily BY NAME SELECT * FROM price_rows")
        # written behind the writer's back: have the first publication export them whole
        for table in ("finra_short_daily_raw", "prices_daily"):
            conn.execute("INSERT INTO store_pending VALUES (?, NULL, NULL, NULL)", [table])
    with open_writer(db) as writer:
        writer.log_outcome("bench", None, outcome="generated")
    return n


def write_next_cnms(db: Path, folder: Path) -> str:
    """A CNMS file for the session after the last stored one, every symbol; returns it."""
    with duckdb.connect(str(master_path_for(db)), read_only=True) as conn:
        last, names = conn.execute("SELECT max(trade_date), list(DISTINCT symbol_norm) "
                                   "FROM finra_short_daily_raw").fetchone()
    day = sessions_index(last, last + pd.Timedelta(days=10))[1].date()
    rng = np.random.default_rng(1)
    total = rng.integers(10_000, 5_000_000, len(names))
    short = (total * rng.uniform(0.2, 0.7, len(names))).astype(np.int64)
    stamp = day.strftime("%Y%m%d")
    lines = [f"{stamp}|{s}|{b}|{b // 100}|{t}|Q"
             for s, b, t in zip(sorted(names), short, total, strict=True)]
    body = "\r\n".join(["Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume|Market",
                         *lines, str(len(lines))]) + "\r\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"CNMSshvol{stamp}.txt").write_bytes(body.encode())
    return str(day)


def ipc_floor(writer: Writer, folder: Path) -> tuple[float, float, float]:
    """Wall and CPU seconds of writing the finished ``daily_metrics`` (read back as one Arrow
    table) as uncompressed Arrow IPC: the physical floor of storing it. Also the seconds of
    pyarrow's Parquet write of the same table as 2 snappy files on 2 threads."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    table = writer.conn.sql("SELECT * FROM daily_metrics").to_arrow_table().combine_chunks()
    cpu = _cpu_seconds()
    started = time.perf_counter()
    with pa.OSFile(str(folder / "floor.arrow"), "wb") as sink, \
            pa.ipc.new_file(sink, table.schema) as ipc:
        ipc.write_table(table)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    half = table.num_rows // 2
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda k: pq.write_table(
            table.slice(k * half, half if k == 0 else None), folder / f"floor{k}.parquet",
            compression="snappy"), range(2)))
    parquet = time.perf_counter() - started
    return seconds, cpu, parquet


def run_build(db: Path) -> dict[str, float]:
    settings = load_config(db_path=db)
    with open_writer(db, publish_interval=1e9) as writer:
        cpu = _cpu_seconds()
        result = build_metrics(writer, settings)
        cpu = _cpu_seconds() - cpu
        peak_mb = _peak_mb()
        floor, floor_cpu, parquet = ipc_floor(writer, db.parent)
    return {"seconds": result.seconds, "read": result.read_seconds,
            "compute": result.compute_seconds, "write": result.write_seconds, "cpu": cpu,
            "rows": result.rows_written, "peak_mb": peak_mb, "floor": floor,
            "floor_cpu": floor_cpu, "parquet": parquet}


def run_update(db: Path) -> dict[str, float]:
    """One-session daily update through the CLI, the whole process (best of 3, each on its
    own copy of the store so every run adds the same new day)."""
    import shutil

    darkpool = str(Path(sys.executable).with_name("darkpool"))
    best = float("inf")
    for attempt in range(3):
        copy = db.parent / f"update{attempt}"
        shutil.copytree(db.parent, copy, ignore=shutil.ignore_patterns("update*", "*.arrow",
                                                                        "floor*", "cnms*"))
        target = copy / db.name
        day = write_next_cnms(target, copy / "cnms")
        # the catalogue points at the original folder: publish once so it is this copy's
        with open_writer(target) as writer:
            writer.log_outcome("bench", None, outcome="copied")
        started = time.perf_counter()
        subprocess.run([darkpool, "ingest", "finra-short", "--from-dir", str(copy / "cnms"),
                        "--start", day, "--end", day], check=True, capture_output=True,
                       env={**os.environ, "DARKPOOL_DB": str(target)})
        best = min(best, time.perf_counter() - started)
        shutil.rmtree(copy)
    return {"update": best}


def run_publish(db: Path) -> dict[str, float]:
    """Seconds of publishing one small change (an ingest_log row), best of 3."""
    best = float("inf")
    with open_writer(db, publish_interval=1e9) as writer:
        for _ in range(3):
            writer.log_outcome("bench", None, outcome="tick")
            started = time.perf_counter()
            writer.publish()
            best = min(best, time.perf_counter() - started)
    size = sum(f.stat().st_size for f in db.parent.rglob("*") if f.is_file())
    return {"publish": best, "bytes": size}


def run_compute(db: Path) -> dict[str, float]:
    """``build_metrics`` with the file write replaced by a no-op (this bench process only):
    read + grid + every column + Arrow table of each batch without the writer competing for
    the cores; its compute part is the figure comparable to the compute-only pandas
    baseline. Measures the kernels' first call (JIT) first, in this fresh process."""
    settings = load_config(db_path=db)
    build_module._write_batch = lambda files, table: 0.0
    from darkpool_analysis import kernels

    jit = time.perf_counter()
    kernels.warm_up()
    jit = time.perf_counter() - jit
    with open_writer(db, publish_interval=1e9) as writer:
        cpu = _cpu_seconds()
        result = build_metrics(writer, settings)
        cpu = _cpu_seconds() - cpu
    return {"seconds": result.seconds, "read": result.read_seconds,
            "compute": result.compute_seconds, "rows": result.rows_written, "cpu": cpu,
            "peak_mb": _peak_mb(), "jit": jit}


def run_pandas(db: Path) -> dict[str, float]:
    """The obvious pandas implementation of the same columns (compute only)."""
    settings = load_config(db_path=db)
    w, mp = settings.short_z_window, settings.zscore_min_periods
    with duckdb.connect(str(master_path_for(db)), read_only=True) as conn:
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


def _best(phase: str, db: Path, repeat: int) -> dict[str, float]:
    """Best of ``repeat`` fresh-process runs of a phase, figure by figure (the minimum of
    each time and peak; the row count of the first run)."""
    runs = [_child(phase, db) for _ in range(max(1, repeat))]
    return {key: (min(run[key] for run in runs) if key != "rows" else runs[0][key])
            for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500x250,3000x1260,10000x1260",
                        help="comma-separated SYMBOLSxSESSIONS")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every size's number of symbols by this factor")
    parser.add_argument("--repeat", type=int, default=3,
                        help="build and compute figures: best of this many runs")
    parser.add_argument("--baseline-max-rows", type=int, default=20_000_000,
                        help="skip the pandas baseline above this many grid rows")
    parser.add_argument("--small", default="250x1260",
                        help="SYMBOLSxSESSIONS of the ~30 MB database for the publish figure")
    parser.add_argument("--phase", choices=["build", "compute", "pandas", "update", "publish"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        runner = {"build": run_build, "compute": run_compute, "pandas": run_pandas,
                  "update": run_update, "publish": run_publish}[args.phase]
        print(json.dumps(runner(args.db)))
        return
    print(f"{'size':>12} {'rows':>11} {'build s':>8} {'read':>6} {'compute':>7} {'write':>6} "
          f"{'rows/s':>11} {'cpu s':>6} {'peak MB':>8} {'ipc s':>6} {'ipc cpu':>7} "
          f"{'vs ipc':>6} {'pq 2thr':>7} {'ours compute':>12} {'pandas s':>9} "
          f"{'pandas MB':>9} {'speed-up':>8}")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    storage: list[str] = []
    computed: list[str] = []
    small_n, small_sessions = (int(v) for v in args.small.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        small_db = Path(tmp) / "small" / "bench.duckdb"
        small_db.parent.mkdir()
        generate(small_db, small_n, small_sessions)
        _child("build", small_db)
        small = _child("publish", small_db)
    for size in args.sizes.split(","):
        n_symbols, n_sessions = (int(v) for v in size.lower().split("x"))
        n_symbols = max(1, round(n_symbols * args.scale))
        size = f"{n_symbols}x{n_sessions}"
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.duckdb"
            generate(db, n_symbols, n_sessions)
            build = _best("build", db, args.repeat)
            ours = _best("compute", db, args.repeat)
            line = (f"{size:>12} {build['rows']:>11,} {build['seconds']:>8.2f} "
                    f"{build['read']:>6.2f} {build['compute']:>7.2f} {build['write']:>6.2f} "
                    f"{build['rows'] / build['seconds']:>11,.0f} {build['cpu']:>6.1f} "
                    f"{build['peak_mb']:>8.0f} {build['floor']:>6.2f} {build['floor_cpu']:>7.1f} "
                    f"{build['seconds'] / build['floor']:>5.2f}x {build['parquet']:>7.2f}")
            computed.append(
                f"{size:>12} {ours['seconds']:>10.2f} {ours['compute']:>6.2f} "
                f"{ours['cpu']:>6.1f} {ours['rows'] / ours['seconds']:>11,.0f} "
                f"{ours['peak_mb']:>8.0f} {ours['jit']:>6.2f}")
            if build["rows"] <= args.baseline_max_rows:
                base = _child("pandas", db)
                line += (f" {ours['compute']:>12.2f} {base['seconds']:>9.2f} "
                         f"{base['peak_mb']:>9.0f} {base['seconds'] / ours['compute']:>7.1f}x")
            else:
                line += f" {'skipped':>12}"
            print(line, flush=True)
            update = _child("update", db)
            publish = _child("publish", db)
            storage.append(
                f"{size:>12} {update['update']:>9.2f} {publish['publish']:>10.3f} "
                f"{publish['bytes'] / 1e6:>9,.0f} {small['publish']:>10.3f} "
                f"{small['bytes'] / 1e6:>9,.0f} "
                f"{publish['publish'] / small['publish']:>7.2f}x")
    print(f"\n{'size':>12} {'no-write s':>10} {'comp':>6} {'cpu s':>6} {'rows/s':>11} "
          f"{'peak MB':>8} {'JIT s':>6}")
    for line in computed:
        print(line)
    print(f"\n{'size':>12} {'update s':>9} {'publish s':>10} {'MB':>9} {'small pub':>10} "
          f"{'small MB':>9} {'ratio':>8}")
    for line in storage:
        print(line)
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
