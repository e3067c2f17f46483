"""Ingest FINRA Reg SHO daily short-sale files into ``finra_short_daily_raw``.

For every XNYS session in range and every requested family the file is downloaded from the
CDN (or read from a local folder), hashed, parsed and validated in worker threads, then
written by the single writer in one transaction per file:

* same sha256 as already stored -> ``unchanged`` (skipped unless ``force``);
* new -> ``ingested``; different sha256 (FINRA re-published it) -> ``replaced`` (the partition
  ``facility = ? AND trade_date = ?`` is deleted and re-inserted, never duplicated);
* 403 ``AccessDenied`` or 404 -> ``not_published`` (logged);
* any other problem -> ``failed`` for that file only (nothing written), the run continues;
* a session with no file in ``--from-dir`` -> ``missing`` (a data gap, not an error);
* an empty file (header + trailer ``0``) for a session whose stored partition has rows ->
  ``failed`` unless ``force`` (an empty consolidated file is not a correction to apply
  silently); the ADF family (FNRA), which is often empty, is exempt;
* the CDN host cannot be reached at all (offline, DNS, refused) -> the run stops after that
  first file (``summary.unreachable``); the files not attempted are counted, not failed.

Every failed file is recorded in ``ingest_log`` (outcome ``failed``, with its message).

CNMS starts on 2018-08-01; for earlier dates a CNMS request fetches the facility files
(FNSQ, FNYX, FNRA; FNQC from 2018-09-10) instead, whose per-symbol sum equals CNMS.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, Protocol, get_args

import httpx
import pandas as pd
import pyarrow as pa

from darkpool_analysis import trading_calendar
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, DataFormatError, FetchError
from darkpool_analysis.sources.finra_short import (
    CNMS_COMPONENTS,
    FACILITIES,
    FIRST_DATE,
    Facility,
    decompress_if_gzip,
    fetch_short_file,
    file_name,
    parse_file_name,
    parse_short_table,
    sha256_hex,
)
from darkpool_analysis.sources.http import HostUnreachableError, HttpPolicy, make_client
from darkpool_analysis.store import LogEntry, SourceFile, Writer, open_writer, utcnow

log = logging.getLogger(__name__)

DATASET: Final = "finra_short"
TABLE: Final = "finra_short_daily_raw"
#: Validated files are committed together up to this many rows or files per transaction:
#: a commit per 10k-row file costs more than parsing it.
BATCH_ROWS: Final = 500_000
BATCH_FILES: Final = 64
#: Families whose files are often empty (the ADF): an empty file never needs ``force``.
OFTEN_EMPTY: Final[frozenset[str]] = frozenset({"FNRA"})

Outcome = Literal["ingested", "replaced", "unchanged", "not_published", "failed", "missing"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)
FamilyChoice = Facility | Literal["all"]


@dataclass(frozen=True)
class FileResult:
    """What happened to one (facility, trade date) file."""

    facility: Facility
    trade_date: dt.date
    outcome: Outcome
    rows: int = 0
    location: str | None = None
    message: str | None = None


@dataclass
class IngestSummary:
    """Per-file results of one run, plus notes such as the CNMS -> facility substitution."""

    results: list[FileResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    planned: int = 0
    #: Why the run stopped early when the host could not be reached (None otherwise).
    unreachable: str | None = None

    @property
    def not_attempted(self) -> int:
        """Planned files never tried because the run stopped (host unreachable)."""
        return self.planned - len(self.results)

    @property
    def counts(self) -> dict[Outcome, int]:
        """Files per outcome (every outcome present, zero when none)."""
        found = collections.Counter(result.outcome for result in self.results)
        return {outcome: found.get(outcome, 0) for outcome in OUTCOMES}

    @property
    def rows_written(self) -> int:
        return sum(r.rows for r in self.results if r.outcome in ("ingested", "replaced"))

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.outcome == "failed"]

    @property
    def gaps(self) -> list[FileResult]:
        """Sessions without a file in the local folder (data gaps, not errors)."""
        return [r for r in self.results if r.outcome == "missing"]

    @property
    def ok(self) -> bool:
        """True when no file failed and the host was reached (not-published dates and gaps
        are not failures)."""
        return not self.failed and self.unreachable is None

    def describe_failure(self) -> str:
        """One exact sentence on what failed and what was stored (for the CLI)."""
        counts = self.counts
        if self.unreachable is not None:
            done = len(self.results) - len(self.failed)
            return (f"{self.unreachable}; stopped after the first attempt: "
                    f"{self.not_attempted:,} of {self.planned:,} file(s) not attempted"
                    + (f", {done:,} done before" if done else ", nothing stored"))
        failed = counts["failed"]
        if len(self.results) == 1:
            return "the file failed; nothing was stored"
        stored = counts["ingested"] + counts["replaced"]
        parts = [f"{stored:,} stored" if stored else "nothing was stored"]
        for outcome, label in (("unchanged", "unchanged"), ("not_published", "not published"),
                               ("missing", "not in the folder")):
            if counts[outcome]:
                parts.append(f"{counts[outcome]:,} {label}")
        return f"{failed:,} of {len(self.results):,} file(s) failed; " + ", ".join(parts)

    def to_frame(self) -> pd.DataFrame:
        """One row per file: facility, trade_date, outcome, rows, location, message."""
        columns = ["facility", "trade_date", "outcome", "rows", "location", "message"]
        return pd.DataFrame([r.__dict__ for r in self.results], columns=columns)


class IngestProgress(Protocol):
    """Receives progress events (the CLI draws a Rich progress bar from them)."""

    def started(self, total: int) -> None: ...

    def file_done(self, result: FileResult) -> None: ...


# -- planning -----------------------------------------------------------------------------

def resolve_families(families: str | Iterable[str]) -> list[Facility]:
    """Validate family names (``all`` = every family); raise ValueError listing valid names."""
    names = [families] if isinstance(families, str) else list(families)
    chosen: list[Facility] = []
    for name in (str(n).strip().upper() for n in names):
        if name == "ALL":
            chosen.extend(FACILITIES)
        elif name in FACILITIES:
            chosen.append(name)  # type: ignore[arg-type]
        else:
            raise ValueError(f"unknown Reg SHO family {name!r}; expected one of "
                             f"{', '.join(FACILITIES)} or all")
    return list(dict.fromkeys(chosen))


def plan_files(start: trading_calendar.DateLike, end: trading_calendar.DateLike,
               families: str | Iterable[str] = "CNMS"
               ) -> tuple[list[tuple[Facility, dt.date]], list[str]]:
    """Every (facility, session) to load, and notes on substitutions and skipped dates.

    CNMS before 2018-08-01 becomes its component facilities; a family is never requested
    before its first publication date (FNQC: 2018-09-10).
    """
    wanted = resolve_families(families)
    sessions = trading_calendar.sessions_between(start, end)
    cnms_start = FIRST_DATE["CNMS"]
    plan: dict[tuple[Facility, dt.date], None] = {}
    substituted: list[dt.date] = []
    skipped: collections.Counter[str] = collections.Counter()
    for facility in wanted:
        for day in sessions:
            if facility == "CNMS" and day < cnms_start:
                substituted.append(day)
                for part in CNMS_COMPONENTS:
                    if day >= FIRST_DATE.get(part, day):
                        plan[(part, day)] = None
            elif day < FIRST_DATE.get(facility, day):
                skipped[facility] += 1
            else:
                plan[(facility, day)] = None
    notes: list[str] = []
    if substituted:
        used = sorted({f for f, d in plan if d < cnms_start and f in CNMS_COMPONENTS})
        notes.append(f"CNMS starts {cnms_start}: fetching the facility files {', '.join(used)} "
                     f"instead for {len(substituted)} session(s) "
                     f"{substituted[0]}..{substituted[-1]} (their sum per symbol equals CNMS)")
    for facility, count in skipped.items():
        notes.append(f"{facility} starts {FIRST_DATE[facility]}: skipped {count} earlier "
                     "session(s)")
    ordered = sorted(plan, key=lambda key: (key[1], FACILITIES.index(key[0])))
    return ordered, notes


def index_folder(folder: Path, families: Iterable[str] | None = None
                 ) -> dict[tuple[Facility, dt.date], Path]:
    """Reg SHO files in ``folder`` by (facility, date); ``.txt`` wins over ``.txt.gz``.

    A folder without a single file of the expected naming for ``families`` (default: any
    family) is an error saying what was expected and what was found: a wrong folder must not
    look like a run of missing sessions.
    """
    if not folder.is_dir():
        raise ConfigError(f"--from-dir {folder} is not a folder",
                          hint="pass the folder that holds the <FAMILY>shvol<YYYYMMDD>.txt files")
    found: dict[tuple[Facility, dt.date], Path] = {}
    others: list[str] = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name.endswith(".txt")):
        key = parse_file_name(path.name)
        if key is not None and path.is_file():
            found[key] = path  # sorted so that the plain .txt is stored last and wins
        elif not path.name.startswith("."):
            others.append(path.name + ("/" if path.is_dir() else ""))
    wanted = sorted(set(families)) if families is not None else None
    if wanted == []:  # nothing planned: nothing to look for
        return found
    if not any(wanted is None or facility in wanted for facility, _ in found):
        names = "|".join(wanted) if wanted else "CNMS|FNSQ|..."
        seen = sorted({facility for facility, _ in found})
        shown = ", ".join(sorted(others)[:5]) + (f" (+{len(others) - 5} more)"
                                                 if len(others) > 5 else "")
        what = (f"only {', '.join(seen)} file(s)" if seen else
                f"{len(others)} other file(s): {shown}" if others else "nothing (it is empty)")
        raise ConfigError(
            f"--from-dir {folder} holds no Reg SHO file of the requested families: expected "
            f"names like {names.split('|')[0]}shvol20210802.txt (or .txt.gz; families {names}), "
            f"found {what}",
            hint="pass the folder of FINRA daily short-sale files (darkpool ingest prices "
                 "--from-dir takes <TICKER>.csv files, ingest finra-otc the OTC downloads)")
    return found


# -- loading (worker threads) -------------------------------------------------------------

@dataclass(frozen=True)
class _Loaded:
    """A file fetched/read and parsed in a worker, ready for the writer thread."""

    facility: Facility
    trade_date: dt.date
    location: str
    outcome: Outcome | None = None          # set for not_published / missing / failed
    message: str | None = None
    unreachable: bool = False               # failed because the host cannot be reached
    attempted: bool = True                  # False: skipped, the run is stopping
    sha256: str | None = None
    table: pa.Table | None = None          # None when unchanged (parse skipped)
    fetched_at: dt.datetime | None = None
    known_sha256: str | None = None        # the stored file's hash before this run


class _Loader:
    """Gets the bytes of one file from the CDN or a folder, hashes and parses them."""

    def __init__(self, settings: Settings, client: httpx.Client | None,
                 folder_files: dict[tuple[Facility, dt.date], Path] | None,
                 folder: Path | None) -> None:
        self.base_url = settings.finra_cdn_url
        self.policy = HttpPolicy.from_settings(settings)
        self.client = client
        self.folder_files = folder_files
        self.folder = folder
        self.stored_rows: dict[str, int] = {}
        self.stop = threading.Event()

    def load(self, facility: Facility, trade_date: dt.date, known_sha: str | None,
             force: bool) -> _Loaded:
        name = file_name(facility, trade_date)
        if self.stop.is_set():
            return _Loaded(facility, trade_date, "", "failed", "not attempted",
                           unreachable=True, attempted=False)
        try:
            fetched = self._read(facility, trade_date)
        except HostUnreachableError as exc:
            self.stop.set()
            return _Loaded(facility, trade_date, exc.url, "failed", exc.message,
                           unreachable=True)
        except FetchError as exc:
            return _Loaded(facility, trade_date, exc.url, "failed", exc.message)
        except OSError as exc:
            return _Loaded(facility, trade_date, str(self.folder), "failed",
                           f"cannot read {name}: {exc}")
        if isinstance(fetched, _Loaded):
            return fetched
        location, raw, fetched_at = fetched
        try:
            content = decompress_if_gzip(raw, location)
            sha = sha256_hex(content)
            if known_sha == sha and not force:
                return _Loaded(facility, trade_date, location, sha256=sha, fetched_at=fetched_at,
                               known_sha256=known_sha)
            table = parse_short_table(content, location)
        except DataFormatError as exc:
            return _Loaded(facility, trade_date, location, "failed", str(exc))
        stored = self.stored_rows.get(_partition_key(facility, trade_date), 0)
        if table.num_rows == 0 and stored and not force and facility not in OFTEN_EMPTY:
            return _Loaded(facility, trade_date, location, "failed",
                           f"{location}: empty file (header + trailer 0) for {trade_date}, "
                           f"whose {stored:,} stored {facility} rows it would delete; expected "
                           "data rows (pass --force to apply an empty file)")
        return _Loaded(facility, trade_date, location, sha256=sha, table=table,
                       fetched_at=fetched_at, known_sha256=known_sha)

    def _read(self, facility: Facility, trade_date: dt.date
              ) -> tuple[str, bytes, dt.datetime] | _Loaded:
        if self.folder_files is not None:
            path = self.folder_files.get((facility, trade_date))
            if path is None:
                return _Loaded(facility, trade_date, str(self.folder), "missing",
                               f"no {file_name(facility, trade_date)} in {self.folder}")
            return str(path.resolve()), path.read_bytes(), utcnow()
        if self.client is None:
            raise AssertionError("an HTTP client is required when not reading a folder")
        download = fetch_short_file(self.client, self.base_url, facility, trade_date,
                                    policy=self.policy)
        if download.content is None:
            return _Loaded(facility, trade_date, download.url, "not_published",
                           f"HTTP {download.status}: not published (holiday, or not yet: "
                           "FINRA publishes by 18:00 ET)")
        return download.url, download.content, utcnow()


# -- writing (the writer's thread) ---------------------------------------------------------

def _partition_key(facility: Facility, trade_date: dt.date) -> str:
    return f"{facility}/{trade_date.isoformat()}"


@dataclass
class _Batch:
    """What one commit writes: partitions to replace, their rows, provenance and log rows."""

    keys: list[tuple[Facility, dt.date]] = field(default_factory=list)
    frames: list[pa.Table] = field(default_factory=list)
    sources: list[SourceFile] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)


def _plan_write(loaded: _Loaded, force: bool, batch: _Batch) -> FileResult:
    """Decide what one loaded file contributes to ``batch`` and what its outcome is."""
    facility, day, key = loaded.facility, loaded.trade_date, _partition_key(loaded.facility,
                                                                           loaded.trade_date)
    if loaded.outcome == "failed":
        batch.log.append(LogEntry(DATASET, key, day, loaded.location or None, "failed",
                                  message=loaded.message))
        return FileResult(facility, day, "failed", 0, loaded.location, loaded.message)
    if loaded.outcome == "missing":
        return FileResult(facility, day, loaded.outcome, 0, loaded.location, loaded.message)
    if loaded.outcome == "not_published":
        batch.log.append(LogEntry(DATASET, key, day, loaded.location, "not_published",
                                  message=loaded.message))
        return FileResult(facility, day, "not_published", 0, loaded.location, loaded.message)
    if loaded.sha256 is None or loaded.fetched_at is None:
        raise AssertionError("a loaded file always has a hash and a fetch time")
    # Looked up with Writer.known_sha256 just before loading; this process holds the writer
    # lock and each partition appears once in the plan, so the value is still current.
    known = loaded.known_sha256
    if known == loaded.sha256 and not force:
        batch.log.append(LogEntry(DATASET, key, day, loaded.location, "unchanged",
                                  sha256=loaded.sha256))
        return FileResult(facility, day, "unchanged", 0, loaded.location)
    if loaded.table is None:
        raise AssertionError("parse is only skipped for unchanged files")
    table = loaded.table
    rows = table.num_rows
    outcome: Outcome = "ingested" if known is None else "replaced"
    name = file_name(facility, day)
    batch.keys.append((facility, day))
    batch.sources.append(SourceFile(DATASET, key, name, loaded.location, loaded.sha256, rows,
                                    loaded.fetched_at))
    batch.log.append(LogEntry(DATASET, key, day, loaded.location, outcome, rows,
                              loaded.sha256,
                              "valid empty file (header + trailer 0)" if rows == 0 else None))
    if rows:
        batch.frames.append(
            table.append_column("facility", pa.repeat(pa.scalar(facility), rows))
            .append_column("source_file", pa.repeat(pa.scalar(name), rows))
            .append_column("sha256", pa.repeat(pa.scalar(loaded.sha256), rows))
            .append_column("fetched_at", pa.repeat(pa.scalar(loaded.fetched_at,
                                                              pa.timestamp("us")), rows)))
    return FileResult(facility, day, outcome, rows, loaded.location)


def _ordered_results(pool: concurrent.futures.Executor, loader: _Loader,
                     plan: Sequence[tuple[Facility, dt.date]], known: dict[str, str | None],
                     force: bool, window: int) -> Iterator[_Loaded]:
    """Load files concurrently, at most ``window`` in flight, yielded in plan order."""
    pending: collections.deque[concurrent.futures.Future[_Loaded]] = collections.deque()
    todo = iter(plan)
    for facility, day in todo:
        pending.append(pool.submit(loader.load, facility, day,
                                   known[_partition_key(facility, day)], force))
        if len(pending) >= window:
            break
    while pending:
        yield pending.popleft().result()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append(pool.submit(loader.load, nxt[0], nxt[1],
                                       known[_partition_key(*nxt)], force))


def _run(writer: Writer, settings: Settings, plan: list[tuple[Facility, dt.date]],
         summary: IngestSummary, *, from_dir: Path | None, force: bool,
         client: httpx.Client | None, progress: IngestProgress | None) -> None:
    folder_files = (index_folder(from_dir, {f for f, _ in plan}) if from_dir is not None
                    else None)
    stored = writer.known_sha256s(DATASET)
    known = {key: stored.get(key) for key in (_partition_key(f, d) for f, d in plan)}
    concurrency = settings.http_concurrency
    with contextlib.ExitStack() as stack:
        if folder_files is None and client is None:
            client = stack.enter_context(make_client(settings))
        loader = _Loader(settings, client, folder_files, from_dir)
        loader.stored_rows = _stored_rows(writer)
        pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="finra-short"))
        batch: list[_Loaded] = []
        batch_rows = 0
        for loaded in _ordered_results(pool, loader, plan, known, force, 2 * concurrency):
            if loaded.unreachable:
                if summary.unreachable is None and loaded.attempted:
                    summary.unreachable = loaded.message
                    batch.append(loaded)  # the one failure that shows the host is down
                continue
            batch.append(loaded)
            batch_rows += loaded.table.num_rows if loaded.table is not None else 0
            if batch_rows >= BATCH_ROWS or len(batch) >= BATCH_FILES:
                _store_batch(writer, batch, force, summary, progress)
                batch, batch_rows = [], 0
        _store_batch(writer, batch, force, summary, progress)


def _stored_rows(writer: Writer) -> dict[str, int]:
    """Rows stored per Reg SHO partition (from the provenance table)."""
    rows = writer.conn.execute("SELECT partition_key, rows FROM source_files WHERE dataset = ?",
                               [DATASET]).fetchall()
    return {str(key): int(count) for key, count in rows}


def _store_batch(writer: Writer, batch: list[_Loaded], force: bool, summary: IngestSummary,
                 progress: IngestProgress | None) -> None:
    """Write already-validated files in one commit of a few statements (each file stays
    all-or-nothing: a file that failed validation is not in the batch and writes nothing)."""
    if not batch:
        return
    plan = _Batch()
    results = [_plan_write(loaded, force, plan) for loaded in batch]
    if plan.keys or plan.log:
        keys = pd.DataFrame(plan.keys, columns=["facility", "trade_date"])
        writer.replace_partitions(TABLE, keys, plan.frames, sources=plan.sources,
                                  log_entries=plan.log)
    for result in results:
        if result.outcome == "failed" and result.message == summary.unreachable:
            log.info("%s %s: %s", result.facility, result.trade_date, result.message)
        else:  # the unreachable host is reported once, by the caller
            _log_result(result)
        summary.results.append(result)
        if progress is not None:
            progress.file_done(result)
    writer.maybe_publish()


def _log_result(result: FileResult) -> None:
    what = f"{result.facility} {result.trade_date}"
    if result.outcome == "failed":
        log.error("%s failed: %s", what, result.message)
    elif result.outcome == "missing":
        log.info("%s: data gap: %s", what, result.message)
    else:
        log.info("%s %s (%d rows)", what, result.outcome, result.rows)


def ingest_finra_short(
    settings: Settings,
    start: trading_calendar.DateLike,
    end: trading_calendar.DateLike,
    families: str | Iterable[str] = "CNMS",
    *,
    writer: Writer | None = None,
    from_dir: Path | str | None = None,
    force: bool = False,
    client: httpx.Client | None = None,
    progress: IngestProgress | None = None,
) -> IngestSummary:
    """Ingest Reg SHO daily files for every XNYS session in ``[start, end]``.

    Parameters
    ----------
    settings
        CDN URL, HTTP policy (``http_*``) and the database path (used when ``writer`` is None).
    families
        ``"CNMS"`` (default), any of ``FNSQ FNQC FNYX FNRA FORF``, a list of them, or ``"all"``.
    writer
        An open :class:`~darkpool_analysis.store.Writer` to reuse (``darkpool run``);
        otherwise one is opened on ``settings.db_path`` and published at the end.
    from_dir
        Read ``<FAMILY>shvol<YYYYMMDD>.txt[.gz]`` from this folder instead of the CDN.
    force
        Re-write files even when their sha256 is unchanged.
    client
        An ``httpx.Client`` to use (tests, shared sessions); one is created when None.

    Returns
    -------
    IngestSummary
        Per-file outcomes; ``summary.ok`` is False when any file failed. Failed files wrote
        nothing; every other file was committed in its own transaction.
    """
    started = time.perf_counter()
    plan, notes = plan_files(start, end, families)
    summary = IngestSummary(notes=notes, planned=len(plan))
    for note in notes:
        log.warning(note)
    if progress is not None:
        progress.started(len(plan))
    folder = Path(from_dir).expanduser() if from_dir is not None else None
    if writer is not None:
        _run(writer, settings, plan, summary, from_dir=folder, force=force, client=client,
             progress=progress)
    else:
        with open_writer(settings.db_path) as own_writer:
            _run(own_writer, settings, plan, summary, from_dir=folder, force=force,
                 client=client, progress=progress)
    summary.seconds = time.perf_counter() - started
    return summary
