"""Benchmark: the point-in-time OTC block for N symbols x Y years of weekly data.

Prints seconds, output rows/s and peak RSS for :func:`otc_daily_block`, next to a naive pandas
baseline (a per-symbol loop with ``merge_asof``, ignoring revisions) measured in the same run on
a subset of symbols. Usage::

    .venv/bin/python bench/otc.py --symbols 3000 --years 5
    .venv/bin/python bench/otc.py --scale 0.1          # 10% of the symbols, quick check
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from darkpool_analysis import trading_calendar as tc
from darkpool_analysis.otc_metrics import otc_daily_block


def synthetic(n_symbols: int, years: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                  pd.DatetimeIndex]:
    """Weekly ATS + OTC rows (T1/T2, ~5% revised once) and daily bars for every session."""
    rng = np.random.default_rng(seed)
    end = pd.Timestamp("2024-12-27")
    start = end - pd.DateOffset(years=years)
    sessions = tc.sessions_index(start.date(), end.date())
    weeks = pd.date_range(start - pd.Timedelta(days=start.weekday()), end, freq="7D")
    symbols = np.array([f"S{i:05d}" for i in range(n_symbols)], dtype=object)
    tiers = np.where(np.arange(n_symbols) % 3 == 0, "T2", "T1")
    n_rows = n_symbols * len(weeks)
    base = pd.DataFrame({
        "symbol": np.repeat(symbols, len(weeks)),
        "week_start_date": np.tile(weeks.to_numpy(), n_symbols),
        "tier": np.repeat(tiers, len(weeks)),
    })
    delay = np.where(base["tier"] == "T1", 21, 35)
    base["last_update_date"] = base["week_start_date"] + pd.to_timedelta(delay, unit="D")
    parts = []
    for kind in ("ATS_W_SMBL", "OTC_W_SMBL"):
        part = base.assign(summary_type=kind,
                           share_quantity=rng.integers(1_000, 2_000_000, n_rows).astype(float))
        parts.append(part)
    revised = parts[0].sample(frac=0.05, random_state=seed).assign(
        last_update_date=lambda f: f["last_update_date"] + pd.Timedelta(days=14),
        share_quantity=lambda f: f["share_quantity"] * 1.1)
    weekly = pd.concat([*parts, revised], ignore_index=True)
    volume = pd.DataFrame({
        "symbol": np.repeat(symbols, len(sessions)),
        "date": np.tile(sessions.to_numpy(), n_symbols),
        "volume": rng.integers(1_000_000, 20_000_000, n_symbols * len(sessions)).astype(float),
    })
    return weekly, volume, sessions


def naive_baseline(weekly: pd.DataFrame, volume: pd.DataFrame,
                   sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """The straightforward pandas way: loop over symbols, merge_asof per symbol."""
    out = []
    latest = weekly.sort_values("last_update_date").drop_duplicates(
        ["symbol", "week_start_date", "summary_type"], keep="last")
    for symbol, rows in latest.groupby("symbol"):
        off = rows.groupby("week_start_date")["share_quantity"].sum()
        bars = volume[volume["symbol"] == symbol]
        week_of = bars["date"] - pd.to_timedelta(bars["date"].dt.day_of_week, unit="D")
        consolidated = bars.groupby(week_of)["volume"].sum()
        rate = (off / consolidated.reindex(off.index)).clip(upper=1.0)
        z = (rate - rate.rolling(12, min_periods=4).mean()) / rate.rolling(
            12, min_periods=4).std(ddof=0)
        delay = 21 if rows["tier"].iloc[0] == "T1" else 35
        table = pd.DataFrame({"visible": (off.index + pd.Timedelta(days=delay)).astype(
                                  "datetime64[ns]"),
                              "week": off.index, "rate": rate.to_numpy(), "z": z.to_numpy(),
                              "delta": rate.diff().to_numpy()})
        days = pd.DataFrame({"date": sessions.astype("datetime64[ns]")})
        merged = pd.merge_asof(days, table, left_on="date", right_on="visible")
        merged["symbol"] = symbol
        out.append(merged)
    return pd.concat(out, ignore_index=True)


def peak_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=3000)
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies --symbols")
    parser.add_argument("--baseline-symbols", type=int, default=150,
                        help="symbols for the naive baseline (extrapolated per row)")
    parser.add_argument("--alignment", choices=["published", "week"], default="published")
    args = parser.parse_args()
    n_symbols = max(1, int(args.symbols * args.scale))
    weekly, volume, sessions = synthetic(n_symbols, args.years)
    print(f"input: {n_symbols:,} symbols x {args.years} years: {len(weekly):,} weekly rows, "
          f"{len(volume):,} daily bars, {len(sessions):,} sessions")

    before_mb = peak_mb()
    started = time.perf_counter()
    block = otc_daily_block(weekly, volume, sessions, alignment=args.alignment)
    seconds = time.perf_counter() - started
    rate = len(block) / seconds
    print(f"otc_daily_block ({args.alignment}): {len(block):,} rows in {seconds:.2f} s = "
          f"{rate:,.0f} rows/s, peak RSS {peak_mb():,.0f} MB ({before_mb:,.0f} MB with the "
          f"inputs only)")

    subset = sorted(weekly["symbol"].unique())[: args.baseline_symbols]
    sub_weekly = weekly[weekly["symbol"].isin(subset)]
    sub_volume = volume[volume["symbol"].isin(subset)]
    started = time.perf_counter()
    baseline = naive_baseline(sub_weekly, sub_volume, sessions)
    base_seconds = time.perf_counter() - started
    base_rate = len(baseline) / base_seconds
    print(f"naive pandas baseline ({len(subset)} symbols, no revisions): {len(baseline):,} rows "
          f"in {base_seconds:.2f} s = {base_rate:,.0f} rows/s "
          f"(~{len(block) / base_rate:.1f} s for the full size)")
    print(f"speed-up vs baseline: {rate / base_rate:.1f}x; target <= 5 s: "
          f"{'met' if seconds <= 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
