"""Benchmark: the market view's scanner and dark index, each next to a plain pandas version.

Writes two generated databases (through ``store.open_writer``), then measures, best of
``--repeat``, each approach in its own child process (so peak RSS is the approach's own):

* ``scan``: ``market.scan(day, top=25)`` over ``--symbols`` symbols on one date (target
  <= 0.5 s in process); the same with the windowed ``imbalance_log1p_z`` variant; the pandas
  baseline reads the date's rows with ``read_frame`` (``SELECT *``) and computes the same
  columns with vectorised pandas (score via the registry, flags by string concatenation,
  sort, both ends).
* cold CLI: ``darkpool --help`` (the startup floor of any command), ``darkpool scan --format
  csv`` (target <= 2 s) and a cold ``python -c "market.scan(...)"`` (the library without the
  CLI's imports), each in a fresh interpreter.
* ``index``: ``market.index(members.csv, start, end)`` for ``--members`` members (with
  membership churn: names leaving and joining) over ``--years`` of sessions in a database of
  ``--index-symbols`` symbols (target <= 2 s); the pandas baseline reads the members' rows
  with ``read_frame``, merges them with the spans, filters, groups by date and applies the gap
  rule and the rolling z; its compute-only time is printed too. Both results are compared.

Usage: ``.venv/bin/python bench/market.py [--symbols 10000] [--members 500] [--years 5]
[--index-symbols 2000] [--repeat 3] [--scale 1.0]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from darkpool_analysis import store, trading_calendar

END = dt.date(2025, 12, 31)
SCAN_SESSIONS = 30


# -- data --------------------------------------------------------------------------------------
def generate_scan_db(db_path: Path, symbols: int, sessions: int,
                     order: str = "symbol, date") -> dt.date:
    """``symbols`` x ``sessions`` daily_metrics rows with every column the scan reads,
    generated in ``order`` (the store writes them in the build's tiles whatever the order);
    returns the last day."""
    days = trading_calendar.sessions_index(END - dt.timedelta(days=2 * sessions + 30),
                                           END)[-sessions:]
    with store.open_writer(db_path) as writer:
        conn = writer.conn
        store.run(conn, "SELECT setseed(0.17)")
        rows = conn.sql(f"""
            WITH s AS (SELECT 'S' || lpad(CAST(i AS VARCHAR), 5, '0') AS symbol,
                              exp(2 + 2 * random()) AS price FROM range({symbols}) t(i)),
                 d AS (SELECT unnest($1::DATE[]) AS date),
                 base AS (SELECT symbol, date, price, round(exp(12 + 2 * random())) AS t,
                                 0.3 + 0.35 * random() AS r FROM s CROSS JOIN d)
            SELECT symbol, date, r * t AS short_volume, t AS total_volume,
                   r * t AS short_buy_volume, (1 - r) * t AS short_sell_volume,
                   r AS short_ratio, r / (1 - r) AS short_buy_sell_ratio,
                   CASE WHEN random() > 0.05 THEN 4 * random() - 2 END AS short_buy_sell_ratio_z,
                   4 * random() - 2 AS finra_buy_volume_z, random() - 0.5 AS lit_flow_imbalance,
                   CASE WHEN random() > 0.2 THEN 4 * random() - 2 END AS lit_flow_imbalance_z,
                   4 * random() - 2 AS return_z, 4 * random() - 2 AS otc_participation_z,
                   0.1 + 0.4 * random() AS otc_participation_rate,
                   ['Anchored', 'Staled', 'None'][1 + CAST(floor(3 * random()) AS INTEGER)]
                       AS otc_status,
                   'published' AS otc_alignment, price * (0.9 + 0.2 * random()) AS close,
                   t / (0.3 + 0.3 * random()) AS volume, 100 * random()
                       AS accumulation_score_display,
                   'neutral' AS pressure_context_label, 0.8 AS confidence,
                   'CNMS' AS short_source, true AS has_short, true AS has_price,
                   random() > 0.2 AS has_lit, true AS has_otc
            FROM base ORDER BY {order}
        """, params=[list(days.date)]).to_arrow_table()
        writer.replace_metrics(rows)
    return days[-1].date()


def generate_index_db(db_path: Path, symbols: int, years: float, members: int,
                      folder: Path, seed: int = 5) -> tuple[dt.date, dt.date, Path]:
    """``symbols`` x ``years`` of sessions (short, total, close, volume) and a membership file
    of ``members`` names at a time: 90% members throughout, 10% rotating (a name leaves,
    another joins, some come back)."""
    start = END - dt.timedelta(days=round(365.25 * years))
    days = trading_calendar.sessions_index(start, END)
    with store.open_writer(db_path) as writer:
        conn = writer.conn
        store.run(conn, "SELECT setseed(0.42)")
        rows = conn.sql(f"""
            WITH s AS (SELECT i, 'S' || lpad(CAST(i AS VARCHAR), 5, '0') AS symbol,
                              10 + 290 * random() AS base FROM range({symbols}) t(i)),
                 d AS (SELECT unnest($1::DATE[]) AS date)
            SELECT symbol, date, round(t * (0.3 + 0.3 * random())) AS short_volume,
                   t AS total_volume, base * (0.8 + 0.4 * random()) AS close,
                   round(t * (1.6 + random())) AS volume,
                   'CNMS' AS short_source, true AS has_short, true AS has_price
            FROM (SELECT s.symbol, s.base, d.date,
                         round(exp(13 + 1.5 * random())) AS t FROM s CROSS JOIN d)
            WHERE random() > 0.01
            ORDER BY symbol, date
        """, params=[list(days.date)]).to_arrow_table()
        writer.replace_metrics(rows)
    rng = np.random.default_rng(seed)
    steady = int(members * 0.9)
    rotating = members - steady
    # members spread over the alphabet like an index among all listed names (no pruning)
    names = [f"S{i:05d}" for i in sorted(rng.choice(symbols, members + rotating,
                                                        replace=False))]
    rng.shuffle(names)
    lines = ["ticker,start_date,end_date"]
    lines += [f"{name},2000-01-03," for name in names[:steady]]
    cut = days[len(days) // 2].date()
    back = days[(3 * len(days)) // 4].date()
    for j in range(rotating):  # a name leaves at mid-range, a joiner replaces it; some return
        leaver, joiner = names[steady + j], names[steady + rotating + j]
        comes_back = bool(rng.random() < 0.2)
        lines.append(f"{leaver},2000-01-03,{cut}")
        lines.append(f"{joiner},{cut},{back if comes_back else ''}")
        if comes_back:
            lines.append(f"{leaver},{back},")
    path = folder / "members.csv"
    path.write_text("\n".join(lines) + "\n")
    return days[0].date(), days[-1].date(), path


# -- the pandas baselines ----------------------------------------------------------------------
def pandas_scan(db_path: Path, day: dt.date, top: int = 25) -> pd.DataFrame:
    """What a plain pandas scanner does: every column of the day, computed in pandas."""
    from darkpool_analysis.signals import compute_variant

    frame = store.read_frame(db_path, "SELECT * FROM daily_metrics WHERE date = ?", [day])
    frame["current"] = compute_variant(frame, "current")
    volume = frame["volume"].where(frame["volume"] > 0)
    frame["off_exchange_share"] = frame["total_volume"] / volume
    frame["dollar_volume"] = frame["close"] * frame["volume"]
    parts = [np.where(~frame["has_short"].fillna(False).astype(bool), "no_short", ""),
             np.where(~frame["has_price"].fillna(False).astype(bool), "no_price", ""),
             np.where(~frame["has_lit"].fillna(False).astype(bool), "no_lit", ""),
             np.where(frame["otc_status"] == "Staled", "otc_stale",
                      np.where(frame["otc_status"].isin(["None"]) | frame["otc_status"].isna(),
                               "no_otc", ""))]
    flags = pd.Series(parts[0], index=frame.index)
    for part in parts[1:]:
        flags = flags.str.cat(pd.Series(part, index=frame.index), sep=",")
    frame["flags"] = flags.str.replace(r",+", ",", regex=True).str.strip(",")
    ranked = frame.dropna(subset=["current"]).sort_values(["current", "symbol"],
                                                          ascending=[False, True])
    return pd.concat([ranked.head(top).assign(end="top"),
                      ranked.tail(top).iloc[::-1].assign(end="bottom")], ignore_index=True)


def pandas_index(db_path: Path, members_csv: Path, start: dt.date,
                 end: dt.date) -> tuple[pd.DataFrame, float]:
    """The dark index the obvious pandas way; returns (frame, compute-only seconds)."""
    spans = pd.read_csv(members_csv, parse_dates=["start_date", "end_date"])
    window = 20
    first = trading_calendar.session_offset(start, -(window - 1))
    days = trading_calendar.sessions_index(first, end)
    symbols = sorted(spans["ticker"].unique())
    rows = store.read_frame(
        db_path, "SELECT symbol, date, short_volume, total_volume, close, volume, short_source "
        "FROM daily_metrics WHERE date BETWEEN ? AND ? AND symbol IN "
        "(SELECT unnest(?::VARCHAR[]))", [first, end, symbols])
    started = time.perf_counter()
    rows["date"] = pd.to_datetime(rows["date"])
    grid = spans.rename(columns={"ticker": "symbol"}).merge(pd.DataFrame({"date": days}),
                                                            how="cross")
    grid = grid.loc[(grid["date"] >= grid["start_date"])
                    & (grid["end_date"].isna() | (grid["date"] < grid["end_date"]))]
    merged = grid.merge(rows, on=["symbol", "date"], how="left")
    has = (merged["short_source"].isin(["CNMS", "FACILITY_SUM"]) & merged["short_volume"].notna()
           & (merged["total_volume"] > 0) & (merged["close"] > 0))
    dollars = (merged["volume"] * merged["close"]).where(merged["volume"] > 0)
    merged = merged.assign(
        has=has, sd=(merged["short_volume"] * merged["close"]).where(has),
        td=(merged["total_volume"] * merged["close"]).where(has),
        ratio=(merged["short_volume"] / merged["total_volume"]).where(has),
        cov=dollars.where(has), all_dollars=dollars)
    g = merged.groupby("date")
    out = pd.DataFrame({"members": g.size(), "members_with_data": g["has"].sum(),
                        "dix": g["sd"].sum() / g["td"].sum(),
                        "dpi_equal_weight": g["ratio"].mean(),
                        "dollar_coverage": g["cov"].sum() / g["all_dollars"].sum()}
                       ).reindex(days)
    out[["members", "members_with_data"]] = out[["members", "members_with_data"]].fillna(0)
    gap = out["members_with_data"] < 0.5 * out["members"]
    out.loc[gap, ["dix", "dpi_equal_weight"]] = np.nan
    rolling = out["dix"].rolling(window, min_periods=5)
    out["dix_z"] = (out["dix"] - rolling.mean()) / rolling.std(ddof=0)
    out = out.loc[out.index >= pd.Timestamp(start)].rename_axis("date").reset_index()
    return out, time.perf_counter() - started


# -- child processes -----------------------------------------------------------------------
#: Runs a command and reports its wall time and peak RSS. Linux carries ``ru_maxrss`` across
#: fork + exec, so a child of this (large) benchmark process would report the benchmark's own
#: peak; a child of this small launcher reports its own.
LAUNCHER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
print(json.dumps({"wall": wall, "peak_mb": usage.ru_maxrss / 1024, "code": code,
                  "stderr": proc.stderr.read().decode()[-2000:]}))
"""


def peak_mb() -> float:
    """This process's peak RSS (``VmHWM``: reset by exec, unlike ``ru_maxrss``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, args: dict[str, str], repeat: int) -> None:
    """Run one approach ``repeat`` times; print JSON with the best seconds and peak MB."""
    from darkpool_analysis import market

    db = Path(args["db"])
    times: list[float] = []
    extra: dict[str, float] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        if kind == "scan":
            result = market.scan(args["day"], top=25, db_path=db)
        elif kind == "scan_windowed":
            result = market.scan(args["day"], by="imbalance_log1p_z", top=25, db_path=db)
        elif kind == "pandas_scan":
            result = pandas_scan(db, dt.date.fromisoformat(args["day"]))
        elif kind == "index":
            result = market.index(Path(args["members"]), args["start"], args["end"], db_path=db)
        elif kind == "pandas_index":
            result, compute = pandas_index(db, Path(args["members"]),
                                           dt.date.fromisoformat(args["start"]),
                                           dt.date.fromisoformat(args["end"]))
            extra["compute_s"] = min(extra.get("compute_s", np.inf), compute)
        else:
            raise SystemExit(f"unknown child {kind}")
        times.append(time.perf_counter() - started)
    extra["first_s"] = times[0]
    if kind in ("index", "pandas_index"):
        result.to_parquet(args["out"])
    print(json.dumps({"best": min(times), "peak_mb": peak_mb(), "rows": len(result), **extra}))


def run_child(kind: str, args: dict[str, str], repeat: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", kind, "--child-args", json.dumps(args),
           "--repeat", str(repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold(cmd: list[str], env: dict[str, str], cwd: Path, repeat: int) -> tuple[float, float]:
    """Best wall seconds and that run's peak RSS (MB) over ``repeat`` fresh interpreters."""
    best = (np.inf, 0.0)
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], env=env, cwd=cwd,
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["code"] != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {result['stderr']}")
        best = min(best, (result["wall"], result["peak_mb"]))
    return best


def scan_runs(db: Path, day: dt.date, symbols: int, repeat: int, title: str) -> float:
    """Time market.scan (default and windowed variant) and the pandas baseline on ``db``."""
    args = {"db": str(db), "day": str(day)}
    results = {name: run_child(kind, args, repeat) for name, kind in (
        ("market.scan (current)", "scan"),
        ("market.scan (imbalance_log1p_z)", "scan_windowed"),
        ("pandas scan (baseline)", "pandas_scan"))}
    print(f"\n{title}, in process (best of {repeat}):")
    print(f"{'approach':<34}{'s':>8}{'symbols/s':>14}{'peak MB':>10}")
    for name, res in results.items():
        print(f"{name:<34}{res['best']:>8.3f}{symbols / res['best']:>14,.0f}"
              f"{res['peak_mb']:>10.0f}")
    ours = results["market.scan (current)"]["best"]
    print(f"ratio pandas / ours: {results['pandas scan (baseline)']['best'] / ours:.2f}x; "
          f"target <= 0.5 s -> {'OK' if ours <= 0.5 else 'MISSED'}")
    return ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10_000, help="symbols in the scan")
    parser.add_argument("--members", type=int, default=500, help="index members at a time")
    parser.add_argument("--years", type=float, default=5.0, help="years of index sessions")
    parser.add_argument("--index-symbols", type=int, default=2_000,
                        help="symbols in the index database (members and non-members)")
    parser.add_argument("--scan-years", type=float, default=0.0,
                        help="also scan a --symbols x this many years database, stored as "
                             "`darkpool build` stores it (tiles of symbols x half a year) "
                             "(slow to generate: ~30 s per 10k x 5 years)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (best kept)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-args", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        child(opts.child, json.loads(opts.child_args), opts.repeat)
        return
    symbols = max(10, round(opts.symbols * opts.scale))
    members = max(10, round(opts.members * opts.scale))
    index_symbols = max(members * 3, round(opts.index_symbols * opts.scale))
    years = opts.years * opts.scale
    darkpool = str(Path(sys.executable).parent / "darkpool")
    print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}")

    with tempfile.TemporaryDirectory(prefix="bench_market_") as tmp:
        folder = Path(tmp)
        scan_db, index_db = folder / "scan.duckdb", folder / "index.duckdb"
        started = time.perf_counter()
        day = generate_scan_db(scan_db, symbols, SCAN_SESSIONS)
        print(f"scan database: {symbols:,} symbols x {SCAN_SESSIONS} sessions "
              f"({symbols * SCAN_SESSIONS:,} rows, build layout) in "
              f"{time.perf_counter() - started:.1f} s")
        scan_runs(scan_db, day, symbols, opts.repeat, f"scan of {symbols:,} symbols on {day}")

        env = {**os.environ, "DARKPOOL_DB": str(scan_db), "MPLBACKEND": "Agg"}
        library = (f"from darkpool_analysis import market; "
                   f"market.scan('{day}', top=25).to_csv('lib.csv')")
        runs = {
            "startup floor (darkpool --help)": [darkpool, "--help"],
            "darkpool scan --format csv": [darkpool, "scan", "--date", str(day), "--top", "25",
                                           "--format", "csv", "--out", "scan.csv"],
            "darkpool scan (terminal table)": [darkpool, "scan", "--date", str(day)],
            "python -c market.scan (no CLI)": [sys.executable, "-c", library],
        }
        colds = {name: cold(cmd, env, folder, opts.repeat) for name, cmd in runs.items()}
        print(f"\ncold, fresh interpreter each (best of {opts.repeat}):")
        print(f"{'command':<34}{'wall s':>8}{'peak MB':>10}")
        for name, (wall, peak) in colds.items():
            print(f"{name:<34}{wall:>8.2f}{peak:>10.0f}")
        cli = colds["darkpool scan --format csv"][0]
        floor = colds["startup floor (darkpool --help)"][0]
        print(f"scan above the startup floor: {cli - floor:.2f} s; target cold CLI <= 2 s -> "
              f"{'OK' if cli <= 2.0 else 'MISSED'}")

        if opts.scan_years > 0:
            sessions = round(252 * opts.scan_years)
            # Whatever order the rows come in, the store writes daily_metrics files in the
            # build's tiles (symbols x half a year), so this is the layout a build leaves.
            label = "stored as the build stores it (tiles of symbols x half a year)"
            deep = folder / "deep.duckdb"
            started = time.perf_counter()
            deep_day = generate_scan_db(deep, symbols, sessions)
            print(f"\ndeep scan database: {symbols:,} x {sessions} sessions "
                  f"({symbols * sessions:,} rows), {label}, in "
                  f"{time.perf_counter() - started:.0f} s")
            scan_runs(deep, deep_day, symbols, opts.repeat,
                      f"scan of {symbols:,} symbols, {sessions} sessions stored, {label}")
            deep.unlink()

        started = time.perf_counter()
        first, last, members_csv = generate_index_db(index_db, index_symbols, years, members,
                                                     folder)
        n_days = len(trading_calendar.sessions_index(first, last))
        print(f"\nindex database: {index_symbols:,} symbols x {n_days} sessions "
              f"({index_symbols * n_days:,} rows, 1% missing, build layout), {members} members "
              f"spread over the symbols with churn, in {time.perf_counter() - started:.1f} s")
        index_args = {"db": str(index_db), "members": str(members_csv), "start": str(first),
                      "end": str(last)}
        ours_i = run_child("index", {**index_args, "out": str(folder / "ours.parquet")},
                           opts.repeat)
        base_i = run_child("pandas_index", {**index_args, "out": str(folder / "pd.parquet")},
                           opts.repeat)
        print(f"dark index, {members} members x {n_days} sessions (best of {opts.repeat}):")
        print(f"{'approach':<34}{'s':>8}{'member-days/s':>16}{'peak MB':>10}")
        member_days = members * n_days
        for name, res in (("market.index", ours_i), ("pandas index (baseline)", base_i)):
            print(f"{name:<34}{res['best']:>8.3f}{member_days / res['best']:>16,.0f}"
                  f"{res['peak_mb']:>10.0f}")
        print(f"first call in a process (XNYS calendar built): {ours_i['first_s']:.3f} s; "
              f"pandas compute only (after its read): {base_i['compute_s']:.3f} s")
        a = pd.read_parquet(folder / "ours.parquet")
        b = pd.read_parquet(folder / "pd.parquet")
        worst = max(float(np.nanmax(np.abs(a[c].to_numpy(dtype=float)
                                           - b[c].to_numpy(dtype=float))))
                    for c in ("dix", "dpi_equal_weight", "dollar_coverage", "dix_z"))
        same_counts = bool((a["members"].to_numpy() == b["members"].to_numpy()).all()
                           and (a["members_with_data"].to_numpy()
                                == b["members_with_data"].to_numpy()).all())
        print(f"results agree: counts {'equal' if same_counts else 'DIFFER'}, "
              f"max abs difference {worst:.1e}")
        print(f"ratio pandas / ours: {base_i['best'] / ours_i['best']:.2f}x; target <= 2 s -> "
              f"{'OK' if ours_i['best'] <= 2.0 else 'MISSED'}")
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
