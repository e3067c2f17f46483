"""Benchmark ``darkpool build`` (read + compute + write of daily_metrics) on synthetic data.

For each size SYMBOLSxSESSIONS a database with CNMS short-sale rows and daily bars is
generated (in the writer's master store), then, each in a fresh subprocess (so peak RSS is
its own):

* ``build``: ``build_metrics`` on the whole database (read, compute, Parquet segment write,
  one transaction);
* ``compute``: the same build with the file write replaced by a no-op: read + grid + every
  column + Arrow table per batch (the read runs in its own thread, overlapped). Printed:
  wall ("no-write s") and CPU seconds, rows/s and peak RSS of that build, its compute part
  ("comp", the computing thread's seconds; "speed-up" is the pandas baseline over it),
  then, in the same process on the same finished Arrow batches (12.6 M rows held in
  memory, after the peak was taken): the Arrow IPC write (uncompressed stream, one file,
  durable: the physical floor of any write; the faster of a buffered write + ``fsync`` and
  an ``O_DIRECT`` write, both printed), the pyarrow Parquet write (snappy, the batches split into
  2 files written by 2 threads), the same after casting to the store's file schema (its
  stored columns, plain strings), and ratios to the floor;
* ``pandas``: a straightforward pandas implementation of the same short/price columns (merge
  on the session grid, ``groupby().rolling()`` z-scores), compute only, as the baseline.

The build line shows the wall seconds and their read / compute / write parts (they run in
three threads and overlap, so they add up to more than the wall time), rows/s, the process
CPU seconds (user + sys: on a shared 2-core machine wall time is noisy, CPU time much less so)
and peak RSS. "first JIT" is the numba kernels' first-call cost in a fresh process (loading
the cached machine code; compiling when the cache is cold). Every figure is the best of
``--repeat`` runs (default 3).

The storage table (issue 13): "update s" is a one-session daily update through the CLI as a
user runs it (``darkpool ingest finra-short`` of one new CNMS file, automatic rebuild and
publication: the whole process, wall seconds, best of 3), "publish s" the publication of a
small change at that size and on a ~30 MB database (``--small``), best of 3 each.

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
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from darkpool_analysis import build as build_module
from darkpool_analysis.build import build_metrics
from darkpool_analysis.config import load_config
from darkpool_analysis.store import master_path_for, open_writer
from darkpool_analysis.store.segments import DirectFile, arrow_schema
from darkpool_analysis.trading_calendar import sessions_index


def _peak_mb() -> float:
    """This process's peak RSS (``VmHWM``: ``ru_maxrss`` survives ``exec``, so a child
    started by this bench would report its parent's peak, e.g. the data generation's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generate(db: Path, n_symbols: int, n_sessions: int, seed: int = 0,
             layout: str = "date") -> int:
    """Write synthetic CNMS rows (5% missing) and bars for every symbol into the writer's
    master store of ``db``; return grid rows. ``layout='date'`` stores the rows session by
    session, as ``darkpool ingest`` does (one file per session); ``'symbol'`` symbol by
    symbol (the layout of earlier rounds of this bench, which no ingest produces)."""
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
    with open_writer(db, publish_interval=1e9) as writer, writer.transaction() as tx:
        tx.register("short_rows", short_table)
        tx.register("price_rows", price_table)
        short_order, price_order = (("trade_date, symbol_norm", "date, symbol")
                                    if layout == "date" else ("symbol_norm, trade_date",
                                                              "symbol, date"))
        tx.execute("INSERT INTO finra_short_daily_raw BY NAME SELECT * FROM short_rows "
                   f"ORDER BY {short_order}")
        tx.execute("INSERT INTO prices_daily BY NAME SELECT * FROM price_rows "
                   f"ORDER BY {price_order}")
        tx.unregister("short_rows")
        tx.unregister("price_rows")
        # written behind the Writer's API: have the publication export them whole
        for table in ("finra_short_daily_raw", "prices_daily"):
            tx.execute("INSERT INTO store_pending VALUES (?, NULL, NULL, NULL)", [table])
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


def run_build(db: Path) -> dict[str, float]:
    """The whole build: read, compute, Parquet segment write, commit."""
    settings = load_config(db_path=db)
    with open_writer(db, publish_interval=1e9) as writer:
        cpu = _cpu_seconds()
        result = build_metrics(writer, settings)
        cpu = _cpu_seconds() - cpu
        peak_mb = _peak_mb()
    return {"seconds": result.seconds, "read": result.read_seconds,
            "compute": result.compute_seconds, "write": result.write_seconds, "cpu": cpu,
            "rows": result.rows_written, "peak_mb": peak_mb}


def _write_ipc(tables: list[pa.Table], path: Path) -> None:
    """Arrow IPC stream (uncompressed; a stream, since every batch has its own symbol
    dictionary, which the IPC file format does not allow), through the page cache, then
    ``fsync`` (the build's files are durable when it returns)."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, tables[0].schema) as out:
        for table in tables:
            out.write_table(table)
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_ipc_direct(tables: list[pa.Table], path: Path) -> None:
    """The same stream written with ``O_DIRECT`` (the store's own write path), durable on
    return; through the page cache where the file system refuses ``O_DIRECT``."""
    direct = DirectFile.create(path)
    if direct is None:
        _write_ipc(tables, path)
        return
    with pa.ipc.new_stream(direct, tables[0].schema) as out:
        for table in tables:
            out.write_table(table)
    direct.close()


def _write_parquet_2(tables: list[pa.Table], folder: Path, schema: pa.Schema | None) -> None:
    """The batches in 2 snappy Parquet files, one per thread (cast to ``schema`` first when
    given, in the writing thread, as the store's segment writer does)."""
    halves = [tables[: len(tables) // 2 or 1], tables[len(tables) // 2 or 1:]]

    def write(part: list[pa.Table], path: Path) -> None:
        if not part:
            return
        target = schema or part[0].schema
        with pq.ParquetWriter(path, target, compression="snappy") as out:
            for table in part:
                out.write_table(table if schema is None else
                                table.select(schema.names).cast(schema))

    threads = [threading.Thread(target=write, args=(part, folder / f"part{k}.parquet"))
               for k, part in enumerate(halves)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _timed(function: object, *args: object) -> tuple[float, float]:
    cpu, started = _cpu_seconds(), time.perf_counter()
    function(*args)  # type: ignore[operator]
    return time.perf_counter() - started, _cpu_seconds() - cpu


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
                       env={**__import__("os").environ, "DARKPOOL_DB": str(target)})
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
    """``build_metrics`` with the file write replaced by a no-op and the finished batches,
    every column of them, kept (this bench process only): read + grid + every column +
    Arrow table, without a writer competing for the cores. Then, on those same batches: the
    Arrow IPC write (the floor) and the pyarrow Parquet writes."""
    settings = load_config(db_path=db)
    tables: list[pa.Table] = []
    compute_arrow = build_module.compute_daily_metrics_arrow

    def compute_every_column(*args: object, columns: list[str], **kwargs: object) -> pa.Table:
        # The floor is the write of the finished table, every column readers get (the
        # build computes them all; its files store all but the derived ones).
        table = compute_arrow(*args, **kwargs)  # type: ignore[arg-type]
        tables.append(table)
        return table.select(columns)

    def keep(pool: object, files: object, table: pa.Table) -> list[object]:
        return []

    build_module.compute_daily_metrics_arrow = compute_every_column  # type: ignore[assignment]
    build_module._write_batch = keep  # type: ignore[assignment]
    from darkpool_analysis import kernels, metrics  # noqa: F401 - import cost not in JIT
    # First call of each kernel in this fresh process (cached machine code, or a compile).
    tiny = metrics.GridArrays.from_frame(metrics.assemble_grid(
        pd.DataFrame({"symbol": ["A", "A"], "date": pd.to_datetime(["2021-01-04", "2021-01-05"]),
                      "short_volume": [1.0, 2.0], "short_exempt_volume": [0.0, 0.0],
                      "total_volume": [3.0, 4.0], "short_source": ["CNMS", "CNMS"]}),
        pd.DataFrame({c: [] for c in metrics.PRICE_INPUT_COLUMNS})))
    jit = time.perf_counter()
    metrics.compute_daily_metrics_arrow(tiny, settings)
    jit = time.perf_counter() - jit
    with open_writer(db, publish_interval=1e9) as writer:
        cpu = _cpu_seconds()
        result = build_metrics(writer, settings)
        cpu = _cpu_seconds() - cpu
        peak_mb = _peak_mb()
        store_schema = arrow_schema(writer, "daily_metrics")
    with tempfile.TemporaryDirectory(dir=db.parent) as tmp:
        buffered, buffered_cpu = _timed(_write_ipc, tables, Path(tmp) / "floor.arrow")
        (Path(tmp) / "floor.arrow").unlink()
        direct, direct_cpu = _timed(_write_ipc_direct, tables, Path(tmp) / "floor.arrow")
        # the floor: the faster of the two ways to put the finished table on disk
        ipc, ipc_cpu = min((buffered, buffered_cpu), (direct, direct_cpu))
        parquet, parquet_cpu = _timed(_write_parquet_2, tables, Path(tmp), None)
        cast, cast_cpu = _timed(_write_parquet_2, tables, Path(tmp), store_schema)
    return {"seconds": result.seconds, "read": result.read_seconds,
            "compute": result.compute_seconds, "rows": result.rows_written, "cpu": cpu,
            "peak_mb": peak_mb, "jit": jit, "ipc": ipc, "ipc_cpu": ipc_cpu,
            "ipc_buffered": buffered, "ipc_direct": direct,
            "parquet": parquet, "parquet_cpu": parquet_cpu, "parquet_cast": cast,
            "parquet_cast_cpu": cast_cpu}


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
    """Best of ``repeat`` runs of a phase, figure by figure (the minimum of each time and
    peak; counts from the first run)."""
    runs = [_child(phase, db) for _ in range(repeat)]
    return {key: (min(run[key] for run in runs) if key != "rows" else runs[0][key])
            for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500x250,3000x1260,10000x1260",
                        help="comma-separated SYMBOLSxSESSIONS")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every size's number of symbols by this factor")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--baseline-max-rows", type=int, default=20_000_000,
                        help="skip the pandas baseline above this many grid rows")
    parser.add_argument("--small", default="250x1260",
                        help="SYMBOLSxSESSIONS of the ~30 MB database for the publish figure")
    parser.add_argument("--layout", choices=["date", "symbol"], default="date",
                        help="order of the raw rows in the store: by session, as the ingest "
                             "writes them (default), or by symbol")
    parser.add_argument("--phase", choices=["build", "compute", "pandas", "update", "publish"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        runner = {"build": run_build, "compute": run_compute, "pandas": run_pandas,
                  "update": run_update, "publish": run_publish}[args.phase]
        print(json.dumps(runner(args.db)))
        return
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'size':>12} {'rows':>11} | {'build s':>7} {'read':>5} {'comp':>5} {'write':>5} "
          f"{'cpu s':>6} {'peak MB':>7} | {'no-write s':>10} {'comp':>5} {'cpu s':>6} "
          f"{'rows/s':>11} {'peak MB':>7} {'JIT s':>5} | {'IPC s':>5} {'cpu':>5} "
          f"{'pq s':>5} {'cpu':>5} {'pq/IPC':>6} {'pq str s':>8} | {'build/IPC':>9} | "
          f"{'pandas s':>8} {'speed-up':>8}")
    storage: list[str] = []
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
            generate(db, n_symbols, n_sessions, layout=args.layout)
            build = _best("build", db, args.repeat)
            ours = _best("compute", db, args.repeat)
            line = (f"{size:>12} {build['rows']:>11,} | {build['seconds']:>7.2f} "
                    f"{build['read']:>5.2f} {build['compute']:>5.2f} {build['write']:>5.2f} "
                    f"{build['cpu']:>6.1f} {build['peak_mb']:>7.0f} | "
                    f"{ours['seconds']:>10.2f} {ours['compute']:>5.2f} {ours['cpu']:>6.1f} "
                    f"{ours['rows'] / ours['seconds']:>11,.0f} {ours['peak_mb']:>7.0f} "
                    f"{ours['jit']:>5.2f} | {ours['ipc']:>5.2f} {ours['ipc_cpu']:>5.1f} "
                    f"{ours['parquet']:>5.2f} {ours['parquet_cpu']:>5.1f} "
                    f"{ours['parquet'] / ours['ipc']:>5.2f}x {ours['parquet_cast']:>8.2f} | "
                    f"{build['seconds'] / ours['ipc']:>8.2f}x |")
            if build["rows"] <= args.baseline_max_rows:
                base = _best("pandas", db, 1)
                line += (f" {base['seconds']:>8.2f} "
                         f"{base['seconds'] / ours['compute']:>7.1f}x")
            else:
                line += f" {'skipped':>8}"
            print(line, flush=True)
            print(f"{'':>12} IPC floor = the faster of: buffered + fsync "
                  f"{ours['ipc_buffered']:.2f} s, O_DIRECT {ours['ipc_direct']:.2f} s",
                  flush=True)
            update = _child("update", db)
            publish = _child("publish", db)
            storage.append(
                f"{size:>12} {update['update']:>9.2f} {publish['publish']:>10.3f} "
                f"{publish['bytes'] / 1e6:>9,.0f} {small['publish']:>10.3f} "
                f"{small['bytes'] / 1e6:>9,.0f} "
                f"{publish['publish'] / small['publish']:>7.2f}x")
    print(f"\nstorage: one-session update through the CLI (whole process, best of 3); publish "
          f"of a small change at this size and on the {args.small} database")
    print(f"{'size':>12} {'update s':>9} {'publish s':>10} {'MB':>9} {'small pub':>10} "
          f"{'small MB':>9} {'ratio':>8}")
    for text in storage:
        print(text)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
