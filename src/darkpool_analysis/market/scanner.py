"""The daily scanner: every symbol of a universe ranked by a signal on one date, both ends.

The signal is any signal-lab variant (:mod:`darkpool_analysis.signals` registry or a user
formula) or any numeric ``daily_metrics`` column; the default is the ``current`` variant, the
seed's accumulation score (equal to the stored ``accumulation_score_display`` under the default
``accumulation_short_z_source``). Higher = the accumulation end, lower = the distribution end.

Next to the signal each row shows the context a reader needs: the short buy/sell ratio B/S and
its z, the buy-volume z, the off-exchange share (FINRA-reported total volume / consolidated
volume from the price bar, where both exist), the lit imbalance, the OTC participation and its
status, the stored score, confidence, zone and provenance flags. Missing data stays missing
(NaN / empty), never 0: a symbol without a value is not ranked and is listed as such.

One DuckDB query reads the date (plus the warm-up a windowed variant needs) for the whole
universe; the variant is computed vectorised on that frame (no per-symbol loops).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import numpy as np
import pandas as pd

from darkpool_analysis import trading_calendar
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, NoDataError
from darkpool_analysis.formulas import Formula
from darkpool_analysis.market import _db
from darkpool_analysis.market.universes import (
    ALL,
    ALL_UNIVERSE,
    Universe,
    get_universe,
    load_universes,
    normalise_ticker,
)
from darkpool_analysis.signals import REGISTRY, Variant

log = logging.getLogger(__name__)

#: The default ranking signal (the seed's accumulation score).
DEFAULT_BY: Final = "current"
#: Rows per end the CLI shows by default.
DEFAULT_TOP: Final = 25

#: Context columns of every scan row, after ``rank``/``end``, ``symbol`` and the signal.
CONTEXT_COLUMNS: Final[tuple[str, ...]] = (
    "short_buy_sell_ratio", "short_buy_sell_ratio_z", "finra_buy_volume_z",
    "off_exchange_share", "lit_flow_imbalance", "otc_participation_rate", "otc_status",
    "score", "confidence", "zone", "flags", "close", "dollar_volume",
)

#: ``flags`` values (comma-separated, in this order; empty = nothing to flag).
FLAGS: Final[dict[str, str]] = {
    "no_row": "no daily_metrics row on the date (the symbol is not in the database then)",
    "no_short": "no FINRA short-sale row",
    "no_price": "no price bar",
    "no_lit": "no classified lit trades",
    "otc_stale": "the newest visible OTC week is older than it should be (Staled)",
    "no_otc": "no OTC weekly data visible",
    "facility_sum": "short row summed from facility files (no CNMS file that day)",
    "orf": "short row from the ORF (OTC equities) only",
    "look_ahead": "built with week-aligned OTC data (LOOK-AHEAD)",
    "finra_gt_consolidated": "FINRA total volume exceeds the bar's consolidated volume",
}

_FLAGS_SQL = """concat_ws(',',
    CASE WHEN NOT coalesce(has_short, false) THEN 'no_short' END,
    CASE WHEN NOT coalesce(has_price, false) THEN 'no_price' END,
    CASE WHEN NOT coalesce(has_lit, false) THEN 'no_lit' END,
    CASE WHEN otc_status = 'Staled' THEN 'otc_stale'
         WHEN otc_status IS NULL OR otc_status = 'None' THEN 'no_otc' END,
    CASE WHEN short_source = 'FACILITY_SUM' THEN 'facility_sum'
         WHEN short_source = 'FORF' THEN 'orf' END,
    CASE WHEN otc_alignment = 'week' THEN 'look_ahead' END,
    CASE WHEN total_volume > volume AND volume > 0 THEN 'finra_gt_consolidated' END)"""

#: daily_metrics columns read for the context (besides the signal's own inputs).
_CONTEXT_SQL = f"""
    short_buy_sell_ratio, short_buy_sell_ratio_z, finra_buy_volume_z,
    CASE WHEN total_volume IS NOT NULL AND volume > 0 THEN total_volume / volume END
        AS off_exchange_share,
    lit_flow_imbalance, otc_participation_rate, CAST(otc_status AS VARCHAR) AS otc_status,
    accumulation_score_display AS score, confidence,
    CAST(pressure_context_label AS VARCHAR) AS zone,
    {_FLAGS_SQL} AS flags,
    close, close * volume AS dollar_volume"""


@dataclass(frozen=True)
class Signal:
    """What ``--by`` names: a variant (registry or formula) or a numeric column."""

    name: str
    variant: Variant | None
    warmup: int

    @property
    def columns(self) -> tuple[str, ...]:
        """daily_metrics columns the signal reads."""
        return self.variant.required_columns if self.variant is not None else (self.name,)


def resolve_signal(by: str, numeric_columns: Sequence[str],
                   formulas: Mapping[str, Formula] | None = None) -> Signal:
    """``by`` -> :class:`Signal`; an unknown name lists the variants and the columns.

    Formulas shadow registry variants, which shadow columns (``short_buy_sell_ratio_z`` is a
    variant reading the column of that name, so both give the same numbers).
    """
    from darkpool_analysis.sandbox_lab import variant_warmup

    formulas = dict(formulas or {})
    name = by.strip()
    if name in formulas or name in REGISTRY:
        variant = formulas[name].as_variant() if name in formulas else REGISTRY[name]
        return Signal(name, variant, variant_warmup(variant, formulas))
    if name in numeric_columns:
        return Signal(name, None, 0)
    raise ConfigError(
        f"cannot rank by {by!r}: not a signal variant or numeric daily_metrics column; "
        f"variants: {', '.join([*formulas, *REGISTRY])}; columns: {', '.join(numeric_columns)}",
        hint="or define one with --formula 'name=expression'")


def _warm_start(conn: duckdb.DuckDBPyConnection, day: dt.date, sessions: int) -> dt.date:
    """The stored date ``sessions`` dates before ``day`` (``day`` itself when 0)."""
    if sessions <= 0:
        return day
    row = conn.execute(
        "SELECT min(date) FROM (SELECT DISTINCT date FROM daily_metrics WHERE date < ? "
        "ORDER BY date DESC LIMIT ?)", [day, sessions]).fetchone()
    return row[0] if row is not None and row[0] is not None else day


def _check_date(conn: duckdb.DuckDBPyConnection, day: dt.date) -> None:
    row = conn.execute("SELECT count(*) FROM daily_metrics WHERE date = ?", [day]).fetchone()
    if row is not None and row[0]:
        return
    before = conn.execute("SELECT max(date) FROM daily_metrics WHERE date < ?",
                          [day]).fetchone()
    after = conn.execute("SELECT min(date) FROM daily_metrics WHERE date > ?", [day]).fetchone()
    near = [f"{label} {value[0]}" for label, value in (("previous", before), ("next", after))
            if value is not None and value[0] is not None]
    raise NoDataError(f"no daily_metrics rows on {day}"
                      + (f" (nearest dates with data: {', '.join(near)})" if near else
                         " (daily_metrics is empty)"),
                      hint="pick a date with data, or ingest and build it")


def _symbol_filter(symbols: Sequence[str] | None, params: dict[str, object]) -> str:
    if symbols is None:
        return ""
    params["symbols"] = list(symbols)
    return "AND symbol IN (SELECT unnest($symbols::VARCHAR[]))"


def read_signal_frame(conn: duckdb.DuckDBPyConnection, day: dt.date, signal: Signal,
                      symbols: Sequence[str] | None, *, dollars: bool = False) -> pd.DataFrame:
    """Phase 1: only the columns the signal reads, on ``[warm-up start, day]``, for
    ``symbols`` (None = all), plus ``_on_day`` and (with ``dollars``) ``dollar_volume``.

    Reading few columns matters: in a table laid out symbol by symbol every storage vector
    holds a row of ``day``, so each column read for one date costs a pass over the table.
    """
    first = _warm_start(conn, day, signal.warmup)
    columns = [c for c in dict.fromkeys(signal.columns) if c not in {"symbol", "date"}]
    params: dict[str, object] = {"first": first, "day": day}
    where = _symbol_filter(symbols, params)
    selected = ", ".join([*(f'"{c}"' for c in columns), "date = $day AS _on_day",
                          *(["close * volume AS dollar_volume"] if dollars else [])])
    frame = conn.execute(f"SELECT symbol, date, {selected} FROM daily_metrics "
                         f"WHERE date BETWEEN $first AND $day {where}", params).df()
    frame["date"] = pd.to_datetime(frame["date"])
    return frame


def read_context(conn: duckdb.DuckDBPyConnection, day: dt.date,
                 symbols: Sequence[str] | None) -> pd.DataFrame:
    """Phase 2: :data:`CONTEXT_COLUMNS` on ``day`` for ``symbols`` (None = every symbol)."""
    params: dict[str, object] = {"day": day}
    where = _symbol_filter(symbols, params)
    return conn.execute(f"SELECT symbol, {_CONTEXT_SQL} FROM daily_metrics "
                        f"WHERE date = $day {where}", params).df()


def rank_signal(values: pd.Series, symbols: pd.Series) -> pd.Series:
    """1 = highest value; ties by symbol; NaN values get no rank (``<NA>``). Pure."""
    order = pd.DataFrame({"v": pd.to_numeric(values, errors="coerce").astype(float),
                          "s": symbols.astype(str)})
    valid = np.isfinite(order["v"].to_numpy())
    ranked = order.loc[valid].sort_values(["v", "s"], ascending=[False, True], kind="stable")
    rank = pd.Series(pd.NA, index=order.index, dtype="Int64")
    rank.loc[ranked.index] = np.arange(1, len(ranked) + 1)
    return rank


def ends(ranking: pd.DataFrame, top: int) -> pd.DataFrame:
    """The ``top`` highest (``end`` = ``top``, accumulation) and ``top`` lowest (``bottom``,
    distribution; lowest first) ranked rows of a full ranking; a symbol appears once. Pure."""
    attrs = dict(ranking.attrs)
    ranking = ranking.copy(deep=False)
    ranking.attrs = {}  # pandas deep-copies attrs on every operation: carry them past the work
    ranked = ranking.loc[ranking["rank"].notna()].sort_values("rank", kind="stable")
    high = ranked.head(top)
    low = ranked.loc[~ranked.index.isin(high.index)].tail(top).iloc[::-1]
    parts = []
    for label, part in (("top", high), ("bottom", low)):
        part = part.copy()
        part["rank"] = pd.array(np.arange(1, len(part) + 1), dtype="Int64")
        part.insert(0, "end", label)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out.attrs = attrs
    return out


def signal_on_day(frame: pd.DataFrame, signal: Signal) -> pd.DataFrame:
    """``symbol``, the signal (column named after it) and ``dollar_volume`` (when read) of the
    ``_on_day`` rows of a :func:`read_signal_frame` frame (pure; the warm-up rows only feed
    windowed variants)."""
    if signal.variant is not None:
        values = signal.variant.compute(frame)
    else:
        values = pd.to_numeric(frame[signal.name], errors="coerce").astype(float)
    today = frame["_on_day"].to_numpy(dtype=bool)
    out = pd.DataFrame({"symbol": frame.loc[today, "symbol"].to_numpy(),
                        signal.name: values.loc[today].to_numpy(dtype=float)})
    if "dollar_volume" in frame.columns:
        out["dollar_volume"] = frame.loc[today, "dollar_volume"].to_numpy(dtype=float)
    return out


def rank_day(day_values: pd.DataFrame, by: str,
             universe_symbols: Sequence[str] | None = None,
             min_dollar_volume: float | None = None) -> pd.DataFrame:
    """Full ranking of one day's values (pure): ``rank, symbol, <by>`` (+ ``dollar_volume``).

    Symbols of ``universe_symbols`` without a row are kept with a missing value. With
    ``min_dollar_volume`` symbols whose dollar volume is below it, or unknown, are dropped;
    ``attrs`` counts them (``filtered_out``, ``unknown_dollar_volume``) and lists the symbols
    left without a value (``without_value``).
    """
    rows = day_values
    if universe_symbols is not None:
        missing = sorted(set(universe_symbols) - set(rows["symbol"]))
        if missing:
            rows = pd.concat([rows, pd.DataFrame({"symbol": missing})], ignore_index=True)
    filtered_out = unknown_dollars = 0
    if min_dollar_volume is not None:
        dollars = rows["dollar_volume"].to_numpy(dtype=float)
        unknown = ~np.isfinite(dollars)
        below = np.isfinite(dollars) & (dollars < float(min_dollar_volume))
        unknown_dollars, filtered_out = int(unknown.sum()), int(below.sum())
        rows = rows.loc[~(unknown | below)]
    rows = rows.reset_index(drop=True)
    rows.insert(0, "rank", rank_signal(rows[by], rows["symbol"]))
    rows = rows.sort_values(["rank", "symbol"], na_position="last", kind="stable")
    rows = rows.reset_index(drop=True)
    rows.attrs = {"filtered_out": filtered_out, "unknown_dollar_volume": unknown_dollars,
                  "without_value": rows.loc[rows["rank"].isna(), "symbol"].tolist(),
                  "ranked": int(rows["rank"].notna().sum())}
    return rows


def attach_context(ranking: pd.DataFrame, context: pd.DataFrame, by: str) -> pd.DataFrame:
    """``[end,] rank, symbol, <by>`` then :data:`CONTEXT_COLUMNS` from ``context`` (one row
    per symbol, from :func:`read_context`); a symbol without a row gets missing values and
    the flag ``no_row`` (pure)."""
    keys = [c for c in ("end", "rank", "symbol") if c in ranking.columns]
    context = context.loc[:, ["symbol", *[c for c in CONTEXT_COLUMNS if c != by]]]
    out = ranking[[*keys, by]].merge(context, on="symbol", how="left", validate="many_to_one")
    absent = ~out["symbol"].isin(context["symbol"])
    out["flags"] = out["flags"].astype(object).where(~absent, "no_row").fillna("")
    for text in ("otc_status", "zone"):
        out[text] = out[text].astype(object).where(out[text].notna(), None)
    return out


def scan(
    date: trading_calendar.DateLike,
    *,
    by: str = DEFAULT_BY,
    universe: str | Universe = ALL,
    tickers: Sequence[str] | None = None,
    min_dollar_volume: float | None = None,
    top: int | None = DEFAULT_TOP,
    formulas: Mapping[str, Formula] | None = None,
    db_path: Path | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Rank every symbol of a universe by a signal on ``date``.

    Parameters
    ----------
    date
        The session to scan (must have ``daily_metrics`` rows).
    by
        A signal-lab variant (``current``, ``option_a``, ``finra_buy_volume_z``, a name in
        ``formulas``...) or any numeric ``daily_metrics`` column. Windowed variants read the
        sessions they need before ``date``.
    universe, tickers
        A universe name (``all`` = every symbol with a row on the date) or an explicit ticker
        list (any spelling), which wins over ``universe``.
    min_dollar_volume
        Keep only symbols whose ``close x volume`` (consolidated) is at least this; symbols
        without a price bar are then dropped too (they cannot be checked).
    top
        ``None``: the full ranking (``rank`` 1 = highest; symbols without a value last with
        ``rank`` ``<NA>``). An integer: the ``top`` highest and ``top`` lowest rows with an
        ``end`` column (``top`` / ``bottom``) and ``rank`` within the end.
    formulas
        User formulas (``formulas.collect_formulas``) usable as ``by``.
    db_path, settings
        Published database (opened read-only) and settings.

    Returns
    -------
    pandas.DataFrame
        ``[end,] rank, symbol, <by>`` then :data:`CONTEXT_COLUMNS`. ``attrs``: ``date``,
        ``by``, ``universe``, ``symbols`` (universe size), ``ranked``, ``without_value``,
        ``filtered_out``, ``unknown_dollar_volume``, ``scale``, ``top``, ``synthetic``,
        ``label``, ``db_path``.

    Examples
    --------
    >>> leaders = scan("2021-01-27", by="finra_buy_volume_z", top=10)  # doctest: +SKIP
    >>> leaders.loc[leaders["end"] == "top", ["symbol", "finra_buy_volume_z"]]  # doctest: +SKIP
    """
    day = trading_calendar.to_date(date)
    if top is not None and (isinstance(top, bool) or int(top) < 1):
        raise ConfigError(f"top must be a positive number of rows, got {top!r}")
    if min_dollar_volume is not None and not float(min_dollar_volume) >= 0:
        raise ConfigError(f"min_dollar_volume must be >= 0, got {min_dollar_volume!r}")
    if tickers is not None:
        symbols: list[str] | None = list(dict.fromkeys(
            normalise_ticker(t, source="tickers") for t in tickers))
        universe_name = "tickers"
        if not symbols:
            raise ConfigError("the ticker list is empty")
    else:
        chosen = (universe if isinstance(universe, Universe) else ALL_UNIVERSE
                  if universe.strip().lower() == ALL else get_universe(universe, load_universes()))
        symbols = None if chosen.is_all else list(chosen.tickers)
        universe_name = chosen.name
    with _db.open_db(db_path, settings) as (conn, context):
        signal = resolve_signal(by, _db.numeric_columns(conn), formulas)
        _check_date(conn, day)
        frame = read_signal_frame(conn, day, signal, symbols,
                                  dollars=min_dollar_volume is not None)
        ranking = rank_day(signal_on_day(frame, signal), signal.name, symbols,
                           min_dollar_volume)
        counts = ranking.attrs
        ranking.attrs = {}  # pandas deep-copies attrs on every operation: set them at the end
        shown = ranking if top is None else ends(ranking, int(top))
        wanted = None if top is None and symbols is None else shown["symbol"].tolist()
        result = attach_context(shown, read_context(conn, day, wanted), signal.name)
    result.attrs = {**counts, **context.attrs(), "date": day.isoformat(), "by": signal.name,
                    "universe": universe_name, "top": top,
                    "min_dollar_volume": min_dollar_volume,
                    "scale": signal.variant.scale if signal.variant is not None else "raw",
                    "symbols": len(symbols) if symbols is not None
                    else int(frame["_on_day"].sum())}
    log.debug("scan %s by %s over %s: %d ranked of %d", day, signal.name, universe_name,
              counts["ranked"], len(ranking))
    return result


__all__ = ["CONTEXT_COLUMNS", "DEFAULT_BY", "DEFAULT_TOP", "FLAGS", "Signal", "attach_context",
           "ends", "rank_day", "rank_signal", "read_context", "read_signal_frame",
           "resolve_signal", "scan", "signal_on_day"]
