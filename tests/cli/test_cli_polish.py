"""CLI polish: ``--version``; help readable at 80 columns (no ``<bool>`` for flags, nothing
cut with an ellipsis, paragraphs re-wrapped instead of hard-wrapped docstring fragments);
distinct default sandbox file names per option set (or a word that a file was overwritten);
thousands separators in summaries."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.cli.sandbox_cmd import warmup_sentence

WIDTH = 80
DARKPOOL = Path(sys.executable).with_name("darkpool")


def command_paths() -> list[list[str]]:
    """Every command and group, as argument lists (``[]`` = the root)."""
    paths: list[list[str]] = []

    def walk(command: object, prefix: list[str]) -> None:
        paths.append(prefix)
        subcommands = getattr(command, "commands", None)  # a group (Typer's Click core)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def description_lines(text: str) -> list[list[str]]:
    """The paragraphs between ``Usage:`` and the first section heading, as lists of lines."""
    body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    body = re.split(r"^\S.*:$", body, maxsplit=1, flags=re.M)[0]
    return [[line for line in block.splitlines() if line.strip()]
            for block in body.split("\n\n") if block.strip()]


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"darkpool {version('darkpool-analysis')}\n"
    done = subprocess.run([str(DARKPOOL), "--version"], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == f"darkpool {version('darkpool-analysis')}"


@pytest.mark.parametrize("args", command_paths(), ids=lambda a: " ".join(a) or "darkpool")
def test_help_at_80_columns(args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "<bool>" not in text
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    assert "[default: " not in text or all(
        line.count("[") == line.count("]") for line in text.splitlines()
        if "[default:" in line and "]" in line)
    # Re-wrapped, not hard-wrapped: no line of a paragraph ends where the next line's first
    # word would still have fitted (Click wraps at the width less 2).
    for paragraph in description_lines(text):
        for line, following in itertools.pairwise(paragraph):
            first_word = following.split()[0]
            assert len(line) + 1 + len(first_word) > WIDTH - 2, (line, following)


def test_root_help_in_a_real_terminal_width() -> None:
    env = {**os.environ, "COLUMNS": str(WIDTH)}
    done = subprocess.run([str(DARKPOOL), "--help"], capture_output=True, text=True,
                          env=env, check=True)
    assert "--version" in done.stdout and "<bool>" not in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= WIDTH
    demo = next(line for line in done.stdout.splitlines() if line.strip().startswith("demo"))
    assert not demo.rstrip().endswith(",")  # no docstring fragment as the summary


def test_summaries_use_thousands_separators() -> None:
    frame = pd.DataFrame({"date": pd.bdate_range("2020-01-01", periods=3)})
    frame.attrs.update(warmup_rows=1_500, warmup_asked=2_520, z_window=2_520)
    assert warmup_sentence(frame, True) == (
        "with warm-up of 1,500 of 2,520 sessions (no earlier data): the first 3 shown "
        "session(s) have short z windows")
