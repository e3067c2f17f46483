"""Block-wise kernels: any block size gives the labels of plain whole-array formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis import classify as c


def _random_day(seed: int, n: int, n_groups: int) -> tuple[c.TradeArrays, c.MatchedQuotes]:
    """Cent prices with long zero-tick runs; quotes locked, at the trade, unquoted or normal."""
    rng = np.random.default_rng(seed)
    group = np.sort(rng.integers(0, n_groups, n))
    price = np.round(20 + np.cumsum(rng.choice([-0.01, 0, 0.01], n, p=[0.2, 0.6, 0.2])), 2)
    bid = price - rng.choice([0.0, 0.01, 0.02, 0.03], n)
    ask = bid + rng.choice([0.0, 0.01, 0.02, 0.04, 0.1], n)
    ask[rng.random(n) < 0.05] = np.nan
    bid[np.isnan(ask)] = np.nan
    return c.TradeArrays(np.arange(n) * 7, price, np.ones(n), group), c.MatchedQuotes(bid, ask)


def _reference_tick(price: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Plain Python: sign against the last different earlier price of the same group."""
    out = np.zeros(len(price), dtype=np.int8)
    last = 0
    for i in range(len(price)):
        if i == 0 or group[i] != group[i - 1]:
            last = 0
        elif price[i] != price[i - 1]:
            last = 1 if price[i] > price[i - 1] else -1
        out[i] = last
    return out


def _reference_rules(t: c.TradeArrays, q: c.MatchedQuotes) -> dict[str, np.ndarray]:
    """The rule formulas on whole arrays (np.where, no blocks), default options."""
    p, bid, ask = t.price, q.bid, q.ask
    tick = _reference_tick(p, t.group)
    with np.errstate(invalid="ignore"):
        mid = 0.5 * (ask + bid)
        tol = c.REL_TOL * mid
        quote = np.where(p > mid + tol, 1, np.where(p < mid - tol, -1, 0)).astype(np.int8)
        at_ask = np.abs(p - ask) <= 1e-6
        at_bid = np.abs(p - bid) <= 1e-6
        edge_tol = c.REL_TOL * ask
        upper = (0.7 * ask + 0.3 * bid - edge_tol <= p) & (p <= ask)
        lower = (bid <= p) & (p <= 0.3 * ask + 0.7 * bid + edge_tol)
    return {"tick": tick, "quote": quote, "lee_ready": np.where(quote != 0, quote, tick),
            "emo": np.where(at_ask ^ at_bid, quote, tick),
            "clnv": np.where((upper ^ lower) & (ask != bid), quote, tick)}


@pytest.mark.parametrize("block", [1, 2, 3, 64, 1000, 1 << 16])
def test_every_rule_is_independent_of_the_block_size(monkeypatch: pytest.MonkeyPatch,
                                                     block: int) -> None:
    t, q = _random_day(11, 4000, 5)
    expected = _reference_rules(t, q)
    assert (expected["tick"] != 0).any() and (expected["quote"] == 0).any()
    monkeypatch.setattr(c, "CHUNK", block)
    for name, rule in c.RULES.items():
        labels = rule(t, q)
        assert labels.dtype == np.int8
        assert np.array_equal(labels, expected[name]), f"{name}, block {block}"


def test_zero_tick_run_spanning_many_blocks_keeps_its_sign(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c, "CHUNK", 3)
    t = c.TradeArrays(np.arange(12), np.array([5.0, 4.0] + [4.0] * 9 + [4.5]), np.ones(12))
    assert c.tick_test(t).tolist() == [0] + [-1] * 10 + [1]
    nan = np.full(12, np.nan)
    assert c.lee_ready(t, c.MatchedQuotes(nan, nan)).tolist() == [0] + [-1] * 10 + [1]


def _asof_reference(t: c.TradeArrays, quotes: c.QuoteArrays, lag: int) -> pd.DataFrame:
    """pandas ``merge_asof`` by group on the valid quotes: the independent oracle."""
    valid = c.valid_quote_mask(quotes.bid, quotes.ask)
    left = pd.DataFrame({"ts": t.ts - lag, "g": t.group, "i": np.arange(len(t))})
    right = pd.DataFrame({"ts": quotes.ts, "g": quotes.group, "bid": quotes.bid,
                          "ask": quotes.ask})[valid]
    merged = pd.merge_asof(left.sort_values("ts", kind="stable"),
                           right.sort_values("ts", kind="stable"), on="ts", by="g",
                           direction="backward", allow_exact_matches=True)
    return merged.sort_values("i")


@pytest.mark.parametrize("quotes_per_trade", [0.3, 1, 12])  # merge path and search path
@pytest.mark.parametrize("lag", [0, 5])
def test_match_quotes_equals_merge_asof(monkeypatch: pytest.MonkeyPatch,
                                        quotes_per_trade: float, lag: int) -> None:
    monkeypatch.setattr(c, "CHUNK", 50)
    rng = np.random.default_rng(3)
    n, n_groups = 2000, 4
    nq = int(n * quotes_per_trade)
    group = np.sort(rng.integers(0, n_groups, n))
    ts = np.sort(rng.integers(0, 300, n)) + 1_600_000_000_000_000_000
    order = np.lexsort((ts, group))
    t = c.TradeArrays(ts[order], np.full(n, 10.0), np.ones(n), group[order])
    q_group = np.sort(rng.integers(0, n_groups, nq))
    q_ts = rng.integers(10, 300, nq) + 1_600_000_000_000_000_000  # early trades unquoted
    q_order = np.lexsort((q_ts, q_group))
    bid = np.round(rng.uniform(9.9, 10.0, nq), 2)
    ask = bid + rng.choice([-0.01, 0.0, 0.01, 0.02], nq)  # some crossed, some locked
    quotes = c.QuoteArrays(q_ts[q_order], bid, ask, q_group[q_order])
    matched = c.match_quotes(t, quotes, lag_ns=lag)
    expected = _asof_reference(t, quotes, lag)
    assert np.isnan(matched.bid).any() and (~np.isnan(matched.bid)).any()
    assert np.array_equal(matched.bid, expected["bid"].to_numpy(), equal_nan=True)
    assert np.array_equal(matched.ask, expected["ask"].to_numpy(), equal_nan=True)


def test_match_quotes_rejects_a_trade_too_far_from_its_group_start() -> None:
    hours_40 = 40 * 3600 * 10**9
    t = c.TradeArrays(np.array([0, hours_40]), np.ones(2), np.ones(2), np.array([0, 0]))
    q = c.QuoteArrays(np.array([0]), np.array([1.0]), np.array([1.1]), np.array([0]))
    with pytest.raises(ValueError, match="spans more than 39 hours"):
        c.match_quotes(t, q)


def test_valid_quote_mask_matches_its_definition() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, 1.0, 2.0])
    bid, ask = (a.ravel() for a in np.meshgrid(values, values))
    with np.errstate(invalid="ignore"):
        expected = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask >= bid)
    assert np.array_equal(c.valid_quote_mask(bid, ask), expected)
