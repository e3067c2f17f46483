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
    try:
        with ctrl_c_during_queries():
            conn.execute("SELECT count(*) FROM range(100000000000) t(x) "
                         "WHERE x % 7 = 3").fetchall()
    except KeyboardInterrupt as exc:
        print("KeyboardInterrupt from", type(exc.__cause__).__name__, flush=True)
""")


def test_sigint_during_a_query_becomes_keyboard_interrupt() -> None:
    # A real process and a real SIGINT (what a terminal sends on Ctrl-C) during a query.
    process = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "running"
    time.sleep(0.5)  # the query is under way
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert out.strip() == "KeyboardInterrupt from RuntimeError"
    assert process.returncode == 0


def test_other_runtime_errors_pass_through() -> None:
    with pytest.raises(RuntimeError, match="something else"), ctrl_c_during_queries():
        raise RuntimeError("something else")
