"""The sections about targets and devices: estimates, heaviest nodes, measurements, pruning, the device,
estimate vs measurement, and the footer."""

from __future__ import annotations

import shlex
from typing import Any


from edgeopt.report.html.constants import TOP_NODES
from edgeopt.report.html.blocks import PAIR_CHART_WIDTH, Bar, ChartRow, Col, Html, Segment, as_dict, as_list, as_number, as_text, bar_chart, esc, fixed_html, fmt_bytes, fmt_count, fmt_ms, notes_html, ratio_html, sci, table_html, yes_no
from edgeopt.report.html.convert_sections import int_text


def target_estimates(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per target: the full static profile where the report has it, else the summary's digest."""
    if report.get("kind") == "profile":
        return {str(k): v for k, v in as_dict(report.get("estimates")).items() if isinstance(v, dict)}
    full: dict[str, dict[str, Any]] = {}
    for stage in as_list(report.get("stages")):
        if isinstance(stage, dict) and stage.get("name") == "profile":
            full = {str(k): v for k, v in as_dict(stage.get("details")).items() if isinstance(v, dict)}
    digest = {str(k): v for k, v in as_dict(as_dict(report.get("summary")).get("targets")).items() if isinstance(v, dict)}
    return {name: {**digest.get(name, {}), **full.get(name, {})} for name in [*digest, *full]}


def fits_text(estimate: dict[str, Any]) -> Any:
    if "fits_all" in estimate:
        return estimate.get("fits_all")
    value = estimate.get("fits")
    return value if isinstance(value, bool) or value is None else None


def targets_section(report: dict[str, Any]) -> Html | None:
    estimates = target_estimates(report)
    measured = measured_rows(report)
    if not estimates and not measured:
        return None
    parts: list[str] = []
    latency_rows = []
    for name, est in estimates.items():
        latency = as_number(est.get("latency_ms"))
        if latency is None:
            latency_rows.append(ChartRow(name, note="no estimate: " + (
                as_text(est.get("estimate_unavailable_reason")) or "the target lacks figures")[:90]))
        else:
            latency_rows.append(ChartRow(name, [Bar([Segment(latency, "c-est", f"{name}: estimated")],
                                                      f"{fmt_ms(latency)} ms")]))
    for label, value in measured:
        latency_rows.append(ChartRow(label, [Bar([Segment(value, "c-meas", label)], f"{fmt_ms(value)} ms")]))
    legend = [("c-est", "static estimate")] + ([("c-meas", "measured p50")] if measured else [])
    parts.append(bar_chart("Latency per target (ms, batch 1)", latency_rows, legend))
    memory_rows = []
    for name, est in estimates.items():
        weights, peak = as_number(est.get("weight_bytes")), as_number(est.get("peak_activation_bytes"))
        if weights is None and peak is None:
            memory_rows.append(ChartRow(name, note="no memory figures"))
            continue
        total = (weights or 0) + (peak or 0)
        fits = fits_text(est)
        verdict = "" if fits is None else (", fits" if fits else ", DOES NOT FIT")
        memory_rows.append(ChartRow(name, [Bar([Segment(weights or 0, "c-weights", f"weights {fmt_bytes(weights)}"),
                                                  Segment(peak or 0, "c-act",
                                                           f"peak activations {fmt_bytes(peak)}")],
                                                 f"{fmt_bytes(total)}{verdict}")]))
    if memory_rows:
        parts.append(bar_chart("Peak memory per target (weights + peak activations)", memory_rows,
                                [("c-weights", "weights"), ("c-act", "peak activations")]))
    if estimates:
        parts.append(targets_table(estimates))
    return Html("".join(parts))


def targets_table(estimates: dict[str, dict[str, Any]]) -> Html:
    rows = []
    for name, est in estimates.items():
        fit_lines = []
        for check in as_list(est.get("fits")):
            check = as_dict(check)
            ok = check.get("fits")
            mark = "?" if ok is None else ("✓" if ok else "✗ does not fit")
            capacity = (f"of {fmt_bytes(check.get('available_bytes'))}" if as_number(check.get("available_bytes"))
                        is not None else "(capacity not stated)")
            fit_lines.append(f"{check.get('memory', '?')}: {fmt_bytes(check.get('required_bytes'))} {capacity} {mark}")
        fits = fits_text(est)
        memory_cell = Html(yes_no(fits) + "".join(f'<div class="small muted">{esc(line)}</div>' for line in fit_lines))
        accel = as_text(est.get("accelerator"))
        if accel:
            on = int_text(est.get("accelerator_node_count", est.get("accelerator_nodes")))
            cpu = int_text(est.get("cpu_node_count", est.get("cpu_nodes")))
            int8 = ("full int8: " + ("yes" if est.get("full_int8") else "no")
                    + (" (REQUIRED)" if est.get("full_int8_required") and not est.get("full_int8") else ""))
            accel_cell = f"{accel}: {on} nodes on it, {cpu} on the CPU, {int_text(est.get('partitions'))} " \
                         f"partition(s); {int8}"
        else:
            accel_cell = None
        notes = [m for m in [as_text(est.get("estimate_unavailable_reason"))] + [as_text(w) for w in as_list(est.get("warnings"))]
                 if m]
        unknown = as_number(est.get("unknown_node_count"))
        if unknown:
            notes.append(f"{int(unknown)} node(s) with unknown cost: "
                         + ", ".join(str(n) for n in as_list(est.get("unknown_nodes"))[:5]))
        rows.append([name, as_text(est.get("target_kind")), f"{fmt_ms(est.get('latency_ms'))} ms"
                     if as_number(est.get("latency_ms")) is not None else None, fmt_count(est.get("macs_total")),
                     fmt_bytes(est.get("weight_bytes")), fmt_bytes(est.get("peak_activation_bytes")), memory_cell,
                     accel_cell, Html("".join(f"<div>{esc(n)}</div>" for n in notes)) if notes else None])
    return table_html([Col("target"), Col("kind"), Col("est. latency", True), Col("MACs", True),
                   Col("weights", True), Col("peak activations", True), Col("fits in memory"),
                   Col("accelerator", wrap=True), Col("notes", wrap=True)], rows)


def measured_rows(report: dict[str, Any]) -> list[tuple[str, float]]:
    rows = []
    for device, runs in as_dict(report.get("measurements")).items():
        for run in as_list(runs):
            p50 = as_number(as_dict(as_dict(run).get("latency_ms")).get("p50"))
            if p50 is not None:
                rows.append((f"{device} measured, {int_text(as_dict(run).get('threads'))} thr", p50))
    return rows


def heaviest_section(report: dict[str, Any]) -> Html | None:
    parts = []
    for name, est in target_estimates(report).items():
        nodes = [n for n in as_list(est.get("nodes")) if isinstance(n, dict)]
        if not nodes:
            continue
        by_time = as_number(est.get("latency_ms")) is not None
        key = "time_us" if by_time else "macs"
        ranked = sorted((n for n in nodes if (as_number(n.get(key)) or 0) > 0), key=lambda n: -(as_number(n.get(key)) or 0))
        if not ranked:
            continue
        total_us = (as_number(est.get("latency_ms")) or 0) * 1000
        total_macs = as_number(est.get("macs_total")) or sum(as_number(n.get("macs")) or 0 for n in nodes)
        rows = []
        for index, node in enumerate(ranked[:TOP_NODES], start=1):
            time_us = as_number(node.get("time_us"))
            macs = as_number(node.get("macs"))
            share = (time_us / total_us if by_time and time_us is not None and total_us else
                     (macs / total_macs if not by_time and macs is not None and total_macs else None))
            traffic = (as_number(node.get("bytes_read")) or 0) + (as_number(node.get("bytes_written")) or 0)
            rows.append([str(index), Html(f"<code>{esc(node.get('name'))}</code>"), as_text(node.get("op_type")),
                         as_text(node.get("execution_dtype")), as_text(node.get("device")), fmt_count(macs), fmt_bytes(traffic),
                         fixed_html(time_us, 1), f"{100 * share:.1f}%" if share is not None else None,
                         as_text(node.get("bound"))])
        ranking = "estimated time" if by_time else "MACs (no latency estimate for this target)"
        parts.append(table_html([Col("#", True), Col("node", wrap=True), Col("op type"), Col("dtype"),
                             Col("device"), Col("MACs", True), Col("bytes moved", True), Col("est. µs", True),
                             Col("share", True), Col("bound")], rows,
                            caption=f"{name}: top {min(TOP_NODES, len(ranked))} of {len(nodes)} nodes by {ranking}"))
    return Html("".join(parts)) if parts else None


def measurements_section(report: dict[str, Any]) -> Html | None:
    rows = []
    top_ops = []
    for device, runs in as_dict(report.get("measurements")).items():
        for run in as_list(runs):
            run = as_dict(run)
            latency = as_dict(run.get("latency_ms"))
            runtime = as_dict(run.get("runtime"))
            machine = as_dict(run.get("device"))
            ssh = as_dict(run.get("ssh"))
            rows.append([device, int_text(run.get("threads")), int_text(run.get("runs")),
                         f"{as_text(runtime.get('name')) or '?'} {as_text(runtime.get('version')) or ''}".strip()
                         if runtime else None,
                         fmt_ms(latency.get("p50")), fmt_ms(latency.get("p90")), fmt_ms(latency.get("p99")),
                         fmt_ms(latency.get("mean")), fmt_ms(latency.get("stdev")), fmt_ms(run.get("first_run_ms")),
                         fmt_ms(run.get("load_ms")), fmt_bytes(as_dict(run.get("memory")).get("peak_rss_increase_bytes")),
                         " ".join(x for x in (as_text(machine.get("cpu_model")), as_text(machine.get("machine")),
                                              f"({as_text(ssh.get('host'))})" if as_text(ssh.get("host")) else None) if x)
                         or None])
            ops = sorted((o for o in as_list(run.get("per_op")) if isinstance(o, dict)),
                         key=lambda o: -(as_number(o.get("median_us")) or 0))[:TOP_NODES]
            if ops:
                top_ops.append(table_html(
                    [Col("kernel", wrap=True), Col("op type"), Col("calls", True), Col("median µs", True),
                     Col("source nodes", wrap=True)],
                    [[Html(f"<code>{esc(o.get('node'))}</code>"), as_text(o.get("op_type")), int_text(o.get("calls")),
                      fixed_html(o.get("median_us"), 1), ", ".join(str(n) for n in as_list(o.get("source_nodes"))) or None]
                     for o in ops],
                    caption=f"{device}, {int_text(run.get('threads'))} thread(s): slowest kernels"))
    if not rows:
        return None
    table = table_html([Col("device"), Col("threads", True), Col("runs", True), Col("runtime"),
                    Col("p50 ms", True), Col("p90 ms", True), Col("p99 ms", True), Col("mean ms", True),
                    Col("stdev ms", True), Col("first run ms", True), Col("load ms", True),
                    Col("peak RSS +", True), Col("machine", wrap=True)], rows)
    return Html(table + "".join(top_ops))


def pruning_section(report: dict[str, Any]) -> Html | None:
    """Convert reports with --prune: one row per step, the fine-tuning curve, not-faster flags."""
    pruning = as_dict(as_dict(report.get("summary")).get("pruning"))
    steps = [as_dict(step) for step in as_list(pruning.get("steps"))]
    if not steps:
        return None
    targets = list(as_dict(steps[0].get("estimated_latency_ms")))
    rows = []
    for step in steps:
        estimates = as_dict(step.get("estimated_latency_ms"))
        ratio = as_number(step.get("host_latency_ratio"))
        host = fmt_ms(step.get("host_latency_ms"))
        quality = (fixed_html(step.get("accuracy"), 4) if as_number(step.get("accuracy")) is not None else
                   (f"cos {fixed_html(step.get('fidelity'), 4)}" if as_number(step.get("fidelity")) is not None else None))
        rows.append([as_text(step.get("step")), fmt_count(step.get("params")), fmt_count(step.get("macs")),
                     fmt_bytes(step.get("size_bytes")), *(fmt_ms(estimates.get(t)) for t in targets),
                     f"{host} ({ratio:.2f}x)" if ratio is not None else host, quality])
    table = table_html([Col("step"), Col("params", True), Col("MACs", True), Col("size", True),
                    *(Col(f"est. {t} ms", True) for t in targets), Col("host ms (x unpruned)", True),
                    Col("accuracy", True)], rows,
                   caption=f"ratio {fixed_html(pruning.get('ratio'), 2)}, channels rounded to multiples of "
                           f"{int_text(pruning.get('channel_multiple')) or '1'}")
    parts = [table]
    attention = [as_dict(a) for a in as_list(pruning.get("attention"))]
    if attention:
        parts.append(table_html([Col("attention module", wrap=True), Col("heads", True), Col("head size", True)],
                            [[Html(f"<code>{esc(a.get('name'))}</code>"),
                              f"{int_text(a.get('heads_before'))} → {int_text(a.get('heads_after'))}",
                              f"{int_text(a.get('head_size_before'))} → {int_text(a.get('head_size_after'))}"]
                             for a in attention], caption="attention heads"))
    stage = next((as_dict(st) for st in as_list(report.get("stages")) if as_dict(st).get("name") == "prune"), {})
    curve = [as_dict(e) for e in as_list(as_dict(as_dict(stage.get("details")).get("finetune")).get("curve"))]
    if curve:
        parts.append(table_html([Col("epoch", True), Col("train loss", True), Col("val loss", True),
                             Col("val accuracy", True), Col("lr", True)],
                            [[int_text(e.get("epoch")), fixed_html(e.get("train_loss"), 4), fixed_html(e.get("val_loss"), 4),
                              fixed_html(e.get("val_accuracy"), 4), sci(e.get("lr"))] for e in curve],
                            caption="fine-tuning curve"))
    flags = [str(f) for f in as_list(pruning.get("not_faster"))]
    if flags:
        parts.append(notes_html(flags))
    return Html("".join(parts))


def device_section(report: dict[str, Any]) -> Html | None:
    """convert --ssh: the final model (and its float baseline) measured on the device."""
    stage = next((as_dict(st) for st in as_list(report.get("stages")) if as_dict(st).get("name") == "device"), None)
    if stage is None:
        return None
    rows = []
    for label, run in as_dict(as_dict(stage.get("details")).get("measurements")).items():
        run = as_dict(run)
        latency = as_dict(run.get("latency_ms"))
        rows.append([label, fmt_ms(latency.get("p50")), fmt_ms(latency.get("p90")), fmt_ms(latency.get("p99")),
                     fmt_bytes(as_dict(run.get("memory")).get("peak_rss_increase_bytes")),
                     as_text(as_dict(run.get("device")).get("cpu_model")) or as_text(as_dict(run.get("device")).get("machine"))])
    if not rows:
        return None
    host = as_text(as_dict(stage.get("options")).get("ssh"))
    return table_html([Col("model"), Col("p50 ms", True), Col("p90 ms", True), Col("p99 ms", True),
                   Col("peak RSS +", True), Col("device", wrap=True)], rows, caption=f"measured on {host}")


def comparisons_section(report: dict[str, Any]) -> Html | None:
    parts = []
    for comparison in as_list(report.get("comparisons")):
        comparison = as_dict(comparison)
        by_op = {str(k): as_dict(v) for k, v in as_dict(comparison.get("by_op_type")).items()}
        total = as_dict(comparison.get("total"))
        title = (f"estimate for {as_text(comparison.get('target')) or '?'} vs measurement on "
                 f"{as_text(comparison.get('device')) or 'host'}, {int_text(comparison.get('threads'))} thread(s)")
        ordered = sorted(by_op.items(), key=lambda kv: -max(as_number(kv[1].get("estimated_ms")) or 0,
                                                          as_number(kv[1].get("measured_ms")) or 0))
        rows = [[op, fmt_ms(v.get("estimated_ms")), fmt_ms(v.get("measured_ms")), ratio_html(v.get("ratio"))]
                for op, v in ordered]
        rows.append([Html("<strong>total</strong>"), fmt_ms(total.get("estimated_ms")),
                     fmt_ms(total.get("measured_ms")), ratio_html(total.get("ratio"))])
        chart_rows = [ChartRow(op, [
            Bar([Segment(as_number(v.get("estimated_ms")) or 0, "c-est", f"{op}: estimated")],
                 f"{fmt_ms(v.get('estimated_ms'))} ms est."),
            Bar([Segment(as_number(v.get("measured_ms")) or 0, "c-meas", f"{op}: measured")],
                 f"{fmt_ms(v.get('measured_ms'))} ms meas.")]) for op, v in ordered]
        parts.append('<div class="pair"><div>'
                     + table_html([Col("op type"), Col("estimated ms", True), Col("measured ms", True),
                               Col("est / meas", True)], rows, caption=title, row_classes=[""] * len(ordered)
                              + ["row-total"])
                     + "</div><div>"
                     + bar_chart(f"per op type, ms ({as_text(comparison.get('target'))})", chart_rows,
                                  [("c-est", "estimated"), ("c-meas", "measured")], width=PAIR_CHART_WIDTH)
                     + "</div></div>")
    return Html("".join(parts)) if parts else None


def footer_html(report: dict[str, Any], source_label: str | None) -> Html:
    versions = as_dict(report.get("tool_versions"))
    command = [str(a) for a in as_list(report.get("command"))]
    parts = []
    if command:
        parts.append(f"<div><strong>command</strong> <code>{esc(shlex.join(command))}</code></div>")
    if versions:
        parts.append("<div><strong>versions</strong> " + ", ".join(f"{esc(k)} {esc(v)}" for k, v in versions.items())
                     + "</div>")
    origin = f" from <code>{esc(source_label)}</code>" if source_label else ""
    parts.append(f'<div class="muted">rendered by edgeopt{origin}; self-contained: no scripts, nothing loaded '
                 f"from the network</div>")
    return Html(f"<footer>{''.join(parts)}</footer>")
