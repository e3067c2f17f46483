"""Price bar providers: Yahoo CSV parsing, yfinance frame normalisation, Polygon over HTTP.

Expected values are written by hand from the fixture files, never produced by the code.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.errors import DataFormatError, FetchError
from darkpool_analysis.sources.http import make_client
from darkpool_analysis.sources.prices import (
    BAR_COLUMNS,
    YAHOO_CSV_COLUMNS,
    PolygonClient,
    PolygonPlan,
    _parse_yahoo_text,
    _parse_yahoo_typed,
    fetch_polygon_bars,
    normalise_yfinance_frame,
    parse_polygon_aggs,
    plan_polygon,
    read_yahoo_csv,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prices"
YAHOO = FIXTURES / "yahoo"
POLYGON = FIXTURES / "polygon"
API_KEY = "pk-test-SECRET-0123456789"

GOOD_HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
GOOD_ROW = "2021-01-25,143.07,145.09,136.54,142.92,142.06,157611700"


def _csv(*rows: str, header: str = GOOD_HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


# -- Yahoo CSV: column orders ---------------------------------------------------------------------

def test_standard_column_order() -> None:
    bars = read_yahoo_csv(YAHOO / "AAPL.csv")
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert bars["symbol"].tolist() == ["AAPL"] * 4
    assert bars["date"].dt.strftime("%Y-%m-%d").tolist() == [
        "2021-01-22", "2021-01-25", "2021-01-26", "2021-01-27"]
    row = bars.iloc[1]
    assert (row["open"], row["high"], row["low"], row["close"]) == (143.07, 145.09, 136.54,
                                                                    142.92)
    assert (row["adj_close"], row["volume"]) == (142.06, 157611700.0)
    assert bars["vwap"].isna().all()


def test_mcnuggett_column_order() -> None:
    """The real files' order: Date,High,Low,Open,Close,Volume,Adj Close."""
    bars = read_yahoo_csv(YAHOO / "GME.csv")
    last = bars.iloc[-1]
    assert last["date"] == pd.Timestamp("2021-01-27")
    assert last["open"] == 354.8299865722656
    assert last["high"] == 380.0
    assert last["low"] == 249.0
    assert last["close"] == 347.510009765625
    assert last["volume"] == 93396700.0


def test_yahoo_file_name_maps_to_normalised_symbol_and_optional_adj_close() -> None:
    """BRK-B.csv -> BRK.B; no Adj Close column (auto-adjusted export) -> NULL; extra
    columns (Dividends) are ignored."""
    bars = read_yahoo_csv(YAHOO / "BRK-B.csv")
    assert bars["symbol"].unique().tolist() == ["BRK.B"]
    assert bars["adj_close"].isna().all()
    assert bars["close"].tolist() == [232.80, 234.00, 228.10]
    assert bars["high"].tolist() == [234.50, 235.20, 232.80]


def test_bytes_input_bom_crlf_and_spaces() -> None:
    data = ("\ufeffDate, Open ,High,Low,Close,Adj Close,Volume\r\n"
            "2021-01-25, 143.07 ,145.09,136.54,142.92,142.06,157611700\r\n").encode()
    bars = read_yahoo_csv(data, symbol="aapl")
    assert bars["symbol"].tolist() == ["AAPL"]
    assert bars["open"].tolist() == [143.07]


def test_null_rows_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    data = _csv(GOOD_ROW, "2021-01-26,null,null,null,null,null,null")
    bars = read_yahoo_csv(data, symbol="AAPL", source_name="AAPL.csv")
    assert len(bars) == 1
    assert "1 row(s) with 'null' prices" in caplog.text
    assert "line 3" in caplog.text


def test_timestamp_dates_keep_the_exchange_date() -> None:
    """yfinance ``to_csv`` of a tz-aware index writes ``2021-01-25 00:00:00-05:00``."""
    data = _csv("2021-01-25 00:00:00-05:00,143.07,145.09,136.54,142.92,142.06,157611700")
    assert read_yahoo_csv(data, symbol="AAPL")["date"].tolist() == [pd.Timestamp("2021-01-25")]


@pytest.mark.parametrize("name", ["AAPL.csv", "GME.csv", "BRK-B.csv"])
def test_fast_typed_path_equals_text_reference(name: str) -> None:
    """Clean files take the typed fast path; it must agree with the cell-by-cell reference."""
    text = (YAHOO / name).read_text()
    present = [column for column in YAHOO_CSV_COLUMNS if column in text.splitlines()[0]]
    fast = _parse_yahoo_typed(text, present, "X")
    assert fast is not None
    reference, lines = _parse_yahoo_text(text, present, "X", name)
    pd.testing.assert_frame_equal(fast, reference)
    assert lines.tolist() == list(range(2, len(reference) + 2))


# -- Yahoo CSV: bad input, each its own case -----------------------------------------------------

BAD_CSV_CASES = {
    "missing_column": (_csv("2021-01-25,143.07,145.09,136.54,142.06,157611700",
                            header="Date,Open,High,Low,Adj Close,Volume"), 1, "Close",
                       "missing column"),
    "non_numeric_price": (_csv(GOOD_ROW, "2021-01-26,143.60,144.30,abc,143.16,142.30,98390600"),
                          3, "Low", "expected a number, got 'abc'"),
    "empty_price": (_csv(GOOD_ROW, "2021-01-26,143.60,144.30,141.37,,142.30,98390600"),
                    3, "Close", "expected a number, got ''"),
    "negative_price": (_csv(GOOD_ROW, "2021-01-26,-143.60,144.30,141.37,143.16,142.30,98390600"),
                       3, "Open", "not positive"),
    "zero_close": (_csv("2021-01-26,143.60,144.30,141.37,0,142.30,98390600"),
                   2, "Close", "not positive"),
    "negative_volume": (_csv(GOOD_ROW, "2021-01-26,143.60,144.30,141.37,143.16,142.30,-5"),
                        3, "Volume", "negative volume -5"),
    "high_below_low": (_csv(GOOD_ROW, "2021-01-26,143.60,140.00,141.37,143.16,142.30,98390600"),
                       3, "High", "high is below low"),
    "duplicate_date": (_csv(GOOD_ROW, "2021-01-26,143.60,144.30,141.37,143.16,142.30,98390600",
                            GOOD_ROW), 4, "Date", "duplicate date (first seen on line 2)"),
    "unparseable_date": (_csv(GOOD_ROW, "01/26/2021,143.60,144.30,141.37,143.16,142.30,1"),
                         3, "Date", "unparseable date '01/26/2021'"),
    "impossible_date": (_csv("2021-02-30,143.60,144.30,141.37,143.16,142.30,1"),
                        2, "Date", "unparseable date"),
    "infinite_price": (_csv("2021-01-26,143.60,inf,141.37,143.16,142.30,98390600"),
                       2, "High", "non-finite"),
}


@pytest.mark.parametrize("case", list(BAD_CSV_CASES), ids=list(BAD_CSV_CASES))
def test_bad_csv_names_file_line_and_field(case: str) -> None:
    data, line, field, message = BAD_CSV_CASES[case]
    with pytest.raises(DataFormatError) as info:
        read_yahoo_csv(data, symbol="AAPL", source_name="AAPL.csv")
    error = info.value
    assert (error.source, error.line, error.field) == ("AAPL.csv", line, field)
    assert message in str(error)
    assert f"AAPL.csv, line {line}, field {field!r}" in str(error)


def test_bad_csv_not_utf8() -> None:
    data = _csv(GOOD_ROW) + b"2021-01-26,\xff143.60,144.30,141.37,143.16,142.30,1\n"
    with pytest.raises(DataFormatError, match="not UTF-8") as info:
        read_yahoo_csv(data, symbol="AAPL", source_name="AAPL.csv")
    assert info.value.line == 3


def test_bad_csv_empty_file() -> None:
    with pytest.raises(DataFormatError, match="empty file"):
        read_yahoo_csv(b"", symbol="AAPL", source_name="AAPL.csv")


def test_bad_csv_ragged_row() -> None:
    with pytest.raises(DataFormatError, match="not a valid CSV") as info:
        read_yahoo_csv(_csv(GOOD_ROW, GOOD_ROW.replace("2021-01-25", "2021-01-26") + ",1,2"),
                       symbol="AAPL", source_name="AAPL.csv")
    assert "line 3" in str(info.value)


def test_bad_csv_html_error_page() -> None:
    with pytest.raises(DataFormatError, match="missing column"):
        read_yahoo_csv(b"<html><body>Too Many Requests</body></html>\n", symbol="AAPL",
                       source_name="AAPL.csv")


# -- yfinance output ---------------------------------------------------------------------------

def _yfinance_like(group_by: str) -> pd.DataFrame:
    """A frame shaped like ``yfinance.download([...], auto_adjust=False)``: two tickers on a
    shared tz-aware daily index; BRK-B has no bar on the first day (NaN row)."""
    index = pd.DatetimeIndex(["2021-01-25", "2021-01-26"], name="Date").tz_localize(
        "America/New_York")
    values = {
        ("AAPL", "Adj Close"): [142.06, 142.30], ("AAPL", "Close"): [142.92, 143.16],
        ("AAPL", "High"): [145.09, 144.30], ("AAPL", "Low"): [136.54, 141.37],
        ("AAPL", "Open"): [143.07, 143.60], ("AAPL", "Volume"): [157611700, 98390600],
        ("BRK-B", "Adj Close"): [np.nan, 234.0], ("BRK-B", "Close"): [np.nan, 234.0],
        ("BRK-B", "High"): [np.nan, 235.2], ("BRK-B", "Low"): [np.nan, 232.1],
        ("BRK-B", "Open"): [np.nan, 233.0], ("BRK-B", "Volume"): [np.nan, 3801500],
    }
    frame = pd.DataFrame(values, index=index)
    frame.columns = frame.columns.set_names(["Ticker", "Price"])
    if group_by == "column":
        frame.columns = frame.columns.swaplevel(0, 1)
        frame = frame.sort_index(axis=1, level=0)
    return frame


@pytest.mark.parametrize("group_by", ["column", "ticker"])
def test_normalise_yfinance_frame(group_by: str) -> None:
    bars = normalise_yfinance_frame(_yfinance_like(group_by))
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert bars[["symbol", "date"]].astype(str).to_numpy().tolist() == [
        ["AAPL", "2021-01-25"], ["AAPL", "2021-01-26"], ["BRK.B", "2021-01-26"]]
    assert bars["close"].tolist() == [142.92, 143.16, 234.0]
    assert bars["adj_close"].tolist() == [142.06, 142.30, 234.0]
    assert bars["volume"].tolist() == [157611700.0, 98390600.0, 3801500.0]
    assert bars["vwap"].isna().all()


def test_normalise_yfinance_flat_single_ticker() -> None:
    wide = _yfinance_like("ticker")["AAPL"]
    bars = normalise_yfinance_frame(wide, ticker="AAPL")
    assert bars["symbol"].tolist() == ["AAPL", "AAPL"]
    assert bars["open"].tolist() == [143.07, 143.60]


def test_normalise_yfinance_rejects_partial_bar() -> None:
    frame = _yfinance_like("ticker")
    frame.loc[frame.index[1], ("AAPL", "Close")] = np.nan
    with pytest.raises(DataFormatError, match="missing or non-finite") as info:
        normalise_yfinance_frame(frame)
    assert info.value.field == "close"


# -- Polygon: parsing and planning ------------------------------------------------------------

def test_plan_polygon_picks_fewer_requests() -> None:
    assert plan_polygon(n_tickers=3, n_sessions=2) == PolygonPlan("grouped", 2)
    assert plan_polygon(n_tickers=1, n_sessions=3) == PolygonPlan("range", 1)
    assert plan_polygon(n_tickers=5, n_sessions=5) == PolygonPlan("range", 5)  # tie: range


def test_parse_grouped_filters_before_validating() -> None:
    """A malformed bar of a stock we did not ask for must not reject the whole day."""
    payload = json.loads((POLYGON / "grouped_2021-01-27.json").read_text())
    payload["results"].append({"T": "JUNK", "o": 1.0, "h": 0.5, "l": 2.0, "t": 1611781200000})
    bars = parse_polygon_aggs(payload, source="grouped", symbols=["GME", "BRK.B"])
    assert sorted(bars["symbol"]) == ["BRK.B", "GME"]
    gme = bars.loc[bars["symbol"] == "GME"].iloc[0]
    assert gme["date"] == pd.Timestamp("2021-01-27")  # 21:00 UTC = 16:00 New York
    assert (gme["close"], gme["vwap"], gme["volume"]) == (347.51, 319.2401, 93396700.0)
    assert math.isnan(gme["adj_close"])


def test_parse_polygon_missing_field_names_the_result() -> None:
    payload = {"status": "OK", "results": [{"o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0,
                                            "t": 1611723600000}]}
    with pytest.raises(DataFormatError, match="missing or non-numeric 'v'") as info:
        parse_polygon_aggs(payload, source="range", symbol="GME")
    assert info.value.field == "results[0].v"


# -- Polygon over HTTP (pytest-httpserver) ---------------------------------------------------

def _settings(httpserver: HTTPServer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "polygon_api_key": API_KEY, "polygon_api_url": httpserver.url_for("/").rstrip("/"),
        "http_backoff": 0.0, "http_retries": 2, "http_timeout": 5.0,
    }
    values.update(overrides)
    return load_config(**values)


AUTH = {"Authorization": f"Bearer {API_KEY}"}
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/{day}"
RANGE_GME = "/v2/aggs/ticker/GME/range/1/day/2021-01-25/2021-01-27"
RANGE_QUERY = {"adjusted": "true", "sort": "asc", "limit": "50000"}


def _serve_range(httpserver: HTTPServer) -> None:
    page1 = (POLYGON / "range_GME_page1.json").read_text().replace(
        "{base}", httpserver.url_for("/").rstrip("/"))
    httpserver.expect_request(RANGE_GME, query_string=RANGE_QUERY, headers=AUTH).respond_with_data(
        page1, content_type="application/json")
    httpserver.expect_request("/v2/aggs/ticker/GME/range/1/day/1611723600000/2021-01-27",
                              query_string="cursor=bGltaXQ9MiZzb3J0PWFzYw",
                              headers=AUTH).respond_with_data(
        (POLYGON / "range_GME_page2.json").read_text(), content_type="application/json")


def _sessions() -> list[dt.date]:
    return [dt.date(2021, 1, 25), dt.date(2021, 1, 26), dt.date(2021, 1, 27)]


def test_grouped_daily_over_http(httpserver: HTTPServer) -> None:
    for day in ("2021-01-26", "2021-01-27"):
        httpserver.expect_request(GROUPED.format(day=day), query_string={"adjusted": "true"},
                                  headers=AUTH).respond_with_data(
            (POLYGON / f"grouped_{day}.json").read_text(), content_type="application/json")
    settings = _settings(httpserver)
    with make_client(settings) as http:
        client = PolygonClient(http, settings)
        bars, plan = fetch_polygon_bars(client, ["GME", "BRK.B", "AAPL"], _sessions()[1:])
    assert plan == PolygonPlan("grouped", 2)
    assert client.requests == 2
    assert len(bars) == 6 and "MSFT" not in set(bars["symbol"])
    brk = bars.loc[bars["symbol"] == "BRK.B"].sort_values("date")
    assert brk["close"].tolist() == [234.0, 228.1]
    assert brk["date"].tolist() == [pd.Timestamp("2021-01-26"), pd.Timestamp("2021-01-27")]


def test_ticker_range_follows_next_url(httpserver: HTTPServer) -> None:
    _serve_range(httpserver)
    settings = _settings(httpserver)
    with make_client(settings) as http:
        client = PolygonClient(http, settings)
        bars, plan = fetch_polygon_bars(client, ["GME"], _sessions())
    assert plan.endpoint == "range"
    assert client.requests == 2
    assert bars["date"].tolist() == [pd.Timestamp(d) for d in _sessions()]
    assert bars["close"].tolist() == [76.79, 147.98, 347.51]
    assert bars["vwap"].tolist() == [98.8822, 112.4021, 319.2401]
    assert all(API_KEY not in str(request.url) for request, _ in httpserver.log)


def test_next_url_to_another_host_is_refused(httpserver: HTTPServer) -> None:
    page = json.loads((POLYGON / "range_GME_page1.json").read_text())
    page["next_url"] = "https://evil.example/v2/aggs?cursor=x"
    httpserver.expect_request(RANGE_GME).respond_with_json(page)
    settings = _settings(httpserver)
    with make_client(settings) as http, pytest.raises(DataFormatError, match="not under"):
        PolygonClient(http, settings).ticker_range("GME", _sessions()[0], _sessions()[-1])


def test_429_with_retry_after_then_success(httpserver: HTTPServer) -> None:
    day = "2021-01-27"
    httpserver.expect_ordered_request(GROUPED.format(day=day)).respond_with_response(
        Response('{"status":"ERROR","error":"too many requests"}', status=429,
                 headers={"Retry-After": "1"}))
    httpserver.expect_ordered_request(GROUPED.format(day=day)).respond_with_data(
        (POLYGON / f"grouped_{day}.json").read_text(), content_type="application/json")
    settings = _settings(httpserver)
    began = time.monotonic()
    with make_client(settings) as http:
        bars = PolygonClient(http, settings).grouped_daily(pd.Timestamp(day).date(), ["GME"])
    assert time.monotonic() - began >= 1.0  # Retry-After honoured (backoff alone is 0 s)
    assert bars["close"].tolist() == [347.51]
    assert len(httpserver.log) == 2


def test_500_then_success(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request(RANGE_GME).respond_with_data("oops", status=500)
    _serve_range(httpserver)
    settings = _settings(httpserver)
    with make_client(settings) as http:
        bars = PolygonClient(http, settings).ticker_range("GME", _sessions()[0],
                                                          _sessions()[-1])
    assert len(bars) == 3
    assert [response.status_code for _, response in httpserver.log] == [500, 200, 200]


def test_403_bad_key_is_clear_and_does_not_echo_the_key(httpserver: HTTPServer) -> None:
    body = json.loads((POLYGON / "error_403.json").read_text())
    body["message"] += f" (key {API_KEY})"  # even a server echoing the key must not leak it
    httpserver.expect_request(RANGE_GME).respond_with_json(body, status=403)
    settings = _settings(httpserver)
    with make_client(settings) as http, pytest.raises(FetchError) as info:
        PolygonClient(http, settings).ticker_range("GME", _sessions()[0], _sessions()[-1])
    text = f"{info.value}"
    assert info.value.status == 403
    assert "HTTP 403" in text and "not entitled" in text and "POLYGON_API_KEY" in text
    assert API_KEY not in text and API_KEY not in info.value.url


def test_status_error_in_a_200_response(httpserver: HTTPServer) -> None:
    httpserver.expect_request(RANGE_GME).respond_with_json(
        {"status": "ERROR", "request_id": "x", "error": "Unknown API Key"})
    settings = _settings(httpserver)
    with make_client(settings) as http, pytest.raises(DataFormatError,
                                                      match="Unknown API Key") as info:
        PolygonClient(http, settings).ticker_range("GME", _sessions()[0], _sessions()[-1])
    assert info.value.field == "status"


def test_persistent_5xx_gives_up_with_fetch_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request(RANGE_GME).respond_with_data("down", status=503)
    settings = _settings(httpserver, http_retries=1)
    with make_client(settings) as http, pytest.raises(FetchError, match="503"):
        PolygonClient(http, settings).ticker_range("GME", _sessions()[0], _sessions()[-1])
    assert len(httpserver.log) == 2


def test_client_is_injectable(httpserver: HTTPServer) -> None:
    """Any httpx.Client works (e.g. one with a custom transport); the key header is added."""
    _serve_range(httpserver)
    settings = _settings(httpserver)
    with httpx.Client() as http:
        bars = PolygonClient(http, settings).ticker_range("GME", _sessions()[0],
                                                          _sessions()[-1])
    assert len(bars) == 3
