"""The store: schema and migrations, the single writer, publication by generations, reads.

``from darkpool_analysis.store import ...`` is the API the rest of the package uses:
readers call :func:`connect_readonly` / :func:`read_frame`; writers use :func:`open_writer`
and the :class:`Writer` methods. See :mod:`.catalogue` for the on-disk layout.
"""

from darkpool_analysis.store.catalogue import (
    connect_readonly,
    current_generation,
    read_frame,
    store_dir_for,
)
from darkpool_analysis.store.info import describe_owed, is_synthetic, read_meta, read_owed
from darkpool_analysis.store.publication import describe_storage, disk_bytes
from darkpool_analysis.store.schema import (
    DELTA_TABLES,
    META_SYNTHETIC,
    META_SYNTHETIC_NOTE,
    METRIC_INPUTS,
    MIGRATIONS,
    PUBLISH_INTERVAL_S,
    SCHEMA_VERSION,
    migrate,
    run,
    schema_version,
    settle,
    table_exists,
    utcnow,
)
from darkpool_analysis.store.writer import (
    GC_GRACE_S,
    LogEntry,
    SourceFile,
    Writer,
    lock_path_for,
    master_path_for,
    open_writer,
)

__all__ = [
    "DELTA_TABLES",
    "GC_GRACE_S",
    "META_SYNTHETIC",
    "META_SYNTHETIC_NOTE",
    "METRIC_INPUTS",
    "MIGRATIONS",
    "PUBLISH_INTERVAL_S",
    "SCHEMA_VERSION",
    "LogEntry",
    "SourceFile",
    "Writer",
    "connect_readonly",
    "current_generation",
    "describe_owed",
    "describe_storage",
    "disk_bytes",
    "is_synthetic",
    "lock_path_for",
    "master_path_for",
    "migrate",
    "open_writer",
    "read_frame",
    "read_meta",
    "read_owed",
    "run",
    "schema_version",
    "settle",
    "store_dir_for",
    "table_exists",
    "utcnow",
]
