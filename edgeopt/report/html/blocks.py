"""Escaping, number formats, tables, cards and SVG bar charts: the pieces every section is built from."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgeopt.units import format_bytes, format_count



# --------------------------------------------------------------------------- escaping and numbers


class Html(str):
    """Markup built by this module: inserted as is. Any other str is escaped."""


def esc(value: Any) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join_html(parts: Iterable[Any], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


DASH = "–"  # missing value; plain text, so it composes into other strings


def as_number(value: Any) -> float | None:
    """A finite number, or None for anything else (bools, strings, NaN, missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def as_text(value: Any) -> str | None:
    """Text for a scalar; None for missing or structured values."""
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def fmt_ms(value: Any) -> str | Html:
    """Milliseconds with 3 significant digits (0.0542, 1.20, 12.3), whole numbers from 100."""
    number = as_number(value)
    if number is None:
        return DASH
    return f"{number:,.0f}" if abs(number) >= 100 else f"{number:#.3g}".rstrip(".")


def fmt_bytes(value: Any, exact: bool = False) -> str | Html:
    number = as_number(value)
    if number is None:
        return DASH
    human = format_bytes(number)
    return f"{human} ({int(number):,} B)" if exact and abs(number) >= 1024 else human


def fmt_count(value: Any) -> str | Html:
    number = as_number(value)
    return DASH if number is None else format_count(number)


def fixed_html(value: Any, digits: int, suffix: str = "") -> str | Html:
    number = as_number(value)
    return DASH if number is None else f"{number:.{digits}f}{suffix}"


def ratio_html(value: Any) -> str | Html:
    return fixed_html(value, 2, "×")


def sci(value: Any) -> str | Html:
    number = as_number(value)
    if number is None:
        return DASH
    return f"{number:.3g}" if 1e-3 <= abs(number) < 1e4 or number == 0 else f"{number:.2e}"


def short_sha(value: Any) -> str | Html:
    text = as_text(value)
    return DASH if not text else text[:12]


def base_name(path: Any) -> str:
    text = as_text(path) or ""
    return text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or text


def duration_text(value: Any) -> str | Html:
    number = as_number(value)
    if number is None:
        return DASH
    return f"{number * 1000:.0f} ms" if number < 1 else f"{number:.2f} s"


STATUS_CLASS = {
    "ok": "ok", "pass": "ok", "passed": "ok", "int8": "ok", "yes": "ok",
    "failed": "bad", "fail": "bad", "error": "bad", "no": "bad",
    "fallback": "warn", "below-floor": "warn", "rejected": "warn",
    "skipped": "muted", "skip": "muted", "float": "muted", "unknown": "muted",
}


def badge_html(text: Any, kind: str | None = None) -> Html:
    label = as_text(text) or "?"
    css = kind or STATUS_CLASS.get(label.lower(), "muted")
    return Html(f'<span class="badge {css}">{esc(label)}</span>')


def yes_no(value: Any, good: bool = True) -> Html:
    if value is None:
        return badge_html("unknown", "muted")
    return badge_html("yes" if value else "no", "ok" if bool(value) == good else "bad")


# --------------------------------------------------------------------------- building blocks


@dataclass
class Col:
    title: str
    numeric: bool = False
    wrap: bool = False  # long paths / names may break anywhere
    min_width: int | None = None  # px


def cell_html(value: Any) -> Html:
    if value is None:
        return DASH
    return esc(value)


def table_html(columns: list[Col], rows: Iterable[list[Any]], *, caption: str | None = None,
           css: str = "", row_classes: list[str] | None = None) -> Html:
    head = "".join(f'<th class="{"num" if c.numeric else ""}"'
                   + (f' style="min-width:{int(c.min_width)}px"' if c.min_width else "")
                   + f">{esc(c.title)}</th>" for c in columns)
    body = []
    for index, row in enumerate(rows):
        cls = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        if len(row) == 1 and len(columns) > 1 and isinstance(row[0], Span):
            body.append(f'<tr{cls}><td colspan="{len(columns)}" class="span">{cell_html(row[0].content)}</td></tr>')
            continue
        cells = []
        for column, value in zip(columns, row):
            classes = " ".join(c for c in ("num" if column.numeric else "", "wrap" if column.wrap else "") if c)
            cells.append(f'<td class="{classes}">{cell_html(value)}</td>' if classes else f"<td>{cell_html(value)}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return Html(f'<div class="table-wrap"><table class="{esc(css)}">{cap}<thead><tr>{head}</tr></thead>'
                 f'<tbody>{"".join(body)}</tbody></table></div>')


@dataclass
class Span:
    """A table row that is one cell across all columns (notes under a row)."""

    content: Any


def facts_html(items: list[tuple[str, Any]]) -> Html:
    """A definition list of label → value, skipping missing values."""
    parts = [f"<div><dt>{esc(label)}</dt><dd>{cell_html(value)}</dd></div>" for label, value in items
             if value is not None and value != ""]
    return Html(f'<dl class="facts">{"".join(parts)}</dl>') if parts else Html("")


def cards_html(items: list[tuple[str, Any, Any]]) -> Html:
    parts = []
    for label, value, sub in items:
        if value is None or value is DASH:
            continue
        sub_html = f'<div class="sub">{esc(sub)}</div>' if sub not in (None, "") else ""
        parts.append(f'<div class="card"><div class="label">{esc(label)}</div>'
                     f'<div class="value">{esc(value)}</div>{sub_html}</div>')
    return Html(f'<div class="cards">{"".join(parts)}</div>') if parts else Html("")


def notes_html(messages: list[Any], css: str = "warn") -> Html:
    items = [f"<li>{esc(m)}</li>" for m in messages if as_text(m)]
    return Html(f'<ul class="notes {css}">{"".join(items)}</ul>') if items else Html("")


def para(text: Any, css: str = "") -> Html:
    return Html(f'<p class="{css}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>")


# --------------------------------------------------------------------------- SVG bar charts


@dataclass
class Segment:
    value: float
    css: str
    tooltip: str


@dataclass
class Bar:
    segments: list[Segment]
    text: str


@dataclass
class ChartRow:
    label: str
    bars: list[Bar] = field(default_factory=list)
    note: str | None = None  # drawn instead of bars when there is no value


CHART_WIDTH, TEXT_W, PAIR_CHART_WIDTH = 780, 180, 600
CHAR_W = 7.4  # average glyph width of the 12 px chart font
_BAR_H, _BAR_GAP, _ROW_GAP = 16, 3, 10


def bar_chart(title: str, rows: list[ChartRow], legend: list[tuple[str, str]] | None = None,
               width: int = CHART_WIDTH) -> Html:
    """Horizontal bars, one row per label; several bars per row are drawn under each other and
    segments within a bar are stacked. Scaled to the largest bar; values printed after the bar."""
    if not rows:
        return Html("")
    longest = max(len(row.label) for row in rows)
    label_w = int(min(width * 0.45, max(110, CHAR_W * longest + 18)))
    max_chars = max(8, round((label_w - 18) / CHAR_W))
    totals = [sum(max(0.0, s.value) for s in bar.segments) for row in rows for bar in row.bars]
    scale_max = max(totals, default=0.0) or 1.0
    area = width - label_w - TEXT_W
    legend_h = 22 if legend else 0
    y = legend_h + 4
    parts: list[str] = []
    if legend:
        x = label_w
        for css, text in legend:
            parts.append(f'<rect x="{x}" y="4" width="12" height="12" rx="2" class="{esc(css)}"/>'
                         f'<text x="{x + 17}" y="14" class="legend">{esc(text)}</text>')
            x += 24 + 7 * len(text)
    for row in rows:
        bars = row.bars or [Bar([], "")]
        height = len(bars) * _BAR_H + (len(bars) - 1) * _BAR_GAP
        label = middle_ellipsis(row.label, max_chars)
        parts.append(f'<text x="{label_w - 10}" y="{y + height / 2 + 4:.1f}" class="label" text-anchor="end">'
                     f'<title>{esc(row.label)}</title>{esc(label)}</text>')
        if not row.bars:
            parts.append(f'<text x="{label_w}" y="{y + height / 2 + 4:.1f}" class="note">'
                         f'{esc(row.note or "no value")}</text>')
        for index, bar in enumerate(row.bars):
            by = y + index * (_BAR_H + _BAR_GAP)
            x = float(label_w)
            for segment in bar.segments:
                seg_w = area * max(0.0, segment.value) / scale_max
                if seg_w > 0:
                    parts.append(f'<rect x="{x:.1f}" y="{by}" width="{max(seg_w, 1.0):.1f}" height="{_BAR_H}" '
                                 f'class="{esc(segment.css)}"><title>{esc(segment.tooltip)}</title></rect>')
                x += seg_w
            parts.append(f'<text x="{x + 6:.1f}" y="{by + _BAR_H - 4}" class="value">{esc(bar.text)}</text>')
        y += height + _ROW_GAP
    # baseline
    parts.insert(0, f'<line x1="{label_w}" y1="{legend_h}" x2="{label_w}" y2="{y - _ROW_GAP + 4}" class="axis"/>')
    height = y - _ROW_GAP + 8
    return Html(f'<figure class="chart"><figcaption>{esc(title)}</figcaption>'
                 f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
                 f'width="{width}" height="{height}" role="img" aria-label="{esc(title)}">'
                 f'{"".join(parts)}</svg></figure>')


def middle_ellipsis(text: str, limit: int) -> str:
    """Names that differ at both ends (recipe names) stay told apart."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]
