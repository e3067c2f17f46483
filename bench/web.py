"""Benchmark: ``darkpool web`` latency, from the API to a chart in real Chromium.

Builds a generated ``daily_metrics`` database (``--tickers`` symbols x ``--years`` of XNYS
sessions), starts ``darkpool web`` as a real process on a free port, and measures:

* ``sandbox``: ``GET /api/sandbox`` for one ticker and one year, warm (target p95 <= 100 ms);
* ``sandbox-new-ticker``: the same for a ticker not read yet (its history is read once);
* ``weight``: a weight-change round trip, a new ``blend_short_weight`` each request, as the
  page's slider sends them (target p95 <= 150 ms);
* ``chart.png``: the matplotlib PNG of the same request, the baseline: what every change
  cost with the old page;
* ``page``: a full page load to the first drawn chart in headless Chromium
  (/usr/bin/chromium; skipped when absent; target <= 1.5 s), side by side with the same page
  on the full 4.8 MB plotly.js (what it loaded before) and the floor of each bundle (a blank
  page that only loads it);
* ``burst``: 200 mixed requests from 20 concurrent clients; zero errors required.

Prints p50/p95 milliseconds, the ratio of the PNG baseline to the JSON round trip and the
load average. Usage: ``.venv/bin/python bench/web.py [--tickers 200] [--years 2]
[--requests 60] [--page-loads 5]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from darkpool_analysis import store, trading_calendar

END = dt.date(2025, 12, 31)
CHROMIUM = Path("/usr/bin/chromium")


def generate(db_path: Path, tickers: int, years: float, seed: int = 3) -> None:
    """``tickers`` x ``years`` of generated ``daily_metrics`` rows (seed columns)."""
    start = END - dt.timedelta(days=round(365.25 * years))
    dates = trading_calendar.sessions_index(start, END)
    n = len(dates)
    rng = np.random.default_rng(seed)
    size = (tickers, n)
    total = rng.lognormal(np.log(5e6), 0.4, size).round()
    short = (total * rng.uniform(0.35, 0.6, size)).round()
    lit_buy = rng.lognormal(np.log(1e6), 0.4, size).round()
    lit_sell = rng.lognormal(np.log(1e6), 0.4, size).round()
    frame = pd.DataFrame({
        "symbol": np.repeat([f"BENCH{i}" for i in range(tickers)], n),
        "date": np.tile(dates.date, tickers),
        "short_volume": short.ravel(), "total_volume": total.ravel(),
        "short_buy_volume": short.ravel(), "short_sell_volume": (total - short).ravel(),
        "short_buy_sell_ratio": (short / (total - short)).ravel(),
        "short_buy_sell_ratio_z": rng.normal(0, 1, size).ravel(),
        "lit_buy_volume": lit_buy.ravel(), "lit_sell_volume": lit_sell.ravel(),
        "lit_flow_imbalance": ((lit_buy - lit_sell) / (lit_buy + lit_sell)).ravel(),
        "lit_flow_imbalance_z": rng.normal(0, 1, size).ravel(),
        "return_z": rng.normal(0, 1, size).ravel(),
        "otc_participation_z": rng.normal(0, 1, size).ravel(),
        "confidence": rng.choice([1.0, 0.8, 0.56, 0.35], size).ravel(),
    })
    with store.open_writer(db_path) as writer:
        writer.replace_metrics(frame)


def start_server(db_path: Path, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    darkpool = Path(sys.executable).with_name("darkpool")
    env = {**os.environ, "DARKPOOL_DB": str(db_path), "COLUMNS": "200"}
    process = subprocess.Popen([str(darkpool), "web", "--port", "0", "--no-open",
                                "--no-access-log"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    assert process.stdout is not None
    seen = ""
    while "Ctrl-C" not in seen:
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"darkpool web did not start:\n{seen}")
        seen += line
    return process, seen.split("serving", 1)[1].split()[0].rstrip("/")


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def timed(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")
    return elapsed


def page_load(base: str, query: str, runs: int) -> dict[str, list[float]]:
    """Seconds from navigation start to the first drawn chart, each load in a fresh browser
    context (nothing cached), interleaved with what it is compared to:

    * ``page``: the page as shipped (the vendored plotly.js basic bundle);
    * ``page-full``: the same page with its bundle request rerouted to the plotly package's
      full ``plotly.min.js`` (what the page loaded before; the reroute adds a few ms);
    * ``floor-full`` / ``floor-basic``: a blank page that only loads and runs that bundle.
    """
    from playwright.sync_api import Route, sync_playwright

    from darkpool_analysis.web.app import PLOTLY_BUNDLE

    def to_full(route: Route) -> None:
        route.continue_(url=f"{base}/static/plotly.min.js")

    times: dict[str, list[float]] = {"page": [], "page-full": [], "floor-full": [],
                                     "floor-basic": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for _ in range(runs):
                for name in ("page", "page-full"):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    if name == "page-full":
                        context.route(f"**/static/{PLOTLY_BUNDLE}", to_full)
                    page = context.new_page()
                    started = time.perf_counter()
                    page.goto(f"{base}/?{query}")
                    page.wait_for_selector("#chart .main-svg .bars", timeout=30_000)
                    times[name].append(time.perf_counter() - started)
                    context.close()
                for name, bundle in (("floor-full", "plotly.min.js"),
                                     ("floor-basic", PLOTLY_BUNDLE)):
                    context = browser.new_context()
                    page = context.new_page()
                    page.goto(f"{base}/healthz")
                    started = time.perf_counter()
                    page.set_content(f'<script src="{base}/static/{bundle}"></script>')
                    page.wait_for_function("() => window.Plotly !== undefined")
                    times[name].append(time.perf_counter() - started)
                    context.close()
        finally:
            browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=200)
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--page-loads", type=int, default=5,
                        help="cold page loads per variant (fresh browser context each)")
    args = parser.parse_args()
    one_year = (END - dt.timedelta(days=365)).isoformat()
    query = f"ticker=BENCH0&start={one_year}&end={END}"
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        folder = Path(tmp)
        db = folder / "bench.duckdb"
        started = time.perf_counter()
        generate(db, args.tickers, args.years)
        print(f"database: {args.tickers} tickers x {args.years:g} years in "
              f"{time.perf_counter() - started:.1f} s")
        process, base = start_server(db, folder)
        try:
            with httpx.Client(timeout=120) as client:
                timed(client, f"{base}/api/sandbox?{query}")  # warm the imports and cache
                rows = len(client.get(f"{base}/api/sandbox?{query}").json()["rows"])
                results: dict[str, list[float]] = {}
                results["sandbox"] = [timed(client, f"{base}/api/sandbox?{query}")
                                      for _ in range(args.requests)]
                results["sandbox-new-ticker"] = [
                    timed(client, f"{base}/api/sandbox?ticker=BENCH{i}&start={one_year}"
                                  f"&end={END}") for i in range(1, 1 + min(args.tickers - 1,
                                                                           args.requests))]
                results["weight"] = [
                    timed(client, f"{base}/api/sandbox?{query}&blend_short_weight="
                                  f"{0.01 * (i % 97 + 1):.2f}") for i in range(args.requests)]
                png: list[float] = []
                png_timeouts = 0
                for i in range(3):  # the baseline: a 504 (render bound) counts as >= 30 s
                    t0 = time.perf_counter()
                    status = client.get(f"{base}/chart.png?{query}&"
                                        f"blend_short_weight={0.5 + 0.01 * i:.2f}").status_code
                    png.append(time.perf_counter() - t0)
                    png_timeouts += status == 504
                results["chart.png"] = png
                burst_urls = [
                    [f"{base}/api/sandbox?ticker=BENCH{i % 20}&start={one_year}&end={END}"
                     f"&blend_short_weight={0.05 * (i % 19):.2f}",
                     f"{base}/api/summary?ticker=BENCH{i % 30}",
                     f"{base}/api/symbols?q=BENCH1&limit=50", f"{base}/api/database",
                     f"{base}/healthz"][i % 5] for i in range(200)]

                def one(url: str) -> tuple[int, float]:
                    t0 = time.perf_counter()
                    status = client.get(url).status_code
                    return status, time.perf_counter() - t0

                t0 = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(20) as pool:
                    burst = list(pool.map(one, burst_urls))
                burst_wall = time.perf_counter() - t0
            load_before = os.getloadavg()
            pages = page_load(base, query, args.page_loads) if CHROMIUM.exists() else {}
        finally:
            process.terminate()
            process.wait(timeout=30)
    load = os.getloadavg()
    print(f"one ticker, one year: {rows} sessions per request")
    print(f"{'measure':<22}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}")
    for name, samples in results.items():
        p50, p95 = percentiles(samples)
        print(f"{name:<22}{len(samples):>5}{p50:>10.1f}{p95:>10.1f}")
    labels = {"page": "page -> first chart", "page-full": "  same, full plotly.js",
              "floor-full": "  floor: full bundle", "floor-basic": "  floor: basic bundle"}
    for name, samples in pages.items():
        p50, p95 = percentiles(samples)
        print(f"{labels[name]:<22}{len(samples):>5}{p50:>10.1f}{p95:>10.1f}"
              f"   (best {min(samples) * 1000:.0f} ms)")
    errors = sum(1 for status, _ in burst if status != 200)
    p50, p95 = percentiles([elapsed for _, elapsed in burst])
    print(f"{'burst 200 x 20 conc.':<22}{len(burst):>5}{p50:>10.1f}{p95:>10.1f}"
          f"   errors {errors}, {len(burst) / burst_wall:.0f} req/s")
    ratio = statistics.median(results["chart.png"]) / statistics.median(results["weight"])
    bound = f" (at least: {png_timeouts} of 3 PNGs hit the 30 s bound)" if png_timeouts else ""
    print(f"PNG per change (old page) / JSON weight round trip: {ratio:.0f}x{bound}")
    if pages:
        print(f"load average before the page loads: {load_before[0]:.2f} {load_before[1]:.2f} "
              f"{load_before[2]:.2f}")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if errors:
        raise SystemExit(f"{errors} burst request(s) failed")


if __name__ == "__main__":
    main()
