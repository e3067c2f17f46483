"""``daily_metrics`` computation: pure, vectorised, frames in and frames out.

Implements ``docs/metrics-spec.md``. Two steps, both without any database access:

1. :func:`assemble_grid` aligns the per-source daily rows (consolidated short-sale volume,
   price bars, classified lit volume) on the *full* XNYS session grid of every symbol: one row
   per (symbol, session) from the symbol's first to its last appearance, NULL measures on
   sessions without data.
2. :func:`compute_daily_metrics` derives every ``daily_metrics`` column from that grid. Rolling
   statistics run per symbol over the whole grid (never only over the dates a run asked for),
   so a stored value never depends on which run wrote it.

Point in time: every value at date ``t`` uses only rows dated ``<= t`` (rolling windows end at
``t``; ``return_1d`` looks one session back). The OTC block is computed elsewhere
(``otc_metrics``) with its own publication-date rule and merged here as given.

"Buy" in ``short_buy_volume``/``finra_buy_volume`` is FINRA ShortVolume: a *proxy* for
dealer-filled customer buying (the market-maker thesis), not observed trade direction.

Grid frame contract (output of :func:`assemble_grid`, input of :func:`compute_daily_metrics`):
sorted by (symbol, date), one row per session with no gaps; ``symbol`` categorical, ``date``
``datetime64``; columns in :data:`GRID_COLUMNS`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from darkpool_analysis.scoring import (
    ACCUMULATION_THRESHOLD,
    DISTRIBUTION_THRESHOLD,
    INFERENCE_VERSION,
    composite_score,
)
from darkpool_analysis.trading_calendar import CALENDAR_START, sessions_index

log = logging.getLogger(__name__)

#: Columns of the consolidated short-sale frame given to :func:`assemble_grid`.
SHORT_INPUT_COLUMNS = ("symbol", "date", "short_volume", "short_exempt_volume", "total_volume",
                       "short_source")
#: ``short_source`` values: the CNMS row, the FNSQ+FNQC+FNYX+FNRA sum, or an ORF row.
SHORT_SOURCES = ("CNMS", "FACILITY_SUM", "FORF")
#: Columns of the price frame (daily bars, normalised symbols).
PRICE_INPUT_COLUMNS = ("symbol", "date", "open", "high", "low", "close", "vwap", "volume")
#: Columns of the lit-direction frame (classified lit volume; may be empty).
LIT_INPUT_COLUMNS = ("symbol", "date", "lit_buy_volume", "lit_sell_volume", "lit_method",
                     "lit_coverage_pct")
#: Columns of the OTC frame (from ``otc_metrics``; may be empty).
OTC_COLUMNS = ("symbol", "date", "otc_week_used", "otc_off_exchange_volume",
               "otc_participation_rate", "otc_participation_z", "otc_participation_delta",
               "otc_status", "otc_alignment", "has_otc")

_SHORT_VALUES = ("short_volume", "short_exempt_volume", "total_volume")
_PRICE_VALUES = ("open", "high", "low", "close", "vwap", "volume")
_LIT_VALUES = ("lit_buy_volume", "lit_sell_volume", "lit_coverage_pct")
_OTC_VALUES = ("otc_off_exchange_volume", "otc_participation_rate", "otc_participation_z",
               "otc_participation_delta")

#: Columns of the grid frame.
GRID_COLUMNS = ("symbol", "date", *_SHORT_VALUES, "short_source", *_PRICE_VALUES,
                "lit_buy_volume", "lit_sell_volume", "lit_method", "lit_coverage_pct",
                "has_short", "has_price", "has_lit")

#: Every ``daily_metrics`` column, in table order.
DAILY_METRICS_COLUMNS = (
    "symbol", "date",
    "short_volume", "short_exempt_volume", "total_volume", "short_source", "short_buy_volume",
    "finra_buy_volume", "short_sell_volume", "short_ratio", "short_buy_sell_ratio",
    "short_buy_sell_ratio_z", "short_ratio_z", "finra_buy_volume_z",
    "lit_buy_volume", "lit_sell_volume", "lit_total_volume", "lit_buy_ratio", "log_buy_sell",
    "lit_flow_imbalance", "lit_flow_imbalance_z", "lit_buy_ratio_z", "lit_method",
    "lit_coverage_pct",
    "vw_flow", "vw_flow_z", "combined_ratio",
    "open", "high", "low", "close", "vwap", "volume", "return_1d", "return_z", "range_pct",
    "otc_week_used", "otc_off_exchange_volume", "otc_participation_rate", "otc_participation_z",
    "otc_participation_delta", "otc_status", "otc_alignment",
    "accumulation_score", "accumulation_score_display", "pressure_context_label", "confidence",
    "has_short", "has_lit", "has_price", "has_otc", "data_quality",
    "accumulation_short_z_source", "inference_version",
)

#: ``data_quality`` values: all of short, lit and price present / some / none.
DATA_QUALITY_LEVELS = ("complete", "partial", "no_data")
#: ``pressure_context_label`` values (``scoring.zone_label``), in category-code order.
ZONE_LABELS = ("accumulation", "distribution", "neutral")
#: ``otc_status`` values (see metrics-spec "OTC weekly block").
OTC_STATUSES = ("Anchored", "Staled", "None")
_STALENESS = {"Anchored": 1.0, "Staled": 0.7, "None": 0.5}
_COVERAGE_BY_MISSING = np.array([1.0, 0.8, 0.5, 0.5])


class MetricSettings(Protocol):
    """The settings fields the computation reads (``config.Settings`` satisfies it)."""

    short_z_window: int
    return_z_window: int
    zscore_min_periods: int
    min_lit_volume: float
    accumulation_short_z_source: str
    composite_w_short: float
    composite_w_lit: float
    composite_w_price: float
    intensity_scale_min: float
    intensity_scale_max: float


# ---------------------------------------------------------------------------------------------
# Grid assembly
# ---------------------------------------------------------------------------------------------
def _to_days(values: pd.Series | np.ndarray) -> np.ndarray:
    """Dates (datetime64, Timestamps or ``datetime.date``) as int64 days since 1970-01-01."""
    stamps = np.asarray(pd.to_datetime(pd.Series(values)).to_numpy(dtype="datetime64[ns]"))
    return stamps.astype("datetime64[D]").astype(np.int64)


def _symbol_codes(symbols: pd.Series, categories: pd.Index) -> np.ndarray:
    """Positions of ``symbols`` in ``categories`` (-1 when absent); fast for categoricals."""
    if isinstance(symbols.dtype, pd.CategoricalDtype):
        if symbols.cat.categories.equals(categories):
            return symbols.cat.codes.to_numpy(dtype=np.int64)
        mapping = categories.get_indexer(symbols.cat.categories)
        codes = symbols.cat.codes.to_numpy(dtype=np.int64)
        return np.where(codes >= 0, mapping[codes], -1)
    return categories.get_indexer(symbols.astype(object).to_numpy())


class _Layout:
    """Where each (symbol, session) lives in the flat grid."""

    def __init__(self, categories: pd.Index, first_day: np.ndarray, last_day: np.ndarray) -> None:
        self.categories = categories
        valid = first_day <= last_day
        lo = int(first_day[valid].min()) if valid.any() else 0
        hi = int(last_day[valid].max()) if valid.any() else -1
        self.session_days = _to_days(sessions_index(pd.Timestamp(lo, unit="D"),
                                                    pd.Timestamp(hi, unit="D"))) \
            if valid.any() else np.empty(0, dtype=np.int64)
        first_sn = np.searchsorted(self.session_days, first_day, side="left")
        last_sn = np.searchsorted(self.session_days, last_day, side="right") - 1
        self.lengths = np.where(valid, np.maximum(last_sn - first_sn + 1, 0), 0)
        self.first_sn = first_sn
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])[:-1]
        self.size = int(self.lengths.sum())

    def grid_codes_and_days(self) -> tuple[np.ndarray, np.ndarray]:
        codes = np.repeat(np.arange(len(self.categories)), self.lengths)
        sn = (np.arange(self.size) - np.repeat(self.offsets, self.lengths)
              + np.repeat(self.first_sn, self.lengths))
        return codes, self.session_days[sn] if self.size else np.empty(0, dtype=np.int64)

    def positions(self, frame: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Grid position of each row of ``frame`` and the mask of rows that are on the grid."""
        codes = _symbol_codes(frame["symbol"], self.categories)
        days = _to_days(frame["date"])
        sn = np.searchsorted(self.session_days, days)
        in_range = sn < len(self.session_days)
        on_session = in_range & (self.session_days[np.minimum(sn, len(self.session_days) - 1)]
                                 == days) if len(self.session_days) else np.zeros_like(in_range)
        known = codes >= 0
        safe = np.where(known, codes, 0)
        rel = sn - self.first_sn[safe]
        keep = known & on_session & (rel >= 0) & (rel < self.lengths[safe])
        dropped = int((~keep).sum())
        if dropped:
            log.debug("%s: %d rows outside the session grid ignored", name, dropped)
        pos = (self.offsets[safe] + rel)[keep]
        if len(pos) and np.bincount(pos, minlength=self.size).max() > 1:
            raise ValueError(f"{name}: more than one row for the same (symbol, date)")
        return pos, keep


def _scatter(size: int, pos: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(size, np.nan)
    out[pos] = values
    return out


def _scatter_labels(size: int, pos: np.ndarray, values: pd.Series,
                    categories: Sequence[str] | None = None) -> pd.Categorical:
    labels = pd.Categorical(values, categories=categories)
    if categories is not None and (labels.codes[values.notna().to_numpy()] < 0).any():
        raise ValueError(f"unexpected label in {values.name!r}; expected one of {categories}")
    codes = np.full(size, -1, dtype=np.int16)
    codes[pos] = labels.codes
    return pd.Categorical.from_codes(codes, categories=labels.categories)


def _float(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=float, na_value=np.nan)


def _spans_from(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """First and last date per symbol over the given frames."""
    parts = [pd.DataFrame({"symbol": f["symbol"].astype(object).to_numpy(),
                           "day": _to_days(f["date"])}) for f in frames if len(f)]
    if not parts:
        return pd.DataFrame({"symbol": [], "first_date": [], "last_date": []})
    both = pd.concat(parts, ignore_index=True)
    agg = both.groupby("symbol", sort=True)["day"].agg(["min", "max"])
    return pd.DataFrame({
        "symbol": agg.index.to_numpy(dtype=object),
        "first_date": agg["min"].to_numpy().astype("datetime64[D]"),
        "last_date": agg["max"].to_numpy().astype("datetime64[D]"),
    })


def assemble_grid(
    short: pd.DataFrame,
    prices: pd.DataFrame,
    lit: pd.DataFrame | None = None,
    spans: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Align per-source daily rows on each symbol's full XNYS session grid.

    Parameters
    ----------
    short, prices, lit
        Frames with :data:`SHORT_INPUT_COLUMNS`, :data:`PRICE_INPUT_COLUMNS` and
        :data:`LIT_INPUT_COLUMNS` (normalised symbols, at most one row per symbol and date).
    spans
        Optional ``symbol, first_date, last_date``: the grid of each symbol (e.g. clipped to a
        build range). Default: first to last appearance in ``short`` or ``prices``.

    Returns
    -------
    The grid frame (:data:`GRID_COLUMNS`), sorted by (symbol, date); rows on non-session
    dates or outside the spans are ignored.

    Examples
    --------
    >>> short = pd.DataFrame({"symbol": ["A"], "date": [pd.Timestamp("2021-01-04")],
    ...     "short_volume": [5.0], "short_exempt_volume": [0.0], "total_volume": [10.0],
    ...     "short_source": ["CNMS"]})
    >>> prices = pd.DataFrame({"symbol": ["A"], "date": [pd.Timestamp("2021-01-06")],
    ...     "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "vwap": [1.0],
    ...     "volume": [9.0]})
    >>> assemble_grid(short, prices)[["date", "short_volume", "close"]].to_numpy().tolist()[1]
    [Timestamp('2021-01-05 00:00:00'), nan, nan]
    """
    lit = lit if lit is not None else pd.DataFrame({c: [] for c in LIT_INPUT_COLUMNS})
    if spans is None:
        spans = _spans_from([short, prices])
    spans = spans.sort_values("symbol", kind="stable")
    categories = pd.Index(spans["symbol"].astype(object).to_numpy())
    if categories.has_duplicates:
        raise ValueError("spans: a symbol appears more than once")
    layout = _Layout(categories, _to_days(spans["first_date"]), _to_days(spans["last_date"]))
    codes, days = layout.grid_codes_and_days()
    size = layout.size
    grid: dict[str, object] = {
        "symbol": pd.Categorical.from_codes(codes, categories=categories),
        "date": days.astype("datetime64[D]").astype("datetime64[ns]"),
    }
    pos, keep = layout.positions(short, "short")
    rows = short.loc[keep]
    for column in _SHORT_VALUES:
        grid[column] = _scatter(size, pos, _float(rows, column))
    grid["short_source"] = _scatter_labels(size, pos, rows["short_source"], SHORT_SOURCES)
    has_short = np.zeros(size, dtype=bool)
    has_short[pos] = True

    pos, keep = layout.positions(prices, "prices")
    rows = prices.loc[keep]
    for column in _PRICE_VALUES:
        grid[column] = _scatter(size, pos, _float(rows, column))
    has_price = np.zeros(size, dtype=bool)
    has_price[pos] = True

    pos, keep = layout.positions(lit, "lit")
    rows = lit.loc[keep]
    for column in _LIT_VALUES:
        grid[column] = _scatter(size, pos, _float(rows, column))
    grid["lit_method"] = _scatter_labels(size, pos, rows["lit_method"])
    has_lit = np.zeros(size, dtype=bool)
    has_lit[pos] = True

    grid["has_short"], grid["has_price"], grid["has_lit"] = has_short, has_price, has_lit
    return pd.DataFrame(grid, columns=list(GRID_COLUMNS), copy=False)


def session_numbers_of(dates: pd.Series | np.ndarray) -> np.ndarray:
    """Absolute XNYS session index of each date (0 = the calendar's first session).

    Fixes the block layout of :class:`RollingPlan` independently of where a frame starts.
    """
    days = _to_days(dates)
    if len(days) == 0:
        return np.empty(0, dtype=np.int64)
    sessions = _to_days(sessions_index(CALENDAR_START, pd.Timestamp(int(days.max()), unit="D")))
    numbers = np.searchsorted(sessions, days)
    on_session = (numbers < len(sessions)) & (
        sessions[np.minimum(numbers, len(sessions) - 1)] == days)
    if not on_session.all():
        raise ValueError("grid dates must be XNYS sessions (see assemble_grid)")
    return numbers


def warmup_block_floor(session_number: int, settings: MetricSettings) -> int:
    """First session number a range build must load so its rows equal a full build bit for bit.

    One warm-up of ``max(window) + 1`` sessions (``return_1d`` looks one session further
    back), floored to a block boundary of every window's layout, plus one whole block so the
    block holding the first loaded row (whose ``return_1d`` is unknown) feeds no window of a
    written row.
    """
    windows = (settings.short_z_window, settings.return_z_window)
    step = int(np.lcm.reduce([block_size(w) for w in windows]))
    warmup = max(windows) + 1
    return max(((session_number - warmup) // step) * step - step, 0)


# ---------------------------------------------------------------------------------------------
# Rolling z-score on the grid
# ---------------------------------------------------------------------------------------------
def group_starts(symbol_codes: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's symbol in a frame sorted by symbol."""
    n = len(symbol_codes)
    idx = np.arange(n)
    is_start = np.ones(n, dtype=bool)
    if n:
        is_start[1:] = symbol_codes[1:] != symbol_codes[:-1]
    return np.maximum.accumulate(np.where(is_start, idx, 0)) if n else idx


#: Target rows per chunk of the rolling z-scores: small enough for the working set of one
#: chunk (~20 float arrays) to stay in the CPU caches, large enough to amortise numpy's
#: per-call overhead (measured: 32-64k rows is ~1.7x faster than one pass over 1.26M rows).
ROLLING_CHUNK_ROWS = 1 << 15


def symbol_chunks(group_start: np.ndarray, target_rows: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` row ranges of about ``target_rows`` that never split a symbol.

    A symbol longer than ``target_rows`` gets a chunk of its own.
    """
    n = len(group_start)
    if n == 0:
        return []
    firsts = np.flatnonzero(group_start == np.arange(n))
    wanted = np.arange(target_rows, n, target_rows)
    cuts = firsts[np.minimum(np.searchsorted(firsts, wanted), len(firsts) - 1)]
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))
    return [(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds) if hi > lo]


class RollingPlan:
    """Index bookkeeping shared by every rolling z-score of one grid and window size.

    Rows are laid out in a padded array of blocks of ``block >= window`` rows, aligned to
    absolute session numbers (``session_number % block == 0`` starts a block) and never shared
    by two symbols. A window (at most ``window`` rows of one symbol) covers at most the tail of
    one block and the head of the next. Because the layout depends only on the session, not
    on where a frame starts, a build that starts on a block boundary computes bit-identical
    values to a full build.
    """

    def __init__(self, group_start: np.ndarray, window: int,
                 session_number: np.ndarray | None = None) -> None:
        n = len(group_start)
        idx = np.arange(n)
        self.window = window
        self.block = block = block_size(window)
        self.group_start = group_start
        sessions = idx if session_number is None else np.asarray(session_number, np.int64)
        is_start = group_start == idx
        group_id = np.cumsum(is_start) - 1
        first_rows = np.flatnonzero(is_start)
        lengths = np.diff(np.append(first_rows, n))
        lead = sessions[first_rows] % block                     # offset inside first block
        blocks_per_group = -(-(lead + lengths) // block)
        first_block = np.concatenate([[0], np.cumsum(blocks_per_group)])[:-1]
        self.n_blocks = int(blocks_per_group.sum())
        rel = idx - group_start
        self.pos = first_block[group_id] * block + lead[group_id] + rel
        self.pos_start = self.pos - np.minimum(window - 1, rel)
        self.block_end = self.pos // block
        self.block_start = self.pos_start // block
        self.split = self.block_start != self.block_end
        self.window_start = idx - (self.pos - self.pos_start)
        # Column-independent parts of every window sum, computed once per plan: the start of
        # the window's part inside row i's block, and where the block-local exclusive prefix
        # sums before it (and before the window start) are read.
        self.start_2 = np.where(self.split, self.block_end * block, self.pos_start)
        self.before_start_2 = np.maximum(self.start_2 - 1, 0)
        self.at_block_start_2 = self.start_2 % block == 0
        self.before_pos_start = np.maximum(self.pos_start - 1, 0)
        self.at_block_start = self.pos_start % block == 0
        self.masks: list[_MaskStats] = []

    def mask_stats(self, valid: np.ndarray) -> _MaskStats:
        """The counts and change-point bookkeeping of one null pattern (cached: several
        columns of a grid share theirs)."""
        for known in self.masks:
            if np.array_equal(known.valid, valid):
                return known
        stats = _MaskStats(self, valid)
        self.masks.append(stats)
        return stats


class _MaskStats:
    """Everything of :func:`rolling_zscore_grouped` that depends only on which rows are
    non-null: window counts (exact integers) and the neighbours used by the exact
    constant-window test."""

    def __init__(self, plan: RollingPlan, valid: np.ndarray) -> None:
        n, block = len(valid), plan.block
        self.valid = valid
        padded_valid = np.zeros(plan.n_blocks * block)
        padded_valid[plan.pos] = valid
        self.grid_valid = padded_valid.reshape(plan.n_blocks, block)
        self.first_valid = np.argmax(self.grid_valid > 0, axis=1)
        cum_n = np.cumsum(self.grid_valid, axis=1)
        tot_n = cum_n[:, -1]
        cum_n = cum_n.ravel()
        n_2 = cum_n[plan.pos] - np.where(plan.at_block_start_2, 0.0,
                                         cum_n[plan.before_start_2])
        self.n_1 = np.where(plan.split, tot_n[plan.block_start] - np.where(
            plan.at_block_start, 0.0, cum_n[plan.before_pos_start]), 0.0)
        self.n_2 = n_2
        self.count = self.n_1 + n_2
        self.both = (self.n_1 > 0) & (n_2 > 0)
        idx = np.arange(n)
        last_valid = np.maximum.accumulate(np.where(valid, idx, -1))
        previous_valid = np.empty(n, dtype=np.int64)
        previous_valid[0] = -1
        previous_valid[1:] = last_valid[:-1]
        self.first_of_group = previous_valid < plan.group_start
        self.previous_valid = np.maximum(previous_valid, 0)
        next_valid = np.minimum.accumulate(np.where(valid, idx, n)[::-1])[::-1]
        self.next_valid_at_window_start = next_valid[plan.window_start]


def block_size(window: int) -> int:
    """Rows per block of the rolling layout for ``window`` (a multiple of 64, >= window)."""
    return 64 * -(-window // 64)


#: Above this ratio of block sums of squares to window sum of squares, the prefix-sum result
#: may lose more than ~1e-11 (relative) and the window is recomputed by two-pass summation.
_CONDITION_LIMIT = 1e3
_GATHER_CELLS = 1 << 22


def _two_pass_window_stats(x: np.ndarray, window_start: np.ndarray, rows: np.ndarray,
                           window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance of the windows ending at ``rows`` by direct two-pass
    summation (the accurate textbook method), in chunks of gathered windows."""
    means = np.empty(len(rows))
    variances = np.empty(len(rows))
    chunk = max(1, _GATHER_CELLS // window)
    offsets = np.arange(window)
    for lo in range(0, len(rows), chunk):
        end_rows = rows[lo:lo + chunk]
        cells = window_start[end_rows][:, None] + offsets[None, :]
        inside = cells <= end_rows[:, None]
        values = np.where(inside, x[np.minimum(cells, end_rows[:, None])], np.nan)
        present = ~np.isnan(values)
        n = present.sum(axis=1)
        mean = np.where(present, values, 0.0).sum(axis=1) / n
        dev = np.where(present, values - mean[:, None], 0.0)
        correction = dev.sum(axis=1)
        means[lo:lo + chunk] = mean + correction / n
        variances[lo:lo + chunk] = ((dev * dev).sum(axis=1) - correction * correction / n) / n
    return means, variances


def rolling_zscore_grouped(
    values: np.ndarray,
    group_start: np.ndarray,
    window: int,
    min_periods: int,
    plan: RollingPlan | None = None,
    session_number: np.ndarray | None = None,
) -> np.ndarray:
    """Per-symbol rolling z-score on a grid sorted by (symbol, session), vectorised.

    ``z_t = (x_t - mean) / std_pop`` over the last ``window`` rows of the same symbol
    including t; NaN when x_t is NaN, when fewer than ``min_periods`` values are non-null, or
    when the std is 0. Matches pandas ``rolling(window, min_periods).mean()/.std(ddof=0)`` per
    symbol, including pandas' exact 0 std for windows whose non-null values are all equal:
    those are detected exactly (no change of value inside the window), not from a rounding
    residue.

    Numerics: prefix sums restart at every block of a padded per-symbol layout (see
    :class:`RollingPlan`) and use values centred on the block's first non-null value, so no sum
    mixes symbols or grows with the frame; the two block parts of a window are merged with
    Chan et al.'s parallel variance formula. Windows whose sums would still cancel badly (an
    outlier or a trend inside the block) are recomputed exactly by two-pass summation. Every
    quantity at row t depends only on rows <= t of the same symbol (point in time), and
    ``session_number`` (absolute session index) fixes the block layout so results do not
    depend on where the frame starts, provided it starts on a block boundary or at the
    symbol's first row.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    out = np.full(n, np.nan)
    valid = ~np.isnan(x)
    if n == 0 or not valid.any():
        return out
    if plan is None or plan.window != window or plan.group_start is not group_start:
        plan = RollingPlan(group_start, window, session_number)
    block, n_blocks = plan.block, plan.n_blocks
    mask = plan.mask_stats(valid)

    padded_values = np.zeros(n_blocks * block)
    padded_values[plan.pos] = np.where(valid, x, 0.0)
    grid_values = padded_values.reshape(n_blocks, block)
    grid_valid = mask.grid_valid
    # Centre each block on its first non-null value: local (little cancellation) and never
    # later than any non-null row of the block that uses it (point in time).
    block_mean = grid_values[np.arange(n_blocks), mask.first_valid]
    centred = (grid_values - block_mean[:, None]) * grid_valid
    cum_1 = np.cumsum(centred, axis=1)
    cum_2 = np.cumsum(centred * centred, axis=1)
    tot_1, tot_2 = cum_1[:, -1], cum_2[:, -1]
    cum_1, cum_2 = cum_1.ravel(), cum_2.ravel()

    pos, split = plan.pos, plan.split
    blk_a, blk_i = plan.block_start, plan.block_end
    # Part 2: the window's rows in the block of row i (block-local prefix sums; the sum
    # strictly before a block's first slot is 0).
    s1_2 = cum_1[pos] - np.where(plan.at_block_start_2, 0.0, cum_1[plan.before_start_2])
    s2_2 = cum_2[pos] - np.where(plan.at_block_start_2, 0.0, cum_2[plan.before_start_2])
    # Part 1: the rows in the previous block (only when the window is split).
    s1_1 = np.where(split, tot_1[blk_a] - np.where(plan.at_block_start, 0.0,
                                                   cum_1[plan.before_pos_start]), 0.0)
    s2_1 = np.where(split, tot_2[blk_a] - np.where(plan.at_block_start, 0.0,
                                                   cum_2[plan.before_pos_start]), 0.0)
    n_1, n_2, count = mask.n_1, mask.n_2, mask.count

    with np.errstate(divide="ignore", invalid="ignore"):
        mean_1 = np.where(n_1 > 0, s1_1 / n_1, 0.0)
        mean_2 = np.where(n_2 > 0, s1_2 / n_2, 0.0)
        m2_1 = np.maximum(s2_1 - s1_1 * mean_1, 0.0)
        m2_2 = np.maximum(s2_2 - s1_2 * mean_2, 0.0)
        ref_shift = block_mean[blk_a] - block_mean[blk_i]      # c1 - c2
        delta = ref_shift + mean_1 - mean_2
        m2 = m2_1 + m2_2 + np.where(mask.both, delta * delta * n_1 * n_2 / count, 0.0)
        mean_rel = (s1_1 + n_1 * ref_shift + s1_2) / count     # window mean minus c2
        variance = m2 / count
        deviation = (x - block_mean[blk_i]) - mean_rel

    # Windows whose sums cancel badly (a block holds values far from the window's, e.g. an
    # outlier or a trend): recompute those few exactly with a two-pass sum over the window.
    with np.errstate(invalid="ignore"):
        magnitude = np.where(split, tot_2[blk_a], 0.0) + cum_2[pos]   # rows <= i only
        ill = valid & (count >= min_periods) & (m2 * _CONDITION_LIMIT < magnitude)
    if ill.any():
        rows = np.flatnonzero(ill)
        mean_ex, variance_ex = _two_pass_window_stats(x, plan.window_start, rows, window)
        variance[rows] = variance_ex
        deviation[rows] = x[rows] - mean_ex

    # Exact constant-window detection: the last change of value (among non-null values of
    # the symbol) is at or before the window's first non-null value.
    changed = valid & (mask.first_of_group | (x != x[mask.previous_valid]))
    last_change = np.maximum.accumulate(np.where(changed, np.arange(n), -1))
    constant = last_change <= mask.next_valid_at_window_start

    ok = valid & (count >= min_periods) & ~constant & (variance > 0)
    out[ok] = deviation[ok] / np.sqrt(variance[ok])
    return out


# ---------------------------------------------------------------------------------------------
# daily_metrics columns
# ---------------------------------------------------------------------------------------------
def _ratio(numerator: np.ndarray, denominator: np.ndarray, ok: np.ndarray) -> np.ndarray:
    out = np.full(len(numerator), np.nan)
    out[ok] = numerator[ok] / denominator[ok]
    return out


def _empty_otc() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in OTC_COLUMNS})


def _merge_otc(grid: pd.DataFrame, otc: pd.DataFrame | None,
               default_alignment: str | None = None) -> dict[str, object]:
    """OTC columns aligned on the grid (NULL, status 'None', has_otc False where absent;
    ``otc_alignment`` = ``default_alignment`` there)."""
    size = len(grid)
    out: dict[str, object] = {c: np.full(size, np.nan) for c in _OTC_VALUES}
    week = np.full(size, np.datetime64("NaT"), dtype="datetime64[ns]")
    status = np.full(size, OTC_STATUSES.index("None"), dtype=np.int8)
    has_otc = np.zeros(size, dtype=bool)
    alignment: np.ndarray | None = None
    if otc is not None and len(otc):
        alignment = np.full(size, default_alignment, dtype=object)
        categories = grid["symbol"].cat.categories
        codes = grid["symbol"].cat.codes.to_numpy(dtype=np.int64)
        days = _to_days(grid["date"])
        # The grid is sorted by (symbol, date): find each OTC row by its combined key.
        otc_codes = _symbol_codes(otc["symbol"], categories)
        otc_days = _to_days(otc["date"])
        key_grid = codes * np.int64(1 << 32) + days
        key_otc = np.where(otc_codes >= 0, otc_codes, -1) * np.int64(1 << 32) + otc_days
        hit = np.searchsorted(key_grid, key_otc)
        hit_ok = (otc_codes >= 0) & (hit < size)
        hit_ok[hit_ok] = key_grid[hit[hit_ok]] == key_otc[hit_ok]
        pos = hit[hit_ok]
        rows = otc.loc[hit_ok]
        for column in _OTC_VALUES:
            out[column] = _scatter(size, pos, _float(rows, column))
        week[pos] = pd.to_datetime(rows["otc_week_used"]).to_numpy(dtype="datetime64[ns]")
        status[pos] = pd.Categorical(rows["otc_status"].fillna("None"),
                                     categories=list(OTC_STATUSES)).codes
        if (status < 0).any():
            raise ValueError(f"otc_status must be one of {OTC_STATUSES}")
        alignment[pos] = rows["otc_alignment"].astype(object).to_numpy()
        has_otc[pos] = rows["has_otc"].fillna(False).to_numpy(dtype=bool)
    out["otc_week_used"] = week
    out["otc_status"] = pd.Categorical.from_codes(status, categories=list(OTC_STATUSES))
    if alignment is not None:
        out["otc_alignment"] = pd.Categorical(alignment)
    else:  # every row carries the same label (or none): no strings to factorise
        labels = [] if default_alignment is None else [default_alignment]
        out["otc_alignment"] = pd.Categorical.from_codes(
            np.full(size, 0 if labels else -1, dtype=np.int8), categories=labels)
    out["has_otc"] = has_otc
    return out


def _zone_categorical(display: np.ndarray) -> pd.Categorical:
    """:func:`~darkpool_analysis.scoring.zone_label` as a categorical, built from codes
    (same thresholds; NULL where ``display`` is NaN)."""
    codes = np.where(display >= ACCUMULATION_THRESHOLD, 0,
                     np.where(display <= DISTRIBUTION_THRESHOLD, 1, 2)).astype(np.int8)
    codes[np.isnan(display)] = -1
    return pd.Categorical.from_codes(codes, categories=list(ZONE_LABELS))


def confidence_score(
    otc_status: np.ndarray | pd.Categorical,
    has_short: np.ndarray,
    has_lit: np.ndarray,
    has_price: np.ndarray,
    lit_flow_imbalance: np.ndarray,
) -> np.ndarray:
    """``clamp(staleness * coverage, 0.25, 1)`` (metrics-spec "Confidence").

    staleness 1.0/0.7/0.5 for OTC Anchored/Staled/None; coverage 1.0/0.8/0.5 for 0/1/2+ of
    (short, lit, price) missing; x0.9 when ``lit_flow_imbalance`` is NULL.
    """
    status = otc_status if (isinstance(otc_status, pd.Categorical)
                            and list(otc_status.categories) == list(OTC_STATUSES)) \
        else pd.Categorical(otc_status, categories=list(OTC_STATUSES))
    by_code = np.array([_STALENESS[name] for name in OTC_STATUSES] + [_STALENESS["None"]])
    staleness = by_code[status.codes]  # code -1 (unknown/NULL) -> the last entry, 'None'

    missing = 3 - (has_short.astype(np.int8) + has_lit.astype(np.int8)
                   + has_price.astype(np.int8))
    coverage = _COVERAGE_BY_MISSING[missing]
    coverage = np.where(np.isnan(lit_flow_imbalance), coverage * 0.9, coverage)
    return np.clip(staleness * coverage, 0.25, 1.0)


def compute_daily_metrics(
    grid: pd.DataFrame,
    settings: MetricSettings,
    otc: pd.DataFrame | None = None,
    *,
    otc_alignment: str | None = None,
) -> pd.DataFrame:
    """Every ``daily_metrics`` column from a grid frame (see :func:`assemble_grid`).

    ``short_buy_volume`` (= ``finra_buy_volume``) is FINRA ShortVolume, a proxy for
    dealer-filled buying, not observed buying. ``otc`` is the optional OTC block
    (:data:`OTC_COLUMNS`, one row per symbol and date); rows it lacks get NULL OTC values,
    ``otc_status = 'None'``, ``has_otc = False`` and ``otc_alignment = otc_alignment``
    (the rule the build used: ``published``/``week``; NULL when not given).

    ``data_quality``: ``complete`` when short, lit and price data are all present, ``partial``
    when some are, ``no_data`` when none is (a grid row inside a symbol's span).

    Returns a frame with :data:`DAILY_METRICS_COLUMNS`, in the grid's row order.
    """
    size = len(grid)
    codes = grid["symbol"].cat.codes.to_numpy(dtype=np.int64) \
        if isinstance(grid["symbol"].dtype, pd.CategoricalDtype) \
        else pd.factorize(grid["symbol"], sort=False)[0]
    if size > 1 and (np.diff(codes) < 0).any():
        raise ValueError("grid must be sorted by symbol (see assemble_grid)")
    starts = group_starts(codes)
    session_numbers = session_numbers_of(grid["date"])
    short_window, min_periods = settings.short_z_window, settings.zscore_min_periods

    # Rolling z-scores run on chunks of whole symbols that stay in the CPU caches (each
    # symbol's values do not depend on its neighbours, so the result is the same); the plans
    # are shared by every column with the same window.
    chunks = symbol_chunks(starts, ROLLING_CHUNK_ROWS)
    plans: dict[tuple[int, int], RollingPlan] = {}

    def z(values: np.ndarray, window: int = short_window) -> np.ndarray:
        out = np.full(size, np.nan)
        if np.isnan(values).all():
            return out
        for lo, hi in chunks:
            plan = plans.get((window, lo))
            if plan is None:
                plan = plans[(window, lo)] = RollingPlan(starts[lo:hi] - lo, window,
                                                         session_numbers[lo:hi])
            out[lo:hi] = rolling_zscore_grouped(values[lo:hi], plan.group_start, window,
                                                min_periods, plan=plan)
        return out

    col = {c: grid[c].to_numpy(dtype=float) for c in (*_SHORT_VALUES, *_PRICE_VALUES,
                                                     "lit_buy_volume", "lit_sell_volume",
                                                     "lit_coverage_pct")}
    out: dict[str, object] = {"symbol": grid["symbol"], "date": grid["date"]}

    # Short-sale block. B = ShortVolume (proxy), S = max(Total - Short, 0).
    buy, total = col["short_volume"], col["total_volume"]
    sell = np.maximum(total - buy, 0.0)  # NaN stays NaN
    short_ratio = _ratio(buy, total, total != 0)
    buy_sell = _ratio(buy, sell, sell > 0)
    out.update({
        "short_volume": buy, "short_exempt_volume": col["short_exempt_volume"],
        "total_volume": total, "short_source": grid["short_source"],
        "short_buy_volume": buy, "finra_buy_volume": buy, "short_sell_volume": sell,
        "short_ratio": short_ratio, "short_buy_sell_ratio": buy_sell,
        "short_buy_sell_ratio_z": z(buy_sell), "short_ratio_z": z(short_ratio),
        "finra_buy_volume_z": z(buy),
    })

    # Lit block.
    lit_buy, lit_sell = col["lit_buy_volume"], col["lit_sell_volume"]
    lit_total = lit_buy + lit_sell
    enough = (lit_total >= settings.min_lit_volume) & (lit_total > 0)
    lit_buy_ratio = _ratio(lit_buy, lit_total, enough)
    imbalance = _ratio(lit_buy - lit_sell, lit_total, enough)
    log_buy_sell = np.full(size, np.nan)
    both = (lit_buy > 0) & (lit_sell > 0)
    log_buy_sell[both] = np.log(lit_buy[both] / lit_sell[both])
    out.update({
        "lit_buy_volume": lit_buy, "lit_sell_volume": lit_sell, "lit_total_volume": lit_total,
        "lit_buy_ratio": lit_buy_ratio, "log_buy_sell": log_buy_sell,
        "lit_flow_imbalance": imbalance, "lit_flow_imbalance_z": z(imbalance),
        "lit_buy_ratio_z": z(lit_buy_ratio), "lit_method": grid["lit_method"],
        "lit_coverage_pct": col["lit_coverage_pct"],
    })

    # Combined flow: NULL parts count as 0; NULL when all four are NULL.
    parts = (buy, lit_buy, sell, lit_sell)
    any_part = ~np.logical_and.reduce([np.isnan(p) for p in parts])
    buys = np.nan_to_num(buy) + np.nan_to_num(lit_buy)
    sells = np.nan_to_num(sell) + np.nan_to_num(lit_sell)
    vw_flow = np.where(any_part, buys - sells, np.nan)
    out.update({"vw_flow": vw_flow, "vw_flow_z": z(vw_flow),
                "combined_ratio": _ratio(buys, sells, sells != 0)})

    # Price block. The previous grid row of the same symbol is the previous session.
    close = col["close"]
    previous_close = np.full(size, np.nan)
    if size > 1:
        previous_close[1:] = close[:-1]
    previous_close[starts == np.arange(size)] = np.nan
    return_1d = _ratio(close, previous_close, previous_close != 0) - 1.0
    out.update({c: col[c] for c in _PRICE_VALUES})
    out.update({
        "return_1d": return_1d, "return_z": z(return_1d, settings.return_z_window),
        "range_pct": _ratio(col["high"] - col["low"], close, close != 0),
    })

    # OTC block (computed elsewhere, point in time) merged as given.
    otc_cols = _merge_otc(grid, otc, otc_alignment)
    out.update(otc_cols)

    # Composite score and confidence.
    short_z = np.asarray(out[settings.accumulation_short_z_source], dtype=float)
    score = composite_score(short_z, out["lit_flow_imbalance_z"], out["return_z"],
                            out["otc_participation_z"], settings)
    display = (score + 1.0) * 50.0
    has_short = grid["has_short"].to_numpy(dtype=bool)
    has_lit = grid["has_lit"].to_numpy(dtype=bool)
    has_price = grid["has_price"].to_numpy(dtype=bool)
    out.update({
        "accumulation_score": score,
        "accumulation_score_display": display,
        "pressure_context_label": _zone_categorical(display),
        "confidence": confidence_score(otc_cols["otc_status"], has_short, has_lit, has_price,
                                       imbalance),
        "has_short": has_short, "has_lit": has_lit, "has_price": has_price,
    })
    present = has_short.astype(np.int8) + has_lit.astype(np.int8) + has_price.astype(np.int8)
    quality_codes = np.where(present == 3, 0, np.where(present == 0, 2, 1)).astype(np.int8)
    out["data_quality"] = pd.Categorical.from_codes(quality_codes,
                                                    categories=list(DATA_QUALITY_LEVELS))
    out["accumulation_short_z_source"] = pd.Categorical.from_codes(
        np.zeros(size, dtype=np.int8), categories=[settings.accumulation_short_z_source])
    out["inference_version"] = pd.Categorical.from_codes(
        np.zeros(size, dtype=np.int8), categories=[INFERENCE_VERSION])
    # copy=False: no consolidation of ~45 float columns into one 2-D block (a full copy).
    return pd.DataFrame(out, columns=list(DAILY_METRICS_COLUMNS), index=grid.index, copy=False)
