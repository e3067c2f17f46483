"""The scanner on a hand-made database: ranking, both ends, the dollar-volume filter, missing
data (never 0), windowed variants, formulas, flags, errors and every output format."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from market_db import flat, metrics_rows, sessions, write_metrics
from typer.testing import CliRunner

from darkpool_analysis import market
from darkpool_analysis.cli import app
from darkpool_analysis.errors import ConfigError, NoDataError
from darkpool_analysis.formulas import collect_formulas
from darkpool_analysis.synthetic import SYNTHETIC_LABEL

DAYS = sessions("2024-03-04", 25)
DAY = DAYS[-1]

#: The scanned day, per symbol (None = missing).
TODAY = {
    #        ratio_z  lit_z  ret_z  otc_z  short_ratio close  volume   lit_imb
    "AAA": (1.8, 0.5, None, 0.2, 0.30, 10.0, 1e5, 0.10),
    "BBB": (-1.2, None, 0.4, None, 0.55, 50.0, 1e6, None),
    "BRK.B": (0.3, -0.2, 0.1, 0.0, 0.45, 400.0, 5e5, -0.05),
    "DDD": (None, 0.9, 1.0, 1.0, None, 30.0, 1e7, 0.20),
    "EEE": (-2.5, -1.0, -0.5, -1.0, 0.60, None, None, -0.30),
}


def expected_score(ratio_z: float | None, lit_z: float | None, ret_z: float | None,
                   otc_z: float | None) -> float:
    """metrics-spec.md's composite score written out by hand (NULL short z -> NULL)."""
    if ratio_z is None:
        return math.nan
    lit, ret, otc = (0.0 if v is None else v for v in (lit_z, ret_z, otc_z))
    raw = 0.55 * math.tanh(ratio_z / 2) + 0.30 * math.tanh(lit / 2) + 0.15 * math.tanh(0.3 * ret)
    intensity = 0.7 + 0.6 / (1 + math.exp(-otc))
    return (min(max(raw * intensity, -1.0), 1.0) + 1) * 50


SCORES = {s: expected_score(*v[:4]) for s, v in TODAY.items()}


def _rows() -> list[dict[str, object]]:
    rng = np.random.default_rng(11)
    rows: list[dict[str, object]] = []
    for symbol, (ratio_z, lit_z, ret_z, otc_z, short_ratio, close, volume, lit) in TODAY.items():
        total = rng.uniform(1e5, 1e6, len(DAYS))
        short = total * rng.uniform(0.3, 0.6, len(DAYS))
        for i, day in enumerate(DAYS):
            rows.append({"symbol": symbol, "date": day, "short_volume": short[i],
                         "total_volume": total[i], "close": 20.0, "volume": 2e6})
        today = rows[-1]
        score = SCORES[symbol]
        today.update({
            "short_buy_sell_ratio_z": ratio_z, "lit_flow_imbalance_z": lit_z, "return_z": ret_z,
            "otc_participation_z": otc_z, "short_ratio": short_ratio, "close": close,
            "volume": volume, "lit_flow_imbalance": lit,
            "short_buy_sell_ratio": None if short_ratio is None else
            short_ratio / (1 - short_ratio),
            "accumulation_score_display": score, "confidence": 0.8,
            "pressure_context_label": None if math.isnan(score) else
            "accumulation" if score >= 70 else "distribution" if score <= 30 else "neutral",
            "finra_buy_volume_z": 0.5,
        })
        if volume is not None and short_ratio is not None:  # FINRA total = 40% of the bar
            today.update(total_volume=0.4 * volume, short_volume=0.4 * volume * short_ratio)
        if short_ratio is None:
            today.update(short_volume=None, total_volume=None, has_short=False,
                         short_source=None)
        if close is None:
            today.update(has_price=False)
        if lit is None:
            today.update(has_lit=False)
    flags = {"AAA": {"short_source": "FACILITY_SUM"}, "BBB": {"otc_status": "Staled"},
             "BRK.B": {"otc_alignment": "week"}, "DDD": {"otc_status": "None", "has_otc": False}}
    for row in rows:
        if row["date"] == DAY and row["symbol"] in flags:
            row.update(flags[str(row["symbol"])])
    return rows


@pytest.fixture
def scan_db(db_path: Path) -> Path:
    return write_metrics(db_path, metrics_rows(_rows()))


def _by_score(symbols: list[str], *, reverse: bool) -> list[str]:
    return sorted(symbols, key=lambda s: SCORES[s], reverse=reverse)


def test_both_ends_ranked_by_the_current_score(scan_db: Path) -> None:
    scored = [s for s in TODAY if not math.isnan(SCORES[s])]
    frame = market.scan(DAY, top=2, db_path=scan_db)
    top = frame.loc[frame["end"] == "top"]
    bottom = frame.loc[frame["end"] == "bottom"]
    assert top["symbol"].tolist() == _by_score(scored, reverse=True)[:2]
    assert bottom["symbol"].tolist() == _by_score(scored, reverse=False)[:2]
    assert top["rank"].tolist() == [1, 2] and bottom["rank"].tolist() == [1, 2]
    np.testing.assert_allclose(frame["current"], [SCORES[s] for s in frame["symbol"]],
                               rtol=1e-12)
    np.testing.assert_allclose(frame["current"], frame["score"], rtol=1e-12)
    assert frame.attrs["without_value"] == ["DDD"] and frame.attrs["ranked"] == 4
    small = market.scan(DAY, top=3, db_path=scan_db, tickers=["AAA", "BBB", "EEE"])
    assert small["end"].tolist() == ["top", "top", "top"]  # a symbol appears once


def test_full_ranking_keeps_missing_data_missing(scan_db: Path) -> None:
    frame = market.scan(DAY, top=None, tickers=["aaa", "BBB", "BRK/B", "DDD", "EEE", "ZZZ"],
                        db_path=scan_db).set_index("symbol")
    assert frame.index.tolist()[-2:] == ["DDD", "ZZZ"]  # no value: last, unranked
    assert frame["rank"].isna().tolist() == [False] * 4 + [True, True]
    assert math.isnan(frame.loc["DDD", "current"]) and math.isnan(frame.loc["DDD",
                                                                           "short_buy_sell_ratio"])
    assert math.isnan(frame.loc["BBB", "lit_flow_imbalance"])  # not 0
    assert math.isnan(frame.loc["EEE", "off_exchange_share"])  # no bar -> no denominator
    assert math.isnan(frame.loc["EEE", "dollar_volume"])
    assert frame.loc["ZZZ", "flags"] == "no_row"
    assert frame.loc["ZZZ"].drop(["rank", "flags", "otc_status", "zone"]).isna().all()
    assert frame.loc["AAA", "off_exchange_share"] == pytest.approx(0.4)  # FINRA / bar volume
    assert frame.loc["AAA", "flags"] == "facility_sum"
    assert frame.loc["BBB", "flags"] == "no_lit,otc_stale"
    assert frame.loc["BRK.B", "flags"] == "look_ahead"
    assert frame.loc["DDD", "flags"] == "no_short,no_otc"
    assert frame.loc["EEE", "flags"] == "no_price"


def test_rank_by_a_numeric_column(scan_db: Path) -> None:
    frame = market.scan(DAY, by="short_ratio", top=None, db_path=scan_db)
    assert frame["symbol"].tolist() == ["EEE", "BBB", "BRK.B", "AAA", "DDD"]
    assert frame["rank"].tolist()[:4] == [1, 2, 3, 4] and pd.isna(frame["rank"].iloc[4])
    assert list(frame.columns[:3]) == ["rank", "symbol", "short_ratio"]
    context = market.scan(DAY, by="short_buy_sell_ratio_z", top=None, db_path=scan_db)
    assert list(context.columns).count("short_buy_sell_ratio_z") == 1


def test_minimum_dollar_volume_filter(scan_db: Path) -> None:
    # close x volume: AAA 1e6, BBB 5e7, BRK.B 2e8, DDD 3e8, EEE unknown (no bar)
    frame = market.scan(DAY, by="short_ratio", top=None, min_dollar_volume=1e7,
                        db_path=scan_db)
    assert frame["symbol"].tolist() == ["BBB", "BRK.B", "DDD"]
    assert frame.attrs["filtered_out"] == 1 and frame.attrs["unknown_dollar_volume"] == 1
    assert (frame["dollar_volume"] >= 1e7).all()
    everything = market.scan(DAY, by="short_ratio", top=None, min_dollar_volume=0,
                             db_path=scan_db)
    assert len(everything) == 4 and "EEE" not in set(everything["symbol"])


def test_windowed_variant_reads_its_warm_up(scan_db: Path) -> None:
    frame = market.scan(DAY, by="imbalance_log1p_z", top=None, db_path=scan_db)
    # oracle: plain pandas per symbol over the stored history
    rows = metrics_rows(_rows())
    buy, sell = rows["short_volume"], np.maximum(rows["total_volume"] - rows["short_volume"], 0)
    total = buy + sell
    rows["raw"] = (buy - sell) / total * np.log1p(total)
    rows = rows.sort_values(["symbol", "date"])
    roll = rows.groupby("symbol")["raw"].rolling(20, min_periods=5)
    mean = roll.mean().reset_index(level=0, drop=True)
    std = roll.std(ddof=0).reset_index(level=0, drop=True)
    rows["z"] = (rows["raw"] - mean) / std
    expected = rows.loc[rows["date"] == DAY].set_index("symbol")["z"]
    got = frame.set_index("symbol")["imbalance_log1p_z"]
    np.testing.assert_allclose(got.loc[expected.index], expected, rtol=1e-10)
    assert frame.attrs["scale"] == "z"


def test_formula_as_signal(scan_db: Path) -> None:
    formulas = collect_formulas(["dpi_x2=short_ratio * 2"], [])
    frame = market.scan(DAY, by="dpi_x2", top=None, formulas=formulas, db_path=scan_db)
    assert frame["symbol"].tolist()[:4] == ["EEE", "BBB", "BRK.B", "AAA"]
    assert frame["dpi_x2"].iloc[0] == pytest.approx(1.2)


def test_bad_requests_are_clear(scan_db: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot rank by 'nope'.*option_a.*short_ratio"):
        market.scan(DAY, by="nope", db_path=scan_db)
    with pytest.raises(NoDataError, match=rf"no daily_metrics rows on 2030-01-02 \(nearest "
                                          rf"dates with data: previous {DAY}\)"):
        market.scan("2030-01-02", db_path=scan_db)
    assert str(DAYS[4]) == "2024-03-08" and str(DAYS[5]) == "2024-03-11"
    with pytest.raises(NoDataError, match="previous 2024-03-08, next 2024-03-11"):
        market.scan("2024-03-09", db_path=scan_db)  # a Saturday
    with pytest.raises(ConfigError, match="unknown universe"):
        market.scan(DAY, universe="nope", db_path=scan_db)


def test_universe_with_any_spelling(scan_db: Path, clean_env: Path) -> None:
    (clean_env / "darkpool.toml").write_text('[universes]\nmine = ["BRK-B", "eee", "ZZZ"]\n')
    frame = market.scan(DAY, universe="mine", top=None, db_path=scan_db)
    assert frame["symbol"].tolist() == ["BRK.B", "EEE", "ZZZ"]
    assert frame.attrs["universe"] == "mine" and frame.attrs["symbols"] == 3


def test_cli_csv_round_trip(scan_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "scan.csv"
    result = CliRunner().invoke(app, ["scan", "--date", str(DAY), "--all", "--format", "csv",
                                      "--out", str(out), "--tickers", "AAA,BBB,BRK.B,DDD,ZZZ"])
    assert result.exit_code == 0, result.output
    back = pd.read_csv(out, keep_default_na=False, na_values=[""])
    expected = market.scan(DAY, top=None, tickers=["AAA", "BBB", "BRK.B", "DDD", "ZZZ"],
                           db_path=scan_db)
    assert list(back.columns) == list(expected.columns)
    for column in expected.columns:
        if column in ("symbol", "otc_status", "zone", "flags"):
            want = expected[column].fillna("").astype(str).tolist()
            assert back[column].fillna("").astype(str).tolist() == want, column
        else:
            np.testing.assert_array_equal(back[column].to_numpy(dtype=float),
                                          expected[column].to_numpy(dtype=float))
    # stdout is the same CSV
    stdout = CliRunner().invoke(app, ["scan", "--date", str(DAY), "--all", "--format", "csv",
                                      "--tickers", "AAA,BBB,BRK.B,DDD,ZZZ"])
    assert stdout.exit_code == 0 and stdout.output == out.read_text()


def test_cli_formats_and_synthetic_label(db_path: Path) -> None:
    write_metrics(db_path, metrics_rows(_rows()), synthetic=True)
    runner = CliRunner()
    csv = runner.invoke(app, ["scan", "--date", str(DAY), "--top", "2", "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    assert csv.output.splitlines()[0] == f"# {SYNTHETIC_LABEL}"
    back = pd.read_csv(io.StringIO(csv.output), comment="#")
    assert back["end"].tolist() == ["top", "top", "bottom", "bottom"]
    md = runner.invoke(app, ["scan", "--date", str(DAY), "--top", "2", "--format", "md"])
    assert md.exit_code == 0 and md.output.startswith(f"> **{SYNTHETIC_LABEL}**")
    assert "### Highest current (accumulation end)" in md.output
    assert "| # | Ticker | current | B/S |" in md.output and "| NA |" in md.output
    assert "Without a value on" in md.output and "DDD" in md.output
    html = runner.invoke(app, ["scan", "--date", str(DAY), "--format", "html"])
    assert html.exit_code == 0 and f'<p class="synthetic">{SYNTHETIC_LABEL}</p>' in html.output
    table = runner.invoke(app, ["scan", "--date", str(DAY), "--top", "2"])
    assert table.exit_code == 0, table.output
    text = flat(table.output)
    assert SYNTHETIC_LABEL in text and "Highest current (accumulation end)" in text
    assert "Lowest current (distribution end)" in text and "1 symbol(s) without a current" in text
    default_day = runner.invoke(app, ["scan", "--top", "1", "--format", "csv"])
    assert default_day.exit_code == 0 and len(default_day.output.splitlines()) == 4
