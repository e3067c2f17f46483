"""Synthetic multi-session Polygon flat files and helpers shared by the scale-out tests."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from darkpool_analysis.config import load_config
from darkpool_analysis.executor import make_executor
from darkpool_analysis.ingest.trades import DayIngestSummary, ingest_day_files
from darkpool_analysis.sources.flatfiles import write_synthetic_polygon_day
from darkpool_analysis.store import open_writer, read_frame

#: Four XNYS sessions (2024-03-08 is a Friday; the weekend has no files and no sessions).
DAYS = (dt.date(2024, 3, 6), dt.date(2024, 3, 7), dt.date(2024, 3, 8), dt.date(2024, 3, 11))
START, END = DAYS[0], DAYS[-1]


@pytest.fixture(scope="session")
def flat_root_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four sessions of ~4,000 trades and quotes over 40 tickers, written once per run."""
    root = tmp_path_factory.mktemp("flat")
    for day in DAYS:
        write_synthetic_polygon_day(root, day, trades=4000, quotes=4000, symbols=40, seed=7)
    return root


@pytest.fixture
def flat_root(flat_root_template: Path, tmp_path: Path) -> Path:
    """A private copy of the flat files (tests may break one of them)."""
    target = tmp_path / "flat"
    shutil.copytree(flat_root_template, target)
    return target


def run_ingest(db_path: Path, root: Path, spec: str = "serial", *, work_dir: Path,
               **options: object) -> DayIngestSummary:
    """``ingest_day_files`` over :data:`DAYS` on the executor ``spec`` into ``db_path``."""
    settings = load_config().model_copy(update={"db_path": db_path})
    with open_writer(db_path) as writer, make_executor(spec) as executor:
        return ingest_day_files(writer, settings, source="polygon-flat", path=root,
                                start=START, end=END, executor=executor, work_dir=work_dir,
                                **options)  # type: ignore[arg-type]


def lit_rows(db_path: Path) -> pd.DataFrame:
    """``lit_direction_daily`` without the ingestion timestamp, in a fixed order."""
    return read_frame(db_path, "SELECT * EXCLUDE (fetched_at) FROM lit_direction_daily "
                               "ORDER BY date, symbol")
