"""Apply a Recipe to a float ONNX model with onnxruntime's quantization tools.

Static recipes get their activation ranges from edgeopt's own streaming calibration pass
(calibration.py), handed to onnxruntime as a calibration cache: onnxruntime's calibrator, which
keeps every batch's activations until it is done, never runs."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeopt.errors import InputError
from edgeopt.stages.quantize.calibration import (
    ActivationStatistics,
    CalibrationBatches,
    collect_activation_statistics,
)
from edgeopt.stages.quantize.hard_activations import hard_activations_to_int8
from edgeopt.stages.quantize.recipes import COMPUTE_OPS, Recipe
from edgeopt.stages.quantize.recurrent import RECURRENT_OPS, quantize_lstms
from edgeopt.fsutil import temporary_folder


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizer logs advice through the root logger and prints; keep stderr clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize(model: onnx.ModelProto, recipe: Recipe, calibration_batches: CalibrationBatches | None,
             statistics: ActivationStatistics | None = None, *, model_file: Path | None = None) -> onnx.ModelProto:
    """Return the quantized model; the input model is not modified.

    A static recipe takes its activation ranges from ``statistics`` (one calibration pass of this
    very model, shared by every recipe) or, without them, from a pass over ``calibration_batches``
    made here. ``model_file``: ``model`` saved as it is; onnxruntime then reads the file instead of a
    private copy of the proto, which it would also serialize for its shape inference (two copies of the
    weights less while it runs)."""
    if recipe.mode == "weights-only":
        return quantize_weights_only(model, per_channel=recipe.per_channel, weight_type=recipe.weight_type)
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic

    if recipe.mode == "static" and statistics is None:
        if calibration_batches is None or (isinstance(calibration_batches, list) and not calibration_batches):
            raise InputError("static quantization needs calibration data",
                             "pass --calib DATA (or --allow-random-calibration for a smoke test)")
        statistics = collect_activation_statistics(model, calibration_batches,
                                                   histograms=recipe.calibration != "minmax")
    if recipe.mode == "static" and not statistics.matches(model):
        raise ValueError("the activation statistics were collected on another model: "
                         "collect them on the model being quantized")
    source: onnx.ModelProto | str = str(model_file) if model_file is not None else model
    if model_file is None:
        # onnxruntime's quantizer rewrites the ModelProto it is given (it moves weights to
        # external data in its temp folder), so it only ever sees a private copy.
        private = onnx.ModelProto()
        private.CopyFrom(model)
        source = private
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    # EnableSubgraph only helps quantize_dynamic: the static QDQ path ignores it and the
    # QOperator path crashes on subgraphs (onnxruntime 1.32; see quantize/prepare.py).
    extra = {"MatMulConstBOnly": True}
    # LSTMs go to DynamicQuantizeLSTM below: named to onnxruntime's QDQ quantizer they would only get
    # fake-quantized weights around a float LSTM (onnxruntime 1.32).
    static_ops = [op for op in recipe.op_types if op not in RECURRENT_OPS] if recipe.op_types else None
    with temporary_folder("edgeopt-quant-") as tmp:
        out = Path(tmp) / "quantized.onnx"
        with _quiet():
            if recipe.mode == "dynamic":
                quantize_dynamic(
                    source, out, op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
                    per_channel=recipe.per_channel, weight_type=types[recipe.weight_type],
                    nodes_to_exclude=list(recipe.nodes_to_exclude),
                    extra_options={**extra, "EnableSubgraph": True})
            elif static_ops == []:  # only recurrent ops asked for (an empty list would mean all to onnxruntime)
                onnx.save(model if model_file is None else onnx.load(str(model_file)), str(out))
            else:
                _quantize_static(source, out, recipe, statistics, Path(tmp), {
                    "quant_format": QuantFormat.QDQ if recipe.format == "qdq" else QuantFormat.QOperator,
                    "op_types_to_quantize": static_ops,
                    "per_channel": recipe.per_channel, "reduce_range": recipe.reduce_range,
                    "activation_type": types[recipe.activation_type], "weight_type": types[recipe.weight_type],
                    "nodes_to_exclude": list(recipe.nodes_to_exclude),
                    "extra_options": {**extra, "ActivationSymmetric": False, "WeightSymmetric": True}})
        quantized = onnx.load(str(out))
    if recipe.mode == "static" and (recipe.op_types is None or set(RECURRENT_OPS) & set(recipe.op_types)):
        quantized, _converted = quantize_lstms(quantized, exclude=recipe.nodes_to_exclude,
                                               reduce_range=recipe.reduce_range)
    if recipe.mode == "static":
        quantized, _rewritten = hard_activations_to_int8(quantized, exclude=recipe.nodes_to_exclude)
    if recipe.mode == "static" and _has_subgraphs(quantized):
        # The static quantizer leaves If/Loop/Scan bodies float: store their weights as int8 at least.
        from edgeopt.stages.quantize.prepare import quantize_subgraph_weights

        quantized, _converted = quantize_subgraph_weights(quantized, per_channel=recipe.per_channel)
    return quantized


_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile",
            "per-activation": "MinMax"}  # (ranges given through the cache: the method only has to match)
# The stand-in calibrator below swaps a module global of onnxruntime's for one call.
_PATCH_LOCK = threading.Lock()


def _quantize_static(model: onnx.ModelProto | str, out: Path, recipe: Recipe, statistics: ActivationStatistics,
                     tmp: Path, arguments: dict[str, Any], *, use_cache_argument: bool | None = None) -> None:
    """quantize_static with the ranges taken from ``statistics``: onnxruntime never calibrates.

    Recent onnxruntime (1.32 here; the argument came with onnxruntime PR #28221, May 2026) loads
    them from a calibration cache (``calibration_cache_path``: a cache hit skips its calibrator).
    Older versions, which pyproject still allows, lack the argument; there onnxruntime's
    ``create_calibrator`` is replaced, for this call, by one that returns the ranges."""
    from onnxruntime.quantization import CalibrationMethod, quantize_static

    method = getattr(CalibrationMethod, _METHODS[recipe.calibration])
    ranges = statistics.tensors_data(recipe.calibration)
    if use_cache_argument is None:
        use_cache_argument = "calibration_cache_path" in inspect.signature(quantize_static).parameters
    if use_cache_argument:
        from onnxruntime.quantization.calibrate import save_tensors_data

        cache = tmp / "calibration.json"
        save_tensors_data(ranges, cache)
        quantize_static(model, out, None, calibrate_method=method, calibration_cache_path=cache, **arguments)
        return
    # the module, not the function of the same name that onnxruntime.quantization exports
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")

    class _Ranges:
        """What quantize_static asks of a calibrator, answered from the statistics."""

        def collect_data(self, _reader: object) -> None:
            pass

        def compute_data(self) -> Any:
            return ranges

    class _NoData:
        def get_next(self) -> None:
            return None

    with _PATCH_LOCK:
        original = ort_quantize.create_calibrator
        ort_quantize.create_calibrator = lambda *args, **kwargs: _Ranges()
        try:
            quantize_static(model, out, _NoData(), calibrate_method=method, **arguments)
        finally:
            ort_quantize.create_calibrator = original


def _has_subgraphs(model: onnx.ModelProto) -> bool:
    return any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for node in model.graph.node for attr in node.attribute)


def quantize_weights_only(model: onnx.ModelProto, *, per_channel: bool = True, weight_type: str = "s8"
                          ) -> onnx.ModelProto:
    """Store Conv/ConvTranspose/MatMul/Gemm float weights as int8 + DequantizeLinear.

    The file shrinks ~4x; onnxruntime folds the DequantizeLinear at load, so compute stays
    float and accurate. Symmetric per-output-channel scales.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    qmax = 127 if weight_type == "s8" else 255
    new_nodes: list[onnx.NodeProto] = []
    replaced: set[str] = set()
    for node in graph.node:
        index = 1 if node.op_type in COMPUTE_OPS else None
        if node.op_type == "MatMul" and node.input[0] in inits and node.input[1] not in inits:
            index = 0
        if index is None or len(node.input) <= index:
            continue
        name = node.input[index]
        tensor = inits.get(name)
        if tensor is None or tensor.data_type != TensorProto.FLOAT or name in replaced or consumers.get(name, 0) != 1:
            continue
        weights = numpy_helper.to_array(tensor)
        if weights.size < 16:
            continue
        axis = _channel_axis(node, index, weights.ndim) if per_channel else None
        if axis is None:
            scale = np.array(max(float(np.max(np.abs(weights))), 1e-12) / 127, dtype=np.float32)
        else:
            reduce_axes = tuple(i for i in range(weights.ndim) if i != axis)
            scale = (np.maximum(np.max(np.abs(weights), axis=reduce_axes), 1e-12) / 127).astype(np.float32)
        shaped = scale if axis is None else scale.reshape([-1 if i == axis else 1 for i in range(weights.ndim)])
        if weight_type == "s8":
            q = np.clip(np.round(weights / shaped), -127, 127).astype(np.int8)
            zero = np.zeros_like(scale, dtype=np.int8)
        else:
            q = np.clip(np.round(weights / shaped) + 128, 0, qmax).astype(np.uint8)
            zero = np.full_like(scale, 128, dtype=np.uint8)
        graph.initializer.remove(tensor)
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_quantized"),
                                  numpy_helper.from_array(scale, f"{name}_scale"),
                                  numpy_helper.from_array(zero, f"{name}_zero_point")])
        attrs = {"axis": axis} if axis is not None else {}
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}_quantized", f"{name}_scale",
                                                               f"{name}_zero_point"], [name],
                                          name=f"{name}_DequantizeLinear", **attrs))
        replaced.add(name)
    # DequantizeLinear nodes first: they only read initializers, so topological order holds.
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)
    return result


def _channel_axis(node: onnx.NodeProto, index: int, ndim: int) -> int | None:
    if ndim < 2:
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return ndim - 1 if index == 1 else None
    return None
