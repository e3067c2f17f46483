"""``darkpool --help`` and ``darkpool sandbox --help`` start cold without the heavy libraries
(the timings are in bench/cli_startup.py and BENCHMARKS.md; this holds the imports)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("pandas", "numpy", "duckdb", "matplotlib", "pyarrow", "exchange_calendars",
         "pydantic_settings", "httpx", "scipy")

PROBE = """
import sys
sys.argv = ["darkpool", *sys.argv[1:]]
from darkpool_analysis.cli import main
try:
    main()
except SystemExit:
    pass
print("IMPORTED=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["sandbox", "--help"], ["--version"],
                                  ["ingest", "trades", "--help"], ["run", "--help"],
                                  ["db", "info", "--help"]], ids=" ".join)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
                          capture_output=True, text=True, check=True)
    assert "Usage:" in done.stdout or done.stdout.startswith("darkpool ")
    imported = done.stderr.rsplit("IMPORTED=", 1)[1].strip()
    assert imported == "", f"darkpool {' '.join(args)} imported {imported}"


def test_trade_option_defaults_equal_the_library() -> None:
    from darkpool_analysis.cli import ingest_trades as cli
    from darkpool_analysis.ingest import trades
    from darkpool_analysis.sources import trades as sources

    assert cli.POLYGON_MAX_PAGES == sources.POLYGON_MAX_PAGES
    assert cli.DEFAULT_CHUNK_MB == trades.DEFAULT_CHUNK_MB
    assert cli.DEFAULT_BATCH_DAYS == trades.DEFAULT_BATCH_DAYS
