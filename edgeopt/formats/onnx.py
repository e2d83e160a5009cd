"""Loading and saving ONNX files safely.

Untrusted models are parsed here and nowhere else: corrupt bytes become one clear
error, and external-data paths are confined to the model's own folder (symlinks
resolved) before any byte of them is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from edgeopt.errors import ExportError, InputError, ModelLoadError, OutputError, UnsafeInputError
from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.registry import FormatHandler
from edgeopt.fsutil import atomic_path, temporary_folder

# protobuf refuses to serialise a message of 2 GiB or more into one buffer.
PROTOBUF_LIMIT_BYTES = 2**31 - 1
# Headroom below the hard limit: the graph itself also takes space.
SINGLE_FILE_LIMIT_BYTES = 2_000_000_000


@dataclass
class ExternalFile:
    location: str  # as written in the model
    path: Path  # resolved, inside the model folder
    tensors: int = 0
    bytes_declared: int = 0


@dataclass
class LoadedOnnx:
    path: Path
    model: onnx.ModelProto
    external_files: list[ExternalFile] = field(default_factory=list)
    external_data_loaded: bool = False
    checker_error: str | None = None
    faults: list[str] = field(default_factory=list)  # structural faults (onnx_faults.py): the graph is invalid

    def require_valid(self) -> None:
        """Refuse a graph with structural faults (``profile`` and ``convert``; ``inspect`` lists them first)."""
        if self.faults:
            from edgeopt.formats.onnx_faults import invalid_graph_error

            raise invalid_graph_error(self.path, self.faults)

    @property
    def all_files(self) -> list[Path]:
        return [self.path, *(f.path for f in self.external_files)]


def iter_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor stored in a graph: initializers and attribute tensors, subgraphs too."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from iter_tensors(attr.g)
            for sub in attr.graphs:
                yield from iter_tensors(sub)


def iter_model_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    yield from iter_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                if attr.HasField("g"):
                    yield from iter_tensors(attr.g)


def _external_info(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _declared_bytes(tensor: TensorProto) -> int | None:
    """Bytes the tensor's dims and dtype need, or None for types without a fixed size."""
    import numpy as np

    if tensor.data_type == TensorProto.STRING:
        return None
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    if tensor.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (int(np.prod(tensor.dims, dtype=np.int64)) + 1) // 2
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def check_external_data(model: onnx.ModelProto, model_path: Path) -> list[ExternalFile]:
    """Validate every external-data reference; return the files they use.

    Refuses absolute paths, paths that leave the model's folder (also through
    symlinks), missing files, and offsets/lengths past the end of the file.
    """
    base = model_path.resolve().parent
    files: dict[Path, ExternalFile] = {}
    for tensor in iter_model_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = _external_info(tensor)
        location = info.get("location", "")
        if not location:
            raise ModelLoadError(
                f"{model_path}: tensor {tensor.name!r} is marked external but names no file",
                "re-save the model with onnx.save(..., save_as_external_data=True)",
            )
        candidate = Path(location)
        if candidate.is_absolute() or candidate.drive:
            raise UnsafeInputError(
                f"{model_path}: tensor {tensor.name!r} points at absolute external-data path {location!r}",
                "external data must live in the model's folder; re-save it with a relative location",
            )
        resolved = (base / candidate).resolve()
        if resolved != base and base not in resolved.parents:
            raise UnsafeInputError(
                f"{model_path}: tensor {tensor.name!r} points outside the model's folder ({location!r})",
                "edgeopt only reads external data stored beside the model; move the data file next to it",
            )
        if not resolved.is_file():
            raise ModelLoadError(
                f"{model_path}: external-data file {location!r} (tensor {tensor.name!r}) is missing",
                "copy the data file next to the model, keeping the name the model expects",
            )
        if resolved.stat().st_nlink > 1:
            # onnx itself refuses these ("hardlink attack"): a hard link can expose any file.
            raise UnsafeInputError(
                f"{model_path}: external-data file {location!r} is a hard link",
                "copy the data file (cp, not ln) so it is a file of its own",
            )
        file_size = resolved.stat().st_size
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else file_size - offset
        except ValueError:
            raise ModelLoadError(
                f"{model_path}: tensor {tensor.name!r} has a malformed external-data offset/length",
                "re-save the model with onnx.save(..., save_as_external_data=True)",
            ) from None
        declared = _declared_bytes(tensor)
        if "length" not in info and declared is not None:
            length = declared
        if declared is not None and length < declared:
            raise ModelLoadError(
                f"{model_path}: tensor {tensor.name!r} needs {declared} bytes but its external data holds {length}",
                "the data file is truncated or belongs to another model; re-export it",
            )
        if offset < 0 or length < 0 or offset + length > file_size:
            raise ModelLoadError(
                f"{model_path}: tensor {tensor.name!r} reads bytes {offset}..{offset + length} "
                f"of {location!r}, which holds only {file_size} bytes",
                "the data file is truncated or belongs to another model; re-export it",
            )
        entry = files.setdefault(resolved, ExternalFile(location=location, path=resolved))
        entry.tensors += 1
        entry.bytes_declared += length
    return list(files.values())


def load_onnx(path: Path | str, *, load_external_data: bool = True, check: bool = True) -> LoadedOnnx:
    """Parse an ONNX file from disk with clear errors for every way it can be wrong."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}", "check the path")
    if not path.is_file():
        raise ModelLoadError(f"{path} is not a file", "give the path of an .onnx file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from None
    if not data:
        raise ModelLoadError(f"{path} is empty (0 bytes)", "re-export or re-download the model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"{path} is not a valid ONNX model: the protobuf does not parse ({exc.__class__.__name__})",
            "the file is truncated or not ONNX; re-export or re-download it",
        ) from None
    del data
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(
            f"{path} does not look like an ONNX model (no IR version, graph or opset)",
            "the file is corrupt or in another format; re-export it to ONNX",
        )
    external_files = check_external_data(model, path)
    loaded = LoadedOnnx(path=path, model=model, external_files=external_files)
    if load_external_data and external_files:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.resolve().parent))
        except Exception as exc:  # onnx raises OSError, ValueError or its own ValidationError
            raise ModelLoadError(f"{path}: cannot read external data: {exc}", "check the data files") from None
        loaded.external_data_loaded = True
    if check:
        from edgeopt.formats.onnx_faults import graph_faults

        loaded.checker_error = run_checker(model, path)
        loaded.faults = graph_faults(model, path)
    return loaded


def run_checker(model: onnx.ModelProto, path: Path | None = None) -> str | None:
    """onnx.checker's complaint, or None. A complaint is reported, not fatal:
    published models often fail the checker yet run fine in onnxruntime."""
    try:
        if model.ByteSize() < PROTOBUF_LIMIT_BYTES:
            onnx.checker.check_model(model)
        elif path is not None:
            onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return None


def save_onnx(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save atomically; one self-contained file unless the model is too big for that.

    Returns every file written (the model, plus ``<name>.data`` for large models).
    """
    path = Path(path)
    try:
        size = model.ByteSize()
    except Exception:  # protobuf raises on >2 GiB messages in some builds
        size = PROTOBUF_LIMIT_BYTES
    try:
        if size < SINGLE_FILE_LIMIT_BYTES:
            with atomic_path(path) as tmp:
                tmp.write_bytes(model.SerializeToString())
            return [path]
        return _save_with_external_data(model, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", "check free space and permissions") from None


def _save_with_external_data(model: onnx.ModelProto, path: Path) -> list[Path]:
    data_name = path.name + ".data"
    data_path = path.parent / data_name
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    # Write the weights under a temp folder with their final file name, then move both
    # files into place: the data first, so the model never points at missing data.
    with temporary_folder(".edgeopt-save-", path.parent) as tmp_dir:
        tmp_model = Path(tmp_dir) / path.name
        onnx.save_model(
            copy,
            str(tmp_model),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
        )
        os.replace(Path(tmp_dir) / data_name, data_path)
        os.replace(tmp_model, path)
    return [path, data_path]


# Per-channel quantization (QuantizeLinear with an axis) needs opset 13; older graphs
# quantize into invalid models, so everything edgeopt produces is at least this.
MIN_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    return 0


def free_input_dims(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Graph inputs and outputs whose dims say "any size" as -1 or 0 (paddle2onnx, older exporters)
    get real symbolic dims: onnxruntime enforces a 0 literally. Returns (model, what changed); the
    caller's model is not modified."""
    changed: list[str] = []
    copy: onnx.ModelProto | None = None
    for kind in ("input", "output"):
        for index, value in enumerate(getattr(model.graph, kind)):
            if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
                continue
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value <= 0:
                    if copy is None:
                        copy = onnx.ModelProto()
                        copy.CopyFrom(model)
                    target = getattr(copy.graph, kind)[index].type.tensor_type.shape.dim[axis]
                    target.Clear()  # neither a value nor a name: onnxruntime takes any size
                    changed.append(f"{value.name}[{axis}]={dim.dim_value}")
    return (copy if copy is not None else model), changed


def check_requested_opset(opset: int | None) -> None:
    if opset is not None and opset < MIN_OPSET:
        raise InputError(
            f"--opset {opset} is below {MIN_OPSET}",
            f"edgeopt writes opset >= {MIN_OPSET} (per-channel int8 needs it); omit --opset or pass {MIN_OPSET}+",
        )
    if opset is not None and opset > onnx.defs.onnx_opset_version():
        raise InputError(
            f"--opset {opset} is newer than this onnx package knows ({onnx.defs.onnx_opset_version()})",
            "pass a lower --opset or upgrade onnx",
        )


# Initializers with more raw bytes than this are set aside while the version converter runs.
_WEIGHT_BYTES_ASIDE = 1024


def _large(tensor: TensorProto) -> bool:
    return len(tensor.raw_data) > _WEIGHT_BYTES_ASIDE


def _copy_fields(source: Any, target: Any, skip: str) -> None:
    """Every field of the message ``source`` but ``skip`` into ``target``."""
    for descriptor, value in source.ListFields():
        if descriptor.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(target, descriptor.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)


def _light_copy(model: onnx.ModelProto, large: Callable[[TensorProto, TensorProto], None]) -> onnx.ModelProto:
    """A new model with ``model``'s fields; each large main-graph initializer is copied as its name, type
    and dims only, then handed to ``large(original, copy)`` (which may point the copy at its data)."""
    light = onnx.ModelProto()
    _copy_fields(model, light, skip="graph")
    _copy_fields(model.graph, light.graph, skip="initializer")
    for tensor in model.graph.initializer:
        if _large(tensor):
            large(tensor, light.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims))
        else:
            light.graph.initializer.add().CopyFrom(tensor)
    return light


def weightless_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the data of its large main-graph weights (their names, types and dims stay): for
    passes that read the graph, not the weights (shape inference copies the whole model several times)."""
    return _light_copy(model, lambda _original, _copy: None)


def save_with_weights_beside(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to ``path`` with its large main-graph weights in ``<path>.data`` beside it, one
    tensor at a time: no serialized copy of the whole model is made (protobuf's serializer holds two while
    it runs, which was the peak of every pass that opens a session on a model with extra outputs). The
    written graph is a new, weightless message: ``model`` is not touched (clearing and restoring its
    tensors' data would grow its protobuf arena by a model's weights each time). For folders of edgeopt's
    own (the data file is referenced by name)."""
    data_path = path.with_name(path.name + ".data")
    with open(data_path, "wb") as out:

        def point_to_file(tensor: TensorProto, written: TensorProto) -> None:
            offset = out.tell()
            out.write(tensor.raw_data)
            written.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_path.name), ("offset", str(offset)),
                               ("length", str(out.tell() - offset))):
                written.external_data.add(key=key, value=value)

        light = _light_copy(model, point_to_file)
    path.write_bytes(light.SerializeToString())


def convert_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """Convert the default-domain opset; raises ExportError naming the blocker.

    The converter copies the model several times (into C++ and back, per pass): with a 54 MB model that
    was ~540 MB at once. It converts a weightless copy (no default-domain conversion reads an
    initializer's values: they only move attributes to inputs and rewrite ops) and the data is put back
    by name, so the peak is the model and its converted copy. ``model`` is not touched."""
    from onnx import version_converter

    current = default_opset(model)
    names = [tensor.name for tensor in model.graph.initializer if _large(tensor)]
    by_name = len(set(names)) == len(names)  # names to put the data back by (else convert with the data)
    try:
        converted = version_converter.convert_version(weightless_copy(model) if by_name else model, target)
    except Exception as exc:  # the converter raises RuntimeError/IndexError/… depending on the op
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        hint = ("omit --opset to keep the model's own opset" if target < current
                else "re-export the model at opset >= 13 from its framework")
        raise ExportError(f"cannot convert the graph from opset {current} to {target}: {text}", hint) from None
    if not by_name:
        return converted
    wanted = set(names)
    originals = {tensor.name: tensor for tensor in model.graph.initializer if tensor.name in wanted}
    restored = 0
    for tensor in converted.graph.initializer:
        if tensor.name in originals and not tensor.raw_data:
            tensor.raw_data = originals[tensor.name].raw_data
            restored += 1
    if restored != len(originals):  # the converter renamed or dropped a weight: convert with the data
        return version_converter.convert_version(model, target)
    return converted


def _sniff(head: bytes, path: Path) -> bool:
    """ONNX files have no magic number (a protobuf): the suffix decides, and a file without one is tried."""
    return path.suffix.lower() in (".onnx", ".pb", "")


HANDLER = FormatHandler(ModelFormat.ONNX, sniff=_sniff, load=load_onnx, save=save_onnx,
                        runner="edgeopt.runtime.onnxruntime_runner:OnnxRuntimeRunner",
                        graph="edgeopt.graph.onnx_adapter:to_graph")
