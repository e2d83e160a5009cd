"""Why onnxruntime's quantizer would quantize little or nothing in a model, said before it runs."""


from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import onnx
from onnx import (
    NodeProto,
)

from edgeopt.graph.onnx_protos import (
    iter_nodes,
    op_key,
    uses_external_data,
)
from edgeopt.analysis.summary import (
    quantization_kind,
)
from edgeopt.formats.onnx import MIN_OPSET, default_opset
from edgeopt.stages.quantize.prepare.scopes import (
    COMPUTE_LABEL,
    COMPUTE_WEIGHT_SLOTS,
    compute_nodes,
    const_derived,
    norm_domain,
)

# --------------------------------------------------------------------- checking


def _examples(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _ops_text(nodes: Sequence[NodeProto]) -> str:
    counts = Counter(op_key(n.op_type, n.domain) for n in nodes)
    return ", ".join(f"{c} {op}" for op, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def already_quantized(model: onnx.ModelProto) -> str | None:
    """"kind: detail" when the model already holds quantized ops (QDQ, QOperator, dynamic int8), else None."""
    kind, detail, _ = quantization_kind(model.graph, [ref.node for ref in iter_nodes(model.graph)], {})
    return None if kind == "none" else f"{kind}: {detail}"


def check_quantizable(model: onnx.ModelProto) -> list[str]:
    """Reasons why onnxruntime's static quantization would achieve nothing or break.

    Each reason says what is wrong and how to fix it; ``[]`` means nothing stands in
    the way. Reads only protos (never external data bytes); does not modify ``model``.
    """
    reasons: list[str] = []
    opset = default_opset(model)
    if opset < MIN_OPSET:
        reasons.append(
            f"opset {opset} < {MIN_OPSET}: per-channel QDQ writes DequantizeLinear with an axis, "
            f"which needs opset {MIN_OPSET} (upgrade first, e.g. edgeopt convert --opset 17 or "
            f"onnx.version_converter.convert_version)"
        )

    quantized = already_quantized(model)
    if quantized is not None:
        reasons.append(
            f"the model is already quantized ({quantized}); quantizing it again would "
            "stack quantization errors (start from the float model)"
        )

    computes = list(compute_nodes(model.graph))
    function_computes = [
        n
        for f in model.functions
        for n in f.node
        if (norm_domain(n.domain), n.op_type) in COMPUTE_WEIGHT_SLOTS
    ]
    if function_computes:
        reasons.append(
            f"{_ops_text(function_computes)} sit inside model-local functions, which onnxruntime's "
            "quantizer does not look into: inline them first (onnx.inliner.inline_local_functions)"
        )
    if not computes:
        if not function_computes:
            reasons.append(
                f"no {COMPUTE_LABEL} nodes found: static quantization has nothing to quantize"
            )
        return reasons

    main = [c for c in computes if not c.scope.key]
    sub = [c for c in computes if c.scope.key]
    with_init_weight = [
        c for c in main if any(c.node.input[s] in c.scope.initializers for s in c.weight_slots)
    ]
    if not with_init_weight:
        reasons.append(
            f"no {COMPUTE_LABEL} with constant weights found in the main graph: "
            "quantize_static would quantize no weights (see the other reasons for where they are)"
        )

    constant_weights: list[str] = []
    derived_weights: list[str] = []
    external: list[str] = []
    derived_cache: dict[int, dict[str, str]] = {}
    for c in computes:
        for s in c.weight_slots:
            name = c.node.input[s]
            info = c.scope.constant_info(name)
            if info is not None and info[1] == "Constant":
                constant_weights.append(c.display)
            tensor = c.scope.initializer(name)
            if tensor is not None and uses_external_data(tensor) and not tensor.raw_data:
                external.append(name)
        if c.weight_slots or c.node.op_type == "Gather":
            continue
        # No constant weight slot: is a weight computed from constants by ops the quantizer ignores?
        derived = derived_cache.setdefault(id(c.scope), const_derived(c.scope))
        for s in COMPUTE_WEIGHT_SLOTS[(norm_domain(c.node.domain), c.node.op_type)]:
            if s < len(c.node.input) and c.node.input[s] in derived:
                derived_weights.append(f"{c.display} <- {derived[c.node.input[s]]}")
                break

    if constant_weights:
        reasons.append(
            f"{len(constant_weights)} weight(s) come from Constant nodes ({_examples(constant_weights)}); "
            "onnxruntime's quantizer only quantizes initializers: run lift_constant_weights() first"
        )
    if derived_weights:
        reasons.append(
            f"{len(derived_weights)} weight(s) are computed from constants by ops the quantizer does not "
            f"see through ({_examples(derived_weights)}), so they stay float: fold constants first "
            "(edgeopt convert simplifies with onnxslim)"
        )
    if external:
        reasons.append(
            f"{len(external)} weight(s) are external data that was not loaded ({_examples(external)}): "
            "load the model with its external data before quantizing"
        )
    if sub:
        reasons.append(
            f"{len(sub)} compute node(s) ({_ops_text([c.node for c in sub])}) are inside If/Loop/Scan "
            f"subgraphs ({_examples(sorted({c.scope.path for c in sub}))}): onnxruntime 1.32's "
            "quantize_static never quantizes them (QDQ skips subgraphs; QOperator with EnableSubgraph "
            "has no calibration ranges there and fails). After lift_constant_weights(), use "
            "quantize_subgraph_weights() on the quantized model for int8 weights, or "
            "quantize_dynamic(extra_options={'EnableSubgraph': True})"
        )
    return reasons
