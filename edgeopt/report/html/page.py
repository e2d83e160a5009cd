"""One self-contained HTML page from a convert or profile report (and optionally a gate result).

Nothing is fetched when the page is viewed: CSS and SVG charts are inline, there is no script,
and a Content-Security-Policy forbids loading anything else. Every string taken from a report
is HTML-escaped (``Html`` marks the markup built here; everything else goes through ``esc``).
The page is drawn from the typed reports (report.schema.Report, report.profile_schema.ProfileReport,
gate.checks.GateResult): a document that is not one of them is refused when read, with the place that is
wrong; sections a run did not have are left out.
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.errors import InputError, validated_document
from edgeopt.fsutil import read_json
from edgeopt.gate.checks import GateResult
from edgeopt.report.html.blocks import base_name, esc
from edgeopt.report.html.constants import REPORT_KINDS
from edgeopt.report.html.convert_sections import (
    Section,
    cost_section,
    gate_section,
    header_html,
    key_cards,
    parity_section,
    quantization_section,
    section,
    stages_section,
    warnings_section,
)
from edgeopt.report.html.style import CSS
from edgeopt.report.html.tune_section import tune_section
from edgeopt.report.html.target_sections import (
    comparisons_section,
    device_section,
    footer_html,
    heaviest_section,
    measurements_section,
    pruning_section,
    targets_section,
)
from edgeopt.report.profile_schema import ProfileReport, profile_report_from_json
from edgeopt.report.schema import Report, report_from_json
from edgeopt.report.tune_schema import TuneDocument

# --------------------------------------------------------------------------- reading


def read_report_json(path: Path) -> Report | ProfileReport:
    """A convert report (``OUT/report.json``) or a profile report (``edgeopt profile -o``), validated."""
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
    return profile_report_from_json(raw, str(path)) if kind == "profile" else report_from_json(raw, str(path))


def read_gate_json(path: Path) -> GateResult:
    """A gate result (``edgeopt gate --json``), validated."""
    raw = read_json(path, "gate result", "give the JSON printed by `edgeopt gate --json`")
    if not isinstance(raw, dict) or raw.get("kind") != "gate":
        found = raw.get("kind") if isinstance(raw, dict) else type(raw).__name__
        raise InputError(f"{path} is not a gate result (kind {found!r}, expected 'gate')",
                         "give the JSON printed by `edgeopt gate --json`")
    return validated_document(GateResult, raw, str(path), "gate result",
                              "give the JSON printed by `edgeopt gate --json`")


def read_tune_json(path: Path) -> TuneDocument:
    """``OUT/tune.json`` of `edgeopt tune`, validated."""
    raw = read_json(path, "tune result", "give the tune.json written by `edgeopt tune`")
    if not isinstance(raw, dict) or raw.get("kind") != "tune":
        raise InputError(f"{path} is not a tune result", "give the tune.json written by `edgeopt tune`")
    return validated_document(TuneDocument, raw, str(path), "tune result",
                              "give the tune.json written by `edgeopt tune`")


# --------------------------------------------------------------------------- the page


def render_html(report: Report | ProfileReport, gate: GateResult | None = None, *,
                source_label: str | None = None, tune: TuneDocument | None = None) -> str:
    """The whole page for one convert or profile report, with the budget table of a gate result and the
    tuning section of a tune result when given. Pure: no I/O, deterministic for the same input."""
    sections: list[Section | None] = []
    if gate is not None:
        sections.append(section("budgets", "Budgets", gate_section(gate)))
    if tune is not None:
        sections.append(section("tuning", "Tuning: the trials and their Pareto front", tune_section(tune)))
    if isinstance(report, ProfileReport):
        kind, title = "profile", base_name(report.model.path) or "model"
        sections += [
            section("targets", "Targets: latency and memory", targets_section(report)),
            section("nodes", "Heaviest nodes", heaviest_section(report)),
            section("measurements", "Measurements", measurements_section(report)),
            section("comparison", "Estimate vs measurement", comparisons_section(report)),
        ]
    else:
        kind, title = report.kind, base_name(report.source.path if report.source else None) or "model"
        sections += [
            section("stages", "Pipeline stages", stages_section(report)),
            section("cost", "Cost of the run", cost_section(report)),
            section("parity", "Parity checks", parity_section(report)),
            section("pruning", "Pruning", pruning_section(report)),
            section("quantization", "Quantization", quantization_section(report)),
            section("targets", "Targets: latency and memory", targets_section(report)),
            section("nodes", "Heaviest nodes", heaviest_section(report)),
            section("device", "Measured on the device", device_section(report)),
            section("comparison", "Estimate vs measurement", comparisons_section(report)),
        ]
    present = [s for s in sections if s is not None]
    warnings = warnings_section(report)
    cards = key_cards(report) if isinstance(report, Report) else ""
    nav = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in present)
    body = "".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in present)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">"
        '<link rel="icon" href="data:,">'
        f"<title>edgeopt {esc(kind)} report: {esc(title)}</title><style>{CSS}</style></head><body><main>"
        + header_html(report)
        + cards
        + (f'<section id="warnings" class="warnings"><h2>Warnings</h2>{warnings}</section>' if warnings else "")
        + (f'<nav>{nav}</nav>' if nav else "")
        + body
        + footer_html(report, source_label)
        + "</main></body></html>\n"
    )
