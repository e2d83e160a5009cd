"""Which nodes hurt int8 fidelity most: activation matching between float and int8 runs.

Every float activation that exists in both graphs is exposed as an output; for each
node we compare its output with the float model's (SQNR) and charge it with the error
it *adds* over the error already present in its inputs. Keeping the worst offenders
in float is what automatic mixed precision does.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeopt.runtime.onnxruntime_runner import OnnxRuntimeRunner

_CLIP_DB = 80.0  # an exact tensor counts as 80 dB: more is noise in the ranking


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every main-graph node a unique name: nodes_to_exclude works by name."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    seen: set[str] = set()
    for index, node in enumerate(result.graph.node):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op_type}_{index}"
            name, suffix = base, 1
            while name in seen:
                name, suffix = f"{base}_{suffix}", suffix + 1
            node.name = name
        seen.add(node.name)
    return result


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort here
        inferred = model
    float_types = {TensorProto.FLOAT, TensorProto.FLOAT16}
    names = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
             if vi.type.tensor_type.elem_type in float_types}
    return names


def _expose(model: onnx.ModelProto, names: list[str]) -> bytes:
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    existing = {o.name for o in augmented.graph.output}
    for name in names:
        if name not in existing:
            augmented.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return augmented.SerializeToString()


def _sqnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.astype(np.float64).ravel()
    cand = candidate.astype(np.float64).ravel()
    if ref.shape != cand.shape:
        return -_CLIP_DB
    noise = float(np.sum((ref - cand) ** 2))
    signal = float(np.sum(ref**2))
    if not math.isfinite(noise):
        return -_CLIP_DB
    if noise == 0:
        return _CLIP_DB
    if signal == 0:
        return -_CLIP_DB
    return max(-_CLIP_DB, min(_CLIP_DB, 10 * math.log10(signal / noise)))


def rank_sensitive_nodes(
    float_model: onnx.ModelProto,
    quant_model: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
) -> list[tuple[str, float]]:
    """Main-graph float nodes ordered by the SQNR (dB) they lose, worst first."""
    produced_in_quant = {out for node in quant_model.graph.node for out in node.output}
    float_names = _float_tensors(float_model) & produced_in_quant
    graph_inputs = {i.name for i in float_model.graph.input}
    watched = sorted(float_names)
    if not watched:
        return []
    reference = OnnxRuntimeRunner(_expose(float_model, watched), label="float model (activations)",
                                  optimization="basic")
    candidate = OnnxRuntimeRunner(_expose(quant_model, watched), label="int8 model (activations)",
                                  optimization="basic")
    sums: dict[str, list[float]] = {name: [] for name in watched}
    peaks: dict[str, float] = {}
    for batch in feeds:
        ref_out = reference.run(batch)
        cand_out = candidate.run(batch)
        for name in watched:
            if name in ref_out and name in cand_out:
                sums[name].append(_sqnr(ref_out[name], cand_out[name]))
            if name in ref_out and np.size(ref_out[name]):
                peaks[name] = max(peaks.get(name, 0.0), float(np.max(np.abs(ref_out[name]))))
    sqnr = {name: float(np.mean(values)) for name, values in sums.items() if values}
    initializers = {t.name for t in float_model.graph.initializer}
    ranking = []
    for node in float_model.graph.node:
        outputs = [o for o in node.output if o in sqnr]
        if not outputs:
            continue
        activations = [i for i in node.input if i and i not in initializers]
        measured = [sqnr[i] for i in activations if i in sqnr]
        if activations and not measured and not all(i in graph_inputs for i in activations):
            continue  # its inputs vanished in the int8 graph (fused away): no fair attribution
        before = min(measured) if measured else _CLIP_DB
        after = min(sqnr[o] for o in outputs)
        score = before - after
        if node.op_type == "Concat":
            # One int8 scale for inputs of very different ranges (boxes beside scores) wipes out
            # the small ones; whole-tensor SQNR hides that, so rank such joins first.
            ranges = [peaks[i] for i in activations if peaks.get(i)]
            if len(ranges) >= 2 and max(ranges) / min(ranges) >= 8:
                score = max(score, _CLIP_DB + math.log10(max(ranges) / min(ranges)))
        ranking.append((node.name, round(score, 3)))
    ranking.sort(key=lambda item: -item[1])
    return [item for item in ranking if item[1] > 0]
