"""``darkpool run --offline-fallback demo`` (what ``make run`` calls): with the sources
unreachable it says so in one line, runs the same pipeline on the demo market, exits 0 and lists
what it wrote; plain ``darkpool run`` stays strict (exit 1)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from darkpool_analysis import trading_calendar
from darkpool_analysis.cli import app
from darkpool_analysis.store import is_synthetic, read_frame
from darkpool_analysis.synthetic import DEMO_END

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released: connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """FINRA CDN and Polygon at a closed local port (no request leaves the machine)."""
    port = closed_port()
    monkeypatch.setenv("FINRA_CDN_URL", f"http://127.0.0.1:{port}/regsho")
    monkeypatch.setenv("DARKPOOL_POLYGON_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("POLYGON_API_KEY", "offline-key")


def test_fallback_runs_the_demo_market_and_lists_what_it_wrote(
        offline: None, db_path: Path, clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--offline-fallback", "demo",
                                      "--tickers", "NKE,ZZZZ", "--days", "20"])
    assert result.exit_code == 0, result.output
    text = result.output
    offline_lines = [line for line in text.splitlines() if line.startswith("offline:")]
    assert len(offline_lines) == 1
    assert "cannot reach FINRA CDN, Polygon" in offline_lines[0]
    assert "synthetic demo market" in offline_lines[0]
    assert "SYNTHETIC" in offline_lines[0]

    demo_db = db_path.with_name("demo.duckdb")
    assert not db_path.exists()  # the real database is never touched by synthetic data
    meta = read_frame(demo_db, "SELECT key, value FROM database_meta")
    assert is_synthetic(dict(zip(meta["key"], meta["value"], strict=True)))
    window = trading_calendar.last_n_sessions(20, DEMO_END)
    chart = clean_env / "output" / f"demo_NKE_sandbox_{window[0]}_{window[-1]}.png"
    assert chart.read_bytes().startswith(b"\x89PNG")
    flat = " ".join(text.replace("│", " ").split())
    assert f"wrote database {demo_db} (SYNTHETIC" in text
    assert f"wrote chart NKE {chart.relative_to(clean_env)}" in text
    assert re.search(r"daily_metrics [\d,]+ rows built", flat)
    assert "no chart ZZZZ not in the synthetic demo market" in flat
    assert "Traceback" not in text and "offline-key" not in text


def test_without_the_fallback_run_stays_strict(offline: None, db_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--tickers", "NKE", "--days", "5"])
    assert result.exit_code == 1
    assert "cannot reach" in result.output and "--offline-fallback demo" in result.output
    assert not db_path.exists() and not db_path.with_name("demo.duckdb").exists()


def test_make_run_uses_the_fallback() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert recipe is not None
    assert "darkpool run --offline-fallback demo" in recipe.group(1)
