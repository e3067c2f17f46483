"""End to end: files -> ``darkpool ingest trades`` -> ``lit_direction_daily`` in a real DuckDB."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.errors import DataFormatError
from darkpool_analysis.ingest.trades import ingest_trades
from darkpool_analysis.store import open_writer, read_frame, utcnow

runner = CliRunner()

TRADES = """symbol,timestamp,price,size,exchange,conditions
XYZ,2024-03-07 09:30:01,10.00,100,N,@
XYZ,2024-03-07 09:30:02,10.02,200,N,@
XYZ,2024-03-07 09:30:03,10.01,300,P,@
XYZ,2024-03-07 09:30:04,10.00,400,P,@
XYZ,2024-03-07 09:30:05,10.00,50,D,@
XYZ,2024-03-07 16:30:00,10.00,70,P,T
"""
QUOTES = """symbol,timestamp,bid,ask
XYZ,2024-03-07 09:30:00,10.00,10.02
"""


def _files(tmp_path: Path) -> tuple[Path, Path]:
    trades, quotes = tmp_path / "t.csv", tmp_path / "q.csv"
    trades.write_text(TRADES)
    quotes.write_text(QUOTES)
    return trades, quotes


def test_cli_writes_lee_ready_totals_and_rerun_replaces(tmp_path: Path, db_path: Path) -> None:
    trades, quotes = _files(tmp_path)
    args = ["ingest", "trades", "--date", "2024-03-07", "--tickers", "XYZ", "--source", "file",
            "--path", str(trades), "--quotes-path", str(quotes), "--no-build"]
    for _ in range(2):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    rows = read_frame(db_path, "SELECT * FROM lit_direction_daily")
    assert len(rows) == 1
    row = rows.iloc[0]
    # 10.00 at bid -> sell; 10.02 at ask -> buy; 10.01 mid -> downtick -> sell; 10.00 -> sell
    assert (row.lit_buy_volume, row.lit_sell_volume) == (200, 800)
    assert (row.buy_trades, row.sell_trades, row.unclassified_trades) == (1, 3, 0)
    assert row.method == "lee_ready" and row.coverage_pct == 100 and row.quote_coverage_pct == 100
    assert bool(row.complete) and row.source == "file"
    log = read_frame(db_path, "SELECT outcome, message FROM ingest_log ORDER BY id")
    assert log.outcome.tolist() == ["ingested", "replaced"]
    assert "off_exchange=1" in log.message[0] and "condition=1" in log.message[0]


def test_missing_quotes_fall_back_to_tick_and_say_so(tmp_path: Path, db_path: Path) -> None:
    trades, _ = _files(tmp_path)
    settings = load_config()
    with open_writer(settings.db_path) as writer:
        summary = ingest_trades(writer, settings, source="file", start=dt.date(2024, 3, 7),
                                end=dt.date(2024, 3, 7), tickers=["XYZ"], path=trades,
                                build=False)
    assert summary.methods == {"XYZ 2024-03-07": "lee_ready->tick"}
    row = read_frame(db_path, "SELECT * FROM lit_direction_daily").iloc[0]
    # tick: first unclassified, up, down, down
    assert (row.lit_buy_volume, row.lit_sell_volume, row.unclassified_volume) == (200, 700, 100)


def test_bvc_method(tmp_path: Path, db_path: Path) -> None:
    trades, _ = _files(tmp_path)
    settings = load_config()
    with open_writer(settings.db_path) as writer:
        ingest_trades(writer, settings, source="file", start=dt.date(2024, 3, 7),
                      end=dt.date(2024, 3, 7), tickers=["XYZ"], path=trades, method="bvc",
                      build=False)
    row = read_frame(db_path, "SELECT * FROM lit_direction_daily").iloc[0]
    assert row.method == "bvc" and row.lit_buy_volume + row.lit_sell_volume == 1000
    assert row.lit_buy_volume == pytest.approx(500)  # one bar: sigma undefined -> 0.5


def test_bad_file_leaves_database_unchanged(tmp_path: Path, db_path: Path) -> None:
    trades, quotes = _files(tmp_path)
    settings = load_config()
    with open_writer(settings.db_path) as writer:
        ingest_trades(writer, settings, source="file", start=dt.date(2024, 3, 7),
                      end=dt.date(2024, 3, 7), tickers=["XYZ"], path=trades,
                      quotes_path=quotes, build=False)
    before = read_frame(db_path, "SELECT * FROM lit_direction_daily")
    bad = tmp_path / "bad.csv"
    bad.write_text(TRADES.replace("10.02,200", "ten,200"))
    with open_writer(settings.db_path) as writer, pytest.raises(DataFormatError):
        ingest_trades(writer, settings, source="file", start=dt.date(2024, 3, 7),
                      end=dt.date(2024, 3, 7), tickers=["XYZ"], path=bad, build=False)
    after = read_frame(db_path, "SELECT * FROM lit_direction_daily")
    assert after.equals(before)
    result = runner.invoke(app, ["ingest", "trades", "--date", "2024-03-08", "--tickers", "XYZ",
                                 "--source", "file", "--path", str(trades)])
    assert result.exit_code == 1 and "none of the requested" in result.output


@pytest.mark.realdata
def test_real_taq_day(real_data: Path, db_path: Path, tmp_path: Path) -> None:
    folder = real_data / "taq" / "bj-liang_ETR_2019-05-08"
    result = runner.invoke(app, ["ingest", "trades", "--date", "2019-05-08", "--tickers", "ETR",
                                 "--source", "taq", "--path", str(folder), "--no-build",
                                 "--keep-parquet", str(tmp_path / "pq")])
    assert result.exit_code == 0, result.output
    row = read_frame(db_path, "SELECT * FROM lit_direction_daily").iloc[0]
    assert row.buy_trades + row.sell_trades + row.unclassified_trades == 13550
    assert row.method == "lee_ready" and row.quote_coverage_pct == 100
    kept = duckdb.sql(f"SELECT count(*) FROM '{tmp_path / 'pq'}/taq_2019-05-08_trades.parquet'")
    assert kept.fetchall() == [(17057,)]


def test_lit_only_day_stores_lit_rows_and_skips_the_build(tmp_path: Path, db_path: Path) -> None:
    trades, quotes = _files(tmp_path)
    result = runner.invoke(app, ["ingest", "trades", "--date", "2024-03-07", "--tickers", "XYZ",
                                 "--source", "file", "--path", str(trades), "--quotes-path",
                                 str(quotes)])
    assert result.exit_code == 0, result.output
    assert len(read_frame(db_path, "SELECT * FROM lit_direction_daily")) == 1
    assert read_frame(db_path, "SELECT count(*) AS n FROM daily_metrics")["n"].item() == 0


def test_lit_totals_flow_into_daily_metrics(tmp_path: Path, db_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKPOOL_MIN_LIT_VOLUME", "500")
    day = dt.date(2024, 3, 7)
    short = pd.DataFrame({"trade_date": [day], "facility": ["CNMS"], "symbol": ["XYZ"],
                          "symbol_norm": ["XYZ"], "short_volume": [600.0],
                          "short_exempt_volume": [0.0], "total_volume": [1000.0],
                          "market": ["B,Q,N"], "source_file": ["CNMSshvol20240307.txt"],
                          "sha256": ["x"], "fetched_at": [utcnow()]})
    with open_writer(db_path) as writer:
        writer.replace_partition("finra_short_daily_raw", short, where="true", params=[])
    trades, quotes = _files(tmp_path)
    result = runner.invoke(app, ["ingest", "trades", "--date", "2024-03-07", "--tickers", "XYZ",
                                 "--source", "file", "--path", str(trades), "--quotes-path",
                                 str(quotes)])
    assert result.exit_code == 0, result.output
    row = read_frame(db_path, "SELECT * FROM daily_metrics WHERE symbol = 'XYZ'").iloc[0]
    assert (row.lit_buy_volume, row.lit_sell_volume, row.lit_total_volume) == (200, 800, 1000)
    assert row.lit_flow_imbalance == pytest.approx(-0.6)  # (200 - 800) / 1000
    assert row.lit_buy_ratio == pytest.approx(0.2)
    assert row.vw_flow == pytest.approx((600 + 200) - (400 + 800))
    assert row.combined_ratio == pytest.approx(800 / 1200)
    assert bool(row.has_lit) and row.lit_method == "lee_ready"


@pytest.mark.parametrize("method", ["lee_ready", "quote", "emo", "clnv"])
def test_a_symbol_without_quotes_gets_the_tick_test_in_a_mixed_day(
        tmp_path: Path, db_path: Path, method: str) -> None:
    trades, quotes = _files(tmp_path)
    unquoted = TRADES.splitlines()[1:5]  # XYZ's four lit regular-hours trades, renamed
    trades.write_text(TRADES + "\n".join(line.replace("XYZ", "ABC") for line in unquoted)
                      + "\n")
    result = runner.invoke(app, ["ingest", "trades", "--date", "2024-03-07", "--tickers",
                                 "XYZ,ABC", "--source", "file", "--path", str(trades),
                                 "--quotes-path", str(quotes), "--method", method,
                                 "--no-build"])
    assert result.exit_code == 0, result.output
    abc = read_frame(db_path, "SELECT * FROM lit_direction_daily WHERE symbol = 'ABC'").iloc[0]
    # tick test on 10.00, 10.02, 10.01, 10.00: first unclassified, up, down, down
    assert (abc.lit_buy_volume, abc.lit_sell_volume, abc.unclassified_volume) == (200, 700, 100)
    assert abc.method == f"{method}->tick" and abc.quote_coverage_pct == 0
