"""Cold start of the ``darkpool`` CLI: wall seconds of ``--help`` (best of N fresh processes)
next to a bare interpreter start in the same run, and which heavy modules ``--help`` imports.

Usage: ``python bench/cli_startup.py [--runs 5]``. Prints one line per command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

#: Modules a help screen should never need to import.
HEAVY = ("pandas", "numpy", "duckdb", "matplotlib", "pyarrow", "exchange_calendars",
         "pydantic_settings", "httpx", "scipy")

#: The console script next to this interpreter (what ``make`` installs).
DARKPOOL = str(Path(sys.executable).with_name("darkpool"))
COMMANDS: dict[str, list[str]] = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "darkpool --help": [DARKPOOL, "--help"],
    "darkpool sandbox --help": [DARKPOOL, "sandbox", "--help"],
    "darkpool --version": [DARKPOOL, "--version"],
}


def best_of(command: list[str], runs: int) -> float:
    """Fastest wall time of ``runs`` fresh processes (stdout discarded)."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - started)
    return best


def heavy_imports(args: list[str]) -> list[str]:
    """Heavy top-level packages imported while running the CLI with ``args``."""
    code = ("import sys\nsys.argv = ['darkpool', *sys.argv[1:]]\n"
            "from darkpool_analysis.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, check=True)
    lines = done.stderr.splitlines()
    return [m for m in (lines[-1] if lines else "").split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; best of {runs}")
    baseline = None
    for name, command in COMMANDS.items():
        seconds = best_of(command, runs)
        baseline = baseline or seconds
        print(f"{name:28s} {seconds:6.3f} s  ({seconds / baseline:5.1f} x bare interpreter)")
    for args in (["--help"], ["sandbox", "--help"]):
        print(f"heavy modules imported by darkpool {' '.join(args)}: "
              f"{', '.join(heavy_imports(args)) or 'none'}")
    print(f"python {sys.version.split()[0]} at {Path(sys.executable).parent}")


if __name__ == "__main__":
    main()
