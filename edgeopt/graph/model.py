"""The format-neutral graph that static analysis prices: nodes in execution order with their op kind, how
each executes (dtype, own kernel or fused into another's), its MACs, and tensors with concrete shapes.

A format's adapter builds it (``graph/onnx_adapter.py`` for ONNX as onnxruntime runs it), so analysis never
reads a format's own structures. Shapes are concrete: the adapter resolves symbolic dims first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["compute", "qdq", "fused_qdq", "fused_activation", "constant"]
FLOAT_EXEC_DTYPES = frozenset({"fp32", "fp16", "bf16", "fp64"})
# Bits per element of each numpy-style dtype name; None = variable size.
DTYPE_BITS: dict[str, int | None] = {
    "float32": 32,
    "uint8": 8,
    "int8": 8,
    "uint16": 16,
    "int16": 16,
    "int32": 32,
    "int64": 64,
    "string": None,
    "bool": 8,
    "float16": 16,
    "float64": 64,
    "uint32": 32,
    "uint64": 64,
    "complex64": 64,
    "complex128": 128,
    "bfloat16": 16,
    "float8_e4m3fn": 8,
    "float8_e4m3fnuz": 8,
    "float8_e5m2": 8,
    "float8_e5m2fnuz": 8,
    "uint4": 4,
    "int4": 4,
    "float4_e2m1fn": 4,
    "float8_e8m0fnu": 8,
    "uint2": 2,
    "int2": 2,
    "float6_e2m3fn": 6,
    "float6_e3m2fn": 6,
}


def bits_per_element(dtype: str | None) -> int | None:
    """Bits per element of a numpy-style dtype name; None when unknown or variable (string)."""
    return DTYPE_BITS.get(dtype) if dtype else None


def tensor_size_bytes(tensor: Tensor | None) -> int | None:
    """Bytes of a tensor from its shape and dtype; None when either is unknown."""
    if tensor is None or tensor.shape is None:
        return None
    bits = bits_per_element(tensor.dtype)
    if bits is None:
        return None
    return math.ceil(math.prod(int(d) for d in tensor.shape) * bits / 8)


@dataclass(frozen=True)
class Tensor:
    """A tensor's concrete shape (None when unknown) and numpy-style dtype (None when unknown)."""

    name: str
    shape: tuple[int, ...] | None
    dtype: str | None


@dataclass(frozen=True)
class RuntimeTensor:
    """A tensor a runtime allocates that the model does not show (an NCHWc reorder's output, a kernel's scratch):
    live from node ``start`` to node ``end`` (inclusive, execution indices), ``bytes`` as allocated.
    ``kernel_scratch``: a kernel's own buffer while it runs, which the runtime's memory pattern does not trace."""

    name: str
    start: int
    end: int
    bytes: int
    kernel_scratch: bool = False


@dataclass(frozen=True)
class Node:
    """One main-graph node.

    ``role``: ``compute`` (runs as its own kernel), ``qdq`` (a quantize/dequantize that runs on its own),
    ``fused_qdq`` / ``fused_activation`` (folded into the kernel of node ``attached_to``), ``constant``
    (folded into weights at load time; ``attached_to`` is its first consumer). ``dtype`` is the execution
    dtype (``fp32``, ``int8``, ...; ``int64`` for shape arithmetic). ``macs`` includes control-flow bodies;
    None with ``cost_unknown_reason`` when it cannot be counted. ``outer_reads``: names its subgraphs read
    from this graph. ``reads_rows_of``: a weight the node reads only the gathered rows of (embeddings).
    """

    index: int
    name: str
    op_type: str  # the format's own operator name
    domain: str
    kind: str  # graph.kinds
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    role: Role
    dtype: str | None
    attached_to: int | None = None
    qdq_fused: bool = False
    macs: int | None = 0
    cost_unknown_reason: str | None = None
    op_class: str | None = None  # "depthwise" / "narrow" / "thin" / "1x1" for convolutions; "integer" (dynamic int8)
    outer_reads: tuple[str, ...] = ()
    reads_rows_of: str | None = None
    # Time steps of a recurrent cell (LSTM, GRU, RNN): its recurrent weight is read again at every one of them.
    recurrent_steps: int | None = None
    # A float Conv: the channel blocks at which onnxruntime's NCHWc kernels take it on x86 (graph.onnx_layout);
    # at any other block it runs im2col and a GEMM. None for other nodes.
    nchwc_blocks: tuple[int, ...] | None = None
    # those of them at which it reads its plain NCHW input (fewer input channels than a block: an RGB stem)
    nchwc_plain_input_blocks: tuple[int, ...] = ()
    # Output positions per image (the GEMM's columns on that path); None where unknown or not a Conv
    output_positions: int | None = None
    # A float Conv with a kernel taller than one row: the share of its kernel rows that fall inside the input,
    # over its output rows (a 5x5 kernel on a 2-row map reads 2 of its 5); None elsewhere
    valid_kernel_rows: float | None = None
    # A MaxPool's or AveragePool's window taps (its kernel's elements): the work per output element; None elsewhere
    window_taps: int | None = None
    # An int8 Concat: the elements of its inputs quantized unlike its output, which onnxruntime maps through a
    # lookup table (graph.onnx_requantize); None elsewhere
    requantized_elements: int | None = None
    # A float Concat copying chunks of a few elements: how many (graph.onnx_adapter.concat_chunks); None elsewhere
    copy_chunks: int | None = None
    # The input shapes onnxruntime runs the node at once its transpose optimizer pushed a Transpose through it
    # (graph.onnx_basic_rewrites); None where they are the model's own
    runtime_input_shapes: tuple[tuple[int, ...] | None, ...] | None = None
    # A node onnxruntime's basic optimizers drop or fold into another (a cancelled Transpose, a Conv's bias Add): it
    # never runs
    runtime_removed: bool = False
    # Float elements onnxruntime's QDQ propagation quantizes anew in front of the node (a QuantizeLinear it created,
    # a kernel of its own); None where it created none
    runtime_quantized_elements: int | None = None

    @property
    def runs_alone(self) -> bool:
        return self.role in ("compute", "qdq")


@dataclass(frozen=True)
class Graph:
    """A model as static analysis sees it (module doc).

    ``weights``: tensors stored in the model (not activations). ``aliases`` maps a tensor to the one that
    holds its data at run time (a fused dequantize's float output is its int8 input). ``input_shapes``:
    the concrete shapes everything was computed for. ``assumptions``/``warnings``: what the adapter had to
    assume (a batch of 1) or could not do (shape inference failed).
    """

    format: str
    nodes: tuple[Node, ...]
    tensors: Mapping[str, Tensor]
    weights: frozenset[str]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_shapes: dict[str, tuple[int, ...]]
    weight_bytes_by_dtype: dict[str, int]
    aliases: Mapping[str, str] = field(default_factory=dict)
    # bytes moved by each layout copy a runtime adds (read and written), by the channel block it uses and the node
    # charged (onnxruntime's NCHWc reorders on x86: graph/onnx_layout.py)
    layout_copy_bytes: Mapping[int, Mapping[int, tuple[int, ...]]] = field(default_factory=dict)
    # the 8-bit Transposes onnxruntime puts around its channels-last int8 convolutions (x86), by the node charged:
    # (element kind, elements) each, priced per element where calibration timed the kind (graph/onnx_layout.py)
    channels_last_copies: Mapping[int, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    # activations a runtime's layout enlarges, by the channel block and the tensor: their bytes as laid out
    # (NCHWc pads the channels to a whole block: 24 channels take 32 at 16 per block)
    layout_tensor_bytes: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    # tensors the runtime allocates beside the model's own, by the channel block (x86): what its layout copies write
    # (a ReorderInput's blocked copy of a Conv's input, a ReorderOutput's plain copy of a blocked one, the int8
    # Transposes' copies) and its kernels' scratch (graph/onnx_scratch.py)
    runtime_tensors: Mapping[int, tuple[RuntimeTensor, ...]] = field(default_factory=dict)
    assumptions: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # If branches not taken (graph/onnx_branches.py): the runtime loads them though they never run
    dormant_nodes: int = 0
    # the If nodes whose taken branch was inlined: onnxruntime runs each as a subgraph call of its own
    branch_runs: int = 0
    dormant_weights: int = 0
    dormant_weight_bytes: int = 0
    dormant_folded_bytes: int = 0  # what constant folding computes in them while loading
    # tensors an inlined If branch defined (its weights, Constant values, folded outputs): the runtime holds a
    # subgraph's own weights beside the session's copy
    subgraph_tensors: frozenset[str] = frozenset()

    @property
    def weight_bytes(self) -> int:
        return sum(self.weight_bytes_by_dtype.values())

    def full_int8_offenders(self) -> list[str]:
        """Nodes running on their own in a float (or unknown) dtype; quantize/dequantize excluded.

        Shape arithmetic (int64/bool) is not an offender: runtimes fold it away.
        """
        return [n.name for n in self.nodes
                if n.role == "compute" and (n.dtype is None or n.dtype in FLOAT_EXEC_DTYPES)]
