"""Signal-variant data for the sandbox's extra panels (``darkpool sandbox --variants/--panels``).

:func:`load_lab` reads one ticker's full ``daily_metrics`` rows (every column) read-only, with
enough earlier rows that every requested variant's rolling windows (and the median/MAD bands)
are full on the first shown day, computes the variants with the registry
(:mod:`darkpool_analysis.signals`, user formulas from :mod:`darkpool_analysis.formulas`) and
trims to ``[start, end]``. :func:`compute_lab` is the pure part (frame in, :class:`Lab` out).

Every variant is point-in-time (uses rows <= t only), and so are the bands: they are computed
on the loaded history *before* trimming, from the previous ``bands_window`` values only.
A formula's ``rank()`` is cross-sectional; with one ticker it has a single value per date.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import pandas as pd

from darkpool_analysis import trading_calendar
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.errors import ConfigError, NoDataError, StoreError
from darkpool_analysis.formulas import Formula, collect_formulas
from darkpool_analysis.ingest.options import read_premium
from darkpool_analysis.sandbox import normalise_ticker, synthetic_label
from darkpool_analysis.signals import (
    MAX_WINDOW,
    Variant,
    WeightsValues,
    check_window,
    compute_variants,
    get_variant,
    median_mad_bands,
)
from darkpool_analysis.store import connect_readonly, table_exists

log = logging.getLogger(__name__)

#: Extra panels ``--panels`` accepts, in the order the lab figure draws them.
PANELS: Final[tuple[str, ...]] = ("price", "heatmap", "hist", "bands", "otc", "options")
#: Variants the consensus price and the heatmap compare when ``--variants`` is not given.
DEFAULT_COMPARE: Final[tuple[str, ...]] = ("current", "option_a", "option_b")
#: The histogram / bands signal when none is named and no z-scale variant was requested.
DEFAULT_Z_SIGNAL: Final = "finra_buy_volume_z"
DEFAULT_BANDS_WINDOW: Final = 20
#: Formula functions whose second argument is a window or lag (sessions of history needed).
_WINDOW_FUNCTIONS: Final = frozenset({"z", "lag", "mean"})


@dataclass(frozen=True)
class PanelRequest:
    """Parsed ``--panels``: ``appended`` go below the seed's 7 panels (``+name``), ``lab`` into
    the second figure; each keeps the order given."""

    appended: tuple[str, ...] = ()
    lab: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        """Every requested panel (appended first)."""
        return (*self.appended, *self.lab)


def parse_panels(text: str | None) -> PanelRequest:
    """``"price,+otc,heatmap"`` -> :class:`PanelRequest`; unknown names list the valid ones."""
    appended: list[str] = []
    lab: list[str] = []
    for item in (text or "").split(","):
        token = item.strip()
        if not token:
            continue
        name = token.removeprefix("+").strip().lower()
        if name not in PANELS:
            raise ConfigError(f"unknown panel {token!r}; valid: {', '.join(PANELS)}",
                              hint="prefix a panel with + to append it below the seed's "
                                   "7 panels, e.g. --panels +otc")
        target = appended if token.startswith("+") else lab
        if name in appended or name in lab:
            raise ConfigError(f"panel {name!r} is requested twice in --panels")
        target.append(name)
    return PanelRequest(tuple(appended), tuple(lab))


def split_names(text: str | None) -> list[str]:
    """Comma-separated names, stripped, empty items dropped, duplicates removed (first kept)."""
    names = [item.strip() for item in (text or "").split(",") if item.strip()]
    return list(dict.fromkeys(names))


def formula_warmup(formula: Formula) -> int:
    """Rows of history ``formula`` needs before a date: the sum of its window/lag literals.

    Summing over the whole tree bounds nested windows (``z(mean(x, 5), 20)`` needs 24 earlier
    rows), capped at :data:`signals.MAX_WINDOW`.
    """
    total = 0
    for node in ast.walk(formula.tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in _WINDOW_FUNCTIONS and len(node.args) == 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, int)):
            total += int(node.args[1].value)
    return min(total, MAX_WINDOW)


def variant_warmup(variant: Variant, formulas: Mapping[str, Formula] | None = None,
                   params: Mapping[str, Any] | None = None) -> int:
    """Rows of history ``variant`` needs before a date for a full window.

    Registry variants with a ``window`` parameter need ``window`` earlier rows (``window - 1``
    for a window ending today, ``window`` for one that excludes today, as ``buy_volume_z_raw``
    does); variants reading stored z columns need none (the build used the full history).
    """
    if formulas is not None and variant.name in formulas:
        return formula_warmup(formulas[variant.name])
    merged = {**variant.defaults, **(params or {})}
    window = merged.get("window")
    return check_window(int(window), f"{variant.name} window") if window is not None else 0


def resolve_variants(names: Sequence[str], formulas: Mapping[str, Formula]) -> list[Variant]:
    """Registry variants and user formulas by name (formulas shadow registry names, as in
    ``darkpool evaluate``); an unknown name raises the registry's error listing valid names."""
    extra = {name: formula.as_variant() for name, formula in formulas.items()}
    return [get_variant(name, extra) for name in names]


def variant_params(variants: Iterable[Variant], settings: Settings, *,
                   blend_short_weight: float = 0.6,
                   blend_flow_weight: float = 0.4) -> dict[str, dict[str, Any]]:
    """Per-variant parameters: the configured score weights for score variants and the CLI's
    option B blend weights wherever a variant takes ``short_weight``/``flow_weight``."""
    weights = WeightsValues.from_settings(settings)
    params: dict[str, dict[str, Any]] = {}
    for variant in variants:
        chosen: dict[str, Any] = {}
        if "weights" in variant.defaults:
            chosen["weights"] = weights
        if {"short_weight", "flow_weight"} <= set(variant.defaults):
            chosen["short_weight"] = blend_short_weight
            chosen["flow_weight"] = blend_flow_weight
        if chosen:
            params[variant.name] = chosen
    return params


@dataclass(frozen=True)
class LabPlan:
    """What ``darkpool sandbox --variants/--formula/--panels`` asked for, resolved and checked
    before any data is read."""

    variants: tuple[str, ...]
    panels: PanelRequest
    compare: tuple[str, ...]
    hist_signal: str | None
    bands_signal: str | None
    bands_window: int
    formulas: Mapping[str, Formula]
    to_compute: tuple[Variant, ...]

    @property
    def lab_figure(self) -> bool:
        """True when a second (lab) figure is drawn: variant panels or non-appended panels."""
        return bool(self.variants or self.panels.lab)


def plan_lab(
    variants: str | None,
    formula_specs: Sequence[str] = (),
    formula_files: Sequence[Path] = (),
    panels: str | None = None,
    hist_signal: str | None = None,
    bands_signal: str | None = None,
    bands_window: int = DEFAULT_BANDS_WINDOW,
) -> LabPlan | None:
    """Resolve the lab options; ``None`` when none was given (the seed chart only).

    Formulas not named in ``variants`` are appended to them (as ``darkpool evaluate`` does).
    The consensus price and the heatmap compare the requested variants, or
    :data:`DEFAULT_COMPARE` when none was requested.
    """
    if variants is None and not formula_specs and not formula_files and panels is None:
        return None
    formulas = collect_formulas(formula_specs, formula_files)
    names = split_names(variants)
    names += [name for name in formulas if name not in names]
    request = parse_panels(panels)
    if not names and not request.all:
        raise ConfigError("nothing to draw: --variants and --panels name no variant or panel",
                          hint=f"e.g. --variants current,finra_buy_volume_z --panels "
                               f"{','.join(PANELS)}")
    if hist_signal is not None and "hist" not in request.all:
        raise ConfigError("--hist-signal needs the hist panel (--panels hist)")
    if bands_signal is not None and "bands" not in request.all:
        raise ConfigError("--bands-signal needs the bands panel (--panels bands)")
    requested = resolve_variants(names, formulas)
    compare = tuple(names) or DEFAULT_COMPARE
    z_default = first_z_variant(requested)
    hist = (hist_signal or z_default) if "hist" in request.all else None
    bands = (bands_signal or hist or z_default) if "bands" in request.all else None
    needed = list(names)
    if {"price", "heatmap"} & set(request.all):
        needed += compare
    needed += [name for name in (hist, bands) if name is not None]
    to_compute = resolve_variants(list(dict.fromkeys(needed)), formulas)
    return LabPlan(variants=tuple(names), panels=request, compare=compare, hist_signal=hist,
                   bands_signal=bands, bands_window=check_window(bands_window, "--bands-window"),
                   formulas=formulas, to_compute=tuple(to_compute))


@dataclass(frozen=True)
class Lab:
    """One ticker's shown rows, its variant signals and the bands, all on one index.

    ``frame`` holds the ``daily_metrics`` rows in ``[start, end]`` (``date`` as Timestamp,
    index ``0..n-1``); ``signals`` one column per computed variant; ``bands`` the past-only
    ``median``/``upper``/``lower`` of ``bands_signal`` (no columns when none was asked for).
    """

    frame: pd.DataFrame
    signals: pd.DataFrame
    variants: dict[str, Variant]
    bands: pd.DataFrame
    bands_signal: str | None = None
    bands_window: int = DEFAULT_BANDS_WINDOW
    warmup_rows: int = 0
    #: :data:`~darkpool_analysis.synthetic.SYNTHETIC_LABEL` for a synthetic database.
    synthetic_label: str | None = None
    #: Distinct OTC weeks the symbol has anywhere in ``daily_metrics`` (None = not looked up):
    #: 0 tells "never ingested" apart from "no week published yet for this range".
    otc_weeks: int | None = None
    #: ``options_premium_daily`` rows of the shown range (the ``options`` panel); None = unread.
    options: pd.DataFrame | None = None

    @property
    def look_ahead(self) -> bool:
        """True when the rows were built with week-aligned (look-ahead) OTC data."""
        if "otc_alignment" not in self.frame.columns:
            return False
        return bool((self.frame["otc_alignment"].astype(object) == "week").any())

    @property
    def symbol(self) -> str:
        """The ticker of the rows (``?`` when unknown)."""
        symbols = self.frame["symbol"].dropna() if "symbol" in self.frame else pd.Series()
        return str(symbols.iloc[0]) if len(symbols) else "?"


def compute_lab(
    raw: pd.DataFrame,
    start: trading_calendar.DateLike,
    variants: Sequence[Variant],
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    bands_signal: str | None = None,
    bands_window: int = DEFAULT_BANDS_WINDOW,
    bands_k: float = 2.0,
) -> Lab:
    """Compute ``variants`` (and the bands of ``bands_signal``) on one ticker's rows sorted by
    date, warm-up rows before ``start`` included, then keep the rows from ``start`` on. Pure."""
    frame = raw.copy()
    frame["date"] = pd.to_datetime(frame["date"])
    frame = frame.sort_values("date", kind="stable").reset_index(drop=True)
    unique = list({variant.name: variant for variant in variants}.values())
    signals = compute_variants(frame, unique, params)
    if bands_signal is not None:
        if bands_signal not in signals.columns:
            raise ConfigError(f"bands signal {bands_signal!r} is not among the computed "
                              f"variants ({', '.join(signals.columns) or 'none'})")
        bands = median_mad_bands(signals[bands_signal], check_window(bands_window), bands_k)
    else:
        bands = pd.DataFrame(index=frame.index)
    shown = (frame["date"] >= pd.Timestamp(trading_calendar.to_date(start))).to_numpy()
    warmup_rows = int((~shown).sum())

    def trim(table: pd.DataFrame) -> pd.DataFrame:
        return table.loc[shown].reset_index(drop=True)

    return Lab(frame=trim(frame), signals=trim(signals),
               variants={variant.name: variant for variant in unique}, bands=trim(bands),
               bands_signal=bands_signal, bands_window=bands_window, warmup_rows=warmup_rows)


def load_lab(
    ticker: str,
    start: trading_calendar.DateLike,
    end: trading_calendar.DateLike,
    variants: Sequence[Variant],
    *,
    formulas: Mapping[str, Formula] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    bands_signal: str | None = None,
    bands_window: int = DEFAULT_BANDS_WINDOW,
    db_path: Path | None = None,
    settings: Settings | None = None,
) -> Lab:
    """Read ``ticker``'s ``daily_metrics`` rows on ``[start, end]`` plus the warm-up every
    variant (and the bands) needs, read-only, and compute them (:func:`compute_lab`).

    Raises :class:`NoDataError` when the ticker has no rows in the range and
    :class:`StoreError` when the database has no ``daily_metrics`` table.
    """
    cfg = settings if settings is not None else load_config()
    path = Path(db_path) if db_path is not None else cfg.db_path
    symbol = normalise_ticker(ticker)
    first, last = trading_calendar.to_date(start), trading_calendar.to_date(end)
    if first > last:
        raise ValueError(f"start {first} is after end {last}")
    lookback = max([variant_warmup(v, formulas, (params or {}).get(v.name)) for v in variants]
                   + [check_window(bands_window) + 1 if bands_signal is not None else 0])
    conn = connect_readonly(path)
    try:
        if not table_exists(conn, "daily_metrics"):
            raise StoreError(f"{path} has no daily_metrics table",
                             hint="run `darkpool build` to create and fill it")
        raw = conn.execute(
            """
            WITH warm AS (
                SELECT min(date) AS first_date FROM (
                    SELECT date FROM daily_metrics WHERE symbol = $symbol AND date < $start
                    ORDER BY date DESC LIMIT $lookback)
            )
            SELECT * FROM daily_metrics
            WHERE symbol = $symbol
              AND date BETWEEN coalesce((SELECT first_date FROM warm), $start) AND $end
            ORDER BY date
            """,
            {"symbol": symbol, "start": first, "end": last, "lookback": lookback},
        ).df()
        label = synthetic_label(conn)
        weeks = conn.execute("SELECT count(DISTINCT otc_week_used) FROM daily_metrics "
                             "WHERE symbol = ?", [symbol]).fetchone()
        options = read_premium(conn, symbol, first, last)
    finally:
        conn.close()
    if raw.empty or not bool((pd.to_datetime(raw["date"]) >= pd.Timestamp(first)).any()):
        raise NoDataError(f"no daily_metrics rows for {symbol} between {first} and {last}",
                          hint=f"run `darkpool build --tickers {symbol}` for that range")
    lab = replace(compute_lab(raw, first, variants, params=params, bands_signal=bands_signal,
                              bands_window=bands_window), synthetic_label=label,
                  otc_weeks=int(weeks[0]) if weeks else 0, options=options)
    log.debug("sandbox lab %s %s..%s: %d rows (+%d warm-up, %d asked), variants %s", symbol,
              first, last, len(lab.frame), lab.warmup_rows, lookback, ", ".join(lab.variants))
    return lab


def first_z_variant(variants: Iterable[Variant]) -> str:
    """The first z-scale variant's name, else :data:`DEFAULT_Z_SIGNAL` (histogram default)."""
    return next((v.name for v in variants if v.scale == "z"), DEFAULT_Z_SIGNAL)


__all__ = [
    "DEFAULT_BANDS_WINDOW",
    "DEFAULT_COMPARE",
    "DEFAULT_Z_SIGNAL",
    "PANELS",
    "Lab",
    "LabPlan",
    "PanelRequest",
    "compute_lab",
    "first_z_variant",
    "formula_warmup",
    "load_lab",
    "parse_panels",
    "plan_lab",
    "resolve_variants",
    "split_names",
    "variant_params",
    "variant_warmup",
]
