"""End to end: the main job, the offline demo, and the seed notebook against databases we built.

* ``darkpool demo`` builds a synthetic database through the real ingest path; the seed notebook
  then runs completely unchanged against it (its own NKE, 2025-11-01..2025-12-31 window).
* Real FINRA CNMS files + Yahoo CSVs (``../shared/data/real``) ingested by the CLI; the seed
  runs with only its three parameters replaced and its scores equal ``--seed-exact``.
* ``darkpool run`` against local servers that speak the FINRA CDN and Polygon protocols, and
  its fail-fast message when the sources cannot be reached.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Request, Response

from darkpool_analysis import sandbox
from darkpool_analysis.cli import app
from darkpool_analysis.store import is_synthetic, read_frame
from darkpool_analysis.synthetic import write_market
from darkpool_analysis.views.sandbox_chart import plot
from seed_support import SEED_TITLES, run_seed_notebook, seed_cells, with_params

SEED_SCORES = ("acc_score_current", "acc_score_a", "acc_score_b", "vw_flow_z", "combined_ratio",
               "short_buy_sell_ratio_z", "confidence")


def _assert_seed_equals_library(seed_df: object, ticker: str, start: str, end: str) -> None:
    assert isinstance(seed_df, pd.DataFrame)
    ours = sandbox.load(ticker, start, end, warmup=False)
    assert len(ours) == len(seed_df) > 0
    for column in SEED_SCORES:
        np.testing.assert_allclose(ours[column].to_numpy(float),
                                   pd.to_numeric(seed_df[column]).to_numpy(float),
                                   rtol=0, atol=1e-12, equal_nan=True, err_msg=column)


def test_demo_then_the_seed_notebook_runs_unchanged(
        seed_dir: Path, tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo_db = tmp_path / "demo" / "demo.duckdb"
    result = CliRunner().invoke(app, ["demo", "--db", str(demo_db)])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output
    charts = list((clean_env / "output").glob("demo_NKE_sandbox_*.png"))
    assert len(charts) == 1 and charts[0].read_bytes().startswith(b"\x89PNG")
    counts = read_frame(demo_db, "SELECT count(DISTINCT date) AS days, count(DISTINCT symbol) "
                                 "AS symbols FROM daily_metrics")
    assert counts["symbols"].item() == 25 and counts["days"].item() > 200
    meta = read_frame(demo_db, "SELECT key, value FROM database_meta")
    assert is_synthetic(dict(zip(meta["key"], meta["value"], strict=True)))

    monkeypatch.setenv("DARKPOOL_DB", str(demo_db))
    run = run_seed_notebook(seed_cells(seed_dir), tmp_path, monkeypatch)  # not one line changed
    assert [axes for _, axes in run.figures] == [7, 1]
    _assert_seed_equals_library(run.df, "NKE", "2025-11-01", "2025-12-31")
    # With the stored full-history z-scores the demo's scores are all defined.
    assert pd.to_numeric(run.df["acc_score_current"]).notna().all()


@pytest.mark.realdata
def test_real_files_to_charts_and_the_seed(real_data: Path, seed_dir: Path, tmp_path: Path,
                                           db_path: Path, clean_env: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    cnms = real_data / "regsho_daily" / "McNuggett_2020-12_2021-02"
    ohlcv = real_data / "ohlcv" / "McNuggett_ticker-data_2020-11_2021-02"
    result = runner.invoke(app, ["ingest", "finra-short", "--from-dir", str(cnms),
                                 "--start", "2020-12-01", "--end", "2021-02-12"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["ingest", "prices", "--from-dir", str(ohlcv), "--all",
                                 "--start", "2020-11-30", "--end", "2021-02-12"])
    assert result.exit_code == 0, result.output
    assert "daily_metrics: rebuilt" in result.output

    tsla = read_frame(db_path, "SELECT * FROM daily_metrics WHERE symbol = 'TSLA' "
                               "ORDER BY date")
    assert len(tsla) == 52  # 2020-11-30 (a price bar, no short file yet) .. 2021-02-12
    assert tsla["has_short"].sum() == 51 and tsla["has_price"].all()
    assert tsla["return_z"].notna().sum() == 52 - 5  # first return on day 2, min_periods 5
    gme = read_frame(db_path, "SELECT * FROM daily_metrics WHERE symbol = 'GME' ORDER BY date")
    assert len(gme) == 51 and gme["has_short"].all()
    assert gme["has_price"].sum() == 24  # the GME CSV starts on 2021-01-11
    jan27 = gme.loc[gme["date"] == pd.Timestamp("2021-01-27")].iloc[0]
    assert jan27["close"] == pytest.approx(347.510009765625)
    assert jan27["short_buy_volume"] + jan27["short_sell_volume"] == jan27["total_volume"]

    for ticker in ("GME", "TSLA"):
        out = tmp_path / f"{ticker}.png"
        result = runner.invoke(app, ["sandbox", ticker, "--start", "2020-12-01", "--end",
                                     "2021-02-12", "--dot-mode", "all", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_bytes().startswith(b"\x89PNG")
        fig = plot(sandbox.load(ticker, "2020-12-01", "2021-02-12"), dot_mode="all")
        assert [ax.get_title(loc="left") for ax in fig.axes] == SEED_TITLES

    cells = seed_cells(seed_dir)
    cells[0] = with_params(cells[0], "GME", "2020-12-01", "2021-02-12")
    run = run_seed_notebook(cells, tmp_path, monkeypatch)
    assert [axes for _, axes in run.figures] == [7, 1]
    _assert_seed_equals_library(run.df, "GME", "2020-12-01", "2021-02-12")

    info = runner.invoke(app, ["db", "info"])
    assert info.exit_code == 0, info.output
    assert "daily_metrics" in info.output and "CNMS" in info.output


def _polygon_range(bars: pd.DataFrame) -> bytes:
    midnight_ny = pd.to_datetime(bars["Date"]).dt.tz_localize("America/New_York")
    epoch_ms = (midnight_ny - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(
        milliseconds=1)
    results = [{"t": int(t), "o": o, "h": h, "l": lo, "c": c, "v": v}
               for t, o, h, lo, c, v in zip(epoch_ms, bars["Open"], bars["High"], bars["Low"],
                                            bars["Close"], bars["Volume"], strict=True)]
    payload = {"ticker": "NKE", "status": "OK", "adjusted": True, "results": results,
               "resultsCount": len(results), "request_id": "local"}
    return json.dumps(payload).encode()


def test_run_against_local_finra_and_polygon_servers(
        httpserver: HTTPServer, tmp_path: Path, clean_env: Path, db_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    market = write_market(tmp_path / "market", tickers=("NKE", "AAPL"),
                          start=dt.date(2025, 9, 1), end=dt.date(2025, 12, 31))
    bars = pd.read_csv(market.prices_dir / "NKE.csv")

    def cdn(request: Request) -> Response:
        path = market.finra_dir / Path(request.path).name
        if not path.exists():  # what the real CDN answers for days without a file
            return Response("<Error><Code>AccessDenied</Code></Error>", status=403,
                            content_type="application/xml")
        return Response(path.read_bytes(), content_type="text/plain")

    def polygon(request: Request) -> Response:
        first, last = request.path.rstrip("/").split("/")[-2:]
        window = bars.loc[(bars["Date"] >= first) & (bars["Date"] <= last)]
        return Response(_polygon_range(window), content_type="application/json")

    httpserver.expect_request(re.compile(r"^/regsho/.*")).respond_with_handler(cdn)
    httpserver.expect_request(re.compile(r"^/v2/aggs/ticker/NKE/range/1/day/.*")
                              ).respond_with_handler(polygon)
    monkeypatch.setenv("FINRA_CDN_URL", httpserver.url_for("/regsho"))
    monkeypatch.setenv("DARKPOOL_POLYGON_API_URL", httpserver.url_for("/").rstrip("/"))
    monkeypatch.setenv("POLYGON_API_KEY", "local-test-key")
    result = CliRunner().invoke(app, ["run", "--tickers", "NKE", "--days", "10",
                                      "--end", "2025-12-31"])
    assert result.exit_code == 0, result.output
    chart = clean_env / "output" / "NKE_sandbox_2025-12-17_2025-12-31.png"
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "local-test-key" not in result.output
    nke = read_frame(db_path, "SELECT * FROM daily_metrics WHERE symbol = 'NKE' ORDER BY date")
    assert nke["has_short"].all() and nke["has_price"].all()
    assert nke["short_buy_sell_ratio_z"].iloc[-10:].notna().all()  # full warm-up fetched


def test_run_offline_fails_fast_and_points_to_the_demo(monkeypatch: pytest.MonkeyPatch,
                                                       db_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    monkeypatch.setenv("FINRA_CDN_URL", "http://127.0.0.1:9/regsho")
    monkeypatch.setenv("DARKPOOL_POLYGON_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("POLYGON_API_KEY", "offline-key")
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["run", "--tickers", "NKE", "--days", "5"])
    assert result.exit_code == 1
    assert time.perf_counter() - started < 15
    assert "cannot reach" in result.output and "FINRA CDN" in result.output
    assert "darkpool demo" in result.output
    assert not db_path.exists()
