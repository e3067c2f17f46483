"""Dated membership files: spans with an exclusive end, spellings, and errors naming file/line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from darkpool_analysis.errors import DataFormatError
from darkpool_analysis.market import load_membership, parse_membership

GOOD = """\ufeffticker,start_date,end_date
# a comment line
AAPL,1982-11-30,
BRK-B,2010-02-16,
XYZ,2001-01-02,2008-03-20

XYZ,2008-03-20,2009-01-02
XYZ,2012-06-01,
"""


def test_spans_spellings_and_exclusive_end() -> None:
    members = parse_membership(GOOD, "spx.csv", name="SPX")
    assert members.name == "SPX"
    assert members.symbols == ["AAPL", "BRK.B", "XYZ"]
    assert members.spans.loc[members.spans["symbol"] == "XYZ", "line"].tolist() == [5, 7, 8]
    assert members.members_on("2008-03-19") == ["AAPL", "XYZ"]
    assert members.members_on("2008-03-20") == ["AAPL", "XYZ"]  # touching spans: still in
    assert members.members_on("2009-01-02") == ["AAPL"]  # end is exclusive
    assert members.members_on("2010-02-16") == ["AAPL", "BRK.B"]
    assert members.members_on("2012-06-01") == ["AAPL", "BRK.B", "XYZ"]
    assert members.members_on("2010-02-15") == ["AAPL"]
    assert members.spans["end_date"].iloc[0] is None  # AAPL: still a member


def test_load_membership_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "spx_members.csv"
    path.write_text("ticker,start_date,end_date\nBRK/B,2010-02-16,\n")
    members = load_membership(path)
    assert members.name == "spx_members" and members.source == str(path)
    assert members.spans["start_date"].tolist() == [dt.date(2010, 2, 16)]


@pytest.mark.parametrize(("text", "line", "field", "needle"), [
    ("ticker,start_date,end_date\nAAPL,2020-13-01,\n", 2, "start_date", "not a valid date"),
    ("ticker,start_date,end_date\nAAPL,2020-01-02,\nMSFT,01/02/2020,\n", 3, "start_date",
     "is not a date"),
    ("ticker,start_date,end_date\nAAPL,2020-01-02,2021-02-30\n", 2, "end_date",
     "not a valid date"),
    ("ticker,start_date,end_date,weight\nAAPL,2020-01-02,,0.1\n", 1, "weight",
     "unknown column 'weight'"),
    ("ticker,start_date\nAAPL,2020-01-02\n", 1, "end_date", "header must name"),
    ("ticker,start_date,end_date\nAAPL,2020-01-02,2019-01-02\n", 2, "end_date",
     "is not after start_date"),
    ("ticker,start_date,end_date\nAAPL,2020-01-02,2020-01-02\n", 2, "end_date",
     "is not after start_date"),
    ("ticker,start_date,end_date\nXYZ,2001-01-02,2008-03-20\nAAPL,2001-01-02,\n"
     "XYZ,2008-03-19,\n", 4, "start_date", "spans of XYZ overlap: line 2"),
    ("ticker,start_date,end_date\nXYZ,2001-01-02,\nXYZ,2010-01-04,2011-01-03\n", 3,
     "start_date", "spans of XYZ overlap: line 2"),
    ("ticker,start_date,end_date\nBRK.B,2001-01-02,\nBRK-B,2010-01-04,\n", 3, "start_date",
     "spans of BRK.B overlap"),
    ("ticker,start_date,end_date\n,2020-01-02,\n", 2, "ticker", "empty ticker"),
    ("ticker,start_date,end_date\nA B,2020-01-02,\n", 2, "ticker", "is not a ticker"),
    ("ticker,start_date,end_date\nAAPL,,\n", 2, "start_date", "start_date is required"),
    ("ticker,start_date,end_date\nAAPL,2020-01-02\n", 2, None, "expected 3 fields"),
    ("ticker,start_date,end_date\n", 2, None, "no members"),
    ("", 1, None, "empty membership file"),
])
def test_bad_membership_names_file_line_and_field(tmp_path: Path, text: str, line: int,
                                                  field: str | None, needle: str) -> None:
    path = tmp_path / "members.csv"
    path.write_text(text)
    with pytest.raises(DataFormatError) as info:
        load_membership(path)
    error = info.value
    assert error.source == str(path) and str(path) in error.message
    assert error.line == line and f"line {line}" in error.message
    assert error.field == field
    assert needle in error.message


def test_overlap_message_names_both_lines(tmp_path: Path) -> None:
    text = "ticker,start_date,end_date\nXYZ,2001-01-02,2008-03-20\nXYZ,2008-03-19,\n"
    with pytest.raises(DataFormatError, match=r"line 2 \(XYZ 2001-01-02\.\.2008-03-20\) and "
                                              r"line 3 \(XYZ from 2008-03-19\)"):
        parse_membership(text, "members.csv")


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="cannot read the membership file"):
        load_membership(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataFormatError, match="not a UTF-8 text file"):
        load_membership(binary)
