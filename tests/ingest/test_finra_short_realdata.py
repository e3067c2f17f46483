"""Real FINRA Reg SHO files from ``../shared/data/real/regsho_daily`` (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.ingest.finra_short import ingest_finra_short
from darkpool_analysis.sources.finra_short import parse_short_table
from darkpool_analysis.store import connect_readonly

pytestmark = pytest.mark.realdata

MCNUGGETT = "McNuggett_2020-12_2021-02"
POOKIEMAKER = "pookiemaker_shorts_2020-01"


@pytest.fixture
def regsho(real_data: Path) -> Path:
    folder = real_data / "regsho_daily"
    if not folder.is_dir():
        pytest.skip(f"no {folder}")
    return folder


def _query(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = connect_readonly(db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _trailer(data: bytes) -> int:
    """Independent oracle: the last non-empty line as an integer."""
    return int(data.strip().splitlines()[-1])


def test_every_real_file_parses_and_matches_its_trailer(regsho: Path) -> None:
    files = sorted(p for p in regsho.rglob("*.txt") if p.is_file())
    assert len(files) >= 79
    for path in files:
        data = path.read_bytes()
        table = parse_short_table(data, path.name)
        assert table.num_rows == _trailer(data), path.name
        assert table.num_rows == len(set(table["symbol"].to_pylist())), path.name


def test_cnms_equals_sum_of_facilities_per_symbol(regsho: Path, db_path: Path) -> None:
    summary = ingest_finra_short(load_config(db_path=db_path), "2020-01-02", "2020-01-09",
                                 "all", from_dir=regsho / POOKIEMAKER)
    assert summary.ok
    assert summary.counts["ingested"] == 36
    mismatches = _query(db_path, """
        WITH parts AS (
            SELECT trade_date, symbol, sum(short_volume) AS short_volume,
                   sum(short_exempt_volume) AS short_exempt_volume,
                   sum(total_volume) AS total_volume
            FROM finra_short_daily_raw
            WHERE facility IN ('FNSQ', 'FNQC', 'FNYX', 'FNRA')
            GROUP BY trade_date, symbol
        ), cnms AS (
            SELECT trade_date, symbol, short_volume, short_exempt_volume, total_volume
            FROM finra_short_daily_raw WHERE facility = 'CNMS'
        )
        SELECT coalesce(c.trade_date, p.trade_date), coalesce(c.symbol, p.symbol)
        FROM cnms c FULL OUTER JOIN parts p USING (trade_date, symbol)
        WHERE c.short_volume IS DISTINCT FROM p.short_volume
           OR c.short_exempt_volume IS DISTINCT FROM p.short_exempt_volume
           OR c.total_volume IS DISTINCT FROM p.total_volume
    """)
    assert mismatches == []
    assert _query(db_path, "SELECT count(DISTINCT trade_date) FROM finra_short_daily_raw "
                           "WHERE facility = 'CNMS'") == [(6,)]


def _snapshot(db_path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Table contents that must not depend on where the files came from."""
    queries = {
        "raw": "SELECT * EXCLUDE (fetched_at) FROM finra_short_daily_raw "
               "ORDER BY trade_date, facility, symbol",
        "sources": "SELECT * EXCLUDE (fetched_at, location) FROM source_files "
                   "ORDER BY dataset, partition_key",
        "log": "SELECT dataset, partition_key, trade_date, outcome, rows, sha256, message "
               "FROM ingest_log ORDER BY partition_key",
    }
    return {name: _query(db_path, sql) for name, sql in queries.items()}


def test_done_when_cli_from_dir_then_same_database_over_http(
        regsho: Path, tmp_path: Path, db_path: Path, httpserver: HTTPServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = regsho / MCNUGGETT
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "finra-short", "--from-dir", str(folder),
                                 "--start", "2020-12-01", "--end", "2021-02-12"])
    assert result.exit_code == 0, result.output
    assert _query(db_path, "SELECT count(DISTINCT trade_date), count(*) "
                           "FROM finra_short_daily_raw") == [(51, 465823)]
    assert _query(db_path, "SELECT count(*) FROM source_files") == [(51,)]

    for path in folder.iterdir():
        httpserver.expect_request(f"/equity/regsho/daily/{path.name}").respond_with_data(
            path.read_bytes())
    http_db = tmp_path / "http" / "darkpool.duckdb"
    monkeypatch.setenv("DARKPOOL_DB", str(http_db))
    monkeypatch.setenv("FINRA_CDN_URL", httpserver.url_for("/equity/regsho/daily"))
    result = runner.invoke(app, ["ingest", "finra-short", "--start", "2020-12-01",
                                 "--end", "2021-02-12"])
    assert result.exit_code == 0, result.output
    assert len(httpserver.log) == 51
    assert _snapshot(http_db) == _snapshot(db_path)
