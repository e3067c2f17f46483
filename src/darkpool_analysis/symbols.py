"""Symbol spellings across feeds, and the one normalised form we store and query by.

FINRA Reg SHO files use SIP/CQS spelling: ``BRK/B`` (class B), ``ABRpD`` (preferred series D),
``AACT/WS`` (warrants), ``AACT/U`` (units). FINRA weekly OTC and Polygon write ``BRK.B``,
Yahoo ``BRK-B``. The normalised form is dot-separated upper case: ``BRK.B``, ``ABR.PR.D``,
``AACT.WS``; preferreds and warrants are never folded into the common stock.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd

Feed = Literal["cqs", "finra", "polygon", "yahoo", "normalised"]

# CQS lower-case suffix letters: p = preferred, r = rights, w = when issued.
_CQS_LOWER = {"p": ".PR", "r": ".RT", "w": ".WI"}
_CQS_LOWER_RE = re.compile(r"([prw])([A-Z]*)$")


def normalise(symbol: str, feed: Feed = "cqs") -> str:
    """Map a feed's spelling to the normalised form (``BRK/B`` -> ``BRK.B``).

    Examples
    --------
    >>> normalise("BRK/B"), normalise("ABRpD"), normalise("BRK-B", feed="yahoo")
    ('BRK.B', 'ABR.PR.D', 'BRK.B')
    """
    text = symbol.strip()
    if feed in ("cqs", "finra", "polygon"):
        match = _CQS_LOWER_RE.search(text)
        if match and match.start() > 0:
            series = f".{match.group(2)}" if match.group(2) else ""
            text = text[: match.start()] + _CQS_LOWER[match.group(1)] + series
        text = text.replace("/", ".")
    elif feed == "yahoo":
        text = text.upper()
        text = re.sub(r"-P([A-Z]?)$", lambda m: ".PR" + (f".{m.group(1)}" if m.group(1) else ""),
                      text)
        text = text.replace("-", ".")
    return text.upper()


def normalise_array(symbols: pd.Series | np.ndarray, feed: Feed = "cqs") -> np.ndarray:
    """Vectorised :func:`normalise`: only the few symbols with suffixes take the slow path."""
    values = pd.Series(symbols, dtype="string")
    plain = values.str.fullmatch(r"[A-Z0-9]+").fillna(False).to_numpy(dtype=bool)
    out = values.to_numpy(dtype=object).copy()
    if not plain.all():
        odd = np.flatnonzero(~plain)
        unique_odd = pd.unique(out[odd])
        mapping = {s: normalise(s, feed) for s in unique_odd if isinstance(s, str)}
        out[odd] = [mapping.get(s, s) for s in out[odd]]
    return out


def to_feed(symbol: str, feed: Feed) -> str:
    """Spell a normalised (or any-feed) symbol the way ``feed`` expects it.

    Examples
    --------
    >>> to_feed("BRK.B", "yahoo"), to_feed("BRK.B", "cqs"), to_feed("ABR.PR.D", "polygon")
    ('BRK-B', 'BRK/B', 'ABRpD')
    """
    norm = normalise(symbol, "yahoo" if "-" in symbol else "cqs")
    if feed == "normalised":
        return norm
    if feed == "yahoo":
        return re.sub(r"\.PR(?:\.([A-Z]))?$", lambda m: "-P" + (m.group(1) or ""), norm).replace(
            ".", "-"
        )
    pref = re.sub(r"\.PR(?:\.([A-Z]))?$", lambda m: "p" + (m.group(1) or ""), norm)
    pref = re.sub(r"\.RT$", "r", pref)
    pref = re.sub(r"\.WI$", "w", pref)
    if feed in ("cqs", "finra"):
        return pref.replace(".", "/")
    return pref  # polygon: BRK.B, ABRpD
