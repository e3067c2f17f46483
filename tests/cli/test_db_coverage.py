"""``darkpool db info --ticker`` (each source's first/last date and gaps, sources that never
overlap or start later) and ``darkpool db symbols [--like]``, on files ingested by the CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from darkpool_analysis import trading_calendar
from darkpool_analysis.cli import app
from darkpool_analysis.synthetic import write_market

SHORT_START, END = dt.date(2025, 9, 15), dt.date(2025, 10, 31)
MISSING_FILE = dt.date(2025, 10, 8)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


@pytest.fixture
def market_db(tmp_path: Path, db_path: Path) -> Path:
    """FINRA short files 2025-09-15..10-31 without 10-08; GME prices from 09-29 on, NKE
    prices only before the short data (09-01..09-12), AAPL prices throughout."""
    market = write_market(tmp_path / "market", tickers=("GME", "NKE", "AAPL"),
                          start=dt.date(2025, 9, 1), end=END)
    (market.finra_dir / f"CNMSshvol{MISSING_FILE:%Y%m%d}.txt").unlink()
    for ticker, keep in (("GME", lambda d: d >= "2025-09-29"),
                         ("NKE", lambda d: d <= "2025-09-12")):
        path = market.prices_dir / f"{ticker}.csv"
        bars = pd.read_csv(path)
        bars.loc[bars["Date"].map(keep)].to_csv(path, index=False)
    code, text = invoke("ingest", "finra-short", "--from-dir", str(market.finra_dir),
                        "--start", str(SHORT_START), "--end", str(END))
    assert code == 0, text
    code, text = invoke("ingest", "prices", "--from-dir", str(market.prices_dir),
                        "--tickers", "GME,NKE,AAPL", "--start", "2025-09-01", "--end", str(END))
    assert code == 0, text
    return db_path


def test_ticker_coverage_with_gaps_and_a_later_start(market_db: Path) -> None:
    code, text = invoke("db", "info", "--ticker", "gme")
    assert code == 0, text
    sessions = len(trading_calendar.sessions_between(SHORT_START, END))
    assert (f"FINRA short {sessions - 1:,} sessions {SHORT_START} {END} 1") in text
    price_days = len(trading_calendar.sessions_between("2025-09-29", END))
    assert f"prices {price_days} sessions 2025-09-29 {END} 0" in text
    assert "lit direction none" in text and "FINRA OTC weekly none" in text
    assert (f"data gaps FINRA short: 1 session(s) without data between {SHORT_START} and "
            f"{END}: {MISSING_FILE}") in text
    assert (f"note: GME prices: starts 2025-09-29, 10 session(s) after the FINRA short data "
            f"({SHORT_START})") in text
    assert "do not overlap" not in text
    assert "Tables" not in text  # --ticker shows that ticker, not the whole inventory


def test_sources_that_do_not_overlap_are_flagged(market_db: Path) -> None:
    code, text = invoke("db", "info", "--ticker", "NKE")
    assert code == 0, text
    assert (f"warning: NKE: FINRA short ({SHORT_START} .. {END}) and prices (2025-09-02 .. "
            "2025-09-12) do not overlap: no day combines them") in text
    code, text = invoke("db", "info")
    assert code == 0 and "do not overlap" not in text  # over all symbols the ranges meet


def test_unknown_ticker_names_close_symbols(market_db: Path) -> None:
    code, text = invoke("db", "info", "--ticker", "GMEE")
    assert code == 1
    assert "unknown ticker GMEE: no source has it (close symbols: GME)" in text
    assert "db symbols --like" in text


def test_symbols_list_like_and_limit(market_db: Path) -> None:
    code, text = invoke("db", "symbols")
    assert code == 0, text
    assert "3 symbol(s)" in text
    assert "sessions with data per source (OTC: weeks)" in text
    assert "symbol short prices lit otc metrics first last" in text
    price_days = len(trading_calendar.sessions_between("2025-09-29", END))
    short_days = len(trading_calendar.sessions_between(SHORT_START, END)) - 1
    assert f"GME {short_days} {price_days} 0 0" in text
    assert f"NKE {short_days} 9 0 0" in text and "2025-09-02" in text
    code, text = invoke("db", "symbols", "--like", "gm")
    assert code == 0 and "1 symbol(s) containing 'gm'" in text
    assert " GME " in text and "NKE" not in text and "AAPL" not in text
    code, text = invoke("db", "symbols", "--limit", "2")
    assert code == 0 and "3 symbol(s) (first 2; --limit)" in text and "NKE" not in text
    code, text = invoke("db", "symbols", "--like", "zz")
    assert code == 1 and "no symbol(s) containing 'zz'" in text
