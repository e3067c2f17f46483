"""Covers: which rows of earlier segments a newer segment replaces.

A published table is an ordered list of immutable segments. A segment's *cover* is a list of
clauses ``{"symbols": [...] | None, "from": "YYYY-MM-DD" | None, "to": ... | None}``; a row of
an earlier segment is hidden when any later segment's cover matches its (symbol, date). A
clause with every field None covers everything (a base segment); an empty cover hides nothing
(an append).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

Clause = dict[str, Any]
Cover = list[Clause]

EVERYTHING: Cover = [{"symbols": None, "from": None, "to": None}]


def clause(symbols: Iterable[str] | None = None, start: dt.date | None = None,
           end: dt.date | None = None) -> Clause:
    """One cover clause (None = unbounded)."""
    return {"symbols": None if symbols is None else sorted({str(s) for s in symbols}),
            "from": None if start is None else start.isoformat(),
            "to": None if end is None else end.isoformat()}


def covers_everything(cover: Cover) -> bool:
    return any(c["symbols"] is None and c["from"] is None and c["to"] is None for c in cover)


def simplify(cover: Cover) -> Cover:
    """Merge clauses with the same date range (union of symbols) and drop duplicates."""
    if covers_everything(cover):
        return list(EVERYTHING)
    every: dict[tuple[str | None, str | None], None] = {}
    by_range: dict[tuple[str | None, str | None], set[str]] = {}
    for c in cover:
        key = (c["from"], c["to"])
        if c["symbols"] is None:
            every[key] = None
        else:
            by_range.setdefault(key, set()).update(c["symbols"])
    out: Cover = [{"symbols": None, "from": f, "to": t} for f, t in sorted(every, key=str)]
    out += [{"symbols": sorted(names), "from": f, "to": t}
            for (f, t), names in sorted(by_range.items(), key=lambda kv: str(kv[0]))
            if (f, t) not in every]
    return out


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def predicate(cover: Cover, date_column: str, symbol_column: str | None) -> str:
    """SQL boolean for the rows ``cover`` matches ('false' for an empty cover).

    Single-day clauses for every symbol become one ``IN`` list, which keeps the predicate of
    a year of daily deltas short.
    """
    if not cover:
        return "false"
    if covers_everything(cover):
        return "true"
    days = sorted({c["from"] for c in cover
                   if c["symbols"] is None and c["from"] is not None and c["from"] == c["to"]})
    terms = []
    if days:
        terms.append(f"{date_column} IN ({', '.join(f'DATE {_literal(d)}' for d in days)})")
    for c in cover:
        if c["symbols"] is None and c["from"] is not None and c["from"] == c["to"]:
            continue
        parts = []
        if c["symbols"] is not None:
            if symbol_column is None:
                raise ValueError(f"a symbol clause on a table without symbols: {c}")
            if not c["symbols"]:
                continue
            parts.append(f"{symbol_column} IN ({', '.join(map(_literal, c['symbols']))})")
        if c["from"] is not None:
            parts.append(f"{date_column} >= DATE {_literal(c['from'])}")
        if c["to"] is not None:
            parts.append(f"{date_column} <= DATE {_literal(c['to'])}")
        terms.append("(" + " AND ".join(parts) + ")" if parts else "true")
    return " OR ".join(terms) if terms else "false"


def size(cover: Cover) -> int:
    """Number of literal terms (a compaction trigger: long predicates slow every read)."""
    return sum(1 + len(c["symbols"] or ()) for c in cover)


def dumps(cover: Cover) -> str:
    return json.dumps(cover, separators=(",", ":"))


def loads(text: str | Sequence[Clause]) -> Cover:
    return list(text) if not isinstance(text, str) else list(json.loads(text))
