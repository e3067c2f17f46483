"""Grouped daily tables (sections, averages, zones, the dashboard), the golden HTML snapshot,
PNG output, and the overlay with breadth."""

from __future__ import annotations

import datetime as dt
import math
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from market_db import flat, metrics_rows, sessions, write_metrics
from typer.testing import CliRunner

from darkpool_analysis import market
from darkpool_analysis.cli import app
from darkpool_analysis.errors import NoDataError
from darkpool_analysis.market.groups import TABLE_NUMERIC, build_table
from darkpool_analysis.synthetic import SYNTHETIC_LABEL
from darkpool_analysis.views.market_tables import group_table_html, scan_html, score_colour

GOLDEN = Path(__file__).parent / "golden" / "group_table.html"
DAYS = sessions("2024-03-04", 3)
DAY = DAYS[-1]

UNIVERSES = ('[universes.tech]\ntickers = ["AAA", "BBB", "ZZZ"]\n'
             '[universes.fin]\ndescription = "Banks"\ntickers = ["BRK-B", "CCC"]\n'
             '[universes.book]\ndescription = "Tech and banks"\ngroups = ["tech", "fin"]\n')


def _day_rows() -> list[dict[str, object]]:
    def row(symbol: str, score: float | None, close: float | None, ret: float | None,
            **extra: object) -> dict[str, object]:
        return {"symbol": symbol, "date": DAY, "accumulation_score_display": score,
                "close": close, "return_1d": ret, "short_volume": 40.0, "total_volume": 100.0,
                "volume": 1_000.0, "short_ratio": 0.4, "confidence": 0.9,
                "pressure_context_label": None if score is None else
                "accumulation" if score >= 70 else "distribution" if score <= 30 else "neutral",
                **extra}
    return [row("AAA", 80.0, 10.0, 0.01), row("BBB", 20.0, 30.0, None),
            row("BRK.B", 50.0, 400.0, -0.02),
            row("CCC", None, 5.0, 0.03, short_volume=None, total_volume=None,
                short_ratio=None, has_short=False, short_source=None)]


@pytest.fixture
def book_db(db_path: Path, clean_env: Path) -> Path:
    (clean_env / "darkpool.toml").write_text(UNIVERSES)
    return write_metrics(db_path, metrics_rows(_day_rows()))


def test_grouped_table_sections_averages_and_zones(book_db: Path) -> None:
    rows = market.table(DAY, "book", db_path=book_db)
    assert list(rows.columns) == list(market.TABLE_COLUMNS)
    assert rows["section"].tolist() == ["tech"] * 4 + ["fin"] * 3
    assert rows["row_type"].tolist() == ["member"] * 3 + ["average"] + ["member"] * 2 + [
        "average"]
    assert rows["symbol"].tolist()[:3] == ["AAA", "BBB", "ZZZ"]
    tech = rows.iloc[3]
    assert tech["close"] == 20.0 and tech["return_1d"] == pytest.approx(0.01)  # NaN skipped
    assert tech["score"] == 50.0 and tech["zone"] == "neutral" and tech["scored"] == 2
    zzz = rows.iloc[2]
    assert zzz["flags"] == "no_row" and np.isnan(zzz[list(TABLE_NUMERIC)].astype(float)).all()
    fin = rows.iloc[6]
    assert fin["close"] == pytest.approx(202.5) and fin["score"] == 50.0 and fin["scored"] == 1
    assert math.isnan(rows.iloc[5]["short_ratio"])  # CCC: missing, not 0
    assert rows.attrs["group"] == "book" and rows.attrs["description"] == "Tech and banks"

    summary = market.summarise(rows)
    assert summary["section"].tolist() == ["tech", "fin", "(all sections)"]
    assert summary["names"].tolist() == [3, 2, 5]
    assert summary["scored"].tolist() == [2, 1, 3]
    assert summary["accumulation"].tolist() == [1, 0, 1]
    assert summary["distribution"].tolist() == [1, 0, 1]
    assert summary["neutral"].tolist() == [0, 1, 1]
    assert summary["breadth"].tolist() == [0.0, 0.0, 0.0]
    assert summary["zone"].tolist() == ["neutral", "neutral", "neutral"]


def test_flat_universe_is_one_section(book_db: Path) -> None:
    rows = market.table(DAY, "fin", db_path=book_db)
    assert rows["section"].unique().tolist() == ["fin"]
    assert market.summarise(rows)["section"].tolist() == ["fin"]
    with pytest.raises(NoDataError, match="none of the 10 members of xlk_top"):
        market.table(DAY, "xlk_top", db_path=book_db)


def _golden_rows() -> pd.DataFrame:
    """A fixed table (no database): hand-written member rows in two sections."""
    members = pd.DataFrame({
        "symbol": ["AAA", "BBB", "BRK.B"],
        "close": [10.0, 30.5, 401.25], "return_1d": [0.0123, np.nan, -0.0456],
        "short_ratio": [0.41, 0.62, np.nan], "short_buy_sell_ratio": [0.6949, 1.6316, np.nan],
        "short_buy_sell_ratio_z": [1.234, -0.5, np.nan],
        "finra_buy_volume_z": [2.5, -1.25, 0.0], "off_exchange_share": [0.45, 0.38, np.nan],
        "lit_flow_imbalance": [0.12, np.nan, -0.3], "otc_participation_rate": [0.31, 0.22, 0.4],
        "score": [82.5, 18.0, np.nan], "confidence": [1.0, 0.56, 0.25],
        "otc_status": ["Anchored", "Staled", None],
        "zone": ["accumulation", "distribution", None],
        "flags": ["", "otc_stale", "no_short,no_lit"],
    })
    rows = build_table(members, (("Tech <&>", ("AAA", "BBB", "ZZZ")), ("Banks", ("BRK.B",))))
    rows.attrs.update({"group": "golden", "date": dt.date(2024, 3, 6),
                       "description": "A fixed table for the snapshot", "label": None})
    return rows


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append((dict(attrs).get("class") or "", []))
        self._in_cell = tag in ("td", "th")
        if self._in_cell and self.rows:
            self.rows[-1][1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell and self.rows:
            self.rows[-1][1][-1] += data


def test_golden_html_snapshot_of_a_table() -> None:
    rows = _golden_rows()
    page = group_table_html(rows, market.summarise(rows))
    if os.environ.get("UPDATE_GOLDEN") == "1":  # review the diff before committing it
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(page, encoding="utf-8")
    assert page == GOLDEN.read_text(encoding="utf-8")
    parser = _Cells()
    parser.feed(page)
    grouped = [cells for css, cells in parser.rows if css in ("", "average", "section")]
    assert ["Tech <&>"] in grouped and "Tech &lt;&amp;&gt;" in page  # escaped
    averages = [cells for css, cells in parser.rows if css == "average"]
    assert averages[0][:3] == ["Average (2 scored)", "20.25", "+1.23%"]
    assert averages[1][0] == "Average (0 scored)" and averages[1][11] == "NA"
    zzz = next(cells for css, cells in parser.rows if cells and cells[0] == "ZZZ")
    assert zzz[1:14] == ["NA"] * 13 and zzz[14] == "no_row"


def test_score_colours_follow_the_seed_scale() -> None:
    assert score_colour(0.0) == "#b026ff" and score_colour(50.0) == "#555555"
    assert score_colour(100.0) == "#00ff88" and score_colour(float("nan")) is None


def test_synthetic_label_on_html() -> None:
    rows = _golden_rows()
    rows.attrs["label"] = SYNTHETIC_LABEL
    page = group_table_html(rows, market.summarise(rows))
    assert f'<p class="synthetic">{SYNTHETIC_LABEL}</p>' in page
    assert f"<title>golden - 2024-03-06 ({SYNTHETIC_LABEL})</title>" in page
    assert page.count(SYNTHETIC_LABEL) >= 4  # banner, title, both captions
    scan = pd.DataFrame({"rank": [1], "symbol": ["AAA"], "score": [70.0]})
    scan.attrs.update({"by": "score", "label": SYNTHETIC_LABEL, "date": "2024-03-06"})
    assert SYNTHETIC_LABEL in scan_html(scan)


def test_cli_table_every_format(book_db: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    html_path, png_path = tmp_path / "t.html", tmp_path / "t.png"
    result = runner.invoke(app, ["table", "--date", str(DAY), "--group", "book", "--out",
                                 str(html_path)])
    assert result.exit_code == 0, result.output
    assert "Tech and banks" in html_path.read_text() and "(all sections)" in flat(result.output)
    result = runner.invoke(app, ["table", "--date", str(DAY), "--group", "book", "--format",
                                 "png", "--out", str(png_path)])
    assert result.exit_code == 0, result.output
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 20_000
    csv = runner.invoke(app, ["table", "--date", str(DAY), "--group", "book", "--format", "csv"])
    assert csv.exit_code == 0
    back = pd.read_csv(pd.io.common.StringIO(csv.output))
    assert back["row_type"].tolist().count("average") == 2 and len(back) == 7
    md = runner.invoke(app, ["table", "--date", str(DAY), "--group", "book", "--format", "md"])
    assert md.exit_code == 0 and "### tech" in md.output and "| **average** |" in md.output
    default = runner.invoke(app, ["table", "--group", "fin"])  # last date, output_dir
    assert default.exit_code == 0, default.output
    assert Path("output", f"fin_table_{DAY}.html").is_file()
    bad = runner.invoke(app, ["table", "--group", "fin", "--format", "png", "--out", "x.html"])
    assert bad.exit_code == 2


def _overlay_rows() -> list[dict[str, object]]:
    d0, d1, d2 = DAYS
    e = math.e
    return [
        {"symbol": "A", "date": d0, "close": 10.0, "short_buy_sell_ratio": e,
         "accumulation_score_display": 75.0},
        {"symbol": "A", "date": d1, "close": 11.0, "short_buy_sell_ratio": 1.0,
         "accumulation_score_display": 80.0},
        {"symbol": "A", "date": d2, "close": 12.0, "short_buy_sell_ratio": 0.0,
         "accumulation_score_display": 80.0},
        {"symbol": "B", "date": d0, "close": None, "short_buy_sell_ratio": 1 / e,
         "accumulation_score_display": 20.0},
        {"symbol": "B", "date": d1, "close": 20.0, "short_buy_sell_ratio": None,
         "accumulation_score_display": 90.0},
        {"symbol": "B", "date": d2, "close": 10.0, "short_buy_sell_ratio": e ** 2,
         "accumulation_score_display": None},
        {"symbol": "C", "date": d0, "close": 5.0, "short_buy_sell_ratio": 1.0,
         "accumulation_score_display": 50.0},
        {"symbol": "C", "date": d1, "close": 5.0, "short_buy_sell_ratio": 1.0,
         "accumulation_score_display": 10.0},
        {"symbol": "D", "date": d0, "close": 7.0, "accumulation_score_display": None},
        {"symbol": "D", "date": d1, "close": 7.0, "accumulation_score_display": 45.0},
    ]


def test_overlay_and_breadth_by_hand(db_path: Path, clean_env: Path) -> None:
    (clean_env / "darkpool.toml").write_text('[universes]\nfour = ["A", "B", "C", "D", "E"]\n')
    write_metrics(db_path, metrics_rows(_overlay_rows()))
    lines = market.overlay("four", DAYS[0], DAYS[-1], db_path=db_path)
    a = lines.loc[lines["symbol"] == "A"]
    np.testing.assert_allclose(a["norm_price"], [100.0, 110.0, 120.0], rtol=1e-15)
    np.testing.assert_allclose(a["log_short_ratio"].iloc[:2], [1.0, 0.0], atol=1e-15)
    assert math.isnan(a["log_short_ratio"].iloc[2])  # ratio 0 -> no log
    b = lines.loc[lines["symbol"] == "B"]
    assert math.isnan(b["norm_price"].iloc[0]) and b["norm_price"].tolist()[1:] == [100.0, 50.0]
    assert lines.attrs["names"] == 5 and lines.attrs["without_data"] == ["E"]

    breadth = market.compute_breadth(lines)
    assert list(breadth.columns) == list(market.BREADTH_COLUMNS)
    assert breadth["names"].tolist() == [5, 5, 5]
    assert breadth["scored"].tolist() == [3, 4, 1]
    assert breadth["accumulation"].tolist() == [1, 2, 1]
    assert breadth["distribution"].tolist() == [1, 1, 0]
    assert breadth["breadth"].tolist() == [0.0, 0.25, 1.0]
    np.testing.assert_allclose(breadth["mean_log_short_ratio"], [0.0, 0.0, 2.0], atol=1e-15)
    pd.testing.assert_frame_equal(market.breadth("four", DAYS[0], DAYS[-1], db_path=db_path),
                                  breadth)


def test_cli_overlay_writes_chart_and_breadth(db_path: Path, clean_env: Path,
                                              tmp_path: Path) -> None:
    (clean_env / "darkpool.toml").write_text('[universes]\nfour = ["A", "B", "C", "D"]\n')
    write_metrics(db_path, metrics_rows(_overlay_rows()), synthetic=True)
    chart, csv = tmp_path / "ov.png", tmp_path / "breadth.csv"
    result = CliRunner().invoke(app, ["overlay", "--group", "four", "--start", str(DAYS[0]),
                                      "--end", str(DAYS[-1]), "--out", str(chart), "--csv",
                                      str(csv)])
    assert result.exit_code == 0, result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert csv.read_text().splitlines()[0] == f"# {SYNTHETIC_LABEL}"
    assert pd.read_csv(csv, comment="#")["breadth"].tolist() == [0.0, 0.25, 1.0]
    assert SYNTHETIC_LABEL in flat(result.output) and "last +1.00" in flat(result.output)
