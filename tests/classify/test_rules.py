"""Hand-made cases for every rule, a plain-pandas reference, and tclf on the real TAQ day."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from darkpool_analysis import classify as c
from darkpool_analysis.config import load_config

NAN = np.nan


def trades(prices: list[float], ts: list[int] | None = None,
           group: list[int] | None = None) -> c.TradeArrays:
    n = len(prices)
    return c.TradeArrays(np.array(ts if ts is not None else range(n), dtype=np.int64),
                         np.array(prices), np.full(n, 100.0),
                         None if group is None else np.array(group))


def quotes(bid: list[float], ask: list[float]) -> c.MatchedQuotes:
    return c.MatchedQuotes(np.array(bid, dtype=float), np.array(ask, dtype=float))


def test_tick_test_zero_tick_chains_and_first_trade() -> None:
    t = trades([10, 10, 10.01, 10.01, 10.01, 10.00, 10.00, 10.02])
    assert c.tick_test(t).tolist() == [0, 0, 1, 1, 1, -1, -1, 1]


def test_tick_test_resets_at_group_boundaries_and_across_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    t = trades([10, 11, 11, 11, 11, 12], group=[0, 0, 0, 1, 1, 1])
    assert c.tick_test(t).tolist() == [0, 1, 1, 0, 0, 1]
    monkeypatch.setattr(c, "CHUNK", 2)  # zero-tick runs that cross a chunk edge
    t = trades([10, 11, 11, 11, 11, 10, 10])
    assert c.tick_test(t).tolist() == [0, 1, 1, 1, 1, -1, -1]


def test_quote_rule_midpoint_outside_spread_and_missing() -> None:
    t = trades([10.02, 10.00, 10.01, 10.05, 9.90, 10.01])
    q = quotes([10.00, 10.00, 10.00, 10.00, 10.00, NAN], [10.02, 10.02, 10.02, 10.02, 10.02, NAN])
    assert c.quote_rule(t, q).tolist() == [1, -1, 0, 1, -1, 0]


def test_lee_ready_uses_tick_at_midpoint_and_without_quote() -> None:
    t = trades([10.00, 10.01, 10.02, 10.01, 10.01])
    q = quotes([NAN, 10.00, 10.00, 10.00, 10.00], [NAN, 10.02, 10.02, 10.02, 10.02])
    # 0: no quote, first trade -> 0; 1: mid, uptick -> +1; 2: at ask -> +1;
    # 3: mid, downtick -> -1; 4: mid, zero tick after a downtick -> -1
    assert c.lee_ready(t, q).tolist() == [0, 1, 1, -1, -1]


def test_emo_quote_only_at_bid_or_ask() -> None:
    t = trades([10.00, 10.015, 10.02, 10.00, 10.00])
    q = quotes([9.99, 10.00, 10.00, 9.99, 10.00], [10.01, 10.02, 10.02, 10.01, 10.00])
    # 1: inside, not at a quote -> tick (+1); 2: at ask -> +1; 3: mid -> tick (-1)
    # 4: locked at 10.00 -> at both -> tick (0: zero tick after the downtick = -1)
    assert c.emo(t, q).tolist() == [0, 1, 1, -1, -1]


def test_clnv_bands_and_locked_quote() -> None:
    t = trades([10.00, 10.08, 10.05, 10.03, 10.20, 10.20])
    q = quotes([10.00, 10.00, 10.00, 10.00, 10.00, 10.20], [10.10, 10.10, 10.10, 10.10, 10.10,
                                                             10.20])
    # 0: at the bid -> -1; 1: upper 30 % -> +1; 2: middle -> tick (-1);
    # 3: lower band edge (inclusive) -> -1; 4: outside the spread -> tick (+1);
    # 5: locked quote -> tick (zero tick after an uptick -> +1)
    assert c.clnv(t, q).tolist() == [-1, 1, -1, -1, 1, 1]


def test_match_quotes_asof_drops_crossed_and_zero_quotes_and_respects_groups() -> None:
    qa = c.QuoteArrays(np.array([0, 5, 10, 10, 3]), np.array([9.9, 10.0, 0.0, 10.2, 5.0]),
                       np.array([10.1, 9.9, 10.1, 10.3, 5.1]), np.array([0, 0, 0, 0, 1]))
    ta = trades([10, 10, 10, 10, 5, 5], ts=[-1, 0, 7, 10, 2, 4], group=[0, 0, 0, 0, 1, 1])
    m = c.match_quotes(ta, qa)
    # before the first quote -> NaN; ts 7: the crossed quote at 5 is dropped -> quote at 0;
    # identical timestamps: the last quote at ts 10 (the zero bid one is dropped first);
    # group 1 never sees group 0's quotes.
    assert np.allclose(m.bid, [NAN, 9.9, 9.9, 10.2, NAN, 5.0], equal_nan=True)
    lagged = c.match_quotes(ta, qa, lag_ns=5)
    assert np.allclose(lagged.bid, [NAN, NAN, 9.9, 9.9, NAN, NAN], equal_nan=True)


def test_nbbo_from_exchange_quotes() -> None:
    ts = np.array([1, 2, 3, 4, 5])
    ex = np.array([ord("N"), ord("P"), ord("N"), ord("P"), ord("N")])
    bid = np.array([10.0, 10.01, 9.99, 0.0, 10.0])
    ask = np.array([10.05, 10.03, 10.04, 0.0, 10.02])
    nbbo = c.nbbo_from_exchange_quotes(ts, ex, bid, ask)
    assert np.allclose(nbbo.bid, [10.0, 10.01, 10.01, 9.99, 10.0])
    assert np.allclose(nbbo.ask, [10.05, 10.03, 10.03, 10.04, 10.02])


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="not sorted by timestamp"):
        trades([10, 11], ts=[5, 4])
    with pytest.raises(ValueError, match="price must be"):
        trades([10, 0])
    with pytest.raises(ValueError, match="size must be"):
        c.TradeArrays(np.array([1, 2]), np.array([1.0, 2.0]), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="valid: clnv, emo, lee_ready, quote, tick"):
        c.get_rule("lee-ready")
    with pytest.raises(ValueError, match="needs matched quotes"):
        c.lee_ready(trades([1.0]), None)


def test_bvc_fraction_and_bars() -> None:
    assert c.bvc_buy_fraction(np.array([0.0, 1.0, -1.0]), 1.0) == pytest.approx(
        [0.5, 0.8413447460685429, 0.15865525393145707])
    assert c.bvc_buy_fraction(np.array([0.0, 0.0])).tolist() == [0.5, 0.5]  # sigma 0
    minute = 60_000_000_000
    t = c.TradeArrays(np.array([0, 1, minute, minute + 1, 2 * minute]),
                      np.array([10.0, 10.1, 10.2, 10.2, 10.0]), np.array([1.0, 1, 2, 2, 4]))
    bars = c.bvc_bars(t)
    assert bars.volume.tolist() == [2, 4, 4]
    assert np.allclose(bars.price_change, [0.1, 0.1, -0.2])
    sigma = np.std([0.1, 0.1, -0.2], ddof=1)
    from scipy.stats import norm
    expected = np.array([2, 4, 4]) * norm.cdf(np.array([0.1, 0.1, -0.2]) / sigma)
    assert np.allclose(bars.buy_volume, expected)


def _pandas_tick(prices: pd.Series, group: pd.Series) -> np.ndarray:
    """Reference: sign of the price minus the last *different* earlier price in the group."""
    frame = pd.DataFrame({"p": prices, "g": group})
    changed = frame["p"].ne(frame.groupby("g")["p"].shift())
    run = changed.cumsum()
    run_first_prev = frame.groupby("g")["p"].shift().where(changed)
    last_diff = run_first_prev.groupby(run).transform("first")
    last_diff = last_diff.where(~frame.groupby("g").cumcount().eq(0))
    return np.sign(frame["p"] - last_diff).fillna(0).astype(np.int8).to_numpy()


def test_fast_rules_match_plain_pandas_reference_on_random_data(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c, "CHUNK", 997)
    rng = np.random.default_rng(7)
    n = 5000
    group = np.sort(rng.integers(0, 4, n))
    price = np.round(20 + np.cumsum(rng.choice([-0.01, 0, 0.01], n, p=[0.3, 0.4, 0.3])), 2)
    t = c.TradeArrays(np.arange(n) * 10, price, np.ones(n), group)
    expected = _pandas_tick(pd.Series(price), pd.Series(group))
    assert (c.tick_test(t) == expected).all()
    bid = price - rng.choice([0.0, 0.01, 0.02], n)
    ask = bid + rng.choice([0.0, 0.01, 0.02, 0.03], n)
    m = c.MatchedQuotes(bid, ask)
    mid = (bid + ask) / 2
    quote = np.sign(np.round(price - mid, 9)).astype(np.int8)
    assert (c.quote_rule(t, m) == quote).all()
    assert (c.lee_ready(t, m) == np.where(quote != 0, quote, expected)).all()


# -- tclf on the real TAQ day -------------------------------------------------------------------
TCLF_LAYERS = {"tick": [("tick", "ex")], "quote": [("quote", "ex")], "lee_ready": [("lr", "ex")],
               "emo": [("emo", "ex")], "clnv": [("clnv", "ex")]}


@pytest.mark.realdata
def test_every_rule_agrees_with_tclf_on_real_etr_day(real_data: object) -> None:
    tclf = pytest.importorskip("tclf.classical_classifier")
    from pathlib import Path

    from darkpool_analysis.sources.trades import TaqReader, load_day

    folder = Path(str(real_data)) / "taq" / "bj-liang_ETR_2019-05-08"
    con = duckdb.connect()
    ticks = load_day(con, TaqReader(folder), dt.date(2019, 5, 8), ["ETR"], load_config())
    assert ticks is not None and ticks.quotes is not None
    assert len(ticks.trades) == 17057 - 3490 - 17  # TRF prints and non-regular sales dropped
    m = c.match_quotes(ticks.trades, ticks.quotes)
    price = ticks.trades.price
    frame = pd.DataFrame({"trade_price": price, "bid_ex": m.bid, "ask_ex": m.ask,
                          "price_ex_lag": _last_different_price(price)})
    # tclf's configuration: exact float comparisons, np.isclose(atol=1e-4) "at the quote".
    exact = {"rel_tol": 0.0}
    options = {"quote": exact, "lee_ready": exact, "emo": {"atol": 1e-4, "rtol": 1e-5, **exact},
               "clnv": {"locked": "formula", **exact}}
    for name, layers in TCLF_LAYERS.items():
        clf = tclf.ClassicalClassifier(layers=layers, strategy="const").fit(frame)
        reference = clf.predict(frame).astype(np.int8)
        ours = c.RULES[name](ticks.trades, m, **options.get(name, {}))
        assert (ours == reference).all(), f"{name}: {(ours != reference).sum()} differ"
    # Our defaults differ only where tclf signs float noise: trades printed at the midpoint
    # (the quote rule leaves them unclassified) ...
    mid = 0.5 * (m.bid + m.ask)
    differ = c.quote_rule(ticks.trades, m) != c.quote_rule(ticks.trades, m, rel_tol=0.0)
    assert differ.any() and (np.abs(price[differ] - mid[differ]) < 1e-9).all()
    assert (c.quote_rule(ticks.trades, m)[differ] == 0).all()
    # ... and, for CLNV, trades at a locked quote (the tick test signs them).
    default = c.clnv(ticks.trades, m, rel_tol=0.0)
    differ = default != c.clnv(ticks.trades, m, locked="formula", rel_tol=0.0)
    assert (m.bid[differ] == m.ask[differ]).all()
    assert (default[differ] == c.tick_test(ticks.trades)[differ]).all()


def _last_different_price(price: np.ndarray) -> np.ndarray:
    """Independent reference for tclf's ``price_ex_lag``: plain Python scan."""
    out = np.full(len(price), np.nan)
    last_diff = np.nan
    for i in range(1, len(price)):
        if price[i] != price[i - 1]:
            last_diff = price[i - 1]
        out[i] = last_diff
    return out
