"""The sections about the run itself: header, key figures, warnings, budgets, stages, parity, quantization."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


from edgeopt.report.html.constants import GATE_STATUSES
from edgeopt.report.html.blocks import Bar, ChartRow, Col, DASH, Html, Segment, Span, as_dict, as_list, as_number, as_text, badge_html, bar_chart, base_name, cards_html, duration_text, esc, facts_html, fixed_html, fmt_bytes, fmt_count, fmt_ms, join_html, notes_html, para, ratio_html, sci, short_sha, table_html


# --------------------------------------------------------------------------- sections


@dataclass
class Section:
    anchor: str
    title: str
    body: Html


def guarded(anchor: str, title: str, build: Callable[[], Html | None]) -> Section | None:
    """Build one section; a report whose data has an unexpected shape gets a notice there
    instead of no page at all."""
    try:
        body = build()
    except Exception as exc:  # noqa: BLE001 - any malformed input: say so, render the rest
        body = para(f"this section could not be rendered from the report ({type(exc).__name__}: {exc})", "error")
    return Section(anchor, title, body) if body else None


def artifact_facts(artifact: dict[str, Any]) -> list[tuple[str, Any]]:
    opset = as_text(artifact.get("opset"))
    return [
        ("path", as_text(artifact.get("path"))),
        ("format", as_text(artifact.get("format"))),
        ("size", fmt_bytes(artifact.get("size_bytes"), exact=True) if as_number(artifact.get("size_bytes")) is not None
         else None),
        ("sha256", Html(f'<code title="{esc(artifact.get("sha256"))}">{esc(short_sha(artifact.get("sha256")))}</code>')
         if as_text(artifact.get("sha256")) else None),
        ("opset", opset),
        ("external files", ", ".join(str(f) for f in as_list(artifact.get("external_files"))) or None),
    ]


def header_html(report: dict[str, Any]) -> Html:
    kind = report.get("kind", "convert")
    if kind == "profile":
        model = as_dict(report.get("model"))
        name = base_name(model.get("path")) or "model"
        subtitle = "edgeopt profile"
        groups = [("Model", artifact_facts(model) + [
            ("input shapes", ", ".join(f"{k}={'x'.join(str(d) for d in as_list(v))}"
                                       for k, v in as_dict(report.get("input_shapes")).items()) or None)])]
    else:
        source, final = as_dict(report.get("source")), as_dict(report.get("final"))
        name = base_name(source.get("path")) or base_name(as_dict(report.get("config")).get("source")) or "model"
        subtitle = "edgeopt convert"
        groups = [("Final artifact", artifact_facts(final)), ("Source", artifact_facts(source))]
    run = [("edgeopt", as_text(report.get("edgeopt_version"))), ("created", as_text(report.get("created_at"))),
           ("report kind", as_text(kind))]
    blocks = "".join(f'<div class="group"><h3>{esc(title)}</h3>{facts_html(items)}</div>' for title, items in groups
                     if any(v is not None for _, v in items))
    blocks += f'<div class="group"><h3>Run</h3>{facts_html(run)}</div>'
    return Html(f'<header><div class="kicker">{esc(subtitle)}</div><h1>{esc(name)}</h1>'
                 f'<div class="groups">{blocks}</div></header>')


def key_cards(report: dict[str, Any]) -> Html:
    summary = as_dict(report.get("summary"))
    final = as_dict(report.get("final"))
    quant = as_dict(summary.get("quantization"))
    parity = as_dict(summary.get("parity"))
    size = summary.get("size_bytes", final.get("size_bytes"))
    params = summary.get("parameter_count")
    parity_text = None
    if parity:
        passed = parity.get("all_passed")
        parity_text = ("all passed" if passed else "FAILED") if passed is not None else None
        if not as_number(parity.get("checks")) and passed:
            parity_text = "no checks"
    return cards_html([
        ("final size", fmt_bytes(size) if as_number(size) is not None else None,
         f"{int(as_number(size)):,} bytes" if as_number(size) is not None else None),
        ("gzip size", fmt_bytes(summary.get("gzip_size_bytes")) if as_number(summary.get("gzip_size_bytes")) is not None
         else None, "OTA download"),
        ("parameters", fmt_count(params) if as_number(params) is not None else None, None),
        ("MACs", fmt_count(summary.get("macs_total")) if as_number(summary.get("macs_total")) is not None else None,
         "per inference"),
        ("nodes", as_text(summary.get("nodes")), f"opset {as_text(summary.get('opset'))}" if as_text(summary.get("opset")) else None),
        ("shipped", as_text(quant.get("shipped")), as_text(quant.get("recipe"))),
        ("parity", parity_text,
         (f"min cosine {fixed_html(parity.get('min_cosine'), 6)} · max |Δ| {sci(parity.get('max_abs_diff'))}"
          if as_number(parity.get("min_cosine")) is not None else None)),
    ])


def warnings_section(report: dict[str, Any]) -> Html | None:
    messages = [m for m in as_list(report.get("warnings")) if as_text(m)]
    return notes_html(messages) if messages else None


def gate_section(gate: dict[str, Any]) -> Html:
    checks = [c for c in as_list(gate.get("checks")) if isinstance(c, dict)]
    passed = gate.get("passed")
    counts = {status: sum(1 for c in checks if c.get("status") == status) for status in GATE_STATUSES}
    verdict = badge_html("PASSED", "ok") if passed is True else badge_html("FAILED", "bad") if passed is False else \
        badge_html("no verdict", "muted")
    tally = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    head = Html(f'<p class="verdict">{verdict} {esc(tally or "no checks")}'
                 + (f' &middot; config <code>{esc(gate.get("config"))}</code>' if as_text(gate.get("config")) else "")
                 + "</p>")
    rows, classes = [], []
    for check in checks:
        limit = as_text(check.get("limit_text")) or as_text(check.get("limit"))
        actual = as_text(check.get("actual_text")) or as_text(check.get("actual"))
        delta = as_number(check.get("delta"))
        delta_pct = as_number(check.get("delta_pct"))
        if delta is not None or delta_pct is not None:
            unit = as_text(check.get("unit")) or ""
            delta_text = (fmt_bytes(delta) if unit == "bytes" and delta is not None else
                          (f"{delta:+,.4g} {unit}".strip() if delta is not None else ""))
            if unit == "bytes" and delta is not None and delta > 0:
                delta_text = "+" + delta_text
            delta_cell = f"{delta_text} ({delta_pct:+.2f}%)" if delta_pct is not None else delta_text
        else:
            delta_cell = None
        baseline = check.get("baseline")
        baseline_cell = (fmt_bytes(baseline) if as_text(check.get("unit")) == "bytes" and as_number(baseline) is not None
                         else as_text(baseline))
        line = as_text(check.get("line"))
        source = as_text(check.get("source"))  # where the actual number came from (file, estimate for T, ...)
        actual_cell = Html(f'{esc(actual or DASH)}<div class="small muted">{esc(source)}</div>') if source else actual
        rows.append([as_text(check.get("budget")) or as_text(check.get("artifact")), as_text(check.get("target")),
                     as_text(check.get("metric")), limit, actual_cell, baseline_cell, delta_cell,
                     badge_html(check.get("status")), as_text(check.get("message")), line])
        classes.append("row-bad" if check.get("status") in ("fail", "error") else "")
    table = table_html([Col("budget", wrap=True), Col("target"), Col("metric"), Col("limit", True),
                    Col("actual", True), Col("baseline", True), Col("change", True), Col("status"),
                    Col("message", wrap=True), Col("line", True)], rows, row_classes=classes) if rows else \
        para("the gate result lists no checks", "muted")
    return Html(head + table)


def parity_cell(checks: list[dict[str, Any]]) -> Any:
    if not checks:
        return None
    passed = all(c.get("passed") is True for c in checks)
    cosines = [as_number(o.get("cosine")) for c in checks for o in as_list(c.get("outputs")) if isinstance(o, dict)]
    diffs = [as_number(o.get("max_abs_diff")) for c in checks for o in as_list(c.get("outputs")) if isinstance(o, dict)]
    cosines = [c for c in cosines if c is not None]
    diffs = [d for d in diffs if d is not None]
    detail = []
    if cosines:
        detail.append(f"worst cosine {min(cosines):.6f}")
    if diffs:
        detail.append(f"max |Δ| {sci(max(diffs))}")
    return Html(f'{badge_html("pass" if passed else "fail")} <span class="muted">{esc(", ".join(detail))}</span>')


def stages_section(report: dict[str, Any]) -> Html | None:
    stages = [s for s in as_list(report.get("stages")) if isinstance(s, dict)]
    if not stages:
        return None
    rows: list[list[Any]] = []
    total = 0.0
    for stage in stages:
        outputs = [o for o in as_list(stage.get("outputs")) if isinstance(o, dict)]
        out_html = join_html((Html(f'<div><code>{esc(base_name(o.get("path")))}</code></div>') for o in outputs)) \
            if outputs else None
        size_html = join_html((Html(f'<div>{esc(fmt_bytes(o.get("size_bytes")))} '
                                 f'<span class="muted">({esc(int_text(o.get("size_bytes")))} B)</span></div>')
                           for o in outputs)) if outputs else None
        warnings = [w for w in as_list(stage.get("warnings")) if as_text(w)]
        total += as_number(stage.get("duration_s")) or 0.0
        rows.append([as_text(stage.get("name")), badge_html(stage.get("status")), duration_text(stage.get("duration_s")),
                     out_html, size_html, parity_cell([c for c in as_list(stage.get("parity")) if isinstance(c, dict)]),
                     stage_note(stage)])
        for message in warnings:
            rows.append([Span(Html(f'<span class="warn-text">⚠ {esc(message)}</span>'))])
    table = table_html([Col("stage"), Col("status"), Col("duration", True), Col("output"), Col("size", True),
                    Col("parity vs source"), Col("notes", wrap=True)], rows)
    return Html(table + para(f"total {duration_text(total)} over {len(stages)} stages", "muted small"))


MIB = 1024 * 1024


def mib_text(value: Any) -> str | Html:
    number = as_number(value)
    return DASH if number is None else f"{number / MIB:,.1f}"


def cost_section(report: dict[str, Any]) -> Html | None:
    """What the run itself cost, per stage: wall time and the process's peak RSS (MiB), with the quantize
    stage's memory estimate beside its measurement."""
    stages = [s for s in as_list(report.get("stages")) if isinstance(s, dict)]
    measured = [s for s in stages if as_number(s.get("peak_rss_bytes")) is not None]
    if not measured:
        return None  # reports from before stage costs were recorded
    rows = []
    for stage in stages:
        memory = as_dict(as_dict(stage.get("details")).get("memory"))
        estimate = as_dict(memory.get("estimate"))
        expected = as_number(estimate.get("expected_peak_bytes"))
        note = (f"expected ~{expected / MIB:,.0f} MiB at calibration batch {as_text(memory.get('calibration_batch'))}"
                if expected is not None else None)
        if note and as_number(memory.get("requested_batch")) not in (None, as_number(memory.get("calibration_batch"))):
            note += f" (lowered from {as_text(memory.get('requested_batch'))} to fit {as_text(memory.get('limit'))})"
        rows.append([as_text(stage.get("name")), duration_text(stage.get("duration_s")),
                     mib_text(stage.get("peak_rss_bytes")), mib_text(stage.get("peak_rss_increase_bytes")), note])
    total = sum(as_number(s.get("duration_s")) or 0.0 for s in stages)
    peak = max(as_number(s.get("peak_rss_bytes")) for s in measured)
    table = table_html([Col("stage"), Col("time", True), Col("peak RSS (MiB)", True), Col("added (MiB)", True),
                        Col("notes", wrap=True)], rows)
    scopes = {as_text(s.get("peak_rss_scope")) for s in measured}
    how = ("each stage's own peak (the high-water mark is reset as it starts); added: over what was resident then"
           if scopes == {"stage"} else
           "the process's peak up to the end of each stage (this system cannot reset it per stage); added: how far "
           "the stage raised it")
    return Html(table + para(f"total {duration_text(total)}, peak {peak / MIB:,.1f} MiB. Peak RSS: {how}.",
                             "muted small"))


def int_text(value: Any) -> str:
    number = as_number(value)
    return "–" if number is None else f"{int(number):,}"


def stage_note(stage: dict[str, Any]) -> str | None:
    details = as_dict(stage.get("details"))
    name = stage.get("name")
    if name == "simplify" and as_number(details.get("nodes_before")) is not None:
        return f"nodes {int_text(details.get('nodes_before'))} → {int_text(details.get('nodes_after'))}"
    if name == "export" and as_text(details.get("exporter")):
        batch = details.get("dynamic_batch")
        return f"exporter {details['exporter']}" + ("" if batch is None else
                                                   f", {'dynamic' if batch else 'static'} batch")
    if name == "quantize" and as_text(details.get("shipped")):
        return f"shipped {details['shipped']}" + (f": {details['chosen']}" if as_text(details.get("chosen")) else "")
    if name == "opset" and details:
        before, after = as_text(details.get("from")), as_text(details.get("to"))
        return f"opset {before} → {after}" if before and after else None
    return None


def parity_section(report: dict[str, Any]) -> Html | None:
    rows, classes = [], []
    for stage in as_list(report.get("stages")):
        if not isinstance(stage, dict):
            continue
        for check in as_list(stage.get("parity")):
            if not isinstance(check, dict):
                continue
            for output in as_list(check.get("outputs")) or [{}]:
                output = as_dict(output)
                rows.append([as_text(stage.get("name")), base_name(check.get("candidate")), as_text(check.get("reference")),
                             as_text(check.get("samples")),
                             ", ".join(str(b) for b in as_list(check.get("batch_sizes"))) or None,
                             as_text(output.get("name")), sci(output.get("max_abs_diff")),
                             sci(output.get("max_rel_diff")),
                             ("exact" if output.get("exact") and output.get("cosine") is None
                              else fixed_html(output.get("cosine"), 6)),
                             badge_html("pass" if output.get("passed", check.get("passed")) else "fail")])
                classes.append("" if output.get("passed", check.get("passed")) else "row-bad")
    if not rows:
        return None
    first = next((c for s in as_list(report.get("stages")) if isinstance(s, dict) for c in as_list(s.get("parity"))
                  if isinstance(c, dict)), {})
    rule = (f"an output passes when max|Δ| ≤ {sci(first.get('atol'))} + {sci(first.get('rtol'))}·max|reference| "
            f"and cosine ≥ {as_text(first.get('min_cosine'))}; every graph is compared with the source")
    return Html(table_html([Col("stage"), Col("graph"), Col("reference"), Col("samples", True),
                         Col("batch sizes", True), Col("output"), Col("max |Δ|", True), Col("max rel Δ", True),
                         Col("cosine", True), Col("result")], rows, row_classes=classes)
                 + para(rule, "muted small"))


def worst_of(outputs: list[dict[str, Any]], key: str) -> float | None:
    values = [as_number(o.get(key)) for o in outputs]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def quantization_section(report: dict[str, Any]) -> Html | None:
    stage = next((s for s in as_list(report.get("stages")) if isinstance(s, dict) and s.get("name") == "quantize"), None)
    details = as_dict(stage.get("details")) if stage else {}
    summary = as_dict(as_dict(report.get("summary")).get("quantization"))
    if not details and not summary:
        return None
    parts: list[str] = []
    shipped = as_text(details.get("shipped")) or as_text(summary.get("shipped"))
    chosen = as_text(details.get("chosen")) or as_text(summary.get("recipe"))
    reason = as_text(details.get("reason")) or as_text(summary.get("reason"))
    parts.append(f'<p class="verdict">{badge_html(shipped or "unknown")} '
                 + (f"<code>{esc(chosen)}</code> " if chosen and not (reason or "").startswith(chosen) else "")
                 + (f'<span class="reason">{esc(reason)}</span>' if reason else "") + "</p>")
    floor = as_dict(details.get("floor"))
    data = as_dict(details.get("data"))
    float_latency = as_dict(details.get("float_latency"))
    facts = [("mode", as_text(details.get("mode"))), ("recipe target", as_text(details.get("target"))),
             ("fidelity floor", (f"cosine ≥ {as_text(floor.get('min_cosine'))}"
                                 + (f", top-1 ≥ {as_text(floor.get('min_top1'))}" if as_text(floor.get("min_top1")) else ""))
              if floor else None),
             ("float model", fmt_bytes(details.get("float_size_bytes"), exact=True)
              if as_number(details.get("float_size_bytes")) is not None else None),
             ("float latency (host)", f"{fmt_ms(float_latency.get('median_ms'))} ms median, "
                                      f"{int_text(float_latency.get('runs'))} runs, "
                                      f"{as_text(float_latency.get('threads')) or '?'} thread(s)"
              if as_number(float_latency.get("median_ms")) is not None else None)]
    for label, key in (("calibration data", "calibration"), ("evaluation data", "eval")):
        item = as_dict(data.get(key))
        if item:
            text = f"{as_text(item.get('source')) or '?'}: {int_text(item.get('count'))} samples"
            if item.get("random"):
                text += " (RANDOM inputs)"
            if item.get("labels"):
                text += ", with labels"
            if as_text(item.get("sha256")):
                text += f", sha256 {short_sha(item.get('sha256'))}"
            facts.append((label, text))
    if summary:
        accuracy = (f"{fixed_html(summary.get('accuracy_float'), 4)} → {fixed_html(summary.get('accuracy_int8'), 4)}"
                    if as_number(summary.get("accuracy_float")) is not None else None)
        facts += [("decided by", as_text(summary.get("decided_by")) or None),
                  ("worst output cosine", fixed_html(summary.get("worst_cosine"), 4)
                   if as_number(summary.get("worst_cosine")) is not None else None),
                  ("accuracy float → int8", accuracy),
                  ("size ratio", ratio_html(summary.get("size_ratio")) if as_number(summary.get("size_ratio")) is not None
                   else None),
                  ("latency ratio", ratio_html(summary.get("latency_ratio"))
                   if as_number(summary.get("latency_ratio")) is not None else None),
                  ("kept in float", ", ".join(str(n) for n in as_list(summary.get("float_nodes"))) or None)]
    for judged in as_list(details.get("metrics")):
        judged = as_dict(judged)
        where = "every output" if judged.get("output") == "*" else f"output {judged.get('output')}"
        facts.append((f"metric for {where}", f"{judged.get('metric')} ≥ {judged.get('floor')} ({judged.get('chosen')})"))
    parts.append(facts_html(facts))
    candidates = [c for c in as_list(details.get("candidates")) if isinstance(c, dict)]
    if candidates:
        parts.append(candidates_table(candidates, chosen if shipped == "int8" else None, details))
        parts.append(candidates_chart(candidates, details))
    parts.append(notes_html([w for w in as_list(details.get("warnings")) if w not in as_list(report.get("warnings"))]))
    return Html("".join(parts))


def candidates_table(candidates: list[dict[str, Any]], chosen: str | None, details: dict[str, Any]) -> Html:
    columns = [Col("candidate", wrap=True, min_width=230), Col("size", True), Col("quantized", True),
               Col("cosine", True), Col("worst channel", True), Col("SQNR", True), Col("max |err|", True),
               Col("top-1", True), Col("accuracy", True), Col("latency", True), Col("vs float", True)]
    rows: list[list[Any]] = []
    classes: list[str] = []
    float_latency = as_dict(details.get("float_latency"))
    if float_latency or as_number(details.get("float_size_bytes")) is not None:
        rows.append(["float model (reference)", fmt_bytes(details.get("float_size_bytes")),
                     None, fixed_html(1, 4), fixed_html(1, 4), None, None, None, None,
                     f"{fmt_ms(float_latency.get('median_ms'))} ms" if float_latency else None,
                     ratio_html(1.0) if float_latency else None])
        classes.append("row-ref")
    for candidate in candidates:
        fidelity = as_dict(candidate.get("fidelity"))
        outputs = [o for o in as_list(fidelity.get("outputs")) if isinstance(o, dict)]
        latency = as_dict(candidate.get("latency"))
        name = as_text(candidate.get("name")) or "?"
        is_chosen = chosen is not None and name == chosen
        name_cell = Html(f"<code>{esc(name)}</code> {badge_html(candidate.get('status'))}"
                          + (" " + badge_html("chosen", "ok") if is_chosen else ""))
        accuracy = (f"{fixed_html(fidelity.get('accuracy_reference'), 3)} → "
                    f"{fixed_html(fidelity.get('accuracy_candidate'), 3)}"
                    if as_number(fidelity.get("accuracy_candidate")) is not None else None)
        coverage = (f"{int_text(candidate.get('quantized_nodes'))}/{int_text(candidate.get('quantizable_nodes'))}"
                    if as_number(candidate.get("quantized_nodes")) is not None else None)
        size = as_number(candidate.get("size_bytes"))
        size_cell = (f"{fmt_bytes(size)} ({ratio_html(candidate.get('size_ratio'))})" if size is not None and
                     as_number(candidate.get("size_ratio")) is not None else fmt_bytes(size))
        sqnr = worst_of(outputs, "sqnr_db")
        top1 = worst_of(outputs, "top1_agreement")
        exact = worst_of(outputs, "exact_agreement")
        rows.append([name_cell, size_cell, coverage,
                     fixed_html(worst_of(outputs, "cosine_mean"), 4), fixed_html(worst_of(outputs, "channel_cosine_min"), 4),
                     f"{sqnr:.1f} dB" if sqnr is not None else None,
                     sci(max((v for v in (as_number(o.get("max_abs_error")) for o in outputs) if v is not None),
                              default=None)),
                     fixed_html(top1, 3) if top1 is not None else (f"exact {exact:.3f}" if exact is not None else None),
                     accuracy,
                     f"{fmt_ms(latency.get('median_ms'))} ms" if as_number(latency.get("median_ms")) is not None else None,
                     ratio_html(candidate.get("latency_ratio")) if as_number(candidate.get("latency_ratio")) is not None
                     else None])
        classes.append("row-chosen" if is_chosen else "")
        notes: list[str] = []
        if as_text(candidate.get("reason")):
            notes.append(f"why tried: {candidate['reason']}")
        if as_text(candidate.get("rejection")):
            notes.append(f"not shipped: {candidate['rejection']}")
        float_nodes = [str(n) for n in as_list(candidate.get("float_nodes"))]
        if float_nodes:
            notes.append(f"kept in float ({len(float_nodes)}): {', '.join(float_nodes)}")
        for metric in as_list(fidelity.get("metrics")):
            metric = as_dict(metric)
            notes.append(f"{metric.get('output')}: {metric.get('metric')} {fixed_html(metric.get('score'), 4)} "
                         f"(floor {metric.get('floor')}, {'passes' if metric.get('passed') else 'fails'})")
        ranking = [as_dict(r) for r in as_list(candidate.get("mixed_precision_ranking"))]
        if ranking:
            notes.append("mixed precision ranking (revert alone → margin gained): " + "; ".join(
                f"{'+'.join(str(n) for n in as_list(r.get('nodes')))} {fixed_html(r.get('effect'), 4)}"
                for r in ranking))
        for step_index, step in enumerate(as_list(candidate.get("mixed_precision")), start=1):
            step = as_dict(step)
            judged = as_text(step.get("verdict")) or f"worst cosine {fixed_html(step.get('worst_cosine'), 4)}"
            notes.append(f"mixed precision step {step_index}: {len(as_list(step.get('float_nodes')))} node(s) in float → "
                         f"{judged}" + (" (meets the floor)" if step.get("meets_floor") else ""))
        if as_text(candidate.get("mixed_precision_stop")):
            notes.append(f"mixed precision stopped: {candidate['mixed_precision_stop']}")
        for trial in as_list(candidate.get("speed_fallback")):
            trial = as_dict(trial)
            outcome = (f"whole model {fixed_html(trial.get('latency_ratio'), 3)}x → "
                       + ("kept in float" if trial.get("accepted") else "stays int8")
                       if trial.get("latency_ratio") is not None else f"stays int8 ({trial.get('note')})")
            notes.append(f"speed: {', '.join(str(n) for n in as_list(trial.get('nodes')))} profiled "
                         f"{fixed_html(trial.get('int8_us'), 1)} µs int8 vs {fixed_html(trial.get('float_us'), 1)} µs float; "
                         + outcome)
        if len(outputs) > 1:
            for output in outputs:
                notes.append(f"output {output.get('name')}: cosine {fixed_html(output.get('cosine_mean'), 4)}, "
                             f"worst channel {fixed_html(output.get('channel_cosine_min'), 4)}"
                             + (f" (#{output.get('worst_channel')})" if as_text(output.get("worst_channel")) else "")
                             + f", SQNR {fixed_html(output.get('sqnr_db'), 1)} dB")
        if notes:
            rows.append([Span(Html('<div class="sub-notes">' + "".join(f"<div>{esc(n)}</div>" for n in notes)
                                     + "</div>"))])
            classes.append("row-notes row-chosen" if is_chosen else "row-notes")
    timed = bool(float_latency) or any(as_number(as_dict(c.get("latency")).get("median_ms")) is not None for c in candidates)
    if not timed:  # latency is only measured when the recipe target is this machine
        columns = columns[:-2]
        rows = [row if len(row) == 1 and isinstance(row[0], Span) else row[:-2] for row in rows]
    return table_html(columns, rows, row_classes=classes,
                  caption="Candidates tried (cosines, SQNR and max error: the worst output"
                          + ("; latency timed side by side with the float model on this machine)" if timed else
                             "; latency is measured only when the recipe target is host)"))


def candidates_chart(candidates: list[dict[str, Any]], details: dict[str, Any]) -> Html:
    float_latency = as_number(as_dict(details.get("float_latency")).get("median_ms"))
    rows = []
    if float_latency is not None:
        rows.append(ChartRow("float", [Bar([Segment(float_latency, "c-float", "float model")],
                                             f"{fmt_ms(float_latency)} ms")]))
    for candidate in candidates:
        median = as_number(as_dict(candidate.get("latency")).get("median_ms"))
        if median is None:
            continue
        ratio = as_number(candidate.get("latency_ratio"))
        rows.append(ChartRow(as_text(candidate.get("name")) or "?", [Bar(
            [Segment(median, "c-int8", as_text(candidate.get("name")) or "")],
            f"{fmt_ms(median)} ms" + (f" ({ratio:.2f}× float)" if ratio is not None else ""))]))
    if len(rows) < 2:
        return Html("")
    return bar_chart("Measured latency on this machine (median, ms)", rows)
