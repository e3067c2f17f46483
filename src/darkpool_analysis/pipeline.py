"""The main job and the offline demo: ingest -> build -> one sandbox chart per ticker.

``darkpool run`` uses the real sources (FINRA CDN, a price provider); ``darkpool demo`` writes a
deterministic synthetic market in the real file formats and pushes it through the very same
ingest code path from local folders, into a separate demo database.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from darkpool_analysis import trading_calendar
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import FetchError, NoDataError
from darkpool_analysis.ingest.finra_short import IngestProgress, IngestSummary, ingest_finra_short
from darkpool_analysis.ingest.prices import PriceIngestSummary, ingest_prices, resolve_provider
from darkpool_analysis.store import META_SYNTHETIC, META_SYNTHETIC_NOTE, open_writer
from darkpool_analysis.symbols import to_feed
from darkpool_analysis.synthetic import (
    DEMO_END,
    DEMO_TICKERS,
    SYNTHETIC_LABEL,
    write_market,
)

log = logging.getLogger(__name__)

#: The seed notebook's window: the demo chart and the notebook show the same days.
SEED_TICKER, SEED_START, SEED_END = "NKE", dt.date(2025, 11, 1), dt.date(2025, 12, 31)

YAHOO_PROBE_URL = "https://query1.finance.yahoo.com"

Notify = Callable[[str], None]


@dataclass
class JobResult:
    """Where everything went."""

    db_path: Path
    start: dt.date
    end: dt.date
    finra: IngestSummary | None = None
    prices: PriceIngestSummary | None = None
    metrics_rows: int = 0
    charts: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class SourcesUnreachable(FetchError):
    """The data sources could not be reached at all (offline, DNS, refused): nothing was
    fetched or written. ``names`` are the unreachable sources (``FINRA CDN``, ``Yahoo Finance``)."""

    def __init__(self, message: str, *, url: str, names: Sequence[str],
                 hint: str | None = None) -> None:
        self.names = tuple(names)
        super().__init__(message, url=url, hint=hint)


def _probe(client: httpx.Client, name: str, url: str) -> str | None:
    """None when ``url`` answers at all (any status); else why it could not be reached."""
    try:
        client.head(url)
    except httpx.TransportError as exc:
        return f"{name} ({url}): {type(exc).__name__}: {exc}"
    return None


def check_reachable(settings: Settings, provider: str, *, timeout: float = 5.0) -> None:
    """Fail fast, naming what could not be reached, when the sources are offline."""
    targets = {"FINRA CDN": settings.finra_cdn_url + "/"}
    if provider == "polygon":
        targets["Polygon"] = settings.polygon_api_url
    elif provider == "yahoo":
        targets["Yahoo Finance"] = YAHOO_PROBE_URL
    with httpx.Client(timeout=timeout, follow_redirects=False) as client, \
            concurrent.futures.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        outcomes = list(pool.map(lambda item: _probe(client, *item), targets.items()))
    problems = {name: why for name, why in zip(targets, outcomes, strict=True)
                if why is not None}
    if problems:
        raise SourcesUnreachable(
            "cannot reach the data sources: " + "; ".join(problems.values()),
            url=", ".join(targets.values()),
            names=list(problems),
            hint="`darkpool run` needs internet access to these hosts; for an offline run on "
            "a deterministic synthetic market use `darkpool demo` (or `darkpool run "
            "--offline-fallback demo`)",
        )


def write_charts(settings: Settings, db_path: Path, tickers: Sequence[str], start: dt.date,
                 end: dt.date, out_dir: Path, *, title_suffix: str = "",
                 prefix: str = "") -> tuple[dict[str, Path], dict[str, str]]:
    """One sandbox PNG per ticker (read-only); tickers without data are reported, not fatal."""
    from darkpool_analysis import sandbox
    from darkpool_analysis.views import save_figure
    from darkpool_analysis.views.sandbox_chart import plot

    charts: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for ticker in tickers:  # one chart per ticker: I/O bound, a handful of tickers
        try:
            frame = sandbox.load(ticker, start, end, db_path=db_path, settings=settings)
        except NoDataError as exc:
            skipped[ticker] = exc.message
            continue
        title = f"{ticker} - Accumulation Signal Sandbox{title_suffix}"
        fig = plot(frame, title=title)
        path = out_dir / f"{prefix}{to_feed(ticker, 'yahoo')}_sandbox_{start}_{end}.png"
        charts[ticker] = save_figure(fig, path)
        log.debug("chart %s: %s", ticker, path)
    return charts, skipped


def _build(writer: object, settings: Settings) -> int:
    from darkpool_analysis.build import build_metrics

    result = build_metrics(writer, settings)  # type: ignore[arg-type]
    return int(result.rows_written)


def run_job(
    settings: Settings,
    *,
    tickers: Sequence[str],
    days: int,
    end: dt.date | None = None,
    provider: str | None = None,
    client: httpx.Client | None = None,
    finra_progress: IngestProgress | None = None,
    notify: Notify | None = None,
    check_network: bool = True,
) -> JobResult:
    """Ingest FINRA short volume and prices for the last ``days`` sessions (plus a z-score
    warm-up), build ``daily_metrics`` and write a chart per ticker."""
    chosen = resolve_provider(settings, provider, None)  # type: ignore[arg-type]
    if check_network:
        check_reachable(settings, chosen)
    last = trading_calendar.last_n_sessions(1, end or dt.date.today())[-1]
    shown = trading_calendar.last_n_sessions(days, last)
    fetched = trading_calendar.last_n_sessions(days + settings.short_z_window + 1, last)
    result = JobResult(settings.db_path, shown[0], shown[-1])
    with open_writer(settings.db_path) as writer:
        result.finra = ingest_finra_short(settings, fetched[0], last, "CNMS", writer=writer,
                                          client=client, progress=finra_progress)
        result.prices = ingest_prices(writer, settings, fetched[0], last, tickers,
                                      chosen, client=client)  # type: ignore[arg-type]
        result.metrics_rows = _build(writer, settings)
    result.charts, result.skipped = write_charts(
        settings, settings.db_path, tickers, shown[0], shown[-1], settings.output_dir)
    return result


def demo_db_path(settings: Settings) -> Path:
    """The demo's own database next to the real one: synthetic data never mixes with real."""
    return settings.db_path.with_name("demo.duckdb")


def run_demo(
    settings: Settings,
    *,
    db_path: Path | None = None,
    tickers: Sequence[str] = DEMO_TICKERS,
    chart_tickers: Sequence[str] | None = None,
    chart_days: int | None = None,
    notify: Notify | None = None,
) -> JobResult:
    """Offline end to end on the synthetic market: files -> real ingest -> build -> charts.

    The demo covers the seed notebook's window (NKE, 2025-11-01..2025-12-31), so the notebook
    runs unchanged with ``DARKPOOL_DB`` pointed at the demo database. By default it charts that
    window; ``chart_tickers`` / ``chart_days`` chart those tickers over the demo's last
    ``chart_days`` sessions instead (what ``darkpool run --offline-fallback demo`` asked for;
    tickers outside the demo market are reported as skipped).
    """
    target = db_path or demo_db_path(settings)
    demo_settings = settings.model_copy(update={"db_path": target})
    if chart_tickers is None and chart_days is None:
        charted, chart_start, chart_end = [SEED_TICKER], SEED_START, min(SEED_END, DEMO_END)
    else:
        charted = list(chart_tickers if chart_tickers is not None else [SEED_TICKER])
        window = trading_calendar.last_n_sessions(chart_days or 60, DEMO_END)
        chart_start, chart_end = window[0], window[-1]
    result = JobResult(target, chart_start, chart_end)
    with tempfile.TemporaryDirectory(prefix="darkpool-demo-") as tmp:
        market = write_market(Path(tmp), tickers)
        if notify is not None:
            notify(f"synthetic market: {len(tickers)} tickers x {market.sessions} sessions "
                   f"({market.start}..{market.end}) written in FINRA and Yahoo formats")
        with open_writer(target) as writer:
            writer.set_meta({META_SYNTHETIC: "true", META_SYNTHETIC_NOTE: (
                f"{SYNTHETIC_LABEL}: deterministic synthetic market written by `darkpool demo` "
                f"({len(tickers)} tickers, {market.start}..{market.end})")})
            result.finra = ingest_finra_short(demo_settings, market.start, market.end, "CNMS",
                                              writer=writer, from_dir=market.finra_dir)
            result.prices = ingest_prices(writer, demo_settings, market.start, market.end,
                                          list(tickers), "csv", from_dir=market.prices_dir)
            result.metrics_rows = _build(writer, demo_settings)
    in_market = [t for t in charted if t in tickers]
    result.charts, result.skipped = write_charts(
        demo_settings, target, in_market, chart_start, chart_end, settings.output_dir,
        prefix="demo_")  # the charts label themselves (database_meta)
    for ticker in charted:
        if ticker not in tickers:
            result.skipped[ticker] = (f"not in the synthetic demo market "
                                      f"({', '.join(tickers[:8])}, ...)")
    return result
