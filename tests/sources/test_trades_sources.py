"""Trade/quote readers on small files in the real layouts, and Polygon REST on a local server."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import duckdb
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from darkpool_analysis.config import load_config
from darkpool_analysis.errors import DataFormatError
from darkpool_analysis.sources.trades import (
    FlatFileReader,
    GenericReader,
    PolygonRestReader,
    PolygonTicksClient,
    TaqReader,
    _taq_symbol,
    check_coverage,
    load_day,
    normalised_symbol_sql,
    session_window,
)
from darkpool_analysis.symbols import normalise

DAY = dt.date(2024, 3, 7)
SETTINGS_KW: dict[str, object] = {}


def ns(clock: str, day: dt.date = DAY) -> int:
    """ns since the epoch of a New York wall-clock time (EST in early March 2024: UTC-5)."""
    hour, minute, second = (float(x) for x in clock.split(":"))
    midnight = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    return (midnight + 5 * 3600) * 1_000_000_000 + int((hour * 3600 + minute * 60 + second) * 1e9)


FLAT_TRADES_HEADER = (
    "ticker,conditions,correction,exchange,id,participant_timestamp,price,"
    "sequence_number,sip_timestamp,size,tape,trf_id,trf_timestamp"
)
FLAT_TRADES = FLAT_TRADES_HEADER + """
AAPL,"12,37",0,11,1,0,170.00,1,{pre},10,3,,
AAPL,,0,11,2,0,170.00,2,{t1},100,3,,
AAPL,"14,37",0,12,3,0,170.02,3,{t2},50,3,,
AAPL,,0,4,4,0,170.01,4,{t2},500,3,201,1
AAPL,,1,11,5,0,170.03,5,{t2},100,3,,
AAPL,16,0,11,6,0,170.05,6,{t3},100,3,,
AAPL,,0,11,7,0,0,7,{t3},100,3,,
MSFT,,0,11,8,0,400.00,8,{t1},100,3,,
"""
FLAT_QUOTES_HEADER = (
    "ticker,ask_exchange,ask_price,ask_size,bid_exchange,bid_price,bid_size,"
    "conditions,indicators,participant_timestamp,sequence_number,"
    "sip_timestamp,tape,trf_timestamp"
)
FLAT_QUOTES = FLAT_QUOTES_HEADER + """
AAPL,11,170.02,1,11,170.00,1,,,0,1,{q0},3,
AAPL,11,170.00,1,11,170.05,1,,,0,2,{q1},3,
"""


def _flat_dir(tmp_path: Path) -> Path:
    root = tmp_path / "us_stocks_sip"
    values = {"pre": ns("09:00:00"), "t1": ns("09:30:01"), "t2": ns("09:30:02"),
              "t3": ns("09:30:03"), "q0": ns("09:29:00"), "q1": ns("09:30:02.5")}
    for kind, text in (("trades_v1", FLAT_TRADES), ("quotes_v1", FLAT_QUOTES)):
        folder = root / kind / "2024" / "03"
        folder.mkdir(parents=True)
        with gzip.open(folder / "2024-03-07.csv.gz", "wt") as handle:
            handle.write(text.format(**values))
    return root


def test_flat_files_filter_and_count_skips(tmp_path: Path) -> None:
    con = duckdb.connect()
    ticks = load_day(con, FlatFileReader(_flat_dir(tmp_path)), DAY, ["AAPL"], load_config())
    assert ticks is not None and ticks.symbols == ["AAPL"]
    assert ticks.trades.price.tolist() == [170.00, 170.02]  # regular lit RTH trades only
    reasons = dict(zip(ticks.skipped["reason"], ticks.skipped["trades"], strict=True))
    assert reasons == {"bad_price": 1, "condition": 2, "correction": 1, "off_exchange": 1}
    assert ticks.quotes is not None and ticks.quotes.bid.tolist() == [170.00, 170.05]
    assert load_day(con, FlatFileReader(_flat_dir(tmp_path / "x")), dt.date(2024, 3, 8),
                    ["AAPL"], load_config()) is None  # no file for that day


def test_session_window_is_new_york_time_with_early_close() -> None:
    settings = load_config()
    _, start, end = session_window(DAY, settings)
    assert (start, end) == (ns("09:30:00"), ns("16:00:00"))
    _, _, early = session_window(dt.date(2019, 11, 29), settings)  # day after Thanksgiving
    assert early == int(dt.datetime(2019, 11, 29, 18, tzinfo=dt.UTC).timestamp()) * 10**9


TAQ_TRADES_HEADER = (
    "DATE,TIME_M,EX,SYM_ROOT,SYM_SUFFIX,TR_SCOND,SIZE,PRICE,TR_CORR,"
    "TR_SEQNUM,TR_ID,TR_SOURCE,TR_RF"
)
TAQ_TRADES = TAQ_TRADES_HEADER + """
20190508,9:30:00.5,N,ETR,,@ ,100,95.00,00,2,1,C,
20190508,9:30:00.5,N,ETR,,F I,10,95.02,00,1,2,C,
20190508,9:31:00.000000001,D,ETR,,@,300,95.01,00,3,3,C,T
20190508,9:32:00,P,ETR,,O,400,95.01,00,4,4,C,
20190508,9:33:00,P,ETR,,@,400,95.01,12,5,5,C,
"""
TAQ_QUOTES_HEADER = (
    "DATE,TIME_M,EX,BID,BIDSIZ,ASK,ASKSIZ,QU_COND,QU_SEQNUM,NATBBO_IND,"
    "QU_CANCEL,QU_SOURCE,SYM_ROOT,SYM_SUFFIX"
)
TAQ_QUOTES = TAQ_QUOTES_HEADER + """
20190508,9:29:00,N,94.99,1,95.03,1,R,1,A,,C,ETR,
20190508,9:29:30,P,95.00,1,95.02,1,R,2,A,,C,ETR,
20190508,9:29:40,P,95.01,1,95.02,1,R,3,A,B,C,ETR,
"""


def test_taq_reader_sorts_ties_by_sequence_and_builds_nbbo(tmp_path: Path) -> None:
    (tmp_path / "TAQtrades.csv").write_text(TAQ_TRADES)
    (tmp_path / "TAQquotes.csv").write_text(TAQ_QUOTES)
    ticks = load_day(duckdb.connect(), TaqReader(tmp_path), dt.date(2019, 5, 8), ["ETR"],
                     load_config())
    assert ticks is not None
    assert ticks.trades.price.tolist() == [95.02, 95.00]  # TR_SEQNUM breaks the time tie
    # 9:30:00.5 EDT = 13:30:00.5 UTC
    assert ticks.trades.ts[0] == int(dt.datetime(2019, 5, 8, 13, 30, tzinfo=dt.UTC)
                                     .timestamp()) * 10**9 + 500_000_000
    assert ticks.quotes is not None  # cancelled quote dropped; NBBO across N and P
    assert ticks.quotes.bid.tolist() == [94.99, 95.00] and ticks.quotes.ask.tolist() == [95.03,
                                                                                        95.02]


def test_wrong_file_symbol_or_date_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "TAQtrades.csv").write_text(TAQ_TRADES)
    settings = load_config()
    with pytest.raises(DataFormatError, match="none of the requested sessions"):
        check_coverage(duckdb.connect(), TaqReader(tmp_path), [dt.date(2019, 5, 9)], ["ETR"],
                       settings)
    with pytest.raises(DataFormatError, match="no trades of AAPL; it holds ETR"):
        check_coverage(duckdb.connect(), TaqReader(tmp_path), [dt.date(2019, 5, 8)], ["AAPL"],
                       settings)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "trades.csv").write_text("DATE,TIME_M,EX\n20190508,9:30:00,N\n")
    with pytest.raises(DataFormatError, match="missing column") as info:
        load_day(duckdb.connect(), TaqReader(bad), dt.date(2019, 5, 8), ["ETR"], settings)
    assert info.value.field == "SYM_ROOT" and info.value.line == 1


def test_generic_parquet_with_naive_market_time_and_unsorted_rows(tmp_path: Path) -> None:
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT * FROM (VALUES
        ('SPY', TIMESTAMP '2024-03-07 09:31:00', 500.02, 10, 'P', '@'),
        ('SPY', TIMESTAMP '2024-03-07 09:30:30', 500.00, 10, 'N', ''),
        ('SPY', TIMESTAMP '2024-03-07 09:30:40', 500.01, 10, 'D', ''))
        t(symbol, timestamp, price, size, exchange, conditions))
        TO '{tmp_path / "t.parquet"}' (FORMAT parquet)""")
    ticks = load_day(duckdb.connect(), GenericReader(tmp_path / "t.parquet"), DAY, ["SPY"],
                     load_config())
    assert ticks is not None and ticks.quotes is None
    assert ticks.trades.price.tolist() == [500.00, 500.02]  # sorted; TRF print dropped
    assert ticks.trades.ts[0] == ns("09:30:30")


def test_polygon_rest_pages_key_in_header_and_page_cap(httpserver: HTTPServer) -> None:
    t1, t2 = ns("09:30:01"), ns("09:30:02")
    page1 = {"status": "OK", "results": [
        {"conditions": [37], "exchange": 11, "price": 170.0, "sequence_number": 1,
         "sip_timestamp": t1, "size": 10}],
        "next_url": httpserver.url_for("/v3/trades/AAPL") + "?cursor=abc"}
    page2 = {"status": "OK", "results": [
        {"exchange": 4, "trf_id": 201, "price": 170.01, "sequence_number": 2,
         "sip_timestamp": t2, "size": 500},
        {"conditions": [14], "exchange": 12, "price": 170.02, "sequence_number": 3,
         "sip_timestamp": t2, "size": 5}]}
    quotes = {"status": "OK", "results": [
        {"ask_price": 170.02, "bid_price": 170.0, "sequence_number": 1, "sip_timestamp": t1 - 5}]}
    auth = {"Authorization": "Bearer sekret"}
    httpserver.expect_request("/v3/trades/AAPL", query_string={"cursor": "abc"},
                              headers=auth).respond_with_json(page2)
    httpserver.expect_request("/v3/trades/AAPL", headers=auth).respond_with_json(page1)
    httpserver.expect_request("/v3/quotes/AAPL", headers=auth).respond_with_json(quotes)
    settings = load_config(polygon_api_key="sekret", polygon_api_url=httpserver.url_for(""),
                           http_retries=0)
    with httpx.Client() as client:
        reader = PolygonRestReader(PolygonTicksClient(client, settings))
        ticks = load_day(duckdb.connect(), reader, DAY, ["AAPL"], settings)
        assert ticks is not None and not ticks.incomplete
        assert ticks.trades.price.tolist() == [170.0, 170.02]
        assert ticks.skipped["reason"].tolist() == ["off_exchange"]
        capped = PolygonRestReader(PolygonTicksClient(client, settings, max_pages=1))
        ticks = load_day(duckdb.connect(), capped, DAY, ["AAPL"], settings)
        assert ticks is not None and ticks.incomplete == {"AAPL"}
    for request, _ in httpserver.log:
        assert "sekret" not in request.url


def test_polygon_rest_error_status_is_a_fetch_error(httpserver: HTTPServer) -> None:
    from darkpool_analysis.errors import FetchError

    httpserver.expect_request("/v3/trades/AAPL").respond_with_data(
        json.dumps({"status": "ERROR", "error": "bad key sekret"}), status=403)
    settings = load_config(polygon_api_key="sekret", polygon_api_url=httpserver.url_for(""),
                           http_retries=0)
    with httpx.Client() as client, pytest.raises(FetchError, match="HTTP 403") as info:
        PolygonTicksClient(client, settings).fetch("trades", "AAPL", 0, 1)
    assert "sekret" not in str(info.value)


_SPELLINGS = st.from_regex(r"[A-Z]{1,4}([/.][A-Z]{1,2}|[prw][A-Z]?)?", fullmatch=True)


@given(st.lists(_SPELLINGS, min_size=1, max_size=30))
def test_sql_symbol_normalisation_equals_the_python_one(spellings: list[str]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (s VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[s] for s in spellings])
    got = con.execute(f"SELECT s, {normalised_symbol_sql('s')} FROM t").fetchall()
    assert {s: n for s, n in got} == {s: normalise(s) for s in spellings}


def test_taq_root_and_suffix_normalise_like_cqs() -> None:
    con = duckdb.connect()
    rows = [("BRK", "B", "BRK/B"), ("ABR", "PRD", "ABRpD"), ("ABR", "PR", "ABRp"),
            ("AACT", "WS", "AACT/WS"), ("ETR", None, "ETR")]
    con.execute("CREATE TABLE q (SYM_ROOT VARCHAR, SYM_SUFFIX VARCHAR, cqs VARCHAR)")
    con.executemany("INSERT INTO q VALUES (?, ?, ?)", [list(r) for r in rows])
    got = con.execute(f"SELECT cqs, {_taq_symbol('SYM_SUFFIX')} FROM q").fetchall()
    assert {cqs: n for cqs, n in got} == {cqs: normalise(cqs) for _, _, cqs in rows}
