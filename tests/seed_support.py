"""The user's seed notebook as an independent oracle: its code cells, run as the user would.

The seed (``../shared/seed/000_48513c3cb404cffd.txt``) separates code cells with
``In [None]:``. Tests run the cells verbatim, optionally replacing only the three parameter
assignments of the first cell, with ``plt.show`` saving the current figure instead.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest

SEED_FILE = "000_48513c3cb404cffd.txt"
SEED_PARAMS = ("TICKER", "START_DATE", "END_DATE")
#: The seed's seven panel titles, copied from the notebook (the oracle, not from our code).
SEED_TITLES = [
    "Combined Buy/Sell Ratio",
    "Volume Weighted Directional Flow",
    "FINRA Buy Volume (B)",
    "Short Sale Buy/Sell Ratio",
    "Accumulation Score (Current)",
    "Accumulation Score (Option A: vw_flow_z)",
    "Accumulation Score (Option B: blended)",
]


def seed_cells(seed_dir: Path) -> list[str]:
    """The seed's code cells in order (the markdown header before the first cell dropped)."""
    text = (seed_dir / SEED_FILE).read_text(encoding="utf-8")
    cells = text.split("In [None]:")[1:]
    assert len(cells) == 5, "the seed notebook should have 5 code cells"
    return cells


def with_params(cell: str, ticker: str, start: str, end: str) -> str:
    """Replace the three parameter assignments of the seed's first cell (and nothing else)."""
    for name, value in zip(SEED_PARAMS, (ticker, start, end), strict=True):
        cell, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", cell, flags=re.M)
        assert count == 1, f"seed cell 1 should assign {name} exactly once"
    return cell


@dataclass
class SeedRun:
    """What running the notebook produced: its final frame, experimental signal, figures."""

    df: object
    signal: object
    figures: list[tuple[Path, int]] = field(default_factory=list)  # (png, number of axes)


def run_seed_notebook(cells: list[str], out_dir: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> SeedRun:
    """Execute ``cells`` in one namespace; every ``plt.show()`` saves a PNG into ``out_dir``."""
    saved: list[tuple[Path, int]] = []

    def show() -> None:
        fig = plt.gcf()
        path = out_dir / f"seed_figure_{len(saved)}.png"
        fig.savefig(path, dpi=40, facecolor=fig.get_facecolor())
        saved.append((path, len(fig.get_axes())))
        plt.close(fig)

    monkeypatch.setattr(plt, "show", show)
    namespace: dict[str, object] = {"__name__": "seed_notebook"}
    with matplotlib.rc_context():  # the seed calls plt.style.use(); keep it out of other tests
        try:
            for number, cell in enumerate(cells, start=1):
                exec(compile(cell, f"seed-cell-{number}", "exec"), namespace)
        finally:
            plt.close("all")
    run = SeedRun(namespace.get("df"), namespace.get("signal"), saved)
    # The seed's tick formatters close over this namespace (figures <-> DuckDB connection
    # cycle): break it now rather than at interpreter exit.
    namespace.clear()
    gc.collect()
    return run
