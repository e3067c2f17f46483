"""The seed notebook's Accumulation Signal Sandbox as a library.

:func:`load` reads one ticker's ``daily_metrics`` rows from the published database (read-only:
the sandbox can never write) and derives, vectorised, exactly the seed's columns:

``combined_ratio``, ``vw_flow``, ``vw_flow_z``, ``finra_buy_volume``, ``acc_score_current``,
``acc_score_a``, ``acc_score_b`` and the NULL-filled ``confidence``, plus the experimental
``exp_imbalance`` / ``exp_signal`` (imbalance x log1p(B + S)) of the seed's last cell.

The seed's quirks are kept on purpose (``--seed-exact`` must reproduce its numbers):

* ``vw_flow`` is NULL when none of B, S, LB, LS is positive (all-zero days too, not only NULL);
* the short ratio, its z and the lit z are recomputed only when the stored column is NULL on
  *every* loaded row;
* NULL ``return_z`` / ``otc_participation_z`` count as 0, NULL ``confidence`` becomes 0.5;
* rolling z-scores run over the loaded rows (pandas ``rolling``, population std).

The last point is the seed's weakness: its first days have short z windows. With
``warmup=True`` (the default) :func:`load` also reads ``short_z_window`` earlier rows of the
ticker, computes, then trims to ``[start, end]``, so every shown day has a full window.

FINRA "buy" volume (``short_buy_volume``) is FINRA Reg SHO *short-sale* volume: a proxy for
dealer-filled customer buying, not observed buying and not short interest.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd

from darkpool_analysis import scoring, symbols, trading_calendar
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.errors import NoDataError, StoreError
from darkpool_analysis.store import (
    connect_readonly,
    describe_owed,
    is_synthetic,
    read_meta,
    read_owed,
    table_exists,
)
from darkpool_analysis.synthetic import SYNTHETIC_LABEL

log = logging.getLogger(__name__)

DotMode = Literal["current", "option_a", "option_b", "all"]
Variant = Literal["current", "option_a", "option_b"]

#: Dot mode -> the variants whose >=70 / <=30 dots are drawn.
DOT_MODES: dict[str, tuple[Variant, ...]] = {
    "current": ("current",),
    "option_a": ("option_a",),
    "option_b": ("option_b",),
    "all": ("current", "option_a", "option_b"),
}

#: Variant name -> score column of the sandbox frame.
VARIANT_COLUMNS: dict[Variant, str] = {
    "current": "acc_score_current",
    "option_a": "acc_score_a",
    "option_b": "acc_score_b",
}

#: The seed's numeric columns, read from ``daily_metrics`` in this order.
SEED_NUMERIC_COLUMNS: tuple[str, ...] = (
    "short_buy_volume",
    "short_sell_volume",
    "short_buy_sell_ratio",
    "short_buy_sell_ratio_z",
    "lit_buy_volume",
    "lit_sell_volume",
    "lit_flow_imbalance",
    "lit_flow_imbalance_z",
    "return_z",
    "otc_participation_z",
    "confidence",
)

#: How many sessions with data the CLI shows when no range is given.
DEFAULT_SESSIONS = 60

#: Read with the seed's columns (not used by its formulas): the price bar, to gap-check prices.
EXTRA_COLUMNS: tuple[str, ...] = ("close",)

_SELECT_COLUMNS = ", ".join(("date", "symbol", *SEED_NUMERIC_COLUMNS, *EXTRA_COLUMNS))

#: The sources the sandbox chart draws on: name -> the frame column that is set on a session
#: with data from it. Short data feeds every panel, price bars the scores' return_z, lit trade
#: direction the combined ratio, VW flow and the scores' lit z.
CHART_SOURCES: dict[str, str] = {
    "short data": "short_buy_volume",
    "a price bar": "close",
    "lit trade direction": "lit_buy_volume",
}


def _ingest_hint(symbol: str, start: dt.date | None = None, end: dt.date | None = None) -> str:
    dates = (f"--start {start} --end {end}" if start and end
             else "--start YYYY-MM-DD --end YYYY-MM-DD")
    return (
        f"ingest and build it: `darkpool ingest finra-short {dates}` then "
        f"`darkpool build --tickers {symbol} {dates}`"
    )


def normalise_ticker(ticker: str) -> str:
    """Normalise a user-typed ticker in any feed's spelling (``brk/b``, ``BRK-B``, ``ABRpD``).

    All-lower-case input is upper-cased first, so ``fslr`` is not read as a CQS rights suffix;
    mixed case keeps the CQS meaning of lower-case suffix letters (``ABRpD`` -> ``ABR.PR.D``).
    """
    text = ticker.strip()
    if not text:
        raise ValueError("empty ticker")
    if text == text.lower():
        text = text.upper()
    return symbols.normalise(text, feed="yahoo" if "-" in text else "cqs")


# -- pure computation --------------------------------------------------------------------------


def seed_variants(
    frame: pd.DataFrame,
    blend_short_weight: float = 0.6,
    blend_flow_weight: float = 0.4,
    *,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """The seed's three score variants on its 0-100 display scale.

    ``frame`` needs ``short_buy_sell_ratio_z``, ``vw_flow_z``, ``lit_flow_imbalance_z``,
    ``lit_flow_imbalance``, ``return_z`` and ``otc_participation_z``. Returns a frame with
    ``acc_score_current`` (short_z = short_buy_sell_ratio_z), ``acc_score_a`` (vw_flow_z) and
    ``acc_score_b`` (``blend_short_weight * short_buy_sell_ratio_z + blend_flow_weight *
    vw_flow_z``), on ``frame``'s index. As in the seed, the lit z falls back to a rolling z of
    ``lit_flow_imbalance`` when the stored ``lit_flow_imbalance_z`` is NULL on every row.
    ``settings`` supplies the z window and score weights (default: :func:`load_config`).
    """
    cfg = settings if settings is not None else load_config()
    short_z = frame["short_buy_sell_ratio_z"].astype(float)
    flow_z = frame["vw_flow_z"].astype(float)
    lit_z = frame["lit_flow_imbalance_z"].astype(float)
    if lit_z.isna().all():
        lit_z = scoring.rolling_zscore(
            frame["lit_flow_imbalance"], cfg.short_z_window, cfg.zscore_min_periods
        )
    price_z = frame["return_z"].astype(float).fillna(0.0)
    otc_z = frame["otc_participation_z"].astype(float).fillna(0.0)
    blended = blend_short_weight * short_z + blend_flow_weight * flow_z
    return pd.DataFrame(
        {
            "acc_score_current": scoring.score_display(short_z, lit_z, price_z, otc_z, cfg),
            "acc_score_a": scoring.score_display(flow_z, lit_z, price_z, otc_z, cfg),
            "acc_score_b": scoring.score_display(blended, lit_z, price_z, otc_z, cfg),
        },
        index=frame.index,
    )


def experimental_signal(frame: pd.DataFrame) -> pd.DataFrame:
    """The seed's experiment: ``imbalance = (B - S) / (B + S)`` (NULL when B + S <= 0) and
    ``signal = imbalance * log1p(B + S)``, with B = ``finra_buy_volume``, S =
    ``short_sell_volume``. Returns columns ``exp_imbalance`` and ``exp_signal``."""
    buy = frame["finra_buy_volume"].astype(float)
    sell = frame["short_sell_volume"].astype(float)
    total = buy + sell
    imbalance = ((buy - sell) / total.where(total > 0)).astype(float)
    signal = imbalance * np.log1p(total.where(total > 0))
    return pd.DataFrame({"exp_imbalance": imbalance, "exp_signal": signal}, index=frame.index)


def derive(
    raw: pd.DataFrame,
    *,
    settings: Settings,
    blend_short_weight: float = 0.6,
    blend_flow_weight: float = 0.4,
) -> pd.DataFrame:
    """Add the seed's derived columns to ``daily_metrics`` rows of one ticker (sorted by date).

    Pure: returns a new frame, ``raw`` is not modified. See the module docstring for the quirks.
    """
    frame = raw.copy()
    frame["date"] = pd.to_datetime(frame["date"])
    for column in SEED_NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)

    short_buy = frame["short_buy_volume"].fillna(0.0)
    short_sell = frame["short_sell_volume"].fillna(0.0)
    lit_buy = frame["lit_buy_volume"].fillna(0.0)
    lit_sell = frame["lit_sell_volume"].fillna(0.0)
    total_buy = short_buy + lit_buy
    total_sell = short_sell + lit_sell
    has_flow = (short_buy > 0) | (short_sell > 0) | (lit_buy > 0) | (lit_sell > 0)
    frame["combined_ratio"] = total_buy / total_sell.where(total_sell > 0)
    frame["vw_flow"] = (total_buy - total_sell).where(has_flow)
    frame["finra_buy_volume"] = frame["short_buy_volume"]

    window, min_periods = settings.short_z_window, settings.zscore_min_periods
    if frame["short_buy_sell_ratio"].isna().all():
        sell = frame["short_sell_volume"]
        frame["short_buy_sell_ratio"] = frame["short_buy_volume"] / sell.where(sell > 0)
    if frame["short_buy_sell_ratio_z"].isna().all():
        frame["short_buy_sell_ratio_z"] = scoring.rolling_zscore(
            frame["short_buy_sell_ratio"], window, min_periods
        )
    frame["vw_flow_z"] = scoring.rolling_zscore(frame["vw_flow"], window, min_periods)

    variants = seed_variants(frame, blend_short_weight, blend_flow_weight, settings=settings)
    frame[list(variants.columns)] = variants
    frame["confidence"] = frame["confidence"].fillna(0.5)
    experiment = experimental_signal(frame)
    frame[list(experiment.columns)] = experiment
    return frame


def zone_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Days per zone for each variant: accumulation (>= 70), distribution (<= 30), neutral,
    and missing (no score). Index = variant name."""
    counts = {
        variant: pd.Series(scoring.zone_label(frame[column])).value_counts(dropna=False)
        for variant, column in VARIANT_COLUMNS.items()
    }
    table = pd.DataFrame(counts).T.reindex(
        columns=["accumulation", "distribution", "neutral", None], fill_value=0
    )
    table = table.fillna(0).astype(int)
    table.columns = ["accumulation", "distribution", "neutral", "missing"]
    return table


def data_gaps(frame: pd.DataFrame, start: trading_calendar.DateLike,
              end: trading_calendar.DateLike, column: str = "short_buy_volume") -> list[dt.date]:
    """XNYS sessions in ``[start, end]`` (capped at today) where ``frame[column]`` (default:
    short-sale data) is missing, a session without a row included."""
    last = min(trading_calendar.to_date(end), dt.date.today())
    sessions = trading_calendar.sessions_index(start, last)
    if column not in frame.columns:
        return [ts.date() for ts in sessions]
    have = pd.DatetimeIndex(frame.loc[frame[column].notna(), "date"]).normalize()
    return [ts.date() for ts in sessions.difference(have.as_unit(sessions.unit))]


def source_gaps(frame: pd.DataFrame, start: trading_calendar.DateLike,
                end: trading_calendar.DateLike) -> dict[str, list[dt.date]]:
    """:func:`data_gaps` of every source the chart uses (:data:`CHART_SOURCES`): a price
    history that starts later than the short data is a gap as much as a missing short file."""
    return {source: data_gaps(frame, start, end, column)
            for source, column in CHART_SOURCES.items()}


def short_window_days(frame: pd.DataFrame) -> int:
    """Shown sessions whose rolling z window (``short_z_window``) is not full: the sessions
    before the window fills from the warm-up rows that :func:`load` found."""
    window = int(frame.attrs.get("z_window", 0))
    available = int(frame.attrs.get("warmup_rows", 0))
    return max(0, min(len(frame), window - 1 - available))


# -- database edge ---------------------------------------------------------------------------


def synthetic_label(conn: duckdb.DuckDBPyConnection) -> str | None:
    """:data:`~darkpool_analysis.synthetic.SYNTHETIC_LABEL` when the database is marked
    synthetic (``database_meta``, written by ``darkpool demo``), else None."""
    return SYNTHETIC_LABEL if is_synthetic(read_meta(conn)) else None


def _check_table(conn: duckdb.DuckDBPyConnection, db_path: Path) -> None:
    if not table_exists(conn, "daily_metrics"):
        raise StoreError(f"{db_path} has no daily_metrics table",
                         hint="run `darkpool build` to create and fill it")


def _coverage(conn: duckdb.DuckDBPyConnection, symbol: str) -> tuple[dt.date, dt.date, int] | None:
    row = conn.execute(
        "SELECT min(date), max(date), count(*) FROM daily_metrics WHERE symbol = ?", [symbol]
    ).fetchone()
    if row is None or not row[2]:
        return None
    return row[0], row[1], int(row[2])


def _unknown_symbol(conn: duckdb.DuckDBPyConnection, symbol: str) -> NoDataError:
    known = [str(r[0]) for r in conn.execute(
        "SELECT DISTINCT symbol FROM daily_metrics ORDER BY symbol").fetchall()]
    if not known:
        detail = "daily_metrics is empty"
    else:
        close = difflib.get_close_matches(symbol, known, n=5, cutoff=0.5)
        detail = (f"close symbols: {', '.join(close)}" if close
                  else f"none of its {len(known)} symbols is close")
    return NoDataError(f"unknown ticker {symbol}: no daily_metrics rows ({detail})",
                       hint=_ingest_hint(symbol))


def _empty_range(symbol: str, start: dt.date, end: dt.date,
                 coverage: tuple[dt.date, dt.date, int]) -> NoDataError:
    first, last, rows = coverage
    return NoDataError(
        f"no daily_metrics rows for {symbol} between {start} and {end}; "
        f"{symbol} has data from {first} to {last} ({rows} sessions)",
        hint=f"pick dates inside that coverage, or {_ingest_hint(symbol, start, end)}",
    )


def _resolve(db_path: Path | None, settings: Settings | None) -> tuple[Path, Settings]:
    cfg = settings if settings is not None else load_config()
    return Path(db_path) if db_path is not None else cfg.db_path, cfg


def default_range(
    ticker: str,
    start: trading_calendar.DateLike | None = None,
    end: trading_calendar.DateLike | None = None,
    sessions: int = DEFAULT_SESSIONS,
    *,
    db_path: Path | None = None,
    settings: Settings | None = None,
) -> tuple[dt.date, dt.date]:
    """Fill a missing ``start``/``end``: the last ``sessions`` rows with data up to ``end``
    (or the ticker's last date); a given ``start`` without ``end`` runs to the last date."""
    path, _ = _resolve(db_path, settings)
    symbol = normalise_ticker(ticker)
    conn = connect_readonly(path)
    try:
        _check_table(conn, path)
        coverage = _coverage(conn, symbol)
        if coverage is None:
            raise _unknown_symbol(conn, symbol)
        last = trading_calendar.to_date(end) if end is not None else coverage[1]
        if start is not None:
            return trading_calendar.to_date(start), last
        row = conn.execute(
            "SELECT min(date) FROM (SELECT date FROM daily_metrics WHERE symbol = ? "
            "AND date <= ? ORDER BY date DESC LIMIT ?)", [symbol, last, sessions]
        ).fetchone()
    finally:
        conn.close()
    if row is None or row[0] is None:
        raise _empty_range(symbol, last, last, coverage)
    return row[0], last


def load(
    ticker: str,
    start: trading_calendar.DateLike,
    end: trading_calendar.DateLike,
    warmup: bool = True,
    *,
    db_path: Path | None = None,
    settings: Settings | None = None,
    blend_short_weight: float = 0.6,
    blend_flow_weight: float = 0.4,
) -> pd.DataFrame:
    """The seed's sandbox frame for ``ticker`` on ``[start, end]``, one row per stored day.

    Parameters
    ----------
    ticker
        Any spelling (``BRK/B``, ``brk.b``, ``BRK-B``); normalised with :mod:`symbols`.
    start, end
        Inclusive date range (``YYYY-MM-DD``, date or Timestamp).
    warmup
        Read ``short_z_window`` earlier rows so the first shown day has a full z window;
        ``False`` reproduces the seed exactly (z over the shown range only). The seed's
        "recompute when NULL on every row" fallbacks then look at the warm-up rows too.
        ``attrs['warmup_rows']`` says how many earlier rows there actually were (fewer at the
        start of the data), ``attrs['synthetic_label']`` whether the database is synthetic.
    db_path, settings
        Published database (default ``settings.db_path``) and settings (default
        :func:`load_config`); the database is opened read-only.
    blend_short_weight, blend_flow_weight
        Weights of option B's blended short z.

    Raises
    ------
    NoDataError
        Unknown ticker (names close symbols) or no rows in the range (names the coverage).

    Examples
    --------
    >>> frame = load("NKE", "2025-11-01", "2025-12-31")  # doctest: +SKIP
    >>> frame[["date", "acc_score_current", "acc_score_a", "acc_score_b"]]  # doctest: +SKIP
    """
    path, cfg = _resolve(db_path, settings)
    symbol = normalise_ticker(ticker)
    first, last = trading_calendar.to_date(start), trading_calendar.to_date(end)
    if first > last:
        raise ValueError(f"start {first} is after end {last}")
    lookback = cfg.short_z_window if warmup else 0
    conn = connect_readonly(path)
    try:
        _check_table(conn, path)
        raw = conn.execute(
            f"""
            WITH warm AS (
                SELECT min(date) AS first_date FROM (
                    SELECT date FROM daily_metrics WHERE symbol = $symbol AND date < $start
                    ORDER BY date DESC LIMIT $lookback)
            )
            SELECT {_SELECT_COLUMNS} FROM daily_metrics
            WHERE symbol = $symbol
              AND date BETWEEN coalesce((SELECT first_date FROM warm), $start) AND $end
            ORDER BY date
            """,
            {"symbol": symbol, "start": first, "end": last, "lookback": lookback},
        ).df()
        if raw.empty or not bool((pd.to_datetime(raw["date"]) >= pd.Timestamp(first)).any()):
            coverage = _coverage(conn, symbol)
            if coverage is None:
                raise _unknown_symbol(conn, symbol)
            raise _empty_range(symbol, first, last, coverage)
        owed = describe_owed(read_owed(conn))
        label = synthetic_label(conn)
    finally:
        conn.close()
    if owed is not None:
        log.warning("%s", owed)
    frame = derive(raw, settings=cfg, blend_short_weight=blend_short_weight,
                   blend_flow_weight=blend_flow_weight)
    frame = frame.loc[frame["date"] >= pd.Timestamp(first)].reset_index(drop=True)
    frame.attrs["warmup_rows"] = len(raw) - len(frame)  # earlier sessions actually found
    frame.attrs["warmup_asked"] = lookback
    frame.attrs["z_window"] = cfg.short_z_window
    frame.attrs["blend_weights"] = (blend_short_weight, blend_flow_weight)
    frame.attrs["metrics_owed"] = owed
    frame.attrs["synthetic_label"] = label
    log.debug("sandbox %s %s..%s: %d rows (+%d warm-up)", symbol, first, last, len(frame),
              len(raw) - len(frame))
    return frame
