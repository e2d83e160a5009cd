"""The sections about targets and devices: estimates, heaviest nodes, measurements, pruning, the device,
estimate vs measurement, and the footer. They read the typed convert and profile reports."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from edgeopt.analysis.comparison import EstimateVsMeasurement
from edgeopt.analysis.profile import FitCheck, StaticProfile
from edgeopt.report.html.blocks import (
    PAIR_CHART_WIDTH,
    Bar,
    ChartRow,
    Col,
    Html,
    Segment,
    bar_chart,
    esc,
    fixed_html,
    fmt_bytes,
    fmt_count,
    fmt_ms,
    notes_html,
    ratio_html,
    sci,
    table_html,
    yes_no,
)
from edgeopt.report.html.constants import TOP_NODES
from edgeopt.report.profile_schema import ProfileReport
from edgeopt.report.schema import Report
from edgeopt.stages.device import DeviceDetails
from edgeopt.stages.profile import ProfileDetails, TargetVerdict
from edgeopt.stages.prune.details import PruneDetails


@dataclass(frozen=True)
class TargetFigures:
    """One target as the page shows it: the full static profile where the report has it, else the summary's
    verdict (a convert report without its profile stage)."""

    name: str
    verdict: TargetVerdict
    profile: StaticProfile | None = None

    @property
    def fits(self) -> bool | None:
        return self.profile.fits_all if self.profile is not None else self.verdict.fits


def target_figures(report: Report | ProfileReport) -> list[TargetFigures]:
    if isinstance(report, ProfileReport):
        return [TargetFigures(name, TargetVerdict.of(p), p) for name, p in report.estimates.items()]
    stage = report.stage("profile")
    full = stage.details.estimates if stage is not None and isinstance(stage.details, ProfileDetails) else {}
    names = [*report.summary.targets, *(n for n in full if n not in report.summary.targets)]
    return [TargetFigures(name, report.summary.targets.get(name) or TargetVerdict.of(full[name]), full.get(name))
            for name in names]


def comparisons_of(report: Report | ProfileReport) -> list[EstimateVsMeasurement]:
    if isinstance(report, ProfileReport):
        return report.comparisons
    stage = report.stage("device")
    return stage.details.comparisons if stage is not None and isinstance(stage.details, DeviceDetails) else []


def targets_section(report: Report | ProfileReport) -> Html | None:
    targets = target_figures(report)
    measured = measured_rows(report) if isinstance(report, ProfileReport) else []
    if not targets and not measured:
        return None
    parts: list[str] = []
    latency_rows = []
    for target in targets:
        latency = target.verdict.latency_ms
        if latency is None:
            latency_rows.append(ChartRow(target.name, note="no estimate: " + (
                target.verdict.estimate_unavailable_reason or "the target lacks figures")[:90]))
        else:
            latency_rows.append(ChartRow(target.name, [Bar([Segment(latency, "c-est", f"{target.name}: estimated")],
                                                           f"{fmt_ms(latency)} ms")]))
    for label, value in measured:
        latency_rows.append(ChartRow(label, [Bar([Segment(value, "c-meas", label)], f"{fmt_ms(value)} ms")]))
    legend = [("c-est", "static estimate")] + ([("c-meas", "measured p50")] if measured else [])
    parts.append(bar_chart("Latency per target (ms, batch 1)", latency_rows, legend))
    memory_rows = []
    for target in targets:
        weights, peak = target.verdict.weight_bytes, target.verdict.peak_activation_bytes
        if weights is None and peak is None:
            memory_rows.append(ChartRow(target.name, note="no memory figures"))
            continue
        fits = target.fits
        verdict = "" if fits is None else (", fits" if fits else ", DOES NOT FIT")
        memory_rows.append(ChartRow(target.name, [Bar(
            [Segment(weights or 0, "c-weights", f"weights {fmt_bytes(weights)}"),
             Segment(peak or 0, "c-act", f"peak activations {fmt_bytes(peak)}")],
            f"{fmt_bytes((weights or 0) + (peak or 0))}{verdict}")]))
    if memory_rows:
        parts.append(bar_chart("Peak memory per target (weights + peak activations)", memory_rows,
                               [("c-weights", "weights"), ("c-act", "peak activations")]))
    if targets:
        parts.append(targets_table(targets))
    return Html("".join(parts))


def _fit_line(check: FitCheck) -> str:
    mark = "?" if check.fits is None else ("✓" if check.fits else "✗ does not fit")
    capacity = (f"of {fmt_bytes(check.available_bytes)}" if check.available_bytes is not None
                else "(capacity not stated)")
    return f"{check.memory}: {fmt_bytes(check.required_bytes)} {capacity} {mark}"


def targets_table(targets: list[TargetFigures]) -> Html:
    rows = []
    for target in targets:
        verdict, profile = target.verdict, target.profile
        fit_lines = [_fit_line(check) for check in profile.fits] if profile is not None else []
        memory_cell = Html(yes_no(target.fits) + "".join(f'<div class="small muted">{esc(line)}</div>'
                                                         for line in fit_lines))
        if verdict.accelerator:
            int8 = ("full int8: " + ("yes" if verdict.full_int8 else "no")
                    + (" (REQUIRED)" if verdict.full_int8_required and not verdict.full_int8 else ""))
            accel_cell = (f"{verdict.accelerator}: {verdict.accelerator_nodes} nodes on it, {verdict.cpu_nodes} on "
                          f"the CPU, {verdict.partitions} partition(s); {int8}")
        else:
            accel_cell = None
        notes = [m for m in [verdict.estimate_unavailable_reason, *(profile.warnings if profile else [])] if m]
        if profile is not None and profile.unknown_node_count:
            notes.append(f"{profile.unknown_node_count} node(s) with unknown cost: "
                         + ", ".join(profile.unknown_nodes[:5]))
        rows.append([target.name, profile.target_kind if profile else None,
                     f"{fmt_ms(verdict.latency_ms)} ms" + (f" ±{verdict.latency_error:.0%}" if verdict.latency_error
                                                           else "") if verdict.latency_ms is not None else None,
                     fmt_count(profile.macs_total) if profile else None, fmt_bytes(verdict.weight_bytes),
                     fmt_bytes(verdict.peak_activation_bytes), memory_cell, accel_cell,
                     Html("".join(f"<div>{esc(n)}</div>" for n in notes)) if notes else None])
    return table_html([Col("target"), Col("kind"), Col("est. latency", True), Col("MACs", True),
                       Col("weights", True), Col("peak activations", True), Col("fits in memory"),
                       Col("accelerator", wrap=True), Col("notes", wrap=True)], rows)


def measured_rows(report: ProfileReport) -> list[tuple[str, float]]:
    return [(f"{device} measured, {run.threads} thr", run.latency_ms.p50)
            for device, runs in report.measurements.items() for run in runs]


def heaviest_section(report: Report | ProfileReport) -> Html | None:
    parts = []
    for target in target_figures(report):
        profile = target.profile
        if profile is None or not profile.nodes:
            continue
        by_time = profile.latency_ms is not None
        ranked = profile.top_nodes(TOP_NODES, "time_us" if by_time else "macs")
        if not ranked:
            continue
        shown = sum(1 for n in profile.nodes if ((n.time_us if by_time else n.macs) or 0) > 0)
        total_us = (profile.latency_ms or 0) * 1000
        total_macs = profile.macs_total or sum(n.macs or 0 for n in profile.nodes)
        rows = []
        for index, node in enumerate(ranked, start=1):
            share = (node.time_us / total_us if by_time and node.time_us is not None and total_us else
                     (node.macs / total_macs if not by_time and node.macs is not None and total_macs else None))
            rows.append([str(index), Html(f"<code>{esc(node.name)}</code>"), node.op_type, node.execution_dtype,
                         node.device, fmt_count(node.macs), fmt_bytes(node.bytes_total), fixed_html(node.time_us, 1),
                         f"{100 * share:.1f}%" if share is not None else None, node.bound])
        ranking = "estimated time" if by_time else "MACs (no latency estimate for this target)"
        parts.append(table_html([Col("#", True), Col("node", wrap=True), Col("op type"), Col("dtype"),
                                 Col("device"), Col("MACs", True), Col("bytes moved", True), Col("est. µs", True),
                                 Col("share", True), Col("bound")], rows,
                                caption=f"{target.name}: top {min(TOP_NODES, shown)} of {len(profile.nodes)} nodes "
                                        f"by {ranking}"))
    return Html("".join(parts)) if parts else None


def measurements_section(report: ProfileReport) -> Html | None:
    rows = []
    top_ops = []
    for device, runs in report.measurements.items():
        for run in runs:
            latency, machine = run.latency_ms, run.device
            runtime = f"{run.runtime.get('name') or '?'} {run.runtime.get('version') or ''}".strip() \
                if run.runtime else None
            rows.append([device, run.threads, run.runs, runtime, fmt_ms(latency.p50), fmt_ms(latency.p90),
                         fmt_ms(latency.p99), fmt_ms(latency.mean), fmt_ms(latency.stdev), fmt_ms(run.first_run_ms),
                         fmt_ms(run.load_ms), fmt_bytes(run.memory.peak_rss_increase_bytes),
                         " ".join(str(x) for x in (machine.get("cpu_model"), machine.get("machine"),
                                                   f"({run.ssh.host})" if run.ssh else None) if x) or None])
            ops = sorted(run.per_op or [], key=lambda o: -(o.median_us or 0))[:TOP_NODES]
            if ops:
                top_ops.append(table_html(
                    [Col("kernel", wrap=True), Col("op type"), Col("calls", True), Col("median µs", True),
                     Col("source nodes", wrap=True)],
                    [[Html(f"<code>{esc(o.node)}</code>"), o.op_type, o.calls, fixed_html(o.median_us, 1),
                      ", ".join(o.source_nodes) or None] for o in ops],
                    caption=f"{device}, {run.threads} thread(s): slowest kernels"
                    + (" (each op timed alone, fed its inputs from the whole model)"
                       if run.per_op_method == "op-by-op" else "")))
    if not rows:
        return None
    table = table_html([Col("device"), Col("threads", True), Col("runs", True), Col("runtime"),
                        Col("p50 ms", True), Col("p90 ms", True), Col("p99 ms", True), Col("mean ms", True),
                        Col("stdev ms", True), Col("first run ms", True), Col("load ms", True),
                        Col("peak RSS +", True), Col("machine", wrap=True)], rows)
    return Html(table + "".join(top_ops))


def pruning_section(report: Report) -> Html | None:
    """Convert reports with --prune: one row per step, the fine-tuning curve, not-faster flags."""
    pruning = report.summary.pruning
    if pruning is None or not pruning.steps:
        return None
    targets = list(pruning.steps[0].estimated_latency_ms)
    rows = []
    for step in pruning.steps:
        ratio = step.host_latency_ratio
        host = fmt_ms(step.host_latency_ms)
        quality = (fixed_html(step.accuracy, 4) if step.accuracy is not None else
                   (f"cos {fixed_html(step.fidelity, 4)}" if step.fidelity is not None else None))
        rows.append([step.step, fmt_count(step.params), fmt_count(step.macs), fmt_bytes(step.size_bytes),
                     *(fmt_ms(step.estimated_latency_ms.get(t)) for t in targets),
                     f"{host} ({ratio:.2f}x)" if ratio is not None else host, quality])
    table = table_html([Col("step"), Col("params", True), Col("MACs", True), Col("size", True),
                        *(Col(f"est. {t} ms", True) for t in targets), Col("host ms (x unpruned)", True),
                        Col("accuracy", True)], rows,
                       caption=f"ratio {fixed_html(pruning.ratio, 2)}, channels rounded to multiples of "
                               f"{pruning.channel_multiple or 1}")
    parts = [table]
    if pruning.attention:
        parts.append(table_html([Col("attention module", wrap=True), Col("heads", True), Col("head size", True)],
                                [[Html(f"<code>{esc(a.name)}</code>"), f"{a.heads_before} → {a.heads_after}",
                                  f"{a.head_size_before} → {a.head_size_after}"] for a in pruning.attention],
                                caption="attention heads"))
    stage = report.stage("prune")
    details = stage.details if stage is not None and isinstance(stage.details, PruneDetails) else None
    curve = details.finetune.curve if details is not None and details.finetune is not None else []
    if curve:
        parts.append(table_html([Col("epoch", True), Col("train loss", True), Col("val loss", True),
                                 Col("val accuracy", True), Col("lr", True)],
                                [[e.epoch, fixed_html(e.train_loss, 4), fixed_html(e.val_loss, 4),
                                  fixed_html(e.val_accuracy, 4), sci(e.lr)] for e in curve],
                                caption="fine-tuning curve"))
    if pruning.not_faster:
        parts.append(notes_html(list(pruning.not_faster)))
    return Html("".join(parts))


def device_section(report: Report) -> Html | None:
    """convert --ssh: the final model (and its float baseline) measured on the device."""
    stage = report.stage("device")
    if stage is None or not isinstance(stage.details, DeviceDetails) or not stage.details.measurements:
        return None
    rows = [[label, fmt_ms(run.latency_ms.p50), fmt_ms(run.latency_ms.p90), fmt_ms(run.latency_ms.p99),
             fmt_bytes(run.memory.peak_rss_increase_bytes), run.device.get("cpu_model") or run.device.get("machine")]
            for label, run in stage.details.measurements.items()]
    return table_html([Col("model"), Col("p50 ms", True), Col("p90 ms", True), Col("p99 ms", True),
                       Col("peak RSS +", True), Col("device", wrap=True)], rows,
                      caption=f"measured on {stage.options.get('ssh')}")


def comparisons_section(report: Report | ProfileReport) -> Html | None:
    parts = []
    for comparison in comparisons_of(report):
        total = comparison.total
        title = (f"estimate for {comparison.target} vs measurement on {comparison.device}, "
                 f"{comparison.threads} thread(s)")
        ordered = sorted(comparison.by_op_type.items(), key=lambda kv: -max(kv[1].estimated_ms, kv[1].measured_ms))
        rows = [[op, fmt_ms(v.estimated_ms), fmt_ms(v.measured_ms), ratio_html(v.ratio)] for op, v in ordered]
        rows.append([Html("<strong>total</strong>"), fmt_ms(total.estimated_ms), fmt_ms(total.measured_ms),
                     ratio_html(total.ratio)])
        chart_rows = [ChartRow(op, [
            Bar([Segment(v.estimated_ms, "c-est", f"{op}: estimated")], f"{fmt_ms(v.estimated_ms)} ms est."),
            Bar([Segment(v.measured_ms, "c-meas", f"{op}: measured")], f"{fmt_ms(v.measured_ms)} ms meas.")])
            for op, v in ordered]
        parts.append('<div class="pair"><div>'
                     + table_html([Col("op type"), Col("estimated ms", True), Col("measured ms", True),
                                   Col("est / meas", True)], rows, caption=title,
                                  row_classes=[""] * len(ordered) + ["row-total"])
                     + "</div><div>"
                     + bar_chart(f"per op type, ms ({comparison.target})", chart_rows,
                                 [("c-est", "estimated"), ("c-meas", "measured")], width=PAIR_CHART_WIDTH)
                     + "</div></div>")
    return Html("".join(parts)) if parts else None


def footer_html(report: Report | ProfileReport, source_label: str | None) -> Html:
    parts = []
    command = report.command if isinstance(report, Report) else []
    versions = report.tool_versions if isinstance(report, Report) else {}
    if command:
        parts.append(f"<div><strong>command</strong> <code>{esc(shlex.join(str(a) for a in command))}</code></div>")
    if versions:
        parts.append("<div><strong>versions</strong> " + ", ".join(f"{esc(k)} {esc(v)}" for k, v in versions.items())
                     + "</div>")
    origin = f" from <code>{esc(source_label)}</code>" if source_label else ""
    parts.append(f'<div class="muted">rendered by edgeopt{origin}; self-contained: no scripts, nothing loaded '
                 f"from the network</div>")
    return Html(f"<footer>{''.join(parts)}</footer>")
