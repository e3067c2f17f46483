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
def next_entry(signal: np.ndarray, buy: float, eligible: np.ndarray) -> np.ndarray:
    """``out[s, t]`` = first date ``>= t`` where name ``s`` has ``signal >= buy`` and may
    enter (``eligible``: in the window and the next open exists); ``n`` if none.
    Shape names x (dates + 1), so ``out[s, n] = n``."""
    m, n = signal.shape
    out = np.empty((m, n + 1), dtype=np.int32)
    for s in range(m):
        following = n
        out[s, n] = n
        for t in range(n - 1, -1, -1):
            if eligible[s, t] and signal[s, t] >= buy:
                following = t
            out[s, t] = following
    return out


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
        dist = 0
        decay = 0
        for t in range(n):
            value = signal[s, t]
            dist = dist + 1 if value <= sell else 0
            decay = decay + 1 if value < decay_level else 0
            flags[t] = ((distribution_run > 0 and dist >= distribution_run)
                        or (decay_days > 0 and decay >= decay_days))
        following = n
        out[s, n] = n
        for t in range(n - 1, -1, -1):
            if flags[t]:
                following = t
            out[s, t] = following
    return out


@nb.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _exit_of(t: int, s: int, n: int, entries_trigger: np.ndarray, has_trigger: bool,
             max_days: int) -> tuple[int, int]:
    """(exit date, reason) of a position signalled at ``t``: 0 = signal exit at the open
    after the trigger, 1 = the close of ``t + max_days``, 2 = the last close."""
    last = n - 1
    big = n + 10
    signal_exit = big
    if has_trigger:
        signal_exit = entries_trigger[s, t + 1] + 1
    fixed_exit = t + max_days if max_days > 0 else big
    if signal_exit <= fixed_exit and signal_exit <= last:
        return signal_exit, 0
    if fixed_exit <= last:
        return fixed_exit, 1
    return last, 2


@nb.njit(cache=True, nogil=True, boundscheck=False)
def count_trades(entries: np.ndarray, trigger: np.ndarray, max_days: int) -> int:
    """Number of trades of the chain (one position per name; the next entry needs a signal
    on or after the exit date). ``trigger`` of shape (0, 0) means no signal exit."""
    m = entries.shape[0]
    n = entries.shape[1] - 1
    has_trigger = trigger.shape[0] > 0
    total = 0
    for s in range(m):
        t = entries[s, 0]
        while t < n:
            exit_row, _reason = _exit_of(t, s, n, trigger, has_trigger, max_days)
            total += 1
            t = entries[s, exit_row]
    return total


@nb.njit(cache=True, nogil=True, boundscheck=False)
def walk_trades(entries: np.ndarray, trigger: np.ndarray, max_days: int, open_: np.ndarray,
                exit_open: np.ndarray, close_ff: np.ndarray, close_to_close: np.ndarray,
                side_cost: np.ndarray, sym: np.ndarray, signal_row: np.ndarray,
                exit_row: np.ndarray, reason: np.ndarray, entry_price: np.ndarray,
                exit_price: np.ndarray, entry_cost: np.ndarray, exit_cost: np.ndarray,
                gross_sum: np.ndarray, net_adjust: np.ndarray, position_change: np.ndarray
                ) -> None:
    """Walk the chain of trades (sized by :func:`count_trades`) and fill, per trade, its name,
    signal and exit dates, reason, prices and per-side costs; per date, the sum over held
    positions of the gross daily mark (``gross_sum``), the net-minus-gross difference of the
    entry and exit marks (``net_adjust``) and the change in open positions
    (``position_change``, dates + 1 long; its running sum is the positions held).

    Daily marks: the entry date earns close / entry open, a held date close / previous close
    (``close_to_close``, already 0 where unknown), an open-exit date exit open / previous
    close; a mark that is not finite counts 0. Net: the entry mark is divided by
    ``1 + entry cost`` and the exit mark multiplied by ``1 - exit cost``, so compounding
    the net marks gives the net trade return.
    """
    m = entries.shape[0]
    n = entries.shape[1] - 1
    has_trigger = trigger.shape[0] > 0
    k = 0
    for s in range(m):
        t = entries[s, 0]
        while t < n:
            x, why = _exit_of(t, s, n, trigger, has_trigger, max_days)
            e = t + 1
            p0 = open_[s, e]
            at_open = why == 0
            p1 = exit_open[s, x] if at_open else close_ff[s, x]
            c0 = side_cost[s, e]
            c1 = side_cost[s, x]
            sym[k] = s
            signal_row[k] = t
            exit_row[k] = x
            reason[k] = why
            entry_price[k] = p0
            exit_price[k] = p1
            entry_cost[k] = c0
            exit_cost[k] = c1
            k += 1
            first = close_ff[s, e] / p0 - 1.0
            if not np.isfinite(first):
                first = 0.0
            position_change[e] += 1
            position_change[x + 1] -= 1
            gross_sum[e] += first
            entered = (1.0 + first) / (1.0 + c0)
            if x == e:  # in and out the same session (fixed:1): one mark, both costs
                net_adjust[e] += entered * (1.0 - c1) - 1.0 - first
            else:
                net_adjust[e] += entered - 1.0 - first
                for d in range(e + 1, x):
                    gross_sum[d] += close_to_close[s, d]
                if at_open:
                    final = p1 / close_ff[s, x - 1] - 1.0
                    if not np.isfinite(final):
                        final = 0.0
                else:
                    final = close_to_close[s, x]
                gross_sum[x] += final
                net_adjust[x] += (1.0 + final) * (1.0 - c1) - 1.0 - final
            t = entries[s, x]
