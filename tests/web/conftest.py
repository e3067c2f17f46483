"""Fixture databases for the web tests, written through the real store and ingest code.

``web_db``: hand-made ``daily_metrics`` rows (a gap row, a missing session, two symbols) via
``store.open_writer``. ``demo_db``: the synthetic market of ``darkpool demo`` (FINRA CNMS files
and Yahoo CSVs ingested through the real code path, metrics built), marked synthetic.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from darkpool_analysis import store, trading_calendar
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.web import server as web_server
from darkpool_analysis.web.app import create_app

#: symbol -> (first session, last session)
SYMBOLS = {"NKE": ("2025-06-02", "2025-10-31"), "BRK.B": ("2025-08-01", "2025-10-31")}
GAP_ROW, MISSING_ROW = 50, 60  # NKE: a row without short data, and a session with no row
DEMO_TICKERS = ("NKE", "AAPL", "TSLA", "GME", "SPY", "MSFT")
ARTIFACTS = Path(__file__).parent / "artifacts"


def metrics_frame(symbol: str, start: str, end: str, seed: int) -> pd.DataFrame:
    """``daily_metrics`` rows with the seed's columns (stored z columns left NULL, so the
    sandbox recomputes them) on every session in ``[start, end]``."""
    rng = np.random.default_rng(seed)
    dates = trading_calendar.sessions_index(start, end)
    n = len(dates)
    total = rng.lognormal(np.log(4e6), 0.3, n).round()
    short = (total * rng.uniform(0.35, 0.62, n)).round()
    frame = pd.DataFrame({
        "symbol": symbol, "date": dates.date, "short_volume": short, "total_volume": total,
        "short_buy_volume": short, "short_sell_volume": total - short,
        "lit_buy_volume": rng.lognormal(np.log(9e5), 0.4, n).round(),
        "lit_sell_volume": rng.lognormal(np.log(9e5), 0.4, n).round(),
        "return_z": rng.normal(0, 1, n), "otc_participation_z": rng.normal(0, 1, n),
        "confidence": rng.choice([1.0, 0.7, 0.45], n),
    })
    lit_b, lit_s = frame["lit_buy_volume"], frame["lit_sell_volume"]
    frame["lit_flow_imbalance"] = (lit_b - lit_s) / (lit_b + lit_s)
    frame["short_buy_sell_ratio"] = np.nan
    frame["short_buy_sell_ratio_z"] = np.nan
    frame["lit_flow_imbalance_z"] = np.nan
    frame["finra_buy_volume_z"] = rng.normal(0, 1, n)
    if symbol == "NKE":
        frame.loc[GAP_ROW, ["short_volume", "short_buy_volume", "short_sell_volume"]] = np.nan
        frame = frame.drop(index=MISSING_ROW).reset_index(drop=True)
    frame["has_short"] = frame["short_volume"].notna()
    frame["inference_version"] = "test"
    return frame


@pytest.fixture(scope="session")
def web_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("web_db") / "darkpool.duckdb"
    frames = [metrics_frame(symbol, *span, seed=i)
              for i, (symbol, span) in enumerate(SYMBOLS.items())]
    with store.open_writer(db) as writer:
        writer.replace_partition("daily_metrics", pd.concat(frames, ignore_index=True),
                                 where="true", params=[])
    return db


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo market (6 tickers, 2025-03..12) through the real ingest and build."""
    from darkpool_analysis.pipeline import run_demo

    folder = tmp_path_factory.mktemp("demo_db")
    db = folder / "demo.duckdb"
    settings = load_config(db_path=db, output_dir=folder / "output")
    run_demo(settings, db_path=db, tickers=DEMO_TICKERS)
    return db


@pytest.fixture
def web_settings(web_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DARKPOOL_DB", str(web_db))
    return load_config(db_path=web_db, output_dir=tmp_path / "output")


@pytest.fixture
def demo_settings(demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DARKPOOL_DB", str(demo_db))
    return load_config(db_path=demo_db, output_dir=tmp_path / "output",
                       tickers=list(DEMO_TICKERS))


@pytest.fixture
def client(web_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(web_settings)) as test_client:
        yield test_client


@pytest.fixture
def demo_client(demo_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(demo_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots of the browser tests (gitignored; look at them)."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def serve(settings: Settings) -> Iterator[web_server.WebServer]:
    """The real uvicorn server on 127.0.0.1:<ephemeral> in a background thread."""
    httpd = web_server.make_server(port=0, settings=settings)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not httpd.server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield httpd
    httpd.shutdown()
    thread.join(timeout=10)
    httpd.close()


@pytest.fixture
def demo_server(demo_settings: Settings) -> Iterator[web_server.WebServer]:
    yield from serve(demo_settings)
