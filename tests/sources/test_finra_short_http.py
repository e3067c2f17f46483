"""The shared HTTP retry policy and the Reg SHO downloader against a local CDN look-alike."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from darkpool_analysis.errors import FetchError
from darkpool_analysis.sources.finra_short import fetch_short_file
from darkpool_analysis.sources.http import (
    HttpPolicy,
    get,
    make_client,
    parse_retry_after,
    redact,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "finra_short"
DAY = dt.date(2021, 8, 2)
PATH = "/daily/CNMSshvol20210802.txt"
FAST = HttpPolicy(timeout=2.0, retries=2, backoff=0.0, concurrency=2)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with make_client(FAST) as http_client:
        yield http_client


@pytest.fixture
def threaded_server() -> Iterator[HTTPServer]:
    """A server that answers requests in parallel (a sleeping handler must not block)."""
    server = HTTPServer(threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


def _paths(server: HTTPServer) -> list[str]:
    return [request.path for request, _ in server.log]


def test_published_file_is_returned(httpserver: HTTPServer, client: httpx.Client) -> None:
    body = (FIXTURES / "CNMSshvol20210802.txt").read_bytes()
    httpserver.expect_request(PATH).respond_with_data(body)
    download = fetch_short_file(client, httpserver.url_for("/daily"), "CNMS", DAY, policy=FAST)
    assert download.published
    assert download.content == body
    assert download.url.endswith("/daily/CNMSshvol20210802.txt")


def test_403_access_denied_means_not_published(httpserver: HTTPServer,
                                               client: httpx.Client) -> None:
    httpserver.expect_request(PATH).respond_with_data(
        (FIXTURES / "access_denied.xml").read_bytes(), status=403,
        content_type="application/xml")
    download = fetch_short_file(client, httpserver.url_for("/daily"), "CNMS", DAY, policy=FAST)
    assert not download.published
    assert download.status == 403
    assert _paths(httpserver) == [PATH]  # not retried


def test_404_means_not_published(httpserver: HTTPServer, client: httpx.Client) -> None:
    httpserver.expect_request(PATH).respond_with_data("no such key", status=404)
    download = fetch_short_file(client, httpserver.url_for("/daily"), "CNMS", DAY, policy=FAST)
    assert (download.published, download.status) == (False, 404)


def test_403_without_access_denied_is_an_error(httpserver: HTTPServer,
                                               client: httpx.Client) -> None:
    httpserver.expect_request(PATH).respond_with_data("forbidden by proxy", status=403)
    with pytest.raises(FetchError) as info:
        fetch_short_file(client, httpserver.url_for("/daily"), "CNMS", DAY, policy=FAST)
    assert info.value.status == 403
    assert "forbidden by proxy" in str(info.value)


def test_500_then_success_is_retried(httpserver: HTTPServer, client: httpx.Client) -> None:
    httpserver.expect_oneshot_request(PATH).respond_with_data("oops", status=500)
    httpserver.expect_request(PATH).respond_with_data(b"payload")
    response = get(client, httpserver.url_for(PATH), policy=FAST)
    assert response.content == b"payload"
    assert _paths(httpserver) == [PATH, PATH]


def test_persistent_503_fails_after_all_attempts(httpserver: HTTPServer,
                                                 client: httpx.Client) -> None:
    httpserver.expect_request(PATH).respond_with_data("busy", status=503)
    with pytest.raises(FetchError) as info:
        get(client, httpserver.url_for(PATH), policy=FAST)
    assert info.value.status == 503
    assert "after 3 attempt(s)" in str(info.value)
    assert len(httpserver.log) == FAST.retries + 1


def test_429_honours_retry_after(httpserver: HTTPServer, client: httpx.Client) -> None:
    httpserver.expect_oneshot_request(PATH).respond_with_data(
        "slow down", status=429, headers={"Retry-After": "1"})
    httpserver.expect_request(PATH).respond_with_data(b"ok")
    started = time.monotonic()
    response = get(client, httpserver.url_for(PATH), policy=FAST)  # backoff alone would be 0 s
    assert response.content == b"ok"
    assert time.monotonic() - started >= 0.9


def test_timeout_then_success_is_retried(threaded_server: HTTPServer) -> None:
    policy = HttpPolicy(timeout=0.2, retries=1, backoff=0.0, concurrency=2)
    calls: list[float] = []

    def slow_first(request: Request) -> Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(0.6)  # longer than the client's 0.2 s timeout
        return Response(b"late but fine")

    threaded_server.expect_request(PATH).respond_with_handler(slow_first)
    with make_client(policy) as http_client:
        response = get(http_client, threaded_server.url_for(PATH), policy=policy)
    assert response.content == b"late but fine"
    assert len(calls) == 2


def test_timeout_on_every_attempt_raises_fetch_error(threaded_server: HTTPServer) -> None:
    policy = HttpPolicy(timeout=0.1, retries=1, backoff=0.0, concurrency=2)

    def always_slow(request: Request) -> Response:
        time.sleep(0.4)
        return Response(b"too late")

    threaded_server.expect_request(PATH).respond_with_handler(always_slow)
    with make_client(policy) as http_client, pytest.raises(FetchError) as info:
        get(http_client, threaded_server.url_for(PATH), policy=policy)
    assert "timed out after 2 attempt(s)" in str(info.value)


def test_connection_refused_raises_fetch_error() -> None:
    policy = HttpPolicy(timeout=0.5, retries=1, backoff=0.0, concurrency=1)
    with make_client(policy) as http_client, pytest.raises(FetchError) as info:
        get(http_client, "http://127.0.0.1:9/nothing", policy=policy)
    assert "ConnectError" in str(info.value)


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    now = dt.datetime(2021, 8, 2, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("Mon, 02 Aug 2021 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Mon, 02 Aug 2021 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None


def test_redact_masks_api_keys() -> None:
    text = redact("https://api.polygon.io/v2/aggs?apiKey=SECRET123&limit=5")
    assert "SECRET123" not in text
    assert "limit=5" in text


def test_policy_comes_from_settings() -> None:
    from darkpool_analysis.config import load_config

    settings = load_config(http_timeout=3.5, http_retries=1, http_backoff=0.25,
                           http_concurrency=3)
    assert HttpPolicy.from_settings(settings) == HttpPolicy(timeout=3.5, retries=1,
                                                            backoff=0.25, concurrency=3)
