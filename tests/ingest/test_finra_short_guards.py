"""Reg SHO ingest guards: empty files over stored days (issue 10.2), offline runs (12.3),
wrong folders (12.4), exact summaries (10.9), failures in ingest_log (12.7), exit 2 for a
missing --from-dir (12.8)."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from darkpool_analysis.cli import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "finra_short"
HEADER = "Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume|Market"
DAYS = ("20210802", "20210803", "20210804")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "files"
    target.mkdir()
    for day in DAYS:
        shutil.copy(FIXTURES / f"CNMSshvol{day}.txt", target)
    return target


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["ingest", "finra-short", *args])


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _raw(db: Path) -> list[tuple[Any, ...]]:
    return _rows(db, "SELECT * EXCLUDE (fetched_at) FROM finra_short_daily_raw "
                     "ORDER BY trade_date, symbol")


def _metrics(db: Path) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT * EXCLUDE (inference_version) FROM daily_metrics "
                            "ORDER BY symbol, date").df()


def _empty(folder: Path, day: str) -> None:
    (folder / f"CNMSshvol{day}.txt").write_bytes(f"{HEADER}\r\n0\r\n".encode())


RANGE = ("--start", "2021-08-02", "--end", "2021-08-04")


# -- 10.2: an empty consolidated file must not silently delete a stored day --------------------

def test_empty_cnms_file_over_stored_day_is_refused(db_path: Path, folder: Path) -> None:
    assert _cli("--from-dir", str(folder), *RANGE).exit_code == 0
    raw, metrics = _raw(db_path), _metrics(db_path)
    _empty(folder, "20210803")
    result = _cli("--from-dir", str(folder), *RANGE)
    assert result.exit_code == 1, result.output
    assert "empty file (header + trailer 0) for 2021-08-03" in result.output
    assert "--force" in result.output
    assert _raw(db_path) == raw
    pd.testing.assert_frame_equal(_metrics(db_path), metrics)
    assert _rows(db_path, "SELECT partition_key, outcome FROM ingest_log "
                          "WHERE outcome = 'failed'") == [("CNMS/2021-08-03", "failed")]


def test_forced_empty_file_applies_and_metrics_follow(tmp_path: Path, db_path: Path,
                                                     folder: Path) -> None:
    assert _cli("--from-dir", str(folder), *RANGE).exit_code == 0
    assert _rows(db_path, "SELECT count(*) FROM daily_metrics WHERE date = '2021-08-03' "
                          "AND short_volume IS NOT NULL")[0][0] == 3
    _empty(folder, "20210803")
    result = _cli("--from-dir", str(folder), *RANGE, "--force")
    assert result.exit_code == 0, result.output
    assert _rows(db_path, "SELECT count(*) FROM finra_short_daily_raw "
                          "WHERE trade_date = '2021-08-03'") == [(0,)]
    assert _rows(db_path, "SELECT count(*) FROM daily_metrics WHERE date = '2021-08-03' "
                          "AND short_volume IS NOT NULL") == [(0,)]
    # The metrics equal a clean build of the same raw data.
    fresh = tmp_path / "fresh.duckdb"
    result = CliRunner().invoke(app, ["ingest", "finra-short", "--from-dir", str(folder),
                                      *RANGE], env={"DARKPOOL_DB": str(fresh)})
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(_metrics(db_path), _metrics(fresh))


def test_empty_cnms_file_for_a_day_without_data_is_accepted(db_path: Path,
                                                           folder: Path) -> None:
    _empty(folder, "20210803")
    result = _cli("--from-dir", str(folder), *RANGE)
    assert result.exit_code == 0, result.output
    assert _rows(db_path, "SELECT partition_key, rows FROM source_files ORDER BY 1") == [
        ("CNMS/2021-08-02", 5), ("CNMS/2021-08-03", 0), ("CNMS/2021-08-04", 2)]


def test_empty_adf_file_stays_accepted_over_stored_rows(db_path: Path, folder: Path) -> None:
    adf = folder / "FNRAshvol20210802.txt"
    adf.write_bytes(f"{HEADER}\r\n20210802|GME|10|0|20|D\r\n1\r\n".encode())
    args = ("--from-dir", str(folder), "--family", "FNRA", "--start", "2021-08-02",
            "--end", "2021-08-02")
    assert _cli(*args).exit_code == 0
    shutil.copy(FIXTURES / "FNRAshvol20210802.txt", adf)  # the real, empty ADF file
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    assert _rows(db_path, "SELECT count(*) FROM finra_short_daily_raw") == [(0,)]


# -- 10.9: exact summaries --------------------------------------------------------------------

def test_single_failed_file_does_not_claim_others_were_stored(db_path: Path,
                                                             folder: Path) -> None:
    path = folder / "CNMSshvol20210802.txt"
    path.write_bytes(path.read_bytes().replace(b"|GME|", b"|AAPL|"))
    result = _cli("--from-dir", str(folder), "--start", "2021-08-02", "--end", "2021-08-02")
    assert result.exit_code == 1
    assert "the others were stored" not in result.output
    assert "the file failed; nothing was stored" in result.output


def test_partly_failed_run_says_exactly_what_was_stored(db_path: Path, folder: Path) -> None:
    path = folder / "CNMSshvol20210802.txt"
    path.write_bytes(path.read_bytes().replace(b"|GME|", b"|AAPL|"))
    result = _cli("--from-dir", str(folder), "--start", "2021-08-02", "--end", "2021-08-05")
    assert result.exit_code == 1
    assert "1 of 4 file(s) failed; 2 stored, 1 not in the folder" in result.output


# -- 12.3: offline ------------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_offline_run_stops_at_once_with_one_clear_error(db_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINRA_CDN_URL", f"http://127.0.0.1:{_closed_port()}/daily")
    started = time.perf_counter()  # default retries (4) and backoff (0.5 s) stay in force
    result = _cli("--start", "2020-12-01", "--end", "2021-02-12")
    elapsed = time.perf_counter() - started
    assert result.exit_code == 1, result.output
    assert elapsed < 10, elapsed
    output = result.output
    assert output.count("cannot reach 127.0.0.1") == 1, output
    assert "retrying" not in output
    assert "50 of 51 file(s) not attempted, nothing stored" in output
    assert "the others were stored" not in output
    assert "--from-dir" in output and "darkpool demo" in output
    assert _rows(db_path, "SELECT count(*), min(outcome) FROM ingest_log") == [(1, "failed")]
    assert _rows(db_path, "SELECT count(*) FROM finra_short_daily_raw") == [(0,)]


def test_server_errors_of_a_reachable_host_are_still_retried(httpserver: Any, db_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    httpserver.expect_oneshot_request("/daily/CNMSshvol20210802.txt").respond_with_data(
        "busy", status=503)
    httpserver.expect_request("/daily/CNMSshvol20210802.txt").respond_with_data(
        (FIXTURES / "CNMSshvol20210802.txt").read_bytes())
    monkeypatch.setenv("FINRA_CDN_URL", httpserver.url_for("/daily"))
    monkeypatch.setenv("DARKPOOL_HTTP_BACKOFF", "0")
    result = _cli("--start", "2021-08-02", "--end", "2021-08-02")
    assert result.exit_code == 0, result.output
    assert len(httpserver.log) == 2


# -- 12.4: a wrong folder is an error, not a run of gaps ------------------------------------------

def test_folder_of_price_files_is_an_error_saying_what_was_expected(db_path: Path,
                                                                    tmp_path: Path) -> None:
    prices = tmp_path / "prices"
    shutil.copytree(FIXTURES.parent / "prices" / "yahoo", prices)
    result = _cli("--from-dir", str(prices), *RANGE)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "holds no Reg SHO file" in text and "CNMSshvol20210802.txt" in text
    assert "AAPL.csv" in text and "3 other file(s)" in text
    assert not db_path.exists() or _rows(db_path, "SELECT count(*) FROM "
                                                  "finra_short_daily_raw") == [(0,)]


def test_empty_folder_and_other_family_folder_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli("--from-dir", str(empty), *RANGE)
    assert result.exit_code == 1 and "it is empty" in " ".join(result.output.split())
    other = tmp_path / "fnra"
    other.mkdir()
    shutil.copy(FIXTURES / "FNRAshvol20210802.txt", other)
    result = _cli("--from-dir", str(other), *RANGE)
    assert result.exit_code == 1 and "only FNRA file(s)" in " ".join(result.output.split())


# -- 12.8: a missing --from-dir is a usage error (exit 2) in every ingest command ----------------

@pytest.mark.parametrize("command", [
    ["finra-short", "--start", "2021-08-02", "--end", "2021-08-02"],
    ["prices", "--start", "2021-08-02", "--end", "2021-08-02"],
    ["finra-otc"],
])
def test_missing_from_dir_is_exit_2(tmp_path: Path, command: list[str]) -> None:
    result = CliRunner().invoke(app, ["ingest", *command, "--from-dir",
                                      str(tmp_path / "nowhere")])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--from-dir'" in result.output
