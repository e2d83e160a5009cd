"""Thin convolutions widened: a Conv with few output channels computes k neighbouring output columns as k
times the channels, and a Reshape/Transpose puts the columns back in place (exact in float and in int8).

onnxruntime's CPU Conv is a GEMM whose width is the output channels: with 8 or 1 of them its kernels run
mostly empty lanes (the float NCHWc kernel works on blocks of 8 or 16 channels) and the int8 path does its
im2col and requantization for a GEMM too narrow to pay for them. basic-pitch's 8→8 Conv with a 3x39 kernel
took 14 ms in fp32 and 11 ms in int8 at one thread on an AVX-512 VNNI host; computing 8 columns at once
(64 output channels, a 3x46 kernel at stride 8 along the width) took 5.5 ms and 2.7 ms, bit for bit the
same results. The wider kernel does (kw + s(k-1)) / kw times the multiplications, so whether it pays
depends on the shapes and the machine: the widen stage times each candidate and keeps a factor only
where it measured faster (``stages/widen.py``). In int8 the widened kernel's channels are copies of the
original's (zeros around them), so per-channel scales and the output's range, hence the codes, come out the
same; AVX2 without VNNI sums u8 x s8 products in int16 pairs, which may saturate differently with
full-range weights (the reduce-range recipes there cannot).

For output column ``w*k + j`` of a Conv with stride ``s`` and dilation ``d`` along the width, the widened
Conv's channel ``c*k + j`` at column ``w`` reads the same inputs when its kernel holds the original taps at
``j*s + t*d`` (zeros between) and it steps ``s*k``; pads are unchanged. A unary activation that is the
Conv's only reader moves before the Reshape, so onnxruntime still fuses it into the Conv.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeopt.graph.onnx_protos import read_counts, unique_name

# ops applied element by element to one tensor, fused by onnxruntime into a preceding Conv or cheap beside it
_UNARY_ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish",
                                "Elu", "Selu", "Softplus", "PRelu"})
MAX_WIDE_CHANNELS = 64  # widened output channels (the block sizes' multiples the kernels fill)
THIN_CHANNELS = 16  # a Conv with fewer output channels is a candidate
FACTORS = (2, 4, 8, 16)
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


@dataclass(frozen=True)
class ThinConv:
    """A Conv that can be widened: its node's name, its output channels, the output width, the factors
    that divide that width, and the activation that moves with it (None: the Conv's output is read as is)."""

    node: str
    channels: int
    width: int
    factors: tuple[int, ...]
    activation: str | None
    macs: int
    dtype: str  # the weights' numpy dtype (the input's)


def node_key(node: onnx.NodeProto) -> str:
    """How a node is found again: its name, or its first output where it has none."""
    return node.name or node.output[0]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def has_thin_conv_weights(model: onnx.ModelProto) -> bool:
    """Whether any main-graph Conv reads a float weight of fewer than 16 output channels (cheap: no shapes)."""
    weights = {t.name: t for t in model.graph.initializer
               if t.data_type in _FLOAT_TYPES and len(t.dims) in (3, 4) and t.dims[0] < THIN_CHANNELS}
    return any(n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in weights for n in model.graph.node)


def thin_convs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...] | None],
               other_shapes: dict[str, tuple[int, ...] | None] | None = None) -> list[ThinConv]:
    """The main graph's Convs that can be widened, largest first by multiply-accumulates. ``shapes``: each
    tensor's concrete shape (None unknown); ``other_shapes``: the same at other input sizes, where a
    widened Conv's output width must be the same (the Reshape fixes it), or None when no input dim is free."""
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    reads = read_counts(graph)
    graph_outputs = {o.name for o in graph.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    # nodes are found again by name (or first output): a name two nodes share could find the other one
    names = Counter(node_key(n) for n in graph.node if n.output)
    found = []
    for node in graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2 or \
                names[node_key(node)] != 1:
            continue
        weight = weights.get(node.input[1])
        bias_computed = len(node.input) > 2 and node.input[2] and node.input[2] not in weights
        if weight is None or weight.data_type not in _FLOAT_TYPES or len(weight.dims) not in (3, 4) or bias_computed:
            continue
        attrs = _attrs(node)
        if int(attrs.get("group", 1)) != 1 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        channels = int(weight.dims[0])
        out = shapes.get(node.output[0])
        if channels >= THIN_CHANNELS or out is None or len(out) != len(weight.dims):
            continue
        width = int(out[-1])
        if other_shapes is not None:
            other = other_shapes.get(node.output[0])
            if other is None or len(other) != len(out) or int(other[-1]) != width:
                continue
        factors = tuple(k for k in FACTORS if width % k == 0 and width // k >= 2 and channels * k <= MAX_WIDE_CHANNELS)
        if not factors:
            continue
        activation = None
        users = readers.get(node.output[0], [])
        if node.output[0] not in graph_outputs and reads[node.output[0]] == 1 and len(users) == 1 and \
                users[0].op_type in _UNARY_ACTIVATIONS and users[0].domain in ("", "ai.onnx") and \
                users[0].input[0] == node.output[0] and all(i in weights or not i for i in users[0].input[1:]) and \
                (users[0].op_type != "PRelu" or int(np.prod(weights[users[0].input[1]].dims)) == 1):
            activation = node_key(users[0])
            if names[activation] != 1:  # left where it is, after the columns are put back
                activation = None
        macs = int(np.prod(out)) * int(np.prod(weight.dims[1:]))
        dtype = helper.tensor_dtype_to_np_dtype(weight.data_type).name
        found.append(ThinConv(node_key(node), channels, width, factors, activation, macs, dtype))
    return sorted(found, key=lambda c: -c.macs)


def widen(model: onnx.ModelProto, conv: ThinConv, factor: int) -> onnx.ModelProto:
    """``model`` (changed in place) with ``conv`` computing ``factor`` output columns per step."""
    graph = model.graph
    nodes = list(graph.node)
    index = next(i for i, n in enumerate(nodes) if node_key(n) == conv.node and n.op_type == "Conv")
    node = nodes[index]
    weights = {t.name: t for t in graph.initializer}
    taken = {t.name for t in graph.initializer} | {o for n in nodes for o in n.output} | {
        i.name for i in graph.input}

    def fresh(base: str) -> str:
        name = unique_name(base, taken)
        taken.add(name)
        return name

    weight = numpy_helper.to_array(weights[node.input[1]])
    attrs = _attrs(node)
    rank = weight.ndim - 2
    stride = int((attrs.get("strides") or [1] * rank)[-1])
    dilation = int((attrs.get("dilations") or [1] * rank)[-1])
    taps = weight.shape[-1]
    span = stride * (factor - 1) + dilation * (taps - 1) + 1
    wide = np.zeros((weight.shape[0], factor, *weight.shape[1:-1], span), dtype=weight.dtype)
    for j in range(factor):
        wide[:, j][..., j * stride + np.arange(taps) * dilation] = weight
    wide = wide.reshape(weight.shape[0] * factor, *weight.shape[1:-1], span)
    inputs = [node.input[0], fresh(f"{node.input[1]}_wide{factor}")]
    graph.initializer.append(numpy_helper.from_array(wide, inputs[1]))
    if len(node.input) > 2 and node.input[2]:
        bias = np.repeat(numpy_helper.to_array(weights[node.input[2]]), factor)
        inputs.append(fresh(f"{node.input[2]}_wide{factor}"))
        graph.initializer.append(numpy_helper.from_array(bias, inputs[2]))
    strides = list(attrs.get("strides") or [1] * rank)
    strides[-1] = stride * factor
    kernel = list(attrs.get("kernel_shape") or weight.shape[2:])
    kernel[-1] = span
    dilations = list(attrs.get("dilations") or [1] * rank)
    dilations[-1] = 1
    kept = {k: v for k, v in attrs.items() if k not in ("strides", "kernel_shape", "dilations")}
    wide_out = fresh(f"{node.output[0]}_wide{factor}")
    replaced = [helper.make_node("Conv", inputs, [wide_out], name=fresh(f"{conv.node}_wide{factor}"),
                                 strides=strides, kernel_shape=kernel, dilations=dilations, **kept)]
    last = index
    final = node.output[0]
    tail = wide_out
    if conv.activation is not None:
        last, act = next((i, n) for i, n in enumerate(nodes) if node_key(n) == conv.activation)
        final = act.output[0]
        tail = fresh(f"{act.output[0]}_wide{factor}")
        moved = onnx.NodeProto()
        moved.CopyFrom(act)
        moved.input[0] = wide_out
        del moved.output[:]
        moved.output.append(tail)
        replaced.append(moved)
    channels, columns = conv.channels, conv.width // factor
    if rank == 2:  # [N, C*k, H, W/k] -> [N, C, k, H, W/k] -> [N, C, H, W/k, k] -> [N, C, H, W]
        split, perm, merged = [0, channels, factor, -1, columns], [0, 1, 3, 4, 2], [0, 0, 0, -1]
    else:  # [N, C*k, L/k] -> [N, C, k, L/k] -> [N, C, L/k, k] -> [N, C, L]
        split, perm, merged = [0, channels, factor, columns], [0, 1, 3, 2], [0, 0, -1]
    split_shape, merged_shape = fresh(f"{conv.node}_split_shape"), fresh(f"{conv.node}_merged_shape")
    graph.initializer.extend([numpy_helper.from_array(np.array(split, np.int64), split_shape),
                              numpy_helper.from_array(np.array(merged, np.int64), merged_shape)])
    split_out, moved_out = fresh(f"{tail}_split"), fresh(f"{tail}_columns")
    replaced += [helper.make_node("Reshape", [tail, split_shape], [split_out], name=fresh(f"{conv.node}_split")),
                 helper.make_node("Transpose", [split_out], [moved_out], name=fresh(f"{conv.node}_columns"), perm=perm),
                 helper.make_node("Reshape", [moved_out, merged_shape], [final], name=fresh(f"{conv.node}_merge"))]
    # the widened chain takes the place of the activation (or the Conv): every reader comes after it
    rebuilt = [n for i, n in enumerate(nodes) if i not in (index, last)]
    position = last - (1 if last > index else 0)
    rebuilt[position:position] = replaced
    del graph.node[:]
    graph.node.extend(rebuilt)
    # recorded shapes stay for the tensors that still exist (the chain's last keeps its name and shape)
    names = {o for n in rebuilt for o in n.output}
    kept_info = [v for v in graph.value_info if v.name in names]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    still_read = read_counts(graph)
    for name in node.input[1:3]:
        if name and not still_read[name]:
            graph.initializer.remove(weights[name])
    return model


def conv_alone(model: onnx.ModelProto, conv: ThinConv, input_shape: tuple[int, ...],
               factor: int | None) -> onnx.ModelProto:
    """A model of ``conv`` (and its activation) alone, widened by ``factor`` (None: as it is), reading one
    float input of ``input_shape``: what the widen stage times."""
    graph = model.graph
    node = next(n for n in graph.node if node_key(n) == conv.node and n.op_type == "Conv")
    chain = [node]
    if conv.activation is not None:
        chain.append(next(n for n in graph.node if node_key(n) == conv.activation))
    used = {i for n in chain for i in n.input}
    weights = [t for t in graph.initializer if t.name in used]
    dtype = next(t.data_type for t in weights if t.name == node.input[1])
    out = chain[-1].output[0]
    alone = helper.make_model(
        helper.make_graph([_copy(n) for n in chain], "conv", [helper.make_tensor_value_info(node.input[0], dtype,
                                                                                             list(input_shape))],
                          [helper.make_tensor_value_info(out, dtype, None)], [_copy(t) for t in weights]),
        opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return widen(alone, conv, factor) if factor else alone


def _copy(message):
    copy = type(message)()
    copy.CopyFrom(message)
    return copy
