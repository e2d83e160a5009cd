"""Post-training techniques that make a float model easier to quantize, each exact in float.

- **SmoothQuant** (Xiao et al., 2023): a transformer's LayerNorm outputs carry a few channels tens of
  times larger than the rest, and one int8 scale for the MatMul input then rounds the small channels
  away. Dividing channel j by s_j = max|X_j|^α / max|W_j|^(1-α) (folded into the LayerNorm's scale and
  bias) and multiplying row j of every consuming MatMul's weight by s_j moves that difficulty into the
  weights, which are quantized per channel.
- **Cross-layer equalization** (Nagel et al., 2019, "Data-Free Quantization"): in Conv → ReLU → Conv
  chains (depthwise-separable blocks above all) output channel i of the first conv is divided by
  s_i = sqrt(r1_i / r2_i) and input channel i of the second multiplied by it (ReLU commutes with a
  positive scale), so both convs' per-channel ranges become sqrt(r1_i · r2_i), and the activation
  between them loses its outlier channels.
- **Bias correction** (same paper): int8 weights shift each output's mean by (W_q - W) · E[x]; the
  bias absorbs it, with E[x] per input channel measured on the calibration data.

Each is tried where the graph has the pattern, and kept only when the task metric says it helps
(search.py): the functions here only transform.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeopt.stages.quantize.calibration import reiterable
from edgeopt.stages.quantize.sensitivity import exposed_tensors_runner

SMOOTH_ALPHA = 0.5
_FLOOR = 1e-5


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name:
                found.setdefault(name, []).append(node)
    return found


def _uses(model: onnx.ModelProto, name: str) -> int:
    """How many node inputs read ``name`` anywhere (subgraphs included): a shared weight must be copied."""
    count = 0

    def walk(graph: onnx.GraphProto) -> None:
        nonlocal count
        for node in graph.node:
            count += sum(1 for i in node.input if i == name)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(sub)

    walk(model.graph)
    return count


def _set(model: onnx.ModelProto, node: onnx.NodeProto, index: int, array: np.ndarray, suffix: str) -> None:
    """Replace input ``index`` of ``node`` (an initializer) by ``array``, in place when only this node reads
    it, else as a new initializer for this node alone."""
    inits = _initializers(model)
    name = node.input[index]
    tensor = numpy_helper.from_array(array.astype(numpy_helper.to_array(inits[name]).dtype), name)
    if _uses(model, name) == 1:
        inits[name].CopyFrom(tensor)
        return
    fresh = f"{name}_{suffix}_{node.name}"
    tensor.name = fresh
    model.graph.initializer.append(tensor)
    node.input[index] = fresh


def _array(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    tensor = _initializers(model).get(name)
    return numpy_helper.to_array(tensor).astype(np.float64) if tensor is not None else None


# ----------------------------------------------------------------------------------- channel statistics


def channel_statistics(model: onnx.ModelProto, tensors: dict[str, int], batches: Iterable[dict[str, np.ndarray]]
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tensor: (max |x| per channel, mean per channel)} for ``tensors`` ({name: channel axis}), in one
    streaming pass over ``batches``; only the current batch's activations are alive."""
    if not tensors:
        return {}
    runner = exposed_tensors_runner(model, sorted(tensors), "float model (channel statistics)")
    peaks: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for batch in batches:
        outputs = runner.run(batch)
        del batch  # gone before the next one is read
        for name, axis in tensors.items():
            value = outputs.get(name)
            if value is None or np.ndim(value) == 0:
                continue
            value = np.asarray(value)
            axis = axis % value.ndim
            others = tuple(i for i in range(value.ndim) if i != axis)
            # In the activation's own dtype, reduced per channel: no float64 copy of the whole tensor.
            low, high = np.min(value, axis=others), np.max(value, axis=others)
            if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
                value = np.where(np.isfinite(value), value, 0)
                low, high = np.min(value, axis=others), np.max(value, axis=others)
            peak = np.maximum(np.abs(low), np.abs(high)).astype(np.float64)
            peaks[name] = peak if name not in peaks else np.maximum(peaks[name], peak)
            sums[name] = np.sum(value, axis=others, dtype=np.float64) + sums.get(name, 0.0)
            counts[name] = counts.get(name, 0) + value.size // value.shape[axis]
    return {name: (peaks[name], sums[name] / counts[name]) for name in peaks}


# ------------------------------------------------------------------------------------------ SmoothQuant


def smooth_quant_sites(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, list[onnx.NodeProto]]]:
    """LayerNormalization nodes with constant scale/bias whose output feeds only MatMuls with constant 2-D
    weights (the Q/K/V and FFN-up projections of a transformer block)."""
    inits = _initializers(model)
    consumers = _consumers(model)
    outputs = {o.name for o in model.graph.output}
    sites = []
    for node in model.graph.node:
        if node.op_type != "LayerNormalization" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
            continue
        readers = consumers.get(node.output[0], [])
        if not readers or node.output[0] in outputs:
            continue
        if all(r.op_type == "MatMul" and r.input[0] == node.output[0] and r.input[1] in inits
               and len(inits[r.input[1]].dims) == 2 for r in readers):
            sites.append((node, readers))
    return sites


def smooth_quant(model: onnx.ModelProto, statistics: dict[str, tuple[np.ndarray, np.ndarray]],
                 alpha: float = SMOOTH_ALPHA) -> tuple[onnx.ModelProto, list[str]]:
    """The model with activation outliers migrated into the weights at every SmoothQuant site; returns
    (model, names of the LayerNorms smoothed). The input model is not modified."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    smoothed = []
    for norm, readers in smooth_quant_sites(result):
        stats = statistics.get(norm.output[0])
        if stats is None:
            continue
        act_max = np.maximum(stats[0], _FLOOR)
        weight_max = np.maximum.reduce([np.max(np.abs(_array(result, r.input[1])), axis=1) for r in readers])
        if act_max.shape != weight_max.shape:
            continue
        scale = np.clip(act_max ** alpha / np.maximum(weight_max, _FLOOR) ** (1 - alpha), _FLOOR, 1 / _FLOOR)
        gamma = _array(result, norm.input[1])
        if gamma is None or gamma.shape[-1] != scale.shape[0]:
            continue
        _set(result, norm, 1, gamma / scale, "smooth")
        if len(norm.input) > 2 and norm.input[2]:
            _set(result, norm, 2, _array(result, norm.input[2]) / scale, "smooth")
        for reader in readers:
            _set(result, reader, 1, _array(result, reader.input[1]) * scale[:, None], "smooth")
        smoothed.append(norm.name)
    return result, smoothed


# ------------------------------------------------------------------------------ cross-layer equalization


def _conv(model, node) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    if node.op_type != "Conv":
        return None
    weight = _array(model, node.input[1])
    if weight is None or weight.ndim < 3:
        return None
    bias = _array(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and bias is None:
        return None
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return weight, bias, group


def equalization_pairs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """(first, second) Conv pairs joined directly or through one ReLU, each link read by nothing else;
    the second a plain or depthwise conv, the first ungrouped or depthwise."""
    consumers = _consumers(model)
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for first in model.graph.node:
        first_conv = _conv(model, first)
        if first_conv is None:
            continue
        link = first.output[0]
        readers = consumers.get(link, [])
        if len(readers) == 1 and readers[0].op_type == "Relu" and link not in outputs:
            link = readers[0].output[0]
            readers = consumers.get(link, [])
        if len(readers) != 1 or link in outputs:
            continue
        second = readers[0]
        second_conv = _conv(model, second)
        if second_conv is None or second.input[0] != link:
            continue
        channels = first_conv[0].shape[0]
        w1_group, w2_group = first_conv[2], second_conv[2]
        if w1_group not in (1, first_conv[0].shape[0]) and w1_group != 1:
            continue
        depthwise_second = w2_group == channels and second_conv[0].shape[1] == 1 and second_conv[0].shape[0] == channels
        if w2_group != 1 and not depthwise_second:
            continue
        if w2_group == 1 and second_conv[0].shape[1] != channels:
            continue
        pairs.append((first, second))
    return pairs


def cross_layer_equalization(model: onnx.ModelProto, rounds: int = 2) -> tuple[onnx.ModelProto, list[str]]:
    """The model with every equalization pair's ranges balanced; returns (model, "first→second" names)."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    done: list[str] = []
    for _ in range(rounds):
        for first, second in equalization_pairs(result):
            w1, b1, _g1 = _conv(result, first)
            w2, _b2, g2 = _conv(result, second)
            r1 = np.max(np.abs(w1.reshape(w1.shape[0], -1)), axis=1)
            if g2 == 1:
                r2 = np.max(np.abs(np.moveaxis(w2, 1, 0).reshape(w2.shape[1], -1)), axis=1)
            else:
                r2 = np.max(np.abs(w2.reshape(w2.shape[0], -1)), axis=1)
            usable = (r1 > _FLOOR) & (r2 > _FLOOR)
            scale = np.where(usable, np.sqrt(np.where(usable, r1 / np.where(usable, r2, 1), 1)), 1.0)
            shape1 = (-1,) + (1,) * (w1.ndim - 1)
            _set(result, first, 1, w1 / scale.reshape(shape1), "cle")
            if b1 is not None:
                _set(result, first, 2, b1 / scale, "cle")
            if g2 == 1:
                _set(result, second, 1, w2 * scale.reshape((1, -1) + (1,) * (w2.ndim - 2)), "cle")
            else:
                _set(result, second, 1, w2 * scale.reshape(shape1), "cle")
            name = f"{first.name}→{second.name}"
            if name not in done:
                done.append(name)
    return result, done


# ----------------------------------------------------------------------------------------- bias correction


def correction_sites(model: onnx.ModelProto, excluded: Iterable[str] = ()) -> dict[str, int]:
    """{Conv input tensor: channel axis 1} of the ungrouped or depthwise Convs the quantizer will quantize."""
    skip = set(excluded)
    sites = {}
    for node in model.graph.node:
        if node.name in skip or _conv(model, node) is None:
            continue
        sites[node.input[0]] = 1
    return sites


def fake_quantized(weight: np.ndarray, reduce_range: bool, per_channel: bool) -> np.ndarray:
    """The weights as onnxruntime's symmetric int8 weight quantization gives them back (QDQ, s8)."""
    qmax = 64 if reduce_range else 127
    qmin = -64 if reduce_range else -127
    if per_channel:
        absmax = np.max(np.abs(weight.reshape(weight.shape[0], -1)), axis=1).reshape((-1,) + (1,) * (weight.ndim - 1))
    else:
        absmax = np.max(np.abs(weight))
    scale = np.maximum(2 * absmax / (qmax - qmin), 1e-12)
    return np.clip(np.round(weight / scale), qmin, qmax) * scale


def bias_correction(model: onnx.ModelProto, statistics: dict[str, tuple[np.ndarray, np.ndarray]], *,
                    reduce_range: bool, per_channel: bool, excluded: Iterable[str] = (),
                    original: dict[str, np.ndarray | None] | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """The model with each quantized Conv's bias corrected for the mean shift its int8 weights cause.
    ``original``: {node: its bias before an earlier correction (None: it had none)} when ``model`` is
    already corrected for another recipe: those biases are corrected afresh, or restored where the node
    is now excluded (a float Conv has no int8 error to correct)."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    corrected = []
    skip = set(excluded)
    original = original or {}
    for node in result.graph.node:
        conv = _conv(result, node)
        if conv is None:
            continue
        weight, bias, group = conv
        if node.name in original:
            bias = original[node.name]
            if node.name in skip or node.input[0] not in statistics:
                _set(result, node, 2, bias if bias is not None else np.zeros(weight.shape[0]), "corrected")
                continue
        if node.name in skip or node.input[0] not in statistics:
            continue
        mean = statistics[node.input[0]][1]
        out_channels, in_per_group = weight.shape[0], weight.shape[1]
        if mean.shape[0] != in_per_group * group:
            continue
        error = fake_quantized(weight, reduce_range, per_channel) - weight
        per_input = error.reshape(out_channels, in_per_group, -1).sum(axis=2)  # kernel taps summed
        groups_of = np.arange(out_channels) // (out_channels // group)
        means = mean.reshape(group, in_per_group)[groups_of]  # each output's own input channels
        shift = np.sum(per_input * means, axis=1)
        if not np.any(np.abs(shift) > 0):
            if node.name in original:  # corrected before, nothing to correct now
                _set(result, node, 2, bias if bias is not None else np.zeros(out_channels), "corrected")
            continue
        new_bias = (bias if bias is not None else np.zeros(out_channels)) - shift
        if len(node.input) < 3 or not node.input[2]:  # (a bias made by an earlier correction is an input)
            name = f"{node.name}_corrected_bias"
            result.graph.initializer.append(numpy_helper.from_array(new_bias.astype(np.float32), name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = name
        else:
            _set(result, node, 2, new_bias, "corrected")
        corrected.append(node.name)
    return result, corrected


class BiasCorrection:
    """Bias correction as applied to the float model, redone for each recipe: the mean shift depends on
    which Convs are quantized and how (7-bit or 8-bit weights, per channel or per tensor). A Conv that a
    later recipe keeps in float must get its own bias back: the correction would be its only error."""

    def __init__(self, statistics: dict[str, tuple[np.ndarray, np.ndarray]], nodes: list[str],
                 reduce_range: bool, per_channel: bool) -> None:
        self.statistics = statistics  # per input channel of the corrected Convs: small
        self.reduce_range, self.per_channel, self.nodes = reduce_range, per_channel, frozenset(nodes)
        self.original: dict[str, np.ndarray | None] = {}  # filled by ``record_original``

    def record_original(self, before: onnx.ModelProto) -> None:
        for node in before.graph.node:
            if node.name in self.nodes:
                conv = _conv(before, node)
                self.original[node.name] = conv[1] if conv is not None else None

    def for_recipe(self, corrected: onnx.ModelProto, recipe: Any) -> onnx.ModelProto:
        """``corrected`` (the model this correction made) as ``recipe`` needs it: itself when the recipe
        quantizes the same Convs the same way, else a copy with the biases corrected for the recipe."""
        if ((recipe.reduce_range, recipe.per_channel) == (self.reduce_range, self.per_channel)
                and not self.nodes & set(recipe.nodes_to_exclude)):
            return corrected
        redone, _ = bias_correction(corrected, self.statistics, reduce_range=recipe.reduce_range,
                                    per_channel=recipe.per_channel, excluded=recipe.nodes_to_exclude,
                                    original=self.original)
        return redone


# ------------------------------------------------------------------------------------ choosing by measurement

# A technique stays only if the task metric's margin grows by more than this (noise is not help).
TECHNIQUE_GAIN = 1e-3


def choose_techniques(prepared, recipe, calibration, evaluate, progress, statistics_of=None):
    """SmoothQuant, cross-layer equalization and bias correction, each tried where the graph has its
    pattern, then ranges chosen per activation (``statistics_of(model)`` gives the calibration pass with
    histograms; skipped without it or when the recipe's method was set), all on ``recipe``; each kept
    only if the task metric improves, greedily, in that order.
    Returns (the float model to quantize, the calibration method to use, one record per attempt, and the
    ``BiasCorrection`` to redo per recipe when bias correction was kept, else None)."""
    records: list[dict[str, Any]] = []
    correction: BiasCorrection | None = None
    sites = {norm.output[0]: -1 for norm, _ in smooth_quant_sites(prepared)}
    pairs = equalization_pairs(prepared)
    corrections = correction_sites(prepared, recipe.nodes_to_exclude)
    per_activation = statistics_of is not None and recipe.calibration == "minmax"
    if not (sites or pairs or corrections or per_activation):
        return prepared, recipe.calibration, records, None
    progress("post-training techniques: measuring the plain recipe")
    _data, fidelity, _rejection, _coverage = evaluate(recipe, prepared)
    if fidelity is None:
        return prepared, recipe.calibration, records, None
    current, margin = prepared, fidelity.smooth_margin

    method = recipe.calibration

    def attempt(name: str, where: list[str], model: onnx.ModelProto, trial_method: str | None = None) -> bool:
        nonlocal current, margin, method
        if not where:
            return False
        progress(f"post-training techniques: trying {name}")
        trial_recipe = recipe.model_copy(update={"calibration": trial_method or method})
        _data, trial, rejection, _coverage = evaluate(trial_recipe, model)
        after = trial.smooth_margin if trial is not None else None
        applied = after is not None and after > margin + TECHNIQUE_GAIN
        records.append({"technique": name, "where": where, "applied": applied,
                        "margin_before": round(margin, 6), "margin_after": None if after is None else round(after, 6),
                        **({"note": rejection} if rejection else {})})
        if applied:
            current, margin, method = model, after, trial_method or method
        return applied

    if sites:
        statistics = channel_statistics(prepared, sites, reiterable(calibration))
        smoothed, where = smooth_quant(current, statistics)
        attempt("smoothquant", where, smoothed)
    if pairs:
        equalized, where = cross_layer_equalization(current)
        attempt("cross-layer equalization", where, equalized)
    corrections = correction_sites(current, recipe.nodes_to_exclude)
    if corrections:
        statistics = channel_statistics(current, corrections, reiterable(calibration))
        corrected, where = bias_correction(current, statistics, reduce_range=recipe.reduce_range,
                                              per_channel=recipe.per_channel, excluded=recipe.nodes_to_exclude)
        before = current
        if attempt("bias correction", where, corrected):
            correction = BiasCorrection(statistics, where, recipe.reduce_range, recipe.per_channel)
            correction.record_original(before)
        del before
    if per_activation:
        # Ranges that clip: the same for every activation (percentile, entropy), or per activation the
        # method of least expected error on its histogram; each kept only if the task metric gains.
        statistics = statistics_of(current)
        for name in ("percentile", "entropy"):
            attempt(f"calibration: {name}", ["every activation"], current, name)
        chosen = statistics.methods_chosen()
        clipped = {name: count for name, count in chosen.items() if name != "minmax"}
        attempt("calibration per activation", [f"{name}: {count}" for name, count in sorted(chosen.items())]
                if clipped else [], current, "per-activation")
    return current, method, records, correction
