"""A TFLite model's main subgraph as the neutral graph static analysis prices (graph/model.py).

TFLite shapes are concrete in the file (a dim sized at run time is stored as 1, with -1 in its shape
signature); ``input_shapes`` may size such dims, and anything else is refused. Fused activations live in an
operator's options, so every operator runs as its own kernel, except a DEQUANTIZE of a stored weight
(float16 or int8 weights the interpreter dequantizes once, at load): a constant. Execution dtype is that of
the operator's first activation input: int8/uint8 → int8, int16 → int16, float32 → fp32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgeopt.errors import InputError
from edgeopt.formats.tflite import Subgraph, TfliteModel, node_name, tensor_macs
from edgeopt.graph.kinds import CUSTOM
from edgeopt.graph.model import Graph, Node, Tensor

# TFLite builtins whose kind is not the lower-case of their name
KINDS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "conv", "TRANSPOSE_CONV": "conv_transpose",
         "FULLY_CONNECTED": "fully_connected", "BATCH_MATMUL": "matmul", "AVERAGE_POOL_2D": "average_pool",
         "MAX_POOL_2D": "max_pool", "MEAN": "reduce_mean", "SUM": "reduce_sum", "REDUCE_MAX": "reduce_max",
         "CONCATENATION": "concat", "LOGISTIC": "sigmoid", "HARD_SWISH": "hard_swish", "RESIZE_BILINEAR": "resize",
         "RESIZE_NEAREST_NEIGHBOR": "resize", "UNIDIRECTIONAL_SEQUENCE_LSTM": "lstm", "LSTM": "lstm",
         "BIDIRECTIONAL_SEQUENCE_LSTM": "lstm", "UNIDIRECTIONAL_SEQUENCE_RNN": "rnn", "STRIDED_SLICE": "slice",
         "SQUARED_DIFFERENCE": "squared_difference", "PRELU": "prelu", "LEAKY_RELU": "leaky_relu",
         "L2_NORMALIZATION": "l2_normalization", "QUANTIZE": "quantize", "DEQUANTIZE": "dequantize",
         "GATHER": "gather", "PAD": "pad", "PADV2": "pad", "MIRROR_PAD": "pad", "RELU6": "clip",
         "RELU_N1_TO_1": "clip", "SQRT": "sqrt", "RSQRT": "rsqrt", "SPLIT": "split", "SPLIT_V": "split",
         "PACK": "concat", "UNPACK": "split", "SOFTMAX": "softmax", "GELU": "gelu"}
EXEC_DTYPES = {"int8": "int8", "uint8": "int8", "int16": "int16", "float32": "fp32", "float16": "fp16",
               "int32": "int32", "int64": "int64", "bool": "bool"}


def kind_of(op: str, custom: bool) -> str:
    return CUSTOM if custom else KINDS.get(op, op.lower())


def tensor_names(graph: Subgraph) -> list[str]:
    """A unique name per tensor: its own, or ``name#index`` where TFLite repeats (or leaves out) a name."""
    seen: dict[str, int] = {}
    for tensor in graph.tensors:
        seen[tensor.name] = seen.get(tensor.name, 0) + 1
    return [t.name if t.name and seen[t.name] == 1 else f"{t.name}#{t.index}" for t in graph.tensors]


def _conv_class(graph: Subgraph, op: Any) -> str | None:
    if op.op == "DEPTHWISE_CONV_2D":
        return "depthwise"
    if op.op != "CONV_2D" or len(op.inputs) < 2 or op.inputs[1] < 0:
        return None
    dims = graph.tensors[op.inputs[1]].shape  # [OC, KH, KW, IC]
    if len(dims) != 4:
        return None
    if dims[0] < 16:
        return "narrow" if dims[0] < 4 else "thin"
    return "1x1" if dims[1] == dims[2] == 1 else None


def _sized(model: TfliteModel, input_shapes: Mapping[Any, Sequence[int]] | None) -> tuple[dict[int, tuple], list]:
    """Shapes given for inputs (a None key: the only input), checked against the file's shape signature."""
    graph = model.main
    names = tensor_names(graph)
    given: dict[int, tuple[int, ...]] = {}
    for key, shape in (input_shapes or {}).items():
        if key is None or key == "":
            if len(graph.inputs) != 1:
                raise InputError("an unnamed input shape needs a model with one input",
                                 "name the input: --input-shape NAME=1x224x224x3")
            index = graph.inputs[0]
        else:
            index = next((i for i in graph.inputs if names[i] == key or graph.tensors[i].name == key), None)
            if index is None:
                raise InputError(f"the model has no input {key!r}",
                                 f"inputs: {', '.join(names[i] for i in graph.inputs)}")
        tensor = graph.tensors[index]
        pattern = tensor.shape_signature or tensor.shape
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(pattern) or any(p != -1 and p != d for p, d in zip(pattern, shape)):
            raise InputError(f"input {names[index]} is {list(pattern)} in the file (-1: sized at run time); "
                             f"{list(shape)} does not fit it", "give a shape that matches the fixed dims")
        given[index] = shape
    notes = [f"input {names[i]}: dims sized at run time taken as stored {list(graph.tensors[i].shape)}"
             for i in graph.inputs if i not in given and -1 in (graph.tensors[i].shape_signature or ())]
    return given, notes


def to_graph(model: TfliteModel, input_shapes: Mapping[Any, Sequence[int]] | None = None) -> Graph:
    """The neutral graph of the model's main subgraph (module doc). Activation shapes are the file's: an input
    sized otherwise through ``input_shapes`` changes the inputs', and MACs are counted at the stored sizes
    scaled by the batch where only the batch moved."""
    graph = model.main
    names = tensor_names(graph)
    given, notes = _sized(model, input_shapes)
    scale = 1
    for index, shape in given.items():  # a larger batch scales every activation's first dim alike
        stored = graph.tensors[index].shape
        if shape[1:] != stored[1:]:
            raise InputError(f"only the batch of a TFLite input can be sized for a static estimate "
                             f"({names[index]}: {list(stored)} → {list(shape)})",
                             "convert the model at the shape you deploy it with")
        scale = max(scale, shape[0] // max(1, stored[0]))
    tensors = {}
    for tensor, name in zip(graph.tensors, names):
        shape = tensor.shape
        if tensor.buffer_bytes == 0 and scale > 1 and shape:
            shape = (shape[0] * scale, *shape[1:])
        tensors[name] = Tensor(name, tuple(shape), tensor.dtype if tensor.dtype in EXEC_DTYPES or
                               tensor.dtype.startswith("float") else None)
    weights = {names[t.index] for t in graph.tensors if t.buffer_bytes > 0}
    consumers: dict[int, list[int]] = {}
    for op in graph.operators:
        for i in op.inputs:
            if i >= 0:
                consumers.setdefault(i, []).append(op.index)
    nodes = []
    for op in graph.operators:
        activations = [i for i in op.inputs if i >= 0 and names[i] not in weights]
        role, attached = "compute", None
        if op.op == "DEQUANTIZE" and op.inputs and op.inputs[0] >= 0 and names[op.inputs[0]] in weights:
            role = "constant"  # stored weights dequantized once, at load
            attached = next(iter(consumers.get(op.outputs[0], [])), None) if op.outputs else None
            weights.add(names[op.outputs[0]])
        elif op.op in ("QUANTIZE", "DEQUANTIZE"):
            role = "qdq"
        first = graph.tensors[activations[0]] if activations else None
        macs = tensor_macs(graph, op) if role == "compute" else 0
        nodes.append(Node(
            index=op.index, name=node_name(op.op, op.index), op_type=op.op, domain="custom" if op.custom else "",
            kind=kind_of(op.op, op.custom), inputs=tuple(names[i] if i >= 0 else "" for i in op.inputs),
            outputs=tuple(names[i] for i in op.outputs), role=role,
            dtype=EXEC_DTYPES.get(first.dtype) if first is not None else None, attached_to=attached,
            macs=None if macs is None else macs * scale,
            cost_unknown_reason=("a custom op: its cost is unknown" if op.custom else
                                 "a shape it needs is missing" if macs is None else None),
            op_class=_conv_class(graph, op)))
    by_dtype: dict[str, int] = {}
    for tensor in graph.tensors:
        if tensor.buffer_bytes:
            by_dtype[tensor.dtype] = by_dtype.get(tensor.dtype, 0) + tensor.buffer_bytes
    return Graph(
        format="tflite", nodes=tuple(nodes), tensors=tensors, weights=frozenset(weights),
        inputs=tuple(names[i] for i in graph.inputs), outputs=tuple(names[i] for i in graph.outputs),
        input_shapes={names[i]: tuple(tensors[names[i]].shape) for i in graph.inputs},
        weight_bytes_by_dtype=by_dtype, assumptions=tuple(notes))
