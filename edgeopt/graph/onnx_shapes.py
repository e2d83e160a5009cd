"""Shapes and dtypes of every tensor in an ONNX graph, with symbolic dims resolved.

The caller's model is never mutated: inference runs on a slim copy in which large
weights are replaced by typed graph inputs. That keeps the copy cheap, works for
models whose external data was not loaded, and avoids the 2 GB protobuf limit of
``onnx.shape_inference``.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import onnx
from google.protobuf.message import Message
from onnx import GraphProto, TypeProto, ValueInfoProto

from edgeopt.graph.onnx_protos import (
    constant_tensor,
    dtype_name,
    inline_functions,
    is_op,
    iter_graphs,
    iter_nodes,
    num_elements,
    real_input_names,
    uses_external_data,
)
from edgeopt.data.specs import InputSpec, declared_dim
from edgeopt.errors import InputError

__all__ = [
    "DeclaredTensor",
    "TensorInfo",
    "model_inputs",
    "model_outputs",
    "resolve_shapes",
    "resolve_shapes_with_error",
]

log = logging.getLogger(__name__)

Dim = int | str

# Initializers up to this many elements keep their values in the inference copy:
# data propagation needs the small ones (Reshape shapes, Slice starts, Resize scales).
_KEEP_VALUES_MAX_ELEMENTS = 1024


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's concrete shape (None when unknown or partly symbolic) and dtype."""

    name: str
    shape: tuple[int, ...] | None
    dtype: str | None


@dataclass(frozen=True)
class DeclaredTensor:
    """A graph input/output as declared: symbolic dims kept as their name, or "?" if unnamed."""

    name: str
    shape: tuple[Dim, ...] | None
    dtype: str | None


# ----------------------------------------------------------------------------- types


def _type_dtype(tp: TypeProto) -> str | None:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return dtype_name(tp.tensor_type.elem_type)
    if kind == "sparse_tensor_type":
        return dtype_name(tp.sparse_tensor_type.elem_type)
    if kind == "sequence_type":
        return f"sequence<{_type_dtype(tp.sequence_type.elem_type)}>"
    if kind == "optional_type":
        return f"optional<{_type_dtype(tp.optional_type.elem_type)}>"
    if kind == "map_type":
        return f"map<{dtype_name(tp.map_type.key_type)},{_type_dtype(tp.map_type.value_type)}>"
    return None


def _shape_proto(tp: TypeProto) -> onnx.TensorShapeProto | None:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type" and tp.tensor_type.HasField("shape"):
        return tp.tensor_type.shape
    if kind == "sparse_tensor_type" and tp.sparse_tensor_type.HasField("shape"):
        return tp.sparse_tensor_type.shape
    return None


def _declared_shape(tp: TypeProto) -> tuple[Dim, ...] | None:
    """Sizes and symbolic names; -1 / 0 / empty dims (how exporters write "any size") are "?"."""
    shape = _shape_proto(tp)
    if shape is None:
        return None
    return tuple(
        declared_dim(d.dim_value) if d.HasField("dim_value") else declared_dim(d.dim_param) for d in shape.dim
    )


def _concrete_shape(tp: TypeProto) -> tuple[int, ...] | None:
    declared = _declared_shape(tp)
    if declared is None:
        return None
    dims = tuple(d for d in declared if isinstance(d, int) and d >= 0)
    return dims if len(dims) == len(declared) else None


def _declared(vi: ValueInfoProto) -> DeclaredTensor:
    return DeclaredTensor(vi.name, _declared_shape(vi.type), _type_dtype(vi.type))


def model_inputs(model: onnx.ModelProto) -> list[DeclaredTensor]:
    """The real graph inputs (initializers excluded) with their declared shapes and dtypes."""
    real = set(real_input_names(model.graph))
    return [_declared(vi) for vi in model.graph.input if vi.name in real]


def declared_input_specs(model: onnx.ModelProto, *, skip_unfeedable: bool = False) -> list[InputSpec]:
    """The real inputs as ``InputSpec``s (symbolic dims kept); refuses inputs edgeopt cannot feed
    (sequences, maps, strings, unknown rank), or leaves them out with ``skip_unfeedable``."""
    from edgeopt.errors import UnsupportedFormatError

    specs = []
    for tensor in model_inputs(model):
        dtype = tensor.dtype or ""
        if dtype.startswith(("sequence", "optional", "map")) or dtype in ("", "str", "string") or tensor.shape is None:
            if skip_unfeedable:
                continue
            raise UnsupportedFormatError(
                f"input {tensor.name!r} has type {dtype or 'unknown'}"
                + (" and no declared shape" if tensor.shape is None and dtype else "")
                + "; edgeopt feeds numeric tensors of known rank only",
                "export the model with plain tensor inputs of known rank")
        specs.append(InputSpec(tensor.name, tuple(tensor.shape), dtype))
    return specs


def model_outputs(model: onnx.ModelProto) -> list[DeclaredTensor]:
    """The graph outputs with their declared shapes and dtypes."""
    return [_declared(vi) for vi in model.graph.output]


# ------------------------------------------------------------------ input validation


def _positive_int(value: object) -> int | None:
    """``value`` as an int if it is a positive integer (numpy ints included), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None
    return number if number >= 1 else None


def _as_dims(name: str, shape: object) -> tuple[int, ...]:
    """A user-given shape (tuple, list, numpy array) as positive ints, or InputError."""
    not_a_list = InputError(
        f"the shape given for input '{name}' is not a list of sizes: {shape!r}",
        "give one positive integer per dimension, e.g. (1, 3, 224, 224)",
    )
    if isinstance(shape, (str, bytes, Mapping)) or not isinstance(shape, Iterable):
        raise not_a_list
    try:
        items = list(shape)
    except TypeError:  # a 0-d numpy array claims to be iterable
        raise not_a_list from None
    dims: list[int] = []
    for d in items:
        value = _positive_int(d)
        if value is None:
            raise InputError(
                f"the shape given for input '{name}' has an invalid size {d!r}: {tuple(items)}",
                "every size must be a positive integer",
            )
        dims.append(value)
    return tuple(dims)


def _resolve_input_dims(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None,
    default_dim: int,
) -> dict[str, tuple[int, ...] | None]:
    """Concrete dims for every real tensor input; raises InputError on bad user shapes."""
    if _positive_int(default_dim) is None:
        raise InputError(
            "the default size for symbolic dimensions must be a positive integer, "
            f"got {default_dim!r}",
            "use 1 or more",
        )
    real = real_input_names(model.graph)
    declared = {vi.name: vi for vi in model.graph.input if vi.name in set(real)}
    given = {name: _as_dims(name, shape) for name, shape in (input_shapes or {}).items()}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InputError(
            f"unknown input name{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}",
            f"the model's inputs are: {', '.join(real) or '(none)'}",
        )

    # A dim_param names one size across the whole graph: learn it from the given shapes
    # so that e.g. attention_mask follows input_ids' "batch" without being spelled out.
    params: dict[str, tuple[int, str]] = {}
    for name, dims in given.items():
        vi = declared[name]
        if vi.type.WhichOneof("value") not in ("tensor_type", "sparse_tensor_type"):
            raise InputError(f"input '{name}' is not a tensor, so it has no shape to set", None)
        decl = _declared_shape(vi.type)
        if decl is None:
            continue  # rank unknown: any shape goes
        shown = "[" + ", ".join(str(d) for d in decl) + "]"
        if len(decl) != len(dims):
            raise InputError(
                f"input '{name}' has rank {len(decl)} {shown} but the given shape {dims} "
                f"has rank {len(dims)}",
                f"give {len(decl)} sizes, one per dimension",
            )
        for axis, (want, got) in enumerate(zip(decl, dims, strict=True)):
            if isinstance(want, int) and want != got:
                raise InputError(
                    f"input '{name}' has a fixed size {want} at dimension {axis} {shown}, "
                    f"but the given shape {dims} sets it to {got}",
                    f"keep {want} at dimension {axis}",
                )
            if isinstance(want, str) and want != "?":
                seen = params.setdefault(want, (got, name))
                if seen[0] != got:
                    raise InputError(
                        f"dimension '{want}' is {seen[0]} in the shape of input '{seen[1]}' "
                        f"but {got} in the shape of input '{name}'",
                        f"inputs sharing the dimension '{want}' must use the same size",
                    )

    resolved: dict[str, tuple[int, ...] | None] = {}
    for name, vi in declared.items():
        if name in given:
            resolved[name] = given[name]
            continue
        decl = _declared_shape(vi.type)
        if decl is None:
            resolved[name] = None
            continue
        resolved[name] = tuple(
            d if isinstance(d, int) else params.get(d, (default_dim, ""))[0] for d in decl
        )
    return resolved


# ------------------------------------------------------------------- inference copy


def _copy_fields(src: Message, dst: Message, skip: frozenset[str]) -> None:
    """Copy every set protobuf field of ``src`` into ``dst`` except those in ``skip``."""
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        target = getattr(dst, field.name)
        if isinstance(value, (str, bytes, int, float)):
            setattr(dst, field.name, value)
        elif hasattr(target, "extend"):
            target.extend(value)
        else:
            target.CopyFrom(value)


def _typed_input(name: str, elem_type: int, dims: Sequence[int]) -> ValueInfoProto:
    return onnx.helper.make_tensor_value_info(name, elem_type, [int(d) for d in dims])


def _set_dims(tp: TypeProto, dims: tuple[int, ...]) -> None:
    kind = tp.WhichOneof("value")
    holder = tp.sparse_tensor_type if kind == "sparse_tensor_type" else tp.tensor_type
    shape = holder.shape
    if len(shape.dim) != len(dims):  # rank was unknown (no shape declared)
        shape.Clear()
        for _ in dims:
            shape.dim.add()
    for dim, value in zip(shape.dim, dims, strict=True):
        dim.dim_value = value  # also clears dim_param (same oneof)


def _inference_copy(
    model: onnx.ModelProto, input_dims: Mapping[str, tuple[int, ...] | None]
) -> onnx.ModelProto:
    """A copy with inputs fixed and large/external weights turned into typed inputs."""
    work = onnx.ModelProto()
    _copy_fields(model, work, frozenset({"graph"}))
    graph = GraphProto()
    _copy_fields(model.graph, graph, frozenset({"initializer", "sparse_initializer", "input"}))

    as_inputs: list[ValueInfoProto] = []
    for tensor in model.graph.initializer:
        if uses_external_data(tensor) or num_elements(tensor.dims) > _KEEP_VALUES_MAX_ELEMENTS:
            as_inputs.append(_typed_input(tensor.name, tensor.data_type, tensor.dims))
        else:
            graph.initializer.append(tensor)
    for sparse in model.graph.sparse_initializer:
        as_inputs.append(_typed_input(sparse.values.name, sparse.values.data_type, sparse.dims))
    moved = {vi.name for vi in as_inputs}

    for vi in model.graph.input:
        if vi.name in moved:
            continue  # old-IR duplicate of an initializer: the typed copy replaces it
        new = graph.input.add()
        new.CopyFrom(vi)
        dims = input_dims.get(vi.name)
        if dims is not None:
            _set_dims(new.type, dims)
    graph.input.extend(as_inputs)
    work.graph.CopyFrom(graph)
    return work


def _infer(work: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """Run ONNX shape inference; on failure fall back to less, never raise."""
    error: str | None = None
    for data_prop in (True, False):
        try:
            return onnx.shape_inference.infer_shapes(work, data_prop=data_prop), error
        except Exception as exc:  # noqa: BLE001 - inference failures vary; partial info is fine
            error = error or f"{type(exc).__name__}: {exc}".strip()
            log.debug("shape inference (data_prop=%s) failed: %s", data_prop, exc)
    return work, error


# ------------------------------------------------------------------------- collect


def _collect(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    infos: dict[str, TensorInfo] = {}

    def add(name: str, shape: tuple[int, ...] | None, dtype: str | None) -> None:
        if not name:
            return
        old = infos.get(name)
        if old is None:
            infos[name] = TensorInfo(name, shape, dtype)
        elif (old.shape is None and shape is not None) or (old.dtype is None and dtype):
            # First known answer wins; only the missing parts of an entry are filled in.
            infos[name] = TensorInfo(
                name, old.shape if old.shape is not None else shape, old.dtype or dtype
            )

    def add_vi(vi: ValueInfoProto) -> None:
        add(vi.name, _concrete_shape(vi.type), _type_dtype(vi.type))

    for graph in iter_graphs(model.graph):
        for tensor in graph.initializer:
            add(tensor.name, tuple(tensor.dims), dtype_name(tensor.data_type))
        for sparse in graph.sparse_initializer:
            add(sparse.values.name, tuple(sparse.dims), dtype_name(sparse.values.data_type))
        for vi in (*graph.input, *graph.value_info, *graph.output):
            add_vi(vi)
    for ref in iter_nodes(model.graph):
        if is_op(ref.node, "Constant") and ref.node.output:
            const = constant_tensor(ref.node)
            if const is not None:
                add(ref.node.output[0], const[0], dtype_name(const[1]))
    return infos


def resolve_shapes_with_error(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    default_dim: int = 1,
) -> tuple[dict[str, TensorInfo], str | None]:
    """Like :func:`resolve_shapes`, also returning the shape-inference error if it failed."""
    input_dims = _resolve_input_dims(model, input_shapes, default_dim)
    analysed = inline_functions(model)
    inferred, error = _infer(_inference_copy(analysed, input_dims))
    infos = _collect(inferred)
    unknown = [out for node in analysed.graph.node for out in node.output
               if out and (out not in infos or infos[out].shape is None)]
    if unknown and all(dims is not None for dims in input_dims.values()):
        infos.update(_probe_shapes(analysed, input_dims, unknown))
    return infos, error


# ONNX shape inference stops at ops it has no function for (com.microsoft's DynamicQuantizeLSTM,
# QAttention, ...) and at shapes computed from data; everything downstream is then unknown.
_PROBE_MAX_WEIGHT_BYTES = 512 * 1024 * 1024


def loadable_again(model: onnx.ModelProto) -> bool:
    """Whether the graph analysis may hand ``model`` to onnxruntime once more (the shape probe, the basic-level
    optimized graph): its weights are in the file (external data is never followed) and it is small enough to copy."""
    return not any(uses_external_data(t) for t in model.graph.initializer) and \
        model.ByteSize() <= _PROBE_MAX_WEIGHT_BYTES


def _probe_shapes(model: onnx.ModelProto, input_dims: Mapping[str, tuple[int, ...] | None],
                  names: list[str]) -> dict[str, TensorInfo]:
    """The shapes of ``names`` (main-graph tensors inference left unknown) by running the graph once
    in onnxruntime, without optimisations, at the resolved input shapes: floats standard normal,
    integers 0, bools False. Best effort: {} when weights are not loaded or the run fails."""
    if not loadable_again(model):
        return {}
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a core dependency
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    declared = {vi.name: vi for vi in model.graph.input}
    rng = np.random.default_rng(0)
    feeds = {}
    for name, dims in input_dims.items():
        dtype = _type_dtype(declared[name].type) if name in declared else None
        if dtype is None or dtype.startswith(("sequence", "optional", "map")) or dtype in ("string", "bfloat16"):
            return {}
        shape = tuple(int(d) for d in dims or ())
        feeds[name] = (rng.standard_normal(shape).astype(dtype) if dtype.startswith("float")
                       else np.zeros(shape, dtype=dtype))
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        # tensors only: a sequence or map output has no shape to learn
        wanted = [o.name for o in session.get_outputs() if o.name in set(names) and o.type.startswith("tensor(")]
        values = session.run(wanted, feeds)
        return {name: TensorInfo(name, tuple(int(d) for d in value.shape), value.dtype.name)
                for name, value in zip(wanted, values) if isinstance(value, np.ndarray)}
    except Exception as exc:  # noqa: BLE001 - any failure just leaves the shapes unknown
        log.debug("shape probe failed: %s", exc)
        return {}


def resolve_shapes(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    default_dim: int = 1,
) -> dict[str, TensorInfo]:
    """Shapes and dtypes of all tensors (inputs, weights, constants, intermediates, subgraphs).

    Symbolic or unknown input dims take their size from ``input_shapes`` (also for
    other inputs sharing the same dim name), otherwise ``default_dim``. Raises
    :class:`~edgeopt.errors.InputError` for an unknown input name, a wrong rank or
    a size that contradicts a fixed dim. Inference failures never raise: tensors
    whose shape could not be inferred get ``shape=None``.
    """
    return resolve_shapes_with_error(model, input_shapes, default_dim)[0]
