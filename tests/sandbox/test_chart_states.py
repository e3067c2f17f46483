"""Chart states that must not mislead: the warm-up actually available, days without a score
(hatched, in the legend), gaps in every source the chart uses, the OTC panel's two empty
states, and the legend of dot colours / confidence strip / ``--dot-mode own``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection, PolyCollection
from typer.testing import CliRunner

from darkpool_analysis import sandbox, sandbox_lab
from darkpool_analysis.cli import app
from darkpool_analysis.errors import ConfigError
from darkpool_analysis.views import lab_chart, otc_panel, sandbox_chart
from sandbox.conftest import metrics_frame, write_metrics


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["sandbox", *args])
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize(("start", "sentence"), [
    ("2025-06-02", "with warm-up asked (20 sessions) but no earlier data in the database: the "
                   "first 19 shown session(s) have short z windows"),
    ("2025-06-09", "with warm-up of 5 of 20 sessions (no earlier data): the first 14 shown "
                   "session(s) have short z windows"),
    ("2025-10-01", "with warm-up of 20 earlier sessions (full z windows)"),
])
def test_warmup_sentence_says_what_was_available(sandbox_env: Path, tmp_path: Path,
                                                 start: str, sentence: str) -> None:
    code, text = run("NKE", "--start", start, "--end", "2025-11-28", "--out",
                     str(tmp_path / "c.png"))
    assert code == 0, text
    assert sentence in text


def test_short_window_days_match_the_computed_z(sandbox_env: Path) -> None:
    frame = sandbox.load("NKE", "2025-06-09", "2025-08-29")
    assert frame.attrs["warmup_rows"] == 5 and frame.attrs["warmup_asked"] == 20
    short = sandbox.short_window_days(frame)
    full = sandbox.load("NKE", "2025-06-09", "2025-08-29", warmup=False)
    assert short == 14
    # From the first full window on, the z no longer depends on how far back the data goes.
    longer = sandbox.load("NKE", "2025-06-02", "2025-08-29")
    tail = longer.loc[longer["date"] >= frame["date"].iloc[short]]
    np.testing.assert_allclose(frame["vw_flow_z"].iloc[short:], tail["vw_flow_z"],
                               rtol=0, atol=1e-12, equal_nan=True)
    assert not np.allclose(frame["vw_flow_z"].iloc[:5], full["vw_flow_z"].iloc[:5],
                           equal_nan=True)


def _hatched(ax: Axes) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_hatch()]


def _legend_labels(fig: object) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]  # type: ignore[attr-defined]


def test_days_without_a_score_are_hatched_not_grey_bars_at_50(sandbox_env: Path) -> None:
    frame = sandbox.load("NKE", "2025-06-02", "2025-08-29")
    fig = sandbox_chart.plot(frame)
    for ax, column in zip(fig.axes[4:], sandbox.VARIANT_COLUMNS.values(), strict=True):
        missing = frame[column].isna().to_numpy()
        assert missing.sum() >= 3
        (hatch,) = _hatched(ax)
        assert len(hatch.get_paths()) == missing.sum()
        centres = sorted((p.vertices[:, 0].min() + p.vertices[:, 0].max()) / 2
                         for p in hatch.get_paths())
        np.testing.assert_allclose(centres, np.flatnonzero(missing))
        bars, strip = [c for c in ax.collections
                       if isinstance(c, PolyCollection) and not c.get_hatch()]
        assert len(bars.get_paths()) == len(strip.get_paths()) == (~missing).sum()
        heights = [p.vertices[:, 1].max() for p in bars.get_paths()]
        np.testing.assert_allclose(heights, frame[column].dropna() / 100.0)
    assert sandbox_chart.NO_SCORE_LABEL in _legend_labels(fig)

    complete = sandbox.load("NKE", "2025-10-01", "2025-11-05")
    assert complete[list(sandbox.VARIANT_COLUMNS.values())].notna().all().all()
    assert sandbox_chart.NO_SCORE_LABEL not in _legend_labels(sandbox_chart.plot(complete))


@pytest.mark.parametrize(("dot_mode", "dots"), [
    ("current", ["score >= 70", "score <= 30"]),
    ("all", ["current >= 70", "current <= 30", "option_a >= 70", "option_a <= 30",
             "option_b >= 70", "option_b <= 30"]),
    ("own", ["current >= 70", "current <= 30", "option_a >= 70", "option_a <= 30",
             "option_b >= 70", "option_b <= 30"]),
])
def test_legend_names_dot_colours_and_the_confidence_strip(sandbox_env: Path, dot_mode: str,
                                                           dots: list[str]) -> None:
    frame = sandbox.load("NKE", "2025-10-01", "2025-11-05")
    fig = sandbox_chart.plot(frame, dot_mode=dot_mode)
    assert _legend_labels(fig) == [*dots, "confidence >= 0.7", "confidence 0.4-0.7",
                                   "confidence < 0.4"]
    assert sandbox_chart.CONFIDENCE_NOTE in " ".join(t.get_text() for t in fig.texts)


def test_dot_mode_own_gives_each_panel_its_own_dots(sandbox_env: Path) -> None:
    frame = sandbox.load("NKE", "2025-09-01", "2025-12-31")
    fig = sandbox_chart.plot(frame, dot_mode="own")
    for ax, (variant, column) in zip(fig.axes[4:], sandbox.VARIANT_COLUMNS.items(),
                                     strict=True):
        values = frame[column].to_numpy(float)
        scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
        points = np.concatenate([c.get_offsets() for c in scatters])
        assert len(points) == (values >= 70).sum() + (values <= 30).sum() > 0
        colours = {tuple(c.get_facecolors()[0]) for c in scatters}
        spec = sandbox_chart.DOT_SPECS[variant]
        from matplotlib.colors import to_rgba

        assert colours <= {to_rgba(str(spec["accum"])), to_rgba(str(spec["dist"]))}
        assert {round(x - round(x), 2) for x, _ in points} == {0.0}
    code, text = run("NKE", "--dot-mode", "own", "--out", str(Path.cwd() / "own.png"))
    assert code == 0, text


def test_gap_check_covers_prices_and_lit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "late.duckdb"
    late = metrics_frame("LATE", "2025-09-02", "2025-11-28", "full", seed=7)
    late.loc[late.index[:10], ["close", "has_price"]] = [np.nan, False]  # prices start later
    nolit = metrics_frame("NOLIT", "2025-09-02", "2025-11-28", "full", seed=8)
    nolit[["lit_buy_volume", "lit_sell_volume"]] = np.nan
    nolit.loc[nolit["short_volume"].isna(), "short_volume"] = 0.0  # every day has data
    nolit["short_buy_volume"] = nolit["short_buy_volume"].fillna(1e6)
    nolit["close"] = nolit["close"].fillna(40.0)
    write_metrics(db, [late, nolit])
    monkeypatch.setenv("DARKPOOL_DB", str(db))

    code, text = run("LATE", "--start", "2025-09-02", "--end", "2025-11-28",
                     "--out", str(tmp_path / "late.png"))
    assert code == 0, text
    first_ten = ", ".join(d.date().isoformat() for d in pd.to_datetime(late["date"])[:10])
    assert f"data gaps 12 session(s) without a price bar: {first_ten}" in text
    assert "no data gaps" not in text

    code, text = run("NOLIT", "--start", "2025-10-01", "--end", "2025-11-28",
                     "--out", str(tmp_path / "nolit.png"))
    assert code == 0, text
    assert "no data gaps: every session in range has short data, a price bar" in text
    assert "no lit trade direction in range: the lit terms count as 0" in text


def test_otc_panel_tells_never_ingested_from_not_published(sandbox_env: Path) -> None:
    lab = sandbox_lab.load_lab("NKE", "2025-10-01", "2025-11-28", [])
    assert lab.otc_weeks == 0
    ax = lab_chart.plot_lab(lab, [], ["otc"]).axes[0]
    assert [t.get_text() for t in ax.texts] == [
        otc_panel.NEVER_INGESTED_TEXT.format(symbol="NKE")]
    assert "darkpool ingest finra-otc --tickers NKE" in ax.texts[0].get_text()


def test_price_panel_log_scale(sandbox_env: Path, tmp_path: Path) -> None:
    variants = sandbox_lab.resolve_variants(["current", "option_a"], {})
    lab = sandbox_lab.load_lab("NKE", "2025-10-01", "2025-11-28", variants)
    linear = lab_chart.plot_lab(lab, ["current", "option_a"], ["price"]).axes[0]
    log = lab_chart.plot_lab(lab, ["current", "option_a"], ["price"], price_scale="log").axes[0]
    assert linear.get_yscale() == "linear" and log.get_yscale() == "log"
    assert log.get_ylabel() == "price (log scale)"
    # Consensus dots keep a constant ratio to the bar (3% above the high on a log axis).
    high = lab.frame["high"].to_numpy(float)
    (above, *_) = [c for c in log.collections if isinstance(c, PathCollection)]
    points = above.get_offsets()
    assert len(points) > 0
    x = points[:, 0].astype(int)
    np.testing.assert_allclose(points[:, 1], high[x] * 1.03)
    with pytest.raises(ConfigError, match="unknown price scale 'cubic'"):
        lab_chart.plot_lab(lab, ["current"], ["price"], price_scale="cubic")

    code, text = run("NKE", "--panels", "price", "--variants", "current", "--price-scale", "log",
                     "--out", str(tmp_path / "p.png"))
    assert code == 0, text
    assert (tmp_path / "p_lab.png").read_bytes().startswith(b"\x89PNG")
    code, text = run("NKE", "--price-scale", "log", "--out", str(tmp_path / "q.png"))
    assert code == 2 and "--price-scale log needs a price panel" in text
