"""ONNX graph → torch.fx GraphModule, so ONNX inputs can be pruned like PyTorch ones.

onnx2torch (the maintained converter on PyPI) imports torchvision at package import, which does
not install beside this torch build; this converter covers the common CNN/MLP op set instead.
Conv, ConvTranspose, BatchNormalization and Gemm/MatMul with constant weights become real
``nn`` layers (Torch-Pruning's dependency graph prunes those); every other op becomes a call
to a torch function. Only the nodes the outputs depend on are converted, so shape-computing
side graphs (Shape → Gather → Concat feeding a Reshape) that are replaced by the inferred
shape do not need support.

Reshapes to ``[batch, -1]`` are emitted as ``flatten(1)`` rather than with their constant
target shape: after pruning the feature count changes, and a constant would then be wrong.

Over 600 lines because the per-op converters are one table that shares the graph walk, the
constant folding and the refusal messages; split by op family they would each need all three.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeopt.data import InputSpec
from edgeopt.errors import InputError
from edgeopt.graph.onnx_protos import unique_name

_ELEMENTWISE = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow"}
_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Sqrt": "sqrt", "Neg": "neg",
          "Abs": "abs", "Erf": "erf", "Reciprocal": "reciprocal", "Log": "log", "Floor": "floor", "Ceil": "ceil"}
_PASS_THROUGH = {"Identity", "Dropout"}  # Dropout is the identity in inference graphs
_LAYER_OPS = {"Conv", "ConvTranspose", "BatchNormalization", "Gemm", "MatMul"}
_FUNCTION_OPS = {
    "Clip", "HardSwish", "HardSigmoid", "LeakyRelu", "Softmax", "LogSoftmax", "Elu", "Gelu", "Selu", "PRelu",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Concat", "Transpose",
    "Squeeze", "Unsqueeze", "ReduceMean", "ReduceSum", "ReduceMax", "Pad", "Constant", "Softplus", "Resize",
    "Upsample",
}
SUPPORTED_OPS = frozenset(_ELEMENTWISE) | frozenset(_UNARY) | _PASS_THROUGH | _LAYER_OPS | _FUNCTION_OPS
_FLOAT_TYPES = {onnx.TensorProto.FLOAT}


@dataclass
class ConvertedOnnx:
    """The torch module and how its interface maps to the ONNX graph's."""

    module: Any  # torch.fx.GraphModule: forward(*inputs in ONNX order) → one tensor or a tuple
    input_names: list[str]  # ONNX input names, in forward() order
    output_names: list[str]  # ONNX output names, in the order forward() returns them
    input_specs: list[InputSpec]  # declared shapes (symbolic dims as names) and dtypes
    layer_names: dict[str, str] = field(default_factory=dict)  # torch layer name → ONNX node name
    warnings: list[str] = field(default_factory=list)


def unsupported_ops(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(op type, node name) of the nodes the outputs need that the converter cannot convert."""
    graph = model.graph
    needed = _needed_nodes(graph, _inferred(model))
    found = []
    for node in needed:
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        if domain or node.op_type not in SUPPORTED_OPS:
            found.append((f"{domain}.{node.op_type}" if domain else node.op_type, node.name or "(unnamed)"))
    return found


def onnx_to_torch(model: onnx.ModelProto) -> ConvertedOnnx:
    """Convert ``model`` (external data already loaded) or raise InputError naming the op that
    blocked the conversion."""
    from edgeopt.formats.torch import import_torch

    import_torch()
    blocked = unsupported_ops(model)
    if blocked:
        op, name = blocked[0]
        more = f" (and {len(blocked) - 1} more: {', '.join(sorted({o for o, _ in blocked[1:]}))})" if len(blocked) > 1 else ""
        raise InputError(f"cannot convert the ONNX graph to torch for pruning: op {op} (node {name!r}) "
                         f"is not supported{more}",
                         "prune the PyTorch source instead, or convert without --prune "
                         "(or allow unprunable models to continue unpruned)")
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version < 11:
            raise InputError(f"the ONNX graph uses opset {entry.version}; pruning converts opset 11 and newer",
                             "upgrade the opset first (edgeopt convert does so for opset < 13)")
    return _Converter(model).convert()


# ---------------------------------------------------------------------------------------------
# graph helpers


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return model


def _value_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    shapes: dict[str, list[int | str | None]] = {}
    graph = model.graph
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        tensor = info.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                             for d in tensor.shape.dim]
    return shapes


def _needed_nodes(graph: onnx.GraphProto, inferred: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes the outputs depend on, in graph order. A Reshape whose output shape is known
    (but for a leading batch dim) does not need its shape input's producers."""
    producer = {out: node for node in graph.node for out in node.output}
    shapes = _value_shapes(inferred)
    needed: set[int] = set()
    stack = [o.name for o in graph.output]
    index = {id(node): i for i, node in enumerate(graph.node)}
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is None or index[id(node)] in needed:
            continue
        needed.add(index[id(node)])
        inputs = list(node.input)
        if node.op_type == "Reshape" and _static_reshape(shapes.get(node.output[0])) is not None:
            inputs = inputs[:1]
        stack.extend(i for i in inputs if i)
    return [node for i, node in enumerate(graph.node) if i in needed]


def _static_reshape(shape: list[int | str | None] | None) -> list[int] | None:
    """The target shape with a symbolic leading (batch) dim as -1, when all others are known."""
    if not shape:
        return None
    rest = shape[1:]
    if any(not isinstance(d, int) or d <= 0 for d in rest):
        return None
    first = shape[0]
    return [first if isinstance(first, int) and first > 0 else -1, *rest]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    values = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        values[attr.name] = value
    return values


def _safe(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_").lower() or "layer"
    if base[0].isdigit():
        base = f"n{base}"
    return unique_name(base, taken)


# ---------------------------------------------------------------------------------------------
# runtime helpers called from the generated graph (module-level so fx code can refer to them)


def onnx_flatten(x: Any, axis: int) -> Any:
    import torch

    axis = axis if axis >= 0 else x.dim() + axis
    if axis == 1:
        return torch.flatten(x, 1)
    if axis == 0:
        return x.reshape(1, -1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


def onnx_reshape(x: Any, shape: list[int]) -> Any:
    """ONNX Reshape: 0 copies the input dim; a flatten to [batch, -1] stays shape-agnostic."""
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if len(dims) == 2 and x.dim() >= 2 and (dims[0] == -1 or dims[0] == x.shape[0]):
        return x.flatten(1) if x.dim() > 2 else x
    return x.reshape(dims)


def onnx_pad(x: Any, pads: list[int], mode: str, value: float) -> Any:
    import torch.nn.functional as F

    rank = len(pads) // 2
    torch_pads: list[int] = []
    for axis in reversed(range(rank)):  # torch: last axis first, (begin, end) pairs
        torch_pads += [pads[axis], pads[axis + rank]]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[mode]
    return F.pad(x, torch_pads, mode=mode, value=value) if mode == "constant" else F.pad(x, torch_pads, mode=mode)


def onnx_hardsigmoid(x: Any, alpha: float, beta: float) -> Any:
    import torch

    return torch.clamp(x * alpha + beta, 0.0, 1.0)


def onnx_gemm(a: Any, b: Any, c: Any, alpha: float, beta: float, trans_a: int, trans_b: int) -> Any:
    a = a.transpose(0, 1) if trans_a else a
    b = b.transpose(0, 1) if trans_b else b
    out = (a @ b) * alpha
    return out if c is None else out + c * beta


def onnx_clip(x: Any, low: float | None, high: float | None) -> Any:
    import torch

    return torch.clamp(x, low, high)


def onnx_resize(x: Any, scales: list[float] | None, size: list[int] | None, mode: str) -> Any:
    import torch.nn.functional as F

    torch_mode = {"nearest": "nearest", "linear": "bilinear" if x.dim() == 4 else "linear"}[mode]
    if size is not None:
        return F.interpolate(x, size=size[2:], mode=torch_mode)
    return F.interpolate(x, scale_factor=[float(s) for s in (scales or [])[2:]], mode=torch_mode)


class _Converter:
    def __init__(self, model: onnx.ModelProto) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.inferred = _inferred(model)
        self.shapes = _value_shapes(self.inferred)
        self.constants: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        self.root = torch.nn.Module()
        self.graph = torch.fx.Graph()
        self.values: dict[str, Any] = {}  # ONNX tensor name → fx node
        self.taken: set[str] = set()
        self.layer_names: dict[str, str] = {}
        self.warnings: list[str] = []
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.fused: set[int] = set()  # Add nodes folded into a preceding MatMul's Linear bias

    # -- values --------------------------------------------------------------------------

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None

    def value(self, name: str) -> Any:
        """An fx node for a tensor; constants become buffers (scalars stay Python numbers)."""
        if name in self.values:
            return self.values[name]
        array = self.constants.get(name)
        if array is None:
            raise InputError(f"the ONNX graph uses tensor {name!r} before it is produced",
                             "the graph is not topologically sorted; re-export it")
        if array.ndim == 0 or array.size == 1 and array.dtype.kind == "f":
            return float(array.reshape(-1)[0]) if array.dtype.kind == "f" else int(array.reshape(-1)[0])
        attr = _safe(f"const_{name}", self.taken)
        tensor = self.torch.from_numpy(np.array(array, copy=True))
        if tensor.is_floating_point():
            # A Parameter, not a buffer: Torch-Pruning prunes per-channel parameters along with
            # the layer whose channels they scale; buffers it would leave at the old width.
            self.root.register_parameter(attr, self.torch.nn.Parameter(tensor))
        else:
            self.root.register_buffer(attr, tensor)
        node = self.graph.get_attr(attr)
        self.values[name] = node
        return node

    def layer(self, node: onnx.NodeProto, module: Any, hint: str) -> str:
        name = _safe(hint, self.taken)
        self.root.add_module(name, module)
        self.layer_names[name] = node.name
        return name

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return len(shape) if shape is not None else None

    # -- conversion ----------------------------------------------------------------------

    def convert(self) -> ConvertedOnnx:
        graph = self.model.graph
        inits = set(self.constants)
        inputs = [i for i in graph.input if i.name not in inits]
        specs = []
        for info in inputs:
            placeholder = self.graph.placeholder(_safe(info.name, self.taken))
            self.values[info.name] = placeholder
            tensor = info.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "float32"
            specs.append(InputSpec(info.name, dims, dtype))
        for index, node in enumerate(_needed_nodes(graph, self.inferred)):
            if id(node) in self.fused:
                continue
            try:
                self.emit(node)
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"cannot convert ONNX node {node.name!r} ({node.op_type}) to torch: "
                                 f"{' '.join(str(exc).split())[:200]}",
                                 "prune the PyTorch source instead, or convert without --prune") from None
        outputs = [self.values[o.name] for o in graph.output]
        self.graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
        module = self.torch.fx.GraphModule(self.root, self.graph, class_name="ConvertedOnnx")
        module.eval()
        return ConvertedOnnx(module, [i.name for i in inputs], [o.name for o in graph.output], specs,
                             self.layer_names, self.warnings)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.graph.call_function(fn, tuple(args), kwargs)

    def emit(self, node: onnx.NodeProto) -> None:
        op, a = node.op_type, _attrs(node)
        F = self.torch.nn.functional
        torch = self.torch
        x = lambda i: self.value(node.input[i])  # noqa: E731 - tiny local accessor
        out: Any
        if op in _PASS_THROUGH:
            out = x(0)
        elif op == "Constant":
            value = a.get("value")
            if value is None:
                for key in ("value_float", "value_int", "value_floats", "value_ints"):
                    if key in a:
                        value = np.array(a[key], dtype=np.float32 if "float" in key else np.int64)
            self.constants[node.output[0]] = np.asarray(value)
            return
        elif op in _ELEMENTWISE:
            out = self.call(getattr(torch, _ELEMENTWISE[op]), x(0), x(1))
        elif op in _UNARY:
            out = self.call(getattr(torch, _UNARY[op]), x(0))
        elif op == "Conv":
            out = self.conv(node, a, transposed=False)
        elif op == "ConvTranspose":
            out = self.conv(node, a, transposed=True)
        elif op == "BatchNormalization":
            out = self.batchnorm(node, a)
        elif op == "Gemm":
            out = self.gemm(node, a)
        elif op == "MatMul":
            out = self.matmul(node)
        elif op == "Clip":
            low = a.get("min", self._scalar(node, 1))
            high = a.get("max", self._scalar(node, 2))
            out = self.call(F.relu6, x(0)) if (low, high) == (0.0, 6.0) else self.call(onnx_clip, x(0), low, high)
        elif op == "HardSwish":
            out = self.call(F.hardswish, x(0))
        elif op == "HardSigmoid":
            alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
            out = self.call(F.hardsigmoid, x(0)) if math.isclose(alpha, 1 / 6, rel_tol=1e-5) and beta == 0.5 \
                else self.call(onnx_hardsigmoid, x(0), alpha, beta)
        elif op == "LeakyRelu":
            out = self.call(F.leaky_relu, x(0), float(a.get("alpha", 0.01)))
        elif op == "Elu":
            out = self.call(F.elu, x(0), float(a.get("alpha", 1.0)))
        elif op == "Selu":
            out = self.call(F.selu, x(0))
        elif op == "Softplus":
            out = self.call(F.softplus, x(0))
        elif op == "Gelu":
            out = self.call(F.gelu, x(0), approximate="tanh" if a.get("approximate") == "tanh" else "none")
        elif op == "PRelu":
            out = self.call(F.prelu, x(0), x(1))
        elif op in ("Softmax", "LogSoftmax"):
            fn = F.softmax if op == "Softmax" else F.log_softmax
            out = self.call(fn, x(0), int(a.get("axis", -1)))
        elif op in ("MaxPool", "AveragePool"):
            out = self.pool(node, a)
        elif op == "GlobalAveragePool":
            rank = self.rank(node.input[0]) or 4
            out = self.call(torch.mean, x(0), tuple(range(2, rank)), keepdim=True)
        elif op == "GlobalMaxPool":
            rank = self.rank(node.input[0]) or 4
            out = self.call(torch.amax, x(0), tuple(range(2, rank)), keepdim=True)
        elif op == "Flatten":
            out = self.call(onnx_flatten, x(0), int(a.get("axis", 1)))
        elif op == "Reshape":
            shape = _static_reshape(self.shapes.get(node.output[0]))
            if shape is None:
                constant = self.const(node.input[1])
                if constant is None:
                    raise InputError(f"Reshape node {node.name!r} has a computed target shape",
                                     "export the model with static shapes (batch aside)")
                shape = [int(d) for d in constant]
            out = self.call(onnx_reshape, x(0), shape)
        elif op == "Concat":
            out = self.call(torch.cat, [x(i) for i in range(len(node.input))], int(a["axis"]))
        elif op == "Transpose":
            perm = a.get("perm") or list(reversed(range(self.rank(node.input[0]) or 0)))
            out = self.call(torch.permute, x(0), tuple(int(p) for p in perm))
        elif op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes")
            if axes is None and len(node.input) > 1:
                axes = self.const(node.input[1])
            if axes is None:
                out = self.call(torch.squeeze, x(0))
            else:
                axes = [int(v) for v in np.asarray(axes).reshape(-1)]
                out = x(0)
                if op == "Squeeze":
                    out = self.call(torch.squeeze, out, tuple(axes))
                else:
                    rank = (self.rank(node.input[0]) or 0) + len(axes)
                    for axis in sorted(ax if ax >= 0 else ax + rank for ax in axes):
                        out = self.call(torch.unsqueeze, out, axis)
        elif op in ("ReduceMean", "ReduceSum", "ReduceMax"):
            axes = a.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1]:
                axes = self.const(node.input[1])
            keep = bool(a.get("keepdims", 1))
            fn = {"ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax}[op]
            dims = tuple(int(v) for v in np.asarray(axes).reshape(-1)) if axes is not None else \
                tuple(range(self.rank(node.input[0]) or 0))
            out = self.call(fn, x(0), dims, keepdim=keep)
        elif op == "Pad":
            pads = a.get("pads")
            if pads is None:
                pads = self.const(node.input[1])
            value = self._scalar(node, 2) or 0.0
            if pads is None:
                raise InputError(f"Pad node {node.name!r} has computed pads", "export with static padding")
            out = self.call(onnx_pad, x(0), [int(p) for p in np.asarray(pads)], a.get("mode", "constant"), value)
        elif op in ("Resize", "Upsample"):
            out = self.resize(node, a)
        else:  # unsupported_ops() refuses these before conversion starts
            raise InputError(f"op {op} (node {node.name!r}) is not supported", "")
        self.values[node.output[0]] = out

    def _scalar(self, node: onnx.NodeProto, index: int) -> float | None:
        if len(node.input) <= index or not node.input[index]:
            return None
        value = self.const(node.input[index])
        if value is None:
            raise InputError(f"{node.op_type} node {node.name!r} takes a computed input {node.input[index]!r}",
                             "only constant bounds/values can be converted")
        return float(np.asarray(value).reshape(-1)[0])

    def _weight(self, node: onnx.NodeProto, index: int) -> np.ndarray:
        weight = self.const(node.input[index])
        if weight is None:
            raise InputError(f"{node.op_type} node {node.name!r} has a computed weight ({node.input[index]!r})",
                             "only constant weights can be turned into prunable layers")
        return weight

    def _layer_hint(self, node: onnx.NodeProto, index: int = 1) -> str:
        weight = node.input[index] if len(node.input) > index else ""
        if weight and weight in self.constants:
            return re.sub(r"\.(weight|kernel|w)$", "", weight)
        return node.name or node.op_type

    def conv(self, node: onnx.NodeProto, a: dict[str, Any], *, transposed: bool) -> Any:
        nn = self.torch.nn
        weight = self._weight(node, 1)
        bias = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and bias is None:
            raise InputError(f"{node.op_type} node {node.name!r} has a computed bias", "")
        spatial = weight.ndim - 2
        if spatial not in (1, 2, 3):
            raise InputError(f"{node.op_type} node {node.name!r} is {spatial}-D", "1-D to 3-D convolutions convert")
        groups = int(a.get("group", 1))
        kernel = tuple(int(k) for k in (a.get("kernel_shape") or weight.shape[2:]))
        strides = tuple(int(s) for s in a.get("strides", [1] * spatial))
        dilations = tuple(int(d) for d in a.get("dilations", [1] * spatial))
        pads = [int(p) for p in a.get("pads", [0] * 2 * spatial)]
        auto_pad = a.get("auto_pad", "NOTSET")
        source = self.value(node.input[0])
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if any(s != 1 for s in strides) or transposed:
                raise InputError(f"{node.op_type} node {node.name!r} uses auto_pad={auto_pad} with stride > 1",
                                 "re-export with explicit pads")
            total = [d * (k - 1) for d, k in zip(dilations, kernel)]
            low = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
            pads = low + [t - lo for t, lo in zip(total, low)]
        begin, end = pads[:spatial], pads[spatial:]
        if begin != end:
            if transposed:
                raise InputError(f"ConvTranspose node {node.name!r} has asymmetric pads", "re-export the model")
            source = self.call(onnx_pad, source, [0, 0, *begin, 0, 0, *end], "constant", 0.0)
            begin = [0] * spatial
        kind = {1: "1d", 2: "2d", 3: "3d"}[spatial]
        if transposed:
            output_padding = tuple(int(p) for p in a.get("output_padding", [0] * spatial))
            cls = getattr(nn, f"ConvTranspose{kind}")
            layer = cls(weight.shape[0], weight.shape[1] * groups, kernel, stride=strides, padding=tuple(begin),
                        output_padding=output_padding, groups=groups, dilation=dilations, bias=bias is not None)
        else:
            cls = getattr(nn, f"Conv{kind}")
            layer = cls(weight.shape[1] * groups, weight.shape[0], kernel, stride=strides, padding=tuple(begin),
                        dilation=dilations, groups=groups, bias=bias is not None)
        self._set(layer, weight, bias)
        name = self.layer(node, layer, self._layer_hint(node))
        return self.graph.call_module(name, (source,))

    def _set(self, layer: Any, weight: np.ndarray, bias: np.ndarray | None) -> None:
        torch = self.torch
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.array(weight, dtype=np.float32)).reshape(layer.weight.shape))
            if bias is not None:
                layer.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32)).reshape(layer.bias.shape))

    def batchnorm(self, node: onnx.NodeProto, a: dict[str, Any]) -> Any:
        nn, torch = self.torch.nn, self.torch
        scale, bias, mean, var = (self._weight(node, i) for i in range(1, 5))
        rank = self.rank(node.input[0]) or 4
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
        if cls is None:
            raise InputError(f"BatchNormalization node {node.name!r} has a rank-{rank} input", "")
        layer = cls(scale.shape[0], eps=float(a.get("epsilon", 1e-5)), momentum=1 - float(a.get("momentum", 0.9)))
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.array(scale, dtype=np.float32)))
            layer.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32)))
            layer.running_mean.copy_(torch.from_numpy(np.array(mean, dtype=np.float32)))
            layer.running_var.copy_(torch.from_numpy(np.array(var, dtype=np.float32)))
        name = self.layer(node, layer, self._layer_hint(node, 1).removesuffix(".bias"))
        return self.graph.call_module(name, (self.value(node.input[0]),))

    def gemm(self, node: onnx.NodeProto, a: dict[str, Any]) -> Any:
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        trans_a, trans_b = int(a.get("transA", 0)), int(a.get("transB", 0))
        weight = self.const(node.input[1])
        bias = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        has_bias_input = len(node.input) > 2 and bool(node.input[2])
        if weight is None or trans_a or alpha != 1.0 or (has_bias_input and (bias is None or beta != 1.0)) \
                or (bias is not None and bias.size not in (1, weight.shape[0 if trans_b else 1])):
            c = self.value(node.input[2]) if has_bias_input else None
            return self.call(onnx_gemm, self.value(node.input[0]), self.value(node.input[1]), c,
                             alpha, beta, trans_a, trans_b)
        w = weight if trans_b else weight.T  # nn.Linear stores [out, in]
        return self._linear(node, w, None if bias is None else np.broadcast_to(bias.reshape(-1), (w.shape[0],)))

    def matmul(self, node: onnx.NodeProto) -> Any:
        weight = self.const(node.input[1])
        if weight is None or weight.ndim != 2:
            return self.call(self.torch.matmul, self.value(node.input[0]), self.value(node.input[1]))
        bias = None
        consumers = self.consumers.get(node.output[0], [])
        if len(consumers) == 1 and consumers[0].op_type == "Add":
            add = consumers[0]
            other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
            candidate = self.const(other)
            if candidate is not None and candidate.ndim == 1 and candidate.shape[0] == weight.shape[1]:
                bias = candidate
                self.fused.add(id(add))
                out = self._linear(node, weight.T, bias)
                self.values[add.output[0]] = out
                return out
        return self._linear(node, weight.T, bias)

    def _linear(self, node: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray | None) -> Any:
        layer = self.torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        self._set(layer, weight, bias)
        name = self.layer(node, layer, self._layer_hint(node))
        return self.graph.call_module(name, (self.value(node.input[0]),))

    def pool(self, node: onnx.NodeProto, a: dict[str, Any]) -> Any:
        F = self.torch.nn.functional
        kernel = [int(k) for k in a["kernel_shape"]]
        spatial = len(kernel)
        strides = [int(s) for s in a.get("strides", [1] * spatial)]
        pads = [int(p) for p in a.get("pads", [0] * 2 * spatial)]
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise InputError(f"{node.op_type} node {node.name!r} uses auto_pad={a['auto_pad']}",
                             "re-export with explicit pads")
        source = self.value(node.input[0])
        begin, end = pads[:spatial], pads[spatial:]
        ceil = bool(a.get("ceil_mode", 0))
        if node.op_type == "MaxPool":
            if begin != end:
                source = self.call(onnx_pad, source, [0, 0, *begin, 0, 0, *end], "constant", float("-inf"))
                begin = [0] * spatial
            fn = getattr(F, f"max_pool{spatial}d")
            dil = [int(d) for d in a.get("dilations", [1] * spatial)]
            return self.call(fn, source, kernel, strides, begin, dil, ceil_mode=ceil)
        include = bool(a.get("count_include_pad", 0))
        if begin != end:
            if any(begin) or any(end):
                if not include:
                    raise InputError(f"AveragePool node {node.name!r} has asymmetric pads excluded from the count",
                                     "re-export the model")
                source = self.call(onnx_pad, source, [0, 0, *begin, 0, 0, *end], "constant", 0.0)
            begin = [0] * spatial
        fn = getattr(F, f"avg_pool{spatial}d")
        return self.call(fn, source, kernel, strides, begin, ceil_mode=ceil, count_include_pad=include)

    def resize(self, node: onnx.NodeProto, a: dict[str, Any]) -> Any:
        mode = a.get("mode", "nearest")
        if mode not in ("nearest", "linear"):
            raise InputError(f"{node.op_type} node {node.name!r} uses mode {mode!r}", "nearest or linear convert")
        if mode == "nearest" and a.get("nearest_mode", "round_prefer_floor") not in ("floor", "round_prefer_floor") \
                or a.get("coordinate_transformation_mode", "half_pixel") not in ("asymmetric", "half_pixel"):
            self.warnings.append(f"{node.op_type} node {node.name!r}: coordinate mode approximated by torch's")
        inputs = list(node.input)
        scales = sizes = None
        if node.op_type == "Upsample":
            scales = self.const(inputs[1]) if len(inputs) > 1 else a.get("scales")
        else:
            scales = self.const(inputs[2]) if len(inputs) > 2 and inputs[2] else None
            sizes = self.const(inputs[3]) if len(inputs) > 3 and inputs[3] else None
        if (scales is None or np.asarray(scales).size == 0) and sizes is None:
            raise InputError(f"{node.op_type} node {node.name!r} has computed scales/sizes",
                             "export with constant scales")
        return self.call(onnx_resize, self.value(inputs[0]),
                         None if scales is None or np.asarray(scales).size == 0 else [float(s) for s in scales],
                         None if sizes is None else [int(s) for s in sizes], mode)
