"""``darkpool watch --once`` end to end against a local FINRA CDN, Polygon and webhook server.

History comes from the synthetic market's real-format files (ingested from a folder); the
watched day's CNMS file is only on the local CDN, which answers 403 AccessDenied first and the
file after. NKE's short volume is pushed up on that day so the z rule triggers for it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Request, Response

from darkpool_analysis import store, synthetic
from darkpool_analysis.cli import app
from darkpool_analysis.config import load_config
from darkpool_analysis.ingest.finra_short import ingest_finra_short
from darkpool_analysis.ingest.prices import ingest_prices

TICKERS = ("NKE", "AAPL", "GME", "SPY", "TSLA")
START, DAY = dt.date(2025, 3, 3), dt.date(2025, 5, 30)
TOKEN = "w3bh00k-T0ken-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"
HOOK_PATH = f"/api/webhooks/987654321098765432/{TOKEN}"
CNMS_PATH = f"/daily/CNMSshvol{DAY:%Y%m%d}.txt"
GROUPED_PATH = f"/v2/aggs/grouped/locale/us/market/stocks/{DAY.isoformat()}"
DENIED = (Path(__file__).resolve().parents[1] / "fixtures" / "finra_short"
          / "access_denied.xml").read_bytes()
RULES = """
[[rule]]
name = "short ratio spike"
when = "short_buy_sell_ratio_z >= 3"

[[rule]]
name = "never"
when = "short_ratio > 5"

[[rule]]
name = "leaders"
when = "scan top 2 by short_buy_sell_ratio"
"""


def _spiked_file(path: Path) -> bytes:
    """The day's CNMS file with NKE's short volume at 90% of its total volume."""
    lines = path.read_bytes().decode().split("\r\n")
    for i, line in enumerate(lines):
        if line.startswith(f"{DAY:%Y%m%d}|NKE|"):
            fields = line.split("|")
            fields[2] = str(int(int(fields[4]) * 0.9))
            lines[i] = "|".join(fields)
    return "\r\n".join(lines).encode()


def _grouped_json(prices_dir: Path) -> dict[str, object]:
    """Polygon grouped-daily bars of the watched day from the synthetic CSVs."""
    stamp = int(pd.Timestamp(DAY).tz_localize("America/New_York").timestamp() * 1000)
    results = []
    for ticker in TICKERS:
        bars = pd.read_csv(prices_dir / f"{ticker}.csv")
        row = bars.loc[bars["Date"] == DAY.isoformat()].iloc[0]
        results.append({"T": ticker, "o": row["Open"], "h": row["High"], "l": row["Low"],
                        "c": row["Close"], "v": float(row["Volume"]), "vw": row["Close"],
                        "t": stamp, "n": 1000})
    return {"status": "OK", "adjusted": True, "queryCount": len(results),
            "resultsCount": len(results), "results": results, "request_id": "x"}


class Servers:
    """Counters of what the local servers saw."""

    def __init__(self) -> None:
        self.cdn_calls = 0
        self.deliveries: list[dict[str, object]] = []
        self.hook_calls = 0


@pytest.fixture
def world(tmp_path: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[Servers, Path]]:
    market = synthetic.write_market(tmp_path / "market", TICKERS, START, DAY)
    day_file = market.finra_dir / f"CNMSshvol{DAY:%Y%m%d}.txt"
    body = _spiked_file(day_file)
    day_file.unlink()  # the watched day is only on the "CDN"
    settings = load_config()
    with store.open_writer(settings.db_path) as writer:
        ingest_finra_short(settings, START, DAY, writer=writer, from_dir=market.finra_dir)
        ingest_prices(writer, settings, START, DAY - dt.timedelta(days=1), tickers=TICKERS,
                      from_dir=market.prices_dir)
        from darkpool_analysis.build import settle_owed

        settle_owed(writer, settings)
    servers = Servers()

    def cdn(request: Request) -> Response:
        servers.cdn_calls += 1
        if servers.cdn_calls == 1:
            return Response(DENIED, status=403, content_type="application/xml")
        return Response(body, status=200, content_type="text/plain")

    def hook(request: Request) -> Response:
        servers.hook_calls += 1
        if servers.hook_calls == 1:
            return Response(json.dumps({"message": "You are being rate limited.",
                                        "retry_after": 0.3, "global": False}), status=429,
                            content_type="application/json")
        upload = request.files.get("files[0]")
        servers.deliveries.append({"payload": json.loads(request.form["payload_json"]),
                                   "files": sorted(request.files),
                                   "png": upload.read() if upload else b""})
        request.close()
        return Response(status=204)

    httpserver.expect_request(CNMS_PATH).respond_with_handler(cdn)
    httpserver.expect_request(GROUPED_PATH).respond_with_json(_grouped_json(market.prices_dir))
    httpserver.expect_request(HOOK_PATH, method="POST").respond_with_handler(hook)
    monkeypatch.setenv("FINRA_CDN_URL", httpserver.url_for("/daily"))
    monkeypatch.setenv("DARKPOOL_POLYGON_API_URL", httpserver.url_for("/").rstrip("/"))
    monkeypatch.setenv("POLYGON_API_KEY", "polygon-test-key")
    monkeypatch.setenv("DARKPOOL_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("DARKPOOL_WEBHOOK_KIND", "discord")
    monkeypatch.setenv("DARKPOOL_WEBHOOK_BACKOFF", "0.01")
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    yield servers, rules


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every record of our package and of the HTTP libraries (the CLI resets root handlers)."""
    handler = _Lines()
    loggers = [logging.getLogger(name) for name in ("darkpool_analysis", "httpx", "httpcore")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)  # everything, also what reaches the CLI's handler
    try:
        yield handler.lines
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def _watch(rules: Path, *extra: str) -> tuple[int, str, float]:
    args = ["watch", "--once", "--date", DAY.isoformat(), "--rules", str(rules),
            "--tickers", ",".join(TICKERS), "--poll-interval", "0.2", "--poll-timeout", "20",
            *extra]
    started = time.perf_counter()
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output, time.perf_counter() - started


def test_alert_arrives_once_with_png_and_the_url_stays_secret(
        world: tuple[Servers, Path], httpserver: HTTPServer, db_path: Path,
        monkeypatch: pytest.MonkeyPatch, log_lines: list[str]) -> None:
    servers, rules = world
    # The local server stands in for Discord: its own access log (werkzeug, same process)
    # is the remote side's log, not ours.
    monkeypatch.setattr(logging.getLogger("werkzeug"), "disabled", True)
    url = httpserver.url_for(HOOK_PATH)
    (Path.cwd() / ".env").write_text(f"DARKPOOL_WEBHOOK_URL={url}\n")  # read from .env

    code, output, seconds = _watch(rules)
    assert code == 0, output
    assert servers.cdn_calls >= 3  # 403, then the probe that found it, then the download
    assert servers.hook_calls == 3, output  # 429 once, then one message per triggered rule
    assert len(servers.deliveries) == 2
    spike, leaders = servers.deliveries
    spike_text = str(spike["payload"]["content"])  # type: ignore[index]
    assert spike_text.startswith(f"**short ratio spike** · {DAY}")
    assert re.search(r"matched \d symbol\(s\)\nNKE ", spike_text)
    assert spike["files"] == ["files[0]"]
    assert bytes(spike["png"]).startswith(b"\x89PNG\r\n\x1a\n")  # type: ignore[arg-type]
    assert "1. NKE" in str(leaders["payload"]["content"])  # type: ignore[index]

    conn = store.connect_readonly(db_path)
    try:
        sent = conn.execute("SELECT rule, status, symbols, destination FROM alerts_sent "
                            "ORDER BY rule").fetchall()
        on_day = conn.execute("SELECT count(*) FROM daily_metrics WHERE date = ? AND "
                              "has_price", [DAY]).fetchone()
    finally:
        conn.close()
    assert [(r[0], r[1]) for r in sent] == [("leaders", "sent"), ("short ratio spike", "sent")]
    assert sent[1][2].split(",")[0] == "NKE"
    assert on_day == (len(TICKERS),)  # the day's prices came from "Polygon"

    # a second run of the same day posts nothing
    code, output2, _ = _watch(rules)
    assert code == 0, output2
    assert servers.hook_calls == 3 and len(servers.deliveries) == 2
    assert "already sent 2" in " ".join(output2.split())

    everything = "\n".join([*log_lines, output, output2])
    squeezed = "".join(everything.split())  # Rich may wrap a long URL across lines
    for secret in (url, TOKEN, HOOK_PATH):
        assert secret not in everything and secret not in squeezed
    assert any("429" in line for line in log_lines)  # the retry was logged, masked
    assert any(line.startswith("HTTP Request: POST") for line in log_lines)
    print(output[output.index("watch 2025"):], f"watch --once took {seconds:.2f}s")


def test_dry_run_prints_and_records_nothing(world: tuple[Servers, Path], db_path: Path
                                            ) -> None:
    servers, rules = world
    code, output, _ = _watch(rules, "--dry-run")
    assert code == 0, output
    assert servers.hook_calls == 0
    flat = " ".join(output.split())
    assert "**short ratio spike**" in flat and "printed 2" in flat
    conn = store.connect_readonly(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM alerts_sent").fetchone() == (0,)
    finally:
        conn.close()


def test_missing_webhook_is_a_clear_error_before_waiting(world: tuple[Servers, Path]) -> None:
    servers, rules = world
    result = CliRunner().invoke(app, ["watch", "--once", "--date", DAY.isoformat(),
                                      "--rules", str(rules)])
    assert result.exit_code == 1
    assert "DARKPOOL_WEBHOOK_URL" in " ".join(result.output.split())
    assert servers.cdn_calls == 0
