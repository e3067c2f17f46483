"""Benchmark: FINRA Reg SHO parse and parse-and-store throughput.

Measures, on the real files (``--from-dir``, skipped when absent) and on a synthetic year of
CNMS files (``--scale`` x 252 files of ``--symbols`` rows, generated into a temp dir):

* baseline: plain ``pandas.read_csv(sep="|")`` of the same files (parse only, no validation);
* parse: :func:`parse_short_table` (validated Arrow table incl. normalised symbols);
* ingest: :func:`ingest_finra_short` from the folder into a fresh DuckDB file (parse, validate,
  one transaction per file, publish) -- the number the >= 1M rows/s target is about.

Usage: ``.venv/bin/python bench/ingest_finra.py [--scale 1.0] [--symbols 10000]``
"""

from __future__ import annotations

import argparse
import logging
import resource
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from darkpool_analysis.config import load_config
from darkpool_analysis.ingest.finra_short import ingest_finra_short
from darkpool_analysis.sources.finra_short import HEADER, file_name, parse_short_table
from darkpool_analysis.trading_calendar import sessions_between

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REAL = PROJECT_ROOT.parent / "shared" / "data" / "real" / "regsho_daily" / (
    "McNuggett_2020-12_2021-02")


def peak_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_symbols(count: int, rng: np.random.Generator) -> np.ndarray:
    """Unique CQS-style tickers; about 10% carry class/preferred/warrant suffixes."""
    letters = np.array(list(string.ascii_uppercase))
    roots = pd.unique(pd.Series(["".join(row) for row in rng.choice(letters, (count * 2, 4))]))
    roots = np.sort(roots[:count])
    suffixes = np.array(["/A", "/B", "pA", "pD", "/WS", "/U"])
    odd = rng.random(count) < 0.10
    out = roots.astype(object)
    out[odd] = out[odd] + rng.choice(suffixes, int(odd.sum()))
    return out


def write_synthetic_year(folder: Path, files: int, symbols: int, seed: int = 7) -> int:
    """Write ``files`` CNMS files (CRLF, trailer) for consecutive 2023 sessions; return rows."""
    rng = np.random.default_rng(seed)
    tickers = synthetic_symbols(symbols, rng)
    days = sessions_between("2023-01-01", "2024-12-31")[:files]
    rows = 0
    for day in days:
        total = rng.integers(100, 50_000_000, symbols).astype(float)
        short = np.floor(total * rng.uniform(0.2, 0.7, symbols))
        exempt = np.floor(short * rng.uniform(0, 0.02, symbols))
        frame = pd.DataFrame({"Date": f"{day:%Y%m%d}", "Symbol": tickers,
                              "ShortVolume": short.astype(np.int64),
                              "ShortExemptVolume": exempt.astype(np.int64),
                              "TotalVolume": total.astype(np.int64), "Market": "B,Q,N"})
        body = frame.to_csv(sep="|", index=False, header=False, lineterminator="\r\n")
        text = f"{HEADER}\r\n{body}{len(frame)}\r\n"
        (folder / file_name("CNMS", day)).write_bytes(text.encode())
        rows += len(frame)
    return rows


def timed(label: str, rows: int, files: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    rate = rows / seconds
    print(f"  {label:<34} {files:>5} files {rows:>10,} rows {seconds:8.2f} s "
          f"{files / seconds:8.1f} files/s {rate:>12,.0f} rows/s  peak {peak_mb():7.0f} MB")
    return rate


def bench_folder(title: str, folder: Path, workdir: Path) -> None:
    paths = sorted(folder.glob("CNMSshvol*.txt"))
    start, end = paths[0].name[9:17], paths[-1].name[9:17]
    blobs = [(p.read_bytes(), p.name) for p in paths]
    rows = sum(parse_short_table(data, name).num_rows for data, name in blobs)  # warm-up
    print(f"{title}: {folder}")
    baseline = timed("baseline pandas.read_csv", rows, len(paths),
                     lambda: [pd.read_csv(p, sep="|") for p in paths])
    parse = timed("parse_short_table (validated)", rows, len(paths),
                  lambda: [parse_short_table(data, name) for data, name in blobs])
    db_path = workdir / f"{title.replace(' ', '_')}.duckdb"
    settings = load_config(db_path=db_path)
    ingest = timed("ingest_finra_short (parse+store)", rows, len(paths),
                   lambda: ingest_finra_short(settings, start, end, "CNMS", from_dir=folder))
    print(f"  ratio to pandas baseline: parse {parse / baseline:.2f}x, "
          f"parse+store {ingest / baseline:.2f}x; target parse+store >= 1,000,000 rows/s: "
          f"{'met' if ingest >= 1_000_000 else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-dir", type=Path, default=DEFAULT_REAL,
                        help="folder of real CNMS files (skipped when absent)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the synthetic year of 252 files (default 1.0)")
    parser.add_argument("--symbols", type=int, default=10_000, help="rows per synthetic file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_finra_") as tmp:
        workdir = Path(tmp)
        if args.from_dir.is_dir():
            bench_folder("real files", args.from_dir, workdir)
        else:
            print(f"real files: {args.from_dir} not found, skipped")
        files = max(1, round(252 * args.scale))
        synthetic = workdir / "synthetic"
        synthetic.mkdir()
        write_synthetic_year(synthetic, files, args.symbols)
        bench_folder("synthetic year", synthetic, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
