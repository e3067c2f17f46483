"""Layout limits every source enforces: symbol spelling, text field sizes, plausible magnitudes.

The published layouts never come close to these bounds (the largest Reg SHO day of one
symbol in the real files is 1.4e9 shares, the longest symbol ``NSPR/WS/B``, the longest OTC
issue name 201 characters); a value beyond them is corruption or an attack, not data, and is
refused with a clear error instead of being stored and propagated into ``daily_metrics``.

All checks are vectorised (pyarrow compute or numpy) and return the index of the first
offending row (``None`` when every row passes), so callers can name the line.
docs/input-validation.md lists every rule.
"""

from __future__ import annotations

import json
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from darkpool_analysis.errors import DataFormatError

#: Longest symbol accepted in any source (FINRA's longest symbols with suffixes are ~14).
MAX_SYMBOL_LENGTH: Final = 20
#: Characters a symbol may use: letters, digits and the suffix punctuation of the CQS/CMS,
#: Yahoo and Polygon spellings (``BRK/B``, ``BRK.B``, ``BRK-B``, ``^GSPC``, ``ABC=``). No
#: whitespace, control characters, quotes, ``<>&`` or delimiters.
SYMBOL_PUNCTUATION: Final = "./-+=^#*$"
SYMBOL_CHARS: Final = r"A-Za-z0-9./\-+=^#*$"
SYMBOL_PATTERN: Final = rf"^[{SYMBOL_CHARS}]{{1,{MAX_SYMBOL_LENGTH}}}$"
#: Reg SHO ``Market``: letters and commas (``B,Q,N``), at most this long.
MAX_MARKET_LENGTH: Final = 32
MARKET_PATTERN: Final = rf"^[A-Za-z,]{{1,{MAX_MARKET_LENGTH}}}$"
#: Free text (OTC ``issueName``, ``marketParticipantName``): at most this long, no control
#: characters.
MAX_TEXT_LENGTH: Final = 512
#: OTC ``MPID``: letters and digits, at most this long.
MAX_MPID_LENGTH: Final = 16
MPID_PATTERN: Final = rf"^[A-Za-z0-9]{{1,{MAX_MPID_LENGTH}}}$"
#: Shares of one symbol on one day (one facility or consolidated): all US equities trade
#: ~1e10 shares a day; the busiest sub-penny stock ~2e10.
MAX_DAILY_SHARES: Final = 1e12
#: Shares of one symbol in one week (OTC Transparency).
MAX_WEEKLY_SHARES: Final = 1e13
#: Trades of one symbol (and firm) in one week.
MAX_WEEKLY_TRADES: Final = 1e10
#: Dollar notional of one symbol in one week.
MAX_WEEKLY_NOTIONAL: Final = 1e15
#: A price per share (split-adjusted histories of serial reverse-splitters reach ~1e8).
MAX_PRICE: Final = 1e9

_CONTROL: Final = r"[\x00-\x1f\x7f]"


def _first_true(mask: pa.Array | pa.ChunkedArray) -> int | None:
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def _as_arrow(values: object) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if isinstance(values, pd.Series):
        return pa.Array.from_pandas(values.astype("string"), type=pa.string())
    return pa.array(np.asarray(values, dtype=object), pa.string(), from_pandas=True)


def bad_symbol(symbols: object) -> int | None:
    """First symbol that is too long or uses a character outside :data:`SYMBOL_CHARS`
    (nulls are the caller's business).

    Plain tickers (ASCII letters and digits, the ~98% majority) pass a cheap kernel; only the
    others go through the regular expression."""
    column = _as_arrow(symbols)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    simple = pc.fill_null(pc.and_(pc.ascii_is_alnum(column),
                                  pc.less_equal(pc.binary_length(column), MAX_SYMBOL_LENGTH)),
                          True)
    if pc.all(simple).as_py():
        return None
    others = pc.indices_nonzero(pc.invert(simple))
    odd = pc.take(column, others)
    stripped = odd
    for char in SYMBOL_PUNCTUATION:  # literal replaces: no regex compiled per call
        stripped = pc.replace_substring(stripped, char, "")
    length = pc.binary_length(odd)
    valid = pc.and_(pc.and_(pc.ascii_is_alnum(stripped), pc.greater(length, 0)),
                    pc.less_equal(length, MAX_SYMBOL_LENGTH))
    first = _first_true(pc.invert(valid))
    return None if first is None else int(others[first].as_py())


def symbol_ok(symbol: str) -> bool:
    """One symbol against the rule of :func:`bad_symbol` (for a handful of distinct values)."""
    return (0 < len(symbol) <= MAX_SYMBOL_LENGTH and all(map(_symbol_char, symbol))
            and any(c.isascii() and c.isalnum() for c in symbol))


def bad_market(markets: object) -> int | None:
    """First Reg SHO ``Market`` value that is not letters and commas of bounded length
    (checked on the few distinct values first)."""
    column = _as_arrow(markets)
    if pc.all(pc.fill_null(pc.match_substring_regex(pc.unique(column), MARKET_PATTERN),
                           True)).as_py():
        return None
    return _first_true(pc.invert(pc.match_substring_regex(column, MARKET_PATTERN)))


def bad_mpid(mpids: object) -> int | None:
    """First MPID that is not 1..16 letters/digits."""
    return _first_true(pc.invert(pc.match_substring_regex(_as_arrow(mpids), MPID_PATTERN)))


def bad_text(values: object) -> int | None:
    """First free-text value longer than :data:`MAX_TEXT_LENGTH` or holding a control
    character."""
    column = _as_arrow(values)
    too_long = pc.greater(pc.utf8_length(column), MAX_TEXT_LENGTH)
    return _first_true(pc.or_(too_long, pc.match_substring_regex(column, _CONTROL)))


def describe_symbol_problem(symbol: str) -> str:
    """Why ``symbol`` fails :func:`bad_symbol`, for the error message."""
    if len(symbol) > MAX_SYMBOL_LENGTH:
        return (f"symbol of {len(symbol):,} characters ({symbol[:24]!r}...); expected at most "
                f"{MAX_SYMBOL_LENGTH}")
    odd = next((c for c in symbol if not _symbol_char(c)), None)
    if odd is None:
        return f"symbol {symbol!r} has no letter or digit; expected a ticker"
    return (f"symbol {symbol!r} contains {odd!r}; expected letters, digits and "
            f"{SYMBOL_PUNCTUATION!r} only")


def _symbol_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in SYMBOL_PUNCTUATION)


def shown(value: object, limit: int = 40) -> str:
    """A value for an error message: repr, cut to ``limit`` characters."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value)):,} chars)"


def above(values: np.ndarray, limit: float) -> int | None:
    """First index where ``values`` (float64) exceeds ``limit``."""
    hits = np.flatnonzero(np.asarray(values, dtype="float64") > limit)
    return int(hits[0]) if hits.size else None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def load_json(text: str | bytes, source: str) -> Any:
    """``json.loads`` with clear errors: invalid JSON (line and column), ``NaN``/``Infinity``
    (not JSON; refused), nesting too deep for the parser."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"invalid JSON ({exc.msg} at line {exc.lineno} column "
                              f"{exc.colno})", source=source, line=exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); expected "
                              "JSON", source=source) from exc
    except ValueError as exc:  # from _refuse_constant
        raise DataFormatError(f"invalid JSON: {exc}; expected finite numbers", source=source
                              ) from exc
    except RecursionError:
        raise DataFormatError("JSON nested too deeply to parse; expected an array of flat "
                              "records", source=source) from None
