"""`edgeopt convert MODEL -o OUT`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from edgeopt.cli.flags import given_settings, with_setting_options
from edgeopt.cli.pipeline_settings import merged_settings, project_pipeline, validated_settings
from edgeopt.cli.output import (
    EventLines,
    err_console,
    out_console,
    print_inputs,
    print_json,
    warn,
)
from edgeopt.config.settings import ConvertConfig
from edgeopt.events import Events
from edgeopt.units import format_bytes, format_count, plural


def _convert(
    ctx: typer.Context,
    model: str = typer.Argument(None, show_default=False,
                                help="Source: model.onnx, TorchScript .pt, .pt2, or a factory pkg.module:function "
                                     "/ path/file.py:function. Omitted: the [pipeline] of edgeopt.toml runs."),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder (OUT/model.onnx, OUT/report.json); "
                                                             "required with MODEL."),
    config_file: Path = typer.Option(None, "--config", "-c",
                                     help="Project file for a run without MODEL (default: ./edgeopt.toml, or "
                                          "[tool.edgeopt] in ./pyproject.toml)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON on stdout."),
    **settings: Any,
) -> None:
    """Export MODEL to a clean, parity-checked ONNX model in OUT/model.onnx."""
    from edgeopt.cli.app import invocation
    from edgeopt.errors import InputError
    from edgeopt.pipeline import convert

    partial, flags = given_settings(ConvertConfig, settings)
    if model is not None and output is None:
        raise InputError("-o OUT is required when MODEL is given", "e.g. edgeopt convert model.onnx -o out")
    if model is not None:
        base, origin = {"source": model, "output_dir": str(output)}, "the command line"
    else:
        base, origin = project_pipeline(config_file, output)
    config = validated_settings(merged_settings(base, partial, flags, origin), flags)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                  TimeElapsedColumn(),
                  console=err_console, transient=False, disable=not err_console.is_terminal) as progress:
        result = convert(config, Events(EventLines(progress)), command=["edgeopt", *invocation])
    for message in result.report.warnings:
        warn(message)
    if as_json:
        print_json(result.report.model_dump(mode="json"))
        return
    _render(result)


convert_command = with_setting_options(ConvertConfig, _convert)


def _render_pruning(console: Any, pruning: Any) -> None:
    steps = pruning.steps
    targets = list(steps[0].estimated_latency_ms) if steps else []
    title = (f"Pruning {pruning.ratio:.0%} (channels rounded to multiples of {pruning.channel_multiple or 1})"
             if pruning.ratio else "Fine-tuning (nothing pruned)")
    table = Table(title=title, title_justify="left")
    for column in ("step", "params", "MACs", "size", *(f"est. {t} ms" for t in targets), "host ms (× unpruned)",
                   "accuracy"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for step in steps:
        host = "-" if step.host_latency_ms is None else (
            f"{step.host_latency_ms:.4g} ({step.host_latency_ratio:.2f}x)"
            if step.host_latency_ratio is not None else f"{step.host_latency_ms:.4g}")
        quality = (f"{step.accuracy:.4f}" if step.accuracy is not None else
                   (f"cos {step.fidelity:.4f}" if step.fidelity is not None else "-"))
        estimates = ["-" if step.estimated_latency_ms.get(t) is None else f"{step.estimated_latency_ms[t]:.4g}"
                     for t in targets]
        table.add_row(step.step, format_count(step.params), format_count(step.macs), format_bytes(step.size_bytes),
                      *estimates, host, quality)
    console.print(table)
    for block in pruning.attention:
        console.print(f"attention {block['name']}: {block['heads_before']} → {block['heads_after']} heads of "
                      f"{block['head_size_before']} → {block['head_size_after']}")
    tuned = pruning.finetune
    if tuned:
        console.print(f"fine-tuning: {tuned.epochs_run} epoch(s), best epoch {tuned.best_epoch}"
                      + (", stopped early" if tuned.stopped_early else "")
                      + (", distilled from the unpruned model" if tuned.distilled else ""))
    for flag in pruning.not_faster:
        console.print(f"[bold yellow]NOT FASTER[/]: {flag}")


def _render(result: Any) -> None:
    report = result.report
    console = out_console()
    # no box: the whole run's summary fits one 80-column screen (the HTML report has every figure)
    table = Table(title=f"edgeopt convert: {report.source.path if report.source else ''}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    # time and peak RSS per stage only where they fit beside the rest (the report.html has them always)
    wide = console.width >= 100
    for column in ("stage", "status", "output", "size", "parity cos / |Δ|") + (("time", "peak RSS") if wide else ()):
        table.add_column(column)
    for stage in report.stages:
        output = stage.outputs[-1] if stage.outputs else None
        parity = "-"
        if stage.parity:
            outputs = [o for c in stage.parity for o in c.outputs]
            cosines = [o.cosine for o in outputs if o.cosine is not None]
            parity = (f"{min(cosines):.6f}" if cosines else "exact") + f" / {max(o.max_abs_diff for o in outputs):.1e}"
        cost = (f"{stage.duration_s:.2f}s", format_bytes(stage.peak_rss_bytes)) if wide else ()
        table.add_row(stage.name, stage.status, Path(output.path).name if output else "-",
                      format_bytes(output.size_bytes) if output else "-", parity, *cost)
    console.print(table)
    summary = report.summary
    load = report.stage("load")
    resolved = getattr(load.details, "resolved_inputs", None) if load else None
    if resolved is not None and resolved.inputs:
        data = getattr(load.details, "quantization_data", None)
        print_inputs(console, resolved, data.calibration.layouts if data and data.calibration else None)
    console.print(
        f"[bold]{result.model_path}[/bold]: {format_bytes(summary.size_bytes)} "
        f"(gzip {format_bytes(summary.gzip_size_bytes)}), opset {summary.opset}, "
        f"{format_count(summary.parameter_count)} parameters, {format_count(summary.macs_total)} MACs"
    )
    for name, verdict in summary.targets.items():
        band = f" ±{verdict.latency_error:.0%}" if verdict.latency_error else ""
        # the thread count said: the int8 line below is measured at one thread, the estimate priced at all cores
        at = f" at {plural(verdict.threads, 'thread')}" if verdict.threads else ""
        latency = (f"~{verdict.latency_ms:.3g} ms{band} estimated{at}" if verdict.latency_ms is not None
                   else f"no latency estimate ({str(verdict.estimate_unavailable_reason).split(': latency')[0]}"
                        + ("; run `edgeopt targets calibrate host`" if name == "host" else "") + ")")
        fits = {True: "fits in memory", False: "DOES NOT FIT in memory", None: "memory fit unknown"}[verdict.fits]
        line = f"{name}: {latency}, {fits}"
        if verdict.accelerator:
            total = verdict.accelerator_nodes + verdict.cpu_nodes
            line += (f", {verdict.accelerator_nodes}/{total} nodes on {verdict.accelerator} "
                     f"in {verdict.partitions} partition(s)")
            if verdict.full_int8_required and not verdict.full_int8:
                line += ", NOT fully int8 (required)"
        console.print(line)
    if summary.pruning is not None:
        _render_pruning(console, summary.pruning)
    device = summary.device
    if device is not None:
        versus = (f" ({device.ratio_to_float:.2f}x the float model's {device.float_p50_ms:.3g} ms)"
                  if device.ratio_to_float is not None else "")
        console.print(f"measured on {device.host}: p50 {device.p50_ms:.3g} ms{versus}, peak RSS +"
                      f"{format_bytes(device.peak_rss_increase_bytes)}")
    quant = summary.quantization
    if quant.shipped == "int8":
        _render_int8(console, quant)
    elif report.stage("quantize") is not None:
        console.print(f"shipped the float model: {str(quant.reason).removeprefix('kept the float model: ')}")
    quantize = report.stage("quantize")
    memory = getattr(quantize.details, "memory", None) if quantize else None
    if memory is not None and memory.estimate is not None:
        console.print(f"quantize memory: expected ~{format_bytes(memory.estimate.expected_peak_bytes)} at "
                      f"calibration batch {memory.calibration_batch}, measured peak "
                      f"{format_bytes(quantize.peak_rss_bytes)}")
    tflite = report.stage("tflite")
    if tflite is not None and tflite.outputs:
        int8 = getattr(tflite.details, "int8", None)
        what = "float" if int8 is None else f"{int8.shipped}: {int8.reason}"
        console.print(f"tflite: {tflite.outputs[-1].path} ({format_bytes(tflite.outputs[-1].size_bytes)}, {what})")
    if result.html_path is not None:
        console.print(f"report: {result.html_path} (open it in a browser; {result.report_path.name} beside it)")
    else:
        console.print(f"report: {result.report_path}")


def _render_int8(console: Any, quant: Any) -> None:
    """What shipping int8 bought, in the user's terms: size, measured latency, accuracy; then how."""
    where = "" if quant.latency_measured_on in (None, "host") else f" on {quant.latency_measured_on}"
    parts = [f"{quant.size_ratio:.2f}x the float model's size"]
    if quant.latency_ratio is not None:
        measured = f" ({quant.int8_ms:.3g} ms vs {quant.float_ms:.3g} ms)" if quant.int8_ms and quant.float_ms else ""
        threads = f" at {plural(quant.latency_threads, 'thread')}" if quant.latency_threads else ""
        parts.append(f"{quant.latency_ratio:.2f}x its latency{measured}, measured{where or ' on this machine'}{threads}")
    if quant.accuracy_float is not None and quant.accuracy_int8 is not None:
        samples = f" on {quant.evaluated_samples} labelled samples" if quant.evaluated_samples else ""
        parts.append(f"accuracy {quant.accuracy_float:.2%} → {quant.accuracy_int8:.2%}{samples}")
    console.print(f"[bold]int8 shipped[/bold]: {', '.join(parts)}")
    judged = quant.decided_by or (f"worst output cosine {quant.worst_cosine:.4f}"
                                  if quant.worst_cosine is not None else "fidelity not recorded")
    for_speed = f" ({len(quant.float_for_speed)} for speed)" if quant.float_for_speed else ""
    kept = f"; {len(quant.float_nodes)} node(s) kept in float{for_speed}" if quant.float_nodes else ""
    console.print(f"  recipe {quant.recipe}; {judged}{kept}")
