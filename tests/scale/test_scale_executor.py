"""The executor seam: spec parsing, the same results on every executor, dead workers."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import as_completed
from pathlib import Path

import pytest

from darkpool_analysis.errors import ConfigError
from darkpool_analysis.executor import (
    ExecutorSpec,
    ResilientProcessPool,
    SerialExecutor,
    default_workers,
    make_executor,
    parallelism,
    parse_executor_spec,
)


def square(value: int) -> int:
    return value * value


def fail_on_three(value: int) -> int:
    if value == 3:
        raise ValueError("three is bad")
    return value


def die_once(marker_dir: str, value: int) -> int:
    """Kill the worker process the first time ``value`` 2 runs (a marker file remembers)."""
    marker = Path(marker_dir) / f"died-{value}"
    if value == 2 and not marker.exists():
        marker.touch()
        os._exit(9)
    return value * 10


@pytest.mark.parametrize(("text", "expected"), [
    ("serial", ExecutorSpec("serial")),
    ("local", ExecutorSpec("local")),
    ("local:3", ExecutorSpec("local", 3)),
    ("dask-local", ExecutorSpec("dask-local")),
    ("dask-local:2", ExecutorSpec("dask-local", 2)),
    (" dask://scheduler.internal:8786 ", ExecutorSpec("dask", None,
                                                       "tcp://scheduler.internal:8786")),
])
def test_valid_specs_parse(text: str, expected: ExecutorSpec) -> None:
    parsed = parse_executor_spec(text)
    assert parsed == expected
    assert parse_executor_spec(str(parsed)) == parsed  # str() round-trips


@pytest.mark.parametrize("text", ["", "threads", "local:0", "local:-1", "local:two",
                                  "dask-local:", "dask://host", "dask://host:99999",
                                  "tcp://host:8786", "serial:2"])
def test_bad_specs_name_the_valid_forms(text: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_executor_spec(text)
    assert repr(text) in error.value.message
    assert error.value.hint is not None and "dask://HOST:PORT" in error.value.hint


def test_serial_runs_in_process_and_keeps_exceptions_in_futures() -> None:
    with make_executor("serial") as executor:
        assert isinstance(executor, SerialExecutor) and parallelism(executor) == 1
        futures = [executor.submit(fail_on_three, i) for i in range(5)]
    assert [f.result() for f in futures if f.exception() is None] == [0, 1, 2, 4]
    assert "three is bad" in str(futures[3].exception())


def test_local_pool_equals_serial_and_reports_its_size() -> None:
    with make_executor("serial") as serial:
        expected = list(serial.map(square, range(20)))
    with make_executor("local:2") as pool:
        assert parallelism(pool) == 2
        assert list(pool.map(square, range(20))) == expected
        errors = [f.exception() for f in [pool.submit(fail_on_three, 3)]]
    assert isinstance(errors[0], ValueError)
    assert default_workers() >= 1


def test_local_pool_survives_a_killed_worker(tmp_path: Path) -> None:
    """A real worker process dies (os._exit) in a task: the pool restarts and re-runs it."""
    pool = ResilientProcessPool(2, retries=2)
    try:
        futures = {pool.submit(die_once, str(tmp_path), i): i for i in range(6)}
        results = sorted(f.result() for f in as_completed(futures))
    finally:
        pool.shutdown()
    assert results == [0, 10, 20, 30, 40, 50]
    assert pool.retried >= 1 and (tmp_path / "died-2").exists()


def test_local_pool_gives_up_after_its_retries(tmp_path: Path) -> None:
    from concurrent.futures.process import BrokenProcessPool

    pool = ResilientProcessPool(1, retries=0)
    try:
        with pytest.raises(BrokenProcessPool):
            pool.submit(die_once, str(tmp_path), 2).result()
    finally:
        pool.shutdown()


@pytest.mark.slow
def test_dask_local_equals_serial() -> None:
    with make_executor("dask-local:2") as executor:
        assert parallelism(executor) == 2
        assert list(executor.map(square, range(20))) == [i * i for i in range(20)]


def test_dask_specs_without_dask_say_what_to_install() -> None:
    """In a fresh interpreter where ``distributed`` cannot be imported."""
    code = ("import sys; sys.modules['distributed'] = None\n"
            "from darkpool_analysis.executor import make_executor\n"
            "from darkpool_analysis.errors import ConfigError\n"
            "with make_executor('local:1') as pool: assert pool.submit(abs, -2).result() == 2\n"
            "try:\n"
            "    with make_executor('dask-local:1'): pass\n"
            "except ConfigError as exc: print(exc.hint)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "pip install darkpool-analysis[dask]"


def test_unreachable_scheduler_is_a_clear_error() -> None:
    pytest.importorskip("distributed")
    with pytest.raises(ConfigError) as error, make_executor("dask://127.0.0.1:9"):
        pass
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in error.value.message
