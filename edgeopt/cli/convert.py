"""`edgeopt convert MODEL -o OUT`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeopt.cli.output import err_console, out_console, print_json, warn
from edgeopt.units import format_bytes, format_count


class _RichProgress:
    """One spinner line per stage on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def stage_started(self, name: str, description: str) -> None:
        self.tasks[name] = self.progress.add_task(description, total=1)

    def stage_finished(self, name: str, status: str) -> None:
        task = self.tasks.get(name)
        if task is not None:
            self.progress.update(task, completed=1, description=f"{self.progress.tasks[task].description} [{status}]")


def convert_command(
    model: str = typer.Argument(..., show_default=False,
                                help="Source: model.onnx, TorchScript .pt, .pt2, or a factory pkg.module:function "
                                     "/ path/file.py:function."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (OUT/model.onnx, OUT/report.json)."),
    input_shape: list[str] = typer.Option([], "--input-shape",
                                          help="Input shape NAME=1x3x224x224 (repeatable; NAME= may be dropped "
                                               "for single-input models)."),
    input_dtype: list[str] = typer.Option([], "--input-dtype", help="Input dtype NAME=int64 (default float32)."),
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
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON on stdout."),
) -> None:
    """Export MODEL to a clean, parity-checked ONNX model in OUT/model.onnx."""
    from edgeopt.config import ConvertConfig, ParityConfig
    from edgeopt.data import parse_input_dtypes, parse_input_shapes
    from edgeopt.pipeline import convert

    shapes = parse_input_shapes(input_shape)
    config = ConvertConfig(
        source=model,
        output_dir=str(output),
        input_shapes={(k or ""): list(v) for k, v in shapes.items()},
        input_dtypes=parse_input_dtypes(input_dtype),
        opset=opset,
        dynamic_batch=not static_batch,
        simplify=not no_simplify,
        weights=str(weights) if weights else None,
        trust_pickle=trust_pickle,
        keep_failed=keep_failed,
        parity=ParityConfig(samples=parity_samples, atol=parity_atol, rtol=parity_rtol),
    )
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=False, disable=not err_console.is_terminal) as progress:
        result = convert(config, _RichProgress(progress), command=["edgeopt", *sys.argv[1:]])
    for message in result.report.warnings:
        warn(message)
    if as_json:
        print_json(result.report.model_dump(mode="json"))
        return
    _render(result)


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
    console.print(
        f"[bold]{result.model_path}[/bold]: {format_bytes(summary.get('size_bytes'))} "
        f"(gzip {format_bytes(summary.get('gzip_size_bytes'))}), opset {summary.get('opset')}, "
        f"{format_count(summary.get('parameter_count'))} parameters, {format_count(summary.get('macs_total'))} MACs"
    )
    console.print(f"report: {result.report_path}")
