"""The DIX-style dark index on hand-made databases: dollar weighting, spans, gaps, coverage,
the rolling z, bad input and the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from market_db import flat, metrics_rows, sessions, write_metrics
from typer.testing import CliRunner

from darkpool_analysis import market
from darkpool_analysis.cli import app
from darkpool_analysis.errors import NoDataError
from darkpool_analysis.synthetic import SYNTHETIC_LABEL

DAYS = sessions("2024-03-04", 4)


def _row(symbol: str, day: object, short: float | None, total: float | None,
         close: float | None, volume: float | None, **extra: object) -> dict[str, object]:
    return {"symbol": symbol, "date": day, "short_volume": short, "total_volume": total,
            "close": close, "volume": volume, **extra}


def test_dollar_weighting_not_share_weighting(db_path: Path) -> None:
    # A: short ratio 0.5 at $10; B: short ratio 0.1 at $1000. Weighting by dollars, B dominates.
    write_metrics(db_path, metrics_rows([
        _row("A", DAYS[0], 100.0, 200.0, 10.0, 1_000.0),
        _row("B", DAYS[0], 10.0, 100.0, 1_000.0, 500.0),
    ]))
    frame = market.index(["A", "B"], DAYS[0], DAYS[0], db_path=db_path)
    row = frame.iloc[0]
    dollar = (100 * 10 + 10 * 1_000) / (200 * 10 + 100 * 1_000)
    shares = (100 + 10) / (200 + 100)
    assert row["dix"] == pytest.approx(dollar, rel=1e-15)
    assert row["dpi_equal_weight"] == pytest.approx((0.5 + 0.1) / 2, rel=1e-15)
    assert abs(row["dix"] - shares) > 0.25 and abs(row["dix"] - 0.3) > 0.15
    assert (row["members"], row["members_with_data"], row["dollar_coverage"]) == (2, 2, 1.0)
    assert list(frame.columns) == list(market.INDEX_COLUMNS)


@pytest.fixture
def spans_db(db_path: Path, tmp_path: Path) -> tuple[Path, Path]:
    d0, d1, d2, d3 = DAYS
    rows = [
        _row("A", d0, 60.0, 100.0, 20.0, 1_000.0), _row("A", d1, 40.0, 100.0, 20.0, 1_000.0),
        _row("A", d2, 50.0, 100.0, 20.0, 1_000.0), _row("A", d3, 30.0, 100.0, 20.0, 1_000.0),
        _row("B", d0, 20.0, 50.0, 40.0, 2_000.0),
        _row("B", d1, None, None, 40.0, 2_000.0, has_short=False, short_source=None),
        _row("B", d2, None, None, None, None, has_short=False, has_price=False,
             short_source=None),
        _row("B", d3, None, None, 40.0, 3_000.0, has_short=False, short_source=None),
        # C joins on d3: its (enormous) rows before that must never count
        _row("C", d0, 9e9, 1e10, 500.0, 1e9), _row("C", d1, 9e9, 1e10, 500.0, 1e9),
        _row("C", d2, 9e9, 1e10, 500.0, 1e9), _row("C", d3, 10.0, 40.0, 5.0, 100.0),
        # D leaves on d2 (exclusive end): a member on d0 and d1 only
        _row("D", d0, 70.0, 100.0, 10.0, 400.0), _row("D", d1, 80.0, 100.0, 10.0, 400.0),
        _row("D", d2, 1e9, 1e9, 10.0, 1e9), _row("D", d3, 1e9, 1e9, 10.0, 1e9),
        # E has only an ORF (OTC equities) short row: not a consolidated row, no data
        *[_row("E", d, 5.0, 10.0, 2.0, 50.0, short_source="FORF") for d in DAYS],
    ]
    write_metrics(db_path, metrics_rows(rows))
    members = tmp_path / "members.csv"
    members.write_text("ticker,start_date,end_date\n"
                       f"A,2020-01-02,\nB,2020-01-02,\nC,{d3},\nD,2020-01-02,{d2}\n"
                       "E,2020-01-02,\n")
    return db_path, members


def test_spans_gaps_coverage_and_consolidated_rows(spans_db: tuple[Path, Path]) -> None:
    db_path, members = spans_db
    frame = market.index(members, DAYS[0], DAYS[3], name="TEST", db_path=db_path)
    assert frame["date"].dt.date.tolist() == DAYS
    assert frame["members"].tolist() == [4, 4, 3, 4]  # C from d3, D until d2 (exclusive)
    assert frame["members_with_data"].tolist() == [3, 2, 1, 2]
    d0, d1, d2, d3 = (frame.iloc[i] for i in range(4))
    # d0: A, B, D have data (E's ORF row does not count; C is not yet a member)
    assert d0["dix"] == pytest.approx((60 * 20 + 20 * 40 + 70 * 10) / (100 * 20 + 50 * 40
                                                                       + 100 * 10), rel=1e-15)
    assert d0["dpi_equal_weight"] == pytest.approx((0.6 + 0.4 + 0.7) / 3, rel=1e-15)
    covered = 1_000 * 20 + 2_000 * 40 + 400 * 10
    assert d0["dollar_coverage"] == pytest.approx(covered / (covered + 50 * 2), rel=1e-15)
    # d1: exactly half the members have data -> a value, not a gap
    assert d1["dix"] == pytest.approx((40 * 20 + 80 * 10) / (100 * 20 + 100 * 10), rel=1e-15)
    assert d1["dollar_coverage"] == pytest.approx(
        (20_000 + 4_000) / (20_000 + 80_000 + 4_000 + 100), rel=1e-15)
    # d2: one member of three has data -> a gap; counts and coverage are still reported
    assert np.isnan(d2["dix"]) and np.isnan(d2["dpi_equal_weight"]) and np.isnan(d2["dix_z"])
    assert d2["dollar_coverage"] == pytest.approx(20_000 / (20_000 + 100), rel=1e-15)
    # d3: C is a member now, with its own small row
    assert d3["dix"] == pytest.approx((30 * 20 + 10 * 5) / (100 * 20 + 40 * 5), rel=1e-15)
    assert frame.attrs["members_without_data"] == ["E"]
    assert frame.attrs["name"] == "TEST" and frame.attrs["synthetic"] is False
    assert frame.attrs["label"] is None


def test_rolling_z_has_a_warm_up_and_does_not_depend_on_the_range(db_path: Path) -> None:
    days = sessions("2024-01-02", 45)
    rng = np.random.default_rng(4)
    rows = []
    for symbol in ("A", "B", "C"):
        total = rng.uniform(1e5, 1e6, len(days))
        short = total * rng.uniform(0.3, 0.6, len(days))
        close = rng.uniform(10, 200, len(days))
        rows += [_row(symbol, d, s, t, c, 1e6) for d, s, t, c in
                 zip(days, short, total, close, strict=True)]
    write_metrics(db_path, metrics_rows(rows))
    full = market.index(["A", "B", "C"], days[0], days[-1], db_path=db_path)
    late = market.index(["A", "B", "C"], days[30], days[-1], db_path=db_path)
    tail = full.iloc[30:].reset_index(drop=True)
    pd.testing.assert_frame_equal(late, tail, check_exact=False, rtol=1e-12, atol=1e-12)
    # oracle: plain pandas over the whole series, population std, 20 sessions, >= 5 values
    rolling = full["dix"].rolling(20, min_periods=5)
    expected = (full["dix"] - rolling.mean()) / rolling.std(ddof=0)
    np.testing.assert_allclose(full["dix_z"], expected, rtol=1e-12, atol=1e-12)
    assert full["dix_z"].iloc[:4].isna().all() and full["dix_z"].iloc[4:].notna().all()
    short = market.index(["A", "B", "C"], days[30], days[-1], z_window=5, db_path=db_path)
    window = full["dix"].iloc[26:31]
    assert short["dix_z"].iloc[0] == pytest.approx(
        (window.iloc[-1] - window.mean()) / window.std(ddof=0), rel=1e-12)


def test_range_is_clipped_to_the_database(db_path: Path) -> None:
    write_metrics(db_path, metrics_rows([_row("A", d, 50.0, 100.0, 10.0, 1e3) for d in DAYS]))
    frame = market.index(["A"], "2024-01-02", "2024-12-31", db_path=db_path)
    assert frame["date"].dt.date.tolist() == DAYS
    with pytest.raises(NoDataError, match="no XNYS session"):
        market.index(["A"], "2023-01-03", "2023-02-01", db_path=db_path)


def test_no_member_with_data_names_the_file_and_lines(spans_db: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    db_path, _ = spans_db
    members = tmp_path / "ghosts.csv"
    members.write_text("ticker,start_date,end_date\nZZZ,2020-01-02,\nE,2020-01-02,\n"
                       "YYY,2020-01-02,\n")
    with pytest.raises(NoDataError) as info:
        market.index(members, DAYS[0], DAYS[-1], db_path=db_path)
    assert str(members) in info.value.message
    assert "none of its 3 members (lines 2-4)" in info.value.message


def test_cli_writes_csv_and_chart_labelled_synthetic(spans_db: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    db_path, members = spans_db
    write_metrics(db_path, metrics_rows([_row("SPY", d, 50.0, 100.0, 400.0 + i, 1e6)
                                         for i, d in enumerate(DAYS)]), synthetic=True)
    csv, chart = tmp_path / "out" / "dix.csv", tmp_path / "out" / "dix.png"
    result = CliRunner().invoke(app, ["index", "--members", str(members), "--name", "SPX",
                                      "--start", str(DAYS[0]), "--end", str(DAYS[-1]),
                                      "--csv", str(csv), "--out", str(chart)])
    assert result.exit_code == 0, result.output
    assert SYNTHETIC_LABEL in flat(result.output) and "1 gap(s)" in result.output
    lines = csv.read_text().splitlines()
    assert lines[0] == f"# {SYNTHETIC_LABEL}"
    assert lines[1] == ",".join(market.INDEX_COLUMNS)
    back = pd.read_csv(csv, comment="#", parse_dates=["date"])
    expected = market.index(members, DAYS[0], DAYS[-1], db_path=db_path)
    pd.testing.assert_frame_equal(back, expected, check_exact=False, rtol=1e-15,
                                  check_dtype=False)
    assert chart.stat().st_size > 10_000 and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_without_synthetic_flag_has_no_label(spans_db: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    _, members = spans_db
    csv = tmp_path / "dix.csv"
    result = CliRunner().invoke(app, ["index", "--members", str(members), "--start",
                                      str(DAYS[0]), "--end", str(DAYS[-1]), "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" not in result.output
    assert csv.read_text().splitlines()[0] == ",".join(market.INDEX_COLUMNS)
    assert "1 member(s) never had data in the range: E" in flat(result.output)


@pytest.mark.parametrize("args", [
    [],  # neither --members nor --universe
    ["--members", "m.csv", "--universe", "mega_caps"],
])
def test_cli_needs_exactly_one_membership(spans_db: tuple[Path, Path], args: list[str]) -> None:
    result = CliRunner().invoke(app, ["index", "--start", str(DAYS[0]), "--end",
                                      str(DAYS[-1]), *args])
    assert result.exit_code == 2
    assert "exactly one of --members FILE or --universe NAME" in flat(result.output)


def test_cli_bad_membership_file_is_one_clear_line(spans_db: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("ticker,start_date,end_date\nAAPL,2021-02-30,\n")
    result = CliRunner().invoke(app, ["index", "--members", str(bad), "--start",
                                      str(DAYS[0]), "--end", str(DAYS[-1])])
    assert result.exit_code == 1
    squeezed = "".join(result.output.split())  # Rich wraps long paths anywhere
    assert "".join(f"{bad}, line 2, field 'start_date'".split()) in squeezed
    assert "Traceback" not in result.output
