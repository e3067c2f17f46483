"""Publication by generations (issue 13): what changed is published, never the history;
readers keep their generation; garbage collection keeps what readers may hold; a crash at any
moment leaves the last generation readable; disk stays bounded."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from cnms_support import write_cnms_files
from darkpool_analysis.build import build_metrics, settle_owed
from darkpool_analysis.config import load_config
from darkpool_analysis.store import (
    MIGRATIONS,
    SourceFile,
    Writer,
    connect_readonly,
    describe_storage,
    master_path_for,
    open_writer,
    read_frame,
    run,
    store_dir_for,
    utcnow,
)
from darkpool_analysis.store.catalogue import catalogue_paths, current_generation
from darkpool_analysis.trading_calendar import sessions_between


def _short_rows(days: list[dt.date], n_symbols: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(days) * n_symbols
    total = rng.integers(10_000, 1_000_000, n).astype(float)
    return pd.DataFrame({
        "trade_date": np.repeat(np.array(days, dtype=object), n_symbols),
        "facility": "CNMS",
        "symbol": np.tile([f"S{i:03d}" for i in range(n_symbols)], len(days)),
        "symbol_norm": np.tile([f"S{i:03d}" for i in range(n_symbols)], len(days)),
        "short_volume": np.round(total * rng.uniform(0.2, 0.7, n)),
        "short_exempt_volume": 0.0,
        "total_volume": total,
        "market": "Q",
        "source_file": "test",
        "sha256": "0" * 64,
        "fetched_at": dt.datetime(2024, 1, 2),
    })


def _ingest_days(writer: Writer, days: list[dt.date], n_symbols: int, seed: int = 1) -> None:
    """One CNMS partition per day, the way the Reg SHO ingest writes them."""
    frame = _short_rows(days, n_symbols, seed)
    keys = pd.DataFrame({"facility": "CNMS", "trade_date": days})
    import pyarrow as pa

    writer.replace_partitions(
        "finra_short_daily_raw", keys, [pa.Table.from_pandas(frame, preserve_index=False)],
        sources=[SourceFile("finra_short", f"CNMS/{d}", f"CNMSshvol{d:%Y%m%d}.txt", "test",
                            f"{seed:064d}", n_symbols, utcnow()) for d in days])


def _master_tables(db: Path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(master_path_for(db)), read_only=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT starts_with(table_name, 'store_')"
            " AND table_name NOT IN ('daily_metrics_columns')").fetchall()]
        return {n: conn.execute(f"SELECT * FROM {n} ORDER BY ALL").df() for n in names}


def assert_published_equals_master(db: Path) -> None:
    """Every published table has exactly the master's rows, names and types."""
    master = _master_tables(db)
    conn = connect_readonly(db)
    try:
        for name, expected in master.items():
            got = conn.execute(f"SELECT * FROM {name} ORDER BY ALL").df()
            pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=name)
    finally:
        conn.close()


def _disk_bytes(db: Path) -> int:
    files = [db, master_path_for(db), *store_dir_for(db).rglob("*")]
    return sum(f.stat().st_size for f in files if f.is_file())


def _catalogue(db: Path, generation: int) -> dict:
    json_path, _ = catalogue_paths(store_dir_for(db), generation)
    return json.loads(json_path.read_text())


def test_a_one_session_update_publishes_only_the_new_rows(db_path: Path) -> None:
    days = sessions_between("2021-01-04", "2021-06-30")
    settings = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        _ingest_days(writer, days[:-1], 40)
        build_metrics(writer, settings)
    before = current_generation(store_dir_for(db_path))
    old_files = {f for t in _catalogue(db_path, before)["tables"].values()
                 for s in t["segments"] for f in s["files"]}

    with open_writer(db_path) as writer:
        _ingest_days(writer, days[-1:], 40, seed=2)
        settle_owed(writer, settings)
    after = _catalogue(db_path, current_generation(store_dir_for(db_path)))
    new_rows = {name: sum(s["rows"] for s in t["segments"] if not set(s["files"]) <= old_files)
                for name, t in after["tables"].items()}
    assert new_rows["finra_short_daily_raw"] == 40  # the new day, nothing of the history
    assert 0 < new_rows["daily_metrics"] <= 40
    assert new_rows["prices_daily"] == 0
    assert_published_equals_master(db_path)
    table = read_frame(db_path, "SELECT count(*) AS n, max(date) AS last FROM daily_metrics")
    assert table["n"].item() == 40 * len(days)
    assert pd.Timestamp(table["last"].item()).date() == days[-1]


def test_published_tables_keep_their_names_and_types(db_path: Path) -> None:
    days = sessions_between("2021-03-01", "2021-03-31")
    with open_writer(db_path) as writer:
        _ingest_days(writer, days, 5)
        build_metrics(writer, load_config(db_path=db_path))
    with duckdb.connect(str(master_path_for(db_path)), read_only=True) as conn:
        template = conn.execute("DESCRIBE daily_metrics_columns").df()[["column_name",
                                                                        "column_type"]]
        ingest_log = conn.execute("DESCRIBE ingest_log").df()[["column_name", "column_type"]]
    with duckdb.connect(str(db_path), read_only=True) as conn:  # what the notebook opens
        published = conn.execute("DESCRIBE daily_metrics").df()[["column_name", "column_type"]]
        published_log = conn.execute("DESCRIBE ingest_log").df()[["column_name",
                                                                  "column_type"]]
    pd.testing.assert_frame_equal(published, template)
    pd.testing.assert_frame_equal(published_log, ingest_log)


def test_a_reader_keeps_its_generation_across_publishes(db_path: Path) -> None:
    days = sessions_between("2021-01-04", "2021-03-31")
    with open_writer(db_path) as writer:
        _ingest_days(writer, days[:20], 10)
    reader = connect_readonly(db_path)
    first = reader.execute("SELECT count(*) FROM finra_short_daily_raw").fetchone()[0]
    with open_writer(db_path, publish_interval=0.0) as writer:
        for k in range(20, 50, 10):
            _ingest_days(writer, days[k:k + 10], 10, seed=k)
            writer.publish()
            # The open connection still reads its own generation, completely.
            assert reader.execute("SELECT count(*) FROM finra_short_daily_raw"
                                  ).fetchone()[0] == first
    reader.close()
    assert read_frame(db_path, "SELECT count(*) AS n FROM finra_short_daily_raw"
                      )["n"].item() == 50 * 10


def test_garbage_collection_keeps_the_current_and_previous_generation(db_path: Path) -> None:
    days = sessions_between("2021-01-04", "2021-12-31")
    settings = load_config(db_path=db_path)
    store_dir = store_dir_for(db_path)
    with open_writer(db_path, publish_interval=0.0, gc_grace_seconds=0.0) as writer:
        for k in range(0, 150, 10):
            _ingest_days(writer, days[k:k + 10], 12, seed=k)
            if k % 30 == 0:
                build_metrics(writer, settings)  # full rebuilds replace everything
            else:
                settle_owed(writer, settings)
            writer.publish()
            current = current_generation(store_dir)
            assert current is not None
            kept = [g for g in (current - 1, current)
                    if catalogue_paths(store_dir, g)[0].exists()]
            assert current in kept
            for generation in kept:
                for table in _catalogue(db_path, generation)["tables"].values():
                    for segment in table["segments"]:
                        for name in segment["files"]:
                            assert (store_dir / name).exists(), (generation, name)
                assert catalogue_paths(store_dir, generation)[1].exists()
            # Older generations and their files are gone (grace period 0 here).
            catalogues = sorted(int(p.stem) for p in (store_dir / "catalogues").glob("*.json"))
            assert catalogues == kept
    referenced = {f for g in kept for t in _catalogue(db_path, g)["tables"].values()
                  for s in t["segments"] for f in s["files"]}
    on_disk = {str(p.relative_to(store_dir)) for p in (store_dir / "data").glob("*/*.parquet")}
    assert on_disk == referenced
    assert_published_equals_master(db_path)


def test_piled_up_deltas_are_merged_and_equal_the_master(db_path: Path) -> None:
    days = sessions_between("2021-01-04", "2021-12-31")
    with open_writer(db_path, publish_interval=0.0, gc_grace_seconds=0.0) as writer:
        _ingest_days(writer, days[:100], 8)
        for k in range(100, 140):
            _ingest_days(writer, days[k:k + 1], 8, seed=k)
            writer.publish()
            segments = writer.segments("finra_short_daily_raw")["finra_short_daily_raw"]
            assert len(segments) <= 10
        # a correction of an old day, published as a delta that hides the stored rows
        _ingest_days(writer, days[3:4], 8, seed=999)
    assert_published_equals_master(db_path)
    info = describe_storage(db_path)
    assert info is not None
    store_dir = store_dir_for(db_path)
    current = current_generation(store_dir)
    files = {g: {f for t in _catalogue(db_path, g)["tables"].values() for s in t["segments"]
                 for f in s["files"]} for g in (current - 1, current)}
    held_for_readers = files[current - 1] - files[current]
    # Only the previous generation's own files are reclaimable; nothing else is left over.
    assert info["reclaimable_bytes"] == sum((store_dir / f).stat().st_size
                                            for f in held_for_readers)


def test_a_single_file_database_of_the_old_layout_is_adopted(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = duckdb.connect(str(db_path))
    run(conn, "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name VARCHAR NOT "
              "NULL, applied_at TIMESTAMP NOT NULL)")
    for version, name, ddl in MIGRATIONS[:5]:
        run(conn, ddl)
        run(conn, "INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)",
            [version, name])
    run(conn, "INSERT INTO daily_metrics (symbol, date, close, accumulation_score) "
              "VALUES ('AAA', DATE '2021-01-04', 10.5, 61.0), "
              "('AAA', DATE '2021-01-05', 11.0, 40.0)")
    run(conn, "INSERT INTO prices_daily (symbol, date, close, provider, fetched_at) "
              "VALUES ('AAA', DATE '2021-01-04', 10.5, 'csv', now()::TIMESTAMP)")
    conn.close()
    with open_writer(db_path):
        pass
    metrics = read_frame(db_path, "SELECT symbol, date, close, accumulation_score "
                                  "FROM daily_metrics ORDER BY date")
    assert metrics["close"].tolist() == [10.5, 11.0]
    assert metrics["accumulation_score"].tolist() == [61.0, 40.0]
    assert read_frame(db_path, "SELECT count(*) AS n FROM prices_daily")["n"].item() == 1
    assert_published_equals_master(db_path)


def test_a_copied_catalogue_without_its_store_is_refused(db_path: Path,
                                                          tmp_path: Path) -> None:
    with open_writer(db_path) as writer:
        _ingest_days(writer, sessions_between("2021-03-01", "2021-03-05"), 3)
    lonely = tmp_path / "elsewhere" / "copy.duckdb"
    lonely.parent.mkdir()
    lonely.write_bytes(db_path.read_bytes())
    from darkpool_analysis.errors import StoreError

    with pytest.raises(StoreError, match="published catalogue"), open_writer(lonely):
        pass


@pytest.mark.slow
def test_hundred_one_session_updates_stay_within_1_5x_of_a_fresh_build(
        tmp_path: Path) -> None:
    days = sessions_between("2020-01-02", "2021-12-31")[:400]
    base, updates = days[:300], days[300:]
    n_symbols = 60
    db = tmp_path / "daily" / "darkpool.duckdb"
    settings = load_config(db_path=db)
    with open_writer(db, gc_grace_seconds=0.0) as writer:
        _ingest_days(writer, base, n_symbols)
        build_metrics(writer, settings)
    for k, day in enumerate(updates):
        with open_writer(db, gc_grace_seconds=0.0) as writer:  # one CLI run per session
            _ingest_days(writer, [day], n_symbols, seed=k + 2)
            settle_owed(writer, settings)
    fresh = tmp_path / "fresh" / "darkpool.duckdb"
    with open_writer(fresh, gc_grace_seconds=0.0) as writer:
        for k, day in enumerate(updates):
            _ingest_days(writer, [day], n_symbols, seed=k + 2)
        _ingest_days(writer, base, n_symbols)
        build_metrics(writer, load_config(db_path=fresh))
    query = "SELECT * FROM daily_metrics ORDER BY symbol, date"
    pd.testing.assert_frame_equal(read_frame(db, query), read_frame(fresh, query),
                                  check_exact=True)
    ratio = _disk_bytes(db) / _disk_bytes(fresh)
    assert ratio <= 1.5, f"{_disk_bytes(db):,} vs {_disk_bytes(fresh):,} bytes ({ratio:.2f}x)"


def _darkpool() -> str:
    return str(Path(sys.executable).with_name("darkpool"))


@pytest.mark.slow
def test_sigkill_during_a_build_leaves_the_last_generation_readable(tmp_path: Path) -> None:
    """Kill ``darkpool build`` at random moments: every published table stays readable
    meanwhile, and the next build gives the table an uninterrupted build gives."""
    days = sessions_between("2021-01-04", "2021-12-31")
    files = tmp_path / "files"
    write_cnms_files(files, days, 600, drop=0.1)
    db = tmp_path / "db" / "darkpool.duckdb"
    env = {**os.environ, "DARKPOOL_DB": str(db), "DARKPOOL_STORE_GC_GRACE_SECONDS": "0"}
    ingest = subprocess.run([_darkpool(), "ingest", "finra-short", "--from-dir", str(files),
                             "--start", str(days[0]), "--end", str(days[-1])],
                            env=env, capture_output=True, text=True, timeout=600)
    assert ingest.returncode == 0, ingest.stderr
    reference = read_frame(db, "SELECT * FROM daily_metrics ORDER BY symbol, date")
    started = time.monotonic()
    done = subprocess.run([_darkpool(), "build"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    duration = time.monotonic() - started
    rng = random.Random(5)
    for _ in range(4):
        proc = subprocess.Popen([_darkpool(), "build"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        conn = connect_readonly(db)
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
            for table in tables:
                conn.execute(f"SELECT count(*) FROM {table}").fetchall()
            assert conn.execute("SELECT count(*) FROM daily_metrics").fetchone()[0] == \
                len(reference)
        finally:
            conn.close()
    rerun = subprocess.run([_darkpool(), "build"], env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    pd.testing.assert_frame_equal(
        read_frame(db, "SELECT * FROM daily_metrics ORDER BY symbol, date"), reference,
        check_exact=True)
    assert_published_equals_master(db)


_NOTEBOOK = textwrap.dedent(
    """
    import os, sys, time
    import duckdb
    db, stop = sys.argv[1], sys.argv[2]
    conn = duckdb.connect(db)  # exactly the seed notebook's connect: read-write, held open
    reads, deadline = 0, time.monotonic() + 600
    while not os.path.exists(stop) and time.monotonic() < deadline:
        conn.execute("SELECT count(*) FROM daily_metrics").fetchone()
        reads += 1
        time.sleep(0.05)
    print(f"notebook done {reads}")
    """
)


@pytest.mark.slow
def test_a_notebook_connection_locks_nobody_out(tmp_path: Path) -> None:
    """A notebook holds ``duckdb.connect(DARKPOOL_DB)`` read-write while the sandbox, db info,
    an evaluation and an ingest with publication run: none of them meets a lock."""
    days = sessions_between("2021-01-04", "2021-06-30")
    files = tmp_path / "files"
    write_cnms_files(files, days[:-5], 40, drop=0.0)
    db = tmp_path / "db" / "darkpool.duckdb"
    env = {**os.environ, "DARKPOOL_DB": str(db)}
    first = subprocess.run([_darkpool(), "ingest", "finra-short", "--from-dir", str(files),
                            "--start", str(days[0]), "--end", str(days[-6])],
                           env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    script = tmp_path / "notebook.py"
    script.write_text(_NOTEBOOK)
    stop = tmp_path / "stop"
    notebook = subprocess.Popen([sys.executable, str(script), str(db), str(stop)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    write_cnms_files(files, days[-5:], 40, drop=0.0, seed=8)
    commands = [
        ["sandbox", "S0001", "--start", str(days[20]), "--end", str(days[-6]), "--out",
         str(tmp_path / "chart.png")],
        ["db", "info"],
        ["evaluate", "--universe", "all", "--start", str(days[0]), "--end", str(days[-6]),
         "--out", str(tmp_path / "eval")],
        ["ingest", "finra-short", "--from-dir", str(files), "--start", str(days[-5]),
         "--end", str(days[-1])],
        ["sandbox", "S0002", "--start", str(days[20]), "--end", str(days[-1]), "--out",
         str(tmp_path / "chart2.png")],
    ]
    try:
        for command in commands:
            result = subprocess.run([_darkpool(), *command], env=env, capture_output=True,
                                    text=True, timeout=600)
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            assert "lock" not in result.stderr.lower(), (command, result.stderr)
        assert notebook.poll() is None, "the notebook must still hold its connection"
    finally:
        stop.touch()
        out, err = notebook.communicate(timeout=120)
    assert notebook.returncode == 0, err
    assert "notebook done" in out
    latest = read_frame(db, "SELECT max(date) AS d FROM daily_metrics")["d"].item()
    assert pd.Timestamp(latest).date() == days[-1]


def test_db_info_shows_generations_and_db_compact_reclaims(db_path: Path) -> None:
    from typer.testing import CliRunner

    from darkpool_analysis.cli import app

    days = sessions_between("2021-01-04", "2021-12-31")
    with open_writer(db_path, publish_interval=0.0) as writer:  # default grace: files kept
        _ingest_days(writer, days[:60], 6)
        for k in range(60, 75):
            _ingest_days(writer, days[k:k + 1], 6, seed=k)
            writer.publish()
    runner = CliRunner()
    info = runner.invoke(app, ["db", "info"])
    assert info.exit_code == 0, info.output
    assert "storage" in info.output and "reclaimable" in info.output
    assert "Published segments" in info.output
    held = describe_storage(db_path)
    assert held is not None and held["reclaimable_bytes"] > 0  # older generations' files

    result = runner.invoke(app, ["db", "compact", "--full", "--now"])
    assert result.exit_code == 0, result.output
    after = describe_storage(db_path)
    assert after is not None
    assert after["data_bytes"] < held["data_bytes"]
    for table in after["tables"].itertuples():
        assert table.segments <= 1, table
    assert_published_equals_master(db_path)
