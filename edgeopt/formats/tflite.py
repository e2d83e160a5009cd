"""TFLite (LiteRT) flatbuffers, read without running them.

The schema is the generated module that ships in ``ai-edge-litert`` (``edgeopt[tflite]``). Python's
flatbuffers library has no verifier, so a file is checked before and while it is unpacked: its size, its
identifier, every buffer's bytes inside the file (also the offset/size buffers of files over 2 GB), every
tensor, buffer and opcode index in range. A file that fails any of it is one line naming what is wrong,
never a traceback or a read past the end.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.errors import InputError, ModelLoadError
from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.registry import FormatHandler

IDENTIFIER = b"TFL3"
INSTALL_HINT = "pip install 'edgeopt[tflite]' (ai-edge-litert, which ships the TFLite schema and interpreter)"
# TFLite tensor types as numpy-style names (graph.model.DTYPE_BITS speaks these)
_DTYPE_NAMES = {"FLOAT32": "float32", "FLOAT16": "float16", "INT32": "int32", "UINT8": "uint8", "INT64": "int64",
                "STRING": "string", "BOOL": "bool", "INT16": "int16", "COMPLEX64": "complex64", "INT8": "int8",
                "FLOAT64": "float64", "COMPLEX128": "complex128", "UINT64": "uint64", "UINT32": "uint32",
                "UINT16": "uint16", "INT4": "int4", "BFLOAT16": "bfloat16", "RESOURCE": "resource",
                "VARIANT": "variant", "INT2": "int2"}
INTEGER_ACTIVATIONS = frozenset({"int8", "uint8", "int16"})


def schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise InputError("reading .tflite files needs the TFLite schema, which is not installed", INSTALL_HINT) \
            from None
    return schema_py_generated


def _names(enum: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_") and isinstance(value, int)}


@dataclass(frozen=True)
class Quantization:
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    axis: int | None  # the quantized dimension where there is one scale per channel

    @property
    def per_axis(self) -> bool:
        return len(self.scales) > 1


@dataclass(frozen=True)
class TfliteTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None  # -1 for a dim sized at run time
    dtype: str
    buffer_bytes: int  # bytes stored in the file for it (0: an activation)
    quantization: Quantization | None
    variable: bool = False


@dataclass(frozen=True)
class TfliteOperator:
    index: int
    op: str  # the builtin name (CONV_2D) or the custom code
    custom: bool
    inputs: tuple[int, ...]  # tensor indices, -1 for an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any]


@dataclass(frozen=True)
class Subgraph:
    index: int
    name: str
    tensors: tuple[TfliteTensor, ...]
    operators: tuple[TfliteOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    key: str
    subgraph: int
    inputs: dict[str, int]  # signature name -> tensor index
    outputs: dict[str, int]


@dataclass
class TfliteModel:
    path: Path
    version: int
    description: str
    subgraphs: list[Subgraph]
    signatures: list[Signature]
    size_bytes: int
    metadata: dict[str, int] = field(default_factory=dict)  # name -> bytes

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]

    def custom_ops(self) -> list[str]:
        return sorted({op.op for graph in self.subgraphs for op in graph.operators if op.custom})


def _corrupt(path: Path, what: str) -> ModelLoadError:
    return ModelLoadError(f"{path} is not a valid TFLite file: {what}",
                          "the file is truncated or damaged: export or download it again")


def load_tflite(path: Path) -> TfliteModel:
    """The model in ``path``, checked as the module doc says; its weights stay in the file (mapped, not read)."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise _corrupt(path, f"{size} bytes, shorter than a flatbuffer header")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[4:8] != IDENTIFIER:
            raise _corrupt(path, f"file identifier {bytes(data[4:8])!r}, not {IDENTIFIER!r}")
        (root,) = struct.unpack_from("<I", data, 0)
        if root + 4 > size:
            raise _corrupt(path, f"the root table at byte {root} lies past the end ({size} bytes)")
        try:
            return _read(path, schema(), data, size)
        except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, OverflowError,
                AttributeError) as exc:
            what = ("a table runs past the end of the file" if isinstance(exc, struct.error) else
                    f"{type(exc).__name__} while reading it ({' '.join(str(exc).split())[:120]})")
            raise _corrupt(path, what) from None


def _read(path: Path, schema: Any, data: Any, size: int) -> TfliteModel:
    model = schema.Model.GetRootAs(data, 0)
    builtin_names, type_names = _names(schema.BuiltinOperator), _names(schema.TensorType)
    buffers = [_buffer_bytes(path, model.Buffers(i), size) for i in range(model.BuffersLength())]
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = builtin_names.get(builtin, f"BUILTIN_{builtin}")
        custom = name == "CUSTOM"
        opcodes.append((code.CustomCode().decode("utf-8", "replace") if custom and code.CustomCode() else name,
                        custom))
    subgraphs = []
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        tensors = []
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            if tensor.Buffer() >= len(buffers):
                raise _corrupt(path, f"tensor {t} of subgraph {g} names buffer {tensor.Buffer()} of {len(buffers)}")
            signature = tuple(int(d) for d in tensor.ShapeSignatureAsNumpy()) \
                if not tensor.ShapeSignatureIsNone() else None
            tensors.append(TfliteTensor(
                index=t, name=(tensor.Name() or b"").decode("utf-8", "replace"),
                shape=tuple(int(d) for d in tensor.ShapeAsNumpy()) if not tensor.ShapeIsNone() else (),
                shape_signature=signature,
                dtype=_DTYPE_NAMES.get(type_names.get(tensor.Type(), ""), f"type{tensor.Type()}"),
                buffer_bytes=buffers[tensor.Buffer()], quantization=_quantization(tensor.Quantization()),
                variable=bool(tensor.IsVariable())))
        operators = []
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if op.OpcodeIndex() >= len(opcodes):
                raise _corrupt(path, f"operator {o} of subgraph {g} names opcode {op.OpcodeIndex()} of {len(opcodes)}")
            inputs = tuple(int(i) for i in op.InputsAsNumpy()) if not op.InputsIsNone() else ()
            outputs = tuple(int(i) for i in op.OutputsAsNumpy()) if not op.OutputsIsNone() else ()
            if any(i >= len(tensors) or i < -1 for i in inputs + outputs):
                raise _corrupt(path, f"operator {o} of subgraph {g} names a tensor outside its {len(tensors)}")
            name, custom = opcodes[op.OpcodeIndex()]
            operators.append(TfliteOperator(o, name, custom, inputs, outputs, _options(schema, op, name)))
        ends = [int(i) for i in (graph.InputsAsNumpy() if not graph.InputsIsNone() else ())] + \
            [int(i) for i in (graph.OutputsAsNumpy() if not graph.OutputsIsNone() else ())]
        if any(i >= len(tensors) or i < 0 for i in ends):
            raise _corrupt(path, f"subgraph {g}'s inputs or outputs name a tensor outside its {len(tensors)}")
        subgraphs.append(Subgraph(g, (graph.Name() or b"").decode("utf-8", "replace"), tuple(tensors),
                                  tuple(operators),
                                  tuple(int(i) for i in graph.InputsAsNumpy()) if not graph.InputsIsNone() else (),
                                  tuple(int(i) for i in graph.OutputsAsNumpy()) if not graph.OutputsIsNone() else ()))
    if not subgraphs:
        raise _corrupt(path, "no subgraph")
    signatures = []
    for s in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(s)

        def tensor_map(count: int, get: Any) -> dict[str, int]:
            return {(get(i).Name() or b"").decode("utf-8", "replace"): int(get(i).TensorIndex()) for i in range(count)}

        signatures.append(Signature((sig.SignatureKey() or b"").decode("utf-8", "replace"), int(sig.SubgraphIndex()),
                                    tensor_map(sig.InputsLength(), sig.Inputs),
                                    tensor_map(sig.OutputsLength(), sig.Outputs)))
    metadata = {}
    for m in range(model.MetadataLength()):
        entry = model.Metadata(m)
        if entry.Buffer() < len(buffers):
            metadata[(entry.Name() or b"").decode("utf-8", "replace")] = buffers[entry.Buffer()]
    return TfliteModel(path=path, version=int(model.Version()),
                       description=(model.Description() or b"").decode("utf-8", "replace"),
                       subgraphs=subgraphs, signatures=signatures, size_bytes=size, metadata=metadata)


def _buffer_bytes(path: Path, buffer: Any, size: int) -> int:
    """Bytes of one buffer: its data vector (bounds-checked by reading its length) or, in files over 2 GB, the
    ``offset``/``size`` span after the flatbuffer, which must lie inside the file."""
    offset, length = int(buffer.Offset()), int(buffer.Size())
    if offset > 1:
        if offset + length > size:
            raise _corrupt(path, f"a buffer spans bytes {offset}..{offset + length}, past the end ({size} bytes)")
        return length
    count = buffer.DataLength()
    if count:
        start = buffer._tab.Vector(buffer._tab.Offset(4))
        if start + count > size:
            raise _corrupt(path, f"a buffer of {count} bytes at byte {start} runs past the end ({size} bytes)")
    return count


def _quantization(params: Any) -> Quantization | None:
    if params is None or params.ScaleIsNone() or params.ScaleLength() == 0:
        return None
    zero = tuple(int(z) for z in params.ZeroPointAsNumpy()) if not params.ZeroPointIsNone() else ()
    scales = tuple(float(s) for s in params.ScaleAsNumpy())
    return Quantization(scales, zero, int(params.QuantizedDimension()) if len(scales) > 1 else None)


# options read for MACs and op classes: (options class, fields)
_OPTION_FIELDS = {
    "CONV_2D": ("Conv2DOptions", ("StrideH", "StrideW", "DilationHFactor", "DilationWFactor", "Padding",
                                  "FusedActivationFunction")),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", ("StrideH", "StrideW", "DepthMultiplier", "Padding",
                                                     "FusedActivationFunction")),
    "FULLY_CONNECTED": ("FullyConnectedOptions", ("FusedActivationFunction", "KeepNumDims")),
    "BATCH_MATMUL": ("BatchMatMulOptions", ("AdjX", "AdjY")),
    "ADD": ("AddOptions", ("FusedActivationFunction",)),
}


def _options(schema: Any, op: Any, name: str) -> dict[str, Any]:
    spec = _OPTION_FIELDS.get(name)
    if spec is None or op.BuiltinOptions() is None:
        return {}
    options = getattr(schema, spec[0])()
    table = op.BuiltinOptions()
    options.Init(table.Bytes, table.Pos)
    return {field_name: int(getattr(options, field_name)()) for field_name in spec[1]}


def node_name(op: str, index: int) -> str:
    """The name an operator goes by in the neutral graph and in per-op times (``conv_2d_3``)."""
    return f"{op.lower()}_{index}"


def tensor_macs(graph: Subgraph, op: TfliteOperator) -> int | None:
    """Multiply-accumulates of one operator from its tensors' stored shapes (0 where it does none; None where
    a shape it needs is missing)."""
    def shape(position: int, outputs: bool = False) -> tuple[int, ...] | None:
        indices = op.outputs if outputs else op.inputs
        if position >= len(indices) or indices[position] < 0:
            return None
        found = graph.tensors[indices[position]].shape
        return found if found else None

    out = shape(0, outputs=True)
    weights = shape(1)
    if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL") and \
            (out is None or weights is None):
        return None
    if op.op == "CONV_2D":  # filter [OC, KH, KW, IC/groups]
        return math.prod(out) * math.prod(weights[1:])
    if op.op == "DEPTHWISE_CONV_2D":  # filter [1, KH, KW, OC]
        return math.prod(out) * weights[1] * weights[2]
    if op.op == "TRANSPOSE_CONV":  # inputs: output shape, filter [OC, KH, KW, IC], input
        source = shape(2)
        return None if source is None else math.prod(source) * math.prod(weights[:3])
    if op.op == "FULLY_CONNECTED":  # weights [units, depth]
        return math.prod(out) * weights[-1]
    if op.op == "BATCH_MATMUL":
        left = shape(0)
        if left is None:
            return None
        return math.prod(out) * (left[-2] if op.options.get("AdjX") else left[-1])
    return 0


HANDLER = FormatHandler(ModelFormat.TFLITE,
                        sniff=lambda head, path: head[4:8] == IDENTIFIER or path.suffix.lower() == ".tflite",
                        load=load_tflite, runner="edgeopt.runtime.litert_runner:LiteRtRunner",
                        graph="edgeopt.graph.tflite_adapter:to_graph")
