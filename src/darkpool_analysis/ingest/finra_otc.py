"""Store FINRA OTC weekly volume: one transaction per week + tier, every revision kept.

``finra_otc_weekly_raw`` (symbol level) and ``finra_otc_weekly_firm_raw`` (firm level) hold one
row per revision, keyed by ``last_update_date``. Storing a week + tier replaces exactly the
revisions present in the new data (same week, tier, summary type, symbol [, MPID] and
``last_update_date``) and leaves older revisions alone, so the first published values stay
retrievable. :func:`otc_weekly_as_of` answers "what was known on date D" (a revision is known
from ``max(publication date, last_update_date)``, the publication date being
``initial_published_date`` or week start + 7 x (1 + delay) days).

A revision *removed* by FINRA (a symbol that disappears from a re-published week) cannot be
seen in the API's current state and stays stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import pandas as pd

from darkpool_analysis.errors import ConfigError, DataFormatError
from darkpool_analysis.ingest import failures_logged
from darkpool_analysis.sources import finra_otc as src
from darkpool_analysis.sources.http import HttpPolicy
from darkpool_analysis.store import SourceFile, Writer, utcnow

log = logging.getLogger(__name__)

DATASET = "finra_otc"
SYMBOL_TABLE = "finra_otc_weekly_raw"
FIRM_TABLE = "finra_otc_weekly_firm_raw"
FILE_SUFFIXES = (".csv", ".txt", ".psv", ".json")

#: ``known_from`` of a revision row: when it could first be seen (see module doc).
KNOWN_FROM_SQL = """greatest(
    coalesce(initial_published_date,
             week_start_date + INTERVAL 7 DAY * (1 + CASE tier WHEN 'T1' THEN 2 ELSE 4 END)),
    last_update_date)"""

AS_OF_SQL = f"""
SELECT * EXCLUDE (revision_rank)
FROM (
    SELECT r.*, CAST({KNOWN_FROM_SQL} AS DATE) AS known_from,
           row_number() OVER (PARTITION BY week_start_date, tier, summary_type, symbol
                              ORDER BY last_update_date DESC) AS revision_rank
    FROM {SYMBOL_TABLE} r
    WHERE {KNOWN_FROM_SQL} <= CAST($as_of AS DATE)
      AND ($symbols IS NULL OR list_contains($symbols, symbol_norm))
)
WHERE revision_rank = 1
ORDER BY week_start_date, tier, summary_type, symbol
"""


@dataclass
class OtcIngestSummary:
    """What one ``ingest finra-otc`` run did (counts are per week + tier + level)."""

    ingested: int = 0
    replaced: int = 0
    unchanged: int = 0
    rows: int = 0
    firm_rows: int = 0
    requests: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def add_skips(self, skipped: dict[str, int]) -> None:
        for reason, count in skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count


def otc_weekly_as_of(conn: duckdb.DuckDBPyConnection, as_of_date: dt.date | str,
                     symbols: Sequence[str] | None = None) -> pd.DataFrame:
    """Symbol-level rows as known on ``as_of_date``: per week, tier, summary type and symbol
    the latest revision already public then (``known_from <= as_of_date``).

    ``symbols`` are normalised symbols (``BRK.B``); None means all.
    """
    params = {"as_of": str(as_of_date), "symbols": list(symbols) if symbols else None}
    return conn.execute(AS_OF_SQL, params).df()


def otc_weekly_current(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The newest revision of every stored row (today's view, not point-in-time)."""
    return otc_weekly_as_of(conn, dt.date.max)


def _frame_sha(frame: pd.DataFrame, keys: list[str]) -> str:
    ordered = frame.sort_values(keys, kind="stable")
    return hashlib.sha256(ordered.to_csv(index=False).encode()).hexdigest()


def _revision_keys(frame: pd.DataFrame, with_mpid: bool) -> list[str]:
    parts = (frame["summary_type"].astype(str) + "|" + frame["symbol"].astype(str) + "|"
             + frame["last_update_date"].dt.strftime("%Y-%m-%d"))
    if with_mpid:
        parts = parts + "|" + frame["mpid"].astype(str)
    return parts.tolist()


def store_week(writer: Writer, rows: pd.DataFrame, *, level: str, week: dt.date, tier: str,
               source: str, location: str, source_file: str | None, force: bool,
               scope: str = "") -> str:
    """Store one week + tier of one level (``symbol``/``firm``) atomically; return the outcome.

    Outcomes: ``ingested`` (new), ``replaced`` (the week had rows), ``unchanged`` (same data
    as last time; skipped unless ``force``).
    """
    firm = level == "firm"
    table = FIRM_TABLE if firm else SYMBOL_TABLE
    keys = ["summary_type", "symbol", "last_update_date"] + (["mpid"] if firm else [])
    partition_key = f"{tier}/{week.isoformat()}/{level}" + (f"/{scope}" if scope else "")
    sha = _frame_sha(rows, keys)
    if not force and writer.known_sha256(DATASET, partition_key) == sha:
        writer.log_outcome(DATASET, partition_key, outcome="unchanged", trade_date=week,
                           location=location, rows=len(rows), sha256=sha)
        return "unchanged"
    existing = writer.conn.execute(
        f"SELECT count(*) FROM {table} WHERE week_start_date = ? AND tier = ?", [week, tier]
    ).fetchone()
    outcome = "replaced" if existing and existing[0] else "ingested"
    batch = rows.assign(source=source, source_file=source_file, fetched_at=utcnow())
    fetched = SourceFile(dataset=DATASET, partition_key=partition_key,
                         source_file=source_file or location, location=location, sha256=sha,
                         rows=len(rows), fetched_at=utcnow())
    key_sql = "summary_type || '|' || symbol || '|' || strftime(last_update_date, '%Y-%m-%d')"
    if firm:
        key_sql += " || '|' || mpid"
    where = f"week_start_date = ? AND tier = ? AND list_contains(?, {key_sql})"
    writer.replace_partition(table, batch, where=where,
                             params=[week, tier, _revision_keys(rows, firm)], source=fetched,
                             outcome=outcome, trade_date=week,
                             message=f"{len(rows)} {level} row(s) from {source}")
    return outcome


def store_parsed(writer: Writer, parsed: src.ParsedOtc, summary: OtcIngestSummary, *,
                 source: str, location: str, source_file: str | None, by_firm: bool,
                 force: bool, scope: str = "") -> None:
    """Store every week + tier of a parsed source, each in its own transaction."""
    summary.add_skips(parsed.skipped)
    levels = [("symbol", parsed.symbol_rows)]
    if by_firm:
        levels.append(("firm", parsed.firm_rows))
    elif not parsed.firm_rows.empty:
        log.info("%s: %d firm-level row(s) not stored (use --by-firm)", location,
                 len(parsed.firm_rows))
    for level, frame in levels:
        if frame.empty:
            continue
        for (week, tier), rows in frame.groupby(["week_start_date", "tier"], sort=True):
            outcome = store_week(writer, rows.reset_index(drop=True), level=level,
                                 week=pd.Timestamp(week).date(), tier=str(tier), source=source,
                                 location=location, source_file=source_file, force=force,
                                 scope=scope)
            setattr(summary, outcome, getattr(summary, outcome) + 1)
            if outcome != "unchanged":
                if level == "firm":
                    summary.firm_rows += len(rows)
                else:
                    summary.rows += len(rows)


def parse_path(path: Path, *, kind: src.FileKind = "ATS",
               week_start: dt.date | None = None) -> src.ParsedOtc:
    """Parse a saved API response (JSON) or a website download (pipe-delimited) by content."""
    data = path.read_bytes()
    head = data.lstrip()[:1]
    if head in (b"[", b"{"):
        return src.parse_saved_json(data, str(path))
    return src.parse_download_file(data, str(path), kind=kind, week_start=week_start)


def ingest_files(writer: Writer, paths: Sequence[Path], *, kind: src.FileKind = "ATS",
                 week_start: dt.date | None = None, by_firm: bool = False, force: bool = False,
                 stop_on_error: bool = True,
                 on_file: Callable[[Path], None] | None = None) -> OtcIngestSummary:
    """Ingest download files / saved JSON responses. A bad file raises (``stop_on_error``)
    or is logged, counted in ``failed`` and skipped; it never stores a partial week."""
    summary = OtcIngestSummary()
    for path in paths:
        try:
            with failures_logged(writer, DATASET, str(path)):
                parsed = parse_path(path, kind=kind, week_start=week_start)
                store_parsed(writer, parsed, summary, source="file", location=str(path),
                             source_file=path.name, by_firm=by_firm, force=force)
        except DataFormatError as exc:
            if stop_on_error:
                raise
            log.error("skipped %s: %s", path, exc.message)
            summary.failed.append(str(path))
        finally:
            if on_file is not None:
                on_file(path)
    return summary


def files_in(directory: Path) -> list[Path]:
    """The OTC files of a directory, sorted by name; a folder without any is an error saying
    what was expected and what was found."""
    found = sorted(p for p in directory.iterdir()
                   if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
    if not found:
        others = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
        shown = ", ".join(others[:5]) + (f" (+{len(others) - 5} more)" if len(others) > 5
                                         else "")
        raise ConfigError(
            f"--from-dir {directory} holds no FINRA OTC file: expected website downloads or "
            f"saved API responses ({', '.join(FILE_SUFFIXES)}), found "
            + (f"{len(others)} other file(s): {shown}" if others else "nothing (it is empty)"))
    return found


def _fetch_all(api: src.OtcApiClient, query: src.OtcQuery) -> list[src.FetchedPages]:
    """Fetch a query, splitting it by week when it would pass the API's offset cap."""
    try:
        return [api.fetch(query)]
    except src.OffsetCapError:
        if query.first_week == query.last_week:
            raise
        parts = query.split_by_week()
        log.warning("%s passes the offset cap: split into %d weekly queries",
                    query.describe(), len(parts))
        return [fetched for part in parts for fetched in _fetch_all(api, part)]


def ingest_api(writer: Writer, api: src.OtcApiClient, *, first_week: dt.date,
               last_week: dt.date, tiers: Sequence[str], symbols: Sequence[str] = (),
               by_firm: bool = False, force: bool = False, today: dt.date | None = None,
               on_query: Callable[[src.OtcQuery], None] | None = None) -> OtcIngestSummary:
    """Fetch symbol-level rows (and firm-level rows with ``by_firm``) and store them.

    Without a symbol filter the range is queried week by week (a whole tier-week is a few
    thousand rows); with one, the whole range is one query per tier and dataset, split by week
    only if it would pass the offset cap. Every query is fetched completely before anything of
    it is stored.
    """
    with failures_logged(writer, DATASET, api.base_url):
        return _ingest_api(writer, api, first_week=first_week, last_week=last_week,
                           tiers=tiers, symbols=symbols, by_firm=by_firm, force=force,
                           today=today, on_query=on_query)


def _ingest_api(writer: Writer, api: src.OtcApiClient, *, first_week: dt.date,
                last_week: dt.date, tiers: Sequence[str], symbols: Sequence[str],
                by_firm: bool, force: bool, today: dt.date | None,
                on_query: Callable[[src.OtcQuery], None] | None) -> OtcIngestSummary:
    summary = OtcIngestSummary()
    levels = [("symbol", src.SYMBOL_TYPES)] + ([("firm", src.FIRM_TYPES)] if by_firm else [])
    scope = ""
    if symbols:
        scope = hashlib.sha256(",".join(sorted(set(symbols))).encode()).hexdigest()[:12]
    for level, types in levels:
        queries = src.plan_queries(first_week, last_week, tiers, types, symbols,
                                   today=today or dt.date.today())
        if not symbols:
            queries = [part for q in queries for part in q.split_by_week()]
        for query in queries:
            for fetched in _fetch_all(api, query):
                parsed = src.parse_api_records(fetched.records, source=fetched.url)
                source = "api_historic" if query.dataset == src.DATASET_HISTORIC else "api"
                if level == "symbol":
                    parsed.firm_rows = src.empty_firm_frame()
                store_parsed(writer, parsed, summary, source=source, location=fetched.url,
                             source_file=None, by_firm=level == "firm", force=force,
                             scope=scope)
            if on_query is not None:
                on_query(query)
    summary.requests = api.requests
    return summary


def make_api_client(client: httpx.Client, base_url: str, *, policy: HttpPolicy,
                    requests_per_second: float) -> src.OtcApiClient:
    """Convenience wrapper so callers need only this module."""
    return src.OtcApiClient(client, base_url, policy=policy,
                            requests_per_second=requests_per_second)
