"""``SegmentFileWriter``: files written with ``O_DIRECT`` (or, where the file system refuses
it, flushed to disk while the build still writes), closed and synced by ``finish``, deleted
by ``abort`` (no descriptor left open either way)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from darkpool_analysis.metrics import DAILY_METRICS_ARROW_SCHEMA
from darkpool_analysis.store import open_writer
from darkpool_analysis.store import segments as segments_module
from darkpool_analysis.store.segments import DirectFile, SegmentFileWriter


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
    """Descriptors this process holds on Parquet files and the direct test file (deleted
    ones included); other descriptors come and go with DuckDB's and numba's threads."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            continue
        count += ".parquet" in target or "direct.bin" in target
    return count


@pytest.fixture
def buffered_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write through the page cache (the path for file systems that refuse O_DIRECT)."""
    monkeypatch.setattr(segments_module, "DIRECT_WRITES", False)


@pytest.fixture
def small_direct_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Direct writes of two pages, so small test files fill the buffer many times."""
    monkeypatch.setattr(segments_module, "DIRECT_BLOCK", 8192)


def _direct_or_skip(path: Path) -> DirectFile:
    direct = DirectFile.create(path)
    if direct is None:
        pytest.skip(f"the file system of {path.parent} refuses O_DIRECT")
    return direct


def _skip_without_direct_writes(folder: Path) -> None:
    probe = folder / "o_direct.probe"
    _direct_or_skip(probe).close()
    probe.unlink()


@pytest.mark.usefixtures("buffered_writes")
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


@pytest.mark.usefixtures("buffered_writes")
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


@pytest.mark.usefixtures("small_direct_blocks")
def test_direct_file_keeps_every_byte_of_any_write_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    sizes = [1, 4095, 4096, 8191, 8192, 8193, 20_000, 3, 65_536, 777]
    chunks = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    before = _open_descriptors()
    direct = _direct_or_skip(tmp_path / "direct.bin")
    for k, chunk in enumerate(chunks):
        assert direct.write(memoryview(chunk) if k % 2 else chunk) == len(chunk)
        assert direct.tell() == sum(sizes[: k + 1])
    direct.close()
    direct.close()  # once
    assert _open_descriptors() == before
    assert (tmp_path / "direct.bin").read_bytes() == b"".join(chunks)


@pytest.mark.usefixtures("small_direct_blocks")
def test_direct_segment_files_equal_buffered_ones_and_need_no_flush(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(segments_module.os, "fdatasync",
                        lambda fd: (synced.append(fd), real(fd))[1])
    tables = {}
    with open_writer(db_path) as writer:
        _skip_without_direct_writes(db_path.parent)
        for direct in (True, False):
            monkeypatch.setattr(segments_module, "DIRECT_WRITES", direct)
            before = _open_descriptors()
            files = SegmentFileWriter(writer, "daily_metrics")
            for k in range(4):
                files.write(_batch(1_000, 19_000 + 1_000 * k), k % 2)
            assert bool(files._direct) == direct
            paths = files.finish()
            assert _open_descriptors() == before
            tables[direct] = [pq.read_table(path) for path in paths]
            assert bool(synced) != direct  # direct files are never flushed, buffered ones are
    assert len(tables[True]) == 2
    assert all(a.equals(b) for a, b in zip(tables[True], tables[False], strict=True))
    assert tables[True][0].num_rows == 2_000


def test_file_system_refusing_o_direct_gets_buffered_flushed_files(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refusing(path: object, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(segments_module.os, "open", refusing)
    with open_writer(db_path) as writer:
        files = SegmentFileWriter(writer, "daily_metrics")
        files.write(_batch(500), 0)
        assert not files._direct and files._flushing  # buffered, and flushing
        (path,) = files.finish()
    table = pq.read_table(path)
    assert table.num_rows == 500
    assert table.column("close").to_pylist() == _batch(500).column("close").to_pylist()


@pytest.mark.usefixtures("small_direct_blocks")
def test_a_failed_direct_write_fails_the_segment_and_abort_cleans_up(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def failing(fd: int, data: object) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)  # type: ignore[arg-type]

    with open_writer(db_path) as writer:
        _skip_without_direct_writes(db_path.parent)
        before = _open_descriptors()
        files = SegmentFileWriter(writer, "daily_metrics")
        files.write(_batch(100), 0)
        written = list(writer.store_dir.glob("data/daily_metrics/*"))
        monkeypatch.setattr(segments_module.os, "write", failing)
        with pytest.raises(OSError, match="No space"):
            files.write(_batch(5_000, 20_000), 0)
        files.abort()  # what the build does when a write raises
        assert _open_descriptors() == before
        assert written and not any(path.exists() for path in written)
