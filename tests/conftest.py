"""Shared fixtures: a clean environment, tmp databases, and the optional real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("MPLBACKEND", "Agg")

# Property tests check results, not speed: a shared 2-core CI machine must not make them flaky.
settings.register_profile("darkpool", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("darkpool")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("DARKPOOL_REAL_DATA",
                                PROJECT_ROOT.parent / "shared" / "data" / "real"))
SEED_DIR = PROJECT_ROOT.parent / "shared" / "seed"

_OUR_VARS = ("DARKPOOL_", "FINRA_", "POLYGON_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test depends on the developer's environment, .env or darkpool.toml."""
    for name in list(os.environ):
        if name.startswith(_OUR_VARS):
            monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DARKPOOL_DB", str(tmp_path / "db" / "darkpool.duckdb"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return workdir


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The published database path that ``clean_env`` points DARKPOOL_DB at."""
    return tmp_path / "db" / "darkpool.duckdb"


@pytest.fixture
def real_data() -> Path:
    """``../shared/data/real``; the test is skipped when the folder is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data folder not found: {REAL_DATA}")
    return REAL_DATA


@pytest.fixture
def seed_dir() -> Path:
    if not SEED_DIR.is_dir():
        pytest.skip(f"seed folder not found: {SEED_DIR}")
    return SEED_DIR
