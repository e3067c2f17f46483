"""Benchmark the trade-direction rules on synthetic trades and quotes, next to tclf.

Usage: ``python bench/classify.py --n 50000000 [--tclf-n 1000000]``. Prints trades/s per rule
(Lee-Ready also with quote matching), peak RSS, and the speed-up over tclf measured in the same
run on the first ``--tclf-n`` trades (tclf builds pandas/sklearn structures and is slow).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from darkpool_analysis import classify as c


def synthetic(n: int, seed: int = 0) -> tuple[c.TradeArrays, c.QuoteArrays]:
    """A random-walk cent-priced tape with one quote update per trade."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(1, 2000, n, dtype=np.int64))
    steps = rng.choice(np.array([-1, 0, 1], dtype=np.int8), n, p=[0.35, 0.3, 0.35])
    cents = 10_000 + np.cumsum(steps, dtype=np.int64)
    cents = np.maximum(cents, 100)
    price = cents / 100.0
    half_spread = rng.integers(1, 3, n)
    quote_ts = np.maximum(ts - rng.integers(0, 1000, n), 0)
    quote_ts.sort()
    bid = (cents - half_spread) / 100.0
    ask = (cents + half_spread) / 100.0
    price = price + rng.choice(np.array([-0.01, 0.0, 0.01]), n)
    price = np.maximum(price, 0.01)
    return (c.TradeArrays(ts, price, np.full(n, 100.0)), c.QuoteArrays(quote_ts, bid, ask))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000_000, help="synthetic trades")
    parser.add_argument("--tclf-n", type=int, default=1_000_000,
                        help="trades given to tclf (0 = skip tclf)")
    args = parser.parse_args()
    trades, quotes = synthetic(args.n)
    print(f"{args.n:,} trades and quotes built; peak {peak_mb():,.0f} MB")
    seconds_match = timed(lambda: c.match_quotes(trades, quotes))
    matched = c.match_quotes(trades, quotes)
    results: dict[str, float] = {"match_quotes": seconds_match}
    for name, rule in c.RULES.items():
        results[name] = timed(lambda rule=rule: rule(trades, matched))
    results["lee_ready+match"] = results["lee_ready"] + seconds_match
    results["bvc_1min"] = timed(lambda: c.bvc_bars(trades))
    speeds = {name: args.n / sec for name, sec in results.items()}
    tclf_speed: dict[str, float] = {}
    if args.tclf_n:
        from tclf.classical_classifier import ClassicalClassifier

        k = min(args.tclf_n, args.n)
        sub = c.TradeArrays(trades.ts[:k], trades.price[:k], trades.size[:k])
        sub_q = c.MatchedQuotes(matched.bid[:k], matched.ask[:k])
        p = sub.price
        lag = pd.Series(np.where(np.r_[False, p[1:] != p[:-1]], np.r_[np.nan, p[:-1]], np.nan)
                        ).ffill().to_numpy()
        frame = pd.DataFrame({"trade_price": p, "bid_ex": sub_q.bid, "ask_ex": sub_q.ask,
                              "price_ex_lag": lag})
        for name, layer in (("tick", "tick"), ("quote", "quote"), ("lee_ready", "lr"),
                            ("emo", "emo"), ("clnv", "clnv")):
            clf = ClassicalClassifier(layers=[(layer, "ex")], strategy="const").fit(frame)
            tclf_speed[name] = k / timed(lambda clf=clf: clf.predict(frame))
    print(f"{'rule':<18}{'M trades/s':>12}{'seconds':>10}{'tclf M/s':>12}{'x tclf':>9}")
    for name, sec in results.items():
        ref = tclf_speed.get(name.replace("+match", ""))
        ratio = f"{speeds[name] / ref:9.1f}" if ref else f"{'':>9}"
        ref_text = f"{ref / 1e6:12.2f}" if ref else f"{'':>12}"
        print(f"{name:<18}{speeds[name] / 1e6:12.1f}{sec:10.2f}{ref_text}{ratio}")
    print(f"peak RSS {peak_mb():,.0f} MB; tclf measured on {min(args.tclf_n, args.n):,} trades"
          " (tclf times exclude building its input frame)")


if __name__ == "__main__":
    main()
