"""``SegmentFileWriter``: files flushed to disk while the build still writes, closed and
synced by ``finish``, deleted by ``abort`` (no descriptor left open either way)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from darkpool_analysis.metrics import DAILY_METRICS_ARROW_SCHEMA
from darkpool_analysis.store import open_writer
from darkpool_analysis.store import segments as segments_module
from darkpool_analysis.store.segments import SegmentFileWriter


def _batch(n: int, first_day: int = 19_000) -> pa.Table:
    """A ``daily_metrics`` batch of one symbol (every other column NULL)."""
    columns = []
    for field in DAILY_METRICS_ARROW_SCHEMA:
        if field.name == "symbol":
            columns.append(pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, dtype=np.int32)), pa.array(["AAA"])))
        elif field.name == "date":
            columns.append(pa.array(np.arange(first_day, first_day + n, dtype=np.int32),
                                    type=pa.date32()))
        elif field.name == "close":
            columns.append(pa.array(np.linspace(1.0, 2.0, n)))
        else:
            columns.append(pa.nulls(n, type=field.type))
    return pa.Table.from_arrays(columns, schema=DAILY_METRICS_ARROW_SCHEMA)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_flushes_while_writing_and_finish_gives_durable_complete_files(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(segments_module.os, "fdatasync", recording)
    with open_writer(db_path) as writer:
        before = _open_descriptors()
        files = SegmentFileWriter(writer, "daily_metrics")
        for k in range(3):
            files.write(_batch(1_000, 19_000 + 1_000 * k), 0)
            files.write(_batch(500, 23_000 + 500 * k), 1)
        paths = files.finish()
        assert _open_descriptors() == before
    assert len(paths) == 2
    assert len(set(synced)) == 2  # both files were flushed before finish
    first = pq.read_table(paths[0])
    assert first.num_rows == 3_000
    assert first.column("close").to_pylist() == _batch(1_000).column("close").to_pylist() * 3
    assert pq.read_table(paths[1]).num_rows == 1_500


def test_a_failed_flush_fails_the_segment(db_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(segments_module.os, "fdatasync", failing)
    with open_writer(db_path) as writer:
        before = _open_descriptors()
        files = SegmentFileWriter(writer, "daily_metrics")
        files.write(_batch(100), 0)
        written = list(writer.store_dir.glob("data/daily_metrics/*"))
        with pytest.raises(OSError, match="Input/output"):
            files.finish()
        files.abort()  # what the build does when finish raises
        assert _open_descriptors() == before
        assert written and not any(path.exists() for path in written)


def test_abort_deletes_the_files_and_closes_everything(db_path: Path) -> None:
    with open_writer(db_path) as writer:
        before = _open_descriptors()
        files = SegmentFileWriter(writer, "daily_metrics")
        files.write(_batch(100), 0)
        files.write(_batch(100, 20_000), 1)
        written = list(writer.store_dir.glob("data/daily_metrics/*"))
        assert written
        files.abort()
        assert _open_descriptors() == before
        assert not any(path.exists() for path in written)
