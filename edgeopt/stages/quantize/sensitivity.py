"""Which nodes hurt int8 fidelity most: activation matching between float and int8 runs.

Every float activation that exists in both graphs is exposed as an output; for each
node we compare its output with the float model's (SQNR) and charge it with the error
it *adds* over the error already present in its inputs. Keeping the worst offenders
in float is what automatic mixed precision does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto

from edgeopt.stages.quantize.calibration import CalibrationBatches, open_exposed_runner, walk
from edgeopt.formats.onnx import weightless_copy

_CLIP_DB = 80.0  # an exact tensor counts as 80 dB: more is noise in the ranking
# onnxruntime's QDQ quantizer names the dequantized copy of tensor T like this: that copy
# is what consumers read, so it is where quantization damage shows.
_DQ_SUFFIX = "_DequantizeLinear_Output"
# Activations beyond this magnitude (additive attention masks of -3e38 and the like) make an
# int8 scale that rounds every real value to zero.
HUGE_RANGE = 1e6
# An Add input this large beside one 10x smaller is an additive mask (BERT-style masks use -1e4).
MASK_RANGE = 1e3
# Walking back from a Log stops at these: their output is the last value whose small magnitudes matter
# (a Relu's zeros are exact in int8; what feeds it is not read by the Log any more).
_LOG_WALK_STOPS = frozenset({"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Softmax",
                             "Elu", "Selu", "Softplus", "Exp"})
_DATA_FIRST = frozenset({"Reshape", "Expand", "Tile", "Slice", "Pad", "Squeeze", "Unsqueeze", "Resize",
                         "Gather", "GatherElements", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "Split",
                         "Transpose", "Flatten", "Cast"})
FLOAT_BY_RULE = ("LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization", "Softmax",
                 "LogSoftmax", "Gelu", "FastGelu", "BiasGelu", "Erf")


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every main-graph node a unique name: nodes_to_exclude works by name. The model itself is
    returned when its names already are (no copy of its weights)."""
    names = [node.name for node in model.graph.node]
    if all(names) and len(set(names)) == len(names):
        return model
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


def _float_tensors(model: onnx.ModelProto) -> dict[str, int]:
    """Float activations (name -> element type), from shape inference (best effort)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_copy(model))  # (types, not weights)
    except Exception:  # shape inference is best effort here
        inferred = model
    float_types = {TensorProto.FLOAT, TensorProto.FLOAT16}
    return {vi.name: vi.type.tensor_type.elem_type
            for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
            if vi.type.tensor_type.elem_type in float_types}


def _exposed_runner(model: onnx.ModelProto, names: list[str], types: dict[str, int] | None, label: str):
    """A runner for ``model`` with ``names`` as extra outputs, typed by ``types`` (default float)."""
    return open_exposed_runner(model, {name: (types or {}).get(name, TensorProto.FLOAT) for name in names},
                               label=label)


def exposed_tensors_runner(model: onnx.ModelProto, names: list[str], label: str):
    """A runner for ``model`` with ``names`` (float activations or inputs) as extra outputs, typed by shape
    inference."""
    return _exposed_runner(model, names, _float_tensors(model), label)


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


# Activations compared per run of the two models (see rank_sensitive_nodes).
EXPOSED_PER_RUN = 48


def rank_sensitive_nodes(
    float_model: onnx.ModelProto,
    quant_model: onnx.ModelProto,
    feeds: Iterable[dict[str, np.ndarray]] | Callable[[], Iterable[dict[str, np.ndarray]]],
    fused_chains: dict[str, list[str]] | None = None,
) -> list[tuple[str, float]]:
    """Main-graph float nodes ordered by the SQNR (dB) they lose, worst first, one batch alive at a time.
    A node whose input the quantizer fused away (Conv → Relu: no int8 copy of the Conv's output) is scored
    from its chain's inputs; ``fused_chains`` (filled when given) maps it to those fused producers, which
    must go float with it for its loss to go.

    Every watched activation of both models is an output of one run: for a detector at 416x416 that is
    a few hundred MB per model, held twice (the outputs and the session's arena). So the activations are
    compared ``EXPOSED_PER_RUN`` at a time, one pass over the data per group, when ``feeds`` can be read
    again (a callable that gives a fresh iterable, or a sequence); a one-shot iterator gets one pass
    with everything exposed."""
    if callable(feeds):
        fresh = feeds
    elif iter(feeds) is not feeds:  # a sequence: readable again as it is
        fresh = lambda: feeds  # noqa: E731
    else:
        fresh = None
    produced_in_quant = {out for node in quant_model.graph.node for out in node.output}
    float_types = _float_tensors(float_model)
    float_names = set(float_types)
    # Compare each tensor as its consumers see it in the int8 graph: the dequantized copy if any.
    seen_as = {name: name + _DQ_SUFFIX if name + _DQ_SUFFIX in produced_in_quant else name
               for name in float_names if name in produced_in_quant or name + _DQ_SUFFIX in produced_in_quant}
    graph_inputs = {i.name for i in float_model.graph.input}
    watched = sorted(seen_as)
    if not watched:
        return []
    quant_types = {seen_as[name]: float_types[name] for name in watched}
    sums: dict[str, list[float]] = {name: [] for name in watched}
    peaks: dict[str, float] = {}
    step = EXPOSED_PER_RUN if fresh is not None else len(watched)
    for start in range(0, len(watched), step):
        names = watched[start:start + step]
        reference = _exposed_runner(float_model, names, float_types, "float model (activations)")
        candidate = _exposed_runner(quant_model, sorted({seen_as[name] for name in names}), quant_types,
                                    "int8 model (activations)")
        for batch in (fresh() if fresh is not None else feeds):
            ref_out = reference.run(batch)
            cand_out = candidate.run(batch)
            del batch  # gone before the next one is read
            for name in names:
                if name in ref_out and seen_as[name] in cand_out:
                    sums[name].append(_sqnr(ref_out[name], cand_out[seen_as[name]]))
                if name in ref_out and np.size(ref_out[name]):
                    finite = np.abs(ref_out[name][np.isfinite(ref_out[name])])
                    if finite.size:
                        peaks[name] = max(peaks.get(name, 0.0), float(np.max(finite)))
            del ref_out, cand_out  # (this group's activations) gone before the next batch runs
        del reference, candidate
    sqnr = {name: float(np.mean(values)) for name, values in sums.items() if values}
    initializers = {t.name for t in float_model.graph.initializer}
    producers = {out: node for node in float_model.graph.node for out in node.output}
    upstream: dict[str, float] = {}

    def sqnr_before(tensor: str) -> float:
        """The SQNR a tensor arrives with: measured, or for one the quantizer fused away (a Conv's output
        before its Relu) that of the fused chain's own inputs, so the chain's loss is its last node's."""
        if tensor in sqnr:
            return sqnr[tensor]
        if tensor in graph_inputs or tensor in initializers or tensor not in producers:
            return _CLIP_DB
        if tensor not in upstream:
            upstream[tensor] = _CLIP_DB  # (a cycle guard; graphs are acyclic)
            inputs = [i for i in producers[tensor].input if i and i not in initializers]
            upstream[tensor] = min((sqnr_before(i) for i in inputs), default=_CLIP_DB)
        return upstream[tensor]

    ranking = []
    chains: dict[str, list[str]] = {}  # node -> the fused producers whose loss its score includes
    for node in float_model.graph.node:
        outputs = [o for o in node.output if o in sqnr]
        if not outputs:
            continue
        activations = [i for i in node.input if i and i not in initializers]
        before = min((sqnr_before(i) for i in activations), default=_CLIP_DB)
        fused = [producers[i].name for i in activations if i not in sqnr and i in producers]
        if fused:
            chains[node.name] = fused
        after = min(sqnr[o] for o in outputs)
        score = before - after
        if any(peaks.get(o, 0.0) > HUGE_RANGE for o in outputs):
            score = max(score, _CLIP_DB + 20)
        if node.op_type == "Concat":
            # One int8 scale for inputs of very different ranges (boxes beside scores) wipes out
            # the small ones; whole-tensor SQNR hides that, so rank such joins first.
            ranges = [peaks[i] for i in activations if peaks.get(i)]
            if len(ranges) >= 2 and max(ranges) / min(ranges) >= 8:
                score = max(score, _CLIP_DB + math.log10(max(ranges) / min(ranges)))
        ranking.append((node.name, round(score, 3)))
    ranking.sort(key=lambda item: -item[1])
    if fused_chains is not None:
        fused_chains.update(chains)
    return [item for item in ranking if item[1] > 0]


def exclusion_group(model: onnx.ModelProto, node_name: str) -> list[str]:
    """Keeping a tensor float takes its producer *and* its consumers out of quantization:
    onnxruntime quantizes a tensor as soon as either side is quantized."""
    nodes = {n.name: n for n in model.graph.node}
    node = nodes.get(node_name)
    if node is None:
        return [node_name]
    outputs = set(node.output)
    consumers = [n.name for n in model.graph.node if outputs & set(n.input)]
    return [node_name, *consumers]


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                local = {o for n in sub.node for o in n.output} | {t.name for t in sub.initializer} | \
                        {i.name for i in sub.input}
                names |= {i for n in sub.node for i in n.input if i and i not in local}
                names |= _subgraph_reads(sub)
    return names


def up_front_exclusions(model: onnx.ModelProto, feeds: CalibrationBatches | Iterable[dict[str, np.ndarray]]
                        ) -> dict[str, str]:
    """Nodes to keep float before the first quantization, with the reason for each; ranges are measured on
    the first two of ``feeds``, read one at a time.

    - Relu/Clip whose output is read inside an If/Loop/Scan body: onnxruntime's QDQ
      quantizer folds such activations into the producer and renames tensors, so the
      subgraph silently reads the pre-activation values.
    - Producers and consumers of tensors with huge ranges (additive masks): one int8 scale
      for ±3e38 turns every real value into zero.
    - By rule, ops whose int8 form loses what they compute (``FLOAT_BY_RULE``): normalisations divide
      by a statistic of the very values int8 rounds, Softmax and GELU are steep where it matters, and
      onnxruntime has no int8 kernel for them on the CPU, so their Q/DQ pairs only cost time.
    - Additive attention masks: an Add of scores (tens) and a mask (-1e4 and below) needs one scale
      for both; the scores round to a handful of levels.
    - What feeds a Log (``log_domain_feeders``).
    """
    reasons: dict[str, str] = dict(log_domain_feeders(model))
    read_inside = _subgraph_reads(model.graph)
    for node in model.graph.node:
        if node.op_type in ("Relu", "Clip") and set(node.output) & read_inside:
            reasons[node.name] = "activation read inside a subgraph (the quantizer would fold it away)"
        elif node.op_type in FLOAT_BY_RULE:
            reasons[node.name] = f"{node.op_type}: kept in float by rule (int8 cannot represent it faithfully)"
    types = _float_tensors(model)
    watched = sorted(set(types) - {i.name for i in model.graph.input})
    if watched and feeds:
        runner = _exposed_runner(model, watched, types, "float model (ranges)")
        peaks: dict[str, float] = {}
        batches = itertools.islice(walk(feeds), 2)
        while (batch := next(batches, None)) is not None:
            # graph inputs too: an additive mask may come in as a float input
            # (a comprehension: no name outlives it to hold the batch while the next one is read)
            found = {name: _peak(value) for name, value in {**batch, **runner.run(batch)}.items()}
            del batch
            for name, peak in found.items():
                if peak is not None:
                    peaks[name] = max(peaks.get(name, 0.0), peak)
        for node in model.graph.node:
            if node.op_type == "Add" and len(node.input) == 2:
                sides = sorted(peaks.get(i, 0.0) for i in node.input)
                if sides[1] >= MASK_RANGE and 0 < sides[0] * 10 <= sides[1]:
                    for name in exclusion_group(model, node.name):
                        reasons.setdefault(name, f"additive mask: {node.name} adds ±{sides[1]:.3g} to values "
                                                 f"within ±{sides[0]:.3g}")
            huge = [o for o in node.output if peaks.get(o, 0.0) > HUGE_RANGE]
            if huge:
                for name in exclusion_group(model, node.name):
                    reasons.setdefault(name, f"tensor {huge[0]} spans ±{peaks[huge[0]]:.3g}, "
                                             "far beyond what one int8 scale can hold")
    return reasons


def log_domain_feeders(model: onnx.ModelProto) -> dict[str, str]:
    """The nodes a Log reads through, back to the graph inputs or the last activation on each path.

    A logarithm magnifies relative error: int8's steps are absolute (range / 255), so every value
    below one step, which a log spectrogram or a log-likelihood is made of, becomes noise or zero
    and then -inf. Linear ops (convolutions of raw audio, squares, sums) carry the step forward
    unchanged, so the whole linear chain that feeds the Log stays float, the input too.
    """
    producers = {output: node for node in model.graph.node for output in node.output if output}
    weights = {t.name for t in model.graph.initializer}
    reasons: dict[str, str] = {}
    for log in (n for n in model.graph.node if n.op_type == "Log"):
        pending = [log.input[0]] if log.input else []
        while pending:
            node = producers.get(pending.pop())
            if node is None or node.name in reasons or node.op_type == "Constant":
                continue
            reasons[node.name] = (f"feeds {log.name or 'a Log'} through linear ops: a logarithm magnifies "
                                  "the small values int8 rounds away")
            if node.op_type not in _LOG_WALK_STOPS:
                # the shapes, pads and indices of data-movement ops are integers: only the data matters
                data = node.input[:1] if node.op_type in _DATA_FIRST else node.input
                pending.extend(i for i in data if i and i not in weights)
    return reasons


def _peak(value: np.ndarray) -> float | None:
    """The largest magnitude of a float tensor (None: not float, empty, or only NaN)."""
    value = np.asarray(value)
    if value.dtype.kind != "f" or not value.size:
        return None
    peak = max(-float(value.min()), float(value.max()))  # no copy unless NaN/inf
    if not np.isfinite(peak):
        # ±inf (masked_fill(-inf) masks) is the hugest range of all; NaN says nothing
        ordered = value[~np.isnan(value)]
        peak = float(np.max(np.abs(ordered))) if ordered.size else None
    return peak
