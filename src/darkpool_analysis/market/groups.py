"""Grouped daily tables, the multi-ticker overlay and breadth (the original system's market view).

* :func:`table`: one row per member of a universe on one date, in the universe's sections
  (sub-groups), each section closed by a group-average row with its zone; :func:`summarise`
  condenses it to one line per section (the original's category dashboard).
* :func:`overlay`: per member and session, the close normalised to 100 at its first close in
  the range, the log short buy/sell ratio ``ln(B / S)`` and the stored score.
* :func:`compute_breadth`: per session, ``(#score >= 70 - #score <= 30) / #names with a
  score`` with the counts and the group mean of the log ratio.

Averages skip missing values (a member without data does not count as 0); the zone of an
average is the zone of the average score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import duckdb
import numpy as np
import pandas as pd

from darkpool_analysis import scoring, trading_calendar
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, NoDataError
from darkpool_analysis.market import _db
from darkpool_analysis.market.scanner import _FLAGS_SQL, _check_date
from darkpool_analysis.market.universes import Universe, get_universe, load_universes

#: Numeric columns of the grouped table (averaged in the group rows), in display order.
TABLE_NUMERIC: Final[tuple[str, ...]] = (
    "close", "return_1d", "short_ratio", "short_buy_sell_ratio", "short_buy_sell_ratio_z",
    "finra_buy_volume_z", "off_exchange_share", "lit_flow_imbalance", "otc_participation_rate",
    "score", "confidence",
)
#: Every column of :func:`table`, in order.
TABLE_COLUMNS: Final[tuple[str, ...]] = (
    "section", "row_type", "symbol", *TABLE_NUMERIC, "otc_status", "zone", "flags", "scored",
)
#: Columns of :func:`compute_breadth`.
BREADTH_COLUMNS: Final[tuple[str, ...]] = (
    "date", "names", "scored", "accumulation", "distribution", "breadth", "mean_score",
    "mean_log_short_ratio",
)

_TABLE_SQL = f"""
SELECT symbol, close, return_1d, short_ratio, short_buy_sell_ratio, short_buy_sell_ratio_z,
       finra_buy_volume_z,
       CASE WHEN total_volume IS NOT NULL AND volume > 0 THEN total_volume / volume END
           AS off_exchange_share,
       lit_flow_imbalance, otc_participation_rate, accumulation_score_display AS score,
       confidence, CAST(otc_status AS VARCHAR) AS otc_status,
       CAST(pressure_context_label AS VARCHAR) AS zone, {_FLAGS_SQL} AS flags
FROM daily_metrics
WHERE date = $day AND symbol IN (SELECT unnest($symbols::VARCHAR[]))
"""

_OVERLAY_SQL = """
SELECT symbol, date, close, short_buy_sell_ratio, accumulation_score_display AS score
FROM daily_metrics
WHERE date BETWEEN $first AND $last AND symbol IN (SELECT unnest($symbols::VARCHAR[]))
ORDER BY symbol, date
"""


def _universe(group: str | Universe) -> Universe:
    return group if isinstance(group, Universe) else get_universe(group, load_universes())


def _sections(conn: duckdb.DuckDBPyConnection,
              universe: Universe) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if universe.is_all:
        return ((universe.name, tuple(_db.database_symbols(conn))),)
    return universe.sections


def group_average(rows: pd.DataFrame) -> dict[str, object]:
    """The average row of one section's member rows (NaN-skipping means; zone of the mean
    score; ``scored`` = members with a score). Pure."""
    means = rows[list(TABLE_NUMERIC)].astype(float).mean(axis=0, skipna=True)
    score = float(means["score"])
    zone = scoring.zone_label(np.array([score]))[0]
    return {**means.to_dict(), "row_type": "average", "symbol": None, "otc_status": None,
            "zone": zone, "flags": "", "scored": int(rows["score"].notna().sum())}


def build_table(members: pd.DataFrame,
                sections: tuple[tuple[str, tuple[str, ...]], ...]) -> pd.DataFrame:
    """Lay member rows (one per symbol, from the table query) out by section, each section
    followed by its average row; symbols without a row are kept with missing values and the
    flag ``no_row`` (pure)."""
    by_symbol = members.set_index("symbol")
    blocks = []
    for section, tickers in sections:
        block = by_symbol.reindex(list(tickers)).rename_axis("symbol").reset_index()
        absent = ~block["symbol"].isin(by_symbol.index)
        block["flags"] = block["flags"].astype(object).where(~absent, "no_row").fillna("")
        block["row_type"] = "member"
        block["scored"] = pd.NA
        average = pd.DataFrame([group_average(block)])
        block = pd.concat([block, average], ignore_index=True)
        block["section"] = section
        blocks.append(block)
    out = pd.concat(blocks, ignore_index=True)[list(TABLE_COLUMNS)]
    for column in TABLE_NUMERIC:
        out[column] = out[column].astype(float)
    out["scored"] = out["scored"].astype("Int64")
    for text in ("otc_status", "zone", "symbol"):
        out[text] = out[text].astype(object).where(out[text].notna(), None)
    return out


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per section of a :func:`table` frame: names, names with a score, counts in
    each zone, breadth, the average score and its zone (the original's category dashboard)."""
    members = rows.loc[rows["row_type"] == "member"]
    score = members["score"].astype(float)
    frame = pd.DataFrame({
        "section": members["section"],
        "scored": score.notna(),
        "accumulation": score >= scoring.ACCUMULATION_THRESHOLD,
        "distribution": score <= scoring.DISTRIBUTION_THRESHOLD,
        "score": score,
    })
    grouped = frame.groupby("section", sort=False)
    out = pd.DataFrame({
        "names": grouped.size(),
        "scored": grouped["scored"].sum().astype(int),
        "accumulation": grouped["accumulation"].sum().astype(int),
        "distribution": grouped["distribution"].sum().astype(int),
        "mean_score": grouped["score"].mean(),
    }).reset_index()
    if out["section"].nunique() > 1:  # a composed universe: one more line over every name
        unique = frame.assign(symbol=members["symbol"]).drop_duplicates("symbol")
        total = pd.DataFrame({"section": ["(all sections)"], "names": [len(unique)],
                              "scored": [int(unique["scored"].sum())],
                              "accumulation": [int(unique["accumulation"].sum())],
                              "distribution": [int(unique["distribution"].sum())],
                              "mean_score": [unique["score"].mean()]})
        out = pd.concat([out, total], ignore_index=True)
    out["neutral"] = out["scored"] - out["accumulation"] - out["distribution"]
    scored = out["scored"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["breadth"] = np.where(scored > 0,
                                  (out["accumulation"] - out["distribution"]) / scored, np.nan)
    out["zone"] = scoring.zone_label(out["mean_score"].to_numpy(dtype=float))
    out.attrs = dict(rows.attrs)
    return out[["section", "names", "scored", "accumulation", "neutral", "distribution",
                "breadth", "mean_score", "zone"]]


def table(
    date: trading_calendar.DateLike,
    group: str | Universe,
    *,
    db_path: Path | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """The grouped daily table of a universe on ``date``.

    Parameters
    ----------
    date
        The session (must have ``daily_metrics`` rows).
    group
        A universe name or :class:`Universe`; a composed universe (``original``) gives one
        section per sub-group.
    db_path, settings
        Published database (read-only) and settings.

    Returns
    -------
    pandas.DataFrame
        :data:`TABLE_COLUMNS`: member rows (``row_type`` = ``member``) and one ``average``
        row per section (``scored`` = how many of its members had a score). Missing values are NaN,
        never 0. ``attrs``: ``date``, ``group``, ``description``, ``synthetic``, ``label``.

    Examples
    --------
    >>> rows = table("2021-01-27", "mega_caps")  # doctest: +SKIP
    >>> summarise(rows)  # doctest: +SKIP
    """
    day = trading_calendar.to_date(date)
    universe = _universe(group)
    with _db.open_db(db_path, settings) as (conn, context):
        _check_date(conn, day)
        sections = _sections(conn, universe)
        symbols = sorted({t for _, tickers in sections for t in tickers})
        members = conn.execute(_TABLE_SQL, {"day": day, "symbols": symbols}).df()
    if members.empty:
        raise NoDataError(f"none of the {len(symbols)} members of {universe.name} has a "
                          f"daily_metrics row on {day}",
                          hint=f"ingest and build them, e.g. `darkpool ingest prices --tickers "
                               f"{','.join(symbols[:5])}`")
    rows = build_table(members, sections)
    rows.attrs.update(context.attrs())
    rows.attrs.update({"date": day.isoformat(), "group": universe.name,
                       "description": universe.description})
    return rows


def compute_overlay(raw: pd.DataFrame) -> pd.DataFrame:
    """Per (symbol, date): ``norm_price`` = 100 x close / the symbol's first close in the
    frame, ``log_short_ratio`` = ln(short_buy_sell_ratio) (NaN unless the ratio is > 0) and
    ``score`` (pure; ``raw`` sorted by symbol and date)."""
    frame = raw.copy()
    frame["date"] = pd.to_datetime(frame["date"])
    close = frame["close"].astype(float)
    first = close.where(close > 0).groupby(frame["symbol"]).transform("first")
    frame["norm_price"] = 100.0 * close / first
    ratio = frame["short_buy_sell_ratio"].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["log_short_ratio"] = np.log(ratio.where(ratio > 0))
    frame["score"] = frame["score"].astype(float)
    return frame[["date", "symbol", "close", "norm_price", "short_buy_sell_ratio",
                  "log_short_ratio", "score"]].reset_index(drop=True)


def compute_breadth(lines: pd.DataFrame, names: int | None = None) -> pd.DataFrame:
    """Breadth per date from :func:`overlay` rows: ``(#score >= 70 - #score <= 30) / #names
    with a score`` (NaN when none has a score), the counts, the mean score and the group mean
    of ``log_short_ratio``. ``names`` = the group size (default: ``lines.attrs["names"]``, else
    the symbols in ``lines``). Pure."""
    score = lines["score"].astype(float)
    parts = pd.DataFrame({
        "date": lines["date"],
        "scored": score.notna(),
        "accumulation": score >= scoring.ACCUMULATION_THRESHOLD,
        "distribution": score <= scoring.DISTRIBUTION_THRESHOLD,
        "score": score,
        "log_short_ratio": lines["log_short_ratio"].astype(float),
    })
    grouped = parts.groupby("date", sort=True)
    out = pd.DataFrame({
        "scored": grouped["scored"].sum().astype(int),
        "accumulation": grouped["accumulation"].sum().astype(int),
        "distribution": grouped["distribution"].sum().astype(int),
        "mean_score": grouped["score"].mean(),
        "mean_log_short_ratio": grouped["log_short_ratio"].mean(),
    }).reset_index()
    if names is None:
        names = int(lines.attrs.get("names", lines["symbol"].nunique()))
    out.insert(1, "names", int(names))
    scored = out["scored"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["breadth"] = np.where(scored > 0,
                                  (out["accumulation"] - out["distribution"]) / scored, np.nan)
    out = out[list(BREADTH_COLUMNS)]
    out.attrs = dict(lines.attrs)
    return out


def overlay(
    group: str | Universe,
    start: trading_calendar.DateLike,
    end: trading_calendar.DateLike,
    *,
    db_path: Path | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Normalised prices, log short buy/sell ratios and scores of a universe's members.

    Parameters
    ----------
    group
        A universe name or :class:`Universe` (``all`` = every symbol: a large frame).
    start, end
        Inclusive date range.
    db_path, settings
        Published database (read-only) and settings.

    Returns
    -------
    pandas.DataFrame
        ``date, symbol, close, norm_price, short_buy_sell_ratio, log_short_ratio, score``,
        one row per stored (member, session) in ``[start, end]``. ``attrs``: ``group``,
        ``start``, ``end``, ``names`` (group size), ``synthetic``, ``label``. Feed it to
        :func:`compute_breadth` for the breadth line.

    Examples
    --------
    >>> lines = overlay("speculative", "2020-12-01", "2021-02-12")  # doctest: +SKIP
    >>> compute_breadth(lines)[["date", "breadth"]].tail()  # doctest: +SKIP
    """
    first, last = trading_calendar.to_date(start), trading_calendar.to_date(end)
    if first > last:
        raise ConfigError(f"start {first} is after end {last}")
    universe = _universe(group)
    with _db.open_db(db_path, settings) as (conn, context):
        sections = _sections(conn, universe)
        symbols = sorted({t for _, tickers in sections for t in tickers})
        raw = conn.execute(_OVERLAY_SQL, {"first": first, "last": last,
                                          "symbols": symbols}).df()
    if raw.empty:
        raise NoDataError(f"none of the {len(symbols)} members of {universe.name} has "
                          f"daily_metrics rows between {first} and {last}",
                          hint="ingest and build them for that range")
    lines = compute_overlay(raw)
    lines.attrs.update(context.attrs())
    lines.attrs.update({"group": universe.name, "description": universe.description,
                        "start": first.isoformat(), "end": last.isoformat(),
                        "names": len(symbols),
                        "without_data": sorted(set(symbols) - set(raw["symbol"]))})
    return lines


def breadth(
    group: str | Universe,
    start: trading_calendar.DateLike,
    end: trading_calendar.DateLike,
    *,
    db_path: Path | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Breadth per session of a universe: :func:`compute_breadth` of :func:`overlay`.

    Parameters
    ----------
    group, start, end, db_path, settings
        As for :func:`overlay`.

    Returns
    -------
    pandas.DataFrame
        :data:`BREADTH_COLUMNS`, one row per session with data.

    Examples
    --------
    >>> breadth("mega_caps", "2021-01-04", "2021-02-12")[["date", "breadth"]]  # doctest: +SKIP
    """
    lines = overlay(group, start, end, db_path=db_path, settings=settings)
    return compute_breadth(lines, names=int(lines.attrs["names"]))


__all__ = ["BREADTH_COLUMNS", "TABLE_COLUMNS", "TABLE_NUMERIC", "breadth", "build_table",
           "compute_breadth", "compute_overlay", "group_average", "overlay", "summarise",
           "table"]
