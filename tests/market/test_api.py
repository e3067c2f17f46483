"""The library API the web page and notebooks build on: names, docstrings, JSON-able attrs."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import pandas as pd
from market_db import metrics_rows, sessions, write_metrics

from darkpool_analysis import market

DAYS = sessions("2024-03-04", 6)

#: The public API: a change here is a change for the web page and every notebook.
PUBLIC = {"ALL", "BREADTH_COLUMNS", "CONTEXT_COLUMNS", "FLAGS", "INDEX_COLUMNS",
          "TABLE_COLUMNS", "Membership", "Universe", "breadth", "compute_breadth", "ends",
          "get_universe", "index", "load_membership", "load_universes", "normalise_ticker",
          "overlay", "parse_membership", "proxy_close", "scan", "static_membership",
          "summarise", "table"}


def test_public_names_are_pinned() -> None:
    assert set(market.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(market, name) is not None


def test_main_functions_have_numpydoc_sections() -> None:
    for func in (market.index, market.scan, market.table, market.overlay, market.breadth):
        doc = inspect.getdoc(func) or ""
        for section in ("Parameters", "Returns", "Examples"):
            assert f"{section}\n----" in doc, (func.__name__, section)


def test_attrs_are_json_and_survive_parquet(db_path: Path, tmp_path: Path,
                                            clean_env: Path) -> None:
    (clean_env / "darkpool.toml").write_text('[universes]\npair = ["A", "B"]\n')
    rows = [{"symbol": s, "date": d, "short_volume": 40.0 + i, "total_volume": 100.0,
             "close": 10.0 + i, "volume": 1e4, "short_buy_sell_ratio": 0.7,
             "short_buy_sell_ratio_z": 0.1 * i, "accumulation_score_display": 50.0 + i}
            for s in ("A", "B") for i, d in enumerate(DAYS)]
    write_metrics(db_path, metrics_rows(rows), synthetic=True)
    frames = {
        "index": market.index(["A", "B"], DAYS[0], DAYS[-1], db_path=db_path),
        "scan": market.scan(DAYS[-1], db_path=db_path),
        "table": market.table(DAYS[-1], "pair", db_path=db_path),
        "overlay": market.overlay("pair", DAYS[0], DAYS[-1], db_path=db_path),
    }
    frames["breadth"] = market.compute_breadth(frames["overlay"])
    for name, frame in frames.items():
        assert frame.attrs["synthetic"] is True and frame.attrs["label"], name
        json.dumps(frame.attrs)
        path = tmp_path / f"{name}.parquet"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            frame.to_parquet(path)
        assert pd.read_parquet(path).attrs == frame.attrs, name
