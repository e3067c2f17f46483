"""Ingest of FINRA OTC weekly data into a real DuckDB file: CLI, API, revisions, bad input."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Request, Response

from darkpool_analysis import inventory
from darkpool_analysis.cli import app
from darkpool_analysis.errors import DataFormatError, FetchError
from darkpool_analysis.ingest import finra_otc as ingest
from darkpool_analysis.sources import finra_otc as otc
from darkpool_analysis.sources.http import HttpPolicy
from darkpool_analysis.store import open_writer

HEADER = otc.DOWNLOAD_FIRM_HEADER
DOWNLOADS = "spine-core_otc_tier_2025-12"
PATH = "/data/group/otcMarket/name/weeklySummary"


def _rows(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _download(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


@pytest.mark.realdata
def test_cli_imports_real_downloads_idempotently(real_data: Path, db_path: Path) -> None:
    folder = real_data / "otc_weekly" / DOWNLOADS
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", "finra-otc", "--from-dir", str(folder), "--by-firm"])
    assert first.exit_code == 0, first.output
    counts = _rows(db_path, "SELECT week_start_date, count(*), sum(share_quantity) "
                            "FROM finra_otc_weekly_raw GROUP BY ALL ORDER BY 1")
    firm = _rows(db_path, "SELECT week_start_date, sum(share_quantity) "
                          "FROM finra_otc_weekly_firm_raw GROUP BY ALL ORDER BY 1")
    assert [c[0] for c in counts] == [dt.date(2025, 11, 10), dt.date(2025, 11, 17),
                                      dt.date(2025, 11, 24)]
    assert [c[2] for c in counts] == [f[1] for f in firm]  # symbol sums = firm totals
    second = runner.invoke(app, ["ingest", "finra-otc", "--from-dir", str(folder),
                                 "--by-firm"])
    assert second.exit_code == 0, second.output
    assert _rows(db_path, "SELECT count(*) FROM finra_otc_weekly_raw")[0][0] == sum(
        c[1] for c in counts)
    outcomes = dict(_rows(db_path, "SELECT outcome, count(*) FROM ingest_log GROUP BY 1"))
    assert outcomes == {"ingested": 6, "unchanged": 6}
    info = inventory.collect(db_path)
    by_tier = info.extra["otc_by_tier"]
    assert list(by_tier["tier"]) == ["OTCE"] and int(by_tier["weeks"].iloc[0]) == 3


def test_revision_keeps_first_values_and_as_of_answers_both(tmp_path: Path,
                                                            db_path: Path) -> None:
    week = "2025-01-06"
    first = _download(tmp_path / "a.csv", [
        "NMS Tier 1|AAPL|Apple|UBSA UBS ATS|UBSA|100|3|2025-01-27",
        "NMS Tier 1|MSFT|Microsoft|UBSA UBS ATS|UBSA|50|1|2025-01-27"])
    revised = _download(tmp_path / "b.csv", [
        "NMS Tier 1|AAPL|Apple|UBSA UBS ATS|UBSA|175|4|2025-02-03",
        "NMS Tier 1|MSFT|Microsoft|UBSA UBS ATS|UBSA|50|1|2025-01-27"])
    with open_writer(db_path) as writer:
        one = ingest.ingest_files(writer, [first], week_start=dt.date.fromisoformat(week))
        two = ingest.ingest_files(writer, [revised], week_start=dt.date.fromisoformat(week))
        assert (one.ingested, two.replaced) == (1, 1)
        conn = writer.conn
        history = conn.execute("SELECT symbol, last_update_date, share_quantity FROM "
                               "finra_otc_weekly_raw ORDER BY 1, 2").fetchall()
        assert history == [("AAPL", dt.date(2025, 1, 27), 100.0),
                           ("AAPL", dt.date(2025, 2, 3), 175.0),
                           ("MSFT", dt.date(2025, 1, 27), 50.0)]
        before = ingest.otc_weekly_as_of(conn, "2025-01-24")
        known = ingest.otc_weekly_as_of(conn, dt.date(2025, 1, 31), ["AAPL"])
        later = ingest.otc_weekly_as_of(conn, "2025-02-03")
        current = ingest.otc_weekly_current(conn)
    assert before.empty  # not published yet
    assert list(known["share_quantity"]) == [100.0]
    assert dict(zip(later["symbol"], later["share_quantity"], strict=True)) == {
        "AAPL": 175.0, "MSFT": 50.0}
    assert len(current) == 2


def test_bad_file_leaves_database_unchanged(tmp_path: Path, db_path: Path) -> None:
    good = _download(tmp_path / "good.csv", [
        "NMS Tier 1|AAPL|Apple|UBSA UBS ATS|UBSA|100|3|2025-01-27"])
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "finra-otc", "--from-file", str(good)]).exit_code == 0
    snapshot = _rows(db_path, "SELECT * EXCLUDE (fetched_at) FROM finra_otc_weekly_raw")
    bad = _download(tmp_path / "bad.csv", [
        "NMS Tier 1|AAPL|Apple|UBSA UBS ATS|UBSA|999|3|2025-01-27",
        "NMS Tier 1|MSFT|Microsoft|UBSA UBS ATS|UBSA|-4|1|2025-01-27"])
    result = runner.invoke(app, ["ingest", "finra-otc", "--from-file", str(bad)])
    assert result.exit_code == 1
    assert "line 3" in result.output and "negative" in result.output
    assert _rows(db_path, "SELECT * EXCLUDE (fetched_at) FROM finra_otc_weekly_raw") == snapshot


def test_from_dir_skips_and_reports_bad_files(tmp_path: Path, db_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _download(folder / "1.csv", ["NMS Tier 2|AAOI|Applied|EBXL LEVEL ATS|EBXL|10|1|2025-02-10"])
    (folder / "2.csv").write_text("Symbol|Volume\nAAPL|1\n")
    result = CliRunner().invoke(app, ["ingest", "finra-otc", "--from-dir", str(folder)])
    assert result.exit_code == 1
    assert "2.csv" in result.output
    # T2: 2025-02-10 - 35 days = 2025-01-06.
    assert _rows(db_path, "SELECT week_start_date, tier, share_quantity FROM "
                          "finra_otc_weekly_raw") == [(dt.date(2025, 1, 6), "T2", 10.0)]


def _api_record(symbol: str, kind: str, qty: float, week: str = "2025-01-06",
                updated: str = "2025-01-27", mpid: str | None = None) -> dict[str, Any]:
    record = {"weekStartDate": week, "tierIdentifier": "T1", "summaryTypeCode": kind,
              "issueSymbolIdentifier": symbol, "totalWeeklyShareQuantity": qty,
              "totalWeeklyTradeCount": 1, "lastUpdateDate": updated,
              "initialPublishedDate": "2025-01-27", "issueName": symbol}
    if mpid:
        record.update(MPID=mpid, marketParticipantName=f"{mpid} ATS")
    return record


def _serve(httpserver: HTTPServer, records: list[dict[str, Any]],
           fail_offsets: tuple[int, ...] = ()) -> None:
    def handler(request: Request) -> Response:
        body = json.loads(request.data)
        types = next(f["values"] for f in body["domainFilters"]
                     if f["fieldName"] == "summaryTypeCode")
        match = [r for r in records if r["summaryTypeCode"] in types]
        if body["offset"] in fail_offsets:
            return Response("boom", status=500)
        if not match:
            return Response("", status=204)
        page = match[body["offset"]: body["offset"] + body["limit"]]
        return Response(json.dumps(page), content_type="application/json",
                        headers={"record-total": str(len(match))})
    httpserver.expect_request(PATH, method="POST").respond_with_handler(handler)


def _api(httpserver: HTTPServer) -> otc.OtcApiClient:
    return otc.OtcApiClient(httpx.Client(), httpserver.url_for(""),
                            policy=HttpPolicy(retries=1, backoff=0.01),
                            requests_per_second=19, limit=2)


def test_api_ingest_keeps_symbol_and_firm_levels_apart(httpserver: HTTPServer,
                                                       db_path: Path) -> None:
    _serve(httpserver, [
        _api_record("AAPL", "ATS_W_SMBL", 300), _api_record("AAPL", "OTC_W_SMBL", 700),
        _api_record("MSFT", "ATS_W_SMBL", 10),
        _api_record("AAPL", "ATS_W_SMBL_FIRM", 200, mpid="UBSA"),
        _api_record("AAPL", "ATS_W_SMBL_FIRM", 100, mpid="JPMX"),
    ])
    with open_writer(db_path) as writer:
        summary = ingest.ingest_api(writer, _api(httpserver), first_week=dt.date(2025, 1, 6),
                                    last_week=dt.date(2025, 1, 8), tiers=["T1"],
                                    symbols=["AAPL", "MSFT"], by_firm=True,
                                    today=dt.date(2025, 3, 1))
    assert (summary.rows, summary.firm_rows) == (3, 2)
    assert summary.requests == 2 + 1  # symbol level: 3 records / limit 2; firm level: 1 page
    assert _rows(db_path, "SELECT sum(share_quantity), min(source) FROM "
                          "finra_otc_weekly_raw") == [(1010.0, "api")]
    assert _rows(db_path, "SELECT sum(share_quantity) FROM finra_otc_weekly_firm_raw") == [
        (300.0,)]


def test_api_failure_mid_paging_stores_nothing(httpserver: HTTPServer, db_path: Path) -> None:
    _serve(httpserver, [_api_record(s, "ATS_W_SMBL", 1) for s in ("A", "B", "C")],
           fail_offsets=(2,))
    with open_writer(db_path) as writer:
        with pytest.raises(FetchError, match="500"):
            ingest.ingest_api(writer, _api(httpserver), first_week=dt.date(2025, 1, 6),
                              last_week=dt.date(2025, 1, 6), tiers=["T1"], symbols=["A"],
                              today=dt.date(2025, 3, 1))
        assert writer.conn.execute("SELECT count(*) FROM finra_otc_weekly_raw").fetchone() == (
            0,)


def test_saved_json_response_is_imported(tmp_path: Path, db_path: Path) -> None:
    saved = tmp_path / "page.json"
    saved.write_text(json.dumps([_api_record("BRK.B", "OTC_W_SMBL", 42)]))
    with open_writer(db_path) as writer:
        ingest.ingest_files(writer, [saved])
        row = writer.conn.execute("SELECT symbol, symbol_norm, summary_type, source, "
                                  "initial_published_date FROM finra_otc_weekly_raw").fetchall()
    assert row == [("BRK.B", "BRK.B", "OTC_W_SMBL", "file", dt.date(2025, 1, 27))]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"weekStartDate": "2025-01-06"}]))
    with open_writer(db_path) as writer, pytest.raises(DataFormatError, match="lack the field"):
        ingest.ingest_files(writer, [bad])
