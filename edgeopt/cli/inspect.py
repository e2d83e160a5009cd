"""`edgeopt inspect MODEL`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from edgeopt.cli.output import out_console, print_json
from edgeopt.units import format_bytes, format_count


def inspect_command(
    model: Path = typer.Argument(..., help="ONNX or TFLite model file.", show_default=False),
    input_shape: list[str] = typer.Option(
        [], "--input-shape", help="Fix symbolic dims for MAC counts: NAME=1x3x224x224 (repeatable)."),
    dim: list[str] = typer.Option([], "--dim", help="Size of a named symbolic dim for MAC counts, NAME=SIZE "
                                                    "(repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Format, opset, inputs/outputs, parameters, MACs, size, op histogram, quantization (.tflite: signatures,
    per-tensor/per-axis quantization, fully int8 or not, float16 weights, custom ops)."""
    from edgeopt.commands.inspect import inspect_model
    from edgeopt.data import parse_dims, parse_input_shapes

    result = inspect_model(model, parse_input_shapes(input_shape), parse_dims(dim))
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        document = result.model_dump(mode="json")
        _render_tflite(document) if document["file"]["format"] == "tflite" else _render(document)
    if result.file.faults:  # described above; the run still fails, with the line profile and convert refuse it with
        from edgeopt.formats.onnx_faults import invalid_graph_error

        raise invalid_graph_error(result.file.path, result.file.faults)


def _shape(dims: list[Any] | None) -> str:
    if dims is None:
        return "?"
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _render(result: dict[str, Any]) -> None:
    console = out_console()
    facts, graph = result["file"], result["graph"]
    opsets = ", ".join(f"{domain} {version}" for domain, version in graph["opsets"].items())
    console.print(f"[bold]{escape(facts['path'])}[/bold]  ({facts['format']}, opset {opsets}, "
                  f"IR {graph['ir_version']})")
    producer = graph.get("producer") or {}
    if isinstance(producer, dict):
        producer = " ".join(str(v) for v in producer.values() if v)
    if producer:
        console.print(f"producer       {escape(str(producer))}")
    console.print(f"size on disk   {format_bytes(facts['size_bytes'])}  (gzip {format_bytes(facts['gzip_size_bytes'])})")
    console.print(f"parameters     {format_count(graph['parameter_count'])}")
    unknown = len(graph.get("macs_unknown_nodes") or [])
    if result.get("unsized_dims"):
        console.print(f"MACs           not counted: {escape(result['unsized_dims'])}")
    else:
        console.print(f"MACs           {format_count(graph['macs_total'])}"
                      + (f"  ({unknown} nodes with unknown shapes not counted)" if unknown else "")
                      + (f"  at {escape(result['counted_at'])}" if result.get("counted_at") else ""))
    console.print(f"nodes          {graph['node_count']}")
    console.print(f"quantization   {graph['quantization']}"
                  + (f" ({graph['quantization_detail']})" if graph.get("quantization_detail") else ""))
    if facts.get("checker_error"):
        console.print(f"[yellow]onnx.checker   {escape(facts['checker_error'])}[/yellow]")
    if facts.get("faults"):
        console.print(f"[bold red]INVALID[/bold red]        {len(facts['faults'])} structural fault(s): no runtime "
                      "can run this graph")
        for fault in facts["faults"]:
            console.print(f"[red]  - {escape(fault)}[/red]")

    io_table = Table(title="Inputs and outputs", title_justify="left")
    for column in ("", "name", "shape", "dtype"):
        io_table.add_column(column)
    for kind, items in (("input", graph["inputs"]), ("output", graph["outputs"])):
        for item in items:
            io_table.add_row(kind, escape(item["name"]), escape(_shape(item.get("shape"))), str(item.get("dtype")))
    console.print(io_table)

    if graph["macs_by_op_type"]:
        macs = Table(title="MACs by op type", title_justify="left")
        macs.add_column("op type")
        macs.add_column("MACs", justify="right")
        macs.add_column("share", justify="right")
        total = graph["macs_total"] or 1
        for op, count in sorted(graph["macs_by_op_type"].items(), key=lambda kv: -(kv[1] or 0)):
            macs.add_row(escape(op), format_count(count), f"{100 * (count or 0) / total:.1f}%")
        console.print(macs)

    ops = Table(title="Op histogram", title_justify="left")
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, count in sorted(graph["op_histogram"].items(), key=lambda kv: (-kv[1], kv[0])):
        ops.add_row(escape(op), str(count))
    console.print(ops)

    if graph["initializers"]:
        inits = Table(title="Weights by dtype", title_justify="left")
        for column in ("dtype", "tensors", "elements", "bytes"):
            inits.add_column(column, justify="left" if column == "dtype" else "right")
        for dtype, info in graph["initializers"].items():
            inits.add_row(dtype, str(info["count"]), format_count(info["elements"]), format_bytes(info["bytes"]))
        console.print(inits)
    if facts["external_data_files"]:
        ext = Table(title="External data files", title_justify="left")
        for column in ("location", "tensors", "size"):
            ext.add_column(column)
        for item in facts["external_data_files"]:
            ext.add_row(escape(item["location"]), str(item["tensors"]), format_bytes(item["size_bytes"]))
        console.print(ext)


def _render_tflite(result: dict[str, Any]) -> None:
    from edgeopt.cli.output import warn

    console = out_console()
    facts, graph = result["file"], result["graph"]
    console.print(f"[bold]{escape(facts['path'])}[/bold]  (tflite, schema {graph['schema_version']}, "
                  f"{len(graph['subgraphs'])} subgraph(s))")
    console.print(f"size on disk   {format_bytes(facts['size_bytes'])}  (gzip {format_bytes(facts['gzip_size_bytes'])})")
    console.print(f"parameters     {format_count(graph['parameter_count'])}")
    unknown = graph["macs_unknown_ops"]
    console.print(f"MACs           {format_count(graph['macs_total']) if graph['macs_total'] is not None else '?'}"
                  + (f"  ({len(unknown)} ops with unknown shapes not counted)" if unknown else ""))
    if graph["fully_int8"]:
        console.print("fully int8     yes (inputs, outputs and every op)")
    else:
        parts = [f"{len(graph['float_ops'])} op(s) compute in float"] if graph["float_ops"] else []
        parts += [f"float inputs {', '.join(graph['float_inputs'])}"] if graph["float_inputs"] else []
        parts += [f"float outputs {', '.join(graph['float_outputs'])}"] if graph["float_outputs"] else []
        console.print(f"fully int8     no: {escape('; '.join(parts))}")
    if graph["float16_weights"]:
        console.print(f"float16        {len(graph['float16_weights'])} weight tensor(s), dequantized at load")
    for signature in graph["signatures"]:
        console.print(f"signature      {escape(signature['key'])}: ({escape(', '.join(signature['inputs']))}) → "
                      f"({escape(', '.join(signature['outputs']))})")
    io_table = Table(title="Inputs and outputs", title_justify="left")
    for column in ("", "name", "shape", "dtype", "quantization"):
        io_table.add_column(column)
    for kind, items in (("input", graph["inputs"]), ("output", graph["outputs"])):
        for item in items:
            q = item["quantization"]
            io_table.add_row(kind, escape(item["name"]), escape(_shape(item["shape"])), item["dtype"],
                             "" if q is None else f"scale {q['scale']:.4g}, zero point {q['zero_point']}"
                             if q["kind"] == "per-tensor" else f"per-axis ({q['channels']} channels)")
    console.print(io_table)
    ops = Table(title="Ops", title_justify="left")
    for column in ("op", "count", "MACs"):
        ops.add_column(column, justify="left" if column == "op" else "right")
    for op, count in graph["op_counts"].items():
        ops.add_row(escape(op), str(count), format_count(graph["macs_by_op"][op]) if op in graph["macs_by_op"] else "")
    console.print(ops)
    weights = Table(title="Largest stored tensors", title_justify="left")
    for column in ("tensor", "dtype", "bytes"):
        weights.add_column(column, justify="right" if column == "bytes" else "left")
    for item in graph["largest_tensors"]:
        weights.add_row(escape(item["name"]), item["dtype"], format_bytes(item["bytes"]))
    console.print(weights)
    for message in graph["warnings"]:
        warn(message)
