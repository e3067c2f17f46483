"""Post alert messages to chat webhooks: Discord (JSON + multipart file upload) and generic JSON.

* **Discord** (``discord.com/api/webhooks/<id>/<token>``): a message without files is a JSON body
  ``{"content": ...}``; with files it is ``multipart/form-data`` with a ``payload_json`` part
  (``content`` plus ``attachments: [{"id": i, "filename": ...}]``) and one ``files[i]`` part per
  file, as Discord's "Execute Webhook" documents. Mentions are disabled (``allowed_mentions``).
* **Generic JSON** (Slack incoming webhooks and look-alikes): ``{"text": ...}``. Such webhooks
  cannot take files, so the caller names the saved chart files in the text.

Delivery is retried: HTTP 429 waits for the server's ``retry_after`` (JSON body, seconds, as
Discord sends it) or ``Retry-After`` header (as Slack sends it), 5xx answers and transport
errors back off exponentially (tenacity); any other 4xx is final.

The webhook URL is a secret (whoever holds it can post to the channel): it is held as a
:class:`pydantic.SecretStr`, never logged and never put in an error message. While a request is
in flight, a logging filter masks the URL and its token in everything ``httpx``/``httpcore``
log (``httpx`` logs every request URL at INFO), and errors name only the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import tenacity
from pydantic import SecretStr

from darkpool_analysis.errors import DarkpoolError
from darkpool_analysis.sources.http import USER_AGENT, parse_retry_after

log = logging.getLogger(__name__)

WebhookKind = Literal["discord", "json"]
KindChoice = Literal["auto", "discord", "json"]
#: Discord's limit on a message's ``content``.
DISCORD_CONTENT_LIMIT = 2000
#: Discord accepts at most this many files per message.
DISCORD_MAX_FILES = 10
#: Loggers whose records may carry a request URL (masked while posting).
HTTP_LOGGERS = ("httpx", "httpcore")
_DISCORD_HOSTS = ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")
MASK = "***"


class WebhookError(DarkpoolError):
    """A message could not be delivered (the text never contains the webhook URL)."""

    def __init__(self, message: str, *, status: int | None = None,
                 hint: str | None = None) -> None:
        self.status = status
        super().__init__(message, hint=hint)


@dataclass(frozen=True)
class Attachment:
    """One file sent with a message (a chart PNG)."""

    filename: str
    content: bytes
    content_type: str = "image/png"


@dataclass(frozen=True)
class Message:
    """One chat message: its text and the files to attach."""

    text: str
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class WebhookPolicy:
    """Timeout and retry settings of webhook delivery.

    ``retries`` extra attempts after the first; the wait before retry ``n`` is
    ``backoff * 2 ** (n - 1)`` capped at ``max_backoff``, unless a 429 said how long to wait
    (capped at ``max_retry_after``: a longer wait is given up on with a clear error).
    """

    timeout: float = 30.0
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_retry_after: float = 300.0


def detect_kind(url: str, kind: KindChoice = "auto") -> WebhookKind:
    """``discord`` for Discord hosts (or when asked), else ``json``.

    Examples
    --------
    >>> detect_kind("https://discord.com/api/webhooks/1/abc")
    'discord'
    >>> detect_kind("https://hooks.slack.com/services/T/B/x")
    'json'
    """
    if kind != "auto":
        return kind
    host = (httpx.URL(url).host or "").lower()
    return "discord" if host in _DISCORD_HOSTS else "json"


def secret_parts(url: str) -> list[str]:
    """The strings that must never be shown: the URL (with and without query), its path and
    every long path segment or query value (tokens), longest first."""
    parsed = httpx.URL(url)
    parts = {url, str(parsed.copy_with(query=None, fragment=None)), parsed.path}
    parts.update(segment for segment in parsed.path.split("/") if len(segment) >= 8)
    parts.update(value for _, value in parsed.params.multi_items() if len(value) >= 8)
    return sorted((part for part in parts if part and part != "/"), key=len, reverse=True)


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class _MaskingFilter(logging.Filter):
    """Rewrites log records that contain a secret (the message is formatted first)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = mask(text, self.secrets)
        if masked != text:
            record.msg, record.args = masked, None
        return True


@contextlib.contextmanager
def masked_http_logs(secrets: Sequence[str]) -> Iterator[None]:
    """Mask ``secrets`` in every record the HTTP libraries log inside the block."""
    masking = _MaskingFilter(secrets)
    loggers = [logging.getLogger(name) for name in HTTP_LOGGERS]
    for logger in loggers:
        logger.addFilter(masking)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(masking)


class _Retryable(Exception):
    """A 429 / 5xx answer or a transport error: worth another attempt."""

    def __init__(self, description: str, retry_after: float | None = None,
                 status: int | None = None) -> None:
        self.description = description
        self.retry_after = retry_after
        self.status = status
        super().__init__(description)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """How long a 429 asks to wait: Discord's JSON ``retry_after`` (seconds) or the
    ``Retry-After`` header; None when neither is present."""
    try:
        payload = response.json()
    except (UnicodeDecodeError, json.JSONDecodeError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("retry_after"), int | float):
        return max(0.0, float(payload["retry_after"]))
    return parse_retry_after(response.headers.get("Retry-After"))


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def discord_request(message: Message) -> dict[str, Any]:
    """The ``httpx`` keyword arguments of a Discord "Execute Webhook" request (pure)."""
    files = message.attachments[:DISCORD_MAX_FILES]
    payload: dict[str, Any] = {"content": _truncate(message.text, DISCORD_CONTENT_LIMIT),
                               "allowed_mentions": {"parse": []}}
    if not files:
        return {"json": payload}
    payload["attachments"] = [{"id": index, "filename": item.filename}
                              for index, item in enumerate(files)]
    return {"data": {"payload_json": json.dumps(payload)},
            "files": [(f"files[{index}]", (item.filename, item.content, item.content_type))
                      for index, item in enumerate(files)]}


def json_request(message: Message) -> dict[str, Any]:
    """The ``httpx`` keyword arguments of a generic (Slack-compatible) JSON webhook (pure)."""
    return {"json": {"text": message.text}}


class Webhook:
    """One webhook destination. Use as a context manager (it owns its HTTP client unless one
    is passed in)."""

    def __init__(self, url: SecretStr | str, kind: KindChoice = "auto", *,
                 policy: WebhookPolicy | None = None,
                 client: httpx.Client | None = None) -> None:
        secret = url if isinstance(url, SecretStr) else SecretStr(url)
        value = secret.get_secret_value().strip()
        if not value.startswith(("http://", "https://")):
            raise WebhookError("the webhook URL must start with https:// (or http://)",
                               hint="set DARKPOOL_WEBHOOK_URL to the URL your chat service "
                                    "gave you")
        self._url = SecretStr(value)
        self.kind: WebhookKind = detect_kind(value, kind)
        self.policy = policy or WebhookPolicy()
        self._secrets = secret_parts(value)
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=httpx.Timeout(self.policy.timeout),
                                              headers={"User-Agent": USER_AGENT})
        self.requests = 0

    def __enter__(self) -> Webhook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client when this object created it."""
        if self._own_client:
            self._client.close()

    def __repr__(self) -> str:
        return f"Webhook({self.describe()})"

    @property
    def host(self) -> str:
        """The webhook's host (safe to show)."""
        return httpx.URL(self._url.get_secret_value()).host or "?"

    @property
    def destination(self) -> str:
        """``kind:fingerprint``: identifies the destination in the alerts table without
        revealing it (12 hex digits of the URL's sha256)."""
        digest = hashlib.sha256(self._url.get_secret_value().encode()).hexdigest()[:12]
        return f"{self.kind}:{digest}"

    def describe(self) -> str:
        """Human-readable and secret-free: ``discord webhook on discord.com``."""
        return f"{self.kind} webhook on {self.host}"

    def _request_kwargs(self, message: Message) -> dict[str, Any]:
        if self.kind == "discord":
            return discord_request(message)
        return json_request(message)

    def _send_once(self, kwargs: dict[str, Any]) -> httpx.Response:
        self.requests += 1
        try:
            response = self._client.post(self._url.get_secret_value(), **kwargs)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.policy.timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {mask(str(exc), self._secrets)}") from exc
        if response.status_code == 429:
            wait = retry_after_seconds(response)
            raise _Retryable("HTTP 429 (rate limited)", wait, 429)
        if response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}", None, response.status_code)
        return response

    def _wait(self, state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, _Retryable) and error.retry_after is not None:
            if error.retry_after > self.policy.max_retry_after:
                raise WebhookError(
                    f"{self.describe()} asked to wait {error.retry_after:.0f}s (rate limited), "
                    f"more than the {self.policy.max_retry_after:.0f}s allowed", status=429,
                    hint="the alert was not sent; the next run retries it")
            return error.retry_after
        return min(self.policy.backoff * 2 ** (state.attempt_number - 1),
                   self.policy.max_backoff)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        wait = state.next_action.sleep if state.next_action else 0.0
        what = error.description if isinstance(error, _Retryable) else repr(error)
        log.warning("%s: %s; retrying in %.2fs (attempt %d)", self.describe(), what, wait,
                    state.attempt_number)

    def post(self, message: Message) -> httpx.Response:
        """Deliver ``message`` (with retries); raise :class:`WebhookError` when it cannot be.

        Returns the final 2xx response (Discord answers 204, or 200 with ``?wait=true``).
        """
        kwargs = self._request_kwargs(message)
        attempts = self.policy.retries + 1
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=tenacity.stop_after_attempt(attempts),
            wait=self._wait,
            before_sleep=self._log_retry,
            reraise=True,
        )
        with masked_http_logs(self._secrets):
            try:
                response = retrying(self._send_once, kwargs)
            except _Retryable as exc:
                raise WebhookError(f"{self.describe()}: {exc.description} after {attempts} "
                                   "attempt(s)", status=exc.status,
                                   hint="the alert was not sent; the next run retries it"
                                   ) from None
        if response.status_code >= 300:
            raise self._refused(response)
        log.info("posted to %s (HTTP %d)", self.describe(), response.status_code)
        return response

    def _refused(self, response: httpx.Response) -> WebhookError:
        detail = re.sub(r"\s+", " ", response.text)[:200].strip()
        hint = ("check DARKPOOL_WEBHOOK_URL: the webhook may have been deleted or the URL is "
                "incomplete" if response.status_code in (401, 403, 404) else None)
        return WebhookError(f"{self.describe()} refused the message: HTTP "
                            f"{response.status_code} {mask(detail, self._secrets)!r}",
                            status=response.status_code, hint=hint)


__all__ = [
    "Attachment",
    "Message",
    "Webhook",
    "WebhookError",
    "WebhookKind",
    "WebhookPolicy",
    "detect_kind",
    "discord_request",
    "json_request",
    "mask",
    "masked_http_logs",
    "retry_after_seconds",
    "secret_parts",
]
