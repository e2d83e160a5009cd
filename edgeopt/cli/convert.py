"""`edgeopt convert MODEL -o OUT`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
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


def convert_command(
    ctx: typer.Context,
    model: str = typer.Argument(None, show_default=False,
                                help="Source: model.onnx, TorchScript .pt, .pt2, or a factory pkg.module:function "
                                     "/ path/file.py:function. Omitted: the [pipeline] of edgeopt.toml runs."),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder (OUT/model.onnx, OUT/report.json); "
                                                             "required with MODEL."),
    config_file: Path = typer.Option(None, "--config", "-c",
                                     help="Project file for a run without MODEL (default: ./edgeopt.toml, or "
                                          "[tool.edgeopt] in ./pyproject.toml)."),
    input_shape: list[str] = typer.Option([], "--input-shape",
                                          help="Input shape NAME=1x3x224x224 (repeatable; NAME= may be dropped "
                                               "for single-input models)."),
    input_dtype: list[str] = typer.Option([], "--input-dtype", help="Input dtype NAME=int64 (default float32)."),
    dim: list[str] = typer.Option([], "--dim", help="Size of a named symbolic dim, NAME=SIZE (e.g. seq=128, "
                                                    "height=320), in every input that uses it (repeatable)."),
    fill: list[str] = typer.Option([], "--fill", help="Value of an input the data lacks: NAME=zeros|ones|NUMBER "
                                                      "(repeatable; float inputs default to zeros, integer inputs "
                                                      "need data or a fill)."),
    state_pair: list[str] = typer.Option([], "--state-pair",
                                         help="A stream's recurrent state: OUTPUT=INPUT feeds the output back into "
                                              "the input on the next call (repeatable)."),
    opset: int = typer.Option(None, "--opset", help="Target ONNX opset (>= 13). Default: keep the source's, "
                                                    "upgrading anything older than 13; torch's default for exports."),
    weights: Path = typer.Option(None, "--weights", help="state_dict for a factory source (loaded weights-only)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                      help="Allow unpickling Python objects (full nn.Module files). Runs code from "
                                           "the file: only for files you trust."),
    static_batch: bool = typer.Option(False, "--static-batch", help="Keep the batch axis fixed instead of dynamic."),
    no_simplify: bool = typer.Option(False, "--no-simplify", help="Skip graph simplification (onnxslim)."),
    parity_samples: int = typer.Option(3, "--parity-samples", min=1, max=100, help="Random samples per parity check."),
    parity_atol: float = typer.Option(1e-4, "--parity-atol", min=0.0, help="Absolute tolerance of parity checks."),
    parity_rtol: float = typer.Option(1e-3, "--parity-rtol", min=0.0,
                                      help="Tolerance relative to the largest reference value."),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="Keep the work folder when a run fails."),
    quantize: str = typer.Option("auto", "--quantize",
                                 help="auto|static|dynamic|weights-only|none. auto quantizes when --calib is given, "
                                      "tries the target's recipes and ships the fastest faithful one."),
    calib: Path = typer.Option(None, "--calib", help="Calibration data: .npz keyed by input name, a folder of "
                                                     ".npy/.npz, or a folder of images (with --calib-preprocess)."),
    eval_data: Path = typer.Option(None, "--eval", help="Evaluation data (same formats; a 'labels' key gives task "
                                                        "accuracy). Default: hold out 20% of --calib."),
    calib_preprocess: str = typer.Option(None, "--calib-preprocess",
                                         help="For image folders: size=224x224,mean=0.485/0.456/0.406,"
                                              "std=0.229/0.224/0.225,layout=NCHW,order=RGB"),
    max_calib_samples: int = typer.Option(None, "--max-calib-samples", min=1, help="Use at most N samples."),
    allow_random_calibration: bool = typer.Option(False, "--allow-random-calibration",
                                                  help="Calibrate on random inputs (smoke tests only; warns)."),
    target: list[str] = typer.Option(["host"], "--target", "-t",
                                     help="Hardware target (repeatable; edgeopt targets list). The first one picks "
                                          "the quantization recipe; each gets a static latency/memory profile."),
    targets_dir: Path = typer.Option(None, "--targets-dir", help="Extra folder of target .toml files."),
    min_cosine: float = typer.Option(0.99, "--min-cosine", help="Fidelity floor: per-output mean cosine to float."),
    min_top1: float = typer.Option(None, "--min-top1", min=0.0, max=1.0,
                                   help="Also require this top-1 agreement on classifier-like outputs."),
    force_int8: bool = typer.Option(False, "--force-int8", help="Ship int8 even when it is not faster on host."),
    speed_fallback: bool = typer.Option(True, "--speed-fallback/--no-speed-fallback",
                                        help="Where latency is measured (host target, --ssh): keep in float the "
                                             "layers whose int8 kernels profile slower, if the model gets faster."),
    activation_type: str = typer.Option(None, "--activation-type", help="u8|s8 (default: the target decides)."),
    weight_type: str = typer.Option(None, "--weight-type", help="s8|u8 (default s8)."),
    per_channel: bool = typer.Option(None, "--per-channel/--per-tensor", help="Weight scales per output channel "
                                                                              "(default) or per tensor."),
    calibration_method: str = typer.Option(None, "--calibration-method", help="minmax|entropy|percentile."),
    quant_format: str = typer.Option(None, "--quant-format", help="qdq|qoperator (default qdq)."),
    threads: int = typer.Option(1, "--threads", min=1, help="Threads for latency measurement (host and --ssh)."),
    ssh: str = typer.Option(None, "--ssh", help="Device to profile the final model (and the float baseline) on, "
                                                "over SSH; its numbers decide whether int8 ships."),
    ssh_config: Path = typer.Option(None, "--ssh-config", help="OpenSSH client config file to use (ssh -F)."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key",
                                             help="Trust the device's host key on first contact (accept-new)."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Python on the device."),
    device_runs: int = typer.Option(50, "--device-runs", min=1, help="Measured runs per model on the device."),
    prune: float = typer.Option(None, "--prune", help="Remove this fraction of channels (0 < RATIO < 1) "
                                                     "structurally, rounded to the target's SIMD width."),
    prune_criterion: str = typer.Option("magnitude", "--prune-criterion", help="magnitude|taylor|bn_scale."),
    prune_scope: str = typer.Option("per_layer", "--prune-scope", help="per_layer|global."),
    prune_ignore: list[str] = typer.Option([], "--prune-ignore", help="Layer (module name) to keep whole "
                                                                      "(repeatable; default: the detected head)."),
    prune_steps: int = typer.Option(1, "--prune-steps", min=1, help="Prune iteratively in this many steps."),
    prune_multiple: int = typer.Option(None, "--prune-multiple", min=1,
                                       help="Round kept channels to this multiple (default: from the target)."),
    prune_heads: str = typer.Option("auto", "--prune-heads",
                                    help="Attention with separate q/k/v projections: whole (remove heads), dims "
                                         "(narrow every head) or auto (whole where such modules exist)."),
    allow_unprunable: bool = typer.Option(False, "--allow-unprunable",
                                          help="An ONNX graph that cannot be pruned continues unpruned."),
    finetune: str = typer.Option(None, "--finetune", help="Fine-tune after pruning: .npz with inputs and "
                                                          "'labels', or a hook pkg.mod:fn returning loaders."),
    finetune_val: Path = typer.Option(None, "--finetune-val", help="Validation .npz (default: hold out 20%)."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Fine-tuning epochs (at most)."),
    lr: float = typer.Option(1e-3, "--lr", help="Fine-tuning learning rate."),
    lr_schedule: str = typer.Option("cosine", "--lr-schedule", help="cosine|step|constant."),
    l1: float = typer.Option(0.0, "--l1", min=0.0, help="L1 regularization strength."),
    l2: float = typer.Option(0.0, "--l2", min=0.0, help="L2 regularization (weight decay)."),
    patience: int = typer.Option(3, "--patience", min=1, help="Epochs without a better validation loss "
                                                              "before stopping."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Fine-tuning batch size."),
    distill: float = typer.Option(0.0, "--distill", min=0.0, max=1.0,
                                  help="Weight of distillation from the unpruned model (0: off)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON on stdout."),
) -> None:
    """Export MODEL to a clean, parity-checked ONNX model in OUT/model.onnx."""
    from pydantic import ValidationError

    from edgeopt.cli.app import invocation
    from edgeopt.config.settings import (
        ConvertConfig,
        DeviceConfig,
        FinetuneSettings,
        ParityConfig,
        PruneConfig,
        QuantizeConfig,
    )
    from edgeopt.data import (
        parse_dims,
        parse_fills,
        parse_input_dtypes,
        parse_input_shapes,
        parse_state_pairs,
    )
    from edgeopt.errors import InputError, first_validation_error
    from edgeopt.pipeline import convert

    shapes = parse_input_shapes(input_shape)
    parse_fills(fill)  # refuse bad values here, with the flag's name
    try:
        quantize_config = QuantizeConfig(
            mode=quantize, calib=str(calib) if calib else None, eval=str(eval_data) if eval_data else None,
            calib_preprocess=calib_preprocess, max_calib_samples=max_calib_samples,
            allow_random_calibration=allow_random_calibration, min_cosine=min_cosine, min_top1=min_top1,
            force_int8=force_int8, speed_fallback=speed_fallback, activation_type=activation_type,
            weight_type=weight_type, per_channel=per_channel,
            calibration_method=calibration_method, format=quant_format, threads=threads)
    except ValidationError as exc:
        where, message = first_validation_error(exc)
        flag = "--" + where.split(".")[0].replace("_", "-").replace("mode", "quantize").replace("format", "quant-format")
        raise InputError(f"bad value for {flag}: {message}", "see edgeopt convert --help") from None
    try:
        prune_config = PruneConfig(ratio=prune, criterion=prune_criterion, scope=prune_scope,
                                   ignored_layers=list(prune_ignore) or None, steps=prune_steps,
                                   channel_multiple=prune_multiple, allow_unprunable=allow_unprunable,
                                   heads=prune_heads) \
            if prune is not None else None
        finetune_config = FinetuneSettings(data=finetune, val=str(finetune_val) if finetune_val else None,
                                           epochs=epochs, lr=lr, schedule=lr_schedule, l1=l1, weight_decay=l2,
                                           patience=patience, batch_size=batch_size, distill_weight=distill) \
            if finetune is not None else None
    except ValidationError as exc:
        where, message = first_validation_error(exc)
        raise InputError(f"bad pruning/fine-tuning setting {where}: {message}", "see edgeopt convert --help") from None
    if model is not None and output is None:
        raise InputError("-o OUT is required when MODEL is given", "e.g. edgeopt convert model.onnx -o out")
    config = ConvertConfig(
        source=model or "",
        output_dir=str(output or ""),
        input_shapes={(k or ""): list(v) for k, v in shapes.items()},
        input_dtypes=parse_input_dtypes(input_dtype),
        dims=parse_dims(dim),
        fills={name: fill.text for name, fill in parse_fills(fill).items()},
        state_pairs=parse_state_pairs(state_pair),
        opset=opset,
        dynamic_batch=not static_batch,
        simplify=not no_simplify,
        weights=str(weights) if weights else None,
        trust_pickle=trust_pickle,
        keep_failed=keep_failed,
        parity=ParityConfig(samples=parity_samples, atol=parity_atol, rtol=parity_rtol),
        targets=list(dict.fromkeys(target)),
        targets_dir=str(targets_dir) if targets_dir else None,
        quantize=quantize_config,
        device=DeviceConfig(ssh=ssh, python=remote_python, ssh_config=str(ssh_config) if ssh_config else None,
                            accept_new_host_key=accept_new_host_key, runs=device_runs, threads=threads)
        if ssh else None,
        prune=prune_config,
        finetune=finetune_config,
    )
    if model is None:
        config = _from_project_file(ctx, config, config_file, output)
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


# CLI parameter → (section of ConvertConfig or None for the top level, field)
_FLAG_FIELDS: dict[str, tuple[str | None, str]] = {
    "input_shape": (None, "input_shapes"), "input_dtype": (None, "input_dtypes"), "opset": (None, "opset"),
    "dim": (None, "dims"), "fill": (None, "fills"), "state_pair": (None, "state_pairs"),
    "weights": (None, "weights"), "trust_pickle": (None, "trust_pickle"), "static_batch": (None, "dynamic_batch"),
    "no_simplify": (None, "simplify"), "keep_failed": (None, "keep_failed"), "target": (None, "targets"),
    "targets_dir": (None, "targets_dir"),
    "parity_samples": ("parity", "samples"), "parity_atol": ("parity", "atol"), "parity_rtol": ("parity", "rtol"),
    "quantize": ("quantize", "mode"), "calib": ("quantize", "calib"), "eval_data": ("quantize", "eval"),
    "calib_preprocess": ("quantize", "calib_preprocess"), "max_calib_samples": ("quantize", "max_calib_samples"),
    "allow_random_calibration": ("quantize", "allow_random_calibration"), "min_cosine": ("quantize", "min_cosine"),
    "min_top1": ("quantize", "min_top1"), "force_int8": ("quantize", "force_int8"),
    "speed_fallback": ("quantize", "speed_fallback"),
    "activation_type": ("quantize", "activation_type"), "weight_type": ("quantize", "weight_type"),
    "per_channel": ("quantize", "per_channel"), "calibration_method": ("quantize", "calibration_method"),
    "quant_format": ("quantize", "format"), "threads": ("quantize", "threads"),
    "ssh_config": ("device", "ssh_config"), "accept_new_host_key": ("device", "accept_new_host_key"),
    "remote_python": ("device", "python"), "device_runs": ("device", "runs"), "ssh": ("device", "ssh"),
    "prune": ("prune", "ratio"), "finetune": ("finetune", "data"),
    "prune_criterion": ("prune", "criterion"), "prune_scope": ("prune", "scope"),
    "prune_ignore": ("prune", "ignored_layers"), "prune_steps": ("prune", "steps"),
    "prune_multiple": ("prune", "channel_multiple"), "allow_unprunable": ("prune", "allow_unprunable"),
    "prune_heads": ("prune", "heads"),
    "finetune_val": ("finetune", "val"), "epochs": ("finetune", "epochs"), "lr": ("finetune", "lr"),
    "lr_schedule": ("finetune", "schedule"), "l1": ("finetune", "l1"), "l2": ("finetune", "weight_decay"),
    "patience": ("finetune", "patience"), "batch_size": ("finetune", "batch_size"),
    "distill": ("finetune", "distill_weight"),
}


def _from_project_file(ctx: typer.Context, flags: Any, config_file: Path | None, output: Path | None) -> Any:
    """The [pipeline] of the project file, with the flags given on the command line on top."""
    from edgeopt.config.project import find_config, load_config, pipeline_config
    from edgeopt.errors import InputError

    path = find_config(config_file)
    if path is None:
        raise InputError("no MODEL given, and no edgeopt.toml (or [tool.edgeopt] in pyproject.toml) here",
                         "pass MODEL -o OUT, or declare [pipeline] source = \"model.onnx\" in edgeopt.toml")
    base = pipeline_config(load_config(path), output_override=str(output) if output else None)
    given = {name for name in ctx.params
             if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {"parity": {}, "quantize": {}, "device": {}, "prune": {}, "finetune": {}}
    for name in given:
        section, field = _FLAG_FIELDS.get(name, (None, None))
        if field is None:
            continue
        if section is None:
            top[field] = getattr(flags, field)
        elif section in ("device", "prune", "finetune"):
            # these sections exist in the flags only when --ssh/--prune/--finetune was given
            value = ctx.params[name]
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, list):
                value = list(value) or None
            sections[section][field] = value
        else:
            sections[section][field] = getattr(getattr(flags, section), field)
    if "threads" in given and base.device is not None:  # --threads times the file's device runs too
        sections["device"]["threads"] = ctx.params["threads"]
    # the file's section refined by the flags given; a creating flag (--ssh, --prune, --finetune)
    # brings the section from the flags when the file has none
    for flag, section in (("ssh", "device"), ("prune", "prune"), ("finetune", "finetune")):
        if getattr(base, section) is not None:
            if sections[section]:
                top[section] = _merged(getattr(base, section), sections[section])
        elif flag in given:
            top[section] = getattr(flags, section)
        elif sections[section]:
            flags_text = ", ".join(f"--{n.replace('_', '-')}" for n in sorted(given)
                                   if _FLAG_FIELDS.get(n, (None,))[0] == section)
            warn(f"{flags_text} ignored: neither the command line nor {path.name} sets up {section} "
                 f"(add --{flag} or [pipeline.{section}])")
    for section in ("parity", "quantize"):
        if sections[section]:
            top[section] = _merged(getattr(base, section), sections[section])
    return _merged(base, top)


def _merged(model: Any, updates: dict[str, Any]) -> Any:
    """``model`` with ``updates``, validated again (a flag's value must satisfy the file's model too)."""
    from pydantic import ValidationError

    from edgeopt.errors import InputError, first_validation_error

    data = {**model.model_dump(), **{k: v.model_dump() if hasattr(v, "model_dump") else v
                                     for k, v in updates.items()}}
    try:
        return type(model).model_validate(data)
    except ValidationError as exc:
        where, message = first_validation_error(exc)
        raise InputError(f"bad value for {where}: {message}", "see edgeopt convert --help") from None


def _render_pruning(console: Any, pruning: dict[str, Any]) -> None:
    steps = pruning["steps"]
    targets = list(steps[0]["estimated_latency_ms"]) if steps else []
    table = Table(title=f"Pruning {pruning['ratio']:.0%} (channels rounded to multiples of "
                        f"{pruning['channel_multiple'] or 1})", title_justify="left")
    for column in ("step", "params", "MACs", "size", *(f"est. {t} ms" for t in targets), "host ms (× unpruned)",
                   "accuracy"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for step in steps:
        host = "-" if step.get("host_latency_ms") is None else (
            f"{step['host_latency_ms']:.4g} ({step['host_latency_ratio']:.2f}x)"
            if step.get("host_latency_ratio") is not None else f"{step['host_latency_ms']:.4g}")
        quality = (f"{step['accuracy']:.4f}" if step.get("accuracy") is not None else
                   (f"cos {step['fidelity']:.4f}" if step.get("fidelity") is not None else "-"))
        estimates = [("-" if step["estimated_latency_ms"].get(t) is None else f"{step['estimated_latency_ms'][t]:.4g}")
                     for t in targets]
        table.add_row(step["step"], format_count(step["params"]), format_count(step["macs"]),
                      format_bytes(step["size_bytes"]), *estimates, host, quality)
    console.print(table)
    for block in pruning.get("attention", []):
        console.print(f"attention {block['name']}: {block['heads_before']} → {block['heads_after']} heads of "
                      f"{block['head_size_before']} → {block['head_size_after']}")
    tuned = pruning.get("finetune")
    if tuned:
        console.print(f"fine-tuning: {tuned['epochs_run']} epoch(s), best epoch {tuned['best_epoch']}"
                      + (", stopped early" if tuned["stopped_early"] else "")
                      + (", distilled from the unpruned model" if tuned["distilled"] else ""))
    for flag in pruning.get("not_faster", []):
        console.print(f"[bold yellow]NOT FASTER[/]: {flag}")


def _render(result: Any) -> None:
    report = result.report
    console = out_console()
    table = Table(title=f"edgeopt convert: {report.source.path if report.source else ''}", title_justify="left")
    for column in ("stage", "status", "output", "size", "parity (max |diff|, min cosine)", "time"):
        table.add_column(column)
    for stage in report.stages:
        output = stage.outputs[-1] if stage.outputs else None
        parity = "-"
        if stage.parity:
            outputs = [o for c in stage.parity for o in c.outputs]
            cosines = [o.cosine for o in outputs if o.cosine is not None]
            parity = f"{max(o.max_abs_diff for o in outputs):.2e}, " + (f"{min(cosines):.6f}" if cosines else "exact")
        table.add_row(stage.name, stage.status, Path(output.path).name if output else "-",
                      format_bytes(output.size_bytes) if output else "-", parity, f"{stage.duration_s:.2f}s")
    console.print(table)
    summary = report.summary
    load = report.stage("load")
    resolved = (load.details.get("resolved_inputs") or {}) if load else {}
    if resolved.get("inputs"):
        data = (load.details.get("quantization_data") or {}).get("calibration") or {}
        print_inputs(console, resolved, data.get("layouts"))
    console.print(
        f"[bold]{result.model_path}[/bold]: {format_bytes(summary.get('size_bytes'))} "
        f"(gzip {format_bytes(summary.get('gzip_size_bytes'))}), opset {summary.get('opset')}, "
        f"{format_count(summary.get('parameter_count'))} parameters, {format_count(summary.get('macs_total'))} MACs"
    )
    for name, verdict in (summary.get("targets") or {}).items():
        latency = (f"~{verdict['latency_ms']:.3g} ms estimated" if verdict.get("latency_ms") is not None
                   else f"no latency estimate ({str(verdict.get('estimate_unavailable_reason')).split(': latency')[0]}"
                        + ("; run `edgeopt targets calibrate host`" if name == "host" else "") + ")")
        fits = {True: "fits in memory", False: "DOES NOT FIT in memory", None: "memory fit unknown"}[verdict["fits"]]
        line = f"{name}: {latency}, {fits}"
        if verdict.get("accelerator"):
            total = verdict["accelerator_nodes"] + verdict["cpu_nodes"]
            line += (f", {verdict['accelerator_nodes']}/{total} nodes on {verdict['accelerator']} "
                     f"in {verdict['partitions']} partition(s)")
            if verdict["full_int8_required"] and not verdict["full_int8"]:
                line += ", NOT fully int8 (required)"
        console.print(line)
    pruning = summary.get("pruning")
    if pruning:
        _render_pruning(console, pruning)
    device = summary.get("device")
    if device:
        versus = (f" ({device['ratio_to_float']:.2f}x the float model's {device['float_p50_ms']:.3g} ms)"
                  if device.get("ratio_to_float") is not None else "")
        console.print(f"measured on {device['host']}: p50 {device['p50_ms']:.3g} ms{versus}, peak RSS +"
                      f"{format_bytes(device['peak_rss_increase_bytes'])}")
    quant = summary.get("quantization") or {}
    if quant.get("shipped") == "int8":
        accuracy = ""
        if quant.get("accuracy_float") is not None:
            accuracy = f", accuracy {quant['accuracy_float']:.4f} → {quant['accuracy_int8']:.4f}"
        measured_on = report.stage("quantize").details.get("latency_measured_on")
        on = f" on {measured_on}" if measured_on and measured_on != "host" else ""
        latency = f", {quant['latency_ratio']:.2f}x float latency{on}" if quant.get("latency_ratio") else ""
        for_speed = f" ({len(quant['float_for_speed'])} for speed)" if quant.get("float_for_speed") else ""
        kept = f", {len(quant['float_nodes'])} node(s) kept in float{for_speed}" if quant.get("float_nodes") else ""
        console.print(f"int8: {quant['recipe']} (worst output cosine {quant['worst_cosine']:.4f}{accuracy}{latency}, "
                      f"{quant['size_ratio']:.2f}x size{kept})")
    elif report.stage("quantize") is not None:
        console.print(f"shipped the float model: {str(quant.get('reason')).removeprefix('kept the float model: ')}")
    console.print(f"report: {result.report_path}")

