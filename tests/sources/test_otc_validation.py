"""FINRA OTC inputs that used to be stored or to crash (issue 10 items 3, 5, 6 and 9).

Each bad input is refused with a DataFormatError naming the source, the line or record and
the field; through the CLI it is exit 1 with the database unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from darkpool_analysis.cli import app
from darkpool_analysis.errors import DataFormatError
from darkpool_analysis.sources import finra_otc as otc

HEADER = otc.DOWNLOAD_FIRM_HEADER
GOOD_LINE = "NMS Tier 1|AAPL|Apple|UBSA UBS ATS|UBSA|100|3|2025-01-27"


def _record(**overrides: Any) -> dict[str, Any]:
    record = {"weekStartDate": "2025-01-06", "tierIdentifier": "T1",
              "summaryTypeCode": "ATS_W_SMBL", "issueSymbolIdentifier": "BRK.B",
              "totalWeeklyShareQuantity": 100, "totalWeeklyTradeCount": 4,
              "lastUpdateDate": "2025-01-27", "initialPublishedDate": "2025-01-27"}
    record.update(overrides)
    return record


def _records_error(*records: dict[str, Any]) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        otc.parse_api_records(list(records), source="page.json")
    assert info.value.source == "page.json"
    return info.value


def _download_error(*lines: str) -> DataFormatError:
    data = "\n".join([HEADER, *lines]).encode() + b"\n"
    with pytest.raises(DataFormatError) as info:
        otc.parse_download_file(data, "week.csv")
    assert info.value.source == "week.csv"
    return info.value


# -- numbers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [1.5, "1.5", 1e30, "1e30", 10**400, True, {"n": 1}, [1]])
def test_api_trade_count_must_be_a_plausible_whole_number(value: object) -> None:
    err = _records_error(_record(), _record(issueSymbolIdentifier="GME",
                                            totalWeeklyTradeCount=value))
    assert err.field == "totalWeeklyTradeCount"
    assert str(err).startswith("page.json, field 'totalWeeklyTradeCount': record 2:")


@pytest.mark.parametrize("value", [float("inf"), "inf", "Infinity", "-Infinity", 1e400, "1e400",
                                   "NaN", 10**400, 1e300])
def test_api_share_quantity_must_be_finite_and_plausible(value: object) -> None:
    err = _records_error(_record(totalWeeklyShareQuantity=value))
    assert err.field == "totalWeeklyShareQuantity" and "record 1" in str(err)


@pytest.mark.parametrize("token", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_saved_json_refuses_non_finite_tokens(token: str) -> None:
    text = json.dumps([_record()]).replace('"totalWeeklyShareQuantity": 100',
                                           f'"totalWeeklyShareQuantity": {token}')
    with pytest.raises(DataFormatError) as info:
        otc.parse_saved_json(text.encode(), "saved.json")
    assert info.value.source == "saved.json"
    assert "finite" in str(info.value)


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e400", "NaN", "1e300"])
def test_download_share_quantity_must_be_finite_and_plausible(value: str) -> None:
    err = _download_error(GOOD_LINE, f"NMS Tier 1|GME|GameStop|UBSA UBS ATS|UBSA|{value}|3|"
                                     "2025-01-27")
    assert (err.line, err.field) == (3, "totalWeeklyShareQuantity")


@pytest.mark.parametrize("value", ["1.5", "1e30"])
def test_download_trade_count_must_be_a_plausible_whole_number(value: str) -> None:
    err = _download_error(GOOD_LINE, f"NMS Tier 1|GME|GameStop|UBSA UBS ATS|UBSA|10|{value}|"
                                     "2025-01-27")
    assert (err.line, err.field) == (3, "totalWeeklyTradeCount")


# -- structure --------------------------------------------------------------------------------

def test_repeated_api_record_names_both_records() -> None:
    err = _records_error(_record(), _record(issueSymbolIdentifier="GME"), _record())
    assert "record 3 repeats record 1" in str(err)


def test_repeated_firm_record_is_refused_but_other_firms_are_fine() -> None:
    firm = {"summaryTypeCode": "ATS_W_SMBL_FIRM", "MPID": "UBSA"}
    parsed = otc.parse_api_records([_record(**firm), _record(**(firm | {"MPID": "JPMX"}))],
                                   source="x")
    assert len(parsed.firm_rows) == 2
    err = _records_error(_record(**firm), _record(**firm))
    assert "record 2 repeats record 1" in str(err) and "MPID 'UBSA'" in str(err)


def test_json_nested_100k_levels_is_a_clear_error() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(DataFormatError, match="nested too deeply"):
        otc.decode_json_records(deep, "deep.json")
    with pytest.raises(DataFormatError, match="nested too deeply"):
        otc.parse_saved_json(("{\"records\": " + deep + "}").encode(), "deep.json")


@pytest.mark.parametrize("week", ["2025-01-07", "2025-01-12"])
def test_api_week_start_must_be_a_monday(week: str) -> None:
    err = _records_error(_record(), _record(issueSymbolIdentifier="GME", weekStartDate=week))
    assert err.field == "weekStartDate"
    assert "record 2" in str(err) and "expected the Monday" in str(err)


# -- text fields ------------------------------------------------------------------------------

@pytest.mark.parametrize("symbol", ["A" * 100_000, "G\tME", "G\x00ME", 'G"ME', "<b>GME</b>",
                                    "GME'"])
def test_api_symbol_outside_the_layout(symbol: str) -> None:
    err = _records_error(_record(), _record(issueSymbolIdentifier=symbol))
    assert err.field == "issueSymbolIdentifier" and "record 2" in str(err)
    assert len(str(err)) < 400


@pytest.mark.parametrize("field, value", [("issueName", "x" * 1_000_000),
                                          ("issueName", "Apple\x07Inc"),
                                          ("marketParticipantName", "UBS\nATS"),
                                          ("MPID", "UB SA"), ("MPID", "U" * 40)])
def test_download_text_fields_outside_the_layout(field: str, value: str) -> None:
    parts = dict(zip(HEADER.split("|"), GOOD_LINE.split("|"), strict=True))
    parts[field] = value
    line = "|".join(parts.values())
    if "\n" in value:
        with pytest.raises(DataFormatError):
            otc.parse_download_file(f"{HEADER}\n{line}\n".encode(), "week.csv")
        return
    err = _download_error(GOOD_LINE, line)
    assert (err.line, err.field) == (3, field)
    assert len(str(err)) < 400


def test_download_symbol_with_markup_names_the_line() -> None:
    err = _download_error(GOOD_LINE, "NMS Tier 1|<script>|Evil|UBSA UBS ATS|UBSA|1|1|2025-01-27")
    assert (err.line, err.field) == (3, "issueSymbolIdentifier")


# -- through the CLI: exit 1, database unchanged ----------------------------------------------

def _table_rows(db_path: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db_path), read_only=True) as conn:
        return sorted(conn.execute("SELECT * FROM finra_otc_weekly_raw").fetchall(), key=repr)


@pytest.mark.parametrize("bad", ["trade_count", "duplicate", "deep", "not_monday", "infinite"])
def test_cli_refuses_with_exit_1_and_leaves_the_database(tmp_path: Path, db_path: Path,
                                                        bad: str) -> None:
    runner = CliRunner()
    good = tmp_path / "good.json"
    good.write_text(json.dumps([_record()]))
    assert runner.invoke(app, ["ingest", "finra-otc", "--from-file", str(good)]).exit_code == 0
    before = _table_rows(db_path)
    records = [_record(issueSymbolIdentifier="GME", totalWeeklyShareQuantity=5)]
    text = {
        "trade_count": json.dumps([*records, _record(totalWeeklyTradeCount=1.5)]),
        "duplicate": json.dumps(records + records),
        "deep": "[" * 100_000 + "]" * 100_000,
        "not_monday": json.dumps([*records, _record(weekStartDate="2025-01-08")]),
        "infinite": json.dumps(records).replace("5,", "1e400,"),
    }[bad]
    path = tmp_path / "bad.json"
    path.write_text(text)
    result = runner.invoke(app, ["ingest", "finra-otc", "--from-file", str(path)])
    assert result.exit_code == 1, result.output
    assert "bad.json" in "".join(result.output.split()) and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _table_rows(db_path) == before
