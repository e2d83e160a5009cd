"""One self-contained HTML page from a convert or profile report (and optionally a gate result).

Nothing is fetched when the page is viewed: CSS and SVG charts are inline, there is no script,
and a Content-Security-Policy forbids loading anything else. Every string taken from a report
is HTML-escaped (``_Html`` marks the markup built here; everything else goes through ``_e``).
Sections are drawn from whatever keys are present, so older or partial reports still render;
a section whose data has an unexpected shape says so instead of breaking the page.
"""

from __future__ import annotations

import html
import math
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.errors import InputError
from edgeopt.fsutil import read_json
from edgeopt.report.schema import SCHEMA_VERSION
from edgeopt.units import format_bytes, format_count

# The versions of the documents this renderer reads. The profile report's schema lives in
# edgeopt.profiling (a higher layer, not imported here); a test keeps the two in step.
CONVERT_SCHEMA_VERSION = SCHEMA_VERSION
PROFILE_SCHEMA_VERSION = 1
REPORT_KINDS = {"convert": CONVERT_SCHEMA_VERSION, "profile": PROFILE_SCHEMA_VERSION}
GATE_STATUSES = ("pass", "fail", "error", "skip")
TOP_NODES = 10


# --------------------------------------------------------------------------- reading


def read_report_json(path: Path) -> dict[str, Any]:
    """A convert report (``OUT/report.json``) or a profile report (``edgeopt profile -o``), checked
    only for what the page needs: a JSON object of a known kind and schema version."""
    raw = read_json(path, "report", "give the report.json written by `edgeopt convert` or a profile JSON "
                                     "written by `edgeopt profile -o`")
    if not isinstance(raw, dict):
        raise InputError(f"{path} is not an edgeopt report (a JSON {type(raw).__name__}, expected an object)",
                         "give the report.json written by `edgeopt convert`")
    kind = raw.get("kind", "convert")  # the Report model's default
    if kind == "gate":
        raise InputError(f"{path} is a gate result, not a run report",
                         "pass it with --gate next to the convert report")
    if kind not in REPORT_KINDS:
        raise InputError(f"{path}: unknown report kind {kind!r} (this edgeopt renders "
                         f"{' and '.join(sorted(REPORT_KINDS))} reports)", "give a convert or profile report")
    version = raw.get("schema_version")
    if version != REPORT_KINDS[kind]:
        raise InputError(f"{path} has {kind} report schema version {version!r}; this edgeopt reads version "
                         f"{REPORT_KINDS[kind]}", "regenerate the report with this edgeopt version")
    return raw


def read_gate_json(path: Path) -> dict[str, Any]:
    """A gate result (``edgeopt gate --json``): an object of kind "gate" with a list of checks."""
    raw = read_json(path, "gate result", "give the JSON printed by `edgeopt gate --json`")
    if not isinstance(raw, dict) or raw.get("kind") != "gate":
        found = raw.get("kind") if isinstance(raw, dict) else type(raw).__name__
        raise InputError(f"{path} is not a gate result (kind {found!r}, expected 'gate')",
                         "give the JSON printed by `edgeopt gate --json`")
    checks = raw.get("checks")
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise InputError(f"{path}: a gate result needs a list of checks (objects)",
                         "give the JSON printed by `edgeopt gate --json`")
    return raw


# --------------------------------------------------------------------------- escaping and numbers


class _Html(str):
    """Markup built by this module: inserted as is. Any other str is escaped."""


def _e(value: Any) -> _Html:
    if isinstance(value, _Html):
        return value
    return _Html(html.escape("" if value is None else str(value), quote=True))


def _join(parts: Iterable[Any], sep: str = "") -> _Html:
    return _Html(sep.join(_e(p) for p in parts))


DASH = "–"  # missing value; plain text, so it composes into other strings


def _num(value: Any) -> float | None:
    """A finite number, or None for anything else (bools, strings, NaN, missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str | None:
    """Text for a scalar; None for missing or structured values."""
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def fmt_ms(value: Any) -> str | _Html:
    """Milliseconds with 3 significant digits (0.0542, 1.20, 12.3), whole numbers from 100."""
    number = _num(value)
    if number is None:
        return DASH
    return f"{number:,.0f}" if abs(number) >= 100 else f"{number:#.3g}".rstrip(".")


def fmt_bytes(value: Any, exact: bool = False) -> str | _Html:
    number = _num(value)
    if number is None:
        return DASH
    human = format_bytes(number)
    return f"{human} ({int(number):,} B)" if exact and abs(number) >= 1024 else human


def fmt_count(value: Any) -> str | _Html:
    number = _num(value)
    return DASH if number is None else format_count(number)


def _fixed(value: Any, digits: int, suffix: str = "") -> str | _Html:
    number = _num(value)
    return DASH if number is None else f"{number:.{digits}f}{suffix}"


def _ratio(value: Any) -> str | _Html:
    return _fixed(value, 2, "×")


def _sci(value: Any) -> str | _Html:
    number = _num(value)
    if number is None:
        return DASH
    return f"{number:.3g}" if 1e-3 <= abs(number) < 1e4 or number == 0 else f"{number:.2e}"


def _short_sha(value: Any) -> str | _Html:
    text = _s(value)
    return DASH if not text else text[:12]


def _basename(path: Any) -> str:
    text = _s(path) or ""
    return text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or text


def _duration(value: Any) -> str | _Html:
    number = _num(value)
    if number is None:
        return DASH
    return f"{number * 1000:.0f} ms" if number < 1 else f"{number:.2f} s"


_STATUS_CLASS = {
    "ok": "ok", "pass": "ok", "passed": "ok", "int8": "ok", "yes": "ok",
    "failed": "bad", "fail": "bad", "error": "bad", "no": "bad",
    "fallback": "warn", "below-floor": "warn", "rejected": "warn",
    "skipped": "muted", "skip": "muted", "float": "muted", "unknown": "muted",
}


def _badge(text: Any, kind: str | None = None) -> _Html:
    label = _s(text) or "?"
    css = kind or _STATUS_CLASS.get(label.lower(), "muted")
    return _Html(f'<span class="badge {css}">{_e(label)}</span>')


def _yes_no(value: Any, good: bool = True) -> _Html:
    if value is None:
        return _badge("unknown", "muted")
    return _badge("yes" if value else "no", "ok" if bool(value) == good else "bad")


# --------------------------------------------------------------------------- building blocks


@dataclass
class _Col:
    title: str
    numeric: bool = False
    wrap: bool = False  # long paths / names may break anywhere
    min_width: int | None = None  # px


def _cell(value: Any) -> _Html:
    if value is None:
        return DASH
    return _e(value)


def _table(columns: list[_Col], rows: Iterable[list[Any]], *, caption: str | None = None,
           css: str = "", row_classes: list[str] | None = None) -> _Html:
    head = "".join(f'<th class="{"num" if c.numeric else ""}"'
                   + (f' style="min-width:{int(c.min_width)}px"' if c.min_width else "")
                   + f">{_e(c.title)}</th>" for c in columns)
    body = []
    for index, row in enumerate(rows):
        cls = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        if len(row) == 1 and len(columns) > 1 and isinstance(row[0], _Span):
            body.append(f'<tr{cls}><td colspan="{len(columns)}" class="span">{_cell(row[0].content)}</td></tr>')
            continue
        cells = []
        for column, value in zip(columns, row):
            classes = " ".join(c for c in ("num" if column.numeric else "", "wrap" if column.wrap else "") if c)
            cells.append(f'<td class="{classes}">{_cell(value)}</td>' if classes else f"<td>{_cell(value)}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return _Html(f'<div class="table-wrap"><table class="{_e(css)}">{cap}<thead><tr>{head}</tr></thead>'
                 f'<tbody>{"".join(body)}</tbody></table></div>')


@dataclass
class _Span:
    """A table row that is one cell across all columns (notes under a row)."""

    content: Any


def _facts(items: list[tuple[str, Any]]) -> _Html:
    """A definition list of label → value, skipping missing values."""
    parts = [f"<div><dt>{_e(label)}</dt><dd>{_cell(value)}</dd></div>" for label, value in items
             if value is not None and value != ""]
    return _Html(f'<dl class="facts">{"".join(parts)}</dl>') if parts else _Html("")


def _cards(items: list[tuple[str, Any, Any]]) -> _Html:
    parts = []
    for label, value, sub in items:
        if value is None or value is DASH:
            continue
        sub_html = f'<div class="sub">{_e(sub)}</div>' if sub not in (None, "") else ""
        parts.append(f'<div class="card"><div class="label">{_e(label)}</div>'
                     f'<div class="value">{_e(value)}</div>{sub_html}</div>')
    return _Html(f'<div class="cards">{"".join(parts)}</div>') if parts else _Html("")


def _notes(messages: list[Any], css: str = "warn") -> _Html:
    items = [f"<li>{_e(m)}</li>" for m in messages if _s(m)]
    return _Html(f'<ul class="notes {css}">{"".join(items)}</ul>') if items else _Html("")


def _p(text: Any, css: str = "") -> _Html:
    return _Html(f'<p class="{css}">{_e(text)}</p>' if css else f"<p>{_e(text)}</p>")


# --------------------------------------------------------------------------- SVG bar charts


@dataclass
class _Segment:
    value: float
    css: str
    tooltip: str


@dataclass
class _Bar:
    segments: list[_Segment]
    text: str


@dataclass
class _ChartRow:
    label: str
    bars: list[_Bar] = field(default_factory=list)
    note: str | None = None  # drawn instead of bars when there is no value


_CHART_WIDTH, _TEXT_W, _PAIR_CHART_WIDTH = 780, 180, 600
_CHAR_W = 7.4  # average glyph width of the 12 px chart font
_BAR_H, _BAR_GAP, _ROW_GAP = 16, 3, 10


def _bar_chart(title: str, rows: list[_ChartRow], legend: list[tuple[str, str]] | None = None,
               width: int = _CHART_WIDTH) -> _Html:
    """Horizontal bars, one row per label; several bars per row are drawn under each other and
    segments within a bar are stacked. Scaled to the largest bar; values printed after the bar."""
    if not rows:
        return _Html("")
    longest = max(len(row.label) for row in rows)
    label_w = int(min(width * 0.45, max(110, _CHAR_W * longest + 18)))
    max_chars = max(8, round((label_w - 18) / _CHAR_W))
    totals = [sum(max(0.0, s.value) for s in bar.segments) for row in rows for bar in row.bars]
    scale_max = max(totals, default=0.0) or 1.0
    area = width - label_w - _TEXT_W
    legend_h = 22 if legend else 0
    y = legend_h + 4
    parts: list[str] = []
    if legend:
        x = label_w
        for css, text in legend:
            parts.append(f'<rect x="{x}" y="4" width="12" height="12" rx="2" class="{_e(css)}"/>'
                         f'<text x="{x + 17}" y="14" class="legend">{_e(text)}</text>')
            x += 24 + 7 * len(text)
    for row in rows:
        bars = row.bars or [_Bar([], "")]
        height = len(bars) * _BAR_H + (len(bars) - 1) * _BAR_GAP
        label = _middle_ellipsis(row.label, max_chars)
        parts.append(f'<text x="{label_w - 10}" y="{y + height / 2 + 4:.1f}" class="label" text-anchor="end">'
                     f'<title>{_e(row.label)}</title>{_e(label)}</text>')
        if not row.bars:
            parts.append(f'<text x="{label_w}" y="{y + height / 2 + 4:.1f}" class="note">'
                         f'{_e(row.note or "no value")}</text>')
        for index, bar in enumerate(row.bars):
            by = y + index * (_BAR_H + _BAR_GAP)
            x = float(label_w)
            for segment in bar.segments:
                seg_w = area * max(0.0, segment.value) / scale_max
                if seg_w > 0:
                    parts.append(f'<rect x="{x:.1f}" y="{by}" width="{max(seg_w, 1.0):.1f}" height="{_BAR_H}" '
                                 f'class="{_e(segment.css)}"><title>{_e(segment.tooltip)}</title></rect>')
                x += seg_w
            parts.append(f'<text x="{x + 6:.1f}" y="{by + _BAR_H - 4}" class="value">{_e(bar.text)}</text>')
        y += height + _ROW_GAP
    # baseline
    parts.insert(0, f'<line x1="{label_w}" y1="{legend_h}" x2="{label_w}" y2="{y - _ROW_GAP + 4}" class="axis"/>')
    height = y - _ROW_GAP + 8
    return _Html(f'<figure class="chart"><figcaption>{_e(title)}</figcaption>'
                 f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
                 f'width="{width}" height="{height}" role="img" aria-label="{_e(title)}">'
                 f'{"".join(parts)}</svg></figure>')


def _middle_ellipsis(text: str, limit: int) -> str:
    """Names that differ at both ends (recipe names) stay told apart."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


# --------------------------------------------------------------------------- sections


@dataclass
class _Section:
    anchor: str
    title: str
    body: _Html


def _guarded(anchor: str, title: str, build: Callable[[], _Html | None]) -> _Section | None:
    """Build one section; a report whose data has an unexpected shape gets a notice there
    instead of no page at all."""
    try:
        body = build()
    except Exception as exc:  # noqa: BLE001 - any malformed input: say so, render the rest
        body = _p(f"this section could not be rendered from the report ({type(exc).__name__}: {exc})", "error")
    return _Section(anchor, title, body) if body else None


def _artifact_facts(artifact: dict[str, Any]) -> list[tuple[str, Any]]:
    opset = _s(artifact.get("opset"))
    return [
        ("path", _s(artifact.get("path"))),
        ("format", _s(artifact.get("format"))),
        ("size", fmt_bytes(artifact.get("size_bytes"), exact=True) if _num(artifact.get("size_bytes")) is not None
         else None),
        ("sha256", _Html(f'<code title="{_e(artifact.get("sha256"))}">{_e(_short_sha(artifact.get("sha256")))}</code>')
         if _s(artifact.get("sha256")) else None),
        ("opset", opset),
        ("external files", ", ".join(str(f) for f in _l(artifact.get("external_files"))) or None),
    ]


def _header(report: dict[str, Any]) -> _Html:
    kind = report.get("kind", "convert")
    if kind == "profile":
        model = _d(report.get("model"))
        name = _basename(model.get("path")) or "model"
        subtitle = "edgeopt profile"
        groups = [("Model", _artifact_facts(model) + [
            ("input shapes", ", ".join(f"{k}={'x'.join(str(d) for d in _l(v))}"
                                       for k, v in _d(report.get("input_shapes")).items()) or None)])]
    else:
        source, final = _d(report.get("source")), _d(report.get("final"))
        name = _basename(source.get("path")) or _basename(_d(report.get("config")).get("source")) or "model"
        subtitle = "edgeopt convert"
        groups = [("Final artifact", _artifact_facts(final)), ("Source", _artifact_facts(source))]
    run = [("edgeopt", _s(report.get("edgeopt_version"))), ("created", _s(report.get("created_at"))),
           ("report kind", _s(kind))]
    blocks = "".join(f'<div class="group"><h3>{_e(title)}</h3>{_facts(items)}</div>' for title, items in groups
                     if any(v is not None for _, v in items))
    blocks += f'<div class="group"><h3>Run</h3>{_facts(run)}</div>'
    return _Html(f'<header><div class="kicker">{_e(subtitle)}</div><h1>{_e(name)}</h1>'
                 f'<div class="groups">{blocks}</div></header>')


def _key_cards(report: dict[str, Any]) -> _Html:
    summary = _d(report.get("summary"))
    final = _d(report.get("final"))
    quant = _d(summary.get("quantization"))
    parity = _d(summary.get("parity"))
    size = summary.get("size_bytes", final.get("size_bytes"))
    params = summary.get("parameter_count")
    parity_text = None
    if parity:
        passed = parity.get("all_passed")
        parity_text = ("all passed" if passed else "FAILED") if passed is not None else None
        if not _num(parity.get("checks")) and passed:
            parity_text = "no checks"
    return _cards([
        ("final size", fmt_bytes(size) if _num(size) is not None else None,
         f"{int(_num(size)):,} bytes" if _num(size) is not None else None),
        ("gzip size", fmt_bytes(summary.get("gzip_size_bytes")) if _num(summary.get("gzip_size_bytes")) is not None
         else None, "OTA download"),
        ("parameters", fmt_count(params) if _num(params) is not None else None, None),
        ("MACs", fmt_count(summary.get("macs_total")) if _num(summary.get("macs_total")) is not None else None,
         "per inference"),
        ("nodes", _s(summary.get("nodes")), f"opset {_s(summary.get('opset'))}" if _s(summary.get("opset")) else None),
        ("shipped", _s(quant.get("shipped")), _s(quant.get("recipe"))),
        ("parity", parity_text,
         (f"min cosine {_fixed(parity.get('min_cosine'), 6)} · max |Δ| {_sci(parity.get('max_abs_diff'))}"
          if _num(parity.get("min_cosine")) is not None else None)),
    ])


def _warnings_section(report: dict[str, Any]) -> _Html | None:
    messages = [m for m in _l(report.get("warnings")) if _s(m)]
    return _notes(messages) if messages else None


def _gate_section(gate: dict[str, Any]) -> _Html:
    checks = [c for c in _l(gate.get("checks")) if isinstance(c, dict)]
    passed = gate.get("passed")
    counts = {status: sum(1 for c in checks if c.get("status") == status) for status in GATE_STATUSES}
    verdict = _badge("PASSED", "ok") if passed is True else _badge("FAILED", "bad") if passed is False else \
        _badge("no verdict", "muted")
    tally = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    head = _Html(f'<p class="verdict">{verdict} {_e(tally or "no checks")}'
                 + (f' &middot; config <code>{_e(gate.get("config"))}</code>' if _s(gate.get("config")) else "")
                 + "</p>")
    rows, classes = [], []
    for check in checks:
        limit = _s(check.get("limit_text")) or _s(check.get("limit"))
        actual = _s(check.get("actual_text")) or _s(check.get("actual"))
        delta = _num(check.get("delta"))
        delta_pct = _num(check.get("delta_pct"))
        if delta is not None or delta_pct is not None:
            unit = _s(check.get("unit")) or ""
            delta_text = (fmt_bytes(delta) if unit == "bytes" and delta is not None else
                          (f"{delta:+,.4g} {unit}".strip() if delta is not None else ""))
            if unit == "bytes" and delta is not None and delta > 0:
                delta_text = "+" + delta_text
            delta_cell = f"{delta_text} ({delta_pct:+.2f}%)" if delta_pct is not None else delta_text
        else:
            delta_cell = None
        baseline = check.get("baseline")
        baseline_cell = (fmt_bytes(baseline) if _s(check.get("unit")) == "bytes" and _num(baseline) is not None
                         else _s(baseline))
        line = _s(check.get("line"))
        source = _s(check.get("source"))  # where the actual number came from (file, estimate for T, ...)
        actual_cell = _Html(f'{_e(actual or DASH)}<div class="small muted">{_e(source)}</div>') if source else actual
        rows.append([_s(check.get("budget")) or _s(check.get("artifact")), _s(check.get("target")),
                     _s(check.get("metric")), limit, actual_cell, baseline_cell, delta_cell,
                     _badge(check.get("status")), _s(check.get("message")), line])
        classes.append("row-bad" if check.get("status") in ("fail", "error") else "")
    table = _table([_Col("budget", wrap=True), _Col("target"), _Col("metric"), _Col("limit", True),
                    _Col("actual", True), _Col("baseline", True), _Col("change", True), _Col("status"),
                    _Col("message", wrap=True), _Col("line", True)], rows, row_classes=classes) if rows else \
        _p("the gate result lists no checks", "muted")
    return _Html(head + table)


def _parity_cell(checks: list[dict[str, Any]]) -> Any:
    if not checks:
        return None
    passed = all(c.get("passed") is True for c in checks)
    cosines = [_num(o.get("cosine")) for c in checks for o in _l(c.get("outputs")) if isinstance(o, dict)]
    diffs = [_num(o.get("max_abs_diff")) for c in checks for o in _l(c.get("outputs")) if isinstance(o, dict)]
    cosines = [c for c in cosines if c is not None]
    diffs = [d for d in diffs if d is not None]
    detail = []
    if cosines:
        detail.append(f"worst cosine {min(cosines):.6f}")
    if diffs:
        detail.append(f"max |Δ| {_sci(max(diffs))}")
    return _Html(f'{_badge("pass" if passed else "fail")} <span class="muted">{_e(", ".join(detail))}</span>')


def _stages_section(report: dict[str, Any]) -> _Html | None:
    stages = [s for s in _l(report.get("stages")) if isinstance(s, dict)]
    if not stages:
        return None
    rows: list[list[Any]] = []
    total = 0.0
    for stage in stages:
        outputs = [o for o in _l(stage.get("outputs")) if isinstance(o, dict)]
        out_html = _join((_Html(f'<div><code>{_e(_basename(o.get("path")))}</code></div>') for o in outputs)) \
            if outputs else None
        size_html = _join((_Html(f'<div>{_e(fmt_bytes(o.get("size_bytes")))} '
                                 f'<span class="muted">({_e(_int_text(o.get("size_bytes")))} B)</span></div>')
                           for o in outputs)) if outputs else None
        warnings = [w for w in _l(stage.get("warnings")) if _s(w)]
        total += _num(stage.get("duration_s")) or 0.0
        rows.append([_s(stage.get("name")), _badge(stage.get("status")), _duration(stage.get("duration_s")),
                     out_html, size_html, _parity_cell([c for c in _l(stage.get("parity")) if isinstance(c, dict)]),
                     _stage_note(stage)])
        for message in warnings:
            rows.append([_Span(_Html(f'<span class="warn-text">⚠ {_e(message)}</span>'))])
    table = _table([_Col("stage"), _Col("status"), _Col("duration", True), _Col("output"), _Col("size", True),
                    _Col("parity vs source"), _Col("notes", wrap=True)], rows)
    return _Html(table + _p(f"total {_duration(total)} over {len(stages)} stages", "muted small"))


def _int_text(value: Any) -> str:
    number = _num(value)
    return "–" if number is None else f"{int(number):,}"


def _stage_note(stage: dict[str, Any]) -> str | None:
    details = _d(stage.get("details"))
    name = stage.get("name")
    if name == "simplify" and _num(details.get("nodes_before")) is not None:
        return f"nodes {_int_text(details.get('nodes_before'))} → {_int_text(details.get('nodes_after'))}"
    if name == "export" and _s(details.get("exporter")):
        batch = details.get("dynamic_batch")
        return f"exporter {details['exporter']}" + ("" if batch is None else
                                                   f", {'dynamic' if batch else 'static'} batch")
    if name == "quantize" and _s(details.get("shipped")):
        return f"shipped {details['shipped']}" + (f": {details['chosen']}" if _s(details.get("chosen")) else "")
    if name == "opset" and details:
        before, after = _s(details.get("from")), _s(details.get("to"))
        return f"opset {before} → {after}" if before and after else None
    return None


def _parity_section(report: dict[str, Any]) -> _Html | None:
    rows, classes = [], []
    for stage in _l(report.get("stages")):
        if not isinstance(stage, dict):
            continue
        for check in _l(stage.get("parity")):
            if not isinstance(check, dict):
                continue
            for output in _l(check.get("outputs")) or [{}]:
                output = _d(output)
                rows.append([_s(stage.get("name")), _basename(check.get("candidate")), _s(check.get("reference")),
                             _s(check.get("samples")),
                             ", ".join(str(b) for b in _l(check.get("batch_sizes"))) or None,
                             _s(output.get("name")), _sci(output.get("max_abs_diff")),
                             _sci(output.get("max_rel_diff")),
                             ("exact" if output.get("exact") and output.get("cosine") is None
                              else _fixed(output.get("cosine"), 6)),
                             _badge("pass" if output.get("passed", check.get("passed")) else "fail")])
                classes.append("" if output.get("passed", check.get("passed")) else "row-bad")
    if not rows:
        return None
    first = next((c for s in _l(report.get("stages")) if isinstance(s, dict) for c in _l(s.get("parity"))
                  if isinstance(c, dict)), {})
    rule = (f"an output passes when max|Δ| ≤ {_sci(first.get('atol'))} + {_sci(first.get('rtol'))}·max|reference| "
            f"and cosine ≥ {_s(first.get('min_cosine'))}; every graph is compared with the source")
    return _Html(_table([_Col("stage"), _Col("graph"), _Col("reference"), _Col("samples", True),
                         _Col("batch sizes", True), _Col("output"), _Col("max |Δ|", True), _Col("max rel Δ", True),
                         _Col("cosine", True), _Col("result")], rows, row_classes=classes)
                 + _p(rule, "muted small"))


def _worst(outputs: list[dict[str, Any]], key: str) -> float | None:
    values = [_num(o.get(key)) for o in outputs]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def _quantization_section(report: dict[str, Any]) -> _Html | None:
    stage = next((s for s in _l(report.get("stages")) if isinstance(s, dict) and s.get("name") == "quantize"), None)
    details = _d(stage.get("details")) if stage else {}
    summary = _d(_d(report.get("summary")).get("quantization"))
    if not details and not summary:
        return None
    parts: list[str] = []
    shipped = _s(details.get("shipped")) or _s(summary.get("shipped"))
    chosen = _s(details.get("chosen")) or _s(summary.get("recipe"))
    reason = _s(details.get("reason")) or _s(summary.get("reason"))
    parts.append(f'<p class="verdict">{_badge(shipped or "unknown")} '
                 + (f"<code>{_e(chosen)}</code> " if chosen and not (reason or "").startswith(chosen) else "")
                 + (f'<span class="reason">{_e(reason)}</span>' if reason else "") + "</p>")
    floor = _d(details.get("floor"))
    data = _d(details.get("data"))
    float_latency = _d(details.get("float_latency"))
    facts = [("mode", _s(details.get("mode"))), ("recipe target", _s(details.get("target"))),
             ("fidelity floor", (f"cosine ≥ {_s(floor.get('min_cosine'))}"
                                 + (f", top-1 ≥ {_s(floor.get('min_top1'))}" if _s(floor.get("min_top1")) else ""))
              if floor else None),
             ("float model", fmt_bytes(details.get("float_size_bytes"), exact=True)
              if _num(details.get("float_size_bytes")) is not None else None),
             ("float latency (host)", f"{fmt_ms(float_latency.get('median_ms'))} ms median, "
                                      f"{_int_text(float_latency.get('runs'))} runs, "
                                      f"{_s(float_latency.get('threads')) or '?'} thread(s)"
              if _num(float_latency.get("median_ms")) is not None else None)]
    for label, key in (("calibration data", "calibration"), ("evaluation data", "eval")):
        item = _d(data.get(key))
        if item:
            text = f"{_s(item.get('source')) or '?'}: {_int_text(item.get('count'))} samples"
            if item.get("random"):
                text += " (RANDOM inputs)"
            if item.get("labels"):
                text += ", with labels"
            if _s(item.get("sha256")):
                text += f", sha256 {_short_sha(item.get('sha256'))}"
            facts.append((label, text))
    if summary:
        accuracy = (f"{_fixed(summary.get('accuracy_float'), 4)} → {_fixed(summary.get('accuracy_int8'), 4)}"
                    if _num(summary.get("accuracy_float")) is not None else None)
        facts += [("worst output cosine", _fixed(summary.get("worst_cosine"), 4)
                   if _num(summary.get("worst_cosine")) is not None else None),
                  ("accuracy float → int8", accuracy),
                  ("size ratio", _ratio(summary.get("size_ratio")) if _num(summary.get("size_ratio")) is not None
                   else None),
                  ("latency ratio", _ratio(summary.get("latency_ratio"))
                   if _num(summary.get("latency_ratio")) is not None else None),
                  ("kept in float", ", ".join(str(n) for n in _l(summary.get("float_nodes"))) or None)]
    parts.append(_facts(facts))
    candidates = [c for c in _l(details.get("candidates")) if isinstance(c, dict)]
    if candidates:
        parts.append(_candidates_table(candidates, chosen if shipped == "int8" else None, details))
        parts.append(_candidates_chart(candidates, details))
    parts.append(_notes([w for w in _l(details.get("warnings")) if w not in _l(report.get("warnings"))]))
    return _Html("".join(parts))


def _candidates_table(candidates: list[dict[str, Any]], chosen: str | None, details: dict[str, Any]) -> _Html:
    columns = [_Col("candidate", wrap=True, min_width=230), _Col("size", True), _Col("quantized", True),
               _Col("cosine", True), _Col("worst channel", True), _Col("SQNR", True), _Col("max |err|", True),
               _Col("top-1", True), _Col("accuracy", True), _Col("latency", True), _Col("vs float", True)]
    rows: list[list[Any]] = []
    classes: list[str] = []
    float_latency = _d(details.get("float_latency"))
    if float_latency or _num(details.get("float_size_bytes")) is not None:
        rows.append(["float model (reference)", fmt_bytes(details.get("float_size_bytes")),
                     None, _fixed(1, 4), _fixed(1, 4), None, None, None, None,
                     f"{fmt_ms(float_latency.get('median_ms'))} ms" if float_latency else None,
                     _ratio(1.0) if float_latency else None])
        classes.append("row-ref")
    for candidate in candidates:
        fidelity = _d(candidate.get("fidelity"))
        outputs = [o for o in _l(fidelity.get("outputs")) if isinstance(o, dict)]
        latency = _d(candidate.get("latency"))
        name = _s(candidate.get("name")) or "?"
        is_chosen = chosen is not None and name == chosen
        name_cell = _Html(f"<code>{_e(name)}</code> {_badge(candidate.get('status'))}"
                          + (" " + _badge("chosen", "ok") if is_chosen else ""))
        accuracy = (f"{_fixed(fidelity.get('accuracy_reference'), 3)} → "
                    f"{_fixed(fidelity.get('accuracy_candidate'), 3)}"
                    if _num(fidelity.get("accuracy_candidate")) is not None else None)
        coverage = (f"{_int_text(candidate.get('quantized_nodes'))}/{_int_text(candidate.get('quantizable_nodes'))}"
                    if _num(candidate.get("quantized_nodes")) is not None else None)
        size = _num(candidate.get("size_bytes"))
        size_cell = (f"{fmt_bytes(size)} ({_ratio(candidate.get('size_ratio'))})" if size is not None and
                     _num(candidate.get("size_ratio")) is not None else fmt_bytes(size))
        sqnr = _worst(outputs, "sqnr_db")
        top1 = _worst(outputs, "top1_agreement")
        exact = _worst(outputs, "exact_agreement")
        rows.append([name_cell, size_cell, coverage,
                     _fixed(_worst(outputs, "cosine_mean"), 4), _fixed(_worst(outputs, "channel_cosine_min"), 4),
                     f"{sqnr:.1f} dB" if sqnr is not None else None,
                     _sci(max((v for v in (_num(o.get("max_abs_error")) for o in outputs) if v is not None),
                              default=None)),
                     _fixed(top1, 3) if top1 is not None else (f"exact {exact:.3f}" if exact is not None else None),
                     accuracy,
                     f"{fmt_ms(latency.get('median_ms'))} ms" if _num(latency.get("median_ms")) is not None else None,
                     _ratio(candidate.get("latency_ratio")) if _num(candidate.get("latency_ratio")) is not None
                     else None])
        classes.append("row-chosen" if is_chosen else "")
        notes: list[str] = []
        if _s(candidate.get("reason")):
            notes.append(f"why tried: {candidate['reason']}")
        if _s(candidate.get("rejection")):
            notes.append(f"not shipped: {candidate['rejection']}")
        float_nodes = [str(n) for n in _l(candidate.get("float_nodes"))]
        if float_nodes:
            notes.append(f"kept in float ({len(float_nodes)}): {', '.join(float_nodes)}")
        for step_index, step in enumerate(_l(candidate.get("mixed_precision")), start=1):
            step = _d(step)
            notes.append(f"mixed precision step {step_index}: {len(_l(step.get('float_nodes')))} node(s) in float → "
                         f"worst cosine {_fixed(step.get('worst_cosine'), 4)}"
                         + (" (meets the floor)" if step.get("meets_floor") else ""))
        for trial in _l(candidate.get("speed_fallback")):
            trial = _d(trial)
            outcome = (f"whole model {_fixed(trial.get('latency_ratio'), 3)}x → "
                       + ("kept in float" if trial.get("accepted") else "stays int8")
                       if trial.get("latency_ratio") is not None else f"stays int8 ({trial.get('note')})")
            notes.append(f"speed: {', '.join(str(n) for n in _l(trial.get('nodes')))} profiled "
                         f"{_fixed(trial.get('int8_us'), 1)} µs int8 vs {_fixed(trial.get('float_us'), 1)} µs float; "
                         + outcome)
        if len(outputs) > 1:
            for output in outputs:
                notes.append(f"output {output.get('name')}: cosine {_fixed(output.get('cosine_mean'), 4)}, "
                             f"worst channel {_fixed(output.get('channel_cosine_min'), 4)}"
                             + (f" (#{output.get('worst_channel')})" if _s(output.get("worst_channel")) else "")
                             + f", SQNR {_fixed(output.get('sqnr_db'), 1)} dB")
        if notes:
            rows.append([_Span(_Html('<div class="sub-notes">' + "".join(f"<div>{_e(n)}</div>" for n in notes)
                                     + "</div>"))])
            classes.append("row-notes row-chosen" if is_chosen else "row-notes")
    timed = bool(float_latency) or any(_num(_d(c.get("latency")).get("median_ms")) is not None for c in candidates)
    if not timed:  # latency is only measured when the recipe target is this machine
        columns = columns[:-2]
        rows = [row if len(row) == 1 and isinstance(row[0], _Span) else row[:-2] for row in rows]
    return _table(columns, rows, row_classes=classes,
                  caption="Candidates tried (cosines, SQNR and max error: the worst output"
                          + ("; latency timed side by side with the float model on this machine)" if timed else
                             "; latency is measured only when the recipe target is host)"))


def _candidates_chart(candidates: list[dict[str, Any]], details: dict[str, Any]) -> _Html:
    float_latency = _num(_d(details.get("float_latency")).get("median_ms"))
    rows = []
    if float_latency is not None:
        rows.append(_ChartRow("float", [_Bar([_Segment(float_latency, "c-float", "float model")],
                                             f"{fmt_ms(float_latency)} ms")]))
    for candidate in candidates:
        median = _num(_d(candidate.get("latency")).get("median_ms"))
        if median is None:
            continue
        ratio = _num(candidate.get("latency_ratio"))
        rows.append(_ChartRow(_s(candidate.get("name")) or "?", [_Bar(
            [_Segment(median, "c-int8", _s(candidate.get("name")) or "")],
            f"{fmt_ms(median)} ms" + (f" ({ratio:.2f}× float)" if ratio is not None else ""))]))
    if len(rows) < 2:
        return _Html("")
    return _bar_chart("Measured latency on this machine (median, ms)", rows)


def _target_estimates(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per target: the full static profile where the report has it, else the summary's digest."""
    if report.get("kind") == "profile":
        return {str(k): v for k, v in _d(report.get("estimates")).items() if isinstance(v, dict)}
    full: dict[str, dict[str, Any]] = {}
    for stage in _l(report.get("stages")):
        if isinstance(stage, dict) and stage.get("name") == "profile":
            full = {str(k): v for k, v in _d(stage.get("details")).items() if isinstance(v, dict)}
    digest = {str(k): v for k, v in _d(_d(report.get("summary")).get("targets")).items() if isinstance(v, dict)}
    return {name: {**digest.get(name, {}), **full.get(name, {})} for name in [*digest, *full]}


def _fits(estimate: dict[str, Any]) -> Any:
    if "fits_all" in estimate:
        return estimate.get("fits_all")
    value = estimate.get("fits")
    return value if isinstance(value, bool) or value is None else None


def _targets_section(report: dict[str, Any]) -> _Html | None:
    estimates = _target_estimates(report)
    measured = _measured_rows(report)
    if not estimates and not measured:
        return None
    parts: list[str] = []
    latency_rows = []
    for name, est in estimates.items():
        latency = _num(est.get("latency_ms"))
        if latency is None:
            latency_rows.append(_ChartRow(name, note="no estimate: " + (
                _s(est.get("estimate_unavailable_reason")) or "the target lacks figures")[:90]))
        else:
            latency_rows.append(_ChartRow(name, [_Bar([_Segment(latency, "c-est", f"{name}: estimated")],
                                                      f"{fmt_ms(latency)} ms")]))
    for label, value in measured:
        latency_rows.append(_ChartRow(label, [_Bar([_Segment(value, "c-meas", label)], f"{fmt_ms(value)} ms")]))
    legend = [("c-est", "static estimate")] + ([("c-meas", "measured p50")] if measured else [])
    parts.append(_bar_chart("Latency per target (ms, batch 1)", latency_rows, legend))
    memory_rows = []
    for name, est in estimates.items():
        weights, peak = _num(est.get("weight_bytes")), _num(est.get("peak_activation_bytes"))
        if weights is None and peak is None:
            memory_rows.append(_ChartRow(name, note="no memory figures"))
            continue
        total = (weights or 0) + (peak or 0)
        fits = _fits(est)
        verdict = "" if fits is None else (", fits" if fits else ", DOES NOT FIT")
        memory_rows.append(_ChartRow(name, [_Bar([_Segment(weights or 0, "c-weights", f"weights {fmt_bytes(weights)}"),
                                                  _Segment(peak or 0, "c-act",
                                                           f"peak activations {fmt_bytes(peak)}")],
                                                 f"{fmt_bytes(total)}{verdict}")]))
    if memory_rows:
        parts.append(_bar_chart("Peak memory per target (weights + peak activations)", memory_rows,
                                [("c-weights", "weights"), ("c-act", "peak activations")]))
    if estimates:
        parts.append(_targets_table(estimates))
    return _Html("".join(parts))


def _targets_table(estimates: dict[str, dict[str, Any]]) -> _Html:
    rows = []
    for name, est in estimates.items():
        fit_lines = []
        for check in _l(est.get("fits")):
            check = _d(check)
            ok = check.get("fits")
            mark = "?" if ok is None else ("✓" if ok else "✗ does not fit")
            capacity = (f"of {fmt_bytes(check.get('available_bytes'))}" if _num(check.get("available_bytes"))
                        is not None else "(capacity not stated)")
            fit_lines.append(f"{check.get('memory', '?')}: {fmt_bytes(check.get('required_bytes'))} {capacity} {mark}")
        fits = _fits(est)
        memory_cell = _Html(_yes_no(fits) + "".join(f'<div class="small muted">{_e(line)}</div>' for line in fit_lines))
        accel = _s(est.get("accelerator"))
        if accel:
            on = _int_text(est.get("accelerator_node_count", est.get("accelerator_nodes")))
            cpu = _int_text(est.get("cpu_node_count", est.get("cpu_nodes")))
            int8 = ("full int8: " + ("yes" if est.get("full_int8") else "no")
                    + (" (REQUIRED)" if est.get("full_int8_required") and not est.get("full_int8") else ""))
            accel_cell = f"{accel}: {on} nodes on it, {cpu} on the CPU, {_int_text(est.get('partitions'))} " \
                         f"partition(s); {int8}"
        else:
            accel_cell = None
        notes = [m for m in [_s(est.get("estimate_unavailable_reason"))] + [_s(w) for w in _l(est.get("warnings"))]
                 if m]
        unknown = _num(est.get("unknown_node_count"))
        if unknown:
            notes.append(f"{int(unknown)} node(s) with unknown cost: "
                         + ", ".join(str(n) for n in _l(est.get("unknown_nodes"))[:5]))
        rows.append([name, _s(est.get("target_kind")), f"{fmt_ms(est.get('latency_ms'))} ms"
                     if _num(est.get("latency_ms")) is not None else None, fmt_count(est.get("macs_total")),
                     fmt_bytes(est.get("weight_bytes")), fmt_bytes(est.get("peak_activation_bytes")), memory_cell,
                     accel_cell, _Html("".join(f"<div>{_e(n)}</div>" for n in notes)) if notes else None])
    return _table([_Col("target"), _Col("kind"), _Col("est. latency", True), _Col("MACs", True),
                   _Col("weights", True), _Col("peak activations", True), _Col("fits in memory"),
                   _Col("accelerator", wrap=True), _Col("notes", wrap=True)], rows)


def _measured_rows(report: dict[str, Any]) -> list[tuple[str, float]]:
    rows = []
    for device, runs in _d(report.get("measurements")).items():
        for run in _l(runs):
            p50 = _num(_d(_d(run).get("latency_ms")).get("p50"))
            if p50 is not None:
                rows.append((f"{device} measured, {_int_text(_d(run).get('threads'))} thr", p50))
    return rows


def _heaviest_section(report: dict[str, Any]) -> _Html | None:
    parts = []
    for name, est in _target_estimates(report).items():
        nodes = [n for n in _l(est.get("nodes")) if isinstance(n, dict)]
        if not nodes:
            continue
        by_time = _num(est.get("latency_ms")) is not None
        key = "time_us" if by_time else "macs"
        ranked = sorted((n for n in nodes if (_num(n.get(key)) or 0) > 0), key=lambda n: -(_num(n.get(key)) or 0))
        if not ranked:
            continue
        total_us = (_num(est.get("latency_ms")) or 0) * 1000
        total_macs = _num(est.get("macs_total")) or sum(_num(n.get("macs")) or 0 for n in nodes)
        rows = []
        for index, node in enumerate(ranked[:TOP_NODES], start=1):
            time_us = _num(node.get("time_us"))
            macs = _num(node.get("macs"))
            share = (time_us / total_us if by_time and time_us is not None and total_us else
                     (macs / total_macs if not by_time and macs is not None and total_macs else None))
            traffic = (_num(node.get("bytes_read")) or 0) + (_num(node.get("bytes_written")) or 0)
            rows.append([str(index), _Html(f"<code>{_e(node.get('name'))}</code>"), _s(node.get("op_type")),
                         _s(node.get("execution_dtype")), _s(node.get("device")), fmt_count(macs), fmt_bytes(traffic),
                         _fixed(time_us, 1), f"{100 * share:.1f}%" if share is not None else None,
                         _s(node.get("bound"))])
        ranking = "estimated time" if by_time else "MACs (no latency estimate for this target)"
        parts.append(_table([_Col("#", True), _Col("node", wrap=True), _Col("op type"), _Col("dtype"),
                             _Col("device"), _Col("MACs", True), _Col("bytes moved", True), _Col("est. µs", True),
                             _Col("share", True), _Col("bound")], rows,
                            caption=f"{name}: top {min(TOP_NODES, len(ranked))} of {len(nodes)} nodes by {ranking}"))
    return _Html("".join(parts)) if parts else None


def _measurements_section(report: dict[str, Any]) -> _Html | None:
    rows = []
    top_ops = []
    for device, runs in _d(report.get("measurements")).items():
        for run in _l(runs):
            run = _d(run)
            latency = _d(run.get("latency_ms"))
            runtime = _d(run.get("runtime"))
            machine = _d(run.get("device"))
            ssh = _d(run.get("ssh"))
            rows.append([device, _int_text(run.get("threads")), _int_text(run.get("runs")),
                         f"{_s(runtime.get('name')) or '?'} {_s(runtime.get('version')) or ''}".strip()
                         if runtime else None,
                         fmt_ms(latency.get("p50")), fmt_ms(latency.get("p90")), fmt_ms(latency.get("p99")),
                         fmt_ms(latency.get("mean")), fmt_ms(latency.get("stdev")), fmt_ms(run.get("first_run_ms")),
                         fmt_ms(run.get("load_ms")), fmt_bytes(_d(run.get("memory")).get("peak_rss_increase_bytes")),
                         " ".join(x for x in (_s(machine.get("cpu_model")), _s(machine.get("machine")),
                                              f"({_s(ssh.get('host'))})" if _s(ssh.get("host")) else None) if x)
                         or None])
            ops = sorted((o for o in _l(run.get("per_op")) if isinstance(o, dict)),
                         key=lambda o: -(_num(o.get("median_us")) or 0))[:TOP_NODES]
            if ops:
                top_ops.append(_table(
                    [_Col("kernel", wrap=True), _Col("op type"), _Col("calls", True), _Col("median µs", True),
                     _Col("source nodes", wrap=True)],
                    [[_Html(f"<code>{_e(o.get('node'))}</code>"), _s(o.get("op_type")), _int_text(o.get("calls")),
                      _fixed(o.get("median_us"), 1), ", ".join(str(n) for n in _l(o.get("source_nodes"))) or None]
                     for o in ops],
                    caption=f"{device}, {_int_text(run.get('threads'))} thread(s): slowest kernels"))
    if not rows:
        return None
    table = _table([_Col("device"), _Col("threads", True), _Col("runs", True), _Col("runtime"),
                    _Col("p50 ms", True), _Col("p90 ms", True), _Col("p99 ms", True), _Col("mean ms", True),
                    _Col("stdev ms", True), _Col("first run ms", True), _Col("load ms", True),
                    _Col("peak RSS +", True), _Col("machine", wrap=True)], rows)
    return _Html(table + "".join(top_ops))


def _pruning_section(report: dict[str, Any]) -> _Html | None:
    """Convert reports with --prune: one row per step, the fine-tuning curve, not-faster flags."""
    pruning = _d(_d(report.get("summary")).get("pruning"))
    steps = [_d(step) for step in _l(pruning.get("steps"))]
    if not steps:
        return None
    targets = list(_d(steps[0].get("estimated_latency_ms")))
    rows = []
    for step in steps:
        estimates = _d(step.get("estimated_latency_ms"))
        ratio = _num(step.get("host_latency_ratio"))
        host = fmt_ms(step.get("host_latency_ms"))
        quality = (_fixed(step.get("accuracy"), 4) if _num(step.get("accuracy")) is not None else
                   (f"cos {_fixed(step.get('fidelity'), 4)}" if _num(step.get("fidelity")) is not None else None))
        rows.append([_s(step.get("step")), fmt_count(step.get("params")), fmt_count(step.get("macs")),
                     fmt_bytes(step.get("size_bytes")), *(fmt_ms(estimates.get(t)) for t in targets),
                     f"{host} ({ratio:.2f}x)" if ratio is not None else host, quality])
    table = _table([_Col("step"), _Col("params", True), _Col("MACs", True), _Col("size", True),
                    *(_Col(f"est. {t} ms", True) for t in targets), _Col("host ms (x unpruned)", True),
                    _Col("accuracy", True)], rows,
                   caption=f"ratio {_fixed(pruning.get('ratio'), 2)}, channels rounded to multiples of "
                           f"{_int_text(pruning.get('channel_multiple')) or '1'}")
    parts = [table]
    attention = [_d(a) for a in _l(pruning.get("attention"))]
    if attention:
        parts.append(_table([_Col("attention module", wrap=True), _Col("heads", True), _Col("head size", True)],
                            [[_Html(f"<code>{_e(a.get('name'))}</code>"),
                              f"{_int_text(a.get('heads_before'))} → {_int_text(a.get('heads_after'))}",
                              f"{_int_text(a.get('head_size_before'))} → {_int_text(a.get('head_size_after'))}"]
                             for a in attention], caption="attention heads"))
    stage = next((_d(st) for st in _l(report.get("stages")) if _d(st).get("name") == "prune"), {})
    curve = [_d(e) for e in _l(_d(_d(stage.get("details")).get("finetune")).get("curve"))]
    if curve:
        parts.append(_table([_Col("epoch", True), _Col("train loss", True), _Col("val loss", True),
                             _Col("val accuracy", True), _Col("lr", True)],
                            [[_int_text(e.get("epoch")), _fixed(e.get("train_loss"), 4), _fixed(e.get("val_loss"), 4),
                              _fixed(e.get("val_accuracy"), 4), _sci(e.get("lr"))] for e in curve],
                            caption="fine-tuning curve"))
    flags = [str(f) for f in _l(pruning.get("not_faster"))]
    if flags:
        parts.append(_notes(flags))
    return _Html("".join(parts))


def _device_section(report: dict[str, Any]) -> _Html | None:
    """convert --ssh: the final model (and its float baseline) measured on the device."""
    stage = next((_d(st) for st in _l(report.get("stages")) if _d(st).get("name") == "device"), None)
    if stage is None:
        return None
    rows = []
    for label, run in _d(_d(stage.get("details")).get("measurements")).items():
        run = _d(run)
        latency = _d(run.get("latency_ms"))
        rows.append([label, fmt_ms(latency.get("p50")), fmt_ms(latency.get("p90")), fmt_ms(latency.get("p99")),
                     fmt_bytes(_d(run.get("memory")).get("peak_rss_increase_bytes")),
                     _s(_d(run.get("device")).get("cpu_model")) or _s(_d(run.get("device")).get("machine"))])
    if not rows:
        return None
    host = _s(_d(stage.get("options")).get("ssh"))
    return _table([_Col("model"), _Col("p50 ms", True), _Col("p90 ms", True), _Col("p99 ms", True),
                   _Col("peak RSS +", True), _Col("device", wrap=True)], rows, caption=f"measured on {host}")


def _comparisons_section(report: dict[str, Any]) -> _Html | None:
    parts = []
    for comparison in _l(report.get("comparisons")):
        comparison = _d(comparison)
        by_op = {str(k): _d(v) for k, v in _d(comparison.get("by_op_type")).items()}
        total = _d(comparison.get("total"))
        title = (f"estimate for {_s(comparison.get('target')) or '?'} vs measurement on "
                 f"{_s(comparison.get('device')) or 'host'}, {_int_text(comparison.get('threads'))} thread(s)")
        ordered = sorted(by_op.items(), key=lambda kv: -max(_num(kv[1].get("estimated_ms")) or 0,
                                                          _num(kv[1].get("measured_ms")) or 0))
        rows = [[op, fmt_ms(v.get("estimated_ms")), fmt_ms(v.get("measured_ms")), _ratio(v.get("ratio"))]
                for op, v in ordered]
        rows.append([_Html("<strong>total</strong>"), fmt_ms(total.get("estimated_ms")),
                     fmt_ms(total.get("measured_ms")), _ratio(total.get("ratio"))])
        chart_rows = [_ChartRow(op, [
            _Bar([_Segment(_num(v.get("estimated_ms")) or 0, "c-est", f"{op}: estimated")],
                 f"{fmt_ms(v.get('estimated_ms'))} ms est."),
            _Bar([_Segment(_num(v.get("measured_ms")) or 0, "c-meas", f"{op}: measured")],
                 f"{fmt_ms(v.get('measured_ms'))} ms meas.")]) for op, v in ordered]
        parts.append('<div class="pair"><div>'
                     + _table([_Col("op type"), _Col("estimated ms", True), _Col("measured ms", True),
                               _Col("est / meas", True)], rows, caption=title, row_classes=[""] * len(ordered)
                              + ["row-total"])
                     + "</div><div>"
                     + _bar_chart(f"per op type, ms ({_s(comparison.get('target'))})", chart_rows,
                                  [("c-est", "estimated"), ("c-meas", "measured")], width=_PAIR_CHART_WIDTH)
                     + "</div></div>")
    return _Html("".join(parts)) if parts else None


def _footer(report: dict[str, Any], source_label: str | None) -> _Html:
    versions = _d(report.get("tool_versions"))
    command = [str(a) for a in _l(report.get("command"))]
    parts = []
    if command:
        parts.append(f"<div><strong>command</strong> <code>{_e(shlex.join(command))}</code></div>")
    if versions:
        parts.append("<div><strong>versions</strong> " + ", ".join(f"{_e(k)} {_e(v)}" for k, v in versions.items())
                     + "</div>")
    origin = f" from <code>{_e(source_label)}</code>" if source_label else ""
    parts.append(f'<div class="muted">rendered by edgeopt{origin}; self-contained: no scripts, nothing loaded '
                 f"from the network</div>")
    return _Html(f"<footer>{''.join(parts)}</footer>")


# --------------------------------------------------------------------------- the page


def render_html(report: dict[str, Any], gate: dict[str, Any] | None = None, *,
                source_label: str | None = None) -> str:
    """The whole page for one convert or profile report dict (as read from its JSON), with the
    budget table of a gate result when given. Pure: no I/O, deterministic for the same input."""
    kind = report.get("kind", "convert")
    sections: list[_Section | None] = []
    if gate is not None:
        sections.append(_guarded("budgets", "Budgets", lambda: _gate_section(gate)))
    if kind == "profile":
        sections += [
            _guarded("targets", "Targets: latency and memory", lambda: _targets_section(report)),
            _guarded("nodes", "Heaviest nodes", lambda: _heaviest_section(report)),
            _guarded("measurements", "Measurements", lambda: _measurements_section(report)),
            _guarded("comparison", "Estimate vs measurement", lambda: _comparisons_section(report)),
        ]
    else:
        sections += [
            _guarded("stages", "Pipeline stages", lambda: _stages_section(report)),
            _guarded("parity", "Parity checks", lambda: _parity_section(report)),
            _guarded("pruning", "Pruning", lambda: _pruning_section(report)),
            _guarded("quantization", "Quantization", lambda: _quantization_section(report)),
            _guarded("targets", "Targets: latency and memory", lambda: _targets_section(report)),
            _guarded("nodes", "Heaviest nodes", lambda: _heaviest_section(report)),
            _guarded("device", "Measured on the device", lambda: _device_section(report)),
            _guarded("comparison", "Estimate vs measurement", lambda: _comparisons_section(report)),
        ]
    present = [s for s in sections if s is not None]
    warnings = _guarded("warnings", "Warnings", lambda: _warnings_section(report))
    header = _guarded("header", "", lambda: _header(report))
    cards = _guarded("summary", "", lambda: _key_cards(report)) if kind != "profile" else None
    nav = "".join(f'<a href="#{s.anchor}">{_e(s.title)}</a>' for s in present)
    body = "".join(f'<section id="{s.anchor}"><h2>{_e(s.title)}</h2>{s.body}</section>' for s in present)
    title = _basename(_d(report.get("model") if kind == "profile" else report.get("source")).get("path")) or "model"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">"
        '<link rel="icon" href="data:,">'
        f"<title>edgeopt {_e(kind)} report: {_e(title)}</title><style>{_CSS}</style></head><body><main>"
        + (header.body if header else "")
        + (cards.body if cards else "")
        + (f'<section id="warnings" class="warnings"><h2>Warnings</h2>{warnings.body}</section>' if warnings else "")
        + (f'<nav>{nav}</nav>' if nav else "")
        + body
        + _footer(report, source_label)
        + "</main></body></html>\n"
    )


_CSS = """
:root{--fg:#1f2430;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff;--accent:#2f6fde;
--ok:#127a3e;--ok-bg:#e3f5ea;--bad:#b42318;--bad-bg:#fde8e6;--warn:#8a5a00;--warn-bg:#fff3d6;
--est:#2f6fde;--meas:#e07b24;--weights:#5b6ee1;--act:#4fb3bf;--float:#98a2b3;--int8:#2f6fde}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 28px 40px}
header{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin-bottom:14px}
.kicker{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.06em}
h1{margin:2px 0 10px;font-size:24px;overflow-wrap:anywhere}
h2{font-size:17px;margin:0 0 12px}
h3{font-size:12px;margin:0 0 6px;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.groups{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px 28px}
dl.facts{margin:0;display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}
dl.facts div{display:contents}
dt{color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
code{font:12.5px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f1f3f6;padding:1px 4px;
border-radius:4px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 14px}
.card .label{color:var(--muted);font-size:12px}
.card .value{font-size:20px;font-weight:600;font-variant-numeric:tabular-nums}
.card .sub{color:var(--muted);font-size:12px;overflow-wrap:anywhere}
nav{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 14px}
nav a{color:var(--accent);text-decoration:none;background:var(--card);border:1px solid var(--line);
border-radius:999px;padding:3px 12px;font-size:13px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin-bottom:14px}
section.warnings{border-color:#f3d48a;background:#fffbf0}
.table-wrap{overflow-x:auto;margin:0 0 12px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:10px 0 6px}
th{text-align:left;font-size:12px;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);
padding:6px 7px;white-space:nowrap}
td{padding:6px 7px;border-bottom:1px solid #f0f2f5;vertical-align:top}
th.num,td.num{text-align:right;white-space:nowrap}
td.wrap{word-break:break-word;min-width:140px}
td.span{padding-top:0}
tr.row-ref td{color:var(--muted)}
tr.row-chosen td{background:#eef4ff}
tr.row-bad td{background:var(--bad-bg)}
tr.row-total td{border-top:1px solid var(--line);font-weight:600}
tr.row-notes td{border-bottom:1px solid var(--line)}
.sub-notes{color:var(--muted);font-size:12.5px;padding-left:10px;border-left:2px solid var(--line)}
.badge{display:inline-block;font-size:12px;font-weight:600;padding:1px 8px;border-radius:999px;white-space:nowrap}
.badge.ok{color:var(--ok);background:var(--ok-bg)}
.badge.bad{color:var(--bad);background:var(--bad-bg)}
.badge.warn{color:var(--warn);background:var(--warn-bg)}
.badge.muted{color:var(--muted);background:#eef0f3}
.muted{color:var(--muted)}
.small{font-size:12px}
.error{color:var(--bad)}
.warn-text{color:var(--warn);font-size:12.5px}
p.verdict{margin:0 0 10px}
.reason{color:var(--fg)}
ul.notes{margin:6px 0 0;padding-left:18px}
ul.notes.warn li{color:var(--warn)}
figure.chart{margin:6px 0 16px;overflow-x:auto}
figure.chart svg{max-width:100%;height:auto}
figcaption{font-weight:600;margin-bottom:4px}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:var(--fg)}
svg text.value{font-variant-numeric:tabular-nums}
svg text.note,svg text.legend{fill:var(--muted)}
svg line.axis{stroke:#c9ced6}
svg .c-est{fill:var(--est)} svg .c-meas{fill:var(--meas)} svg .c-weights{fill:var(--weights)}
svg .c-act{fill:var(--act)} svg .c-float{fill:var(--float)} svg .c-int8{fill:var(--int8)}
.pair{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,600px);gap:24px;align-items:start}
footer{color:var(--fg);font-size:12.5px;padding:8px 4px;display:grid;gap:4px;word-break:break-word}
@media (max-width:900px){.pair{grid-template-columns:1fr}}
@media print{body{background:#fff}section,header,.card{break-inside:avoid}}
"""
