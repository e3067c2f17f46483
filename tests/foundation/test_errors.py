"""``errors.ctrl_c_during_queries``: a Ctrl-C while DuckDB runs a query is an interruption.

DuckDB's Python client answers a SIGINT during a query with ``RuntimeError('Query
interrupted')``. The real signal path, end to end, is
``tests/scale/test_scale_interrupt.py`` (a Ctrl-C sent to a running ingest exits 130); a
subprocess test of the signal alone proved timing-dependent under pytest-xdist, so here the
mapping itself is checked.
"""

from __future__ import annotations

import pytest

from darkpool_analysis.errors import ctrl_c_during_queries


def test_duckdb_query_interrupted_becomes_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt) as caught, ctrl_c_during_queries():
        raise RuntimeError("Query interrupted")
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_other_runtime_errors_pass_through() -> None:
    with pytest.raises(RuntimeError, match="something else"), ctrl_c_during_queries():
        raise RuntimeError("something else")
