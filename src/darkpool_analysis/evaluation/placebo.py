"""Permutation placebo for the headline IC, all draws at once with FFTs.

Cross-sectional mode: names are put in a random (seeded) order and draw ``k`` pairs every
name's signal with the forward return of the name ``k`` places further along that order, on
every date: a within-date shuffle that keeps each signal's own time series intact, so the
overlap of ``h``-day returns and the persistence of the signal stay in the placebo (shuffling
each date independently would make the noise look too calm for long horizons). With fewer
than ``draws + 1`` names, several orders are used.

Time-series mode (a few names): draw ``k`` shifts the signal circularly by ``k`` sessions
against its own forward returns (``k`` at least ``h + 1`` away from 0).

Statistic: the date mean of sum_j a[t, j] b[t, j], where ``a`` and ``b`` are the signal's and
the return's ranks within the date (cross-section) or the name (time series), centred and
scaled to unit length over their own finite cells (missing cells count 0). With no missing
cells it is exactly the mean Spearman IC; the real signal is scored the same way, so the
percentile compares like with like. ``sum_j a[t, j + k] b[t, j]`` for every ``k`` is one
circular cross-correlation, computed by FFT.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from darkpool_analysis.evaluation.ic import RowSorter


def unit_ranks(values: np.ndarray) -> np.ndarray:
    """Row-wise ranks of the finite cells, centred and scaled to unit length (0 elsewhere;
    rows with fewer than 2 finite cells are all 0)."""
    ranks = RowSorter(values).full_ranks
    finite = np.isfinite(ranks)
    count = finite.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = np.where(finite, ranks - np.nansum(ranks, axis=1, keepdims=True)
                           / np.maximum(count, 1), 0.0)
        norm = np.sqrt((centred**2).sum(axis=1, keepdims=True))
        return np.where(norm > 0, centred / np.where(norm > 0, norm, 1.0), 0.0)


def _xcorr_sum(a: np.ndarray, b: np.ndarray, a_spectrum: np.ndarray | None = None
               ) -> np.ndarray:
    """``c[k] = sum_rows sum_j a[row, (j + k) mod m] b[row, j]`` for every k (FFT);
    ``a_spectrum`` = ``rfft(a, axis=1)`` if already computed."""
    m = a.shape[1]
    if a_spectrum is None:
        a_spectrum = np.fft.rfft(a, axis=1)
    spectrum = (np.conj(np.fft.rfft(b, axis=1)) * a_spectrum).sum(axis=0)
    return np.fft.irfft(spectrum, n=m)


@dataclass(frozen=True)
class PlaceboJob:
    """One chunk: a signal against several horizons' returns, given as their unit ranks
    (:func:`unit_ranks`; time series: of the names x dates transpose), computed once for all
    chunks."""

    signal: np.ndarray
    returns: tuple[np.ndarray, ...]
    horizons: tuple[int, ...]
    draws: int
    seed: int
    time_series: bool


def placebo_chunk(job: PlaceboJob) -> list[tuple[float, np.ndarray]]:
    """(real statistic, placebo statistics) per horizon of ``job`` (top level: picklable)."""
    out = []
    rng = np.random.default_rng(job.seed)
    if job.time_series:
        a_all = unit_ranks(np.ascontiguousarray(job.signal.T))  # names x dates
        for b, h in zip(job.returns, job.horizons, strict=True):
            names = max(int((np.abs(b).sum(axis=1) > 0).sum()), 1)
            xc = _xcorr_sum(a_all, b) / names
            n = a_all.shape[1]
            allowed = np.arange(h + 1, n - h)
            if len(allowed) == 0:
                out.append((float(xc[0]), np.array([])))
                continue
            shifts = rng.choice(allowed, size=min(job.draws, len(allowed)), replace=False)
            out.append((float(xc[0]), xc[shifts]))
        return out
    m = job.signal.shape[1]
    per_order = max(m - 1, 1)
    orders = [rng.permutation(m) for _ in range(-(-job.draws // per_order))]
    a_all = unit_ranks(job.signal)
    shuffled: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per order: a, rfft(a), reused

    def signal_in(i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in shuffled:
            a = a_all[:, orders[i]]
            shuffled[i] = a, np.fft.rfft(a, axis=1)
        return shuffled[i]

    for b_all, _h in zip(job.returns, job.horizons, strict=True):
        dates = max(int((np.abs(b_all).sum(axis=1) > 0).sum()), 1)
        real = float((a_all * b_all).sum()) / dates
        draws = []
        left = job.draws
        for i, order in enumerate(orders):
            a, a_spectrum = signal_in(i)
            xc = _xcorr_sum(a, b_all[:, order], a_spectrum) / dates
            take = rng.choice(np.arange(1, m), size=min(left, m - 1), replace=False) \
                if m > 1 else np.array([], dtype=int)
            draws.append(xc[take])
            left -= len(take)
            if left <= 0:
                break
        out.append((real, np.concatenate(draws) if draws else np.array([])))
    return out


def placebo_stats(signals: dict[str, np.ndarray], returns: dict[int, np.ndarray], *,
                  draws: int = 200, seed: int = 0, time_series: bool = False,
                  executor: Executor | None = None
                  ) -> dict[tuple[str, int], tuple[float, np.ndarray]]:
    """``{(variant, h): (real statistic, placebo draws)}``; one chunk per variant, run on
    ``executor`` when given (same numbers as serial: each chunk has its own seed)."""
    horizons: Sequence[int] = tuple(returns)
    names = list(signals)
    units = tuple(unit_ranks(np.ascontiguousarray(returns[h].T)) if time_series
                  else unit_ranks(returns[h]) for h in horizons)
    jobs = [PlaceboJob(signals[name], units, tuple(horizons), draws, seed + 7919 * i,
                       time_series) for i, name in enumerate(names)]
    mapper = executor.map if executor is not None else map
    out: dict[tuple[str, int], tuple[float, np.ndarray]] = {}
    for name, results in zip(names, mapper(placebo_chunk, jobs), strict=True):
        for h, result in zip(horizons, results, strict=True):
            out[(name, h)] = result
    return out


def percentile(real: float, draws: np.ndarray) -> float:
    """Share of placebo draws strictly below the real statistic, in percent (ties half)."""
    if not len(draws) or not np.isfinite(real):
        return float("nan")
    return float(((draws < real).sum() + 0.5 * (draws == real).sum()) / len(draws) * 100)
