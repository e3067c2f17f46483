"""Property tests over mutated real and fixture files, for every parser (issue 10).

Any mutation of a Reg SHO file, an OTC download or saved API response, or a Yahoo price CSV
either loads exactly (the stored rows are what the parser returns for those bytes) or is
refused with a message naming the file, with every data table byte-identical (a content hash
of the tables before and after; only ``ingest_log`` gains the ``failed`` row).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darkpool_analysis.config import load_config
from darkpool_analysis.errors import DarkpoolError, DataFormatError
from darkpool_analysis.ingest import finra_otc as otc_ingest
from darkpool_analysis.ingest.finra_short import ingest_finra_short
from darkpool_analysis.ingest.prices import ingest_prices, keep_sessions
from darkpool_analysis.sources import finra_otc as otc
from darkpool_analysis.sources import limits
from darkpool_analysis.sources.finra_short import parse_short_table
from darkpool_analysis.sources.prices import parse_yahoo_csv
from darkpool_analysis.store import open_writer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: The optional real files (as in conftest.REAL_DATA); their cases are left out when absent.
REAL_DATA = Path(os.environ.get("DARKPOOL_REAL_DATA",
                                Path(__file__).resolve().parents[2].parent / "shared" / "data"
                                / "real"))
DATA_TABLES = ("finra_short_daily_raw", "source_files", "prices_daily", "finra_otc_weekly_raw",
               "finra_otc_weekly_firm_raw", "metrics_owed")
#: Each database example opens and publishes real DuckDB files (seconds on a loaded 2-core
#: machine); the parse-level properties below run many more examples without a database.
EXAMPLES = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
PARSE_EXAMPLES = settings(max_examples=150, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])

TOKENS = [b"|", b",", b"\n", b"\r\n", b"-", b".", b"e", b"9", b"0", b"\x00", b"\t", b'"', b"<",
          b" ", b"inf", b"NaN", b"Infinity", b"1e400", b"1e300", b"-1", b"null", b"1.5",
          b"\xff\xfe", b"A" * 40, b"{", b"[", b"]", b"}", b":", b"'"]


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """1..4 edits of ``data``: truncations, token insertions/replacements, deletions, and
    duplicated or swapped lines."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "insert", "replace", "delete", "dup_line",
                                     "swap_fields"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "truncate":
            out = out[:at]
        elif kind == "insert":
            out[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "replace":
            token = draw(st.sampled_from(TOKENS))
            out[at:at + len(token)] = token
        elif kind == "delete":
            out[at:at + draw(st.integers(1, 30))] = b""
        else:
            lines = bytes(out).split(b"\n")
            i = draw(st.integers(0, max(len(lines) - 1, 0)))
            if kind == "dup_line":
                lines.insert(i, lines[i])
            else:
                for sep in (b"|", b","):
                    parts = lines[i].split(sep)
                    if len(parts) > 3:
                        parts[1], parts[2] = parts[2], parts[1]
                        lines[i] = sep.join(parts)
                        break
            out = bytearray(b"\n".join(lines))
    return bytes(out)


def table_hash(db: Path) -> str:
    """sha256 of every data table's sorted rows (ingest_log excluded: failures are logged)."""
    digest = hashlib.sha256()
    with duckdb.connect(str(db), read_only=True) as conn:
        names = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables"
                                            ).fetchall()}
        for name in DATA_TABLES:
            if name in names:
                rows = sorted(conn.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
                digest.update(f"{name}:{rows!r}".encode())
    return digest.hexdigest()


def failed_messages(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return [r[0] for r in conn.execute("SELECT message FROM ingest_log "
                                           "WHERE outcome = 'failed' ORDER BY id").fetchall()]


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mutation_") as tmp:
        yield Path(tmp)


def _sources(real: Path | None, fixture: Path) -> list[Path]:
    return [fixture] + ([real] if real is not None and real.is_file() else [])


# -- Reg SHO -------------------------------------------------------------------------------------

REGSHO_REAL = REAL_DATA / "regsho_daily" / "samgozman_fixture_2021-08-02_subset" / \
    "TestFinraReport.txt"
REGSHO_FILES = _sources(REGSHO_REAL, FIXTURES / "finra_short" / "CNMSshvol20210802.txt")


@pytest.mark.parametrize("original", REGSHO_FILES, ids=lambda p: p.name)
@EXAMPLES
@given(data=st.data())
def test_mutated_regsho_file_loads_exactly_or_is_refused(original: Path,
                                                         data: st.DataObject) -> None:
    good = original.read_bytes()
    bad = data.draw(mutations(good))
    name = "CNMSshvol20210802.txt"
    with workspace() as tmp:
        folder, db = tmp / "in", tmp / "db.duckdb"
        folder.mkdir()
        (folder / name).write_bytes(good)
        settings_ = load_config(db_path=db)
        assert ingest_finra_short(settings_, "2021-08-02", "2021-08-02", from_dir=folder).ok
        before = table_hash(db)
        (folder / name).write_bytes(bad)
        summary = ingest_finra_short(settings_, "2021-08-02", "2021-08-02", from_dir=folder)
        if summary.ok:
            expected = parse_short_table(bad, name).to_pandas()
            with duckdb.connect(str(db), read_only=True) as conn:
                stored = conn.execute(
                    "SELECT trade_date, symbol, symbol_norm, short_volume, short_exempt_volume, "
                    "total_volume, market FROM finra_short_daily_raw ORDER BY symbol").df()
            expected = expected.sort_values("symbol").reset_index(drop=True)
            stored["trade_date"] = stored["trade_date"].dt.date
            pd.testing.assert_frame_equal(stored, expected[list(stored.columns)],
                                          check_dtype=False)
        else:
            [failure] = summary.failed
            assert name in (failure.message or "")
            assert table_hash(db) == before
            assert name in failed_messages(db)[-1]


# -- OTC ------------------------------------------------------------------------------------------

OTC_HEADER = otc.DOWNLOAD_FIRM_HEADER
OTC_FIXTURE = ("\n".join([OTC_HEADER,
                          "NMS Tier 1|AAPL|Apple Inc.|UBS ATS|UBSA|1200|30|2025-01-27",
                          "NMS Tier 1|AAPL|Apple Inc.|JPM-X|JPMX|800|12|2025-01-27",
                          "NMS Tier 1|GME|GameStop Corp.|UBS ATS|UBSA|5000|77|2025-01-27",
                          "NMS Tier 2|AAOI|Applied Optoelectronics|LEVEL ATS|EBXL|10|1|"
                          "2025-02-10"]) + "\n").encode()


def _otc_download_sources() -> list[tuple[str, bytes]]:
    out = [("fixture", OTC_FIXTURE)]
    real = REAL_DATA / "otc_weekly" / "spine-core_otc_tier_2025-12" / \
        "finra_otc_weekly_otc_20251215.csv"
    if real.is_file():
        lines = real.read_bytes().split(b"\n")
        out.append(("real", b"\n".join(lines[:40]) + b"\n"))
    return out


def _otc_json() -> bytes:
    records = [{"weekStartDate": "2025-01-06", "tierIdentifier": "T1",
                "summaryTypeCode": kind, "issueSymbolIdentifier": symbol,
                "issueName": f"{symbol} Inc", "totalWeeklyShareQuantity": qty,
                "totalWeeklyTradeCount": trades, "lastUpdateDate": "2025-01-27",
                "initialPublishedDate": "2025-01-27", **({"MPID": "UBSA"} if "FIRM" in kind
                                                         else {})}
               for symbol, kind, qty, trades in (("GME", "ATS_W_SMBL", 5000, 77),
                                                 ("AAPL", "OTC_W_SMBL", 1200, 30),
                                                 ("AAPL", "ATS_W_SMBL_FIRM", 800, 12))]
    return json.dumps(records, indent=1).encode()


OTC_SOURCES = [*_otc_download_sources(), ("json", _otc_json())]


def _otc_stored(db: Path) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT week_start_date, tier, summary_type, symbol, "
                            "share_quantity, trade_count FROM finra_otc_weekly_raw "
                            "ORDER BY ALL").df()


@pytest.mark.parametrize(("label", "good"), OTC_SOURCES, ids=[s[0] for s in OTC_SOURCES])
@EXAMPLES
@given(data=st.data())
def test_mutated_otc_file_loads_exactly_or_is_refused(label: str, good: bytes,
                                                      data: st.DataObject) -> None:
    bad = data.draw(mutations(good))
    suffix = ".json" if label == "json" else ".csv"
    with workspace() as tmp:
        db = tmp / "db.duckdb"
        path = tmp / f"week{suffix}"
        path.write_bytes(good)
        with open_writer(db) as writer:
            otc_ingest.ingest_files(writer, [path])
        before = table_hash(db)
        path.write_bytes(bad)
        try:
            with open_writer(db) as writer:
                otc_ingest.ingest_files(writer, [path], force=True)
        except DarkpoolError as exc:
            assert path.name in str(exc)
            assert table_hash(db) == before
            assert path.name in failed_messages(db)[-1]
            return
        # Accepted: what is stored for the file's weeks is exactly the parse of the bytes.
        parsed = otc_ingest.parse_path(path).symbol_rows
        with open_writer(tmp / "fresh.duckdb") as writer:
            otc_ingest.ingest_files(writer, [path])
        fresh = _otc_stored(tmp / "fresh.duckdb")
        assert len(fresh) == len(parsed)
        stored = _otc_stored(db)
        keys = ["week_start_date", "tier", "summary_type", "symbol"]
        merged = fresh.merge(stored, on=keys, how="left", suffixes=("", "_db"),
                             indicator=True)
        assert (merged["_merge"] == "both").all()


# -- prices ---------------------------------------------------------------------------------------

PRICE_FILES = _sources(REAL_DATA / "ohlcv" / "McNuggett_ticker-data_2020-11_2021-02" / "GME.csv",
                       FIXTURES / "prices" / "yahoo" / "GME.csv")


def _price_range(data: bytes) -> tuple[dt.date, dt.date]:
    bars = parse_yahoo_csv(data, symbol="GME", source_name="GME.csv")
    return bars["date"].min().date(), bars["date"].max().date()


@pytest.mark.parametrize("original", PRICE_FILES, ids=lambda p: p.parent.name)
@EXAMPLES
@given(data=st.data())
def test_mutated_price_file_loads_exactly_or_is_refused(original: Path,
                                                        data: st.DataObject) -> None:
    good = original.read_bytes()
    bad = data.draw(mutations(good))
    first, last = _price_range(good)
    with workspace() as tmp:
        folder, db = tmp / "in", tmp / "db.duckdb"
        folder.mkdir()
        path = folder / "GME.csv"
        path.write_bytes(good)
        settings_ = load_config()
        with open_writer(db) as writer:
            ingest_prices(writer, settings_, first, last, tickers=["GME"], from_dir=folder)
        before = table_hash(db)
        path.write_bytes(bad)
        try:
            with open_writer(db) as writer:
                summary = ingest_prices(writer, settings_, first, last, tickers=["GME"],
                                        from_dir=folder)
        except DarkpoolError as exc:
            assert "GME.csv" in str(exc)
            assert table_hash(db) == before
            assert "GME.csv" in failed_messages(db)[-1]
            return
        expected, _ = keep_sessions(parse_yahoo_csv(bad, symbol="GME", source_name="GME.csv"),
                                    first, last)
        with duckdb.connect(str(db), read_only=True) as conn:
            stored = conn.execute("SELECT symbol, date, open, high, low, close, adj_close, "
                                  "vwap, volume FROM prices_daily ORDER BY date").df()
        if summary.missing:  # no bar left in range: the stored bars were left untouched
            assert table_hash(db) == before
            return
        pd.testing.assert_frame_equal(stored.reset_index(drop=True),
                                      expected[list(stored.columns)].reset_index(drop=True),
                                      check_dtype=False)


# -- parse level: many more mutations, no database ------------------------------------------------

@pytest.mark.parametrize("original", REGSHO_FILES, ids=lambda p: p.name)
@PARSE_EXAMPLES
@given(data=st.data())
def test_regsho_parser_returns_valid_rows_or_names_the_file(original: Path,
                                                            data: st.DataObject) -> None:
    bad = data.draw(mutations(original.read_bytes()))
    try:
        table = parse_short_table(bad, "CNMSshvol20210802.txt").to_pandas()
    except DataFormatError as exc:
        assert exc.source == "CNMSshvol20210802.txt" and str(exc).startswith(exc.source)
        return
    volumes = table[["short_volume", "total_volume"]].to_numpy()
    assert np.isfinite(volumes).all() and (volumes >= 0).all()
    assert (table["short_volume"] <= table["total_volume"]).all()
    exempt = table["short_exempt_volume"].dropna()
    assert (exempt <= table.loc[exempt.index, "short_volume"]).all()
    assert table["symbol"].str.fullmatch(limits.SYMBOL_PATTERN.strip("^$")).all()
    assert table["symbol"].is_unique


@pytest.mark.parametrize(("label", "good"), OTC_SOURCES, ids=[s[0] for s in OTC_SOURCES])
@PARSE_EXAMPLES
@given(data=st.data())
def test_otc_parsers_return_valid_rows_or_name_the_file(label: str, good: bytes,
                                                        data: st.DataObject) -> None:
    bad = data.draw(mutations(good))
    try:
        if label == "json":
            parsed = otc.parse_saved_json(bad, "week.json")
        else:
            parsed = otc.parse_download_file(bad, "week.csv")
    except DataFormatError as exc:
        assert exc.source in ("week.json", "week.csv")
        return
    for frame in (parsed.symbol_rows, parsed.firm_rows):
        quantity = frame["share_quantity"].to_numpy(dtype=float)
        assert np.isfinite(quantity).all() and (quantity >= 0).all()
        assert (frame["week_start_date"].dt.day_of_week == 0).all()
        assert frame["symbol"].astype(str).str.fullmatch(
            limits.SYMBOL_PATTERN.strip("^$")).all()


@pytest.mark.parametrize("original", PRICE_FILES, ids=lambda p: p.parent.name)
@PARSE_EXAMPLES
@given(data=st.data())
def test_price_parser_returns_valid_bars_or_names_the_file(original: Path,
                                                           data: st.DataObject) -> None:
    bad = data.draw(mutations(original.read_bytes()))
    try:
        bars = parse_yahoo_csv(bad, symbol="GME", source_name="GME.csv")
    except DataFormatError as exc:
        assert exc.source == "GME.csv"
        return
    prices = bars[["open", "high", "low", "close", "volume"]].to_numpy()
    assert np.isfinite(prices).all()
    assert ((bars["low"] <= bars["open"]) & (bars["open"] <= bars["high"])).all()
    assert ((bars["low"] <= bars["close"]) & (bars["close"] <= bars["high"])).all()
    assert bars["date"].is_unique


def test_mutations_are_deterministic_and_varied() -> None:
    """The strategy really edits the input (guards against a vacuous property)."""
    seen: set[bytes] = set()
    good = (FIXTURES / "finra_short" / "CNMSshvol20210802.txt").read_bytes()

    @settings(max_examples=40, derandomize=True, deadline=None)
    @given(data=st.data())
    def collect(data: st.DataObject) -> None:
        seen.add(data.draw(mutations(good)))

    collect()
    assert len(seen) > 20

