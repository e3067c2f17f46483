"""The one HTTP client factory and retry policy every downloader shares.

Retried with exponential backoff: read/write/pool timeouts and transport errors of a host that
was reached, every 5xx and 429 (a ``Retry-After`` header, in seconds or as an HTTP date,
overrides the backoff). A failure to connect at all (DNS failure, connection refused, network
unreachable, connect timeout) is not retried: it raises :class:`HostUnreachableError` at once,
so an offline run stops after one attempt instead of retrying every file. Everything
else (200, 3xx after redirects, other 4xx) is returned to the caller, which knows what a 403 or
404 means for its source. Secrets in query strings (``apiKey`` ...) never reach a log line or
an error message: :func:`redact` masks them.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

from darkpool_analysis import __version__
from darkpool_analysis.config import Settings
from darkpool_analysis.errors import FetchError

log = logging.getLogger(__name__)

#: Query parameters whose values are secrets and are masked in logs and errors.
SECRET_PARAMS = frozenset({"apikey", "api_key", "key", "token", "access_token", "secret"})

USER_AGENT = f"darkpool-analysis/{__version__} (+https://github.com/; research use)"


@dataclass(frozen=True)
class HttpPolicy:
    """Timeout, retry and concurrency settings (from ``Settings.http_*``).

    ``retries`` is the number of *extra* attempts after the first; the wait before retry ``n``
    (1-based) is ``backoff * 2 ** (n - 1)`` seconds, capped at ``max_backoff``, unless the
    server sent ``Retry-After`` (capped at ``max_retry_after``).
    """

    timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.5
    concurrency: int = 8
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpPolicy:
        return cls(timeout=settings.http_timeout, retries=settings.http_retries,
                   backoff=settings.http_backoff, concurrency=settings.http_concurrency)


class HostUnreachableError(FetchError):
    """The host could not be connected to at all (offline, DNS failure, refused, firewalled):
    retrying this request or the next file will not help."""


#: Transport failures that show the host was never reached (not retried).
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, _UNREACHABLE):
        return False
    return isinstance(error, RetryableStatusError | httpx.TimeoutException
                      | httpx.TransportError)


class RetryableStatusError(Exception):
    """A 5xx or 429 answer: worth another attempt (internal to the retry loop)."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.url = redact(response.request.url)
        self.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        super().__init__(f"HTTP {self.status} from {self.url}")


def redact(url: httpx.URL | str) -> str:
    """``url`` as text with secret query parameter values replaced by ``***``."""
    parsed = httpx.URL(str(url))
    if not parsed.query:
        return str(parsed)
    params = [(name, "***" if name.lower() in SECRET_PARAMS else value)
              for name, value in parsed.params.multi_items()]
    return str(parsed.copy_with(params=params))


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None.

    Examples
    --------
    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after(None) is None
    True
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    reference = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - reference).total_seconds())


def make_client(policy: HttpPolicy | Settings, *, headers: dict[str, str] | None = None,
                transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """A thread-safe ``httpx.Client`` with the policy's timeout and a pool sized for it.

    Close it (``with make_client(...) as client:``) when done.
    """
    if isinstance(policy, Settings):
        policy = HttpPolicy.from_settings(policy)
    limits = httpx.Limits(max_connections=policy.concurrency,
                          max_keepalive_connections=policy.concurrency)
    return httpx.Client(timeout=httpx.Timeout(policy.timeout), limits=limits,
                        headers={"User-Agent": USER_AGENT, **(headers or {})},
                        follow_redirects=True, transport=transport)


class _BackoffWait(tenacity.wait.wait_base):
    """Exponential backoff, or the server's ``Retry-After`` when it sent one."""

    def __init__(self, policy: HttpPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, RetryableStatusError) and error.retry_after is not None:
            return min(error.retry_after, self.policy.max_retry_after)
        return min(self.policy.backoff * 2 ** (retry_state.attempt_number - 1),
                   self.policy.max_backoff)


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
    log.warning("%s; retrying in %.2fs (attempt %d failed)", _describe(error), wait,
                retry_state.attempt_number)


def _describe(error: BaseException | None) -> str:
    if isinstance(error, RetryableStatusError):
        return str(error)
    if isinstance(error, httpx.TimeoutException):
        return f"timed out: {redact(error.request.url)}"
    if isinstance(error, httpx.TransportError):
        return f"{type(error).__name__} for {redact(error.request.url)}: {error}"
    return repr(error)


def retrying(policy: HttpPolicy) -> tenacity.Retrying:
    """The tenacity policy: what to retry, how long to wait, when to give up (re-raises)."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(_is_retryable),
        stop=tenacity.stop_after_attempt(policy.retries + 1),
        wait=_BackoffWait(policy),
        before_sleep=_log_retry,
        reraise=True,
    )


def request(client: httpx.Client, method: str, url: str, *, policy: HttpPolicy,
            **kwargs: Any) -> httpx.Response:
    """Send one request with retries; return the final non-retryable response.

    Raises :class:`HostUnreachableError` (a :class:`FetchError`) at the first failure to
    connect, :class:`FetchError` when every attempt timed out or answered 5xx/429. The caller
    decides what any other status means.
    """
    attempts = policy.retries + 1
    try:
        for attempt in retrying(policy):
            with attempt:
                response = client.request(method, url, **kwargs)
                if response.status_code >= 500 or response.status_code == 429:
                    raise RetryableStatusError(response)
                return response
    except RetryableStatusError as exc:
        raise FetchError(f"{exc} after {attempts} attempt(s)", url=exc.url,
                         status=exc.status) from exc
    except _UNREACHABLE as exc:
        host = httpx.URL(url).host
        raise HostUnreachableError(
            f"cannot reach {host}: {type(exc).__name__}: {exc} ({redact(url)})",
            url=redact(url), hint="check the network connection and the source URL") from exc
    except httpx.TimeoutException as exc:
        raise FetchError(f"timed out after {attempts} attempt(s) "
                         f"(timeout {policy.timeout:g}s): {redact(url)}", url=redact(url),
                         hint="raise DARKPOOL_HTTP_TIMEOUT or retry later") from exc
    except httpx.TransportError as exc:
        raise FetchError(f"{type(exc).__name__} after {attempts} attempt(s): {redact(url)}: "
                         f"{exc}", url=redact(url),
                         hint="check the network connection and the source URL") from exc
    raise AssertionError("unreachable: tenacity either returns or re-raises")


def get(client: httpx.Client, url: str, *, policy: HttpPolicy, **kwargs: Any) -> httpx.Response:
    """``GET`` with the shared retry policy (see :func:`request`)."""
    return request(client, "GET", url, policy=policy, **kwargs)
