"""Ctrl-C in a real ``darkpool ingest trades`` process: pending tasks are cancelled and the
database holds only whole batches; running the command again finishes the range."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from darkpool_analysis.sources.flatfiles import write_synthetic_polygon_day
from darkpool_analysis.store import read_frame
from darkpool_analysis.trading_calendar import sessions_between
from scale.conftest import lit_rows

FIRST, LAST = dt.date(2024, 4, 1), dt.date(2024, 4, 12)


def _command(root: Path, work: Path) -> list[str]:
    return [str(Path(sys.executable).with_name("darkpool")), "ingest", "trades", "--source",
            "polygon-flat", "--path", str(root), "--start", str(FIRST), "--end", str(LAST),
            "--executor", "local:2", "--work-dir", str(work), "--batch-days", "2",
            "--no-build"]


@pytest.mark.slow
def test_ctrl_c_leaves_whole_batches_and_a_rerun_completes(tmp_path: Path) -> None:
    days = sessions_between(FIRST, LAST)
    root = tmp_path / "flat"
    for day in days:
        write_synthetic_polygon_day(root, day, trades=30_000, quotes=30_000, symbols=25)
    db, work = tmp_path / "db" / "darkpool.duckdb", tmp_path / "work"
    env = {**os.environ, "DARKPOOL_DB": str(db)}
    process = subprocess.Popen(_command(root, work), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list(work.rglob("*.manifest.json"))) < 3 and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    _, stderr = process.communicate(timeout=240)
    if process.returncode == 0:
        pytest.fail("the run finished before Ctrl-C arrived; make the days larger")
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "batch in flight was not stored" in stderr
    empty = pd.DataFrame({"date": pd.Series([], dtype="datetime64[us]")})
    stored = lit_rows(db) if db.exists() else empty  # Ctrl-C before the first batch
    per_day = stored.groupby(stored["date"].dt.date).size()
    assert (per_day == 25).all()                      # no session stored in part
    assert len(per_day) % 2 == 0 and len(per_day) < len(days)  # whole batches of two only
    rerun = subprocess.run(_command(root, work), env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert len(lit_rows(db)) == 25 * len(days)
    log = read_frame(db, "SELECT count(*) AS n FROM ingest_log WHERE outcome = 'ingested'")
    assert log["n"].item() == len(days)  # every session stored exactly once
