"""``SandboxService``'s caches against a publication in progress (real store, no server)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import metrics_frame
from darkpool_analysis import store
from darkpool_analysis.config import load_config
from darkpool_analysis.web.service import SandboxService


def _last_metrics_date(info: dict) -> str:
    return next(s["last"] for s in info["sources"] if s["table"] == "daily_metrics")


def test_database_info_cached_mid_publication_is_refreshed_when_current_moves(
        tmp_path: Path) -> None:
    """A publication renames the public file before it moves ``CURRENT``: a reader in
    between opens the previous generation. What it caches must not outlive that moment
    (keyed by the public file's identity it stuck until the next publication)."""
    db = tmp_path / "darkpool.duckdb"
    with store.open_writer(db) as writer:
        writer.replace_partition("daily_metrics", metrics_frame("NKE", "2025-06-02",
                                                                "2025-08-29", seed=1),
                                 where="true", params=[])
    store_dir = store.store_dir_for(db)
    previous = store.current_generation(store_dir)
    with store.open_writer(db) as writer:
        writer.replace_partition("daily_metrics", metrics_frame("NKE", "2025-06-02",
                                                                "2025-10-31", seed=1),
                                 where="true", params=[])
    published = store.current_generation(store_dir)
    assert previous is not None and published is not None and published > previous

    service = SandboxService(load_config(db_path=db, output_dir=tmp_path / "out"))
    # The moment between the two steps: a new public file, CURRENT still the previous one.
    (store_dir / "CURRENT").write_text(f"{previous}\n")
    shutil.copy2(db, tmp_path / "public.copy")
    os.replace(tmp_path / "public.copy", db)
    assert _last_metrics_date(service.database()) == "2025-08-29"
    (store_dir / "CURRENT").write_text(f"{published}\n")
    assert _last_metrics_date(service.database()) == "2025-10-31"
