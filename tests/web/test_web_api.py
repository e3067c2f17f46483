"""The web API through FastAPI's TestClient against real DuckDB fixture databases."""

from __future__ import annotations

import io
import json
import struct
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from darkpool_analysis import market, sandbox, sandbox_lab, trading_calendar
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.synthetic import SYNTHETIC_LABEL
from darkpool_analysis.views.sandbox_chart import PROXY_NOTE, plot
from darkpool_analysis.web import limits
from darkpool_analysis.web.app import PLOTLY_BUNDLE, create_app
from web.conftest import GAP_ROW, MISSING_ROW, SYMBOLS

NKE_Q = "ticker=nke&start=2025-08-01&end=2025-10-31"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG header (IHDR)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def get_json(client: TestClient, path: str) -> tuple[int, Any]:
    response = client.get(path)
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.status_code, response.json()


# -- the sandbox frame ------------------------------------------------------------------------


def test_api_sandbox_rows_are_the_library_frame(client: TestClient, web_settings: Settings) -> None:
    status, body = get_json(client, f"/api/sandbox?{NKE_Q}&blend_short_weight=0.3")
    frame = sandbox.load("NKE", "2025-08-01", "2025-10-31", settings=web_settings,
                         blend_short_weight=0.3)
    assert status == 200
    rows = pd.DataFrame(body["rows"])
    assert len(body["rows"]) == len(frame)  # one record per session
    assert rows["date"].tolist() == frame["date"].dt.strftime("%Y-%m-%d").tolist()
    assert set(frame.columns) <= set(rows.columns)
    for column in ("acc_score_current", "acc_score_a", "acc_score_b", "vw_flow_z",
                   "combined_ratio", "confidence", "exp_signal"):
        np.testing.assert_allclose(rows[column].astype(float), frame[column], rtol=1e-12,
                                   equal_nan=True, err_msg=column)
    assert body["request"]["blend_short_weight"] == 0.3
    assert body["summary"]["rows"] == len(frame)


def test_weight_change_recomputes_option_b_only(client: TestClient) -> None:
    _, before = get_json(client, f"/api/sandbox?{NKE_Q}")
    _, after = get_json(client, f"/api/sandbox?{NKE_Q}&blend_short_weight=0.1&"
                                "blend_flow_weight=0.9")
    a, b = pd.DataFrame(before["rows"]), pd.DataFrame(after["rows"])
    pd.testing.assert_series_equal(a["acc_score_current"], b["acc_score_current"])
    assert not np.allclose(a["acc_score_b"], b["acc_score_b"], equal_nan=True)


def test_seed_exact_and_default_range_match_library(client: TestClient,
                                                    web_settings: Settings) -> None:
    _, body = get_json(client, "/api/sandbox?ticker=brk-b&seed_exact=1")
    first, last = sandbox.default_range("BRK.B", settings=web_settings)
    frame = sandbox.load("BRK.B", first, last, warmup=False, settings=web_settings)
    assert body["summary"]["symbol"] == "BRK.B" and body["summary"]["rows"] == 60
    assert body["summary"]["end"] == "2025-10-31" and body["summary"]["warmup"] is False
    np.testing.assert_allclose(pd.DataFrame(body["rows"])["acc_score_a"], frame["acc_score_a"],
                               equal_nan=True)


def test_lab_variants_match_load_lab(client: TestClient, web_settings: Settings) -> None:
    query = (f"/api/sandbox?{NKE_Q}&variants=current,finra_buy_volume_z"
             "&formula=flow%3Dz(vw_flow,%2020)&panels=bands&bands_signal=finra_buy_volume_z")
    status, body = get_json(client, query)
    assert status == 200, body
    plan = sandbox_lab.plan_lab("current,finra_buy_volume_z", ["flow=z(vw_flow, 20)"], [],
                                "bands", None, "finra_buy_volume_z")
    assert plan is not None
    params = sandbox_lab.variant_params(plan.to_compute, web_settings)
    lab = sandbox_lab.load_lab("NKE", "2025-08-01", "2025-10-31", plan.to_compute,
                               formulas=plan.formulas, params=params,
                               bands_signal=plan.bands_signal, settings=web_settings)
    rows = pd.DataFrame(body["rows"])
    for name in ("current", "finra_buy_volume_z", "flow"):
        np.testing.assert_allclose(rows[f"variant:{name}"].astype(float), lab.signals[name],
                                   rtol=1e-12, equal_nan=True, err_msg=name)
    np.testing.assert_allclose(rows["bands:upper"].astype(float), lab.bands["upper"],
                               equal_nan=True)
    assert [v["name"] for v in body["variants"]] == list(lab.variants)
    assert body["requested_variants"] == ["current", "finra_buy_volume_z", "flow"]
    # every variant with thresholds gets its zone counts (a formula has none)
    assert set(body["summary"]["zones"]) == {"current", "option_a", "option_b",
                                             "finra_buy_volume_z"}
    z = rows["variant:finra_buy_volume_z"].astype(float)
    assert body["summary"]["zones"]["finra_buy_volume_z"]["accumulation"] == int((z >= 1).sum())


# -- the summary, CSV and charts ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/summary", "/api/summary.json"])
def test_summary_matches_library(client: TestClient, web_settings: Settings, path: str) -> None:
    status, summary = get_json(client, f"{path}?{NKE_Q}&seed_exact=1")
    frame = sandbox.load("NKE", "2025-08-01", "2025-10-31", warmup=False,
                         settings=web_settings)
    assert status == 200
    assert summary["rows"] == len(frame) and summary["warmup"] is False
    assert summary["zones"] == sandbox.zone_counts(frame).to_dict("index")
    sessions = trading_calendar.sessions_between("2025-08-01", "2025-10-31")
    all_nke = trading_calendar.sessions_between(*SYMBOLS["NKE"])
    expected_gaps = [all_nke[GAP_ROW], all_nke[MISSING_ROW]]
    assert summary["gaps"] == [d.isoformat() for d in expected_gaps if d in sessions]
    assert summary["coverage"] == {"first": "2025-06-02", "last": "2025-10-31"}
    assert summary["caveat"] == PROXY_NOTE
    assert summary["synthetic"] is False and summary["label"] is None


def test_summary_names_the_warmup_sessions(client: TestClient) -> None:
    _, early = get_json(client, "/api/summary?ticker=NKE&start=2025-06-04&end=2025-07-31")
    assert early["warmup_rows"] == 2 and "2 earlier session(s)" in early["mode"]
    _, later = get_json(client, f"/api/summary?{NKE_Q}")
    assert later["warmup_rows"] == 20


def test_frame_csv_is_the_sandbox_frame(client: TestClient, web_settings: Settings) -> None:
    response = client.get(f"/api/frame.csv?{NKE_Q}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert ('filename="NKE_sandbox_2025-08-01_2025-10-31.csv"'
            in response.headers["content-disposition"])
    served = pd.read_csv(io.BytesIO(response.content))
    frame = sandbox.load("NKE", "2025-08-01", "2025-10-31", settings=web_settings)
    assert list(served.columns) == list(frame.columns)
    assert served["date"].tolist() == frame["date"].dt.strftime("%Y-%m-%d").tolist()
    np.testing.assert_allclose(served["acc_score_b"], frame["acc_score_b"], equal_nan=True)


def test_chart_png_matches_direct_plot(client: TestClient, web_settings: Settings) -> None:
    response = client.get(f"/chart.png?{NKE_Q}&dot_mode=option_b")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    frame = sandbox.load("NKE", "2025-08-01", "2025-10-31", settings=web_settings)
    fig = plot(frame, "option_b")
    direct = io.BytesIO()
    fig.savefig(direct, format="png", dpi=100, facecolor=fig.get_facecolor())
    assert png_size(response.content) == png_size(direct.getvalue()) == (1600, 2200)


def test_chart_svg_and_lab_figure(client: TestClient) -> None:
    response = client.get(f"/chart.svg?{NKE_Q}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in response.content[:1000]
    lab = client.get(f"/chart.png?{NKE_Q}&figure=lab&variants=current,option_a")
    width, height = png_size(lab.content)
    assert lab.status_code == 200 and width == 1600 and height != 2200


# -- errors -----------------------------------------------------------------------------------


def test_unknown_ticker_and_empty_range_are_404(client: TestClient) -> None:
    status, error = get_json(client, "/api/sandbox?ticker=NKEE")
    assert status == 404 and "unknown ticker NKEE" in error["error"] and "NKE" in error["error"]
    status, error = get_json(client, "/chart.png?ticker=NKE&start=2024-01-02&end=2024-02-01")
    assert status == 404
    assert "has data from 2025-06-02 to 2025-10-31" in error["error"] and error["hint"]
    assert "Traceback" not in json.dumps(error)


@pytest.mark.parametrize(("query", "param"), [
    ("ticker=NKE&start=2025-13-01", "start"),
    ("ticker=NKE&end=yesterday", "end"),
    ("ticker=NKE&start=2025-09-01&end=2025-08-01", "start"),
    ("start=2025-08-01", "ticker"),
    ("ticker=NKE&dot_mode=sideways", "dot_mode"),
    ("ticker=NKE&blend_short_weight=abc", "blend_short_weight"),
    ("ticker=NKE&blend_flow_weight=nan", "blend_flow_weight"),
    ("ticker=NKE&blend_flow_weight=inf", "blend_flow_weight"),
    ("ticker=NKE&seed_exact=maybe", "seed_exact"),
    ("ticker=NKE&panels=price,volcano", "panels"),
    ("ticker=NKE&variants=nope", "variants"),
    ("ticker=NKE&formula=bad", "formula"),
    ("ticker=NKE&formula=x%3Dnonexistent_col%2B1", "formula"),
    ("ticker=NKE&formula=x%3D1" + "0" * 400, "formula"),
    ("ticker=NKE&panels=hist&hist_signal=nope", "hist_signal"),
    ("ticker=NKE&hist_signal=current", "hist_signal"),
    ("ticker=NKE&panels=bands&bands_window=1", "bands_window"),
    ("ticker=NKE&figure=lab", "figure"),
    ("ticker=NKE&ticker=AAPL", "ticker"),
    ("ticker=" + "N" * 40, "ticker"),
    ("ticker=NKE&colour=red", "colour"),
])
def test_bad_parameter_is_400_naming_it(client: TestClient, query: str, param: str) -> None:
    status, error = get_json(client, f"/api/sandbox?{query}")
    assert status == 400, error
    assert error["parameter"] == param and error["error"].startswith(f"{param}:")
    assert "hint" in error and "Traceback" not in error["error"]


@pytest.mark.parametrize(("query", "param"), [
    ("&".join(f"formula=f{i}%3Dz(vw_flow,20)" for i in range(limits.MAX_FORMULAS + 1)),
     "formula"),
    ("formula=" + "x" * (limits.MAX_FORMULA_LINE + 1), "formula"),
    ("variants=" + ",".join(["current", "option_a", "option_b", "finra_buy_volume_z",
                             "short_buy_sell_ratio_z", "blend_ab", "imbalance_log1p_z",
                             "buy_volume_z_raw", "net_short_volume", "net_short_dollar_volume",
                             "dark_pool_position"])
     + "&" + "&".join(f"formula=f{i}%3Dz(vw_flow,20)" for i in range(14)), "variants"),
    ("start=1990-01-02&end=2025-10-31", "start"),
])
def test_over_limit_work_is_413(client: TestClient, query: str, param: str) -> None:
    status, error = get_json(client, f"/api/sandbox?ticker=NKE&{query}")
    assert status == 413 and error["parameter"] == param, error
    assert "at most" in error["error"]


def test_thousand_formula_url_is_refused_at_once(client: TestClient) -> None:
    """Issue 10 item 7: the 30 KB URL with 1,000 formulas gets a clear 414, not a hang."""
    query = "&".join(f"formula=f{i}%3Dz(vw_flow,%2020)" for i in range(1000))
    started = time.perf_counter()
    status, error = get_json(client, f"/chart.png?ticker=NKE&figure=lab&variants=f0&{query}")
    assert status == 414 and "at most" in error["error"]
    assert time.perf_counter() - started < 2.0


def test_only_documented_methods(client: TestClient) -> None:
    for method in ("POST", "PUT", "DELETE"):
        response = client.request(method, "/api/sandbox?ticker=NKE")
        assert response.status_code == 405 and "GET" in response.headers["allow"]
        assert "not allowed" in response.json()["error"]
    head = client.head("/healthz")
    assert head.status_code == 200 and head.content == b""


def test_symbols_healthz_and_unknown_path(client: TestClient) -> None:
    assert get_json(client, "/api/symbols") == (200, ["BRK.B", "NKE"])
    assert get_json(client, "/api/symbols?q=br") == (200, ["BRK.B"])
    assert get_json(client, "/api/symbols?q=%25") == (200, [])  # no wildcard
    assert get_json(client, "/api/symbols?limit=1") == (200, ["BRK.B"])
    assert get_json(client, "/api/symbols?q=") == (200, ["BRK.B", "NKE"])
    assert get_json(client, "/healthz") == (200, {"status": "ok", "database": True})
    status, error = get_json(client, "/etc/passwd")
    assert status == 404 and "no page" in error["error"]
    status, _ = get_json(client, "/static/..%2F..%2Fapp.py")
    assert status == 404


def test_missing_database_is_500_with_message(tmp_path: Path) -> None:
    settings = load_config(db_path=tmp_path / "none.duckdb", output_dir=tmp_path / "out")
    with TestClient(create_app(settings)) as client:
        status, error = get_json(client, "/api/summary?ticker=NKE")
        assert status == 500 and "no database at" in error["error"] and error["hint"]
        status, error = get_json(client, "/api/database")
        assert status == 500 and "no database at" in error["error"]


def test_openapi_schema_and_offline_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/api/sandbox", "/api/summary", "/api/symbols", "/api/index", "/api/scan",
                 "/api/evaluate", "/api/evaluate/{job_id}", "/chart.png", "/chart.svg",
                 "/api/database", "/healthz"):
        assert path in schema["paths"], path
    names = {p["name"] for p in schema["paths"]["/api/sandbox"]["get"]["parameters"]}
    assert {"ticker", "start", "end", "dot_mode", "blend_short_weight", "formula"} <= names
    docs = client.get("/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in docs and "cdn." not in docs
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200


def test_page_and_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert f'src="/static/{PLOTLY_BUNDLE}"' in html and "http" not in html.split("<body>")[0]
    for name in ("ticker", "start", "end", "dot_mode", "blend_short_weight",
                 "blend_flow_weight", "seed_exact", "variants", "formula"):
        assert f'name="{name}"' in html
    bundle = client.get(f"/static/{PLOTLY_BUNDLE}")  # the vendored partial bundle
    assert bundle.status_code == 200 and b"plotly.js (basic" in bundle.content[:200]
    assert "immutable" in bundle.headers["cache-control"]
    static = resources.files("darkpool_analysis.web").joinpath("static")
    assert static.joinpath("VENDORED.md").is_file()
    assert "MIT License" in static.joinpath(PLOTLY_BUNDLE.replace(".min.js", ".LICENSE.txt")
                                            ).read_text("utf-8")
    plotly_js = client.get("/static/plotly.min.js")  # the plotly package's full bundle
    assert plotly_js.status_code == 200 and b"plotly.js" in plotly_js.content[:200]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_static_assets_are_compressed_and_revalidated(client: TestClient) -> None:
    raw = client.get(f"/static/{PLOTLY_BUNDLE}", headers={"Accept-Encoding": "identity"})
    zipped = client.get(f"/static/{PLOTLY_BUNDLE}", headers={"Accept-Encoding": "gzip, br"})
    assert "content-encoding" not in raw.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == raw.content  # the client decoded it: the same bytes
    assert int(zipped.headers["content-length"]) < len(raw.content) / 2
    for path in ("/static/app.js", "/static/app.css", f"/static/{PLOTLY_BUNDLE}"):
        first = client.get(path)
        assert first.status_code == 200 and first.headers["vary"] == "Accept-Encoding"
        again = client.get(path, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    assert client.get("/static/app.js").headers["cache-control"] == "no-cache"
    assert client.get("/static/missing.js").status_code == 404
    assert client.get("/static/index.html").status_code == 404


def test_hostile_ticker_is_never_reflected(client: TestClient) -> None:
    hostile = "%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    page = client.get(f"/?ticker={hostile}")
    assert page.status_code == 200 and "<script>alert" not in page.text
    status, error = get_json(client, f"/api/sandbox?ticker={hostile}")
    assert status in (400, 404) and error["parameter" if status == 400 else "error"]


def test_access_log_one_line_per_request(client: TestClient,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="darkpool_analysis.web.access"):
        client.get("/healthz")
        client.get("/api/sandbox?ticker=NOPE")
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("web.access")]
    assert any("GET /healthz 200" in line for line in lines)
    assert any("GET /api/sandbox?ticker=NOPE 404" in line for line in lines)


# -- the first screen -------------------------------------------------------------------------


def test_database_coverage_real_fixture(client: TestClient) -> None:
    status, db = get_json(client, "/api/database")
    assert status == 200 and db["synthetic"] is False and db["label"] is None
    metrics = next(s for s in db["sources"] if s["table"] == "daily_metrics")
    assert metrics["symbols"] == 2 and metrics["first"] == "2025-06-02"
    assert metrics["last"] == "2025-10-31" and metrics["gaps"] == 0


def test_database_coverage_demo_is_synthetic(demo_client: TestClient) -> None:
    status, db = get_json(demo_client, "/api/database")
    assert status == 200 and db["synthetic"] is True and db["label"] == SYNTHETIC_LABEL
    short = next(s for s in db["sources"] if s["table"] == "finra_short_daily_raw")
    prices = next(s for s in db["sources"] if s["table"] == "prices_daily")
    assert short["symbols"] == prices["symbols"] == 6 and short["rows"] > 1000
    assert db["owed"] is None
    _, summary = get_json(demo_client, "/api/summary?ticker=NKE")
    assert summary["synthetic"] is True and summary["label"] == SYNTHETIC_LABEL
    csv = demo_client.get("/api/frame.csv?ticker=NKE").text
    assert csv.startswith(f"# {SYNTHETIC_LABEL}\n")


# -- market -----------------------------------------------------------------------------------


def test_index_of_universe_matches_market_index(demo_client: TestClient,
                                                demo_settings: Settings) -> None:
    status, body = get_json(demo_client, "/api/index?universe=all&start=2025-06-02"
                                         "&end=2025-09-30")
    assert status == 200, body
    frame = market.index("all", "2025-06-02", "2025-09-30", settings=demo_settings)
    rows = pd.DataFrame(body["rows"])
    assert list(rows.columns) == list(market.INDEX_COLUMNS)
    np.testing.assert_allclose(rows["dix"], frame["dix"], equal_nan=True)
    assert body["attrs"]["synthetic"] is True and body["attrs"]["name"] == "all"


def test_index_of_uploaded_membership(demo_client: TestClient) -> None:
    text = "ticker,start_date,end_date\nNKE,2025-01-01,\nAAPL,2025-01-01,2025-08-29\n"
    response = demo_client.post("/api/index", json={"membership": text, "name": "two.csv",
                                                    "start": "2025-08-01",
                                                    "end": "2025-09-30"})
    assert response.status_code == 200, response.text
    rows = pd.DataFrame(response.json()["rows"])
    september = rows[rows["date"] >= "2025-09-02"]
    assert set(september["members"]) == {1} and set(rows["members"].head(5)) == {2}
    bad = demo_client.post("/api/index", json={"membership": "ticker,start_date\nNKE,soon\n",
                                               "name": "bad.csv"})
    assert bad.status_code == 400 and "bad.csv" in bad.json()["error"]


def test_scan_matches_market_scan(demo_client: TestClient, demo_settings: Settings) -> None:
    status, body = get_json(demo_client, "/api/scan?date=2025-10-15&by=finra_buy_volume_z"
                                         "&top=2")
    assert status == 200, body
    frame = market.scan("2025-10-15", by="finra_buy_volume_z", top=2, settings=demo_settings)
    assert [r["symbol"] for r in body["rows"]] == frame["symbol"].tolist()
    assert [r["end"] for r in body["rows"]] == ["top", "top", "bottom", "bottom"]
    assert body["columns"] == list(frame.columns)
    status, error = get_json(demo_client, "/api/scan?date=2025-10-15&by=nope")
    assert status == 400 and "nope" in error["error"]
    status, error = get_json(demo_client, "/api/scan?date=2019-01-02")
    assert status in (400, 404) and "2019-01-02" in error["error"]


# -- evaluation -------------------------------------------------------------------------------


def poll(client: TestClient, url: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen_states: list[str] = []
    while time.monotonic() < deadline:
        status = client.get(url).json()
        seen_states.append(status["state"])
        if status["state"] in ("done", "error"):
            status["seen_states"] = seen_states
            return status
        time.sleep(0.2)
    raise AssertionError(f"evaluation did not finish in {timeout} s: {seen_states[-5:]}")


def test_evaluate_runs_in_a_worker_and_returns_results(demo_client: TestClient) -> None:
    response = demo_client.post("/api/evaluate", json={
        "variants": ["current", "finra_buy_volume_z"], "formulas": ["flow=z(vw_flow, 20)"],
        "universe": "NKE,AAPL,TSLA,GME,SPY,MSFT", "start": "2025-05-01",
        "end": "2025-11-28", "horizons": "1,5", "walk": False})
    assert response.status_code == 202, response.text
    job = response.json()
    # the server keeps answering while the evaluation runs
    assert demo_client.get("/healthz").status_code == 200
    status = poll(demo_client, job["poll"])
    assert status["state"] == "done", status
    result = status["result"]
    variants = {row["variant"] for row in result["ic_table"]}
    assert {"current", "finra_buy_volume_z", "flow"} <= variants
    assert {row["horizon"] for row in result["ic_table"]} == {1, 5}
    assert result["quantiles"] and result["ic_by_date"]
    summary = result["summary"]  # the evaluation's own summary.json
    assert set(summary["variants"]) >= {"current", "finra_buy_volume_z", "flow"}
    boxes = {box["variant"]: box for box in result["verdicts"]}
    assert set(boxes) == set(summary["variants"])
    assert boxes["flow"]["verdict"] == summary["variants"]["flow"]["verdict"]
    assert boxes["flow"]["verdict"] in ("evidence", "no_evidence", "insufficient_data")
    assert "point-in-time" in result["label"]
    report = demo_client.get(f"{job['poll']}/report.html")
    assert report.status_code == 200 and "Signal evaluation" in report.text


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"variants": ["nope"]}, "variants", 400),
    ({"formulas": ["bad"]}, "formulas", 400),
    ({"formulas": [f"f{i}=z(vw_flow, 20)" for i in range(limits.MAX_FORMULAS + 1)]},
     "formula", 413),
    ({"start": "2025-09-01", "end": "2025-08-01"}, "start", 400),
    ({"horizons": "1,x"}, "horizons", 400),
    ({"quantiles": 1}, "quantiles", 400),
    ({"variants": [], "formulas": []}, "variants", 400),
])
def test_evaluate_bad_request(demo_client: TestClient, body: dict[str, Any], param: str,
                              code: int) -> None:
    response = demo_client.post("/api/evaluate", json=body)
    assert response.status_code == code, response.text
    assert response.json()["parameter"] == param


def test_evaluate_error_in_worker_is_a_message(demo_client: TestClient) -> None:
    response = demo_client.post("/api/evaluate", json={"universe": "ZZZZ"})
    assert response.status_code == 202
    status = poll(demo_client, response.json()["poll"])
    assert status["state"] == "error" and status["error"]["status"] in (400, 404)
    assert "Traceback" not in status["error"]["error"]
    missing = demo_client.get("/api/evaluate/web-none")
    assert missing.status_code == 404


@pytest.mark.parametrize("weights", [(0.6, 0.4), (0.25, 0.75), (1.0, 0.0)])
def test_demo_frame_matches_library_at_any_weight(demo_client: TestClient,
                                                  demo_settings: Settings,
                                                  weights: tuple[float, float]) -> None:
    """The built demo database (stored z columns): every column equals sandbox.load's."""
    short, flow = weights
    _, body = get_json(demo_client, "/api/sandbox?ticker=GME&start=2025-04-01&end=2025-11-28"
                                    f"&blend_short_weight={short}&blend_flow_weight={flow}")
    frame = sandbox.load("GME", "2025-04-01", "2025-11-28", settings=demo_settings,
                         blend_short_weight=short, blend_flow_weight=flow)
    rows = pd.DataFrame(body["rows"])
    for column in frame.columns.drop(["date", "symbol"]):
        np.testing.assert_allclose(rows[column].astype(float), frame[column], rtol=1e-12,
                                   equal_nan=True, err_msg=column)
