"""Price ingestion end to end: real DuckDB files in tmp_path, a local HTTP server for Polygon,
the real Yahoo CSVs when present, and the CLI through Typer's CliRunner."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.errors import ConfigError, DataFormatError, FetchError
from darkpool_analysis.ingest.prices import (
    PriceIngestSummary,
    ingest_prices,
    resolve_provider,
    tickers_in_dir,
)
from darkpool_analysis.store import open_writer, read_frame

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prices"
API_KEY = "pk-test-SECRET-0123456789"
REAL_OHLCV = ("ohlcv", "McNuggett_ticker-data_2020-11_2021-02")
START, END = dt.date(2021, 1, 25), dt.date(2021, 1, 27)
TABLES = {
    "prices_daily": "SELECT * FROM prices_daily ORDER BY symbol, date",
    "source_files": "SELECT * FROM source_files ORDER BY dataset, partition_key",
    "ingest_log": "SELECT * FROM ingest_log ORDER BY id",
}


@pytest.fixture
def yahoo_dir(tmp_path: Path) -> Path:
    """A writable copy of the hand-written Yahoo CSV fixtures."""
    target = tmp_path / "yahoo"
    shutil.copytree(FIXTURES / "yahoo", target)
    return target


def _run(db_path: Path, settings: Settings, **kwargs: object) -> PriceIngestSummary:
    with open_writer(db_path) as writer:
        return ingest_prices(writer, settings, kwargs.pop("start", START),
                             kwargs.pop("end", END), **kwargs)  # type: ignore[arg-type]


def _prices(db_path: Path) -> pd.DataFrame:
    return read_frame(db_path, "SELECT symbol, strftime(date, '%Y-%m-%d') AS day, open, high, "
                      "low, close, adj_close, vwap, volume, provider, source_file "
                      "FROM prices_daily ORDER BY symbol, date")


def _snapshot(db_path: Path) -> dict[str, pd.DataFrame]:
    return {name: read_frame(db_path, sql) for name, sql in TABLES.items()}


def _assert_same_db(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame]) -> None:
    """Every table as it was, except that a refused run adds one ``failed`` ingest_log row
    naming what failed (issue 12 item 7)."""
    for name, frame in before.items():
        if name == "ingest_log":
            added = after[name].iloc[len(frame):]
            kept = after[name].iloc[:len(frame)]
            assert (frame.astype(object).where(frame.notna(), None).to_dict("records")
                    == kept.astype(object).where(kept.notna(), None).to_dict("records"))
            assert added["outcome"].tolist() == ["failed"], added
            assert added["message"].iloc[0], added
            continue
        pd.testing.assert_frame_equal(frame, after[name], obj=name)


# -- CSV provider -----------------------------------------------------------------------------

def test_csv_ingest_keeps_sessions_in_range(db_path: Path, yahoo_dir: Path) -> None:
    summary = _run(db_path, load_config(), tickers=["AAPL", "BRK-B", "GME"], from_dir=yahoo_dir)
    assert summary.provider == "csv"
    assert summary.ingested == ["AAPL", "BRK.B", "GME"]
    assert summary.rows == 9 and not summary.missing
    prices = _prices(db_path)
    assert prices["day"].unique().tolist() == ["2021-01-25", "2021-01-26", "2021-01-27"]
    aapl = prices.loc[prices["symbol"] == "AAPL"].iloc[0]  # 2021-01-22 is before START
    assert aapl[["open", "high", "low", "close", "adj_close", "volume"]].tolist() == [
        143.07, 145.09, 136.54, 142.92, 142.06, 157611700.0]
    brk = prices.loc[prices["symbol"] == "BRK.B"]
    assert brk["source_file"].unique().tolist() == ["BRK-B.csv"]
    assert brk["close"].tolist() == [232.80, 234.00, 228.10]
    assert brk["adj_close"].isna().all() and prices["vwap"].isna().all()
    assert set(prices["provider"]) == {"csv"}


def test_ingest_twice_gives_the_same_rows(db_path: Path, yahoo_dir: Path) -> None:
    settings = load_config(tickers=["AAPL", "GME"])
    _run(db_path, settings, from_dir=yahoo_dir)
    first = _snapshot(db_path)["prices_daily"]
    again = _run(db_path, settings, from_dir=yahoo_dir)
    assert again.unchanged == ["AAPL", "GME"] and again.rows == 0
    pd.testing.assert_frame_equal(first, _snapshot(db_path)["prices_daily"])
    log = read_frame(db_path, "SELECT outcome, count(*) AS n FROM ingest_log "
                     "GROUP BY outcome ORDER BY outcome")
    assert log.to_dict("records") == [{"outcome": "ingested", "n": 2},
                                      {"outcome": "unchanged", "n": 2}]

    forced = _run(db_path, settings, from_dir=yahoo_dir, force=True)
    assert forced.replaced == ["AAPL", "GME"] and forced.rows == 6
    after = _snapshot(db_path)["prices_daily"].drop(columns="fetched_at")
    pd.testing.assert_frame_equal(first.drop(columns="fetched_at"), after)


def test_changed_file_replaces_its_rows(db_path: Path, yahoo_dir: Path) -> None:
    settings = load_config(tickers=["GME"])
    _run(db_path, settings, from_dir=yahoo_dir)
    path = yahoo_dir / "GME.csv"
    path.write_text(path.read_text().replace("347.510009765625", "350.0"))
    summary = _run(db_path, settings, from_dir=yahoo_dir)
    assert summary.replaced == ["GME"]
    prices = _prices(db_path)
    assert len(prices) == 3
    assert prices.loc[prices["day"] == "2021-01-27", ["close", "adj_close"]].to_numpy().tolist() \
        == [[350.0, 350.0]]


def test_overlapping_ranges_never_duplicate(db_path: Path, yahoo_dir: Path) -> None:
    settings = load_config(tickers=["AAPL"])
    _run(db_path, settings, from_dir=yahoo_dir, start="2021-01-26", end="2021-01-27")
    _run(db_path, settings, from_dir=yahoo_dir, start="2021-01-20", end="2021-01-27")
    assert _prices(db_path)["day"].tolist() == ["2021-01-22", "2021-01-25", "2021-01-26",
                                                "2021-01-27"]


def test_bad_file_writes_nothing(db_path: Path, yahoo_dir: Path) -> None:
    settings = load_config(tickers=["AAPL", "GME"])
    _run(db_path, settings, from_dir=yahoo_dir)
    before = _snapshot(db_path)
    gme = yahoo_dir / "GME.csv"  # a valid change that must not be written either
    gme.write_text(gme.read_text().replace("347.510009765625", "350.0"))
    aapl = yahoo_dir / "AAPL.csv"
    aapl.write_text(aapl.read_text().replace("144.30,140.41", "139.30,140.41"))
    with pytest.raises(DataFormatError) as info:
        _run(db_path, settings, from_dir=yahoo_dir)
    assert (info.value.source, info.value.line, info.value.field) == ("AAPL.csv", 5, "High")
    _assert_same_db(before, _snapshot(db_path))


def test_non_session_rows_are_dropped_and_counted(db_path: Path, yahoo_dir: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    aapl = yahoo_dir / "AAPL.csv"
    aapl.write_text(aapl.read_text() + "2021-01-23,143.0,144.0,142.0,143.5,142.6,1000\n")
    summary = _run(db_path, load_config(tickers=["AAPL"]), from_dir=yahoo_dir,
                   start="2021-01-22", end="2021-01-27")
    assert summary.non_session_rows == 1  # 2021-01-23 is a Saturday
    assert "non-session" in caplog.text
    assert "2021-01-23" not in set(_prices(db_path)["day"])
    assert summary.rows == 4


def test_missing_ticker_is_reported_not_fatal(db_path: Path, yahoo_dir: Path) -> None:
    summary = _run(db_path, load_config(), tickers=["AAPL", "MSFT"], from_dir=yahoo_dir)
    assert summary.ingested == ["AAPL"] and summary.missing == ["MSFT"]


def test_progress_reports_fetch_and_write(db_path: Path, yahoo_dir: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    _run(db_path, load_config(tickers=["AAPL", "GME"]), from_dir=yahoo_dir,
         progress=lambda phase, done, total: calls.append((phase, done, total)))
    assert calls == [("fetch", 1, 2), ("fetch", 2, 2), ("write", 1, 2), ("write", 2, 2)]


def test_weekend_only_range_writes_nothing(db_path: Path, yahoo_dir: Path) -> None:
    summary = _run(db_path, load_config(tickers=["AAPL"]), from_dir=yahoo_dir,
                   start="2021-01-23", end="2021-01-24")
    assert summary.stored == [] and summary.rows == 0


def test_start_after_end_is_rejected(db_path: Path, yahoo_dir: Path) -> None:
    with pytest.raises(ConfigError, match="after end"):
        _run(db_path, load_config(), from_dir=yahoo_dir, start=END, end=START)


# -- provider choice ---------------------------------------------------------------------------

def test_resolve_provider_defaults(tmp_path: Path) -> None:
    keyless, keyed = load_config(), load_config(polygon_api_key=API_KEY)
    assert resolve_provider(keyed, yahoo_installed=True) == "polygon"
    assert resolve_provider(keyless, yahoo_installed=True) == "yahoo"
    assert resolve_provider(keyless, from_dir=tmp_path, yahoo_installed=False) == "csv"
    assert resolve_provider(keyed, from_dir=tmp_path, yahoo_installed=True) == "csv"
    assert resolve_provider(load_config(price_provider="yahoo", polygon_api_key=API_KEY),
                            yahoo_installed=True) == "yahoo"


def test_resolve_provider_explains_the_options() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_provider(load_config(), yahoo_installed=False)
    text = str(info.value)
    assert "POLYGON_API_KEY" in text and "darkpool-analysis[yahoo]" in text
    assert "--from-dir" in text


@pytest.mark.parametrize(("provider", "message"), [
    ("polygon", "needs an API key"), ("yahoo", "needs the optional package yfinance"),
    ("csv", "pass --from-dir"), ("bloomberg", "unknown price provider")])
def test_resolve_provider_rejects_unusable_choice(provider: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_provider(load_config(), provider, yahoo_installed=False)


# -- Polygon provider (local HTTP server) ----------------------------------------------------

def _polygon_settings(httpserver: HTTPServer, **overrides: object) -> Settings:
    return load_config(polygon_api_key=API_KEY,
                       polygon_api_url=httpserver.url_for("/").rstrip("/"),
                       http_backoff=0.0, http_retries=1, **overrides)


def _serve_grouped(httpserver: HTTPServer, request_id: str | None = None) -> None:
    for day in ("2021-01-26", "2021-01-27"):
        payload = json.loads((FIXTURES / "polygon" / f"grouped_{day}.json").read_text())
        if request_id is not None:
            payload["request_id"] = request_id
        httpserver.expect_request(f"/v2/aggs/grouped/locale/us/market/stocks/{day}",
                                  headers={"Authorization": f"Bearer {API_KEY}"}
                                  ).respond_with_json(payload)


def test_polygon_grouped_ingest_is_idempotent(db_path: Path, httpserver: HTTPServer) -> None:
    _serve_grouped(httpserver)
    settings = _polygon_settings(httpserver, tickers=["GME", "BRK/B", "AAPL"])
    summary = _run(db_path, settings, start="2021-01-26", end="2021-01-27")
    assert (summary.provider, summary.endpoint, summary.requests) == ("polygon", "grouped", 2)
    assert summary.ingested == ["GME", "BRK.B", "AAPL"] and summary.rows == 6
    prices = _prices(db_path)
    gme = prices.loc[prices["symbol"] == "GME"]
    assert gme[["day", "close", "vwap"]].to_numpy().tolist() == [
        ["2021-01-26", 147.98, 112.4021], ["2021-01-27", 347.51, 319.2401]]
    assert prices["adj_close"].isna().all()
    assert set(prices["provider"]) == {"polygon"}
    sources = read_frame(db_path, "SELECT location, source_file FROM source_files")
    assert not sources.apply(lambda col: col.str.contains(API_KEY)).any().any()

    httpserver.clear()  # same bars, new request ids: still "unchanged"
    _serve_grouped(httpserver, request_id="another-request")
    again = _run(db_path, settings, start="2021-01-26", end="2021-01-27")
    assert again.unchanged == ["GME", "BRK.B", "AAPL"]
    pd.testing.assert_frame_equal(prices, _prices(db_path))


def test_polygon_403_writes_nothing_and_hides_the_key(db_path: Path, yahoo_dir: Path,
                                                      httpserver: HTTPServer) -> None:
    _run(db_path, load_config(tickers=["GME"]), from_dir=yahoo_dir)
    before = _snapshot(db_path)
    httpserver.expect_request("/v2/aggs/ticker/GME/range/1/day/2021-01-25/2021-01-27"
                              ).respond_with_data(
        (FIXTURES / "polygon" / "error_403.json").read_text(), status=403,
        content_type="application/json")
    with pytest.raises(FetchError) as info:
        _run(db_path, _polygon_settings(httpserver, tickers=["GME"]))
    assert API_KEY not in str(info.value)
    _assert_same_db(before, _snapshot(db_path))


# -- real data ------------------------------------------------------------------------------

def test_real_yahoo_files_all_ingest(real_data: Path, db_path: Path) -> None:
    folder = real_data.joinpath(*REAL_OHLCV)
    symbols = tickers_in_dir(folder)
    assert len(symbols) == 25
    summary = _run(db_path, load_config(), tickers=symbols, from_dir=folder,
                   start="2020-11-30", end="2021-02-12")
    assert sorted(summary.ingested) == symbols and not summary.missing

    with (folder / "GME.csv").open(newline="") as handle:
        gme_close = next(float(row["Close"]) for row in csv.DictReader(handle)
                         if row["Date"] == "2021-01-27")
    prices = _prices(db_path)
    stored = prices.loc[(prices["symbol"] == "GME") & (prices["day"] == "2021-01-27"), "close"]
    assert stored.tolist() == [gme_close] == [347.510009765625]

    # Independent oracle: plain pandas over every file (all rows are sessions in range).
    oracle = pd.concat(
        [pd.read_csv(path).assign(symbol=path.stem) for path in sorted(folder.glob("*.csv"))],
        ignore_index=True).rename(columns={"Date": "day", "Open": "open", "High": "high",
                                           "Low": "low", "Close": "close",
                                           "Adj Close": "adj_close", "Volume": "volume"})
    oracle = oracle.sort_values(["symbol", "day"]).reset_index(drop=True)
    assert summary.rows == len(oracle) == len(prices)
    columns = ["symbol", "day", "open", "high", "low", "close", "adj_close", "volume"]
    pd.testing.assert_frame_equal(prices[columns].astype({"volume": "int64"}),
                                  oracle[columns], check_dtype=False)


# -- CLI ----------------------------------------------------------------------------------------

def test_cli_from_dir(db_path: Path, yahoo_dir: Path) -> None:
    result = CliRunner().invoke(app, ["ingest", "prices", "--start", "2021-01-25", "--end",
                                      "2021-01-27", "--tickers", "AAPL,BRK-B",
                                      "--from-dir", str(yahoo_dir)])
    assert result.exit_code == 0, result.output
    assert "ingested" in result.output and "6 row(s) written" in result.output
    assert sorted(set(_prices(db_path)["symbol"])) == ["AAPL", "BRK.B"]


def test_cli_all_real_files(real_data: Path, db_path: Path) -> None:
    folder = real_data.joinpath(*REAL_OHLCV)
    result = CliRunner().invoke(app, ["ingest", "prices", "--start", "2020-11-30", "--end",
                                      "2021-02-12", "--from-dir", str(folder), "--all"])
    assert result.exit_code == 0, result.output
    assert len(set(_prices(db_path)["symbol"])) == 25


def test_cli_bad_file_exits_1_naming_the_line(db_path: Path, yahoo_dir: Path) -> None:
    aapl = yahoo_dir / "AAPL.csv"
    aapl.write_text(aapl.read_text().replace("98390600", "lots"))
    result = CliRunner().invoke(app, ["ingest", "prices", "--start", "2021-01-25", "--end",
                                      "2021-01-27", "--tickers", "AAPL",
                                      "--from-dir", str(yahoo_dir)])
    assert result.exit_code == 1
    assert "AAPL.csv, line 4, field 'Volume'" in result.output
    # No data was committed; the database holds only the failed run's ingest_log row
    # (issue 12 item 7: failures are recorded with their message).
    tables = _snapshot(db_path)
    assert tables["prices_daily"].empty and tables["source_files"].empty
    log = tables["ingest_log"]
    assert log["outcome"].tolist() == ["failed"]
    assert "AAPL.csv, line 4, field 'Volume'" in log["message"].iloc[0]


def test_cli_polygon_403_hides_key(db_path: Path, httpserver: HTTPServer,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    httpserver.expect_request("/v2/aggs/ticker/GME/range/1/day/2021-01-25/2021-01-27"
                              ).respond_with_data(
        (FIXTURES / "polygon" / "error_403.json").read_text(), status=403,
        content_type="application/json")
    monkeypatch.setenv("POLYGON_API_KEY", API_KEY)
    monkeypatch.setenv("DARKPOOL_POLYGON_API_URL", httpserver.url_for("/").rstrip("/"))
    monkeypatch.setenv("DARKPOOL_HTTP_RETRIES", "0")
    result = CliRunner().invoke(app, ["ingest", "prices", "--start", "2021-01-25", "--end",
                                      "2021-01-27", "--tickers", "GME"])
    assert result.exit_code == 1
    assert "HTTP 403" in result.output and "POLYGON_API_KEY" in result.output
    assert API_KEY not in result.output


def test_cli_rejects_bad_date(db_path: Path, yahoo_dir: Path) -> None:
    result = CliRunner().invoke(app, ["ingest", "prices", "--start", "2021-13-01", "--end",
                                      "2021-01-27", "--from-dir", str(yahoo_dir)])
    assert result.exit_code == 2  # a usage error, like every other bad option
    assert "--start '2021-13-01' is not a date" in result.output
