"""The sections about the run itself: header, key figures, warnings, budgets, stages, cost, parity,
quantization. They read the typed report (report.schema.Report) and gate result (gate.checks.GateResult)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeopt.formats.artifact import ModelArtifact
from edgeopt.gate.checks import GateResult
from edgeopt.report.html.blocks import (
    DASH,
    Bar,
    ChartRow,
    Col,
    Html,
    Segment,
    Span,
    badge_html,
    bar_chart,
    base_name,
    cards_html,
    duration_text,
    esc,
    facts_html,
    fixed_html,
    fmt_bytes,
    fmt_count,
    fmt_ms,
    join_html,
    notes_html,
    para,
    ratio_html,
    sci,
    short_sha,
    table_html,
)
from edgeopt.report.html.constants import GATE_STATUSES
from edgeopt.report.profile_schema import ProfileReport
from edgeopt.report.schema import Report
from edgeopt.stages.common.parity import ParityCheck
from edgeopt.stages.common.records import StageRecord
from edgeopt.metrics.fidelity import DEFAULT_MIN_COSINE, OutputFidelity
from edgeopt.stages.quantize.outcome import Candidate
from edgeopt.stages.quantize.step import QuantizeDetails
from edgeopt.stages.widen import WidenDetails

# --------------------------------------------------------------------------- sections


@dataclass
class Section:
    anchor: str
    title: str
    body: Html


def section(anchor: str, title: str, body: Html | None) -> Section | None:
    return Section(anchor, title, body) if body else None


def artifact_facts(artifact: ModelArtifact | None) -> list[tuple[str, object]]:
    if artifact is None:
        return []
    return [
        ("path", artifact.path),
        ("format", artifact.format.value),
        ("size", fmt_bytes(artifact.size_bytes, exact=True) if artifact.size_bytes is not None else None),
        ("sha256", Html(f'<code title="{esc(artifact.sha256)}">{esc(short_sha(artifact.sha256))}</code>')
         if artifact.sha256 else None),
        ("opset", artifact.opset),
        ("external files", ", ".join(str(f) for f in artifact.external_files) or None),
    ]


def header_html(report: Report | ProfileReport) -> Html:
    if isinstance(report, ProfileReport):
        name = base_name(report.model.path) or "model"
        subtitle = "edgeopt profile"
        groups = [("Model", artifact_facts(report.model) + [
            ("input shapes", ", ".join(f"{k}={'x'.join(str(d) for d in v)}"
                                       for k, v in report.input_shapes.items()) or None)])]
    else:
        name = base_name(report.source.path if report.source else report.config.get("source")) or "model"
        subtitle = "edgeopt convert"
        groups = [("Final artifact", artifact_facts(report.final)), ("Source", artifact_facts(report.source))]
    run = [("edgeopt", report.edgeopt_version), ("created", report.created_at), ("report kind", report.kind)]
    blocks = "".join(f'<div class="group"><h3>{esc(title)}</h3>{facts_html(items)}</div>' for title, items in groups
                     if any(v is not None for _, v in items))
    blocks += f'<div class="group"><h3>Run</h3>{facts_html(run)}</div>'
    return Html(f'<header><div class="kicker">{esc(subtitle)}</div><h1>{esc(name)}</h1>'
                f'<div class="groups">{blocks}</div></header>')


def key_cards(report: Report) -> Html:
    summary = report.summary
    quant, parity = summary.quantization, summary.parity
    size = summary.size_bytes if summary.size_bytes is not None else (report.final.size_bytes if report.final else None)
    parity_text = None
    if parity is not None:
        parity_text = "all passed" if parity.all_passed else "FAILED"
        if not parity.checks and parity.all_passed:
            parity_text = "no checks"
    return cards_html([
        ("final size", fmt_bytes(size) if size is not None else None, f"{size:,} bytes" if size is not None else None),
        ("gzip size", fmt_bytes(summary.gzip_size_bytes) if summary.gzip_size_bytes is not None else None,
         "OTA download"),
        ("parameters", fmt_count(summary.parameter_count) if summary.parameter_count is not None else None, None),
        ("MACs", fmt_count(summary.macs_total) if summary.macs_total is not None else None, "per inference"),
        ("nodes", summary.nodes, f"opset {summary.opset}" if summary.opset is not None else None),
        ("shipped", quant.shipped, quant.recipe),
        ("parity", parity_text,
         (f"min cosine {fixed_html(parity.min_cosine, 6)} · max |Δ| {sci(parity.max_abs_diff)}"
          if parity is not None and parity.min_cosine is not None else None)),
    ])


def warnings_section(report: Report | ProfileReport) -> Html | None:
    messages = [m for m in report.warnings if m]
    return notes_html(messages) if messages else None


def gate_section(gate: GateResult) -> Html:
    checks = gate.checks
    counts = {status: sum(1 for c in checks if c.status == status) for status in GATE_STATUSES}
    verdict = badge_html("PASSED", "ok") if gate.passed else badge_html("FAILED", "bad")
    tally = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    head = Html(f'<p class="verdict">{verdict} {esc(tally or "no checks")}'
                + (f' &middot; config <code>{esc(gate.config)}</code>' if gate.config else "")
                + "</p>")
    rows, classes = [], []
    for check in checks:
        limit = check.limit_text or (str(check.limit) if check.limit is not None else None)
        actual = check.actual_text or (str(check.actual) if check.actual is not None else None)
        delta, delta_pct = check.delta, check.delta_pct
        if delta is not None or delta_pct is not None:
            delta_text = (fmt_bytes(delta) if check.unit == "bytes" and delta is not None else
                          (f"{delta:+,.4g} {check.unit}".strip() if delta is not None else ""))
            if check.unit == "bytes" and delta is not None and delta > 0:
                delta_text = "+" + delta_text
            delta_cell = f"{delta_text} ({delta_pct:+.2f}%)" if delta_pct is not None else delta_text
        else:
            delta_cell = None
        baseline = check.baseline
        baseline_cell = fmt_bytes(baseline) if check.unit == "bytes" and baseline is not None else baseline
        # where the actual number came from (file, estimate for T, ...)
        actual_cell = (Html(f'{esc(actual or DASH)}<div class="small muted">{esc(check.source)}</div>')
                       if check.source else actual)
        rows.append([check.budget or check.artifact, check.target, check.metric, limit, actual_cell, baseline_cell,
                     delta_cell, badge_html(check.status), check.message, check.line])
        classes.append("row-bad" if check.status in ("fail", "error") else "")
    table = table_html([Col("budget", wrap=True), Col("target"), Col("metric"), Col("limit", True),
                        Col("actual", True), Col("baseline", True), Col("change", True), Col("status"),
                        Col("message", wrap=True), Col("line", True)], rows, row_classes=classes) if rows else \
        para("the gate result lists no checks", "muted")
    return Html(head + table)


def parity_cell(checks: list[ParityCheck]) -> Html | None:
    if not checks:
        return None
    passed = all(c.passed for c in checks)
    cosines = [o.cosine for c in checks for o in c.outputs if o.cosine is not None]
    diffs = [o.max_abs_diff for c in checks for o in c.outputs]
    detail = []
    if cosines:
        detail.append(f"worst cosine {min(cosines):.6f}")
    if diffs:
        detail.append(f"max |Δ| {sci(max(diffs))}")
    return Html(f'{badge_html("pass" if passed else "fail")} <span class="muted">{esc(", ".join(detail))}</span>')


def stages_section(report: Report) -> Html | None:
    if not report.stages:
        return None
    rows: list[list[object]] = []
    for stage in report.stages:
        outputs = stage.outputs
        out_html = join_html(Html(f'<div><code>{esc(base_name(o.path))}</code></div>') for o in outputs) \
            if outputs else None
        size_html = join_html(Html(f'<div>{esc(fmt_bytes(o.size_bytes))} '
                                   f'<span class="muted">({esc(int_text(o.size_bytes))} B)</span></div>')
                              for o in outputs) if outputs else None
        rows.append([stage.name, badge_html(stage.status), duration_text(stage.duration_s), out_html, size_html,
                     parity_cell(stage.parity), stage_note(stage)])
        for message in stage.warnings:
            rows.append([Span(Html(f'<span class="warn-text">⚠ {esc(message)}</span>'))])
    table = table_html([Col("stage"), Col("status"), Col("duration", True), Col("output"), Col("size", True),
                        Col("parity vs source"), Col("notes", wrap=True)], rows)
    total = sum(s.duration_s for s in report.stages)
    return Html(table + para(f"total {duration_text(total)} over {len(report.stages)} stages", "muted small"))


MIB = 1024 * 1024


def mib_text(value: int | None) -> str:
    return DASH if value is None else f"{value / MIB:,.1f}"


def cost_section(report: Report) -> Html | None:
    """What the run itself cost, per stage: wall time and the process's peak RSS (MiB), with the quantize
    stage's memory estimate beside its measurement."""
    measured = [s for s in report.stages if s.peak_rss_bytes is not None]
    if not measured:
        return None  # reports from before stage costs were recorded
    rows = []
    for stage in report.stages:
        memory = stage.details.memory if isinstance(stage.details, QuantizeDetails) else None
        note = None
        if memory is not None and memory.estimate is not None:
            note = (f"expected ~{memory.estimate.expected_peak_bytes / MIB:,.0f} MiB at calibration batch "
                    f"{memory.calibration_batch}")
            if memory.requested_batch != memory.calibration_batch:
                note += f" (lowered from {memory.requested_batch} to fit {memory.limit})"
        rows.append([stage.name, duration_text(stage.duration_s), mib_text(stage.peak_rss_bytes),
                     mib_text(stage.peak_rss_increase_bytes), note])
    total = sum(s.duration_s for s in report.stages)
    peak = max(s.peak_rss_bytes or 0 for s in measured)
    table = table_html([Col("stage"), Col("time", True), Col("peak RSS (MiB)", True), Col("added (MiB)", True),
                        Col("notes", wrap=True)], rows)
    how = ("each stage's own peak (the high-water mark is reset as it starts); added: over what was resident then"
           if {s.peak_rss_scope for s in measured} == {"stage"} else
           "the process's peak up to the end of each stage (this system cannot reset it per stage); added: how far "
           "the stage raised it")
    return Html(table + para(f"total {duration_text(total)}, peak {peak / MIB:,.1f} MiB. Peak RSS: {how}.",
                             "muted small"))


def int_text(value: float | None) -> str:
    return DASH if value is None else f"{int(value):,}"


def stage_note(stage: StageRecord) -> str | None:
    details = stage.details
    nodes_before, nodes_after = getattr(details, "nodes_before", None), getattr(details, "nodes_after", None)
    if nodes_before is not None and nodes_after is not None:
        return f"nodes {int_text(nodes_before)} → {int_text(nodes_after)}"
    exporter = getattr(details, "exporter", None)
    if exporter:
        batch = getattr(details, "dynamic_batch", None)
        return f"exporter {exporter}" + ("" if batch is None else f", {'dynamic' if batch else 'static'} batch")
    if isinstance(details, QuantizeDetails) and details.mode:
        return f"shipped {details.shipped}" + (f": {details.chosen}" if details.chosen else "")
    if isinstance(details, WidenDetails) and details.convs:
        widened = [c for c in details.convs if c.factor]
        return (f"{len(widened)} of {len(details.convs)} thin Convs widened (timed on {details.measured_on}): "
                + ", ".join(f"{c.channels}→{c.channels * c.factor} channels {c.ratio:.2f}x" for c in widened)
                if widened else f"none of {len(details.convs)} thin Convs faster widened (timed on "
                f"{details.measured_on})")
    if stage.name == "opset" and "from" in stage.options and "to" in stage.options:
        return f"opset {stage.options['from']} → {stage.options['to']}"
    return None


def parity_section(report: Report) -> Html | None:
    rows, classes = [], []
    checks = [(stage.name, check) for stage in report.stages for check in stage.parity]
    for name, check in checks:
        for output in check.outputs:
            rows.append([name, base_name(check.candidate), check.reference, check.samples,
                         ", ".join(str(b) for b in check.batch_sizes) or None, output.name,
                         sci(output.max_abs_diff), sci(output.max_rel_diff),
                         "exact" if output.exact and output.cosine is None else fixed_html(output.cosine, 6),
                         badge_html("pass" if output.passed else "fail")])
            classes.append("" if output.passed else "row-bad")
    if not rows:
        return None
    first = checks[0][1]
    rule = (f"an output passes when max|Δ| ≤ {sci(first.atol)} + {sci(first.rtol)}·max|reference| "
            f"and cosine ≥ {first.min_cosine}; every graph is compared with the source")
    return Html(table_html([Col("stage"), Col("graph"), Col("reference"), Col("samples", True),
                            Col("batch sizes", True), Col("output"), Col("max |Δ|", True), Col("max rel Δ", True),
                            Col("cosine", True), Col("result")], rows, row_classes=classes)
                + para(rule, "muted small"))


def worst_of(outputs: list[OutputFidelity], key: str) -> float | None:
    values = [getattr(o, key) for o in outputs if getattr(o, key) is not None]
    return min(values) if values else None


def quantization_section(report: Report) -> Html | None:
    stage = report.stage("quantize")
    details = stage.details if stage is not None and isinstance(stage.details, QuantizeDetails) else None
    summary = report.summary.quantization
    if details is None and stage is None and summary.reason is None and summary.recipe is None:
        return None
    parts: list[str] = []
    shipped = (details.shipped if details is not None and details.mode else None) or summary.shipped
    chosen = (details.chosen if details is not None else None) or summary.recipe
    reason = (details.reason if details is not None else None) or summary.reason
    parts.append(f'<p class="verdict">{badge_html(shipped or "unknown")} '
                 + (f"<code>{esc(chosen)}</code> " if chosen and not (reason or "").startswith(chosen) else "")
                 + (f'<span class="reason">{esc(reason)}</span>' if reason else "") + "</p>")
    facts: list[tuple[str, object]] = []
    if details is not None:
        floor = details.floor
        latency = details.float_latency
        facts += [("mode", details.mode or None), ("recipe target", details.target or None),
                  ("fidelity floor", ((f"cosine ≥ {floor['min_cosine']}" if floor.get("min_cosine") is not None
                                       else f"task metrics; cosine ≥ {DEFAULT_MIN_COSINE} where none applies")
                                      + (f", top-1 ≥ {floor['min_top1']}" if floor.get("min_top1") is not None else ""))
                   if floor else None),
                  ("float model", fmt_bytes(details.float_size_bytes, exact=True) if details.float_size_bytes else None),
                  ("float latency (host)", f"{fmt_ms(latency.median_ms)} ms median, {int_text(latency.runs)} runs, "
                                           f"{latency.threads or '?'} thread(s)" if latency is not None else None)]
        data = details.data
        for label, item in (("calibration data", data.calibration if data else None),
                            ("evaluation data", data.eval if data else None)):
            if item is not None:
                text = f"{item.source}: {int_text(item.count)} samples"
                if item.random:
                    text += " (RANDOM inputs)"
                if item.labels:
                    text += ", with labels"
                if item.sha256:
                    text += f", sha256 {short_sha(item.sha256)}"
                facts.append((label, text))
    accuracy = (f"{fixed_html(summary.accuracy_float, 4)} → {fixed_html(summary.accuracy_int8, 4)}"
                if summary.accuracy_float is not None else None)
    facts += [("decided by", summary.decided_by or None),
              ("worst output cosine", fixed_html(summary.worst_cosine, 4) if summary.worst_cosine is not None else None),
              ("accuracy float → int8", accuracy),
              ("size ratio", ratio_html(summary.size_ratio) if summary.size_ratio is not None else None),
              ("latency ratio", ratio_html(summary.latency_ratio) if summary.latency_ratio is not None else None),
              ("kept in float", ", ".join(summary.float_nodes) or None)]
    if details is not None:
        for judged in details.metrics:
            where = "every output" if judged.get("output") == "*" else f"output {judged.get('output')}"
            facts.append((f"metric for {where}",
                          f"{judged.get('metric')} ≥ {judged.get('floor')} ({judged.get('chosen')})"))
    parts.append(facts_html(facts))
    if details is not None and details.candidates:
        parts.append(candidates_table(details, chosen if shipped == "int8" else None))
        parts.append(candidates_chart(details))
    if details is not None:
        parts.append(notes_html([w for w in details.warnings if w not in report.warnings]))
    return Html("".join(parts))


def _candidate_notes(candidate: Candidate, outputs: list[OutputFidelity]) -> list[str]:
    notes: list[str] = []
    if candidate.reason:
        notes.append(f"why tried: {candidate.reason}")
    if candidate.rejection:
        notes.append(f"not shipped: {candidate.rejection}")
    if candidate.float_nodes:
        notes.append(f"kept in float ({len(candidate.float_nodes)}): {', '.join(candidate.float_nodes)}")
    if candidate.int8_activations:
        notes.append(f"HardSwish/HardSigmoid on int8 kernels ({len(candidate.int8_activations)}; onnxruntime has "
                     f"none, rewritten as int8 Add/Mul): {', '.join(candidate.int8_activations)}")
    for metric in candidate.fidelity.metrics if candidate.fidelity else []:
        notes.append(f"{metric.output}: {metric.metric} {fixed_html(metric.score, 4)} "
                     f"(floor {metric.floor}, {'passes' if metric.passed else 'fails'})")
    if candidate.mixed_precision_ranking:
        notes.append("mixed precision ranking (revert alone → margin gained): " + "; ".join(
            f"{'+'.join(r.nodes)} {fixed_html(r.effect, 4)}" for r in candidate.mixed_precision_ranking))
    for index, step in enumerate(candidate.mixed_precision, start=1):
        judged = step.verdict or f"worst cosine {fixed_html(step.worst_cosine, 4)}"
        notes.append(f"mixed precision step {index}: {len(step.float_nodes)} node(s) in float → {judged}"
                     + (" (meets the floor)" if step.meets_floor else ""))
    if candidate.mixed_precision_stop:
        notes.append(f"mixed precision stopped: {candidate.mixed_precision_stop}")
    for trial in candidate.speed_fallback:
        outcome = (f"whole model {fixed_html(trial.latency_ratio, 3)}x → "
                   + ("kept in float" if trial.accepted else "stays int8")
                   if trial.latency_ratio is not None else f"stays int8 ({trial.note})")
        notes.append(f"speed: {', '.join(trial.nodes)} profiled {fixed_html(trial.int8_us, 1)} µs int8 vs "
                     f"{fixed_html(trial.float_us, 1)} µs float; " + outcome)
    if len(outputs) > 1:
        for output in outputs:
            notes.append(f"output {output.name}: cosine {fixed_html(output.cosine_mean, 4)}, "
                         f"worst channel {fixed_html(output.channel_cosine_min, 4)}"
                         + (f" (#{output.worst_channel})" if output.worst_channel is not None else "")
                         + f", SQNR {fixed_html(output.sqnr_db, 1)} dB")
    return notes


def candidates_table(details: QuantizeDetails, chosen: str | None) -> Html:
    columns = [Col("candidate", wrap=True, min_width=230), Col("size", True), Col("quantized", True),
               Col("cosine", True), Col("worst channel", True), Col("SQNR", True), Col("max |err|", True),
               Col("top-1", True), Col("accuracy", True), Col("latency", True), Col("vs float", True)]
    rows: list[list[object]] = []
    classes: list[str] = []
    float_latency = details.float_latency
    if float_latency is not None or details.float_size_bytes:
        rows.append(["float model (reference)", fmt_bytes(details.float_size_bytes or None),
                     None, fixed_html(1, 4), fixed_html(1, 4), None, None, None, None,
                     f"{fmt_ms(float_latency.median_ms)} ms" if float_latency is not None else None,
                     ratio_html(1.0) if float_latency is not None else None])
        classes.append("row-ref")
    for candidate in details.candidates:
        fidelity = candidate.fidelity
        outputs = fidelity.outputs if fidelity else []
        is_chosen = chosen is not None and candidate.name == chosen
        name_cell = Html(f"<code>{esc(candidate.name)}</code> {badge_html(candidate.status)}"
                         + (" " + badge_html("chosen", "ok") if is_chosen else ""))
        accuracy = (f"{fixed_html(fidelity.accuracy_reference, 3)} → {fixed_html(fidelity.accuracy_candidate, 3)}"
                    if fidelity is not None and fidelity.accuracy_candidate is not None else None)
        coverage = (f"{int_text(candidate.quantized_nodes)}/{int_text(candidate.quantizable_nodes)}"
                    if candidate.quantized_nodes is not None else None)
        size = candidate.size_bytes
        size_cell = (f"{fmt_bytes(size)} ({ratio_html(candidate.size_ratio)})"
                     if size is not None and candidate.size_ratio is not None else fmt_bytes(size))
        sqnr, top1, exact = worst_of(outputs, "sqnr_db"), worst_of(outputs, "top1_agreement"), \
            worst_of(outputs, "exact_agreement")
        rows.append([name_cell, size_cell, coverage,
                     fixed_html(worst_of(outputs, "cosine_mean"), 4),
                     fixed_html(worst_of(outputs, "channel_cosine_min"), 4),
                     f"{sqnr:.1f} dB" if sqnr is not None else None,
                     sci(max((o.max_abs_error for o in outputs), default=None)),
                     fixed_html(top1, 3) if top1 is not None else (f"exact {exact:.3f}" if exact is not None else None),
                     accuracy,
                     f"{fmt_ms(candidate.latency.median_ms)} ms" if candidate.latency is not None else None,
                     ratio_html(candidate.latency_ratio) if candidate.latency_ratio is not None else None])
        classes.append("row-chosen" if is_chosen else "")
        notes = _candidate_notes(candidate, outputs)
        if notes:
            rows.append([Span(Html('<div class="sub-notes">' + "".join(f"<div>{esc(n)}</div>" for n in notes)
                                   + "</div>"))])
            classes.append("row-notes row-chosen" if is_chosen else "row-notes")
    timed = float_latency is not None or any(c.latency is not None for c in details.candidates)
    if not timed:  # latency is only measured when the recipe target is this machine
        columns = columns[:-2]
        rows = [row if len(row) == 1 and isinstance(row[0], Span) else row[:-2] for row in rows]
    return table_html(columns, rows, row_classes=classes,
                      caption="Candidates tried (cosines, SQNR and max error: the worst output"
                              + ("; latency timed side by side with the float model on this machine)" if timed else
                                 "; latency is measured only when the recipe target is host)"))


def candidates_chart(details: QuantizeDetails) -> Html:
    rows = []
    if details.float_latency is not None:
        median = details.float_latency.median_ms
        rows.append(ChartRow("float", [Bar([Segment(median, "c-float", "float model")], f"{fmt_ms(median)} ms")]))
    for candidate in details.candidates:
        if candidate.latency is None:
            continue
        median, ratio = candidate.latency.median_ms, candidate.latency_ratio
        rows.append(ChartRow(candidate.name, [Bar(
            [Segment(median, "c-int8", candidate.name)],
            f"{fmt_ms(median)} ms" + (f" ({ratio:.2f}× float)" if ratio is not None else ""))]))
    if len(rows) < 2:
        return Html("")
    return bar_chart("Measured latency on this machine (median, ms)", rows)
