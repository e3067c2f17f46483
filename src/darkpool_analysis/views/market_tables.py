"""Market tables in the seed's dark palette: HTML pages and matplotlib PNG tables.

Inputs are the frames of :mod:`darkpool_analysis.market` (``scan``, ``table`` + ``summarise``);
the text of every cell comes from :mod:`darkpool_analysis.market.format`, so HTML, PNG,
Markdown and the terminal show the same numbers. Score cells are tinted on the seed's
purple - grey - green score scale; zones are green (accumulation) / red (distribution).
A frame whose ``attrs["label"]`` is set (a synthetic database) is captioned with it.
The HTML is deterministic (no timestamps), so a golden-file test can pin it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from darkpool_analysis.market import format as fmt
from darkpool_analysis.market.format import (
    GROUP_DISPLAY,
    SUMMARY_DISPLAY,
    scan_columns,
)
from darkpool_analysis.views.style import COLORS

NOTE: Final = ("FINRA short volume (B) is a proxy for dealer-filled customer buying, not observed "
               "buying and not short interest. B/S = short / (FINRA total - short). Off-exch % = "
               "FINRA-reported (off-exchange) volume / consolidated volume of the price bar. "
               "Missing values are shown as NA. Source: FINRA Reg SHO and OTC Transparency data.")

_SCORE_STOPS: Final = ((0.0, COLORS["purple"]), (0.5, "#555555"), (1.0, COLORS["green"]))
_TEXT_COLUMNS: Final = frozenset({"symbol", "section", "otc_status", "zone", "flags", "end"})

_CSS: Final = f"""
body {{ background: {COLORS['background']}; color: {COLORS['text']}; margin: 24px;
       font-family: "DejaVu Sans", "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
p.sub {{ color: {COLORS['neutral']}; margin: 0 0 16px; font-size: 13px; }}
p.synthetic {{ background: {COLORS['red']}; color: {COLORS['background']}; font-weight: bold;
              display: inline-block; padding: 6px 12px; margin: 0 0 12px; }}
table {{ border-collapse: collapse; background: {COLORS['panel_bg']}; margin: 0 0 24px;
        font-size: 13px; font-variant-numeric: tabular-nums; }}
caption {{ caption-side: top; text-align: left; font-weight: bold; padding: 6px 0;
          color: {COLORS['text']}; font-size: 15px; }}
th {{ color: {COLORS['cyan']}; text-align: right; padding: 5px 9px; font-weight: 600;
     border-bottom: 1px solid {COLORS['grid']}; white-space: nowrap; }}
td {{ text-align: right; padding: 4px 9px; border-bottom: 1px solid {COLORS['grid']};
     white-space: nowrap; }}
th.text, td.text {{ text-align: left; }}
td.symbol {{ font-weight: bold; color: {COLORS['white']}; }}
td.na {{ color: {COLORS['neutral']}; }}
td.pos {{ color: {COLORS['green']}; }}
td.neg {{ color: {COLORS['red']}; }}
td.zone-accumulation {{ color: {COLORS['green']}; font-weight: bold; }}
td.zone-distribution {{ color: {COLORS['red']}; font-weight: bold; }}
td.zone-neutral {{ color: {COLORS['neutral']}; }}
td.flags {{ color: {COLORS['orange']}; font-size: 12px; }}
tr.average td {{ font-weight: bold; background: #1c1c20;
                border-top: 2px solid {COLORS['neutral']}; }}
tr.section th {{ color: {COLORS['yellow']}; text-align: left; font-size: 14px; padding-top: 14px;
                border-bottom: 1px solid {COLORS['neutral']}; }}
p.note {{ color: {COLORS['neutral']}; font-size: 12px; max-width: 980px; }}
""".strip()


def _hex_to_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


def score_colour(score: float) -> str | None:
    """The seed's score colour scale (purple 0 - grey 50 - green 100) as ``#rrggbb``; ``None``
    for a missing score."""
    if score is None or not np.isfinite(score):
        return None
    position = min(max(float(score) / 100.0, 0.0), 1.0)
    (p0, c0), (p1, c1) = ((_SCORE_STOPS[0], _SCORE_STOPS[1]) if position <= 0.5
                          else (_SCORE_STOPS[1], _SCORE_STOPS[2]))
    weight = (position - p0) / (p1 - p0)
    rgb = (1 - weight) * _hex_to_rgb(c0) + weight * _hex_to_rgb(c1)
    return "#" + "".join(f"{round(float(v)):02x}" for v in rgb)


def _cell_class(column: str, value: object, text: str) -> str:
    classes = ["text"] if column in _TEXT_COLUMNS else []
    if column == "symbol":
        classes.append("symbol")
    if text == fmt.MISSING:
        classes.append("na")
    elif column == "zone":
        classes.append(f"zone-{text}")
    elif column == "flags":
        classes.append("flags")
    elif column in ("return_1d", "lit_flow_imbalance", "short_buy_sell_ratio_z",
                    "finra_buy_volume_z", "breadth") or column.endswith("_z"):
        number = float(np.asarray(value, dtype=float))
        classes.append("pos" if number > 0 else "neg" if number < 0 else "")
    return " ".join(c for c in classes if c)


def _row_html(row: dict[str, object], columns: Sequence[str], scale: str, css: str = "") -> str:
    cells = []
    for column in columns:
        value = row[column]
        text = fmt.format_value(column, value, scale)
        if column == "breadth" and text != fmt.MISSING:
            text = f"{float(np.asarray(value, dtype=float)):+.2f}"
        if column in ("names", "scored", "accumulation", "neutral", "distribution") \
                and text != fmt.MISSING:
            text = f"{int(np.asarray(value, dtype=float))}"
        if column == "mean_score" and text != fmt.MISSING:
            text = f"{float(np.asarray(value, dtype=float)):.1f}"
        classes = _cell_class(column, value, text)
        style = ""
        if column in ("score", "mean_score") and text != fmt.MISSING:
            colour = score_colour(float(np.asarray(value, dtype=float)))
            style = f' style="background: {colour}; color: {COLORS["white"]};"'
        attr = f' class="{classes}"' if classes else ""
        cells.append(f"<td{attr}{style}>{html.escape(text)}</td>")
    row_class = f' class="{css}"' if css else ""
    return f"<tr{row_class}>" + "".join(cells) + "</tr>"


def _header_html(columns: Sequence[str]) -> str:
    cells = "".join(
        f'<th{" class=" + chr(34) + "text" + chr(34) if c in _TEXT_COLUMNS else ""}>'
        f"{html.escape(_label(c))}</th>" for c in columns)
    return f"<thead><tr>{cells}</tr></thead>"


def _label(column: str) -> str:
    extra = {"names": "Names", "accumulation": "Acc >= 70", "neutral": "Neutral",
             "distribution": "Dist <= 30", "breadth": "Breadth", "mean_score": "Avg score"}
    return extra.get(column, fmt.label(column))


def _page(title: str, subtitle: str, body: Sequence[str], synthetic_label: str | None) -> str:
    banner = (f'<p class="synthetic">{html.escape(synthetic_label)}</p>\n'
              if synthetic_label else "")
    heading = html.escape(title + (f" ({synthetic_label})" if synthetic_label else ""))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{heading}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        f"{banner}<h1>{html.escape(title)}</h1>",
        f'<p class="sub">{html.escape(subtitle)}</p>',
        *body,
        f'<p class="note">{html.escape(NOTE)}</p>',
        "</body>",
        "</html>",
        "",
    ])


def _caption(text: str, synthetic_label: str | None) -> str:
    return html.escape(text + (f" - {synthetic_label}" if synthetic_label else ""))


def group_table_html(rows: pd.DataFrame, summary: pd.DataFrame | None = None) -> str:
    """A whole HTML page for :func:`market.table` rows (one block per section, each closed
    by its average row) with the :func:`market.summarise` dashboard on top."""
    attrs = rows.attrs
    synthetic = attrs.get("label")
    title = f"{attrs.get('group', 'group')} - {attrs.get('date', '')}"
    body: list[str] = []
    if summary is not None and len(summary):
        lines = [f"<table class=\"summary\"><caption>{_caption('Groups', synthetic)}</caption>",
                 _header_html(SUMMARY_DISPLAY), "<tbody>"]
        lines += [_row_html(row, SUMMARY_DISPLAY, "raw") for row in summary.to_dict("records")]
        lines.append("</tbody></table>")
        body.append("\n".join(lines))
    caption = _caption(f"Daily table {attrs.get('date', '')}", synthetic)
    lines = [f"<table class=\"grouped\"><caption>{caption}</caption>",
             _header_html(GROUP_DISPLAY), "<tbody>"]
    for section, block in rows.groupby("section", sort=False):
        lines.append(f'<tr class="section"><th colspan="{len(GROUP_DISPLAY)}">'
                     f"{html.escape(str(section))}</th></tr>")
        for row in block.to_dict("records"):
            if row["row_type"] == "average":
                shown = {**row, "symbol": f"Average ({int(row['scored'])} scored)"}
                lines.append(_row_html(shown, GROUP_DISPLAY, "raw", "average"))
            else:
                lines.append(_row_html(row, GROUP_DISPLAY, "raw"))
    lines.append("</tbody></table>")
    body.append("\n".join(lines))
    subtitle = str(attrs.get("description") or "")
    return _page(title, subtitle, body, synthetic)


def scan_html(frame: pd.DataFrame) -> str:
    """A whole HTML page for a :func:`market.scan` frame (both ends, or the full ranking)."""
    attrs = frame.attrs
    synthetic = attrs.get("label")
    by = attrs.get("by", "signal")
    scale = str(attrs.get("scale", "raw"))
    columns = scan_columns(frame)
    title = f"Scan {attrs.get('date', '')} by {by} - {attrs.get('universe', '')}"
    subtitle = (f"{attrs.get('ranked', len(frame))} of {attrs.get('symbols', len(frame))} "
                f"symbols ranked; {len(attrs.get('without_value', []))} without a value")
    if attrs.get("min_dollar_volume") is not None:
        subtitle += (f"; dollar volume >= ${fmt.compact(float(attrs['min_dollar_volume']))} "
                     f"({attrs.get('filtered_out', 0)} below, "
                     f"{attrs.get('unknown_dollar_volume', 0)} unknown dropped)")
    parts = ([("top", f"Highest {by} (accumulation end)"),
              ("bottom", f"Lowest {by} (distribution end)")] if "end" in frame.columns
             else [(None, f"Every symbol by {by}")])
    body = []
    for end, caption in parts:
        block = frame if end is None else frame.loc[frame["end"] == end]
        lines = [f"<table class=\"scan\"><caption>{_caption(caption, synthetic)}</caption>",
                 _header_html(columns), "<tbody>"]
        lines += [_row_html(row, columns, scale) for row in block.to_dict("records")]
        lines.append("</tbody></table>")
        body.append("\n".join(lines))
    return _page(title, subtitle, body, synthetic)


def group_table_figure(rows: pd.DataFrame, summary: pd.DataFrame | None = None) -> Figure:
    """The grouped table as a matplotlib figure (dark palette; one row per table row, section
    headers and average rows highlighted) for ``--format png``."""
    attrs = rows.attrs
    synthetic = attrs.get("label")
    columns = list(GROUP_DISPLAY)
    text_rows: list[list[str]] = []
    styles: list[str] = []
    scores: list[float] = []
    for section, block in rows.groupby("section", sort=False):
        text_rows.append([str(section)] + [""] * (len(columns) - 1))
        styles.append("section")
        scores.append(np.nan)
        for row in block.to_dict("records"):
            shown = dict(row)
            if row["row_type"] == "average":
                shown["symbol"] = f"Average ({int(row['scored'])})"
            text_rows.append([fmt.format_value(c, shown[c]) for c in columns])
            styles.append(str(row["row_type"]))
            scores.append(float(row["score"]))
    top_in, bottom_in, row_in = 1.1, 0.45, 0.24
    height = top_in + bottom_in + row_in * (len(text_rows) + 1)
    fig = Figure(figsize=(17, height), facecolor=COLORS["background"])
    ax = fig.add_axes((0.01, bottom_in / height, 0.98, 1 - (top_in + bottom_in) / height))
    ax.set_axis_off()
    widths = {"symbol": 1.7, "flags": 2.7, "zone": 1.35, "otc_status": 1.15}
    table = ax.table(cellText=text_rows, colLabels=[_label(c) for c in columns],
                     colWidths=[widths.get(c, 1.0) for c in columns], bbox=(0, 0, 1, 1),
                     cellLoc="right", colLoc="right")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (r, c), cell in table.get_celld().items():
        column = columns[c]
        cell.set_edgecolor(COLORS["grid"])
        cell.get_text().set_color(COLORS["text"])
        cell.set_facecolor(COLORS["panel_bg"])
        if column in _TEXT_COLUMNS:
            cell.get_text().set_horizontalalignment("left")
        if r == 0:
            cell.get_text().set_color(COLORS["cyan"])
            cell.get_text().set_fontweight("bold")
            continue
        style, text = styles[r - 1], text_rows[r - 1][c]
        if style == "section":
            cell.set_facecolor(COLORS["background"])
            cell.get_text().set_color(COLORS["yellow"] if c == 0 else COLORS["text"])
            cell.get_text().set_fontweight("bold")
            continue
        if style == "average":
            cell.set_facecolor("#1c1c20")
            cell.get_text().set_fontweight("bold")
        if text == fmt.MISSING:
            cell.get_text().set_color(COLORS["neutral"])
        elif column == "score":
            cell.set_facecolor(score_colour(scores[r - 1]) or COLORS["panel_bg"])
            cell.get_text().set_color(COLORS["white"])
        elif column == "zone":
            cell.get_text().set_color({"accumulation": COLORS["green"],
                                       "distribution": COLORS["red"]}.get(text,
                                                                          COLORS["neutral"]))
        elif column == "flags":
            cell.get_text().set_color(COLORS["orange"])
    title = f"{attrs.get('group', 'group')} - daily table {attrs.get('date', '')}"
    if synthetic:
        title += f"  ({synthetic})"
    fig.suptitle(title, color=COLORS["red"] if synthetic else COLORS["text"], fontsize=13,
                 fontweight="bold", x=0.01, ha="left", y=1 - 0.2 / height, va="top")
    if summary is not None and len(summary):
        dash = "   ".join(
            f"{row.section}: {fmt.format_value('score', row.mean_score)} "
            f"({row.accumulation} acc / {row.distribution} dist of {row.scored})"
            for row in summary.itertuples())
        fig.text(0.01, 1 - 0.72 / height, dash, color=COLORS["text"], fontsize=8, ha="left")
    fig.text(0.01, 0.12 / height, NOTE, color=COLORS["neutral"], fontsize=7, ha="left")
    return fig


__all__ = ["NOTE", "group_table_figure", "group_table_html", "scan_html", "score_colour"]
