"""``darkpool web``: the real server on an ephemeral port against a fixture database."""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from darkpool_analysis import sandbox, store, trading_calendar
from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.views.sandbox_chart import PROXY_NOTE, plot
from darkpool_analysis.web import server as web_server

#: symbol -> (first session, last session)
SYMBOLS = {"NKE": ("2025-06-02", "2025-10-31"), "BRK.B": ("2025-08-01", "2025-10-31")}
GAP_ROW, MISSING_ROW = 50, 60  # NKE: a row without short data, and a session with no row


def metrics_frame(symbol: str, start: str, end: str, seed: int) -> pd.DataFrame:
    """``daily_metrics`` rows with the seed's columns (stored z columns left NULL, so the
    sandbox recomputes them) on every session in ``[start, end]``."""
    rng = np.random.default_rng(seed)
    dates = trading_calendar.sessions_index(start, end)
    n = len(dates)
    total = rng.lognormal(np.log(4e6), 0.3, n).round()
    short = (total * rng.uniform(0.35, 0.62, n)).round()
    frame = pd.DataFrame({
        "symbol": symbol, "date": dates.date, "short_volume": short, "total_volume": total,
        "short_buy_volume": short, "short_sell_volume": total - short,
        "lit_buy_volume": rng.lognormal(np.log(9e5), 0.4, n).round(),
        "lit_sell_volume": rng.lognormal(np.log(9e5), 0.4, n).round(),
        "return_z": rng.normal(0, 1, n), "otc_participation_z": rng.normal(0, 1, n),
        "confidence": rng.choice([1.0, 0.7, 0.45], n),
    })
    lit_b, lit_s = frame["lit_buy_volume"], frame["lit_sell_volume"]
    frame["lit_flow_imbalance"] = (lit_b - lit_s) / (lit_b + lit_s)
    frame["short_buy_sell_ratio"] = np.nan
    frame["short_buy_sell_ratio_z"] = np.nan
    frame["lit_flow_imbalance_z"] = np.nan
    if symbol == "NKE":
        frame.loc[GAP_ROW, ["short_volume", "short_buy_volume", "short_sell_volume"]] = np.nan
        frame = frame.drop(index=MISSING_ROW).reset_index(drop=True)
    frame["has_short"] = frame["short_volume"].notna()
    frame["inference_version"] = "test"
    return frame


@pytest.fixture(scope="module")
def web_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("web_db") / "darkpool.duckdb"
    frames = [metrics_frame(symbol, *span, seed=i)
              for i, (symbol, span) in enumerate(SYMBOLS.items())]
    with store.open_writer(db) as writer:
        writer.replace_partition("daily_metrics", pd.concat(frames, ignore_index=True),
                                 where="true", params=[])
    return db


@pytest.fixture
def web_env(web_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DARKPOOL_DB", str(web_db))
    return web_db


@pytest.fixture
def server(web_env: Path) -> Iterator[web_server.SandboxServer]:
    """The real server on 127.0.0.1:<ephemeral> in a background thread."""
    httpd = web_server.make_server(port=0, settings=load_config())
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def fetch(httpd: web_server.SandboxServer, path: str,
          method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body (error statuses included)."""
    request = urllib.request.Request(httpd.url.rstrip("/") + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def fetch_json(httpd: web_server.SandboxServer, path: str) -> tuple[int, Any]:
    status, headers, body = fetch(httpd, path)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG header (IHDR)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


NKE_Q = "ticker=nke&start=2025-08-01&end=2025-10-31"


def test_page_has_form_caveat_and_symbol_lookup(server: web_server.SandboxServer) -> None:
    status, headers, body = fetch(server, "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<form method="get" action="/"' in page
    for name in ("ticker", "start", "end", "dot_mode", "blend_short_weight",
                 "blend_flow_weight", "seed_exact", "variants", "formula", "panels"):
        assert f'name="{name}"' in page
    assert 'list="symbols"' in page and "/api/symbols" in page
    assert "short-sale volume: a proxy for dealer-filled" in page
    assert "{{" not in page  # every placeholder filled
    assert "nonce-" in headers["Content-Security-Policy"]


def test_page_with_ticker_shows_summary_chart_and_csv_link(
        server: web_server.SandboxServer, web_env: Path) -> None:
    status, _, body = fetch(server, f"/?{NKE_Q}&dot_mode=all")
    page = body.decode()
    frame = sandbox.load("NKE", "2025-08-01", "2025-10-31")
    zones = sandbox.zone_counts(frame)
    assert status == 200
    assert f"NKE 2025-08-01 .. 2025-10-31: {len(frame)} rows" in page
    current = "".join(f'<td class="num">{n}</td>' for n in zones.loc["current"])
    assert f"<tr><td>current</td>{current}</tr>" in page
    gap_day = trading_calendar.sessions_between(*SYMBOLS["NKE"])[GAP_ROW]
    assert gap_day.isoformat() in page
    assert '<img src="/chart.png?ticker=nke&amp;start=2025-08-01' in page
    assert 'href="/api/frame.csv?ticker=nke' in page
    assert '<option value="all" selected>' in page


def test_chart_png_matches_direct_plot(server: web_server.SandboxServer, web_env: Path) -> None:
    status, headers, body = fetch(server, f"/chart.png?{NKE_Q}&dot_mode=option_b")
    assert status == 200 and headers["Content-Type"] == "image/png"
    frame = sandbox.load("NKE", "2025-08-01", "2025-10-31")
    fig = plot(frame, "option_b")
    direct = io.BytesIO()
    fig.savefig(direct, format="png", dpi=100, facecolor=fig.get_facecolor())
    assert png_size(body) == png_size(direct.getvalue()) == (1600, 2200)


def test_chart_svg_and_lab_figure(server: web_server.SandboxServer) -> None:
    status, headers, body = fetch(server, f"/chart.svg?{NKE_Q}")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    assert b"<svg" in body[:1000]
    status, _, lab = fetch(server, f"/chart.png?{NKE_Q}&figure=lab&variants=current,option_a")
    width, height = png_size(lab)
    assert status == 200 and width == 1600 and height != 2200


def test_summary_json_matches_library(server: web_server.SandboxServer, web_env: Path) -> None:
    status, summary = fetch_json(server, f"/api/summary.json?{NKE_Q}&seed_exact=1")
    frame = sandbox.load("NKE", "2025-08-01", "2025-10-31", warmup=False)
    assert status == 200
    assert summary["rows"] == len(frame) and summary["warmup"] is False
    assert summary["zones"] == sandbox.zone_counts(frame).to_dict("index")
    sessions = trading_calendar.sessions_between("2025-08-01", "2025-10-31")
    all_nke = trading_calendar.sessions_between(*SYMBOLS["NKE"])
    expected_gaps = [all_nke[GAP_ROW], all_nke[MISSING_ROW]]
    assert summary["gaps"] == [d.isoformat() for d in expected_gaps if d in sessions]
    assert summary["coverage"] == {"first": "2025-06-02", "last": "2025-10-31"}
    assert summary["caveat"] == PROXY_NOTE


def test_default_range_is_last_60_sessions(server: web_server.SandboxServer) -> None:
    _, summary = fetch_json(server, "/api/summary.json?ticker=brk-b")
    assert summary["symbol"] == "BRK.B" and summary["rows"] == 60
    assert summary["end"] == "2025-10-31"


def test_frame_csv_is_the_sandbox_frame(server: web_server.SandboxServer, web_env: Path) -> None:
    status, headers, body = fetch(server, f"/api/frame.csv?{NKE_Q}")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert 'filename="NKE_sandbox_2025-08-01_2025-10-31.csv"' in headers["Content-Disposition"]
    served = pd.read_csv(io.BytesIO(body))
    frame = sandbox.load("NKE", "2025-08-01", "2025-10-31")
    assert list(served.columns) == list(frame.columns)
    assert served["date"].tolist() == frame["date"].dt.strftime("%Y-%m-%d").tolist()
    np.testing.assert_allclose(served["acc_score_b"], frame["acc_score_b"], equal_nan=True)


def test_unknown_ticker_and_empty_range_are_404(server: web_server.SandboxServer) -> None:
    status, error = fetch_json(server, "/api/summary.json?ticker=NKEE")
    assert status == 404 and "unknown ticker NKEE" in error["error"] and "NKE" in error["error"]
    status, error = fetch_json(server, "/chart.png?ticker=NKE&start=2024-01-02&end=2024-02-01")
    assert status == 404
    assert "has data from 2025-06-02 to 2025-10-31" in error["error"] and error["hint"]


@pytest.mark.parametrize(("query", "param"), [
    ("ticker=NKE&start=2025-13-01", "start"),
    ("ticker=NKE&end=yesterday", "end"),
    ("ticker=NKE&start=2025-09-01&end=2025-08-01", "start"),
    ("start=2025-08-01", "ticker"),
    ("ticker=NKE&dot_mode=sideways", "dot_mode"),
    ("ticker=NKE&blend_short_weight=abc", "blend_short_weight"),
    ("ticker=NKE&blend_flow_weight=nan", "blend_flow_weight"),
    ("ticker=NKE&seed_exact=maybe", "seed_exact"),
    ("ticker=NKE&panels=price,volcano", "panels"),
    ("ticker=NKE&variants=nope", "variants"),
    ("ticker=NKE&formula=bad", "formula"),
    ("ticker=NKE&panels=hist&hist_signal=nope", "hist_signal"),
    ("ticker=NKE&hist_signal=current", "hist_signal"),
    ("ticker=NKE&panels=bands&bands_window=1", "bands_window"),
    ("ticker=NKE&figure=lab", "figure"),
    ("ticker=NKE&ticker=AAPL", "ticker"),
])
def test_bad_parameter_is_400_naming_it(server: web_server.SandboxServer, query: str,
                                        param: str) -> None:
    status, error = fetch_json(server, f"/api/summary.json?{query}")
    assert status == 400
    assert error["parameter"] == param and error["error"].startswith(f"{param}:")
    assert "hint" in error


def test_bad_date_on_page_is_400_with_form_kept(server: web_server.SandboxServer) -> None:
    status, _, body = fetch(server, "/?ticker=NKE&start=2025-02-30")
    page = body.decode()
    assert status == 400 and "start: &#x27;2025-02-30&#x27; is not a date" in page
    assert 'name="ticker" list="symbols" value="NKE"' in page


def test_hostile_ticker_is_escaped(server: web_server.SandboxServer) -> None:
    hostile = "%3Cscript%3Ealert(1)%3C%2Fscript%3E%22%3E"
    status, _, body = fetch(server, f"/?ticker={hostile}")
    page = body.decode()
    assert status == 404
    assert "<script>alert" not in page.lower()
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;"' in page
    assert "unknown ticker &lt;SCRIPT&gt;ALERT(1)&lt;.SCRIPT&gt;" in page
    _, _, body = fetch(server, "/?ticker=%7B%7Bbody%7D%7D")  # a placeholder is not re-filled
    assert 'value="{{body}}"' in body.decode()


def test_only_get_and_head(server: web_server.SandboxServer) -> None:
    for method in ("POST", "PUT", "DELETE"):
        status, headers, body = fetch(server, "/", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        assert "not allowed" in json.loads(body)["error"]
    status, headers, body = fetch(server, "/healthz", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_symbols_healthz_and_unknown_path(server: web_server.SandboxServer) -> None:
    assert fetch_json(server, "/api/symbols") == (200, ["BRK.B", "NKE"])
    assert fetch_json(server, "/api/symbols?q=br") == (200, ["BRK.B"])
    assert fetch_json(server, "/api/symbols?q=%25") == (200, [])  # LIKE wildcard is literal
    assert fetch_json(server, "/api/symbols?limit=1") == (200, ["BRK.B"])
    assert fetch_json(server, "/healthz") == (200, {"status": "ok", "database": True})
    status, error = fetch_json(server, "/etc/passwd")
    assert status == 404 and "no page" in error["error"]


def test_missing_database_is_500_with_message(tmp_path: Path) -> None:
    httpd = web_server.make_server(port=0, settings=load_config(db_path=tmp_path / "none.db"))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        status, error = fetch_json(httpd, "/api/summary.json?ticker=NKE")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert status == 500 and "no database at" in error["error"]


def test_concurrent_chart_requests(server: web_server.SandboxServer) -> None:
    results: list[tuple[int, tuple[int, int]]] = []

    def get(dot_mode: str) -> None:
        status, _, body = fetch(server, f"/chart.png?{NKE_Q}&dot_mode={dot_mode}")
        results.append((status, png_size(body)))

    threads = [threading.Thread(target=get, args=(m,)) for m in ("current", "all", "option_a")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [(200, (1600, 2200))] * 3


def test_binds_loopback_by_default(web_env: Path) -> None:
    with web_server.make_server(port=0, settings=load_config()) as httpd:
        assert httpd.server_address[0] == "127.0.0.1"
        assert httpd.url.startswith("http://127.0.0.1:")
    assert web_server.is_loopback("localhost") and web_server.is_loopback("::1")
    assert not web_server.is_loopback("0.0.0.0") and not web_server.is_loopback("example.org")


def test_cli_web_starts_serves_and_stops(web_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`darkpool web --port 0 --no-open` serves until stopped; the stop hook shuts it down."""
    seen: dict[str, Any] = {}
    real_make_server = web_server.make_server

    def make_and_stop(host: str, port: int, **kwargs: Any) -> web_server.SandboxServer:
        httpd = real_make_server(host, port, **kwargs)
        seen["address"] = httpd.server_address

        def probe_then_stop() -> None:
            seen["health"] = fetch_json(httpd, "/healthz")
            httpd.shutdown()

        threading.Thread(target=probe_then_stop, daemon=True).start()
        return httpd

    monkeypatch.setattr(web_server, "make_server", make_and_stop)
    result = CliRunner().invoke(app, ["web", "--port", "0", "--no-open"])
    assert result.exit_code == 0, result.output
    assert seen["address"][0] == "127.0.0.1"
    assert seen["health"] == (200, {"status": "ok", "database": True})
    assert "serving http://127.0.0.1:" in result.output


def test_cli_web_ctrl_c_and_public_host_warning(web_env: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_make_server = web_server.make_server

    def loopback_only(host: str, port: int, **kwargs: Any) -> web_server.SandboxServer:
        return real_make_server("127.0.0.1", port, **kwargs)  # never really bind 0.0.0.0

    def interrupted(self: web_server.SandboxServer, poll_interval: float = 0.5) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(web_server, "make_server", loopback_only)
    monkeypatch.setattr(web_server.SandboxServer, "serve_forever", interrupted)
    result = CliRunner().invoke(app, ["web", "--host", "0.0.0.0", "--port", "0", "--no-open"])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "0.0.0.0" in result.output
    assert "stopped" in result.output


def test_parse_query_resolves_like_the_cli() -> None:
    query = web_server.parse_query({"ticker": ["brk/b"], "start": ["2025-08-01"],
                                    "warmup": ["0"], "panels": ["+heatmap"],
                                    "formula": ["flow=z(vw_flow, 20)\n"]})
    assert query.symbol == "BRK.B" and query.start == dt.date(2025, 8, 1) and not query.warmup
    assert query.plan is not None and query.plan.panels.appended == ("heatmap",)
    assert query.plan.variants == ("flow",) and query.formulas == ("flow=z(vw_flow, 20)",)
