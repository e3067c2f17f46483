"""One thread per task in worker processes that fill the cores (no N x cores threads)."""

from __future__ import annotations

import os

import pytest

from darkpool_analysis.errors import ConfigError
from darkpool_analysis.executor import (
    TASK_THREADS_ENV,
    default_workers,
    make_executor,
    task_threads,
    worker_environment,
)


def worker_caps() -> tuple[str | None, int | None, str | None]:
    """What a task sees in its worker: the raw variable, the parsed cap, numba's limit."""
    return os.environ.get(TASK_THREADS_ENV), task_threads(), os.environ.get("NUMBA_NUM_THREADS")


def test_workers_that_fill_the_cores_run_one_thread_per_task() -> None:
    assert worker_environment(default_workers())[TASK_THREADS_ENV] == "1"
    assert worker_environment(default_workers() + 1)[TASK_THREADS_ENV] == "1"
    if default_workers() > 1:
        assert worker_environment(default_workers() - 1) == {}  # spare cores: no cap


def test_a_local_pool_on_every_core_caps_its_workers() -> None:
    before = os.environ.get(TASK_THREADS_ENV)
    with make_executor(f"local:{default_workers()}") as pool:
        assert pool.submit(worker_caps).result() == ("1", 1, "1")
    assert os.environ.get(TASK_THREADS_ENV) == before  # only the workers are capped


def profiler_enabled() -> bool:
    import dask

    return bool(dask.config.get("distributed.worker.profile.enabled"))


@pytest.mark.slow
def test_a_dask_local_cluster_on_every_core_caps_its_workers() -> None:
    pytest.importorskip("distributed")
    with make_executor(f"dask-local:{default_workers()}") as executor:
        assert executor.submit(worker_caps).result() == ("1", 1, "1")
        assert executor.submit(profiler_enabled).result() is False  # no sampling thread


@pytest.mark.parametrize("text", ["0", "two", "-1"])
def test_a_bad_cap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(TASK_THREADS_ENV, text)
    with pytest.raises(ConfigError, match=TASK_THREADS_ENV):
        task_threads()


def test_no_cap_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TASK_THREADS_ENV, raising=False)
    assert task_threads() is None
