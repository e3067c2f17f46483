"""Parser tests for FINRA Reg SHO daily files on small hand-written fixtures.

Every bad-input case is its own test and checks the file, line and field the error names.
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
from pathlib import Path

import pandas as pd
import pytest

from darkpool_analysis.errors import DataFormatError
from darkpool_analysis.sources.finra_short import (
    SCHEMA,
    file_name,
    file_url,
    parse_file_name,
    parse_short_file,
    parse_short_table,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "finra_short"
NAME = "CNMSshvol20210802.txt"
HEADER = b"Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume|Market"


@pytest.fixture
def cnms_bytes() -> bytes:
    return (FIXTURES / NAME).read_bytes()


def _file(*rows: str, trailer: str | None = None, newline: str = "\r\n") -> bytes:
    """A file with the current header, the given rows and a (by default correct) trailer."""
    lines = [HEADER.decode(), *rows, str(len(rows)) if trailer is None else trailer]
    return (newline.join(lines) + newline).encode()


def _error(data: bytes, name: str = NAME) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        parse_short_table(data, name)
    return info.value


# -- valid files ---------------------------------------------------------------------------

def test_parses_crlf_file_with_hand_checked_values(cnms_bytes: bytes) -> None:
    frame = parse_short_file(cnms_bytes, NAME)
    assert list(frame.columns) == SCHEMA.names
    assert len(frame) == 5
    assert frame["symbol"].tolist() == ["AACT/WS", "AAPL", "ABRpD", "BRK/B", "GME"]
    assert frame["symbol_norm"].tolist() == ["AACT.WS", "AAPL", "ABR.PR.D", "BRK.B", "GME"]
    assert (frame["trade_date"] == dt.date(2021, 8, 2)).all()
    gme = frame.set_index("symbol").loc["GME"]
    assert gme["short_volume"] == 17705180.795191
    assert gme["short_exempt_volume"] == 56657.5
    assert gme["total_volume"] == 24686076.1
    assert gme["market"] == "B,Q,N"
    assert frame["short_volume"].sum() == pytest.approx(
        1200 + 5397162 + 310.5 + 225032 + 17705180.795191)


def test_lf_and_crlf_give_identical_tables(cnms_bytes: bytes) -> None:
    lf = cnms_bytes.replace(b"\r\n", b"\n")
    assert parse_short_table(lf, NAME).equals(parse_short_table(cnms_bytes, NAME))


def test_gzip_bytes_are_accepted(cnms_bytes: bytes) -> None:
    table = parse_short_table(gzip.compress(cnms_bytes), NAME + ".gz")
    assert table.equals(parse_short_table(cnms_bytes, NAME))


def test_pre_2011_layout_has_null_short_exempt() -> None:
    name = "FNSQshvol20100104.txt"
    frame = parse_short_file((FIXTURES / name).read_bytes(), name)
    assert frame["symbol"].tolist() == ["AAPL", "BRK/B", "SPY"]
    assert frame["short_exempt_volume"].isna().all()
    assert frame["short_volume"].tolist() == [1500000.0, 12000.0, 9000000.0]
    assert frame["total_volume"].tolist() == [4200000.0, 51000.0, 21000000.0]


def test_empty_but_valid_file_has_zero_rows() -> None:
    name = "FNRAshvol20210802.txt"
    table = parse_short_table((FIXTURES / name).read_bytes(), name)
    assert table.num_rows == 0
    assert table.schema == SCHEMA


def test_trailing_blank_lines_after_trailer_are_fine(cnms_bytes: bytes) -> None:
    assert parse_short_table(cnms_bytes + b"\r\n\r\n", NAME).num_rows == 5


def test_source_name_without_date_uses_the_rows_date(cnms_bytes: bytes) -> None:
    table = parse_short_table(cnms_bytes, "TestFinraReport.txt")
    assert table["trade_date"][0].as_py() == dt.date(2021, 8, 2)


def test_file_names_and_urls() -> None:
    day = dt.date(2020, 12, 1)
    assert file_name("CNMS", day) == "CNMSshvol20201201.txt"
    assert file_url("https://cdn.example/daily/", "FNQC", day) == (
        "https://cdn.example/daily/FNQCshvol20201201.txt")
    assert parse_file_name("FORFshvol20200102.txt.gz") == ("FORF", dt.date(2020, 1, 2))
    assert parse_file_name("CNMSshvol20201301.txt") is None
    assert parse_file_name("XXXXshvol20201201.txt") is None


# -- bad input: each one names file, line and field ------------------------------------------

def test_rejects_short_volume_above_total_volume() -> None:
    err = _error(_file("20210802|AAPL|10|0|20|Q", "20210802|GME|31|0|30|Q"))
    assert (err.source, err.line, err.field) == (NAME, 3, "ShortVolume")
    assert "exceeds TotalVolume" in str(err)


def test_rejects_negative_volume() -> None:
    err = _error(_file("20210802|AAPL|10|-1|20|Q"))
    assert (err.line, err.field) == (2, "ShortExemptVolume")
    assert "negative" in str(err)


def test_rejects_non_finite_volume() -> None:
    err = _error(_file("20210802|AAPL|10|0|inf|Q"))
    assert (err.line, err.field) == (2, "TotalVolume")


def test_rejects_short_exempt_volume_above_short_volume_naming_the_first_line() -> None:
    # Issue 10.3: ShortVolume and ShortExemptVolume swapped was stored with a warning.
    err = _error(_file("20210802|AAPL|10|0|20|Q", "20210802|GME|5|30|40|Q",
                       "20210802|TSLA|1|2|40|Q"))
    assert (err.source, err.line, err.field) == (NAME, 3, "ShortExemptVolume")
    assert "exceeds ShortVolume" in str(err) and "1 more row" in str(err)


@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity", "1e400", "NaN", "nan"])
@pytest.mark.parametrize("column", [2, 3, 4])
def test_rejects_every_non_finite_spelling(text: str, column: int) -> None:
    fields = ["20210802", "GME", "10", "0", "20", "Q"]
    fields[column] = text
    err = _error(_file("20210802|AAPL|10|0|20|Q", "|".join(fields)))
    assert err.line == 3
    assert err.field == ("ShortVolume", "ShortExemptVolume", "TotalVolume")[column - 2]


def test_rejects_implausible_volume() -> None:
    err = _error(_file("20210802|AAPL|10|0|1e300|Q"))
    assert (err.line, err.field) == (2, "TotalVolume")
    assert "implausible volume" in str(err) and "at most 1e+12" in str(err)


@pytest.mark.parametrize("symbol, expected", [
    ("A" * 100_000, "symbol of 100,000 characters"),
    ("A" * 2_000_000, "symbol of 2,000,000 characters"),
    ("G\tME", "contains '\\t'"),
    ("G\x01ME", "contains '\\x01'"),
    ('G"ME', "contains '\"'"),
    ("G'ME", "contains \"'\""),
    ("<script>", "contains '<'"),
    ("GME&amp;", "contains '&'"),
])
def test_rejects_symbols_outside_the_layout(symbol: str, expected: str) -> None:
    err = _error(_file("20210802|AAPL|10|0|20|Q", f"20210802|{symbol}|10|0|20|Q"))
    assert (err.line, err.field) == (3, "Symbol")
    assert expected in str(err)
    assert len(str(err)) < 400


@pytest.mark.parametrize("market", ["Q" * 1_000_000, "B,Q,<b>", "B Q"])
def test_rejects_market_field_outside_the_layout(market: str) -> None:
    err = _error(_file(f"20210802|AAPL|10|0|20|{market}", "20210802|GME|1|0|2|Q"))
    assert (err.line, err.field) == (2, "Market")
    assert len(str(err)) < 400


def test_real_suffix_spellings_are_accepted() -> None:
    rows = [f"20210802|{s}|1|0|2|B,Q,N" for s in ("BRK/B", "ABRpD", "NSPR/WS/B", "AACT/WS",
                                                  "GOOGL", "ZVZZT")]
    assert parse_short_table(_file(*rows), NAME).num_rows == 6


def test_rejects_duplicate_symbol() -> None:
    err = _error(_file("20210802|AAPL|1|0|2|Q", "20210802|GME|1|0|2|Q", "20210802|AAPL|1|0|3|Q"))
    assert (err.line, err.field) == (4, "Symbol")
    assert "duplicate symbol 'AAPL'" in str(err)


def test_rejects_two_spellings_of_one_security() -> None:
    err = _error(_file("20210802|BRK/B|1|0|2|Q", "20210802|GME|1|0|2|Q", "20210802|BRK.B|1|0|3|Q"))
    assert (err.line, err.field) == (4, "Symbol")
    assert "'BRK.B'" in str(err) and "'BRK/B' on line 2" in str(err)


def test_rejects_date_that_disagrees_with_file_name() -> None:
    err = _error(_file("20210802|AAPL|1|0|2|Q", "20210803|GME|1|0|2|Q"))
    assert (err.line, err.field) == (3, "Date")
    assert "'20210803'" in str(err) and "'20210802'" in str(err)


def test_rejects_non_utf8_bytes(cnms_bytes: bytes) -> None:
    bad = cnms_bytes.replace(b"GME", b"G\xffE")
    err = _error(bad)
    assert err.line == 6
    assert "not UTF-8" in str(err)


def test_rejects_html_error_page() -> None:
    err = _error((FIXTURES / "error_page.html").read_bytes())
    assert (err.line, err.field) == (1, "header")
    assert "HTML" in str(err)


def test_rejects_empty_file() -> None:
    err = _error(b"")
    assert err.source == NAME
    assert "empty file" in str(err)


def test_rejects_header_only_file_without_trailer() -> None:
    err = _error(HEADER + b"\r\n")
    assert (err.line, err.field) == (2, "trailer")


def test_rejects_missing_header() -> None:
    err = _error(b"20210802|AAPL|1|0|2|Q\r\n1\r\n")
    assert (err.line, err.field) == (1, "header")
    assert "expected 'Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume|Market'" in str(err)


def test_rejects_wrong_header() -> None:
    err = _error(b"Date|Symbol|ShortVolume|ShortExemptVolume|TotalVolume\r\n0\r\n")
    assert (err.line, err.field) == (1, "header")


def test_rejects_non_numeric_volume() -> None:
    err = _error(_file("20210802|AAPL|1|0|2|Q", "20210802|GME|12a|0|20|Q"))
    assert (err.line, err.field) == (3, "ShortVolume")
    assert "expected a number, got '12a'" in str(err)


def test_rejects_row_with_missing_field() -> None:
    err = _error(_file("20210802|AAPL|1|0|2|Q", "20210802|GME|1|0|2"))
    assert err.line == 3
    assert "expected 6 '|'-separated fields" in str(err)


def test_rejects_empty_volume() -> None:
    err = _error(_file("20210802|AAPL||0|2|Q"))
    assert (err.line, err.field) == (2, "ShortVolume")


def test_rejects_truncated_file_trailer_count_differs(cnms_bytes: bytes) -> None:
    lines = cnms_bytes.split(b"\r\n")
    truncated = b"\r\n".join([*lines[:4], b"5", b""])  # two data rows lost, trailer kept
    err = _error(truncated)
    assert (err.line, err.field) == (5, "trailer")
    assert "trailer says 5 data rows but the file has 3" in str(err)


def test_rejects_file_cut_mid_row(cnms_bytes: bytes) -> None:
    err = _error(cnms_bytes[: cnms_bytes.index(b"BRK/B") + 8])
    assert err.field == "trailer"
    assert "no trailer" in str(err)


def test_rejects_blank_line_inside_data() -> None:
    err = _error(_file("20210802|AAPL|1|0|2|Q", "", "20210802|GME|1|0|2|Q", trailer="2"))
    assert err.line == 3
    assert "blank line" in str(err)


def test_rejects_blank_symbol() -> None:
    err = _error(_file("20210802| |1|0|2|Q"))
    assert (err.line, err.field) == (2, "Symbol")


def test_rejects_corrupt_gzip() -> None:
    err = _error(b"\x1f\x8b\x08\x00garbage", NAME + ".gz")
    assert "corrupt gzip" in str(err)


# -- oracle: a plain pandas reading of the same bytes -------------------------------------------

def test_matches_plain_pandas_reference(cnms_bytes: bytes) -> None:
    import io

    reference = pd.read_csv(io.BytesIO(cnms_bytes), sep="|", skipfooter=1, engine="python",
                            dtype={"Date": str, "Symbol": str, "Market": str})
    ours = parse_short_file(cnms_bytes, NAME)
    assert ours["symbol"].tolist() == reference["Symbol"].tolist()
    for theirs, mine in [("ShortVolume", "short_volume"), ("TotalVolume", "total_volume"),
                         ("ShortExemptVolume", "short_exempt_volume")]:
        assert all(math.isclose(a, b, rel_tol=0, abs_tol=0)
                   for a, b in zip(ours[mine], reference[theirs], strict=True))
