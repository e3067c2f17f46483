"""The user's seed notebook still runs, unchanged except its three parameters, against a
database the package wrote, and its numbers equal ``sandbox.load(..., warmup=False)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis import sandbox
from seed_support import run_seed_notebook


def test_all_seed_cells_run_and_match_the_library(
        seed_notebook: Callable[[str, str, str], list[str]], sandbox_env: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_seed_notebook(seed_notebook("NKE", "2025-10-01", "2025-11-28"), tmp_path,
                            monkeypatch)
    seed, signal = run.df, run.signal

    assert [axes for _, axes in run.figures] == [7, 1]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path, _ in run.figures)
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
