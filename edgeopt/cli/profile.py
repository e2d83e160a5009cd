"""`edgeopt profile MODEL --target T [--measure]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from edgeopt.cli.output import (
    EventLines,
    err_console,
    out_console,
    print_inputs,
    print_json,
    warn,
)
from edgeopt.events import Events
from edgeopt.units import format_bytes, format_count

if TYPE_CHECKING:  # the library is imported when the command runs (a fast --help)
    from edgeopt.commands.profile import ProfileReport
    from edgeopt.runtime.measure import Measurement


def profile_command(
    model: Path = typer.Argument(..., help="ONNX model file.", show_default=False),
    target: list[str] = typer.Option(["host"], "--target", "-t", help="Target profile (repeatable)."),
    input_shape: list[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224 for symbolic dims."),
    dim: list[str] = typer.Option([], "--dim", help="Size of a named symbolic dim, NAME=SIZE (repeatable)."),
    fill: list[str] = typer.Option([], "--fill", help="Value of an input without data: NAME=zeros|ones|NUMBER "
                                                      "(integer inputs need --inputs data or a fill)."),
    state_pair: list[str] = typer.Option([], "--state-pair", help="A stream's state, OUTPUT=INPUT: --inputs samples "
                                                                  "run in order, each call fed the last one's output."),
    measure: bool = typer.Option(False, "--measure", help="Also run the model here (onnxruntime, separate process)."),
    runs: int = typer.Option(50, "--runs", min=1, help="Measured runs after warm-up."),
    xnnpack: bool = typer.Option(True, "--xnnpack/--no-xnnpack", help=".tflite: measure with the interpreter's "
                                                                         "XNNPACK delegate (its default) or without."),
    threads: list[int] = typer.Option([], "--threads", help="Threads for --measure (repeatable; default 1 and all "
                                                            "cores)."),
    top: int = typer.Option(10, "--top", min=0, help="Heaviest nodes to list."),
    targets_dir: Path = typer.Option(None, "--targets-dir", help="Extra folder of target .toml files."),
    ssh: list[str] = typer.Option([], "--ssh", help="Measure on a device over SSH: an ~/.ssh/config alias, "
                                                    "user@host or user@host:port (repeatable)."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key",
                                             help="Trust a device's host key on first contact (OpenSSH "
                                                  "accept-new); a changed key is still refused."),
    ssh_config: Path = typer.Option(None, "--ssh-config", help="OpenSSH client config file to use (ssh -F)."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Python on the device."),
    remote_cache_dir: str = typer.Option("~/.cache/edgeopt", "--remote-cache-dir",
                                         help="Model cache folder on the device (kept, bounded in size)."),
    hosts: Path = typer.Option(None, "--hosts", help="TOML file of [[device]] tables (name, ssh, target) to "
                                                     "measure on, in parallel."),
    max_parallel: int = typer.Option(4, "--max-parallel", min=1, help="Devices measured at once."),
    inputs: Path = typer.Option(None, "--inputs", help="Measure on these inputs instead of random ones (calibration "
                                                       "data formats); devices' outputs are compared with this "
                                                       "machine's."),
    inputs_preprocess: str = typer.Option(None, "--inputs-preprocess",
                                          help="Preprocessing for an image folder given to --inputs "
                                               "(as --calib-preprocess)."),
    input_samples: int = typer.Option(8, "--input-samples", min=1, help="Samples of --inputs used."),
    output: Path = typer.Option(None, "--output", "-o", help="Also write the profile report JSON here."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile report as JSON on stdout."),
) -> None:
    """Estimate latency and memory per target; with --measure, measure on this machine too."""
    from edgeopt.commands.profile import profile_model
    from edgeopt.data import (
        parse_dims,
        parse_fills,
        parse_input_shapes,
        parse_state_pairs,
    )
    from edgeopt.fsutil import write_text_atomic

    shapes = parse_input_shapes(input_shape)
    dims, fills, pairs = parse_dims(dim), parse_fills(fill), parse_state_pairs(state_pair)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console,
                  disable=not err_console.is_terminal, transient=True) as progress:
        report = profile_model(model, list(dict.fromkeys(target)), input_shapes=shapes, dims=dims,
                               fills={name: f.text for name, f in fills.items()}, state_pairs=pairs,
                               measure=measure, runs=runs,
                               threads=list(threads) or None, targets_dir=targets_dir,
                               ssh_hosts=list(dict.fromkeys(ssh)) or None, hosts_file=hosts,
                               max_parallel=max_parallel, xnnpack=xnnpack,
                               ssh_options={"accept_new_host_key": accept_new_host_key, "python": remote_python,
                                            "cache_dir": remote_cache_dir,
                                            **({"config_file": ssh_config} if ssh_config else {})},
                               inputs=inputs, inputs_preprocess=inputs_preprocess, max_input_samples=input_samples,
                               events=Events(EventLines(progress, "profiling")))
    payload = report.model_dump(mode="json")
    if output is not None:
        write_text_atomic(output, report.model_dump_json(indent=2) + "\n")
    for message in report.warnings:
        warn(message)
    if as_json:
        print_json(payload)
        return
    _render(report, top)


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.3f}" if value < 10 else f"{value:.1f}")


def _sqnr(value: float | None, max_abs_error: float | None) -> str:
    if value is None:  # JSON has no infinity: identical outputs come back as null
        return "∞" if max_abs_error == 0 else "-"
    return f"{value:.1f}"


def _device_line(measurement: Measurement) -> str:
    """CPU, runtime, temperature and throttling: what explains a surprising device number."""
    facts, after = measurement.device, measurement.device_after
    parts = [facts.get("board") or facts.get("cpu_model") or facts.get("machine", "?"),
             " + ".join(facts.get("cpu_cores") or []) or None,
             f"{facts.get('cpu_count', '?')} cores", f"{measurement.runtime.get('name')} "
             f"{measurement.runtime.get('version') or ''}".strip()]
    if facts.get("cpu_governor"):
        parts.append(f"governor {facts['cpu_governor']}")
    if facts.get("soc_temp_c") is not None:
        temp = f"SoC {facts['soc_temp_c']:.0f} °C"
        if after.get("soc_temp_c") is not None:
            temp += f" → {after['soc_temp_c']:.0f} °C"
        parts.append(temp)
    throttled = after.get("throttled") or facts.get("throttled")
    if throttled:
        active = [k for k, v in throttled.items() if v is True and not k.endswith("_occurred")]
        past = [k.removesuffix("_occurred") for k, v in throttled.items() if v is True and k.endswith("_occurred")]
        parts.append("THROTTLED: " + ", ".join(active) if active else
                     ("throttled earlier: " + ", ".join(past) if past else "not throttled"))
    return "  " + "; ".join(part for part in parts if part)


def _render_per_op(console: Any, device: str, m: Any, top: int) -> None:
    """The slowest ops of one measured run, and how they were timed."""
    if not m.per_op:
        return
    per_run = [(op, op.median_us if op.median_us is not None else op.total_us / max(1, op.calls)) for op in m.per_op]
    whole_us = sum(us for _, us in per_run)
    table = Table(title=f"Slowest ops on {device}, {m.threads} thread(s)", title_justify="left")
    for column in ("node", "op", "µs per run", "share"):
        table.add_column(column, justify="right" if column in ("µs per run", "share") else "left")
    for op, us in sorted(per_run, key=lambda item: -item[1])[:top]:
        table.add_row(escape(op.node), escape(op.op_type or "?"), f"{us:.1f}",
                      f"{us / whole_us:.1%}" if whole_us else "-")
    console.print(table)
    if m.per_op_method == "op-by-op":
        console.print(f"  timed op by op (each operator alone, fed what it saw in the whole model; the TFLite "
                      f"interpreter has no op profiler): sum {_ms(whole_us / 1000)} ms vs the whole model's p50 "
                      f"{_ms(m.latency_ms.p50)} ms")
    if m.per_op_skipped:
        named = ", ".join(f"{entry['node']} ({entry['reason']})" for entry in m.per_op_skipped[:3])
        console.print(f"  {len(m.per_op_skipped)} op(s) not timed alone: {escape(named)}"
                      + (" ..." if len(m.per_op_skipped) > 3 else ""))


def _render(report: ProfileReport, top: int) -> None:
    console = out_console()
    if report.resolved_inputs is not None:
        print_inputs(console, report.resolved_inputs, report.inputs.layouts if report.inputs else None)
    for name, est in report.estimates.items():
        fits = "unknown" if est.fits_all is None else ("yes" if est.fits_all else "NO")
        at = f" at {est.threads} thread{'s' if est.threads != 1 else ''}" if est.threads else ""
        band = f" ±{est.latency_error:.0%}" if est.latency_error else ""
        latency = (f"{_ms(est.latency_ms)} ms{band}{at}" if est.latency_ms is not None
                   else f"no estimate ({est.estimate_unavailable_reason})")
        console.print(f"[bold]{escape(name)}[/bold]: latency {escape(latency)}, {format_count(est.macs_total)} MACs,"
                      f" weights {format_bytes(est.weight_bytes)}, peak activations "
                      f"{format_bytes(est.peak_activation_bytes)}, fits in memory: {fits}")
        if est.runtime_memory is not None:
            memory = est.runtime_memory
            parts = ", ".join(f"{part.key} {format_bytes(part.bytes)}" for part in memory.parts if part.key != "baseline")
            band = f" ±{est.memory_error:.0%}" if est.memory_error else ""
            console.print(f"  memory: peak RSS increase {format_bytes(memory.peak_increase_bytes)}{band} ({escape(parts)})"
                          + (f", {format_bytes(memory.total_bytes)} with the interpreter" if memory.total_bytes else ""))
        for check in est.fits:
            status = "?" if check.fits is None else ("ok" if check.fits else "DOES NOT FIT")
            console.print(f"  {check.memory}: {check.contents} {format_bytes(check.required_bytes)} of "
                          f"{format_bytes(check.available_bytes)} → {status}")
        if est.accelerator:
            console.print(f"  accelerator {escape(est.accelerator)}: {est.accelerator_node_count} nodes on it, "
                          f"{est.cpu_node_count} on the CPU, {est.partitions} partition(s), "
                          f"full int8: {'yes' if est.full_int8 else 'no'}"
                          + (" (REQUIRED)" if est.full_int8_required and not est.full_int8 else ""))
        if est.unknown_node_count:
            console.print(f"  {est.unknown_node_count} node(s) with unknown cost: "
                          f"{escape(', '.join(est.unknown_nodes[:5]))}")
        nodes = est.top_nodes(top)
        if nodes:
            table = Table(title=f"Heaviest nodes on {name}", title_justify="left")
            for column in ("node", "op", "dtype", "device", "MACs", "bytes", "est. µs", "bound"):
                table.add_column(column, justify="right" if column in ("MACs", "bytes", "est. µs") else "left")
            for n in nodes:
                table.add_row(escape(n.name), n.op_type, str(n.execution_dtype), n.device,
                              format_count(n.macs), format_bytes(n.bytes_total),
                              "-" if n.time_us is None else f"{n.time_us:.1f}", n.bound)
            console.print(table)
    for device, runs in report.measurements.items():
        table = Table(title=f"Measured on {device}", title_justify="left")
        for column in ("threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "first run ms", "load ms", "loaded RSS +",
                       "peak RSS +"):
            table.add_column(column, justify="right")
        for m in runs:
            lat = m.latency_ms
            table.add_row(str(m.threads), _ms(lat.p50), _ms(lat.p90), _ms(lat.p99), _ms(lat.mean),
                          _ms(m.first_run_ms), _ms(m.load_ms), format_bytes(m.memory.after_load_increase_bytes),
                          format_bytes(m.memory.peak_rss_increase_bytes))
        console.print(table)
        if runs and device != "host":
            console.print(escape(_device_line(runs[-1])))
        for m in runs:
            _render_per_op(console, device, m, top)
    for device, fidelity in report.device_fidelity.items():
        if fidelity.skipped:
            console.print(f"outputs on {escape(device)}: not compared ({escape(fidelity.skipped)})")
            continue
        table = Table(title=f"Outputs on {device} vs this machine ({fidelity.samples} samples)",
                      title_justify="left")
        for column in ("output", "cosine mean", "worst channel cosine", "SQNR dB", "max abs error", "agreement"):
            table.add_column(column, justify="left" if column == "output" else "right")
        for o in fidelity.outputs:
            agreement = o.exact_agreement if o.exact_agreement is not None else o.top1_agreement
            table.add_row(escape(o.name), f"{o.cosine_mean:.6f}",
                          "-" if o.channel_cosine_min is None else f"{o.channel_cosine_min:.6f}",
                          _sqnr(o.sqnr_db, o.max_abs_error), "-" if o.max_abs_error is None
                          else f"{o.max_abs_error:.3g}",
                          "-" if agreement is None else f"{agreement:.2%}")
        console.print(table)
    for comparison in report.comparisons:
        total = comparison.total
        ratio = "-" if total.ratio is None else f"{total.ratio:.2f}"
        console.print(f"estimate ({comparison.target}) / measurement ({comparison.device}, "
                      f"{comparison.threads} thread(s)): "
                      f"{_ms(total.estimated_ms)} / {_ms(total.measured_ms)} ms = {ratio}")
