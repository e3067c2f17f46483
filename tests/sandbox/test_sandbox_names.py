"""``darkpool sandbox`` default file names: different options never write the same file, and
writing over an existing file says so."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from darkpool_analysis.cli import app


def test_sandbox_default_names_differ_by_option(sandbox_env: Path, clean_env: Path) -> None:
    runner = CliRunner()
    args = ["sandbox", "NKE", "--start", "2025-11-03", "--end", "2025-11-28"]
    variants = [[], ["--dot-mode", "all"], ["--seed-exact"],
                ["--blend-short-weight", "0.3", "--blend-flow-weight", "0.7"],
                ["--dot-mode", "own", "--no-warmup"]]
    for extra in variants:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        assert "overwrote" not in result.output
    names = sorted(p.name for p in (clean_env / "output").glob("NKE_sandbox_*.png"))
    assert names == sorted([
        "NKE_sandbox_2025-11-03_2025-11-28.png",
        "NKE_sandbox_2025-11-03_2025-11-28_dots-all.png",
        "NKE_sandbox_2025-11-03_2025-11-28_seed-exact.png",
        "NKE_sandbox_2025-11-03_2025-11-28_blend-0.3-0.7.png",
        "NKE_sandbox_2025-11-03_2025-11-28_dots-own_no-warmup.png",
    ])
    again = runner.invoke(app, [*args, "--dot-mode", "all"])
    assert again.exit_code == 0
    flat = " ".join(again.output.split())
    assert "overwrote output/NKE_sandbox_2025-11-03_2025-11-28_dots-all.png" in flat
