"""The layout copies onnxruntime adds on x86: its NCHWc transformer (level 3, CPU provider, AVX2 and AVX-512)
runs float Convs and the ops around them on channel-blocked tensors (8 channels per block with AVX2, 16 with
AVX-512F) and inserts ReorderInput / ReorderOutput wherever a blocked tensor meets an op that only reads plain
NCHW. Those copies are kernels of their own that the model does not show: on a PicoDet layout detector they
are a sixth of the run time.

:func:`nchwc_reorder_bytes` follows the transformer's rules (onnxruntime's ``nchwc_transformer.cc``: which
Convs, pools, element-wise ops, Concats, activations, BatchNormalizations and Resizes take blocked tensors)
over the execution plan of :mod:`edgeopt.graph.onnx_execution` (activations already fused into their Conv
pass the blocked tensor through) and returns the bytes each node's reorders move (read + written), keyed by
the node they are charged to: the consumer for a ReorderInput, the producer for a ReorderOutput.

The int8 convolutions run channels-last: onnxruntime rewrites each QLinearConv (a QDQ Conv once fused) to its NHWC
kernel and puts a Transpose of the 8-bit tensor on either side, which its transpose optimizer then cancels between
ops that do not care about the layout (element-wise ops, Q/DQ, Concat, int8 pools). What stays: one Transpose where
a tensor enters a channels-last region and one where it leaves it (:func:`int8_channels_last_copies`). Measured on
an AMD EPYC (onnxruntime 1.32, one thread): a one-Conv int8 model's two Transposes took 26 of its 110 µs (a 1x1
Conv, 128 channels on 28x28) and 61 of 304 (a depthwise Conv, 128 channels on 56x56); an int8 MobileNetV2 has two
in all (its input and its pooled features). :func:`layout_copy_bytes` gives both kinds of copy, per block, and the
tensors they write (``Graph.runtime_tensors``: activations the runtime allocates beside the model's own, which the
arena simulation of analysis.runtime_memory holds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
from onnx import NodeProto

from edgeopt.graph.model import RuntimeTensor, Tensor, tensor_size_bytes
from edgeopt.graph.onnx_execution import NodeExecution
from edgeopt.graph.onnx_protos import DEFAULT_DOMAINS
from edgeopt.graph.onnx_shapes import TensorInfo

NCHWC_BLOCKS = (8, 16)  # AVX2, AVX-512F
CHANNEL_ALIGNMENT = 4  # the channel counts onnxruntime's NCHWc reorders take, padded to the block
_POOLS = frozenset({"MaxPool", "AveragePool"})
_GLOBAL_POOLS = frozenset({"GlobalMaxPool", "GlobalAveragePool"})
_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "Tanh"})
_BINARY = frozenset({"Add", "Sum", "Mul"})


def _attr(node: NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def nchwc_conv_blocks(node: NodeProto, weight: TensorInfo | None, constants: set[str]) -> tuple[int, ...]:
    """The channel blocks (of NCHWC_BLOCKS) at which the transformer runs float Conv ``node`` blocked."""
    return tuple(block for block in NCHWC_BLOCKS if _conv_takes_blocks(node, weight, constants, block)[0])


def nchwc_plain_input_blocks(node: NodeProto, weight: TensorInfo | None, constants: set[str]) -> tuple[int, ...]:
    """The blocks at which float Conv ``node`` runs blocked but reads its plain NCHW input (fewer input channels
    than a block: an RGB stem)."""
    return tuple(block for block in NCHWC_BLOCKS
                 if _conv_takes_blocks(node, weight, constants, block) == (True, False))


def _conv_takes_blocks(node: NodeProto, weight: TensorInfo | None, constants: set[str],
                       block: int) -> tuple[bool, bool]:
    """(runs blocked, reads its input blocked) for a float Conv, as the transformer decides."""
    if weight is None or weight.shape is None or len(weight.shape) != 4 or node.input[1] not in constants:
        return False, False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in constants:
        return False, False
    out_channels, in_channels = weight.shape[0], weight.shape[1]
    group = int(_attr(node, "group", 1))
    # onnxruntime 1.32 pads channels to the block where its reorder kernel can (a multiple of CHANNEL_ALIGNMENT),
    # as measured at both blocks (AVX-512 and AVX2 under emulation): a dense Conv of 20, 36 or 100 input channels,
    # a depthwise one of 12, 72 or 200, run blocked; 18 or 30 do not (older releases took whole blocks only)
    if group > 1:
        if in_channels == 1 and out_channels == group:  # depthwise
            return (out_channels % CHANNEL_ALIGNMENT == 0,) * 2
        if out_channels % block or in_channels % block or out_channels % group or (out_channels // group) % block:
            return False, False
        return True, True
    if in_channels < block:
        return True, False  # reads the plain NCHW input directly
    return (in_channels % CHANNEL_ALIGNMENT == 0,) * 2


def nchwc_reorder_bytes(model: onnx.ModelProto, shapes: Mapping[str, TensorInfo],
                        execution: Sequence[NodeExecution], constants: set[str], block: int,
                        padded: dict[str, int] | None = None,
                        created: list[RuntimeTensor] | None = None) -> dict[int, tuple[int, ...]]:
    """Bytes moved by each reorder onnxruntime inserts at NCHWc block size ``block`` (read and written), per node
    charged (``constants``: the main graph's weight names, onnx_protos.weight_names): one entry per copy, since a
    copy's speed depends on its own working set. ``padded``, if given, receives the
    blocked tensors whose channels the blocks pad (a count not a multiple of ``block``), with their bytes as
    laid out: what the runtime allocates for them; ``created``, the tensors the reorders write (a ReorderInput's
    blocked copy, live while its Conv runs; a ReorderOutput's plain copy, live from the blocked tensor's producer
    to its last reader), which the runtime allocates beside the model's own."""
    graph = model.graph
    nodes = list(graph.node)
    last_read = _last_reads(model)
    blocked: dict[str, int] = {}  # tensor -> its channel count, for tensors kept in NCHWc
    producer: dict[str, int] = {}
    charged: dict[int, tuple[int, ...]] = {}
    needs_plain: set[str] = set()  # blocked tensors that some op reads as NCHW

    def nbytes(name: str, channels: int | None = None) -> int:
        info = shapes.get(name)
        if info is None or info.shape is None or len(info.shape) != 4:
            return 0
        n, c, h, w = info.shape
        padded = -(-(channels or c) // block) * block
        return 2 * 4 * n * padded * h * w  # float32, read once and written once

    def charge(index: int, amount: int) -> None:
        if amount:
            charged[index] = charged.get(index, ()) + (amount,)

    def float4d(name: str) -> bool:
        info = shapes.get(name)
        return info is not None and info.dtype == "float32" and info.shape is not None and len(info.shape) == 4

    for index, (node, row) in enumerate(zip(nodes, execution, strict=True)):
        for out in node.output:
            producer[out] = index
        data = [name for name in node.input if name and name not in constants]
        if row.role == "fused_activation":  # runs inside its Conv: the blocked tensor passes through
            if data and data[0] in blocked and node.output:
                blocked[node.output[0]] = blocked[data[0]]
            continue
        if row.role != "compute" or node.domain not in DEFAULT_DOMAINS or row.dtype != "fp32":
            needs_plain.update(name for name in data if name in blocked)
            continue
        op, out = node.op_type, node.output[0] if node.output else ""
        takes = False
        if op == "Conv" and len(node.input) > 1 and float4d(node.input[0]):
            runs, reads_blocked = _conv_takes_blocks(node, shapes.get(node.input[1]), constants, block)
            if runs:
                takes = True
                if reads_blocked and node.input[0] not in blocked:
                    charge(index, nbytes(node.input[0]))  # ReorderInput
                    _create(created, f"{node.input[0]}@nchwc#{index}", index, index, nbytes(node.input[0]) // 2)
                weight = shapes[node.input[1]].shape
                blocked[out] = weight[0]
        elif op in _POOLS and len(node.output) == 1 and float4d(node.input[0]):
            channels = shapes[node.input[0]].shape[1]
            if channels % block == 0:
                takes = True
                if node.input[0] not in blocked:
                    charge(index, nbytes(node.input[0]))
                    _create(created, f"{node.input[0]}@nchwc#{index}", index, index, nbytes(node.input[0]) // 2)
                blocked[out] = channels
        elif data and all(name in blocked for name in data):
            first = shapes.get(data[0])
            same = all(shapes.get(name) is not None and shapes[name].shape == first.shape for name in data)
            if op in _BINARY and same and len({blocked[name] for name in data}) == 1 and len(data) == len(node.input):
                takes = True
                blocked[out] = blocked[data[0]]
            elif op == "Concat" and int(_attr(node, "axis", 0)) in (1, -3) and all(
                    blocked[name] % block == 0 for name in data):
                takes = True
                blocked[out] = sum(blocked[name] for name in data)
            elif op in _ACTIVATIONS or op in _GLOBAL_POOLS:
                takes = True
                blocked[out] = blocked[data[0]]
            elif op == "BatchNormalization" and len(node.output) == 1 and all(
                    name in constants for name in node.input[1:5]):
                takes = True
                blocked[out] = blocked[data[0]]
            elif op == "Transpose" and list(_attr(node, "perm", [])) == [0, 2, 3, 1]:
                takes = True  # becomes a channels-last ReorderOutput: the Transpose's own cost stands for it
            elif op in ("Resize", "Upsample") and _nearest_by_integer_scales(node, model):
                takes = True
                blocked[out] = blocked[data[0]]
        if not takes:
            needs_plain.update(name for name in data if name in blocked)
    needs_plain.update(name for name in (o.name for o in graph.output) if name in blocked)
    if padded is not None:
        for name, channels in blocked.items():
            if channels % block:
                padded[name] = nbytes(name, channels) // 2
    for name in needs_plain:  # one ReorderOutput per blocked tensor read as NCHW
        if name in producer:
            charge(producer[name], nbytes(name, blocked[name]))
            info = shapes.get(name)
            _create(created, plain_copy_name(name), producer[name], last_read.get(name, producer[name]),
                    (tensor_size_bytes(Tensor(name, info.shape, info.dtype)) or 0) if info else 0)
    return charged


def plain_copy_name(name: str) -> str:
    """The name of the plain copy a ReorderOutput makes of blocked tensor ``name`` (for a graph output: what the
    caller receives)."""
    return f"{name}@nchw"


def _last_reads(model: onnx.ModelProto) -> dict[str, int]:
    """The last node reading each tensor (a graph output: the last node, as the liveness plan has it)."""
    last = {name: index for index, node in enumerate(model.graph.node) for name in node.input if name}
    end = max(len(model.graph.node) - 1, 0)
    last.update({output.name: end for output in model.graph.output})
    return last


def _create(created: list[RuntimeTensor] | None, name: str, start: int, end: int, nbytes: int) -> None:
    if created is not None and nbytes > 0:
        created.append(RuntimeTensor(name, start, max(start, end), nbytes))


def layout_copy_bytes(model: onnx.ModelProto, shapes: Mapping[str, TensorInfo], execution: Sequence[NodeExecution],
                      constants: set[str], padded: dict[int, dict[str, int]],
                      created: dict[int, tuple[RuntimeTensor, ...]] | None = None,
                      channels_last: dict[int, tuple[tuple[str, int], ...]] | None = None
                      ) -> dict[int, dict[int, tuple[int, ...]]]:
    """Per NCHWc block: the bytes of each NCHWc reorder onnxruntime adds at that block, per node charged; ``padded``
    receives, per block, the tensors its padding enlarges, ``created`` the tensors the copies write (the reorders'
    and the int8 channels-last Transposes', :func:`nchwc_reorder_bytes`), and ``channels_last`` those Transposes
    (:func:`int8_channels_last_copies`: the same at every block)."""
    transposed: list[RuntimeTensor] = []
    transposes = int8_channels_last_copies(model, shapes, execution, constants, transposed)
    if channels_last is not None:
        channels_last.update(transposes)
    found = {}
    for block in NCHWC_BLOCKS:
        reordered: list[RuntimeTensor] = []
        charged = nchwc_reorder_bytes(model, shapes, execution, constants, block, padded.setdefault(block, {}),
                                      reordered)
        if created is not None:
            created[block] = tuple(reordered + transposed)
        found[block] = charged
    return found


# ops the transpose optimizer moves a channels-last Transpose through (any dtype), and pools and Resizes whose int8
# kernels run channels-last themselves (an 8-bit Resize between int8 convolutions: no Transpose around it)
_LAYOUT_AGNOSTIC = frozenset({"Add", "Sub", "Mul", "Div", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid",
                              "HardSwish", "Tanh", "Identity", "QuantizeLinear", "DequantizeLinear", "Concat"})
_INT8_CHANNELS_LAST_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "Resize"})
# the element kinds (runtime.element_bench) of the 8-bit Transposes into and out of the channels-last region
ENTERING_CHANNELS_LAST = "transpose.nhwc"
LEAVING_CHANNELS_LAST = "transpose.nchw"


def int8_channels_last_copies(model: onnx.ModelProto, shapes: Mapping[str, TensorInfo],
                              execution: Sequence[NodeExecution], constants: set[str],
                              created: list[RuntimeTensor] | None = None) -> dict[int, tuple[tuple[str, int], ...]]:
    """The Transposes around onnxruntime's channels-last int8 convolutions, per node charged, each as (its element
    kind, the elements of its 8-bit tensor): ``transpose.nhwc`` where a tensor enters the region (charged to the int8
    Conv it enters at), ``transpose.nchw`` where one leaves it (to its producer; read by an op that needs NCHW, or
    a graph output). ``created`` receives the tensors they write (an entering one's channels-last copy, live while
    its reader runs; a leaving one's plain copy, to its last reader)."""
    last_read = _last_reads(model)
    channels_last: set[str] = set()
    producer: dict[str, int] = {}
    charged: dict[int, tuple[tuple[str, int], ...]] = {}
    leaving: list[str] = []

    def elements(name: str) -> int | None:
        info = shapes.get(name)
        if info is None or info.shape is None or len(info.shape) != 4:
            return None
        n, c, h, w = info.shape
        return n * c * h * w

    def charge(index: int, name: str, kind: str, end: int | None = None, suffix: str = "") -> None:
        count = elements(name)
        if count:
            charged[index] = charged.get(index, ()) + ((kind, count),)
            _create(created, name + suffix, index, index if end is None else end, count)  # an 8-bit tensor

    for index, (node, row) in enumerate(zip(model.graph.node, execution, strict=True)):
        for out in node.output:
            producer[out] = index
        data = [name for name in node.input if name and name not in constants]
        if node.op_type in ("Conv", "QLinearConv") and node.domain in DEFAULT_DOMAINS and row.role == "compute" \
                and row.dtype == "int8" and node.input and elements(node.input[0]):
            if node.input[0] not in channels_last:
                charge(index, node.input[0], ENTERING_CHANNELS_LAST, suffix=f"@nhwc#{index}")
            channels_last.update(out for out in node.output[:1] if out)
            continue
        passes = node.op_type in _LAYOUT_AGNOSTIC or row.role in ("fused_qdq", "fused_activation") or (
            node.op_type in _INT8_CHANNELS_LAST_OPS and row.dtype == "int8")
        if passes and any(name in channels_last for name in data):
            for name in data:  # a plain 4-D operand meets the region: transposed to join it
                if name not in channels_last:
                    charge(index, name, ENTERING_CHANNELS_LAST, suffix=f"@nhwc#{index}")
            channels_last.update(out for out in node.output if out)
            continue
        leaving.extend(name for name in data if name in channels_last)
    leaving.extend(o.name for o in model.graph.output if o.name in channels_last)
    for name in dict.fromkeys(leaving):
        if name in producer:
            charge(producer[name], name, LEAVING_CHANNELS_LAST, last_read.get(name, producer[name]), "@transposed")
    return charged


def _nearest_by_integer_scales(node: NodeProto, model: onnx.ModelProto) -> bool:
    """Resize/Upsample the transformer keeps blocked: nearest, asymmetric, floor, spatial integer scales."""
    if _attr(node, "mode", b"nearest") not in (b"nearest", "nearest"):
        return False
    modern = node.op_type == "Resize" and len(node.input) >= 3  # opset 11+: X, roi, scales[, sizes]
    if modern:
        if len(node.input) > 3 and node.input[3]:
            return False
        mode = _attr(node, "coordinate_transformation_mode", b"half_pixel")
        rounding = _attr(node, "nearest_mode", b"round_prefer_floor")
        if mode not in (b"asymmetric", "asymmetric") or rounding not in (b"floor", "floor"):
            return False
    scales_name = node.input[2] if modern else (node.input[1] if len(node.input) > 1 else "")
    scales = next((t for t in model.graph.initializer if t.name == scales_name), None)
    if scales is None:
        return False
    values = onnx.numpy_helper.to_array(scales).tolist()
    return len(values) == 4 and values[0] == 1 and values[1] == 1 and all(
        v > 0 and float(v).is_integer() for v in values[2:])

