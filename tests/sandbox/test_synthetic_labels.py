"""Every output made from a synthetic database says so (the demo marks it in
``database_meta``): sandbox chart titles, the experimental and lab figures, the sandbox CSV,
``db info``, market CSVs; a real database gets no label."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from darkpool_analysis import sandbox, sandbox_lab
from darkpool_analysis.cli import app
from darkpool_analysis.synthetic import SYNTHETIC_LABEL
from darkpool_analysis.views import lab_chart, sandbox_chart

TITLE = f"NKE - Accumulation Signal Sandbox — {SYNTHETIC_LABEL}"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real ``darkpool demo`` database (synthetic market through the real ingest path)."""
    folder = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--db", str(folder / "demo.duckdb")],
                                env={"DARKPOOL_OUTPUT_DIR": str(folder / "output")})
    assert result.exit_code == 0, result.output
    return folder / "demo.duckdb"


@pytest.fixture
def demo_env(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DARKPOOL_DB", str(demo_db))
    return demo_db


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_sandbox_chart_csv_experimental_and_lab_are_labelled(demo_env: Path,
                                                             tmp_path: Path) -> None:
    out, csv = tmp_path / "nke.png", tmp_path / "nke.csv"
    code, text = invoke("sandbox", "NKE", "--start", "2025-11-03", "--end", "2025-12-31",
                        "--out", str(out), "--csv", str(csv), "--experimental",
                        "--variants", "current,option_a", "--panels", "price")
    assert code == 0, text
    assert out.read_bytes().startswith(b"\x89PNG")
    lines = csv.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"# {SYNTHETIC_LABEL}" and lines[1].startswith("date,")
    frame = pd.read_csv(csv, comment="#")
    assert len(frame) > 30 and frame["symbol"].eq("NKE").all()

    loaded = sandbox.load("NKE", "2025-11-03", "2025-12-31")
    assert loaded.attrs["synthetic_label"] == SYNTHETIC_LABEL
    assert sandbox_chart.plot(loaded).get_suptitle() == TITLE
    experimental = sandbox_chart.plot_experimental(loaded)
    assert experimental.axes[0].get_title(loc="right") == SYNTHETIC_LABEL
    assert experimental.axes[0].get_title(loc="left") == "Imbalance * log1p(B + S)"
    variants = sandbox_lab.plan_lab("current,option_a", [], [], "price", None, None, 20)
    assert variants is not None
    lab = sandbox_lab.load_lab("NKE", "2025-11-03", "2025-12-31", variants.to_compute)
    assert lab.synthetic_label == SYNTHETIC_LABEL
    fig = lab_chart.plot_lab(lab, variants.variants, variants.panels.lab)
    assert fig.get_suptitle() == f"NKE - Signal Lab — {SYNTHETIC_LABEL}"


def test_demo_chart_is_labelled_once(demo_env: Path) -> None:
    frame = sandbox.load("NKE", "2025-11-03", "2025-12-31")
    titled = sandbox_chart.plot(frame, title=f"NKE - Accumulation Signal Sandbox "
                                             f"({SYNTHETIC_LABEL})")
    assert titled.get_suptitle().count(SYNTHETIC_LABEL) == 1


def test_db_info_names_the_synthetic_database(demo_env: Path) -> None:
    code, text = invoke("db", "info")
    assert code == 0, text
    flat = " ".join(text.split())
    assert flat.startswith(f"{SYNTHETIC_LABEL}: deterministic synthetic market written by "
                           "`darkpool demo`")
    assert "(SYNTHETIC)" in flat


def test_market_scan_csv_is_labelled(demo_env: Path) -> None:
    code, text = invoke("scan", "--date", "2025-12-31", "--top", "3", "--format", "csv")
    assert code == 0, text
    assert text.splitlines()[0] == f"# {SYNTHETIC_LABEL}"
    assert len(pd.read_csv(io.StringIO(text), comment="#")) == 6


def test_real_database_outputs_carry_no_label(sandbox_env: Path, tmp_path: Path) -> None:
    csv = tmp_path / "nke.csv"
    code, text = invoke("sandbox", "NKE", "--start", "2025-11-03", "--end", "2025-11-28",
                        "--out", str(tmp_path / "nke.png"), "--csv", str(csv))
    assert code == 0, text
    assert csv.read_text(encoding="utf-8").startswith("date,")
    frame = sandbox.load("NKE", "2025-11-03", "2025-11-28")
    assert frame.attrs["synthetic_label"] is None
    assert sandbox_chart.plot(frame).get_suptitle() == "NKE - Accumulation Signal Sandbox"
    code, text = invoke("db", "info")
    assert code == 0 and "SYNTHETIC" not in text
