"""Single-ticker evaluation on the real GME files (Dec 2020 - Feb 2021): time-series mode, no
NaN tables, a justified verdict, nothing on stderr."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from darkpool_analysis.cli import app


@pytest.mark.realdata
@pytest.mark.slow
def test_gme_alone_runs_in_time_series_mode(real_data: Path, db_path: Path,
                                            tmp_path: Path) -> None:
    runner = CliRunner()
    cnms = real_data / "regsho_daily" / "McNuggett_2020-12_2021-02"
    ohlcv = real_data / "ohlcv" / "McNuggett_ticker-data_2020-11_2021-02"
    result = runner.invoke(app, ["ingest", "finra-short", "--from-dir", str(cnms),
                                 "--start", "2020-12-01", "--end", "2021-02-12"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["ingest", "prices", "--from-dir", str(ohlcv), "--all",
                                 "--start", "2020-11-30", "--end", "2021-02-12"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "gme"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a matplotlib UserWarning would fail here
        result = runner.invoke(app, ["evaluate", "--universe", "GME", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output.lower()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["mode"] == "time_series"
    for name in ("current", "option_a", "option_b"):
        verdict = summary["variants"][name]
        assert verdict["verdict"] in ("insufficient_data", "no_evidence", "evidence")
        assert verdict["reason"].startswith(verdict["verdict"].replace("_", " "))
        if verdict["verdict"] == "insufficient_data":
            assert "sessions" in verdict["reason"]  # says what range would allow it
    html = (out / "report.html").read_text(encoding="utf-8")
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "time-series mode" in text
    assert not re.search(r">\s*[+-]?nan\s*<", text, flags=re.IGNORECASE)
    assert "walk-forward needs 168 sessions" in text  # said in the report, not only stderr
    unknown = runner.invoke(app, ["evaluate", "--universe", "GMEE", "--out",
                                  str(tmp_path / "x")])
    assert unknown.exit_code == 1
    assert "GMEE" in unknown.output and "GME" in unknown.output.replace("GMEE", "")
