"""Evaluations started from the web page: each runs :func:`evaluation.runner.run_evaluation`
in its own process (a spawned interpreter, so a long evaluation never holds the server's GIL
and can be stopped), reports progress through a queue, and is polled by job id.

The result is the evaluation's ``summary.json`` when the runner writes one; otherwise the
runner's own outputs as JSON (headline IC table, quantiles, IC by date, best backtests,
walk-forward summary) plus the self-contained ``report.html``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import queue as queue_module
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pandas as pd

from darkpool_analysis.config import Settings
from darkpool_analysis.errors import ConfigError, DarkpoolError, NoDataError
from darkpool_analysis.web import limits

log = logging.getLogger(__name__)

#: Backtest-grid progress messages sent at most this often (seconds).
PROGRESS_INTERVAL_S: Final = 0.2
#: Rows of IC-by-date sent to the page per (variant, horizon) series at most.
MAX_IC_POINTS: Final = 2_000


class JobBusy(Exception):
    """Every evaluation worker is busy: answered 503 with a retry hint."""


# -- the worker process ------------------------------------------------------------------------


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    from darkpool_analysis.web.service import frame_records

    return frame_records(frame)


def outcome_json(out_dir: Path, run_id: str, label: str,
                 walk_summary: dict[str, Any]) -> dict[str, Any]:
    """The web result of one run: ``summary.json`` if the runner wrote it, and the runner's
    numbers, quantiles and IC by date read back from its output files."""
    result: dict[str, Any] = {"run_id": run_id, "label": label, "out_dir": str(out_dir),
                              "walk_forward": walk_summary}
    summary_path = out_dir / "summary.json"
    if summary_path.exists():
        result["summary"] = json.loads(summary_path.read_text(encoding="utf-8"))
    numbers_path = out_dir / "evaluation_numbers.parquet"
    if numbers_path.exists():
        numbers = pd.read_parquet(numbers_path)
        ic = numbers[numbers["section"] == "ic"].pivot_table(
            index=["variant", "horizon"], columns="metric", values="value",
            sort=False).reset_index()
        spread = numbers[(numbers["section"] == "quantiles")
                         & (numbers["metric"] == "top_minus_bottom_demeaned")]
        ic = ic.merge(spread[["variant", "horizon", "value"]].rename(
            columns={"value": "spread_demeaned"}), on=["variant", "horizon"], how="left")
        result["ic_table"] = _records(ic)
        backtest = numbers[numbers["section"] == "backtest"].pivot_table(
            index="variant", columns="metric", values="value", sort=False).reset_index()
        if "sharpe_daily_annualised" in backtest.columns:
            backtest = backtest.sort_values("sharpe_daily_annualised", ascending=False)
        result["backtests"] = _records(backtest.head(20))
    quantiles_path = out_dir / "quantiles.parquet"
    if quantiles_path.exists():
        result["quantiles"] = _records(pd.read_parquet(quantiles_path).drop(
            columns=["label"], errors="ignore"))
    ic_path = out_dir / "ic_by_date.parquet"
    if ic_path.exists():
        ic_by_date = pd.read_parquet(ic_path).drop(columns=["label"], errors="ignore")
        ic_by_date = ic_by_date.groupby(["variant", "horizon"], sort=False).tail(MAX_IC_POINTS)
        result["ic_by_date"] = _records(ic_by_date)
    result["verdicts"] = verdicts(result.get("summary"), result.get("ic_table", []))
    return result


def verdicts(summary: dict[str, Any] | None,
             ic_table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict box per variant: the evaluation's own verdicts from ``summary.json``
    (out-of-sample IC, adjusted p-value, net spread, deflated Sharpe and the reason).

    Only when a run wrote no ``summary.json`` (an older evaluation) the first horizon's
    in-sample IC is read plainly instead, labelled provisional: ``evidence`` when p < 0.05 and
    |IC| beats the variant's placebo, ``weak`` when p < 0.10 and it beats the placebo, else
    ``no evidence``."""
    if summary and isinstance(summary.get("variants"), dict):
        return [{"variant": name, **values, "source": "summary.json"}
                for name, values in summary["variants"].items()]
    if not ic_table:
        return []
    first_h = min(int(row["horizon"]) for row in ic_table)
    rows = [row for row in ic_table if int(row["horizon"]) == first_h]
    placebo = {str(row["variant"]).removeprefix("placebo:"): row for row in rows
               if str(row["variant"]).startswith("placebo:")}
    boxes = []
    for row in rows:
        name = str(row["variant"])
        if name.startswith("placebo:"):
            continue
        mean, p = row.get("mean"), row.get("p_value")
        shuffled = placebo.get(name, {}).get("mean")
        beats = (mean is not None and shuffled is not None and abs(mean) > abs(shuffled))
        verdict = ("evidence" if beats and p is not None and p < 0.05 else
                   "weak" if beats and p is not None and p < 0.10 else "no evidence")
        boxes.append({"variant": name, "horizon": first_h, "verdict": verdict,
                      "ic_mean": mean, "p_value": p, "placebo_ic_mean": shuffled,
                      "source": "provisional: in-sample IC p-value and placebo, first horizon"})
    return boxes


def run_job(settings: Settings, params: dict[str, Any], out_dir: str,
            messages: Any) -> None:
    """The worker process: run the evaluation, sending ``(kind, payload)`` messages."""
    from darkpool_analysis.evaluation.runner import run_evaluation

    last = [0.0]

    def on_grid(total: int) -> Any:
        messages.put(("progress", {"stage": "backtest grid", "done": 0, "total": total}))
        done = [0]

        def advance() -> None:
            done[0] += 1
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or done[0] == total:
                last[0] = now
                messages.put(("progress", {"stage": "backtest grid", "done": done[0],
                                           "total": total}))
        return advance

    try:
        messages.put(("progress", {"stage": "loading and computing IC", "done": 0,
                                   "total": 0}))
        outcome = run_evaluation(settings, out=Path(out_dir), on_grid=on_grid, **params)
        messages.put(("progress", {"stage": "reading results", "done": 0, "total": 0}))
        messages.put(("done", outcome_json(Path(out_dir), outcome.run_id, outcome.label,
                                           outcome.walk_summary)))
    except NoDataError as exc:
        messages.put(("error", {"status": 404, "error": exc.message, "hint": exc.hint}))
    except (ConfigError, ValueError, ArithmeticError) as exc:
        message = exc.message if isinstance(exc, ConfigError) else str(exc)
        hint = exc.hint if isinstance(exc, ConfigError) else None
        messages.put(("error", {"status": 400, "error": message, "hint": hint}))
    except DarkpoolError as exc:
        messages.put(("error", {"status": 500, "error": exc.message, "hint": exc.hint}))
    except Exception:  # the worker boundary: log the traceback here, send a message
        log.exception("evaluation failed")
        messages.put(("error", {"status": 500, "error": "the evaluation failed (see the "
                                "server log)", "hint": None}))


# -- the manager in the server -----------------------------------------------------------------


@dataclass
class Job:
    """One evaluation's state as the page polls it."""

    id: str
    params: dict[str, Any]
    out_dir: Path
    state: str = "queued"  # queued, running, done, error
    stage: str = "starting"
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """What ``GET /api/evaluate/{id}`` answers."""
        end = self.finished if self.finished is not None else time.monotonic()
        return {"id": self.id, "state": self.state, "stage": self.stage,
                "done": self.done, "total": self.total,
                "elapsed_s": round(end - self.started, 2), "params": self.params,
                "result": self.result, "error": self.error}


class JobManager:
    """Starts evaluation processes (at most :data:`limits.EVAL_WORKERS` at once) and keeps
    the last :data:`limits.EVAL_KEEP` jobs for polling."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[str, Any] = {}

    def start(self, params: dict[str, Any]) -> Job:
        """Start a job; raises :class:`JobBusy` when every worker is taken."""
        with self._lock:
            running = [j for j in self._jobs.values() if j.state in ("queued", "running")]
            if len(running) >= limits.EVAL_WORKERS:
                raise JobBusy(f"{len(running)} evaluation(s) already running")
            job_id = f"web-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
            out_dir = self.settings.output_dir / "evaluation" / job_id
            job = Job(id=job_id, params=params, out_dir=out_dir)
            self._jobs[job_id] = job
            while len(self._jobs) > limits.EVAL_KEEP:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].state in ("queued", "running"):
                    break
                del self._jobs[oldest]
        threading.Thread(target=self._supervise, args=(job,), daemon=True,
                         name=f"eval-{job_id}").start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _supervise(self, job: Job) -> None:
        messages = self._context.Queue()
        process = self._context.Process(
            target=run_job, args=(self.settings, job.params, str(job.out_dir), messages),
            daemon=True, name=f"darkpool-eval-{job.id}")
        process.start()
        with self._lock:
            self._processes[job.id] = process
            job.state = "running"
        deadline = time.monotonic() + limits.EVAL_TIMEOUT_S
        try:
            while True:
                try:
                    kind, payload = messages.get(timeout=0.5)
                except queue_module.Empty:
                    if not process.is_alive():
                        self._fail(job, 500, f"the evaluation process exited with code "
                                   f"{process.exitcode} without a result")
                        return
                    if time.monotonic() > deadline:
                        process.terminate()
                        self._fail(job, 504, f"the evaluation took longer than "
                                   f"{limits.EVAL_TIMEOUT_S:.0f} s and was stopped")
                        return
                    continue
                with self._lock:
                    if kind == "progress":
                        job.stage = str(payload["stage"])
                        job.done, job.total = int(payload["done"]), int(payload["total"])
                    elif kind == "done":
                        job.result, job.state, job.stage = payload, "done", "done"
                        job.finished = time.monotonic()
                        return
                    else:
                        job.error, job.state, job.stage = payload, "error", "failed"
                        job.finished = time.monotonic()
                        return
        finally:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
            messages.close()
            with self._lock:
                self._processes.pop(job.id, None)

    def _fail(self, job: Job, status: int, message: str) -> None:
        with self._lock:
            job.error = {"status": status, "error": message, "hint": None}
            job.state, job.stage, job.finished = "error", "failed", time.monotonic()

    def shutdown(self) -> None:
        """Stop every running evaluation process (server shutdown)."""
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            if process.is_alive():
                process.terminate()


__all__ = ["Job", "JobBusy", "JobManager", "outcome_json", "run_job", "verdicts"]
