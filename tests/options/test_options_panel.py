"""The ``+options`` sandbox panel: drawn from ``options_premium_daily`` under the seed chart."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from typer.testing import CliRunner

from darkpool_analysis import sandbox_lab, store, synthetic, trading_calendar
from darkpool_analysis.build import settle_owed
from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.ingest.finra_short import ingest_finra_short
from darkpool_analysis.ingest.options import PREMIUM_COLUMNS, TABLE
from darkpool_analysis.ingest.prices import ingest_prices
from darkpool_analysis.views import lab_chart, options_panel

TICKERS = ("NKE", "AAPL")
START, END = dt.date(2025, 3, 3), dt.date(2025, 5, 30)


def premium_rows(symbol: str, days: list[dt.date]) -> pd.DataFrame:
    """Hand-made premium rows: calls grow, puts shrink, so the score rises across the range."""
    n = len(days)
    ramp = np.linspace(0.0, 1.0, n)
    frame = pd.DataFrame({
        "symbol": symbol, "date": days, "underlying_close": 50.0 + 10 * ramp,
        "call_itm_premium": 2e5 + 6e5 * ramp, "call_otm_premium": 3e5 + 9e5 * ramp,
        "put_itm_premium": 6e5 - 4e5 * ramp, "put_otm_premium": 9e5 - 6e5 * ramp,
        "call_volume": 1000.0, "put_volume": 800.0, "contracts": 24, "contracts_traded": 20,
        "moneyness_band": 0.1, "max_days_to_expiry": 30, "source_file": f"test/{symbol}",
        "fetched_at": store.utcnow()})
    frame["call_premium"] = frame["call_itm_premium"] + frame["call_otm_premium"]
    frame["put_premium"] = frame["put_itm_premium"] + frame["put_otm_premium"]
    frame["premium_score"] = 100 * frame["call_premium"] / (frame["call_premium"]
                                                            + frame["put_premium"])
    return frame


@pytest.fixture
def options_db(tmp_path: Path, db_path: Path) -> list[dt.date]:
    market = synthetic.write_market(tmp_path / "market", TICKERS, START, END)
    settings = load_config()
    sessions = trading_calendar.sessions_between(START, END)
    shown = [day for day in sessions[-40:] if day not in sessions[-15:-13]]  # a 2-day gap
    with store.open_writer(db_path) as writer:
        ingest_finra_short(settings, START, END, writer=writer, from_dir=market.finra_dir)
        ingest_prices(writer, settings, START, END, tickers=TICKERS, from_dir=market.prices_dir)
        settle_owed(writer, settings)
        writer.replace_partition(TABLE, premium_rows("NKE", shown), where="symbol = ?",
                                 params=["NKE"])
    return shown


def _options_axes(fig: object) -> list[object]:
    return [ax for ax in fig.axes  # type: ignore[attr-defined]
            if ax.get_title(loc="left") == options_panel.TITLE]


def test_panel_draws_each_stored_session(options_db: list[dt.date]) -> None:
    sessions = trading_calendar.sessions_between(START, END)
    lab = sandbox_lab.load_lab("NKE", sessions[-60], END, [])
    assert lab.options is not None and len(lab.options) == len(options_db)
    fig = lab_chart.plot_lab(lab, panels=["options"])
    (ax,) = _options_axes(fig)
    bars = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bars) == 4 and all(len(c.get_paths()) == len(options_db) for c in bars)
    tops = [float(path.vertices[:, 1].max()) for path in bars[1].get_paths()]  # call ITM
    expected = premium_rows("NKE", options_db)
    assert tops == pytest.approx((expected["call_otm_premium"]
                                  + expected["call_itm_premium"]).tolist())
    bottoms = [float(path.vertices[:, 1].min()) for path in bars[3].get_paths()]  # put ITM
    assert bottoms == pytest.approx((-expected["put_premium"]).tolist())
    # bars sit on the sessions' positions of the shared x axis (the gap stays empty)
    centres = [float(path.vertices[:, 0].min() + path.vertices[:, 0].max()) / 2
               for path in bars[0].get_paths()]
    positions = [float(i) for i, day in enumerate(lab.frame["date"].dt.date)
                 if day in options_db]
    assert centres == pytest.approx(positions)


def test_panel_without_rows_says_how_to_get_them(options_db: list[dt.date]) -> None:
    lab = sandbox_lab.load_lab("AAPL", START, END, [])
    fig = lab_chart.plot_lab(lab, panels=["options"])
    (ax,) = _options_axes(fig)
    assert [t.get_text() for t in ax.texts] == [options_panel.NO_DATA_TEXT]


def test_cli_appends_the_panel_below_the_seed_chart(options_db: list[dt.date],
                                                    tmp_path: Path) -> None:
    out = tmp_path / "charts" / "nke_options.png"
    result = CliRunner().invoke(app, ["sandbox", "NKE", "--end", str(END), "--out", str(out),
                                      "--panels", "+options"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")


def test_dollar_format() -> None:
    assert [options_panel.format_dollars(v) for v in (0, 950, 12_500, -3e6, 2.5e9)] == [
        "$0", "$950", "$12.5K", "-$3.0M", "$2.5B"]
    assert "premium_score" not in PREMIUM_COLUMNS
