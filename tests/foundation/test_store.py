"""The store: migrations, transactional idempotent writes, snapshot publication, read-only use."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from darkpool_analysis.errors import StoreError
from darkpool_analysis.store import (
    SCHEMA_VERSION,
    LogEntry,
    SourceFile,
    connect_readonly,
    master_path_for,
    open_writer,
    read_frame,
    utcnow,
)


def _prices(symbol: str, closes: list[float]) -> pd.DataFrame:
    days = pd.bdate_range("2021-01-04", periods=len(closes)).date
    return pd.DataFrame({"symbol": symbol, "date": days, "close": closes, "provider": "csv",
                         "fetched_at": utcnow()})


def _source(key: str, rows: int, sha: str = "abc") -> SourceFile:
    return SourceFile("prices", key, f"{key}.csv", f"/data/{key}.csv", sha, rows, utcnow())


def test_migrations_create_schema_and_are_idempotent(db_path: Path) -> None:
    for _ in range(2):
        with open_writer(db_path) as writer:
            writer.log_outcome("prices", "AAA", outcome="not_published")
    versions = read_frame(db_path, "SELECT version FROM schema_version ORDER BY version")
    assert versions["version"].tolist() == list(range(1, SCHEMA_VERSION + 1))
    tables = set(read_frame(db_path, "SELECT table_name FROM information_schema.tables")
                 ["table_name"])
    assert {"finra_short_daily_raw", "ingest_log", "source_files", "prices_daily",
            "daily_metrics", "lit_direction_daily", "finra_otc_weekly_raw"} <= tables


def test_replace_partition_is_idempotent(db_path: Path) -> None:
    frame = _prices("AAA", [1.0, 2.0, 3.0])
    for _ in range(2):
        with open_writer(db_path) as writer:
            writer.replace_partition("prices_daily", frame, where="symbol = ?", params=["AAA"],
                                     source=_source("AAA", 3))
    assert read_frame(db_path, "SELECT count(*) AS n FROM prices_daily")["n"].item() == 3
    assert read_frame(db_path, "SELECT count(*) AS n FROM source_files")["n"].item() == 1
    assert read_frame(db_path, "SELECT count(*) AS n FROM ingest_log")["n"].item() == 2


def test_a_writer_that_commits_nothing_creates_no_database(db_path: Path) -> None:
    with pytest.raises(RuntimeError), open_writer(db_path):
        raise RuntimeError("bad input before the first write")
    assert not db_path.exists()
    with pytest.raises(StoreError, match="no database"):
        connect_readonly(db_path)


def test_failed_write_leaves_database_unchanged(db_path: Path) -> None:
    with open_writer(db_path) as writer:
        writer.replace_partition("prices_daily", _prices("AAA", [1.0, 2.0]), where="symbol = ?",
                                 params=["AAA"], source=_source("AAA", 2))
    before = read_frame(db_path, "SELECT * FROM prices_daily ORDER BY date")
    bad = _prices("AAA", [5.0, 6.0, 7.0])
    bad.loc[2, "date"] = bad.loc[1, "date"]  # duplicate primary key -> constraint error
    with open_writer(db_path) as writer, pytest.raises(duckdb.ConstraintException):
        writer.replace_partition("prices_daily", bad, where="symbol = ?", params=["AAA"],
                                 source=_source("AAA", 3, "def"))
    after = read_frame(db_path, "SELECT * FROM prices_daily ORDER BY date")
    pd.testing.assert_frame_equal(before, after)
    assert read_frame(db_path, "SELECT sha256 FROM source_files")["sha256"].tolist() == ["abc"]
    assert read_frame(db_path, "SELECT count(*) AS n FROM ingest_log")["n"].item() == 1


def test_readers_never_see_the_master_and_cannot_write(db_path: Path) -> None:
    with pytest.raises(StoreError, match="no database"):
        connect_readonly(db_path)
    with open_writer(db_path, publish_interval=3600) as writer:
        writer.replace_partition("prices_daily", _prices("AAA", [1.0]), where="symbol = ?",
                                 params=["AAA"])
        assert master_path_for(db_path).exists()
        # Not yet published: readers see nothing until the writer publishes.
        assert not db_path.exists()
        writer.publish()
        assert read_frame(db_path, "SELECT count(*) AS n FROM prices_daily")["n"].item() == 1
        conn = connect_readonly(db_path)
        # Published tables are views over immutable files, and the connection is read-only.
        with pytest.raises(duckdb.BinderException, match="base table"):
            conn.execute("DELETE FROM prices_daily")
        with pytest.raises(duckdb.InvalidInputException, match="read-only"):
            conn.execute("CREATE TABLE hack AS SELECT 1")
        conn.close()


def test_published_database_adopted_when_master_missing(db_path: Path) -> None:
    with open_writer(db_path) as writer:
        writer.replace_partition("prices_daily", _prices("AAA", [1.0]), where="symbol = ?",
                                 params=["AAA"])
    master_path_for(db_path).unlink()
    with open_writer(db_path) as writer:
        writer.replace_partition("prices_daily", _prices("BBB", [2.0]), where="symbol = ?",
                                 params=["BBB"])
    assert read_frame(db_path, "SELECT count(*) AS n FROM prices_daily")["n"].item() == 2


_WRITER = textwrap.dedent(
    """
    import sys, time, datetime as dt
    import pandas as pd
    from darkpool_analysis.store import open_writer, utcnow
    db, n = sys.argv[1], int(sys.argv[2])
    with open_writer(db, publish_interval=0.0) as w:
        for i in range(n):
            frame = pd.DataFrame({"symbol": f"S{i:03d}", "date": [dt.date(2021, 1, 4)],
                                  "close": [float(i)], "provider": "csv",
                                  "fetched_at": utcnow()})
            w.replace_partition("prices_daily", frame, where="symbol = ?", params=[f"S{i:03d}"])
            w.maybe_publish()
            time.sleep(0.01)
    print("writer done")
    """
)

_READER = textwrap.dedent(
    """
    import sys, time
    import duckdb
    from darkpool_analysis.store import connect_readonly
    db, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    last, reads, deadline = -1, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        if mode == "seed":
            # exactly what the seed notebook does: a default (read-write) connection
            with duckdb.connect(db) as conn:
                n = conn.execute("SELECT count(*) FROM prices_daily").fetchone()[0]
        else:
            conn = connect_readonly(db, timeout=5)
            n = conn.execute("SELECT count(*) FROM prices_daily").fetchone()[0]
            conn.close()
        assert n >= last, (n, last)  # snapshots only move forward
        last, reads = n, reads + 1
    print(f"reader done {reads} {last}")
    """
)


@pytest.mark.parametrize("mode", ["readonly", "seed"])
def test_concurrent_writer_and_reader_processes(db_path: Path, tmp_path: Path,
                                                mode: str) -> None:
    # Publish an initial snapshot so the reader has something to open.
    with open_writer(db_path) as writer:
        writer.log_outcome("prices", None, outcome="not_published")
    writer_py, reader_py = tmp_path / "writer.py", tmp_path / "reader.py"
    writer_py.write_text(_WRITER)
    reader_py.write_text(_READER)
    env = {**os.environ}
    reader = subprocess.Popen([sys.executable, str(reader_py), str(db_path), mode, "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    writer = subprocess.Popen([sys.executable, str(writer_py), str(db_path), "80"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    w_out, w_err = writer.communicate(timeout=120)
    r_out, r_err = reader.communicate(timeout=120)
    assert writer.returncode == 0, w_err
    assert reader.returncode == 0, r_err
    assert "writer done" in w_out
    reads = int(r_out.split()[2])
    assert reads > 10
    assert read_frame(db_path, "SELECT count(*) AS n FROM prices_daily")["n"].item() == 80


def test_second_writer_waits_for_the_first(db_path: Path) -> None:
    with open_writer(db_path), pytest.raises(StoreError, match="another darkpool writer"), \
            open_writer(db_path, lock_timeout=0.2):
        pass


def test_timestamps_are_naive_utc() -> None:
    now = utcnow()
    assert now.tzinfo is None
    assert abs((dt.datetime.now(dt.UTC).replace(tzinfo=None) - now).total_seconds()) < 5


def test_replace_partitions_commits_many_partitions_at_once(db_path: Path) -> None:
    keys = pd.DataFrame({"symbol": ["AAA", "BBB"]})
    frames = [pa.Table.from_pandas(_prices("AAA", [1.0, 2.0]), preserve_index=False),
              pa.Table.from_pandas(_prices("BBB", [3.0]), preserve_index=False)]
    sources = [_source("AAA", 2), _source("BBB", 1)]
    logs = [LogEntry("prices", "AAA", None, "/data/AAA.csv", "ingested", 2),
            LogEntry("prices", "BBB", None, "/data/BBB.csv", "ingested", 1),
            LogEntry("prices", "CCC", None, None, "not_published")]
    for _ in range(2):  # idempotent: the second run replaces, never duplicates
        with open_writer(db_path) as writer:
            assert writer.replace_partitions("prices_daily", keys, frames, sources=sources,
                                             log_entries=logs) == 3
    assert read_frame(db_path, "SELECT count(*) AS n FROM prices_daily")["n"].item() == 3
    assert read_frame(db_path, "SELECT count(*) AS n FROM source_files")["n"].item() == 2
    outcomes = read_frame(db_path, "SELECT outcome, count(*) AS n FROM ingest_log GROUP BY 1 "
                                   "ORDER BY 1")
    assert outcomes.to_dict("list") == {"outcome": ["ingested", "not_published"], "n": [4, 2]}

    before = read_frame(db_path, "SELECT * FROM prices_daily ORDER BY symbol, date")
    broken = _prices("BBB", [9.0]).assign(provider=None)  # NOT NULL violated
    with open_writer(db_path) as writer, pytest.raises(duckdb.ConstraintException):
        writer.replace_partitions("prices_daily", keys,
                                  [frames[0], pa.Table.from_pandas(broken, preserve_index=False)
                                   .cast(frames[0].schema)])
    after = read_frame(db_path, "SELECT * FROM prices_daily ORDER BY symbol, date")
    pd.testing.assert_frame_equal(before, after)  # the whole batch rolled back
