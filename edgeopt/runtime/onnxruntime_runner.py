"""Run ONNX graphs with onnxruntime on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.data.specs import InputSpec, declared_dim
from edgeopt.errors import InputError, ModelLoadError, UnsupportedFormatError

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(int16)": "int16", "tensor(uint16)": "uint16", "tensor(int32)": "int32",
    "tensor(uint32)": "uint32", "tensor(int64)": "int64", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


class OnnxRuntimeRunner:
    """One onnxruntime CPU session. ``model`` is serialized bytes or a file path."""

    def __init__(self, model: bytes | str | Path, *, label: str, threads: int | None = None,
                 optimization: str = "all") -> None:
        import onnxruntime as ort

        self.label = label
        options = ort.SessionOptions()
        # Fatal only: onnxruntime's own error lines (coloured, multi-line) would break the
        # one-line error rule; its exceptions carry the same text and are reported once.
        options.log_severity_level = 4
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[optimization]
        source = str(model) if isinstance(model, Path) else model
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types, all worth one line
            raise ModelLoadError(
                f"onnxruntime cannot load {label}: {_first_line(exc)}",
                "the graph uses an op or type onnxruntime's CPU provider lacks, or is malformed",
            ) from None

    def input_specs(self) -> list[InputSpec]:
        specs = []
        for i in self.session.get_inputs():
            if i.type not in _ORT_TYPES or i.type == "tensor(string)":
                raise UnsupportedFormatError(
                    f"{self.label}: input {i.name!r} has type {i.type}; edgeopt feeds numeric tensors only",
                    "export the model with plain tensor inputs (no optional/sequence/map/string inputs)",
                )
            specs.append(InputSpec(i.name, tuple(_dim(d) for d in (i.shape or [])), _ORT_TYPES[i.type]))
        return specs

    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self.session.run(None, feeds)
        except Exception as exc:
            shapes = ", ".join(f"{k}={'x'.join(map(str, v.shape)) or 'scalar'}:{v.dtype}" for k, v in feeds.items())
            raise InputError(
                f"{self.label} rejected inputs {shapes}: {_first_line(exc)}",
                "check --input-shape / --input-dtype against the model's inputs (edgeopt inspect MODEL)",
            ) from None
        return dict(zip(self.output_names(), outputs))


def _dim(d: object) -> int | str:
    return declared_dim(d)  # onnxruntime reports -1 dims as None and names as str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # onnxruntime prefixes messages with "[ONNXRuntimeError] : 1 : FAIL : "; keep the substance.
    if "] :" in text:
        text = text.split(" : ")[-1]
    line = text.splitlines()[0] if text else exc.__class__.__name__
    return line[:400]
