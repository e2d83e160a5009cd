"""int8 LSTMs inside static recipes: onnxruntime's DynamicQuantizeLSTM (com.microsoft).

onnxruntime's static (QDQ) quantizer has no LSTM: it leaves the node float, and in a CRNN text
recognizer that float LSTM is most of the int8 model's time (ddddocr's recognizer at 192 px wide on
an AVX-512 VNNI host: 8.1 ms of 11.3). DynamicQuantizeLSTM keeps the same inputs and outputs but
takes int8 weights (per gate row) and quantizes its input and hidden state to u8 at each step; there
it ran the same LSTM in 1.0 ms. The node keeps its name, so mixed precision and the speed fallback
can keep it float (``nodes_to_exclude``) like any other node when it costs fidelity or speed.

Only ``quantize_dynamic`` makes this node in onnxruntime, and it drops a batch-first ``layout``
attribute on the way (DynamicQuantizeLSTM has none): such LSTMs stay float here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeopt.graph.onnx_protos import read_counts, unique_name

MS_DOMAIN = "com.microsoft"
RECURRENT_OPS = ("LSTM",)
# ONNX LSTM input slots: X, W, R, B, sequence_lens, initial_h, initial_c, P.
_LSTM_SLOTS = 8


def _per_row_int8(weight: np.ndarray, reduce_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """[D, 4H, K] float → (int8 [D, K, 4H], scales [D, 4H]): symmetric, one scale per gate row.
    ``reduce_range``: 7-bit values, as for the static recipe's weights (no u8×s8 int16 saturation
    on x86 without VNNI, whose kernels this node's GEMMs share)."""
    limit = 63.0 if reduce_range else 127.0
    peak = np.max(np.abs(weight), axis=2)
    scale = np.where(peak > 0, peak / limit, 1.0).astype(np.float32)
    values = np.clip(np.round(weight / scale[:, :, None]), -limit, limit).astype(np.int8)
    return np.ascontiguousarray(values.transpose(0, 2, 1)), scale


def convertible_lstms(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Main-graph LSTMs with constant float W and R of rank 3 and the default (sequence-first) layout."""
    weights = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "LSTM" or node.domain not in ("", "ai.onnx") or len(node.input) < 3:
            continue
        if any(a.name == "layout" and a.i != 0 for a in node.attribute):
            continue
        w, r = weights.get(node.input[1]), weights.get(node.input[2])
        if w is None or r is None or len(w.dims) != 3 or len(r.dims) != 3:
            continue
        if w.data_type != onnx.TensorProto.FLOAT or r.data_type != onnx.TensorProto.FLOAT:
            continue
        found.append(node)
    return found


def quantize_lstms(model: onnx.ModelProto, *, exclude: Iterable[str] = (), reduce_range: bool = False
                   ) -> tuple[onnx.ModelProto, list[str]]:
    """Replace each convertible LSTM not named in ``exclude`` by DynamicQuantizeLSTM with int8 weights.
    Returns (the model, changed in place, and the names of the nodes converted)."""
    excluded = set(exclude)
    nodes = [n for n in convertible_lstms(model) if n.name not in excluded]
    if not nodes:
        return model, []
    weights = {t.name: t for t in model.graph.initializer}
    reads = read_counts(model.graph)  # (a shared weight must stay)
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    added: list[onnx.TensorProto] = []

    def fresh(base: str) -> str:
        return unique_name(base, taken)

    converted = []
    for node in nodes:
        slots = []
        for source in (node.input[1], node.input[2]):
            values, scale = _per_row_int8(numpy_helper.to_array(weights[source]).astype(np.float32), reduce_range)
            stem = fresh(f"{source}_int8")
            added += [numpy_helper.from_array(values, stem),
                      numpy_helper.from_array(scale, fresh(f"{stem}_scale")),
                      numpy_helper.from_array(np.zeros(scale.shape, np.int8), fresh(f"{stem}_zero_point"))]
            slots.append(added[-3:])
            reads[source] -= 1
        inputs = list(node.input) + [""] * (_LSTM_SLOTS - len(node.input))
        (w, w_scale, w_zero), (r, r_scale, r_zero) = slots
        attributes = [a for a in node.attribute if a.name != "layout"]
        replacement = helper.make_node(
            "DynamicQuantizeLSTM",
            [inputs[0], w.name, r.name, *inputs[3:_LSTM_SLOTS], w_scale.name, w_zero.name, r_scale.name, r_zero.name],
            list(node.output), name=node.name, domain=MS_DOMAIN)
        replacement.attribute.extend(attributes)
        node.CopyFrom(replacement)
        converted.append(node.name)
    # the float W and R go unless something else still reads them
    gone = {name for name, count in reads.items() if count <= 0}
    kept = [t for t in model.graph.initializer if t.name not in gone]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + added)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model, converted
