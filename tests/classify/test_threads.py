"""Threaded rules: any thread count gives exactly the labels of one sequential pass.

Blocks are made tiny (``CHUNK``) so that block and segment boundaries fall inside zero-tick
runs, at group starts and inside whole segments of equal prices on small arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from darkpool_analysis import classify as c

#: Every rule with its default options and with tclf's (exact comparisons), plus variants.
RULE_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("tick", {}),
    ("quote", {}), ("quote", {"rel_tol": 0.0}),
    ("lee_ready", {}), ("lee_ready", {"rel_tol": 0.0}),
    ("emo", {}), ("emo", {"atol": 1e-4, "rtol": 1e-5, "rel_tol": 0.0}),
    ("emo", {"atol": 0.0, "rtol": 1e-3}),
    ("clnv", {}), ("clnv", {"locked": "formula", "rel_tol": 0.0}), ("clnv", {"band": 0.2}),
]


def _tape(seed: int, n: int, n_groups: int, zero_share: float,
          flat: tuple[float, float] | None = None) -> tuple[c.TradeArrays, c.MatchedQuotes]:
    """Cent prices (``zero_share`` zero ticks), mixed quotes; ``flat`` = (from, to) shares of
    the tape where the price does not move at all."""
    rng = np.random.default_rng(seed)
    step = (1 - zero_share) / 2
    moves = rng.choice([-0.01, 0.0, 0.01], n, p=[step, zero_share, step])
    if flat is not None:
        moves[int(flat[0] * n):int(flat[1] * n)] = 0.0
    price = np.round(50 + np.cumsum(moves), 2)
    group = np.sort(rng.integers(0, n_groups, n))
    bid = price - rng.choice([0.0, 0.01, 0.02, 0.03], n)
    ask = bid + rng.choice([0.0, 0.01, 0.02, 0.04, 0.1], n)
    ask[rng.random(n) < 0.05] = np.nan
    bid[np.isnan(ask)] = np.nan
    return c.TradeArrays(np.arange(n), price, np.ones(n), group), c.MatchedQuotes(bid, ask)


def _assert_thread_counts_agree(t: c.TradeArrays, q: c.MatchedQuotes) -> None:
    for name, options in RULE_OPTIONS:
        sequential = c.RULES[name](t, q, threads=1, **options)
        for threads in (2, 3, 5):
            labels = c.RULES[name](t, q, threads=threads, **options)
            assert labels.dtype == np.int8
            assert np.array_equal(labels, sequential), f"{name} {options}, {threads} threads"


@pytest.mark.parametrize("seed", range(6))
def test_random_tapes_give_the_same_labels_on_any_thread_count(
        monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    monkeypatch.setattr(c, "CHUNK", int(rng.choice([2, 3, 7, 16, 50])))
    t, q = _tape(seed, int(rng.integers(50, 1500)), int(rng.integers(1, 6)),
                 float(rng.uniform(0.1, 0.95)))
    _assert_thread_counts_agree(t, q)


def test_sequential_labels_equal_the_plain_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread-count oracle is itself right: threads=1 equals the plain Python scan."""
    monkeypatch.setattr(c, "CHUNK", 7)
    t, _ = _tape(1, 800, 3, 0.8, flat=(0.3, 0.7))
    expected = np.zeros(len(t), dtype=np.int8)
    last = 0
    for i in range(len(t)):
        if i == 0 or t.group[i] != t.group[i - 1]:
            last = 0
        elif t.price[i] != t.price[i - 1]:
            last = 1 if t.price[i] > t.price[i - 1] else -1
        expected[i] = last
    for threads in (1, 2, 3):
        assert np.array_equal(c.tick_test(t, threads=threads), expected)


@pytest.mark.parametrize("chunk", [3, 16, 1000])
def test_zero_tick_runs_across_segments_carry_the_true_label(
        monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Equal prices over the middle 80 %: segment edges (and, for threads=3 and more, whole
    segments) fall inside one zero-tick run, which must keep the label from before it."""
    monkeypatch.setattr(c, "CHUNK", chunk)
    n = 3000
    price = np.full(n, 10.0)
    price[: n // 10] = 10.0 + 0.01 * (np.arange(n // 10) % 3)  # ends on an uptick
    price[n // 10 - 1] = 9.99  # downtick into the flat stretch
    price[n // 10:] = 9.99
    price[-5:] = [9.98, 9.98, 10.0, 10.0, 10.0]
    t = c.TradeArrays(np.arange(n), price, np.ones(n))
    labels = c.tick_test(t, threads=1)
    assert (labels[n // 10 - 1: n - 5] == -1).all()
    nan = np.full(n, np.nan)
    unquoted = c.MatchedQuotes(nan, nan)
    for threads in (2, 3, 4, 7):
        assert np.array_equal(c.tick_test(t, threads=threads), labels)
        assert np.array_equal(c.lee_ready(t, unquoted, threads=threads), labels)
    _, q = _tape(2, n, 1, 0.5)
    _assert_thread_counts_agree(t, q)


def test_segment_of_equal_prices_at_a_group_start_stays_unclassified(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups start exactly at the segment edges (n * i // threads): no carry may leak in."""
    monkeypatch.setattr(c, "CHUNK", 4)
    n = 600
    for threads in (2, 3):
        edges = [n * i // threads for i in range(threads + 1)]
        group = np.repeat(np.arange(threads), np.diff(edges))
        price = np.where(np.arange(n) % 2 == 0, 10.0, 10.01)  # alternating: labels +1/-1
        for lo in edges[1:-1]:
            price[lo:lo + 50] = 12.0  # a new group opens with a flat run
        t = c.TradeArrays(np.arange(n), price, np.ones(n), group)
        labels = c.tick_test(t, threads=threads)
        assert np.array_equal(labels, c.tick_test(t, threads=1))
        for lo in edges[1:-1]:
            assert (labels[lo:lo + 50] == 0).all()
            assert labels[lo - 1] != 0
        _, q = _tape(3, n, 1, 0.5)
        _assert_thread_counts_agree(t, q)


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_tiny_inputs_on_many_threads(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr(c, "CHUNK", 2)
    t, q = _tape(4, n, 1, 0.3)
    _assert_thread_counts_agree(t, q)
    assert len(c.tick_test(t, threads=8)) == n


def test_input_smaller_than_a_block_and_default_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    t, q = _tape(5, 700, 2, 0.6)
    _assert_thread_counts_agree(t, q)  # one block of the default size, however many threads
    monkeypatch.setattr(c, "CHUNK", 8)
    monkeypatch.setattr(c, "PARALLEL_MIN_TRADES", 0)  # threads=None now means 2 (or cores)
    for name, options in RULE_OPTIONS:
        assert np.array_equal(c.RULES[name](t, q, **options),
                              c.RULES[name](t, q, threads=1, **options))


def test_thread_count_must_be_positive() -> None:
    t, q = _tape(6, 10, 1, 0.3)
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        c.lee_ready(t, q, threads=0)


def _exact_reference(t: c.TradeArrays, q: c.MatchedQuotes) -> dict[str, np.ndarray]:
    """tclf-style rules with ``rel_tol=0`` written out on whole arrays with the tolerance
    terms kept (``x -/+ 0 * y``): NaN wherever a quote is infinite."""
    p, bid, ask = t.price, q.bid, q.ask
    tick = c.tick_test(t, threads=1)
    mid = 0.5 * (ask + bid)
    quote = ((p > mid + 0.0 * mid).astype(np.int8) - (p < mid - 0.0 * mid).astype(np.int8))
    upper = (0.7 * ask + 0.3 * bid - 0.0 * ask <= p) & (p <= ask)
    lower = (bid <= p) & (p <= 0.3 * ask + 0.7 * bid + 0.0 * ask)
    return {"quote": quote, "lee_ready": np.where(quote != 0, quote, tick),
            "clnv": np.where(upper ^ lower, quote, tick)}


@pytest.mark.parametrize("threads", [1, 2])
def test_exact_comparisons_treat_infinite_quotes_like_the_tolerance_formula(
        monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """``rel_tol=0`` skips the ``0 * x`` terms only in blocks without an infinite midpoint:
    an infinite quote (never produced by match_quotes) still leaves the trade to the same
    rule as the written-out formula."""
    monkeypatch.setattr(c, "CHUNK", 16)
    t, q = _tape(7, 400, 2, 0.5)
    rng = np.random.default_rng(8)
    specials = np.array([np.inf, -np.inf, np.nan, 1e308, -1.0])
    bid, ask = q.bid.copy(), q.ask.copy()
    hit = rng.random(len(t)) < 0.05
    ask[hit] = rng.choice(specials, hit.sum())
    hit = rng.random(len(t)) < 0.05
    bid[hit] = rng.choice(specials, hit.sum())
    odd = c.MatchedQuotes(bid, ask)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = _exact_reference(t, odd)
        assert (np.isinf(0.5 * (ask + bid))).any()
        got = {"quote": c.quote_rule(t, odd, rel_tol=0.0, threads=threads),
               "lee_ready": c.lee_ready(t, odd, rel_tol=0.0, threads=threads),
               "clnv": c.clnv(t, odd, locked="formula", rel_tol=0.0, threads=threads)}
    for name, labels in got.items():
        assert np.array_equal(labels, expected[name]), name
