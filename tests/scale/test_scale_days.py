"""Per-session tasks on every executor: equal results, retries after a killed worker, a bad
day reported by name, reruns that write nothing, bounded-memory buckets, the real TAQ day."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.executor import make_executor
from darkpool_analysis.ingest.trades import (
    FAULT_KILL_ENV,
    DayTask,
    ingest_day_files,
    ingest_trades,
    run_day_task,
    task_paths,
)
from darkpool_analysis.sources.flatfiles import locate_day, taq_day_files
from darkpool_analysis.store import master_path_for, open_writer, read_frame
from scale.conftest import DAYS, END, START, lit_rows, run_ingest

runner = CliRunner()


def test_serial_run_stores_every_symbol_of_every_session(flat_root: Path,
                                                         tmp_path: Path) -> None:
    db = tmp_path / "serial.duckdb"
    summary = run_ingest(db, flat_root, work_dir=tmp_path / "work")
    rows = lit_rows(db)
    assert summary.counts.done == len(DAYS) and summary.counts.failed == 0
    assert sorted(set(rows["date"].dt.date)) == list(DAYS)
    assert rows.groupby("date")["symbol"].nunique().eq(40).all()
    assert (rows["source"] == "polygon-flat").all() and (rows["method"] == "lee_ready").all()
    assert summary.rows_written == len(rows) == 160
    # Trade counts agree with the files: lit, regular-hours, regular-condition trades only.
    assert rows[["buy_trades", "sell_trades", "unclassified_trades"]].to_numpy().sum() \
        == summary.counts.trades
    log = read_frame(db, "SELECT partition_key, outcome, message FROM ingest_log "
                         "ORDER BY partition_key")
    assert log["partition_key"].tolist() == [f"polygon-flat/{d}" for d in DAYS]
    assert (log["outcome"] == "ingested").all()
    assert log["message"].str.contains("off_exchange=").all()
    provenance = read_frame(db, "SELECT partition_key, sha256 FROM source_files")
    manifest = json.loads(task_paths_for(tmp_path / "work", DAYS[0])["manifest"].read_text())
    assert provenance.set_index("partition_key").loc[f"polygon-flat/{DAYS[0]}", "sha256"] \
        == manifest["key_sha256"]
    assert manifest["rule"] == "lee_ready" and manifest["inputs"]["quotes"]["sha256"]
    assert manifest["code_version"]["classify"] == "lit-1"


def task_paths_for(work: Path, day: dt.date) -> dict[str, Path]:
    base = work / "polygon-flat" / "lee_ready"
    return {"result": base / f"{day}.parquet", "manifest": base / f"{day}.manifest.json"}


def test_local_pool_equals_serial(flat_root: Path, tmp_path: Path) -> None:
    run_ingest(tmp_path / "serial.duckdb", flat_root, work_dir=tmp_path / "w1")
    summary = run_ingest(tmp_path / "local.duckdb", flat_root, "local:2",
                         work_dir=tmp_path / "w2", batch_days=3)
    assert summary.counts.done == len(DAYS)
    pd.testing.assert_frame_equal(lit_rows(tmp_path / "local.duckdb"),
                                  lit_rows(tmp_path / "serial.duckdb"))


@pytest.mark.slow
def test_dask_local_equals_serial(flat_root: Path, tmp_path: Path) -> None:
    run_ingest(tmp_path / "serial.duckdb", flat_root, work_dir=tmp_path / "w1")
    summary = run_ingest(tmp_path / "dask.duckdb", flat_root, "dask-local:2",
                         work_dir=tmp_path / "w2")
    assert summary.counts.done == len(DAYS)
    pd.testing.assert_frame_equal(lit_rows(tmp_path / "dask.duckdb"),
                                  lit_rows(tmp_path / "serial.duckdb"))


@pytest.mark.parametrize("spec", ["local:2", pytest.param("dask-local:2",
                                                          marks=pytest.mark.slow)])
def test_a_worker_killed_mid_task_is_retried_and_the_result_equals_serial(
        flat_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    run_ingest(tmp_path / "serial.duckdb", flat_root, work_dir=tmp_path / "w1")
    victim = DAYS[1]
    monkeypatch.setenv(FAULT_KILL_ENV, victim.isoformat())
    work = tmp_path / "w2"
    summary = run_ingest(tmp_path / "faulty.duckdb", flat_root, spec, work_dir=work)
    assert (work / f".fault-killed-{victim}").exists()  # the first attempt really died
    assert summary.counts.failed == 0 and summary.counts.done == len(DAYS)
    assert summary.counts.retried >= 1
    assert victim in [r.day for r in summary.results if r.retried]
    assert not list(work.rglob("*.running")) and not list(work.rglob("*.tmp"))
    pd.testing.assert_frame_equal(lit_rows(tmp_path / "faulty.duckdb"),
                                  lit_rows(tmp_path / "serial.duckdb"))


def _break_day(root: Path, day: dt.date) -> Path:
    files = locate_day("polygon-flat", str(root), day)
    assert files is not None
    path = Path(files.trades)
    rows = list(csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))
    rows[5][rows[0].index("price")] = "not-a-price"
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    path.write_bytes(gzip.compress(text.getvalue().encode()))
    return path


@pytest.mark.parametrize("spec", ["serial", "local:2"])
def test_a_bad_day_file_is_reported_by_name_and_nothing_of_it_is_stored(
        flat_root: Path, tmp_path: Path, spec: str) -> None:
    bad_day = DAYS[2]
    bad_file = _break_day(flat_root, bad_day)
    db = tmp_path / "db.duckdb"
    summary = run_ingest(db, flat_root, spec, work_dir=tmp_path / "work")
    assert list(summary.failures) == [bad_day]
    assert str(bad_file) in summary.failures[bad_day]
    assert "not-a-price" in summary.failures[bad_day]
    rows = lit_rows(db)
    assert sorted(set(rows["date"].dt.date)) == [d for d in DAYS if d != bad_day]
    log = read_frame(db, "SELECT outcome, message FROM ingest_log WHERE partition_key = ?",
                     [f"polygon-flat/{bad_day}"])
    assert log["outcome"].tolist() == ["failed"] and "not-a-price" in log["message"][0]
    assert not task_paths_for(tmp_path / "work", bad_day)["result"].exists()


def test_cli_reports_the_failed_session_and_exits_1(flat_root: Path, db_path: Path,
                                                    tmp_path: Path) -> None:
    bad_file = _break_day(flat_root, DAYS[0])
    result = runner.invoke(app, ["ingest", "trades", "--source", "polygon-flat", "--path",
                                 str(flat_root), "--start", str(START), "--end", str(END),
                                 "--executor", "serial", "--work-dir", str(tmp_path / "w"),
                                 "--no-build"])
    assert result.exit_code == 1
    assert f"failed {DAYS[0]}" in result.output and bad_file.name in result.output
    assert len(lit_rows(db_path)) == 3 * 40


def test_rerun_skips_every_finished_day_and_writes_nothing(flat_root: Path,
                                                           tmp_path: Path) -> None:
    db, work = tmp_path / "db.duckdb", tmp_path / "work"
    run_ingest(db, flat_root, work_dir=work)
    before_rows = read_frame(db, "SELECT * FROM lit_direction_daily ORDER BY date, symbol")
    before_log = read_frame(db, "SELECT * FROM ingest_log ORDER BY id")
    before_sources = read_frame(db, "SELECT * FROM source_files ORDER BY partition_key")
    results = sorted(work.rglob("*.parquet")) + sorted(work.rglob("*.manifest.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    master = master_path_for(db)
    master_stamp = master.stat().st_mtime_ns
    summary = run_ingest(db, flat_root, "local:2", work_dir=work)
    assert summary.counts.skipped == len(DAYS) and summary.counts.done == 0
    assert summary.rows_written == 0 and summary.unchanged == list(DAYS)
    assert {p: p.stat().st_mtime_ns for p in results} == stamps  # no result rewritten
    assert master.stat().st_mtime_ns == master_stamp  # no transaction at all
    pd.testing.assert_frame_equal(
        read_frame(db, "SELECT * FROM lit_direction_daily ORDER BY date, symbol"), before_rows)
    pd.testing.assert_frame_equal(read_frame(db, "SELECT * FROM ingest_log ORDER BY id"),
                                  before_log)
    pd.testing.assert_frame_equal(
        read_frame(db, "SELECT * FROM source_files ORDER BY partition_key"), before_sources)


def test_a_changed_input_or_rule_recomputes_only_what_changed(flat_root: Path,
                                                              tmp_path: Path) -> None:
    db, work = tmp_path / "db.duckdb", tmp_path / "work"
    run_ingest(db, flat_root, work_dir=work)
    changed = DAYS[3]
    files = locate_day("polygon-flat", str(flat_root), changed)
    assert files is not None and files.quotes is not None
    quotes = Path(files.quotes)
    lines = gzip.decompress(quotes.read_bytes()).decode().splitlines()
    quotes.write_bytes(gzip.compress(("\n".join(lines[:2000]) + "\n").encode()))
    summary = run_ingest(db, flat_root, work_dir=work)
    assert summary.days_written == [changed] and summary.counts.skipped == len(DAYS) - 1
    emo = run_ingest(db, flat_root, work_dir=work, method="emo")
    assert emo.counts.done == len(DAYS) and emo.days_written == list(DAYS)
    rows = lit_rows(db)
    assert rows["method"].str.startswith("emo").all()
    # The truncated quotes file left later tickers of that day without quotes: tick test.
    fallback = rows.loc[rows["method"] == "emo->tick", "date"].dt.date
    assert len(fallback) and set(fallback) == {changed}


def test_symbol_buckets_give_the_same_rows_as_one_read(flat_root: Path,
                                                       tmp_path: Path) -> None:
    """A day read in ~8 hash buckets of symbols (bounded memory) equals the whole read."""
    run_ingest(tmp_path / "whole.duckdb", flat_root, work_dir=tmp_path / "w1")
    summary = run_ingest(tmp_path / "parts.duckdb", flat_root, work_dir=tmp_path / "w2",
                         chunk_mb=0.02)
    assert min(r.buckets for r in summary.results) >= 4
    pd.testing.assert_frame_equal(lit_rows(tmp_path / "parts.duckdb"),
                                  lit_rows(tmp_path / "whole.duckdb"))


def test_tickers_restrict_the_symbols(flat_root: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    run_ingest(db, flat_root, work_dir=tmp_path / "w", tickers=["B", "a", "ZZZZ"])
    rows = lit_rows(db)
    assert sorted(set(rows["symbol"])) == ["A", "B"] and len(rows) == 2 * len(DAYS)


def test_sessions_without_files_are_reported(flat_root: Path, tmp_path: Path) -> None:
    gone = locate_day("polygon-flat", str(flat_root), DAYS[1])
    assert gone is not None
    Path(gone.trades).unlink()
    db = tmp_path / "db.duckdb"
    summary = run_ingest(db, flat_root, work_dir=tmp_path / "w")
    assert summary.missing == [DAYS[1]] and summary.counts.done == 3
    log = read_frame(db, "SELECT outcome FROM ingest_log WHERE partition_key = ?",
                     [f"polygon-flat/{DAYS[1]}"])
    assert log["outcome"].tolist() == ["not_published"]


def test_a_task_killed_before_its_manifest_leaves_no_result_to_reuse(
        flat_root: Path, tmp_path: Path) -> None:
    """Results are renamed into place before their manifest: a result without a matching
    manifest (or with a damaged file) is recomputed, never reused."""
    settings = load_config()
    files = locate_day("polygon-flat", str(flat_root), DAYS[0])
    assert files is not None
    task = DayTask(source="polygon-flat", files=files, method="lee_ready",
                   work_dir=str(tmp_path / "w"), settings=settings)
    first = run_day_task(task)
    assert first.status == "done"
    paths = task_paths(task)
    paths["result"].write_bytes(paths["result"].read_bytes()[:-10])  # damaged result
    again = run_day_task(task)
    assert again.status == "done"  # recomputed, not "skipped"
    assert again.table is not None and first.table is not None
    assert again.table.drop(["fetched_at"]).equals(first.table.drop(["fetched_at"]))
    assert run_day_task(task).status == "skipped"


def test_day_files_behind_a_url_are_read_through_fsspec(flat_root: Path,
                                                        tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    run_ingest(tmp_path / "local.duckdb", flat_root, work_dir=tmp_path / "w1")
    settings = load_config()
    with open_writer(tmp_path / "url.duckdb") as writer:
        summary = ingest_day_files(writer, settings, source="polygon-flat",
                                   path=f"file://{flat_root}", start=START, end=END,
                                   work_dir=tmp_path / "w2")
    assert summary.counts.done == len(DAYS)
    pd.testing.assert_frame_equal(lit_rows(tmp_path / "url.duckdb"),
                                  lit_rows(tmp_path / "local.duckdb"))


def test_taq_layouts_are_found(tmp_path: Path) -> None:
    day = dt.date(2019, 5, 8)
    (tmp_path / "a" / "20190508").mkdir(parents=True)
    for name in ("taq_trades.csv.gz", "taq_quotes.csv.gz"):
        (tmp_path / "a" / "20190508" / name).touch()
    found = taq_day_files(str(tmp_path / "a"), day)
    assert found is not None and found.trades.endswith("20190508/taq_trades.csv.gz")
    (tmp_path / "b").mkdir()
    for name in ("ctm_20190508.csv.gz", "cqm_20190508.csv.gz", "ctm_20190509.csv.gz"):
        (tmp_path / "b" / name).touch()
    found = taq_day_files(str(tmp_path / "b"), day)
    assert found is not None and found.trades.endswith("ctm_20190508.csv.gz")
    assert found.quotes is not None and found.quotes.endswith("cqm_20190508.csv.gz")
    assert taq_day_files(str(tmp_path / "b"), dt.date(2019, 5, 10)) is None


@pytest.mark.realdata
@pytest.mark.parametrize("spec", ["serial", "local:2",
                                  pytest.param("dask-local:2", marks=pytest.mark.slow)])
def test_real_taq_day_on_every_executor_equals_the_per_ticker_reader(
        real_data: Path, tmp_path: Path, spec: str) -> None:
    folder = real_data / "taq" / "bj-liang_ETR_2019-05-08"
    day = dt.date(2019, 5, 8)
    settings = load_config()
    with open_writer(tmp_path / "reference.duckdb") as writer:
        ingest_trades(writer, settings, source="taq", start=day, end=day, tickers=["ETR"],
                      path=folder, build=False)
    local = tmp_path / "taq"  # a copy: the real-data folder is read-only
    shutil.copytree(folder, local)
    with open_writer(tmp_path / "days.duckdb") as writer, make_executor(spec) as executor:
        summary = ingest_day_files(writer, settings, source="taq", path=local, start=day,
                                   end=day, executor=executor, work_dir=tmp_path / "w")
    assert summary.counts.done == 1 and not summary.failures
    got = read_frame(tmp_path / "days.duckdb", "SELECT * EXCLUDE (fetched_at) "
                                              "FROM lit_direction_daily")
    expected = read_frame(tmp_path / "reference.duckdb", "SELECT * EXCLUDE (fetched_at) "
                                                         "FROM lit_direction_daily")
    pd.testing.assert_frame_equal(got, expected)
    assert int(got[["buy_trades", "sell_trades", "unclassified_trades"]].sum(axis=1)[0]) \
        == 13550


def test_whole_market_reader_equals_the_per_ticker_flatfile_reader(flat_root: Path,
                                                                   tmp_path: Path) -> None:
    """The day-file reader (lookups per distinct ticker and condition list) keeps and signs
    exactly the trades the per-ticker ``--source flatfile`` reader does."""
    settings = load_config()
    tickers = ["A", "B", "K", "AD"]
    with open_writer(tmp_path / "legacy.duckdb") as writer:
        ingest_trades(writer, settings, source="flatfile", start=START, end=END,
                      tickers=tickers, path=flat_root, build=False)
    run_ingest(tmp_path / "days.duckdb", flat_root, work_dir=tmp_path / "w", tickers=tickers)
    got = lit_rows(tmp_path / "days.duckdb").drop(columns=["source"])
    expected = lit_rows(tmp_path / "legacy.duckdb").drop(columns=["source"])
    assert len(got) == len(tickers) * len(DAYS)
    pd.testing.assert_frame_equal(got, expected)
