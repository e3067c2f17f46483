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
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

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
_GRID_FLOATS = (*_SHORT_VALUES, *_PRICE_VALUES, *_LIT_VALUES)

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

#: Label (dictionary-encoded) columns of ``daily_metrics`` besides ``symbol``.
_LABEL_COLUMNS = ("short_source", "lit_method", "otc_status", "otc_alignment",
                  "pressure_context_label", "data_quality", "accumulation_short_z_source",
                  "inference_version")

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
    raw = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if raw.dtype.kind == "M":  # already datetime64 (the build's frames): no pandas parsing
        return raw.astype("datetime64[D]").astype(np.int64)
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

    def grid_codes_and_days(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Symbol code, day and session slot (index in ``session_days``) of every row."""
        codes = np.repeat(np.arange(len(self.categories)), self.lengths)
        sn = (np.arange(self.size) - np.repeat(self.offsets, self.lengths)
              + np.repeat(self.first_sn, self.lengths))
        days = self.session_days[sn] if self.size else np.empty(0, dtype=np.int64)
        return codes, days, sn.astype(np.int64)

    def positions(self, frame: pd.DataFrame,
                  name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid position of each row of ``frame`` on the grid, the mask of those rows, and
        the grid's flag of rows hit (its ``has_*`` column)."""
        from darkpool_analysis import kernels

        codes = _symbol_codes(frame["symbol"], self.categories).astype(np.int64, copy=False)
        days = _to_days(frame["date"])
        flag = np.zeros(self.size, dtype=bool)
        if len(self.session_days) == 0 or len(days) == 0:
            return np.empty(0, dtype=np.int64), np.zeros(len(days), dtype=bool), flag
        # Day -> session slot by table lookup (the span is a few thousand days).
        day0 = int(self.session_days[0])
        slot_of_day = np.full(int(self.session_days[-1]) - day0 + 1, -1, dtype=np.int64)
        slot_of_day[self.session_days - day0] = np.arange(len(self.session_days))
        pos = np.empty(len(days), dtype=np.int64)
        duplicates = kernels.grid_positions(
            np.ascontiguousarray(codes), np.ascontiguousarray(days), slot_of_day, day0,
            self.first_sn.astype(np.int64), self.lengths.astype(np.int64),
            self.offsets.astype(np.int64), flag, pos)
        if duplicates:
            raise ValueError(f"{name}: more than one row for the same (symbol, date)")
        keep = pos >= 0
        dropped = len(pos) - int(np.count_nonzero(keep))
        if dropped:
            log.debug("%s: %d rows outside the session grid ignored", name, dropped)
            pos = pos[keep]
        return pos, keep, flag


def _scatter(size: int, pos: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(size, np.nan)
    out[pos] = values
    return out


class Labels(NamedTuple):
    """A label column as category codes (``-1`` = NULL) and the category names."""

    codes: np.ndarray
    categories: tuple[object, ...]

    def categorical(self) -> pd.Categorical:
        """The column as a pandas ``Categorical`` (no string copies)."""
        return pd.Categorical.from_codes(self.codes, categories=list(self.categories))


@dataclass(frozen=True)
class GridArrays:
    """The grid as plain arrays (the build's form; :meth:`to_frame` gives the grid frame).

    ``codes`` index ``categories`` (symbols, sorted by code then session); ``days`` are days
    since 1970-01-01 and ``session_number`` the absolute XNYS session index (0 =
    ``CALENDAR_START``) of each row; ``values`` holds the float columns of
    :data:`GRID_COLUMNS`, ``labels`` ``short_source``/``lit_method`` and ``flags`` the
    ``has_*`` columns.
    """

    codes: np.ndarray
    categories: pd.Index
    days: np.ndarray
    session_number: np.ndarray
    values: dict[str, np.ndarray]
    labels: dict[str, Labels]
    flags: dict[str, np.ndarray]
    #: Index of the first row of each row's symbol.
    group_start: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def symbols(self, first: int, stop: int) -> GridArrays:
        """The grid of the symbols with codes ``first <= code < stop``: views of these
        arrays, codes and group starts re-based, exactly the grid that
        :func:`assemble_grid_arrays` gives for those symbols' spans alone (the build
        assembles one grid per read and computes it in slices)."""
        lo, hi = (int(i) for i in np.searchsorted(self.codes, [first, stop], side="left"))
        rows = slice(lo, hi)
        return GridArrays(
            codes=self.codes[rows] - np.int32(first),
            categories=self.categories[first:stop],
            days=self.days[rows],
            session_number=self.session_number[rows],
            values={name: values[rows] for name, values in self.values.items()},
            labels={name: Labels(labels.codes[rows], labels.categories)
                    for name, labels in self.labels.items()},
            flags={name: flag[rows] for name, flag in self.flags.items()},
            group_start=self.group_start[rows] - lo,
        )

    def to_frame(self) -> pd.DataFrame:
        """The grid frame (:data:`GRID_COLUMNS`)."""
        data: dict[str, object] = {
            "symbol": pd.Categorical.from_codes(self.codes, categories=self.categories),
            "date": _days_to_stamps(self.days),
            **self.values,
            **{name: labels.categorical() for name, labels in self.labels.items()},
            **self.flags,
        }
        return pd.DataFrame(data, columns=list(GRID_COLUMNS), copy=False)

    @classmethod
    def from_frame(cls, grid: pd.DataFrame) -> GridArrays:
        """Arrays of a grid frame (see :func:`assemble_grid`)."""
        if isinstance(grid["symbol"].dtype, pd.CategoricalDtype):
            codes = grid["symbol"].cat.codes.to_numpy(dtype=np.int32)
            categories = pd.Index(grid["symbol"].cat.categories)
        else:
            factorised, uniques = pd.factorize(grid["symbol"], sort=False)
            codes, categories = factorised.astype(np.int32), pd.Index(uniques)
        if len(codes) > 1 and (np.diff(codes) < 0).any():
            raise ValueError("grid must be sorted by symbol (see assemble_grid)")

        def labels_of(column: str) -> Labels:
            values = grid[column]
            cat = values.array if isinstance(values.dtype, pd.CategoricalDtype) \
                else pd.Categorical(values)
            return Labels(np.asarray(cat.codes), tuple(cat.categories))

        return cls(
            codes=codes, categories=categories, days=_to_days(grid["date"]),
            session_number=session_numbers_of(grid["date"]),
            values={c: grid[c].to_numpy(dtype=float) for c in _GRID_FLOATS},
            labels={c: labels_of(c) for c in ("short_source", "lit_method")},
            flags={c: grid[c].to_numpy(dtype=bool) for c in ("has_short", "has_price", "has_lit")},
            group_start=group_starts(codes),
        )


def _days_to_stamps(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[ns]")


def _scatter_labels(size: int, pos: np.ndarray, values: pd.Series,
                    categories: Sequence[str] | None = None) -> Labels:
    if isinstance(values.dtype, pd.CategoricalDtype) and (
            categories is None or list(values.cat.categories) == list(categories)):
        labels = values.array  # already coded (the build's frames): no string factorising
    else:
        labels = pd.Categorical(values, categories=categories)
        if categories is not None and (labels.codes[values.notna().to_numpy()] < 0).any():
            raise ValueError(f"unexpected label in {values.name!r}; expected one of "
                             f"{categories}")
    codes = np.full(size, -1, dtype=np.int16)
    codes[pos] = labels.codes
    return Labels(codes, tuple(labels.categories))


def _float(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column]
    if values.dtype == np.float64:
        return values.to_numpy()
    return pd.to_numeric(values, errors="raise").to_numpy(dtype=float, na_value=np.nan)


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
    dates or outside the spans are ignored. :func:`assemble_grid_arrays` gives the same
    grid as arrays.

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
    return assemble_grid_arrays(short, prices, lit, spans).to_frame()


def assemble_grid_arrays(
    short: pd.DataFrame,
    prices: pd.DataFrame,
    lit: pd.DataFrame | None = None,
    spans: pd.DataFrame | None = None,
) -> GridArrays:
    """:func:`assemble_grid` as :class:`GridArrays` (no frame; the build's fast path)."""
    lit = lit if lit is not None else pd.DataFrame({c: [] for c in LIT_INPUT_COLUMNS})
    if spans is None:
        spans = _spans_from([short, prices])
    spans = spans.sort_values("symbol", kind="stable")
    categories = pd.Index(spans["symbol"].astype(object).to_numpy())
    if categories.has_duplicates:
        raise ValueError("spans: a symbol appears more than once")
    layout = _Layout(categories, _to_days(spans["first_date"]), _to_days(spans["last_date"]))
    codes, days, slots = layout.grid_codes_and_days()
    size = layout.size
    first_number = (int(session_numbers_of(
        layout.session_days[:1].astype("datetime64[D]"))[0])
                    if len(layout.session_days) else 0)
    values: dict[str, np.ndarray] = {}
    labels: dict[str, Labels] = {}
    flags: dict[str, np.ndarray] = {}

    pos, keep, flags["has_short"] = layout.positions(short, "short")
    rows = short.loc[keep] if not keep.all() else short
    for column in _SHORT_VALUES:
        values[column] = _scatter(size, pos, _float(rows, column))
    labels["short_source"] = _scatter_labels(size, pos, rows["short_source"], SHORT_SOURCES)

    pos, keep, flags["has_price"] = layout.positions(prices, "prices")
    rows = prices.loc[keep] if not keep.all() else prices
    for column in _PRICE_VALUES:
        values[column] = _scatter(size, pos, _float(rows, column))

    pos, keep, flags["has_lit"] = layout.positions(lit, "lit")
    rows = lit.loc[keep] if not keep.all() else lit
    for column in _LIT_VALUES:
        values[column] = _scatter(size, pos, _float(rows, column))
    labels["lit_method"] = _scatter_labels(size, pos, rows["lit_method"])
    return GridArrays(codes=codes.astype(np.int32), categories=categories, days=days,
                      session_number=slots + first_number, values=values, labels=labels,
                      flags=flags,
                      group_start=np.repeat(layout.offsets, layout.lengths).astype(np.int64))


def session_numbers_of(dates: pd.Series | np.ndarray) -> np.ndarray:
    """Absolute XNYS session index of each date (0 = the calendar's first session).

    Fixes the rolling kernel's anchors (:func:`block_size`) independently of where a frame
    starts.
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
    back), floored to an anchor session of every window's rolling kernel (a multiple of each
    :func:`block_size`), plus one whole block: the kernel re-anchors exactly at the next
    block, whose windows never reach the first loaded row (whose ``return_1d`` is unknown),
    so every written row's state equals a full build's.
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


#: Target rows per rolling-kernel task (whole symbols): enough tasks to keep every compute
#: thread busy, each long enough that thread hand-off costs nothing measurable.
ROLLING_CHUNK_ROWS = 1 << 17


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


def block_size(window: int) -> int:
    """Session period of the rolling kernel's exact re-anchoring for ``window`` (a multiple
    of 64, >= window; see :mod:`darkpool_analysis.kernels`)."""
    return 64 * -(-window // 64)


def rolling_zscore_grouped(
    values: np.ndarray,
    group_start: np.ndarray,
    window: int,
    min_periods: int,
    session_number: np.ndarray | None = None,
) -> np.ndarray:
    """Per-symbol rolling z-score on a grid sorted by (symbol, session), compiled.

    ``z_t = (x_t - mean) / std_pop`` over the last ``window`` rows of the same symbol
    including t; NaN when x_t is NaN, when fewer than ``min_periods`` values are non-null, or
    when the std is 0. Matches pandas ``rolling(window, min_periods).mean()/.std(ddof=0)`` per
    symbol, including pandas' exact 0 std for windows whose non-null values are all equal:
    those are detected exactly (no change of value inside the window), not from a rounding
    residue.

    Numerics (:func:`darkpool_analysis.kernels.rolling_zscore_kernel`): sliding centred sums,
    re-anchored exactly every :func:`block_size` sessions of the absolute session number
    ``session_number`` (default: the row index) and at each symbol's first row; badly
    conditioned windows are recomputed by two-pass summation. Every value at row t depends
    only on rows <= t of the same symbol (point in time), and a frame that starts on an anchor
    gives the same bits as a longer frame from its next anchor on.
    """
    from darkpool_analysis import kernels

    x = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty(len(x))
    sessions = (np.arange(len(x), dtype=np.int64) if session_number is None
                else np.ascontiguousarray(session_number, dtype=np.int64))
    kernels.rolling_zscore_kernel(x, np.ascontiguousarray(group_start, dtype=np.int64),
                                  sessions, 0, len(x), int(window), block_size(window),
                                  int(min_periods), kernels.CONDITION_LIMIT, out)
    return out


# ---------------------------------------------------------------------------------------------
# daily_metrics columns
# ---------------------------------------------------------------------------------------------
def _ratio(numerator: np.ndarray, denominator: np.ndarray, ok: np.ndarray) -> np.ndarray:
    out = np.full(len(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=ok)
    return out


def _empty_otc() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in OTC_COLUMNS})


def _merge_otc(grid: GridArrays, otc: pd.DataFrame | None,
               default_alignment: str | None, null: np.ndarray) -> dict[str, object]:
    """OTC columns aligned on the grid (NULL, status 'None', has_otc False where absent;
    ``otc_alignment`` = ``default_alignment`` there). Labels come as :class:`Labels`;
    without OTC rows the float and week columns are ``null`` (the shared NaN array)."""
    size = len(grid)
    out: dict[str, object] = {c: null for c in _OTC_VALUES}
    week: np.ndarray = null
    status = np.full(size, OTC_STATUSES.index("None"), dtype=np.int8)
    has_otc = np.zeros(size, dtype=bool)
    alignment: np.ndarray | None = None
    if otc is not None and len(otc):
        week = np.full(size, np.datetime64("NaT"), dtype="datetime64[ns]")
        alignment = np.full(size, default_alignment, dtype=object)
        codes = grid.codes.astype(np.int64)
        # The grid is sorted by (symbol, date): find each OTC row by its combined key.
        otc_codes = _symbol_codes(otc["symbol"], grid.categories)
        otc_days = _to_days(otc["date"])
        key_grid = codes * np.int64(1 << 32) + grid.days
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
    out["otc_status"] = Labels(status, OTC_STATUSES)
    if alignment is not None:
        factorised = pd.Categorical(alignment)
        out["otc_alignment"] = Labels(np.asarray(factorised.codes),
                                      tuple(factorised.categories))
    else:  # every row carries the same label (or none): no strings to factorise
        labels = () if default_alignment is None else (default_alignment,)
        out["otc_alignment"] = Labels(np.full(size, 0 if labels else -1, dtype=np.int8),
                                      labels)
    out["has_otc"] = has_otc
    return out


def _zone_codes(display: np.ndarray) -> np.ndarray:
    """:func:`~darkpool_analysis.scoring.zone_label` as codes into :data:`ZONE_LABELS`
    (same thresholds; -1 = NULL where ``display`` is NaN)."""
    codes = np.where(display >= ACCUMULATION_THRESHOLD, 0,
                     np.where(display <= DISTRIBUTION_THRESHOLD, 1, 2)).astype(np.int8)
    codes[np.isnan(display)] = -1
    return codes


def _confidence_of(status_codes: np.ndarray, present: np.ndarray,
                   lit_flow_imbalance: np.ndarray) -> np.ndarray:
    """:func:`confidence_score` from ``otc_status`` codes (-1 = NULL, read as 'None') and
    the number of (short, lit, price) sources present per row."""
    # Every combination of (status, sources present, imbalance NULL) takes one of 32 values:
    # compute those with the formula's own operations, then look each row's up.
    staleness = np.array([_STALENESS[name] for name in OTC_STATUSES] + [_STALENESS["None"]])
    coverage = _COVERAGE_BY_MISSING[3 - np.arange(4)]          # by number of sources present
    coverage = np.stack([coverage, coverage * 0.9], axis=1)   # x0.9 when imbalance is NULL
    table = np.clip(staleness[:, None, None] * coverage[None, :, :], 0.25, 1.0).ravel()
    index = present * np.int8(2)
    index += np.isnan(lit_flow_imbalance)
    # code -1 (unknown/NULL) reads as 'None', the last staleness entry
    status = np.where(status_codes < 0, len(OTC_STATUSES), status_codes).astype(np.int16)
    return table[status * np.int16(8) + index]


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
    present = (np.asarray(has_short, dtype=np.int8) + np.asarray(has_lit, dtype=np.int8)
               + np.asarray(has_price, dtype=np.int8))
    return _confidence_of(np.asarray(status.codes), present, lit_flow_imbalance)


#: Threads running the compiled rolling kernels (they release the GIL) over symbol chunks.
COMPUTE_THREADS = max(1, min(4, os.cpu_count() or 1))


def _daily_metrics_columns(grid: GridArrays, settings: MetricSettings,
                           otc: pd.DataFrame | None,
                           otc_alignment: str | None
                           ) -> tuple[dict[str, object], np.ndarray]:
    """Every ``daily_metrics`` column of ``grid``: float/bool arrays, :class:`Labels`, int64
    days for ``date`` and ``datetime64[ns]`` for ``otc_week_used`` (the one computation
    behind :func:`compute_daily_metrics` and :func:`compute_daily_metrics_arrow`), and the
    all-NaN array that every wholly NULL float column is (the same object)."""
    size = len(grid)
    starts = grid.group_start
    session_numbers = grid.session_number
    short_window, min_periods = settings.short_z_window, settings.zscore_min_periods

    # Rolling z-scores: compiled kernel tasks over chunks of whole symbols (each symbol's
    # values do not depend on its neighbours, so chunking changes no bit), run on a thread
    # pool while this thread computes the row-local columns.
    chunks = symbol_chunks(starts, ROLLING_CHUNK_ROWS)
    pool = ThreadPoolExecutor(max_workers=COMPUTE_THREADS, thread_name_prefix="rolling-z") \
        if COMPUTE_THREADS > 1 and len(chunks) > 1 else None
    pending: list[Future[None]] = []
    from darkpool_analysis import kernels

    # Wholly NULL columns (no lit or OTC data in the batch, and what derives from them) all
    # share one NaN array: no allocation or computation each, and the Arrow table marks
    # them as plain nulls.
    null = np.full(size, np.nan)

    def z(values: np.ndarray, window: int = short_window) -> np.ndarray:
        if values is null or size == 0 or np.isnan(values).all():
            return null
        out = np.empty(size)  # the tasks write every row
        x = np.ascontiguousarray(values, dtype=np.float64)
        args = (x, starts, session_numbers)
        tail = (window, block_size(window), min_periods, kernels.CONDITION_LIMIT, out)
        for lo, hi in chunks:
            if pool is None:
                kernels.rolling_zscore_kernel(*args, lo, hi, *tail)
            else:
                pending.append(pool.submit(kernels.rolling_zscore_kernel, *args, lo, hi, *tail))
        return out

    try:
        col = grid.values
        out: dict[str, object] = {"symbol": Labels(grid.codes, grid.categories),
                                  "date": grid.days}

        # Row-local columns in one compiled pass (metrics-spec):
        # short sale: B = ShortVolume (proxy), S = max(Total - Short, 0), B/Total, B/S;
        # price: return_1d against the previous grid row of the same symbol (the previous
        # session), (high - low) / close;
        # combined flow: NULL parts count as 0, NULL when all four are NULL;
        # lit: totals, ratios and imbalance where the lit total reaches min_lit_volume.
        buy, total, close = col["short_volume"], col["total_volume"], col["close"]
        any_lit = bool(grid.flags["has_lit"].any())
        lit_buy = col["lit_buy_volume"] if any_lit else null
        lit_sell = col["lit_sell_volume"] if any_lit else null
        sell, short_ratio, buy_sell, return_1d, range_pct, vw_flow, combined = (
            np.empty(size) for _ in range(7))
        lit_total, lit_buy_ratio, imbalance = ((np.empty(size) for _ in range(3)) if any_lit
                                               else (null, null, null))
        kernels.row_columns(buy, total, close, col["high"], col["low"], starts, lit_buy,
                            lit_sell, any_lit, float(settings.min_lit_volume), sell,
                            short_ratio, buy_sell, return_1d, range_pct, vw_flow, combined,
                            lit_total, lit_buy_ratio, imbalance)
        out.update({
            "short_volume": buy, "short_exempt_volume": col["short_exempt_volume"],
            "total_volume": total, "short_source": grid.labels["short_source"],
            "short_buy_volume": buy, "finra_buy_volume": buy, "short_sell_volume": sell,
            "short_ratio": short_ratio, "short_buy_sell_ratio": buy_sell,
            "short_buy_sell_ratio_z": z(buy_sell), "short_ratio_z": z(short_ratio),
            "finra_buy_volume_z": z(buy),
        })
        out.update({c: col[c] for c in _PRICE_VALUES})
        out.update({
            "return_1d": return_1d, "return_z": z(return_1d, settings.return_z_window),
            "range_pct": range_pct,
        })
        out.update({"vw_flow": vw_flow, "vw_flow_z": z(vw_flow), "combined_ratio": combined})
        log_buy_sell = null
        if any_lit:
            log_buy_sell = np.full(size, np.nan)
            both = (lit_buy > 0) & (lit_sell > 0)
            log_buy_sell[both] = np.log(lit_buy[both] / lit_sell[both])
        out.update({
            "lit_buy_volume": lit_buy, "lit_sell_volume": lit_sell,
            "lit_total_volume": lit_total, "lit_buy_ratio": lit_buy_ratio,
            "log_buy_sell": log_buy_sell, "lit_flow_imbalance": imbalance,
            "lit_flow_imbalance_z": z(imbalance), "lit_buy_ratio_z": z(lit_buy_ratio),
            "lit_method": grid.labels["lit_method"],
            "lit_coverage_pct": col["lit_coverage_pct"] if any_lit else null,
        })

        # OTC block (computed elsewhere, point in time) merged as given.
        otc_cols = _merge_otc(grid, otc, otc_alignment, null)
        out.update(otc_cols)
        has_short, has_price = grid.flags["has_short"], grid.flags["has_price"]
        status = otc_cols["otc_status"]
        assert isinstance(status, Labels)
        has_lit = grid.flags["has_lit"]
        present = has_short.view(np.int8) + has_lit.view(np.int8) + has_price.view(np.int8)
        out["confidence"] = _confidence_of(status.codes, present, imbalance)
        out["data_quality"] = Labels(
            np.where(present == 3, 0, np.where(present == 0, 2, 1)).astype(np.int8),
            DATA_QUALITY_LEVELS)
        out.update({"has_short": has_short, "has_lit": has_lit, "has_price": has_price})
        for task in pending:
            task.result()

        # Composite score (needs the z-scores), score display and zone: element-wise, so
        # computed on row ranges in parallel (numpy releases the GIL) with the same bits.
        short_z = np.asarray(out[settings.accumulation_short_z_source], dtype=float)
        inputs = [None if out[name] is null else np.asarray(out[name])
                  for name in ("lit_flow_imbalance_z", "return_z", "otc_participation_z")]
        score, display = np.empty(size), np.empty(size)
        zone = np.empty(size, dtype=np.int8)

        def score_rows(lo: int, hi: int) -> None:
            part = composite_score(short_z[lo:hi],
                                   *[None if v is None else v[lo:hi] for v in inputs],
                                   settings)
            score[lo:hi] = part
            display[lo:hi] = (part + 1.0) * 50.0
            zone[lo:hi] = _zone_codes(display[lo:hi])

        bounds = [(lo, hi) for lo, hi in itertools.pairwise(
            np.linspace(0, size, (COMPUTE_THREADS if pool is not None else 1) + 1,
                        dtype=np.int64).tolist()) if hi > lo]
        if pool is None or len(bounds) < 2:
            for lo, hi in bounds:
                score_rows(lo, hi)
        else:
            for task in [pool.submit(score_rows, lo, hi) for lo, hi in bounds]:
                task.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    out.update({
        "accumulation_score": score,
        "accumulation_score_display": display,
        "pressure_context_label": Labels(zone, ZONE_LABELS),
        "accumulation_short_z_source": Labels(np.zeros(size, dtype=np.int8),
                                              (settings.accumulation_short_z_source,)),
        "inference_version": Labels(np.zeros(size, dtype=np.int8), (INFERENCE_VERSION,)),
    })
    return out, null


def compute_daily_metrics(
    grid: pd.DataFrame | GridArrays,
    settings: MetricSettings,
    otc: pd.DataFrame | None = None,
    *,
    otc_alignment: str | None = None,
) -> pd.DataFrame:
    """Every ``daily_metrics`` column from a grid (see :func:`assemble_grid`), as a frame.

    ``short_buy_volume`` (= ``finra_buy_volume``) is FINRA ShortVolume, a proxy for
    dealer-filled buying, not observed buying. ``otc`` is the optional OTC block
    (:data:`OTC_COLUMNS`, one row per symbol and date); rows it lacks get NULL OTC values,
    ``otc_status = 'None'``, ``has_otc = False`` and ``otc_alignment = otc_alignment``
    (the rule the build used: ``published``/``week``; NULL when not given).

    ``data_quality``: ``complete`` when short, lit and price data are all present, ``partial``
    when some are, ``no_data`` when none is (a grid row inside a symbol's span).

    Returns a frame with :data:`DAILY_METRICS_COLUMNS`, in the grid's row order (labels as
    categoricals). :func:`compute_daily_metrics_arrow` computes the same values as an Arrow
    table.
    """
    arrays = grid if isinstance(grid, GridArrays) else GridArrays.from_frame(grid)
    columns, null = _daily_metrics_columns(arrays, settings, otc, otc_alignment)
    data: dict[str, object] = {}
    for name in DAILY_METRICS_COLUMNS:
        value = columns[name]
        data[name] = value.categorical() if isinstance(value, Labels) else value
    data["date"] = _days_to_stamps(arrays.days)
    if columns["otc_week_used"] is null:
        data["otc_week_used"] = np.full(len(arrays), np.datetime64("NaT"), "datetime64[ns]")
    index = grid.index if isinstance(grid, pd.DataFrame) else None
    # copy=False: no consolidation of ~45 float columns into one 2-D block (a full copy).
    return pd.DataFrame(data, columns=list(DAILY_METRICS_COLUMNS), index=index, copy=False)


def _dictionary_type(index: pa.DataType) -> pa.DataType:
    return pa.dictionary(index, pa.string())


#: Arrow schema of :func:`compute_daily_metrics_arrow` (the same for every batch): symbol and
#: labels dictionary-encoded strings (codes straight from the computation, no string
#: materialised), dates ``date32`` (the SQL ``DATE``), NULL where a float is NaN.
DAILY_METRICS_ARROW_SCHEMA = pa.schema([
    (name, _dictionary_type(pa.int32()) if name == "symbol"
     else pa.date32() if name in ("date", "otc_week_used")
     else pa.bool_() if name.startswith("has_")
     else _dictionary_type(pa.int8()) if name in _LABEL_COLUMNS
     else pa.float64())
    for name in DAILY_METRICS_COLUMNS
])


def _float_array(values: np.ndarray) -> pa.Array:
    """A float64 Arrow array over ``values``' own buffer (no copy), NULL where NaN."""
    from darkpool_analysis import kernels

    data = np.ascontiguousarray(values, dtype=np.float64)
    bitmap = np.empty((len(data) + 7) // 8, dtype=np.uint8)
    nulls = int(kernels.validity_bitmap(data, bitmap))
    validity = pa.py_buffer(bitmap) if nulls else None
    return pa.Array.from_buffers(pa.float64(), len(data), [validity, pa.py_buffer(data)],
                                 null_count=nulls)


def tile_order(days: np.ndarray, tile_days: int) -> np.ndarray:
    """Row order of rows sorted by symbol then date that groups them into tiles of
    ``tile_days`` calendar days (symbol then date inside each tile; ``days`` since
    1970-01-01).

    Written in this order, each Parquet row group covers a range of symbols *and* of dates,
    so both common reads prune by the row groups' statistics: one symbol's history (the
    sandbox) and one date of every symbol (the scanner, the dark index), which in a plain
    symbol-major file would decode every row of the table.
    """
    tiles = (np.asarray(days, dtype=np.int64) // tile_days).astype(np.int32)
    return np.argsort(tiles, kind="stable")


def _label_array(labels: Labels, index: pa.DataType, keep: np.ndarray | None) -> pa.Array:
    """A dictionary array over the label codes (code -1 = NULL); ``keep``: a mask or the
    row positions to return."""
    codes = labels.codes if keep is None else labels.codes[keep]
    dtype = index.to_pandas_dtype()
    if len(labels.categories) > np.iinfo(dtype).max:
        raise ValueError(f"too many labels for {index}: {len(labels.categories)}")
    indices = codes.astype(dtype, copy=False)
    # Codes are -1 or a category's position by construction; min() finds the NULLs cheaply.
    mask = indices < 0 if len(indices) and indices.min() < 0 else None
    dictionary = pa.array(np.asarray(labels.categories, dtype=object), type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(indices, type=index, mask=mask), dictionary,
                                          safe=False)


def compute_daily_metrics_arrow(
    grid: GridArrays | pd.DataFrame,
    settings: MetricSettings,
    otc: pd.DataFrame | None = None,
    *,
    otc_alignment: str | None = None,
    write_from: np.datetime64 | pd.Timestamp | None = None,
    tile_days: int | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """:func:`compute_daily_metrics` as an Arrow table built straight from the arrays.

    Columns and types: :data:`DAILY_METRICS_ARROW_SCHEMA` (the same for every batch, so the
    tables of one build can go to one file). Float columns share the computed arrays'
    buffers; only the NaN -> NULL validity bitmaps are new. ``write_from`` keeps only rows
    dated on or after it (a range build's warm-up rows are computed, not returned).
    ``tile_days`` returns the rows in :func:`tile_order` (one gather per column, in place of
    the copy ``write_from`` makes) instead of symbol then date. ``columns`` returns only
    those, in that order (the build skips the columns its files do not store).
    """
    arrays = grid if isinstance(grid, GridArrays) else GridArrays.from_frame(grid)
    values, null = _daily_metrics_columns(arrays, settings, otc, otc_alignment)
    schema = DAILY_METRICS_ARROW_SCHEMA if columns is None else pa.schema(
        [DAILY_METRICS_ARROW_SCHEMA.field(name) for name in columns])
    keep: np.ndarray | None = None
    if write_from is not None:
        first_day = int(np.datetime64(pd.Timestamp(write_from).date(), "D").astype(np.int64))
        keep = arrays.days >= first_day
        if keep.all():
            keep = None
    if tile_days is not None:
        rows = np.arange(len(arrays)) if keep is None else np.flatnonzero(keep)
        keep = rows[tile_order(arrays.days[rows], tile_days)]
    result: list[pa.Array] = []
    n_rows = len(arrays) if keep is None else (
        int(np.count_nonzero(keep)) if keep.dtype == bool else len(keep))
    # One all-NULL array per type, shared by every column without data (e.g. no lit or OTC
    # rows): each would otherwise allocate and zero its own buffers.
    nulls: dict[pa.DataType, pa.Array] = {}
    for field in schema:
        # pop: a column's full-length array is freed as soon as its kept/tiled copy exists,
        # so a batch never holds both copies of every column at once.
        value = values.pop(field.name)
        if isinstance(value, Labels):
            result.append(_label_array(value, field.type.index_type, keep))
            continue
        if value is null:
            if field.type not in nulls:
                nulls[field.type] = pa.nulls(n_rows, type=field.type)
            result.append(nulls[field.type])
            continue
        data = np.asarray(value)
        if keep is not None:
            data = data[keep]
        if field.name == "date":
            result.append(pa.array(data.astype(np.int32), type=pa.date32()))
        elif field.type == pa.float64():
            result.append(_float_array(data))
        elif field.name == "otc_week_used":  # datetime64[ns], NaT -> NULL
            result.append(pa.array(data.astype("datetime64[D]"), type=pa.date32(),
                                   from_pandas=True))
        else:  # bools
            result.append(pa.array(data, type=field.type))
    return pa.Table.from_arrays(result, schema=schema)
