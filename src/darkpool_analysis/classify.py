"""Trade-direction rules for lit-market trades: pure, vectorised numpy (no I/O, no pandas).

Every per-trade rule has the same signature::

    rule(trades: TradeArrays, quotes: MatchedQuotes | None, **options) -> np.ndarray[int8]

and returns +1 (buyer-initiated), -1 (seller-initiated) or 0 (unclassified). The hybrid rules
are defined exactly as in the literature and in ``tclf`` (Bilz): the quote rule leaves trades at
the midpoint or without a valid quote unclassified; Lee-Ready, EMO and CLNV fall back to the
tick test. Bulk volume classification (BVC) works on bars, not trades: see :func:`bvc_bars`.

Data contract: trades are sorted by ``(group, ts)`` where ``group`` numbers the
(symbol, date) partitions; the tick test never looks across a group boundary and quotes only
match trades of the same group. Work is done in fixed-size chunks so 50 M trades need only a
few hundred MB of scratch memory beyond the inputs. See ``docs/trade-classification.md``.

References: Lee & Ready (1991); Ellis, Michaely & O'Hara (2000); Chakrabarty, Li, Nguyen &
Van Ness (2007); Easley, López de Prado & O'Hara (2012); Holden & Jacobsen (2014).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

#: Bumped whenever a rule, a filter or the aggregation changes (stored with every row).
CLASSIFY_VERSION = "lit-1"

#: Elements processed per block: bounds scratch memory, keeps the working set in cache.
CHUNK = 1 << 21

#: Quote timestamps are keyed as ``group << _GROUP_SHIFT | ns since the group's first tick``.
_GROUP_SHIFT = 47  # 2**47 ns = 39 hours: one group (a symbol-day) must span less than that

Int8Array = npt.NDArray[np.int8]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

RuleName = Literal["tick", "quote", "lee_ready", "emo", "clnv"]
MethodName = Literal["tick", "quote", "lee_ready", "emo", "clnv", "bvc"]
METHODS: tuple[MethodName, ...] = ("lee_ready", "tick", "quote", "emo", "clnv", "bvc")
QUOTE_RULES: frozenset[str] = frozenset({"quote", "lee_ready", "emo", "clnv"})


def _as(values: npt.ArrayLike, dtype: type[np.generic], name: str) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def group_starts(group: npt.NDArray[np.integer] | None, n: int) -> npt.NDArray[np.bool_]:
    """True at the first element of every group (always at position 0)."""
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
        if group is not None:
            np.not_equal(group[1:], group[:-1], out=starts[1:])
    return starts


@dataclass(frozen=True)
class TradeArrays:
    """Trades of one or more (symbol, date) groups, sorted by ``(group, ts)``.

    ``ts`` is int64 ns since the epoch (UTC), ``price`` and ``size`` are float64 and strictly
    positive; ``group`` (optional, int64) numbers the groups and is non-decreasing. Ties in
    ``ts`` keep the given order (the sequence number order of the feed). The constructor
    rejects unsorted or non-positive input instead of mis-signing it.
    """

    ts: IntArray
    price: FloatArray
    size: FloatArray
    group: IntArray | None = None

    def __post_init__(self) -> None:
        ts = _as(self.ts, np.int64, "ts")
        price = _as(self.price, np.float64, "price")
        size = _as(self.size, np.float64, "size")
        group = None if self.group is None else _as(self.group, np.int64, "group")
        n = len(ts)
        if len(price) != n or len(size) != n or (group is not None and len(group) != n):
            raise ValueError("ts, price, size and group must have the same length")
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "price", price)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "group", group)
        _check_sorted(ts, group, "trades")
        bad = ~(price > 0) | ~np.isfinite(price)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"trade {i}: price must be a finite number > 0, got {price[i]!r}")
        bad = ~(size > 0) | ~np.isfinite(size)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"trade {i}: size must be a finite number > 0, got {size[i]!r}")

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class QuoteArrays:
    """Best bid/offer updates sorted by ``(group, ts)``; each is in force until the next one.

    Zero, negative, non-finite or crossed (bid > ask) quotes are kept here and dropped by
    :func:`match_quotes`, so a bad quote *replaces* the previous one but never signs a trade.
    """

    ts: IntArray
    bid: FloatArray
    ask: FloatArray
    group: IntArray | None = None

    def __post_init__(self) -> None:
        ts = _as(self.ts, np.int64, "ts")
        bid = _as(self.bid, np.float64, "bid")
        ask = _as(self.ask, np.float64, "ask")
        group = None if self.group is None else _as(self.group, np.int64, "group")
        n = len(ts)
        if len(bid) != n or len(ask) != n or (group is not None and len(group) != n):
            raise ValueError("ts, bid, ask and group must have the same length")
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "bid", bid)
        object.__setattr__(self, "ask", ask)
        object.__setattr__(self, "group", group)
        _check_sorted(ts, group, "quotes")

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class MatchedQuotes:
    """The quote in force for each trade (NaN where none was valid)."""

    bid: FloatArray
    ask: FloatArray

    @property
    def matched(self) -> npt.NDArray[np.bool_]:
        """True where the trade has a valid (non-crossed, positive) quote."""
        return ~np.isnan(self.bid)


def _check_sorted(ts: IntArray, group: IntArray | None, what: str) -> None:
    """Raise unless sorted by (group, ts): unsorted input would silently mis-sign trades."""
    if len(ts) < 2:
        return
    if group is None:
        bad = ts[1:] < ts[:-1]
    else:
        dg = group[1:] - group[:-1]
        if (dg < 0).any():
            i = int(np.argmax(dg < 0)) + 1
            raise ValueError(f"{what} are not sorted by group: element {i} goes back from "
                             f"group {group[i - 1]} to {group[i]}")
        bad = (ts[1:] < ts[:-1]) & (dg == 0)
    if bad.any():
        i = int(np.argmax(bad)) + 1
        raise ValueError(f"{what} are not sorted by timestamp: element {i} ({ts[i]}) is "
                         f"earlier than element {i - 1} ({ts[i - 1]}); sort them stably first")


# -- quote matching ---------------------------------------------------------------------------
def valid_quote_mask(bid: FloatArray, ask: FloatArray) -> npt.NDArray[np.bool_]:
    """Usable quotes: finite, bid > 0, ask > 0 and not crossed (locked bid == ask is kept)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask >= bid)


def match_quotes(trades: TradeArrays, quotes: QuoteArrays, *, lag_ns: int = 0,
                 drop_invalid: bool = True) -> MatchedQuotes:
    """As-of join: each trade gets the last valid quote with ``quote.ts <= trade.ts - lag_ns``.

    ``lag_ns = 0`` uses the quote in force at the trade time (Holden-Jacobsen 2014; a quote
    stamped at the very same nanosecond counts as in force); Lee-Ready's original 5-second
    rule is ``lag_ns=5_000_000_000``. Crossed, zero and non-finite quotes are dropped first
    (``drop_invalid``). Trades before the first valid quote of their group get NaN.
    Implemented with ``np.searchsorted`` on a (group, time) key: O(n log m), no Python loop.
    """
    if lag_ns < 0:
        raise ValueError(f"lag_ns must be >= 0, got {lag_ns}")
    if (trades.group is None) != (quotes.group is None):
        raise ValueError("trades and quotes must both have a group array or both have none")
    q_ts, q_bid, q_ask, q_group = quotes.ts, quotes.bid, quotes.ask, quotes.group
    if drop_invalid:
        keep = valid_quote_mask(q_bid, q_ask)
        if not keep.all():
            q_ts, q_bid, q_ask = q_ts[keep], q_bid[keep], q_ask[keep]
            q_group = None if q_group is None else q_group[keep]
    n = len(trades)
    bid = np.full(n, np.nan)
    ask = np.full(n, np.nan)
    if n == 0 or len(q_ts) == 0:
        return MatchedQuotes(bid, ask)
    if trades.group is None or q_group is None:
        for lo in range(0, n, CHUNK):
            hi = min(lo + CHUNK, n)
            idx = np.searchsorted(q_ts, trades.ts[lo:hi] - lag_ns, side="right") - 1
            ok = idx >= 0
            np.copyto(bid[lo:hi], q_bid[idx], where=ok)
            np.copyto(ask[lo:hi], q_ask[idx], where=ok)
        return MatchedQuotes(bid, ask)
    base = _group_base(trades.ts, trades.group, q_ts, q_group)
    q_key = _group_key(q_ts, q_group, base)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        t_group = trades.group[lo:hi]
        # A lag can push the key below the group's base: the group check below rejects the
        # quote that the search then finds in the previous group.
        t_key = (t_group << _GROUP_SHIFT) + (trades.ts[lo:hi] - base[t_group] - lag_ns)
        idx = np.searchsorted(q_key, t_key, side="right") - 1
        ok = idx >= 0
        ok &= q_group[np.maximum(idx, 0)] == t_group
        np.copyto(bid[lo:hi], q_bid[idx], where=ok)
        np.copyto(ask[lo:hi], q_ask[idx], where=ok)
    return MatchedQuotes(bid, ask)


def _group_base(t_ts: IntArray, t_group: IntArray, q_ts: IntArray, q_group: IntArray) -> IntArray:
    """Earliest timestamp of each group over trades and quotes (the zero of its time key)."""
    size = int(max(t_group.max(initial=-1), q_group.max(initial=-1))) + 1
    if size > (1 << (63 - _GROUP_SHIFT)) - 1:
        raise ValueError(f"too many groups for one matching call ({size}); split the input")
    base = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(base, t_group[group_starts(t_group, len(t_group))],
                  t_ts[group_starts(t_group, len(t_group))])
    np.minimum.at(base, q_group[group_starts(q_group, len(q_group))],
                  q_ts[group_starts(q_group, len(q_group))])
    return base


def _group_key(ts: IntArray, group: IntArray, base: IntArray) -> IntArray:
    offset = ts - base[group]
    if len(offset) and offset.max() >= (1 << _GROUP_SHIFT):
        raise ValueError("a group spans more than 39 hours; use one group per symbol and date")
    return (group << _GROUP_SHIFT) + offset


def nbbo_from_exchange_quotes(ts: IntArray, exchange: npt.NDArray[np.integer],
                              bid: FloatArray, ask: FloatArray,
                              group: IntArray | None = None) -> QuoteArrays:
    """National best bid/offer after every exchange quote update (TAQ quote files).

    Each exchange's latest quote stays in force until that exchange updates it; a zero or
    missing bid (ask) withdraws that exchange's bid (ask). The NBBO is the highest bid and the
    lowest ask in force. Input sorted by ``(group, ts)``; one vectorised pass per exchange
    code (at most a few dozen), never per quote.
    """
    ts = _as(ts, np.int64, "ts")
    exchange = np.ascontiguousarray(exchange)
    bid = np.where(np.asarray(bid, dtype=np.float64) > 0, bid, np.nan)
    ask = np.where(np.asarray(ask, dtype=np.float64) > 0, ask, np.nan)
    n = len(ts)
    starts = group_starts(group, n)
    arange = np.arange(n, dtype=np.int64)
    start_pos = np.maximum.accumulate(np.where(starts, arange, 0))
    best_bid = np.full(n, np.nan)
    best_ask = np.full(n, np.nan)
    for code in np.unique(exchange):
        last = np.maximum.accumulate(np.where(exchange == code, arange, -1))
        live = last >= start_pos  # this exchange has quoted in the current group
        src = np.maximum(last, 0)
        np.fmax(best_bid, np.where(live, bid[src], np.nan), out=best_bid)
        np.fmin(best_ask, np.where(live, ask[src], np.nan), out=best_ask)
    return QuoteArrays(ts, best_bid, best_ask, group)


# -- rules ------------------------------------------------------------------------------------
def _sign_int8(up: npt.NDArray[np.bool_], down: npt.NDArray[np.bool_]) -> Int8Array:
    return up.view(np.int8) - down.view(np.int8)


def tick_test(trades: TradeArrays, quotes: MatchedQuotes | None = None) -> Int8Array:
    """Tick test: +1 on an uptick, -1 on a downtick; a zero tick takes the last non-zero tick.

    The first trade of each group and the zero-tick run after it are unclassified (0). Zero
    ticks are filled with ``np.maximum.accumulate`` over the positions of non-zero ticks.
    ``quotes`` is ignored (same signature as the other rules).
    """
    price = trades.price
    n = len(price)
    out = np.zeros(n, dtype=np.int8)
    if n == 0:
        return out
    starts = group_starts(trades.group, n)
    carry = np.int8(0)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        prev = price[lo - 1:hi - 1] if lo else np.concatenate(([price[0]], price[: hi - 1]))
        cur = price[lo:hi]
        tick = _sign_int8(cur > prev, cur < prev)
        start = starts[lo:hi]
        tick[start] = 0
        # Position of the last non-zero tick or group start at or before each trade.
        pos = np.where((tick != 0) | start, np.arange(hi - lo, dtype=np.int32), np.int32(-1))
        np.maximum.accumulate(pos, out=pos)
        filled = tick[np.maximum(pos, 0)]
        filled[pos < 0] = carry  # zero ticks continuing the previous chunk
        out[lo:hi] = filled
        carry = filled[-1]
    return out


def _require_quotes(quotes: MatchedQuotes | None, n: int, rule: str) -> MatchedQuotes:
    if quotes is None:
        raise ValueError(f"the {rule} rule needs matched quotes (see match_quotes)")
    if len(quotes.bid) != n or len(quotes.ask) != n:
        raise ValueError(f"matched quotes have {len(quotes.bid)} rows for {n} trades")
    return quotes


#: Relative tolerance of price comparisons with computed levels (midpoint, CLNV band edges):
#: absorbs float rounding of ``0.5 * (ask + bid)`` (~1e-16) and stays far below any real
#: price increment (1e-4 / 1e5 = 1e-9), so a trade printed at the midpoint is never signed.
REL_TOL = 1e-12


def _quote_kernel(price: FloatArray, bid: FloatArray, ask: FloatArray,
                  rel_tol: float = REL_TOL) -> Int8Array:
    mid = 0.5 * (ask + bid)  # NaN (no quote) compares False both ways -> 0
    tol = rel_tol * mid
    return _sign_int8(price > mid + tol, price < mid - tol)


def quote_rule(trades: TradeArrays, quotes: MatchedQuotes | None, *,
               rel_tol: float = REL_TOL) -> Int8Array:
    """Quote (midpoint) rule: above the midpoint = buy, below = sell, at it or unquoted = 0.

    ``rel_tol=0`` compares with the floating-point midpoint exactly, as tclf does; that signs
    some trades printed exactly at the midpoint by rounding noise (about 6 % of the real ETR
    day), so the default keeps a tiny relative tolerance (:data:`REL_TOL`).
    """
    q = _require_quotes(quotes, len(trades), "quote")
    out = np.empty(len(trades), dtype=np.int8)
    for lo in range(0, len(trades), CHUNK):
        sl = slice(lo, lo + CHUNK)
        out[sl] = _quote_kernel(trades.price[sl], q.bid[sl], q.ask[sl], rel_tol)
    return out


def lee_ready(trades: TradeArrays, quotes: MatchedQuotes | None, *,
              rel_tol: float = REL_TOL) -> Int8Array:
    """Lee-Ready: the quote rule, and the tick test for midpoint or unquoted trades.

    The quote lag is chosen when matching (``match_quotes(lag_ns=...)``); ``rel_tol`` as in
    :func:`quote_rule`.
    """
    q = _require_quotes(quotes, len(trades), "lee_ready")
    out = tick_test(trades)
    for lo in range(0, len(trades), CHUNK):
        sl = slice(lo, lo + CHUNK)
        by_quote = _quote_kernel(trades.price[sl], q.bid[sl], q.ask[sl], rel_tol)
        np.copyto(out[sl], by_quote, where=by_quote != 0)
    return out


def emo(trades: TradeArrays, quotes: MatchedQuotes | None, *, atol: float = 1e-6,
        rtol: float = 0.0, rel_tol: float = REL_TOL) -> Int8Array:
    """Ellis-Michaely-O'Hara: the quote rule for trades at the ask or the bid, else the tick test.

    "At" means ``|price - quote| <= atol + rtol * |quote|`` (``np.isclose`` semantics; tclf
    uses ``atol=1e-4`` with numpy's default ``rtol=1e-5``). A trade at both (locked quote) is
    not "at the ask xor the bid" and goes to the tick test.
    """
    q = _require_quotes(quotes, len(trades), "emo")
    out = tick_test(trades)
    for lo in range(0, len(trades), CHUNK):
        sl = slice(lo, lo + CHUNK)
        price, bid, ask = trades.price[sl], q.bid[sl], q.ask[sl]
        at_ask = np.abs(price - ask) <= atol + rtol * np.abs(ask)
        at_bid = np.abs(price - bid) <= atol + rtol * np.abs(bid)
        np.copyto(out[sl], _quote_kernel(price, bid, ask, rel_tol), where=at_ask ^ at_bid)
    return out


def clnv(trades: TradeArrays, quotes: MatchedQuotes | None, *, band: float = 0.3,
         locked: Literal["tick", "formula"] = "tick", rel_tol: float = REL_TOL) -> Int8Array:
    """Chakrabarty-Li-Nguyen-Van Ness: the quote rule in the outer ``band`` of the spread.

    Trades within ``band`` of the spread from the ask (bid), inclusive and inside the quotes,
    are signed by the quote rule; all others (middle 40 %, outside the spread, unquoted) by
    the tick test. The band edges are ``(1 - band) * ask + band * bid`` and
    ``band * ask + (1 - band) * bid`` exactly as in tclf. On a locked quote (bid == ask) a
    trade at that price lies in both bands, so it goes to the tick test (``locked="tick"``);
    ``locked="formula"`` keeps the floating-point outcome of the edge formulas instead, which
    can leave such a trade unclassified (tclf's behaviour). ``rel_tol`` widens the band
    edges and the midpoint test against rounding noise (0 = tclf's exact comparisons).
    """
    if not 0.0 < band < 0.5:
        raise ValueError(f"band must be in (0, 0.5), got {band}")
    q = _require_quotes(quotes, len(trades), "clnv")
    out = tick_test(trades)
    for lo in range(0, len(trades), CHUNK):
        sl = slice(lo, lo + CHUNK)
        price, bid, ask = trades.price[sl], q.bid[sl], q.ask[sl]
        tol = rel_tol * ask
        in_upper = ((1.0 - band) * ask + band * bid - tol <= price) & (price <= ask)
        in_lower = (bid <= price) & (price <= band * ask + (1.0 - band) * bid + tol)
        use_quote = in_upper ^ in_lower
        if locked == "tick":
            use_quote &= ask != bid
        np.copyto(out[sl], _quote_kernel(price, bid, ask, rel_tol), where=use_quote)
    return out


RULES: dict[str, Callable[..., Int8Array]] = {
    "tick": tick_test,
    "quote": quote_rule,
    "lee_ready": lee_ready,
    "emo": emo,
    "clnv": clnv,
}


def get_rule(name: str) -> Callable[..., Int8Array]:
    """The per-trade rule called ``name``; an unknown name lists the valid ones."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown classification rule {name!r}; valid: "
                         f"{', '.join(sorted(RULES))} (and 'bvc' for bars)") from None


# -- bulk volume classification ---------------------------------------------------------------
def bvc_buy_fraction(price_change: FloatArray, sigma: float | FloatArray | None = None, *,
                     df: float | None = None) -> FloatArray:
    """BVC buy-volume fraction per bar: ``Phi(dP / sigma_dP)`` (Easley, López de Prado, O'Hara
    2012), or the Student-t CDF with ``df`` degrees of freedom.

    ``sigma`` defaults to the sample standard deviation (ddof=1) of ``price_change``. Where
    sigma is 0 or undefined the fraction is 0.5 (no information). Works for minute or daily bars.
    """
    change = np.asarray(price_change, dtype=np.float64)
    if sigma is None:
        sigma = float(np.nanstd(change, ddof=1)) if np.count_nonzero(~np.isnan(change)) > 1 \
            else np.nan
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), change.shape)
    informative = np.isfinite(sig) & (sig > 0) & np.isfinite(change)
    z = np.divide(change, sig, out=np.zeros_like(change), where=informative)
    from scipy import special  # only BVC needs it; keeps the CLI start-up light

    return special.ndtr(z) if df is None else special.stdtr(df, z)


@dataclass(frozen=True)
class Bars:
    """Time bars per group: volume, price change and BVC buy volume."""

    group: IntArray
    start_ns: IntArray
    volume: FloatArray
    price_change: FloatArray
    buy_volume: FloatArray


def bvc_bars(trades: TradeArrays, *, bar_ns: int = 60_000_000_000,
             df: float | None = None) -> Bars:
    """Bulk volume classification on time bars built from ``trades``.

    Bars are ``bar_ns`` wide (default 1 minute) and empty bars are skipped; a bar's price
    change is its last price minus the previous bar's last price in the same group (the first
    bar: minus its own first price). sigma_dP is the per-group sample std of the changes.
    """
    if bar_ns <= 0:
        raise ValueError(f"bar_ns must be > 0, got {bar_ns}")
    n = len(trades)
    group = trades.group if trades.group is not None else np.zeros(n, dtype=np.int64)
    bucket = trades.ts // bar_ns
    new_bar = group_starts(group, n)
    if n > 1:
        new_bar[1:] |= bucket[1:] != bucket[:-1]
    first = np.flatnonzero(new_bar)
    last = np.append(first[1:] - 1, n - 1).astype(np.int64) if n else first
    volume = np.add.reduceat(trades.size, first) if n else np.zeros(0)
    bar_group = group[first]
    close = trades.price[last]
    change = np.empty(len(first))
    if len(first):
        change[1:] = close[1:] - close[:-1]
        fresh = group_starts(bar_group, len(first))
        change[fresh] = close[fresh] - trades.price[first[fresh]]
    sigma = _group_std(change, bar_group)
    fraction = bvc_buy_fraction(change, sigma[bar_group] if len(first) else sigma, df=df)
    return Bars(bar_group, bucket[first] * bar_ns, volume, change, volume * fraction)


def _group_std(values: FloatArray, group: IntArray) -> FloatArray:
    """Sample std (ddof=1) of ``values`` per group code (two-pass, NaN for < 2 values)."""
    if len(values) == 0:
        return np.zeros(0)
    size = int(group.max()) + 1
    count = np.bincount(group, minlength=size).astype(np.float64)
    mean = np.bincount(group, weights=values, minlength=size) / np.maximum(count, 1)
    dev = values - mean[group]
    ss = np.bincount(group, weights=dev * dev, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 1, np.sqrt(ss / (count - 1)), np.nan)


# -- aggregation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupTotals:
    """Per-group counts and volumes of signed trades (index = group code)."""

    buy_volume: FloatArray
    sell_volume: FloatArray
    unclassified_volume: FloatArray
    buy_trades: IntArray
    sell_trades: IntArray
    unclassified_trades: IntArray
    quoted_trades: IntArray


def summarise(labels: Int8Array, trades: TradeArrays, n_groups: int,
              quotes: MatchedQuotes | None = None) -> GroupTotals:
    """Sum volumes and trade counts by label and group with ``np.bincount``."""
    n = len(trades)
    group = trades.group if trades.group is not None else np.zeros(n, dtype=np.int64)
    # 3 bins per group: label -1 -> 0, 0 -> 1, +1 -> 2.
    key = group * 3 + (labels.astype(np.int64) + 1)
    volume = np.bincount(key, weights=trades.size, minlength=3 * n_groups).reshape(n_groups, 3)
    count = np.bincount(key, minlength=3 * n_groups).reshape(n_groups, 3).astype(np.int64)
    quoted = (np.bincount(group, weights=quotes.matched, minlength=n_groups).astype(np.int64)
              if quotes is not None else np.zeros(n_groups, dtype=np.int64))
    return GroupTotals(volume[:, 2], volume[:, 0], volume[:, 1],
                       count[:, 2], count[:, 0], count[:, 1], quoted)
