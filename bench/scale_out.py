"""Scale-out benchmark: whole-market day files classified on serial, local:2 and dask-local:2.

Writes (once, cached outside the repository) ``--days`` synthetic sessions of about
``--trades`` trades and ``--quotes`` NBBO quotes over ``--symbols`` tickers in the Polygon
flat-file layout, then ingests the whole range into a fresh database on every executor,
side by side in one run (``--repeat`` rounds, executors interleaved, best round kept).
Prints days/min, trades/s, the speed-up over serial (parallel efficiency), CPU seconds of
the parent and of the worker processes, peak RSS per worker process and the per-day cost that
``docs/scale-out.md`` extrapolates from. On a shared machine compare the CPU seconds too: the
wall-clock ratio only means something while nothing else wants the cores (load average).

``local:N/uncapped`` is ``local:N`` without the one-thread-per-task cap of its workers
(the design before it), for a side-by-side comparison.

    .venv/bin/python bench/scale_out.py                    # the issue's 20 x 2M x 2M
    .venv/bin/python bench/scale_out.py --days 4 --trades 200000 --quotes 200000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from darkpool_analysis.config import load_config
from darkpool_analysis.executor import ResilientProcessPool, make_executor
from darkpool_analysis.ingest.trades import DEFAULT_CHUNK_MB, DayIngestSummary, ingest_day_files
from darkpool_analysis.sources.flatfiles import locate_day, write_synthetic_polygon_day
from darkpool_analysis.store import open_writer
from darkpool_analysis.trading_calendar import sessions_between

FIRST_DAY = dt.date(2024, 1, 2)


def sessions(count: int) -> list[dt.date]:
    """The first ``count`` XNYS sessions from :data:`FIRST_DAY`."""
    days = sessions_between(FIRST_DAY, FIRST_DAY + dt.timedelta(days=2 * count + 14))
    return list(days[:count])


def generate(cache: Path, days: list[dt.date], trades: int, quotes: int, symbols: int) -> int:
    """Write the sessions missing from ``cache`` (keyed by the sizes); returns input bytes."""
    total = 0
    for day in days:
        files = locate_day("polygon-flat", str(cache), day)
        if files is None or files.quotes is None:
            started = time.perf_counter()
            files = write_synthetic_polygon_day(cache, day, trades=trades, quotes=quotes,
                                                symbols=symbols, seed=2024)
            print(f"  generated {day} in {time.perf_counter() - started:.1f}s", flush=True)
        total += Path(files.trades).stat().st_size + Path(str(files.quotes)).stat().st_size
    return total


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def executor_for(spec: str) -> Iterator[Executor]:
    """``make_executor(spec)``, or for ``local:N/uncapped`` a pool without the thread cap."""
    if spec.endswith("/uncapped"):
        workers = int(spec.removesuffix("/uncapped").removeprefix("local:"))
        pool = ResilientProcessPool(workers, env={})
        try:
            yield pool
        finally:
            pool.shutdown()
        return
    with make_executor(spec) as executor:
        yield executor


@dataclass
class Run:
    """One ingest of the whole range on one executor."""

    seconds: float          # wall from the executor's first task to the stored result
    startup: float          # wall before that: a LocalCluster's start (0 for local pools)
    parent_cpu: float       # CPU seconds of this (the parent) process, all its threads
    worker_cpu: float       # CPU seconds of the worker processes (and their children)
    load: float             # 1-minute load average right after the run
    summary: DayIngestSummary


def run(spec: str, cache: Path, days: list[dt.date], scratch: Path,
        chunk_mb: float = DEFAULT_CHUNK_MB) -> Run:
    """Ingest every session on ``spec`` into a fresh database."""
    home = Path(tempfile.mkdtemp(prefix=f"run-{spec.replace(':', '_').replace('/', '_')}-",
                                 dir=scratch))
    settings = load_config().model_copy(update={"db_path": home / "db.duckdb"})
    parent, children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    begun = time.perf_counter()
    try:
        with executor_for(spec) as executor:
            # Timed from here: a local pool starts its processes at the first task (part of
            # the figure); a LocalCluster's start-up before this is reported apart.
            started = time.perf_counter()
            with open_writer(home / "db.duckdb") as writer:
                summary = ingest_day_files(writer, settings, source="polygon-flat",
                                           path=cache, start=days[0], end=days[-1],
                                           executor=executor, work_dir=home / "work",
                                           chunk_mb=chunk_mb)
            seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if summary.failures or summary.counts.done != len(days):
        raise SystemExit(f"{spec}: {summary.counts} {summary.failures}")
    # Worker processes are reaped at shut-down, so RUSAGE_CHILDREN holds their CPU time.
    return Run(seconds, started - begun, _cpu(resource.RUSAGE_SELF) - parent,
               _cpu(resource.RUSAGE_CHILDREN) - children, os.getloadavg()[0], summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--quotes", type=int, default=2_000_000)
    parser.add_argument("--symbols", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=1, help="rounds (best kept)")
    parser.add_argument("--executors", default="serial,local:2,dask-local:2")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) /
                        "darkpool-scale-bench")
    parser.add_argument("--chunk-mb", type=float, default=DEFAULT_CHUNK_MB,
                        help="symbol-bucket size (compressed MB): the memory bound per task")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cache = args.cache / f"{args.trades}t_{args.quotes}q_{args.symbols}s"  # first N sessions
    days = sessions(args.days)
    print(f"input: {len(days)} sessions {days[0]}..{days[-1]}, ~{args.trades:,} trades and "
          f"~{args.quotes:,} quotes over {args.symbols:,} symbols each, in {cache}")
    input_bytes = generate(cache, days, args.trades, args.quotes, args.symbols)
    scratch = Path(tempfile.mkdtemp(prefix="darkpool-scale-run-"))
    specs = [s.strip() for s in args.executors.split(",") if s.strip()]
    best: dict[str, Run] = {}
    loads: list[tuple[float, float, float]] = [os.getloadavg()]
    try:
        for round_ in range(1, args.repeat + 1):
            for spec in specs:
                result = run(spec, cache, days, scratch, args.chunk_mb)
                loads.append(os.getloadavg())
                print(f"  round {round_} {spec:>16}: {result.seconds:7.1f}s  CPU parent "
                      f"{result.parent_cpu:5.1f}s + workers {result.worker_cpu:6.1f}s  "
                      f"load {result.load:.1f}", flush=True)
                if spec not in best or result.seconds < best[spec].seconds:
                    best[spec] = result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = best[specs[0]]
    baseline = base.seconds
    print(f"\ninput {input_bytes / 1e6:,.0f} MB gzip CSV ({input_bytes / len(days) / 1e6:,.1f} "
          f"MB a session); load average 1/5/15 min before {loads[0][0]:.1f}/{loads[0][1]:.1f}/"
          f"{loads[0][2]:.1f}, after {loads[-1][0]:.1f}/{loads[-1][1]:.1f}/{loads[-1][2]:.1f}")
    print(f"symbol buckets per session: {max(r.buckets for r in base.summary.results)} "
          f"(--chunk-mb {args.chunk_mb:g})")
    print(f"{'executor':>16} {'wall s':>7} {'days/min':>8} {'trades/s':>9} "
          f"{'vs ' + specs[0]:>9} {'task s':>6} {'task CPU':>8} {'parent CPU':>10} "
          f"{'worker CPU':>10} {'CPU/day':>7} {'start s':>7} {'load':>5} {'RSS MB':>7}")
    figures = {}
    for spec in specs:
        result = best[spec]
        seconds, summary = result.seconds, result.summary
        tasks = [r.seconds for r in summary.results]
        trades = summary.counts.trades
        peak = max(r.peak_rss_mb for r in summary.results)
        cpu_per_day = (result.parent_cpu + result.worker_cpu) / len(days)
        figures[spec] = {"seconds": seconds, "chunk_mb": args.chunk_mb,
                         "days_per_min": len(days) / seconds * 60,
                         "trades_per_s": trades / seconds, "speedup": baseline / seconds,
                         "task_seconds_median": statistics.median(tasks),
                         "task_seconds_mean": statistics.fmean(tasks),
                         "task_cpu_seconds_median": statistics.median(
                             r.cpu_seconds for r in summary.results),
                         "parent_cpu_seconds": result.parent_cpu,
                         "worker_cpu_seconds": result.worker_cpu,
                         "cpu_seconds_per_day": cpu_per_day, "startup_seconds": result.startup,
                         "load_after": result.load, "peak_rss_mb": peak, "trades": trades}
        print(f"{spec:>16} {seconds:7.1f} {len(days) / seconds * 60:8.2f} "
              f"{trades / seconds:9,.0f} {baseline / seconds:8.2f}x "
              f"{statistics.median(tasks):6.1f} "
              f"{figures[spec]['task_cpu_seconds_median']:8.2f} {result.parent_cpu:10.1f} "
              f"{result.worker_cpu:10.1f} {cpu_per_day:7.2f} {result.startup:7.1f} "
              f"{result.load:5.1f} {peak:7,.0f}")
    parts = ("fetch", "read", "classify", "write")
    print(f"\nmedian task parts, wall/CPU s ({', '.join(parts)}); the parent's store, total")
    for spec in specs:
        summary = best[spec].summary
        cells = []
        for part in parts:
            walls = [r.phases[part][0] for r in summary.results if part in r.phases]
            cpus = [r.phases[part][1] for r in summary.results if part in r.phases]
            cells.append(f"{statistics.median(walls):5.2f}/{statistics.median(cpus):5.2f}"
                         if walls else "    -/-    ")
        store = summary.phases.get("store", (0.0, 0.0))
        figures[spec]["task_phases_median"] = {
            part: [statistics.median(r.phases[part][i] for r in summary.results)
                   for i in (0, 1)]
            for part in parts if all(part in r.phases for r in summary.results)}
        figures[spec]["parent_store"] = list(store)
        print(f"{spec:>16} {'  '.join(cells)}   store {store[0]:5.2f}/{store[1]:5.2f}")
    per_day = figures[specs[0]]["task_seconds_median"]
    print(f"\nper-day cost (median {specs[0]} task): {per_day:.1f} s for "
          f"{figures[specs[0]]['trades'] / len(days):,.0f} classified trades "
          f"({figures[specs[0]]['trades'] / len(days) / per_day:,.0f} trades/s a worker)")
    if args.json:
        args.json.write_text(json.dumps({"days": len(days), "input_bytes": input_bytes,
                                         "loads": loads, "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
