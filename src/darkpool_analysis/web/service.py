"""The sandbox behind the web API: cached per-ticker history, seed frames, lab signals, figures.

A request never reads more than it needs twice: the first request for a ticker reads its whole
``daily_metrics`` history once (read-only, through :func:`store.connect_readonly`) into an LRU
cache keyed by the published database's identity (inode, mtime, size), so a weight, dot-mode,
variant or formula change recomputes from memory (:func:`sandbox.derive`,
:func:`sandbox_lab.compute_lab`) and a new publication (an ingest or build finishing) is
picked up on the next request. The slices reproduce :func:`sandbox.load` and
:func:`sandbox_lab.load_lab` exactly (the tests compare them): the same warm-up rows, the same
columns, the same derived numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import numpy as np
import pandas as pd

from darkpool_analysis import sandbox, sandbox_lab, scoring, trading_calendar
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, NoDataError, StoreError
from darkpool_analysis.formulas import collect_formulas
from darkpool_analysis.store import (
    connect_readonly,
    current_generation,
    describe_owed,
    is_synthetic,
    read_meta,
    read_owed,
    store_dir_for,
    table_exists,
)
from darkpool_analysis.synthetic import SYNTHETIC_LABEL
from darkpool_analysis.web import limits

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from darkpool_analysis.sandbox_lab import Lab, LabPlan

log = logging.getLogger(__name__)

DOT_MODES: Final = tuple(sandbox.DOT_MODES)
FIGURES: Final = ("seed", "lab", "experimental")
FigureKind = Literal["seed", "lab", "experimental"]
#: Tables shown on the first screen: table -> (label, date column, weekly?).
SOURCES: Final[dict[str, tuple[str, str, bool]]] = {
    "finra_short_daily_raw": ("FINRA Reg SHO daily short volume", "trade_date", False),
    "finra_otc_weekly_raw": ("FINRA OTC weekly (ATS + non-ATS)", "week_start_date", True),
    "prices_daily": ("daily prices", "date", False),
    "lit_direction_daily": ("lit trade direction", "date", False),
    "daily_metrics": ("daily_metrics (the built signals)", "date", False),
}
HISTORY_CACHE_SIZE: Final = 64
#: Option B's blend weights when none are given (``darkpool sandbox``'s defaults).
DEFAULT_BLEND: Final = (0.6, 0.4)
FRAME_CACHE_SIZE: Final = 256

_T = TypeVar("_T")


class BadParameter(Exception):
    """A request parameter is malformed or over a limit: answered 400 (or 413) naming it."""

    def __init__(self, param: str, message: str, hint: str | None = None,
                 status: int = 400) -> None:
        self.param = param
        self.message = f"{param}: {message}"
        self.hint = hint
        self.status = status
        super().__init__(self.message)


class _LRU:
    """A small thread-safe LRU map (``get_or_make`` computes outside the lock)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: Hashable, make: Callable[[], _T]) -> _T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]  # type: ignore[no-any-return]
        value = make()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# -- the checked request ----------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxRequest:
    """One sandbox request, checked (the web twin of ``darkpool sandbox``'s options)."""

    ticker: str
    symbol: str
    start: dt.date | None = None
    end: dt.date | None = None
    dot_mode: str = "current"
    blend_short_weight: float = 0.6
    blend_flow_weight: float = 0.4
    warmup: bool = True
    experimental: bool = False
    variants: str | None = None
    formulas: tuple[str, ...] = ()
    panels: str | None = None
    hist_signal: str | None = None
    bands_signal: str | None = None
    bands_window: int = sandbox_lab.DEFAULT_BANDS_WINDOW
    figure: FigureKind = "seed"
    plan: LabPlan | None = dataclasses.field(default=None, compare=False)

    def with_range(self, start: dt.date, end: dt.date) -> SandboxRequest:
        """The same request with a resolved date range."""
        return dataclasses.replace(self, start=start, end=end)


def split_formulas(values: Sequence[str]) -> tuple[str, ...]:
    """Formula parameters (repeated and/or one per line) -> stripped non-empty lines."""
    return tuple(line.strip() for value in values for line in value.splitlines()
                 if line.strip())


def check_formulas(formulas: Sequence[str]) -> None:
    """Refuse more than :data:`limits.MAX_FORMULAS` formulas or an over-long line (413)."""
    if len(formulas) > limits.MAX_FORMULAS:
        raise BadParameter("formula", f"{len(formulas)} formulas given; at most "
                           f"{limits.MAX_FORMULAS} per request", "evaluate more formulas with "
                           "`darkpool evaluate --formula-file`", status=413)
    for number, line in enumerate(formulas, start=1):
        if len(line) > limits.MAX_FORMULA_LINE:
            raise BadParameter("formula", f"formula {number} is {len(line)} characters; at "
                               f"most {limits.MAX_FORMULA_LINE}", status=413)


def check_range(start: dt.date | None, end: dt.date | None, max_days: int) -> None:
    """``start`` after ``end`` or a span over ``max_days`` is a 400 naming ``start``."""
    if start is not None and end is not None:
        if start > end:
            raise BadParameter("start", f"{start} is after end {end}",
                               "pick a start on or before the end")
        if (end - start).days > max_days:
            raise BadParameter("start", f"{start} .. {end} spans {(end - start).days} days; "
                               f"at most {max_days} per request", "pick a shorter range",
                               status=413)


def lab_plan(variants: str | None, formulas: tuple[str, ...], panels: str | None,
             hist_signal: str | None, bands_signal: str | None,
             bands_window: int) -> LabPlan | None:
    """Resolve the lab options like ``darkpool sandbox``, blaming the right parameter."""
    from darkpool_analysis.signals import get_variant

    def check(param: str, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except ConfigError as exc:
            raise BadParameter(param, exc.message, exc.hint) from None

    check_formulas(formulas)
    names = sandbox_lab.split_names(variants)
    if len(names) + len(formulas) > limits.MAX_VARIANTS:
        raise BadParameter("variants", f"{len(names) + len(formulas)} variants and formulas; "
                           f"at most {limits.MAX_VARIANTS} per request", status=413)
    parsed = check("panels", lambda: sandbox_lab.parse_panels(panels))
    user = check("formula", lambda: collect_formulas(formulas, []))
    check("variants", lambda: sandbox_lab.resolve_variants(names, user))
    extra = {name: formula.as_variant() for name, formula in user.items()}
    for param, signal, panel in (("hist_signal", hist_signal, "hist"),
                                 ("bands_signal", bands_signal, "bands")):
        if signal is None:
            continue
        if panel not in parsed.all:
            raise BadParameter(param, f"needs the {panel} panel", f"add {panel} to panels")
        check(param, lambda name=signal: get_variant(name, extra))
    return check("variants", lambda: sandbox_lab.plan_lab(
        variants, formulas, [], panels, hist_signal, bands_signal, bands_window))


def make_request(*, ticker: str | None, start: dt.date | None = None,
                 end: dt.date | None = None, dot_mode: str = "current",
                 blend_short_weight: float = 0.6, blend_flow_weight: float = 0.4,
                 warmup: bool = True, seed_exact: bool = False, experimental: bool = False,
                 variants: str | None = None, formulas: Sequence[str] = (),
                 panels: str | None = None, hist_signal: str | None = None,
                 bands_signal: str | None = None,
                 bands_window: int = sandbox_lab.DEFAULT_BANDS_WINDOW,
                 figure: str = "seed") -> SandboxRequest:
    """Check a sandbox request (types are already checked by the framework)."""
    if ticker is None or not ticker.strip():
        raise BadParameter("ticker", "is required", "e.g. ticker=NKE")
    try:
        symbol = sandbox.normalise_ticker(ticker)
    except ValueError as exc:
        raise BadParameter("ticker", str(exc), "e.g. NKE, BRK.B") from None
    check_range(start, end, limits.MAX_RANGE_DAYS)
    for name, value in (("blend_short_weight", blend_short_weight),
                        ("blend_flow_weight", blend_flow_weight)):
        if not math.isfinite(value):
            raise BadParameter(name, f"{value!r} is not a finite number", "e.g. 0.6")
    if dot_mode not in DOT_MODES:
        raise BadParameter("dot_mode", f"{dot_mode!r} is not valid",
                           f"one of {', '.join(DOT_MODES)}")
    lines = split_formulas(formulas)
    blank = [(n, v) for n, v in (("variants", variants), ("panels", panels),
                                 ("hist_signal", hist_signal), ("bands_signal", bands_signal))]
    cleaned = {n: (v.strip() or None) if v is not None else None for n, v in blank}
    plan = lab_plan(cleaned["variants"], lines, cleaned["panels"], cleaned["hist_signal"],
                    cleaned["bands_signal"], bands_window)
    if figure not in FIGURES:
        raise BadParameter("figure", f"{figure!r} is not valid", f"one of {', '.join(FIGURES)}")
    if figure == "lab" and (plan is None or not plan.lab_figure):
        raise BadParameter("figure", "lab needs variants or panels without a + prefix",
                           "e.g. variants=current,option_a or panels=heatmap")
    return SandboxRequest(
        ticker=ticker.strip(), symbol=symbol, start=start, end=end, dot_mode=dot_mode,
        blend_short_weight=blend_short_weight, blend_flow_weight=blend_flow_weight,
        warmup=warmup and not seed_exact, experimental=experimental,
        variants=cleaned["variants"], formulas=lines, panels=cleaned["panels"],
        hist_signal=cleaned["hist_signal"], bands_signal=cleaned["bands_signal"],
        bands_window=bands_window, figure=figure,  # type: ignore[arg-type]
        plan=plan)


# -- JSON helpers -----------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """numpy/pandas scalars -> JSON types; NaN/inf -> None."""
    if value is None:
        return None
    if isinstance(value, (dt.date, pd.Timestamp)):
        return value.isoformat()[:10]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def records_json(frame: pd.DataFrame) -> str:
    """``frame`` as a JSON array of records: dates ``YYYY-MM-DD``, NaN/inf -> null."""
    data: dict[str, Any] = {}
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series):
            days = series.to_numpy(dtype="datetime64[D]")
            text = np.datetime_as_string(days, unit="D").astype(object)
            text[np.isnat(days)] = None
            data[column] = text
        elif pd.api.types.is_float_dtype(series):
            values = series.to_numpy(dtype=float)
            data[column] = (np.where(np.isfinite(values), values, np.nan)
                            if np.isinf(values).any() else values)
        else:
            data[column] = series.to_numpy()
    return pd.DataFrame(data, copy=False).to_json(orient="records", double_precision=15)


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame`` as records of JSON types (via :func:`records_json`)."""
    result: list[dict[str, Any]] = json.loads(records_json(frame))
    return result


# -- the service ------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """One ticker's whole ``daily_metrics`` history (sorted by date) and the database state."""

    symbol: str
    rows: pd.DataFrame
    owed: str | None


@dataclass(frozen=True)
class SandboxResult:
    """What one sandbox request computed: the seed frame, the lab (if asked) and notes."""

    request: SandboxRequest
    frame: pd.DataFrame
    lab: Lab | None


class SandboxService:
    """Everything the endpoints share: settings, caches and the database's identity."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._history = _LRU(HISTORY_CACHE_SIZE)
        self._frames = _LRU(FRAME_CACHE_SIZE)
        self._db_info = _LRU(8)
        self._payloads = _LRU(FRAME_CACHE_SIZE)
        self._gaps = _LRU(FRAME_CACHE_SIZE)

    # -- database identity --

    @property
    def db_path(self) -> Path:
        return self.settings.db_path

    def version(self) -> tuple[int, int, int]:
        """The published generation (``(generation, 0, 0)``), or (inode, mtime_ns, size) of
        a plain database file: a publication changes it.

        The generation is read before any connection opens, and a reader opens the
        generation current at that later moment, so what is cached under a key is never
        older than the key (the public file's stat is renamed before ``CURRENT`` moves, so
        keying by it could cache the previous generation under the new key)."""
        generation = current_generation(store_dir_for(self.db_path))
        if generation is not None:
            return generation, 0, 0
        try:
            stat = self.db_path.stat()
        except FileNotFoundError:
            connect_readonly(self.db_path)  # raises the library's "no database at" error
            raise
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def database(self) -> dict[str, Any]:
        """Synthetic label, what is owed, and coverage per source (cached per publication)."""
        return self._db_info.get_or_make(("db", self.version()), self._read_database)

    def _read_database(self) -> dict[str, Any]:
        conn = connect_readonly(self.db_path)
        try:
            meta = read_meta(conn)
            owed = describe_owed(read_owed(conn))
            sources = [_source_coverage(conn, table, *spec) for table, spec in SOURCES.items()
                       if table_exists(conn, table)]
        finally:
            conn.close()
        synthetic = is_synthetic(meta)
        return {"path": str(self.db_path), "synthetic": synthetic,
                "label": SYNTHETIC_LABEL if synthetic else None,
                "synthetic_note": meta.get("synthetic_note") if synthetic else None,
                "owed": owed, "sources": sources}

    # -- symbols --

    def all_symbols(self) -> list[str]:
        """Every symbol with ``daily_metrics`` rows, sorted (cached per publication)."""
        def read() -> list[str]:
            conn = connect_readonly(self.db_path)
            try:
                if not table_exists(conn, "daily_metrics"):
                    raise StoreError(f"{self.db_path} has no daily_metrics table",
                                     hint="run `darkpool build` to create and fill it")
                rows = conn.execute(
                    "SELECT DISTINCT symbol FROM daily_metrics ORDER BY symbol").fetchall()
            finally:
                conn.close()
            return [str(row[0]) for row in rows]

        return self._db_info.get_or_make(("symbols", self.version()), read)

    def symbols(self, prefix: str | None, limit: int) -> list[str]:
        """Symbols starting with ``prefix`` (case-insensitive; none = all), at most ``limit``."""
        wanted = (prefix or "").strip().upper()
        names = self.all_symbols()
        return [name for name in names if name.startswith(wanted)][:limit]

    # -- history and frames --

    def history(self, symbol: str) -> History:
        """``symbol``'s whole ``daily_metrics`` history; unknown symbols raise the library's
        :class:`NoDataError` (naming close symbols)."""
        return self._history.get_or_make((self.version(), symbol),
                                         lambda: self._read_history(symbol))

    def _read_history(self, symbol: str) -> History:
        conn = connect_readonly(self.db_path)
        try:
            if not table_exists(conn, "daily_metrics"):
                raise StoreError(f"{self.db_path} has no daily_metrics table",
                                 hint="run `darkpool build` to create and fill it")
            rows = conn.execute("SELECT * FROM daily_metrics WHERE symbol = ? ORDER BY date",
                                [symbol]).df()
            owed = describe_owed(read_owed(conn))
        finally:
            conn.close()
        if rows.empty:
            # The library's own message (close symbols, ingest hint).
            sandbox.default_range(symbol, settings=self.settings)
            raise NoDataError(f"unknown ticker {symbol}: no daily_metrics rows")
        rows["date"] = pd.to_datetime(rows["date"])
        return History(symbol=symbol, rows=rows, owed=owed)

    def resolve_range(self, request: SandboxRequest) -> SandboxRequest:
        """Fill a missing start/end as :func:`sandbox.default_range` does."""
        history = self.history(request.symbol)
        dates = history.rows["date"]
        last = request.end if request.end is not None else dates.iloc[-1].date()
        if request.start is not None:
            return request.with_range(request.start, last)
        upto = dates[dates <= pd.Timestamp(last)]
        if upto.empty:
            self._empty_range(request.symbol, last, last)
        first = upto.iloc[-sandbox.DEFAULT_SESSIONS:].iloc[0].date()
        return request.with_range(first, last)

    def _empty_range(self, symbol: str, start: dt.date, end: dt.date) -> None:
        """Raise the library's empty-range error (it names the coverage)."""
        sandbox.load(symbol, start, end, warmup=False, settings=self.settings)
        raise NoDataError(f"no daily_metrics rows for {symbol} between {start} and {end}")

    def _slice(self, history: History, start: dt.date, end: dt.date,
               lookback: int) -> pd.DataFrame:
        """Rows in ``[start, end]`` plus the ``lookback`` rows before ``start`` (what the
        library's ``WITH warm AS (... LIMIT lookback)`` query reads)."""
        rows = history.rows
        dates = rows["date"].to_numpy()
        lo = int(np.searchsorted(dates, np.datetime64(start), side="left"))
        hi = int(np.searchsorted(dates, np.datetime64(end), side="right"))
        if hi <= lo:
            self._empty_range(history.symbol, start, end)
        return rows.iloc[max(0, lo - lookback):hi].reset_index(drop=True)

    def seed_frame(self, request: SandboxRequest) -> pd.DataFrame:
        """The sandbox frame :func:`sandbox.load` returns for this request (cached)."""
        assert request.start is not None and request.end is not None
        key = (self.version(), request.symbol, request.start, request.end, request.warmup,
               request.blend_short_weight, request.blend_flow_weight)
        return self._frames.get_or_make(key, lambda: self._seed_frame(request))

    def _seed_frame(self, request: SandboxRequest) -> pd.DataFrame:
        assert request.start is not None and request.end is not None
        history = self.history(request.symbol)
        derived = self._derived(request)
        weights = (request.blend_short_weight, request.blend_flow_weight)
        if weights != DEFAULT_BLEND:
            # Only option B depends on the weights: rescore it on the same warm-up-inclusive
            # rows :func:`sandbox.derive` scored (identical numbers; the tests compare).
            derived = derived.copy()
            derived["acc_score_b"] = self._option_b(derived, *weights)
        frame = derived.loc[derived["date"] >= pd.Timestamp(request.start)]
        frame = frame.reset_index(drop=True)
        frame.attrs["blend_weights"] = weights
        frame.attrs["metrics_owed"] = history.owed
        return frame

    def _option_b(self, derived: pd.DataFrame, short_weight: float,
                  flow_weight: float) -> pd.Series:
        """``acc_score_b`` of :func:`sandbox.seed_variants` for other blend weights: the same
        inputs (the lit z falls back to a rolling z of ``lit_flow_imbalance`` when the stored
        one is NULL on every row), the blended short z, the seed's display score."""
        cfg = self.settings
        lit_z = derived["lit_flow_imbalance_z"].astype(float)
        if lit_z.isna().all():
            lit_z = scoring.rolling_zscore(derived["lit_flow_imbalance"], cfg.short_z_window,
                                           cfg.zscore_min_periods)
        blended = (short_weight * derived["short_buy_sell_ratio_z"].astype(float)
                   + flow_weight * derived["vw_flow_z"].astype(float))
        return scoring.score_display(blended, lit_z,
                                     derived["return_z"].astype(float).fillna(0.0),
                                     derived["otc_participation_z"].astype(float).fillna(0.0),
                                     cfg)

    def _derived(self, request: SandboxRequest) -> pd.DataFrame:
        """:func:`sandbox.derive` at the default weights on the request's rows plus warm-up,
        not yet trimmed (cached per range: a weight change reuses it)."""
        assert request.start is not None and request.end is not None
        key = (self.version(), request.symbol, request.start, request.end, request.warmup,
               "derived")

        def make() -> pd.DataFrame:
            history = self.history(request.symbol)
            lookback = self.settings.short_z_window if request.warmup else 0
            raw = self._slice(history, request.start, request.end, lookback)
            # the columns sandbox.load reads (the seed's, plus the extras such as close)
            wanted = ("date", "symbol", *sandbox.SEED_NUMERIC_COLUMNS,
                      *getattr(sandbox, "EXTRA_COLUMNS", ()))
            raw = raw[[c for c in wanted if c in raw.columns]]
            return sandbox.derive(raw, settings=self.settings,
                                  blend_short_weight=DEFAULT_BLEND[0],
                                  blend_flow_weight=DEFAULT_BLEND[1])

        return self._frames.get_or_make(key, make)

    def lab(self, request: SandboxRequest) -> Lab | None:
        """The lab signals :func:`sandbox_lab.load_lab` computes for this request (cached)."""
        plan = request.plan
        if plan is None or not plan.to_compute:
            return None
        assert request.start is not None and request.end is not None
        key = (self.version(), request.symbol, request.start, request.end, "lab",
               tuple(request.formulas), tuple(v.name for v in plan.to_compute),
               plan.bands_signal, plan.bands_window,
               request.blend_short_weight, request.blend_flow_weight)
        return self._frames.get_or_make(key, lambda: self._lab(request, plan))

    def _lab(self, request: SandboxRequest, plan: LabPlan) -> Lab:
        assert request.start is not None and request.end is not None
        params = sandbox_lab.variant_params(plan.to_compute, self.settings,
                                            blend_short_weight=request.blend_short_weight,
                                            blend_flow_weight=request.blend_flow_weight)
        lookback = max([sandbox_lab.variant_warmup(v, plan.formulas, params.get(v.name))
                        for v in plan.to_compute]
                       + [plan.bands_window + 1 if plan.bands_signal is not None else 0])
        history = self.history(request.symbol)
        raw = self._slice(history, request.start, request.end, lookback)
        try:
            return sandbox_lab.compute_lab(raw, request.start, plan.to_compute, params=params,
                                           bands_signal=plan.bands_signal,
                                           bands_window=plan.bands_window)
        except ConfigError as exc:
            raise BadParameter("formula" if plan.formulas else "variants", exc.message,
                               exc.hint) from None
        except ArithmeticError as exc:  # e.g. an integer literal beyond float range
            raise BadParameter("formula", f"a number in a formula is out of range ({exc})",
                               "use numbers below 1e308") from None

    def compute(self, request: SandboxRequest) -> SandboxResult:
        """Resolve the range, then the seed frame and the lab."""
        resolved = self.resolve_range(request)
        return SandboxResult(resolved, self.seed_frame(resolved), self.lab(resolved))

    # -- JSON --

    def summary(self, result: SandboxResult) -> dict[str, Any]:
        """The JSON twin of ``darkpool sandbox``'s printed summary, plus the coverage."""
        from darkpool_analysis.views.sandbox_chart import PROXY_NOTE

        request, frame = result.request, result.frame
        assert request.start is not None and request.end is not None
        zones = {variant: display_zones(frame[column])
                 for variant, column in sandbox.VARIANT_COLUMNS.items()}
        # gaps do not depend on weights, dot mode or variants: once per range
        gaps = self._gaps.get_or_make(
            (self.version(), request.symbol, request.start, request.end, request.warmup),
            lambda: sandbox.data_gaps(frame, request.start, request.end))
        dates = self.history(request.symbol).rows["date"]
        warm = int(self._warmup_rows(request))
        zone_table = dict(zones)
        if result.lab is not None:
            zone_table.update(lab_zones(result.lab))
        database = self.database()
        return {
            "symbol": request.symbol,
            "start": request.start.isoformat(),
            "end": request.end.isoformat(),
            "rows": len(frame),
            "warmup": request.warmup,
            "warmup_rows": warm,
            "mode": (f"with warm-up ({warm} earlier session(s) of the "
                     f"{self.settings.short_z_window} a full z window needs)"
                     if request.warmup else "seed-exact z windows (shown range only)"),
            "zones": zone_table,
            "gaps": [day.isoformat() for day in gaps],
            "coverage": {"first": dates.iloc[0].date().isoformat(),
                         "last": dates.iloc[-1].date().isoformat()},
            "caveat": PROXY_NOTE,
            "owed": frame.attrs.get("metrics_owed"),
            "synthetic": database["synthetic"],
            "label": database["label"],
        }

    def _warmup_rows(self, request: SandboxRequest) -> int:
        if not request.warmup:
            return 0
        assert request.start is not None
        dates = self.history(request.symbol).rows["date"]
        before = int((dates < pd.Timestamp(request.start)).sum())
        return min(before, self.settings.short_z_window)

    def payload(self, result: SandboxResult) -> str:
        """``/api/sandbox``'s JSON: the request, the summary, the rows (one record per
        session, lab signals as ``variant:NAME`` columns) and the lab variants (cached per
        resolved request and publication)."""
        return self._payloads.get_or_make((self.version(), result.request),
                                          lambda: self._payload(result))

    def _payload(self, result: SandboxResult) -> str:
        frame = result.frame
        rows = frame.assign(date=frame["date"])
        lab_info: list[dict[str, Any]] = []
        if result.lab is not None:
            lab = result.lab
            signals = lab.signals.rename(columns=lambda name: f"variant:{name}")
            lab_rows = pd.concat([lab.frame[["date"]], signals], axis=1)
            if not lab.bands.empty and len(lab.bands.columns):
                lab_rows = pd.concat(
                    [lab_rows, lab.bands.rename(columns=lambda name: f"bands:{name}")], axis=1)
            rows = rows.merge(lab_rows, on="date", how="left")
            lab_info = [{"name": name, "scale": variant.scale, "buy": variant.buy,
                         "sell": variant.sell, "neutral": variant.neutral,
                         "description": variant.description}
                        for name, variant in lab.variants.items()]
        request = result.request
        head = {
            "request": request_json(request),
            "summary": self.summary(result),
            "variants": lab_info,
            "requested_variants": list(request.plan.variants) if request.plan else [],
            "bands_signal": result.lab.bands_signal if result.lab is not None else None,
            "columns": list(rows.columns),
        }
        text = json.dumps(head)
        return text[:-1] + ', "rows": ' + records_json(rows) + "}"

    # -- figures --

    def figure(self, result: SandboxResult) -> Figure:
        """The requested figure, as ``darkpool sandbox`` draws it (not yet rendered)."""
        from darkpool_analysis.views import lab_chart, sandbox_chart

        request, frame, lab = result.request, result.frame, result.lab
        plan = request.plan
        if request.figure == "experimental":
            return sandbox_chart.plot_experimental(frame)
        if plan is None or lab is None or (request.figure == "seed"
                                           and not plan.panels.appended):
            return sandbox_chart.plot(frame, request.dot_mode, request.blend_short_weight,
                                      request.blend_flow_weight)
        if request.figure == "lab":
            return lab_chart.plot_lab(lab, plan.variants, plan.panels.lab,
                                      compare=plan.compare, hist_signal=plan.hist_signal)
        return lab_chart.plot_seed_with_panels(
            frame, lab, plan.panels.appended, dot_mode=request.dot_mode,
            blend_short_weight=request.blend_short_weight,
            blend_flow_weight=request.blend_flow_weight, compare=plan.compare,
            hist_signal=plan.hist_signal)

    def render(self, result: SandboxResult, fmt: str) -> bytes:
        """The figure as PNG or SVG bytes (call it in a render worker)."""
        return render_figure(self.figure(result), fmt)


def render_figure(fig: Figure, fmt: str) -> bytes:
    """Save a figure to PNG/SVG bytes at the CLI's 100 dpi and background."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=100, facecolor=fig.get_facecolor())
    return buffer.getvalue()


def display_zones(scores: pd.Series) -> dict[str, int]:
    """Days per zone of a 0-100 score (:func:`scoring.zone_label`'s thresholds), counted
    with numpy: what :func:`sandbox.zone_counts` gives for one variant."""
    values = pd.to_numeric(scores, errors="coerce").to_numpy(dtype=float)
    missing = np.isnan(values)
    accum = int((values >= scoring.ACCUMULATION_THRESHOLD).sum())
    dist = int((values <= scoring.DISTRIBUTION_THRESHOLD).sum())
    return {"accumulation": accum, "distribution": dist,
            "neutral": int(len(values) - accum - dist - missing.sum()),
            "missing": int(missing.sum())}


def lab_zones(lab: Lab) -> dict[str, dict[str, int]]:
    """Days per zone for every lab variant with thresholds (signal >= buy, <= sell)."""
    out: dict[str, dict[str, int]] = {}
    for name, variant in lab.variants.items():
        values = pd.to_numeric(lab.signals[name], errors="coerce").astype(float)
        if variant.scale == "display":
            out[name] = display_zones(values)
            continue
        if variant.buy is None:
            continue
        sell = variant.sell if variant.sell is not None else -math.inf
        accum = int((values >= variant.buy).sum())
        dist = int((values <= sell).sum())
        missing = int(values.isna().sum())
        out[name] = {"accumulation": accum, "distribution": dist,
                     "neutral": len(values) - accum - dist - missing, "missing": missing}
    return out


def request_json(request: SandboxRequest) -> dict[str, Any]:
    """The resolved request as JSON (what the page shows and re-sends)."""
    return {"ticker": request.ticker, "symbol": request.symbol,
            "start": request.start.isoformat() if request.start else None,
            "end": request.end.isoformat() if request.end else None,
            "dot_mode": request.dot_mode, "blend_short_weight": request.blend_short_weight,
            "blend_flow_weight": request.blend_flow_weight, "warmup": request.warmup,
            "experimental": request.experimental, "variants": request.variants,
            "formula": list(request.formulas), "panels": request.panels,
            "hist_signal": request.hist_signal, "bands_signal": request.bands_signal,
            "bands_window": request.bands_window}


def _source_coverage(conn: Any, table: str, label: str, date_col: str,
                     weekly: bool) -> dict[str, Any]:
    """Rows, symbols, first/last date and missing sessions (or weeks) of one source table."""
    columns = {str(r[0]) for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
        [table]).fetchall()}
    symbol_col = "symbol_norm" if "symbol_norm" in columns else "symbol"
    row = conn.execute(
        f"SELECT count(*), count(DISTINCT {symbol_col}), min({date_col}), max({date_col}) "
        f"FROM {table}").fetchone()
    rows, n_symbols, first, last = row if row else (0, 0, None, None)
    gaps: list[str] = []
    if first is not None and last is not None:
        have = pd.DatetimeIndex(pd.to_datetime(
            [r[0] for r in conn.execute(f"SELECT DISTINCT {date_col} FROM {table}").fetchall()]))
        if weekly:
            expected = pd.date_range(first, last, freq="W-MON")
        else:
            expected = trading_calendar.sessions_index(first, last)
        expected = pd.DatetimeIndex(expected).tz_localize(None).normalize().as_unit("ns")
        missing = expected.difference(have.normalize().as_unit("ns"))
        gaps = [ts.date().isoformat() for ts in missing]
    return {"table": table, "label": label, "rows": int(rows), "symbols": int(n_symbols or 0),
            "first": _clean(first), "last": _clean(last), "weekly": weekly,
            "gaps": len(gaps), "gap_dates": gaps[:20]}


__all__ = [
    "DOT_MODES",
    "FIGURES",
    "BadParameter",
    "SandboxRequest",
    "SandboxResult",
    "SandboxService",
    "check_formulas",
    "check_range",
    "frame_records",
    "make_request",
    "records_json",
    "render_figure",
]
