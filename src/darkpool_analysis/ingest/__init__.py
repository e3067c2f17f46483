"""Ingestion orchestration: fetch or read source files, validate, write through the store."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import duckdb

from darkpool_analysis.errors import DarkpoolError
from darkpool_analysis.store import Writer

log = logging.getLogger(__name__)


@contextlib.contextmanager
def failures_logged(writer: Writer, dataset: str, location: str | None,
                    partition_key: str | None = None) -> Iterator[None]:
    """Record a refused or failed ingest in ``ingest_log`` (outcome ``failed``, with the
    message), then re-raise. The data writes of the failed step have rolled back by then;
    the log row is its own small transaction, so the failure stays on record."""
    try:
        yield
    except DarkpoolError as exc:
        try:
            writer.log_outcome(dataset, partition_key, outcome="failed", location=location,
                               message=str(exc))
        except duckdb.Error as log_error:  # never hide the original error
            log.warning("could not record the failure in ingest_log: %s", log_error)
        raise
