"""Folders and failures across ingest commands (issue 12 items 4 and 7).

``ingest prices --from-dir`` without ``--tickers`` takes every file; a folder without a file of
the expected naming is an error saying what was expected and found; every failed run is
recorded in ``ingest_log`` with its message while the data tables stay as they were.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from darkpool_analysis.cli import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["ingest", *args])


@pytest.fixture
def prices_dir(tmp_path: Path) -> Path:
    """Three Yahoo CSVs, none of them a default ticker except GME and AAPL, plus OTHER."""
    target = tmp_path / "prices"
    shutil.copytree(FIXTURES / "prices" / "yahoo", target)
    shutil.copy(target / "AAPL.csv", target / "ZZZQ.csv")
    return target


def test_prices_from_dir_without_tickers_takes_every_file(db_path: Path,
                                                          prices_dir: Path) -> None:
    result = _cli("prices", "--from-dir", str(prices_dir), "--start", "2021-01-25",
                  "--end", "2021-01-27")
    assert result.exit_code == 0, result.output
    assert _rows(db_path, "SELECT DISTINCT symbol FROM prices_daily ORDER BY 1") == [
        ("AAPL",), ("BRK.B",), ("GME",), ("ZZZQ",)]
    assert "NKE" not in result.output  # no "missing" default tickers


def test_prices_all_is_an_accepted_no_op(db_path: Path, prices_dir: Path) -> None:
    result = _cli("prices", "--from-dir", str(prices_dir), "--all", "--start", "2021-01-25",
                  "--end", "2021-01-27")
    assert result.exit_code == 0, result.output
    assert _rows(db_path, "SELECT count(DISTINCT symbol) FROM prices_daily") == [(4,)]


def test_prices_folder_of_regsho_files_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "regsho"
    folder.mkdir()
    shutil.copy(FIXTURES / "finra_short" / "CNMSshvol20210802.txt", folder)
    result = _cli("prices", "--from-dir", str(folder), "--start", "2021-01-25",
                  "--end", "2021-01-27")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "holds no price file: expected Yahoo-format <TICKER>.csv" in text
    assert "CNMSshvol20210802.txt" in text


def test_otc_empty_folder_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "otc"
    folder.mkdir()
    (folder / "notes.md").write_text("nothing here")
    result = _cli("finra-otc", "--from-dir", str(folder))
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "holds no FINRA OTC file" in text and "notes.md" in text


def test_failed_price_run_is_in_ingest_log(db_path: Path, prices_dir: Path) -> None:
    aapl = prices_dir / "AAPL.csv"
    args = ("prices", "--from-dir", str(prices_dir), "--tickers", "AAPL", "--start",
            "2021-01-25", "--end", "2021-01-27")
    assert _cli(*args).exit_code == 0
    before = _rows(db_path, "SELECT * FROM prices_daily ORDER BY date")
    aapl.write_text(aapl.read_text().replace("143.16", "150.00"))  # close above high
    result = _cli(*args)
    assert result.exit_code == 1
    assert _rows(db_path, "SELECT * FROM prices_daily ORDER BY date") == before
    [(message,)] = _rows(db_path, "SELECT message FROM ingest_log "
                                "WHERE outcome = 'failed'")
    assert "AAPL.csv, line 4, field 'Close'" in message and "close above high" in message


def test_failed_otc_file_is_in_ingest_log(db_path: Path, tmp_path: Path) -> None:
    record = {"weekStartDate": "2025-01-07", "tierIdentifier": "T1",
              "summaryTypeCode": "ATS_W_SMBL", "issueSymbolIdentifier": "GME",
              "totalWeeklyShareQuantity": 5, "lastUpdateDate": "2025-01-27"}
    path = tmp_path / "week.json"
    path.write_text(json.dumps([record]))
    result = _cli("finra-otc", "--from-file", str(path))
    assert result.exit_code == 1
    [(location, message)] = _rows(db_path, "SELECT location, message FROM ingest_log "
                                           "WHERE outcome = 'failed' AND dataset = 'finra_otc'")
    assert location == str(path) and "not a Monday" not in message
    assert "is a Tuesday; expected the Monday" in message
    assert _rows(db_path, "SELECT count(*) FROM finra_otc_weekly_raw") == [(0,)]


def test_failed_otc_api_run_is_in_ingest_log(db_path: Path, httpserver: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for dataset in ("weeklySummary", "weeklySummaryHistoric"):
        httpserver.expect_request(f"/data/group/otcMarket/name/{dataset}").respond_with_data(
            "[" * 100_000 + "]" * 100_000, headers={"record-total": "1"},
            content_type="application/json")
    monkeypatch.setenv("FINRA_API_URL", httpserver.url_for(""))
    week = (dt.date.today() - dt.timedelta(days=35))
    week -= dt.timedelta(days=week.weekday())
    result = _cli("finra-otc", "--tickers", "GME", "--tier", "T1", "--start", str(week),
                  "--end", str(week))
    assert result.exit_code == 1, result.output
    assert "nested too deeply" in result.output
    [(message,)] = _rows(db_path, "SELECT message FROM ingest_log WHERE outcome = 'failed'")
    assert "nested too deeply" in message
