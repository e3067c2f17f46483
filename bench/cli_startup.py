"""Cold start of the ``darkpool`` CLI: wall seconds of ``--help`` (best of N fresh processes)
next to a bare interpreter start in the same run, and which heavy modules ``--help`` imports.

Usage: ``python bench/cli_startup.py [--runs 5] [--before-src DIR]``. Prints one line per
command. ``--before-src`` (the ``src`` folder of another checkout, e.g. a ``git worktree`` of an
older commit) adds the same commands run from that source tree, side by side in the same run.
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


def from_source(src: str, args: list[str]) -> list[str]:
    """The CLI run from the package in ``src`` (first on sys.path) with ``args``."""
    code = (f"import sys\nsys.path.insert(0, {src!r})\nsys.argv = ['darkpool', *sys.argv[1:]]\n"
            "from darkpool_analysis.cli import main\nmain()")
    return [sys.executable, "-c", code, *args]


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
    parser.add_argument("--before-src", help="src folder of the checkout to compare with")
    options = parser.parse_args()
    runs = options.runs
    commands = dict(COMMANDS)
    if options.before_src:
        here = str(Path(__file__).resolve().parents[1] / "src")
        for args in (["--help"], ["sandbox", "--help"]):
            label = " ".join(args)
            commands[f"before: darkpool {label}"] = from_source(options.before_src, args)
            commands[f"after:  darkpool {label}"] = from_source(here, args)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; best of {runs}")
    baseline = None
    for name, command in commands.items():
        seconds = best_of(command, runs)
        baseline = baseline or seconds
        print(f"{name:30s} {seconds:6.3f} s  ({seconds / baseline:5.1f} x bare interpreter)")
    for args in (["--help"], ["sandbox", "--help"]):
        print(f"heavy modules imported by darkpool {' '.join(args)}: "
              f"{', '.join(heavy_imports(args)) or 'none'}")
    print(f"python {sys.version.split()[0]} at {Path(sys.executable).parent}")


if __name__ == "__main__":
    main()
