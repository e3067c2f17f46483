"""Compiled (numba) kernels of the event backtest (:mod:`backtest`).

Imported lazily by the functions that run a backtest, so ``import darkpool_analysis`` and the
CLI's start never pay for numba; ``cache=True`` keeps the machine code in ``__pycache__``.

Layout: every matrix is **names x dates** (the transpose of the panel), so one name's time
series is contiguous and a held position is one contiguous slice. Each kernel walks one name
at a time along time: the cost of a backtest is the number of trades plus the number of held
cells, never a dense pass over the whole panel per combination.

The exact timing rules are the module docstring of :mod:`backtest`; these kernels implement
them and are tested against a day-by-day state machine and the earlier vectorised numpy
engine (``tests/evaluation/test_backtest.py``).
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, boundscheck=False)
def next_entry(signal: np.ndarray, buy: float, eligible: np.ndarray) -> tuple[np.ndarray, int]:
    """``out[s, t]`` = first date ``>= t`` where name ``s`` has ``signal >= buy`` and may
    enter (``eligible``: in the window and the next open exists); ``n`` if none.
    Shape names x (dates + 1), so ``out[s, n] = n``. Also returns the number of such cells,
    a bound on the trades of any chain (each trade starts at a distinct one)."""
    m, n = signal.shape
    out = np.empty((m, n + 1), dtype=np.int32)
    cells = 0
    for s in range(m):
        following = n
        out[s, n] = n
        values = signal[s]
        ok = eligible[s]
        row = out[s]
        for t in range(n - 1, -1, -1):
            if ok[t] and values[t] >= buy:
                following = t
                cells += 1
            row[t] = following
    return out, cells


@nb.njit(cache=True, nogil=True, boundscheck=False)
def next_trigger(signal: np.ndarray, sell: float, distribution_run: int, decay_level: float,
                 decay_days: int) -> np.ndarray:
    """``out[s, t]`` = first date ``>= t`` that triggers a signal exit for name ``s`` (``n``
    if none): the ``distribution_run``-th consecutive ``signal <= sell`` or the
    ``decay_days``-th consecutive ``signal < decay_level`` (0 disables a condition; NaN
    breaks a run). Shape names x (dates + 1)."""
    m, n = signal.shape
    out = np.empty((m, n + 1), dtype=np.int32)
    flags = np.empty(n, dtype=np.bool_)
    for s in range(m):
        values = signal[s]
        dist = 0
        decay = 0
        for t in range(n):
            value = values[t]
            dist = dist + 1 if value <= sell else 0
            decay = decay + 1 if value < decay_level else 0
            flags[t] = ((distribution_run > 0 and dist >= distribution_run)
                        or (decay_days > 0 and decay >= decay_days))
        following = n
        row = out[s]
        row[n] = n
        for t in range(n - 1, -1, -1):
            if flags[t]:
                following = t
            row[t] = following
    return out


@nb.njit(cache=True, nogil=True, boundscheck=False)
def walk_trades(entries: np.ndarray, triggers: np.ndarray, trigger_of: np.ndarray,
                max_days: np.ndarray, open_: np.ndarray, exit_open: np.ndarray,
                close_ff: np.ndarray, close_to_close: np.ndarray, side_cost: np.ndarray,
                trade_return: np.ndarray, net_return: np.ndarray, trades: np.ndarray,
                sessions_held: np.ndarray, open_at_end: np.ndarray, gross_sum: np.ndarray,
                net_adjust: np.ndarray, position_change: np.ndarray, detail: np.ndarray
                ) -> None:
    """Backtest the combinations ``j`` that share one entry array (a signal and a buy
    threshold): exit ``trigger_of[j]`` (an index into ``triggers``, -1 = no signal exit) and
    ``max_days[j]`` (0 = no maximum). Names are the outer loop, so one name's rows stay in
    cache while every combination walks them.

    Chain: a position signalled at ``t`` enters at the open of ``t + 1`` and leaves at the
    open after its first trigger from ``t + 1`` on (reason 0), at the close of
    ``t + max_days`` (reason 1), whichever is first, else at the last close (reason 2); the
    next entry needs a signal on or after the exit date.

    Fills, per combination: the gross and net return of every trade (``trade_return[j]``,
    ``net_return[j]``: rows at least as long as the bound :func:`next_entry` returns), the
    number of trades, their total sessions held (entry to exit, inclusive) and how many
    are still open at the end; per date, the sum over held positions of the gross daily
    mark (``gross_sum[j]``), the net-minus-gross difference of the entry and exit marks
    (``net_adjust[j]``) and the change in open positions (``position_change[j]``, dates + 1
    long; its running sum is the positions held). With ``detail`` of shape (4, bound)
    (one combination), also each trade's name, signal date, exit date and reason.

    Daily marks: the entry date earns close / entry open, a held date close / previous
    close (``close_to_close``, already 0 where unknown), an open-exit date exit open /
    previous close; a mark that is not finite counts 0. Net: the entry mark is divided by
    ``1 + entry cost`` and the exit mark multiplied by ``1 - exit cost``, so compounding the
    net marks gives the net trade return ``P1 (1 - c1) / (P0 (1 + c0)) - 1``.
    """
    m = entries.shape[0]
    n = entries.shape[1] - 1
    last = n - 1
    never = n + 10
    keep = detail.shape[0] > 0
    for s in range(m):
        jump = entries[s]
        opens, exits, closes = open_[s], exit_open[s], close_ff[s]
        marks, costs = close_to_close[s], side_cost[s]
        for j in range(len(max_days)):
            has_trigger = trigger_of[j] >= 0
            stop = triggers[trigger_of[j], s] if has_trigger else jump
            days = max_days[j]
            gross, adjust, change = gross_sum[j], net_adjust[j], position_change[j]
            k = trades[j]
            t = jump[0]
            while t < n:
                signal_exit = stop[t + 1] + 1 if has_trigger else never
                fixed_exit = t + days if days > 0 else never
                if signal_exit <= fixed_exit and signal_exit <= last:
                    x, why = signal_exit, 0
                elif fixed_exit <= last:
                    x, why = fixed_exit, 1
                else:
                    x, why = last, 2
                e = t + 1
                p0 = opens[e]
                at_open = why == 0
                p1 = exits[x] if at_open else closes[x]
                c0 = costs[e]
                c1 = costs[x]
                trade_return[j, k] = p1 / p0 - 1.0
                net_return[j, k] = (p1 * (1.0 - c1)) / (p0 * (1.0 + c0)) - 1.0
                if keep:
                    detail[0, k] = s
                    detail[1, k] = t
                    detail[2, k] = x
                    detail[3, k] = why
                k += 1
                sessions_held[j] += x - t
                if why == 2:
                    open_at_end[j] += 1
                first = closes[e] / p0 - 1.0
                if not np.isfinite(first):
                    first = 0.0
                change[e] += 1
                change[x + 1] -= 1
                gross[e] += first
                entered = (1.0 + first) / (1.0 + c0)
                if x == e:  # in and out the same session (fixed:1): one mark, both costs
                    adjust[e] += entered * (1.0 - c1) - 1.0 - first
                else:
                    adjust[e] += entered - 1.0 - first
                    held = marks[e + 1:x]
                    into = gross[e + 1:x]
                    for d in range(held.shape[0]):  # contiguous slices: vectorised
                        into[d] += held[d]
                    if at_open:
                        final = p1 / closes[x - 1] - 1.0
                        if not np.isfinite(final):
                            final = 0.0
                    else:
                        final = marks[x]
                    gross[x] += final
                    adjust[x] += (1.0 + final) * (1.0 - c1) - 1.0 - final
                t = jump[x]
            trades[j] = k


_SIGN = np.uint64(1) << np.uint64(63)
_BITS = 11  # digit width: 2,048 counters (x4 interleaved) stay in L1
_DIGIT = np.uint64((1 << _BITS) - 1)
_SMALL = 256


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _order_key(bits: np.uint64) -> np.uint64:
    """An unsigned integer that sorts like the (non-NaN) float with these bits: the sign
    bit set for positives, every bit flipped for negatives."""
    return ~bits if bits & _SIGN else bits | _SIGN


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _order_keys(bits: np.ndarray) -> np.ndarray:
    """:func:`_order_key` of every element."""
    keys = np.empty(len(bits), dtype=np.uint64)
    for i in range(len(bits)):
        keys[i] = _order_key(bits[i])
    return keys


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _key_value(key: np.uint64) -> float:
    """The float whose order key is ``key`` (inverse of :func:`_order_key`)."""
    out = np.empty(1, dtype=np.uint64)
    out[0] = key ^ _SIGN if key & _SIGN else ~key
    return out.view(np.float64)[0]


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _digit_range(counts4: np.ndarray, lo: int, hi: int) -> tuple[int, int, int, int]:
    """(first digit, last digit, keys below the first, keys through the last) of the
    digits holding ranks ``lo`` and ``hi``, from four interleaved histograms."""
    counts = counts4[0] + counts4[1] + counts4[2] + counts4[3]
    below = 0
    digit = 0
    while below + counts[digit] <= lo:
        below += counts[digit]
        digit += 1
    last = digit
    through = below + counts[digit]
    while through <= hi:
        last += 1
        through += counts[last]
    return digit, last, below, through


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _select_pair(keys: np.ndarray, lo: int, hi: int, shift: int) -> tuple[np.uint64, np.uint64]:
    """The ``lo``-th and ``hi``-th smallest (0-based, ``hi`` = ``lo`` or ``lo + 1``) of
    ``keys``, whose bits above ``shift + _BITS`` are all equal: radix selection on the digit
    at ``shift``, keeping only the digits that hold the two ranks, then the next digit (a
    small remainder is sorted)."""
    while len(keys) > _SMALL and shift > -_BITS:
        step = np.uint64(max(shift, 0))
        counts4 = np.zeros((4, 1 << _BITS), dtype=np.int64)
        for i in range(len(keys)):
            counts4[i & 3, (keys[i] >> step) & _DIGIT] += 1
        first, last, below, through = _digit_range(counts4, lo, hi)
        if first != last:  # the two ranks straddle digits: the first's max, the last's min
            return _straddle(keys, step, _DIGIT, first, last)
        kept = np.empty(through - below, dtype=np.uint64)
        i = 0
        for key in keys:
            if (key >> step) & _DIGIT == first:
                kept[i] = key
                i += 1
        keys, lo, hi, shift = kept, lo - below, hi - below, shift - _BITS
    ordered = np.sort(keys)
    return ordered[lo], ordered[hi]


@nb.njit(cache=True, nogil=True, boundscheck=False)
def _straddle(keys: np.ndarray, step: np.uint64, mask: np.uint64, first: int,
              last: int) -> tuple[np.uint64, np.uint64]:
    """(largest key with digit ``first``, smallest key with digit ``last``): adjacent ranks
    in different digits are the end of one digit's keys and the start of the next's."""
    low = np.uint64(0)
    high = ~np.uint64(0)
    for key in keys:
        d = (key >> step) & mask
        if d == first and key > low:
            low = key
        elif d == last and key < high:
            high = key
    return low, high


@nb.njit(cache=True, nogil=True, boundscheck=False)
def median(values: np.ndarray) -> float:
    """``numpy.median`` of a 1-D float array (NaN if empty or any NaN) by radix selection
    on order-preserving integer keys: two passes over the data (a histogram of the top
    digit, then the keys of the digits that hold the middle ranks), no copy of it; four
    interleaved histograms break the dependency chain of repeated digits. A grid takes the
    medians of millions of trade returns."""
    size = len(values)
    if size == 0:
        return np.nan
    bits = values.view(np.uint64)
    step = np.uint64(64 - _BITS)
    counts4 = np.zeros((4, 1 << _BITS), dtype=np.int64)
    for i in range(size):
        if values[i] != values[i]:
            return np.nan
        counts4[i & 3, _order_key(bits[i]) >> step] += 1
    lo, hi = (size - 1) // 2, size // 2
    first, last, below, through = _digit_range(counts4, lo, hi)
    if first != last:
        low_key, high_key = _straddle(_order_keys(bits), step, ~np.uint64(0), first, last)
    else:
        kept = np.empty(through - below, dtype=np.uint64)
        k = 0
        for b in bits:
            key = _order_key(b)
            if key >> step == first:
                kept[k] = key
                k += 1
        low_key, high_key = _select_pair(kept, lo - below, hi - below, 64 - 2 * _BITS)
    low = _key_value(low_key)
    return low if low_key == high_key else (low + _key_value(high_key)) / 2.0


@nb.njit(cache=True, nogil=True, boundscheck=False)
def trade_moments(returns: np.ndarray) -> tuple[int, float, float, float, float]:
    """(winners, sum, sum of winners, sum of losers (negative), median) of trade returns
    (median NaN when empty)."""
    wins = 0
    total = 0.0
    won = 0.0
    lost = 0.0
    for value in returns:
        total += value
        if value > 0:
            wins += 1
            won += value
        elif value < 0:
            lost += value
    return wins, total, won, lost, median(returns)
