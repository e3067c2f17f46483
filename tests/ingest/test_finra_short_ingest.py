"""Ingest orchestration on hand-written fixtures: outcomes, idempotency, atomicity, HTTP runs."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.ingest.finra_short import (
    IngestSummary,
    ingest_finra_short,
    plan_files,
    resolve_families,
)
from darkpool_analysis.store import connect_readonly, open_writer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "finra_short"
CNMS_DAYS = ("20210802", "20210803", "20210804")
USER_TABLES = ("finra_short_daily_raw", "source_files", "ingest_log", "schema_version")


def _settings(db_path: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {"db_path": db_path, "http_backoff": 0.0, "http_retries": 1,
                               "http_timeout": 5.0, "http_concurrency": 2}
    return load_config(**(base | overrides))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable copy of the three CNMS fixture files and the empty FNRA file."""
    target = tmp_path / "files"
    target.mkdir()
    for day in CNMS_DAYS:
        shutil.copy(FIXTURES / f"CNMSshvol{day}.txt", target)
    shutil.copy(FIXTURES / "FNRAshvol20210802.txt", target)
    return target


def _contents(db_path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the published database, sorted (the before/after oracle)."""
    conn = connect_readonly(db_path)
    try:
        names = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables ORDER BY table_name").fetchall()]
        return {name: sorted(conn.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
                for name in names}
    finally:
        conn.close()


def _query(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = connect_readonly(db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _ingest(db_path: Path, folder: Path, start: str = "2021-08-02", end: str = "2021-08-04",
            families: str | list[str] = "CNMS", force: bool = False) -> IngestSummary:
    return ingest_finra_short(_settings(db_path), start, end, families, from_dir=folder,
                              force=force)


# -- planning -------------------------------------------------------------------------------

def test_plan_uses_sessions_only_and_skips_holidays() -> None:
    plan, notes = plan_files("2021-09-03", "2021-09-07", "CNMS")  # Mon 09-06 is Labor Day
    assert plan == [("CNMS", dt.date(2021, 9, 3)), ("CNMS", dt.date(2021, 9, 7))]
    assert notes == []


def test_plan_substitutes_facility_files_for_cnms_before_2018_08_01() -> None:
    plan, notes = plan_files("2018-07-31", "2018-08-01", "CNMS")
    assert plan == [("FNSQ", dt.date(2018, 7, 31)), ("FNYX", dt.date(2018, 7, 31)),
                    ("FNRA", dt.date(2018, 7, 31)), ("CNMS", dt.date(2018, 8, 1))]
    assert len(notes) == 1 and "CNMS starts 2018-08-01" in notes[0]
    assert "FNRA, FNSQ, FNYX" in notes[0]


def test_plan_skips_fnqc_before_2018_09_10() -> None:
    plan, notes = plan_files("2018-09-07", "2018-09-10", ["FNQC"])
    assert plan == [("FNQC", dt.date(2018, 9, 10))]
    assert "FNQC starts 2018-09-10: skipped 1" in notes[0]


def test_family_all_and_unknown_family() -> None:
    assert resolve_families("all") == ["CNMS", "FNSQ", "FNQC", "FNYX", "FNRA", "FORF"]
    assert resolve_families(["fnsq", "FNSQ"]) == ["FNSQ"]
    with pytest.raises(ValueError, match="expected one of CNMS, FNSQ"):
        resolve_families("NYSE")


# -- from a folder ---------------------------------------------------------------------------

def test_from_dir_ingests_hand_checked_rows(db_path: Path, folder: Path) -> None:
    summary = _ingest(db_path, folder)
    assert summary.ok
    assert summary.counts["ingested"] == 3
    assert summary.rows_written == 5 + 3 + 2
    rows = _query(db_path, "SELECT trade_date, facility, symbol, symbol_norm, short_volume, "
                           "short_exempt_volume, total_volume, market, source_file "
                           "FROM finra_short_daily_raw WHERE symbol IN ('BRK/B', 'GME') "
                           "ORDER BY trade_date, symbol")
    assert rows == [
        (dt.date(2021, 8, 2), "CNMS", "BRK/B", "BRK.B", 225032.0, 1127.0, 910288.0, "B,Q,N",
         "CNMSshvol20210802.txt"),
        (dt.date(2021, 8, 2), "CNMS", "GME", "GME", 17705180.795191, 56657.5, 24686076.1,
         "B,Q,N", "CNMSshvol20210802.txt"),
        (dt.date(2021, 8, 3), "CNMS", "BRK/B", "BRK.B", 200000.0, 1000.0, 900000.0, "B,Q,N",
         "CNMSshvol20210803.txt"),
        (dt.date(2021, 8, 3), "CNMS", "GME", "GME", 1500000.0, 0.0, 3000000.0, "B,Q,N",
         "CNMSshvol20210803.txt"),
        (dt.date(2021, 8, 4), "CNMS", "GME", "GME", 1000000.0, 500.0, 2500000.0, "B,Q,N",
         "CNMSshvol20210804.txt"),
    ]
    sources = _query(db_path, "SELECT partition_key, rows FROM source_files ORDER BY 1")
    assert sources == [("CNMS/2021-08-02", 5), ("CNMS/2021-08-03", 3), ("CNMS/2021-08-04", 2)]


def test_ingest_twice_is_idempotent(db_path: Path, folder: Path) -> None:
    _ingest(db_path, folder)
    first = _contents(db_path)
    summary = _ingest(db_path, folder)
    assert summary.counts["unchanged"] == 3
    assert summary.rows_written == 0
    second = _contents(db_path)
    assert second["finra_short_daily_raw"] == first["finra_short_daily_raw"]
    assert second["source_files"] == first["source_files"]
    outcomes = _query(db_path, "SELECT outcome, count(*) FROM ingest_log GROUP BY 1 ORDER BY 1")
    assert outcomes == [("ingested", 3), ("unchanged", 3)]


def test_republished_file_replaces_its_partition(db_path: Path, folder: Path) -> None:
    _ingest(db_path, folder)
    updated = (folder / "CNMSshvol20210803.txt").read_bytes().replace(
        b"20210803|GME|1500000|0|3000000", b"20210803|GME|1600000|0|3100000")
    (folder / "CNMSshvol20210803.txt").write_bytes(updated)
    summary = _ingest(db_path, folder)
    assert summary.counts == {"ingested": 0, "replaced": 1, "unchanged": 2,
                              "not_published": 0, "failed": 0, "missing": 0}
    assert _query(db_path, "SELECT count(*) FROM finra_short_daily_raw") == [(10,)]
    assert _query(db_path, "SELECT short_volume, total_volume FROM finra_short_daily_raw "
                           "WHERE trade_date = DATE '2021-08-03' AND symbol = 'GME'") == [
        (1600000.0, 3100000.0)]
    sha_rows = _query(db_path, "SELECT DISTINCT sha256 FROM finra_short_daily_raw "
                               "WHERE trade_date = DATE '2021-08-03'")
    assert sha_rows == _query(db_path, "SELECT sha256 FROM source_files "
                                       "WHERE partition_key = 'CNMS/2021-08-03'")


def test_force_rewrites_unchanged_files(db_path: Path, folder: Path) -> None:
    _ingest(db_path, folder)
    summary = _ingest(db_path, folder, force=True)
    assert summary.counts["replaced"] == 3
    assert _query(db_path, "SELECT count(*) FROM finra_short_daily_raw") == [(10,)]


def test_empty_fnra_file_is_recorded_without_rows(db_path: Path, folder: Path) -> None:
    summary = _ingest(db_path, folder, start="2021-08-02", end="2021-08-02", families="FNRA")
    assert summary.counts["ingested"] == 1
    assert _query(db_path, "SELECT partition_key, rows FROM source_files") == [
        ("FNRA/2021-08-02", 0)]
    assert _query(db_path, "SELECT count(*) FROM finra_short_daily_raw") == [(0,)]


def test_missing_sessions_in_folder_are_gaps_not_errors(db_path: Path, folder: Path) -> None:
    summary = _ingest(db_path, folder, start="2021-08-02", end="2021-08-06")
    assert summary.ok
    assert [(g.facility, g.trade_date) for g in summary.gaps] == [
        ("CNMS", dt.date(2021, 8, 5)), ("CNMS", dt.date(2021, 8, 6))]
    assert summary.counts["ingested"] == 3


def test_gzip_files_in_folder_store_the_same_rows(tmp_path: Path, folder: Path) -> None:
    gz_folder = tmp_path / "gz"
    gz_folder.mkdir()
    for path in folder.iterdir():
        (gz_folder / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
    plain_db, gz_db = tmp_path / "plain.duckdb", tmp_path / "gz.duckdb"
    _ingest(plain_db, folder)
    _ingest(gz_db, gz_folder)
    sql = ("SELECT * EXCLUDE (fetched_at) FROM finra_short_daily_raw "
           "ORDER BY trade_date, symbol")
    assert _query(gz_db, sql) == _query(plain_db, sql)


def test_reuses_an_open_writer(db_path: Path, folder: Path) -> None:
    with open_writer(db_path) as writer:
        summary = ingest_finra_short(_settings(db_path), "2021-08-02", "2021-08-04", "CNMS",
                                     writer=writer, from_dir=folder)
    assert summary.counts["ingested"] == 3
    assert _query(db_path, "SELECT count(*) FROM finra_short_daily_raw") == [(10,)]


def test_missing_folder_is_a_clear_error(db_path: Path, tmp_path: Path) -> None:
    from darkpool_analysis.errors import ConfigError

    with pytest.raises(ConfigError, match="is not a folder"):
        _ingest(db_path, tmp_path / "nowhere")


# -- bad files write nothing -------------------------------------------------------------------

def _truncate(data: bytes) -> bytes:
    return data[: data.rindex(b"20210802|GME")] + b"5\r\n"


BAD_FILES = {
    "truncated": _truncate,
    "html_page": lambda data: (FIXTURES / "error_page.html").read_bytes(),
    "non_utf8": lambda data: data.replace(b"AAPL", b"A\xe9PL"),
    "duplicate_symbol": lambda data: data.replace(b"|GME|", b"|AAPL|"),
    "short_above_total": lambda data: data.replace(b"|1200|0|3400|", b"|3401|0|3400|"),
    "wrong_date": lambda data: data.replace(b"20210802|BRK/B", b"20210803|BRK/B"),
    "no_trailer": lambda data: data[: data.rindex(b"5\r\n")],
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("corruption", sorted(BAD_FILES))
def test_bad_file_leaves_database_exactly_as_it_was(db_path: Path, folder: Path,
                                                    corruption: str) -> None:
    _ingest(db_path, folder, start="2021-08-03", end="2021-08-04")
    before = _contents(db_path)
    path = folder / "CNMSshvol20210802.txt"
    path.write_bytes(BAD_FILES[corruption](path.read_bytes()))
    summary = _ingest(db_path, folder, start="2021-08-02", end="2021-08-02")
    assert not summary.ok
    [failure] = summary.failed
    assert failure.trade_date == dt.date(2021, 8, 2)
    assert "CNMSshvol20210802.txt" in (failure.message or "")
    after = _contents(db_path)
    # Every data and provenance table is exactly as it was; the run's failure is recorded
    # in ingest_log (issue 12 item 7), and nothing else was added to it.
    assert {k: v for k, v in after.items() if k != "ingest_log"} == {
        k: v for k, v in before.items() if k != "ingest_log"}
    new_log = [row for row in after["ingest_log"] if row not in before["ingest_log"]]
    assert len(new_log) == 1 and len(after["ingest_log"]) == len(before["ingest_log"]) + 1
    assert _query(db_path, "SELECT partition_key, outcome, message LIKE '%CNMSshvol20210802%' "
                           "FROM ingest_log WHERE outcome = 'failed'") == [
        ("CNMS/2021-08-02", "failed", True)]


def test_bad_file_fails_alone_and_the_others_are_stored(db_path: Path, folder: Path) -> None:
    path = folder / "CNMSshvol20210803.txt"
    path.write_bytes(path.read_bytes().replace(b"|1500000|", b"|15x0000|"))
    summary = _ingest(db_path, folder)
    assert summary.counts["ingested"] == 2
    assert summary.counts["failed"] == 1
    assert "line 4, field 'ShortVolume'" in (summary.failed[0].message or "")
    assert _query(db_path, "SELECT DISTINCT trade_date FROM finra_short_daily_raw ORDER BY 1") == [
        (dt.date(2021, 8, 2),), (dt.date(2021, 8, 4),)]


# -- over HTTP ----------------------------------------------------------------------------------

def _serve_fixture(server: HTTPServer, day: str) -> None:
    server.expect_request(f"/daily/CNMSshvol{day}.txt").respond_with_data(
        (FIXTURES / f"CNMSshvol{day}.txt").read_bytes())


def test_http_run_outcomes(httpserver: HTTPServer, db_path: Path) -> None:
    _serve_fixture(httpserver, "20210802")
    httpserver.expect_request("/daily/CNMSshvol20210803.txt").respond_with_data(
        (FIXTURES / "access_denied.xml").read_bytes(), status=403)
    httpserver.expect_oneshot_request("/daily/CNMSshvol20210804.txt").respond_with_data(
        "internal error", status=500)
    _serve_fixture(httpserver, "20210804")
    truncated = (FIXTURES / "CNMSshvol20210802.txt").read_bytes().replace(
        b"20210802", b"20210805")[:-20]
    httpserver.expect_request("/daily/CNMSshvol20210805.txt").respond_with_data(truncated)
    settings = _settings(db_path, finra_cdn_url=httpserver.url_for("/daily"))
    summary = ingest_finra_short(settings, "2021-08-02", "2021-08-05", "CNMS")
    assert summary.counts == {"ingested": 2, "replaced": 0, "unchanged": 0,
                              "not_published": 1, "failed": 1, "missing": 0}
    assert "CNMSshvol20210805.txt" in (summary.failed[0].message or "")
    assert _query(db_path, "SELECT partition_key, outcome FROM ingest_log ORDER BY id") == [
        ("CNMS/2021-08-02", "ingested"), ("CNMS/2021-08-03", "not_published"),
        ("CNMS/2021-08-04", "ingested"), ("CNMS/2021-08-05", "failed")]
    assert _query(db_path, "SELECT count(*) FROM finra_short_daily_raw") == [(7,)]


def test_http_never_requests_holidays(httpserver: HTTPServer, db_path: Path) -> None:
    for day in ("20210903", "20210907"):
        httpserver.expect_request(f"/daily/CNMSshvol{day}.txt").respond_with_data(
            (FIXTURES / "access_denied.xml").read_bytes(), status=403)
    settings = _settings(db_path, finra_cdn_url=httpserver.url_for("/daily"))
    summary = ingest_finra_short(settings, "2021-09-03", "2021-09-07", "CNMS")
    assert summary.counts["not_published"] == 2
    assert sorted(request.path for request, _ in httpserver.log) == [
        "/daily/CNMSshvol20210903.txt", "/daily/CNMSshvol20210907.txt"]


def test_cli_exits_non_zero_with_summary_when_a_file_fails(httpserver: HTTPServer,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           db_path: Path) -> None:
    _serve_fixture(httpserver, "20210802")
    httpserver.expect_request("/daily/CNMSshvol20210803.txt").respond_with_data(
        "<html><body>Bad gateway</body></html>", status=502)
    monkeypatch.setenv("FINRA_CDN_URL", httpserver.url_for("/daily"))
    monkeypatch.setenv("DARKPOOL_HTTP_RETRIES", "1")
    monkeypatch.setenv("DARKPOOL_HTTP_BACKOFF", "0")
    result = CliRunner().invoke(app, ["ingest", "finra-short", "--start", "2021-08-02",
                                      "--end", "2021-08-03"])
    assert result.exit_code == 1, result.output
    assert "ingested" in result.output and "failed" in result.output
    assert "HTTP 502" in result.output
    assert _query(db_path, "SELECT count(*) FROM finra_short_daily_raw") == [(5,)]


def test_cli_rejects_bad_dates() -> None:
    result = CliRunner().invoke(app, ["ingest", "finra-short", "--start", "2021-13-01",
                                      "--end", "2021-12-31"])
    assert result.exit_code == 2
    assert "not a date" in result.output
