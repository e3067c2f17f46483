"""Scale-out benchmark: whole-market day files classified on serial, local:2 and dask-local:2.

Writes (once, cached outside the repository) ``--days`` synthetic sessions of about
``--trades`` trades and ``--quotes`` NBBO quotes over ``--symbols`` tickers in the Polygon
flat-file layout, then ingests the whole range into a fresh database on every executor,
side by side in one run (``--repeat`` rounds, executors interleaved, best round kept).
Prints days/min, trades/s, the speed-up over serial (parallel efficiency), peak RSS per
worker process and the per-day cost that ``docs/scale-out.md`` extrapolates from.

    .venv/bin/python bench/scale_out.py                    # the issue's 20 x 2M x 2M
    .venv/bin/python bench/scale_out.py --days 4 --trades 200000 --quotes 200000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from darkpool_analysis.config import load_config
from darkpool_analysis.executor import make_executor
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


def run(spec: str, cache: Path, days: list[dt.date], scratch: Path,
        chunk_mb: float = DEFAULT_CHUNK_MB) -> tuple[float, DayIngestSummary]:
    """Ingest every session on ``spec`` into a fresh database; (seconds, summary)."""
    home = Path(tempfile.mkdtemp(prefix=f"run-{spec.replace(':', '_')}-", dir=scratch))
    settings = load_config().model_copy(update={"db_path": home / "db.duckdb"})
    try:
        with make_executor(spec) as executor:  # pool start-up is part of the figure
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
    return seconds, summary


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
    best: dict[str, tuple[float, DayIngestSummary]] = {}
    loads: list[tuple[float, float, float]] = [os.getloadavg()]
    try:
        for round_ in range(1, args.repeat + 1):
            for spec in specs:
                seconds, summary = run(spec, cache, days, scratch, args.chunk_mb)
                loads.append(os.getloadavg())
                print(f"  round {round_} {spec:>13}: {seconds:7.1f}s  load "
                      f"{loads[-1][0]:.1f}", flush=True)
                if spec not in best or seconds < best[spec][0]:
                    best[spec] = (seconds, summary)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    baseline = best[specs[0]][0]
    print(f"\ninput {input_bytes / 1e6:,.0f} MB gzip CSV ({input_bytes / len(days) / 1e6:,.1f} "
          f"MB a session); load average 1/5/15 min before {loads[0][0]:.1f}/{loads[0][1]:.1f}/"
          f"{loads[0][2]:.1f}, after {loads[-1][0]:.1f}/{loads[-1][1]:.1f}/{loads[-1][2]:.1f}")
    print(f"symbol buckets per session: {max(r.buckets for r in best[specs[0]][1].results)} "
          f"(--chunk-mb {args.chunk_mb:g})")
    header = (f"{'executor':>13} {'wall s':>8} {'days/min':>9} {'trades/s':>11} "
              f"{'vs ' + specs[0]:>10} {'task s/day':>11} {'task CPU s':>11} "
              f"{'peak RSS/worker MB':>19}")
    print(header)
    figures = {}
    for spec in specs:
        seconds, summary = best[spec]
        tasks = [r.seconds for r in summary.results]
        trades = summary.counts.trades
        peak = max(r.peak_rss_mb for r in summary.results)
        figures[spec] = {"seconds": seconds, "chunk_mb": args.chunk_mb,
                         "days_per_min": len(days) / seconds * 60,
                         "trades_per_s": trades / seconds, "speedup": baseline / seconds,
                         "task_seconds_median": statistics.median(tasks),
                         "task_seconds_mean": statistics.fmean(tasks),
                         "task_cpu_seconds_median": statistics.median(
                             r.cpu_seconds for r in summary.results),
                         "peak_rss_mb": peak, "trades": trades}
        print(f"{spec:>13} {seconds:8.1f} {len(days) / seconds * 60:9.2f} "
              f"{trades / seconds:11,.0f} {baseline / seconds:9.2f}x "
              f"{statistics.median(tasks):11.1f} "
              f"{figures[spec]['task_cpu_seconds_median']:11.1f} {peak:19,.0f}")
    per_day = figures[specs[0]]["task_seconds_median"]
    print(f"\nper-day cost (median {specs[0]} task): {per_day:.1f} s for "
          f"{figures[specs[0]]['trades'] / len(days):,.0f} classified trades "
          f"({figures[specs[0]]['trades'] / len(days) / per_day:,.0f} trades/s a worker)")
    if args.json:
        args.json.write_text(json.dumps({"days": len(days), "input_bytes": input_bytes,
                                         "loads": loads, "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
