"""``darkpool watch``: wait for FINRA's daily file, ingest, build, evaluate rules, post alerts.

One day (:func:`run_day`):

1. **Wait** for the consolidated Reg SHO file (``CNMSshvol<day>.txt``): from the configured time
   (default 18:00 New York, when FINRA has usually published) the CDN is probed with a one-byte
   ranged GET; a 403 ``AccessDenied`` (or 404) means "not yet", and the next probe comes after a
   growing interval (``poll_interval`` x ``poll_backoff`` per miss, at most ``poll_max_interval``)
   until ``poll_timeout``.
2. **Ingest** the file and the day's price bars through the ordinary ingest functions, then
   settle the ``daily_metrics`` rebuild they owe (an incremental build of that day), and
   publish the snapshot.
3. **Evaluate** the rules (:func:`parse_rules`) on that session, read-only.
4. **Post** one message per triggered rule, with the sandbox chart (PNG) of the matched symbols
   attached, to the webhook (:mod:`darkpool_analysis.webhooks`). Every alert is claimed in the
   ``alerts_sent`` table before it is posted and marked sent afterwards, so a re-run of the same
   day (or a crash and a restart) never posts it twice; a post that failed is released and is
   retried by the next run.

:func:`run_forever` repeats this every session at the configured time until stopped;
``--once`` (cron, systemd timers) does one day and returns.

Rules file (TOML)::

    [[rule]]
    name = "accumulation"            # optional (default: the condition)
    when = "current >= 70"           # a variant or numeric daily_metrics column, op, level

    [[rule]]
    when = "short_buy_sell_ratio_z >= 2"

    [[rule]]
    name = "leaders"
    when = "scan top 10"             # or "scan bottom 5", "scan top 10 by finra_buy_volume_z"
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import math
import operator
import re
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import httpx
import pandas as pd
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from darkpool_analysis import trading_calendar
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import (
    ConfigError,
    DarkpoolError,
    FetchError,
    NoDataError,
    NotPublishedError,
)
from darkpool_analysis.sources.finra_short import file_url
from darkpool_analysis.sources.http import HttpPolicy, get, make_client, redact
from darkpool_analysis.store import Writer, open_writer, utcnow
from darkpool_analysis.webhooks import (
    Attachment,
    KindChoice,
    Message,
    Webhook,
    WebhookError,
    WebhookPolicy,
)

log = logging.getLogger(__name__)

NEW_YORK: Final = ZoneInfo("America/New_York")
#: The family the watch waits for (FINRA's consolidated file).
FAMILY: Final = "CNMS"
Op = Literal[">=", "<=", ">", "<", "==", "!="]
_OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}
_THRESHOLD_RE: Final = re.compile(
    r"^\s*(?P<signal>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<level>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_SCAN_RE: Final = re.compile(
    r"^\s*scan\s+(?P<end>top|bottom)\s+(?P<count>\d+)(?:\s+by\s+(?P<by>[A-Za-z_][A-Za-z0-9_]*))?"
    r"\s*$", re.IGNORECASE)
_RULE_KEYS: Final = frozenset({"name", "when"})
#: More tickers than this are not fetched from Yahoo for one day (one download per ticker).
YAHOO_MAX_TICKERS: Final = 500
#: Symbols named in one message's text (the rest are counted).
MAX_LISTED: Final = 25


# -- settings ------------------------------------------------------------------------------

class WatchSettings(BaseSettings):
    """Watch and webhook settings from the environment or ``.env`` (``DARKPOOL_`` + name).

    ``DARKPOOL_WEBHOOK_URL`` is a secret: held as :class:`SecretStr`, never logged or shown.
    """

    model_config = SettingsConfigDict(env_prefix="DARKPOOL_", env_file=".env",
                                      env_file_encoding="utf-8", extra="ignore")

    webhook_url: SecretStr | None = None
    webhook_kind: KindChoice = "auto"
    webhook_timeout: float = Field(30.0, gt=0, le=600)
    webhook_retries: int = Field(5, ge=0, le=20)
    webhook_backoff: float = Field(1.0, ge=0, le=600)
    webhook_max_retry_after: float = Field(300.0, ge=0, le=3600)
    #: New York wall-clock time at which a day's polling starts (and the daily run wakes).
    watch_time: str = Field("18:00", pattern=r"^\d{2}:\d{2}$")
    watch_poll_interval: float = Field(60.0, gt=0, le=3600)
    watch_poll_backoff: float = Field(1.5, ge=1.0, le=10.0)
    watch_poll_max_interval: float = Field(900.0, gt=0, le=3600 * 6)
    watch_poll_timeout: float = Field(6 * 3600.0, ge=0, le=24 * 3600)
    #: Sessions shown in each alert's chart.
    watch_chart_sessions: int = Field(60, ge=5, le=2520)
    #: Charts attached to one message at most (Discord takes 10 files).
    watch_max_charts: int = Field(1, ge=0, le=10)

    def webhook_policy(self) -> WebhookPolicy:
        """The delivery policy these settings describe."""
        return WebhookPolicy(timeout=self.webhook_timeout, retries=self.webhook_retries,
                             backoff=self.webhook_backoff,
                             max_retry_after=self.webhook_max_retry_after)

    def poll_policy(self) -> PollPolicy:
        """The publication polling policy these settings describe."""
        return PollPolicy(start=parse_clock(self.watch_time), interval=self.watch_poll_interval,
                          backoff=self.watch_poll_backoff,
                          max_interval=self.watch_poll_max_interval,
                          timeout=self.watch_poll_timeout)


def load_watch_settings(**overrides: Any) -> WatchSettings:
    """Read :class:`WatchSettings`; a :class:`ConfigError` names the bad variable (never the
    webhook URL's value)."""
    try:
        return WatchSettings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"DARKPOOL_{str(item['loc'][0]).upper() if item.get('loc') else '?'}: {item['msg']}"
            for item in exc.errors())
        raise ConfigError(f"Invalid watch configuration: {problems}",
                          hint="fix the environment variable or .env entry named above") from None


def parse_clock(text: str) -> dt.time:
    """``"18:00"`` -> ``time(18, 0)``; a ConfigError for anything else."""
    try:
        hours, minutes = (int(part) for part in text.split(":"))
        return dt.time(hours, minutes)
    except ValueError as exc:
        raise ConfigError(f"expected a time HH:MM (New York), got {text!r}") from exc


# -- rules ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ThresholdRule:
    """``<signal> <op> <level>``: triggers for every watched symbol whose value passes."""

    name: str
    signal: str
    op: Op
    level: float
    line: int | None = None

    @property
    def condition(self) -> str:
        return f"{self.signal} {self.op} {self.level:g}"


@dataclass(frozen=True)
class ScanRule:
    """``scan top|bottom N [by SIGNAL]``: the scanner's ends of the watched universe."""

    name: str
    end: Literal["top", "bottom"]
    count: int
    by: str = "current"
    line: int | None = None

    @property
    def condition(self) -> str:
        return f"scan {self.end} {self.count} by {self.by}"


Rule = ThresholdRule | ScanRule


def _line_of(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return None


def parse_condition(when: str, *, name: str | None = None, source: str = "rules",
                    line: int | None = None) -> Rule:
    """One condition (``current >= 70``, ``scan top 10``) -> a rule; a ConfigError naming the
    file and line otherwise.

    Examples
    --------
    >>> parse_condition("short_buy_sell_ratio_z >= 2").condition
    'short_buy_sell_ratio_z >= 2'
    >>> parse_condition("scan top 5").condition
    'scan top 5 by current'
    """
    where = f"{source}" + (f" line {line}" if line else "")
    scan = _SCAN_RE.match(when)
    if scan is not None:
        count = int(scan["count"])
        if count < 1:
            raise ConfigError(f"{where}: scan needs a positive count, got {count}")
        end: Literal["top", "bottom"] = "top" if scan["end"].lower() == "top" else "bottom"
        rule = ScanRule("", end, count, scan["by"] or "current", line)
        return ScanRule(name or rule.condition, rule.end, rule.count, rule.by, line)
    threshold = _THRESHOLD_RE.match(when)
    if threshold is None:
        raise ConfigError(f"{where}, field when: cannot read {when!r}; expected "
                          "'<variant or column> <op> <level>' (op: >= <= > < == !=), e.g. "
                          "'current >= 70', or 'scan top|bottom N [by SIGNAL]'")
    level = float(threshold["level"])
    if not math.isfinite(level):
        raise ConfigError(f"{where}: the level must be a finite number, got {when!r}")
    rule_t = ThresholdRule("", threshold["signal"], threshold["op"], level, line)  # type: ignore[arg-type]
    return ThresholdRule(name or rule_t.condition, rule_t.signal, rule_t.op, rule_t.level, line)


def parse_rules(text: str, source: str = "rules.toml") -> list[Rule]:
    """Every ``[[rule]]`` of a rules file; errors name the file, line and field."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise ConfigError(f"{source} line {_line_of(text, unknown[0]) or '?'}: unknown table "
                          f"{unknown[0]!r}; expected [[rule]] entries")
    entries = document.get("rule", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: no rules; expected at least one [[rule]] with a "
                          "'when' condition", hint='e.g.\n[[rule]]\nwhen = "current >= 70"')
    rules: list[Rule] = []
    seen: dict[str, int | None] = {}
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: rule {index} is not a table")
        when = entry.get("when")
        line = _line_of(text, str(when)) if isinstance(when, str) else None
        extra = sorted(set(entry) - _RULE_KEYS)
        if extra:
            raise ConfigError(f"{source} rule {index} (line {line or '?'}): unknown field "
                              f"{extra[0]!r}; expected {', '.join(sorted(_RULE_KEYS))}")
        if not isinstance(when, str) or not when.strip():
            raise ConfigError(f"{source} rule {index}: field 'when' is missing or empty")
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"{source} rule {index} (line {line or '?'}): field 'name' must "
                              "be a non-empty string")
        rule = parse_condition(when, name=name.strip() if name else None, source=source,
                               line=line)
        if rule.name in seen:
            raise ConfigError(f"{source} line {line or '?'}: rule name {rule.name!r} is used "
                              f"twice (first on line {seen[rule.name] or '?'}); names identify "
                              "alerts, so they must be unique")
        seen[rule.name] = line
        rules.append(rule)
    return rules


def load_rules(path: Path) -> list[Rule]:
    """Read and parse a rules file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the rules file {path}: {exc.strerror or exc}") from exc
    return parse_rules(text, str(path))


def check_rules(rules: Sequence[Rule], db_path: Path, settings: Settings) -> None:
    """Resolve every rule's signal against the database (if it exists yet), so a typo fails
    before hours of waiting rather than after."""
    from darkpool_analysis.market import _db
    from darkpool_analysis.market.scanner import resolve_signal

    if not Path(db_path).exists():
        return
    with _db.open_db(db_path, settings) as (conn, _):
        columns = _db.numeric_columns(conn)
    for rule in rules:
        name = rule.signal if isinstance(rule, ThresholdRule) else rule.by
        try:
            resolve_signal(name, columns)
        except ConfigError as exc:
            raise ConfigError(f"rule {rule.name!r} (line {rule.line or '?'}): {exc.message}",
                              hint=exc.hint) from None


# -- evaluation ----------------------------------------------------------------------------

@dataclass
class Alert:
    """A triggered rule on one session: the matched rows and the message to post."""

    rule: Rule
    session: dt.date
    rows: pd.DataFrame                 # symbol, value (+ rank for scans), best first
    text: str = ""
    charts: list[Path] = field(default_factory=list)

    @property
    def symbols(self) -> list[str]:
        return [str(s) for s in self.rows["symbol"]]


def evaluate_rules(rules: Sequence[Rule], day: dt.date, symbols: Sequence[str] | None,
                   *, db_path: Path, settings: Settings,
                   universe: str | None = None) -> list[Alert]:
    """The rules that trigger on ``day`` for ``symbols`` (None = every symbol of ``universe``,
    default all), read-only; one :class:`Alert` per triggered rule, best match first."""
    from darkpool_analysis.market import _db
    from darkpool_analysis.market.scanner import (
        read_signal_frame,
        resolve_signal,
        scan,
        signal_on_day,
    )

    alerts: list[Alert] = []
    chosen = list(symbols) if symbols is not None else None
    if chosen is None and universe is not None and universe.lower() != "all":
        from darkpool_analysis.market.universes import get_universe, load_universes

        chosen = list(get_universe(universe, load_universes()).tickers)
    with _db.open_db(db_path, settings) as (conn, _):
        columns = _db.numeric_columns(conn)
        on_day = conn.execute("SELECT count(*) FROM daily_metrics WHERE date = ?",
                              [day]).fetchone()
        if not on_day or not on_day[0]:
            raise NoDataError(f"no daily_metrics rows on {day} after the build",
                              hint="check the ingest summary above")
        for rule in rules:
            if not isinstance(rule, ThresholdRule):
                continue
            signal = resolve_signal(rule.signal, columns)
            values = signal_on_day(read_signal_frame(conn, day, signal, chosen), signal)
            series = values[signal.name].astype(float)
            passed = values.loc[series.notna() & _OPS[rule.op](series, rule.level)]
            if passed.empty:
                continue
            ascending = rule.op in ("<", "<=")
            rows = (passed.rename(columns={signal.name: "value"})[["symbol", "value"]]
                    .sort_values(["value", "symbol"], ascending=[ascending, True])
                    .reset_index(drop=True))
            alerts.append(Alert(rule, day, rows))
    for rule in rules:
        if not isinstance(rule, ScanRule):
            continue
        ranking = scan(day, by=rule.by, tickers=chosen, top=rule.count, db_path=db_path,
                       settings=settings)
        part = ranking.loc[ranking["end"] == rule.end]
        if part.empty:
            continue
        rows = pd.DataFrame({"rank": part["rank"].to_numpy(), "symbol": part["symbol"],
                             "value": part[ranking.attrs["by"]].astype(float),
                             "score": part["score"].astype(float)}).reset_index(drop=True)
        alerts.append(Alert(rule, day, rows))
    order = {rule.name: index for index, rule in enumerate(rules)}
    return sorted(alerts, key=lambda alert: order[alert.rule.name])


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"


def format_message(alert: Alert, *, label: str | None = None,
                   chart_note: str | None = None) -> str:
    """The message text of an alert (Discord/Slack markdown, under Discord's 2,000 chars)."""
    rule = alert.rule
    rows = alert.rows
    head = f"**{rule.name}** · {alert.session}"
    if label:
        head = f"[{label}] {head}"
    if isinstance(rule, ScanRule):
        lines = [f"{head}: {rule.end} {len(rows)} by `{rule.by}`"]
        lines += [f"{int(r.rank)}. {r.symbol}  {rule.by} {_number(r.value)}  score "
                  f"{_number(r.score)}" for r in rows.head(MAX_LISTED).itertuples()]
    else:
        lines = [f"{head}: `{rule.condition}` matched {len(rows)} symbol(s)"]
        listed = ", ".join(f"{r.symbol} {_number(r.value)}"
                           for r in rows.head(MAX_LISTED).itertuples())
        more = f" (+{len(rows) - MAX_LISTED} more)" if len(rows) > MAX_LISTED else ""
        lines.append(listed + more)
    if chart_note:
        lines.append(chart_note)
    lines.append("FINRA short volume is a proxy for dealer-filled buying, not observed buying "
                 "and not short interest.")
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:48] or "rule"


def render_charts(alert: Alert, *, settings: Settings, folder: Path, sessions: int,
                  limit: int, cache: dict[str, Path] | None = None) -> list[Path]:
    """The sandbox chart (PNG) of the first ``limit`` matched symbols, over the ``sessions``
    stored sessions up to the alert's date, saved under ``folder``. ``cache`` (symbol -> file)
    lets several alerts of one day share a symbol's chart instead of drawing it again."""
    from darkpool_analysis import sandbox
    from darkpool_analysis.views import sandbox_chart, save_figure

    cache = {} if cache is None else cache
    paths: list[Path] = []
    for symbol in alert.symbols[:limit]:
        if symbol in cache:
            paths.append(cache[symbol])
            continue
        try:
            first, last = sandbox.default_range(symbol, end=alert.session, sessions=sessions,
                                                settings=settings)
            frame = sandbox.load(symbol, first, last, settings=settings)
        except NoDataError as exc:
            log.warning("no chart for %s: %s", symbol, exc.message)
            continue
        fig = sandbox_chart.plot(frame, title=f"{symbol} - Accumulation Signal Sandbox "
                                              f"(to {alert.session})")
        path = save_figure(fig, folder / f"{alert.session}_{_slug(symbol)}.png")
        cache[symbol] = path
        paths.append(path)
    return paths


# -- alerts table (dedup) ------------------------------------------------------------------

def alert_key(session: dt.date, rule: Rule, destination: str) -> str:
    """The identity of one alert: session, rule name and condition, destination."""
    text = f"{session.isoformat()}|{rule.name}|{rule.condition}|{destination}"
    return hashlib.sha256(text.encode()).hexdigest()


def alert_status(writer: Writer, key: str) -> str | None:
    """``sent``/``sending`` for an alert already claimed, None otherwise."""
    row = writer.conn.execute("SELECT status FROM alerts_sent WHERE alert_key = ?",
                              [key]).fetchone()
    return None if row is None else str(row[0])


def claim_alert(writer: Writer, key: str, alert: Alert, destination: str) -> bool:
    """Record the alert as ``sending`` before posting; False when it was already claimed."""
    with writer.transaction() as conn:
        if conn.execute("SELECT 1 FROM alerts_sent WHERE alert_key = ?", [key]).fetchone():
            return False
        conn.execute("INSERT INTO alerts_sent VALUES (?, ?, ?, ?, ?, 'sending', ?, ?)",
                     [key, alert.session, alert.rule.name, destination,
                      ",".join(alert.symbols), alert.text, utcnow()]).fetchall()
    return True


def mark_sent(writer: Writer, key: str) -> None:
    """The webhook accepted the message."""
    with writer.transaction() as conn:
        conn.execute("UPDATE alerts_sent SET status = 'sent', recorded_at = ? "
                     "WHERE alert_key = ?", [utcnow(), key]).fetchall()


def release_alert(writer: Writer, key: str) -> None:
    """The post failed for sure: forget the claim so the next run retries it."""
    with writer.transaction() as conn:
        conn.execute("DELETE FROM alerts_sent WHERE alert_key = ?", [key]).fetchall()


# -- waiting for FINRA ---------------------------------------------------------------------

@dataclass(frozen=True)
class PollPolicy:
    """When to start probing the CDN, how often, and for how long."""

    start: dt.time = dt.time(18, 0)
    interval: float = 60.0
    backoff: float = 1.5
    max_interval: float = 900.0
    timeout: float = 6 * 3600.0


@dataclass
class Clock:
    """Time source and sleeper (real by default; one place for the loop's waiting)."""

    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    sleep: Callable[[float], None] = time.sleep

    def sleep_until(self, when: dt.datetime) -> None:
        """Sleep (in chunks of at most a minute, so a changed wall clock is noticed) until
        ``when`` (aware)."""
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            self.sleep(min(remaining, 60.0))


def publication_start(day: dt.date, policy: PollPolicy) -> dt.datetime:
    """The moment (UTC) polling for ``day`` starts: ``policy.start`` New York time."""
    return dt.datetime.combine(day, policy.start, NEW_YORK).astimezone(dt.UTC)


def probe_published(client: httpx.Client, url: str, *, policy: HttpPolicy) -> bool:
    """Whether the file at ``url`` exists: a one-byte ranged GET; 403 ``AccessDenied`` or 404
    means not (yet); anything else raises :class:`FetchError`."""
    response = get(client, url, policy=policy, headers={"Range": "bytes=0-0"})
    if response.status_code in (200, 206):
        return True
    if response.status_code == 404 or (response.status_code == 403
                                       and b"AccessDenied" in response.content):
        return False
    raise FetchError(f"HTTP {response.status_code} while checking {redact(url)}: "
                     f"{response.text[:200].strip()!r}", url=redact(url),
                     status=response.status_code)


def wait_for_publication(client: httpx.Client, settings: Settings, day: dt.date, *,
                         poll: PollPolicy, clock: Clock | None = None) -> int:
    """Block until FINRA's CNMS file for ``day`` is on the CDN; return the probes made.

    Starts at ``poll.start`` New York time on ``day`` (at once for a past day), then probes
    with growing intervals. Raises :class:`NotPublishedError` after ``poll.timeout`` seconds
    of probing.
    """
    clock = clock or Clock()
    url = file_url(settings.finra_cdn_url, FAMILY, day)
    start = publication_start(day, poll)
    if clock.now() < start:
        log.info("waiting until %s (New York) to look for %s", start.astimezone(NEW_YORK)
                 .strftime("%Y-%m-%d %H:%M"), redact(url))
        clock.sleep_until(start)
    deadline = clock.now() + dt.timedelta(seconds=poll.timeout)
    http_policy = HttpPolicy.from_settings(settings)
    interval, probes = poll.interval, 0
    while True:
        probes += 1
        if probe_published(client, url, policy=http_policy):
            log.info("%s is published (probe %d)", redact(url), probes)
            return probes
        now = clock.now()
        if now >= deadline:
            raise NotPublishedError(
                f"FINRA has not published {FAMILY} for {day} after {probes} probe(s) over "
                f"{poll.timeout:g}s", hint="FINRA sometimes publishes late; run the watch again "
                "later (alerts already sent are not repeated)")
        wait = min(interval, (deadline - now).total_seconds())
        log.info("%s not published yet (403/404); next check in %.1fs", redact(url), wait)
        clock.sleep(max(wait, 0.0))
        interval = min(interval * poll.backoff, poll.max_interval)


# -- one day -------------------------------------------------------------------------------

@dataclass
class Delivery:
    """What happened to one alert."""

    alert: Alert
    outcome: Literal["sent", "already_sent", "unconfirmed", "failed", "printed"]
    error: str | None = None


@dataclass
class DayReport:
    """Everything one watch day did, with per-phase seconds."""

    session: dt.date
    probes: int = 0
    finra_outcome: str = ""
    price_note: str = ""
    rows_built: int = 0
    alerts: list[Alert] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.outcome == "failed"]


@dataclass(frozen=True)
class WatchTarget:
    """Which symbols the watch evaluates (``symbols`` None = the ``universe``)."""

    symbols: tuple[str, ...] | None = None
    universe: str | None = None


def _ingest_day(writer: Writer, settings: Settings, day: dt.date, target: WatchTarget,
                client: httpx.Client, report: DayReport, *, prices: bool,
                price_provider: str | None, prices_dir: Path | None) -> None:
    from darkpool_analysis.build import settle_owed
    from darkpool_analysis.ingest.finra_short import ingest_finra_short
    from darkpool_analysis.ingest.prices import ingest_prices, resolve_provider

    started = time.perf_counter()
    summary = ingest_finra_short(settings, day, day, FAMILY, writer=writer, client=client)
    counts = {k: v for k, v in summary.counts.items() if v}
    report.finra_outcome = ", ".join(f"{k} {v}" for k, v in counts.items())
    if summary.failed:
        raise FetchError(f"the FINRA file for {day} could not be ingested: "
                         f"{summary.failed[0].message}", url=summary.failed[0].location or "")
    report.seconds["ingest_finra"] = time.perf_counter() - started

    started = time.perf_counter()
    if prices:
        symbols = list(target.symbols) if target.symbols is not None else _day_symbols(
            writer, day, target.universe)
        try:
            chosen = resolve_provider(settings, price_provider, prices_dir)  # type: ignore[arg-type]
            if chosen == "yahoo" and len(symbols) > YAHOO_MAX_TICKERS:
                raise ConfigError(f"{len(symbols):,} tickers is too many for Yahoo (at most "
                                  f"{YAHOO_MAX_TICKERS}); use Polygon's grouped daily bars "
                                  "(POLYGON_API_KEY) or a smaller universe")
            result = ingest_prices(writer, settings, day, day, tickers=symbols,
                                   provider=chosen, from_dir=prices_dir,
                                   client=client if chosen == "polygon" else None)
            report.price_note = (f"{chosen}: {len(result.stored)} stored, "
                                 f"{len(result.missing)} missing")
        except ConfigError as exc:
            report.price_note = f"skipped ({exc.message})"
            log.warning("prices for %s not ingested: %s", day, exc.message)
    else:
        report.price_note = "skipped (--no-prices)"
    report.seconds["ingest_prices"] = time.perf_counter() - started

    started = time.perf_counter()
    built = settle_owed(writer, settings)
    report.rows_built = built.rows_written if built is not None else 0
    writer.publish()  # the rules and charts read the published snapshot
    report.seconds["build"] = time.perf_counter() - started


def _day_symbols(writer: Writer, day: dt.date, universe: str | None) -> list[str]:
    """The universe's tickers, or every symbol of the day's FINRA file for ``all``."""
    if universe is not None and universe.lower() != "all":
        from darkpool_analysis.market.universes import get_universe, load_universes

        return list(get_universe(universe, load_universes()).tickers)
    rows = writer.conn.execute("SELECT DISTINCT symbol_norm FROM finra_short_daily_raw "
                               "WHERE trade_date = ? AND facility = ? ORDER BY 1",
                               [day, FAMILY]).fetchall()
    return [str(r[0]) for r in rows]


def _deliver(writer: Writer, webhook: Webhook, alert: Alert, attachments: list[Attachment]
             ) -> Delivery:
    key = alert_key(alert.session, alert.rule, webhook.destination)
    if not claim_alert(writer, key, alert, webhook.destination):
        status = alert_status(writer, key)
        if status == "sending":
            log.warning("alert %r for %s was being posted when an earlier run stopped; its "
                        "delivery is unknown, so it is not posted again", alert.rule.name,
                        alert.session)
            return Delivery(alert, "unconfirmed")
        return Delivery(alert, "already_sent")
    try:
        webhook.post(Message(alert.text, tuple(attachments)))
    except WebhookError as exc:
        release_alert(writer, key)
        log.error("alert %r not sent: %s", alert.rule.name, exc.message)
        return Delivery(alert, "failed", exc.message)
    mark_sent(writer, key)
    return Delivery(alert, "sent")


def run_day(
    settings: Settings,
    watch: WatchSettings,
    rules: Sequence[Rule],
    day: dt.date,
    *,
    target: WatchTarget = WatchTarget(),
    webhook: Webhook | None = None,
    dry_run: bool = False,
    prices: bool = True,
    price_provider: str | None = None,
    prices_dir: Path | None = None,
    client: httpx.Client | None = None,
    clock: Clock | None = None,
    printer: Callable[[str], None] | None = None,
) -> DayReport:
    """Wait for ``day``'s FINRA file, ingest it and the prices, build, evaluate ``rules`` and
    post (or, with ``dry_run``, print) one message per triggered rule.

    ``webhook`` is required unless ``dry_run``. Raises :class:`NotPublishedError` when the
    file does not appear in time, :class:`FetchError` when a download fails.
    """
    if not dry_run and webhook is None:
        raise ConfigError("no webhook to post to",
                          hint="set DARKPOOL_WEBHOOK_URL (environment or .env), or use "
                               "--dry-run to print the messages")
    if not trading_calendar.is_session(day):
        raise NoDataError(f"{day} is not an XNYS trading session: FINRA publishes no file")
    report = DayReport(day)
    emit = printer or print
    with contextlib.ExitStack() as stack:
        http = client if client is not None else stack.enter_context(make_client(settings))
        started = time.perf_counter()
        report.probes = wait_for_publication(http, settings, day, poll=watch.poll_policy(),
                                             clock=clock)
        report.seconds["wait"] = time.perf_counter() - started
        with open_writer(settings.db_path) as writer:
            _ingest_day(writer, settings, day, target, http, report, prices=prices,
                        price_provider=price_provider, prices_dir=prices_dir)
            started = time.perf_counter()
            alerts = evaluate_rules(rules, day, target.symbols, db_path=settings.db_path,
                                    settings=settings, universe=target.universe)
            report.seconds["evaluate"] = time.perf_counter() - started
            report.alerts = alerts
            _post_alerts(writer, settings, watch, alerts, report, webhook=webhook,
                         dry_run=dry_run, emit=emit)
    return report


def _post_alerts(writer: Writer, settings: Settings, watch: WatchSettings,
                 alerts: Sequence[Alert], report: DayReport, *, webhook: Webhook | None,
                 dry_run: bool, emit: Callable[[str], None]) -> None:
    from darkpool_analysis.store import is_synthetic, read_meta
    from darkpool_analysis.synthetic import SYNTHETIC_LABEL

    label = SYNTHETIC_LABEL if is_synthetic(read_meta(writer.conn)) else None
    folder = settings.output_dir / "watch"
    charts: dict[str, Path] = {}
    chart_seconds = post_seconds = 0.0
    for alert in alerts:
        key = alert_key(alert.session, alert.rule, webhook.destination) if webhook else None
        if not dry_run and key is not None and alert_status(writer, key) is not None:
            report.deliveries.append(Delivery(
                alert, "already_sent" if alert_status(writer, key) == "sent" else "unconfirmed"))
            continue  # no chart rendering for an alert that will not be posted
        started = time.perf_counter()
        alert.charts = render_charts(alert, settings=settings, folder=folder,
                                     sessions=watch.watch_chart_sessions,
                                     limit=watch.watch_max_charts, cache=charts)
        chart_seconds += time.perf_counter() - started
        note = None
        if alert.charts and (dry_run or (webhook is not None and webhook.kind == "json")):
            note = "charts: " + ", ".join(str(path) for path in alert.charts)
        alert.text = format_message(alert, label=label, chart_note=note)
        if dry_run:
            sent_before = key is not None and alert_status(writer, key) == "sent"
            emit(alert.text + ("\n(already sent to the webhook)" if sent_before else ""))
            report.deliveries.append(Delivery(alert, "printed"))
            continue
        if webhook is None:
            raise AssertionError("checked in run_day")
        attachments = [Attachment(path.name, path.read_bytes()) for path in alert.charts]
        started = time.perf_counter()
        report.deliveries.append(_deliver(writer, webhook, alert, attachments))
        post_seconds += time.perf_counter() - started
    report.seconds["charts"] = chart_seconds
    report.seconds["post"] = post_seconds


# -- every day -----------------------------------------------------------------------------

def session_for(now: dt.datetime) -> dt.date:
    """Today's date in New York (the session FINRA publishes for tonight)."""
    return now.astimezone(NEW_YORK).date()


def next_run_day(now: dt.datetime, start: dt.time, done: set[dt.date]) -> dt.date:
    """The next session whose watch has not run: today if it is a session and not done
    (whatever the hour: polling catches up at once after the start time), else the next one."""
    day = session_for(now)
    while not trading_calendar.is_session(day) or day in done:
        day += dt.timedelta(days=1)
    return day


def run_forever(run: Callable[[dt.date], DayReport], poll: PollPolicy, *,
                clock: Clock | None = None, days: int | None = None,
                on_error: Callable[[dt.date, DarkpoolError], None] | None = None) -> int:
    """Run ``run(day)`` for every session at ``poll.start`` New York time until stopped
    (Ctrl-C) or ``days`` sessions were handled; a failed day is reported and the loop goes
    on. Returns the number of days run."""
    clock = clock or Clock()
    done: set[dt.date] = set()
    handled = 0
    while days is None or handled < days:
        day = next_run_day(clock.now(), poll.start, done)
        clock.sleep_until(publication_start(day, poll))
        try:
            run(day)
        except DarkpoolError as exc:
            if on_error is None:
                raise
            on_error(day, exc)
        done.add(day)
        handled += 1
    return handled


__all__ = [
    "Alert",
    "Clock",
    "DayReport",
    "Delivery",
    "PollPolicy",
    "Rule",
    "ScanRule",
    "ThresholdRule",
    "WatchSettings",
    "WatchTarget",
    "alert_key",
    "evaluate_rules",
    "format_message",
    "load_rules",
    "load_watch_settings",
    "parse_condition",
    "parse_rules",
    "probe_published",
    "run_day",
    "run_forever",
    "wait_for_publication",
]
