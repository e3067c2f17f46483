"""The dark index on the real Dec-2020..Feb-2021 Reg SHO files and 25 Yahoo price files,
through the real ingest and build, against an independent pandas computation (to 1e-12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from darkpool_analysis import market, trading_calendar
from darkpool_analysis.build import build_metrics
from darkpool_analysis.config import load_config
from darkpool_analysis.ingest.finra_short import ingest_finra_short
from darkpool_analysis.ingest.prices import ingest_prices
from darkpool_analysis.store import open_writer

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

CNMS = ("regsho_daily", "McNuggett_2020-12_2021-02")
YAHOO = ("ohlcv", "McNuggett_ticker-data_2020-11_2021-02")
START, END = "2020-12-01", "2021-02-12"
#: PLTR joins mid-range, TSLA leaves (exclusive end), AMD leaves and comes back.
SPECIAL = {"PLTR": [("2021-01-04", "")], "TSLA": [("2019-01-02", "2021-01-20")],
           "AMD": [("2020-06-01", "2020-12-15"), ("2021-01-05", "")]}


def _membership(tickers: list[str], path: Path) -> Path:
    lines = ["ticker,start_date,end_date"]
    for ticker in tickers:
        for start, end in SPECIAL.get(ticker, [("2015-01-02", "")]):
            lines.append(f"{ticker.lower() if ticker == 'NIO' else ticker},{start},{end}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _pandas_short(folder: Path) -> pd.DataFrame:
    """Independent read of the CNMS files: ``Date|Symbol|ShortVolume|...|TotalVolume|Market``
    with a trailer line (a row count) that has no Symbol."""
    frames = []
    for path in sorted(folder.glob("CNMSshvol*.txt")):
        raw = pd.read_csv(path, sep="|", dtype={"Date": str, "Symbol": str},
                          keep_default_na=False, na_values=[""])
        raw = raw.loc[raw["Symbol"].notna()]
        frames.append(pd.DataFrame({"date": pd.to_datetime(raw["Date"], format="%Y%m%d"),
                                    "symbol": raw["Symbol"],
                                    "short": raw["ShortVolume"].astype(float),
                                    "total": raw["TotalVolume"].astype(float)}))
    return pd.concat(frames, ignore_index=True)


def _pandas_prices(folder: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p).assign(symbol=p.stem.upper()) for p in sorted(folder.glob("*.csv"))]
    raw = pd.concat(frames, ignore_index=True)
    return pd.DataFrame({"date": pd.to_datetime(raw["Date"]), "symbol": raw["symbol"],
                         "close": raw["Close"].astype(float),
                         "volume": raw["Volume"].astype(float)})


def _oracle(short: pd.DataFrame, prices: pd.DataFrame, spans: dict[str, list[tuple[str, str]]],
            days: pd.DatetimeIndex) -> pd.DataFrame:
    """Plain pandas: members per session from the spans, the has-data rule, the sums."""
    span_rows = pd.DataFrame([(s, pd.Timestamp(a), pd.Timestamp(b) if b else pd.NaT)
                              for s, pairs in spans.items() for a, b in pairs],
                             columns=["symbol", "start", "end"])
    grid = span_rows.merge(pd.DataFrame({"date": days}), how="cross")
    grid = grid.loc[(grid["date"] >= grid["start"])
                    & (grid["end"].isna() | (grid["date"] < grid["end"]))]
    rows = grid.merge(short, on=["symbol", "date"], how="left").merge(
        prices, on=["symbol", "date"], how="left")
    has = rows["short"].notna() & (rows["total"] > 0) & (rows["close"] > 0)
    dollars = rows["volume"] * rows["close"]
    rows = rows.assign(has=has, sd=(rows["short"] * rows["close"]).where(has),
                       td=(rows["total"] * rows["close"]).where(has),
                       ratio=(rows["short"] / rows["total"]).where(has),
                       cov=dollars.where(has & (dollars > 0)),
                       all_dollars=dollars.where(dollars > 0))
    g = rows.groupby("date")
    out = pd.DataFrame({"members": g.size(), "members_with_data": g["has"].sum(),
                        "dix": g["sd"].sum(min_count=1) / g["td"].sum(min_count=1),
                        "dpi_equal_weight": g["ratio"].mean(),
                        "dollar_coverage": g["cov"].sum(min_count=1)
                        / g["all_dollars"].sum(min_count=1)}).reindex(days)
    gap = out["members_with_data"] < 0.5 * out["members"]
    out.loc[gap, ["dix", "dpi_equal_weight"]] = np.nan
    rolling = out["dix"].rolling(20, min_periods=5)
    out["dix_z"] = (out["dix"] - rolling.mean()) / rolling.std(ddof=0)
    return out.rename_axis("date").reset_index()


def test_dark_index_matches_pandas_on_real_files(real_data: Path, db_path: Path,
                                                 tmp_path: Path) -> None:
    cnms_dir, yahoo_dir = real_data.joinpath(*CNMS), real_data.joinpath(*YAHOO)
    if not (cnms_dir.is_dir() and yahoo_dir.is_dir()):
        pytest.skip("real Reg SHO or Yahoo folder missing")
    tickers = sorted(p.stem.upper() for p in yahoo_dir.glob("*.csv"))
    assert len(tickers) == 25
    settings = load_config(db_path=db_path)
    summary = ingest_finra_short(settings, START, END, "CNMS", from_dir=cnms_dir)
    assert summary.ok
    with open_writer(db_path) as writer:
        ingest_prices(writer, settings, "2020-11-30", END, tickers, "csv", from_dir=yahoo_dir)
        build_metrics(writer, settings, symbols=tickers)

    members = _membership(tickers, tmp_path / "members.csv")
    frame = market.index(members, START, END, name="REAL", db_path=db_path)

    days = trading_calendar.sessions_index(START, END)
    assert len(days) == 51 and frame["date"].tolist() == list(days)
    spans = {t: SPECIAL.get(t, [("2015-01-02", "")]) for t in tickers}
    expected = _oracle(_pandas_short(cnms_dir), _pandas_prices(yahoo_dir), spans, days)
    assert frame["members"].tolist() == expected["members"].astype(int).tolist()
    assert frame["members_with_data"].tolist() == expected["members_with_data"].astype(
        int).tolist()
    for column in ("dix", "dpi_equal_weight", "dollar_coverage", "dix_z"):
        ours, theirs = frame[column].to_numpy(), expected[column].to_numpy()
        assert np.array_equal(np.isnan(ours), np.isnan(theirs)), column
        finite = np.isfinite(theirs)
        assert np.max(np.abs(ours[finite] - theirs[finite])) <= 1e-12, column
    assert frame["dix"].notna().sum() >= 45  # real values, not a table of gaps

    # A name outside its span never counts: PLTR (joins 2021-01-04) is absent in December,
    # and counting it there would change the index.
    members_on = frame.set_index(frame["date"].dt.strftime("%Y-%m-%d"))["members"]
    assert members_on["2020-12-14"] == 24  # all but PLTR
    assert members_on["2020-12-15"] == 23  # AMD's first span ended (exclusive)
    assert members_on["2021-01-04"] == 24  # PLTR joins
    assert members_on["2021-01-05"] == 25  # AMD is back
    assert members_on["2021-01-19"] == 25 and members_on["2021-01-20"] == 24  # TSLA left
    december = frame["date"] < pd.Timestamp("2021-01-04")
    leaky = _oracle(_pandas_short(cnms_dir), _pandas_prices(yahoo_dir),
                    {**spans, "PLTR": [("2015-01-02", "")]}, days)
    gap = np.abs(leaky.loc[december.to_numpy(), "dix"].to_numpy()
                 - frame.loc[december, "dix"].to_numpy())
    assert gap.min() > 1e-6
