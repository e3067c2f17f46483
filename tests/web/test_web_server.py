"""The real uvicorn server: the CLI process, bounded rendering, disconnects, a concurrent
ingest in another process."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from darkpool_analysis import trading_calendar
from darkpool_analysis.config import Settings, load_config
from darkpool_analysis.synthetic import write_market
from darkpool_analysis.web import server as web_server
from darkpool_analysis.web.app import RenderBusy, RenderPool, RenderTimeout
from web.conftest import DEMO_TICKERS, serve

DARKPOOL = Path(sys.executable).with_name("darkpool")


def fetch(base: str, path: str, timeout: float = 60) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(base.rstrip("/") + path, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


class Captured(logging.Handler):
    """Every log record of the server (to check that nothing logged a traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_binds_loopback_by_default(web_settings: Settings) -> None:
    with web_server.make_server(port=0, settings=web_settings) as httpd:
        assert httpd.server_address[0] == "127.0.0.1"
        assert httpd.url.startswith("http://127.0.0.1:")
    assert web_server.is_loopback("localhost") and web_server.is_loopback("::1")
    assert not web_server.is_loopback("0.0.0.0") and not web_server.is_loopback("example.org")


def _start_cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([str(DARKPOOL), "web", "--port", "0", "--no-open", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "Ctrl-C" not in seen and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen += line
    assert "serving" in seen, seen
    url = seen.split("serving", 1)[1].split()[0]
    return process, seen + "\0" + url


def test_cli_web_serves_logs_and_stops_on_ctrl_c(web_db: Path) -> None:
    env = {**os.environ, "DARKPOOL_DB": str(web_db), "COLUMNS": "200"}
    process, both = _start_cli([], env)
    output, url = both.split("\0")
    try:
        assert url.startswith("http://127.0.0.1:")
        assert fetch(url, "/healthz") == (200, b'{"status":"ok","database":true}')
        assert fetch(url, "/api/symbols")[0] == 200
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "GET /healthz 200" in rest and "GET /api/symbols 200" in rest  # access log
    assert "stopped" in rest and "Traceback" not in rest
    assert "warning" not in output


def test_cli_web_warns_for_public_host(web_db: Path) -> None:
    env = {**os.environ, "DARKPOOL_DB": str(web_db), "COLUMNS": "200"}
    process, both = _start_cli(["--host", "0.0.0.0", "--no-access-log"], env)
    output, _url = both.split("\0")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert "warning" in output and "0.0.0.0" in output and "no authentication" in output


def test_render_pool_refuses_when_full_and_times_out() -> None:
    pool = RenderPool(workers=1, queue=0)
    release = threading.Event()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as runner:
            blocked = runner.submit(pool.run, lambda: release.wait(10), timeout=10)
            time.sleep(0.2)
            with pytest.raises(RenderBusy):
                pool.run(lambda: 1, wait=0.1)
            release.set()
            assert blocked.result(timeout=10) is True
        release.clear()
        with pytest.raises(RenderTimeout):
            pool.run(lambda: release.wait(10), timeout=0.2)
        release.set()
        assert pool.run(lambda: 42, wait=5) == 42  # the slot came back
    finally:
        release.set()
        pool.shutdown()


def test_heavy_chart_does_not_starve_other_requests(demo_server: web_server.WebServer) -> None:
    """Issue 10 item 7: a maximal lab chart (every formula the limits allow, ten months) is
    in flight while ordinary requests keep answering quickly."""
    formulas = "&".join(f"formula=f{i}%3Dz(mean(vw_flow,%20{i + 2}),%20{20 + i})"
                        for i in range(8))
    heavy = (f"/chart.png?ticker=NKE&start=2025-03-03&end=2025-12-31&figure=lab&"
             f"variants=current,option_a,option_b,finra_buy_volume_z&{formulas}"
             "&panels=price,heatmap,hist,bands")
    url = demo_server.url
    fetch(url, "/api/sandbox?ticker=NKE")  # warm the import and the cache
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        heavy_futures = [pool.submit(fetch, url, heavy, 120) for _ in range(2)]
        time.sleep(0.3)
        timings = []
        for weight in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            started = time.perf_counter()
            status, _ = fetch(url, f"/api/sandbox?ticker=NKE&blend_short_weight={weight}",
                              timeout=30)
            timings.append(time.perf_counter() - started)
            assert status == 200
        light_done = time.monotonic()
        heavy_results = [f.result(timeout=180) for f in heavy_futures]
        heavy_done = time.monotonic()
    for status, body in heavy_results:  # drawn, or cut off by the render bound: never a hang
        assert status == 200 or (status == 504 and b"took longer than" in body), body[:200]
    assert heavy_done > light_done  # the ordinary requests finished while the charts drew
    assert max(timings) < 10.0, timings


def test_client_disconnect_logs_no_traceback(demo_server: web_server.WebServer) -> None:
    handler = Captured()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        host, port = demo_server.server_address
        for path in ("/chart.png?ticker=NKE&dot_mode=all", "/api/sandbox?ticker=NKE",
                     "/static/plotly.min.js"):
            with socket.create_connection((host, port)) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                sock.recv(10)  # the response has started (or: it is queued)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        time.sleep(3.0)  # let the chart finish and its write hit the closed socket
        assert fetch(demo_server.url, "/healthz")[0] == 200
    finally:
        root.removeHandler(handler)
    bad = [r for r in handler.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


def test_page_keeps_answering_during_an_ingest_of_50_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `darkpool ingest finra-short` of 50 session files (with its automatic rebuild)
    runs in another process while the API is hammered: no 5xx, no lock error."""
    from darkpool_analysis.pipeline import run_demo

    db = tmp_path / "db" / "live.duckdb"  # its own demo database (the store is a folder)
    run_demo(load_config(db_path=db, output_dir=tmp_path / "output"), db_path=db,
             tickers=DEMO_TICKERS)
    sessions = trading_calendar.sessions_between("2026-01-02", "2026-06-30")[:50]
    market = write_market(tmp_path / "files", DEMO_TICKERS, sessions[0], sessions[-1], seed=11)
    assert len(list(market.finra_dir.glob("CNMSshvol*.txt"))) == 50
    monkeypatch.setenv("DARKPOOL_DB", str(db))
    settings = load_config(db_path=db, output_dir=tmp_path / "output")
    env = {**os.environ, "DARKPOOL_DB": str(db), "COLUMNS": "200"}
    statuses: list[tuple[str, int, bytes]] = []
    for httpd in serve(settings):
        ingest = subprocess.Popen(
            [str(DARKPOOL), "ingest", "finra-short", "--start", str(sessions[0]), "--end",
             str(sessions[-1]), "--from-dir", str(market.finra_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        paths = ("/api/sandbox?ticker=NKE", "/api/database", "/api/symbols?q=N",
                 "/api/summary?ticker=AAPL&blend_short_weight=0.5", "/healthz", "/")
        i = 0
        while ingest.poll() is None or i < len(paths):
            path = paths[i % len(paths)]
            status, body = fetch(httpd.url, path, timeout=60)
            statuses.append((path, status, body[:300]))
            i += 1
        output, _ = ingest.communicate(timeout=10)
        assert ingest.returncode == 0, output
        status, body = fetch(httpd.url, "/api/database")
        metrics = next(s for s in json.loads(body)["sources"] if s["table"] == "daily_metrics")
        assert status == 200 and metrics["last"] == str(sessions[-1])  # publication picked up
    failures = [s for s in statuses if s[1] >= 500 or b"lock" in s[2].lower()]
    assert len(statuses) >= 12 and failures == [], failures[:3]
