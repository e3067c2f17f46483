"""The sandbox figures: the seed's panels, titles, axes, bars and dots, drawn without pyplot
state, and saved as png/svg/pdf."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure

from darkpool_analysis import sandbox
from darkpool_analysis.views import sandbox_chart, save_figure
from darkpool_analysis.views.style import COLORS, format_volume
from seed_support import SEED_TITLES


@pytest.fixture
def frame(sandbox_env: Path) -> pd.DataFrame:
    """45 sessions (every day labelled, as in the seed)."""
    return sandbox.load("NKE", "2025-10-01", "2025-12-03")


@pytest.fixture
def long_frame(sandbox_env: Path) -> pd.DataFrame:
    """85 sessions (date labels thinned to every 2nd day)."""
    return sandbox.load("NKE", "2025-09-01", "2025-12-31")


def dots(ax: Axes) -> list[tuple[float, float, tuple[float, ...]]]:
    """(x, y, facecolor) of every score dot (y = 1.02 above, -0.06 below)."""
    out = []
    for collection in ax.collections:
        if not isinstance(collection, PathCollection):
            continue
        colors = collection.get_facecolors()
        for i, (x, y) in enumerate(collection.get_offsets()):
            if y in (1.02, -0.06):
                out.append((float(x), float(y), tuple(colors[i % len(colors)])))
    return out


def rectangles(ax: Axes) -> list[tuple[float, ...]]:
    """(x, y, width, height, r, g, b, a) of every bar, from patches (``ax.bar``, the seed) or
    from bar collections (ours)."""
    out = [(p.get_x(), p.get_y(), p.get_width(), p.get_height(), *p.get_facecolor())
           for p in ax.patches]
    for collection in ax.collections:
        if isinstance(collection, PolyCollection):
            colors = collection.get_facecolors()
            for i, path in enumerate(collection.get_paths()):
                (x0, y0), (x1, y1) = path.vertices.min(axis=0), path.vertices.max(axis=0)
                out.append((x0, y0, x1 - x0, y1 - y0, *colors[i % len(colors)]))
    return sorted(out)


def test_seven_panels_with_seed_titles_and_layout(long_frame: pd.DataFrame) -> None:
    frame = long_frame
    fig = sandbox_chart.plot(frame)
    axes = fig.get_axes()
    assert [ax.get_title(loc="left") for ax in axes] == SEED_TITLES
    assert tuple(fig.get_size_inches()) == (16, 22)
    ratios = axes[0].get_gridspec().get_height_ratios()
    assert list(ratios) == [2.2, 2.2, 1.6, 2.2, 1.8, 1.8, 1.8]
    assert fig.get_suptitle() == "NKE - Accumulation Signal Sandbox"
    labels = [t.get_text() for t in axes[-1].get_xticklabels()]
    assert len(frame) == 85  # > 64 days: every 2nd day labelled
    assert labels == frame["date"].dt.strftime("%y-%m-%d").tolist()[::2]
    assert labels[0] == "25-09-02"
    assert all(t.get_rotation() == 45 for t in axes[-1].get_xticklabels())
    assert [ax.get_ylabel() for ax in axes[:4]] == ["Combined Ratio", "VW Flow", "FINRA B",
                                                   "Short Ratio"]
    footnotes = " ".join(t.get_text() for t in fig.texts)
    assert "short-sale volume" in footnotes and "proxy" in footnotes
    assert "0.6 x short_buy_sell_ratio_z + 0.4 x vw_flow_z" in footnotes
    for ax in axes[4:]:
        assert ax.get_ylim() == (-0.15, 1.05)
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "30", "50", "70", "100"]
        lines = sorted(line.get_ydata()[0] for line in ax.get_lines())
        assert lines == [0.3, 0.5, 0.7]
    ratio_lines = sorted(line.get_ydata()[0] for line in axes[3].get_lines()[1:])
    assert ratio_lines == [0.75, 1.0, 1.25]
    assert fig.patch.get_facecolor() == matplotlib.colors.to_rgba(COLORS["background"])


def test_every_day_labelled_up_to_64_days(long_frame: pd.DataFrame) -> None:
    short = long_frame.iloc[:60]
    axes = sandbox_chart.plot(short).get_axes()
    labels = [t.get_text() for t in axes[-1].get_xticklabels()]
    assert labels == short["date"].dt.strftime("%y-%m-%d").tolist()
    np.testing.assert_array_equal(axes[-1].get_xticks(), np.arange(60))


def test_line_and_bar_panels_plot_the_frame(frame: pd.DataFrame) -> None:
    axes = sandbox_chart.plot(frame).get_axes()
    x = np.arange(len(frame))
    for ax, column in ((axes[0], "combined_ratio"), (axes[1], "vw_flow"),
                       (axes[3], "short_buy_sell_ratio")):
        line = ax.get_lines()[0]
        mask = frame[column].notna().to_numpy()
        np.testing.assert_array_equal(line.get_xdata(), x[mask])
        np.testing.assert_allclose(line.get_ydata(), frame[column][mask])
    bars = np.array(rectangles(axes[2]))
    np.testing.assert_allclose(bars[:, 0] + 0.35, x[frame["finra_buy_volume"].notna()])
    np.testing.assert_allclose(bars[:, 3], frame["finra_buy_volume"].dropna())
    np.testing.assert_allclose(bars[:, 4:], [matplotlib.colors.to_rgba(COLORS["yellow"], 0.5)]
                               * len(bars))
    assert axes[1].get_ylim()[0] == -axes[1].get_ylim()[1]


@pytest.mark.parametrize("dot_mode", ["current", "option_a", "option_b", "all"])
def test_dot_modes_draw_the_expected_points(frame: pd.DataFrame, dot_mode: str) -> None:
    fig = sandbox_chart.plot(frame, dot_mode=dot_mode)
    variants = sandbox.DOT_MODES[dot_mode]
    expected = 0
    for variant in variants:
        values = frame[sandbox.VARIANT_COLUMNS[variant]].to_numpy(float)
        expected += int((values >= 70).sum() + (values <= 30).sum())
    assert expected > 0
    for ax in fig.get_axes()[4:]:
        points = dots(ax)
        assert len(points) == expected
        offsets = {round(x - round(x), 2) for x, _, _ in points}
        assert offsets == ({-0.18, 0.0, 0.18} if dot_mode == "all" else {0.0})


def test_score_panel_matches_the_seeds_per_bar_loop(
        frame: pd.DataFrame, seed_helpers: dict[str, object]) -> None:
    """Oracle: the seed's own ``_plot_score_panel`` (one ``ax.bar`` per day) on a twin axes:
    same rectangles, same colours and alphas, same dots, same limits."""
    seed_panel = seed_helpers["_plot_score_panel"]
    assert callable(seed_panel)
    fig = Figure()
    seed_ax, our_ax = fig.subplots(2, 1)
    x = np.arange(len(frame))
    scores = frame["acc_score_b"].copy()
    scores.iloc[[2, 5]] = np.nan  # NULL scores draw as 50
    confidence = frame["confidence"].copy()
    sources = {k: frame[c] for k, c in sandbox.VARIANT_COLUMNS.items()}
    seed_panel(seed_ax, x, scores, confidence, "t", "all", sources)
    sandbox_chart.draw_score_panel(our_ax, x, scores, confidence, "t", "all", sources)
    assert len(seed_ax.patches) == 2 * len(frame)
    np.testing.assert_allclose(rectangles(our_ax), rectangles(seed_ax), rtol=0, atol=1e-12)
    assert sorted(dots(our_ax)) == sorted(dots(seed_ax))
    assert our_ax.get_ylim() == seed_ax.get_ylim()
    np.testing.assert_allclose(our_ax.get_xlim(), seed_ax.get_xlim())


def test_no_global_pyplot_state(frame: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt

    before = dict(matplotlib.rcParams)
    sandbox_chart.plot(frame, dot_mode="all")
    sandbox_chart.plot_experimental(frame)
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == before


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                               (".pdf", b"%PDF")])
def test_save_formats(frame: pd.DataFrame, tmp_path: Path, suffix: str, magic: bytes) -> None:
    path = save_figure(sandbox_chart.plot(frame), tmp_path / "out" / f"chart{suffix}")
    assert path.read_bytes().startswith(magic)


def test_save_rejects_unknown_suffix(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf"):
        save_figure(sandbox_chart.plot(frame), tmp_path / "chart.jpg")


def test_experimental_figure(frame: pd.DataFrame) -> None:
    fig = sandbox_chart.plot_experimental(frame)
    (ax,) = fig.get_axes()
    assert ax.get_title(loc="left") == "Imbalance * log1p(B + S)"
    assert tuple(fig.get_size_inches()) == (16, 4)
    b, s = frame["finra_buy_volume"].to_numpy(float), frame["short_sell_volume"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (b - s) / (b + s) * np.log1p(b + s)
    valid = np.isfinite(expected) & (b + s > 0)
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), np.flatnonzero(valid))
    np.testing.assert_allclose(line.get_ydata(), expected[valid], rtol=1e-12)
    assert "proxy" in " ".join(t.get_text() for t in fig.texts)


@pytest.mark.parametrize(("call", "message"), [
    (lambda f: sandbox_chart.plot(f, dot_mode="bogus"),
     "unknown dot mode 'bogus'; expected one of current, option_a, option_b, all"),
    (lambda f: sandbox_chart.plot(f, blend_short_weight=0.5, blend_flow_weight=0.5),
     "computed with blend weights (0.6, 0.4), not (0.5, 0.5)"),
    (lambda f: sandbox_chart.plot(f.iloc[:0]), "the sandbox frame has no rows"),
])
def test_bad_arguments_are_explained(frame: pd.DataFrame,
                                     call: Callable[[pd.DataFrame], Figure],
                                     message: str) -> None:
    with pytest.raises(ValueError) as info:
        call(frame)
    assert message in str(info.value)


def test_format_volume() -> None:
    assert [format_volume(v) for v in (2.5e9, -1_234_567, 56_400, 999, np.nan, None)] == [
        "2.5B", "-1.2M", "56K", "999", "NA", "NA"]
