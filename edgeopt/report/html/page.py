"""One self-contained HTML page from a convert or profile report (and optionally a gate result).

Nothing is fetched when the page is viewed: CSS and SVG charts are inline, there is no script,
and a Content-Security-Policy forbids loading anything else. Every string taken from a report
is HTML-escaped (``Html`` marks the markup built here; everything else goes through ``esc``).
Sections are drawn from whatever keys are present, so older or partial reports still render;
a section whose data has an unexpected shape says so instead of breaking the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.errors import InputError
from edgeopt.fsutil import read_json

from edgeopt.report.html.constants import REPORT_KINDS
from edgeopt.report.html.blocks import as_dict, base_name, esc
from edgeopt.report.html.convert_sections import Section, cost_section, gate_section, guarded, header_html, key_cards, parity_section, quantization_section, stages_section, warnings_section
from edgeopt.report.html.target_sections import comparisons_section, device_section, footer_html, heaviest_section, measurements_section, pruning_section, targets_section
from edgeopt.report.html.style import CSS


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
    if version not in REPORT_KINDS[kind]:
        raise InputError(f"{path} has {kind} report schema version {version!r}; this edgeopt reads version "
                         f"{' or '.join(map(str, REPORT_KINDS[kind]))}", "regenerate the report with this edgeopt version")
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


# --------------------------------------------------------------------------- the page


def render_html(report: dict[str, Any], gate: dict[str, Any] | None = None, *,
                source_label: str | None = None) -> str:
    """The whole page for one convert or profile report dict (as read from its JSON), with the
    budget table of a gate result when given. Pure: no I/O, deterministic for the same input."""
    kind = report.get("kind", "convert")
    sections: list[Section | None] = []
    if gate is not None:
        sections.append(guarded("budgets", "Budgets", lambda: gate_section(gate)))
    if kind == "profile":
        sections += [
            guarded("targets", "Targets: latency and memory", lambda: targets_section(report)),
            guarded("nodes", "Heaviest nodes", lambda: heaviest_section(report)),
            guarded("measurements", "Measurements", lambda: measurements_section(report)),
            guarded("comparison", "Estimate vs measurement", lambda: comparisons_section(report)),
        ]
    else:
        sections += [
            guarded("stages", "Pipeline stages", lambda: stages_section(report)),
            guarded("cost", "Cost of the run", lambda: cost_section(report)),
            guarded("parity", "Parity checks", lambda: parity_section(report)),
            guarded("pruning", "Pruning", lambda: pruning_section(report)),
            guarded("quantization", "Quantization", lambda: quantization_section(report)),
            guarded("targets", "Targets: latency and memory", lambda: targets_section(report)),
            guarded("nodes", "Heaviest nodes", lambda: heaviest_section(report)),
            guarded("device", "Measured on the device", lambda: device_section(report)),
            guarded("comparison", "Estimate vs measurement", lambda: comparisons_section(report)),
        ]
    present = [s for s in sections if s is not None]
    warnings = guarded("warnings", "Warnings", lambda: warnings_section(report))
    header = guarded("header", "", lambda: header_html(report))
    cards = guarded("summary", "", lambda: key_cards(report)) if kind != "profile" else None
    nav = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in present)
    body = "".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in present)
    title = base_name(as_dict(report.get("model") if kind == "profile" else report.get("source")).get("path")) or "model"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">"
        '<link rel="icon" href="data:,">'
        f"<title>edgeopt {esc(kind)} report: {esc(title)}</title><style>{CSS}</style></head><body><main>"
        + (header.body if header else "")
        + (cards.body if cards else "")
        + (f'<section id="warnings" class="warnings"><h2>Warnings</h2>{warnings.body}</section>' if warnings else "")
        + (f'<nav>{nav}</nav>' if nav else "")
        + body
        + footer_html(report, source_label)
        + "</main></body></html>\n"
    )
