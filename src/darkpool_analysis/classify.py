"""Trade-direction rules for lit-market trades: pure, vectorised numpy (no I/O, no pandas).

Every per-trade rule has the same signature::

    rule(trades: TradeArrays, quotes: MatchedQuotes | None, **options) -> np.ndarray[int8]

and returns +1 (buyer-initiated), -1 (seller-initiated) or 0 (unclassified). The hybrid rules
are defined exactly as in the literature and in ``tclf`` (Bilz): the quote rule leaves trades at
the midpoint or without a valid quote unclassified; Lee-Ready, EMO and CLNV fall back to the
tick test. Bulk volume classification (BVC) works on bars, not trades: see :func:`bvc_bars`.

Data contract: trades are sorted by ``(group, ts)`` where ``group`` numbers the
(symbol, date) partitions; the tick test never looks across a group boundary and quotes only
match trades of the same group. Work is done in cache-sized blocks of :data:`CHUNK` trades
with reused scratch buffers, so scratch memory stays a few MB however many trades there are.
Every rule takes ``threads`` (default: 2 threads from :data:`PARALLEL_MIN_TRADES` trades on);
the labels never depend on it. See ``docs/trade-classification.md``.

References: Lee & Ready (1991); Ellis, Michaely & O'Hara (2000); Chakrabarty, Li, Nguyen &
Van Ness (2007); Easley, López de Prado & O'Hara (2012); Holden & Jacobsen (2014).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

import numpy as np
import numpy.typing as npt

#: Bumped whenever a rule, a filter or the aggregation changes (stored with every row).
CLASSIFY_VERSION = "lit-1"

#: Trades processed per block: the block's inputs and temporaries (~40 bytes a trade) stay in
#: the L2/L3 cache and scratch memory stays bounded however many trades there are.
CHUNK = 1 << 16

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


def _positive_finite(values: FloatArray, name: str, what: str) -> None:
    """Raise naming the first element that is not a finite number > 0 (NaN fails both tests)."""
    ok = values > 0
    ok &= values < np.inf
    if not ok.all():
        i = int(np.argmin(ok))
        raise ValueError(f"{what} {i}: {name} must be a finite number > 0, got {values[i]!r}")


@dataclass(frozen=True)
class TradeArrays:
    """Trades of one or more (symbol, date) groups, sorted by ``(group, ts)``.

    ``ts`` is int64 ns since the epoch (UTC), ``price`` and ``size`` are float64 and strictly
    positive; ``group`` (optional, int64) numbers the groups and is non-decreasing. Ties in
    ``ts`` keep the given order (the sequence number order of the feed). The constructor
    rejects unsorted or non-positive input instead of mis-signing it, and records
    ``starts`` (positions where a group begins, always 0 first) so the rules never rescan
    ``group``.
    """

    ts: IntArray
    price: FloatArray
    size: FloatArray
    group: IntArray | None = None
    starts: IntArray = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "starts", _check_sorted(ts, group, "trades"))
        _positive_finite(price, "price", "trade")
        _positive_finite(size, "size", "trade")

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class QuoteArrays:
    """Best bid/offer updates sorted by ``(group, ts)``; each is in force until the next one.

    Zero, negative, non-finite or crossed (bid > ask) quotes are kept here and dropped by
    :func:`match_quotes`, so a bad quote *replaces* the previous one but never signs a trade.
    ``starts`` as in :class:`TradeArrays`.
    """

    ts: IntArray
    bid: FloatArray
    ask: FloatArray
    group: IntArray | None = None
    starts: IntArray = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "starts", _check_sorted(ts, group, "quotes"))

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


def _check_sorted(ts: IntArray, group: IntArray | None, what: str) -> IntArray:
    """Raise unless sorted by (group, ts): unsorted input would silently mis-sign trades.

    Returns the positions where a group starts (``[0]`` without groups, empty for no rows).
    """
    if len(ts) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(ts) == 1:
        return np.zeros(1, dtype=np.int64)
    bad = ts[1:] < ts[:-1]
    if group is None:
        starts = np.zeros(1, dtype=np.int64)
    else:
        back = group[1:] < group[:-1]
        if back.any():
            i = int(np.argmax(back)) + 1
            raise ValueError(f"{what} are not sorted by group: element {i} goes back from "
                             f"group {group[i - 1]} to {group[i]}")
        new_group = group[1:] != group[:-1]
        bad &= ~new_group
        starts = np.flatnonzero(np.concatenate(([True], new_group))).astype(np.int64)
    if bad.any():
        i = int(np.argmax(bad)) + 1
        raise ValueError(f"{what} are not sorted by timestamp: element {i} ({ts[i]}) is "
                         f"earlier than element {i - 1} ({ts[i - 1]}); sort them stably first")
    return starts


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` bounds of consecutive blocks of at most ``size`` elements covering ``n``."""
    for lo in range(0, n, size):
        yield lo, min(lo + size, n)


class _Scratch:
    """Block-sized work buffers, allocated once per call and reused by every block.

    Reusing them (``out=`` everywhere) keeps a block's temporaries in L2/L3 and avoids the
    allocation and first-touch page faults that fresh temporaries cost on every block.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.f1, self.f2, self.f3, self.mid = (np.empty(size) for _ in range(4))
        self.b1, self.b2, self.b3 = (np.empty(size, dtype=bool) for _ in range(3))
        self.i8 = np.empty(size, dtype=np.int8)
        self.q8 = np.empty(size, dtype=np.int8)


#: Inputs below this many trades run on one thread by default: starting a thread pool costs
#: about 0.3 ms, more than a second core saves below ~1 M trades (measured on 2 cores).
PARALLEL_MIN_TRADES = 1 << 20

#: Classifies trades ``lo:hi`` (any range of at most the scratch size) into the caller's
#: output with the given scratch buffers; ``carry`` is the tick label of trade ``lo - 1`` and
#: the block returns the tick label of trade ``hi - 1``.
_BlockFn = Callable[[int, int, int, _Scratch], int]


def thread_count(threads: int | None, n: int) -> int:
    """Threads a rule uses for ``n`` trades: ``threads``, or by default up to 2 (1 below
    :data:`PARALLEL_MIN_TRADES` trades, where starting a thread costs more than it saves)."""
    if threads is None:
        return 1 if n < PARALLEL_MIN_TRADES else min(2, os.cpu_count() or 1)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads


def _zero_run_end(trades: TradeArrays, lo: int, stop: int) -> int:
    """First ``j`` in ``[lo, stop]`` with trade ``j`` informative (a price change or a group
    start; ``stop`` if none): trades ``lo:j`` take their tick label from trade ``lo - 1``."""
    price, starts = trades.price, trades.starts
    following = int(np.searchsorted(starts, lo, side="left"))  # a group start at lo or after
    if following < len(starts):
        stop = min(stop, int(starts[following]))
    width = 256
    while lo < stop:  # windows growing 2x: cheap for short runs, linear for long ones
        end = min(lo + width, stop)
        changed = price[lo:end] != price[lo - 1:end - 1]
        if changed.any():
            return lo + int(np.argmax(changed))
        lo, width = end, 2 * width
    return stop


def _run_blocks(n: int, block: _BlockFn, threads: int | None,
                trades: TradeArrays | None) -> None:
    """Run ``block`` over all ``n`` trades in blocks, on ``threads`` threads.

    numpy releases the GIL inside its loops, so contiguous segments of trades run in
    parallel, each thread with its own :class:`_Scratch`. Blocks are :data:`CHUNK` trades on
    one thread and twice that on more: every ufunc call re-acquires the GIL, and longer calls
    keep the threads from queueing for it (measured: 1.5x instead of 1.2x on 2 cores, while
    one thread is as fast with either size). ``threads=None`` uses up to 2 threads from
    :data:`PARALLEL_MIN_TRADES` trades on.

    With ``trades`` (rules with a tick test), every segment but the first starts with a
    provisional carry of 0. The carry reaches only the segment's leading zero-tick run, so
    afterwards, segment by segment in order, just that run is re-run with the true carry
    (the previous segment's last tick label), and a segment that is one zero-tick run
    passes the carry on. The labels are exactly those of one sequential pass.
    """
    n_threads = thread_count(threads, n)
    if n == 0:
        return
    size = min(CHUNK if n_threads == 1 else 2 * CHUNK, n)
    n_segments = min(n_threads, -(-n // size))
    cuts = [n * i // n_segments for i in range(n_segments + 1)]
    last_label = [0] * n_segments  # tick label of each segment's last trade (provisional)

    def run(lo: int, hi: int, carry: int, scratch: _Scratch) -> int:
        for start, end in _blocks(hi - lo, size):
            carry = block(lo + start, lo + end, carry, scratch)
        return carry

    def run_segment(i: int) -> None:
        last_label[i] = run(cuts[i], cuts[i + 1], 0, _Scratch(size))

    if n_segments == 1:
        run_segment(0)
        return
    with ThreadPoolExecutor(n_segments - 1, thread_name_prefix="classify") as pool:
        # Each worker runs in a copy of the caller's context, so np.errstate applies there too.
        futures = [pool.submit(contextvars.copy_context().run, run_segment, i)
                   for i in range(1, n_segments)]
        run_segment(0)
        for future in futures:
            future.result()
    if trades is None:
        return
    scratch = _Scratch(size)
    for i, (lo, hi) in enumerate(pairwise(cuts[1:]), start=1):
        carry = last_label[i - 1]  # true by now
        if carry == 0:  # the provisional carry was right
            continue
        run_end = _zero_run_end(trades, lo, hi)
        run(lo, run_end, carry, scratch)
        if run_end == hi:  # the whole segment continues the zero-tick run
            last_label[i] = carry


# -- quote matching ---------------------------------------------------------------------------
#: A block of trades is matched by merging (one stable sort of the block's keys and the quote
#: keys in its time window) while the window holds at most this many quotes per trade;
#: denser quotes are binary-searched (``np.searchsorted``), which is then cheaper.
MERGE_MAX_QUOTES_PER_TRADE = 4


def valid_quote_mask(bid: FloatArray, ask: FloatArray) -> npt.NDArray[np.bool_]:
    """Usable quotes: finite, bid > 0, ask > 0 and not crossed (locked bid == ask is kept).

    ``bid > 0 and bid <= ask < inf`` says exactly that in three comparisons (NaN fails every
    comparison; an infinite bid or ask fails ``ask < inf``).
    """
    valid = bid > 0
    valid &= ask >= bid
    valid &= ask < np.inf
    return valid


def match_quotes(trades: TradeArrays, quotes: QuoteArrays, *, lag_ns: int = 0,
                 drop_invalid: bool = True) -> MatchedQuotes:
    """As-of join: each trade gets the last valid quote with ``quote.ts <= trade.ts - lag_ns``.

    ``lag_ns = 0`` uses the quote in force at the trade time (Holden-Jacobsen 2014; a quote
    stamped at the very same nanosecond counts as in force); Lee-Ready's original 5-second
    rule is ``lag_ns=5_000_000_000``. Crossed, zero and non-finite quotes are dropped first
    (``drop_invalid``). Trades before the first valid quote of their group get NaN.

    Trades and quotes are both sorted by one int64 key, ``group << 47 | ns since the group's
    first tick``, so every block of trades needs only the quotes in its own key window:
    merged by a stable sort of the two sorted runs (linear, a quote with the trade's key
    sorts first and counts as in force) or, for dense quotes, binary-searched.
    """
    if lag_ns < 0:
        raise ValueError(f"lag_ns must be >= 0, got {lag_ns}")
    if (trades.group is None) != (quotes.group is None):
        raise ValueError("trades and quotes must both have a group array or both have none")
    q_ts, q_bid, q_ask, q_group, q_starts = (quotes.ts, quotes.bid, quotes.ask, quotes.group,
                                             quotes.starts)
    if drop_invalid:
        keep = valid_quote_mask(q_bid, q_ask)
        if not keep.all():
            q_ts, q_bid, q_ask = q_ts[keep], q_bid[keep], q_ask[keep]
            if q_group is not None:
                q_group = q_group[keep]
                q_starts = np.flatnonzero(group_starts(q_group, len(q_group))).astype(np.int64)
    n = len(trades)
    bid = np.empty(n)
    ask = np.empty(n)
    if n == 0 or len(q_ts) == 0:
        bid.fill(np.nan)
        ask.fill(np.nan)
        return MatchedQuotes(bid, ask)
    t_group = trades.group
    adjust: IntArray | None = None
    first_quote: IntArray | None = None
    if t_group is None or q_group is None:
        q_key = q_ts
    else:
        adjust = _group_adjust(trades.ts, t_group, trades.starts, q_ts, q_group, q_starts)
        q_key = np.take(adjust, q_group)
        q_key += q_ts
        # Index of each group's first quote: a match below it belongs to an earlier group.
        first_quote = np.searchsorted(q_key, np.arange(len(adjust), dtype=np.int64)
                                      << _GROUP_SHIFT, side="left")
    size = min(CHUNK, n)
    t_key = np.empty(size, dtype=np.int64)
    index = np.empty(size, dtype=np.intp)
    floor = np.empty(size, dtype=np.intp)
    ok = np.empty(size, dtype=bool)
    merge = _MergeBuffers(size)
    for lo, hi in _blocks(n, size):
        m = hi - lo
        key, idx, good = t_key[:m], index[:m], ok[:m]
        if adjust is None:
            np.subtract(trades.ts[lo:hi], lag_ns, out=key)
        else:
            np.take(adjust, t_group[lo:hi], out=key, mode="clip")
            key += trades.ts[lo:hi]
            if lag_ns:
                # A lag can push the key into the previous group's range: the first_quote
                # check below rejects the quote the search then finds there.
                key -= lag_ns
        _asof_positions(q_key, key, idx, merge)
        if first_quote is None:
            np.greater_equal(idx, 0, out=good)
        else:
            np.take(first_quote, t_group[lo:hi], out=floor[:m], mode="clip")
            np.greater_equal(idx, floor[:m], out=good)
        np.take(q_bid, idx, out=bid[lo:hi], mode="clip")
        np.take(q_ask, idx, out=ask[lo:hi], mode="clip")
        if not good.all():
            np.logical_not(good, out=good)
            np.copyto(bid[lo:hi], np.nan, where=good)
            np.copyto(ask[lo:hi], np.nan, where=good)
    return MatchedQuotes(bid, ask)


class _MergeBuffers:
    """Work buffers of :func:`_asof_positions` (merged keys, quote flags, running counts)."""

    def __init__(self, size: int) -> None:
        capacity = (MERGE_MAX_QUOTES_PER_TRADE + 1) * size
        self.keys = np.empty(capacity, dtype=np.int64)
        self.is_quote = np.empty(capacity, dtype=bool)
        self.count = np.empty(capacity, dtype=np.intp)


def _asof_positions(q_key: IntArray, t_key: IntArray, out: npt.NDArray[np.intp],
                    buffers: _MergeBuffers) -> None:
    """``out[i]`` = index of the last ``q_key <= t_key[i]`` (-1 if none); both sorted."""
    m = len(t_key)
    window_lo = max(int(np.searchsorted(q_key, t_key[0], side="right")) - 1, 0)
    window_hi = int(np.searchsorted(q_key, t_key[-1], side="right"))
    n_quotes = window_hi - window_lo
    if window_hi == 0:
        out.fill(-1)
        return
    if n_quotes > MERGE_MAX_QUOTES_PER_TRADE * m:
        out[:] = np.searchsorted(q_key[window_lo:window_hi], t_key, side="right")
    else:
        total = n_quotes + m
        keys = buffers.keys[:total]
        keys[:n_quotes] = q_key[window_lo:window_hi]
        keys[n_quotes:] = t_key
        # Stable: on equal keys the quote (placed first) precedes the trade, and the trades
        # keep their order, so the k-th trade in merged order is t_key[k].
        order = np.argsort(keys, kind="stable")
        is_quote = buffers.is_quote[:total]
        np.less(order, n_quotes, out=is_quote)
        count = buffers.count[:total]
        np.cumsum(is_quote, out=count)
        np.logical_not(is_quote, out=is_quote)
        np.compress(is_quote, count, out=out)
    out += window_lo - 1


def _group_adjust(t_ts: IntArray, t_group: IntArray, t_starts: IntArray, q_ts: IntArray,
                  q_group: IntArray, q_starts: IntArray) -> IntArray:
    """Per group code ``g``: ``(g << 47) - base_g``, so ``ts + adjust[g]`` is the sort key.

    ``base_g`` is the earliest timestamp of group ``g`` over trades and quotes; a group
    spanning 2**47 ns (39 hours) or more would overflow into the next group's keys.
    """
    if min(int(t_group[0]), int(q_group[0])) < 0:
        raise ValueError("group codes must be >= 0")
    size = int(max(t_group[-1], q_group[-1])) + 1  # both sorted by group
    if size > (1 << (63 - _GROUP_SHIFT)) - 1:
        raise ValueError(f"too many groups for one matching call ({size}); split the input")
    unset = np.iinfo(np.int64).max
    base = np.full(size, unset, dtype=np.int64)
    np.minimum.at(base, t_group[t_starts], t_ts[t_starts])
    np.minimum.at(base, q_group[q_starts], q_ts[q_starts])
    for ts, group, starts in ((t_ts, t_group, t_starts), (q_ts, q_group, q_starts)):
        ends = np.append(starts[1:] - 1, len(ts) - 1)
        if (ts[ends] - base[group[ends]]).max() >= (1 << _GROUP_SHIFT):
            raise ValueError("a group spans more than 39 hours; use one group per symbol and "
                             "date")
    base[base == unset] = 0
    return (np.arange(size, dtype=np.int64) << _GROUP_SHIFT) - base


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
# Every rule runs block by block (:data:`CHUNK` trades) with the reused :class:`_Scratch`
# buffers: one read of price/bid/ask per block, each label computed once, combined with
# int8 arithmetic instead of ``np.where`` temporaries. The float operations are exactly the
# ones of the rule definitions (same operands, same order), so labels are bit-for-bit those
# of the plain formulas.

#: Relative tolerance of price comparisons with computed levels (midpoint, CLNV band edges):
#: absorbs float rounding of ``0.5 * (ask + bid)`` (~1e-16) and stays far below any real
#: price increment (1e-4 / 1e5 = 1e-9), so a trade printed at the midpoint is never signed.
REL_TOL = 1e-12


def _tick_block(trades: TradeArrays, lo: int, hi: int, carry: int, s: _Scratch,
                out: Int8Array) -> int:
    """Tick test of trades ``lo:hi`` into ``out``; ``carry`` is the label of trade ``lo - 1``.

    A zero tick takes the last non-zero tick. Each trade gets a code: label + 2 at the
    informative positions (non-zero ticks, group starts, and the block start carrying
    ``carry``), 0 elsewhere; then ``code[i] = code[i - k]`` fills the zeros for k = 1, 2, 4, ...
    (Hillis-Steele doubling) until none is left: ceil(log2(longest run + 1)) steps of
    elementwise int8 ufuncs, which release the GIL (a gather by ``np.take`` or
    ``np.compress`` does not, and would serialise the threads). Returns the last label.
    """
    m = hi - lo
    price = trades.price
    up, changed, shifted = s.b1[:m], s.b2[:m], s.i8[:m]
    first = 1 if lo == 0 else 0  # trade 0 has no predecessor (and is a group start)
    if first:
        up[0] = changed[0] = False
    np.greater(price[lo + first:hi], price[lo + first - 1:hi - 1], out=up[first:])
    # Prices are finite, so "changed" is "up or down".
    np.not_equal(price[lo + first:hi], price[lo + first - 1:hi - 1], out=changed[first:])
    code = out  # up 3, down 1, zero tick 0
    np.add(up.view(np.int8), up.view(np.int8), out=code)
    np.add(code, changed.view(np.int8), out=code)
    starts = trades.starts
    local = starts[np.searchsorted(starts, lo):np.searchsorted(starts, hi)] - lo
    code[local] = 2
    if code[0] == 0:  # a zero-tick run continuing from the previous block
        code[0] = carry + 2
    step = 1
    while step < m:
        unset = np.equal(code[step:], 0, out=up[:m - step])
        if not unset.any():
            break
        np.multiply(code[:m - step], unset.view(np.int8), out=shifted[:m - step])
        np.add(code[step:], shifted[:m - step], out=code[step:])
        step *= 2
    np.subtract(code, 2, out=code)
    return int(code[-1])


def _midpoint(bid: FloatArray, ask: FloatArray, rel_tol: float, s: _Scratch) -> bool:
    """``0.5 * (ask + bid)`` into ``s.mid``; True when the tolerance terms are exact no-ops.

    With ``rel_tol == 0`` the tolerance is ``0 * x``, and ``y -/+ 0 * x == y`` wherever ``x``
    is finite or NaN, so the passes that compute and apply it can be skipped without
    changing a single comparison. Only an infinite midpoint (an infinite quote) turns
    ``0 * x`` into NaN and the comparisons into False, so such a block keeps them.
    """
    mid = s.mid[:len(bid)]
    np.add(ask, bid, out=mid)
    np.multiply(mid, 0.5, out=mid)
    return rel_tol == 0 and bool(np.fmax.reduce(mid) < np.inf) and bool(
        np.fmin.reduce(mid) > -np.inf)


def _quote_block(price: FloatArray, rel_tol: float, exact: bool, s: _Scratch,
                 out: Int8Array) -> None:
    """Quote rule into ``out``: sign against ``mid -/+ rel_tol * mid`` (NaN quote -> 0).

    ``s.mid`` and ``exact`` come from :func:`_midpoint` (``exact``: compare with the
    midpoint itself); ``s.mid`` is overwritten.
    """
    m = len(price)
    mid = s.mid[:m]
    above, below = s.b1[:m], s.b2[:m]
    if exact:
        np.greater(price, mid, out=above)
        np.less(price, mid, out=below)
    else:
        tol, upper = s.f1[:m], s.f2[:m]
        np.multiply(mid, rel_tol, out=tol)
        np.add(mid, tol, out=upper)
        lower = np.subtract(mid, tol, out=mid)  # the midpoint is not needed any more
        np.greater(price, upper, out=above)
        np.less(price, lower, out=below)
    np.subtract(above.view(np.int8), below.view(np.int8), out=out)


def tick_test(trades: TradeArrays, quotes: MatchedQuotes | None = None, *,
              threads: int | None = None) -> Int8Array:
    """Tick test: +1 on an uptick, -1 on a downtick; a zero tick takes the last non-zero tick.

    The first trade of each group and the zero-tick run after it are unclassified (0).
    ``quotes`` is ignored (same signature as the other rules). ``threads``: how many threads
    share the work (default: :func:`thread_count`); the labels never depend on it.
    """
    n = len(trades)
    out = np.empty(n, dtype=np.int8)

    def block(lo: int, hi: int, carry: int, s: _Scratch) -> int:
        return _tick_block(trades, lo, hi, carry, s, out[lo:hi])

    _run_blocks(n, block, threads, trades)
    return out


def _require_quotes(quotes: MatchedQuotes | None, n: int, rule: str) -> MatchedQuotes:
    if quotes is None:
        raise ValueError(f"the {rule} rule needs matched quotes (see match_quotes)")
    if len(quotes.bid) != n or len(quotes.ask) != n:
        raise ValueError(f"matched quotes have {len(quotes.bid)} rows for {n} trades")
    return quotes


#: Computes, into ``_Scratch.b3``, where a hybrid rule uses the quote rule instead of the
#: tick test; arguments are the block's price, bid, ask, the scratch buffers and whether
#: tolerance terms with ``rel_tol == 0`` may be skipped (see :func:`_midpoint`).
_Selector = Callable[[FloatArray, FloatArray, FloatArray, _Scratch, bool], None]


def _hybrid(trades: TradeArrays, quotes: MatchedQuotes, rel_tol: float,
            select: _Selector | None, threads: int | None) -> Int8Array:
    """Quote rule where ``select`` says so (``None``: where it signs), else the tick test.

    Per block: the tick test (carrying the last label), the midpoint, the selector, the
    quote rule, then an int8 combine; the blocks run on ``threads`` threads.
    """
    n = len(trades)
    out = np.empty(n, dtype=np.int8)

    def block(lo: int, hi: int, carry: int, s: _Scratch) -> int:
        m = hi - lo
        label = out[lo:hi]
        carry = _tick_block(trades, lo, hi, carry, s, label)
        price, bid, ask = trades.price[lo:hi], quotes.bid[lo:hi], quotes.ask[lo:hi]
        exact = _midpoint(bid, ask, rel_tol, s)
        if select is not None:
            select(price, bid, ask, s, exact)
        by_quote = s.q8[:m]
        _quote_block(price, rel_tol, exact, s, by_quote)
        if select is None:  # label = quote if quote != 0 else tick
            unsigned = np.equal(by_quote, 0, out=s.b1[:m])
            np.multiply(label, unsigned.view(np.int8), out=label)
        else:  # label = tick + (quote - tick) * selected
            np.subtract(by_quote, label, out=by_quote)
            np.multiply(by_quote, s.b3[:m].view(np.int8), out=by_quote)
        np.add(label, by_quote, out=label)
        return carry

    _run_blocks(n, block, threads, trades)
    return out


def quote_rule(trades: TradeArrays, quotes: MatchedQuotes | None, *,
               rel_tol: float = REL_TOL, threads: int | None = None) -> Int8Array:
    """Quote (midpoint) rule: above the midpoint = buy, below = sell, at it or unquoted = 0.

    ``rel_tol=0`` compares with the floating-point midpoint exactly, as tclf does; that signs
    some trades printed exactly at the midpoint by rounding noise (about 6 % of the real ETR
    day), so the default keeps a tiny relative tolerance (:data:`REL_TOL`). ``threads`` as in
    :func:`tick_test`.
    """
    q = _require_quotes(quotes, len(trades), "quote")
    n = len(trades)
    out = np.empty(n, dtype=np.int8)

    def block(lo: int, hi: int, carry: int, s: _Scratch) -> int:
        exact = _midpoint(q.bid[lo:hi], q.ask[lo:hi], rel_tol, s)
        _quote_block(trades.price[lo:hi], rel_tol, exact, s, out[lo:hi])
        return carry

    _run_blocks(n, block, threads, None)  # no tick test: no carry
    return out


def lee_ready(trades: TradeArrays, quotes: MatchedQuotes | None, *,
              rel_tol: float = REL_TOL, threads: int | None = None) -> Int8Array:
    """Lee-Ready: the quote rule, and the tick test for midpoint or unquoted trades.

    The quote lag is chosen when matching (``match_quotes(lag_ns=...)``); ``rel_tol`` as in
    :func:`quote_rule`, ``threads`` as in :func:`tick_test`.
    """
    q = _require_quotes(quotes, len(trades), "lee_ready")
    return _hybrid(trades, q, rel_tol, None, threads)


def emo(trades: TradeArrays, quotes: MatchedQuotes | None, *, atol: float = 1e-6,
        rtol: float = 0.0, rel_tol: float = REL_TOL, threads: int | None = None) -> Int8Array:
    """Ellis-Michaely-O'Hara: the quote rule for trades at the ask or the bid, else the tick test.

    "At" means ``|price - quote| <= atol + rtol * |quote|`` (``np.isclose`` semantics; tclf
    uses ``atol=1e-4`` with numpy's default ``rtol=1e-5``). A trade at both (locked quote) is
    not "at the ask xor the bid" and goes to the tick test. ``threads`` as in :func:`tick_test`.
    """
    q = _require_quotes(quotes, len(trades), "emo")

    def at_ask_xor_bid(price: FloatArray, bid: FloatArray, ask: FloatArray, s: _Scratch,
                       exact: bool) -> None:  # no tolerance term here: ``exact`` is unused
        m = len(price)
        distance, limit = s.f1[:m], s.f2[:m]
        for quote, at in ((ask, s.b1[:m]), (bid, s.b2[:m])):
            np.subtract(price, quote, out=distance)
            np.abs(distance, out=distance)
            if rtol:
                np.abs(quote, out=limit)
                np.multiply(limit, rtol, out=limit)
                np.add(limit, atol, out=limit)
                np.less_equal(distance, limit, out=at)
            else:  # atol + 0 * |quote| is atol wherever the distance is finite
                np.less_equal(distance, atol, out=at)
        np.not_equal(s.b1[:m], s.b2[:m], out=s.b3[:m])

    return _hybrid(trades, q, rel_tol, at_ask_xor_bid, threads)


def clnv(trades: TradeArrays, quotes: MatchedQuotes | None, *, band: float = 0.3,
         locked: Literal["tick", "formula"] = "tick", rel_tol: float = REL_TOL,
         threads: int | None = None) -> Int8Array:
    """Chakrabarty-Li-Nguyen-Van Ness: the quote rule in the outer ``band`` of the spread.

    Trades within ``band`` of the spread from the ask (bid), inclusive and inside the quotes,
    are signed by the quote rule; all others (middle 40 %, outside the spread, unquoted) by
    the tick test. The band edges are ``(1 - band) * ask + band * bid`` and
    ``band * ask + (1 - band) * bid`` exactly as in tclf. On a locked quote (bid == ask) a
    trade at that price lies in both bands, so it goes to the tick test (``locked="tick"``);
    ``locked="formula"`` keeps the floating-point outcome of the edge formulas instead, which
    can leave such a trade unclassified (tclf's behaviour). ``rel_tol`` widens the band
    edges and the midpoint test against rounding noise (0 = tclf's exact comparisons).
    ``threads`` as in :func:`tick_test`.
    """
    if not 0.0 < band < 0.5:
        raise ValueError(f"band must be in (0, 0.5), got {band}")
    q = _require_quotes(quotes, len(trades), "clnv")
    inner = 1.0 - band

    def in_one_band(price: FloatArray, bid: FloatArray, ask: FloatArray, s: _Scratch,
                    exact: bool) -> None:
        m = len(price)
        tol, edge, term = s.f2[:m], s.f1[:m], s.f3[:m]
        in_upper, in_lower, flag = s.b1[:m], s.b2[:m], s.b3[:m]
        if not exact:  # exact: rel_tol == 0 and ask finite or NaN, so 0 * ask changes nothing
            np.multiply(ask, rel_tol, out=tol)
        np.multiply(ask, inner, out=edge)  # (1 - band) * ask + band * bid - tol
        np.multiply(bid, band, out=term)
        np.add(edge, term, out=edge)
        if not exact:
            np.subtract(edge, tol, out=edge)
        np.less_equal(edge, price, out=in_upper)
        np.less_equal(price, ask, out=flag)
        np.logical_and(in_upper, flag, out=in_upper)
        np.multiply(ask, band, out=edge)  # band * ask + (1 - band) * bid + tol
        np.multiply(bid, inner, out=term)
        np.add(edge, term, out=edge)
        if not exact:
            np.add(edge, tol, out=edge)
        np.less_equal(bid, price, out=in_lower)
        np.less_equal(price, edge, out=flag)
        np.logical_and(in_lower, flag, out=in_lower)
        np.not_equal(in_upper, in_lower, out=flag)
        if locked == "tick":
            np.not_equal(ask, bid, out=in_upper)
            np.logical_and(flag, in_upper, out=flag)

    return _hybrid(trades, q, rel_tol, in_one_band, threads)


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
