"""Benchmark the trade-direction rules on synthetic trades and quotes, next to tclf.

Usage: ``python bench/classify.py --n 50000000 --tclf-n 5000000 [--threads K]``. Prints the
thread count the rules use (``--threads``, default: the rules' own default) and, per rule:

* our throughput on all ``--n`` trades (rule only, from already matched quotes);
* "rule only" on the first ``--tclf-n`` trades, ours (and ours on one thread, the in-run
  baseline of the threading) and tclf 0.4.0 in the same run, each
  given its inputs prepared beforehand: ours ``TradeArrays`` + ``MatchedQuotes``, tclf a
  DataFrame with ``trade_price``, ``bid_ex``, ``ask_ex`` and ``price_ex_lag`` (the last
  different earlier price, which tclf needs precomputed);
* "tclf+lag": tclf's rule time plus computing ``price_ex_lag`` (our rules derive the
  tick test from prices alone, so this is the like-for-like rule-only comparison);
* "end-to-end" on the same subset, from raw trade and quote arrays: ours builds and validates
  ``TradeArrays``/``QuoteArrays``, matches quotes and applies the rule; tclf's pipeline builds
  the frames, drops invalid quotes, joins with ``pandas.merge_asof`` (backward, exact matches
  allowed: the quote in force), computes ``price_ex_lag`` and predicts.

Both sides run with tclf-compatible options (exact midpoint comparisons, tclf's "at the
quote" tolerance, CLNV's locked-quote formula) and the bench asserts identical labels, so the
two sides do the same work on the same data. Each timing is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from darkpool_analysis import classify as c

#: Our rule options that reproduce tclf 0.4.0 exactly (see tests/classify/test_rules.py).
TCLF_OPTIONS: dict[str, dict[str, Any]] = {
    "tick": {}, "quote": {"rel_tol": 0.0}, "lee_ready": {"rel_tol": 0.0},
    "emo": {"atol": 1e-4, "rtol": 1e-5, "rel_tol": 0.0},
    "clnv": {"locked": "formula", "rel_tol": 0.0},
}
TCLF_LAYER = {"tick": "tick", "quote": "quote", "lee_ready": "lr", "emo": "emo", "clnv": "clnv"}


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


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` wall-clock runs (the machine is shared: the minimum is stable)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def last_different_price(price: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """tclf's ``price_ex_lag``: the price before the latest price change (vectorised pandas)."""
    series = pd.Series(price)
    previous = series.shift()
    return previous.where(series.ne(previous)).ffill().to_numpy()


def tclf_end_to_end(clf: Any, ts: npt.NDArray[np.int64], price: npt.NDArray[np.float64],
                    q_ts: npt.NDArray[np.int64], bid: npt.NDArray[np.float64],
                    ask: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """tclf from raw arrays: frames, valid quotes, ``merge_asof``, ``price_ex_lag``, predict."""
    trades = pd.DataFrame({"ts": ts, "trade_price": price})
    quotes = pd.DataFrame({"ts": q_ts, "bid_ex": bid, "ask_ex": ask})
    quotes = quotes[c.valid_quote_mask(bid, ask)]
    frame = pd.merge_asof(trades, quotes, on="ts", direction="backward",
                          allow_exact_matches=True)
    frame["price_ex_lag"] = last_different_price(price)
    return clf.predict(frame[["trade_price", "bid_ex", "ask_ex", "price_ex_lag"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000_000, help="synthetic trades")
    parser.add_argument("--tclf-n", type=int, default=5_000_000,
                        help="trades in the same-data comparison with tclf (0 = skip tclf)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (best taken)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per rule call (default: the rules' default)")
    args = parser.parse_args()
    trades, quotes = synthetic(args.n)
    print(f"{args.n:,} trades and quotes built; peak {peak_mb():,.0f} MB")
    print(f"threads per rule call: {c.thread_count(args.threads, args.n)} on {args.n:,} "
          f"trades, {c.thread_count(args.threads, min(args.tclf_n, args.n))} on the tclf "
          f"subset ({os.cpu_count()} CPUs; --threads {args.threads or 'default'})")
    rep = args.repeat
    threads = args.threads
    seconds = {"match_quotes": best_of(lambda: c.match_quotes(trades, quotes), rep)}
    matched = c.match_quotes(trades, quotes)
    for name, rule in c.RULES.items():
        seconds[name] = best_of(lambda rule=rule: rule(trades, matched, threads=threads), rep)
    seconds["lee_ready+match"] = seconds["lee_ready"] + seconds["match_quotes"]
    seconds["bvc_1min"] = best_of(lambda: c.bvc_bars(trades), rep)
    print(f"\nAll {args.n:,} trades (ours, default options):")
    print(f"{'rule':<18}{'M trades/s':>12}{'seconds':>10}")
    for name, sec in seconds.items():
        print(f"{name:<18}{args.n / sec / 1e6:12.1f}{sec:10.3f}")
    if args.tclf_n:
        compare_with_tclf(trades, quotes, min(args.tclf_n, args.n), rep, threads)
    print(f"\npeak RSS {peak_mb():,.0f} MB")


def compare_with_tclf(trades: c.TradeArrays, quotes: c.QuoteArrays, k: int, rep: int,
                      threads: int | None) -> None:
    """Rule-only and end-to-end timings of ours and tclf on the first ``k`` trades."""
    from tclf.classical_classifier import ClassicalClassifier

    ts, price, size = trades.ts[:k].copy(), trades.price[:k].copy(), trades.size[:k].copy()
    last_ts = ts[-1]
    n_q = int(np.searchsorted(quotes.ts, last_ts, side="right"))  # quotes up to the last trade
    q_ts, bid, ask = quotes.ts[:n_q].copy(), quotes.bid[:n_q].copy(), quotes.ask[:n_q].copy()
    sub = c.TradeArrays(ts, price, size)
    sub_quotes = c.QuoteArrays(q_ts, bid, ask)
    matched = c.match_quotes(sub, sub_quotes)
    frame = pd.DataFrame({"trade_price": price, "bid_ex": matched.bid, "ask_ex": matched.ask,
                          "price_ex_lag": last_different_price(price)})
    print(f"\nSame data, same run: first {k:,} trades, {n_q:,} quotes; M trades/s "
          "(best of {rep})".replace("{rep}", str(rep)))
    print(f"{'rule':<11}{'ours 1thr':>11}{'ours rule':>11}{'tclf rule':>11}{'x':>7}"
          f"{'tclf+lag':>10}{'x':>7}{'ours e2e':>11}{'tclf e2e':>11}{'x':>7}")

    def ours_e2e(rule: Callable[..., c.Int8Array], options: dict[str, Any]) -> c.Int8Array:
        t = c.TradeArrays(ts, price, size)
        q = c.QuoteArrays(q_ts, bid, ask)
        return rule(t, c.match_quotes(t, q), threads=threads, **options)

    for name, rule in c.RULES.items():
        options = TCLF_OPTIONS[name]
        clf = ClassicalClassifier(layers=[(TCLF_LAYER[name], "ex")], strategy="const").fit(frame)
        ours_labels = rule(sub, matched, threads=threads, **options)
        if not np.array_equal(ours_labels, rule(sub, matched, threads=1, **options)):
            raise SystemExit(f"{name}: labels depend on the thread count")
        if not np.array_equal(ours_labels, clf.predict(frame)) or not np.array_equal(
                ours_e2e(rule, options), tclf_end_to_end(clf, ts, price, q_ts, bid, ask)):
            raise SystemExit(f"{name}: labels differ from tclf; the comparison is void")
        ours_one = best_of(lambda rule=rule, o=options: rule(sub, matched, threads=1, **o), rep)
        ours_rule = best_of(
            lambda rule=rule, o=options: rule(sub, matched, threads=threads, **o), rep)
        tclf_rule = best_of(lambda clf=clf: clf.predict(frame), rep)
        needs_lag = name != "quote"  # the quote rule has no tick test
        lag_prep = best_of(lambda: last_different_price(price), rep) if needs_lag else 0.0
        ours_full = best_of(lambda rule=rule, o=options: ours_e2e(rule, o), rep)
        tclf_full = best_of(lambda clf=clf: tclf_end_to_end(clf, ts, price, q_ts, bid, ask), rep)
        print(f"{name:<11}{k / ours_one / 1e6:11.1f}{k / ours_rule / 1e6:11.1f}"
              f"{k / tclf_rule / 1e6:11.2f}"
              f"{tclf_rule / ours_rule:7.1f}{k / (tclf_rule + lag_prep) / 1e6:10.2f}"
              f"{(tclf_rule + lag_prep) / ours_rule:7.1f}{k / ours_full / 1e6:11.1f}"
              f"{k / tclf_full / 1e6:11.2f}{tclf_full / ours_full:7.1f}")
    print("labels identical to tclf for every rule (rule only and end-to-end)")


if __name__ == "__main__":
    main()
