"""Text formatting of market frames: column labels, number formats, Markdown and CSV.

Pure and free of matplotlib, so ``darkpool scan`` starts fast; the HTML and PNG renderers in
:mod:`darkpool_analysis.views.market_tables` use the same labels and formats. A missing value
is always written ``NA`` (text outputs) or an empty field (CSV), never 0.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pandas as pd

#: Shown for a missing value in tables.
MISSING: Final = "NA"

#: Column -> header label.
LABELS: Final[dict[str, str]] = {
    "end": "End", "rank": "#", "section": "Group", "symbol": "Ticker", "close": "Close",
    "return_1d": "Return", "short_ratio": "Short %", "short_buy_sell_ratio": "B/S",
    "short_buy_sell_ratio_z": "B/S z", "finra_buy_volume_z": "Buy vol z",
    "off_exchange_share": "Off-exch %", "lit_flow_imbalance": "Lit imb",
    "otc_participation_rate": "OTC part.", "otc_status": "OTC status", "score": "Score",
    "confidence": "Conf", "zone": "Zone", "flags": "Flags", "dollar_volume": "$ volume",
    "scored": "Scored",
}

#: Columns of the grouped table as shown (HTML, PNG, Markdown).
GROUP_DISPLAY: Final[tuple[str, ...]] = (
    "symbol", "close", "return_1d", "short_ratio", "short_buy_sell_ratio",
    "short_buy_sell_ratio_z", "finra_buy_volume_z", "off_exchange_share", "lit_flow_imbalance",
    "otc_participation_rate", "otc_status", "score", "confidence", "zone", "flags",
)
#: Context columns of the scanner as shown after rank, symbol and the signal.
SCAN_DISPLAY: Final[tuple[str, ...]] = (
    "short_buy_sell_ratio", "short_buy_sell_ratio_z", "finra_buy_volume_z",
    "off_exchange_share", "lit_flow_imbalance", "otc_participation_rate", "otc_status",
    "score", "confidence", "zone", "flags", "dollar_volume",
)
#: Columns of the group summary (``market.summarise``) as shown.
SUMMARY_DISPLAY: Final[tuple[str, ...]] = (
    "section", "names", "scored", "accumulation", "neutral", "distribution", "breadth",
    "mean_score", "zone",
)

_PERCENT = frozenset({"short_ratio", "off_exchange_share", "otc_participation_rate"})
_SIGNED = frozenset({"short_buy_sell_ratio_z", "finra_buy_volume_z", "lit_flow_imbalance"})
_TEXT = frozenset({"end", "section", "symbol", "otc_status", "zone", "flags", "row_type"})


def compact(value: float) -> str:
    """``1.2B``, ``3.4M``, ``56K``, ``789`` (the seed's volume style; sign kept)."""
    number = float(value)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(number) >= size:
            digits = 0 if suffix == "K" else 1
            return f"{number / size:.{digits}f}{suffix}"
    return f"{number:,.0f}"


def format_value(column: str, value: object, scale: str = "raw") -> str:
    """One cell as text. ``scale`` is the ranking signal's scale (``display``/``z``/``raw``)
    and applies to columns without a fixed format (the signal column).

    Examples
    --------
    >>> format_value("short_ratio", 0.4567), format_value("return_1d", -0.0123)
    ('45.7%', '-1.23%')
    >>> format_value("score", float("nan")), format_value("current", 71.24, "display")
    ('NA', '71.2')
    """
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if column in _TEXT:
        return str(value)
    if column in ("rank", "scored"):
        return f"{int(float(str(value)))}"
    number = float(str(value)) if not isinstance(value, int | float) else float(value)
    if column in _PERCENT:
        return f"{number:.1%}"
    if column == "return_1d":
        return f"{number:+.2%}"
    if column in _SIGNED:
        return f"{number:+.2f}"
    if column == "close":
        return f"{number:,.2f}"
    if column == "short_buy_sell_ratio":
        return f"{number:.2f}"
    if column in ("score", "accumulation_score_display"):
        return f"{number:.1f}"
    if column == "confidence":
        return f"{number:.2f}"
    if column == "dollar_volume":
        return "$" + compact(number)
    if scale == "display":
        return f"{number:.1f}"
    if scale == "z" or column.endswith("_z"):
        return f"{number:+.2f}"
    return compact(number) if abs(number) >= 1e4 else f"{number:.4g}"


def format_frame(frame: pd.DataFrame, columns: Sequence[str], scale: str = "raw") -> pd.DataFrame:
    """The chosen columns as text (object frame, same index)."""
    return pd.DataFrame({c: [format_value(c, v, scale) for v in frame[c].tolist()]
                         for c in columns}, index=frame.index)


def label(column: str) -> str:
    """Header label of a column (the column name for a signal)."""
    return LABELS.get(column, column)


def scan_columns(frame: pd.DataFrame) -> list[str]:
    """The displayed columns of a scan frame: rank, symbol, the signal, then the context."""
    by = str(frame.attrs.get("by", ""))
    shown = ["rank", "symbol"]
    if by and by in frame.columns:
        shown.append(by)
    shown += [c for c in SCAN_DISPLAY if c in frame.columns and c not in shown]
    return shown


def markdown_table(frame: pd.DataFrame, columns: Sequence[str], scale: str = "raw") -> str:
    """A GitHub Markdown table of ``columns`` (numbers right-aligned)."""
    text = format_frame(frame, columns, scale)
    header = "| " + " | ".join(label(c) for c in columns) + " |"
    align = "| " + " | ".join(":--" if c in _TEXT else "--:" for c in columns) + " |"
    body = [("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
            for row in text.itertuples(index=False, name=None)]
    return "\n".join([header, align, *body])


def csv_text(frame: pd.DataFrame, *, label_line: str | None = None,
             float_format: str | None = None) -> str:
    """CSV of ``frame`` (dates ISO, missing values empty, full float precision); a ``# ...``
    comment line first when ``label_line`` is given (e.g. the synthetic-data label). Read it
    back with ``pandas.read_csv(path, comment="#")``."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m-%d")
    buffer = io.StringIO()
    if label_line:
        buffer.write(f"# {label_line}\n")
    out.to_csv(buffer, index=False, float_format=float_format, lineterminator="\n")
    return buffer.getvalue()


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["GROUP_DISPLAY", "LABELS", "MISSING", "SCAN_DISPLAY", "SUMMARY_DISPLAY", "compact",
           "csv_text", "format_frame", "format_value", "label", "markdown_table", "scan_columns",
           "write_text"]
