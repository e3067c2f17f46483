"""The market view: a DIX-style dark index, a daily scanner, grouped tables, overlay and breadth.

Every function reads the published database read-only and returns pandas frames, so a
notebook (or the web page) uses exactly what the ``darkpool index|scan|table|overlay``
commands print and draw. Each frame's ``attrs`` carry what produced it, including
``synthetic`` and ``label`` (:data:`darkpool_analysis.synthetic.SYNTHETIC_LABEL` for a
``darkpool demo`` database, else ``None``): outputs made from a synthetic database say so.
``attrs`` hold only JSON types (dates as ISO strings), so ``to_parquet`` keeps them.

>>> from darkpool_analysis import market
>>> dix = market.index("spx_members.csv", "2021-01-04", "2021-02-12")     # doctest: +SKIP
>>> leaders = market.scan("2021-01-27", by="finra_buy_volume_z", top=10)  # doctest: +SKIP
>>> rows = market.table("2021-01-27", "mega_caps")                        # doctest: +SKIP
>>> lines = market.overlay("speculative", "2020-12-01", "2021-02-12")     # doctest: +SKIP
>>> market.compute_breadth(lines)                                         # doctest: +SKIP

FINRA short volume is a proxy for dealer-filled customer buying ("Short is Long"), not
observed buying and not short interest; FINRA total volume is off-exchange volume only.
"""

from __future__ import annotations

from darkpool_analysis.market.dark_index import INDEX_COLUMNS, index, proxy_close
from darkpool_analysis.market.groups import (
    BREADTH_COLUMNS,
    TABLE_COLUMNS,
    breadth,
    compute_breadth,
    overlay,
    summarise,
    table,
)
from darkpool_analysis.market.membership import (
    Membership,
    load_membership,
    parse_membership,
    static_membership,
)
from darkpool_analysis.market.scanner import CONTEXT_COLUMNS, FLAGS, ends, scan
from darkpool_analysis.market.universes import (
    ALL,
    Universe,
    get_universe,
    load_universes,
    normalise_ticker,
)

__all__ = [
    "ALL", "BREADTH_COLUMNS", "CONTEXT_COLUMNS", "FLAGS", "INDEX_COLUMNS", "TABLE_COLUMNS",
    "Membership", "Universe", "breadth", "compute_breadth", "ends", "get_universe", "index",
    "load_membership", "load_universes", "normalise_ticker", "overlay", "parse_membership",
    "proxy_close", "scan", "static_membership", "summarise", "table",
]
