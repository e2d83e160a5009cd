"""Gate results as a text table, JUnit XML, Markdown (a pull-request comment) and GitHub Actions
annotations. Pure: nothing here reads a model or runs anything."""

from __future__ import annotations

import re
from xml.etree import ElementTree

from edgeopt.gate.checks import Check, GateResult, format_value
from edgeopt.units import format_bytes, format_count


def _delta_text(check: Check) -> str:
    if check.delta is None:
        return "-"
    if check.unit == "bytes":
        text = ("+" if check.delta >= 0 else "-") + format_bytes(abs(check.delta))
    elif check.unit == "count":
        text = ("+" if check.delta >= 0 else "-") + format_count(abs(check.delta))
    elif check.unit in ("fraction", "points"):
        text = f"{check.delta * 100:+.2f} pt"
    elif check.unit == "ms":
        text = f"{check.delta:+.3g} ms"
    else:
        text = f"{check.delta:+.4f}"
    if check.delta_pct is not None and check.unit not in ("fraction", "points", "cosine"):
        text += f" ({check.delta_pct:+.1f}%)"
    return text


def table_rows(result: GateResult) -> list[tuple[str, str, str, str, str, str]]:
    """(budget, metric, limit, actual, delta vs baseline, status) per check."""
    marks = {"pass": "pass", "fail": "FAIL", "error": "ERROR", "skip": "skipped"}
    return [(c.budget, c.metric + (" growth" if c.kind == "growth" else ""), c.limit_text, c.actual_text,
             _delta_text(c), marks[c.status]) for c in result.checks]


def to_junit(result: GateResult) -> str:
    """JUnit XML: one test case per check (CI systems show failures inline)."""
    failures = sum(c.status == "fail" for c in result.checks)
    errors = sum(c.status == "error" for c in result.checks)
    skipped = sum(c.status == "skip" for c in result.checks)
    suites = ElementTree.Element("testsuites", name="edgeopt gate", tests=str(len(result.checks)),
                                 failures=str(failures), errors=str(errors), skipped=str(skipped))
    suite = ElementTree.SubElement(suites, "testsuite", name="edgeopt gate", tests=str(len(result.checks)),
                                   failures=str(failures), errors=str(errors), skipped=str(skipped), time="0")
    for check in result.checks:
        case = ElementTree.SubElement(suite, "testcase", classname=_xml(check.budget),
                                      name=check.metric + (" growth" if check.kind == "growth" else ""), time="0")
        message = _xml(check.message)
        text = _xml(f"{check.message} (limit {check.limit_text}, actual {check.actual_text}, "
                    f"source {check.source or '-'})")
        if check.status == "fail":
            ElementTree.SubElement(case, "failure", message=message, type="BudgetExceeded").text = text
        elif check.status == "error":
            ElementTree.SubElement(case, "error", message=message, type="MissingInput").text = text
        elif check.status == "skip":
            ElementTree.SubElement(case, "skipped", message=message)
        else:
            ElementTree.SubElement(case, "system-out").text = text
    ElementTree.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(suites, encoding="unicode") + "\n"


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    """Characters XML 1.0 cannot hold (terminal escapes in a name) dropped."""
    return _XML_INVALID.sub("", str(text))


def _md(text: str) -> str:
    """Table-cell safe: pipes and newlines would break the row, HTML would render."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            .replace("\n", " "))


def to_markdown(result: GateResult) -> str:
    """A pull-request comment: verdict, the table, what changed, and the top contributors."""
    failed = sum(c.status == "fail" for c in result.checks)
    errors = sum(c.status == "error" for c in result.checks)
    if result.passed:
        head = f"### ✅ edgeopt gate: all {len(result.checks)} checks within budget"
    elif errors:
        head = f"### ⚠️ edgeopt gate: {errors} check(s) could not be evaluated" + \
               (f", {failed} over budget" if failed else "")
    else:
        head = f"### ❌ edgeopt gate: {failed} of {len(result.checks)} checks over budget"
    lines = [head, ""]
    if result.baseline:
        lines += [f"Baseline: `{_md(result.baseline)}`", ""]
    lines += ["| budget | metric | limit | actual | Δ vs baseline | status |", "|---|---|---|---|---|---|"]
    icons = {"pass": "✅ pass", "fail": "❌ FAIL", "error": "⚠️ ERROR", "skip": "➖ skipped"}
    for check, row in zip(result.checks, table_rows(result)):
        lines.append("| " + " | ".join(_md(cell) for cell in row[:5]) + f" | {icons[check.status]} |")
    changed = [c for c in result.checks if c.kind == "limit" and c.delta not in (None, 0)]
    if changed:
        lines += ["", "#### What changed", ""]
        for c in changed:
            lines.append(f"- **{_md(c.budget)}** {c.metric}: {format_value(c.baseline, c.unit)} → "
                         f"{format_value(c.actual, c.unit)} ({_md(_delta_text(c))})")
    problems = [c for c in result.checks if c.status in ("fail", "error")]
    if problems:
        lines += ["", "#### Problems", ""] + [f"- {_md(c.budget)}: {_md(c.message)}" for c in problems]
    for label, found in result.contributors.items():
        initializers = found.get("initializers") or []
        nodes = found.get("nodes") or []
        if not initializers and not nodes:
            continue
        lines += ["", f"#### Top contributors: {_md(label)}", ""]
        if initializers:
            lines += ["| largest initializers | size | Δ vs baseline |", "|---|---|---|"]
            for item in initializers:
                delta = item.get("delta_bytes")
                lines.append(f"| `{_md(item['name'])}` | {format_bytes(item['bytes'])} | "
                             f"{'new' if item.get('new') else ('-' if delta is None else _signed_bytes(delta))} |")
        if nodes:
            lines += ["", f"| heaviest nodes on {_md(found.get('target') or '-')} | est. time | Δ vs baseline |",
                      "|---|---|---|"]
            for item in nodes:
                delta = item.get("delta_us")
                lines.append(f"| `{_md(item['name'])}` ({_md(item['op_type'])}) | {item['time_us']:.1f} µs | "
                             f"{'new' if item.get('new') else ('-' if delta is None else f'{delta:+.1f} µs')} |")
    for warning in result.warnings:
        lines += ["", f"> {_md(warning)}"]
    return "\n".join(lines) + "\n"


def _signed_bytes(delta: float) -> str:
    return ("+" if delta >= 0 else "-") + format_bytes(abs(delta))


def github_annotations(result: GateResult, config_file: str | None) -> list[str]:
    """``::error`` workflow commands pointing at each failing budget's line in the config file."""
    out = []
    for check in result.checks:
        if check.status not in ("fail", "error"):
            continue
        properties = []
        if config_file:
            properties.append(f"file={_escape_property(config_file)}")
            if check.line:
                properties.append(f"line={check.line}")
        properties.append(f"title={_escape_property('edgeopt gate: ' + check.budget)}")
        out.append(f"::error {','.join(properties)}::{_escape_data(check.message)}")
    return out


def _escape_data(text: str) -> str:
    # GitHub's workflow-command escaping (actions/toolkit command.ts)
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


