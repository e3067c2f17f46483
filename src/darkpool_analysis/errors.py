"""Typed errors that carry context (file, line, field, date) and say how to fix the problem."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class DarkpoolError(Exception):
    """Base class of every error this package raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nHint: {hint}")


class ConfigError(DarkpoolError):
    """A setting is missing or invalid; the message names the environment variable."""


class DataFormatError(DarkpoolError):
    """An input file or response does not match the published format.

    ``source`` is the file name or URL, ``line`` the 1-based line number (when known),
    ``field`` the offending column.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        where = source if line is None else f"{source}, line {line}"
        if field is not None:
            where = f"{where}, field {field!r}"
        super().__init__(f"{where}: {message}", hint=hint)


class FetchError(DarkpoolError):
    """A download failed after retries (network error, unexpected status)."""

    def __init__(self, message: str, *, url: str, status: int | None = None,
                 hint: str | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message, hint=hint)


class NotPublishedError(DarkpoolError):
    """The source has no file for this date (holiday, weekend, or not published yet)."""


class StoreError(DarkpoolError):
    """The database is missing, locked for too long, or has an unexpected schema."""


class NoDataError(DarkpoolError):
    """A query matched no rows; the message says what coverage does exist."""


@contextlib.contextmanager
def ctrl_c_during_queries() -> Iterator[None]:
    """Re-raise a Ctrl-C that arrived while DuckDB ran a query as :class:`KeyboardInterrupt`.

    DuckDB's Python client handles SIGINT itself during a query: it cancels the query and
    raises ``RuntimeError('Query interrupted')``, so without this a Ctrl-C at that moment
    would look like a failure (exit 1) instead of an interruption (exit 130).
    """
    try:
        yield
    except RuntimeError as exc:
        if str(exc) != "Query interrupted":
            raise
        raise KeyboardInterrupt from exc
