"""The user's seed notebook still runs, unchanged except its three parameters, against a
database the package wrote, and its numbers equal ``sandbox.load(..., warmup=False)``."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from darkpool_analysis import sandbox


def test_all_seed_cells_run_and_match_the_library(
        seed_notebook: Callable[[str, str, str], list[str]], sandbox_env: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved: list[tuple[Path, int]] = []

    def show() -> None:
        """Stand-in for ``plt.show()``: save the current figure, then close it."""
        fig = plt.gcf()
        path = tmp_path / f"seed_figure_{len(saved)}.png"
        fig.savefig(path, dpi=40, facecolor=fig.get_facecolor())
        saved.append((path, len(fig.get_axes())))
        plt.close(fig)

    monkeypatch.setattr(plt, "show", show)
    cells = seed_notebook("NKE", "2025-10-01", "2025-11-28")
    namespace: dict[str, object] = {"__name__": "seed_notebook"}
    with matplotlib.rc_context():  # the seed calls plt.style.use(); keep it out of other tests
        try:
            for number, cell in enumerate(cells, start=1):
                exec(compile(cell, f"seed-cell-{number}", "exec"), namespace)
        finally:
            plt.close("all")
    seed, signal = namespace["df"], namespace["signal"]
    # The seed's tick formatters are lambdas whose globals are this namespace, so its figures
    # and DuckDB connection form a cycle: break it now rather than at interpreter exit.
    namespace.clear()
    gc.collect()

    assert [axes for _, axes in saved] == [7, 1]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path, _ in saved)
    assert isinstance(seed, pd.DataFrame)
    ours = sandbox.load("NKE", "2025-10-01", "2025-11-28", warmup=False)
    assert len(ours) == len(seed) == 42
    for column in ("acc_score_current", "acc_score_a", "acc_score_b", "vw_flow_z",
                   "combined_ratio", "confidence"):
        np.testing.assert_allclose(ours[column].to_numpy(float),
                                   pd.to_numeric(seed[column]).to_numpy(float),
                                   rtol=0, atol=1e-12, equal_nan=True, err_msg=column)
    np.testing.assert_allclose(ours["exp_signal"].to_numpy(float), np.asarray(signal, float),
                               rtol=1e-12, equal_nan=True)
