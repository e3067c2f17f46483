"""FINRA OTC weekly: parsers on real recorded API responses and real downloads; the API client
against a local HTTP server (paging, 204, 429, 500, short pages, missing headers)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from darkpool_analysis.errors import DataFormatError, FetchError
from darkpool_analysis.sources import finra_otc as otc
from darkpool_analysis.sources.http import HttpPolicy
from darkpool_analysis.trading_calendar import is_session

CASSETTES = "GamestonkTerminal_api_cassettes_2021"
DOWNLOADS = "spine-core_otc_tier_2025-12"
FAST = HttpPolicy(timeout=5.0, retries=2, backoff=0.01)


def _interactions(real_data: Path, name: str) -> list[dict[str, Any]]:
    """Recorded (request body, response headers, decoded body) of a vcrpy cassette."""
    path = real_data / "otc_weekly" / CASSETTES / f"cassettes_test_finra_{name}.yaml"
    out = []
    for item in yaml.safe_load(path.read_text())["interactions"]:
        body = item["response"]["body"]["string"]
        raw = body if isinstance(body, bytes) else body.encode()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        headers = {k: v[0] for k, v in item["response"]["headers"].items()}
        out.append({"uri": item["request"]["uri"], "request": json.loads(item["request"]["body"]),
                    "headers": headers, "body": raw, "status": item["response"]["status"]["code"]})
    return out


# ---------------------------------------------------------------------------------------------
# Real recorded API responses
# ---------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_rivn_t2_response_parses_to_ats_and_otc_rows(real_data: Path) -> None:
    parsed = []
    for item in _interactions(real_data, "model_test_getTickerFINRAdata"):
        if item["uri"].endswith("/weeklySummary"):
            result = otc.parse_api_records(otc.decode_json_records(item["body"], item["uri"]),
                                           source=item["uri"],
                                           defaults=otc.defaults_from_request(item["request"]))
            parsed.append(result.symbol_rows)
    rows = pd.concat(parsed).set_index("summary_type")
    assert sorted(rows.index) == ["ATS_W_SMBL", "OTC_W_SMBL"]
    assert rows.loc["ATS_W_SMBL", "share_quantity"] == 28_045_044
    assert rows.loc["OTC_W_SMBL", "share_quantity"] == 68_793_981
    assert rows.loc["OTC_W_SMBL", "trade_count"] == 1_120_735
    assert set(rows["tier"]) == {"T2"} and set(rows["symbol_norm"]) == {"RIVN"}
    assert set(rows["week_start_date"]) == {pd.Timestamp("2021-11-08")}
    # The T2 publication rule: last update = week start + 7 x (1 + 4) days.
    assert set(rows["last_update_date"]) == {pd.Timestamp("2021-12-13")}


@pytest.mark.realdata
def test_real_t1_responses_follow_the_two_week_publication_rule(real_data: Path) -> None:
    weeks = holiday_weeks = 0
    for item in _interactions(real_data, "view_test_darkpool_otc"):
        if not item["uri"].endswith("/weeklySummary"):
            continue
        result = otc.parse_api_records(otc.decode_json_records(item["body"], item["uri"]),
                                       source=item["uri"],
                                       defaults=otc.defaults_from_request(item["request"]))
        rows = result.symbol_rows
        assert len(rows) > 0 and set(rows["summary_type"]) == {"ATS_W_SMBL"}
        rule = otc.publication_rule_date(rows["week_start_date"], rows["tier"])
        late = rows["last_update_date"] != rule
        # Published on the rule's Monday, or the next day when that Monday is a holiday
        # (2021-07-05, 2021-09-06): the rule never makes a week visible after FINRA did.
        assert (rows.loc[late, "last_update_date"] - rule[late] == pd.Timedelta(days=1)).all()
        assert not any(is_session(day) for day in rule[late])
        holiday_weeks += int(late.any())
        weeks += 1
    assert weeks == 27 and holiday_weeks == 2


@pytest.mark.realdata
def test_real_empty_response_is_empty(real_data: Path) -> None:
    empty = [i for i in _interactions(real_data, "model_test_getTickerFINRAdata")
             if i["headers"]["Record-Total"] == "0"]
    assert empty
    records = otc.decode_json_records(empty[0]["body"], "x")
    result = otc.parse_api_records(records, source="x")
    assert records == [] and result.symbol_rows.empty and result.firm_rows.empty


@pytest.mark.realdata
def test_real_trimmed_recording_is_reported_as_a_short_page(real_data: Path,
                                                            httpserver: HTTPServer) -> None:
    """The cassette kept 10 records of a page whose headers promise 1,975: never accepted."""
    item = next(i for i in _interactions(real_data, "model_test_getATSdata")
                if i["uri"].endswith("/weeklySummary"))
    assert item["headers"]["Record-Total"] == "1975"
    httpserver.expect_request("/data/group/otcMarket/name/weeklySummary",
                              method="POST").respond_with_data(
        item["body"], content_type="application/json",
        headers={"Record-Total": item["headers"]["Record-Total"]})
    api = otc.OtcApiClient(httpx.Client(), httpserver.url_for(""), policy=FAST,
                           requests_per_second=19)
    query = otc.OtcQuery("weeklySummary", "T1", ("ATS_W_SMBL",), dt.date(2021, 12, 27),
                         dt.date(2021, 12, 27))
    with pytest.raises(DataFormatError, match="expected 1975") as info:
        api.fetch(query)
    assert info.value.field == "record-total"


# ---------------------------------------------------------------------------------------------
# Real website downloads
# ---------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_download_derives_symbol_sums_from_firm_rows(real_data: Path) -> None:
    path = real_data / "otc_weekly" / DOWNLOADS / "finra_otc_weekly_otc_20251215.csv"
    result = otc.parse_download_file(path.read_bytes(), str(path))
    raw = pd.read_csv(path, sep="|", dtype={"issueSymbolIdentifier": str})
    assert len(result.firm_rows) == len(raw) == 5328
    assert set(result.firm_rows["summary_type"]) == {"ATS_W_SMBL_FIRM"}
    assert set(result.symbol_rows["summary_type"]) == {"ATS_W_SMBL"}
    # Independent oracle: a plain pandas group-by of the file.
    expected = raw.groupby("issueSymbolIdentifier")["totalWeeklyShareQuantity"].sum()
    got = result.symbol_rows.set_index("symbol")["share_quantity"]
    pd.testing.assert_series_equal(got.sort_index(), expected.astype(float).sort_index(),
                                   check_names=False, check_index_type=False)
    assert got["AABB"] == 6_753_871 + 40_313
    # OTC tier, week inferred by the 4-week rule: 2025-12-15 - 35 days = Monday 2025-11-10.
    assert set(result.symbol_rows["tier"]) == {"OTCE"}
    assert set(result.symbol_rows["week_start_date"]) == {pd.Timestamp("2025-11-10")}


@pytest.mark.realdata
def test_real_download_row_without_symbol_is_counted(real_data: Path) -> None:
    path = real_data / "otc_weekly" / DOWNLOADS / "finra_otc_weekly_otc_20251229.csv"
    result = otc.parse_download_file(path.read_bytes(), str(path), kind="OTC",
                                     week_start=dt.date(2025, 11, 24))
    assert result.skipped == {"no symbol": 1}
    assert len(result.firm_rows) == 4654
    assert set(result.symbol_rows["summary_type"]) == {"OTC_W_SMBL"}
    assert set(result.firm_rows["week_start_date"]) == {pd.Timestamp("2025-11-24")}


# ---------------------------------------------------------------------------------------------
# Bad input (small fixtures in the real formats)
# ---------------------------------------------------------------------------------------------
HEADER = otc.DOWNLOAD_FIRM_HEADER


def test_download_unknown_header_is_an_error() -> None:
    data = b"Symbol|Volume|Date\nAAPL|100|2025-01-06\n"
    with pytest.raises(DataFormatError, match="unknown header") as info:
        otc.parse_download_file(data, "x.csv")
    assert info.value.line == 1


def test_download_negative_quantity_names_line_and_field() -> None:
    data = (f"{HEADER}\nNMS Tier 1|AAPL|Apple|UBSA UBS ATS|UBSA|100|3|2025-01-27\n"
            "NMS Tier 1|MSFT|Microsoft|UBSA UBS ATS|UBSA|-5|1|2025-01-27\n").encode()
    with pytest.raises(DataFormatError, match="negative") as info:
        otc.parse_download_file(data, "x.csv")
    assert (info.value.line, info.value.field) == (3, "totalWeeklyShareQuantity")


def test_download_bad_number_and_bad_date_are_errors() -> None:
    bad_number = f"{HEADER}\nNMS Tier 1|AAPL|Apple|UBSA UBS ATS|UBSA|12x|3|2025-01-27\n"
    with pytest.raises(DataFormatError, match="expected a number"):
        otc.parse_download_file(bad_number.encode(), "x.csv")
    bad_date = f"{HEADER}\nNMS Tier 1|AAPL|Apple|UBSA UBS ATS|UBSA|12|3|27/01/2025\n"
    with pytest.raises(DataFormatError, match="YYYY-MM-DD") as info:
        otc.parse_download_file(bad_date.encode(), "x.csv")
    assert info.value.field == "lastUpdateDate"


def test_download_unknown_tier_is_skipped_and_counted() -> None:
    data = (f"{HEADER}\nNMS Tier 1|AAPL|Apple|UBSA UBS ATS|UBSA|100|3|2025-01-27\n"
            "NMS Tier 9|ZZZ|Zed|UBSA UBS ATS|UBSA|5|1|2025-01-27\n"
            "NMS Tier 1|AAPL|Apple|JPMX JPM-X|JPMX|50|2|2025-01-27\n").encode()
    result = otc.parse_download_file(data, "x.csv")
    assert result.skipped == {"unknown tier": 1}
    row = result.symbol_rows.iloc[0]
    assert (row["symbol"], row["share_quantity"], row["trade_count"]) == ("AAPL", 150.0, 5)
    # T1: 2025-01-27 - 21 days = Monday 2025-01-06.
    assert row["week_start_date"] == pd.Timestamp("2025-01-06")


def test_html_instead_of_data_is_an_error() -> None:
    with pytest.raises(DataFormatError, match="HTML"):
        otc.parse_download_file(b"<!DOCTYPE html><html>Error</html>", "x.csv")
    with pytest.raises(DataFormatError, match="HTML"):
        otc.decode_json_records(b"<html><body>503</body></html>", "x")


def _record(**overrides: Any) -> dict[str, Any]:
    record = {"weekStartDate": "2025-01-06", "tierIdentifier": "T1",
              "summaryTypeCode": "ATS_W_SMBL", "issueSymbolIdentifier": "BRK.B",
              "totalWeeklyShareQuantity": 100, "totalWeeklyTradeCount": 4,
              "lastUpdateDate": "2025-01-27", "initialPublishedDate": "2025-01-27"}
    record.update(overrides)
    return record


def test_api_records_split_symbol_and_firm_levels_and_skip_other_types() -> None:
    records = [_record(), _record(summaryTypeCode="ATS_W_SMBL_FIRM", MPID="UBSA"),
               _record(summaryTypeCode="ATS_W_FIRM", MPID="UBSA"),
               _record(tierIdentifier="T9")]
    result = otc.parse_api_records(records, source="x")
    assert len(result.symbol_rows) == 1 and len(result.firm_rows) == 1
    assert result.symbol_rows.loc[0, "symbol_norm"] == "BRK.B"
    assert result.skipped == {"unknown tier": 1, "other summary type": 1}


def test_api_records_missing_field_and_negative_quantity_are_errors() -> None:
    record = _record()
    del record["lastUpdateDate"]
    with pytest.raises(DataFormatError, match="lastUpdateDate") as info:
        otc.parse_api_records([record], source="x")
    assert info.value.field == "lastUpdateDate"
    with pytest.raises(DataFormatError, match="record 2: negative"):
        otc.parse_api_records([_record(), _record(totalWeeklyShareQuantity=-1)], source="x")


def test_plan_queries_uses_historic_dataset_for_old_weeks() -> None:
    today = dt.date(2025, 6, 30)
    queries = otc.plan_queries(dt.date(2024, 1, 3), dt.date(2025, 6, 2), ["T1"],
                               otc.SYMBOL_TYPES, ["AAPL"], today=today)
    assert [q.dataset for q in queries] == ["weeklySummaryHistoric", "weeklySummary"]
    assert queries[0].first_week == dt.date(2024, 1, 1)
    assert queries[0].last_week + dt.timedelta(days=7) == queries[1].first_week
    assert queries[1].last_week == dt.date(2025, 6, 2)


# ---------------------------------------------------------------------------------------------
# The API client against a local server
# ---------------------------------------------------------------------------------------------
def _api(httpserver: HTTPServer, limit: int = otc.MAX_LIMIT) -> otc.OtcApiClient:
    return otc.OtcApiClient(httpx.Client(), httpserver.url_for(""), policy=FAST,
                            requests_per_second=19, limit=limit)


QUERY = otc.OtcQuery("weeklySummary", "T1", otc.SYMBOL_TYPES, dt.date(2025, 1, 6),
                     dt.date(2025, 1, 6), ("AAPL",))
PATH = "/data/group/otcMarket/name/weeklySummary"


def _paged_handler(records: list[dict[str, Any]], seen: list[dict[str, Any]]):
    def handler(request: Request) -> Response:
        body = json.loads(request.data)
        seen.append(body)
        page = records[body["offset"]: body["offset"] + body["limit"]]
        return Response(json.dumps(page), content_type="application/json",
                        headers={"record-total": str(len(records))})
    return handler


def test_client_pages_by_offset_up_to_record_total(httpserver: HTTPServer) -> None:
    records = [_record(issueSymbolIdentifier=f"S{i}") for i in range(7)]
    seen: list[dict[str, Any]] = []
    httpserver.expect_request(PATH, method="POST").respond_with_handler(
        _paged_handler(records, seen))
    fetched = _api(httpserver, limit=3).fetch(QUERY)
    assert [r["issueSymbolIdentifier"] for r in fetched.records] == [f"S{i}" for i in range(7)]
    assert [b["offset"] for b in seen] == [0, 3, 6] and fetched.pages == 3
    body = seen[0]
    assert body["limit"] == 3
    assert body["compareFilters"] == [{"compareType": "EQUAL", "fieldName": "tierIdentifier",
                                       "fieldValue": "T1"}]
    assert body["dateRangeFilters"][0] == {"fieldName": "weekStartDate",
                                           "startDate": "2025-01-06", "endDate": "2025-01-06"}
    assert {"fieldName": "issueSymbolIdentifier", "values": ["AAPL"]} in body["domainFilters"]


def test_client_204_is_an_empty_result(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("", status=204)
    fetched = _api(httpserver).fetch(QUERY)
    assert fetched.records == [] and fetched.pages == 1


def test_client_retries_429_respecting_retry_after(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request(PATH, method="POST").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "1"})
    httpserver.expect_ordered_request(PATH, method="POST").respond_with_data(
        json.dumps([_record()]), content_type="application/json",
        headers={"record-total": "1"})
    started = time.monotonic()
    fetched = _api(httpserver).fetch(QUERY)
    assert len(fetched.records) == 1
    assert time.monotonic() - started >= 0.95  # waited as the server asked, not 0.01 s


def test_client_gives_up_after_repeated_500(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("boom", status=500)
    with pytest.raises(FetchError, match="500") as info:
        _api(httpserver).fetch(QUERY)
    assert info.value.status == 500
    assert len(httpserver.log) == FAST.retries + 1


def test_client_rejects_page_without_record_total(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data(
        json.dumps([_record()]), content_type="application/json")
    with pytest.raises(DataFormatError, match="record-total"):
        _api(httpserver).fetch(QUERY)


def test_client_rejects_html_error_page(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data(
        "<html><body>Maintenance</body></html>", content_type="text/html")
    with pytest.raises(DataFormatError, match="HTML"):
        _api(httpserver).fetch(QUERY)


def test_client_rejects_short_second_page(httpserver: HTTPServer) -> None:
    records = [_record(issueSymbolIdentifier=f"S{i}") for i in range(5)]

    def handler(request: Request) -> Response:
        body = json.loads(request.data)
        page = records[body["offset"]: body["offset"] + 1]  # promises 5, serves 1 per page
        return Response(json.dumps(page), content_type="application/json",
                        headers={"record-total": "5"})
    httpserver.expect_request(PATH, method="POST").respond_with_handler(handler)
    with pytest.raises(DataFormatError, match="truncated"):
        _api(httpserver, limit=3).fetch(QUERY)


def test_client_refuses_to_pass_the_offset_cap(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data(
        json.dumps([_record()] * 2), content_type="application/json",
        headers={"record-total": str(otc.MAX_OFFSET + 10)})
    with pytest.raises(otc.OffsetCapError, match="offset cap"):
        _api(httpserver, limit=2).fetch(QUERY)
    assert len(httpserver.log) == 1  # stopped after the first page


def test_rate_limiter_spaces_requests() -> None:
    limiter = otc.RateLimiter(50.0)
    started = time.monotonic()
    for _ in range(6):
        limiter.wait()
    assert time.monotonic() - started >= 5 * 0.02 * 0.95
