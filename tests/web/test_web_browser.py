"""The page in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Each test saves a screenshot under tests/web/artifacts/ (gitignored): look at them.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from darkpool_analysis.synthetic import SYNTHETIC_LABEL
from darkpool_analysis.web import server as web_server

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium (/usr/bin/chromium; .ci/run installs it with apt-get)")

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, demo_server: web_server.WebServer, artifacts: Path,
         request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.base = demo_server.url.rstrip("/")  # type: ignore[attr-defined]
    yield tab
    tab.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert errors == [], errors  # no JavaScript error on the page


def open_page(page: Any, query: str = "") -> None:
    page.goto(page.base + "/" + (f"?{query}" if query else ""))
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)


def wait_until(page: Any, expression: str, timeout: float = 20.0) -> Any:
    """Poll a JavaScript expression until it is truthy (the page's CSP forbids the eval
    behind Playwright's ``wait_for_function``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(f"() => ({expression})")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        page.wait_for_timeout(50)


def texts(page: Any, selector: str) -> list[str]:
    """textContent of every match (SVG text has no innerText)."""
    result: list[str] = page.evaluate(
        "(sel) => [...document.querySelectorAll(sel)].map(n => n.textContent)", selector)
    return result


def chart_ready(page: Any, seq: int | None = None) -> int:
    """Wait for a (new) chart and return its sequence number."""
    if seq is None:
        page.wait_for_selector("body[data-chart-seq]", timeout=20_000)
    else:
        wait_until(page, f"Number(document.body.dataset.chartSeq) > {seq}")
    return int(page.evaluate("Number(document.body.dataset.chartSeq)"))


def trace_y(page: Any, name: str) -> list[float | None]:
    result: list[float | None] = page.evaluate(
        "(name) => document.getElementById('chart').data.find(t => t.name === name).y", name)
    return result


def test_first_screen_coverage_banner_and_ticker_completion(page: Any) -> None:
    open_page(page)
    banner = page.locator("#synthetic-banner")
    banner.wait_for(state="visible", timeout=20_000)
    page.wait_for_selector("#coverage table", timeout=20_000)
    assert banner.is_visible() and SYNTHETIC_LABEL in banner.inner_text()
    coverage = page.locator("#coverage table").inner_text()
    assert "FINRA Reg SHO daily short volume" in coverage and "daily prices" in coverage
    assert "2025-03-03" in coverage and "2025-12-31" in coverage
    page.fill("#f-ticker", "N")
    wait_until(page, "Array.from(document.querySelectorAll('#symbols option'))"
                     ".map(o => o.value).join(',') === 'NKE'")
    assert not page.locator("#owed-warning").is_visible()


def test_pick_ticker_draws_linked_panels(page: Any) -> None:
    open_page(page)
    page.fill("#f-ticker", "NKE")
    page.click("#chart-button")
    chart_ready(page)
    assert page.locator("#results-title").inner_text().startswith("NKE ")
    assert page.get_attribute("#chart", "data-panels") == "7"
    axes = page.evaluate("[...new Set(document.getElementById('chart').data"
                         ".map(t => t.xaxis))]")
    assert axes == ["x"]  # one shared x axis for every panel
    titles = texts(page, "#chart .annotation-text")
    assert "Accumulation Score (Option B: blended)" in titles and len(titles) == 7
    assert page.locator("#zones table").inner_text().count("option_b") == 1


def test_changing_a_blend_weight_moves_the_scores_without_reload(page: Any) -> None:
    open_page(page, "ticker=NKE")
    seq = chart_ready(page)
    page.evaluate("window.__marker = 'same page'")
    before_b = trace_y(page, "score option_b")
    before_current = trace_y(page, "score current")
    page.fill("#f-short-weight", "0.1")
    chart_ready(page, seq)
    after_b = trace_y(page, "score option_b")
    assert after_b != before_b and trace_y(page, "score current") == before_current
    assert page.evaluate("window.__marker") == "same page"  # no reload
    assert "blend_short_weight=0.1" in page.url
    assert page.input_value("#f-short-weight-range") == "0.1"


def test_hover_shows_the_date_and_every_value(page: Any) -> None:
    open_page(page, "ticker=NKE&start=2025-11-03&end=2025-12-31")
    chart_ready(page)
    panel = page.locator("#chart .nsewdrag").nth(4)  # the first score panel
    panel.scroll_into_view_if_needed()
    box = panel.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.wait_for_selector("#chart .hoverlayer .legend", state="attached", timeout=10_000)
    tooltip = " ".join(texts(page, "#chart .hoverlayer text"))
    date = page.get_attribute("#readout", "data-date")
    assert date is not None and re.fullmatch(r"2025-1[12]-\d\d", date)
    assert date in tooltip
    for name in ("combined ratio", "vw flow", "FINRA B", "short ratio", "score current",
                 "score option_a", "score option_b"):
        assert name in tooltip, (name, tooltip)
    readout = page.locator("#readout").inner_text()
    for name in ("option B", "confidence", "FINRA B", "short ratio"):
        assert name in readout


def test_zoom_one_panel_and_the_others_follow(page: Any) -> None:
    open_page(page, "ticker=NKE&start=2025-09-02&end=2025-12-31")
    chart_ready(page)
    full = page.evaluate("document.getElementById('chart')._fullLayout.xaxis.range")
    panel = page.locator("#chart .nsewdrag").nth(5)  # the option A score panel
    panel.scroll_into_view_if_needed()
    box = panel.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y + 5, steps=8)
    page.mouse.up()
    wait_until(page, f"document.getElementById('chart')._fullLayout.xaxis.range[0] > "
                     f"{full[0] + 1}")
    zoomed = page.evaluate("document.getElementById('chart')._fullLayout.xaxis.range")
    assert zoomed[1] - zoomed[0] < (full[1] - full[0]) * 0.5
    # the top panel (another subplot) now shows the zoomed dates too: its markers outside
    # the range are clipped, the visible tick labels are the zoomed ones
    labels = texts(page, "#chart .xtick text")
    assert labels and all(label >= "2025-09" for label in labels)
    assert min(labels) > "2025-09-05"


def test_bad_formula_message_next_to_the_field(page: Any) -> None:
    open_page(page, "ticker=NKE")
    chart_ready(page)
    page.fill("#f-formula", "flow=z(nonexistent_col, 20)")
    page.click("#chart-button")
    message = page.locator('.field-error[data-for="formula"]')
    message.wait_for(state="visible", timeout=10_000)
    assert "nonexistent_col" in message.inner_text()
    assert page.locator("#error").is_visible()
    assert "400" in page.locator("#error").inner_text()
    assert "Traceback" not in page.content()
    page.fill("#f-formula", "")
    page.fill("#f-ticker", "NKEE")
    page.click("#chart-button")
    wait_until(page, "document.getElementById('error').innerText"
                     ".includes('unknown ticker NKEE')")
    assert "close symbols: NKE" in page.locator("#error").inner_text()
    assert "unknown ticker NKEE" in page.locator('.field-error[data-for="ticker"]').inner_text()
    assert "stale" in (page.get_attribute("#results", "class") or "")  # old chart marked


def test_market_tab_index_and_scanner_open_a_ticker(page: Any) -> None:
    open_page(page)
    page.click("#tab-market")
    page.fill("#m-start", "2025-06-02")
    page.fill("#m-end", "2025-12-31")
    page.click("#index-button")
    page.wait_for_selector("#index-chart .main-svg", timeout=20_000)
    assert "Dark index: all" in " ".join(texts(page, "#index-chart .gtitle"))
    page.fill("#s-date", "2025-10-15")
    page.fill("#s-top", "2")
    page.click("#scan-button")
    page.wait_for_selector("#scan-results tbody tr", timeout=20_000)
    rows = page.locator("#scan-results tbody tr")
    assert rows.count() == 4
    ends = [rows.nth(i).locator("td").first.inner_text() for i in range(4)]
    assert ends == ["top", "top", "bottom", "bottom"]
    page.click("#scan-results th[data-column='symbol']")
    symbols = [rows.nth(i).get_attribute("data-symbol") for i in range(4)]
    assert symbols == sorted(symbols, reverse=True)
    page.click("#scan-results th[data-column='symbol']")
    symbols = [rows.nth(i).get_attribute("data-symbol") for i in range(4)]
    assert symbols == sorted(symbols)
    page.screenshot(path=str(Path(__file__).parent / "artifacts" / "market_tab.png"),
                    full_page=True)
    chosen = symbols[0]
    rows.nth(0).click()
    chart_ready(page)
    assert page.locator("#panel-sandbox").is_visible()
    assert page.locator("#results-title").inner_text().startswith(f"{chosen} ")
    assert "2025-10-15:" in page.locator("#results-title").inner_text()


def test_download_csv(page: Any, tmp_path: Path) -> None:
    open_page(page, "ticker=NKE&start=2025-11-03&end=2025-12-31")
    chart_ready(page)
    with page.expect_download() as info:
        page.click("#csv-link")
    download = info.value
    assert download.suggested_filename == "NKE_sandbox_2025-11-03_2025-12-31.csv"
    target = tmp_path / download.suggested_filename
    download.save_as(str(target))
    text = target.read_text()
    assert text.startswith(f"# {SYNTHETIC_LABEL}\n")
    rows = list(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))
    assert rows[0]["date"] == "2025-11-03" and rows[-1]["date"] == "2025-12-31"
    assert "acc_score_b" in rows[0]


def test_evaluation_tab_runs_with_progress_and_shows_results(page: Any) -> None:
    open_page(page)
    page.click("#tab-evaluation")
    page.check("#eval-variants input[value='finra_buy_volume_z']")
    page.fill("#e-universe", "NKE,AAPL,TSLA,GME,SPY,MSFT")
    page.fill("#e-start", "2025-05-01")
    page.fill("#e-end", "2025-11-28")
    page.fill("#e-horizons", "1,5")
    page.click("#eval-button")
    page.wait_for_selector("#eval-progress:not([hidden])", timeout=5_000)
    page.wait_for_selector("#eval-results:not([hidden])", timeout=240_000)
    boxes = page.locator("#verdicts .verdict:not(.overall)")
    assert boxes.count() == 4  # current, option_a, option_b, finra_buy_volume_z
    assert "trials; PBO" in page.locator("#verdicts .verdict.overall").inner_text()
    assert "out-of-sample IC" in boxes.first.inner_text()
    table = page.locator("#ic-table table").inner_text()
    assert "finra_buy_volume_z" in table and "placebo" in table
    page.wait_for_selector("#quantile-chart .main-svg")
    page.wait_for_selector("#ic-chart .main-svg")
    assert "point-in-time" in page.locator("#eval-label").inner_text()
    assert page.locator("#eval-progress").is_hidden()
