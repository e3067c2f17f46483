"""Derived ``daily_metrics`` columns: not stored in segment files, computed by the published
view from the stored columns with the bits the build's kernels give (NULL where NaN)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from darkpool_analysis.config import load_config
from darkpool_analysis.metrics import assemble_grid, compute_daily_metrics_arrow
from darkpool_analysis.store import covers, open_writer
from darkpool_analysis.store.catalogue import Segment, view_sql
from darkpool_analysis.store.publication import table_spec
from darkpool_analysis.store.schema import DAILY_METRICS_DERIVED, stored_columns
from darkpool_analysis.trading_calendar import sessions_index


def _edge_case_grid(seed: int = 5) -> pd.DataFrame:
    """Three symbols over 60 sessions with every edge the formulas branch on: short above,
    equal to and below total, zero totals, zero and missing closes, missing short or price
    rows, lit rows with zero sides, lit without short and short without lit."""
    rng = np.random.default_rng(seed)
    days = sessions_index("2021-01-04", "2021-04-30")[:60]
    short_frames, price_frames, lit_frames = [], [], []
    for k, symbol in enumerate(["AAA", "BBB", "CCC"]):
        n = len(days)
        total = rng.lognormal(10, 1.0, n).round()
        short = (total * rng.uniform(0.0, 1.3, n)).round()    # some above total
        short[::7] = total[::7]                                 # sell exactly 0
        total[3::11] = 0.0                                      # ratio NULL
        short[5::13] = 0.0
        keep_short = rng.random(n) > 0.15
        short_frames.append(pd.DataFrame({
            "symbol": symbol, "date": days, "short_volume": short,
            "short_exempt_volume": 0.0, "total_volume": total,
            "short_source": "CNMS"}).loc[keep_short])
        close = rng.lognormal(3, 0.3, n)
        close[4::9] = 0.0                                       # range_pct NULL
        low = close * rng.uniform(0.9, 1.0, n)
        price_frames.append(pd.DataFrame({
            "symbol": symbol, "date": days, "open": close, "high": close * 1.02, "low": low,
            "close": close, "vwap": close, "volume": 1e6}).loc[rng.random(n) > 0.1])
        if k < 2:
            buy = rng.lognormal(8, 1.0, n).round()
            sell = rng.lognormal(8, 1.0, n).round()
            buy[2::6] = 0.0
            sell[3::8] = 0.0
            lit = pd.DataFrame({"symbol": symbol, "date": days, "lit_buy_volume": buy,
                                "lit_sell_volume": sell, "lit_method": "lee_ready",
                                "lit_coverage_pct": 99.0})
            lit_frames.append(lit.loc[rng.random(n) > 0.3])
    return assemble_grid(pd.concat(short_frames, ignore_index=True),
                         pd.concat(price_frames, ignore_index=True),
                         pd.concat(lit_frames, ignore_index=True))


def _bits(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(validity, float64 bit patterns with NULLs zeroed) of a float column."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    valid = np.asarray(array.is_valid())
    data = np.asarray(array.fill_null(0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    return valid, data.view(np.int64)


@pytest.fixture
def computed() -> pa.Table:
    cfg = load_config(short_z_window=10, return_z_window=10, zscore_min_periods=3,
                      min_lit_volume=1000.0)
    table = compute_daily_metrics_arrow(_edge_case_grid(), cfg)
    # the edges are really there
    frame = table.select(["short_volume", "total_volume", "close"]).to_pandas()
    assert (frame["short_volume"] > frame["total_volume"]).any()
    assert (frame["short_volume"] == frame["total_volume"]).any()
    assert (frame["total_volume"] == 0).any() and (frame["close"] == 0).any()
    assert frame["short_volume"].isna().any()
    return table


def _published_view(db_path: Path, name: str, rows: pa.Table, *,
                    stores_derived: bool = False) -> pa.Table:
    """``daily_metrics`` as the published view reads it from one segment file of ``rows``
    (its derived columns read as stored with ``stores_derived``, else computed)."""
    with open_writer(db_path) as writer:
        spec = table_spec(writer, "daily_metrics")
        store_dir = writer.store_dir
    assert {c for c, _ in spec.derived} == set(DAILY_METRICS_DERIVED)
    folder = store_dir / "data" / "test"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, folder / name)
    segment = Segment(files=(f"data/test/{name}",), cover=list(covers.EVERYTHING),
                      rows=rows.num_rows, stores_derived=stores_derived)
    conn = duckdb.connect()
    try:
        conn.execute(view_sql(dataclasses.replace(spec, segments=(segment,)),
                              store_dir)).fetchall()
        return conn.sql("SELECT * FROM daily_metrics ORDER BY symbol, date").to_arrow_table()
    finally:
        conn.close()


def test_view_gives_the_bits_the_kernels_computed(db_path: Path, computed: pa.Table) -> None:
    stored = computed.select(stored_columns("daily_metrics", computed.column_names))
    assert not set(DAILY_METRICS_DERIVED) & set(stored.column_names)
    view = _published_view(db_path, "stored.parquet", stored)
    assert view.column_names == computed.column_names
    for name in DAILY_METRICS_DERIVED:
        want_valid, want = _bits(computed.column(name))
        got_valid, got = _bits(view.column(name))
        assert (got_valid == want_valid).all(), name
        assert (got == want).all(), name
        assert view.schema.field(name).type == pa.float64()
    # both branches of every formula were taken
    assert np.asarray(computed.column("short_sell_volume").is_null()).any()
    assert (computed.column("short_sell_volume").to_numpy(zero_copy_only=False) == 0).any()
    assert np.asarray(computed.column("lit_total_volume").is_valid()).any()
    assert np.asarray(computed.column("range_pct").is_null()).sum() > \
        np.asarray(computed.column("close").is_null()).sum()


def test_files_with_every_column_read_the_same(db_path: Path, computed: pa.Table) -> None:
    # Segments written before the derived columns left the files store them all: read as
    # stored (what the store does for such files) or computed, the table is the same.
    stored = computed.select(stored_columns("daily_metrics", computed.column_names))
    as_stored = _published_view(db_path, "full.parquet", computed, stores_derived=True)
    recomputed = _published_view(db_path, "full2.parquet", computed)
    new = _published_view(db_path, "stored.parquet", stored)
    assert as_stored.equals(new) and recomputed.equals(new)


def test_rows_a_tool_gives_with_derived_columns_read_back_as_given(db_path: Path) -> None:
    # Hand-made rows (tools, fixtures) may give a derived column without its inputs, or
    # with other values than the formula: their segment stores it, and compaction keeps it.
    day = pd.Timestamp("2024-03-04").date()
    given = pd.DataFrame({
        "symbol": ["AAA", "BBB"], "date": [day, day],
        "short_ratio": [0.4, None], "short_buy_sell_ratio": [0.7, 2.0],
        "short_volume": [None, 10.0], "total_volume": [None, 100.0],
        "accumulation_score_display": [74.5, None], "accumulation_score": [None, 0.2]})
    with open_writer(db_path) as writer:
        writer.replace_partition("daily_metrics", given.iloc[:1], where="symbol = ?",
                                 params=["AAA"])
        writer.replace_partition("daily_metrics", given.iloc[1:], where="symbol = ?",
                                 params=["BBB"])
        segments = [s for s in writer.segments("daily_metrics")["daily_metrics"] if s.files]
        assert len(segments) == 2
        assert all("short_ratio" in pq.read_schema(writer.store_dir / s.files[0]).names
                   for s in segments)

    def read() -> pd.DataFrame:
        with duckdb.connect(str(db_path), read_only=True) as conn:
            return conn.execute(
                "SELECT symbol, short_ratio, short_buy_sell_ratio, short_sell_volume, "
                "accumulation_score_display FROM daily_metrics ORDER BY symbol").df()

    expected = pd.DataFrame({
        "symbol": ["AAA", "BBB"], "short_ratio": [0.4, np.nan],
        "short_buy_sell_ratio": [0.7, 2.0], "short_sell_volume": [np.nan, np.nan],
        "accumulation_score_display": [74.5, np.nan]})
    pd.testing.assert_frame_equal(read(), expected)
    with open_writer(db_path) as writer:
        writer.compact(full=True)
        compacted = [s for s in writer.segments("daily_metrics")["daily_metrics"] if s.files]
    assert len(compacted) == 1 and compacted[0].files[0] not in {
        f for s in segments for f in s.files}
    pd.testing.assert_frame_equal(read(), expected)
