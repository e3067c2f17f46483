"""``darkpool sandbox --variants/--panels``: variant panels, consensus, heatmap, histogram,
past-only median/MAD bands and the OTC panel, on a fixture database with every column."""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from typer.testing import CliRunner

from darkpool_analysis import sandbox, sandbox_lab, signals, store, trading_calendar
from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.errors import ConfigError, NoDataError
from darkpool_analysis.formulas import parse_formula
from darkpool_analysis.views import lab_chart, otc_panel, sandbox_chart
from darkpool_analysis.views.style import COLORS
from seed_support import SEED_TITLES

FIRST, LAST = "2025-06-02", "2025-12-31"
#: Fixture sessions before the first published OTC week (placeholder panel range).
NO_OTC_END = "2025-06-25"


def _rolling_z(values: pd.Series, window: int = 20) -> pd.Series:
    rolling = values.rolling(window, min_periods=5)
    std = rolling.std(ddof=0)
    return (values - rolling.mean()) / std.where(std > 0)


def _otc_columns(dates: pd.DatetimeIndex, rng: np.random.Generator,
                 alignment: str) -> pd.DataFrame:
    """Weekly OTC block: the week three weeks back is shown (None before the first one),
    sessions 100-104 carry the previous week stale (``Staled``)."""
    monday = dates - pd.to_timedelta(dates.day_of_week, unit="D")
    week = pd.Series(monday - pd.Timedelta(days=21), index=range(len(dates)))
    week[dates < pd.Timestamp(FIRST) + pd.Timedelta(days=24)] = pd.NaT
    status = pd.Series(np.where(week.isna(), "None", "Anchored"), dtype=object)
    stale = np.arange(len(dates))[100:105]
    week.iloc[stale] = week.iloc[stale[0] - 1]
    status.iloc[stale] = "Staled"
    weeks = pd.Index(week.dropna().unique()).sort_values()
    rate = pd.Series(rng.uniform(0.3, 0.5, len(weeks)), index=weeks)
    z = pd.Series(rng.normal(0, 1.2, len(weeks)), index=weeks)
    delta = rate.diff()
    return pd.DataFrame({
        "otc_week_used": week.dt.date, "otc_status": status,
        "otc_off_exchange_volume": week.map(rate * 4e6),
        "otc_participation_rate": week.map(rate), "otc_participation_z": week.map(z),
        "otc_participation_delta": week.map(delta), "otc_alignment": alignment,
    })


def lab_frame(symbol: str, seed: int, alignment: str = "published") -> pd.DataFrame:
    """``daily_metrics`` rows on every session of [FIRST, LAST]: FINRA short/total volume (two
    sessions without data, one all-zero day), lit flow, the stored z columns, OHLC prices, the
    score inputs with NULLs, confidence and the OTC block."""
    rng = np.random.default_rng(seed)
    dates = trading_calendar.sessions_index(FIRST, LAST).tz_localize(None)
    n = len(dates)
    total = rng.lognormal(np.log(4e6), 0.35, n).round()
    short = (total * rng.uniform(0.35, 0.62, n)).round()
    frame = pd.DataFrame({"symbol": symbol, "date": dates.date, "short_volume": short,
                          "total_volume": total, "short_buy_volume": short,
                          "short_sell_volume": total - short,
                          "lit_buy_volume": rng.lognormal(np.log(9e5), 0.4, n).round(),
                          "lit_sell_volume": rng.lognormal(np.log(9e5), 0.4, n).round()})
    volumes = ["short_volume", "total_volume", "short_buy_volume", "short_sell_volume"]
    frame.loc[[7, n - 9], volumes] = np.nan
    frame.loc[12, volumes] = 0.0
    sell = frame["short_sell_volume"]
    frame["short_ratio"] = frame["short_volume"] / frame["total_volume"].where(
        frame["total_volume"] > 0)
    frame["short_buy_sell_ratio"] = frame["short_buy_volume"] / sell.where(sell > 0)
    frame["short_buy_sell_ratio_z"] = _rolling_z(frame["short_buy_sell_ratio"])
    lit_buy, lit_sell = frame["lit_buy_volume"], frame["lit_sell_volume"]
    frame["lit_flow_imbalance"] = (lit_buy - lit_sell) / (lit_buy + lit_sell)
    frame["lit_flow_imbalance_z"] = _rolling_z(frame["lit_flow_imbalance"])
    frame["return_z"] = rng.normal(0, 1.1, n)
    frame.loc[rng.random(n) < 0.1, "return_z"] = np.nan
    frame["confidence"] = rng.choice([1.0, 0.9, 0.7, 0.56, 0.45, 0.35], n)
    frame.loc[rng.random(n) < 0.1, "confidence"] = np.nan
    frame["has_short"] = frame["short_volume"].notna()
    frame["inference_version"] = "test"
    buy = frame["short_buy_volume"]
    frame["finra_buy_volume"] = buy
    frame["finra_buy_volume_z"] = _rolling_z(buy)
    flow = (buy.fillna(0) + frame["lit_buy_volume"].fillna(0)
            - frame["short_sell_volume"].fillna(0) - frame["lit_sell_volume"].fillna(0))
    frame["vw_flow"] = flow
    frame["vw_flow_z"] = _rolling_z(flow)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.015, len(frame))))
    frame["open"] = close * (1 + rng.normal(0, 0.004, len(frame)))
    frame["high"] = np.maximum(frame["open"], close) * 1.01
    frame["low"] = np.minimum(frame["open"], close) * 0.99
    frame["close"] = close
    otc = _otc_columns(dates, rng, alignment)
    frame[list(otc.columns)] = otc.to_numpy()
    frame.loc[frame["otc_week_used"].isna(), "otc_participation_z"] = np.nan
    return frame


@pytest.fixture(scope="module")
def lab_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NKE (point-in-time OTC) and WKAL (same layout, built week-aligned)."""
    db = tmp_path_factory.mktemp("lab_db") / "darkpool.duckdb"
    with store.open_writer(db) as writer:
        for frame in (lab_frame("NKE", 0), lab_frame("WKAL", 1, alignment="week")):
            writer.replace_partition("daily_metrics", frame, where="symbol = ?",
                                     params=[str(frame["symbol"].iloc[0])])
    return db


@pytest.fixture
def lab_env(lab_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DARKPOOL_DB", str(lab_db))
    return lab_db


def load(names: list[str], start: str = "2025-10-01", end: str = "2025-11-28",
         *, symbol: str = "NKE", bands: str | None = None) -> sandbox_lab.Lab:
    variants = sandbox_lab.resolve_variants(names, {})
    return sandbox_lab.load_lab(symbol, start, end, variants, bands_signal=bands)


def titles(fig: Figure) -> list[str]:
    """Left titles of the figure's panels, top to bottom (twin axes have none)."""
    return [t for t in (ax.get_title(loc="left") for ax in fig.axes) if t]


def scatter_points(ax: Axes, color: str) -> np.ndarray:
    """Offsets of every single-colour scatter drawn in ``color`` (the score/consensus dots)."""
    target = mcolors.to_rgba(color)
    points = [c.get_offsets() for c in ax.collections
              if isinstance(c, PathCollection) and len(c.get_facecolors()) == 1
              and np.allclose(c.get_facecolors()[0], target)]
    return np.concatenate(points) if points else np.empty((0, 2))


# -- planning and errors -----------------------------------------------------------------------


def test_parse_panels_and_unknown_panel() -> None:
    request = sandbox_lab.parse_panels("price, +otc ,heatmap,")
    assert request.appended == ("otc",) and request.lab == ("price", "heatmap")
    with pytest.raises(ConfigError, match="unknown panel 'candles'; valid: price, heatmap, "
                                          "hist, bands, otc"):
        sandbox_lab.parse_panels("price,candles")
    with pytest.raises(ConfigError, match="requested twice"):
        sandbox_lab.parse_panels("otc,+otc")


def test_unknown_variant_lists_valid_names() -> None:
    with pytest.raises(signals.UnknownVariantError) as info:
        sandbox_lab.plan_lab("current,nope")
    for name in signals.variant_names():
        assert name in info.value.message


def test_plan_defaults() -> None:
    plan = sandbox_lab.plan_lab("current,blend_ab", ["mine=z(short_volume, 10)"],
                                panels="price,hist,bands")
    assert plan is not None
    assert plan.variants == ("current", "blend_ab", "mine")
    assert plan.compare == plan.variants
    assert plan.hist_signal == "blend_ab" and plan.bands_signal == "blend_ab"
    assert plan.lab_figure
    only_otc = sandbox_lab.plan_lab(None, panels="+otc")
    assert only_otc is not None and not only_otc.lab_figure and only_otc.to_compute == ()
    heat = sandbox_lab.plan_lab(None, panels="heatmap,hist")
    assert heat is not None and heat.compare == sandbox_lab.DEFAULT_COMPARE
    assert heat.hist_signal == "finra_buy_volume_z"
    assert sandbox_lab.plan_lab(None) is None
    with pytest.raises(ConfigError, match="needs the hist panel"):
        sandbox_lab.plan_lab("current", hist_signal="current")


def test_formula_and_variant_warmup() -> None:
    nested = parse_formula("f=z(mean(short_volume, 5), 20) - lag(close, 1)")
    assert sandbox_lab.formula_warmup(nested) == 26
    assert sandbox_lab.formula_warmup(parse_formula("g=short_ratio * 2")) == 0
    assert sandbox_lab.variant_warmup(signals.get_variant("buy_volume_z_raw")) == 20
    assert sandbox_lab.variant_warmup(signals.get_variant("current")) == 0
    assert sandbox_lab.variant_warmup(signals.get_variant("imbalance_log1p_z"),
                                      params={"window": 40}) == 40


# -- data ------------------------------------------------------------------------------------


def test_warmup_gives_full_history_values(lab_env: Path) -> None:
    names = ["imbalance_log1p_z", "buy_volume_z_raw", "current"]
    lab = load(names)
    full = lab_frame("NKE", 0)
    full["date"] = pd.to_datetime(full["date"])
    reference = signals.compute_variants(full, [signals.get_variant(n) for n in names])
    shown = (full["date"] >= "2025-10-01") & (full["date"] <= "2025-11-28")
    assert lab.frame["date"].tolist() == full.loc[shown, "date"].tolist()
    assert lab.warmup_rows == 20
    for name in names:
        np.testing.assert_allclose(lab.signals[name], reference.loc[shown, name], rtol=1e-12,
                                   equal_nan=True)
    assert lab.signals["buy_volume_z_raw"].notna().sum() >= len(lab.frame) - 3


def test_no_rows_in_range(lab_env: Path) -> None:
    with pytest.raises(NoDataError, match="no daily_metrics rows for NKE between 2024-01-02"):
        load(["current"], "2024-01-02", "2024-02-01")


def test_bands_use_past_data_only(lab_env: Path) -> None:
    long = load(["finra_buy_volume_z"], "2025-09-02", "2025-12-31", bands="finra_buy_volume_z")
    short = load(["finra_buy_volume_z"], "2025-09-02", "2025-10-15", bands="finra_buy_volume_z")
    pd.testing.assert_frame_equal(long.bands.iloc[:len(short.bands)], short.bands)
    # Independent reference: median / MAD of the previous 20 values, on the full history.
    full = lab_frame("NKE", 0)
    past = full["finra_buy_volume_z"].astype(float).shift(1)
    median = past.rolling(20).median()
    mad = past.rolling(20).apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True)
    shown = (pd.to_datetime(full["date"]) >= "2025-09-02").to_numpy()
    np.testing.assert_allclose(long.bands["median"], median[shown], equal_nan=True)
    np.testing.assert_allclose(long.bands["upper"], (median + 2 * mad)[shown], equal_nan=True)
    assert long.bands["median"].iloc[0] == pytest.approx(median[shown].iloc[0])
    assert np.isfinite(long.bands["median"].iloc[0])  # warm-up: a band on the first day


# -- figures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("variants", "panels", "expected"), [
    (["current", "finra_buy_volume_z"], [],
     ["current (0-100 score)", "finra_buy_volume_z (z)"]),
    (["option_a"], ["price", "heatmap", "hist", "bands", "otc"],
     ["Price with variant consensus (of 1)", "option_a (0-100 score)", "Signal heatmap",
      "Distribution of finra_buy_volume_z", "finra_buy_volume_z with median/MAD bands",
      "Weekly OTC participation (FINRA"]),
    ([], ["otc", "heatmap"], ["Weekly OTC participation (FINRA", "Signal heatmap"]),
])
def test_lab_figure_panels(lab_env: Path, variants: list[str], panels: list[str],
                           expected: list[str]) -> None:
    plan = sandbox_lab.plan_lab(",".join(variants) or None, panels=",".join(panels) or None)
    assert plan is not None
    lab = sandbox_lab.load_lab("NKE", "2025-10-01", "2025-11-28", plan.to_compute,
                               bands_signal=plan.bands_signal)
    fig = lab_chart.plot_lab(lab, plan.variants, plan.panels.lab, compare=plan.compare,
                             hist_signal=plan.hist_signal)
    got = titles(fig)
    assert len(got) == len(expected)
    for title, start in zip(got, expected, strict=True):
        assert title.startswith(start), (title, start)
    panels_axes = [ax for ax in fig.axes if ax.get_title(loc="left")]
    date_axes = [ax for ax in panels_axes
                 if not ax.get_title(loc="left").startswith("Distribution")]
    labelled = [ax for ax in date_axes if any(t.get_text() for t in ax.get_xticklabels())]
    assert labelled == [date_axes[-1]]
    assert [t.get_text() for t in date_axes[-1].get_xticklabels()][:2] == ["25-10-01",
                                                                           "25-10-02"]
    assert all(ax.get_shared_x_axes().joined(ax, date_axes[0]) for ax in date_axes)


def test_score_and_z_variant_panels(lab_env: Path) -> None:
    lab = load(["current", "finra_buy_volume_z"])
    fig = lab_chart.plot_lab(lab, ["current", "finra_buy_volume_z"])
    score_ax, z_ax = (ax for ax in fig.axes if ax.get_title(loc="left"))
    scores = lab.signals["current"].to_numpy()
    above = scatter_points(score_ax, COLORS["green"])
    below = scatter_points(score_ax, COLORS["red"])
    assert sorted(above[:, 0]) == list(np.flatnonzero(scores >= 70))
    assert sorted(below[:, 0]) == list(np.flatnonzero(scores <= 30))
    assert {line.get_ydata()[0] for line in score_ax.get_lines()} == {0.3, 0.5, 0.7}
    levels = {line.get_ydata()[0] for line in z_ax.get_lines() if len(line.get_ydata()) == 2}
    assert levels == {1.0, -1.0, 0.0}


def test_consensus_dots_equal_hand_count(lab_env: Path) -> None:
    names = ["current", "option_a", "finra_buy_volume_z", "net_short_volume"]
    lab = load(names)
    fig = lab_chart.plot_lab(lab, [], ["price"], compare=names)
    ax = next(a for a in fig.axes if a.get_title(loc="left").startswith("Price"))
    s = lab.signals
    # net_short_volume has no thresholds: it takes no part (n = 3).
    buy_k = ((s["current"] >= 70).astype(int) + (s["option_a"] >= 70).astype(int)
             + (s["finra_buy_volume_z"] >= 1.0).astype(int))
    sell_k = ((s["current"] <= 30).astype(int) + (s["option_a"] <= 30).astype(int)
              + (s["finra_buy_volume_z"] <= -1.0).astype(int))
    green = scatter_points(ax, COLORS["green"])
    red = scatter_points(ax, COLORS["red"])
    assert sorted(green[:, 0]) == list(np.flatnonzero(buy_k >= 1))
    assert sorted(red[:, 0]) == list(np.flatnonzero(sell_k >= 1))
    labels = sorted(t.get_text() for t in ax.texts)
    expected = sorted([f"{k}/3" for k in buy_k[buy_k >= 1]] + [f"{k}/3" for k in
                                                               sell_k[sell_k >= 1]])
    assert labels == expected
    assert buy_k.max() >= 2 or sell_k.max() >= 2  # the fixture has real agreement days
    assert ax.get_title(loc="left") == "Price with variant consensus (of 3)"


def test_heatmap_scale(lab_env: Path) -> None:
    lab = load(["current", "finra_buy_volume_z", "net_short_volume"])
    matrix = lab_chart.heatmap_matrix(lab, ["current", "finra_buy_volume_z",
                                            "net_short_volume"])
    s = lab.signals
    np.testing.assert_allclose(matrix["current"], ((s["current"] - 50) / 50).clip(-1, 1),
                               equal_nan=True)
    np.testing.assert_allclose(matrix["finra_buy_volume_z"],
                               (s["finra_buy_volume_z"] / 3).clip(-1, 1), equal_nan=True)
    assert np.nanmax(np.abs(matrix["net_short_volume"])) == pytest.approx(1.0)


def test_otc_panel_bands_placeholder_and_look_ahead(lab_env: Path) -> None:
    lab = load([], "2025-10-01", "2025-11-28")
    fig = lab_chart.plot_lab(lab, [], ["otc"])
    ax = next(a for a in fig.axes if a.get_title(loc="left"))
    segments = otc_panel.week_segments(lab.frame)
    assert len(ax.patches) == len(segments)
    # Each band covers exactly its sessions' positions.
    positions = {d: i for i, d in enumerate(lab.frame["date"])}
    first_band = ax.patches[0]
    assert first_band.get_x() == pytest.approx(positions[segments["start"].iloc[0]] - 0.5)
    run = positions[segments["end"].iloc[0]] - positions[segments["start"].iloc[0]] + 1
    assert first_band.get_width() == pytest.approx(run)
    stale = segments.index[segments["status"] == "Staled"]
    assert len(stale) == 1
    assert mcolors.to_hex(ax.patches[stale[0]].get_facecolor()) == COLORS["neutral"]
    assert ax.get_title(loc="left") == lab_chart.OTC_TITLE

    early = load([], FIRST, NO_OTC_END)
    ax = lab_chart.plot_lab(early, [], ["otc"]).axes[0]
    assert [t.get_text() for t in ax.texts] == [otc_panel.NO_DATA_TEXT]

    week = load([], "2025-10-01", "2025-11-28", symbol="WKAL")
    assert week.look_ahead and not lab.look_ahead
    ax = lab_chart.plot_lab(week, [], ["otc"]).axes[0]
    assert "LOOK-AHEAD (week-aligned)" in ax.get_title(loc="left")


def test_seed_figure_with_otc_appended(lab_env: Path) -> None:
    frame = sandbox.load("NKE", "2025-10-01", "2025-11-28")
    lab = load([], "2025-10-01", "2025-11-28")
    plain = sandbox_chart.plot(frame, "all")
    fig = lab_chart.plot_seed_with_panels(frame, lab, ["otc"], dot_mode="all")
    assert titles(fig) == [*SEED_TITLES, lab_chart.OTC_TITLE]
    assert fig.get_size_inches()[1] > plain.get_size_inches()[1]
    seed_axes = [ax for ax in fig.axes if ax.get_title(loc="left") in SEED_TITLES]
    for ours, theirs in zip(seed_axes, [a for a in plain.axes if a.get_title(loc="left")],
                            strict=True):
        assert len(ours.collections) == len(theirs.collections)
        assert ours.get_ylim() == theirs.get_ylim()
        assert ours.get_xlim() == theirs.get_xlim()
    otc_ax = next(a for a in fig.axes if a.get_title(loc="left") == lab_chart.OTC_TITLE)
    assert otc_ax.get_shared_x_axes().joined(otc_ax, seed_axes[0])
    labelled = [a for a in fig.axes if a.get_title(loc="left")
                and any(t.get_text() for t in a.get_xticklabels())]
    assert labelled == [otc_ax]
    with pytest.raises(ValueError, match="different dates"):
        lab_chart.plot_seed_with_panels(frame.iloc[:-1], lab, ["otc"])


# -- CLI -------------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["sandbox", *args])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    return result.exit_code, " ".join(text.split())


def test_cli_writes_seed_and_lab_figures(lab_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "nke.png"
    code, text = run("NKE", "--start", "2025-10-01", "--end", "2025-11-28", "--out", str(out),
                     "--variants", "current,finra_buy_volume_z", "--formula",
                     "mine=z(short_volume, 10)", "--panels", "price,hist,+otc")
    assert code == 0, text
    lab_path = tmp_path / "nke_lab.png"
    assert out.read_bytes().startswith(b"\x89PNG")
    assert lab_path.read_bytes().startswith(b"\x89PNG")
    assert f"wrote {out}" in text and f"wrote {lab_path}" in text


def test_cli_append_otc_only_writes_one_figure(lab_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "nke.svg"
    code, text = run("NKE", "--start", "2025-10-01", "--end", "2025-11-28", "--out", str(out),
                     "--panels", "+otc")
    assert code == 0, text
    svg = out.read_text(encoding="utf-8")
    assert "Weekly OTC participation" in svg and "Accumulation Score (Current)" in svg
    assert not (tmp_path / "nke_lab.svg").exists()


def test_cli_default_is_seed_chart_only(lab_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "charts" / "nke.svg"
    code, text = run("NKE", "--start", "2025-10-01", "--end", "2025-11-28", "--out", str(out))
    assert code == 0, text
    assert "Weekly OTC participation" not in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in out.parent.iterdir()) == ["nke.svg"]


@pytest.mark.parametrize(("args", "message"), [
    (["--variants", "current,bogus"], "unknown signal variant 'bogus'; valid: current"),
    (["--panels", "price,candles"], "unknown panel 'candles'; valid: price, heatmap"),
    (["--formula", "bad=z(short_volume)"], "formula rejected at position 0: z() takes"),
])
def test_cli_unknown_names(lab_env: Path, tmp_path: Path, args: list[str],
                           message: str) -> None:
    charts = tmp_path / "charts"
    code, text = run("NKE", "--out", str(charts / "x.png"), *args)
    assert code == 1, text
    assert message in text
    assert not charts.exists()


def test_sessions_match_calendar(lab_env: Path) -> None:
    lab = load(["current"], "2025-10-01", "2025-10-31")
    expected = trading_calendar.sessions_between("2025-10-01", "2025-10-31")
    assert lab.frame["date"].dt.date.tolist() == expected


def test_option_b_uses_the_cli_blend_weights(lab_env: Path) -> None:
    variants = sandbox_lab.resolve_variants(["option_b", "current"], {})
    params = sandbox_lab.variant_params(variants, load_config(), blend_short_weight=0.2,
                                        blend_flow_weight=0.8)
    assert params["option_b"]["short_weight"] == 0.2 and params["option_b"]["flow_weight"] == 0.8
    assert "short_weight" not in params["current"]
    lab = sandbox_lab.load_lab("NKE", "2025-10-01", "2025-10-31", variants, params=params)
    reference = signals.score_option_b(lab.frame, short_weight=0.2, flow_weight=0.8,
                                       weights=params["option_b"]["weights"])
    np.testing.assert_allclose(lab.signals["option_b"], reference, equal_nan=True)
    default = signals.score_option_b(lab.frame, weights=params["option_b"]["weights"])
    assert not np.allclose(lab.signals["option_b"], default, equal_nan=True)
