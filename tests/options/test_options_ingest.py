"""``darkpool ingest options`` against a local server answering in Polygon's documented shapes.

The hand-computed case (AAPL, two sessions, closes 100 and 110, band 10%):

=========== ===== ======================================= ================================
session     close contract (strike, bar)                   premium = v x vw x 100
=========== ===== ======================================= ================================
2024-01-02  100   C95 ITM v10 vw6.00, C105 OTM v20 vw1.50  calls 6,000 ITM + 3,000 OTM
                  P95 OTM v4 vw0.50, P105 ITM v8 vw6.50    puts 200 OTM + 5,200 ITM
2024-01-03  110   C105 ITM v5 vw7.00, C115 OTM v30 vw1.00  calls 3,500 ITM + 3,000 OTM
                  P105 OTM: no bar (did not trade)         puts 0
=========== ===== ======================================= ================================

Scores: 100 x 9,000 / 14,400 = 62.5 and 100 x 6,500 / 6,500 = 100.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Request, Response

from darkpool_analysis import store
from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.errors import ConfigError, DataFormatError
from darkpool_analysis.ingest.options import ingest_options, premium_by_session, read_premium

KEY = "polygon-secret-key-123"
D1, D2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
TODAY = dt.date(2024, 6, 3)  # every contract of the window has expired: expired=true only
EXPIRY = "2024-01-19"
UNDERLYING = f"/v2/aggs/ticker/AAPL/range/1/day/{D1}/{D2}"
CONTRACTS = "/v3/reference/options/contracts"


def _ms(day: dt.date) -> int:
    return int(pd.Timestamp(day).tz_localize("America/New_York").timestamp() * 1000)


def _contract(kind: str, strike: float) -> dict[str, object]:
    letter = "C" if kind == "call" else "P"
    return {"cfi": "OCASPS", "contract_type": kind, "exercise_style": "american",
            "expiration_date": EXPIRY, "primary_exchange": "BATO", "shares_per_contract": 100,
            "strike_price": strike, "underlying_ticker": "AAPL",
            "ticker": f"O:AAPL240119{letter}{int(strike * 1000):08d}"}


C95, C105, C115 = _contract("call", 95), _contract("call", 105), _contract("call", 115)
P95, P105 = _contract("put", 95), _contract("put", 105)
#: contract ticker -> {session: (volume, vwap)}
BARS: dict[str, dict[dt.date, tuple[float, float]]] = {
    str(C95["ticker"]): {D1: (10, 6.0)},
    str(C105["ticker"]): {D1: (20, 1.5), D2: (5, 7.0)},
    str(P95["ticker"]): {D1: (4, 0.5)},
    str(P105["ticker"]): {D1: (8, 6.5)},  # no bar on D2
    str(C115["ticker"]): {D2: (30, 1.0)},
}
SPANS = {str(C95["ticker"]): (D1, D1), str(C105["ticker"]): (D1, D2),
         str(P95["ticker"]): (D1, D1), str(P105["ticker"]): (D1, D2),
         str(C115["ticker"]): (D2, D2)}


class Polygon:
    """The local Polygon: records requests, answers one 429 first."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.calls: list[Request] = []
        self.rate_limited = False

    def underlying(self, request: Request) -> Response:
        self.calls.append(request)
        if not self.rate_limited:
            self.rate_limited = True
            return Response(json.dumps({"status": "ERROR", "error": "too many requests"}),
                            status=429, headers={"Retry-After": "0"})
        results = [{"o": 99, "h": 101, "l": 98, "c": 100.0, "v": 5e7, "vw": 100, "t": _ms(D1)},
                   {"o": 101, "h": 111, "l": 100, "c": 110.0, "v": 6e7, "vw": 108, "t": _ms(D2)}]
        return _json({"ticker": "AAPL", "status": "OK", "adjusted": True, "resultsCount": 2,
                      "results": results, "request_id": "u"})

    def contracts(self, request: Request) -> Response:
        self.calls.append(request)
        args = request.args
        if args.get("cursor") == "page2":
            return _json({"status": "OK", "results": [P95, P105], "request_id": "c2"})
        assert args["expired"] == "true" and args["underlying_ticker"] == "AAPL"
        assert args["expiration_date.gte"] == args["as_of"]
        if args["as_of"] == D1.isoformat():
            assert (args["strike_price.gte"], args["strike_price.lte"]) == ("90.0000",
                                                                          "110.0000")
            return _json({"status": "OK", "results": [C95, C105], "request_id": "c1",
                          "next_url": self.server.url_for(CONTRACTS) + "?cursor=page2"})
        assert args["as_of"] == D2.isoformat()
        assert (args["strike_price.gte"], args["strike_price.lte"]) == ("99.0000", "121.0000")
        return _json({"status": "OK", "results": [C105, P105, C115], "request_id": "c3"})

    def bars(self, request: Request) -> Response:
        self.calls.append(request)
        ticker = request.path.split("/")[4]
        rows = [{"v": v, "vw": vw, "o": vw, "c": vw, "h": vw, "l": vw, "t": _ms(day), "n": 3}
                for day, (v, vw) in BARS[ticker].items()]
        payload: dict[str, object] = {"ticker": ticker, "status": "OK", "adjusted": True,
                                      "resultsCount": len(rows), "request_id": "b"}
        if rows:
            payload["results"] = rows
        return _json(payload)


def _json(payload: dict[str, object]) -> Response:
    return Response(json.dumps(payload), status=200, content_type="application/json")


@pytest.fixture
def polygon(httpserver: HTTPServer) -> Polygon:
    fake = Polygon(httpserver)
    httpserver.expect_request(UNDERLYING).respond_with_handler(fake.underlying)
    httpserver.expect_request(CONTRACTS).respond_with_handler(fake.contracts)
    for ticker, (first, last) in SPANS.items():
        httpserver.expect_request(f"/v2/aggs/ticker/{ticker}/range/1/day/{first}/{last}"
                                  ).respond_with_handler(fake.bars)
    return fake


def _settings(server: HTTPServer, **extra: object) -> object:
    return load_config(polygon_api_url=server.url_for("/").rstrip("/"), polygon_api_key=KEY,
                       http_backoff=0.0, http_concurrency=2, **extra)


def test_premium_sums_and_itm_otm_split_by_hand(polygon: Polygon, httpserver: HTTPServer,
                                                db_path: Path) -> None:
    settings = _settings(httpserver)
    with store.open_writer(db_path) as writer:
        summary = ingest_options(writer, settings, D1, D2, ["AAPL"], today=TODAY)  # type: ignore[arg-type]
    assert summary.ingested == ["AAPL"] and summary.rows == 2 and summary.contracts == 5
    conn = store.connect_readonly(db_path)
    try:
        rows = read_premium(conn, "AAPL", D1, D2)
        provenance = conn.execute("SELECT dataset, partition_key, source_file, location, rows "
                                  "FROM source_files WHERE dataset = 'options'").fetchall()
        logged = conn.execute("SELECT outcome, rows FROM ingest_log WHERE dataset = 'options'"
                              ).fetchall()
    finally:
        conn.close()
    first, second = rows.to_dict("records")
    assert first["underlying_close"] == 100.0
    assert (first["call_premium"], first["call_itm_premium"], first["call_otm_premium"]) == (
        9000.0, 6000.0, 3000.0)
    assert (first["put_premium"], first["put_itm_premium"], first["put_otm_premium"]) == (
        5400.0, 5200.0, 200.0)
    assert (first["call_volume"], first["put_volume"]) == (30.0, 12.0)
    assert (first["contracts"], first["contracts_traded"]) == (4, 4)
    assert first["premium_score"] == pytest.approx(62.5)
    assert (second["call_premium"], second["call_itm_premium"], second["call_otm_premium"]) == (
        6500.0, 3500.0, 3000.0)
    assert (second["put_premium"], second["contracts"], second["contracts_traded"]) == (0, 3, 2)
    assert second["premium_score"] == 100.0
    assert provenance == [("options", f"polygon/AAPL/{D1}/{D2}", "polygon-options/AAPL",
                           settings.polygon_api_url, 2)]  # type: ignore[attr-defined]
    assert logged == [("ingested", 2)]
    # paging: the second contracts page was fetched with the cursor of next_url
    assert any(r.args.get("cursor") == "page2" for r in polygon.calls)
    # the key travels in a header only
    assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in polygon.calls)
    assert not any(KEY in r.full_path for r in polygon.calls)


def test_429_is_retried(polygon: Polygon, httpserver: HTTPServer, db_path: Path) -> None:
    with store.open_writer(db_path) as writer:
        summary = ingest_options(writer, _settings(httpserver), D1, D2, ["AAPL"],  # type: ignore[arg-type]
                                 today=TODAY)
    underlying_calls = [r for r in polygon.calls if r.path == UNDERLYING]
    assert polygon.rate_limited and len(underlying_calls) == 2
    assert summary.rows == 2


def test_second_run_is_unchanged_and_rewrites_nothing(polygon: Polygon, httpserver: HTTPServer,
                                                      db_path: Path) -> None:
    settings = _settings(httpserver)
    for _ in range(2):
        with store.open_writer(db_path) as writer:
            summary = ingest_options(writer, settings, D1, D2, ["AAPL"], today=TODAY)  # type: ignore[arg-type]
    assert summary.unchanged == ["AAPL"] and summary.rows == 0
    conn = store.connect_readonly(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM options_premium_daily").fetchone() == (2,)
        assert [r[0] for r in conn.execute("SELECT outcome FROM ingest_log WHERE dataset = "
                                           "'options' ORDER BY id").fetchall()] == [
            "ingested", "unchanged"]
    finally:
        conn.close()


def test_missing_key_says_what_is_needed(db_path: Path) -> None:
    settings = load_config()
    with pytest.raises(ConfigError) as info:
        ingest_options(None, settings, D1, D2, ["AAPL"])  # type: ignore[arg-type]
    assert "POLYGON_API_KEY" in info.value.message
    result = CliRunner().invoke(app, ["ingest", "options", "--start", str(D1), "--end", str(D2),
                                      "--tickers", "AAPL"])
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "needs an API key: POLYGON_API_KEY is not set" in flat
    assert "options aggregates" in flat
    assert not db_path.exists()  # nothing was opened or written


def test_cli_prints_the_summary(polygon: Polygon, httpserver: HTTPServer,
                                monkeypatch: pytest.MonkeyPatch, db_path: Path) -> None:
    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    monkeypatch.setenv("DARKPOOL_POLYGON_API_URL", httpserver.url_for("/").rstrip("/"))
    monkeypatch.setenv("DARKPOOL_HTTP_BACKOFF", "0")
    # past sessions whose expiry window reaches the real today need expired=false too; this
    # range's window (Jan 2024 + 30 days) is long past
    result = CliRunner().invoke(app, ["ingest", "options", "--start", str(D1), "--end", str(D2),
                                      "--tickers", "AAPL"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "2 row(s) written from 5 contract(s)" in flat and KEY not in flat


def test_malformed_contract_names_the_field(httpserver: HTTPServer, db_path: Path) -> None:
    fake = Polygon(httpserver)
    fake.rate_limited = True
    httpserver.expect_request(UNDERLYING).respond_with_handler(fake.underlying)
    httpserver.expect_request(CONTRACTS).respond_with_json(
        {"status": "OK", "results": [{**C95, "strike_price": "n/a"}]})
    with store.open_writer(db_path) as writer, pytest.raises(DataFormatError) as info:
        ingest_options(writer, _settings(httpserver), D1, D2, ["AAPL"], today=TODAY)  # type: ignore[arg-type]
    assert "results[0].strike_price" in str(info.value)
    assert not db_path.exists()  # nothing was committed, so nothing was published


def test_premium_by_session_is_pure_and_keeps_sessions_without_contracts() -> None:
    sessions = pd.DataFrame({"symbol": ["X", "X"], "date": pd.to_datetime([D1, D2]),
                             "close": [50.0, 50.0]})
    selected = pd.DataFrame({"symbol": ["X"], "date": pd.to_datetime([D1]), "ticker": ["O:X"],
                             "contract_type": ["put"], "strike_price": [50.0],
                             "shares_per_contract": [100.0]})
    bars = pd.DataFrame({"ticker": ["O:X"], "date": pd.to_datetime([D1]), "volume": [2.0],
                         "vwap": [1.25]})
    out = premium_by_session(sessions, selected, bars)
    assert out["put_otm_premium"].tolist() == [250.0, 0.0]  # strike == close counts as OTM
    assert out["premium_score"].iloc[0] == 0.0 and pd.isna(out["premium_score"].iloc[1])
    assert out["contracts"].tolist() == [1, 0]


def test_ticker_without_options_or_without_bars(httpserver: HTTPServer, db_path: Path) -> None:
    """A listed stock without near-the-money contracts gets zero rows with a NULL score; a
    ticker without underlying bars is reported missing and writes nothing."""
    bars = [{"o": 9, "h": 11, "l": 8, "c": 10.0, "v": 1e5, "vw": 10, "t": _ms(D1)}]
    httpserver.expect_request(f"/v2/aggs/ticker/QUIET/range/1/day/{D1}/{D2}").respond_with_json(
        {"status": "OK", "resultsCount": 1, "results": bars})
    httpserver.expect_request(f"/v2/aggs/ticker/GONE/range/1/day/{D1}/{D2}").respond_with_json(
        {"status": "OK", "resultsCount": 0})
    httpserver.expect_request(CONTRACTS).respond_with_json({"status": "OK", "results": []})
    with store.open_writer(db_path) as writer:
        summary = ingest_options(writer, _settings(httpserver), D1, D2, ["QUIET", "GONE"],  # type: ignore[arg-type]
                                 today=TODAY)
    assert summary.ingested == ["QUIET"] and summary.missing == ["GONE"]
    conn = store.connect_readonly(db_path)
    try:
        rows = read_premium(conn, "QUIET", D1, D2)
    finally:
        conn.close()
    assert len(rows) == 1 and rows["contracts"].iloc[0] == 0
    assert rows["call_premium"].iloc[0] == 0 and pd.isna(rows["premium_score"].iloc[0])
