"""What a quantizer really did: each float compute node matched to its int8 form (static, dynamic or
weights-only), or why it stayed float."""


from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import onnx
from onnx import (
    NodeProto,
)

from edgeopt.graph.onnx_protos import (
    DEFAULT_DOMAINS,
    dtype_name,
    is_integer_op,
    is_op,
    iter_nodes,
    op_key,
)
from edgeopt.analysis.summary import DYNAMIC_QUANT_OPS, WEIGHTS_ONLY_QUANT_OPS
from edgeopt.stages.quantize.hard_activations import int8_hard_activations
from edgeopt.stages.quantize.prepare.scopes import (
    COMPUTE_WEIGHT_SLOTS,
    MS_DOMAIN,
    QOPERATOR_OPS,
    QUANT_INT_DTYPES,
    REMOVABLE_ACTIVATIONS,
    Compute,
    Frozen,
    Scope,
    compute_nodes,
    node_key,
    norm_domain,
    walk_scopes,
)

# ---------------------------------------------------------------------- coverage


QuantHow = Literal["qdq", "weights-only", "qoperator", "dynamic", "none"]


class NodeCoverage(Frozen):
    name: str  # "<subgraph path>/<node>" inside subgraphs
    op_type: str
    quantized: bool
    how: QuantHow
    detail: str


class QuantCoverage(Frozen):
    """How many of the float model's quantizable compute nodes the int8 model quantized."""

    total: int
    quantized: int
    unquantized: list[str]  # float compute nodes left in float, by name
    by_op: dict[str, list[int]]  # op -> [quantized, total]
    nodes: list[NodeCoverage]
    int8_activations: list[str] = []  # HardSwish/HardSigmoid on int8 kernels (hard_activations.py), by name

    @property
    def ratio(self) -> float:
        return self.quantized / self.total if self.total else 0.0


def _is_quant_int(scope: Scope, name: str) -> bool:
    """``name`` is an integer (int4..int16) initializer or Constant in scope."""
    info = scope.constant_info(name)
    return info is not None and (dtype_name(info[0]) or "") in QUANT_INT_DTYPES


def _dq_of_int_weight(scope: Scope, name: str) -> bool:
    """``name`` is produced by DequantizeLinear of an integer initializer/Constant."""
    node = scope.producer(name)
    if node is None or not is_op(node, "DequantizeLinear", frozenset({"", "ai.onnx", MS_DOMAIN})):
        return False
    owner = scope.resolve(name) or scope
    return bool(node.input) and _is_quant_int(owner, node.input[0])


def _from_dq(scope: Scope, name: str) -> bool:
    node = scope.producer(name)
    return node is not None and node.op_type == "DequantizeLinear"


def _quant_op_how(node: NodeProto) -> QuantHow | None:
    """How an op computes on quantized data; None for float ops and for Q/DQ themselves."""
    if node.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
        return None
    if node.op_type in WEIGHTS_ONLY_QUANT_OPS:
        return "weights-only"
    if node.domain in DEFAULT_DOMAINS | {MS_DOMAIN}:
        if node.op_type.startswith("QLinear") or node.op_type in QOPERATOR_OPS:
            return "qoperator"
        if is_integer_op(node) or node.op_type in DYNAMIC_QUANT_OPS:
            return "dynamic"
    return None


def _match(
    fnode: NodeProto, q_scope: Scope, aliases: Sequence[str] = ()
) -> tuple[NodeProto | None, NodeProto | None]:
    """(quantized op replacing ``fnode``, node of the same op type standing for it) in ``q_scope``.

    ``aliases``: other names the node's output may take (QDQ drops a Relu/Clip after it
    and gives the node the activation's output name)."""
    same = lambda n: n.op_type == fnode.op_type and norm_domain(n.domain) == norm_domain(fnode.domain)  # noqa: E731
    if fnode.name:
        # onnxruntime keeps the name (QDQ), or names the replacement "<name>_quant"
        # (QOperator, dynamic) / "<name>_MatMul_quant" (dynamic Gemm).
        named = {fnode.name, fnode.name + "_quant", fnode.name + "_MatMul_quant"}
        hits = [n for n in q_scope.graph.node if n.name in named]
        for n in hits:
            if _quant_op_how(n):
                return n, None
        for n in hits:
            if n.name == fnode.name and same(n):
                return None, n
    out = fnode.output[0] if fnode.output else ""
    if not out:
        return None, None
    replaced = {out + "_quantized", out + "_output_quantized", out + "_MatMul_output_quantized"}
    kept = {name + suffix for name in (out, *aliases) for suffix in ("", "_QuantizeLinear_Input")}
    for n in q_scope.graph.node:
        if _quant_op_how(n) and any(o in replaced or o in kept for o in n.output if o):
            return n, None
    if not fnode.name:
        for n in q_scope.graph.node:
            if same(n) and any(o in kept for o in n.output if o):
                return None, n
    return None, None


def _judge(f: Compute, q_scope: Scope | None, dynamic_model: bool) -> tuple[bool, QuantHow, str]:
    if q_scope is None:
        return False, "none", "its graph is missing from the quantized model"
    fnode = f.node
    aliases = []
    if fnode.output and len(users := f.scope.consumers.get(fnode.output[0], [])) == 1:
        if users[0].op_type in REMOVABLE_ACTIVATIONS and users[0].output:
            aliases.append(users[0].output[0])
    replacement, same_op = _match(fnode, q_scope, aliases)
    if replacement is not None:
        how = _quant_op_how(replacement)
        assert how is not None
        label = replacement.name or replacement.output[0]
        return True, how, f"replaced by {op_key(replacement.op_type, replacement.domain)} {label!r}"
    if same_op is None:
        return False, "none", f"no node matching {node_key(fnode)!r} in the quantized model"

    slots = COMPUTE_WEIGHT_SLOTS[(norm_domain(fnode.domain), fnode.op_type)]
    q_inputs = list(same_op.input)
    if f.weight_slots:
        weight_ok = all(
            s < len(q_inputs)
            and (_dq_of_int_weight(q_scope, q_inputs[s]) or _is_quant_int(q_scope, q_inputs[s]))
            for s in f.weight_slots
        )
        if not weight_ok:
            return False, "none", "its weight is still float"
        if any(_is_quant_int(q_scope, q_inputs[s]) for s in f.weight_slots):
            # GatherQuant-style: the op reads the int8 table itself.
            return True, ("dynamic" if dynamic_model else "qoperator"), "reads an int8 weight directly"
        others = [i for idx, i in enumerate(q_inputs) if i and idx not in f.weight_slots]
        acts_q = any(_from_dq(q_scope, i) for i in others)
        out_q = any(
            n.op_type == "QuantizeLinear"
            for o in same_op.output
            if o
            for n in q_scope.consumers.get(o, [])
        )
        if acts_q or out_q:
            return True, "qdq", "int8 weight and quantized activations (QDQ)"
        return True, "weights-only", "int8 weight, float activations"
    # No constant weight (e.g. attention's Q.K^T): quantized when both operands are.
    operands = [q_inputs[s] for s in sorted(slots)[:2] if s < len(q_inputs) and q_inputs[s]]
    if operands and all(_from_dq(q_scope, i) for i in operands):
        return True, "qdq", "both operands dequantized (QDQ)"
    return False, "none", "its inputs are not quantized"


def count_quantized_nodes(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> QuantCoverage:
    """Which quantizable compute nodes of ``float_model`` ended up quantized in ``quant_model``.

    Pass the float model exactly as it went into the quantizer (e.g. after
    :func:`lift_constant_weights`). A node counts as quantized when the int8 model
    replaced it by a quantized op (QLinear*, *Integer, QGemm, DynamicQuantizeLSTM, ...,
    matched by node name or output name), or kept it with its weight fed by
    DequantizeLinear of an int8/uint8 initializer (QDQ, or weights-only when no
    activation is quantized), or, for weightless MatMuls, with both operands
    dequantized. Subgraphs are included. Nodes are matched by name, so name them
    before quantizing (unnamed nodes are matched by output name, which QDQ may rename).
    """
    q_scopes = {s.key: s for s in walk_scopes(quant_model.graph)}
    dynamic_model = any(
        n.op_type in ("DynamicQuantizeLinear", *DYNAMIC_QUANT_OPS)
        for n in (r.node for r in iter_nodes(quant_model.graph))
    )
    rows: list[NodeCoverage] = []
    for f in compute_nodes(float_model.graph):
        quantized, how, detail = _judge(f, q_scopes.get(f.scope.key), dynamic_model)
        rows.append(
            NodeCoverage(
                name=f.display,
                op_type=op_key(f.node.op_type, f.node.domain),
                quantized=quantized,
                how=how,
                detail=detail,
            )
        )
    by_op: dict[str, list[int]] = {}
    for row in rows:
        entry = by_op.setdefault(row.op_type, [0, 0])
        entry[0] += int(row.quantized)
        entry[1] += 1
    return QuantCoverage(
        total=len(rows),
        quantized=sum(r.quantized for r in rows),
        unquantized=[r.name for r in rows if not r.quantized],
        by_op=dict(sorted(by_op.items())),
        nodes=rows,
        int8_activations=int8_hard_activations(float_model, quant_model),
    )
