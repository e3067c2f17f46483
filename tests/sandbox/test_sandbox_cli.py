"""``darkpool sandbox`` end to end through Typer's CliRunner on a fixture database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from darkpool_analysis import sandbox
from darkpool_analysis.cli import app

Sessions = Callable[[str], list[dt.date]]


def run(*args: str) -> tuple[int, str]:
    """Exit code and the combined output with line wrapping undone."""
    result = CliRunner().invoke(app, ["sandbox", *args])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    return result.exit_code, " ".join(text.split())


def test_default_range_and_output_path(sandbox_env: Path, clean_env: Path,
                                       sessions_of: Sessions) -> None:
    dates = sessions_of("NKE")
    first, last = dates[-60], dates[-1]
    code, text = run("nke")
    assert code == 0, text
    chart = clean_env / "output" / f"NKE_sandbox_{first}_{last}.png"
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert f"NKE {first} .. {last}: 60 rows, with warm-up" in text
    frame = sandbox.load("NKE", first, last)
    cells = " ".join(text.replace("│", " ").split())
    for variant, column in sandbox.VARIANT_COLUMNS.items():
        values = frame[column].to_numpy(float)
        counts = [(values >= 70).sum(), (values <= 30).sum(),
                  ((values > 30) & (values < 70)).sum(), np.isnan(values).sum()]
        assert f"{variant} {' '.join(str(c) for c in counts)}" in cells
    # The fixture's empty session dates[-9] lies inside the default range.
    assert f"data gaps 1 session(s) without short data: {dates[-9]}" in text


@pytest.mark.parametrize("suffix", [".svg", ".pdf", ".png"])
def test_out_formats_and_experimental(sandbox_env: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / "charts" / f"nke{suffix}"
    code, text = run("NKE", "--start", "2025-11-03", "--end", "2025-11-28", "--out", str(out),
                     "--experimental", "--dot-mode", "all")
    assert code == 0, text
    magic = {".svg": b"<?xml", ".pdf": b"%PDF", ".png": b"\x89PNG"}[suffix]
    assert out.read_bytes().startswith(magic)
    assert (tmp_path / "charts" / f"nke_experimental{suffix}").read_bytes().startswith(magic)
    assert "no data gaps" in text


def test_seed_exact_csv_equals_library_without_warmup(sandbox_env: Path,
                                                      tmp_path: Path) -> None:
    csv = tmp_path / "frame.csv"
    code, text = run("BRK/B", "--start", "2025-10-01", "--end", "2025-11-28", "--seed-exact",
                     "--csv", str(csv), "--out", str(tmp_path / "c.png"),
                     "--blend-short-weight", "0.3", "--blend-flow-weight", "0.7")
    assert code == 0, text
    assert "seed-exact z windows" in text
    written = pd.read_csv(csv)
    expected = sandbox.load("BRK.B", "2025-10-01", "2025-11-28", warmup=False,
                            blend_short_weight=0.3, blend_flow_weight=0.7)
    assert written["date"].tolist() == expected["date"].dt.strftime("%Y-%m-%d").tolist()
    for column in ("vw_flow_z", "acc_score_current", "acc_score_a", "acc_score_b"):
        np.testing.assert_allclose(written[column], expected[column], rtol=1e-12,
                                   equal_nan=True)
    warm = sandbox.load("BRK.B", "2025-10-01", "2025-11-28")
    assert not np.allclose(written["vw_flow_z"], warm["vw_flow_z"], equal_nan=True)


def test_unknown_ticker_message(sandbox_env: Path) -> None:
    code, text = run("NKEE")
    assert code == 1
    assert "error: unknown ticker NKEE" in text and "close symbols: NKE" in text
    assert "darkpool ingest finra-short" in text and "darkpool build --tickers NKEE" in text
    assert "Traceback" not in text


def test_empty_range_message(sandbox_env: Path, clean_env: Path) -> None:
    code, text = run("NKE", "--start", "2024-01-02", "--end", "2024-02-01")
    assert code == 1
    assert "no daily_metrics rows for NKE between 2024-01-02 and 2024-02-01" in text
    assert "from 2025-06-02 to 2025-12-31 (148 sessions)" in text
    assert not (clean_env / "output").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "chart.jpg"], "must end in .png, .svg, .pdf"),
    (["--csv", "frame.txt"], "must end in .csv"),
    (["--start", "2025-12-01", "--end", "2025-11-01"], "is after --end"),
    (["--start", "yesterday"], "is not a date"),
    (["--dot-mode", "bogus"], "bogus"),
])
def test_bad_options_exit_2(sandbox_env: Path, args: list[str], message: str) -> None:
    code, text = run("NKE", *args)
    assert code == 2
    assert message in text


def test_missing_database(clean_env: Path) -> None:
    code, text = run("NKE")
    assert code == 1
    assert "no database at" in text
