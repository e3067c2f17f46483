"""daily_metrics never silently disagrees with the raw tables (issue 10 items 1, 2 and 8).

Every raw write records what the metrics owe in its own transaction (``metrics_owed``);
every ingest and build finishes it; ``db info`` and the sandbox warn while anything is owed;
and the table is a function of the raw data only, whatever order the files came in.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from cnms_support import HEADER, write_cnms_files
from darkpool_analysis import sandbox
from darkpool_analysis.build import build_metrics, settle_owed
from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.store import open_writer, read_frame, read_owed
from darkpool_analysis.trading_calendar import sessions_between


def metrics(db: Path) -> pd.DataFrame:
    return read_frame(db, "SELECT * FROM daily_metrics ORDER BY symbol, date")


def owed(db: Path) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as conn:
        return read_owed(conn)


def clean_full_build(files: Path, days: list[dt.date], db: Path) -> pd.DataFrame:
    """One ingest of every file into a fresh database (the reference)."""
    env_db = os.environ["DARKPOOL_DB"]
    os.environ["DARKPOOL_DB"] = str(db)
    try:
        result = CliRunner().invoke(app, ["ingest", "finra-short", "--from-dir", str(files),
                                          "--start", str(days[0]), "--end", str(days[-1])])
    finally:
        os.environ["DARKPOOL_DB"] = env_db
    assert result.exit_code == 0, result.output
    return metrics(db)


def test_raw_writes_record_what_is_owed_and_builds_settle_it(tmp_path: Path,
                                                             db_path: Path) -> None:
    days = sessions_between("2021-03-01", "2021-03-31")
    files = tmp_path / "files"
    write_cnms_files(files, days, 30)
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "finra-short", "--from-dir", str(files), "--start",
                                 str(days[0]), "--end", str(days[-1]), "--no-build"])
    assert result.exit_code == 0, result.output
    debt = owed(db_path)
    assert debt["symbol"].isna().all() and pd.Timestamp(debt["from_date"].min()) == \
        pd.Timestamp(days[0])

    info = runner.invoke(app, ["db", "info"])
    assert info.exit_code == 0
    assert "daily_metrics is out of date" in info.output and str(days[0]) in info.output

    settings = load_config(db_path=db_path)
    with open_writer(db_path) as writer:  # a symbol-only build does not pay a market debt
        build_metrics(writer, settings, symbols=["S0001"], start=days[5])
    assert len(owed(db_path)) == 1

    build = runner.invoke(app, ["build", "--tickers", "S0001"])
    assert build.exit_code == 0, build.output
    assert "also finished the rebuild still owed" in build.output
    assert owed(db_path).empty
    assert "out of date" not in runner.invoke(app, ["db", "info"]).output
    with open_writer(db_path) as writer:
        assert settle_owed(writer, settings) is None


def test_sandbox_warns_while_metrics_are_owed(tmp_path: Path, db_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    days = sessions_between("2021-03-01", "2021-04-30")
    files = tmp_path / "files"
    write_cnms_files(files, days, 5, drop=0.0)
    runner = CliRunner()
    args = ["ingest", "finra-short", "--from-dir", str(files), "--end", str(days[-1])]
    assert runner.invoke(app, [*args, "--start", str(days[0])]).exit_code == 0
    frame = sandbox.load("S0001", days[25], days[-1], db_path=db_path)
    assert frame.attrs["metrics_owed"] is None

    write_cnms_files(files, days[-3:], 5, seed=99, drop=0.0)  # FINRA re-published 3 days
    assert runner.invoke(app, [*args, "--start", str(days[-3]), "--no-build"]).exit_code == 0
    logging.getLogger().addHandler(caplog.handler)  # the CLI's logging setup replaced it
    with caplog.at_level(logging.WARNING, logger="darkpool_analysis.sandbox"):
        frame = sandbox.load("S0001", days[25], days[-1], db_path=db_path)
    assert "daily_metrics is out of date" in frame.attrs["metrics_owed"]
    assert any("out of date" in r.getMessage() for r in caplog.records)


def test_day_by_day_ingest_equals_one_ingest(tmp_path: Path, db_path: Path) -> None:
    """Issue 10 item 8: the incremental path writes exactly the full build's rows, including
    the no-data rows of symbols that were absent for a while and came back."""
    days = sessions_between("2021-01-04", "2021-02-01")[:20]
    files = tmp_path / "files"
    write_cnms_files(files, days, 60, drop=0.3)
    reference = clean_full_build(files, days, tmp_path / "ref" / "ref.duckdb")
    assert (reference["data_quality"] == "no_data").sum() > 50

    runner = CliRunner()
    for day in days:
        result = runner.invoke(app, ["ingest", "finra-short", "--from-dir", str(files),
                                     "--start", str(day), "--end", str(day)])
        assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(metrics(db_path), reference, check_exact=True)
    assert owed(db_path).empty


def test_days_in_reverse_order_and_a_withdrawn_day_equal_a_clean_build(
        tmp_path: Path, db_path: Path) -> None:
    """Any order of the same files, and a day whose rows shrink a symbol's span, give the
    same table as one ingest of what is finally stored."""
    days = sessions_between("2021-01-04", "2021-02-01")[:12]
    files = tmp_path / "files"
    write_cnms_files(files, days, 40, drop=0.3)
    runner = CliRunner()
    for day in reversed(days):
        result = runner.invoke(app, ["ingest", "finra-short", "--from-dir", str(files),
                                     "--start", str(day), "--end", str(day)])
        assert result.exit_code == 0, result.output
    reference = clean_full_build(files, days, tmp_path / "ref" / "ref.duckdb")
    pd.testing.assert_frame_equal(metrics(db_path), reference, check_exact=True)

    # The last day is re-published with fewer symbols: their spans end earlier now.
    last = days[-1].strftime("%Y%m%d")
    (files / f"CNMSshvol{last}.txt").write_bytes(
        f"{HEADER}\r\n{last}|S0000|5|0|10|B,Q,N\r\n1\r\n".encode())
    result = runner.invoke(app, ["ingest", "finra-short", "--from-dir", str(files), "--start",
                                 str(days[-1]), "--end", str(days[-1]), "--force"])
    assert result.exit_code == 0, result.output
    reference = clean_full_build(files, days, tmp_path / "ref2" / "ref.duckdb")
    pd.testing.assert_frame_equal(metrics(db_path), reference, check_exact=True)


def test_an_empty_file_that_replaces_a_day_takes_the_metrics_with_it(
        tmp_path: Path, db_path: Path) -> None:
    """Issue 10 item 2, second half: whenever raw rows change, daily_metrics follows."""
    days = sessions_between("2021-01-11", "2021-01-15")
    files = tmp_path / "files"
    write_cnms_files(files, days, 20, drop=0.0)
    runner = CliRunner()
    args = ["ingest", "finra-short", "--from-dir", str(files)]
    assert runner.invoke(app, [*args, "--start", str(days[0]), "--end",
                               str(days[-1])]).exit_code == 0
    stamp = days[2].strftime("%Y%m%d")
    (files / f"CNMSshvol{stamp}.txt").write_bytes(f"{HEADER}\r\n0\r\n".encode())
    result = runner.invoke(app, [*args, "--start", str(days[2]), "--end", str(days[2]),
                                 "--force"])
    assert result.exit_code == 0, result.output
    table = metrics(db_path)
    assert not table.loc[table["date"] == pd.Timestamp(days[2]), "has_short"].any()
    reference = clean_full_build(files, days, tmp_path / "ref" / "ref.duckdb")
    pd.testing.assert_frame_equal(table, reference, check_exact=True)


def _ingest_command(files: Path, days: list[dt.date]) -> list[str]:
    return [str(Path(sys.executable).with_name("darkpool")), "-v", "ingest", "finra-short",
            "--from-dir", str(files), "--start", str(days[0]), "--end", str(days[-1])]


def _run_until_rebuild_then_kill(command: list[str], env: dict[str, str],
                                 delay: float) -> bool:
    """Start ``command``; ``delay`` seconds after it says it is rebuilding daily_metrics,
    SIGKILL it. Returns whether the kill landed before the process finished."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if "rebuilding daily_metrics" in line:
                break
        else:
            raise AssertionError("the ingest never started its rebuild")
        time.sleep(delay)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return alive and proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_during_the_rebuild_is_finished_by_the_next_run(tmp_path: Path) -> None:
    """Issue 10 item 1: kill the ingest at several moments of its automatic rebuild; the next
    run of the same command (every file now unchanged) finishes the rebuild, and the table
    equals a clean full build."""
    days = sessions_between("2021-01-04", "2021-06-30")
    files = tmp_path / "files"
    write_cnms_files(files, days, 2500, drop=0.1)
    reference = clean_full_build(files, days, tmp_path / "ref" / "ref.duckdb")
    command = _ingest_command(files, days)
    rng = random.Random(11)
    landed = 0
    for attempt in range(4):
        db = tmp_path / f"run{attempt}" / "darkpool.duckdb"
        env = {**os.environ, "DARKPOOL_DB": str(db)}
        if _run_until_rebuild_then_kill(command, env, rng.uniform(0.0, 0.6)):
            landed += 1
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        pd.testing.assert_frame_equal(metrics(db), reference, check_exact=True)
        assert owed(db).empty
    assert landed >= 2, "too few kills landed inside the rebuild to test anything"
