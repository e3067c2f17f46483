"""One executor seam for long map-only jobs: a spec string -> a ``concurrent.futures.Executor``.

Specs (``--executor`` on ``darkpool ingest trades`` and ``darkpool evaluate``):

``serial``
    In the calling process, one task at a time (the reference every other spec must equal).
``local[:N]``
    A pool of ``N`` worker processes on this machine (default: the number of cores). A task
    whose worker process dies is re-run on a fresh pool, up to ``retries`` times.
``dask-local[:N]``
    A ``distributed.LocalCluster`` of ``N`` single-threaded worker processes (default: cores,
    the workers' statistical profiler off) and a ``Client.get_executor(retries=...)`` on it.

With at least as many local worker processes as cores, each worker runs its tasks on one
thread (:data:`TASK_THREADS_ENV` = 1 in the worker's environment: DuckDB, the classification
rules, pyarrow and numba read it), so N workers on N cores do not run N x cores threads.
``dask://HOST:PORT``
    An existing Dask scheduler (``dask-scheduler`` / ``dask-worker``, Kubernetes, cloud):
    ``Client("tcp://HOST:PORT").get_executor(retries=...)``.

Dask is an optional extra (``pip install darkpool-analysis[dask]``); without it the first two
specs work and the Dask specs say what to install. Tasks must be picklable top-level
functions; callers use ``executor.submit``/``executor.map`` only, so the same code runs on one
machine and on a cluster. See ``docs/scale-out.md``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Literal

from darkpool_analysis.errors import ConfigError

log = logging.getLogger(__name__)

ExecutorKind = Literal["serial", "local", "dask-local", "dask"]

#: How often a task is re-run after its worker process died (or, on Dask, after it raised).
DEFAULT_RETRIES = 3

DASK_HINT = "pip install darkpool-analysis[dask]"

#: Environment variable that caps the threads a task uses in its worker process (DuckDB
#: ``threads``, classification threads, pyarrow's CPU pool). Set for local pools with at
#: least one worker per core; set it on ``dask worker`` processes too (one per core).
TASK_THREADS_ENV = "DARKPOOL_TASK_THREADS"

_SPEC_HELP = "serial, local[:N], dask-local[:N] or dask://HOST:PORT"
_LOCAL = re.compile(r"^(local|dask-local)(?::(\d+))?$")
_REMOTE = re.compile(r"^dask://([^:/\s]+):(\d{1,5})$")


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed ``--executor`` value."""

    kind: ExecutorKind
    workers: int | None = None     # local / dask-local: worker processes (None = cores)
    address: str | None = None     # dask: ``tcp://HOST:PORT``

    def __str__(self) -> str:
        if self.kind == "dask":
            return f"dask://{(self.address or '').removeprefix('tcp://')}"
        return self.kind if self.workers is None else f"{self.kind}:{self.workers}"


def parse_executor_spec(spec: str) -> ExecutorSpec:
    """Parse ``serial``, ``local[:N]``, ``dask-local[:N]`` or ``dask://HOST:PORT``.

    Anything else is a :class:`~darkpool_analysis.errors.ConfigError` naming the valid forms.
    """
    text = spec.strip()
    if text == "serial":
        return ExecutorSpec("serial")
    local = _LOCAL.match(text)
    if local:
        kind: ExecutorKind = "local" if local.group(1) == "local" else "dask-local"
        count = local.group(2)
        if count is not None and int(count) < 1:
            raise ConfigError(f"--executor {spec!r}: the worker count must be >= 1",
                              hint=f"valid: {_SPEC_HELP}")
        return ExecutorSpec(kind, int(count) if count is not None else None)
    remote = _REMOTE.match(text)
    if remote:
        port = int(remote.group(2))
        if not 0 < port < 65536:
            raise ConfigError(f"--executor {spec!r}: port {port} is out of range",
                              hint=f"valid: {_SPEC_HELP}")
        return ExecutorSpec("dask", address=f"tcp://{remote.group(1)}:{port}")
    raise ConfigError(f"unknown --executor {spec!r}", hint=f"valid: {_SPEC_HELP}")


def default_workers() -> int:
    """Worker processes for ``local``/``dask-local`` without a count: the usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def task_threads() -> int | None:
    """The thread cap for tasks in this process (:data:`TASK_THREADS_ENV`), None if unset."""
    text = os.environ.get(TASK_THREADS_ENV, "").strip()
    if not text:
        return None
    try:
        threads = int(text)
    except ValueError:
        raise ConfigError(f"{TASK_THREADS_ENV}={text!r} is not a whole number") from None
    if threads < 1:
        raise ConfigError(f"{TASK_THREADS_ENV} must be >= 1, got {threads}")
    return threads


def worker_environment(workers: int) -> dict[str, str]:
    """Environment for local worker processes: one thread per task when the ``workers``
    fill the cores (more threads would only contend for them), else nothing."""
    if workers < default_workers():
        return {}
    return {TASK_THREADS_ENV: "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


class SerialExecutor(Executor):
    """Runs each task in the calling process at ``submit`` time (the reference executor).

    The returned future is already done; a task's exception is stored in it like a pool
    would, while ``KeyboardInterrupt`` and other ``BaseException``s propagate at once.
    """

    workers = 1

    def __init__(self) -> None:
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shutdown:
            raise RuntimeError("cannot submit to a shut-down executor")
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - stored in the future, as a pool does
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


class ResilientProcessPool(Executor):
    """A ``ProcessPoolExecutor`` that survives the death of a worker process.

    A plain process pool turns one killed worker (OOM killer, segfault, ``os._exit``) into a
    ``BrokenProcessPool`` for every task in flight. Here the broken pool is replaced by a
    fresh one and every task it failed is submitted again, each at most ``retries`` times
    (``retried`` counts the re-runs). Workers are started with ``spawn``: each sees the
    parent's environment at the time the pool starts plus ``env`` (by default
    :func:`worker_environment`), and no thread state is forked. They ignore SIGINT: Ctrl-C is
    the parent's to handle (it cancels the tasks not started).
    """

    def __init__(self, workers: int, *, retries: int = DEFAULT_RETRIES,
                 env: dict[str, str] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.retries = retries
        self.env = worker_environment(workers) if env is None else dict(env)
        self.retried = 0
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.RLock()
        self._generation = 0
        self._pool = self._new_pool()
        self._retired: list[ProcessPoolExecutor] = []
        self._shutdown = False

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._context,
                                   initializer=_init_worker, initargs=(self.env,))

    def _replace_pool(self, generation: int) -> None:
        """Swap in a fresh pool unless another failed task already did since ``generation``."""
        with self._lock:
            if generation != self._generation or self._shutdown:
                return
            log.warning("a worker process died; restarting the process pool")
            self._retired.append(self._pool)
            self._pool = self._new_pool()
            self._generation += 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a shut-down executor")
        outer: Future[Any] = Future()
        self._launch(outer, fn, args, kwargs, self.retries)
        return outer

    def _launch(self, outer: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any], retries_left: int) -> None:
        with self._lock:
            if self._shutdown:
                _cancel(outer)
                return
            generation = self._generation
            try:
                inner = self._pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool:
                self._replace_pool(generation)
                generation = self._generation
                inner = self._pool.submit(fn, *args, **kwargs)

        def done(finished: Future[Any]) -> None:
            if finished.cancelled():
                _cancel(outer)
                return
            error = finished.exception()
            if isinstance(error, BrokenProcessPool) and retries_left > 0 and not self._shutdown:
                self._replace_pool(generation)
                with self._lock:
                    self.retried += 1
                self._launch(outer, fn, args, kwargs, retries_left - 1)
                return
            if not outer.set_running_or_notify_cancel():
                return
            if error is not None:
                outer.set_exception(error)
            else:
                outer.set_result(finished.result())

        inner.add_done_callback(done)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pools = [*self._retired, self._pool]
        for pool in pools:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _init_worker(env: dict[str, str]) -> None:
    """Start of a local worker process: set ``env`` (before numba or a task reads it) and
    leave Ctrl-C to the parent, which cancels what has not started (a terminal sends SIGINT
    to the whole process group)."""
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _cancel(future: Future[Any]) -> None:
    """Cancel a future nobody runs and wake its waiters (``as_completed``, ``wait``)."""
    if future.cancel():
        future.set_running_or_notify_cancel()


def parallelism(executor: Executor) -> int:
    """How many tasks ``executor`` runs at once (for sizing the window of submitted tasks)."""
    workers = getattr(executor, "workers", None)
    if isinstance(workers, int) and workers > 0:
        return workers
    pool_workers = getattr(executor, "_max_workers", None)
    if isinstance(pool_workers, int) and pool_workers > 0:
        return pool_workers
    return default_workers()


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Keep Dask's INFO chatter (workers starting and closing) out of our output."""
    logger = logging.getLogger("distributed")
    before = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError("the Dask executors need the optional dask extra "
                          f"(distributed is not installed: {exc})", hint=DASK_HINT) from None
    return distributed


@contextlib.contextmanager
def make_executor(spec: str | ExecutorSpec, *, retries: int = DEFAULT_RETRIES
                  ) -> Iterator[Executor]:
    """Yield the executor ``spec`` names; everything it started is shut down on exit.

    On an exception (``KeyboardInterrupt`` included) pending tasks are cancelled instead of
    waited for. ``retries``: re-runs of a task whose worker died (``local``), or that died or
    raised (Dask, via ``Client.get_executor(retries=...)``).
    """
    parsed = parse_executor_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "serial":
        serial = SerialExecutor()
        try:
            yield serial
        finally:
            serial.shutdown()
        return
    if parsed.kind == "local":
        pool = ResilientProcessPool(parsed.workers or default_workers(), retries=retries)
        ok = False
        try:
            yield pool
            ok = True
        finally:
            pool.shutdown(wait=ok, cancel_futures=not ok)
        return
    distributed = _import_distributed()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_distributed())
        if parsed.kind == "dask-local":
            import dask

            workers = parsed.workers or default_workers()
            # The workers' statistical profiler samples the task thread 100 times a second
            # (measured: 4-8 % of a day task's CPU); nobody reads it in a batch run. The
            # nannies copy this config into every worker they start or restart.
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                cluster = stack.enter_context(distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    dashboard_address=":0", silence_logs=logging.WARNING,  # no fixed port
                    env=worker_environment(workers)))
            client = stack.enter_context(distributed.Client(cluster, set_as_default=False))
        else:
            try:
                client = stack.enter_context(distributed.Client(
                    parsed.address, set_as_default=False, timeout="10s"))
            except OSError as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {parsed.address}: "
                                  f"{exc}", hint="start it with `dask scheduler` and "
                                  "workers with `dask worker HOST:PORT`") from None
            workers = max(1, sum(client.nthreads().values()))
        executor = client.get_executor(retries=retries, pure=False)
        executor.workers = workers  # read by parallelism()
        ok = False
        try:
            yield executor
            ok = True
        finally:
            executor.shutdown(wait=ok)  # wait=False cancels every task still pending
