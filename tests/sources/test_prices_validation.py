"""Price inputs that used to be stored or to destroy stored bars (issue 10 items 3, 4 and 6).

Bad bars are refused naming file, line and field; a truncated file is an error, and data
covering fewer sessions than stored never shrinks the stored range without ``force``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.errors import DataFormatError
from darkpool_analysis.ingest.prices import ingest_prices
from darkpool_analysis.sources.prices import parse_polygon_aggs, read_yahoo_csv
from darkpool_analysis.store import open_writer, read_frame

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prices"
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
ROWS = ["2021-01-22,136.28,139.85,135.02,139.07,138.24,114459400",
        "2021-01-25,143.07,145.09,136.54,142.92,142.06,157611700",
        "2021-01-26,143.60,144.30,141.37,143.16,142.30,98390600",
        "2021-01-27,143.43,144.30,140.41,142.06,141.21,140843800"]


def _csv(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def _error(data: bytes) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        read_yahoo_csv(data, symbol="AAPL", source_name="AAPL.csv")
    assert info.value.source == "AAPL.csv"
    return info.value


# -- OHLC consistency (10.3) -------------------------------------------------------------------

@pytest.mark.parametrize("row, field, message", [
    ("2021-01-26,143.60,144.30,141.37,145.00,142.30,98390600", "Close", "close above high"),
    ("2021-01-26,143.60,144.30,141.37,140.00,139.00,98390600", "Close", "close below low"),
    ("2021-01-26,145.60,144.30,141.37,143.16,142.30,98390600", "Open", "open above high"),
    ("2021-01-26,140.60,144.30,141.37,143.16,142.30,98390600", "Open", "open below low"),
    ("2021-01-26,143.60,141.00,144.30,143.16,142.30,98390600", "High", "high is below low"),
])
def test_ohlc_outside_the_day_range_is_refused(row: str, field: str, message: str) -> None:
    err = _error(_csv(ROWS[0], row))
    assert (err.line, err.field) == (3, field)
    assert message in str(err)


def test_adjusted_close_below_low_is_a_documented_exception() -> None:
    # After dividends the adjusted close sits below the traded range: not an error.
    bars = read_yahoo_csv(_csv("2021-01-26,143.60,144.30,141.37,143.16,120.00,98390600"),
                          symbol="AAPL")
    assert bars["adj_close"].tolist() == [120.0]


# -- non-finite and implausible numbers (10.3, 10.6) ----------------------------------------------

@pytest.mark.parametrize("text", ["inf", "Infinity", "-inf", "1e400", "NaN", "nan"])
@pytest.mark.parametrize("column, name", [(1, "Open"), (4, "Close"), (5, "Adj Close"),
                                          (6, "Volume")])
def test_non_finite_numbers_are_refused(text: str, column: int, name: str) -> None:
    cells = ROWS[2].split(",")
    cells[column] = text
    err = _error(_csv(ROWS[1], ",".join(cells)))
    assert (err.line, err.field) == (3, name)


@pytest.mark.parametrize("column, name", [(2, "High"), (6, "Volume")])
def test_implausible_magnitudes_are_refused(column: int, name: str) -> None:
    cells = ROWS[2].split(",")
    cells[column] = "1e300"
    err = _error(_csv(ROWS[1], ",".join(cells)))
    assert (err.line, err.field) == (3, name)
    assert "implausible" in str(err)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "1e400"])
def test_polygon_non_finite_values_are_refused(token: str) -> None:
    text = ('{"status": "OK", "results": [{"t": 1611550800000, "o": 1, "h": 2, "l": 0.5, '
            f'"c": 1.5, "v": {token}, "vw": 1.2}}]}}')
    from darkpool_analysis.sources.prices import _polygon_json

    with pytest.raises(DataFormatError) as info:
        parse_polygon_aggs(_polygon_json(text.encode(), "polygon-url"), source="polygon-url",
                           symbol="GME")
    assert info.value.source == "polygon-url"


def test_polygon_close_above_high_names_the_bar() -> None:
    payload = json.loads('{"status": "OK", "results": [{"t": 1611550800000, "o": 1, "h": 2, '
                         '"l": 0.5, "c": 2.5, "v": 10}]}')
    with pytest.raises(DataFormatError, match="close above high") as info:
        parse_polygon_aggs(payload, source="polygon-url", symbol="GME")
    assert info.value.field == "c"


@pytest.mark.parametrize("symbol", ["A" * 100_000, "GM\tE", "<b>", 'G"ME'])
def test_symbol_outside_the_layout_is_refused(symbol: str) -> None:
    with pytest.raises(DataFormatError, match="symbol") as info:
        read_yahoo_csv(_csv(*ROWS), symbol=symbol, source_name="x.csv")
    assert len(str(info.value)) < 400


# -- truncated files (10.4) -----------------------------------------------------------------------

@pytest.mark.parametrize("cut", [9, 10, 25, 40])
def test_file_cut_inside_a_line_is_an_error_naming_file_and_line(cut: int) -> None:
    text = _csv(*ROWS).decode()
    last_start = text.rindex(ROWS[-1])
    for tail in ("", "\n"):
        data = (text[:last_start + cut] + tail).encode()
        err = _error(data)
        assert err.line == 5, (cut, str(err))


def test_yahoo_null_rows_are_still_skipped() -> None:
    bars = read_yahoo_csv(_csv(ROWS[0], "2021-01-25,null,null,null,null,null,null", ROWS[2]),
                          symbol="AAPL")
    assert len(bars) == 2


# -- a file covering less than stored must not shrink the stored range (10.4) ----------------------

@pytest.fixture
def yahoo_dir(tmp_path: Path) -> Path:
    target = tmp_path / "yahoo"
    shutil.copytree(FIXTURES / "yahoo", target)
    return target


def _bars(db_path: Path) -> pd.DataFrame:
    return read_frame(db_path, "SELECT * EXCLUDE (fetched_at) FROM prices_daily "
                               "ORDER BY symbol, date")


def _ingest(db_path: Path, folder: Path, *, force: bool = False) -> None:
    with open_writer(db_path) as writer:
        ingest_prices(writer, load_config(), dt.date(2021, 1, 22), dt.date(2021, 1, 27),
                      tickers=["AAPL"], from_dir=folder, force=force)


@pytest.mark.parametrize("kept", [[0, 1, 2], [0, 2, 3], [1]])
def test_fewer_sessions_than_stored_is_refused_without_force(db_path: Path, yahoo_dir: Path,
                                                            kept: list[int]) -> None:
    (yahoo_dir / "AAPL.csv").write_bytes(_csv(*ROWS))
    _ingest(db_path, yahoo_dir)
    before = _bars(db_path)
    (yahoo_dir / "AAPL.csv").write_bytes(_csv(*(ROWS[i] for i in kept)))
    with pytest.raises(DataFormatError, match="would delete") as info:
        _ingest(db_path, yahoo_dir)
    assert info.value.source == "AAPL.csv" and "--force" in (info.value.hint or "")
    pd.testing.assert_frame_equal(_bars(db_path), before)
    _ingest(db_path, yahoo_dir, force=True)
    assert len(_bars(db_path)) == len(kept)


def test_cli_truncated_file_exits_1_and_keeps_stored_bars(db_path: Path,
                                                          yahoo_dir: Path) -> None:
    (yahoo_dir / "AAPL.csv").write_bytes(_csv(*ROWS))
    runner = CliRunner()
    args = ["ingest", "prices", "--from-dir", str(yahoo_dir), "--tickers", "AAPL",
            "--start", "2021-01-22", "--end", "2021-01-27"]
    assert runner.invoke(app, args).exit_code == 0
    before = _bars(db_path)
    (yahoo_dir / "AAPL.csv").write_bytes(_csv(*ROWS[:3]))  # cut at a line boundary
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "would delete 1 stored AAPL bar" in result.output
    pd.testing.assert_frame_equal(_bars(db_path), before)
    (yahoo_dir / "AAPL.csv").write_bytes(_csv(*ROWS[:3]) + b"2021-01-2")  # cut in a date
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "AAPL.csv, line 5" in result.output
    pd.testing.assert_frame_equal(_bars(db_path), before)
