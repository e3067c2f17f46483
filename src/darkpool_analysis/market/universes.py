"""Named ticker groups ("universes"): a TOML file shipped with the package, overridable by the user.

Layout (the packaged ``universes.toml``, ``darkpool.toml`` and the ``DARKPOOL_UNIVERSES`` file
all use it)::

    [universes.mega_caps]
    description = "US mega caps"
    tickers = ["AAPL", "MSFT", "BRK.B"]          # any spelling: BRK.B, BRK-B, BRK/B

    [universes.original]
    groups = ["sector_etfs", "mega_caps"]        # composed of other groups (table sections)

A plain list is short for ``tickers``: ``[universes] my_picks = ["GME", "AMC"]``.
Precedence: ``DARKPOOL_UNIVERSES`` (a path) > ``darkpool.toml`` (working folder, or the file
named by ``DARKPOOL_CONFIG``) > the packaged file; a user group replaces a packaged group of
the same name (and the groups that include it see the user's version). ``all`` is reserved:
every symbol in the database, resolved at query time.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from darkpool_analysis.errors import ConfigError, DataFormatError

#: The reserved universe: every symbol in the database.
ALL: Final = "all"
#: Environment variable naming a user universes file.
UNIVERSES_ENV: Final = "DARKPOOL_UNIVERSES"
#: The packaged file (inside ``darkpool_analysis.market``).
PACKAGED_FILE: Final = "universes.toml"

_NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,63}$")
_TICKER_RE = re.compile(r"^[A-Z0-9][A-Z0-9.]{0,19}$")
_KEYS = frozenset({"description", "tickers", "groups"})


@dataclass(frozen=True)
class Universe:
    """One named group of tickers.

    Attributes
    ----------
    name
        Lower-case name (``mega_caps``).
    description
        One line for listings and table captions.
    sections
        ``(section name, normalised tickers)`` pairs: one section for a plain group, one per
        sub-group for a composed group (plus the group's own ``tickers`` under its own name).
        ``darkpool table`` draws one block per section.
    source
        The file the definition came from (``database`` for :data:`ALL`).
    """

    name: str
    description: str
    sections: tuple[tuple[str, tuple[str, ...]], ...]
    source: str

    @property
    def is_all(self) -> bool:
        """True for the reserved ``all`` universe (every symbol in the database)."""
        return self.name == ALL

    @property
    def tickers(self) -> tuple[str, ...]:
        """Every member once, in section order (empty for ``all``: resolved by the query)."""
        return tuple(dict.fromkeys(t for _, tickers in self.sections for t in tickers))


ALL_UNIVERSE = Universe(ALL, "every symbol in the database", (), "database")


def normalise_ticker(ticker: str, *, source: str = "ticker", line: int | None = None) -> str:
    """A ticker in any feed's spelling (``BRK.B``, ``BRK-B``, ``BRK/B``, ``brk.b``) -> the
    normalised form the database uses (``BRK.B``); a clear error for anything else.

    Examples
    --------
    >>> [normalise_ticker(t) for t in ("BRK/B", "brk-b", "BRK.B", "ABRpD")]
    ['BRK.B', 'BRK.B', 'BRK.B', 'ABR.PR.D']
    """
    from darkpool_analysis.sandbox import normalise_ticker as _normalise

    text = str(ticker).strip()
    try:
        symbol = _normalise(text)
    except ValueError:
        symbol = ""
    if not _TICKER_RE.fullmatch(symbol):
        raise DataFormatError(f"{ticker!r} is not a ticker", source=source, line=line,
                              field="ticker",
                              hint="letters and digits with an optional class suffix, "
                                   "e.g. AAPL, BRK.B, BRK-B or BRK/B")
    return symbol


def _line_of(text: str, name: str) -> int | None:
    """1-based line where universe ``name`` is defined in ``text`` (for error messages)."""
    pattern = re.compile(
        rf"^\s*(\[\s*universes\s*\.\s*\"?{re.escape(name)}\"?\s*\]|\"?{re.escape(name)}\"?\s*=)",
        re.IGNORECASE)
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


@dataclass(frozen=True)
class _Entry:
    name: str
    description: str
    tickers: tuple[str, ...]
    groups: tuple[str, ...]
    source: str
    line: int | None


def _string_list(value: Any, *, what: str, source: str, line: int | None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataFormatError(f"{what} must be a list of non-empty strings", source=source,
                              line=line, field=what.rsplit(" ", 1)[-1])
    return [v.strip() for v in value]


def parse_universes(text: str, source: str, *, required: bool = True) -> dict[str, _Entry]:
    """Parse the ``[universes]`` table of one TOML document (pure; raises DataFormatError)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = (int(match.group(1)) if match else
                max(len(text.splitlines()), 1) if "end of document" in str(exc) else None)
        raise DataFormatError(f"not valid TOML: {exc}", source=source, line=line) from exc
    table = document.get("universes")
    if table is None:
        if required:
            raise DataFormatError("no universes table", source=source,
                                  hint='define groups like universes.mine.tickers = ["AAPL", '
                                       '"BRK.B"]')
        return {}
    if not isinstance(table, dict):
        raise DataFormatError("'universes' must be a table", source=source,
                              line=_line_of(text, "universes"), field="universes")
    entries: dict[str, _Entry] = {}
    for raw_name, value in table.items():
        name = str(raw_name).strip().lower()
        line = _line_of(text, str(raw_name))
        if not _NAME_RE.fullmatch(name):
            raise DataFormatError(f"bad universe name {raw_name!r}", source=source, line=line,
                                  hint="use letters, digits, '_', '-' or '.'")
        if name == ALL:
            raise DataFormatError("'all' is reserved (every symbol in the database)",
                                  source=source, line=line, hint="pick another name")
        if name in entries:
            raise DataFormatError(f"universe {name!r} is defined twice", source=source,
                                  line=line)
        if isinstance(value, list):
            value = {"tickers": value}
        if not isinstance(value, dict):
            raise DataFormatError(f"universe {name!r} must be a table or a list of tickers",
                                  source=source, line=line)
        unknown = sorted(set(value) - _KEYS)
        if unknown:
            raise DataFormatError(f"universe {name!r}: unknown key(s) {', '.join(unknown)}",
                                  source=source, line=line, field=unknown[0],
                                  hint=f"valid keys: {', '.join(sorted(_KEYS))}")
        description = value.get("description", "")
        if not isinstance(description, str):
            raise DataFormatError(f"universe {name!r}: description must be a string",
                                  source=source, line=line, field="description")
        tickers = _string_list(value.get("tickers", []), what=f"universe {name!r} tickers",
                               source=source, line=line)
        groups = _string_list(value.get("groups", []), what=f"universe {name!r} groups",
                              source=source, line=line)
        if not tickers and not groups:
            raise DataFormatError(f"universe {name!r} has no tickers and no groups",
                                  source=source, line=line)
        normalised = tuple(dict.fromkeys(normalise_ticker(t, source=source, line=line)
                                         for t in tickers))
        entries[name] = _Entry(name, description.strip(), normalised,
                               tuple(g.strip().lower() for g in groups), source, line)
    return entries


def _packaged_text() -> str:
    return (resources.files("darkpool_analysis.market") / PACKAGED_FILE).read_text("utf-8")


def _read_file(path: Path, *, required: bool) -> dict[str, _Entry]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read universes file {path}: {exc.strerror or exc}",
                          hint=f"fix or unset {UNIVERSES_ENV}") from exc
    return parse_universes(text, str(path), required=required)


def user_sources() -> list[tuple[Path, bool]]:
    """The user files that are read, lowest precedence first, each with whether it must hold
    a ``[universes]`` table: ``darkpool.toml`` (or ``DARKPOOL_CONFIG``) when it exists (it
    may hold only settings), then the ``DARKPOOL_UNIVERSES`` file when the variable is set."""
    sources: list[tuple[Path, bool]] = []
    config = Path(os.environ.get("DARKPOOL_CONFIG", "darkpool.toml"))
    if config.is_file():
        sources.append((config, False))
    override = os.environ.get(UNIVERSES_ENV, "").strip()
    if override:
        sources.append((Path(override).expanduser(), True))
    return sources


def _resolve(entries: Mapping[str, _Entry]) -> dict[str, Universe]:
    resolved: dict[str, Universe] = {}

    def tickers_of(name: str, trail: tuple[str, ...]) -> tuple[str, ...]:
        return resolve(name, trail).tickers

    def resolve(name: str, trail: tuple[str, ...]) -> Universe:
        if name in resolved:
            return resolved[name]
        entry = entries[name]
        sections: list[tuple[str, tuple[str, ...]]] = []
        for group in entry.groups:
            if group == ALL:
                raise DataFormatError(f"universe {name!r} cannot include 'all'",
                                      source=entry.source, line=entry.line, field="groups")
            if group not in entries:
                raise DataFormatError(
                    f"universe {name!r} includes unknown group {group!r}",
                    source=entry.source, line=entry.line, field="groups",
                    hint=f"known groups: {', '.join(sorted(entries))}")
            if group in trail or group == name:
                cycle = " -> ".join((*trail, name, group))
                raise DataFormatError(f"universe groups form a cycle: {cycle}",
                                      source=entry.source, line=entry.line, field="groups")
            sections.append((group, tickers_of(group, (*trail, name))))
        if entry.tickers:
            sections.append((name, entry.tickers))
        universe = Universe(name, entry.description, tuple(sections), entry.source)
        resolved[name] = universe
        return universe

    for name in entries:
        resolve(name, ())
    return {ALL: ALL_UNIVERSE, **dict(sorted(resolved.items()))}


def load_universes(path: Path | None = None) -> dict[str, Universe]:
    """Every universe by name: the packaged groups, then ``darkpool.toml``'s ``[universes]``,
    then the ``DARKPOOL_UNIVERSES`` file (or ``path`` instead of the user files), plus ``all``.

    Raises
    ------
    DataFormatError
        A definition is malformed; the message names the file, the line and the field.

    Examples
    --------
    >>> universes = load_universes()
    >>> "BRK.B" in universes["mega_caps"].tickers, universes["all"].is_all
    (True, True)
    """
    entries = parse_universes(_packaged_text(), f"darkpool_analysis/market/{PACKAGED_FILE}")
    files = [(Path(path), True)] if path is not None else user_sources()
    for file, required in files:
        entries.update(_read_file(file, required=required))
    return _resolve(entries)


def get_universe(name: str, universes: Mapping[str, Universe] | None = None) -> Universe:
    """Look a universe up by name (case-insensitive); an unknown name lists the valid ones."""
    pool = universes if universes is not None else load_universes()
    key = name.strip().lower()
    if key not in pool:
        raise ConfigError(f"unknown universe {name!r}; valid: {', '.join(pool)}",
                          hint=f'define it in darkpool.toml or in the file named by '
                               f'{UNIVERSES_ENV}, e.g. universes.{key}.tickers = ["AAPL"]')
    return pool[key]


__all__ = ["ALL", "ALL_UNIVERSE", "UNIVERSES_ENV", "Universe", "get_universe",
           "load_universes", "normalise_ticker", "parse_universes", "user_sources"]
