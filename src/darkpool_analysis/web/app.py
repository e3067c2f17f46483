"""The ``darkpool web`` application: FastAPI routes over :class:`service.SandboxService`.

``GET /``                    the page (sandbox, market and evaluation tabs; Plotly charts)
``GET /api/sandbox``         the sandbox frame: ``rows`` = one record per session, + summary
``GET /api/summary``         rows, days per zone and variant, data gaps, coverage
``GET /api/frame.csv``       the frame as ``darkpool sandbox --csv`` writes it
``GET /chart.png|svg``       the CLI's matplotlib figure (``figure=seed|lab|experimental``)
``GET /api/symbols``         symbols with ``daily_metrics`` rows (``?q=prefix&limit=n``)
``GET /api/database``        coverage per source, the synthetic label, rebuilds owed
``GET /api/index``           the dark index of a universe; ``POST`` with a membership file
``GET /api/scan``            the scanner's ranking for a date
``POST /api/evaluate``       start an evaluation; ``GET /api/evaluate/{id}`` polls it
``GET /healthz``             liveness; ``/docs`` and ``/openapi.json`` the API schema

Every request opens the published database read-only, so ingests and builds can run
meanwhile. Bad parameters answer 400 naming the parameter (413 over a work limit), missing
data 404, a busy render pool 503 and a slow render 504; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import gzip
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from darkpool_analysis import __version__
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import (
    ConfigError,
    DarkpoolError,
    DataFormatError,
    NoDataError,
)
from darkpool_analysis.signals import MAX_WINDOW
from darkpool_analysis.web import limits
from darkpool_analysis.web.jobs import JobBusy, JobManager
from darkpool_analysis.web.service import (
    DOT_MODES,
    BadParameter,
    SandboxService,
    check_formulas,
    check_range,
    make_request,
    records_json,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("darkpool_analysis.web.access")

MAX_SYMBOLS: Final = 10_000
MAX_TICKER_LENGTH: Final = 32
STATIC: Final = "darkpool_analysis.web"
#: The Plotly bundle the page loads: the vendored plotly.js "basic" partial bundle (scatter,
#: bar, pie; see static/VENDORED.md). Its name carries the version, so it is cached for good.
PLOTLY_BUNDLE: Final = "plotly-basic-4.1.1.min.js"
_T = TypeVar("_T")

#: Hints shown next to a field when the framework rejects its value.
FIELD_HINTS: Final[dict[str, str]] = {
    "start": "expected YYYY-MM-DD", "end": "expected YYYY-MM-DD", "date": "expected YYYY-MM-DD",
    "dot_mode": f"one of {', '.join(DOT_MODES)}",
    "blend_short_weight": "a finite number, e.g. 0.6",
    "blend_flow_weight": "a finite number, e.g. 0.4",
    "seed_exact": "use 1 or 0", "warmup": "use 1 or 0", "experimental": "use 1 or 0",
    "bands_window": f"a whole number from 2 to {MAX_WINDOW}",
    "figure": "one of seed, lab, experimental", "limit": f"from 1 to {MAX_SYMBOLS}",
    "ticker": f"at most {MAX_TICKER_LENGTH} characters, e.g. NKE",
    "top": "a positive number of rows",
}


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


Opt = BeforeValidator(_blank_to_none)
OptDate = Annotated[dt.date | None, Opt]
OptText = Annotated[Annotated[str, Field(max_length=2000)] | None, Opt]
OptTicker = Annotated[Annotated[str, Field(max_length=MAX_TICKER_LENGTH)] | None, Opt]
Weight = Annotated[float, Field(allow_inf_nan=False)]


class SandboxParams(BaseModel):
    """Query parameters of the sandbox endpoints (``darkpool sandbox``'s options)."""

    model_config = ConfigDict(extra="forbid")

    ticker: OptTicker = Field(None, description="any spelling: NKE, brk/b, BRK-B")
    start: OptDate = Field(None, description="first date (default: 60 sessions before end)")
    end: OptDate = Field(None, description="last date (default: the ticker's last date)")
    dot_mode: Literal["current", "option_a", "option_b", "all"] = "current"
    blend_short_weight: Weight = 0.6
    blend_flow_weight: Weight = 0.4
    warmup: bool = True
    seed_exact: bool = Field(False, description="z windows over the shown range only")
    experimental: bool = False
    variants: OptText = Field(None, description="comma-separated variant names")
    formula: list[str] = Field(default_factory=list, description="name=expression (repeat)")
    panels: OptText = None
    hist_signal: OptText = None
    bands_signal: OptText = None
    bands_window: int = Field(20, ge=2, le=MAX_WINDOW)
    figure: Literal["seed", "lab", "experimental"] = "seed"


class SymbolsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: OptTicker = None
    limit: int = Field(MAX_SYMBOLS, ge=1, le=MAX_SYMBOLS)


class IndexParams(BaseModel):
    """The dark index of a universe (``all`` = every symbol) over a range."""

    model_config = ConfigDict(extra="forbid")
    universe: Annotated[str, Field(min_length=1, max_length=200)] = "all"
    start: OptDate = None
    end: OptDate = None
    z_window: int | None = Field(None, ge=2, le=MAX_WINDOW)


class IndexBody(BaseModel):
    """The dark index of an uploaded membership file (``ticker,start_date,end_date``)."""

    model_config = ConfigDict(extra="forbid")
    membership: Annotated[str, Field(min_length=1, max_length=limits.MAX_MEMBERSHIP_BYTES)]
    name: Annotated[str, Field(min_length=1, max_length=200)] = "membership.csv"
    start: OptDate = None
    end: OptDate = None
    z_window: int | None = Field(None, ge=2, le=MAX_WINDOW)


class ScanParams(BaseModel):
    """The scanner: rank a universe by a signal on one date."""

    model_config = ConfigDict(extra="forbid")
    date: OptDate = Field(None, description="the session (default: the last one)")
    by: Annotated[str, Field(min_length=1, max_length=200)] = "current"
    universe: Annotated[str, Field(min_length=1, max_length=200)] = "all"
    top: int | None = Field(25, ge=1, le=5000)
    min_dollar_volume: Annotated[float | None, Field(ge=0, allow_inf_nan=False)] = None
    formula: list[str] = Field(default_factory=list)


class EvaluateBody(BaseModel):
    """What ``POST /api/evaluate`` runs (``darkpool evaluate``'s main options)."""

    model_config = ConfigDict(extra="forbid")
    variants: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=lambda: ["current", "option_a", "option_b"])
    formulas: list[Annotated[str, Field(max_length=limits.MAX_FORMULA_LINE)]] = Field(
        default_factory=list)
    universe: Annotated[Annotated[str, Field(max_length=10_000)] | None, Opt] = None
    start: OptDate = None
    end: OptDate = None
    horizons: Annotated[str, Field(pattern=r"^\s*\d+(\s*,\s*\d+)*\s*$", max_length=100)] = (
        "1,5,10,20")
    quantiles: int = Field(5, ge=2, le=10)
    walk: bool = True
    placebo: bool = True
    otc_alignment: Literal["published", "week"] = "published"


# -- helpers ----------------------------------------------------------------------------------


def _error(status: int, message: str, hint: str | None = None, param: str | None = None,
           **extra: Any) -> JSONResponse:
    payload: dict[str, Any] = {"error": message, "hint": hint}
    if param is not None:
        payload["parameter"] = param
    payload.update(extra)
    return JSONResponse(payload, status_code=status, headers={"Cache-Control": "no-store"})


def _no_repeats(request: Request, repeatable: frozenset[str] = frozenset({"formula"})) -> None:
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen and name not in repeatable:
            count = len(request.query_params.getlist(name))
            raise BadParameter(name, f"given {count} times; give it once")
        seen.add(name)


def _json_text(text: str) -> Response:
    return Response(text, media_type="application/json", headers={"Cache-Control": "no-store"})


class RenderPool:
    """Charts render in a few worker threads; at most :data:`limits.RENDER_QUEUE` wait.

    A request that finds the queue full waits :data:`limits.RENDER_QUEUE_TIMEOUT_S` and is
    answered 503; one whose render takes over :data:`limits.RENDER_TIMEOUT_S` is answered 504
    (its slot is freed when the render ends: the work itself is bounded by the request
    limits). Requests that do not render never touch the pool.
    """

    def __init__(self, workers: int = limits.RENDER_WORKERS,
                 queue: int = limits.RENDER_QUEUE) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")
        self._slots = threading.BoundedSemaphore(workers + queue)

    def run(self, work: Callable[[], _T], *, timeout: float = limits.RENDER_TIMEOUT_S,
            wait: float = limits.RENDER_QUEUE_TIMEOUT_S) -> _T:
        if not self._slots.acquire(timeout=wait):
            raise RenderBusy("every chart worker is busy; try again in a moment")
        future: Future[_T] = self._pool.submit(work)
        future.add_done_callback(lambda _f: self._slots.release())
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            raise RenderTimeout(f"the chart took longer than {timeout:g} s") from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


#: Media types of the page's files (``/`` and ``/static/NAME``).
ASSET_KINDS: Final = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


@functools.lru_cache(maxsize=32)
def _asset(name: str) -> tuple[bytes, bytes, str]:
    """A file of the package's ``static/`` folder: its bytes, their gzip form and an ETag.

    Read once per process (the files are part of the installed package), so requests are
    answered from memory on the event loop.
    """
    item = resources.files(STATIC).joinpath("static", name)
    if not item.is_file():
        raise StarletteHTTPException(404)
    body = item.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return body, gzip.compress(body, 6, mtime=0), etag


def _preload_assets() -> None:
    """Read and compress every file of ``static/`` now, so no request waits for it."""
    for item in resources.files(STATIC).joinpath("static").iterdir():
        if Path(item.name).suffix in ASSET_KINDS:
            _asset(item.name)


def _asset_response(name: str, request: Request, cache: str) -> Response:
    """``name`` gzip-compressed when the browser accepts it (a third of the Plotly bundle's
    bytes), or 304 when its copy is current (``If-None-Match``)."""
    body, zipped, etag = _asset(name)
    headers = {"Cache-Control": cache, "ETag": etag, "Vary": "Accept-Encoding",
               "X-Content-Type-Options": "nosniff"}
    kind = ASSET_KINDS[Path(name).suffix]
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(zipped, media_type=kind, headers=headers)
    return Response(body, media_type=kind, headers=headers)


class RenderBusy(Exception):
    """No chart worker free in time (503)."""


class RenderTimeout(Exception):
    """A chart took too long (504)."""


class AccessLog:
    """ASGI middleware: one access-log line per request (method, path, status, ms) through
    :mod:`logging`, refusing over-long query strings (414) before any routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]
        query = scope.get("query_string", b"")

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        if len(query) > limits.MAX_QUERY_LENGTH:
            response = _error(414, f"the query string is {len(query)} characters; at most "
                              f"{limits.MAX_QUERY_LENGTH}", "ask for fewer formulas or "
                              "variants per request")
            await response(scope, receive, send_logged)
        else:
            try:
                await self.app(scope, receive, send_logged)
            except Exception:  # the request boundary: log once, answer 500, keep serving
                log.exception("unexpected error serving %s", scope["path"])
                if status[0] == 0:
                    await _error(500, "internal error (see the server log)")(
                        scope, receive, send_logged)
        client = scope.get("client")
        shown = scope["path"] + ("?" + query.decode("latin-1")[:200] if query else "")
        access_log.info("%s %s %s %d %.1fms", client[0] if client else "-", scope["method"],
                        shown, status[0], (time.perf_counter() - started) * 1000)


# -- the application --------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """The web application for ``settings.db_path`` (read-only)."""
    import matplotlib

    matplotlib.use("Agg")
    service = SandboxService(settings)
    renders = RenderPool()
    jobs = JobManager(settings)
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(_preload_assets)  # before the first request is accepted
        threading.Thread(target=_warm_imports, daemon=True, name="warm-imports").start()
        yield
        renders.shutdown()
        jobs.shutdown()

    app = FastAPI(title="darkpool web", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="The Accumulation Signal Sandbox, the market view and signal "
                  "evaluation over a local darkpool database (read-only). FINRA \"buy\" "
                  "volume is FINRA short-sale volume: a proxy for dealer-filled buying.")
    app.state.service, app.state.renders, app.state.jobs = service, renders, jobs
    app.add_middleware(AccessLog)

    # -- errors --

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "body")]
        param = loc[0] if loc else "request"
        if first.get("type") == "extra_forbidden":
            message = f"{param}: unknown parameter"
        else:
            shown = first.get("input")
            message = f"{param}: {shown!r} is not valid: {first.get('msg', 'invalid')}"
        return _error(400, message, FIELD_HINTS.get(param), param,
                      errors=[{"parameter": ".".join(str(p) for p in e.get("loc", ())[1:]),
                               "message": e.get("msg")} for e in errors])

    @app.exception_handler(BadParameter)
    async def _bad(_request: Request, exc: BadParameter) -> JSONResponse:
        return _error(exc.status, exc.message, exc.hint, exc.param)

    @app.exception_handler(NoDataError)
    async def _nodata(_request: Request, exc: NoDataError) -> JSONResponse:
        return _error(404, exc.message, exc.hint)

    @app.exception_handler(DataFormatError)
    async def _format(_request: Request, exc: DataFormatError) -> JSONResponse:
        return _error(400, exc.message, exc.hint)

    @app.exception_handler(ConfigError)
    async def _config(_request: Request, exc: ConfigError) -> JSONResponse:
        return _error(400, exc.message, exc.hint)

    @app.exception_handler(DarkpoolError)
    async def _darkpool(request: Request, exc: DarkpoolError) -> JSONResponse:
        log.warning("%s: %s", request.url.path, exc.message)
        return _error(500, exc.message, exc.hint)

    @app.exception_handler(RenderBusy)
    async def _busy(_request: Request, exc: RenderBusy) -> JSONResponse:
        return _error(503, str(exc), "the server is drawing other charts", retry_after=2)

    @app.exception_handler(RenderTimeout)
    async def _slow(_request: Request, exc: RenderTimeout) -> JSONResponse:
        return _error(504, str(exc), "ask for a shorter range or fewer variants")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error(404, f"no page at {request.url.path}",
                          "try /, /docs or /api/summary?ticker=...")
        if exc.status_code == 405:
            response = _error(405, f"method {request.method} not allowed here",
                              "see /docs for each path's methods")
            if exc.headers:
                response.headers.update(exc.headers)
            return response
        return _error(exc.status_code, str(exc.detail))

    # -- page and assets --

    csp = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; "
           "style-src 'self' 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
           "frame-ancestors 'none'")

    # The page and its files are answered on the event loop from memory (no worker-thread
    # hop): the first chart waits on them, not on the data requests.

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(_asset("index.html")[0], media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": csp, "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff"})

    @app.get(f"/static/{PLOTLY_BUNDLE}", include_in_schema=False)
    async def plotly_bundle(request: Request) -> Response:
        return _asset_response(PLOTLY_BUNDLE, request,
                               cache="public, max-age=31536000, immutable")

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        """The full bundle of the ``plotly`` package (every trace type; not used by the
        page, kept for old links and as the benchmark's baseline)."""
        return FileResponse(_plotly_path(), media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str, request: Request) -> Response:
        if "/" in name or Path(name).suffix not in (".js", ".css") or name.startswith("."):
            raise StarletteHTTPException(404)
        return _asset_response(name, request, cache="no-cache")

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, Any]:
        """Liveness, and whether the database file exists."""
        return {"status": "ok", "database": settings.db_path.exists()}

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        """Swagger UI for /openapi.json, its assets served from the swagger-ui-bundle
        package (no CDN)."""
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="darkpool web - API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")

    @app.get("/static/swagger/{name}", include_in_schema=False)
    def swagger_asset(name: str) -> FileResponse:
        import swagger_ui_bundle

        kinds = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                 "favicon-32x32.png": "image/png"}
        if name not in kinds:
            raise StarletteHTTPException(404)
        return FileResponse(Path(swagger_ui_bundle.swagger_ui_path) / name,
                            media_type=kinds[name],
                            headers={"Cache-Control": "public, max-age=86400"})

    # -- metadata --

    @app.get("/api/config", tags=["meta"])
    def config() -> dict[str, Any]:
        """Choices for the page: variants, panels, dot modes, universes, limits, palette."""
        from darkpool_analysis import sandbox_lab
        from darkpool_analysis.market import load_universes
        from darkpool_analysis.signals import REGISTRY
        from darkpool_analysis.views.sandbox_chart import DOT_SPECS, PROXY_NOTE
        from darkpool_analysis.views.style import COLORS

        try:
            universes = [{"name": u.name, "tickers": len(u.tickers) if not u.is_all else None,
                          "description": u.description}
                         for u in load_universes().values()]
        except DarkpoolError as exc:
            log.warning("universes: %s", exc.message)
            universes = []
        return {
            "version": __version__, "caveat": PROXY_NOTE, "colors": COLORS,
            "dot_modes": list(DOT_MODES), "dot_specs": DOT_SPECS,
            "variants": [{"name": v.name, "description": v.description, "scale": v.scale}
                         for v in REGISTRY.values()],
            "panels": list(sandbox_lab.PANELS), "universes": universes,
            "limits": {"formulas": limits.MAX_FORMULAS,
                       "formula_line": limits.MAX_FORMULA_LINE,
                       "variants": limits.MAX_VARIANTS, "range_days": limits.MAX_RANGE_DAYS},
        }

    @app.get("/api/database", tags=["meta"])
    def database() -> dict[str, Any]:
        """Coverage per source (dates, symbols, gaps), the synthetic label, rebuilds owed."""
        return service.database()

    @app.get("/api/symbols", tags=["sandbox"])
    def symbols(request: Request, params: Annotated[SymbolsParams, Query()]) -> list[str]:
        """Symbols with ``daily_metrics`` rows starting with ``q`` (the ticker box)."""
        _no_repeats(request)
        return service.symbols(params.q, params.limit)

    # -- sandbox --

    def compute(request: Request, params: SandboxParams) -> Any:
        _no_repeats(request)
        checked = make_request(
            ticker=params.ticker, start=params.start, end=params.end,
            dot_mode=params.dot_mode, blend_short_weight=params.blend_short_weight,
            blend_flow_weight=params.blend_flow_weight, warmup=params.warmup,
            seed_exact=params.seed_exact, experimental=params.experimental,
            variants=params.variants, formulas=params.formula, panels=params.panels,
            hist_signal=params.hist_signal, bands_signal=params.bands_signal,
            bands_window=params.bands_window, figure=params.figure)
        try:
            return service.compute(checked)
        except NoDataError as exc:  # 404, naming the field to fix on the page
            param = "ticker" if exc.message.startswith("unknown ticker") else "start"
            raise BadParameter(param, exc.message, exc.hint, status=404) from None

    @app.get("/api/sandbox", tags=["sandbox"])
    def sandbox_api(request: Request, params: Annotated[SandboxParams, Query()]) -> Response:
        """The sandbox frame (``rows``: one record per session) with its summary; lab
        variants as ``variant:NAME`` columns, the bands as ``bands:median|upper|lower``."""
        return _json_text(service.payload(compute(request, params)))

    @app.get("/api/summary", tags=["sandbox"])
    def summary(request: Request, params: Annotated[SandboxParams, Query()]) -> dict[str, Any]:
        """Rows, days per zone and variant, data gaps, coverage, warm-up."""
        return service.summary(compute(request, params))

    @app.get("/api/summary.json", include_in_schema=False)
    def summary_json(request: Request,
                     params: Annotated[SandboxParams, Query()]) -> dict[str, Any]:
        return service.summary(compute(request, params))

    @app.get("/api/frame.csv", tags=["sandbox"])
    def frame_csv(request: Request, params: Annotated[SandboxParams, Query()]) -> Response:
        """The frame as ``darkpool sandbox --csv`` writes it (a ``#`` label line first when
        the database is synthetic)."""
        result = compute(request, params)
        frame = result.frame
        text = frame.assign(date=frame["date"].dt.date).to_csv(index=False)
        database_info = service.database()
        if database_info["synthetic"]:
            text = f"# {database_info['label']}\n{text}"
        r = result.request
        name = "".join(c if c.isalnum() or c in "._-" else "_"
                       for c in f"{r.symbol}_sandbox_{r.start}_{r.end}")
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"',
                                 "Cache-Control": "no-store"})

    def chart(request: Request, params: SandboxParams, fmt: str, kind: str) -> Response:
        result = compute(request, params)
        body = renders.run(lambda: service.render(result, fmt))
        return Response(body, media_type=kind, headers={"Cache-Control": "no-store"})

    @app.get("/chart.png", tags=["sandbox"], response_class=Response)
    def chart_png(request: Request, params: Annotated[SandboxParams, Query()]) -> Response:
        """The CLI's figure as PNG (the seed chart, the lab or the experiment)."""
        return chart(request, params, "png", "image/png")

    @app.get("/chart.svg", tags=["sandbox"], response_class=Response)
    def chart_svg(request: Request, params: Annotated[SandboxParams, Query()]) -> Response:
        """The CLI's figure as SVG."""
        return chart(request, params, "svg", "image/svg+xml")

    # -- market --

    def default_range(start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date]:
        metrics = next((s for s in service.database()["sources"]
                        if s["table"] == "daily_metrics"), None)
        if metrics is None or metrics["last"] is None:
            raise NoDataError("daily_metrics is empty", hint="run `darkpool build`")
        last = end or dt.date.fromisoformat(metrics["last"])
        first = start or max(dt.date.fromisoformat(metrics["first"]),
                             last - dt.timedelta(days=365))
        check_range(first, last, limits.MAX_EVAL_RANGE_DAYS)
        return first, last

    def index_payload(members: Any, start: dt.date | None, end: dt.date | None,
                      z_window: int | None, name: str | None) -> Response:
        from darkpool_analysis import market

        first, last = default_range(start, end)
        frame = market.index(members, first, last, name=name, z_window=z_window,
                             settings=settings)
        return _json_text('{"attrs": ' + _attrs_json(frame.attrs) + ', "rows": '
                          + records_json(frame) + "}")

    @app.get("/api/index", tags=["market"])
    def index_api(request: Request, params: Annotated[IndexParams, Query()]) -> Response:
        """The DIX-style dark index of a universe per session (``rows``) and its ``attrs``."""
        _no_repeats(request)
        return index_payload(params.universe, params.start, params.end, params.z_window, None)

    @app.post("/api/index", tags=["market"])
    def index_upload(body: IndexBody) -> Response:
        """The dark index of an uploaded membership file (``ticker,start_date,end_date``)."""
        from darkpool_analysis.market import parse_membership

        membership = parse_membership(body.membership, body.name)
        return index_payload(membership, body.start, body.end, body.z_window, None)

    @app.get("/api/scan", tags=["market"])
    def scan_api(request: Request, params: Annotated[ScanParams, Query()]) -> Response:
        """Rank a universe by a signal on a date: the top and bottom ``top`` rows."""
        from darkpool_analysis import market
        from darkpool_analysis.formulas import collect_formulas
        from darkpool_analysis.web.service import split_formulas

        _no_repeats(request)
        lines = split_formulas(params.formula)
        check_formulas(lines)
        try:
            formulas = collect_formulas(lines, [])
        except ConfigError as exc:
            raise BadParameter("formula", exc.message, exc.hint) from None
        day = params.date or default_range(None, None)[1]
        try:
            frame = market.scan(day, by=params.by, universe=params.universe, top=params.top,
                                min_dollar_volume=params.min_dollar_volume, formulas=formulas,
                                settings=settings)
        except ArithmeticError as exc:
            raise BadParameter("formula", f"a number in a formula is out of range ({exc})",
                               "use numbers below 1e308") from None
        return _json_text('{"attrs": ' + _attrs_json(frame.attrs) + ', "columns": '
                          + _attrs_json(list(frame.columns)) + ', "rows": '
                          + records_json(frame) + "}")

    # -- evaluation --

    @app.post("/api/evaluate", tags=["evaluation"], status_code=202)
    def evaluate_start(body: EvaluateBody) -> JSONResponse:
        """Start an evaluation in a worker process; poll ``GET /api/evaluate/{id}``."""
        params = evaluation_params(body)
        try:
            job = jobs.start(params)
        except JobBusy as exc:
            return _error(503, str(exc), "wait for it to finish, then run again",
                          retry_after=5)
        return JSONResponse({"id": job.id, "state": job.state,
                             "poll": f"/api/evaluate/{job.id}"}, status_code=202)

    @app.get("/api/evaluate/{job_id}", tags=["evaluation"])
    def evaluate_poll(job_id: str) -> dict[str, Any]:
        """The job's state, progress and (when done) its result (``summary.json``)."""
        job = jobs.get(job_id)
        if job is None:
            raise NoDataError(f"no evaluation {job_id!r}",
                              hint="jobs are kept while the server runs; start a new one")
        return job.to_json()

    @app.get("/api/evaluate/{job_id}/report.html", tags=["evaluation"])
    def evaluate_report(job_id: str) -> Response:
        """The evaluation's self-contained HTML report (its plots as inline PNGs)."""
        job = jobs.get(job_id)
        report = job.out_dir / "report.html" if job is not None else None
        if job is None or job.state != "done" or report is None or not report.exists():
            raise NoDataError(f"no finished evaluation {job_id!r}")
        return Response(report.read_text("utf-8"), media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": "default-src 'none'; "
                                 "img-src data:; style-src 'unsafe-inline'"})

    @app.get("/summary.json", include_in_schema=False)
    def old_summary(request: Request) -> RedirectResponse:
        return RedirectResponse(f"/api/summary.json?{request.url.query}", status_code=308)

    return app


def evaluation_params(body: EvaluateBody) -> dict[str, Any]:
    """Check an evaluation request against the limits; keyword arguments for the runner."""
    from darkpool_analysis.formulas import collect_formulas
    from darkpool_analysis.signals import get_variant

    lines = [line.strip() for line in body.formulas if line.strip()]
    check_formulas(lines)
    if len(body.variants) + len(lines) > limits.MAX_VARIANTS:
        raise BadParameter("variants", f"{len(body.variants) + len(lines)} variants and "
                           f"formulas; at most {limits.MAX_VARIANTS}", status=413)
    try:
        user = collect_formulas(lines, [])
    except ConfigError as exc:
        raise BadParameter("formulas", exc.message, exc.hint) from None
    extra = {name: formula.as_variant() for name, formula in user.items()}
    for name in body.variants:
        try:
            get_variant(name.strip(), extra)
        except ConfigError as exc:
            raise BadParameter("variants", exc.message, exc.hint) from None
    if not body.variants and not lines:
        raise BadParameter("variants", "nothing to evaluate: pick variants or add a formula")
    check_range(body.start, body.end, limits.MAX_EVAL_RANGE_DAYS)
    universe = body.universe.strip() if body.universe else None
    if universe and universe.lower() != "all":
        tickers = [t for t in universe.replace(" ", ",").split(",") if t.strip()]
        if len(tickers) > limits.MAX_UNIVERSE_TICKERS:
            raise BadParameter("universe", f"{len(tickers)} tickers; at most "
                               f"{limits.MAX_UNIVERSE_TICKERS}", status=413)
        universe = _universe_tickers(tickers)
    horizons = [int(h) for h in body.horizons.split(",")]
    if any(h < 1 or h > 260 for h in horizons) or len(horizons) > 8:
        raise BadParameter("horizons", "1 to 8 horizons, each from 1 to 260 sessions")
    return {"variants": ",".join(v.strip() for v in body.variants), "formulas": lines,
            "universe": universe, "start": body.start.isoformat() if body.start else None,
            "end": body.end.isoformat() if body.end else None, "horizons": body.horizons,
            "quantiles": body.quantiles, "walk": body.walk, "placebo": body.placebo,
            "otc_alignment": body.otc_alignment}


def _universe_tickers(items: list[str]) -> str:
    """A universe name (packaged or user) expands to its tickers; tickers pass through."""
    from darkpool_analysis.market import load_universes

    if len(items) == 1:
        universes = load_universes()
        chosen = universes.get(items[0].strip()) or universes.get(items[0].strip().lower())
        if chosen is not None:
            return "all" if chosen.is_all else ",".join(chosen.tickers)
    return ",".join(t.strip() for t in items)


def _warm_imports() -> None:
    """Import what the first requests need while the server waits for them (a cold import
    of pandas-heavy modules costs about a second on a loaded machine)."""
    import importlib

    for name in ("darkpool_analysis.views.sandbox_chart", "darkpool_analysis.views.lab_chart",
                 "darkpool_analysis.market", "darkpool_analysis.signals",
                 "darkpool_analysis.evaluation.runner"):
        importlib.import_module(name)


def _attrs_json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def _plotly_path() -> Path:
    """plotly.min.js bundled with the ``plotly`` package (served by us: no CDN)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise DarkpoolError(f"plotly.min.js is missing from the plotly package ({path})",
                            hint="reinstall: pip install --force-reinstall plotly")
    return path


__all__ = ["EvaluateBody", "IndexBody", "IndexParams", "SandboxParams", "ScanParams",
           "create_app", "evaluation_params"]
