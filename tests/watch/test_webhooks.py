"""Webhook delivery against a local server: Discord multipart, 429/5xx retries, secrecy."""

from __future__ import annotations

import json
import logging
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from darkpool_analysis.webhooks import (
    Attachment,
    Message,
    Webhook,
    WebhookError,
    WebhookPolicy,
    detect_kind,
    secret_parts,
)

TOKEN = "tok3n-Secret-abcdefghijklmnopqrstuvwxyz0123456789"
PATH = f"/api/webhooks/123456789012345678/{TOKEN}"
FAST = WebhookPolicy(timeout=5.0, retries=3, backoff=0.01, max_backoff=0.05)
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 64


def _url(server: HTTPServer) -> str:
    return server.url_for(PATH)


def test_discord_message_with_file_is_multipart(httpserver: HTTPServer) -> None:
    seen: list[tuple[str, dict[str, object], str | None, bytes]] = []

    def handler(request: Request) -> Response:
        upload = request.files["files[0]"]
        seen.append((request.mimetype, json.loads(request.form["payload_json"]),
                     upload.filename, upload.read()))
        request.close()  # the parsed upload's temporary file
        return Response(status=204)

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handler)
    with Webhook(_url(httpserver), "discord", policy=FAST) as hook:
        hook.post(Message("NKE: current >= 70", (Attachment("NKE.png", PNG),)))
    ((mimetype, payload, filename, content),) = seen
    assert mimetype == "multipart/form-data"
    assert payload["content"] == "NKE: current >= 70"
    assert payload["attachments"] == [{"id": 0, "filename": "NKE.png"}]
    assert payload["allowed_mentions"] == {"parse": []}
    assert filename == "NKE.png" and content == PNG


def test_discord_text_only_is_json_and_long_text_is_cut(httpserver: HTTPServer) -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: Request) -> Response:
        bodies.append(json.loads(request.data))
        return Response(status=204)

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handler)
    with Webhook(_url(httpserver), "discord", policy=FAST) as hook:
        hook.post(Message("x" * 2500))
    content = str(bodies[0]["content"])
    assert len(content) == 2000 and content.endswith("…")


def test_generic_json_webhook_posts_text(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST", json={"text": "hello"}).respond_with_data(
        "ok")
    with Webhook(httpserver.url_for("/hook"), policy=FAST) as hook:
        assert hook.kind == "json"
        hook.post(Message("hello", (Attachment("a.png", PNG),)))
    assert len(httpserver.log) == 1


def test_429_retry_after_json_is_waited_for(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_json(
        {"message": "You are being rate limited.", "retry_after": 0.4, "global": False},
        status=429)
    httpserver.expect_request(PATH, method="POST").respond_with_response(Response(status=204))
    started = time.monotonic()
    with Webhook(_url(httpserver), "discord", policy=FAST) as hook:
        hook.post(Message("hi"))
        assert hook.requests == 2
    assert time.monotonic() - started >= 0.38  # the backoff alone would be 0.01 s


def test_429_retry_after_header_is_waited_for(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/hook", method="POST").respond_with_data(
        "rate limited", status=429, headers={"Retry-After": "1"})
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    started = time.monotonic()
    with Webhook(httpserver.url_for("/hook"), "json", policy=FAST) as hook:
        hook.post(Message("hi"))
    assert time.monotonic() - started >= 0.95


def test_retry_after_beyond_the_cap_gives_up(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        {"retry_after": 3600.0}, status=429)
    policy = WebhookPolicy(timeout=5.0, retries=3, backoff=0.0, max_retry_after=10.0)
    with Webhook(_url(httpserver), "discord", policy=policy) as hook, \
            pytest.raises(WebhookError) as info:
        hook.post(Message("hi"))
    assert info.value.status == 429 and "3600" in info.value.message
    assert len(httpserver.log) == 1


def test_5xx_is_retried_then_delivered(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_data("bad", status=502)
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_data("bad", status=503)
    httpserver.expect_request(PATH, method="POST").respond_with_response(Response(status=204))
    with Webhook(_url(httpserver), "discord", policy=FAST) as hook:
        hook.post(Message("hi"))
        assert hook.requests == 3


def test_persistent_5xx_fails_after_all_attempts(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("down", status=500)
    with Webhook(_url(httpserver), "discord", policy=FAST) as hook, \
            pytest.raises(WebhookError) as info:
        hook.post(Message("hi"))
    assert "after 4 attempt(s)" in info.value.message
    assert len(httpserver.log) == FAST.retries + 1


def test_4xx_is_final_and_names_no_secret(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        {"message": f"Unknown Webhook {TOKEN}", "code": 10015}, status=404)
    with Webhook(_url(httpserver), "discord", policy=FAST) as hook, \
            pytest.raises(WebhookError) as info:
        hook.post(Message("hi"))
    text = str(info.value)
    assert info.value.status == 404 and "Unknown Webhook" in text
    assert TOKEN not in text and PATH not in text
    assert len(httpserver.log) == 1


def test_connection_refused_is_retried_and_secret_free() -> None:
    url = f"http://127.0.0.1:9{PATH}"  # nothing listens on port 9
    with Webhook(url, "discord", policy=FAST) as hook, pytest.raises(WebhookError) as info:
        hook.post(Message("hi"))
    assert hook.requests == FAST.retries + 1
    assert TOKEN not in str(info.value) and "127.0.0.1" in str(info.value)


def test_no_log_line_contains_the_url(httpserver: HTTPServer,
                                      caplog: pytest.LogCaptureFixture,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_json(
        {"retry_after": 0.05}, status=429)
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_data("x", status=500)
    httpserver.expect_request(PATH, method="POST").respond_with_response(Response(status=204))
    caplog.set_level(logging.DEBUG)
    with Webhook(_url(httpserver), "discord", policy=FAST) as hook:
        hook.post(Message("hi", (Attachment("c.png", PNG),)))
        assert TOKEN not in repr(hook) and TOKEN not in hook.destination
    ours = [r for r in caplog.records if not r.name.startswith("werkzeug")]  # the server's own
    assert any(r.name == "httpx" for r in ours)  # httpx did log the requests ...
    text = "\n".join(r.getMessage() for r in ours) + capsys.readouterr().out
    assert TOKEN not in text and PATH not in text  # ... with the URL masked
    assert "retrying" in text


def test_kind_detection_and_secret_parts() -> None:
    assert detect_kind("https://discordapp.com/api/webhooks/1/x") == "discord"
    assert detect_kind("http://127.0.0.1:1/hook", "discord") == "discord"
    parts = secret_parts(f"https://discord.com{PATH}?thread_id=12345678901")
    assert TOKEN in parts and "12345678901" in parts


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(WebhookError, match="must start with https://"):
        Webhook("discord.com/api/webhooks/1/x")
