"""``darkpool web``: the Accumulation Signal Sandbox as a local web page (standard library only).

One :class:`SandboxServer` (``http.server.ThreadingHTTPServer``) serves:

``GET /``                 the form, the summary table, the charts and the CSV link
``GET /chart.png|svg``    a figure (``figure=seed|lab|experimental``) of :mod:`sandbox_chart` /
                          :mod:`lab_chart`
``GET /api/frame.csv``    the sandbox frame, as ``darkpool sandbox --csv`` writes it
``GET /api/summary.json`` rows, days per zone and variant, data gaps, coverage
``GET /api/symbols``      symbols with ``daily_metrics`` rows (``?q=prefix&limit=n``)
``GET /healthz``          liveness

The query parameters mirror ``darkpool sandbox``'s options (``ticker, start, end, dot_mode,
blend_short_weight, blend_flow_weight, warmup, seed_exact, experimental, variants, formula,
panels, hist_signal, bands_signal, bands_window``). Every request opens the database read-only
through the library, so an ingest can run meanwhile. Bad parameters answer 400 naming the
parameter, missing data 404 (the library's message names the coverage), other package errors
500; never a traceback. Figures are rendered under one lock: matplotlib's Agg is not
guaranteed thread-safe across concurrently drawn figures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import io
import ipaddress
import json
import logging
import math
import re
import secrets
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Literal, cast
from urllib.parse import parse_qs, urlencode, urlsplit

from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.errors import DarkpoolError, NoDataError
from darkpool_analysis.formulas import collect_formulas

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from darkpool_analysis.sandbox_lab import LabPlan

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765
#: Data gaps listed by date on the page (the JSON lists all).
SHOWN_GAPS: Final = 10
MAX_TICKER_LENGTH: Final = 32
MAX_SYMBOLS: Final = 10_000
DOT_MODES: Final = ("current", "option_a", "option_b", "all")
FIGURES: Final = ("seed", "lab", "experimental")
ZONE_HEADERS: Final = ("accumulation >=70", "distribution <=30", "between", "no score")
_TRUE: Final = frozenset({"1", "true", "on", "yes"})
_FALSE: Final = frozenset({"0", "false", "off", "no"})
_SAFE_FILENAME: Final = re.compile(r"[^A-Za-z0-9._-]+")
_PLACEHOLDER: Final = re.compile(r"\{\{(\w+)\}\}")

FigureKind = Literal["seed", "lab", "experimental"]


class BadParameter(Exception):
    """A query parameter is missing or malformed: answered with 400 naming ``param``."""

    def __init__(self, param: str, message: str, hint: str | None = None) -> None:
        self.param = param
        self.message = f"{param}: {message}"
        self.hint = hint
        super().__init__(self.message)


# -- query parsing (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxQuery:
    """The checked parameters of one sandbox request (the web twin of ``darkpool sandbox``)."""

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
    bands_window: int = 20
    figure: FigureKind = "seed"
    plan: LabPlan | None = field(default=None, compare=False)

    def with_range(self, start: dt.date, end: dt.date) -> SandboxQuery:
        """The same query with a resolved date range."""
        return dataclasses.replace(self, start=start, end=end)

    def to_query(self, **overrides: str) -> str:
        """URL query string reproducing this request (the links on the page)."""
        pairs: list[tuple[str, str]] = [("ticker", self.ticker)]
        if self.start is not None:
            pairs.append(("start", self.start.isoformat()))
        if self.end is not None:
            pairs.append(("end", self.end.isoformat()))
        pairs += [("dot_mode", self.dot_mode),
                  ("blend_short_weight", f"{self.blend_short_weight:g}"),
                  ("blend_flow_weight", f"{self.blend_flow_weight:g}"),
                  ("warmup", "1" if self.warmup else "0")]
        optional = {"variants": self.variants, "panels": self.panels,
                    "hist_signal": self.hist_signal, "bands_signal": self.bands_signal}
        pairs += [(name, value) for name, value in optional.items() if value is not None]
        pairs += [("formula", spec) for spec in self.formulas]
        if self.bands_window != 20:
            pairs.append(("bands_window", str(self.bands_window)))
        if self.experimental:
            pairs.append(("experimental", "1"))
        pairs += list(overrides.items())
        return urlencode(pairs)


def _single(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The parameter's value, stripped; ``None`` when absent or blank; 400 when repeated."""
    values = query.get(name, [])
    if len(values) > 1:
        raise BadParameter(name, f"given {len(values)} times; give it once")
    text = values[0].strip() if values else ""
    return text or None


def _date(query: Mapping[str, Sequence[str]], name: str) -> dt.date | None:
    from darkpool_analysis.trading_calendar import to_date

    text = _single(query, name)
    if text is None:
        return None
    try:
        return to_date(text)
    except ValueError:
        raise BadParameter(name, f"{text!r} is not a date", "expected YYYY-MM-DD") from None


def _float(query: Mapping[str, Sequence[str]], name: str, default: float) -> float:
    text = _single(query, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadParameter(name, f"{text!r} is not a number", "e.g. 0.6") from None
    if not math.isfinite(value):
        raise BadParameter(name, f"{text!r} is not a finite number", "e.g. 0.6")
    return value


def _bool(query: Mapping[str, Sequence[str]], name: str, default: bool) -> bool:
    text = _single(query, name)
    if text is None:
        return default
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise BadParameter(name, f"{text!r} is not a yes/no value", "use 1 or 0")


def _int(query: Mapping[str, Sequence[str]], name: str, default: int, low: int,
         high: int) -> int:
    text = _single(query, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, f"{text!r} is not an integer",
                           f"a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise BadParameter(name, f"{value} is out of range", f"from {low} to {high}")
    return value


def _choice(query: Mapping[str, Sequence[str]], name: str, choices: Sequence[str],
            default: str) -> str:
    text = _single(query, name)
    if text is None:
        return default
    if text not in choices:
        raise BadParameter(name, f"{text!r} is not valid", f"one of {', '.join(choices)}")
    return text


def _lab_plan(variants: str | None, formulas: tuple[str, ...], panels: str | None,
              hist_signal: str | None, bands_signal: str | None,
              bands_window: int) -> LabPlan | None:
    """Resolve the lab options like ``darkpool sandbox``, blaming the right parameter."""
    from darkpool_analysis import sandbox_lab
    from darkpool_analysis.errors import ConfigError
    from darkpool_analysis.signals import get_variant

    def check(param: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except ConfigError as exc:
            raise BadParameter(param, exc.message, exc.hint) from None

    parsed = check("panels", lambda: sandbox_lab.parse_panels(panels))
    user = check("formula", lambda: collect_formulas(formulas, []))
    check("variants", lambda: sandbox_lab.resolve_variants(
        sandbox_lab.split_names(variants), user))
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


def parse_query(query: Mapping[str, Sequence[str]]) -> SandboxQuery:
    """Check a sandbox request's parameters (``parse_qs`` output); raises :class:`BadParameter`."""
    from darkpool_analysis.sandbox import normalise_ticker
    from darkpool_analysis.sandbox_lab import DEFAULT_BANDS_WINDOW
    from darkpool_analysis.signals import MAX_WINDOW

    ticker = _single(query, "ticker")
    if ticker is None:
        raise BadParameter("ticker", "is required", "e.g. ticker=NKE")
    if len(ticker) > MAX_TICKER_LENGTH:
        raise BadParameter("ticker", f"is longer than {MAX_TICKER_LENGTH} characters")
    try:
        symbol = normalise_ticker(ticker)
    except ValueError as exc:
        raise BadParameter("ticker", str(exc), "e.g. NKE, BRK.B") from None
    start, end = _date(query, "start"), _date(query, "end")
    if start is not None and end is not None and start > end:
        raise BadParameter("start", f"{start} is after end {end}")
    seed_exact = _bool(query, "seed_exact", False)
    warmup = _bool(query, "warmup", True) and not seed_exact
    formulas = tuple(line.strip() for value in query.get("formula", [])
                     for line in value.splitlines() if line.strip())
    variants, panels = _single(query, "variants"), _single(query, "panels")
    hist_signal, bands_signal = _single(query, "hist_signal"), _single(query, "bands_signal")
    bands_window = _int(query, "bands_window", DEFAULT_BANDS_WINDOW, 2, MAX_WINDOW)
    plan = _lab_plan(variants, formulas, panels, hist_signal, bands_signal, bands_window)
    figure = _choice(query, "figure", FIGURES, "seed")
    if figure == "lab" and (plan is None or not plan.lab_figure):
        raise BadParameter("figure", "lab needs variants or panels without a + prefix",
                           "e.g. variants=current,option_a or panels=heatmap")
    return SandboxQuery(
        ticker=ticker, symbol=symbol, start=start, end=end,
        dot_mode=_choice(query, "dot_mode", DOT_MODES, "current"),
        blend_short_weight=_float(query, "blend_short_weight", 0.6),
        blend_flow_weight=_float(query, "blend_flow_weight", 0.4),
        warmup=warmup, experimental=_bool(query, "experimental", False),
        variants=variants, formulas=formulas, panels=panels, hist_signal=hist_signal,
        bands_signal=bands_signal, bands_window=bands_window,
        figure=cast(FigureKind, figure),
        plan=plan,
    )


# -- the sandbox behind the endpoints --------------------------------------------------------


@dataclass
class SandboxApp:
    """What the request handlers share: settings and the figure-rendering lock."""

    settings: Settings
    render_lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self, request: SandboxQuery) -> tuple[SandboxQuery, pd.DataFrame]:
        """Resolve the default range and load the sandbox frame (read-only)."""
        from darkpool_analysis import sandbox

        first, last = sandbox.default_range(request.symbol, request.start, request.end,
                                            settings=self.settings)
        frame = sandbox.load(request.symbol, first, last, warmup=request.warmup,
                             settings=self.settings,
                             blend_short_weight=request.blend_short_weight,
                             blend_flow_weight=request.blend_flow_weight)
        return request.with_range(first, last), frame

    def summary(self, request: SandboxQuery, frame: pd.DataFrame) -> dict[str, Any]:
        """The JSON twin of ``darkpool sandbox``'s printed summary, plus the coverage."""
        from darkpool_analysis import inventory, sandbox
        from darkpool_analysis.views.sandbox_chart import PROXY_NOTE

        assert request.start is not None and request.end is not None  # resolved by load()
        zones = sandbox.zone_counts(frame)
        gaps = sandbox.data_gaps(frame, request.start, request.end)
        first, last = inventory.symbol_coverage(self.settings.db_path, request.symbol)
        return {
            "symbol": request.symbol,
            "start": request.start.isoformat(),
            "end": request.end.isoformat(),
            "rows": len(frame),
            "warmup": request.warmup,
            "mode": ("with warm-up (full z windows)" if request.warmup
                     else "seed-exact z windows (shown range only)"),
            "zones": {str(variant): {name: int(count) for name, count in counts.items()}
                      for variant, counts in zones.to_dict("index").items()},
            "gaps": [day.isoformat() for day in gaps],
            "coverage": {"first": first.isoformat() if first else None,
                         "last": last.isoformat() if last else None},
            "caveat": PROXY_NOTE,
        }

    def figure(self, request: SandboxQuery, frame: pd.DataFrame) -> Figure:
        """The requested figure, as ``darkpool sandbox`` draws it (not yet rendered)."""
        from darkpool_analysis import sandbox_lab
        from darkpool_analysis.views import lab_chart, sandbox_chart

        plan = request.plan
        if request.figure == "experimental":
            return sandbox_chart.plot_experimental(frame)
        if plan is None or (request.figure == "seed" and not plan.panels.appended):
            return sandbox_chart.plot(frame, request.dot_mode, request.blend_short_weight,
                                      request.blend_flow_weight)
        params = sandbox_lab.variant_params(plan.to_compute, self.settings,
                                            blend_short_weight=request.blend_short_weight,
                                            blend_flow_weight=request.blend_flow_weight)
        dates = frame["date"]
        lab = sandbox_lab.load_lab(request.symbol, dates.iloc[0], dates.iloc[-1],
                                   plan.to_compute, formulas=plan.formulas, params=params,
                                   bands_signal=plan.bands_signal,
                                   bands_window=plan.bands_window, settings=self.settings)
        if request.figure == "lab":
            return lab_chart.plot_lab(lab, plan.variants, plan.panels.lab,
                                      compare=plan.compare, hist_signal=plan.hist_signal)
        return lab_chart.plot_seed_with_panels(
            frame, lab, plan.panels.appended, dot_mode=request.dot_mode,
            blend_short_weight=request.blend_short_weight,
            blend_flow_weight=request.blend_flow_weight, compare=plan.compare,
            hist_signal=plan.hist_signal)

    def render(self, request: SandboxQuery, frame: pd.DataFrame, fmt: str) -> bytes:
        """The figure as PNG or SVG bytes (drawn and saved under the render lock)."""
        with self.render_lock:
            fig = self.figure(request, frame)
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=100, facecolor=fig.get_facecolor())
        return buffer.getvalue()

    def symbols(self, prefix: str | None, limit: int) -> list[str]:
        """Symbols with ``daily_metrics`` rows, optionally starting with ``prefix``."""
        from darkpool_analysis.errors import StoreError
        from darkpool_analysis.store import connect_readonly, table_exists

        pattern = "" if prefix is None else re.sub(r"([\\%_])", r"\\\1", prefix.upper())
        conn = connect_readonly(self.settings.db_path)
        try:
            if not table_exists(conn, "daily_metrics"):
                raise StoreError(f"{self.settings.db_path} has no daily_metrics table",
                                 hint="run `darkpool build` to create and fill it")
            rows = conn.execute(
                "SELECT DISTINCT symbol FROM daily_metrics WHERE symbol LIKE ? ESCAPE '\\' "
                "ORDER BY symbol LIMIT ?", [f"{pattern}%", limit]).fetchall()
        finally:
            conn.close()
        return [str(row[0]) for row in rows]


# -- HTML ------------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page_template() -> str:
    return resources.files("darkpool_analysis.web").joinpath("page.html").read_text("utf-8")


def _options(choices: Sequence[str], selected: str) -> str:
    return "".join(f'<option value="{_esc(c)}"{" selected" if c == selected else ""}>'
                   f"{_esc(c)}</option>" for c in choices)


def _value(query: Mapping[str, Sequence[str]], name: str, default: str = "") -> str:
    values = query.get(name, [])
    return _esc(values[0] if values else default)


def _checked(query: Mapping[str, Sequence[str]], name: str, default: bool = False) -> str:
    values = query.get(name, [])
    on = values[0].strip().lower() in _TRUE if values else default
    return " checked" if on else ""


def _zone_table(summary: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in ("variant", *ZONE_HEADERS))
    rows = "".join(
        f"<tr><td>{_esc(variant)}</td>"
        + "".join(f'<td class="num">{int(n)}</td>' for n in counts.values()) + "</tr>"
        for variant, counts in summary["zones"].items())
    return f"<table><caption>Days per zone</caption><tr>{head}</tr>{rows}</table>"


def _results_html(request: SandboxQuery, summary: Mapping[str, Any]) -> str:
    gaps: list[str] = summary["gaps"]
    if gaps:
        more = f" (+{len(gaps) - SHOWN_GAPS} more)" if len(gaps) > SHOWN_GAPS else ""
        gap_line = (f'<p class="warn">data gaps: {len(gaps)} session(s) without short data: '
                    f"{_esc(', '.join(gaps[:SHOWN_GAPS]))}{_esc(more)}</p>")
    else:
        gap_line = '<p class="ok">no data gaps: every session in range has short data</p>'
    coverage = summary["coverage"]
    query = request.to_query()
    images = [("seed chart", request.to_query(figure="seed"))]
    if request.plan is not None and request.plan.lab_figure:
        images.append(("signal lab", request.to_query(figure="lab")))
    if request.experimental:
        images.append(("experimental: imbalance x log1p(B + S)",
                       request.to_query(figure="experimental")))
    figures = "".join(
        f'<figure><img src="/chart.png?{_esc(q)}" alt="{_esc(request.symbol)} {_esc(label)}">'
        f'<figcaption>{_esc(label)}: <a href="/chart.png?{_esc(q)}">PNG</a> '
        f'<a href="/chart.svg?{_esc(q)}">SVG</a></figcaption></figure>'
        for label, q in images)
    return (
        f'<section id="results"><h2>{_esc(request.symbol)} {_esc(summary["start"])} .. '
        f'{_esc(summary["end"])}: {int(summary["rows"])} rows, {_esc(summary["mode"])}</h2>'
        f'<p>stored coverage: {_esc(coverage["first"])} .. {_esc(coverage["last"])} &middot; '
        f'<a href="/api/frame.csv?{_esc(query)}">download CSV</a> &middot; '
        f'<a href="/api/summary.json?{_esc(query)}">summary JSON</a></p>'
        f"{_zone_table(summary)}{gap_line}{figures}</section>"
    )


def _error_html(status: HTTPStatus, message: str, hint: str | None) -> str:
    hint_html = f'<p class="hint">hint: {_esc(hint)}</p>' if hint else ""
    return (f'<section id="error" class="error"><h2>{status.value} {_esc(status.phrase)}</h2>'
            f"<p>{_esc(message)}</p>{hint_html}</section>")


def render_page(template: str, query: Mapping[str, Sequence[str]], body: str, nonce: str,
                variant_names: Sequence[str]) -> str:
    """Fill the page template: the form keeps the user's values (all escaped)."""
    from darkpool_analysis.sandbox_lab import PANELS
    from darkpool_analysis.views.sandbox_chart import PROXY_NOTE

    seed_exact = _checked(query, "seed_exact") or (
        " checked" if query.get("warmup", [""])[0].strip().lower() in _FALSE else "")
    fields = {
        "nonce": _esc(nonce),
        "caveat": _esc(PROXY_NOTE),
        "ticker": _value(query, "ticker"),
        "start": _value(query, "start"),
        "end": _value(query, "end"),
        "dot_mode_options": _options(DOT_MODES, query.get("dot_mode", ["current"])[0]),
        "blend_short_weight": _value(query, "blend_short_weight", "0.6"),
        "blend_flow_weight": _value(query, "blend_flow_weight", "0.4"),
        "seed_exact": seed_exact,
        "experimental": _checked(query, "experimental"),
        "variants": _value(query, "variants"),
        "formula": _esc("\n".join(query.get("formula", []))),
        "panels": _value(query, "panels"),
        "hist_signal": _value(query, "hist_signal"),
        "bands_signal": _value(query, "bands_signal"),
        "bands_window": _value(query, "bands_window", "20"),
        "variant_chips": "".join(f'<button type="button" class="chip" data-target="variants" '
                                 f'data-name="{_esc(v)}">{_esc(v)}</button>'
                                 for v in variant_names),
        "panel_chips": "".join(f'<button type="button" class="chip" data-target="panels" '
                               f'data-name="{_esc(p)}">{_esc(p)}</button>' for p in PANELS),
        "body": body,
    }
    # One pass: filled-in values are never scanned again for placeholders.
    return _PLACEHOLDER.sub(lambda match: fields[match.group(1)], template)


# -- HTTP ------------------------------------------------------------------------------------


class SandboxHandler(BaseHTTPRequestHandler):
    """Routes GET/HEAD requests to the sandbox; every other method answers 405."""

    server: SandboxServer
    server_version = "darkpool-web"
    protocol_version = "HTTP/1.1"

    # -- responses --

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str, hint: str | None = None,
               param: str | None = None) -> None:
        payload: dict[str, str | None] = {"error": message, "hint": hint}
        if param is not None:
            payload["parameter"] = param
        self._json(status, payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Access log through :mod:`logging` instead of stderr."""
        log.info("%s - %s", self.address_string(), format % args)

    # -- methods --

    def do_GET(self) -> None:
        """Dispatch; package errors become 4xx/5xx JSON (or the page's error box)."""
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        route = self.ROUTES.get(url.path)
        if route is None:
            self._error(HTTPStatus.NOT_FOUND, f"no page at {url.path}",
                        "try / or /api/summary.json?ticker=...")
            return
        if url.path == "/":
            self._page(query)
            return
        try:
            route(self, query)
        except BadParameter as exc:
            self._error(HTTPStatus.BAD_REQUEST, exc.message, exc.hint, exc.param)
        except NoDataError as exc:
            self._error(HTTPStatus.NOT_FOUND, exc.message, exc.hint)
        except DarkpoolError as exc:
            log.warning("%s: %s", url.path, exc.message)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, exc.message, exc.hint)
        except Exception:  # the request boundary: log it, answer 500, keep serving
            log.exception("unexpected error serving %s", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the server log)")

    def do_HEAD(self) -> None:
        """As GET, without the body."""
        self.do_GET()

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED,
                   json.dumps({"error": f"method {self.command} not allowed",
                               "hint": "only GET and HEAD"}).encode(),
                   "application/json", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    # -- routes --

    def _page(self, query: dict[str, list[str]]) -> None:
        from darkpool_analysis.signals import variant_names

        nonce = secrets.token_urlsafe(16)
        status, body = HTTPStatus.OK, ""
        if any(value.strip() for value in query.get("ticker", [])):
            status, body = self._page_results(query)
        page = render_page(self.server.template, query, body, nonce, variant_names())
        csp = (f"default-src 'self'; img-src 'self'; script-src 'nonce-{nonce}'; "
               f"style-src 'nonce-{nonce}'; form-action 'self'; base-uri 'none'")
        self._send(status, page.encode(), "text/html; charset=utf-8",
                   {"Content-Security-Policy": csp})

    def _page_results(self, query: dict[str, list[str]]) -> tuple[HTTPStatus, str]:
        """The results section, or an error box with the status the API would answer."""
        try:
            request, frame = self.server.app.load(parse_query(query))
            return HTTPStatus.OK, _results_html(request, self.server.app.summary(request, frame))
        except BadParameter as exc:
            return (HTTPStatus.BAD_REQUEST,
                    _error_html(HTTPStatus.BAD_REQUEST, exc.message, exc.hint))
        except NoDataError as exc:
            return HTTPStatus.NOT_FOUND, _error_html(HTTPStatus.NOT_FOUND, exc.message, exc.hint)
        except DarkpoolError as exc:
            log.warning("page: %s", exc.message)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            return status, _error_html(status, exc.message, exc.hint)
        except Exception:  # the request boundary: log it, show a 500 box, keep serving
            log.exception("unexpected error serving %s", self.path)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            return status, _error_html(status, "internal error (see the server log)", None)

    def _chart(self, query: dict[str, list[str]], fmt: str, content_type: str) -> None:
        request, frame = self.server.app.load(parse_query(query))
        self._send(HTTPStatus.OK, self.server.app.render(request, frame, fmt), content_type)

    def _png(self, query: dict[str, list[str]]) -> None:
        self._chart(query, "png", "image/png")

    def _svg(self, query: dict[str, list[str]]) -> None:
        self._chart(query, "svg", "image/svg+xml")

    def _csv(self, query: dict[str, list[str]]) -> None:
        request, frame = self.server.app.load(parse_query(query))
        text = frame.assign(date=frame["date"].dt.date).to_csv(index=False)
        name = _SAFE_FILENAME.sub("_", f"{request.symbol}_sandbox_{request.start}_{request.end}")
        self._send(HTTPStatus.OK, text.encode(), "text/csv; charset=utf-8",
                   {"Content-Disposition": f'attachment; filename="{name}.csv"'})

    def _summary(self, query: dict[str, list[str]]) -> None:
        request, frame = self.server.app.load(parse_query(query))
        self._json(HTTPStatus.OK, self.server.app.summary(request, frame))

    def _symbols(self, query: dict[str, list[str]]) -> None:
        limit = _int(query, "limit", MAX_SYMBOLS, 1, MAX_SYMBOLS)
        self._json(HTTPStatus.OK, self.server.app.symbols(_single(query, "q"), limit))

    def _health(self, query: dict[str, list[str]]) -> None:
        self._json(HTTPStatus.OK, {"status": "ok",
                                   "database": self.server.app.settings.db_path.exists()})

    ROUTES: Final[dict[str, Callable[[SandboxHandler, dict[str, list[str]]], None]]] = {
        "/": _page,
        "/chart.png": _png,
        "/chart.svg": _svg,
        "/api/frame.csv": _csv,
        "/api/summary.json": _summary,
        "/api/symbols": _symbols,
        "/healthz": _health,
    }


class SandboxServer(ThreadingHTTPServer):
    """The threaded HTTP server with the shared :class:`SandboxApp` and page template."""

    daemon_threads = True  # Ctrl-C does not wait for open connections

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        self.template = _page_template()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, SandboxHandler)

    @property
    def url(self) -> str:
        """``http://host:port/`` of the bound socket."""
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}/"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (the page is then private)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                settings: Settings | None = None) -> SandboxServer:
    """Bind the sandbox server (port 0 = any free port); call ``serve_forever()`` to run it.

    Selects matplotlib's Agg backend (no display is needed to render charts).
    """
    import matplotlib

    matplotlib.use("Agg")
    app = SandboxApp(settings if settings is not None else load_config())
    server = SandboxServer((host, port), app)
    log.info("darkpool web serving %s (database %s)", server.url, app.settings.db_path)
    return server


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "BadParameter",
    "SandboxApp",
    "SandboxHandler",
    "SandboxQuery",
    "SandboxServer",
    "is_loopback",
    "make_server",
    "parse_query",
    "render_page",
]
