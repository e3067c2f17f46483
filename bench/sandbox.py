"""Benchmark: cold ``darkpool sandbox`` (new interpreter, imports included) for one ticker.

Builds a generated ``daily_metrics`` database (``--tickers`` symbols x ``--years`` of XNYS
sessions), then times, each in a fresh subprocess:

* ``startup``: ``darkpool --help`` (interpreter + CLI imports), the floor of any command;
* ``sandbox``: ``darkpool sandbox BENCH0 --start .. --end ..`` writing a PNG (target <= 2 s);
* ``seed``: the seed notebook's cells run unchanged (per-day ``ax.bar`` loop, ``plt.show``
  replaced by ``savefig``) on the same range, as the baseline; skipped when the seed file is
  absent.

Prints wall seconds, rows/s (rows shown per wall second) and peak RSS of each child, the
command's own cost above the startup floor, and the seed / sandbox ratio.

Usage: ``.venv/bin/python bench/sandbox.py [--scale 1.0] [--years 1] [--tickers 200]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from darkpool_analysis import store, trading_calendar

SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seed" / "000_48513c3cb404cffd.txt"
END = dt.date(2025, 12, 31)


def generate(db_path: Path, tickers: int, years: float, seed: int = 1) -> tuple[dt.date, int]:
    """Write ``tickers`` x ``years`` of daily_metrics sessions; return (start, rows/ticker)."""
    start = END - dt.timedelta(days=round(365.25 * years))
    dates = trading_calendar.sessions_index(start, END)
    n_days = len(dates)
    rng = np.random.default_rng(seed)
    size = (tickers, n_days)
    total = rng.lognormal(np.log(5e6), 0.4, size).round()
    short = (total * rng.uniform(0.35, 0.6, size)).round()
    lit_buy = rng.lognormal(np.log(1e6), 0.4, size).round()
    lit_sell = rng.lognormal(np.log(1e6), 0.4, size).round()
    frame = pd.DataFrame({
        "symbol": np.repeat([f"BENCH{i}" for i in range(tickers)], n_days),
        "date": np.tile(dates.date, tickers),
        "short_volume": short.ravel(),
        "total_volume": total.ravel(),
        "short_buy_volume": short.ravel(),
        "short_sell_volume": (total - short).ravel(),
        "short_buy_sell_ratio": (short / (total - short)).ravel(),
        "short_buy_sell_ratio_z": rng.normal(0, 1, size).ravel(),
        "lit_buy_volume": lit_buy.ravel(),
        "lit_sell_volume": lit_sell.ravel(),
        "lit_flow_imbalance": ((lit_buy - lit_sell) / (lit_buy + lit_sell)).ravel(),
        "lit_flow_imbalance_z": rng.normal(0, 1, size).ravel(),
        "return_z": rng.normal(0, 1, size).ravel(),
        "otc_participation_z": rng.normal(0, 1, size).ravel(),
        "confidence": rng.choice([1.0, 0.8, 0.56, 0.35], size).ravel(),
    })
    with store.open_writer(db_path) as writer:
        writer.replace_partition("daily_metrics", frame, where="true", params=[])
    return dates[0].date(), n_days


def run_child(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, from this child's own rusage) of one subprocess."""
    log_path = cwd / "child.log"
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{log_path.read_text()}")
    return wall, usage.ru_maxrss / 1024


def seed_script(seed_text: str, start: dt.date, folder: Path) -> str:
    """The seed's cells, unchanged except the three parameters and ``plt.show`` -> savefig."""
    cells = seed_text.split("In [None]:")[1:]
    first = cells[0]
    for name, value in (("TICKER", "BENCH0"), ("START_DATE", str(start)),
                        ("END_DATE", str(END))):
        first = re.sub(rf"^{name} = .*$", f"{name} = {value!r}", first, flags=re.M)
    prologue = (
        "import itertools, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "_n = itertools.count()\n"
        f"plt.show = lambda: (plt.savefig({str(folder)!r} + f'/seed{{next(_n)}}.png', dpi=100,"
        " facecolor=plt.gcf().get_facecolor()), plt.close('all'))\n"
    )
    return prologue + "\n".join([first, *cells[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies --tickers and --years (default 1.0)")
    parser.add_argument("--years", type=float, default=1.0, help="years of sessions shown")
    parser.add_argument("--tickers", type=int, default=200, help="symbols in the database")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs of each (best kept)")
    opts = parser.parse_args()
    tickers = max(1, round(opts.tickers * opts.scale))
    years = opts.years * opts.scale
    bin_dir = Path(sys.executable).parent
    darkpool = str(bin_dir / "darkpool")

    with tempfile.TemporaryDirectory(prefix="bench_sandbox_") as tmp:
        folder = Path(tmp)
        db_path = folder / "darkpool.duckdb"
        started = time.perf_counter()
        start, rows = generate(db_path, tickers, years)
        print(f"generated {tickers} tickers x {rows} sessions ({tickers * rows:,} rows) "
              f"in {time.perf_counter() - started:.1f} s")
        env = {**os.environ, "DARKPOOL_DB": str(db_path), "MPLBACKEND": "Agg"}
        runs = {
            "startup (darkpool --help)": [darkpool, "--help"],
            "sandbox (cold, png)": [darkpool, "sandbox", "BENCH0", "--start", str(start),
                                    "--end", str(END), "--out", str(folder / "s.png")],
        }
        if SEED_FILE.is_file():
            script = folder / "seed.py"
            script.write_text(seed_script(SEED_FILE.read_text(encoding="utf-8"), start,
                                          folder), encoding="utf-8")
            runs["seed notebook (baseline)"] = [sys.executable, str(script)]
        else:
            print(f"seed file not found ({SEED_FILE}): no baseline")
        results: dict[str, tuple[float, float]] = {}
        for name, args in runs.items():
            timings = [run_child(args, env, folder) for _ in range(opts.repeat)]
            results[name] = min(timings)
        print(f"{'run':<28}{'wall s':>9}{'rows/s':>12}{'peak MB':>10}")
        for name, (wall, peak) in results.items():
            print(f"{name:<28}{wall:>9.2f}{rows / wall:>12,.0f}{peak:>10.0f}")
        ours = results["sandbox (cold, png)"][0]
        floor = results["startup (darkpool --help)"][0]
        print(f"sandbox above the startup floor: {ours - floor:.2f} s")
        print(f"target: sandbox <= 2.00 s -> {'OK' if ours <= 2.0 else 'MISSED'}")
        if "seed notebook (baseline)" in results:
            print(f"ratio seed / sandbox: {results['seed notebook (baseline)'][0] / ours:.2f}x")


if __name__ == "__main__":
    main()
