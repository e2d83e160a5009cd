"""Normalising ONNX graphs: opset upgrade and simplification."""

from __future__ import annotations

import onnx

from edgeopt.errors import ExportError, InputError

# Per-channel quantization (QuantizeLinear with an axis) needs opset 13; older graphs
# quantize into invalid models, so everything edgeopt produces is at least this.
MIN_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    return 0


def check_requested_opset(opset: int | None) -> None:
    if opset is not None and opset < MIN_OPSET:
        raise InputError(
            f"--opset {opset} is below {MIN_OPSET}",
            f"edgeopt writes opset >= {MIN_OPSET} (per-channel int8 needs it); omit --opset or pass {MIN_OPSET}+",
        )
    if opset is not None and opset > onnx.defs.onnx_opset_version():
        raise InputError(
            f"--opset {opset} is newer than this onnx package knows ({onnx.defs.onnx_opset_version()})",
            "pass a lower --opset or upgrade onnx",
        )


def convert_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """Convert the default-domain opset; raises ExportError naming the blocker."""
    from onnx import version_converter

    current = default_opset(model)
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:  # the converter raises RuntimeError/IndexError/… depending on the op
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        hint = ("omit --opset to keep the model's own opset" if target < current
                else "re-export the model at opset >= 13 from its framework")
        raise ExportError(f"cannot convert the graph from opset {current} to {target}: {text}", hint) from None
    return converted


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, dead-code removal and fusion cleanup with onnxslim."""
    import contextlib
    import io

    import onnxslim

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return onnxslim.slim(model)


def free_input_dims(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Graph inputs and outputs whose dims say "any size" as -1 or 0 (paddle2onnx, older exporters)
    get real symbolic dims: onnxruntime enforces a 0 literally. Returns (model, what changed); the
    caller's model is not modified."""
    changed: list[str] = []
    copy: onnx.ModelProto | None = None
    for kind in ("input", "output"):
        for index, value in enumerate(getattr(model.graph, kind)):
            if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
                continue
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value <= 0:
                    if copy is None:
                        copy = onnx.ModelProto()
                        copy.CopyFrom(model)
                    target = getattr(copy.graph, kind)[index].type.tensor_type.shape.dim[axis]
                    target.Clear()  # neither a value nor a name: onnxruntime takes any size
                    changed.append(f"{value.name}[{axis}]={dim.dim_value}")
    return (copy if copy is not None else model), changed
