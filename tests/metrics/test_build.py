"""``build_metrics`` / ``darkpool build``: determinism, partial rebuilds, atomicity, CLI,
and the point-in-time property of the metric computation."""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dm_fixtures import write_prices, write_short
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from darkpool_analysis import build as build_module
from darkpool_analysis.build import build_metrics
from darkpool_analysis.cli import app
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.metrics import (
    assemble_grid,
    assemble_grid_arrays,
    compute_daily_metrics,
    tile_order,
)
from darkpool_analysis.store import open_writer, store_dir_for
from darkpool_analysis.store import segments as segments_module
from darkpool_analysis.store.schema import DAILY_METRICS_DERIVED
from darkpool_analysis.store.segments import SegmentFileWriter
from darkpool_analysis.trading_calendar import sessions_index

SYMBOLS = ["AAA", "BBB", "BRK.B", "CCC", "DDD"]


def _synthetic(seed: int = 7, n_sessions: int = 260) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random CNMS rows and bars with gaps, staggered listings and a trend."""
    rng = np.random.default_rng(seed)
    days = sessions_index("2019-01-02", "2021-12-31")[:n_sessions]
    short_rows, price_rows = [], []
    for k, symbol in enumerate(SYMBOLS):
        sym_days = days[k * 15: n_sessions - k * 7]
        n = len(sym_days)
        total = rng.integers(1_000, 1_000_000, n).astype(float) * (1 + k * np.arange(n) / 50)
        short = np.floor(total * rng.uniform(0.2, 0.8, n))
        keep = rng.random(n) > 0.1
        short_rows.append(pd.DataFrame({
            "trade_date": sym_days[keep], "facility": "CNMS",
            "symbol": symbol.replace(".", "/"), "short_volume": short[keep],
            "short_exempt_volume": 0.0, "total_volume": total[keep]}))
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        bars = rng.random(n) > 0.05
        price_rows.append(pd.DataFrame({
            "symbol": symbol, "date": sym_days[bars], "open": close[bars],
            "high": close[bars] * 1.01, "low": close[bars] * 0.99, "close": close[bars],
            "volume": total[bars] * 3, "vwap": close[bars]}))
    return pd.concat(short_rows, ignore_index=True), pd.concat(price_rows, ignore_index=True)


def _table(db: Path) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT * FROM daily_metrics ORDER BY symbol, date").df()


def _load(db: Path) -> None:
    short, prices = _synthetic()
    with open_writer(db) as writer:
        write_short(writer, short)
        write_prices(writer, prices)


def test_rebuild_is_deterministic(db_path: Path) -> None:
    _load(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        first = build_metrics(writer, cfg)
    once = _table(db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg)
    twice = _table(db_path)
    assert first.rows_written == len(once) > 1000
    assert set(once["symbol"]) == set(SYMBOLS)
    pd.testing.assert_frame_equal(once, twice, check_exact=True)
    assert once["short_buy_sell_ratio_z"].notna().mean() > 0.7


def test_builds_in_halves_equal_one_full_build(db_path: Path) -> None:
    _load(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg)
    full = _table(db_path)

    with open_writer(db_path) as writer:
        writer.replace_metrics(None)  # empty the table
        # by date: two ranges, the split in the middle of a rolling window
        build_metrics(writer, cfg, end="2019-07-17")
        build_metrics(writer, cfg, start="2019-07-18")
    pd.testing.assert_frame_equal(_table(db_path), full, check_exact=True)

    with open_writer(db_path) as writer:
        writer.replace_metrics(None)  # empty the table
        # by symbol, spelled as a feed would (BRK/B, brk-b)
        build_metrics(writer, cfg, symbols=["AAA", "BRK/B"])
        build_metrics(writer, cfg, symbols=["bbb", "CCC", "DDD"])
    pd.testing.assert_frame_equal(_table(db_path), full, check_exact=True)


def test_partial_rebuild_touches_only_its_rows(db_path: Path) -> None:
    _load(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg)
    before = _table(db_path)
    with open_writer(db_path) as writer:
        # New raw data for AAA late in the range; rebuild only BBB in a window.
        with writer.transaction() as tx:
            tx.execute("UPDATE finra_short_daily_raw SET short_volume = short_volume / 2 "
                       "WHERE symbol_norm IN ('AAA', 'BBB')")
        result = build_metrics(writer, cfg, symbols=["BBB"], start="2019-06-03",
                               end="2019-06-28")
    after = _table(db_path)
    assert result.rows_written == 20
    changed = ~((before == after) | (before.isna() & after.isna())).all(axis=1)
    rows = after.loc[changed, ["symbol", "date"]]
    assert set(rows["symbol"]) == {"BBB"}
    assert rows["date"].min() >= pd.Timestamp("2019-06-03")
    assert rows["date"].max() <= pd.Timestamp("2019-06-28")
    assert len(rows) >= 15  # every BBB row with short data in the range (a few have none)


def test_failed_build_leaves_the_table_unchanged(db_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _load(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg)
    before = _table(db_path)

    def broken(*_args: object) -> pd.DataFrame:
        raise RuntimeError("otc source exploded")

    monkeypatch.setattr(build_module, "_otc_block", broken)
    with open_writer(db_path) as writer, pytest.raises(RuntimeError, match="exploded"):
        build_metrics(writer, cfg, rows_per_batch=200)
    pd.testing.assert_frame_equal(_table(db_path), before)


def _built(db: Path) -> tuple[Settings, pd.DataFrame, Path, list[Path]]:
    """A loaded and built database: its settings, table, segment folder and files."""
    _load(db)
    cfg = load_config(db_path=db)
    with open_writer(db) as writer:
        build_metrics(writer, cfg)
    data_dir = store_dir_for(db) / "data" / "daily_metrics"
    return cfg, _table(db), data_dir, sorted(data_dir.iterdir())


def test_failed_insert_in_the_worker_thread_leaves_the_table_unchanged(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, before, data_dir, files_before = _built(db_path)
    real_write = build_module._write_part
    calls: list[int] = []

    def write_then_fail(files: SegmentFileWriter, table: pa.Table, part: int) -> float:
        calls.append(table.num_rows)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(files, table, part)

    monkeypatch.setattr(build_module, "_write_part", write_then_fail)
    with open_writer(db_path) as writer:
        with pytest.raises(OSError, match="disk full"):
            build_metrics(writer, cfg, rows_per_batch=150)
        # The failed build's half-written files are gone; nothing refers to them.
        assert sorted(data_dir.iterdir()) == files_before
    assert len(calls) == 3  # two batches were written before the failure, then discarded
    pd.testing.assert_frame_equal(_table(db_path), before)


def test_failed_flush_to_disk_leaves_the_table_unchanged(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk error while the segment's files are flushed fails the build like any write."""
    cfg, before, data_dir, files_before = _built(db_path)

    def failing(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(segments_module, "DIRECT_WRITES", False)  # buffered, flushed files
    monkeypatch.setattr(segments_module.os, "fdatasync", failing)
    with open_writer(db_path) as writer:
        with pytest.raises(OSError, match="No space"):
            build_metrics(writer, cfg, rows_per_batch=150)
        assert sorted(data_dir.iterdir()) == files_before
    pd.testing.assert_frame_equal(_table(db_path), before)


def test_failed_direct_write_leaves_the_table_unchanged(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device error on an O_DIRECT write of a segment file fails the build like any
    write: no file left, the table as it was."""
    cfg, before, data_dir, files_before = _built(db_path)
    real_write = os.write
    failed: list[int] = []

    def failing(fd: int, data: object) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            failed.append(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)  # type: ignore[arg-type]

    monkeypatch.setattr(segments_module, "DIRECT_BLOCK", 8192)
    monkeypatch.setattr(segments_module.os, "write", failing)
    with open_writer(db_path) as writer:
        raised: OSError | None = None
        try:
            build_metrics(writer, cfg, rows_per_batch=150)
        except OSError as exc:
            raised = exc
        if not failed:
            pytest.skip("the file system refuses O_DIRECT: segment files are buffered")
        assert raised is not None and "No space" in str(raised)
        assert sorted(data_dir.iterdir()) == files_before
    pd.testing.assert_frame_equal(_table(db_path), before)


def test_batches_give_the_same_table(db_path: Path) -> None:
    _load(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg)
    one_batch = _table(db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg, rows_per_batch=100)
    pd.testing.assert_frame_equal(_table(db_path), one_batch, check_exact=True)


@pytest.mark.parametrize("rows_per_read", [1, 250, 450])
def test_read_groups_give_the_same_table(db_path: Path, rows_per_read: int) -> None:
    """Batches computed as slices of a read group's grid (one raw-table pass per group: one
    per batch, groups of a few batches, one group of all) change no row, lit rows included."""
    _load(db_path)
    lit_days = sessions_index("2019-03-01", "2019-06-28")
    lit = pd.concat([pd.DataFrame({
        "symbol": symbol, "date": lit_days.date,
        "lit_buy_volume": np.arange(len(lit_days), dtype=float) * (k + 1) + 100.0,
        "lit_sell_volume": np.full(len(lit_days), 250.0 + k), "method": method,
        "coverage_pct": 97.5, "source": "test", "inference_version": "t",
        "fetched_at": pd.Timestamp("2024-01-01")})
        for k, (symbol, method) in enumerate([("AAA", "lee_ready"), ("BBB", "quote")])])
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        writer.replace_partition("lit_direction_daily", lit, where="true", params=[])
        build_metrics(writer, cfg, rows_per_batch=10_000_000, rows_per_read=10_000_000)
    one_pass = _table(db_path)
    assert one_pass["has_lit"].sum() == 2 * len(lit_days)
    assert set(one_pass["lit_method"].dropna()) == {"lee_ready", "quote"}
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg, rows_per_batch=100, rows_per_read=rows_per_read)
    pd.testing.assert_frame_equal(_table(db_path), one_pass, check_exact=True)


def test_grid_slice_equals_the_grid_of_those_symbols_alone() -> None:
    short, prices = _synthetic()
    short = short.rename(columns={"trade_date": "date"}).assign(
        symbol=lambda f: f["symbol"].str.replace("/", "."), short_source="CNMS")
    whole = assemble_grid_arrays(short, prices)
    for first, stop in [(0, 1), (1, 3), (2, 5)]:
        names = SYMBOLS[first:stop]
        alone = assemble_grid_arrays(short[short["symbol"].isin(names)],
                                     prices[prices["symbol"].isin(names)])
        part = whole.symbols(first, stop)
        assert list(part.categories) == list(alone.categories) == names
        for name in ("codes", "days", "session_number", "group_start"):
            np.testing.assert_array_equal(getattr(part, name), getattr(alone, name))
        for name, values in alone.values.items():
            np.testing.assert_array_equal(part.values[name], values)
        for name, flag in alone.flags.items():
            np.testing.assert_array_equal(part.flags[name], flag)
        np.testing.assert_array_equal(part.labels["short_source"].codes,
                                      alone.labels["short_source"].codes)


def test_read_groups_cover_every_batch_once() -> None:
    batches = build_module._batches(np.full(10, 100), 200)
    assert len(batches) == 5
    for rows_per_read, n_groups in [(1, 5), (450, 3), (500, 2), (10_000, 1)]:
        groups = build_module._read_groups(batches, np.full(10, 100), rows_per_read)
        assert len(groups) == n_groups
        assert groups[0].start == 0 and groups[-1].stop == 10
        assert all(a.stop == b.start for a, b in itertools.pairwise(groups))
        edges = {b.start for b in batches} | {batches[-1].stop}
        assert {g.start for g in groups} <= edges and {g.stop for g in groups} <= edges


def test_batches_written_in_two_halves_give_the_same_table(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two writing threads (each batch split between two files) change no row."""
    _load(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg)
    whole = _table(db_path)
    monkeypatch.setattr(build_module, "WRITE_SPLIT_ROWS", 2)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg, rows_per_batch=100)
        files = writer.segments("daily_metrics")["daily_metrics"][-1].files
    assert len(files) == 2
    pd.testing.assert_frame_equal(_table(db_path), whole, check_exact=True)


def test_tile_order_groups_rows_by_tile_keeping_symbol_then_date() -> None:
    # two symbols x five days, sorted by symbol then date; tiles of 3 days
    days = np.array([0, 1, 2, 3, 4, 1, 2, 3, 4, 5])
    symbols = np.array(list("AAAAABBBBB"))
    order = tile_order(days, 3)
    assert list(zip(symbols[order], days[order], strict=True)) == [
        ("A", 0), ("A", 1), ("A", 2), ("B", 1), ("B", 2),
        ("A", 3), ("A", 4), ("B", 3), ("B", 4), ("B", 5)]


def test_segment_row_groups_cover_a_range_of_symbols_and_of_dates(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each written row group spans at most two adjacent tiles of dates (a plain
    symbol-major file spans the whole history in every group), and the table is the same."""
    _load(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg)
    whole = _table(db_path)
    monkeypatch.setattr(build_module, "TILE_DAYS", 61)
    monkeypatch.setattr(segments_module, "ROW_GROUP_ROWS", 150)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg)
        files = writer.segments("daily_metrics")["daily_metrics"][-1].files
    pd.testing.assert_frame_equal(_table(db_path), whole, check_exact=True)
    spans = []
    for name in files:
        meta = pq.ParquetFile(store_dir_for(db_path) / name).metadata
        date = meta.schema.to_arrow_schema().get_field_index("date")
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(date).statistics
            first, last = (np.datetime64(v, "D").astype(np.int64) // 61
                           for v in (stats.min, stats.max))
            spans.append(int(last - first))
    assert len(spans) > 5
    assert max(spans) <= 1


def test_segment_files_store_no_derived_column_and_compaction_keeps_the_table(
        db_path: Path) -> None:
    """Neither the build's files nor a compaction's rewrite store the columns the view
    derives, and the compacted table is the same, bit for bit."""
    _load(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg)
        build_metrics(writer, cfg, symbols=["BBB"])
    built = _table(db_path)
    assert built["short_sell_volume"].notna().sum() > 500
    with open_writer(db_path) as writer:
        written = [f for s in writer.segments("daily_metrics")["daily_metrics"]
                   for f in s.files]
        assert writer.compact(full=True)
        compacted = [f for s in writer.segments("daily_metrics")["daily_metrics"]
                     for f in s.files]
    assert set(written).isdisjoint(compacted)
    for name in written + compacted:
        stored = pq.read_schema(store_dir_for(db_path) / name).names
        assert not set(DAILY_METRICS_DERIVED) & set(stored), name
        assert "short_volume" in stored and "accumulation_score" in stored
    pd.testing.assert_frame_equal(_table(db_path), built, check_exact=True)


def test_cli_build(db_path: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(app, ["build"])
    assert empty.exit_code == 1
    assert "no short-sale or price data" in empty.output

    _load(db_path)
    # Loading raw data made a full rebuild owed: any build finishes it (issue 10 item 1).
    result = runner.invoke(app, ["build", "--tickers", "AAA,BRK-B", "--start", "2019-03-01",
                                 "--end", "2019-03-29"])
    assert result.exit_code == 0, result.output
    assert "wrote 42 rows for 2 symbols" in result.output  # 21 sessions in March 2019
    assert "also finished the rebuild still owed" in result.output
    full = _table(db_path)
    assert sorted(set(full["symbol"])) == sorted(SYMBOLS)

    result = runner.invoke(app, ["build", "--tickers", "AAA,BRK-B", "--start", "2019-03-01",
                                 "--end", "2019-03-29"])
    assert result.exit_code == 0, result.output
    assert "wrote 42 rows for 2 symbols" in result.output
    assert "still owed" not in result.output
    pd.testing.assert_frame_equal(_table(db_path), full, check_exact=True)

    bad = runner.invoke(app, ["build", "--start", "2019-13-01"])
    assert bad.exit_code != 0
    assert "--start" in bad.output


# --- point in time --------------------------------------------------------------------------
def _frames(values: list[tuple[float | None, float | None, float | None]],
            days: pd.DatetimeIndex) -> tuple[pd.DataFrame, pd.DataFrame]:
    short = [(d, b, t) for d, (b, t, _) in zip(days, values, strict=True)
             if b is not None and t is not None]
    short_frame = pd.DataFrame(short, columns=["date", "short_volume", "total_volume"]).assign(
        symbol="X", short_exempt_volume=0.0, short_source="CNMS")
    prices = [(d, c) for d, (_, _, c) in zip(days, values, strict=True) if c is not None]
    price_frame = pd.DataFrame(prices, columns=["date", "close"]).assign(
        symbol="X", open=lambda f: f["close"], high=lambda f: f["close"] * 1.02,
        low=lambda f: f["close"] * 0.98, vwap=lambda f: f["close"], volume=1e6)
    return short_frame, price_frame


volumes = st.one_of(st.none(), st.sampled_from([0.0, 1.0, 5.0, 100.0]),
                    st.floats(1.0, 1e7, allow_nan=False))
day_values = st.tuples(volumes, volumes, st.one_of(st.none(), st.floats(1.0, 500.0)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(day_values, min_size=2, max_size=90), cut=st.integers(1, 89))
def test_truncating_after_t_changes_nothing_at_t(values: list, cut: int) -> None:
    days = sessions_index("2020-01-02", "2020-12-31")[:len(values)]
    cut = min(cut, len(values) - 1)
    cfg = load_config(short_z_window=5, return_z_window=4, zscore_min_periods=2)
    short, prices = _frames(values, days)
    if short.empty and prices.empty:
        return
    full = compute_daily_metrics(assemble_grid(short, prices), cfg)
    t = days[cut - 1]
    cut_short, cut_prices = short[short["date"] <= t], prices[prices["date"] <= t]
    if cut_short.empty and cut_prices.empty:
        return
    part = compute_daily_metrics(assemble_grid(cut_short, cut_prices), cfg)
    expected = full[full["date"] <= part["date"].max()].reset_index(drop=True)
    pd.testing.assert_frame_equal(part.reset_index(drop=True), expected,
                                  check_categorical=False, check_exact=True)


def test_no_duplicate_symbol_date_after_full_and_partial_builds(db_path: Path) -> None:
    # daily_metrics has no PRIMARY KEY (it cost ~30% of the build): uniqueness holds by
    # construction (delete the replaced range, insert one row per grid session).
    _load(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        build_metrics(writer, cfg, rows_per_batch=300)
        build_metrics(writer, cfg, symbols=["BBB", "BRK-B"], start="2019-05-01",
                      end="2019-08-30", rows_per_batch=50)
        build_metrics(writer, cfg, start="2019-10-01")
        dupes = writer.conn.execute("SELECT symbol, date, count(*) FROM daily_metrics "
                                    "GROUP BY ALL HAVING count(*) > 1").fetchall()
        rows = writer.conn.execute("SELECT count(*) FROM daily_metrics").fetchone()
        # Missing values are stored as NULL (the seed's SQL filters on IS NULL), never NaN.
        nans = writer.conn.execute(
            "SELECT count(*) FILTER (WHERE isnan(short_ratio_z) OR isnan(return_z) "
            "OR isnan(lit_flow_imbalance) OR isnan(short_buy_sell_ratio)), "
            "count(*) FILTER (WHERE short_ratio_z IS NULL) FROM daily_metrics").fetchone()
    assert nans is not None and nans[0] == 0 and nans[1] > 0
    assert dupes == []
    # One row per session from each symbol's first to last appearance (short or price).
    short, prices = _synthetic()
    seen = pd.concat([
        pd.DataFrame({"symbol": short["symbol"].str.replace("/", "."),
                      "date": pd.to_datetime(short["trade_date"])}),
        pd.DataFrame({"symbol": prices["symbol"], "date": pd.to_datetime(prices["date"])})])
    spans = seen.groupby("symbol")["date"].agg(["min", "max"])
    expected = sum(len(sessions_index(lo, hi)) for lo, hi in spans.itertuples(index=False))
    assert rows is not None and rows[0] == expected


def test_build_reports_its_time_breakdown(db_path: Path) -> None:
    _load(db_path)
    with open_writer(db_path) as writer:
        result = build_metrics(writer, load_config(db_path=db_path), rows_per_batch=400)
    parts = (result.read_seconds, result.compute_seconds, result.write_seconds)
    assert all(part > 0 for part in parts)
    assert result.read_seconds + result.compute_seconds <= result.seconds


# --- OTC weekly block wired into the build ----------------------------------------------------
OTC_WEEKS = pd.date_range("2024-01-01", "2024-04-08", freq="W-MON")


def _load_otc_case(db: Path) -> pd.DataFrame:
    """AAA (with OTC weekly rows, T1, published week + 21 days) and BBB (none); returns the
    daily bars so the test can compute participation rates on its own."""
    rng = np.random.default_rng(3)
    days = sessions_index("2024-01-02", "2024-05-31")
    n = len(days)
    short_rows, price_rows = [], []
    for symbol in ("AAA", "BBB"):
        total = rng.integers(10_000, 100_000, n).astype(float)
        short_rows.append(pd.DataFrame({
            "trade_date": days, "facility": "CNMS", "symbol": symbol,
            "short_volume": np.floor(total * rng.uniform(0.2, 0.8, n)),
            "short_exempt_volume": 0.0, "total_volume": total}))
        close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        price_rows.append(pd.DataFrame({
            "symbol": symbol, "date": days, "open": close, "high": close * 1.01,
            "low": close * 0.99, "close": close, "vwap": close,
            "volume": rng.integers(1_000_000, 2_000_000, n).astype(float)}))
    prices = pd.concat(price_rows, ignore_index=True)
    ats = rng.integers(50_000, 400_000, len(OTC_WEEKS)).astype(float)
    weekly = pd.concat([pd.DataFrame({
        "week_start_date": OTC_WEEKS.date, "tier": "T1", "summary_type": kind,
        "symbol": "AAA", "symbol_norm": "AAA", "share_quantity": qty,
        "initial_published_date": pd.NaT,
        "last_update_date": (OTC_WEEKS + pd.Timedelta(days=21)).date,
        "source": "file", "fetched_at": pd.Timestamp("2024-06-01")})
        for kind, qty in (("ATS_W_SMBL", ats), ("OTC_W_SMBL", ats / 2))], ignore_index=True)
    with open_writer(db) as writer:
        write_short(writer, pd.concat(short_rows, ignore_index=True))
        write_prices(writer, prices)
        writer.replace_partition("finra_otc_weekly_raw", weekly, where="true", params=[])
    return prices


def _row_of(table: pd.DataFrame, symbol: str, day: str) -> pd.Series:
    hit = table[(table["symbol"] == symbol) & (table["date"] == pd.Timestamp(day))]
    assert len(hit) == 1
    return hit.iloc[0]


def test_build_uses_otc_week_from_its_publication_day_not_a_day_earlier(db_path: Path) -> None:
    prices = _load_otc_case(db_path)
    cfg = load_config(db_path=db_path)
    with open_writer(db_path) as writer:
        result = build_metrics(writer, cfg)
    assert result.otc_alignment == "published"
    table = _table(db_path)

    # First OTC week (Mon 2024-01-01, T1) is published Mon 2024-01-22.
    before, on = _row_of(table, "AAA", "2024-01-19"), _row_of(table, "AAA", "2024-01-22")
    assert before["otc_status"] == "None" and not before["has_otc"]
    assert pd.isna(before["otc_week_used"]) and np.isnan(before["otc_off_exchange_volume"])
    assert before["confidence"] == pytest.approx(0.5 * 0.8 * 0.9)  # no OTC, no lit
    assert on["otc_status"] == "Anchored" and on["has_otc"]
    assert on["otc_week_used"] == pd.Timestamp("2024-01-01")
    assert on["confidence"] == pytest.approx(1.0 * 0.8 * 0.9)

    # Week of 2024-02-26 is published Mon 2024-03-18; the Friday before still shows 02-19.
    friday, monday = _row_of(table, "AAA", "2024-03-15"), _row_of(table, "AAA", "2024-03-18")
    assert friday["otc_week_used"] == pd.Timestamp("2024-02-19")
    assert monday["otc_week_used"] == pd.Timestamp("2024-02-26")
    week = prices[(prices["symbol"] == "AAA") & (prices["date"] >= "2024-02-26")
                  & (prices["date"] <= "2024-03-01")]
    assert len(week) == 5
    off_volume = monday["otc_off_exchange_volume"]
    assert monday["otc_participation_rate"] == pytest.approx(off_volume / week["volume"].sum())
    assert friday["otc_participation_rate"] != monday["otc_participation_rate"]

    # The score uses the OTC z as intensity (0.7 + 0.6 * sigmoid(z)), the day it is visible.
    aaa = table[table["symbol"] == "AAA"]
    used = aaa[aaa["otc_participation_z"].notna() & aaa["short_buy_sell_ratio_z"].notna()]
    assert len(used) > 20
    raw = (0.55 * np.tanh(0.5 * used["short_buy_sell_ratio_z"])
           + 0.15 * np.tanh(0.3 * used["return_z"].fillna(0.0)))
    intensity = 0.7 + 0.6 / (1.0 + np.exp(-used["otc_participation_z"]))
    np.testing.assert_allclose(used["accumulation_score"], np.clip(raw * intensity, -1, 1),
                               rtol=1e-12)
    assert (np.abs(intensity - 1.0) > 1e-6).all()

    # A symbol without OTC rows keeps the defaults; every row names the alignment used.
    bbb = table[table["symbol"] == "BBB"]
    assert (bbb["otc_status"] == "None").all() and not bbb["has_otc"].any()
    assert bbb["otc_participation_z"].isna().all()
    assert (table["otc_alignment"] == "published").all()


def test_week_alignment_is_look_ahead_and_labelled(db_path: Path) -> None:
    _load_otc_case(db_path)
    result = CliRunner().invoke(app, ["build", "--otc-alignment", "week"])
    assert result.exit_code == 0, result.output
    assert "LOOK-AHEAD" in result.output
    table = _table(db_path)
    assert (table["otc_alignment"] == "week").all()
    # Look-ahead: a Wednesday carries its own week, three weeks before FINRA published it.
    wednesday = _row_of(table, "AAA", "2024-02-28")
    assert wednesday["otc_week_used"] == pd.Timestamp("2024-02-26")
    assert wednesday["has_otc"]

    again = CliRunner().invoke(app, ["build", "--otc-alignment", "published"])
    assert again.exit_code == 0, again.output
    assert "LOOK-AHEAD" not in again.output
    table = _table(db_path)
    assert (table["otc_alignment"] == "published").all()
    assert _row_of(table, "AAA", "2024-02-28")["otc_week_used"] == pd.Timestamp("2024-02-05")
