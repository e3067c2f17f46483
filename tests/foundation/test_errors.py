"""``errors.ctrl_c_during_queries``: a Ctrl-C while DuckDB runs a query is an interruption."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from darkpool_analysis.errors import ctrl_c_during_queries

_SCRIPT = textwrap.dedent("""
    import duckdb
    from darkpool_analysis.errors import ctrl_c_during_queries
    conn = duckdb.connect()
    print("running", flush=True)
    while True:
        try:
            with ctrl_c_during_queries():
                conn.execute("SELECT count(*) FROM range(100000000000) t(x) "
                             "WHERE x % 7 = 3").fetchall()
        except KeyboardInterrupt as exc:
            if isinstance(exc.__cause__, RuntimeError):
                print("KeyboardInterrupt from RuntimeError", flush=True)
                break
            # the signal landed between queries (Python's own handler): query again
""")


def _interrupt_a_query() -> str | None:
    """Run the script, send SIGINT every 0.3 s for up to 8 s; its output, or None when no
    signal interrupted the query (DuckDB does not always notice one: a signal taken by
    Python's own handler just before the query starts leaves the query running)."""
    process = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "running"
        deadline = time.monotonic() + 8
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
            process.send_signal(signal.SIGINT)
        if process.poll() is None:
            return None
        out, _ = process.communicate(timeout=10)
        assert process.returncode == 0
        return out.strip()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_sigint_during_a_query_becomes_keyboard_interrupt() -> None:
    # A real process and a real SIGINT (what a terminal sends on Ctrl-C) during a query.
    outputs = []
    for _ in range(5):
        outputs.append(_interrupt_a_query())
        if outputs[-1] is not None:
            break
    assert outputs[-1] == "KeyboardInterrupt from RuntimeError", outputs


def test_other_runtime_errors_pass_through() -> None:
    with pytest.raises(RuntimeError, match="something else"), ctrl_c_during_queries():
        raise RuntimeError("something else")
