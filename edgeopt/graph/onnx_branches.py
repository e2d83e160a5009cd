"""If nodes resolved for static analysis: the branch that runs is inlined in place of its If.

onnxruntime runs one branch of an If per call, inside the If's kernel; an estimate that sees only the If prices
nothing (silero-vad's whole network sits in the two branches of one If on its sample rate). So the analysis
works on a copy of the graph in which each If is replaced by the nodes of the branch that runs, its outputs
bound to the If's by Identity nodes; nested Ifs come up into the main graph and are resolved in turn.

Which branch runs: the condition is evaluated by running the part of the graph it depends on in onnxruntime,
when that part reads only constants, input shapes (through Shape and Size) and inputs whose values are known
(``input_values``: a ``--fill``, integer inputs' data). Otherwise (it depends on a float input's data, or could
not be run) the branch with more multiply-accumulates is priced, and a note says so.

The branches not taken still load: onnxruntime builds a session state for every subgraph, so their nodes and
weights cost memory though they never run. They are counted as dormant (:class:`InlinedBranches`). What the
inlined branches defined is kept by name (``subgraph_tensors``): onnxruntime holds a subgraph's own weights
twice once loaded (analysis.runtime_memory), where the main graph's are held once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import GraphProto, NodeProto

from edgeopt.graph.onnx_protos import (
    constant_bytes,
    constant_tensor,
    iter_graphs,
    is_op,
    node_name,
    outer_names,
    subgraphs,
    tensor_bytes,
    unique_name,
    uses_external_data,
)

log = logging.getLogger(__name__)

# Each If costs an onnxruntime session over the part of the graph its condition depends on; past this many,
# the rest are priced by their costlier branch.
MAX_EVALUATED_IFS = 64
_SHAPE_ONLY = frozenset({"Shape", "Size"})  # read their input's shape, never its values


@dataclass
class InlinedBranches:
    """The model with its If nodes replaced by the branches priced, and what that decided."""

    model: onnx.ModelProto
    notes: list[str] = field(default_factory=list)  # the branches priced where the condition was evaluated
    warnings: list[str] = field(default_factory=list)  # where it could not be: the costlier branch priced
    dormant_nodes: int = 0  # nodes of branches not taken (loaded, never run)
    runs: int = 0  # the If nodes inlined (nested ones too): each a subgraph call at run time
    dormant_weights: int = 0  # their initializers and Constant values
    dormant_weight_bytes: int = 0
    dormant_folded_bytes: int = 0  # what onnxruntime's constant folding computes in them (None shapes: not counted)
    # tensors the inlined branches defined (their initializers, Constant values and node outputs), as renamed
    subgraph_tensors: set[str] = field(default_factory=set)


def inline_taken_branches(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]],
                          input_values: Mapping[str, np.ndarray] | None = None) -> InlinedBranches:
    """See the module doc. ``model`` is not mutated; without If nodes it is returned as is."""
    if not any(is_op(node, "If") for node in model.graph.node):
        return InlinedBranches(model)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    result = InlinedBranches(work)
    values = dict(input_values or {})
    evaluated = 0
    shapes: Mapping[str, Any] | None = None
    while (index := next((i for i, n in enumerate(work.graph.node) if is_op(n, "If")), None)) is not None:
        node = work.graph.node[index]
        name = node_name(node, index)
        branches = dict(subgraphs(node))
        if "then_branch" not in branches or "else_branch" not in branches:
            break  # malformed: leave it to the checks that report it
        condition, why = (None, f"more than {MAX_EVALUATED_IFS} If nodes were evaluated")
        if evaluated < MAX_EVALUATED_IFS:
            evaluated += 1
            condition, why = _evaluate(work.graph, node.input[0], work, input_shapes, values)
        if condition is None:
            if shapes is None:  # once: the names the branches read keep their shapes as Ifs are inlined
                shapes = _shapes(work, input_shapes)
            taken = _costlier(branches, shapes)
            result.warnings.append(f"If '{name}': its condition is not known before the run ({why}); the estimate "
                                f"prices its costlier branch, {taken}")
        else:
            taken = "then_branch" if condition else "else_branch"
            result.notes.append(f"If '{name}': its condition is {str(condition).lower()} at these inputs; the "
                                f"estimate prices its {taken}")
        for attr, branch in branches.items():
            if attr != taken:
                _count_dormant(branch, result)
                if _folds_anything(branch):
                    if shapes is None:
                        shapes = _shapes(work, input_shapes)
                    result.dormant_folded_bytes += _folded_bytes(branch, _constants(work.graph), shapes)
        inlined = _inline(work.graph, node, branches[taken], name)
        result.runs += 1
        bound = set(node.output)  # the If's outputs, bound by Identity nodes: the main graph's names
        result.subgraph_tensors.update(o for n in inlined for o in n.output if o and o not in bound)
        moved = len(branches[taken].initializer)  # _inline appended them
        result.subgraph_tensors.update(t.name for t in list(work.graph.initializer)[-moved:] if moved)
        nodes = list(work.graph.node)
        nodes[index:index + 1] = inlined
        del work.graph.node[:]
        work.graph.node.extend(nodes)
    return result


def _count_dormant(branch: GraphProto, result: InlinedBranches) -> None:
    for graph in iter_graphs(branch):
        result.dormant_nodes += sum(1 for n in graph.node if not is_op(n, "Constant"))
        for tensor in graph.initializer:
            result.dormant_weights += 1
            result.dormant_weight_bytes += tensor_bytes(tensor)
        for n in graph.node:
            if is_op(n, "Constant") and constant_tensor(n) is not None:
                result.dormant_weights += 1
                result.dormant_weight_bytes += constant_bytes(n)


def _constants(graph: GraphProto) -> set[str]:
    """The graph's weights, Constant values and what constant folding makes of them (as graph.onnx_execution)."""
    known = {t.name for t in graph.initializer}
    _fold_walk(graph, known, None)
    return known


def _folded_bytes(branch: GraphProto, outer: set[str], shapes: Mapping[str, Any]) -> int:
    """Bytes of the tensors onnxruntime's constant folding computes in ``branch`` and its nested subgraphs, which
    read ``outer`` (the enclosing scopes' constants) too: a dormant branch's weights sliced and reshaped at load,
    folded though the branch never runs."""
    known = set(outer) | {t.name for t in branch.initializer}
    return _fold_walk(branch, known, shapes)


def _fold_walk(graph: GraphProto, known: set[str], shapes: Mapping[str, Any] | None) -> int:
    """Adds to ``known`` what folds in ``graph`` (the rule of onnx_execution._folds_at_load, Shape/Size aside);
    with ``shapes``, returns the folded outputs' bytes, nested subgraphs' included."""
    from edgeopt.graph.model import Tensor, tensor_size_bytes
    from edgeopt.graph.onnx_execution import folds_from_constants

    total = 0
    for node in graph.node:
        if is_op(node, "Constant"):
            known.update(o for o in node.output if o)
            continue
        nested = subgraphs(node)
        if nested:
            if shapes is not None:
                total += sum(_folded_bytes(sub, known, shapes) for _, sub in nested)
            continue
        if folds_from_constants(node, known):
            known.update(o for o in node.output if o)
            if shapes is not None:
                for out in node.output:
                    info = shapes.get(out)
                    if info is not None:
                        total += tensor_size_bytes(Tensor(out, info.shape, info.dtype)) or 0
    return total


def _folds_anything(branch: GraphProto) -> bool:
    """Whether a node of ``branch`` (or of a nested subgraph) could fold: one other than Constant, If or Loop."""
    return any(not is_op(n, "Constant") and not subgraphs(n) for g in iter_graphs(branch) for n in g.node)


def _evaluate(graph: GraphProto, condition: str, model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]],
              values: Mapping[str, np.ndarray]) -> tuple[bool | None, str]:
    """(the condition's value, "") or (None, why not)."""
    producers = {out: n for n in graph.node for out in n.output if out}
    initializers = {t.name: t for t in graph.initializer}
    declared = {vi.name: vi for vi in graph.input if vi.name not in initializers}
    needed: dict[int, NodeProto] = {}
    fed: dict[str, bool] = {}  # input -> its values matter (else only its shape)
    stack = [(condition, False)]
    seen: set[tuple[str, bool]] = set()
    while stack:
        tensor, shape_only = stack.pop()
        if not tensor or (tensor, shape_only) in seen:
            continue
        seen.add((tensor, shape_only))
        if tensor in initializers:
            if uses_external_data(initializers[tensor]):
                return None, f"it reads '{tensor}', stored outside the model file"
            continue
        if tensor in declared:
            fed[tensor] = fed.get(tensor, False) or not shape_only
            continue
        producer = producers.get(tensor)
        if producer is None:
            return None, f"'{tensor}' has no producer in the main graph"
        needed[id(producer)] = producer
        reads_shape = producer.op_type in _SHAPE_ONLY
        for read in list(producer.input) + sorted(outer_names(producer)):
            stack.append((read, shape_only or reads_shape))
    unknown = sorted(name for name, by_value in fed.items() if by_value and name not in values)
    if unknown:
        return None, "it depends on the values of input " + ", ".join(f"'{n}'" for n in unknown)
    feeds = {}
    for name, by_value in fed.items():
        if by_value:
            feeds[name] = np.asarray(values[name])
            continue
        shape = input_shapes.get(name)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(declared[name].type.tensor_type.elem_type)
        if shape is None:
            return None, f"the shape of input '{name}' is unknown"
        feeds[name] = np.zeros(tuple(int(d) for d in shape), dtype=dtype)
    cone = onnx.helper.make_graph(
        [n for n in graph.node if id(n) in needed], "if_condition",
        [declared[name] for name in fed], [onnx.ValueInfoProto(name=condition)],
        [initializers[t] for t in sorted({r for n in needed.values() for r in _all_reads(n)} & set(initializers))])
    probe = onnx.helper.make_model(cone, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        (value,) = session.run([condition], feeds)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the condition unknown
        log.debug("If condition %s not evaluated: %s", condition, exc)
        return None, f"evaluating it failed: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}"
    array = np.asarray(value)
    if array.size != 1:
        return None, f"it has {array.size} elements"
    return bool(array.reshape(-1)[0]), ""


def _all_reads(node: NodeProto) -> set[str]:
    return {i for i in node.input if i} | outer_names(node)


def _shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> Mapping[str, Any]:
    """Every tensor's shape, branches included ({} where inference fails: the branches are then ranked by size)."""
    from edgeopt.graph.onnx_shapes import resolve_shapes

    try:
        return resolve_shapes(model, input_shapes)
    except Exception:  # noqa: BLE001 - ranking falls back to node counts
        return {}


def _costlier(branches: Mapping[str, GraphProto], shapes: Mapping[str, Any]) -> str:
    """The branch with more MACs at ``shapes`` (more nodes where MACs are unknown; then_branch on a tie)."""
    from edgeopt.graph.onnx_macs import total_macs, walk_macs

    def cost(attr: str) -> tuple[int, int, bool]:
        rows = walk_macs(branches[attr], shapes)
        return total_macs(rows), sum(1 for g in iter_graphs(branches[attr]) for _ in g.node), attr == "then_branch"

    return max(branches, key=cost)


def _inline(graph: GraphProto, node: NodeProto, branch: GraphProto, name: str) -> list[NodeProto]:
    """The nodes that replace ``node``: ``branch``'s, names it defines renamed where the main graph already
    uses them, its initializers moved into ``graph``, then one Identity per If output."""
    taken: set[str] = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    for graph_node in graph.node:
        taken.update(o for o in graph_node.output if o)
    defined = [t.name for t in branch.initializer] + [o for n in branch.node for o in n.output if o]
    renamed = {old: unique_name(f"{name}/{old}", taken) for old in defined if old in taken}
    for old in defined:
        taken.add(renamed.get(old, old))
    for tensor in branch.initializer:
        moved = graph.initializer.add()
        moved.CopyFrom(tensor)
        moved.name = renamed.get(tensor.name, tensor.name)
    nodes = []
    for inner in branch.node:
        copy = NodeProto()
        copy.CopyFrom(inner)
        _rename(copy, renamed)
        nodes.append(copy)
    for result, outer in zip(branch.output, node.output, strict=False):
        if outer:
            nodes.append(onnx.helper.make_node("Identity", [renamed.get(result.name, result.name)], [outer],
                                               name=unique_name(f"{name}/{outer}", taken)))
    return nodes


def _rename(node: NodeProto, renamed: Mapping[str, str]) -> None:
    """Rename reads and writes of ``node``, and the reads its subgraphs make of enclosing scopes."""
    if not renamed:
        return
    for i, value in enumerate(node.input):
        node.input[i] = renamed.get(value, value)
    for i, value in enumerate(node.output):
        node.output[i] = renamed.get(value, value)
    for _, sub in subgraphs(node):
        for inner in sub.node:
            _rename(inner, renamed)
        for output in sub.output:
            output.name = renamed.get(output.name, output.name)
